//! Wire types of the admin API, shared by the server and by `larderctl`'s client.
//!
//! Requests reject unknown fields so a typo is an error, not a silently ignored limit.

use larder_registry::auth::Permission;
use larder_registry::model::{Cluster, Limits, Namespace, NearCachePolicy, NodeHealth, Topology};
use serde::{Deserialize, Serialize};

/// `POST /v1/clusters`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterCluster {
    pub name: String,
    pub topology: Topology,
    /// Standalone: the master. Cluster: one or more seed nodes.
    pub endpoints: Vec<String>,
    /// Standalone only: the master's replicas.
    #[serde(default)]
    pub replicas: Vec<String>,
    #[serde(default = "default_region")]
    pub region: String,
    pub capacity_bytes: u64,
    #[serde(default)]
    pub down_after_ms: Option<u64>,
}

fn default_region() -> String {
    "local".into()
}

/// A deployment's health as the agents report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
    Degraded,
    Down,
    /// No agent reports on it.
    Unknown,
}

/// A registered deployment with its live health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    #[serde(flatten)]
    pub cluster: Cluster,
    pub status: HealthStatus,
    pub nodes: Vec<NodeHealth>,
    pub namespaces: usize,
    /// Memory promised to its namespaces.
    pub reserved_bytes: u64,
    /// What registration found: the Redis version of the first endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_version: Option<String>,
}

/// `POST /v1/namespaces`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateNamespace {
    pub name: String,
    pub owner: String,
    /// Where to place it; when absent, placement picks a healthy deployment in
    /// `region` with the most unreserved capacity.
    #[serde(default)]
    pub cluster: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub limits: Option<Limits>,
    #[serde(default)]
    pub near_cache: Option<NearCachePolicy>,
}

/// A namespace as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamespaceView {
    #[serde(flatten)]
    pub namespace: Namespace,
}

/// `POST /v1/namespaces/{ns}/tokens`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueToken {
    /// Who will hold the token (a team or service).
    pub subject: String,
    pub permissions: Vec<Permission>,
    /// Lifetime in seconds; default one day, at most the configured maximum.
    #[serde(default)]
    pub ttl_s: Option<u64>,
}

/// A freshly issued token. The token itself is shown once and not stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IssuedToken {
    pub token: String,
    pub jti: String,
    pub kid: String,
    pub subject: String,
    pub namespaces: Vec<String>,
    pub permissions: Vec<Permission>,
    /// Seconds since the epoch.
    pub expires_at: u64,
}

/// A list response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct List<T> {
    pub items: Vec<T>,
}
