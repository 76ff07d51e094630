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

/// Ready once the registry has been read. While ZooKeeper is unreachable the gateway
/// keeps serving from its last snapshot, so it stays ready and reports the staleness.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let status = state.snapshot.status();
    let snapshot = state.snapshot.load();
    let ready = snapshot.revision > 0;
    let body = json!({
        "ready": ready,
        "zookeeper_connected": status.connected,
        "registry_revision": snapshot.revision,
        "applied_zxid": snapshot.config_zxid,
        "staleness_ms": status.staleness().as_millis() as u64,
        "namespaces": snapshot.namespaces.len(),
    });
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
    let status = state.snapshot.status();
    m.revision.set(state.snapshot.load().revision as i64);
    m.staleness.set(status.staleness().as_secs_f64());
    m.zookeeper_connected.set(i64::from(status.connected));
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        m.render(),
    )
        .into_response()
}
