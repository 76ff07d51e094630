//! `/v1/clusters`: registering and deregistering Redis deployments.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use larder_registry::model::{Cluster, NodeHealth, Topology};
use larder_registry::txn::Op;
use larder_registry::{RegistryError, Snapshot, names, paths};

use crate::api::{ClusterView, HealthStatus, List, RegisterCluster};
use crate::auth::Admin;
use crate::error::{ApiError, Json, Path};
use crate::openapi::model::Problem;
use crate::probe;
use crate::state::AppState;

/// The health of a deployment from its agents' reports (see [`crate::health`]).
pub fn health(cluster: &Cluster, nodes: &[NodeHealth]) -> HealthStatus {
    crate::health::assess(cluster, nodes, larder_registry::now_ms()).status
}

/// Memory promised to the namespaces placed on `cluster`.
pub fn reserved(snapshot: &Snapshot, cluster: &str) -> (usize, u64) {
    snapshot
        .namespaces
        .values()
        .filter(|n| n.value.cluster == cluster)
        .fold((0, 0u64), |(c, r), n| {
            (c + 1, r.saturating_add(n.value.limits.memory_bytes))
        })
}

pub(crate) fn view(snapshot: &Snapshot, cluster: &Cluster) -> ClusterView {
    let nodes: Vec<NodeHealth> = snapshot
        .nodes_of(&cluster.name)
        .map(|n| n.value.clone())
        .collect();
    let (count, reserved) = reserved(snapshot, &cluster.name);
    let assessment = crate::health::assess(cluster, &nodes, larder_registry::now_ms());
    ClusterView {
        status: assessment.status,
        reasons: assessment.reasons,
        nodes,
        namespaces: count,
        reserved_bytes: reserved,
        redis_version: None,
        maxmemory_bytes: None,
        warnings: assessment.warnings,
        cluster: cluster.clone(),
    }
}

fn validate(request: &RegisterCluster) -> Result<(), ApiError> {
    names::cluster(&request.name)?;
    if request.endpoints.is_empty() {
        return Err(ApiError::BadRequest(
            "endpoints must name at least one host:port".into(),
        ));
    }
    for e in request.endpoints.iter().chain(&request.replicas) {
        names::endpoint(e)?;
    }
    let mut all: Vec<&String> = request.endpoints.iter().chain(&request.replicas).collect();
    all.sort();
    if all.windows(2).any(|w| w[0] == w[1]) {
        return Err(ApiError::BadRequest(
            "an endpoint is listed more than once".into(),
        ));
    }
    if request
        .down_after_ms
        .is_some_and(|d| !(500..=600_000).contains(&d))
    {
        return Err(ApiError::BadRequest(
            "down_after_ms must be between 500 and 600000".into(),
        ));
    }
    match request.topology {
        Topology::Standalone if request.endpoints.len() != 1 => Err(ApiError::BadRequest(
            "a standalone deployment has exactly one endpoint (its master); list replicas in replicas".into(),
        )),
        Topology::Cluster if !request.replicas.is_empty() => Err(ApiError::BadRequest(
            "a Redis Cluster finds its replicas itself; leave replicas empty".into(),
        )),
        _ if request.capacity_bytes == 0 => Err(ApiError::BadRequest("capacity_bytes must be above zero".into())),
        _ if request.region.is_empty()
            || request.region.len() > 64
            || !request.region.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            Err(ApiError::BadRequest("region must be 1 to 64 of A-Z, a-z, 0-9, '-', '_'".into()))
        }
        _ => Ok(()),
    }
}

/// Whether `request` registers `existing` again. A standalone deployment that has failed
/// over since has the same members with another one as master, so members are compared
/// as a set: the registration made before the failover still names it.
fn same_spec(existing: &Cluster, request: &RegisterCluster) -> bool {
    let members = |endpoints: &[String], replicas: &[String]| {
        let mut all: Vec<String> = endpoints.iter().chain(replicas).cloned().collect();
        all.sort();
        all
    };
    let same_nodes = match existing.topology {
        Topology::Standalone => {
            members(&existing.endpoints, &existing.replicas)
                == members(&request.endpoints, &request.replicas)
        }
        Topology::Cluster => {
            existing.endpoints == request.endpoints && existing.replicas == request.replicas
        }
    };
    existing.topology == request.topology
        && same_nodes
        && existing.region == request.region
        && existing.capacity_bytes == request.capacity_bytes
        && request
            .down_after_ms
            .is_none_or(|d| d == existing.down_after_ms)
}

/// Registers a deployment after checking it live: reachable, speaking Redis, the declared
/// topology and roles, a supported version and `maxmemory` room for the capacity.
/// Repeating the same request returns the registration (200); a different spec for the
/// name is 409.
#[utoipa::path(
    post,
    path = "/v1/clusters",
    tag = "clusters",
    request_body = RegisterCluster,
    responses(
        (status = 201, description = "Checked live and registered", body = ClusterView),
        (status = 200, description = "Already registered with the same spec", body = ClusterView),
        (status = 400, description = "Invalid name, endpoint, region or capacity; unknown field", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or invalid admin token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Registered with a different spec", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unreachable, not Redis, wrong topology or role, too old, capacity above maxmemory", body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin" = []))
)]
pub async fn register(
    State(state): State<AppState>,
    _admin: Admin,
    Json(request): Json<RegisterCluster>,
) -> Result<(StatusCode, Json<ClusterView>), ApiError> {
    validate(&request)?;
    let path = paths::cluster(&request.name);
    let existing = |existing: Cluster| {
        if same_spec(&existing, &request) {
            Ok((
                StatusCode::OK,
                Json(view(&state.snapshot.load(), &existing)),
            ))
        } else {
            Err(ApiError::Conflict(format!(
                "cluster {} is registered with a different spec",
                request.name
            )))
        }
    };
    if let Some(found) = state.registry.get::<Cluster>(&path).await? {
        return existing(found.value);
    }
    let findings = probe::check(
        &request,
        Duration::from_millis(state.config.redis_timeout_ms),
        &state.config.min_redis_version,
    )
    .await
    .map_err(ApiError::DeploymentCheck)?;
    let cluster = Cluster {
        name: request.name.clone(),
        topology: request.topology,
        endpoints: request.endpoints.clone(),
        replicas: request.replicas.clone(),
        region: request.region.clone(),
        capacity_bytes: request.capacity_bytes,
        epoch: 1,
        down_after_ms: request.down_after_ms.unwrap_or(3_000),
        created_at_ms: larder_registry::now_ms(),
    };
    let created = state
        .registry
        .transact(&[
            Op::create(&path, &cluster),
            Op::Create {
                path: paths::nodes(&cluster.name),
                data: Vec::new(),
            },
        ])
        .await;
    match created {
        Ok(_) => {}
        // Registered concurrently: answer as a repeat would.
        Err(RegistryError::AlreadyExists { .. }) => {
            if let Some(found) = state.registry.get::<Cluster>(&path).await? {
                return existing(found.value);
            }
        }
        Err(e) => return Err(e.into()),
    }
    let name = cluster.name.clone();
    super::observe(&state, |s| s.cluster(&name).is_some()).await?;
    tracing::info!(cluster = %cluster.name, version = %findings.redis_version, "registered deployment");
    let mut registered = view(&state.snapshot.load(), &cluster);
    registered.redis_version = Some(findings.redis_version);
    registered.maxmemory_bytes = Some(findings.maxmemory_bytes);
    registered.warnings.splice(0..0, findings.warnings);
    Ok((StatusCode::CREATED, Json(registered)))
}

/// Every registered deployment with its live health from the agents.
#[utoipa::path(
    get,
    path = "/v1/clusters",
    tag = "clusters",
    responses(
        (status = 200, description = "Registered deployments", body = List<ClusterView>),
        (status = 401, description = "No or invalid admin token", body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin" = []))
)]
pub async fn list(State(state): State<AppState>, _admin: Admin) -> Json<List<ClusterView>> {
    let snapshot = state.snapshot.load();
    let items = snapshot
        .clusters
        .values()
        .map(|c| view(&snapshot, &c.value))
        .collect();
    Json(List { items })
}

/// One deployment with its nodes' health.
#[utoipa::path(
    get,
    path = "/v1/clusters/{name}",
    tag = "clusters",
    params(("name" = String, Path, description = "Deployment name")),
    responses(
        (status = 200, description = "The deployment", body = ClusterView),
        (status = 401, description = "No or invalid admin token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such deployment", body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin" = []))
)]
pub async fn show(
    State(state): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
) -> Result<Json<ClusterView>, ApiError> {
    let snapshot = state.snapshot.load();
    let cluster = snapshot
        .cluster(&name)
        .ok_or_else(|| ApiError::NotFound(format!("no cluster {name:?}")))?;
    Ok(Json(view(&snapshot, &cluster.value)))
}

/// Deregisters a deployment that holds no namespace (in any state). Its keys are not
/// touched.
#[utoipa::path(
    delete,
    path = "/v1/clusters/{name}",
    tag = "clusters",
    params(("name" = String, Path, description = "Deployment name")),
    responses(
        (status = 204, description = "Deregistered"),
        (status = 401, description = "No or invalid admin token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such deployment", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "It still holds namespaces", body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin" = []))
)]
pub async fn deregister(
    State(state): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    names::cluster(&name)?;
    let path = paths::cluster(&name);
    for _ in 0..8 {
        let snapshot = state.snapshot.load();
        let Some(cluster) = snapshot.cluster(&name) else {
            return Err(ApiError::NotFound(format!("no cluster {name:?}")));
        };
        let holding: Vec<&str> = snapshot
            .namespaces
            .values()
            .filter(|n| n.value.cluster == name)
            .map(|n| n.value.name.as_str())
            .collect();
        if !holding.is_empty() {
            return Err(ApiError::Conflict(format!(
                "cluster {name} still holds namespaces: {}; delete or move them first",
                holding.join(", ")
            )));
        }
        // Agents' health reports go first; an agent may put its report back in the
        // meantime, which makes the transaction fail with NotEmpty and retry.
        let nodes_dir = paths::nodes(&name);
        match state.registry.children(&nodes_dir).await {
            Ok(children) => {
                for child in children {
                    match state
                        .registry
                        .delete(&format!("{nodes_dir}/{child}"), None)
                        .await
                    {
                        Ok(()) | Err(RegistryError::NotFound { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            Err(RegistryError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let mut ops = Vec::new();
        if state.registry.children(&nodes_dir).await.is_ok() {
            ops.push(Op::delete(&nodes_dir, None));
        }
        // At the version this decision was made on: a namespace placed meanwhile bumped it.
        ops.push(Op::delete(&path, Some(cluster.version)));
        match state.registry.transact(&ops).await {
            Ok(_) => {
                super::observe(&state, |s| s.cluster(&name).is_none()).await?;
                tracing::info!(cluster = %name, "deregistered deployment");
                return Ok(StatusCode::NO_CONTENT);
            }
            Err(RegistryError::NotEmpty { .. } | RegistryError::NotFound { .. }) => {}
            Err(RegistryError::Conflict { .. }) => {
                let version = cluster.version;
                super::observe_briefly(&state, |s| {
                    s.cluster(&name).is_none_or(|c| c.version != version)
                })
                .await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Conflict(format!(
        "cluster {name} kept changing while deregistering; retry"
    )))
}
