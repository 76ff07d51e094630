//! The Larder gateway: the stateless, authenticated HTTP data plane tenant teams use.
//!
//! Layout:
//! - [`config`]: the typed configuration of `larder-gateway`.
//! - [`routes`]: one handler file per resource; [`router`] wires them.
//! - [`state`]: shared handler state and the per-request authorisation step.
//! - [`auth`]: bearer-token verification with a cache of verified tokens.
//! - [`backend`]: one connection per Redis deployment, rebuilt after failover.
//! - [`value`]: the stored value layout (content type, ETag, bytes).
//! - [`metrics`]: the gateway's Prometheus metrics.
//! - [`overload`]: load shedding (in-flight limits) and the request body bound.
//! - [`error`]: [`ApiError`](error::ApiError), the one error type of the API.
//!
//! The request path reads only the in-memory registry snapshot; it never waits on
//! ZooKeeper, and keeps serving from the last snapshot while ZooKeeper is unreachable.

pub mod auth;
pub mod backend;
pub mod config;
pub mod error;
pub mod hotkeys;
pub mod metrics;
pub mod nearcache;
pub mod openapi;
pub mod overload;
pub mod ratelimit;
pub mod routes;
pub mod scripts;
pub mod state;
pub mod streams;
pub mod value;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use larder_registry::client::Watch;
use larder_registry::model::GatewayRecord;
use larder_registry::{Registry, RegistryError, paths};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use state::AppState;

/// Why the gateway could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("the registry could not be read within {0:?}")]
    NoSnapshot(Duration),
    #[error("serving HTTP: {0}")]
    Io(#[from] std::io::Error),
}

/// The data API.
pub fn router(state: AppState) -> Router {
    use routes::{batch, counters, keys, list};
    let router = Router::new()
        .route("/v1/namespaces/{ns}/keys", get(list::list))
        .route(
            "/v1/namespaces/{ns}/keys/{*key}",
            get(keys::get).put(keys::put).delete(keys::delete),
        )
        .route(
            "/v1/namespaces/{ns}/ttl/{*key}",
            get(keys::get_ttl).put(keys::put_ttl),
        )
        .route(
            "/v1/namespaces/{ns}/counters/{*key}",
            post(counters::step)
                .get(counters::read)
                .delete(counters::remove),
        )
        .route("/v1/namespaces/{ns}/batch", post(batch::batch))
        .route("/v1/namespaces/{ns}/hotkeys", get(routes::hotkeys::hotkeys))
        .merge(routes::queues::routes())
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .route("/metrics", get(routes::health::metrics))
        .route(
            "/openapi.json",
            get(|| async { axum::Json(openapi::document()) }),
        )
        .merge(
            utoipa_swagger_ui::SwaggerUi::new("/docs")
                .url("/docs/openapi.json", openapi::document()),
        )
        .fallback(|| async { error::ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { error::ApiError::MethodNotAllowed })
        .layer(axum::middleware::from_fn_with_state(state.clone(), around))
        .with_state(state.clone());
    // Shedding goes outside the shared layers, so a refused request costs no span, no
    // request id and no log line.
    larder_service::http::layers(router)
        .layer(axum::middleware::from_fn_with_state(state, overload::shed))
}

/// Middleware around every route, in one layer because each layer costs a clone of the
/// route and a boxed future per request: the body bound (a body too large is refused
/// before anything else, and is not counted), then the request metrics, then the
/// `RateLimit-*` headers of the namespace the request was charged to.
async fn around(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let request = match overload::bound_body(&state, request) {
        Ok(request) => request,
        Err(refused) => return refused,
    };
    let tracked = state.metrics.begin(&state.snapshot, &request);
    let response = ratelimit::with_headers(next.run(request)).await;
    if let Some(tracked) = tracked {
        state.metrics.finish(tracked, &response);
    }
    response
}

/// Publishes this gateway in the registry and keeps its applied configuration zxid
/// current there, so the control plane can tell when a change has reached every gateway.
async fn announce(registry: Registry, mut record: GatewayRecord, cancel: CancellationToken) {
    let snapshot = registry.snapshot();
    let mut revisions = snapshot.subscribe();
    let path = paths::gateway(&record.id);
    loop {
        let current = snapshot.load();
        if record.applied_zxid != current.config_zxid || record.revision == 0 {
            record.revision = current.revision;
            record.applied_zxid = current.config_zxid;
            if let Err(e) = registry.put_ephemeral(&path, &record).await {
                tracing::debug!(error = %e, "could not publish gateway record; will retry");
                record.revision = 0;
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = revisions.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(1)), if record.revision == 0 => {},
        }
        // Coalesce bursts of changes into one write.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs the gateway on `listener` until `shutdown` is cancelled, then drains: HTTP
/// first, then the background loops, then the ZooKeeper session.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), GatewayError> {
    let registry = Registry::connect(config.zookeeper.clone(), Watch::Snapshot).await?;
    let background = CancellationToken::new();
    let session = tokio::spawn(registry.clone().run(background.clone()));
    let snapshot = registry.snapshot();
    let first_read = Duration::from_millis(config.zookeeper.request_timeout_ms * 2);
    if snapshot
        .wait_for(first_read, |s| s.revision > 0)
        .await
        .is_none()
    {
        background.cancel();
        let _ = session.await;
        return Err(GatewayError::NoSnapshot(first_read));
    }
    let address = config
        .advertise
        .clone()
        .or_else(|| listener.local_addr().ok().map(|a| a.to_string()))
        .unwrap_or_default();
    let record = GatewayRecord {
        id: config.id.clone(),
        address: address.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        revision: 0,
        applied_zxid: 0,
        started_at_ms: larder_registry::now_ms(),
    };
    let announcer = tokio::spawn(announce(registry.clone(), record, background.clone()));
    // Long-poll queue claims hold exclusive connections; on drain they are released at
    // once instead of waiting out their wait time.
    let streams = Arc::new(streams::Streams::new());
    let drain_streams = {
        let (streams, shutdown) = (streams.clone(), shutdown.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            streams.shutdown();
        })
    };
    let metrics = Arc::new(metrics::Metrics::new());
    let state = AppState::new(state::Shared {
        snapshot,
        backends: Arc::new(
            backend::Backends::new(
                Duration::from_millis(config.connect_timeout_ms),
                Duration::from_millis(config.request_timeout_ms),
            )
            .with_error_counter(metrics.redis_errors.clone()),
        ),
        verifier: Arc::new(auth::Verifier::new(config.token_cache_entries)),
        streams: streams.clone(),
        limiter: Arc::new(ratelimit::RateLimiter::new()),
        near: Arc::new(nearcache::NearCache::new(
            config.near_cache_max_bytes,
            config.near_cache_max_entries,
        )),
        hot: Arc::new(hotkeys::HotKeys::new()),
        metrics,
        readiness: Arc::default(),
        overload: Arc::new(overload::Overload::new(
            usize::try_from(config.max_in_flight).unwrap_or(usize::MAX),
            config.max_in_flight_per_namespace,
        )),
        config: Arc::new(config),
    });
    tracing::info!(%address, "gateway listening");
    let limits = state.config.serve_limits();
    let served = larder_service::http::serve_with(listener, router(state), shutdown, limits).await;
    background.cancel();
    drain_streams.abort();
    let _ = announcer.await;
    let _ = session.await;
    served.map_err(GatewayError::Io)
}
