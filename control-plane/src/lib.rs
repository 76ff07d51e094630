//! The Larder control plane: the admin API platform admins (and `larderctl`) use to
//! register Redis deployments, provision namespaces, issue and revoke tenant tokens,
//! rotate signing keys and read the audit trail.
//!
//! Layout:
//! - [`config`]: the typed configuration of `larder-control-plane`.
//! - [`api`]: request and response types, shared with the [`client`] used by `larderctl`.
//! - [`routes`]: one handler file per resource; [`router`] wires them.
//! - [`openapi`]: the OpenAPI document generated from the handlers (served at
//!   `/openapi.json`, Swagger UI at `/docs`).
//! - [`keys`]: the Ed25519 signing key set (private on disk, public in the registry).
//! - [`auth`]: admin-token verification for every `/v1` call.
//! - [`audit`]: the audit trail of every admin mutation.
//! - [`probe`]: checks a Redis deployment before it is registered.
//! - [`deployment`]: direct connections to a deployment's Redis nodes.
//! - [`usage`]: namespace usage estimates (keys, memory, ops/s).
//! - [`leader`]: who leads, and the leader's background work: [`deletion`] of
//!   namespaces and pruning.
//! - [`health`]: a deployment's status (ok / degraded / down) and its reasons, from the
//!   agents' reports.
//! - [`failover`]: the leader's failover of standalone deployments on a quorum of
//!   evidence, and the reconciler that keeps every other member a replica of the
//!   registered master.
//! - [`error`]: [`ApiError`](error::ApiError), the one error type of the API.
//!
//! All state lives in ZooKeeper through `larder-registry`; instances are interchangeable
//! and stand for election so that one of them leads background work, with fenced writes.

pub mod api;
pub mod audit;
pub mod auth;
pub mod client;
pub mod config;
pub mod deletion;
pub mod deployment;
pub mod error;
pub mod failover;
pub mod health;
pub mod keys;
pub mod leader;
pub mod metrics;
pub mod openapi;
pub mod probe;
pub mod routes;
pub mod state;
pub mod usage;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use larder_registry::client::Watch;
use larder_registry::model::LeaderCandidate;
use larder_registry::{Registry, RegistryError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

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
    use routes::{audit, clusters, keys, namespaces, tokens};
    let v1 = Router::new()
        .route("/v1/clusters", post(clusters::register).get(clusters::list))
        .route(
            "/v1/clusters/{name}",
            get(clusters::show).delete(clusters::deregister),
        )
        .route(
            "/v1/namespaces",
            post(namespaces::create).get(namespaces::list),
        )
        .route(
            "/v1/namespaces/{name}",
            get(namespaces::show)
                .patch(namespaces::update)
                .delete(namespaces::delete),
        )
        .route("/v1/namespaces/{name}/disable", post(namespaces::disable))
        .route(
            "/v1/namespaces/{name}/hotkeys",
            get(routes::hotkeys::hotkeys),
        )
        .route("/v1/namespaces/{name}/enable", post(namespaces::enable))
        .route(
            "/v1/namespaces/{name}/tokens",
            post(tokens::issue).get(tokens::list_for_namespace),
        )
        .route("/v1/tokens", get(tokens::list))
        .route("/v1/tokens/{jti}", get(tokens::show))
        .route("/v1/tokens/{jti}/revoke", post(tokens::revoke))
        .route("/v1/keys", get(keys::list))
        .route("/v1/keys/rotate", post(keys::rotate))
        .route("/v1/keys/{kid}/retire", post(keys::retire))
        .route("/v1/audit", get(audit::query))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::audit::record,
        ));
    let docs: Router<AppState> = utoipa_swagger_ui::SwaggerUi::new("/docs")
        .url("/openapi.json", openapi::ApiDoc::openapi())
        .into();
    let router = Router::new()
        .merge(v1)
        .merge(docs)
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .route("/metrics", get(routes::health::metrics))
        .fallback(|| async { error::ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { error::ApiError::MethodNotAllowed })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state);
    larder_service::http::layers(router)
}

/// Runs the control plane on `listener` until `shutdown` is cancelled, then drains:
/// HTTP first, then the background loops, then the registry session (which withdraws
/// its candidacy at once, so another instance takes over without waiting out the
/// session timeout).
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ControlPlaneError> {
    let keys = keys::KeyStore::load_or_create(&config.key_dir)?;
    let registry = Registry::connect(config.zookeeper.clone(), Watch::Snapshot).await?;
    let session_cancel = CancellationToken::new();
    let session = tokio::spawn(registry.clone().run(session_cancel.clone()));
    let address = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let keys = Arc::new(keys::KeyRing::new(keys));
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
        session_cancel.cancel();
        let _ = session.await;
        return Err(e);
    }
    let state = AppState {
        snapshot: registry.snapshot(),
        registry,
        keys,
        usage: Arc::new(usage::UsageEstimator::new(
            config.usage.clone(),
            // A usage read waits at most about twice this on a deployment that is down.
            Duration::from_millis(config.redis_timeout_ms.min(config.usage.scan_timeout_ms)),
        )),
        leadership: Arc::new(leader::Leadership::default()),
        config: Arc::new(config),
        metrics: Arc::new(metrics::Metrics::new()),
    };
    let background = CancellationToken::new();
    let loops = [
        tokio::spawn(leader::Leadership::watch(state.clone(), background.clone())),
        tokio::spawn(
            leader::Leader {
                state: state.clone(),
            }
            .run(background.clone()),
        ),
        tokio::spawn(failover::Failover::new(state.clone()).run(background.clone())),
        tokio::spawn(
            usage::OpsSampler {
                usage: state.usage.clone(),
                snapshot: state.snapshot.clone(),
                interval: Duration::from_millis(state.config.usage.sample_interval_ms),
            }
            .run(background.clone()),
        ),
    ];
    tracing::info!(%address, id = %state.config.id, "control plane listening");
    let served = larder_service::http::serve(listener, router(state), shutdown).await;
    background.cancel();
    for task in loops {
        let _ = task.await;
    }
    session_cancel.cancel();
    let _ = session.await;
    served.map_err(ControlPlaneError::Io)
}
