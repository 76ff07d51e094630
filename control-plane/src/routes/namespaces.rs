//! `/v1/namespaces`: provisioning tenant namespaces with placement, limits and usage.
//!
//! Placement reserves the namespace's memory budget on a deployment. The namespace is
//! created in one transaction with a compare-and-set on the deployment's znode (its value
//! unchanged, its version bumped), so two placements racing for the last room on a
//! deployment — through one instance or several — cannot both succeed: the loser retries
//! on a fresh view. Raising a memory budget does the same.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use larder_registry::ledger::DeletionJob;
use larder_registry::model::{Cluster, Limits, Namespace, NamespaceState, NearCachePolicy};
use larder_registry::txn::Op;
use larder_registry::{RegistryError, Snapshot, Versioned, names, now_ms, paths};

use crate::api::{
    CreateNamespace, DeletionProgress, HealthStatus, List, NamespaceQuery, NamespaceView,
    UpdateNamespace,
};
use crate::audit::AuditNote;
use crate::auth::Admin;
use crate::error::{ApiError, Json, Path, Query};
use crate::openapi::model::Problem;
use crate::routes::clusters;
use crate::state::AppState;

/// Highest hot-key threshold, requests per second: far above what one gateway serves, and
/// within the `int32` the document gives the field.
pub const MAX_HOT_RATE_PER_S: u32 = 1_000_000;

/// Attempts at a compare-and-set before giving up with 409.
const ATTEMPTS: usize = 8;

pub fn validate_limits(limits: &Limits) -> Result<(), ApiError> {
    let bad = |m: &str| Err(ApiError::BadRequest(format!("limits: {m}")));
    if !(1..=65_536).contains(&limits.max_key_bytes) {
        return bad("max_key_bytes must be 1 to 65536");
    }
    if !(1..=(512 << 20)).contains(&limits.max_value_bytes) {
        return bad("max_value_bytes must be 1 B to 512 MiB");
    }
    if limits.default_ttl_s == Some(0) || limits.max_ttl_s == Some(0) {
        return bad("TTLs must be above zero (leave them out for no TTL)");
    }
    // The document gives TTLs as `int64`.
    if [limits.default_ttl_s, limits.max_ttl_s]
        .into_iter()
        .flatten()
        .any(|t| i64::try_from(t).is_err())
    {
        return bad("TTLs must be at most 9223372036854775807 seconds");
    }
    if let (Some(d), Some(m)) = (limits.default_ttl_s, limits.max_ttl_s)
        && d > m
    {
        return bad("default_ttl_s must not exceed max_ttl_s");
    }
    if limits.ops_per_sec == 0 {
        return bad("ops_per_sec must be above zero");
    }
    // The document gives rates as `int32`; a larger figure is no real limit either.
    if limits.ops_per_sec > i32::MAX as u32 || limits.burst > i32::MAX as u32 {
        return bad("ops_per_sec and burst must be at most 2147483647");
    }
    if limits.memory_bytes == 0 {
        return bad("memory_bytes must be above zero");
    }
    Ok(())
}

fn validate_near_cache(policy: &NearCachePolicy) -> Result<(), ApiError> {
    match policy {
        NearCachePolicy::Off => Ok(()),
        NearCachePolicy::Auto { min_rate_per_s, .. }
            if !(1..=MAX_HOT_RATE_PER_S).contains(min_rate_per_s) =>
        {
            Err(ApiError::BadRequest(format!(
                "near_cache.min_rate_per_s must be 1 to {MAX_HOT_RATE_PER_S}"
            )))
        }
        NearCachePolicy::On { max_staleness_ms }
        | NearCachePolicy::Auto {
            max_staleness_ms, ..
        } if (1..=60_000).contains(max_staleness_ms) => Ok(()),
        _ => Err(ApiError::BadRequest(
            "near_cache.max_staleness_ms must be 1 to 60000".into(),
        )),
    }
}

fn validate_owner(owner: &str) -> Result<(), ApiError> {
    if owner.trim().is_empty() || owner.chars().count() > 128 || owner.chars().any(char::is_control)
    {
        return Err(ApiError::BadRequest(
            "owner must be 1 to 128 printable characters".into(),
        ));
    }
    Ok(())
}

/// The deployment chosen for a namespace, as read from the snapshot.
pub struct Placement {
    pub cluster: Cluster,
    /// The deployment znode's version the decision was made on.
    pub version: i32,
}

fn free_bytes(snapshot: &Snapshot, cluster: &Cluster) -> u64 {
    let (_, reserved) = clusters::reserved(snapshot, &cluster.name);
    cluster.capacity_bytes.saturating_sub(reserved)
}

/// Picks the deployment for a new namespace needing `memory` bytes.
///
/// A named deployment must exist, be in the region if one is asked, and have the room.
/// Otherwise the candidates are the deployments of the region (any region when none is
/// asked) that are not down and have the room; healthy ones (`ok`) are preferred over
/// degraded ones and ones no agent reports on yet, and among equals the one with the most
/// unreserved capacity wins (then the name, so the choice is deterministic).
pub fn place(
    snapshot: &Snapshot,
    request: &CreateNamespace,
    memory: u64,
) -> Result<Placement, ApiError> {
    if let Some(name) = &request.cluster {
        let cluster = snapshot
            .cluster(name)
            .ok_or_else(|| ApiError::Unprocessable(format!("no cluster {name:?} is registered")))?;
        if let Some(region) = &request.region
            && *region != cluster.value.region
        {
            return Err(ApiError::Unprocessable(format!(
                "cluster {name} is in region {}, not {region}",
                cluster.value.region
            )));
        }
        let free = free_bytes(snapshot, &cluster.value);
        if free < memory {
            return Err(ApiError::CapacityExhausted(format!(
                "cluster {name} has {free} bytes of unreserved capacity; the namespace needs {memory}"
            )));
        }
        return Ok(Placement {
            cluster: cluster.value.clone(),
            version: cluster.version,
        });
    }
    let mut in_region = 0;
    let mut best: Option<(u8, u64, &Versioned<Cluster>)> = None;
    for cluster in snapshot.clusters.values() {
        let c = &cluster.value;
        if request.region.as_ref().is_some_and(|r| *r != c.region) {
            continue;
        }
        in_region += 1;
        let nodes: Vec<_> = snapshot
            .nodes_of(&c.name)
            .map(|n| n.value.clone())
            .collect();
        let tier = match clusters::health(c, &nodes) {
            HealthStatus::Down => continue,
            HealthStatus::Ok => 0,
            HealthStatus::Degraded | HealthStatus::Unknown => 1,
        };
        let free = free_bytes(snapshot, c);
        if free < memory {
            continue;
        }
        let better = match &best {
            None => true,
            Some((t, f, b)) => {
                (tier, std::cmp::Reverse(free), &c.name)
                    < (*t, std::cmp::Reverse(*f), &b.value.name)
            }
        };
        if better {
            best = Some((tier, free, cluster));
        }
    }
    let region = request.region.as_deref().unwrap_or("any region");
    match best {
        Some((_, _, c)) => Ok(Placement {
            cluster: c.value.clone(),
            version: c.version,
        }),
        None if in_region == 0 => Err(ApiError::NoPlacement(format!(
            "no cluster is registered in {region}"
        ))),
        None => Err(ApiError::CapacityExhausted(format!(
            "no healthy cluster in {region} has {memory} bytes of unreserved capacity"
        ))),
    }
}

async fn deletion_progress(state: &AppState, ns: &str) -> Option<DeletionProgress> {
    match state
        .registry
        .get::<DeletionJob>(&paths::deletion(ns))
        .await
    {
        Ok(Some(job)) => Some(DeletionProgress {
            pass: job.value.pass,
            deleted_keys: job.value.deleted_keys,
            updated_at_ms: job.value.updated_at_ms,
        }),
        _ => None,
    }
}

/// Views of `namespaces`, with usage (one bounded scan per deployment, concurrently)
/// when asked and deletion progress for those being deleted.
async fn views(state: &AppState, namespaces: Vec<Namespace>, usage: bool) -> Vec<NamespaceView> {
    let snapshot = state.snapshot.load();
    let mut by_cluster = BTreeMap::new();
    if usage {
        let deployments: Vec<Cluster> = {
            let mut names: Vec<&str> = namespaces.iter().map(|n| n.cluster.as_str()).collect();
            names.sort();
            names.dedup();
            names
                .into_iter()
                .filter_map(|c| snapshot.cluster(c).map(|c| c.value.clone()))
                .collect()
        };
        let measured =
            futures::future::join_all(deployments.iter().map(|c| state.usage.deployment(c))).await;
        for (c, u) in deployments.into_iter().zip(measured) {
            by_cluster.insert(c.name, u);
        }
    }
    let mut out = Vec::with_capacity(namespaces.len());
    for namespace in namespaces {
        let usage = by_cluster
            .get(&namespace.cluster)
            .map(|d| state.usage.namespace(d, &namespace.name));
        let deletion = if namespace.state == NamespaceState::Deleting {
            deletion_progress(state, &namespace.name).await
        } else {
            None
        };
        out.push(NamespaceView {
            namespace,
            usage,
            deletion,
        });
    }
    out
}

fn noted(status: StatusCode, view: NamespaceView, note: String) -> Response {
    (status, axum::Extension(AuditNote(note)), Json(view)).into_response()
}

/// Creates a namespace, placing it unless a cluster is named. The same request again
/// returns it (200); a different request for an existing name is 409.
#[utoipa::path(
    post,
    path = "/v1/namespaces",
    tag = "namespaces",
    request_body = CreateNamespace,
    responses(
        (status = 201, description = "Created and placed", body = NamespaceView),
        (status = 200, description = "Already exists with the same spec", body = NamespaceView),
        (status = 400, description = "Invalid name, owner, limits; unknown field", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or invalid admin token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Exists with another spec or is being deleted (conflict); no deployment has room (capacity-exhausted); none in the region (no-placement)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The named cluster is unknown or in another region", body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    _admin: Admin,
    Json(request): Json<CreateNamespace>,
) -> Result<Response, ApiError> {
    names::namespace(&request.name)?;
    validate_owner(&request.owner)?;
    if let Some(c) = &request.cluster {
        names::cluster(c)?;
    }
    let limits = request.limits.clone().unwrap_or_default();
    validate_limits(&limits)?;
    let near_cache = request.near_cache.unwrap_or_default();
    validate_near_cache(&near_cache)?;
    let path = paths::namespace(&request.name);
    for _ in 0..ATTEMPTS {
        if let Some(existing) = state.registry.get::<Namespace>(&path).await? {
            let e = existing.value;
            if e.state == NamespaceState::Deleting {
                return Err(ApiError::Conflict(format!(
                    "namespace {} is being deleted; create it again once it is gone",
                    request.name
                )));
            }
            let same = e.owner == request.owner
                && request.cluster.as_ref().is_none_or(|c| *c == e.cluster)
                && e.limits == limits
                && e.near_cache == near_cache;
            if same {
                let view = views(&state, vec![e], false).await.remove(0);
                return Ok((StatusCode::OK, Json(view)).into_response());
            }
            return Err(ApiError::Conflict(format!(
                "namespace {} exists with a different spec",
                request.name
            )));
        }
        let placement = place(&state.snapshot.load(), &request, limits.memory_bytes)?;
        let namespace = Namespace {
            name: request.name.clone(),
            owner: request.owner.clone(),
            cluster: placement.cluster.name.clone(),
            state: NamespaceState::Active,
            limits: limits.clone(),
            near_cache,
            revision: 1,
            created_at_ms: now_ms(),
        };
        let ops = [
            Op::create(&path, &namespace),
            Op::set(
                paths::cluster(&placement.cluster.name),
                &placement.cluster,
                placement.version,
            ),
        ];
        match state.registry.transact(&ops).await {
            Ok(_) => {
                let name = namespace.name.clone();
                super::observe(&state, |s| s.namespace(&name).is_some()).await?;
                tracing::info!(namespace = %namespace.name, cluster = %namespace.cluster, "created namespace");
                let note = format!("placed on {}", namespace.cluster);
                let view = views(&state, vec![namespace], false).await.remove(0);
                return Ok(noted(StatusCode::CREATED, view, note));
            }
            // Created meanwhile: the next round answers as a repeat would.
            Err(RegistryError::AlreadyExists { .. }) => {}
            // Another placement on the same deployment won; decide again on a view that
            // includes it.
            Err(RegistryError::Conflict { .. }) | Err(RegistryError::NotFound { .. }) => {
                let (name, version) = (placement.cluster.name.clone(), placement.version);
                super::observe_briefly(&state, |s| {
                    s.cluster(&name).is_none_or(|c| c.version != version)
                })
                .await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Conflict(
        "placement kept racing with other changes; retry".into(),
    ))
}

/// Namespaces with their usage.
#[utoipa::path(
    get,
    path = "/v1/namespaces",
    tag = "namespaces",
    params(NamespaceQuery),
    responses(
        (status = 200, description = "Namespaces, by name", body = List<NamespaceView>),
        (status = 400, description = "Unknown or malformed parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or invalid admin token", body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    _admin: Admin,
    Query(query): Query<NamespaceQuery>,
) -> Json<List<NamespaceView>> {
    let namespaces: Vec<Namespace> = state
        .snapshot
        .load()
        .namespaces
        .values()
        .map(|n| n.value.clone())
        .filter(|n| query.cluster.as_ref().is_none_or(|c| n.cluster == *c))
        .filter(|n| query.owner.as_ref().is_none_or(|o| n.owner == *o))
        .collect();
    let items = views(&state, namespaces, query.usage.unwrap_or(true)).await;
    Json(List { items })
}

/// One namespace with its usage.
#[utoipa::path(
    get,
    path = "/v1/namespaces/{name}",
    tag = "namespaces",
    params(("name" = String, Path, description = "Namespace name")),
    responses(
        (status = 200, description = "The namespace", body = NamespaceView),
        (status = 401, description = "No or invalid admin token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such namespace", body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin" = []))
)]
pub async fn show(
    State(state): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
) -> Result<Json<NamespaceView>, ApiError> {
    let ns = state
        .snapshot
        .load()
        .namespace(&name)
        .map(|n| n.value.clone())
        .ok_or_else(|| ApiError::NotFound(format!("no namespace {name:?}")))?;
    Ok(Json(views(&state, vec![ns], true).await.remove(0)))
}

/// Applies `change` to a namespace with compare-and-set, retried on conflict. `change`
/// returns `None` for "nothing to do". A larger memory budget is checked against the
/// deployment's room and reserved in the same transaction.
async fn mutate(
    state: &AppState,
    name: &str,
    mut change: impl FnMut(&Namespace) -> Result<Option<Namespace>, ApiError>,
) -> Result<(Namespace, bool), ApiError> {
    names::namespace(name)?;
    let path = paths::namespace(name);
    for _ in 0..ATTEMPTS {
        let Some(current) = state.registry.get::<Namespace>(&path).await? else {
            return Err(ApiError::NotFound(format!("no namespace {name:?}")));
        };
        let Some(mut next) = change(&current.value)? else {
            return Ok((current.value, false));
        };
        next.revision = current.value.revision + 1;
        let mut ops = vec![Op::set(&path, &next, current.version)];
        let grows = next
            .limits
            .memory_bytes
            .saturating_sub(current.value.limits.memory_bytes);
        let mut watched = None;
        if grows > 0 {
            let snapshot = state.snapshot.load();
            let cluster = snapshot.cluster(&next.cluster).ok_or_else(|| {
                ApiError::Conflict(format!("cluster {} is not registered", next.cluster))
            })?;
            let free = free_bytes(&snapshot, &cluster.value);
            if free < grows {
                return Err(ApiError::CapacityExhausted(format!(
                    "cluster {} has {free} bytes of unreserved capacity; raising the budget needs {grows} more",
                    next.cluster
                )));
            }
            ops.push(Op::set(
                paths::cluster(&next.cluster),
                &cluster.value,
                cluster.version,
            ));
            watched = Some((next.cluster.clone(), cluster.version));
        }
        match state.registry.transact(&ops).await {
            Ok(results) => {
                let zxid = results
                    .first()
                    .and_then(|r| r.as_ref())
                    .map(|v| v.modified_zxid)
                    .unwrap_or_default();
                super::observe(state, |s| s.config_zxid >= zxid).await?;
                return Ok((next, true));
            }
            Err(RegistryError::Conflict { .. }) => {
                if let Some((cluster, version)) = watched {
                    super::observe_briefly(state, |s| {
                        s.cluster(&cluster).is_none_or(|c| c.version != version)
                    })
                    .await;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Conflict(format!(
        "namespace {name} kept changing; retry"
    )))
}

fn refuse_deleting(ns: &Namespace) -> Result<(), ApiError> {
    if ns.state == NamespaceState::Deleting {
        return Err(ApiError::Conflict(format!(
            "namespace {} is being deleted",
            ns.name
        )));
    }
    Ok(())
}

/// Changes a namespace's owner, limits or near-cache policy. Gateways apply the change
/// as soon as their registry watch delivers it.
#[utoipa::path(
    patch,
    path = "/v1/namespaces/{name}",
    tag = "namespaces",
    params(("name" = String, Path, description = "Namespace name")),
    request_body = UpdateNamespace,
    responses(
        (status = 200, description = "Updated (revision raised) or unchanged", body = NamespaceView),
        (status = 400, description = "Invalid limits; unknown field", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or invalid admin token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such namespace", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Being deleted (conflict); no room for a larger memory budget (capacity-exhausted)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin" = []))
)]
pub async fn update(
    State(state): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
    Json(request): Json<UpdateNamespace>,
) -> Result<Response, ApiError> {
    if let Some(owner) = &request.owner {
        validate_owner(owner)?;
    }
    if let Some(policy) = &request.near_cache {
        validate_near_cache(policy)?;
    }
    let (ns, changed) = mutate(&state, &name, |current| {
        refuse_deleting(current)?;
        let mut next = current.clone();
        if let Some(owner) = &request.owner {
            next.owner = owner.clone();
        }
        if let Some(patch) = &request.limits {
            next.limits = patch.apply(next.limits.clone());
            validate_limits(&next.limits)?;
        }
        if let Some(policy) = request.near_cache {
            next.near_cache = policy;
        }
        Ok((next != *current).then_some(next))
    })
    .await?;
    let note = if changed {
        format!("revision {}", ns.revision)
    } else {
        "unchanged".into()
    };
    let view = views(&state, vec![ns], false).await.remove(0);
    Ok(noted(StatusCode::OK, view, note))
}

async fn set_state(
    state: &AppState,
    name: &str,
    target: NamespaceState,
) -> Result<Response, ApiError> {
    let (ns, changed) = mutate(state, name, |current| {
        refuse_deleting(current)?;
        if current.state == target {
            return Ok(None);
        }
        if current.state == NamespaceState::Migrating {
            return Err(ApiError::Conflict(format!(
                "namespace {} is migrating; wait until it is done",
                current.name
            )));
        }
        let mut next = current.clone();
        next.state = target;
        Ok(Some(next))
    })
    .await?;
    let note = if changed {
        format!("revision {}", ns.revision)
    } else {
        "unchanged".into()
    };
    let view = views(state, vec![ns], false).await.remove(0);
    Ok(noted(StatusCode::OK, view, note))
}

/// Disables a namespace: gateways refuse its requests (403 `namespace-disabled`); its
/// keys stay.
#[utoipa::path(
    post,
    path = "/v1/namespaces/{name}/disable",
    tag = "namespaces",
    params(("name" = String, Path, description = "Namespace name")),
    responses(
        (status = 200, description = "Disabled (or already was)", body = NamespaceView),
        (status = 401, description = "No or invalid admin token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such namespace", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Being deleted or migrating", body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin" = []))
)]
pub async fn disable(
    State(state): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    set_state(&state, &name, NamespaceState::Disabled).await
}

/// Enables a disabled namespace again.
#[utoipa::path(
    post,
    path = "/v1/namespaces/{name}/enable",
    tag = "namespaces",
    params(("name" = String, Path, description = "Namespace name")),
    responses(
        (status = 200, description = "Enabled (or already was)", body = NamespaceView),
        (status = 401, description = "No or invalid admin token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such namespace", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Being deleted or migrating", body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin" = []))
)]
pub async fn enable(
    State(state): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    set_state(&state, &name, NamespaceState::Active).await
}

/// Deletes a namespace: it turns `deleting` at once (gateways refuse it), the leader
/// removes its keys in the background in bounded batches and revokes its tokens, then the
/// namespace disappears. Asking again reports progress.
#[utoipa::path(
    delete,
    path = "/v1/namespaces/{name}",
    tag = "namespaces",
    params(("name" = String, Path, description = "Namespace name")),
    responses(
        (status = 202, description = "Deletion started or under way", body = NamespaceView),
        (status = 401, description = "No or invalid admin token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such namespace (or already deleted)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Migrating", body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    admin: Admin,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    names::namespace(&name)?;
    let path = paths::namespace(&name);
    for _ in 0..ATTEMPTS {
        let Some(current) = state.registry.get::<Namespace>(&path).await? else {
            return Err(ApiError::NotFound(format!("no namespace {name:?}")));
        };
        let mut ns = current.value.clone();
        if ns.state == NamespaceState::Deleting {
            let view = views(&state, vec![ns], false).await.remove(0);
            return Ok(noted(
                StatusCode::ACCEPTED,
                view,
                "deletion under way".into(),
            ));
        }
        if ns.state == NamespaceState::Migrating {
            return Err(ApiError::Conflict(format!(
                "namespace {name} is migrating; wait until it is done"
            )));
        }
        ns.state = NamespaceState::Deleting;
        ns.revision += 1;
        let job = DeletionJob {
            namespace: name.clone(),
            cluster: ns.cluster.clone(),
            requested_by: admin.subject().to_owned(),
            requested_at_ms: now_ms(),
            pass: 0,
            cursors: BTreeMap::new(),
            finished: Vec::new(),
            deleted_this_pass: 0,
            deleted_keys: 0,
            updated_by: String::new(),
            updated_at_ms: now_ms(),
        };
        let ops = [
            Op::set(&path, &ns, current.version),
            Op::create(paths::deletion(&name), &job),
        ];
        match state.registry.transact(&ops).await {
            Ok(results) => {
                let zxid = results
                    .first()
                    .and_then(|r| r.as_ref())
                    .map(|v| v.modified_zxid)
                    .unwrap_or_default();
                super::observe(&state, |s| s.config_zxid >= zxid).await?;
                tracing::info!(namespace = %name, "namespace deletion started");
                let view = views(&state, vec![ns], false).await.remove(0);
                return Ok(noted(StatusCode::ACCEPTED, view, "deletion started".into()));
            }
            Err(RegistryError::Conflict { .. }) => {}
            // A job left from an interrupted deletion: mark the namespace only.
            Err(RegistryError::AlreadyExists { .. }) => {
                state.registry.set(&path, &ns, current.version).await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Conflict(format!(
        "namespace {name} kept changing; retry"
    )))
}
