//! `/v1/clusters`: registering Redis deployments.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use larder_registry::model::{Cluster, NodeHealth, Role, Topology};
use larder_registry::{Snapshot, names, paths};

use crate::api::{ClusterView, HealthStatus, List, RegisterCluster};
use crate::auth::Admin;
use crate::error::{ApiError, Json, Path};
use crate::probe;
use crate::state::AppState;

/// The health of a deployment from its agents' reports.
pub fn health(cluster: &Cluster, nodes: &[NodeHealth]) -> HealthStatus {
    if nodes.is_empty() {
        return HealthStatus::Unknown;
    }
    let master_up = match cluster.topology {
        Topology::Standalone => nodes
            .iter()
            .any(|n| Some(n.endpoint.as_str()) == cluster.master() && n.up),
        Topology::Cluster => nodes.iter().any(|n| n.up && n.role == Role::Master),
    };
    if !master_up {
        HealthStatus::Down
    } else if nodes.iter().all(|n| n.up) {
        HealthStatus::Ok
    } else {
        HealthStatus::Degraded
    }
}

pub(crate) fn view(
    snapshot: &Snapshot,
    cluster: &Cluster,
    redis_version: Option<String>,
) -> ClusterView {
    let nodes: Vec<NodeHealth> = snapshot
        .nodes_of(&cluster.name)
        .map(|n| n.value.clone())
        .collect();
    let on_it = snapshot
        .namespaces
        .values()
        .filter(|n| n.value.cluster == cluster.name);
    let (count, reserved) = on_it.fold((0, 0u64), |(c, r), n| {
        (c + 1, r + n.value.limits.memory_bytes)
    });
    ClusterView {
        status: health(cluster, &nodes),
        nodes,
        namespaces: count,
        reserved_bytes: reserved,
        redis_version,
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
    match request.topology {
        Topology::Standalone if request.endpoints.len() != 1 => Err(ApiError::BadRequest(
            "a standalone deployment has exactly one endpoint (its master); list replicas in replicas".into(),
        )),
        Topology::Cluster if !request.replicas.is_empty() => Err(ApiError::BadRequest(
            "a Redis Cluster finds its replicas itself; leave replicas empty".into(),
        )),
        _ if request.capacity_bytes == 0 => Err(ApiError::BadRequest("capacity_bytes must be above zero".into())),
        _ if request.region.is_empty() || request.region.len() > 64 => {
            Err(ApiError::BadRequest("region must be 1 to 64 characters".into()))
        }
        _ => Ok(()),
    }
}

fn same_spec(existing: &Cluster, request: &RegisterCluster) -> bool {
    existing.topology == request.topology
        && existing.endpoints == request.endpoints
        && existing.replicas == request.replicas
        && existing.region == request.region
        && existing.capacity_bytes == request.capacity_bytes
        && request
            .down_after_ms
            .is_none_or(|d| d == existing.down_after_ms)
}

/// Registers a deployment after checking it is what it claims to be. Repeating the same
/// request returns the existing registration (200); a different one for the name is 409.
pub async fn register(
    State(state): State<AppState>,
    Admin(_admin): Admin,
    Json(request): Json<RegisterCluster>,
) -> Result<(StatusCode, Json<ClusterView>), ApiError> {
    validate(&request)?;
    let path = paths::cluster(&request.name);
    if let Some(existing) = state.registry.get::<Cluster>(&path).await? {
        if same_spec(&existing.value, &request) {
            return Ok((
                StatusCode::OK,
                Json(view(&state.snapshot.load(), &existing.value, None)),
            ));
        }
        return Err(ApiError::Conflict(format!(
            "cluster {} is registered with a different spec",
            request.name
        )));
    }
    let version = probe::check(
        &request,
        Duration::from_millis(state.config.redis_timeout_ms),
    )
    .await
    .map_err(|reason| ApiError::Unprocessable(format!("deployment check failed: {reason}")))?;
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
    state.registry.create(&path, &cluster).await?;
    state
        .registry
        .ensure_dir(&paths::nodes(&cluster.name))
        .await?;
    let name = cluster.name.clone();
    super::observe(&state, |s| s.cluster(&name).is_some()).await?;
    tracing::info!(cluster = %cluster.name, "registered deployment");
    Ok((
        StatusCode::CREATED,
        Json(view(&state.snapshot.load(), &cluster, Some(version))),
    ))
}

pub async fn list(State(state): State<AppState>, Admin(_admin): Admin) -> Json<List<ClusterView>> {
    let snapshot = state.snapshot.load();
    let items = snapshot
        .clusters
        .values()
        .map(|c| view(&snapshot, &c.value, None))
        .collect();
    Json(List { items })
}

pub async fn show(
    State(state): State<AppState>,
    Admin(_admin): Admin,
    Path(name): Path<String>,
) -> Result<Json<ClusterView>, ApiError> {
    let snapshot = state.snapshot.load();
    let cluster = snapshot
        .cluster(&name)
        .ok_or_else(|| ApiError::NotFound(format!("no cluster {name:?}")))?;
    Ok(Json(view(&snapshot, &cluster.value, None)))
}
