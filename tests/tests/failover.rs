//! Failover of replicated standalone deployments, on real Redis, ZooKeeper, agents, a
//! control plane and a gateway:
//! - `kill -9` of the master under a steady stream of writes through the gateway: the
//!   most advanced replica takes over, the gateway follows without a restart, nothing
//!   that was replicated is lost, every write after the first success succeeds, and the
//!   old master comes back as a replica of the new one (the drill prints its figures);
//! - the quorum: one agent reporting the master down, a master that stalls while its
//!   replicas keep their link, and a control plane cut off from ZooKeeper promote
//!   nothing; a master whose agent is gone too is failed over;
//! - a replica promoted behind the registry's back is made a replica again.

use std::time::Duration;

use larder_control_plane::api::{AuditQuery, HealthStatus, RegisterCluster};
use larder_control_plane::client::Client as AdminClient;
use larder_registry::client::Watch;
use larder_registry::model::{Cluster, NodeHealth, Role, Topology};
use larder_registry::{Registry, now_ms, paths};
use larder_tests::drill::{Drill, Options};
use larder_tests::platform::{self, Service};
use larder_tests::{Redis, TcpProxy, ZooKeeper, eventually, registry_config, unique_root};
use tokio_util::sync::CancellationToken;

/// The `down_after_ms` of the quorum tests' deployments.
const DOWN_AFTER: Duration = Duration::from_millis(1_000);

async fn metric(url: &str, series: &str) -> f64 {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .expect("the control plane answers")
        .text()
        .await
        .expect("a metrics body");
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_default()
}

/// `role` and, for a replica, the followed master's port and whether the link is up.
async fn replication(node: &Redis) -> (String, Option<u16>, bool) {
    let info = node.info("replication").await.unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    };
    (
        field("role").unwrap_or_default(),
        field("master_port").and_then(|p| p.parse().ok()),
        field("master_link_status").as_deref() == Some("up"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_kill_9_of_the_master_under_writes_promotes_a_replica_and_the_old_master_rejoins()
{
    larder_tests::init_tracing();
    let mut drill = Drill::start(Options {
        down_after_ms: 1_500,
        ..Options::default()
    })
    .await;
    let replicas: Vec<String> = drill.nodes[1..].iter().map(Redis::address).collect();
    let figures = drill.run().await;
    println!("{figures}");

    // The registry names a former replica, with a raised epoch, and keeps the old
    // master as a replica.
    assert_eq!(figures.epoch, 2);
    assert!(replicas.contains(&figures.new_master), "{figures}");
    let cluster = drill.cluster().await;
    assert_eq!(cluster.endpoints, std::slice::from_ref(&figures.new_master));
    let mut members = cluster.replicas.clone();
    members.sort();
    let mut expected: Vec<String> = drill
        .nodes
        .iter()
        .map(Redis::address)
        .filter(|a| *a != figures.new_master)
        .collect();
    expected.sort();
    assert_eq!(members, expected);

    // What a tenant sees: nothing replicated before the kill is lost, and once writes
    // succeed again they all do.
    assert_eq!(figures.replicated_lost, 0, "{figures}");
    assert_eq!(figures.failed_after_recovery, 0, "{figures}");
    assert!(figures.failed_requests < figures.requests, "{figures}");

    // Exactly one master; every other node follows it with its link up.
    let new_port: u16 = figures
        .new_master
        .rsplit_once(':')
        .unwrap()
        .1
        .parse()
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "every other node replicates the new master",
        || async {
            let mut masters = 0;
            let mut following = 0;
            for node in &drill.nodes {
                match replication(node).await {
                    (role, _, _) if role == "master" => masters += 1,
                    (_, Some(port), true) if port == new_port => following += 1,
                    _ => {}
                }
            }
            masters == 1 && following == drill.nodes.len() - 1
        },
    )
    .await;
    assert_eq!(
        replication(drill.node(&figures.new_master)).await.0,
        "master"
    );

    // The control plane reports it: the deployment is healthy again, the failover and
    // the old master's demotion are counted and in the audit trail.
    let url = drill.control_plane.url.clone();
    eventually(
        Duration::from_secs(10),
        "the deployment is ok again",
        || async {
            drill.admin.cluster("main").await.is_ok_and(|c| {
                c.status == HealthStatus::Ok && c.reasons.is_empty() && c.nodes.len() == 3
            })
        },
    )
    .await;
    assert_eq!(
        metric(&url, "larder_cp_failovers_total{cluster=\"main\"}").await,
        1.0
    );
    assert!(metric(&url, "larder_cp_demotions_total{cluster=\"main\"}").await >= 1.0);
    assert_eq!(
        metric(&url, "larder_cp_failover_duration_seconds_count").await,
        1.0
    );
    let audit = drill
        .admin
        .audit(&AuditQuery {
            action: Some("cluster.".into()),
            target: Some("cluster/main".into()),
            ..Default::default()
        })
        .await
        .expect("the audit trail");
    let actions: Vec<(&str, &str)> = audit
        .items
        .iter()
        .map(|r| {
            (
                r.entry.action.as_str(),
                r.entry.detail.as_deref().unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        actions
            .iter()
            .any(|(a, d)| *a == "cluster.failover" && d.contains(&figures.new_master)),
        "{actions:?}"
    );
    assert!(
        actions
            .iter()
            .any(|(a, d)| *a == "cluster.repoint" && d.contains(&figures.old_master)),
        "{actions:?}"
    );
}

/// A replicated deployment with agents on chosen nodes and a control plane that checks
/// masters every 100 ms.
struct Fixture {
    _zk: ZooKeeper,
    /// `nodes[0]` is the master at the start.
    nodes: Vec<Redis>,
    cp: Service,
    agents: Vec<Option<Service>>,
    admin: AdminClient,
    registry: Registry,
    stop: CancellationToken,
    _keys: tempfile::TempDir,
}

impl Fixture {
    /// `agents[i]`: whether node `i` gets an agent. `cp_zookeeper`: the control plane's
    /// connect string (a proxy), when not ZooKeeper itself.
    async fn start(replicas: usize, agents: &[bool], cp_zookeeper: Option<String>) -> Fixture {
        Fixture::start_on(ZooKeeper::start().await, replicas, agents, cp_zookeeper).await
    }

    async fn start_on(
        zk: ZooKeeper,
        replicas: usize,
        agents: &[bool],
        cp_zookeeper: Option<String>,
    ) -> Fixture {
        larder_tests::init_tracing();
        let mut nodes = vec![Redis::start().await];
        for _ in 0..replicas {
            let replica = Redis::start_replica_of(&nodes[0]).await;
            nodes.push(replica);
        }
        let root = unique_root();
        let keys = tempfile::tempdir().unwrap();
        let cp = platform::control_plane_with(&zk, &root, keys.path(), |c| {
            c.failover.tick_ms = 100;
            c.failover.probe_timeout_ms = 200;
            c.usage.sample_interval_ms = 0;
            if let Some(connect) = cp_zookeeper {
                c.zookeeper.connect = connect;
            }
        })
        .await;
        let admin = platform::admin(&cp, keys.path());
        admin
            .register_cluster(&RegisterCluster {
                name: "main".into(),
                topology: Topology::Standalone,
                endpoints: vec![nodes[0].address()],
                replicas: nodes[1..].iter().map(Redis::address).collect(),
                region: "local".into(),
                capacity_bytes: 1 << 30,
                down_after_ms: Some(DOWN_AFTER.as_millis() as u64),
            })
            .await
            .expect("the deployment registers");
        let mut started = Vec::new();
        for (node, on) in nodes.iter().zip(agents) {
            started.push(if *on {
                Some(
                    platform::agent_with(&zk, &root, &[("main", node.address())], |c| {
                        c.probe_interval_ms = 100;
                        c.probe_timeout_ms = 80;
                        c.fail_after = 2;
                        c.recover_after = 2;
                    })
                    .await,
                )
            } else {
                None
            });
        }
        let registry = Registry::connect(registry_config(&zk, &root), Watch::None)
            .await
            .expect("a registry session");
        let stop = CancellationToken::new();
        tokio::spawn(registry.clone().run(stop.clone()));
        let reporting = agents.iter().filter(|a| **a).count();
        eventually(Duration::from_secs(15), "the agents report", || async {
            admin
                .cluster("main")
                .await
                .is_ok_and(|c| c.nodes.len() == reporting && c.nodes.iter().all(|n| n.up))
        })
        .await;
        Fixture {
            _zk: zk,
            nodes,
            cp,
            agents: started,
            admin,
            registry,
            stop,
            _keys: keys,
        }
    }

    async fn cluster(&self) -> Cluster {
        self.registry
            .get::<Cluster>(&paths::cluster("main"))
            .await
            .expect("ZooKeeper answers")
            .expect("registered")
            .value
    }

    async fn failovers(&self) -> f64 {
        metric(&self.cp.url, "larder_cp_failovers_total{cluster=\"main\"}").await
    }

    /// Asserts that for `how_long` nothing was promoted: the registry keeps its master
    /// and epoch, and every replica still follows the original master.
    async fn assert_no_promotion(&self, how_long: Duration, why: &str) {
        let deadline = tokio::time::Instant::now() + how_long;
        let master_port = self.nodes[0].port();
        while tokio::time::Instant::now() < deadline {
            let cluster = self.cluster().await;
            assert_eq!(cluster.epoch, 1, "{why}: the registry changed: {cluster:?}");
            assert_eq!(
                cluster.master(),
                Some(self.nodes[0].address().as_str()),
                "{why}"
            );
            for replica in &self.nodes[1..] {
                let (role, port, _) = replication(replica).await;
                assert!(
                    role == "slave" && port == Some(master_port),
                    "{why}: {} is {role} (following {port:?})",
                    replica.address()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_needs_more_than_one_agent_reporting_the_master_down() {
    // The master has no agent of its own; a lone report claims it is down, while the
    // master answers the leader and its replica keeps its link.
    let f = Fixture::start(1, &[false, true], None).await;
    let master = f.nodes[0].address();
    f.registry
        .put_ephemeral(
            &paths::node("main", &master),
            &NodeHealth {
                endpoint: master.clone(),
                agent: "flapping-agent".into(),
                up: false,
                role: Role::Master,
                reported_at_ms: now_ms(),
                ..Default::default()
            },
        )
        .await
        .expect("a report");
    eventually(
        Duration::from_secs(5),
        "the view shows the report",
        || async {
            f.admin.cluster("main").await.is_ok_and(|c| {
                c.status == HealthStatus::Down
                    && c.reasons[0].contains("does not answer its agent (flapping-agent)")
            })
        },
    )
    .await;
    f.assert_no_promotion(DOWN_AFTER * 3, "one agent's word")
        .await;
    assert_eq!(f.failovers().await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_spares_a_stalled_master_whose_replicas_keep_their_link() {
    // SIGSTOP: the leader's probes and the master's agent time out, but the replica's
    // link stays up (until its repl-timeout), so the quorum is not met.
    let f = Fixture::start(1, &[true, true], None).await;
    f.nodes[0].pause();
    eventually(
        Duration::from_secs(5),
        "the agent reports the stalled master down",
        || async {
            f.admin
                .cluster("main")
                .await
                .is_ok_and(|c| c.status == HealthStatus::Down)
        },
    )
    .await;
    f.assert_no_promotion(DOWN_AFTER * 3, "a stalled master")
        .await;
    f.nodes[0].resume();
    eventually(
        Duration::from_secs(10),
        "the deployment is ok again",
        || async {
            f.admin
                .cluster("main")
                .await
                .is_ok_and(|c| c.status == HealthStatus::Ok)
        },
    )
    .await;
    assert_eq!(f.failovers().await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_replaces_a_master_whose_agent_is_gone_too() {
    // The master's host dies: its agent's report goes, and the master with it.
    let mut f = Fixture::start(1, &[true, true], None).await;
    let agent = f.agents[0].take().expect("the master's agent");
    agent.stop().await.expect("the agent stops");
    f.nodes[0].kill();
    let replica = f.nodes[1].address();
    eventually(
        DOWN_AFTER + Duration::from_secs(10),
        "the replica is the registered master",
        || async {
            let c = f.cluster().await;
            c.epoch == 2 && c.master() == Some(replica.as_str())
        },
    )
    .await;
    assert_eq!(replication(&f.nodes[1]).await.0, "master");
    assert_eq!(f.failovers().await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_reconciler_demotes_a_replica_promoted_behind_the_registrys_back() {
    // As a failover interrupted between promotion and registry write leaves it: a
    // second master the registry does not name.
    let f = Fixture::start(1, &[true, true], None).await;
    let () = f.nodes[1]
        .query(redis::cmd("REPLICAOF").arg("NO").arg("ONE"))
        .await
        .expect("REPLICAOF NO ONE");
    let master_port = f.nodes[0].port();
    eventually(
        Duration::from_secs(10),
        "the stray master follows the registered master again",
        || async { replication(&f.nodes[1]).await == ("slave".into(), Some(master_port), true) },
    )
    .await;
    let cluster = f.cluster().await;
    assert_eq!(cluster.epoch, 1);
    assert_eq!(cluster.master(), Some(f.nodes[0].address().as_str()));
    assert_eq!(
        metric(&f.cp.url, "larder_cp_demotions_total{cluster=\"main\"}").await,
        1.0
    );
    assert_eq!(f.failovers().await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_waits_while_the_control_plane_is_cut_off_from_zookeeper() {
    // The control plane reaches ZooKeeper through a proxy; agents and the test do not.
    let zk = ZooKeeper::start().await;
    let proxy = TcpProxy::start(zk.address()).await;
    let mut f = Fixture::start_on(zk, 1, &[true, true], Some(proxy.connect_string())).await;

    // Cut off: this instance cannot lead, so it must not touch Redis either.
    proxy.block();
    f.nodes[0].kill();
    f.assert_no_promotion(DOWN_AFTER * 3, "a control plane without ZooKeeper")
        .await;

    // Back: it leads again (on a new session) and fails the master over.
    proxy.unblock();
    let replica = f.nodes[1].address();
    eventually(
        Duration::from_secs(30),
        "the replica is the registered master",
        || async {
            let c = f.cluster().await;
            c.epoch == 2 && c.master() == Some(replica.as_str())
        },
    )
    .await;
    assert_eq!(replication(&f.nodes[1]).await.0, "master");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_of_a_redis_cluster_is_followed_by_the_gateway_and_reported() {
    use larder_control_plane::api::{CreateNamespace, IssueToken};
    use larder_registry::auth::Permission;
    use larder_tests::RedisCluster;

    larder_tests::init_tracing();
    let zk = ZooKeeper::start().await;
    let mut shards = RedisCluster::start(3).await;
    let replica = shards.add_replica(0).await;
    let root = unique_root();
    let keys = tempfile::tempdir().unwrap();
    let cp = platform::control_plane_with(&zk, &root, keys.path(), |c| {
        c.failover.tick_ms = 100;
        c.usage.sample_interval_ms = 0;
    })
    .await;
    let admin = platform::admin(&cp, keys.path());
    admin
        .register_cluster(&RegisterCluster {
            name: "shards".into(),
            topology: Topology::Cluster,
            endpoints: shards.addresses(),
            replicas: vec![],
            region: "local".into(),
            capacity_bytes: 1 << 30,
            down_after_ms: None,
        })
        .await
        .expect("the Redis Cluster registers");
    let instances: Vec<(&str, String)> = shards
        .addresses()
        .into_iter()
        .map(|a| ("shards", a))
        .collect();
    let agent = platform::agent_with(&zk, &root, &instances, |c| {
        c.probe_interval_ms = 100;
        c.probe_timeout_ms = 80;
        c.fail_after = 2;
    })
    .await;
    admin
        .create_namespace(&CreateNamespace {
            name: "shop".into(),
            owner: "team-shop".into(),
            cluster: Some("shards".into()),
            region: None,
            limits: None,
            near_cache: None,
        })
        .await
        .expect("a namespace");
    let token = admin
        .issue_token(
            "shop",
            &IssueToken {
                subject: "shop".into(),
                permissions: vec![Permission::Read, Permission::Write],
                ttl_s: Some(600),
            },
        )
        .await
        .expect("a token")
        .token;
    let gw = platform::gateway(&zk, &root).await;
    eventually(Duration::from_secs(15), "the deployment is ok", || async {
        admin
            .cluster("shards")
            .await
            .is_ok_and(|c| c.status == HealthStatus::Ok && c.nodes.len() == 4)
    })
    .await;

    let http = reqwest::Client::new();
    let key_url = |i: usize| format!("{}/v1/namespaces/shop/keys/k-{i}", gw.url);
    // Forty keys spread over the slots of every master, replicated before the kill.
    let write_all = |round: usize| {
        let http = http.clone();
        let token = token.clone();
        async move {
            // A pass ends at its first failure, so polling stays quick while the
            // cluster is still electing; success needs all forty in one pass.
            for i in 0..40 {
                let status = http
                    .put(key_url(i))
                    .bearer_auth(&token)
                    .body(format!("{round}-{i}"))
                    .timeout(Duration::from_secs(3))
                    .send()
                    .await
                    .map(|r| r.status().as_u16());
                if !status.is_ok_and(|s| s == 204) {
                    return false;
                }
            }
            true
        }
    };
    assert!(write_all(1).await, "every write succeeds before the kill");
    let acked: i64 = shards
        .node(0)
        .query(redis::cmd("WAIT").arg(1).arg(5_000))
        .await
        .expect("WAIT");
    assert_eq!(acked, 1);

    // The cluster replaces the dead master by itself; the gateway's cluster client
    // follows it, and the control plane reports it.
    let replica_address = shards.node(replica).address();
    shards.kill_node(0);
    // Redis Cluster elects the replica after its node timeout (2 s here); on a loaded
    // machine the election itself can take much longer, which is not the gateway's doing.
    eventually(
        Duration::from_secs(90),
        "every key is writable again through the gateway",
        || write_all(2),
    )
    .await;
    for i in 0..40 {
        let body = http
            .get(key_url(i))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, format!("2-{i}"));
    }
    assert_eq!(replication(shards.node(replica)).await.0, "master");
    eventually(
        Duration::from_secs(10),
        "the control plane counted the failover",
        || async { metric(&cp.url, "larder_cp_failovers_total{cluster=\"shards\"}").await == 1.0 },
    )
    .await;
    let audit = admin
        .audit(&AuditQuery {
            action: Some("cluster.failover".into()),
            ..Default::default()
        })
        .await
        .expect("the audit trail");
    assert!(
        audit
            .items
            .iter()
            .any(|r| r.entry.target == "cluster/shards"
                && r.entry
                    .detail
                    .as_deref()
                    .is_some_and(|d| d.contains(&replica_address))),
        "{:?}",
        audit.items
    );
    let view = admin.cluster("shards").await.expect("the deployment");
    assert_eq!(view.status, HealthStatus::Degraded, "{view:?}");
    assert!(
        view.reasons
            .iter()
            .any(|r| r.contains(&shards.node(0).address())),
        "{:?}",
        view.reasons
    );

    // The old master returns as a replica (Redis Cluster's own doing); all is well again.
    shards.restart_node(0).await;
    eventually(
        Duration::from_secs(15),
        "the deployment is ok again",
        || async {
            admin
                .cluster("shards")
                .await
                .is_ok_and(|c| c.status == HealthStatus::Ok && c.nodes.len() == 4)
        },
    )
    .await;
    assert_eq!(replication(shards.node(0)).await.0, "slave");
    agent.stop().await.expect("the agent stops");
}
