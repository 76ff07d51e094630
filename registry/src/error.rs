//! Errors of the registry, phrased by who is at fault.

/// What can go wrong talking to the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A compare-and-set lost: someone else changed the znode since it was read.
    #[error("conflict at {path}: the znode changed since it was read")]
    Conflict { path: String },
    /// The znode to create exists already.
    #[error("{path} exists already")]
    AlreadyExists { path: String },
    /// The znode (or its parent) does not exist.
    #[error("{path} does not exist")]
    NotFound { path: String },
    /// The znode still has children.
    #[error("{path} still has children")]
    NotEmpty { path: String },
    /// The stored value is not one this version understands.
    #[error("{path} holds an invalid value: {reason}")]
    Invalid { path: String, reason: String },
    /// A name failed validation.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    /// This process lost its leadership; the write was fenced off.
    #[error("not the leader (fenced)")]
    Fenced,
    /// The registry configuration is invalid (a bad connect string or root): retrying
    /// cannot help.
    #[error("invalid registry configuration: {0}")]
    Config(String),
    /// A write was sent but no answer came before the deadline: it may or may not have
    /// been applied. Read the node back before deciding to retry.
    #[error("the outcome of the write on {path} is unknown (no answer in time)")]
    Indeterminate { path: String },
    /// ZooKeeper could not be reached or the session is not usable right now.
    #[error("ZooKeeper unavailable: {0}")]
    Unavailable(String),
    /// Any other ZooKeeper failure.
    #[error("ZooKeeper error at {path}: {source}")]
    ZooKeeper {
        path: String,
        source: zookeeper_client::Error,
    },
}

impl RegistryError {
    /// Converts a ZooKeeper error for `path` into the typed variant callers branch on.
    pub fn from_zk(path: &str, error: zookeeper_client::Error) -> Self {
        use zookeeper_client::Error as E;
        let path = path.to_owned();
        match error {
            E::BadVersion => Self::Conflict { path },
            E::NodeExists => Self::AlreadyExists { path },
            E::NoNode => Self::NotFound { path },
            E::NotEmpty => Self::NotEmpty { path },
            E::ConnectionLoss | E::SessionExpired | E::ClientClosed | E::Timeout | E::NoHosts => {
                Self::Unavailable(format!("{error} (at {path})"))
            }
            source => Self::ZooKeeper { path, source },
        }
    }

    /// Whether retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Conflict { .. })
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;
