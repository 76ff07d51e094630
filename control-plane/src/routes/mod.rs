//! Handlers, one file per resource.

pub mod audit;
pub mod clusters;
pub mod health;
pub mod hotkeys;
pub mod keys;
pub mod namespaces;
pub mod tokens;

use std::time::Duration;

use larder_registry::Snapshot;

use crate::error::ApiError;
use crate::state::AppState;

/// Waits until this instance's snapshot shows a write it just made, so a read right
/// after a write through the same instance sees it (read-your-writes).
pub(crate) async fn observe(
    state: &AppState,
    predicate: impl FnMut(&Snapshot) -> bool,
) -> Result<(), ApiError> {
    state
        .snapshot
        .wait_for(Duration::from_secs(5), predicate)
        .await
        .map(|_| ())
        .ok_or_else(|| {
            ApiError::Unavailable(
                "the write did not reach this instance's registry view in time".into(),
            )
        })
}

/// Waits up to a second for the snapshot to catch up with a change seen in ZooKeeper
/// (before retrying a compare-and-set that lost).
pub(crate) async fn observe_briefly(state: &AppState, predicate: impl FnMut(&Snapshot) -> bool) {
    let _ = state
        .snapshot
        .wait_for(Duration::from_secs(1), predicate)
        .await;
}
