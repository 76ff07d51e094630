//! The Larder control plane: the admin API platform admins (and `larderctl`) use to
//! register Redis deployments, provision namespaces and issue tenant tokens.
//!
//! Layout:
//! - [`config`]: the typed configuration of `larder-control-plane`.
//! - [`api`]: request and response types, shared with the [`client`] used by `larderctl`.
//! - [`routes`]: one handler file per resource; [`router`] wires them.
//! - [`keys`]: the Ed25519 signing key set (private on disk, public in the registry).
//! - [`auth`]: admin-token verification for every `/v1` call.
//! - [`probe`]: checks a Redis deployment before it is registered.
//! - [`error`]: [`ApiError`](error::ApiError), the one error type of the API.
//!
//! All state lives in ZooKeeper through `larder-registry`; instances are interchangeable
//! and stand for election so that one of them leads background work.

pub mod api;
pub mod auth;
pub mod client;
pub mod config;
pub mod error;
pub mod keys;
pub mod metrics;
pub mod probe;
pub mod routes;
pub mod state;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use larder_registry::client::Watch;
use larder_registry::model::LeaderCandidate;
use larder_registry::{Registry, RegistryError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use state::AppState;

/// Why the control plane could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("serving HTTP: {0}")]
    Io(#[from] std::io::Error),
}

/// The admin API.
pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route(
            "/v1/clusters",
            post(routes::clusters::register).get(routes::clusters::list),
        )
        .route("/v1/clusters/{name}", get(routes::clusters::show))
        .route(
            "/v1/namespaces",
            post(routes::namespaces::create).get(routes::namespaces::list),
        )
        .route("/v1/namespaces/{name}", get(routes::namespaces::show))
        .route("/v1/namespaces/{name}/tokens", post(routes::tokens::issue));
    Router::new()
        .merge(v1)
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .route("/metrics", get(routes::health::metrics))
        .fallback(|| async { error::ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { error::ApiError::MethodNotAllowed })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .layer(
            tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer::new([
                axum::http::header::AUTHORIZATION,
            ]),
        )
        .with_state(state)
}

/// Runs the control plane on `listener` until `shutdown` is cancelled, then drains:
/// HTTP first, then the registry session (which withdraws its candidacy at once).
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ControlPlaneError> {
    let keys = keys::KeyStore::load_or_create(&config.key_dir)?;
    let registry = Registry::connect(config.zookeeper.clone(), Watch::Snapshot).await?;
    let background = CancellationToken::new();
    let session = tokio::spawn(registry.clone().run(background.clone()));
    let address = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let started = async {
        keys.publish(&registry).await?;
        registry
            .stand_for_leader(&LeaderCandidate {
                id: config.id.clone(),
                address: address.clone(),
                started_at_ms: larder_registry::now_ms(),
            })
            .await?;
        Ok::<_, ControlPlaneError>(())
    };
    if let Err(e) = started.await {
        background.cancel();
        let _ = session.await;
        return Err(e);
    }
    let state = AppState {
        snapshot: registry.snapshot(),
        registry,
        keys: Arc::new(keys),
        config: Arc::new(config),
        metrics: Arc::new(metrics::Metrics::new()),
    };
    tracing::info!(%address, "control plane listening");
    let served = larder_service::http::serve(listener, router(state), shutdown).await;
    background.cancel();
    let _ = session.await;
    served.map_err(ControlPlaneError::Io)
}
