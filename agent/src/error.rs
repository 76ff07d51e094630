//! The agent's one error type, phrased by who is at fault.

use larder_registry::RegistryError;
use larder_service::config::ConfigError;

/// What can go wrong in the agent.
///
/// Start-up failures (configuration, ZooKeeper, the metrics registry) end `run`; probe
/// and publish failures never do: they are counted, logged and reported as health.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration is invalid; the message names the field.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// ZooKeeper refused or could not be reached.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The HTTP server failed.
    #[error("HTTP server: {0}")]
    Io(#[from] std::io::Error),
    /// A metric could not be registered (a programming error: names clash).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A Redis instance answered with an error or the connection failed.
    #[error("redis {instance}: {source}")]
    Redis {
        instance: String,
        source: redis::RedisError,
    },
    /// A Redis instance did not answer within the probe timeout.
    #[error("redis {instance}: no answer within {timeout_ms} ms")]
    ProbeTimeout { instance: String, timeout_ms: u64 },
    /// A background task panicked.
    #[error("background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}
