//! `/healthz`, `/readyz` and `/metrics`.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::state::AppState;

/// Alive: the process answers.
pub async fn healthz() -> &'static str {
    "ok"
}

/// Ready: the ZooKeeper session is connected and the registry has been read.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let status = state.snapshot.status();
    let snapshot = state.snapshot.load();
    let body = json!({
        "zookeeper_connected": status.connected,
        "registry_revision": snapshot.revision,
        "staleness_ms": status.staleness().as_millis() as u64,
        "leader": state.registry.is_leader(),
    });
    let ready = status.connected && snapshot.revision > 0;
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

/// Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let m = &state.metrics;
    let snapshot = state.snapshot.load();
    m.revision.set(snapshot.revision as i64);
    m.namespaces.set(snapshot.namespaces.len() as i64);
    m.clusters.set(snapshot.clusters.len() as i64);
    m.zookeeper_connected
        .set(i64::from(state.snapshot.status().connected));
    m.is_leader.set(i64::from(state.registry.is_leader()));
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        m.render(),
    )
        .into_response()
}
