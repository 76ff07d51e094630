//! The failover drill: a replicated standalone deployment behind a gateway, a steady
//! stream of writes through the gateway, and `kill -9` of the master.
//!
//! Everything real: ZooKeeper, `redis-server` (a master and its replicas, nothing on
//! disk), one agent per Redis instance, a control plane and a gateway. The drill
//! measures what a tenant sees: the time from the kill to the first write that succeeds
//! again, the requests that failed meanwhile, and acknowledged writes that did not
//! survive; then it restarts the old master and measures how long until it serves as a
//! replica of the new one.
//!
//! Used by `tests/failover.rs`, which asserts correctness, and by the
//! `cargo run -p larder-tests --example failover` command, which prints the figures.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use larder_control_plane::api::{CreateNamespace, IssueToken, RegisterCluster};
use larder_control_plane::client::Client as AdminClient;
use larder_registry::auth::Permission;
use larder_registry::client::Watch;
use larder_registry::model::{Cluster, Topology};
use larder_registry::{Registry, paths};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use crate::platform::{self, Service};
use crate::{Redis, ZooKeeper, registry_config, unique_root};

/// The namespace the drill writes to.
pub const NAMESPACE: &str = "drill";

/// How the drill is set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// Replicas of the master (at least one).
    pub replicas: usize,
    /// The deployment's `down_after_ms`.
    pub down_after_ms: u64,
    /// Writes per second of the steady stream (one writer, paced).
    pub writes_per_s: u32,
    /// Writes made and confirmed replicated (`WAIT`) before the stream starts.
    pub baseline_keys: usize,
    /// The agents' probe interval, ms.
    pub probe_interval_ms: u64,
    /// The agents' `fail_after` (failed probes in a row before a node is reported down).
    pub fail_after: u32,
    /// The control plane's `failover.tick_ms` (its probe timeout is twice that).
    pub failover_tick_ms: u64,
    /// How long the stream runs before the kill.
    pub warm_up: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            replicas: 2,
            down_after_ms: 1_000,
            writes_per_s: 200,
            baseline_keys: 200,
            probe_interval_ms: 100,
            fail_after: 2,
            failover_tick_ms: 100,
            warm_up: Duration::from_secs(1),
        }
    }
}

/// A running platform for the drill; everything stops when it is dropped.
pub struct Drill {
    pub options: Options,
    pub zk: ZooKeeper,
    /// `nodes[0]` is the master at the start.
    pub nodes: Vec<Redis>,
    pub control_plane: Service,
    pub gateway: Service,
    pub agents: Vec<Service>,
    pub admin: AdminClient,
    pub registry: Registry,
    pub root: String,
    pub token: String,
    pub http: reqwest::Client,
    registry_session: CancellationToken,
    _keys: TempDir,
}

/// One write of the stream.
#[derive(Debug, Clone)]
pub struct Write {
    pub index: u64,
    pub sent: Instant,
    pub done: Instant,
    /// The HTTP status, or `None` when no response came.
    pub status: Option<u16>,
}

impl Write {
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// What the drill measured.
#[derive(Debug, Clone)]
pub struct Figures {
    pub options: Options,
    pub old_master: String,
    pub new_master: String,
    pub epoch: u64,
    /// From the kill to the registry naming the new master (as a watcher saw it).
    pub kill_to_registry: Duration,
    /// From the kill to the first write sent after it that succeeded.
    pub kill_to_first_write: Duration,
    pub requests: usize,
    pub failed_requests: usize,
    /// Failed writes sent after the first success that followed the kill (should be 0).
    pub failed_after_recovery: usize,
    /// Writes the gateway acknowledged (2xx) that the new master does not hold.
    pub acknowledged_lost: Vec<u64>,
    /// Baseline keys, confirmed replicated before the kill, that the new master lacks.
    pub replicated_lost: usize,
    /// From the old master's restart to it serving as a replica of the new master with
    /// its data.
    pub rejoin: Duration,
    pub writes: Vec<Write>,
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        writeln!(
            f,
            "failover drill: master + {} replicas, down_after {} ms, agents probing every {} ms \
             (down after {} failures), leader probing every {} ms, {} writes/s through the gateway",
            o.replicas,
            o.down_after_ms,
            o.probe_interval_ms,
            o.fail_after,
            o.failover_tick_ms,
            o.writes_per_s
        )?;
        writeln!(
            f,
            "  kill -9 {} -> registry names {} (epoch {}): {} ms",
            self.old_master,
            self.new_master,
            self.epoch,
            self.kill_to_registry.as_millis()
        )?;
        writeln!(
            f,
            "  time from kill to first successful write: {} ms",
            self.kill_to_first_write.as_millis()
        )?;
        writeln!(
            f,
            "  failed requests: {} of {} (after recovery: {})",
            self.failed_requests, self.requests, self.failed_after_recovery
        )?;
        writeln!(
            f,
            "  acknowledged writes lost: {} (replicated before the kill and lost: {})",
            self.acknowledged_lost.len(),
            self.replicated_lost
        )?;
        write!(
            f,
            "  old master restarted -> replica of the new master with its data: {} ms",
            self.rejoin.as_millis()
        )
    }
}

fn redis_key(key: &str) -> String {
    format!("larder:{NAMESPACE}:k:{key}")
}

impl Drill {
    /// Starts ZooKeeper, the Redis nodes, one agent per node, a control plane and a
    /// gateway; registers the deployment and a namespace; waits until the agents report
    /// every node up.
    pub async fn start(options: Options) -> Drill {
        assert!(options.replicas >= 1, "a failover needs a replica");
        let zk = ZooKeeper::start().await;
        let master = Redis::start().await;
        let mut nodes = vec![master];
        for _ in 0..options.replicas {
            let replica = Redis::start_replica_of(&nodes[0]).await;
            nodes.push(replica);
        }
        let root = unique_root();
        let keys = tempfile::tempdir().expect("a temporary directory");
        let tick = options.failover_tick_ms;
        let control_plane = platform::control_plane_with(&zk, &root, keys.path(), |c| {
            c.failover.tick_ms = tick;
            c.failover.probe_timeout_ms = tick * 2;
            c.background.tick_ms = 100;
            c.usage.sample_interval_ms = 0;
        })
        .await;
        let admin = platform::admin(&control_plane, keys.path());
        admin
            .register_cluster(&RegisterCluster {
                name: "main".into(),
                topology: Topology::Standalone,
                endpoints: vec![nodes[0].address()],
                replicas: nodes[1..].iter().map(Redis::address).collect(),
                region: "local".into(),
                capacity_bytes: 1 << 30,
                down_after_ms: Some(options.down_after_ms),
            })
            .await
            .expect("the deployment registers");
        let mut agents = Vec::new();
        for node in &nodes {
            let (interval, fail_after) = (options.probe_interval_ms, options.fail_after);
            agents.push(
                platform::agent_with(&zk, &root, &[("main", node.address())], |c| {
                    c.probe_interval_ms = interval;
                    c.probe_timeout_ms = interval.saturating_sub(20).max(50);
                    c.fail_after = fail_after;
                    c.recover_after = 2;
                })
                .await,
            );
        }
        admin
            .create_namespace(&CreateNamespace {
                name: NAMESPACE.into(),
                owner: "team-drill".into(),
                cluster: Some("main".into()),
                region: None,
                limits: Some(larder_registry::model::Limits {
                    ops_per_sec: 100_000,
                    burst: 100_000,
                    ..Default::default()
                }),
                near_cache: None,
            })
            .await
            .expect("the namespace is created");
        let token = admin
            .issue_token(
                NAMESPACE,
                &IssueToken {
                    subject: "drill".into(),
                    permissions: vec![Permission::Read, Permission::Write],
                    ttl_s: Some(3600),
                },
            )
            .await
            .expect("a token")
            .token;
        let gateway = platform::gateway(&zk, &root).await;
        let registry = Registry::connect(registry_config(&zk, &root), Watch::Snapshot)
            .await
            .expect("a registry session");
        let registry_session = CancellationToken::new();
        tokio::spawn(registry.clone().run(registry_session.clone()));
        let all = nodes.len();
        crate::eventually(
            Duration::from_secs(20),
            "the agents report every node up and the deployment ok",
            || {
                let admin = admin.clone();
                async move {
                    admin.cluster("main").await.is_ok_and(|c| {
                        c.nodes.len() == all
                            && c.status == larder_control_plane::api::HealthStatus::Ok
                    })
                }
            },
        )
        .await;
        Drill {
            options,
            zk,
            nodes,
            control_plane,
            gateway,
            agents,
            admin,
            registry,
            root,
            token,
            http: reqwest::Client::new(),
            registry_session,
            _keys: keys,
        }
    }

    /// `PUT key` through the gateway; the status, or `None` when no response came.
    pub async fn put(&self, key: &str, value: &str) -> Option<u16> {
        self.http
            .put(format!(
                "{}/v1/namespaces/{NAMESPACE}/keys/{key}",
                self.gateway.url
            ))
            .bearer_auth(&self.token)
            .body(value.to_owned())
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16())
    }

    /// `GET key` through the gateway: the status and body.
    pub async fn get(&self, key: &str) -> Option<(u16, String)> {
        let response = self
            .http
            .get(format!(
                "{}/v1/namespaces/{NAMESPACE}/keys/{key}",
                self.gateway.url
            ))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.unwrap_or_default()))
    }

    /// The deployment as the registry holds it now.
    pub async fn cluster(&self) -> Cluster {
        self.registry
            .get::<Cluster>(&paths::cluster("main"))
            .await
            .expect("ZooKeeper answers")
            .expect("the deployment is registered")
            .value
    }

    /// The node at `address`.
    pub fn node(&self, address: &str) -> &Redis {
        self.nodes
            .iter()
            .find(|n| n.address() == address)
            .unwrap_or_else(|| panic!("{address} is not a node of the drill"))
    }

    /// Runs the drill: baseline writes confirmed replicated, the stream, `kill -9` of
    /// the master, the stream until writes succeed again for a while, then the old
    /// master restarted until it serves as a replica of the new one.
    pub async fn run(&mut self) -> Figures {
        let o = self.options.clone();
        // Baseline: written, then confirmed on every replica before the kill.
        for i in 0..o.baseline_keys {
            let status = self.put(&format!("base-{i}"), &i.to_string()).await;
            assert_eq!(status, Some(204), "baseline write {i}");
        }
        let acked: i64 = self.nodes[0]
            .query(redis::cmd("WAIT").arg(o.replicas).arg(5_000))
            .await
            .expect("WAIT on the master");
        assert_eq!(acked, o.replicas as i64, "every replica has the baseline");

        // The stream.
        let writes: Arc<Mutex<Vec<Write>>> = Arc::default();
        let stop = CancellationToken::new();
        let writer = {
            let http = self.http.clone();
            let url = format!("{}/v1/namespaces/{NAMESPACE}/keys", self.gateway.url);
            let token = self.token.clone();
            let writes = writes.clone();
            let stop = stop.clone();
            let every = Duration::from_secs(1) / o.writes_per_s.max(1);
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(every);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                for index in 0.. {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = ticker.tick() => {}
                    }
                    let sent = Instant::now();
                    let status = http
                        .put(format!("{url}/w-{index}"))
                        .bearer_auth(&token)
                        .body(index.to_string())
                        .timeout(Duration::from_secs(3))
                        .send()
                        .await
                        .ok()
                        .map(|r| r.status().as_u16());
                    let done = Instant::now();
                    writes
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(Write {
                            index,
                            sent,
                            done,
                            status,
                        });
                }
            })
        };
        tokio::time::sleep(o.warm_up).await;

        let old_master = self.nodes[0].address();
        let snapshot = self.registry.snapshot();
        let killed = Instant::now();
        self.nodes[0].kill();
        let switched = snapshot
            .wait_for(Duration::from_secs(30), |s| {
                s.cluster("main")
                    .is_some_and(|c| c.value.master() != Some(old_master.as_str()))
            })
            .await
            .unwrap_or_else(|| panic!("no failover within 30 s of killing {old_master}"));
        let kill_to_registry = killed.elapsed();
        let switched = switched
            .cluster("main")
            .expect("the deployment")
            .value
            .clone();

        // Writes go on until they have succeeded for a second (or 30 s pass).
        let started = Instant::now();
        loop {
            let recovered_for = {
                let w = writes.lock().unwrap_or_else(|p| p.into_inner());
                w.iter()
                    .find(|w| w.sent >= killed && w.ok())
                    .map(|first| first.done.elapsed())
            };
            if recovered_for.is_some_and(|d| d >= Duration::from_secs(1))
                || started.elapsed() > Duration::from_secs(30)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.cancel();
        let _ = writer.await;
        let writes = std::mem::take(&mut *writes.lock().unwrap_or_else(|p| p.into_inner()));
        let first_ok = writes
            .iter()
            .find(|w| w.sent >= killed && w.ok())
            .unwrap_or_else(|| panic!("no write succeeded after the kill"));
        let kill_to_first_write = first_ok.done.duration_since(killed);
        let recovered_at = first_ok.sent;
        let failed_requests = writes.iter().filter(|w| !w.ok()).count();
        let failed_after_recovery = writes
            .iter()
            .filter(|w| w.sent > recovered_at && !w.ok())
            .count();

        // What survived, read back through the gateway (now on the new master).
        let new_master = switched.master().expect("a master").to_owned();
        let mut acknowledged_lost = Vec::new();
        for w in writes.iter().filter(|w| w.ok()) {
            let index = w.index.to_string();
            match self.get(&format!("w-{index}")).await {
                Some((200, body)) if body == index => {}
                Some((404, _)) => acknowledged_lost.push(w.index),
                other => panic!("reading w-{index} back: {other:?}"),
            }
        }
        let mut replicated_lost = 0;
        for i in 0..o.baseline_keys {
            match self.get(&format!("base-{i}")).await {
                Some((200, body)) if body == i.to_string() => {}
                Some((404, _)) => replicated_lost += 1,
                other => panic!("reading base-{i} back: {other:?}"),
            }
        }

        // The old master comes back (empty: nothing on disk) and must end up a replica
        // of the new master holding its data, never a second master taking writes.
        let marker = "after-failover";
        assert_eq!(self.put(marker, "1").await, Some(204));
        let restarted = Instant::now();
        self.nodes[0].restart().await;
        let old = &self.nodes[0];
        let new_port = new_master.rsplit_once(':').map(|(_, p)| p).unwrap_or("");
        let mut rejoin = None;
        while restarted.elapsed() < Duration::from_secs(30) {
            let info = old.info("replication").await.unwrap_or_default();
            let following = info.contains("role:slave")
                && info.contains(&format!("master_port:{new_port}\r"))
                && info.contains("master_link_status:up");
            if following {
                let exists: i64 = old
                    .query(redis::cmd("EXISTS").arg(redis_key(marker)))
                    .await
                    .unwrap_or_default();
                if exists == 1 {
                    rejoin = Some(restarted.elapsed());
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let rejoin = rejoin.unwrap_or_else(|| {
            panic!(
                "the old master {old_master} did not become a replica of {new_master} within 30 s:\n{}",
                old.log_tail(20)
            )
        });
        Figures {
            options: o,
            old_master,
            new_master,
            epoch: switched.epoch,
            kill_to_registry,
            kill_to_first_write,
            requests: writes.len(),
            failed_requests,
            failed_after_recovery,
            acknowledged_lost,
            replicated_lost,
            rejoin,
            writes,
        }
    }
}

impl Drop for Drill {
    fn drop(&mut self) {
        self.registry_session.cancel();
    }
}
