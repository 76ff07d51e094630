//! Publishing health records as ephemeral znodes, sparingly.
//!
//! A record is written at once when something a failover decision depends on changes
//! (up/down, role, followed master, replication link, the CVE flag) and otherwise
//! re-written at most every `heartbeat_interval_ms`, so readers can tell a live agent
//! from a stuck one by `reported_at_ms`. Every write goes through the ZooKeeper leader,
//! so this sets the ensemble's write load: per 1,000 Redis nodes, 1000 / heartbeat
//! seconds writes per second (100 writes/s at the 10 s default), plus one write per
//! state change. Probing every second and writing each result would be 1,000 writes/s,
//! beyond what a small ensemble should carry for health alone.

use std::time::{Duration, Instant};

use larder_registry::model::{NodeHealth, Role};
use larder_registry::{Registry, RegistryError, paths};

/// The part of a record whose change is published at once.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Significant {
    up: bool,
    role: Role,
    master: Option<String>,
    master_link_up: Option<bool>,
    vulnerable_lua: bool,
}

impl Significant {
    fn of(health: &NodeHealth) -> Self {
        Self {
            up: health.up,
            role: health.role,
            master: health.master.clone(),
            master_link_up: health.master_link_up,
            vulnerable_lua: health.vulnerable_lua,
        }
    }
}

/// Decides when a record is due. Pure, so the rate rule is tested without ZooKeeper.
#[derive(Debug, Clone)]
pub struct PublishPolicy {
    heartbeat: Duration,
    last: Option<(Significant, Instant)>,
}

impl PublishPolicy {
    pub fn new(heartbeat: Duration) -> Self {
        Self {
            heartbeat,
            last: None,
        }
    }

    /// Whether `health` should be written now: nothing written yet, a significant
    /// change since the last write, or the heartbeat interval has passed.
    pub fn due(&self, health: &NodeHealth, now: Instant) -> bool {
        match &self.last {
            None => true,
            Some((significant, at)) => {
                *significant != Significant::of(health)
                    || now.saturating_duration_since(*at) >= self.heartbeat
            }
        }
    }

    /// Records a successful write. A failed one is not recorded, so it is retried at the
    /// next probe.
    pub fn written(&mut self, health: &NodeHealth, now: Instant) {
        self.last = Some((Significant::of(health), now));
    }

    /// Forgets the last write, so the next record goes out whatever it holds.
    pub fn forget(&mut self) {
        self.last = None;
    }
}

/// Why a record was not written.
#[derive(Debug)]
pub enum PublishError {
    /// The cluster is not registered (yet): there is no place for the record.
    Unregistered,
    Registry(RegistryError),
}

/// Writes one instance's record at `/clusters/<cluster>/nodes/<host:port>`.
pub struct Publisher {
    registry: Registry,
    cluster: String,
    path: String,
}

impl Publisher {
    pub fn new(registry: Registry, cluster: &str, address: &str) -> Self {
        Self {
            registry,
            cluster: cluster.to_owned(),
            path: paths::node(cluster, address),
        }
    }

    /// Writes `health`. When the write finds no parent, a registered cluster only lacks
    /// its `nodes` directory (the first agent to report creates it); an unregistered one
    /// is reported as [`PublishError::Unregistered`].
    pub async fn publish(&self, health: &NodeHealth) -> Result<(), PublishError> {
        match self.registry.put_ephemeral(&self.path, health).await {
            Ok(()) => return Ok(()),
            Err(RegistryError::NotFound { .. }) => {}
            Err(e) => return Err(PublishError::Registry(e)),
        }
        if !self.cluster_registered().await? {
            // put_ephemeral remembered the record for re-creation after a session
            // expiry; with no cluster there is nothing to re-create.
            let _ = self.registry.remove_ephemeral(&self.path).await;
            return Err(PublishError::Unregistered);
        }
        self.registry
            .ensure_dir(&paths::nodes(&self.cluster))
            .await
            .map_err(PublishError::Registry)?;
        self.registry
            .put_ephemeral(&self.path, health)
            .await
            .map_err(PublishError::Registry)
    }

    /// Whether `/clusters/<cluster>` exists: one read, answered by the ZooKeeper server
    /// the session is on, which is cheaper than a failing write through the leader.
    pub async fn cluster_registered(&self) -> Result<bool, PublishError> {
        match self.registry.children(&paths::cluster(&self.cluster)).await {
            Ok(_) => Ok(true),
            Err(RegistryError::NotFound { .. }) => Ok(false),
            Err(e) => Err(PublishError::Registry(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(up: bool) -> NodeHealth {
        NodeHealth {
            endpoint: "127.0.0.1:6379".into(),
            up,
            role: Role::Master,
            ..NodeHealth::default()
        }
    }

    #[test]
    fn first_record_is_due_then_only_heartbeats() {
        let start = Instant::now();
        let mut policy = PublishPolicy::new(Duration::from_secs(10));
        assert!(policy.due(&health(true), start));
        policy.written(&health(true), start);
        let mut busier = health(true);
        busier.ops_per_sec = 9_000;
        busier.used_memory_bytes = 1 << 30;
        busier.latency_us = 1_234;
        assert!(
            !policy.due(&busier, start + Duration::from_secs(9)),
            "figures alone wait"
        );
        assert!(
            policy.due(&busier, start + Duration::from_secs(10)),
            "heartbeat"
        );
    }

    #[test]
    fn significant_changes_are_due_at_once() {
        let start = Instant::now();
        let soon = start + Duration::from_millis(1);
        let mut policy = PublishPolicy::new(Duration::from_secs(10));
        policy.written(&health(true), start);
        let changes: [fn(&mut NodeHealth); 5] = [
            |h| h.up = false,
            |h| h.role = Role::Replica,
            |h| h.master = Some("10.0.0.5:6379".into()),
            |h| h.master_link_up = Some(false),
            |h| h.vulnerable_lua = true,
        ];
        for change in changes {
            let mut changed = health(true);
            change(&mut changed);
            assert!(policy.due(&changed, soon), "{changed:?}");
        }
    }

    #[test]
    fn a_failed_write_is_retried_and_forget_forces_one() {
        let start = Instant::now();
        let mut policy = PublishPolicy::new(Duration::from_secs(10));
        policy.written(&health(true), start);
        // Went down; the write failed, so nothing is recorded and it stays due.
        assert!(policy.due(&health(false), start + Duration::from_secs(1)));
        assert!(policy.due(&health(false), start + Duration::from_secs(2)));
        policy.written(&health(false), start + Duration::from_secs(2));
        assert!(!policy.due(&health(false), start + Duration::from_secs(3)));
        policy.forget();
        assert!(policy.due(&health(false), start + Duration::from_secs(3)));
    }
}
