//! `/healthz`, `/readyz` and `/metrics`.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;

/// Alive: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses((status = 200, description = "The process answers", body = String, content_type = "text/plain"))
)]
pub async fn healthz() -> &'static str {
    "ok"
}

/// What `/readyz` reports.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    pub ready: bool,
    /// This instance's id.
    pub id: String,
    pub zookeeper_connected: bool,
    pub registry_revision: u64,
    pub staleness_ms: u64,
    /// Whether this instance leads (and runs the background work).
    pub leader: bool,
    /// The current leader's instance id and address, as this instance sees it.
    pub leader_id: Option<String>,
    pub leader_address: Option<String>,
    /// When the current leader was first seen, ms since the epoch.
    pub leader_since_ms: u64,
    /// Changes of leader this instance has seen since it started.
    pub leader_changes: u64,
}

/// Ready: the ZooKeeper session is connected and the registry has been read. Also shows
/// who leads.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready: ZooKeeper not connected or the registry not read yet", body = Readiness),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let status = state.snapshot.status();
    let snapshot = state.snapshot.load();
    let leader = state.leadership.current();
    let ready = status.connected && snapshot.revision > 0;
    let body = Readiness {
        ready,
        id: state.config.id.clone(),
        zookeeper_connected: status.connected,
        registry_revision: snapshot.revision,
        staleness_ms: status.staleness().as_millis() as u64,
        leader: state.registry.is_leader(),
        leader_id: leader.as_ref().map(|l| l.id.clone()),
        leader_address: leader.as_ref().map(|l| l.address.clone()),
        leader_since_ms: state.leadership.since_ms(),
        leader_changes: state.leadership.changes(),
    };
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
    m.refresh(&state).await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        m.render(),
    )
        .into_response()
}
