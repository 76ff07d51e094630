//! Wire types of the admin API, shared by the server and by `larderctl`'s client.
//!
//! Requests reject unknown fields so a typo is an error, not a silently ignored limit.
//! Registry model types appear as they are stored; their OpenAPI schemas are the mirrors
//! in [`crate::openapi::model`].

use larder_registry::auth::Permission;
use larder_registry::ledger::AuditEntry;
use larder_registry::model::{
    Cluster, KeyState, Limits, Namespace, NearCachePolicy, NodeHealth, Topology,
};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::openapi::model as doc;

/// `POST /v1/clusters`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterCluster {
    /// `^[a-z][a-z0-9-]{1,62}$`.
    #[schema(pattern = "^[a-z][a-z0-9-]{1,62}$")]
    pub name: String,
    #[schema(value_type = doc::Topology)]
    pub topology: Topology,
    /// Standalone: the master. Cluster: one or more seed nodes.
    #[schema(value_type = Vec<doc::Endpoint>, min_items = 1)]
    pub endpoints: Vec<String>,
    /// Standalone only: the master's replicas.
    #[serde(default)]
    #[schema(value_type = Vec<doc::Endpoint>)]
    pub replicas: Vec<String>,
    #[serde(default = "default_region")]
    #[schema(default = "local", pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub region: String,
    /// Memory the platform may hand out to namespaces on this deployment, bytes.
    #[schema(minimum = 1)]
    pub capacity_bytes: u64,
    /// How long the master must look down before a failover, ms (default 3000).
    #[serde(default)]
    #[schema(minimum = 500, maximum = 600000)]
    pub down_after_ms: Option<u64>,
}

fn default_region() -> String {
    "local".into()
}

/// A deployment's health as the agents report it; `reasons` says why it is not `ok`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// The master is up and every other node is up and replicating it (Redis Cluster:
    /// every reported node is up).
    Ok,
    /// The master is up; something else is off (a replica down, unreported or astray, a
    /// stale report).
    Degraded,
    /// The master is reported down, or unreported and seen by no replica (Redis Cluster:
    /// no master is up).
    Down,
    /// No agent reports on it.
    Unknown,
}

/// A registered deployment with its live health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClusterView {
    #[serde(flatten)]
    #[schema(value_type = doc::Cluster)]
    pub cluster: Cluster,
    pub status: HealthStatus,
    /// Why the status is not `ok`, most important first (empty when it is).
    #[serde(default)]
    pub reasons: Vec<String>,
    /// The agents' latest reports, one per Redis node.
    #[schema(value_type = Vec<doc::NodeHealth>)]
    pub nodes: Vec<NodeHealth>,
    /// Namespaces placed on it (in any state).
    pub namespaces: usize,
    /// Memory promised to its namespaces, bytes.
    pub reserved_bytes: u64,
    /// What registration found: the Redis version of the master (first seed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_version: Option<String>,
    /// What registration found: `maxmemory` summed over the masters (0: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maxmemory_bytes: Option<u64>,
    /// Worth knowing without changing the status: what registration noticed without
    /// refusing (for example no `maxmemory`), nodes running a Redis version open to the
    /// Lua scripting CVEs, reports from nodes that are not registered members.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// `POST /v1/namespaces`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNamespace {
    /// `^[a-z][a-z0-9-]{1,62}$`.
    #[schema(pattern = "^[a-z][a-z0-9-]{1,62}$")]
    pub name: String,
    /// The owning team: 1 to 128 printable characters.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub owner: String,
    /// Where to place it; when absent, placement picks a healthy deployment in
    /// `region` with the most unreserved capacity.
    #[serde(default)]
    #[schema(pattern = "^[a-z][a-z0-9-]{1,62}$")]
    pub cluster: Option<String>,
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub region: Option<String>,
    /// Limits; every field left out takes its default.
    #[serde(default, deserialize_with = "object")]
    #[schema(value_type = Option<doc::Limits>)]
    pub limits: Option<Limits>,
    #[serde(default, deserialize_with = "object")]
    #[schema(value_type = Option<doc::NearCachePolicy>)]
    pub near_cache: Option<NearCachePolicy>,
}

/// `PATCH /v1/namespaces/{name}`: fields left out keep their value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateNamespace {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub owner: Option<String>,
    #[serde(
        default,
        deserialize_with = "object",
        skip_serializing_if = "Option::is_none"
    )]
    pub limits: Option<LimitsPatch>,
    #[serde(
        default,
        deserialize_with = "object",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<doc::NearCachePolicy>)]
    pub near_cache: Option<NearCachePolicy>,
}

/// Changes to a namespace's limits. The TTL fields take `null` to remove the TTL.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 65536)]
    pub max_key_bytes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 536870912)]
    pub max_value_bytes: Option<u64>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<u64>, minimum = 1)]
    pub default_ttl_s: Option<Option<u64>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<u64>, minimum = 1)]
    pub max_ttl_s: Option<Option<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 2147483647)]
    pub ops_per_sec: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 2147483647)]
    pub burst: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub memory_bytes: Option<u64>,
}

/// A nested object field, read only from a JSON object or `null`: serde would also read
/// a struct from an array of its field values (`"limits": [null, null]` as `{}`).
fn object<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    use serde::de::Error;
    match Option::<serde_json::Value>::deserialize(deserializer)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(value @ serde_json::Value::Object(_)) => serde_json::from_value(value)
            .map(Some)
            .map_err(D::Error::custom),
        Some(_) => Err(D::Error::custom("expected a JSON object")),
    }
}

/// Tells a field given as `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

impl LimitsPatch {
    /// `limits` with this patch applied.
    pub fn apply(&self, mut limits: Limits) -> Limits {
        if let Some(v) = self.max_key_bytes {
            limits.max_key_bytes = v;
        }
        if let Some(v) = self.max_value_bytes {
            limits.max_value_bytes = v;
        }
        if let Some(v) = self.default_ttl_s {
            limits.default_ttl_s = v;
        }
        if let Some(v) = self.max_ttl_s {
            limits.max_ttl_s = v;
        }
        if let Some(v) = self.ops_per_sec {
            limits.ops_per_sec = v;
        }
        if let Some(v) = self.burst {
            limits.burst = v;
        }
        if let Some(v) = self.memory_bytes {
            limits.memory_bytes = v;
        }
        limits
    }
}

/// A namespace's use of its deployment. Key count and memory come from a bounded
/// `SCAN` of the deployment (cached for a few seconds); when the scan could not finish
/// within its budget they are extrapolated from the share scanned and `exact` is false.
/// Memory is the average `MEMORY USAGE` of sampled keys times the key count. Ops/s is
/// the rate of data requests the gateways counted for the namespace over the last
/// sampling interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    pub keys: u64,
    pub memory_bytes: u64,
    /// Whether `keys` is a full count rather than an extrapolation.
    pub exact: bool,
    /// Data requests per second through the gateways; absent until sampled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops_per_sec: Option<f64>,
    pub measured_at_ms: u64,
    /// Why a figure is missing or rough (the deployment did not answer, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// How far a namespace's deletion has got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeletionProgress {
    pub pass: u32,
    pub deleted_keys: u64,
    pub updated_at_ms: u64,
}

/// A namespace as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NamespaceView {
    #[serde(flatten)]
    #[schema(value_type = doc::Namespace)]
    pub namespace: Namespace,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Present while the namespace is being deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion: Option<DeletionProgress>,
}

/// Filters of `GET /v1/namespaces`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct NamespaceQuery {
    /// Only namespaces on this deployment.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Only namespaces of this owner.
    #[serde(default)]
    pub owner: Option<String>,
    /// Include usage figures (default true).
    #[serde(default)]
    pub usage: Option<bool>,
}

/// `POST /v1/namespaces/{ns}/tokens`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueToken {
    /// Who will hold the token (a team or service): 1 to 128 printable characters.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub subject: String,
    /// At least one of `read`, `write`, `queue` (`admin` is refused).
    #[schema(value_type = Vec<doc::TenantPermission>, min_items = 1)]
    pub permissions: Vec<Permission>,
    /// Lifetime in seconds; default one day, at most the configured maximum.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub ttl_s: Option<u64>,
}

/// A freshly issued token. The token itself is shown once and not stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IssuedToken {
    pub token: String,
    pub jti: String,
    pub kid: String,
    pub subject: String,
    pub namespaces: Vec<String>,
    #[schema(value_type = Vec<doc::Permission>)]
    pub permissions: Vec<Permission>,
    /// Seconds since the epoch.
    pub expires_at: u64,
}

/// Where an issued token stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TokenState {
    Active,
    Revoked,
    Expired,
}

/// An issued token's metadata (never the token).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    pub jti: String,
    pub kid: String,
    pub subject: String,
    pub namespaces: Vec<String>,
    #[schema(value_type = Vec<doc::Permission>)]
    pub permissions: Vec<Permission>,
    pub state: TokenState,
    /// Seconds since the epoch.
    pub issued_at: u64,
    /// Seconds since the epoch.
    pub expires_at: u64,
    pub issued_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
}

/// Filters of `GET /v1/tokens`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TokenQuery {
    /// Only tokens for this namespace.
    #[serde(default)]
    #[param(pattern = "^[a-z][a-z0-9-]{1,62}$")]
    pub namespace: Option<String>,
    /// Include revoked and expired tokens (default false).
    #[serde(default)]
    pub all: Option<bool>,
}

/// A signing key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct KeyView {
    pub kid: String,
    pub alg: String,
    #[schema(value_type = doc::KeyState)]
    pub state: KeyState,
    pub created_at_ms: u64,
    /// Whether new tokens are signed with it.
    pub signing: bool,
    /// Whether the answering instance holds its private half.
    pub held_here: bool,
}

/// Filters and paging of `GET /v1/audit`. Entries come newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only entries by this admin (token subject).
    #[serde(default)]
    pub actor: Option<String>,
    /// Only actions starting with this (`namespace.` or `namespace.create`).
    #[serde(default)]
    pub action: Option<String>,
    /// Only entries about this target (`namespace/orders`).
    #[serde(default)]
    pub target: Option<String>,
    /// `ok` or `error`.
    #[serde(default)]
    #[param(pattern = "^(ok|error)$")]
    pub outcome: Option<String>,
    /// Only entries at or after this time, ms since the epoch.
    #[serde(default)]
    pub since_ms: Option<u64>,
    /// Only entries before this time, ms since the epoch.
    #[serde(default)]
    pub until_ms: Option<u64>,
    /// Page size, 1 to 500 (default 50).
    #[serde(default)]
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// The `next` of the previous page.
    #[serde(default)]
    #[param(pattern = "^e_[0-9]+$")]
    pub before: Option<String>,
}

/// One audit entry with its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditRecord {
    /// Rises with time; pass it as `before` to page.
    pub id: String,
    #[serde(flatten)]
    #[schema(value_type = doc::AuditEntry)]
    pub entry: AuditEntry,
}

/// A page of audit entries, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditRecord>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// A list response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct List<T> {
    pub items: Vec<T>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_objects_only_from_objects() {
        let patch: UpdateNamespace =
            serde_json::from_str(r#"{"limits": {"burst": 5}, "near_cache": null}"#).unwrap();
        assert_eq!(patch.limits.and_then(|l| l.burst), Some(5));
        assert!(patch.near_cache.is_none());
        for body in [
            r#"{"limits": [null, null]}"#,
            r#"{"near_cache": ["off"]}"#,
            r#"{"limits": 3}"#,
        ] {
            assert!(
                serde_json::from_str::<UpdateNamespace>(body).is_err(),
                "{body}"
            );
        }
        let create = r#"{"name": "ab", "owner": "o", "limits": [512]}"#;
        assert!(serde_json::from_str::<CreateNamespace>(create).is_err());
    }
}
