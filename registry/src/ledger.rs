//! The control plane's own records: issued-token metadata, the audit trail and
//! background jobs.
//!
//! They live beside the watched layout (see [`crate::paths`]) but [`crate::paths::classify`]
//! does not know them, so no snapshot — and no gateway — ever loads them. The control
//! plane reads them on demand with [`Registry::get`](crate::Registry::get) and
//! [`Registry::children`](crate::Registry::children).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::auth::Permission;
use crate::model::Record;

/// `/auth/tokens/<jti>`: what was issued, to whom and until when. Never the token itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    pub jti: String,
    /// The signing key.
    pub kid: String,
    pub subject: String,
    pub audience: String,
    pub namespaces: Vec<String>,
    pub permissions: Vec<Permission>,
    /// `iat`, seconds since the epoch (also `nbf`).
    pub issued_at: u64,
    /// `exp`, seconds since the epoch; the record is pruned after it.
    pub expires_at: u64,
    /// The admin (token subject) who issued it.
    pub issued_by: String,
    /// Set when the token was revoked.
    #[serde(default)]
    pub revoked_at_ms: Option<u64>,
    #[serde(default)]
    pub revoked_by: Option<String>,
    /// Issued under an `Idempotency-Key` (its digest names the `jti`).
    #[serde(default)]
    pub idempotent: bool,
}

impl Record for TokenRecord {
    const KIND: &'static str = "token record";
}

/// `/jobs/deletions/<ns>`: removing a namespace's keys in bounded batches. Whichever
/// control-plane instance leads picks the job up where the last one left it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeletionJob {
    pub namespace: String,
    /// The deployment the keys live on.
    pub cluster: String,
    pub requested_by: String,
    pub requested_at_ms: u64,
    /// Full passes over the keyspace started so far (the job ends after a pass that
    /// found nothing left to delete).
    #[serde(default)]
    pub pass: u32,
    /// `SCAN` cursor per Redis node (`host:port`) in the current pass.
    #[serde(default)]
    pub cursors: BTreeMap<String, u64>,
    /// Nodes whose scan is complete in the current pass.
    #[serde(default)]
    pub finished: Vec<String>,
    /// Keys removed during the current pass.
    #[serde(default)]
    pub deleted_this_pass: u64,
    /// Keys removed in total.
    #[serde(default)]
    pub deleted_keys: u64,
    /// The control-plane instance that wrote this progress.
    #[serde(default)]
    pub updated_by: String,
    #[serde(default)]
    pub updated_at_ms: u64,
}

impl Record for DeletionJob {
    const KIND: &'static str = "deletion job";
}

/// How an audited call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Error,
}

/// `/audit/e_<seq>`: one admin mutation — who, what, when, and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// When the call finished, milliseconds since the epoch.
    pub at_ms: u64,
    /// The admin token's subject (`system` for the leader's own background work).
    pub actor: String,
    /// The `jti` of the admin token used.
    #[serde(default)]
    pub actor_token: Option<String>,
    /// The control-plane instance that served the call.
    pub instance: String,
    /// A stable action name such as `namespace.create` or `token.revoke`.
    pub action: String,
    /// What it acted on, such as `namespace/orders`.
    pub target: String,
    pub method: String,
    pub path: String,
    /// The HTTP status answered.
    pub status: u16,
    pub outcome: Outcome,
    /// The problem's detail for a failure, or a note on the result.
    #[serde(default)]
    pub detail: Option<String>,
    /// The JSON request body (secrets scrubbed), when there was one.
    #[serde(default)]
    pub request: Option<serde_json::Value>,
    #[serde(default)]
    pub request_id: Option<String>,
}

impl Record for AuditEntry {
    const KIND: &'static str = "audit entry";
}
