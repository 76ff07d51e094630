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
    pub zookeeper: RegistryConfig,
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8081".into(),
            id: default_id("cp"),
            key_dir: PathBuf::from("/var/lib/larder/keys"),
            max_token_ttl_s: 90 * 24 * 3600,
            redis_timeout_ms: 2_000,
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
        self.zookeeper.validate()
    }
}
