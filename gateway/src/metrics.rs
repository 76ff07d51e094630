//! The gateway's metrics: one struct, registered up front, bounded labels.
//!
//! `namespace` is a registered namespace's name or `_other`; `op` is a fixed operation
//! name derived from the matched route; `cluster` is a registered deployment; no key or
//! raw path ever becomes a label. Every metric is listed in `docs/metrics.md`.
//!
//! Per-namespace and per-deployment counters are created at 0 for every registered
//! namespace and deployment when scraped ([`Metrics::refresh`]), so a rate over them
//! exists before the first event and an alert can tell "none" from "no data".

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::response::Response;
use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

use larder_registry::{SessionStatus, Snapshot, SnapshotReader};

use crate::error::{ApiError, Source};

/// The `kind` label values of `larder_gateway_redis_errors_total`.
pub const REDIS_ERROR_KINDS: [&str; 3] = ["unavailable", "timeout", "error"];

/// The `kind` of a Redis failure, `None` for errors that are not Redis's.
pub fn redis_error_kind(error: &ApiError) -> Option<&'static str> {
    match error {
        ApiError::BackendUnavailable { .. } => Some("unavailable"),
        ApiError::BackendTimeout { .. } => Some("timeout"),
        ApiError::Backend { .. } => Some("error"),
        _ => None,
    }
}

const SOURCES: [Source; 4] = [
    Source::Client,
    Source::Redis,
    Source::Registry,
    Source::Internal,
];

/// Every metric the gateway exports.
pub struct Metrics {
    registry: Registry,
    /// `larder_gateway_requests_total{namespace,op,status}`.
    pub requests: IntCounterVec,
    /// `larder_gateway_request_duration_seconds{namespace,op}`.
    pub duration: HistogramVec,
    /// `larder_gateway_requests_in_flight`.
    pub in_flight: IntGauge,
    /// `larder_gateway_cache_hits_total{namespace}` / `..._misses_total`: GET outcomes.
    pub hits: IntCounterVec,
    pub misses: IntCounterVec,
    /// `larder_gateway_near_cache_hits_total{namespace}`: reads answered from the
    /// gateway's own near cache without a Redis call (0 until the near cache is enabled).
    pub near_cache_hits: IntCounterVec,
    /// `larder_gateway_errors_total{source}`: failed requests by who caused them.
    pub errors: IntCounterVec,
    /// `larder_gateway_redis_errors_total{cluster,kind}`: failed Redis calls by
    /// deployment and kind (`unavailable`, `timeout`, `error`).
    pub redis_errors: IntCounterVec,
    /// `larder_gateway_rate_limited_total{namespace}`: requests refused with 429.
    pub rate_limited: IntCounterVec,
    /// `larder_gateway_shed_total{limit}`: requests refused at once because too many
    /// were in flight: `limit="global"` (503) or `limit="namespace"` (429).
    pub shed: IntCounterVec,
    /// `shed` with `limit="global"`, resolved up front for the shedding path.
    pub shed_global: IntCounter,
    /// `shed` with `limit="namespace"`.
    pub shed_namespace: IntCounter,
    /// `larder_gateway_requests_in_flight_peak`: the most data requests admitted at once
    /// since the gateway started (never above `max_in_flight`).
    pub in_flight_peak: IntGauge,
    /// `larder_gateway_registry_revision`: applied snapshot revision.
    pub revision: IntGauge,
    /// `larder_gateway_registry_staleness_seconds`: time since ZooKeeper last confirmed
    /// the snapshot (0 while connected).
    pub staleness: Gauge,
    /// `larder_gateway_zookeeper_connected`.
    pub zookeeper_connected: IntGauge,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    r.expect("metric definitions are static and valid")
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = must(IntCounterVec::new(
            Opts::new(
                "larder_gateway_requests_total",
                "Data API requests by namespace, operation and status code.",
            ),
            &["namespace", "op", "status"],
        ));
        let duration = must(HistogramVec::new(
            HistogramOpts::new(
                "larder_gateway_request_duration_seconds",
                "Data API request duration.",
            )
            .buckets(vec![
                0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["namespace", "op"],
        ));
        let in_flight = must(IntGauge::new(
            "larder_gateway_requests_in_flight",
            "Data API requests being served.",
        ));
        let hits = must(IntCounterVec::new(
            Opts::new(
                "larder_gateway_cache_hits_total",
                "Reads that found the key.",
            ),
            &["namespace"],
        ));
        let misses = must(IntCounterVec::new(
            Opts::new(
                "larder_gateway_cache_misses_total",
                "Reads that did not find the key.",
            ),
            &["namespace"],
        ));
        let near_cache_hits = must(IntCounterVec::new(
            Opts::new(
                "larder_gateway_near_cache_hits_total",
                "Reads answered from the gateway's near cache.",
            ),
            &["namespace"],
        ));
        let errors = must(IntCounterVec::new(
            Opts::new(
                "larder_gateway_errors_total",
                "Failed requests by the source of the failure.",
            ),
            &["source"],
        ));
        for source in SOURCES {
            errors.with_label_values(&[source.as_str()]);
        }
        let redis_errors = redis_errors_counter();
        let rate_limited = must(IntCounterVec::new(
            Opts::new(
                "larder_gateway_rate_limited_total",
                "Requests refused over the namespace's rate limit.",
            ),
            &["namespace"],
        ));
        let shed = must(IntCounterVec::new(
            Opts::new(
                "larder_gateway_shed_total",
                "Requests refused at once over an in-flight limit (global: 503, namespace: 429).",
            ),
            &["limit"],
        ));
        let shed_global = shed.with_label_values(&["global"]);
        let shed_namespace = shed.with_label_values(&["namespace"]);
        let in_flight_peak = must(IntGauge::new(
            "larder_gateway_requests_in_flight_peak",
            "Most data requests admitted at once since the gateway started.",
        ));
        let revision = must(IntGauge::new(
            "larder_gateway_registry_revision",
            "Registry snapshot revision applied.",
        ));
        let staleness = must(Gauge::new(
            "larder_gateway_registry_staleness_seconds",
            "Seconds since ZooKeeper last confirmed the registry snapshot (0 while connected).",
        ));
        let zookeeper_connected = must(IntGauge::new(
            "larder_gateway_zookeeper_connected",
            "1 while the ZooKeeper session is connected.",
        ));
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(in_flight.clone()),
            Box::new(hits.clone()),
            Box::new(misses.clone()),
            Box::new(near_cache_hits.clone()),
            Box::new(errors.clone()),
            Box::new(redis_errors.clone()),
            Box::new(rate_limited.clone()),
            Box::new(shed.clone()),
            Box::new(in_flight_peak.clone()),
            Box::new(revision.clone()),
            Box::new(staleness.clone()),
            Box::new(zookeeper_connected.clone()),
        ] {
            must(registry.register(c));
        }
        Self {
            registry,
            requests,
            duration,
            in_flight,
            hits,
            misses,
            near_cache_hits,
            errors,
            redis_errors,
            rate_limited,
            shed,
            shed_global,
            shed_namespace,
            in_flight_peak,
            revision,
            staleness,
            zookeeper_connected,
        }
    }

    /// Counts a read served from the near cache (also counted as a hit).
    pub fn near_hits(&self, ns: &str) {
        self.near_cache_hits.with_label_values(&[ns]).inc();
    }

    /// Brings the registry gauges up to date and creates the per-namespace and
    /// per-deployment series of what the registry now holds.
    pub fn refresh(&self, snapshot: &Snapshot, status: SessionStatus) {
        self.revision
            .set(i64::try_from(snapshot.revision).unwrap_or(i64::MAX));
        self.staleness.set(status.staleness().as_secs_f64());
        self.zookeeper_connected.set(i64::from(status.connected));
        for ns in snapshot.namespaces.keys() {
            let labels = [ns.as_str()];
            self.hits.with_label_values(&labels);
            self.misses.with_label_values(&labels);
            self.near_cache_hits.with_label_values(&labels);
            self.rate_limited.with_label_values(&labels);
        }
        for cluster in snapshot.clusters.keys() {
            for kind in REDIS_ERROR_KINDS {
                self.redis_errors
                    .with_label_values(&[cluster.as_str(), kind]);
            }
        }
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// `larder_gateway_redis_errors_total`, also made on its own by a
/// [`Backends`](crate::backend::Backends) that is not given the registered one.
pub fn redis_errors_counter() -> IntCounterVec {
    must(IntCounterVec::new(
        Opts::new(
            "larder_gateway_redis_errors_total",
            "Failed Redis calls by deployment and kind (unavailable, timeout, error).",
        ),
        &["cluster", "kind"],
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The fixed operation name of a route and method.
fn op(route: &str, method: &Method) -> &'static str {
    match (route, method.as_str()) {
        ("/v1/namespaces/{ns}/keys/{*key}", "GET") => "key.get",
        ("/v1/namespaces/{ns}/keys/{*key}", "HEAD") => "key.head",
        ("/v1/namespaces/{ns}/keys/{*key}", "PUT") => "key.put",
        ("/v1/namespaces/{ns}/keys/{*key}", "DELETE") => "key.delete",
        ("/v1/namespaces/{ns}/keys", _) => "key.list",
        ("/v1/namespaces/{ns}/ttl/{*key}", "GET") => "ttl.get",
        ("/v1/namespaces/{ns}/ttl/{*key}", _) => "ttl.put",
        ("/v1/namespaces/{ns}/batch", _) => "batch",
        ("/v1/namespaces/{ns}/counters/{*key}", "POST") => "counter.step",
        ("/v1/namespaces/{ns}/counters/{*key}", "GET") => "counter.get",
        ("/v1/namespaces/{ns}/counters/{*key}", _) => "counter.delete",
        (r, _) if r.contains("/queues/") => "queue",
        (r, _) if r.starts_with("/v1/") => "other",
        _ => "system",
    }
}

/// A data request being measured: what [`Metrics::finish`] labels it with.
pub struct Tracked {
    namespace: String,
    op: &'static str,
    start: Instant,
}

impl Metrics {
    /// Starts measuring `request` if it is a data request (a `/v1/` route); counts it in
    /// flight until [`Metrics::finish`].
    pub fn begin(&self, snapshot: &SnapshotReader, request: &Request) -> Option<Tracked> {
        let route = request.extensions().get::<MatchedPath>()?.as_str();
        if !route.starts_with("/v1/") {
            return None;
        }
        let op = op(route, request.method());
        let ns = request
            .uri()
            .path()
            .strip_prefix("/v1/namespaces/")
            .and_then(|r| r.split('/').next())
            .unwrap_or("");
        let namespace = if snapshot.load().namespace(ns).is_some() {
            ns.to_owned()
        } else {
            "_other".to_owned()
        };
        self.in_flight.inc();
        Some(Tracked {
            namespace,
            op,
            start: Instant::now(),
        })
    }

    /// Records the outcome of a request [`Metrics::begin`] started measuring.
    pub fn finish(&self, tracked: Tracked, response: &Response) {
        self.in_flight.dec();
        self.duration
            .with_label_values(&[&tracked.namespace, tracked.op])
            .observe(tracked.start.elapsed().as_secs_f64());
        self.requests
            .with_label_values(&[&tracked.namespace, tracked.op, response.status().as_str()])
            .inc();
        if let Some(source) = response.extensions().get::<Source>() {
            self.errors.with_label_values(&[source.as_str()]).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::backend::Backends;

    #[test]
    fn redis_failures_are_counted_by_deployment_and_kind() {
        let metrics = Metrics::new();
        let backends = Backends::new(Duration::from_secs(1), Duration::from_secs(1))
            .with_error_counter(metrics.redis_errors.clone());
        let timeout = ApiError::BackendTimeout {
            cluster: "main".into(),
            ms: 1000,
        };
        backends.record_error("main", &timeout);
        backends.record_error("main", &timeout);
        backends.record_error(
            "main",
            &ApiError::BackendUnavailable {
                cluster: "main".into(),
                detail: "refused".into(),
            },
        );
        // Not Redis's failures: not counted.
        backends.record_error("main", &ApiError::KeyNotFound);
        backends.record_error("main", &ApiError::BadRequest("x".into()));
        let text = metrics.render();
        for line in [
            "larder_gateway_redis_errors_total{cluster=\"main\",kind=\"timeout\"} 2",
            "larder_gateway_redis_errors_total{cluster=\"main\",kind=\"unavailable\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        assert!(!text.contains("kind=\"error\""), "{text}");
    }

    #[test]
    fn registry_gauges_follow_the_session() {
        let metrics = Metrics::new();
        let status = SessionStatus {
            connected: false,
            last_confirmed: Instant::now() - Duration::from_secs(3),
            sessions: 1,
            resyncs: 1,
        };
        metrics.refresh(&Snapshot::default(), status);
        assert_eq!(metrics.zookeeper_connected.get(), 0);
        assert!(metrics.staleness.get() >= 3.0);
        let text = metrics.render();
        for source in SOURCES {
            let line = format!(
                "larder_gateway_errors_total{{source=\"{}\"}} 0",
                source.as_str()
            );
            assert!(
                text.contains(&line),
                "{line} exists from the start:\n{text}"
            );
        }
    }
}
