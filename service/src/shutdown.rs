//! Process lifecycle: one root cancellation token driven by Unix signals.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Returns a token cancelled on the first SIGTERM or SIGINT.
///
/// Cancellation starts an orderly drain (HTTP first, then background loops, then the
/// ZooKeeper session). A second signal means the operator does not want to wait: the
/// process exits with status 130 at once.
pub fn signal_token() -> CancellationToken {
    let token = CancellationToken::new();
    let root = token.clone();
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers; shutdown only by cancellation");
            return;
        };
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::info!("shutdown requested; draining (signal again to exit now)");
        root.cancel();
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::warn!("second signal; exiting without drain");
        std::process::exit(130);
    });
    token
}
