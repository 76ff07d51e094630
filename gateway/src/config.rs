//! The gateway's typed configuration.

use larder_registry::RegistryConfig;
use larder_service::config::Validate;
use larder_service::telemetry::LogConfig;
use serde::{Deserialize, Serialize};

/// Configuration of `larder-gateway` (TOML file < `LARDER_*` < command line).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the data API.
    pub listen: String,
    /// Address other components should use to reach this gateway (published in the
    /// registry); defaults to the bound address.
    pub advertise: Option<String>,
    /// This gateway's id in the registry (`/gateways/<id>`).
    pub id: String,
    /// Deadline of one Redis call; past it the request fails with 504.
    pub request_timeout_ms: u64,
    /// Deadline for opening a connection to a Redis deployment; past it, 503.
    pub connect_timeout_ms: u64,
    /// Verified tokens kept in memory (each until its own expiry).
    pub token_cache_entries: u64,
    /// Memory the near cache may use, bytes.
    pub near_cache_max_bytes: u64,
    /// Entries the near cache may hold.
    pub near_cache_max_entries: u64,
    pub zookeeper: RegistryConfig,
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            advertise: None,
            id: default_id(),
            request_timeout_ms: 1_000,
            connect_timeout_ms: 1_000,
            token_cache_entries: 100_000,
            near_cache_max_bytes: 64 << 20,
            near_cache_max_entries: 100_000,
            zookeeper: RegistryConfig::default(),
            log: LogConfig::default(),
        }
    }
}

fn default_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    format!(
        "gw-{}-{}",
        if host.is_empty() { "local" } else { &host },
        std::process::id()
    )
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
        if !(10..=60_000).contains(&self.request_timeout_ms) {
            return Err("request_timeout_ms must be between 10 and 60000".into());
        }
        if !(10..=60_000).contains(&self.connect_timeout_ms) {
            return Err("connect_timeout_ms must be between 10 and 60000".into());
        }
        if self.near_cache_max_bytes == 0 || self.near_cache_max_entries == 0 {
            return Err(
                "near_cache_max_bytes and near_cache_max_entries must be above zero".into(),
            );
        }
        if self.token_cache_entries == 0 {
            return Err("token_cache_entries must be above zero".into());
        }
        self.zookeeper.validate()
    }
}
