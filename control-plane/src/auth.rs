//! Admin authentication: every `/v1` call carries an admin token.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use larder_registry::auth::{ADMIN_AUDIENCE, Claims, Permission, TokenError};

use crate::error::ApiError;
use crate::state::AppState;

/// The verified claims of an admin caller.
#[derive(Debug, Clone)]
pub struct Admin(pub Claims);

/// The bearer token of a request, if any.
pub fn bearer(parts: &Parts) -> Result<&str, TokenError> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or(TokenError::Missing)?;
    let value = value
        .to_str()
        .map_err(|_| TokenError::Malformed("authorization header is not text".into()))?;
    let (scheme, token) = value.split_once(' ').ok_or(TokenError::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(TokenError::Missing);
    }
    Ok(token.trim())
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?;
        let claims = larder_registry::auth::verify(&state.snapshot.load(), token, ADMIN_AUDIENCE)?;
        if !claims.perms.contains(&Permission::Admin) {
            return Err(ApiError::Forbidden(
                "the token lacks the admin permission".into(),
            ));
        }
        Ok(Admin(claims))
    }
}
