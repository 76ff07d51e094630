//! The one contract between Larder's services: the ZooKeeper model.
//!
//! No service reads or writes ZooKeeper any other way than through this crate.
//!
//! - [`model`]: every znode's typed, versioned (`"schema": 1`) JSON value.
//! - [`paths`]: where each znode lives under the configurable root (`/larder`).
//! - [`names`]: validation of namespace, cluster and other names.
//! - [`codec`]: encoding with the schema envelope, strict decoding.
//! - [`client`]: [`Registry`], a ZooKeeper session that survives disconnects and expiry,
//!   compare-and-set writes, owned ephemeral nodes re-created after expiry, and election.
//! - [`snapshot`]: the in-memory [`Snapshot`] kept current by one persistent recursive
//!   watch; cheap to read on every request, changed in place per event.
//! - [`auth`]: token claims and audiences shared by the issuer and the verifiers.
//! - [`keyspace`]: how tenant keys map onto Redis keys, confined to their namespace.
//! - [`ledger`]: the control plane's own records (issued tokens, audit trail, background
//!   jobs), read on demand and never part of the snapshot.
//! - [`txn`]: multi-znode transactions, optionally fenced on leadership.

pub mod auth;
pub mod client;
pub mod codec;
pub mod error;
pub mod keyspace;
pub mod ledger;
pub mod model;
pub mod names;
pub mod paths;
pub mod snapshot;
pub mod txn;

pub use client::{Registry, RegistryConfig, SessionStatus};
pub use error::{RegistryError, Result};
pub use snapshot::{Snapshot, SnapshotReader, Versioned};

/// Milliseconds since the Unix epoch; the time unit of every timestamp in the model.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}
