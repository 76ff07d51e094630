//! The control plane's metrics, registered up front on one registry.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use larder_registry::paths;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::api::HealthStatus;
use crate::state::AppState;

/// Every metric the control plane exports.
pub struct Metrics {
    registry: Registry,
    /// `larder_cp_requests_total{route,status}`: admin requests by matched route and status code.
    pub requests: IntCounterVec,
    /// `larder_cp_request_duration_seconds{route}`.
    pub duration: HistogramVec,
    /// `larder_cp_is_leader`: 1 while this instance leads.
    pub is_leader: IntGauge,
    /// `larder_cp_zookeeper_connected`: 1 while the ZooKeeper session is connected.
    pub zookeeper_connected: IntGauge,
    /// `larder_cp_registry_revision`: the applied registry snapshot revision.
    pub revision: IntGauge,
    /// `larder_cp_namespaces` and `larder_cp_clusters`: what the registry holds.
    pub namespaces: IntGauge,
    pub clusters: IntGauge,
    /// `larder_cp_leader_changes_total`: changes of leader this instance has seen.
    pub leader_changes: IntCounter,
    /// `larder_cp_fenced_writes_total`: background writes refused because this instance
    /// no longer led when they reached ZooKeeper (another instance led, or the session
    /// holding its candidacy had expired).
    pub fenced_writes: IntCounter,
    /// `larder_cp_background_errors_total`: rounds of background work that failed for
    /// another reason (ZooKeeper unreachable, ...); they are retried.
    pub background_errors: IntCounter,
    /// `larder_cp_deletion_jobs`: namespaces being deleted (as seen by the leader).
    pub deletion_jobs: IntGauge,
    /// `larder_cp_deleted_keys_total`: Redis keys removed by namespace deletion.
    pub deleted_keys: IntCounter,
    /// `larder_cp_pruned_total{kind}`: expired revocations, token records and old audit
    /// entries removed.
    pub pruned: IntCounterVec,
    /// `larder_cp_audit_write_failures_total`: audit entries that could not be written.
    pub audit_failures: IntCounter,
    /// What the registry holds, as SREs alert on it (see [`Platform`]).
    pub platform: Platform,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "larder_cp_requests_total",
                "Admin API requests by route and status code.",
            ),
            &["route", "status"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "larder_cp_request_duration_seconds",
                "Admin API request duration by route.",
            )
            .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
            &["route"],
        )
        .expect("valid metric");
        let is_leader = IntGauge::new(
            "larder_cp_is_leader",
            "1 while this control-plane instance is the leader.",
        )
        .expect("valid metric");
        let zookeeper_connected = IntGauge::new(
            "larder_cp_zookeeper_connected",
            "1 while the ZooKeeper session is connected.",
        )
        .expect("valid metric");
        let revision = IntGauge::new(
            "larder_cp_registry_revision",
            "Registry snapshot revision applied.",
        )
        .expect("valid metric");
        let namespaces = IntGauge::new("larder_cp_namespaces", "Namespaces in the registry.")
            .expect("valid metric");
        let clusters = IntGauge::new("larder_cp_clusters", "Redis deployments in the registry.")
            .expect("valid metric");
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid metric");
        let leader_changes = counter(
            "larder_cp_leader_changes_total",
            "Changes of control-plane leader seen by this instance.",
        );
        let fenced_writes = counter(
            "larder_cp_fenced_writes_total",
            "Background writes refused because this instance no longer led.",
        );
        let background_errors = counter(
            "larder_cp_background_errors_total",
            "Rounds of leader background work that failed and will be retried.",
        );
        let deletion_jobs = IntGauge::new(
            "larder_cp_deletion_jobs",
            "Namespaces being deleted, as seen by the leader.",
        )
        .expect("valid metric");
        let deleted_keys = counter(
            "larder_cp_deleted_keys_total",
            "Redis keys removed by namespace deletion.",
        );
        let pruned = IntCounterVec::new(
            Opts::new(
                "larder_cp_pruned_total",
                "Expired revocations, token records and old audit entries removed.",
            ),
            &["kind"],
        )
        .expect("valid metric");
        for kind in ["revocation", "token", "audit"] {
            pruned.with_label_values(&[kind]);
        }
        let audit_failures = counter(
            "larder_cp_audit_write_failures_total",
            "Audit entries that could not be written.",
        );
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(is_leader.clone()),
            Box::new(zookeeper_connected.clone()),
            Box::new(revision.clone()),
            Box::new(namespaces.clone()),
            Box::new(clusters.clone()),
            Box::new(leader_changes.clone()),
            Box::new(fenced_writes.clone()),
            Box::new(background_errors.clone()),
            Box::new(deletion_jobs.clone()),
            Box::new(deleted_keys.clone()),
            Box::new(pruned.clone()),
            Box::new(audit_failures.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        let platform = Platform::new(&registry);
        Self {
            platform,
            registry,
            requests,
            duration,
            is_leader,
            zookeeper_connected,
            revision,
            namespaces,
            clusters,
            leader_changes,
            fenced_writes,
            background_errors,
            deletion_jobs,
            deleted_keys,
            pruned,
            audit_failures,
        }
    }

    /// Text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The registry as the platform's SREs watch it: deployment health, tokens, namespace
/// limits and usage, failovers and the leader's background work. Gauges are set when
/// scraped ([`Metrics::refresh`]); per-deployment and per-namespace series exist for
/// every registered deployment and namespace, and go with them.
pub struct Platform {
    /// `larder_cp_failovers_total{cluster}`: failovers of a standalone deployment
    /// performed by the leader, and failovers of a Redis Cluster it saw (a replica that
    /// reports itself master).
    pub failovers: IntCounterVec,
    /// `larder_cp_failover_failures_total{cluster}`: failovers the leader decided on but
    /// could not complete (no reachable replica, a Redis command or the registry write
    /// failed); they are tried again.
    pub failover_failures: IntCounterVec,
    /// `larder_cp_failover_duration_seconds`: from the leader's first failed probe of a
    /// master to the registry write naming its successor.
    pub failover_duration: Histogram,
    /// `larder_cp_demotions_total{cluster}`: nodes of a standalone deployment the leader
    /// made replicas of the registered master (a returning old master, a second master,
    /// a replica following the wrong master).
    pub demotions: IntCounterVec,
    /// `larder_cp_deployment_status{cluster,status}`: 1 for the deployment's current
    /// status (`ok`, `degraded`, `down`, `unknown`), 0 for the others.
    pub deployment_status: IntGaugeVec,
    /// `larder_cp_gateways`: gateways registered (alive) in the registry.
    pub gateways: IntGauge,
    /// `larder_cp_tokens`: issued-token records kept (pruned after expiry).
    pub tokens: IntGauge,
    /// `larder_cp_revoked_tokens`: revocations in force.
    pub revoked_tokens: IntGauge,
    /// `larder_cp_background_duration_seconds`: one round of the leader's background work.
    pub background_duration: Histogram,
    /// `larder_cp_namespace_rate_limit_ops_per_second{namespace}`.
    pub rate_limit: IntGaugeVec,
    /// `larder_cp_namespace_memory_limit_bytes{namespace}`.
    pub memory_limit: IntGaugeVec,
    /// `larder_cp_namespace_memory_used_bytes{namespace}`: the usage estimate (leader only).
    pub memory_used: IntGaugeVec,
}

const STATUSES: [(HealthStatus, &str); 4] = [
    (HealthStatus::Ok, "ok"),
    (HealthStatus::Degraded, "degraded"),
    (HealthStatus::Down, "down"),
    (HealthStatus::Unknown, "unknown"),
];

/// How long a scrape waits for ZooKeeper to list the token records; on timeout the
/// last count stays.
const TOKEN_COUNT_TIMEOUT: Duration = Duration::from_millis(500);

impl Platform {
    fn new(registry: &Registry) -> Self {
        fn register<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
            r.register(Box::new(c.clone()))
                .expect("metric registered once");
            c
        }
        let gauge = |name: &str, help: &str| {
            register(registry, IntGauge::new(name, help).expect("valid metric"))
        };
        let per = |name: &str, help: &str, labels: &[&str]| {
            register(
                registry,
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        Self {
            failovers: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "larder_cp_failovers_total",
                        "Failovers of a deployment performed by the leader.",
                    ),
                    &["cluster"],
                )
                .expect("valid metric"),
            ),
            failover_failures: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "larder_cp_failover_failures_total",
                        "Failovers decided on by the leader that could not complete; they are retried.",
                    ),
                    &["cluster"],
                )
                .expect("valid metric"),
            ),
            failover_duration: register(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "larder_cp_failover_duration_seconds",
                        "From the leader's first failed probe of a master to the registry write naming its successor.",
                    )
                    .buckets(vec![0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 120.0]),
                )
                .expect("valid metric"),
            ),
            demotions: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "larder_cp_demotions_total",
                        "Nodes of a standalone deployment made replicas of the registered master by the leader.",
                    ),
                    &["cluster"],
                )
                .expect("valid metric"),
            ),
            deployment_status: per(
                "larder_cp_deployment_status",
                "1 for the deployment's current health status (ok, degraded, down, unknown).",
                &["cluster", "status"],
            ),
            gateways: gauge("larder_cp_gateways", "Gateways registered in the registry."),
            tokens: gauge(
                "larder_cp_tokens",
                "Issued-token records kept in the registry (pruned after expiry).",
            ),
            revoked_tokens: gauge("larder_cp_revoked_tokens", "Token revocations in force."),
            background_duration: register(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "larder_cp_background_duration_seconds",
                        "Duration of one round of the leader's background work.",
                    )
                    .buckets(vec![0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0]),
                )
                .expect("valid metric"),
            ),
            rate_limit: per(
                "larder_cp_namespace_rate_limit_ops_per_second",
                "The namespace's sustained operations-per-second limit.",
                &["namespace"],
            ),
            memory_limit: per(
                "larder_cp_namespace_memory_limit_bytes",
                "Memory the namespace may use on its deployment.",
                &["namespace"],
            ),
            memory_used: per(
                "larder_cp_namespace_memory_used_bytes",
                "Estimated memory the namespace uses (sampled scan; exported by the leader).",
                &["namespace"],
            ),
        }
    }
}

impl Metrics {
    /// Sets the gauges from the registry snapshot as it is now; called by `/metrics`.
    /// The token count is one ZooKeeper listing (bounded by [`TOKEN_COUNT_TIMEOUT`]);
    /// the leader also refreshes the namespaces' memory estimates, which are cached for
    /// `usage.cache_ms` and bounded by `usage.scan_timeout_ms`.
    pub async fn refresh(&self, state: &AppState) {
        let snapshot = state.snapshot.load();
        let leading = state.registry.is_leader();
        self.revision
            .set(i64::try_from(snapshot.revision).unwrap_or(i64::MAX));
        self.namespaces.set(snapshot.namespaces.len() as i64);
        self.clusters.set(snapshot.clusters.len() as i64);
        self.zookeeper_connected
            .set(i64::from(state.snapshot.status().connected));
        self.is_leader.set(i64::from(leading));

        let p = &self.platform;
        p.gateways.set(snapshot.gateways.len() as i64);
        p.revoked_tokens.set(snapshot.revoked.len() as i64);
        if let Ok(Ok(tokens)) =
            tokio::time::timeout(TOKEN_COUNT_TIMEOUT, state.registry.children(paths::TOKENS)).await
        {
            p.tokens.set(tokens.len() as i64);
        }

        p.deployment_status.reset();
        for cluster in snapshot.clusters.values() {
            let cluster = &cluster.value;
            let nodes: Vec<_> = snapshot
                .nodes_of(&cluster.name)
                .map(|n| n.value.clone())
                .collect();
            let status = crate::routes::clusters::health(cluster, &nodes);
            for (s, label) in STATUSES {
                p.deployment_status
                    .with_label_values(&[cluster.name.as_str(), label])
                    .set(i64::from(s == status));
            }
            p.failovers.with_label_values(&[cluster.name.as_str()]);
            p.failover_failures
                .with_label_values(&[cluster.name.as_str()]);
            p.demotions.with_label_values(&[cluster.name.as_str()]);
        }

        p.rate_limit.reset();
        p.memory_limit.reset();
        for ns in snapshot.namespaces.values() {
            let ns = &ns.value;
            let labels = [ns.name.as_str()];
            p.rate_limit
                .with_label_values(&labels)
                .set(i64::from(ns.limits.ops_per_sec));
            p.memory_limit
                .with_label_values(&labels)
                .set(i64::try_from(ns.limits.memory_bytes).unwrap_or(i64::MAX));
        }

        // Only the leader scans: N instances scanning every deployment on every scrape
        // would multiply the load on Redis for the same figures.
        p.memory_used.reset();
        if leading {
            let scans = snapshot
                .clusters
                .values()
                .filter(|c| {
                    snapshot
                        .namespaces
                        .values()
                        .any(|n| n.value.cluster == c.value.name)
                })
                .map(|c| async move { (c, state.usage.deployment(&c.value).await) });
            for (cluster, usage) in futures::future::join_all(scans).await {
                for ns in snapshot
                    .namespaces
                    .values()
                    .filter(|n| n.value.cluster == cluster.value.name)
                {
                    let figures = state.usage.namespace(&usage, &ns.value.name);
                    if figures.note.is_none() {
                        p.memory_used
                            .with_label_values(&[ns.value.name.as_str()])
                            .set(i64::try_from(figures.memory_bytes).unwrap_or(i64::MAX));
                    }
                }
            }
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts and times each request by its matched route (never the raw path).
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let start = Instant::now();
    let response = next.run(request).await;
    state
        .metrics
        .duration
        .with_label_values(&[&route])
        .observe(start.elapsed().as_secs_f64());
    state
        .metrics
        .requests
        .with_label_values(&[&route, response.status().as_str()])
        .inc();
    response
}
