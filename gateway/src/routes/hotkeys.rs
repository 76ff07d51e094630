//! `GET /v1/namespaces/{ns}/hotkeys`: this gateway's hottest keys of a namespace.
//!
//! Each gateway sees only its own traffic; the control plane sums the views of all live
//! gateways for the platform-wide answer.

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use larder_registry::auth::Permission;
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, Json, Query};
use crate::hotkeys::{HotKey, K};
use crate::state::AppState;

/// Query of the hot-key view.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HotKeyParams {
    /// How many keys, 1 to 64 (default 10).
    #[param(minimum = 1, maximum = 64)]
    pub limit: Option<usize>,
}

/// The hottest keys as this gateway sees them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HotKeyList {
    #[schema(value_type = Vec<Object>)]
    pub keys: Vec<HotKey>,
    /// Requests per second from which a key counts as hot (the namespace's `auto`
    /// near-cache threshold; `null` when its policy is not `auto`).
    pub threshold: Option<u32>,
}

/// Lists a namespace's hottest keys on this gateway.
#[utoipa::path(
    get,
    path = "/v1/namespaces/{ns}/hotkeys",
    tag = "keys",
    params(("ns" = String, Path, description = "Namespace"), HotKeyParams),
    responses((status = 200, body = HotKeyList)),
    security(("bearer" = []))
)]
pub async fn hotkeys(
    State(state): State<AppState>,
    uri: Uri,
    Query(params): Query<HotKeyParams>,
    headers: HeaderMap,
) -> Result<Json<HotKeyList>, ApiError> {
    let ns = uri
        .path()
        .strip_prefix("/v1/namespaces/")
        .and_then(|r| r.strip_suffix("/hotkeys"))
        .ok_or_else(|| ApiError::BadRequest("unexpected path".into()))?;
    let access = state.authorize(&headers, ns, Permission::Read)?;
    let limit = params.limit.unwrap_or(10);
    if !(1..=K).contains(&limit) {
        return Err(ApiError::BadRequest(format!("limit must be 1 to {K}")));
    }
    let keys = state.hot.top(&access.namespace.value.name, limit);
    Ok(Json(HotKeyList {
        keys,
        threshold: match access.namespace.value.near_cache {
            larder_registry::model::NearCachePolicy::Auto { min_rate_per_s, .. } => {
                Some(min_rate_per_s)
            }
            _ => None,
        },
    }))
}
