//! Probing one Redis instance: a timed PING, then `INFO`, parsed into [`Info`].

use std::time::{Duration, Instant};

use larder_registry::model::Role;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};

use crate::config::Instance;
use crate::error::AgentError;

/// What one successful probe saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// PING round trip, microseconds (connecting, when needed, is not included).
    pub latency_us: u64,
    pub info: Info,
}

/// The fields of `INFO` the agent reports. Missing fields keep their default, so a
/// Redis that omits one (an old version, a fork) still yields the rest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Info {
    pub redis_version: String,
    pub uptime_in_seconds: u64,
    pub connected_clients: u64,
    pub used_memory: u64,
    /// 0 means no limit.
    pub maxmemory: u64,
    pub instantaneous_ops_per_sec: u64,
    pub total_commands_processed: u64,
    pub keyspace_hits: u64,
    pub keyspace_misses: u64,
    pub evicted_keys: u64,
    pub expired_keys: u64,
    pub role: Role,
    /// For a replica: the master it follows.
    pub master_host: Option<String>,
    pub master_port: Option<u16>,
    /// For a replica: `up` or `down`.
    pub master_link_status: Option<String>,
    /// The replication stream position this instance has produced (master) or its
    /// master's as last heard (replica).
    pub master_repl_offset: u64,
    /// For a replica: how far it has applied the stream.
    pub slave_repl_offset: Option<u64>,
    pub connected_slaves: u64,
    /// Keys in database 0, the only database Larder uses.
    pub db0_keys: u64,
}

impl Info {
    /// The followed master as `host:port` (IPv6 hosts bracketed), for a replica.
    pub fn master(&self) -> Option<String> {
        let host = self.master_host.as_deref()?;
        let port = self.master_port?;
        Some(if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        })
    }

    /// Whether a replica's link to its master is up; `None` for a master.
    pub fn master_link_up(&self) -> Option<bool> {
        self.master_link_status.as_deref().map(|s| s == "up")
    }

    /// The offset to compare across a deployment when choosing a failover target: what a
    /// replica has applied, or what a master has produced.
    pub fn replication_offset(&self) -> u64 {
        self.slave_repl_offset.unwrap_or(self.master_repl_offset)
    }
}

/// Parses the text of `INFO` (`# Section` headers, `key:value` lines, CRLF or LF).
/// Unknown keys and values that do not parse are skipped.
pub fn parse_info(text: &str) -> Info {
    fn num(value: &str) -> u64 {
        value.parse().unwrap_or_default()
    }
    let mut info = Info::default();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key {
            "redis_version" => info.redis_version = value.to_owned(),
            "uptime_in_seconds" => info.uptime_in_seconds = num(value),
            "connected_clients" => info.connected_clients = num(value),
            "used_memory" => info.used_memory = num(value),
            "maxmemory" => info.maxmemory = num(value),
            "instantaneous_ops_per_sec" => info.instantaneous_ops_per_sec = num(value),
            "total_commands_processed" => info.total_commands_processed = num(value),
            "keyspace_hits" => info.keyspace_hits = num(value),
            "keyspace_misses" => info.keyspace_misses = num(value),
            "evicted_keys" => info.evicted_keys = num(value),
            "expired_keys" => info.expired_keys = num(value),
            "role" => {
                info.role = match value {
                    "master" => Role::Master,
                    "slave" | "replica" => Role::Replica,
                    _ => Role::Unknown,
                }
            }
            "master_host" => info.master_host = Some(value.to_owned()),
            "master_port" => info.master_port = value.parse().ok(),
            "master_link_status" => info.master_link_status = Some(value.to_owned()),
            "master_repl_offset" => info.master_repl_offset = num(value),
            "slave_repl_offset" => info.slave_repl_offset = value.parse().ok(),
            "connected_slaves" => info.connected_slaves = num(value),
            "db0" => {
                info.db0_keys = value
                    .split(',')
                    .find_map(|field| field.strip_prefix("keys="))
                    .map(num)
                    .unwrap_or_default();
            }
            _ => {}
        }
    }
    info
}

/// Probes one instance over a connection kept between probes.
///
/// The connection is dropped after any error or timeout and opened anew by the next
/// probe, so a restarted Redis or a half-dead socket costs one failed probe, and a reply
/// that arrives after its timeout can never be taken for the next probe's.
pub struct Prober {
    address: String,
    client: redis::Client,
    timeout: Duration,
    connection: Option<MultiplexedConnection>,
}

impl Prober {
    pub fn new(instance: &Instance, timeout: Duration) -> Result<Self, AgentError> {
        let redis_error = |source| AgentError::Redis {
            instance: instance.address.clone(),
            source,
        };
        let (host, port) = instance
            .address
            .rsplit_once(':')
            .and_then(|(h, p)| {
                Some((
                    h.trim_start_matches('[').trim_end_matches(']'),
                    p.parse().ok()?,
                ))
            })
            .ok_or_else(|| {
                redis_error(redis::RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "address must be host:port",
                )))
            })?;
        let mut settings = RedisConnectionInfo::default()
            // Shown in CLIENT LIST, so an operator can tell the agent's connection apart.
            .set_lib_name("larder-agent", env!("CARGO_PKG_VERSION"));
        if let Some(username) = &instance.username {
            settings = settings.set_username(username);
        }
        if let Some(password) = &instance.password {
            settings = settings.set_password(password);
        }
        let info = ConnectionAddr::Tcp(host.to_owned(), port)
            .into_connection_info()
            .map_err(redis_error)?
            .set_redis_settings(settings);
        let client = redis::Client::open(info).map_err(redis_error)?;
        Ok(Self {
            address: instance.address.clone(),
            client,
            timeout,
            connection: None,
        })
    }

    /// One probe: connect if needed, PING, INFO, all within the probe timeout.
    pub async fn probe(&mut self) -> Result<Sample, AgentError> {
        let result = tokio::time::timeout(self.timeout, self.exchange()).await;
        match result {
            Ok(Ok(sample)) => Ok(sample),
            Ok(Err(source)) => {
                self.connection = None;
                Err(AgentError::Redis {
                    instance: self.address.clone(),
                    source,
                })
            }
            Err(_) => {
                self.connection = None;
                Err(AgentError::ProbeTimeout {
                    instance: self.address.clone(),
                    timeout_ms: self.timeout.as_millis() as u64,
                })
            }
        }
    }

    async fn exchange(&mut self) -> redis::RedisResult<Sample> {
        let connection = match &mut self.connection {
            Some(connection) => connection,
            None => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout));
                let connection = self
                    .client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                self.connection.insert(connection)
            }
        };
        let started = Instant::now();
        let _: String = redis::cmd("PING").query_async(connection).await?;
        let latency_us = started.elapsed().as_micros() as u64;
        // Plain INFO rather than naming sections: INFO with several section arguments
        // needs Redis 7, and the default set already holds every field used here.
        let text: String = redis::cmd("INFO").query_async(connection).await?;
        Ok(Sample {
            latency_us,
            info: parse_info(&text),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Abridged from `INFO` of a Redis 7.0 master with one replica attached.
    const MASTER: &str = "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:00000000\r\n\
        redis_mode:standalone\r\nos:Linux 6.1.0 x86_64\r\nprocess_id:12181\r\n\
        run_id:cad5bb3e643e24da0b1f6a433b60c166d1002fa1\r\ntcp_port:6379\r\n\
        uptime_in_seconds:86412\r\nuptime_in_days:1\r\n\r\n\
        # Clients\r\nconnected_clients:42\r\ncluster_connections:0\r\nmaxclients:10000\r\n\
        blocked_clients:0\r\n\r\n\
        # Memory\r\nused_memory:1084080\r\nused_memory_human:1.03M\r\n\
        used_memory_rss:12296192\r\nused_memory_peak:1084080\r\nused_memory_lua:32768\r\n\
        maxmemory:268435456\r\nmaxmemory_human:256.00M\r\nmaxmemory_policy:allkeys-lru\r\n\
        mem_fragmentation_ratio:11.78\r\n\r\n\
        # Persistence\r\nloading:0\r\nrdb_changes_since_last_save:2\r\n\
        rdb_last_bgsave_time_sec:-1\r\n\r\n\
        # Stats\r\ntotal_connections_received:6\r\ntotal_commands_processed:918273\r\n\
        instantaneous_ops_per_sec:1523\r\ntotal_net_input_bytes:279\r\n\
        instantaneous_input_kbps:0.07\r\nrejected_connections:0\r\nsync_full:1\r\n\
        expired_keys:311\r\nexpired_stale_perc:0.00\r\nevicted_keys:17\r\n\
        keyspace_hits:52000\r\nkeyspace_misses:4100\r\npubsub_channels:0\r\n\r\n\
        # Replication\r\nrole:master\r\nconnected_slaves:1\r\n\
        slave0:ip=10.0.0.6,port=6379,state=online,offset=1048690,lag=0\r\n\
        master_failover_state:no-failover\r\n\
        master_replid:73739b13b1d906c1e840046b095207d6b8a006af\r\n\
        master_replid2:0000000000000000000000000000000000000000\r\n\
        master_repl_offset:1048707\r\nsecond_repl_offset:-1\r\nrepl_backlog_active:1\r\n\r\n\
        # CPU\r\nused_cpu_sys:0.007899\r\n\r\n# Modules\r\n\r\n# Errorstats\r\n\r\n\
        # Cluster\r\ncluster_enabled:0\r\n\r\n\
        # Keyspace\r\ndb0:keys=2381,expires=120,avg_ttl=99745\r\n\
        db3:keys=7,expires=0,avg_ttl=0\r\n";

    /// Abridged from `INFO` of its replica, whose link has just dropped.
    const REPLICA: &str = "# Server\r\nredis_version:7.2.4\r\nredis_mode:standalone\r\n\
        uptime_in_seconds:3600\r\n\r\n\
        # Clients\r\nconnected_clients:3\r\n\r\n\
        # Memory\r\nused_memory:2048000\r\nmaxmemory:0\r\n\r\n\
        # Stats\r\ntotal_commands_processed:1200\r\ninstantaneous_ops_per_sec:0\r\n\
        expired_keys:0\r\nevicted_keys:0\r\nkeyspace_hits:0\r\nkeyspace_misses:0\r\n\r\n\
        # Replication\r\nrole:slave\r\nmaster_host:10.0.0.5\r\nmaster_port:6379\r\n\
        master_link_status:down\r\nmaster_last_io_seconds_ago:-1\r\n\
        master_sync_in_progress:0\r\nslave_read_repl_offset:1048690\r\n\
        slave_repl_offset:1048690\r\nslave_priority:100\r\nslave_read_only:1\r\n\
        replica_announced:1\r\nconnected_slaves:0\r\nmaster_failover_state:no-failover\r\n\
        master_repl_offset:1048707\r\nsecond_repl_offset:-1\r\n\r\n\
        # Keyspace\r\ndb0:keys=2381,expires=120,avg_ttl=0\r\n";

    #[test]
    fn parses_a_master() {
        let info = parse_info(MASTER);
        assert_eq!(
            info,
            Info {
                redis_version: "7.0.15".into(),
                uptime_in_seconds: 86_412,
                connected_clients: 42,
                used_memory: 1_084_080,
                maxmemory: 268_435_456,
                instantaneous_ops_per_sec: 1_523,
                total_commands_processed: 918_273,
                keyspace_hits: 52_000,
                keyspace_misses: 4_100,
                evicted_keys: 17,
                expired_keys: 311,
                role: Role::Master,
                master_host: None,
                master_port: None,
                master_link_status: None,
                master_repl_offset: 1_048_707,
                slave_repl_offset: None,
                connected_slaves: 1,
                db0_keys: 2_381,
            }
        );
        assert_eq!(info.master(), None);
        assert_eq!(info.master_link_up(), None);
        assert_eq!(info.replication_offset(), 1_048_707);
    }

    #[test]
    fn parses_a_replica() {
        let info = parse_info(REPLICA);
        assert_eq!(info.role, Role::Replica);
        assert_eq!(info.redis_version, "7.2.4");
        assert_eq!(info.master().as_deref(), Some("10.0.0.5:6379"));
        assert_eq!(info.master_link_up(), Some(false));
        assert_eq!(info.slave_repl_offset, Some(1_048_690));
        assert_eq!(info.replication_offset(), 1_048_690, "what it has applied");
        assert_eq!(info.maxmemory, 0);
        assert_eq!(info.used_memory, 2_048_000);
        assert_eq!(info.connected_slaves, 0);
        assert_eq!(info.db0_keys, 2_381);
    }

    #[test]
    fn tolerates_lf_garbage_and_missing_fields() {
        let info = parse_info(
            "role:slave\nmaster_host:::1\nmaster_port:6380\nmaster_link_status:up\nused_memory:lots\nnonsense\n",
        );
        assert_eq!(info.role, Role::Replica);
        assert_eq!(info.master().as_deref(), Some("[::1]:6380"));
        assert_eq!(info.master_link_up(), Some(true));
        assert_eq!(info.used_memory, 0);
        assert_eq!(info.redis_version, "");
        assert_eq!(parse_info(""), Info::default());
    }
}
