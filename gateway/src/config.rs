//! The gateway's typed configuration.

use larder_registry::RegistryConfig;
use std::time::Duration;

use larder_service::config::Validate;
use larder_service::http::ServeLimits;
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
    /// Data requests this gateway serves at once; past it a request is answered 503
    /// `overloaded` with `Retry-After` at once, never queued.
    pub max_in_flight: u32,
    /// Data requests one namespace may have in flight on this gateway; past it, 429
    /// `concurrency-limited` with `Retry-After`. Below `max_in_flight`, so one namespace
    /// flooding cannot take every slot from the others.
    pub max_in_flight_per_namespace: u32,
    /// A request's head must arrive within this time (also how long an idle keep-alive
    /// connection is kept); past it the connection is closed.
    pub header_read_timeout_ms: u64,
    /// A request's body must arrive in full within this time of its head; past it, 408
    /// `body-timeout`.
    pub body_read_timeout_ms: u64,
    /// Largest request head (request line and headers), bytes; past it, 431.
    pub max_header_bytes: u64,
    /// Largest request body, bytes; past it, 413 `body-too-large` (declared) or the
    /// namespace's `value-too-large` (streamed). Caps a namespace's `max_value_bytes`.
    pub max_body_bytes: u64,
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
            max_in_flight: 4_096,
            max_in_flight_per_namespace: 1_024,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            max_header_bytes: 16 << 10,
            max_body_bytes: 64 << 20,
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

impl Config {
    /// The connection-level bounds of [`larder_service::http::serve_with`].
    pub fn serve_limits(&self) -> ServeLimits {
        ServeLimits {
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            max_header_bytes: usize::try_from(self.max_header_bytes).unwrap_or(usize::MAX),
            body_read_timeout: Duration::from_millis(self.body_read_timeout_ms),
        }
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
        if self.max_in_flight == 0 {
            return Err("max_in_flight must be above zero".into());
        }
        if !(1..=self.max_in_flight).contains(&self.max_in_flight_per_namespace) {
            return Err("max_in_flight_per_namespace must be 1 to max_in_flight".into());
        }
        if !(100..=600_000).contains(&self.header_read_timeout_ms) {
            return Err("header_read_timeout_ms must be between 100 and 600000".into());
        }
        if !(100..=600_000).contains(&self.body_read_timeout_ms) {
            return Err("body_read_timeout_ms must be between 100 and 600000".into());
        }
        // Room for a request line, a bearer token and the usual headers.
        if !(1_024..=(1 << 20)).contains(&self.max_header_bytes) {
            return Err("max_header_bytes must be 1024 to 1048576".into());
        }
        if !(1_024..=(1 << 30)).contains(&self.max_body_bytes) {
            return Err("max_body_bytes must be 1 KiB to 1 GiB".into());
        }
        self.zookeeper.validate()
    }
}
