//! The control plane's metrics, registered up front on one registry.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

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
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(is_leader.clone()),
            Box::new(zookeeper_connected.clone()),
            Box::new(revision.clone()),
            Box::new(namespaces.clone()),
            Box::new(clusters.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Self {
            registry,
            requests,
            duration,
            is_leader,
            zookeeper_connected,
            revision,
            namespaces,
            clusters,
        }
    }

    /// Text exposition of every metric.
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
