//! The agent's HTTP surface: `/metrics`, `/healthz`, `/readyz`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use larder_registry::SessionStatus;
use larder_service::Problem;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// What the handlers read.
#[derive(Clone)]
pub struct AppState {
    pub metrics: Arc<Metrics>,
    /// The ZooKeeper session as the registry loop last saw it.
    pub session: watch::Receiver<SessionStatus>,
}

pub fn router(state: AppState) -> Router {
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state);
    larder_service::http::layers(router)
}

async fn metrics(State(state): State<AppState>) -> Response {
    // Read at scrape time rather than kept current by a task: it is one atomic load.
    let connected = state.session.borrow().connected;
    state.metrics.zookeeper_connected.set(i64::from(connected));
    match state.metrics.render() {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot render metrics");
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            )
            .into_response()
        }
    }
}

/// The process is alive and serving HTTP.
async fn healthz() -> &'static str {
    "ok"
}

/// Ready while the ZooKeeper session is connected: without it no health is published,
/// and the control plane would take this host's nodes for gone. A Redis that is down is
/// not the agent's unreadiness; reporting it is the agent's job.
///
/// The agent keeps no registry snapshot (it only writes), so there is no registry
/// revision to report; `staleness_ms` is how long ZooKeeper has been unreachable and
/// `sessions` how many sessions this process has opened (more than one after an expiry).
async fn readyz(State(state): State<AppState>) -> Response {
    let status = *state.session.borrow();
    if status.connected {
        return axum::Json(serde_json::json!({
            "ready": true,
            "zookeeper_connected": true,
            "staleness_ms": 0,
            "sessions": status.sessions,
        }))
        .into_response();
    }
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "zookeeper-unavailable",
        "ZooKeeper session not connected",
    )
    .with_detail(format!(
        "disconnected for {} ms; health is not being published",
        status.staleness().as_millis()
    ))
    .with_retry_after(1)
    .into_response()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::probe::Info;

    fn state(connected: bool) -> (AppState, watch::Sender<SessionStatus>) {
        let (tx, rx) = watch::channel(SessionStatus {
            connected,
            last_confirmed: Instant::now(),
            sessions: 1,
            resyncs: 1,
        });
        let metrics = Arc::new(Metrics::new().unwrap());
        (
            AppState {
                metrics,
                session: rx,
            },
            tx,
        )
    }

    async fn get(state: &AppState, path: &str) -> (StatusCode, String, String) {
        let response = router(state.clone())
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn healthz_says_ok() {
        let (state, _tx) = state(false);
        let (status, _, body) = get(&state, "/healthz").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "ok");
    }

    #[tokio::test]
    async fn metrics_show_probes_and_the_session() {
        let (state, tx) = state(true);
        let mut instance = state.metrics.instance("127.0.0.1:6379", "main");
        let info = Info {
            redis_version: "7.0.15".into(),
            used_memory: 4096,
            ..Info::default()
        };
        instance.probe_succeeded(Duration::from_micros(300), &info, true);

        let (status, content_type, body) = get(&state, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        let labels = "{cluster=\"main\",instance=\"127.0.0.1:6379\"}";
        for line in [
            format!("redis_up{labels} 1"),
            format!("redis_memory_used_bytes{labels} 4096"),
            format!("larder_agent_lua_cve_vulnerable{labels} 1"),
            "larder_agent_zookeeper_connected 1".to_owned(),
            "# TYPE redis_commands_processed_total counter".to_owned(),
        ] {
            assert!(
                body.lines().any(|l| l == line),
                "missing {line:?} in\n{body}"
            );
        }

        tx.send_modify(|s| s.connected = false);
        let (_, _, body) = get(&state, "/metrics").await;
        assert!(
            body.lines()
                .any(|l| l == "larder_agent_zookeeper_connected 0"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn readyz_follows_the_zookeeper_session() {
        let (state, tx) = state(true);
        let (status, _, body) = get(&state, "/readyz").await;
        assert_eq!(status, StatusCode::OK);
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["zookeeper_connected"], true, "{body}");
        assert_eq!(body["staleness_ms"], 0, "{body}");

        tx.send_modify(|s| s.connected = false);
        let (status, content_type, body) = get(&state, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(content_type, larder_service::problem::CONTENT_TYPE);
        let problem: Problem = serde_json::from_str(&body).unwrap();
        assert_eq!(problem.slug(), "zookeeper-unavailable");
        assert_eq!(problem.status, 503);
    }
}
