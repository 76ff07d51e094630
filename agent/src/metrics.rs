//! The agent's metrics: one struct, registered up front on its own registry.
//!
//! Redis figures use the names of the community redis_exporter, so dashboards and alert
//! rules written for it work unchanged. Every per-instance series carries `instance`
//! (`host:port`) and `cluster`.

use std::sync::Arc;
use std::time::Duration;

use larder_registry::model::Role;
use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::probe::Info;

const LABELS: [&str; 2] = ["instance", "cluster"];

/// Every metric the agent exports.
pub struct Metrics {
    registry: Registry,
    /// `redis_up`: 1 when the last probe succeeded (before hysteresis).
    pub redis_up: IntGaugeVec,
    /// `redis_uptime_in_seconds`.
    pub uptime: IntGaugeVec,
    /// `redis_memory_used_bytes`.
    pub memory_used: IntGaugeVec,
    /// `redis_memory_max_bytes`: `maxmemory`, 0 when unlimited.
    pub memory_max: IntGaugeVec,
    /// `redis_connected_clients`.
    pub connected_clients: IntGaugeVec,
    /// `redis_commands_processed_total`.
    pub commands_processed: IntCounterVec,
    /// `redis_keyspace_hits_total`.
    pub keyspace_hits: IntCounterVec,
    /// `redis_keyspace_misses_total`.
    pub keyspace_misses: IntCounterVec,
    /// `redis_evicted_keys_total`.
    pub evicted_keys: IntCounterVec,
    /// `redis_expired_keys_total`.
    pub expired_keys: IntCounterVec,
    /// `redis_instantaneous_ops_per_sec`.
    pub ops_per_sec: IntGaugeVec,
    /// `redis_master_link_up`: replicas only.
    pub master_link_up: IntGaugeVec,
    /// `redis_connected_slaves`.
    pub connected_slaves: IntGaugeVec,
    /// `redis_master_repl_offset`.
    pub master_repl_offset: IntGaugeVec,
    /// `redis_db_keys{db="db0"}`.
    pub db_keys: IntGaugeVec,
    /// `redis_instance_info`: always 1, the labels carry `redis_version` and `role`.
    pub instance_info: IntGaugeVec,
    /// `larder_agent_probe_duration_seconds`: connect (when needed), PING and INFO.
    pub probe_duration: HistogramVec,
    /// `larder_agent_probe_failures_total`.
    pub probe_failures: IntCounterVec,
    /// `larder_agent_instance_healthy`: health after hysteresis, as published.
    pub instance_healthy: IntGaugeVec,
    /// `larder_agent_lua_cve_vulnerable`.
    pub lua_cve_vulnerable: IntGaugeVec,
    /// `larder_agent_zookeeper_connected`.
    pub zookeeper_connected: IntGauge,
    /// `larder_agent_publish_failures_total`.
    pub publish_failures: IntCounterVec,
}

fn register<C: Collector + Clone + 'static>(
    registry: &Registry,
    metric: C,
) -> prometheus::Result<C> {
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| {
            register(&registry, IntGaugeVec::new(Opts::new(name, help), &LABELS)?)
        };
        let counter = |name: &str, help: &str| {
            register(
                &registry,
                IntCounterVec::new(Opts::new(name, help), &LABELS)?,
            )
        };
        Ok(Self {
            redis_up: gauge(
                "redis_up",
                "Whether the last probe of the instance succeeded.",
            )?,
            uptime: gauge(
                "redis_uptime_in_seconds",
                "Seconds since the Redis server started.",
            )?,
            memory_used: gauge(
                "redis_memory_used_bytes",
                "Bytes allocated by Redis (used_memory).",
            )?,
            memory_max: gauge(
                "redis_memory_max_bytes",
                "The maxmemory setting in bytes; 0 means no limit.",
            )?,
            connected_clients: gauge(
                "redis_connected_clients",
                "Client connections, replicas excluded.",
            )?,
            commands_processed: counter(
                "redis_commands_processed_total",
                "Commands processed since the server started.",
            )?,
            keyspace_hits: counter(
                "redis_keyspace_hits_total",
                "Successful key lookups since the server started.",
            )?,
            keyspace_misses: counter(
                "redis_keyspace_misses_total",
                "Failed key lookups since the server started.",
            )?,
            evicted_keys: counter(
                "redis_evicted_keys_total",
                "Keys evicted because of maxmemory since the server started.",
            )?,
            expired_keys: counter(
                "redis_expired_keys_total",
                "Keys removed on expiry since the server started.",
            )?,
            ops_per_sec: gauge(
                "redis_instantaneous_ops_per_sec",
                "Commands per second as sampled by Redis.",
            )?,
            master_link_up: gauge(
                "redis_master_link_up",
                "For a replica, whether its link to the master is up.",
            )?,
            connected_slaves: gauge(
                "redis_connected_slaves",
                "Replicas connected to this instance.",
            )?,
            master_repl_offset: gauge(
                "redis_master_repl_offset",
                "Replication offset of the master stream (master_repl_offset).",
            )?,
            db_keys: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new("redis_db_keys", "Keys in the database."),
                    &["instance", "cluster", "db"],
                )?,
            )?,
            instance_info: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "redis_instance_info",
                        "Always 1; the labels describe the Redis server.",
                    ),
                    &["instance", "cluster", "redis_version", "role"],
                )?,
            )?,
            probe_duration: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "larder_agent_probe_duration_seconds",
                        "Time one probe took: connect when needed, PING and INFO.",
                    )
                    // A local Redis answers in well under a millisecond; the top
                    // buckets are there to place timeouts.
                    .buckets(vec![
                        0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                        1.0, 2.5,
                    ]),
                    &LABELS,
                )?,
            )?,
            probe_failures: counter(
                "larder_agent_probe_failures_total",
                "Probes that failed or timed out.",
            )?,
            instance_healthy: gauge(
                "larder_agent_instance_healthy",
                "Health after hysteresis, as published to the registry (1 up, 0 down).",
            )?,
            lua_cve_vulnerable: gauge(
                "larder_agent_lua_cve_vulnerable",
                "1 when the Redis version is open to the Lua scripting CVEs (CVE-2025-49844 and related).",
            )?,
            zookeeper_connected: register(
                &registry,
                IntGauge::new(
                    "larder_agent_zookeeper_connected",
                    "Whether the ZooKeeper session is connected.",
                )?,
            )?,
            publish_failures: counter(
                "larder_agent_publish_failures_total",
                "Health records that could not be written to ZooKeeper.",
            )?,
            registry,
        })
    }

    /// The handles for one instance's series.
    pub fn instance(self: &Arc<Self>, instance: &str, cluster: &str) -> InstanceMetrics {
        let labels = [instance, cluster];
        InstanceMetrics {
            metrics: self.clone(),
            instance: instance.to_owned(),
            cluster: cluster.to_owned(),
            up: self.redis_up.with_label_values(&labels),
            probe_duration: self.probe_duration.with_label_values(&labels),
            probe_failures: self.probe_failures.with_label_values(&labels),
            healthy: self.instance_healthy.with_label_values(&labels),
            publish_failures: self.publish_failures.with_label_values(&labels),
            redis: None,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> prometheus::Result<String> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

/// One instance's series, resolved once so a probe does no label lookups.
pub struct InstanceMetrics {
    metrics: Arc<Metrics>,
    instance: String,
    cluster: String,
    up: IntGauge,
    probe_duration: Histogram,
    probe_failures: IntCounter,
    healthy: IntGauge,
    publish_failures: IntCounter,
    /// Figures read from `INFO`, created by the first successful probe: an instance
    /// never reached shows `redis_up 0` and no made-up zeros, as with redis_exporter.
    redis: Option<RedisSeries>,
}

struct RedisSeries {
    uptime: IntGauge,
    memory_used: IntGauge,
    memory_max: IntGauge,
    connected_clients: IntGauge,
    commands_processed: IntCounter,
    keyspace_hits: IntCounter,
    keyspace_misses: IntCounter,
    evicted_keys: IntCounter,
    expired_keys: IntCounter,
    ops_per_sec: IntGauge,
    connected_slaves: IntGauge,
    master_repl_offset: IntGauge,
    db0_keys: IntGauge,
    vulnerable: IntGauge,
    /// Whether `redis_master_link_up` exists for this instance (it is a replica).
    link_series: bool,
    /// The `(redis_version, role)` labels of the current `redis_instance_info` series.
    info_series: Option<(String, &'static str)>,
}

impl RedisSeries {
    fn new(metrics: &Metrics, instance: &str, cluster: &str) -> Self {
        let labels = [instance, cluster];
        Self {
            uptime: metrics.uptime.with_label_values(&labels),
            memory_used: metrics.memory_used.with_label_values(&labels),
            memory_max: metrics.memory_max.with_label_values(&labels),
            connected_clients: metrics.connected_clients.with_label_values(&labels),
            commands_processed: metrics.commands_processed.with_label_values(&labels),
            keyspace_hits: metrics.keyspace_hits.with_label_values(&labels),
            keyspace_misses: metrics.keyspace_misses.with_label_values(&labels),
            evicted_keys: metrics.evicted_keys.with_label_values(&labels),
            expired_keys: metrics.expired_keys.with_label_values(&labels),
            ops_per_sec: metrics.ops_per_sec.with_label_values(&labels),
            connected_slaves: metrics.connected_slaves.with_label_values(&labels),
            master_repl_offset: metrics.master_repl_offset.with_label_values(&labels),
            db0_keys: metrics
                .db_keys
                .with_label_values(&[instance, cluster, "db0"]),
            vulnerable: metrics.lua_cve_vulnerable.with_label_values(&labels),
            link_series: false,
            info_series: None,
        }
    }
}

impl InstanceMetrics {
    pub fn probe_succeeded(&mut self, took: Duration, info: &Info, vulnerable: bool) {
        self.probe_duration.observe(took.as_secs_f64());
        self.up.set(1);
        let (metrics, instance, cluster) = (&self.metrics, &self.instance, &self.cluster);
        let series = self
            .redis
            .get_or_insert_with(|| RedisSeries::new(metrics, instance, cluster));
        series.uptime.set(gauge_value(info.uptime_in_seconds));
        series.memory_used.set(gauge_value(info.used_memory));
        series.memory_max.set(gauge_value(info.maxmemory));
        series
            .connected_clients
            .set(gauge_value(info.connected_clients));
        series
            .ops_per_sec
            .set(gauge_value(info.instantaneous_ops_per_sec));
        series
            .connected_slaves
            .set(gauge_value(info.connected_slaves));
        series
            .master_repl_offset
            .set(gauge_value(info.master_repl_offset));
        series.db0_keys.set(gauge_value(info.db0_keys));
        mirror(&series.commands_processed, info.total_commands_processed);
        mirror(&series.keyspace_hits, info.keyspace_hits);
        mirror(&series.keyspace_misses, info.keyspace_misses);
        mirror(&series.evicted_keys, info.evicted_keys);
        mirror(&series.expired_keys, info.expired_keys);
        series.vulnerable.set(i64::from(vulnerable));

        let labels = [instance.as_str(), cluster.as_str()];
        match info.master_link_up() {
            Some(up) => {
                metrics
                    .master_link_up
                    .with_label_values(&labels)
                    .set(i64::from(up));
                series.link_series = true;
            }
            None if series.link_series => {
                // Promoted to master: a link gauge left at its last value would
                // claim a replication link that no longer exists.
                let _ = metrics.master_link_up.remove_label_values(&labels);
                series.link_series = false;
            }
            None => {}
        }

        let role = role_label(info.role);
        let current = (info.redis_version.as_str(), role);
        if series.info_series.as_ref().map(|(v, r)| (v.as_str(), *r)) != Some(current) {
            if let Some((version, role)) = series.info_series.take() {
                let _ = metrics
                    .instance_info
                    .remove_label_values(&[labels[0], labels[1], &version, role]);
            }
            metrics
                .instance_info
                .with_label_values(&[labels[0], labels[1], &info.redis_version, role])
                .set(1);
            series.info_series = Some((info.redis_version.clone(), role));
        }
    }

    pub fn probe_failed(&self, took: Duration) {
        self.probe_duration.observe(took.as_secs_f64());
        self.probe_failures.inc();
        self.up.set(0);
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.set(i64::from(healthy));
    }

    pub fn publish_failed(&self) {
        self.publish_failures.inc();
    }
}

/// redis_exporter's role label values, so its dashboards' role filters keep working.
fn role_label(role: Role) -> &'static str {
    match role {
        Role::Master => "master",
        Role::Replica => "slave",
        Role::Unknown => "unknown",
    }
}

fn gauge_value(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Makes `counter` equal Redis's own running total while keeping counter semantics.
/// A total that went down means Redis restarted (its counters start again at 0), so the
/// counter is reset too and Prometheus' `rate()` sees the reset it already handles.
fn mirror(counter: &IntCounter, total: u64) {
    let current = counter.get();
    if total >= current {
        counter.inc_by(total - current);
    } else {
        counter.reset();
        counter.inc_by(total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(commands: u64, role: Role) -> Info {
        Info {
            redis_version: "7.2.4".into(),
            total_commands_processed: commands,
            role,
            master_host: (role == Role::Replica).then(|| "10.0.0.5".into()),
            master_port: (role == Role::Replica).then_some(6379),
            master_link_status: (role == Role::Replica).then(|| "up".into()),
            ..Info::default()
        }
    }

    #[test]
    fn counters_follow_redis_through_a_restart() {
        let metrics = Arc::new(Metrics::new().unwrap());
        let mut m = metrics.instance("127.0.0.1:6379", "main");
        let took = Duration::from_millis(1);
        m.probe_succeeded(took, &info(100, Role::Master), true);
        m.probe_succeeded(took, &info(150, Role::Master), true);
        let commands = |m: &InstanceMetrics| m.redis.as_ref().unwrap().commands_processed.get();
        assert_eq!(commands(&m), 150);
        m.probe_succeeded(took, &info(7, Role::Master), true);
        assert_eq!(commands(&m), 7, "reset with the restarted server");
    }

    #[test]
    fn exposition_has_redis_exporter_names_and_types() {
        let metrics = Arc::new(Metrics::new().unwrap());
        let mut m = metrics.instance("127.0.0.1:6379", "main");
        m.probe_succeeded(Duration::from_millis(1), &info(42, Role::Replica), true);
        m.set_healthy(true);
        let text = metrics.render().unwrap();
        for expected in [
            "# TYPE redis_commands_processed_total counter",
            "# TYPE redis_keyspace_hits_total counter",
            "# TYPE redis_up gauge",
            "# TYPE larder_agent_probe_duration_seconds histogram",
            "# HELP redis_memory_used_bytes ",
            "redis_commands_processed_total{cluster=\"main\",instance=\"127.0.0.1:6379\"} 42",
            "redis_up{cluster=\"main\",instance=\"127.0.0.1:6379\"} 1",
            "redis_master_link_up{cluster=\"main\",instance=\"127.0.0.1:6379\"} 1",
            "redis_instance_info{cluster=\"main\",instance=\"127.0.0.1:6379\",redis_version=\"7.2.4\",role=\"slave\"} 1",
            "larder_agent_lua_cve_vulnerable{cluster=\"main\",instance=\"127.0.0.1:6379\"} 1",
            "larder_agent_instance_healthy{cluster=\"main\",instance=\"127.0.0.1:6379\"} 1",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }

        // Promotion: the replica-only series goes, the info series changes role.
        m.probe_succeeded(Duration::from_millis(1), &info(43, Role::Master), true);
        let text = metrics.render().unwrap();
        assert!(!text.contains("redis_master_link_up{"), "{text}");
        assert!(text.contains("role=\"master\"} 1"), "{text}");
        assert!(!text.contains("role=\"slave\""), "{text}");
    }

    #[test]
    fn an_instance_never_reached_shows_only_that() {
        let metrics = Arc::new(Metrics::new().unwrap());
        let m = metrics.instance("127.0.0.1:6379", "main");
        m.probe_failed(Duration::from_millis(500));
        let text = metrics.render().unwrap();
        assert!(
            text.contains("redis_up{cluster=\"main\",instance=\"127.0.0.1:6379\"} 0"),
            "{text}"
        );
        for absent in [
            "redis_memory_used_bytes{",
            "redis_uptime_in_seconds{",
            "larder_agent_lua_cve_vulnerable{",
        ] {
            assert!(!text.contains(absent), "{absent} in\n{text}");
        }
    }

    #[test]
    fn a_failed_probe_counts_and_marks_down() {
        let metrics = Arc::new(Metrics::new().unwrap());
        let mut m = metrics.instance("127.0.0.1:6379", "main");
        m.probe_succeeded(Duration::from_millis(1), &info(1, Role::Master), false);
        m.probe_failed(Duration::from_millis(500));
        assert_eq!(m.up.get(), 0);
        assert_eq!(m.probe_failures.get(), 1);
        assert_eq!(m.probe_duration.get_sample_count(), 2);
    }
}
