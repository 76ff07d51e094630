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
