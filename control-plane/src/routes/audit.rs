//! `/v1/audit`: the record of admin mutations.

use axum::extract::State;

use crate::api::{AuditPage, AuditQuery};
use crate::auth::Admin;
use crate::error::{ApiError, Json, Query};
use crate::openapi::model::Problem;
use crate::state::AppState;

/// Audit entries, newest first, filtered and paged.
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of entries; pass `next` as `before` for older ones", body = AuditPage),
        (status = 400, description = "Unknown or malformed parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or invalid admin token", body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin" = []))
)]
pub async fn query(
    State(state): State<AppState>,
    _admin: Admin,
    Query(query): Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    Ok(Json(crate::audit::query(&state, &query).await?))
}
