//! The integration-test harness: real ZooKeeper and Redis servers on free loopback ports,
//! started per test and cleaned up when dropped, even when the test panics.
//!
//! - [`zookeeper`]: [`ZooKeeper`], a standalone ZooKeeper 3.8 with its own data directory;
//!   stop, kill, start again, pause and resume it to inject faults.
//! - [`redis`]: [`Redis`] (standalone master, replicas) and [`RedisCluster`].
//! - [`proxy`]: [`TcpProxy`], to partition one client from a server while others stay.
//! - [`ports`]: free loopback ports.
//! - [`process`]: a child process signalled and reaped by its own pid.
//! - [`drill`]: the failover drill (`kill -9` of a master under a stream of writes),
//!   shared by the failover tests and `cargo run -p larder-tests --example failover`.
//!
//! The tests themselves are one binary, `tests/integration.rs`, with a module per feature.
//! Tests run in parallel (cargo-nextest runs each in its own process), so every test
//! starts the servers it needs: a ZooKeeper takes about half a second, a Redis less.
//! A missing server binary fails the test with the set-up command to run; nothing is
//! skipped silently.

pub mod drill;
pub mod platform;
pub mod ports;
pub mod process;
pub mod proxy;
pub mod redis;
pub mod zookeeper;

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use larder_registry::RegistryConfig;
use rand::Rng;

pub use crate::proxy::TcpProxy;
pub use crate::redis::{Redis, RedisCluster};
pub use crate::zookeeper::ZooKeeper;

/// Session timeout of test registries: short, so expiry and failover fit in a test, and
/// still well above the server's minimum (ten ticks of 100 ms).
pub const SESSION_TIMEOUT: Duration = Duration::from_millis(4_000);

/// Request timeout of test registries (also bounds how long a write waits while
/// ZooKeeper is unreachable).
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(2_000);

/// A registry root no other test uses, like `/t-3f9c2a7d10b4e6f8`, so tests can share one
/// ZooKeeper without seeing each other's data.
pub fn unique_root() -> String {
    format!("/t-{:016x}", rand::thread_rng().r#gen::<u64>())
}

/// A registry configuration for `root` on `zookeeper`, with [`SESSION_TIMEOUT`] and
/// [`REQUEST_TIMEOUT`].
pub fn registry_config(zookeeper: &ZooKeeper, root: &str) -> RegistryConfig {
    registry_config_at(&zookeeper.connect_string(), root)
}

/// Like [`registry_config`], for any connect string (a [`TcpProxy`], a closed port).
pub fn registry_config_at(connect: &str, root: &str) -> RegistryConfig {
    RegistryConfig {
        connect: connect.to_owned(),
        root: root.to_owned(),
        session_timeout_ms: SESSION_TIMEOUT.as_millis() as u64,
        request_timeout_ms: REQUEST_TIMEOUT.as_millis() as u64,
    }
}

/// Polls `check` every 50 ms until it returns true; returns how long that took. Panics
/// naming `what` when `timeout` passes first.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `tracing` output of the code under test to the test's output, filtered by
/// `RUST_LOG` (nothing when unset). Safe to call from every test.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// The last `lines` lines of a text file, or why it could not be read.
pub fn tail(file: &Path, lines: usize) -> String {
    match std::fs::read(file) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("({}: {e})", file.display()),
    }
}
