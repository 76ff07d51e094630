//! Tenant authentication and authorisation.
//!
//! A verified token is cached (keyed by a SHA-256 of the token, bounded, each entry
//! expiring with the token) so most requests skip the signature check. Revocation and
//! key retirement are still checked against the current snapshot on every request — a
//! map lookup — so they take effect as soon as the registry change arrives.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use larder_registry::Snapshot;
use larder_registry::auth::{Claims, Permission, TENANT_AUDIENCE, TokenError};
use larder_registry::model::KeyState;
use moka::sync::Cache;
use sha2::{Digest, Sha256};

/// A verified token and the key that signed it.
#[derive(Debug, Clone)]
pub struct Verified {
    pub claims: Arc<Claims>,
    pub kid: Arc<str>,
}

struct Expiry;

impl moka::Expiry<[u8; 32], (Verified, Instant)> for Expiry {
    fn expire_after_create(
        &self,
        _: &[u8; 32],
        value: &(Verified, Instant),
        _: Instant,
    ) -> Option<Duration> {
        Some(value.1.saturating_duration_since(Instant::now()))
    }
}

/// Verifies bearer tokens, with a cache of those already verified.
pub struct Verifier {
    cache: Cache<[u8; 32], (Verified, Instant)>,
}

impl Verifier {
    pub fn new(capacity: u64) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(capacity)
                .expire_after(Expiry)
                .build(),
        }
    }

    /// Verifies the request's bearer token against `snapshot`.
    pub fn verify(&self, snapshot: &Snapshot, headers: &HeaderMap) -> Result<Verified, TokenError> {
        let token = bearer(headers)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let verified = match self.cache.get(&digest) {
            Some((v, _)) => v,
            None => {
                let claims = larder_registry::auth::verify(snapshot, token, TENANT_AUDIENCE)?;
                let kid: Arc<str> = jsonwebtoken::decode_header(token)
                    .ok()
                    .and_then(|h| h.kid)
                    .unwrap_or_default()
                    .into();
                let now_s = larder_registry::now_ms() / 1000;
                let lifetime = Duration::from_secs(claims.exp.saturating_sub(now_s));
                let v = Verified {
                    claims: Arc::new(claims),
                    kid,
                };
                self.cache
                    .insert(digest, (v.clone(), Instant::now() + lifetime));
                return Ok(v);
            }
        };
        // Still valid as of this snapshot?
        if snapshot.is_revoked(&verified.claims.jti) {
            return Err(TokenError::Revoked);
        }
        match snapshot.keys.get(&*verified.kid) {
            Some(k) if k.value.state == KeyState::Active => {}
            Some(_) => return Err(TokenError::RetiredKey(verified.kid.to_string())),
            None => return Err(TokenError::UnknownKey(verified.kid.to_string())),
        }
        if verified.claims.exp + larder_registry::auth::LEEWAY_S < larder_registry::now_ms() / 1000
        {
            return Err(TokenError::Expired);
        }
        Ok(verified)
    }
}

fn bearer(headers: &HeaderMap) -> Result<&str, TokenError> {
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

/// What an operation needs.
pub fn require(claims: &Claims, namespace: &str, permission: Permission) -> Result<(), String> {
    if !claims.ns.iter().any(|n| n == namespace) {
        return Err(format!(
            "the token is not valid for namespace {namespace:?}"
        ));
    }
    if !claims.perms.contains(&permission) {
        let p = serde_json::to_value(permission)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        return Err(format!("the token lacks the {p} permission"));
    }
    Ok(())
}
