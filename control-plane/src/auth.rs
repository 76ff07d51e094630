//! Admin authentication: every `/v1` call carries an admin token.
//!
//! Admin tokens are JWTs of the platform's key set with audience `larder-admin` and the
//! `admin` permission, verified against the public keys and revocations in the registry
//! snapshot like tenant tokens are. The first one is minted on a control-plane host with
//! `larderctl admin-token`, which reads the private key there.

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use larder_registry::auth::{ADMIN_AUDIENCE, Claims, Permission, TokenError};

use crate::error::ApiError;
use crate::state::AppState;

/// The verified claims of an admin caller.
#[derive(Debug, Clone)]
pub struct Admin(pub Claims);

impl Admin {
    /// Who the caller is, for audit records and `issued_by`.
    pub fn subject(&self) -> &str {
        &self.0.sub
    }
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Result<&str, TokenError> {
    let value = headers
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

/// Verifies the request's admin token.
pub fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Admin, ApiError> {
    let token = bearer(headers)?;
    let claims = larder_registry::auth::verify(&state.snapshot.load(), token, ADMIN_AUDIENCE)?;
    if !claims.perms.contains(&Permission::Admin) {
        return Err(ApiError::Forbidden(
            "the token lacks the admin permission".into(),
        ));
    }
    Ok(Admin(claims))
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // The audit layer has verified mutations already.
        if let Some(admin) = parts.extensions.get::<Admin>() {
            return Ok(admin.clone());
        }
        authenticate(state, &parts.headers)
    }
}
