//! The in-memory picture of the registry that services read on every request.
//!
//! Maps are persistent (`imbl`) and values sit behind `Arc`, so applying one change
//! copies O(log n) of the structure, not the whole tree, and publishing a new snapshot is
//! one atomic pointer swap. Readers take an `Arc<Snapshot>` and never wait on ZooKeeper.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use imbl::OrdMap;
use tokio::sync::watch;

use crate::client::SessionStatus;
use crate::codec;
use crate::model::{
    Cluster, GatewayRecord, LeaderCandidate, Namespace, NodeHealth, Record, Revocation, SigningKey,
};
use crate::paths::{self, Entry};

/// A value with the znode version it was read at (for compare-and-set).
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub value: T,
    /// The znode's data version; pass it back to a compare-and-set write.
    pub version: i32,
    /// The zxid of the transaction that last changed it.
    pub modified_zxid: i64,
}

type Map<T> = OrdMap<String, Arc<Versioned<T>>>;

/// Everything the registry holds, as of [`Snapshot::revision`].
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Rises by one with every change applied in this process.
    pub revision: u64,
    pub clusters: Map<Cluster>,
    /// Keyed by `(cluster, endpoint)`.
    pub nodes: OrdMap<(String, String), Arc<Versioned<NodeHealth>>>,
    pub namespaces: Map<Namespace>,
    pub keys: Map<SigningKey>,
    pub revoked: Map<Revocation>,
    pub gateways: Map<GatewayRecord>,
    /// Keyed by the candidate's znode name (`n_<seq>`), so the first is the leader.
    pub candidates: Map<LeaderCandidate>,
    /// Values that failed to decode, by path, with the reason; surfaced, never applied.
    pub invalid: OrdMap<String, String>,
    /// The highest zxid among the configuration it holds (clusters, namespaces, keys,
    /// revocations). Unlike `revision` it is comparable across processes: a writer that
    /// got zxid `z` back knows a reader with `config_zxid >= z` has applied its write.
    /// Node health, gateway and election records do not move it, so a gateway can
    /// publish it without feeding back into every other gateway.
    pub config_zxid: i64,
}

impl Snapshot {
    pub fn namespace(&self, name: &str) -> Option<&Arc<Versioned<Namespace>>> {
        self.namespaces.get(name)
    }

    pub fn cluster(&self, name: &str) -> Option<&Arc<Versioned<Cluster>>> {
        self.clusters.get(name)
    }

    /// Health reports of one cluster's nodes.
    pub fn nodes_of<'a>(
        &'a self,
        cluster: &'a str,
    ) -> impl Iterator<Item = &'a Arc<Versioned<NodeHealth>>> + 'a {
        let from = (cluster.to_owned(), String::new());
        self.nodes
            .range(from..)
            .take_while(move |((c, _), _)| c == cluster)
            .map(|(_, v)| v)
    }

    pub fn is_revoked(&self, jti: &str) -> bool {
        self.revoked.contains_key(jti)
    }

    /// The current leader's candidate znode name and record.
    pub fn leader(&self) -> Option<(&String, &Arc<Versioned<LeaderCandidate>>)> {
        self.candidates.iter().next()
    }

    /// Applies a znode's new value (`Some`) or its removal (`None`). Returns whether the
    /// snapshot changed. Unknown paths are ignored.
    pub(crate) fn apply(&mut self, path: &str, data: Option<(&[u8], i32, i64)>) -> bool {
        fn put<T: Record>(
            map: &mut Map<T>,
            invalid: &mut OrdMap<String, String>,
            key: &str,
            path: &str,
            data: Option<(&[u8], i32, i64)>,
        ) -> bool {
            match data {
                None => {
                    invalid.remove(path);
                    map.remove(key).is_some()
                }
                Some((bytes, version, zxid)) => match codec::decode::<T>(path, bytes) {
                    Ok(value) => {
                        if map
                            .get(key)
                            .is_some_and(|old| old.version == version && old.modified_zxid == zxid)
                        {
                            return false;
                        }
                        invalid.remove(path);
                        map.insert(
                            key.to_owned(),
                            Arc::new(Versioned {
                                value,
                                version,
                                modified_zxid: zxid,
                            }),
                        );
                        true
                    }
                    Err(e) => {
                        tracing::warn!(%path, error = %e, "ignoring invalid registry value");
                        invalid.insert(path.to_owned(), e.to_string());
                        map.remove(key);
                        true
                    }
                },
            }
        }
        if let Some((_, _, zxid)) = data
            && matches!(
                paths::classify(path),
                Entry::Cluster(_) | Entry::Namespace(_) | Entry::Key(_) | Entry::Revoked(_)
            )
        {
            self.config_zxid = self.config_zxid.max(zxid);
        }
        let invalid = &mut self.invalid;
        match paths::classify(path) {
            Entry::Cluster(c) => {
                let changed = put(&mut self.clusters, invalid, c, path, data);
                if data.is_none() {
                    let stale: Vec<_> = self
                        .nodes
                        .keys()
                        .filter(|(cl, _)| cl == c)
                        .cloned()
                        .collect();
                    for k in stale {
                        self.nodes.remove(&k);
                    }
                }
                changed
            }
            Entry::Node { cluster, endpoint } => {
                let key = (cluster.to_owned(), endpoint.to_owned());
                let was_invalid = invalid.contains_key(path);
                match data {
                    None => {
                        invalid.remove(path);
                        self.nodes.remove(&key).is_some() || was_invalid
                    }
                    Some((bytes, version, zxid)) => {
                        match codec::decode::<NodeHealth>(path, bytes) {
                            Ok(value) => {
                                invalid.remove(path);
                                self.nodes.insert(
                                    key,
                                    Arc::new(Versioned {
                                        value,
                                        version,
                                        modified_zxid: zxid,
                                    }),
                                );
                                true
                            }
                            Err(e) => {
                                tracing::warn!(%path, error = %e, "ignoring invalid node health report");
                                invalid.insert(path.to_owned(), e.to_string());
                                self.nodes.remove(&key);
                                true
                            }
                        }
                    }
                }
            }
            Entry::Namespace(n) => put(&mut self.namespaces, invalid, n, path, data),
            Entry::Key(k) => put(&mut self.keys, invalid, k, path, data),
            Entry::Revoked(j) => put(&mut self.revoked, invalid, j, path, data),
            Entry::Gateway(g) => put(&mut self.gateways, invalid, g, path, data),
            Entry::Candidate(n) => put(&mut self.candidates, invalid, n, path, data),
            Entry::Nodes(_) | Entry::Other => false,
        }
    }
}

/// Shared state behind every [`SnapshotReader`].
#[derive(Debug)]
pub(crate) struct SnapshotCell {
    current: ArcSwap<Snapshot>,
    revision: watch::Sender<u64>,
}

impl SnapshotCell {
    pub(crate) fn new() -> Self {
        Self {
            current: ArcSwap::from_pointee(Snapshot::default()),
            revision: watch::Sender::new(0),
        }
    }

    pub(crate) fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Publishes `next` with a revision one above the current one.
    pub(crate) fn publish(&self, mut next: Snapshot) {
        next.revision = self.current.load().revision + 1;
        let revision = next.revision;
        self.current.store(Arc::new(next));
        self.revision.send_replace(revision);
    }
}

/// A cheap, cloneable handle to the current snapshot and the session's freshness.
#[derive(Debug, Clone)]
pub struct SnapshotReader {
    pub(crate) cell: Arc<SnapshotCell>,
    pub(crate) status: watch::Receiver<SessionStatus>,
}

impl SnapshotReader {
    /// The current snapshot: one atomic load, no lock, no I/O.
    pub fn load(&self) -> Arc<Snapshot> {
        self.cell.load()
    }

    /// A receiver that sees every new revision.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.cell.revision.subscribe()
    }

    /// How long the snapshot has gone unconfirmed by ZooKeeper (zero while connected).
    pub fn staleness(&self) -> Duration {
        self.status.borrow().staleness()
    }

    /// The session as last seen.
    pub fn status(&self) -> SessionStatus {
        *self.status.borrow()
    }

    /// Waits until `predicate` holds for the snapshot or `timeout` passes; returns the
    /// snapshot that satisfied it.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut predicate: impl FnMut(&Snapshot) -> bool,
    ) -> Option<Arc<Snapshot>> {
        let mut rx = self.subscribe();
        let deadline = Instant::now() + timeout;
        loop {
            let snap = self.load();
            if predicate(&snap) {
                return Some(snap);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match tokio::time::timeout(left, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => {
                    let snap = self.load();
                    return predicate(&snap).then_some(snap);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Limits, NamespaceState, NearCachePolicy};

    fn ns_bytes(owner: &str) -> Vec<u8> {
        codec::encode(&Namespace {
            name: "orders".into(),
            owner: owner.into(),
            cluster: "main".into(),
            state: NamespaceState::Active,
            limits: Limits::default(),
            near_cache: NearCachePolicy::Off,
            revision: 1,
            created_at_ms: 0,
        })
    }

    #[test]
    fn apply_inserts_updates_removes_and_flags_invalid() {
        let mut s = Snapshot::default();
        assert!(s.apply("/namespaces/orders", Some((&ns_bytes("a"), 0, 10))));
        assert!(
            !s.apply("/namespaces/orders", Some((&ns_bytes("a"), 0, 10))),
            "same version is no change"
        );
        assert!(s.apply("/namespaces/orders", Some((&ns_bytes("b"), 1, 11))));
        assert_eq!(s.namespace("orders").unwrap().value.owner, "b");
        assert!(s.apply("/namespaces/orders", Some((b"nonsense", 2, 12))));
        assert!(s.namespace("orders").is_none());
        assert!(s.invalid.contains_key("/namespaces/orders"));
        assert!(!s.apply("/namespaces/orders", None));
        assert!(s.invalid.is_empty());
        assert!(!s.apply("/clusters", None));
    }

    #[test]
    fn deleting_a_cluster_drops_its_nodes() {
        let mut s = Snapshot::default();
        let health = codec::encode(&NodeHealth {
            endpoint: "h:1".into(),
            up: true,
            ..Default::default()
        });
        s.apply("/clusters/main/nodes/h:1", Some((&health, 0, 1)));
        s.apply("/clusters/other/nodes/h:2", Some((&health, 0, 2)));
        assert_eq!(s.nodes_of("main").count(), 1);
        s.apply("/clusters/main", None);
        assert_eq!(s.nodes_of("main").count(), 0);
        assert_eq!(s.nodes_of("other").count(), 1);
    }
}
