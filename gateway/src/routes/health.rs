//! `/healthz`, `/readyz` and `/metrics`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use larder_registry::Snapshot;
use serde_json::json;

use crate::state::AppState;

/// Whether the gateway has been ready once. Readiness latches: a gateway that has read
/// the registry and reached its deployments keeps serving from its last snapshot while
/// ZooKeeper is away, so losing ZooKeeper afterwards shows as staleness, not as 503
/// (which would take every gateway out of its load balancer at once).
#[derive(Debug, Default)]
pub struct Readiness {
    ready: AtomicBool,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// Alive: the process answers.
pub async fn healthz() -> &'static str {
    "ok"
}

/// Ready once the registry has been read and every deployment that holds a namespace
/// has answered (a connection is open or a `PING` succeeds); 503 until then, naming
/// what is awaited in `waiting_for`. Once ready, it stays ready and reports the
/// registry's staleness.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let status = state.snapshot.status();
    let snapshot = state.snapshot.load();
    let waiting = if state.readiness.is_ready() {
        Vec::new()
    } else {
        waiting_for(&state, &snapshot).await
    };
    let ready = waiting.is_empty();
    if ready {
        state.readiness.ready.store(true, Ordering::Release);
    }
    let body = json!({
        "ready": ready,
        "zookeeper_connected": status.connected,
        "registry_revision": snapshot.revision,
        "applied_zxid": snapshot.config_zxid,
        "staleness_ms": status.staleness().as_millis() as u64,
        "namespaces": snapshot.namespaces.len(),
        "waiting_for": waiting,
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

/// What keeps the gateway from being ready: `zookeeper` before the registry has been
/// read, `redis:<deployment>` for each deployment holding namespaces that does not
/// answer.
async fn waiting_for(state: &AppState, snapshot: &Snapshot) -> Vec<String> {
    if snapshot.revision == 0 {
        return vec!["zookeeper".into()];
    }
    let in_use: BTreeSet<&str> = snapshot
        .namespaces
        .values()
        .map(|ns| ns.value.cluster.as_str())
        .collect();
    let pings = in_use
        .into_iter()
        .filter_map(|name| snapshot.cluster(name))
        .map(|cluster| async move {
            let ping = redis::cmd("PING");
            let answered = state
                .backends
                .query::<redis::Value>(&cluster.value, &ping)
                .await
                .is_ok();
            (!answered).then(|| format!("redis:{}", cluster.value.name))
        });
    futures::future::join_all(pings)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let m = &state.metrics;
    m.refresh(&state.snapshot.load(), state.snapshot.status());
    m.in_flight_peak
        .set(i64::try_from(state.overload.peak()).unwrap_or(i64::MAX));
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        m.render(),
    )
        .into_response()
}
