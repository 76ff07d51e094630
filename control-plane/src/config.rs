//! The control plane's typed configuration.

use std::path::PathBuf;

use larder_registry::RegistryConfig;
use larder_service::config::Validate;
use larder_service::telemetry::LogConfig;
use serde::{Deserialize, Serialize};

/// Configuration of `larder-control-plane` (TOML file < `LARDER_*` < command line).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the admin API.
    pub listen: String,
    /// This instance's id in elections and audit records.
    pub id: String,
    /// Directory of the private Ed25519 signing keys (`<kid>.pem`, mode 0600). Several
    /// instances sign with the same key set by sharing this directory's content; the
    /// private keys never enter ZooKeeper.
    pub key_dir: PathBuf,
    /// Longest lifetime a tenant token may be issued with, seconds.
    pub max_token_ttl_s: u64,
    /// How long connecting to a Redis deployment may take during registration, ms.
    pub redis_timeout_ms: u64,
    /// Oldest Redis version a deployment may run to be registered (`major.minor`).
    pub min_redis_version: String,
    /// The leader's background work.
    pub background: BackgroundConfig,
    /// How namespace usage is estimated.
    pub usage: UsageConfig,
    /// How long the audit trail is kept.
    pub audit: AuditConfig,
    /// Automatic failover of replicated standalone deployments (run by the leader).
    pub failover: FailoverConfig,
    pub zookeeper: RegistryConfig,
    pub log: LogConfig,
}

/// The leader's background loops (namespace deletion, pruning).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct BackgroundConfig {
    /// How often the leader loop wakes to look for work, ms.
    pub tick_ms: u64,
    /// How often expired revocations, token records and old audit entries are pruned, ms.
    pub prune_interval_ms: u64,
    /// Keys asked of one `SCAN` (and removed by one `UNLINK` batch) when deleting a
    /// namespace.
    pub deletion_batch_keys: u64,
    /// Pause between two deletion batches, ms, to spread the load on Redis.
    pub deletion_pause_ms: u64,
}

impl Default for BackgroundConfig {
    fn default() -> Self {
        Self {
            tick_ms: 500,
            prune_interval_ms: 60_000,
            deletion_batch_keys: 500,
            deletion_pause_ms: 0,
        }
    }
}

/// Namespace usage: key count and memory from a bounded scan, ops/s from the gateways.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct UsageConfig {
    /// Longest a usage scan of one deployment may take, ms; past it the figures are
    /// extrapolated from what was scanned.
    pub scan_timeout_ms: u64,
    /// Most keys examined per Redis node in one usage scan.
    pub scan_max_keys: u64,
    /// How long a deployment's usage figures are reused, ms.
    pub cache_ms: u64,
    /// How often gateways' request counters are sampled for ops/s, ms (0: never).
    pub sample_interval_ms: u64,
}

impl Default for UsageConfig {
    fn default() -> Self {
        Self {
            scan_timeout_ms: 1_000,
            scan_max_keys: 200_000,
            cache_ms: 10_000,
            sample_interval_ms: 5_000,
        }
    }
}

/// Retention of the audit trail (entries in ZooKeeper under `/audit`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Entries older than this are pruned, days.
    pub retention_days: u64,
    /// At most this many entries are kept (the oldest go first). ZooKeeper lists one
    /// directory in a single reply of at most 1 MB, which bounds it.
    pub max_entries: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            retention_days: 365,
            max_entries: 20_000,
        }
    }
}

/// The leader's failover of standalone deployments and its reconciliation of their
/// replication (see `failover.rs`). How long a master must look down before it is
/// replaced is set per deployment (`down_after_ms`, 3 s by default).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct FailoverConfig {
    /// Whether the leader promotes replicas and repoints stray nodes. Off leaves
    /// deployments alone (for example while another tool such as Sentinel manages them);
    /// health is still reported.
    pub enabled: bool,
    /// How often the leader probes each standalone master and checks replication, ms.
    pub tick_ms: u64,
    /// How long one probe or Redis command of the leader may take, ms; a slower answer
    /// counts as a failure.
    pub probe_timeout_ms: u64,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            tick_ms: 250,
            probe_timeout_ms: 500,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8081".into(),
            id: default_id("cp"),
            key_dir: PathBuf::from("/var/lib/larder/keys"),
            max_token_ttl_s: 90 * 24 * 3600,
            redis_timeout_ms: 2_000,
            min_redis_version: "6.2".into(),
            background: BackgroundConfig::default(),
            usage: UsageConfig::default(),
            audit: AuditConfig::default(),
            failover: FailoverConfig::default(),
            zookeeper: RegistryConfig::default(),
            log: LogConfig::default(),
        }
    }
}

/// `<prefix>-<hostname>`, or `<prefix>-local` when the host name is unknown.
pub fn default_id(prefix: &str) -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    if host.is_empty() {
        format!("{prefix}-local")
    } else {
        format!("{prefix}-{host}")
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), String> {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(format!(
                "listen {:?} must be an ip:port address",
                self.listen
            ));
        }
        larder_registry::names::id("id", &self.id).map_err(|e| e.to_string())?;
        if self.key_dir.as_os_str().is_empty() {
            return Err("key_dir must name a directory".into());
        }
        if !(60..=10 * 365 * 24 * 3600).contains(&self.max_token_ttl_s) {
            return Err("max_token_ttl_s must be between 60 s and 10 years".into());
        }
        if !(100..=60_000).contains(&self.redis_timeout_ms) {
            return Err("redis_timeout_ms must be between 100 and 60000".into());
        }
        if crate::probe::parse_version(&self.min_redis_version).is_none() {
            return Err(format!(
                "min_redis_version {:?} must look like 6.2",
                self.min_redis_version
            ));
        }
        let b = &self.background;
        if !(10..=60_000).contains(&b.tick_ms) {
            return Err("background.tick_ms must be between 10 and 60000".into());
        }
        if !(100..=86_400_000).contains(&b.prune_interval_ms) {
            return Err("background.prune_interval_ms must be between 100 and 86400000".into());
        }
        if !(1..=100_000).contains(&b.deletion_batch_keys) {
            return Err("background.deletion_batch_keys must be between 1 and 100000".into());
        }
        if b.deletion_pause_ms > 60_000 {
            return Err("background.deletion_pause_ms must be at most 60000".into());
        }
        let u = &self.usage;
        if !(10..=60_000).contains(&u.scan_timeout_ms) {
            return Err("usage.scan_timeout_ms must be between 10 and 60000".into());
        }
        if u.scan_max_keys == 0 {
            return Err("usage.scan_max_keys must be above zero".into());
        }
        if u.sample_interval_ms != 0 && u.sample_interval_ms < 100 {
            return Err("usage.sample_interval_ms must be 0 (off) or at least 100".into());
        }
        if self.audit.retention_days == 0 {
            return Err("audit.retention_days must be above zero".into());
        }
        if !(100..=40_000).contains(&self.audit.max_entries) {
            return Err("audit.max_entries must be between 100 and 40000".into());
        }
        let f = &self.failover;
        if !(20..=10_000).contains(&f.tick_ms) {
            return Err("failover.tick_ms must be between 20 and 10000".into());
        }
        if !(20..=10_000).contains(&f.probe_timeout_ms) {
            return Err("failover.probe_timeout_ms must be between 20 and 10000".into());
        }
        self.zookeeper.validate()
    }
}
