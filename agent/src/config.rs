//! The agent's configuration: defaults < TOML file < `LARDER_*` environment < command line.
//!
//! ```toml
//! listen = "0.0.0.0:9121"
//! probe_interval_ms = 1000
//!
//! [zookeeper]
//! connect = "zk-1:2181,zk-2:2181,zk-3:2181"
//!
//! [[instances]]
//! address = "10.0.0.5:6379"
//! cluster = "main"
//! password = "…"
//! ```

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use larder_registry::{RegistryConfig, names};
use larder_service::config::{ConfigError, Validate};
use larder_service::telemetry::LogConfig;
use serde::{Deserialize, Serialize};

/// Everything `larder-agent` needs to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the HTTP server for `/metrics`, `/healthz` and `/readyz`. The default
    /// is the loopback interface on redis_exporter's port, so a stock Prometheus scrape
    /// configuration finds it and nothing is exposed off-host unless asked for.
    pub listen: String,
    /// This agent's id, written into every health record (`agent`) so an operator can
    /// tell which host reported a node. `[A-Za-z0-9_-]{1,64}`; defaults to
    /// `agent-<hostname>`.
    pub id: String,
    /// Time between the starts of two probes of one instance, milliseconds.
    pub probe_interval_ms: u64,
    /// How long one probe (connect if needed, PING, INFO) may take, milliseconds; a
    /// slower answer counts as a failure. At most `probe_interval_ms`.
    pub probe_timeout_ms: u64,
    /// Consecutive failed probes before a healthy instance is reported down.
    pub fail_after: u32,
    /// Consecutive good probes before a down instance is reported up again.
    pub recover_after: u32,
    /// An unchanged health record is re-published at most this often, milliseconds;
    /// changes (up/down, role, master, link, CVE flag) are published at once. Each
    /// re-publication is a ZooKeeper write, so this sets the steady write rate:
    /// 1,000 nodes at 10 s give 100 writes/s.
    pub heartbeat_interval_ms: u64,
    /// Where the registry lives.
    pub zookeeper: RegistryConfig,
    /// Logging.
    pub log: LogConfig,
    /// The Redis instances on this host. At least one.
    pub instances: Vec<Instance>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9121".into(),
            id: default_id(),
            probe_interval_ms: 1_000,
            probe_timeout_ms: 500,
            fail_after: 3,
            recover_after: 2,
            heartbeat_interval_ms: 10_000,
            zookeeper: RegistryConfig::default(),
            log: LogConfig::default(),
            instances: Vec::new(),
        }
    }
}

/// One Redis instance to probe.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instance {
    /// `host:port` as the rest of the platform knows it; it names the health znode, so
    /// it must match the endpoint registered for the cluster.
    pub address: String,
    /// The registered cluster (deployment) this instance belongs to.
    pub cluster: String,
    /// ACL user for Redis 6+; `default` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password (`requirepass` or the ACL user's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

// Written by hand so a password never reaches a log line or an error message.
impl fmt::Debug for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Instance")
            .field("address", &self.address)
            .field("cluster", &self.cluster)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// `CLUSTER=HOST:PORT`, the command-line form (`--instance main=127.0.0.1:6379`).
/// Names are checked later by [`Config::validate`], with the rest of the configuration.
impl FromStr for Instance {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((cluster, address)) = s.split_once('=') else {
            return Err("expected CLUSTER=HOST:PORT".into());
        };
        Ok(Self {
            address: address.trim().to_owned(),
            cluster: cluster.trim().to_owned(),
            username: None,
            password: None,
        })
    }
}

/// Command-line values that win over the file and the environment; `None` leaves the
/// value underneath alone.
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zookeeper: Option<ZooKeeperOverrides>,
    /// Replaces the configured instances as a whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instances: Option<Vec<Instance>>,
}

/// The `[zookeeper]` values settable from the command line.
#[derive(Debug, Default, Serialize)]
pub struct ZooKeeperOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
}

impl Config {
    /// Loads the layered configuration and validates it.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        larder_service::config::load(file, overrides)
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), String> {
        check_listen(&self.listen)?;
        names::id("agent id", &self.id).map_err(|e| format!("id: {e}"))?;
        if !(100..=600_000).contains(&self.probe_interval_ms) {
            return Err("probe_interval_ms must be between 100 and 600000".into());
        }
        if !(10..=self.probe_interval_ms).contains(&self.probe_timeout_ms) {
            return Err(format!(
                "probe_timeout_ms must be between 10 and probe_interval_ms ({})",
                self.probe_interval_ms
            ));
        }
        if !(1..=1_000).contains(&self.fail_after) {
            return Err("fail_after must be between 1 and 1000".into());
        }
        if !(1..=1_000).contains(&self.recover_after) {
            return Err("recover_after must be between 1 and 1000".into());
        }
        if !(self.probe_interval_ms..=3_600_000).contains(&self.heartbeat_interval_ms) {
            return Err(format!(
                "heartbeat_interval_ms must be between probe_interval_ms ({}) and 3600000",
                self.probe_interval_ms
            ));
        }
        self.zookeeper.validate()?;
        if self.instances.is_empty() {
            return Err(
                "instances must list at least one Redis instance (--instance CLUSTER=HOST:PORT)"
                    .into(),
            );
        }
        for (i, instance) in self.instances.iter().enumerate() {
            names::endpoint(&instance.address)
                .map_err(|e| format!("instances[{i}].address: {e}"))?;
            names::cluster(&instance.cluster)
                .map_err(|e| format!("instances[{i}].cluster: {e}"))?;
            if instance.password.as_deref() == Some("") {
                return Err(format!(
                    "instances[{i}].password is empty; leave it out for no password"
                ));
            }
            // Two probe loops publishing one znode would overwrite each other.
            if self.instances[..i]
                .iter()
                .any(|other| other.address == instance.address)
            {
                return Err(format!(
                    "instances[{i}].address {} is listed twice",
                    instance.address
                ));
            }
        }
        Ok(())
    }
}

/// `host:port`; port 0 is allowed so tests can ask for any free port.
fn check_listen(listen: &str) -> Result<(), String> {
    let ok = listen
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if ok {
        Ok(())
    } else {
        Err(format!("listen {listen:?} must be host:port"))
    }
}

/// `agent-<hostname>`, made a valid id: hostnames may hold dots and run to 253 bytes.
fn default_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let cleaned: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let cleaned = cleaned.trim_matches('-');
    if cleaned.is_empty() {
        "agent-local".into()
    } else {
        format!("agent-{cleaned}").chars().take(64).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Config {
        Config {
            instances: vec!["main=127.0.0.1:6379".parse().unwrap()],
            ..Config::default()
        }
    }

    fn error_of(change: impl FnOnce(&mut Config)) -> String {
        let mut config = valid();
        change(&mut config);
        config.validate().expect_err("should be refused")
    }

    #[test]
    fn defaults_with_one_instance_are_valid() {
        let config = valid();
        config.validate().unwrap();
        assert_eq!(config.listen, "127.0.0.1:9121");
        assert!(config.id.starts_with("agent-"), "{}", config.id);
        assert!(names::id("agent id", &config.id).is_ok(), "{}", config.id);
    }

    #[test]
    fn refusals_name_the_field() {
        assert!(error_of(|c| c.instances.clear()).contains("instances"));
        assert!(
            error_of(|c| c.instances[0].cluster = "Main".into()).contains("instances[0].cluster")
        );
        assert!(
            error_of(|c| c.instances[0].address = "no-port".into())
                .contains("instances[0].address")
        );
        assert!(
            error_of(|c| c.instances.push(c.instances[0].clone())).contains("listed twice"),
            "duplicate address"
        );
        assert!(
            error_of(|c| c.instances[0].password = Some(String::new()))
                .contains("instances[0].password")
        );
        assert!(error_of(|c| c.probe_timeout_ms = 2_000).contains("probe_timeout_ms"));
        assert!(error_of(|c| c.probe_interval_ms = 10).contains("probe_interval_ms"));
        assert!(error_of(|c| c.fail_after = 0).contains("fail_after"));
        assert!(error_of(|c| c.recover_after = 0).contains("recover_after"));
        assert!(error_of(|c| c.heartbeat_interval_ms = 500).contains("heartbeat_interval_ms"));
        assert!(error_of(|c| c.id = "a.b".into()).contains("id"));
        assert!(error_of(|c| c.listen = "9121".into()).contains("listen"));
        assert!(error_of(|c| c.zookeeper.root = "larder".into()).contains("zookeeper.root"));
    }

    #[test]
    fn listen_may_ask_for_any_port() {
        let mut config = valid();
        config.listen = "127.0.0.1:0".into();
        config.validate().unwrap();
    }

    #[test]
    fn instance_from_the_command_line() {
        let instance: Instance = "orders=10.0.0.5:6380".parse().unwrap();
        assert_eq!(instance.cluster, "orders");
        assert_eq!(instance.address, "10.0.0.5:6380");
        assert!("10.0.0.5:6380".parse::<Instance>().is_err());
    }

    #[test]
    fn debug_hides_the_password() {
        let mut instance: Instance = "main=127.0.0.1:6379".parse().unwrap();
        instance.password = Some("hunter2".into());
        let shown = format!("{instance:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }

    #[test]
    fn file_then_command_line() {
        let path =
            std::env::temp_dir().join(format!("larder-agent-config-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            r#"
                probe_interval_ms = 2000
                [zookeeper]
                connect = "zk-1:2181"
                [[instances]]
                address = "127.0.0.1:6379"
                cluster = "main"
                password = "secret"
            "#,
        )
        .unwrap();

        let from_file = Config::load(Some(&path), &Overrides::default()).unwrap();
        assert_eq!(from_file.probe_interval_ms, 2_000);
        assert_eq!(from_file.zookeeper.connect, "zk-1:2181");
        assert_eq!(from_file.instances[0].password.as_deref(), Some("secret"));

        let overrides = Overrides {
            listen: Some("127.0.0.1:0".into()),
            zookeeper: Some(ZooKeeperOverrides {
                connect: None,
                root: Some("/test".into()),
            }),
            instances: Some(vec!["cache=127.0.0.1:7000".parse().unwrap()]),
        };
        let merged = Config::load(Some(&path), &overrides).unwrap();
        assert_eq!(merged.listen, "127.0.0.1:0");
        assert_eq!(
            merged.zookeeper.connect, "zk-1:2181",
            "untouched by the override"
        );
        assert_eq!(merged.zookeeper.root, "/test");
        assert_eq!(
            merged.instances.len(),
            1,
            "the command line replaces the list"
        );
        assert_eq!(merged.instances[0].cluster, "cache");

        std::fs::write(&path, "probe_intervall_ms = 5\n").unwrap();
        let typo = Config::load(Some(&path), &Overrides::default()).unwrap_err();
        assert!(typo.to_string().contains("probe_intervall_ms"), "{typo}");
        std::fs::remove_file(&path).unwrap();
    }
}
