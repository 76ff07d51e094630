//! `/v1/namespaces/{ns}/tokens`: issuing tenant tokens.

use axum::extract::State;
use axum::http::StatusCode;
use larder_registry::auth::{Permission, TENANT_AUDIENCE};

use crate::api::{IssueToken, IssuedToken};
use crate::auth::Admin;
use crate::error::{ApiError, Json, Path};
use crate::keys;
use crate::state::AppState;

/// Default lifetime of a tenant token: one day.
pub const DEFAULT_TTL_S: u64 = 24 * 3600;

/// Issues a token for one namespace, signed with the active key.
pub async fn issue(
    State(state): State<AppState>,
    Admin(_admin): Admin,
    Path(ns): Path<String>,
    Json(request): Json<IssueToken>,
) -> Result<(StatusCode, Json<IssuedToken>), ApiError> {
    larder_registry::names::namespace(&ns)?;
    if state.snapshot.load().namespace(&ns).is_none() {
        return Err(ApiError::NotFound(format!("no namespace {ns:?}")));
    }
    if request.subject.trim().is_empty() || request.subject.len() > 128 {
        return Err(ApiError::BadRequest(
            "subject must be 1 to 128 characters".into(),
        ));
    }
    if request.permissions.is_empty() {
        return Err(ApiError::BadRequest(
            "permissions must name at least one of read, write, queue".into(),
        ));
    }
    if request.permissions.contains(&Permission::Admin) {
        return Err(ApiError::BadRequest(
            "a tenant token cannot carry the admin permission".into(),
        ));
    }
    let ttl = request.ttl_s.unwrap_or(DEFAULT_TTL_S);
    if ttl == 0 || ttl > state.config.max_token_ttl_s {
        return Err(ApiError::BadRequest(format!(
            "ttl_s must be 1 to {}",
            state.config.max_token_ttl_s
        )));
    }
    let mut permissions = request.permissions.clone();
    permissions.sort();
    permissions.dedup();
    let claims = keys::claims(
        &request.subject,
        TENANT_AUDIENCE,
        vec![ns.clone()],
        permissions.clone(),
        ttl,
    );
    let (token, kid) = state
        .keys
        .sign(&claims)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    tracing::info!(namespace = %ns, jti = %claims.jti, subject = %claims.sub, "issued token");
    Ok((
        StatusCode::CREATED,
        Json(IssuedToken {
            token,
            jti: claims.jti,
            kid,
            subject: claims.sub,
            namespaces: claims.ns,
            permissions,
            expires_at: claims.exp,
        }),
    ))
}
