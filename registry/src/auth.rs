//! Token claims shared by the issuer (control plane) and the verifiers (gateway, control plane).
//!
//! Tokens are JWTs signed with Ed25519 (`alg: EdDSA`); the header's `kid` names a public
//! key under `/auth/keys`. The algorithm is fixed by the verifier, never taken from the token.

use serde::{Deserialize, Serialize};

/// `iss` of every token.
pub const ISSUER: &str = "larder";
/// `aud` of tenant tokens, accepted by gateways.
pub const TENANT_AUDIENCE: &str = "larder-gateway";
/// `aud` of admin tokens, accepted by the control plane.
pub const ADMIN_AUDIENCE: &str = "larder-admin";
/// Clock skew tolerated on `exp` and `nbf`, seconds.
pub const LEEWAY_S: u64 = 30;

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    Read,
    Write,
    Queue,
    Admin,
}

impl Permission {
    pub const TENANT: [Permission; 3] = [Permission::Read, Permission::Write, Permission::Queue];
}

/// The claims Larder puts in every token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// Who holds the token (a team, service or person).
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    #[serde(default)]
    pub nbf: u64,
    #[serde(default)]
    pub iat: u64,
    /// Token id; revocation is by `jti`.
    pub jti: String,
    /// Namespaces the token may touch (empty for admin tokens).
    #[serde(default)]
    pub ns: Vec<String>,
    pub perms: Vec<Permission>,
}

impl Claims {
    pub fn allows(&self, namespace: &str, permission: Permission) -> bool {
        self.perms.contains(&permission) && self.ns.iter().any(|n| n == namespace)
    }
}

/// Why a token was refused. Every variant is the caller's fault (401), so the message
/// may be shown to the client; it never contains the token itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no bearer token")]
    Missing,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token algorithm {0} is not accepted (only EdDSA)")]
    Algorithm(String),
    #[error("token names no key id (kid)")]
    NoKeyId,
    #[error("unknown signing key {0:?}")]
    UnknownKey(String),
    #[error("signing key {0:?} is retired")]
    RetiredKey(String),
    #[error("token expired")]
    Expired,
    #[error("token not valid yet (nbf)")]
    NotYetValid,
    #[error("token is for another audience")]
    Audience,
    #[error("token has the wrong issuer")]
    Issuer,
    #[error("bad token signature")]
    Signature,
    #[error("invalid token claims: {0}")]
    Claims(String),
    #[error("token has been revoked")]
    Revoked,
}

/// Verifies `token` for `audience` against the public keys and revocations in
/// `snapshot`. The algorithm is fixed to EdDSA here, whatever the header says, so
/// `alg: none` and HMAC-with-the-public-key forgeries are refused before any crypto.
pub fn verify(
    snapshot: &crate::Snapshot,
    token: &str,
    audience: &str,
) -> Result<Claims, TokenError> {
    use jsonwebtoken::errors::ErrorKind;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};

    let header =
        jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
    if header.alg != Algorithm::EdDSA {
        return Err(TokenError::Algorithm(format!("{:?}", header.alg)));
    }
    let kid = header.kid.ok_or(TokenError::NoKeyId)?;
    let key = snapshot
        .keys
        .get(&kid)
        .ok_or_else(|| TokenError::UnknownKey(kid.clone()))?;
    if key.value.state != crate::model::KeyState::Active {
        return Err(TokenError::RetiredKey(kid));
    }
    let decoding = DecodingKey::from_ed_components(&key.value.public_key)
        .map_err(|_| TokenError::UnknownKey(kid.clone()))?;
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.leeway = LEEWAY_S;
    validation.validate_nbf = true;
    validation.set_audience(&[audience]);
    validation.set_issuer(&[ISSUER]);
    validation.set_required_spec_claims(&["exp", "aud", "iss"]);
    let data =
        jsonwebtoken::decode::<Claims>(token, &decoding, &validation).map_err(|e| {
            match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidAudience => TokenError::Audience,
                ErrorKind::InvalidIssuer => TokenError::Issuer,
                ErrorKind::InvalidSignature => TokenError::Signature,
                ErrorKind::Json(_) | ErrorKind::MissingRequiredClaim(_) => {
                    TokenError::Claims(e.to_string())
                }
                _ => TokenError::Malformed(e.to_string()),
            }
        })?;
    if snapshot.is_revoked(&data.claims.jti) {
        return Err(TokenError::Revoked);
    }
    Ok(data.claims)
}
