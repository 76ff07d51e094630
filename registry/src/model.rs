//! The value of every znode, as versioned JSON.
//!
//! Each struct is written inside the envelope `{"schema": 1, ...}` by [`crate::codec`].
//! Fields added later get `#[serde(default)]` so older records still read; a record with a
//! newer schema is refused instead of being half-understood.

use serde::{Deserialize, Serialize};

/// A znode value with a known schema.
pub trait Record: Serialize + for<'de> Deserialize<'de> + Send + Sync + 'static {
    /// What the value is, for error messages.
    const KIND: &'static str;
}

/// How a Redis deployment is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Topology {
    /// One master with asynchronous replicas; Larder fails it over.
    Standalone,
    /// Redis Cluster; it fails over by itself and the client follows `MOVED`.
    Cluster,
}

/// `/clusters/<cluster>`: a registered Redis deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub name: String,
    pub topology: Topology,
    /// For `standalone`, the current master first; for `cluster`, seed nodes.
    pub endpoints: Vec<String>,
    /// For `standalone`, the replicas of the current master.
    #[serde(default)]
    pub replicas: Vec<String>,
    pub region: String,
    /// Memory the platform may hand out to namespaces on this deployment.
    pub capacity_bytes: u64,
    /// Raised at every failover, so a stale writer can be told from the current one.
    #[serde(default)]
    pub epoch: u64,
    /// How long the master must look down before a failover, in milliseconds.
    #[serde(default = "default_down_after_ms")]
    pub down_after_ms: u64,
    #[serde(default)]
    pub created_at_ms: u64,
}

fn default_down_after_ms() -> u64 {
    3_000
}

impl Cluster {
    /// Where writes go for a standalone deployment.
    pub fn master(&self) -> Option<&str> {
        self.endpoints.first().map(String::as_str)
    }
}

impl Record for Cluster {
    const KIND: &'static str = "cluster";
}

/// Replication role as reported by `INFO replication`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Master,
    Replica,
    #[default]
    Unknown,
}

/// `/clusters/<cluster>/nodes/<host:port>`: one Redis instance's health, published by the
/// agent on its host as an ephemeral znode (it vanishes when the agent's session ends).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct NodeHealth {
    pub endpoint: String,
    /// The agent that reports it.
    pub agent: String,
    /// Health after hysteresis: flips only after consecutive probe results.
    pub up: bool,
    pub role: Role,
    /// For a replica: the master it follows and whether the link is up.
    pub master: Option<String>,
    pub master_link_up: Option<bool>,
    pub replication_offset: u64,
    pub used_memory_bytes: u64,
    pub max_memory_bytes: u64,
    pub connected_clients: u64,
    pub ops_per_sec: u64,
    /// PING round trip of the last probe, microseconds.
    pub latency_us: u64,
    pub redis_version: String,
    /// The version carries known Lua-scripting CVEs (CVE-2025-49844 and others).
    pub vulnerable_lua: bool,
    pub uptime_s: u64,
    pub reported_at_ms: u64,
    /// The longest the agent goes without re-writing an unchanged record, ms (0: not
    /// said); readers tell a stuck agent from a quiet one by it.
    pub heartbeat_ms: u64,
}

impl Record for NodeHealth {
    const KIND: &'static str = "node health";
}

/// Lifecycle of a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NamespaceState {
    #[default]
    Active,
    Migrating,
    Disabled,
    /// Keys are being removed in the background; the znode goes last.
    Deleting,
}

/// Per-namespace limits, enforced by every gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub max_key_bytes: u32,
    pub max_value_bytes: u64,
    /// TTL applied when a write names none; `None` keeps keys until evicted.
    pub default_ttl_s: Option<u64>,
    /// Upper bound on any TTL a client asks for; `None` means unbounded.
    pub max_ttl_s: Option<u64>,
    /// Sustained operations per second across all gateways.
    pub ops_per_sec: u32,
    /// Extra operations allowed in a burst above the sustained rate.
    pub burst: u32,
    /// Memory the namespace may use on its deployment (reserved at placement).
    pub memory_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_key_bytes: 512,
            max_value_bytes: 1 << 20,
            default_ttl_s: None,
            max_ttl_s: None,
            ops_per_sec: 1_000,
            burst: 2_000,
            memory_bytes: 64 << 20,
        }
    }
}

/// Whether gateways keep a local copy of values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "mode", rename_all = "lowercase", deny_unknown_fields)]
pub enum NearCachePolicy {
    #[default]
    Off,
    /// Every key, served at most `max_staleness_ms` old.
    On { max_staleness_ms: u64 },
    /// Only keys detected as hot: requested at least `min_rate_per_s` times per second
    /// (through one gateway, over a sliding window).
    Auto {
        max_staleness_ms: u64,
        #[serde(default = "default_hot_key_rate")]
        min_rate_per_s: u32,
    },
}

/// Default hot-key threshold of the `auto` near-cache policy, requests per second.
pub const DEFAULT_HOT_KEY_RATE: u32 = 50;

fn default_hot_key_rate() -> u32 {
    DEFAULT_HOT_KEY_RATE
}

/// `/namespaces/<ns>`: a tenant team's namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Namespace {
    pub name: String,
    pub owner: String,
    /// The deployment its keys live on.
    pub cluster: String,
    #[serde(default)]
    pub state: NamespaceState,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub near_cache: NearCachePolicy,
    /// Raised at every change by the control plane.
    #[serde(default)]
    pub revision: u64,
    #[serde(default)]
    pub created_at_ms: u64,
}

impl Record for Namespace {
    const KIND: &'static str = "namespace";
}

/// Whether a signing key still verifies tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Signs new tokens (the newest active key) and verifies.
    #[default]
    Active,
    /// Verifies nothing any more.
    Retired,
}

/// `/auth/keys/<kid>`: a public verification key. The private half never enters ZooKeeper.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningKey {
    pub kid: String,
    /// JWS algorithm; only `EdDSA` (Ed25519) is issued.
    pub alg: String,
    /// The raw 32-byte Ed25519 public key, base64url without padding (JWK `x`).
    pub public_key: String,
    #[serde(default)]
    pub state: KeyState,
    #[serde(default)]
    pub created_at_ms: u64,
}

impl Record for SigningKey {
    const KIND: &'static str = "signing key";
}

/// `/auth/revoked/<jti>`: a revoked token, kept until the token would have expired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    pub jti: String,
    /// The token's own expiry (seconds since the epoch); the record is pruned after it.
    pub expires_at: u64,
    #[serde(default)]
    pub revoked_at_ms: u64,
}

impl Record for Revocation {
    const KIND: &'static str = "revocation";
}

/// `/gateways/<id>`: a live gateway and the registry revision it has applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct GatewayRecord {
    pub id: String,
    pub address: String,
    pub version: String,
    /// The gateway's local snapshot revision.
    pub revision: u64,
    /// The configuration zxid it has applied (see `Snapshot::config_zxid`).
    pub applied_zxid: i64,
    pub started_at_ms: u64,
}

impl Record for GatewayRecord {
    const KIND: &'static str = "gateway";
}

/// `/leader/n_<seq>`: a control-plane instance standing for election.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct LeaderCandidate {
    pub id: String,
    pub address: String,
    pub started_at_ms: u64,
}

impl Record for LeaderCandidate {
    const KIND: &'static str = "leader candidate";
}
