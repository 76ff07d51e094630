//! Shared state of the admin API handlers.

use std::sync::Arc;

use larder_registry::{Registry, SnapshotReader};

use crate::config::Config;
use crate::keys::KeyRing;
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::usage::UsageEstimator;

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub registry: Registry,
    pub snapshot: SnapshotReader,
    pub keys: Arc<KeyRing>,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub usage: Arc<UsageEstimator>,
    pub leadership: Arc<Leadership>,
}
