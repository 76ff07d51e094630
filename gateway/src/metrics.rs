//! The gateway's metrics: one struct, registered up front, bounded labels.
//!
//! `namespace` is a registered namespace's name or `_other`; `op` is a fixed operation
//! name derived from the matched route; no key or raw path ever becomes a label.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::error::Source;
use crate::state::AppState;

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
    /// `larder_gateway_errors_total{source}`: failed requests by who caused them.
    pub errors: IntCounterVec,
    /// `larder_gateway_rate_limited_total{namespace}`: requests refused with 429.
    pub rate_limited: IntCounterVec,
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
        let errors = must(IntCounterVec::new(
            Opts::new(
                "larder_gateway_errors_total",
                "Failed requests by the source of the failure.",
            ),
            &["source"],
        ));
        let rate_limited = must(IntCounterVec::new(
            Opts::new(
                "larder_gateway_rate_limited_total",
                "Requests refused over the namespace's rate limit.",
            ),
            &["namespace"],
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
            Box::new(errors.clone()),
            Box::new(rate_limited.clone()),
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
            errors,
            rate_limited,
            revision,
            staleness,
            zookeeper_connected,
        }
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
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

/// Counts and times data requests.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let Some(route) = route.filter(|r| r.starts_with("/v1/")) else {
        return next.run(request).await;
    };
    let op = op(&route, request.method());
    let namespace = {
        let ns = request
            .uri()
            .path()
            .strip_prefix("/v1/namespaces/")
            .and_then(|r| r.split('/').next())
            .unwrap_or("");
        if state.snapshot.load().namespace(ns).is_some() {
            ns.to_owned()
        } else {
            "_other".to_owned()
        }
    };
    let m = &state.metrics;
    m.in_flight.inc();
    let start = Instant::now();
    let response = next.run(request).await;
    m.in_flight.dec();
    m.duration
        .with_label_values(&[&namespace, op])
        .observe(start.elapsed().as_secs_f64());
    m.requests
        .with_label_values(&[&namespace, op, response.status().as_str()])
        .inc();
    if let Some(source) = response.extensions().get::<Source>() {
        m.errors.with_label_values(&[source.as_str()]).inc();
    }
    response
}
