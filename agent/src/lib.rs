//! `larder-agent`: runs beside Redis, one per host. It probes each local instance (PING
//! and INFO), turns the results into health with hysteresis, publishes that health as an
//! ephemeral znode for the control plane and the gateways, and exports Prometheus
//! metrics under redis_exporter's names so existing dashboards work.
//!
//! Layout:
//! - [`config`]: the typed, validated [`Config`] and its command-line [`config::Overrides`].
//! - [`monitor`]: the loop per instance tying the parts below together.
//! - [`probe`]: one probe over a kept connection, and the `INFO` parser.
//! - [`health`]: hysteresis, so health flips only after consecutive results.
//! - [`cve`]: whether a Redis version carries the 2025 Lua scripting CVEs.
//! - [`publish`]: when a record is written to ZooKeeper, and writing it.
//! - [`metrics`]: every exported metric, registered up front.
//! - [`routes`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`error`]: [`AgentError`], the one error type.
//!
//! [`run`] takes a bound listener and a shutdown token, so tests run the agent in
//! process on port 0.

pub mod config;
pub mod cve;
pub mod error;
pub mod health;
pub mod metrics;
pub mod monitor;
pub mod probe;
pub mod publish;
pub mod routes;

use std::sync::Arc;
use std::time::Duration;

use larder_registry::Registry;
use larder_registry::client::Watch;
use larder_service::config::{ConfigError, Validate};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use config::Config;
pub use cve::vulnerable_lua;
pub use error::AgentError;
pub use routes::{AppState, router};

use crate::metrics::Metrics;
use crate::monitor::Monitor;

/// Runs the agent until `shutdown` is cancelled, then drains: the HTTP server first,
/// then the probe loops, then the ZooKeeper session, whose end withdraws this agent's
/// health records at once (rather than after the session timeout).
///
/// Fails at once, before probing anything, when the configuration is invalid or
/// ZooKeeper cannot be reached.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    config.validate().map_err(ConfigError)?;
    let metrics = Arc::new(Metrics::new()?);
    let registry = Registry::connect(config.zookeeper.clone(), Watch::None).await?;

    // Tokens of their own, not children of `shutdown`, so each stage stops only when the
    // one before it has; the guards still stop everything if this future is dropped.
    let registry_stop = CancellationToken::new();
    let _registry_guard = registry_stop.clone().drop_guard();
    let registry_task = tokio::spawn(registry.clone().run(registry_stop.clone()));
    let probes_stop = CancellationToken::new();
    let _probes_guard = probes_stop.clone().drop_guard();

    let monitors = TaskTracker::new();
    for instance in &config.instances {
        let monitor = Monitor::new(&config, instance, &registry, &metrics)?;
        let span = tracing::info_span!("monitor", instance = %instance.address, cluster = %instance.cluster);
        monitors.spawn(monitor.run(probes_stop.clone()).instrument(span));
    }
    monitors.close();

    let address = listener.local_addr()?;
    tracing::info!(
        agent = %config.id,
        %address,
        instances = config.instances.len(),
        zookeeper = %config.zookeeper.connect,
        "larder-agent running"
    );
    let state = AppState {
        metrics,
        session: registry.status(),
    };
    let served = larder_service::http::serve(listener, router(state), shutdown).await;

    probes_stop.cancel();
    monitors.wait().await;
    registry_stop.cancel();
    // Withdrawing takes one delete per record; bounded so a ZooKeeper that went away
    // cannot hold the process past its stop timeout.
    let withdraw_limit = Duration::from_millis(config.zookeeper.request_timeout_ms * 2);
    match tokio::time::timeout(withdraw_limit, registry_task).await {
        Ok(joined) => joined?,
        Err(_) => tracing::warn!(
            "ZooKeeper did not confirm the withdrawal in time; records expire with the session"
        ),
    }
    served?;
    tracing::info!("larder-agent stopped");
    Ok(())
}
