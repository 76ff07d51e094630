//! Shared state of the admin API handlers.

use std::sync::Arc;

use larder_registry::{Registry, SnapshotReader};

use crate::config::Config;
use crate::keys::KeyStore;
use crate::metrics::Metrics;

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub registry: Registry,
    pub snapshot: SnapshotReader,
    pub keys: Arc<KeyStore>,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
}
