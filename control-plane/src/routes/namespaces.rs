//! `/v1/namespaces`: provisioning tenant namespaces with placement and limits.

use axum::extract::State;
use axum::http::StatusCode;
use larder_registry::model::{Limits, Namespace, NamespaceState};
use larder_registry::{Snapshot, names, paths};

use crate::api::{CreateNamespace, HealthStatus, List, NamespaceView};
use crate::auth::Admin;
use crate::error::{ApiError, Json, Path};
use crate::routes::clusters;
use crate::state::AppState;

fn validate_limits(limits: &Limits) -> Result<(), ApiError> {
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
    if let (Some(d), Some(m)) = (limits.default_ttl_s, limits.max_ttl_s)
        && d > m
    {
        return bad("default_ttl_s must not exceed max_ttl_s");
    }
    if limits.ops_per_sec == 0 {
        return bad("ops_per_sec must be above zero");
    }
    if limits.memory_bytes == 0 {
        return bad("memory_bytes must be above zero");
    }
    Ok(())
}

/// Picks the deployment for a new namespace: the named one if it exists, otherwise a
/// healthy one (not down) in the region with the most unreserved capacity that still
/// fits the namespace's memory budget.
pub fn place(
    snapshot: &Snapshot,
    request: &CreateNamespace,
    memory: u64,
) -> Result<String, ApiError> {
    if let Some(name) = &request.cluster {
        return snapshot
            .cluster(name)
            .map(|c| c.value.name.clone())
            .ok_or_else(|| ApiError::Unprocessable(format!("no cluster {name:?} is registered")));
    }
    let mut best: Option<(u64, String)> = None;
    for cluster in snapshot.clusters.values() {
        let c = &cluster.value;
        if request.region.as_ref().is_some_and(|r| *r != c.region) {
            continue;
        }
        let view = clusters::view(snapshot, c, None);
        if view.status == HealthStatus::Down {
            continue;
        }
        let free = c.capacity_bytes.saturating_sub(view.reserved_bytes);
        if free >= memory && best.as_ref().is_none_or(|(f, _)| free > *f) {
            best = Some((free, c.name.clone()));
        }
    }
    best.map(|(_, name)| name).ok_or_else(|| {
        let region = request.region.as_deref().unwrap_or("any region");
        ApiError::Conflict(format!(
            "no healthy cluster in {region} has {memory} bytes of unreserved capacity"
        ))
    })
}

/// Creates a namespace. The same request again returns it (200); a different request
/// for an existing name is 409.
pub async fn create(
    State(state): State<AppState>,
    Admin(_admin): Admin,
    Json(request): Json<CreateNamespace>,
) -> Result<(StatusCode, Json<NamespaceView>), ApiError> {
    names::namespace(&request.name)?;
    if request.owner.trim().is_empty() || request.owner.len() > 128 {
        return Err(ApiError::BadRequest(
            "owner must be 1 to 128 characters".into(),
        ));
    }
    let limits = request.limits.clone().unwrap_or_default();
    validate_limits(&limits)?;
    let near_cache = request.near_cache.unwrap_or_default();
    let path = paths::namespace(&request.name);
    if let Some(existing) = state.registry.get::<Namespace>(&path).await? {
        let e = &existing.value;
        let same = e.owner == request.owner
            && request.cluster.as_ref().is_none_or(|c| *c == e.cluster)
            && e.limits == limits
            && e.near_cache == near_cache;
        if same {
            return Ok((
                StatusCode::OK,
                Json(NamespaceView {
                    namespace: existing.value,
                }),
            ));
        }
        return Err(ApiError::Conflict(format!(
            "namespace {} exists with a different spec",
            request.name
        )));
    }
    let cluster = place(&state.snapshot.load(), &request, limits.memory_bytes)?;
    let namespace = Namespace {
        name: request.name.clone(),
        owner: request.owner.clone(),
        cluster,
        state: NamespaceState::Active,
        limits,
        near_cache,
        revision: 1,
        created_at_ms: larder_registry::now_ms(),
    };
    state.registry.create(&path, &namespace).await?;
    let name = namespace.name.clone();
    super::observe(&state, |s| s.namespace(&name).is_some()).await?;
    tracing::info!(namespace = %namespace.name, cluster = %namespace.cluster, "created namespace");
    Ok((StatusCode::CREATED, Json(NamespaceView { namespace })))
}

pub async fn list(
    State(state): State<AppState>,
    Admin(_admin): Admin,
) -> Json<List<NamespaceView>> {
    let snapshot = state.snapshot.load();
    let items = snapshot
        .namespaces
        .values()
        .map(|n| NamespaceView {
            namespace: n.value.clone(),
        })
        .collect();
    Json(List { items })
}

pub async fn show(
    State(state): State<AppState>,
    Admin(_admin): Admin,
    Path(name): Path<String>,
) -> Result<Json<NamespaceView>, ApiError> {
    let snapshot = state.snapshot.load();
    let ns = snapshot
        .namespace(&name)
        .ok_or_else(|| ApiError::NotFound(format!("no namespace {name:?}")))?;
    Ok(Json(NamespaceView {
        namespace: ns.value.clone(),
    }))
}
