//! The registry against a real ZooKeeper: compare-and-set writes, the watched snapshot,
//! root isolation, disconnects, session expiry, ephemeral nodes and leader election.

use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

use larder_registry::client::Watch;
use larder_registry::model::{
    Cluster, GatewayRecord, KeyState, LeaderCandidate, Limits, Namespace, NamespaceState,
    NearCachePolicy, NodeHealth, Revocation, SigningKey, Topology,
};
use larder_registry::{Registry, RegistryConfig, RegistryError, codec, paths};
use larder_tests::{
    REQUEST_TIMEOUT, SESSION_TIMEOUT, TcpProxy, ZooKeeper, eventually, init_tracing, ports,
    registry_config, registry_config_at, unique_root,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use zookeeper_client as zk;

/// How long a change may take to reach a watching registry.
const PROPAGATION: Duration = Duration::from_secs(5);

fn namespace(name: &str, owner: &str, revision: u64) -> Namespace {
    Namespace {
        name: name.into(),
        owner: owner.into(),
        cluster: "main".into(),
        state: NamespaceState::Active,
        limits: Limits::default(),
        near_cache: NearCachePolicy::Off,
        revision,
        created_at_ms: 0,
    }
}

fn gateway(id: &str, address: &str) -> GatewayRecord {
    GatewayRecord {
        id: id.into(),
        address: address.into(),
        version: "test".into(),
        ..Default::default()
    }
}

fn candidate(id: &str) -> LeaderCandidate {
    LeaderCandidate {
        id: id.into(),
        address: format!("{id}.local:7000"),
        started_at_ms: 0,
    }
}

/// A registry whose background loop runs until [`Running::stop`] or drop.
struct Running {
    registry: Registry,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Running {
    /// Connects, starts [`Registry::run`] and waits until the first set-up is done (the
    /// snapshot read once when watching).
    async fn start(config: RegistryConfig, watch: Watch) -> Running {
        let registry = Registry::connect(config, watch)
            .await
            .expect("connect to ZooKeeper");
        let cancel = CancellationToken::new();
        let task = tokio::spawn(registry.clone().run(cancel.clone()));
        let mut status = registry.status();
        tokio::time::timeout(
            PROPAGATION,
            status.wait_for(|s| s.connected && s.resyncs >= 1),
        )
        .await
        .expect("the registry's first set-up finishes")
        .expect("the status channel stays open");
        Running {
            registry,
            cancel,
            task: Some(task),
        }
    }

    /// Cancels the background loop and waits until it has returned.
    async fn stop(&mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(PROPAGATION, task)
                .await
                .expect("run returns promptly after cancel")
                .expect("run does not panic");
        }
    }
}

impl Deref for Running {
    type Target = Registry;

    fn deref(&self) -> &Registry {
        &self.registry
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A plain ZooKeeper client inside `root`, to check what a registry wrote.
async fn observer(zk: &ZooKeeper, root: &str) -> zk::Client {
    zk.client()
        .await
        .chroot(root.to_owned())
        .expect("a valid root")
}

/// The session that owns the ephemeral node at `path`, if the node exists.
async fn owner_of(observer: &zk::Client, path: &str) -> Option<i64> {
    observer
        .check_stat(path)
        .await
        .expect("stat")
        .map(|stat| stat.ephemeral_owner)
}

fn persistent() -> zk::CreateOptions<'static> {
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
}

/// Waits until the registry has opened its second session and finished setting it up.
async fn second_session(registry: &Registry) {
    eventually(Duration::from_secs(15), "a new session is up", || async {
        let status = *registry.status().borrow();
        status.sessions == 2 && status.connected
    })
    .await;
}

/// Ends the session of `registry` with [`Registry::force_expiry`] and waits until the
/// server has closed it (`owned`, an ephemeral node of that session, is no longer that
/// session's). The registry's loop drops the session's client first, so the server
/// removes its ephemeral nodes before a new session re-creates them, as after a real
/// expiry.
async fn expire_session(
    _proxy: &TcpProxy,
    registry: &Registry,
    observer: &zk::Client,
    owned: &str,
) {
    let session = registry.session_id();
    assert_eq!(
        owner_of(observer, owned).await,
        Some(session),
        "{owned} belongs to the session to end"
    );
    registry
        .force_expiry()
        .await
        .expect("force_expiry ends the session");
    eventually(PROPAGATION, "the server closes the session", || async {
        owner_of(observer, owned).await != Some(session)
    })
    .await;
}

// ----- reads and compare-and-set writes ------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_writes_round_trip_with_typed_errors() {
    let zk = ZooKeeper::start().await;
    let registry = Registry::connect(registry_config(&zk, &unique_root()), Watch::None)
        .await
        .unwrap();
    let path = paths::namespace("orders");

    assert!(registry.get::<Namespace>(&path).await.unwrap().is_none());
    let created = registry
        .create(&path, &namespace("orders", "team-a", 1))
        .await
        .unwrap();
    assert_eq!(created.version, 0);

    let again = registry
        .create(&path, &namespace("orders", "team-b", 9))
        .await;
    assert!(
        matches!(&again, Err(RegistryError::AlreadyExists { path }) if path == "/namespaces/orders"),
        "{again:?}"
    );
    let stored = registry
        .get::<Namespace>(&path)
        .await
        .unwrap()
        .expect("the namespace exists");
    assert_eq!(
        stored.value,
        namespace("orders", "team-a", 1),
        "the refused create changed nothing"
    );
    assert_eq!(stored.version, 0);
    assert_eq!(stored.modified_zxid, created.modified_zxid);

    registry
        .create(
            &paths::namespace("billing"),
            &namespace("billing", "team-b", 1),
        )
        .await
        .unwrap();
    assert_eq!(
        registry.children(paths::NAMESPACES).await.unwrap(),
        ["billing", "orders"]
    );

    let missing = registry
        .set(
            &paths::namespace("nowhere"),
            &namespace("nowhere", "x", 1),
            0,
        )
        .await;
    assert!(
        matches!(missing, Err(RegistryError::NotFound { .. })),
        "{missing:?}"
    );
    let stale_delete = registry.delete(&path, Some(7)).await;
    assert!(
        matches!(stale_delete, Err(RegistryError::Conflict { .. })),
        "{stale_delete:?}"
    );
    registry.delete(&path, Some(0)).await.unwrap();
    assert!(registry.get::<Namespace>(&path).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_writers_racing_on_one_version_exactly_one_wins() {
    let zk = ZooKeeper::start().await;
    let config = registry_config(&zk, &unique_root());
    let first = Registry::connect(config.clone(), Watch::None)
        .await
        .unwrap();
    let second = Registry::connect(config, Watch::None).await.unwrap();
    let path = paths::namespace("orders");
    first
        .create(&path, &namespace("orders", "nobody", 0))
        .await
        .unwrap();

    for round in 0..5 {
        let seen_by_first = first.get::<Namespace>(&path).await.unwrap().unwrap();
        let seen_by_second = second.get::<Namespace>(&path).await.unwrap().unwrap();
        assert_eq!(seen_by_first.version, seen_by_second.version);
        let (by_first, by_second) = (
            namespace("orders", "first", round),
            namespace("orders", "second", round),
        );
        let (a, b) = tokio::join!(
            first.set(&path, &by_first, seen_by_first.version),
            second.set(&path, &by_second, seen_by_second.version),
        );
        let winner = match (&a, &b) {
            (Ok(_), Err(RegistryError::Conflict { path: p })) if p == &path => "first",
            (Err(RegistryError::Conflict { path: p }), Ok(_)) if p == &path => "second",
            _ => panic!(
                "round {round}: expected exactly one winner and one conflict, got {a:?} and {b:?}"
            ),
        };
        let stored = first.get::<Namespace>(&path).await.unwrap().unwrap();
        assert_eq!(
            stored.value.owner, winner,
            "round {round}: the winner's value is stored"
        );
        assert_eq!(stored.version, seen_by_first.version + 1);
    }

    // A version that was current once is refused later.
    let stale = first.set(&path, &namespace("orders", "late", 0), 0).await;
    assert!(
        matches!(stale, Err(RegistryError::Conflict { .. })),
        "{stale:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_applies_every_concurrent_increment() {
    let zk = ZooKeeper::start().await;
    let config = registry_config(&zk, &unique_root());
    let mut writers = Vec::new();
    for _ in 0..3 {
        writers.push(
            Registry::connect(config.clone(), Watch::None)
                .await
                .unwrap(),
        );
    }
    let path = paths::namespace("orders");
    writers[0]
        .create(&path, &namespace("orders", "team", 100))
        .await
        .unwrap();

    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let writer = writers[i % writers.len()].clone();
            let path = path.clone();
            tokio::spawn(async move {
                writer
                    .update::<Namespace, _>(&path, |ns| {
                        ns.revision += 1;
                        Ok(())
                    })
                    .await
            })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let result = task.await.expect("the update task does not panic");
        assert!(result.is_ok(), "update {i} failed: {result:?}");
    }
    let stored = writers[0].get::<Namespace>(&path).await.unwrap().unwrap();
    assert_eq!(
        stored.value.revision, 120,
        "every one of the 20 increments is kept"
    );
    assert_eq!(stored.version, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_passes_a_refusal_through_and_needs_an_existing_node() {
    let zk = ZooKeeper::start().await;
    let registry = Registry::connect(registry_config(&zk, &unique_root()), Watch::None)
        .await
        .unwrap();
    let path = paths::namespace("orders");

    let missing = registry.update::<Namespace, _>(&path, |_| Ok(())).await;
    assert!(
        matches!(missing, Err(RegistryError::NotFound { .. })),
        "{missing:?}"
    );

    registry
        .create(&path, &namespace("orders", "team", 1))
        .await
        .unwrap();
    let refused = registry
        .update::<Namespace, _>(&path, |ns| {
            ns.revision = 99;
            Err(RegistryError::InvalidName {
                what: "owner",
                value: ns.owner.clone(),
                reason: "refused",
            })
        })
        .await;
    assert!(
        matches!(refused, Err(RegistryError::InvalidName { .. })),
        "{refused:?}"
    );
    let stored = registry.get::<Namespace>(&path).await.unwrap().unwrap();
    assert_eq!(
        (stored.value.revision, stored.version),
        (1, 0),
        "a refused update writes nothing"
    );

    let updated = registry
        .update::<Namespace, _>(&path, |ns| {
            ns.state = NamespaceState::Disabled;
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(updated.value.state, NamespaceState::Disabled);
    assert_eq!(updated.version, 1);
}

// ----- the watched snapshot ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_follows_writes_of_another_registry() {
    init_tracing();
    let zk = ZooKeeper::start().await;
    let config = registry_config(&zk, &unique_root());
    let watcher = Running::start(config.clone(), Watch::Snapshot).await;
    let writer = Registry::connect(config, Watch::None).await.unwrap();
    let reader = watcher.snapshot();
    let mut revisions = reader.subscribe();
    let initial = reader.load().revision;
    assert!(initial >= 1, "the first read publishes a snapshot");
    revisions.borrow_and_update();

    let path = paths::namespace("orders");
    writer
        .create(&path, &namespace("orders", "team", 1))
        .await
        .unwrap();
    let created = reader
        .wait_for(PROPAGATION, |s| s.namespace("orders").is_some())
        .await
        .expect("the create is seen");
    assert_eq!(
        created.namespace("orders").unwrap().value,
        namespace("orders", "team", 1)
    );
    assert!(created.revision > initial);
    assert!(
        revisions.has_changed().unwrap(),
        "subscribers are notified of the new revision"
    );
    assert!(*revisions.borrow_and_update() >= created.revision);

    writer
        .update::<Namespace, _>(&path, |ns| {
            ns.revision = 2;
            Ok(())
        })
        .await
        .unwrap();
    let updated = reader
        .wait_for(PROPAGATION, |s| {
            s.namespace("orders").is_some_and(|n| n.value.revision == 2)
        })
        .await
        .expect("the update is seen");
    assert_eq!(
        updated.namespace("orders").unwrap().version,
        1,
        "the snapshot carries the znode version"
    );
    assert!(updated.revision > created.revision);
    tokio::time::timeout(PROPAGATION, revisions.changed())
        .await
        .expect("notified")
        .unwrap();

    writer.delete(&path, None).await.unwrap();
    let deleted = reader
        .wait_for(PROPAGATION, |s| s.namespace("orders").is_none())
        .await
        .expect("the delete is seen");
    assert!(deleted.revision > updated.revision);
    tokio::time::timeout(PROPAGATION, revisions.changed())
        .await
        .expect("notified")
        .unwrap();
    assert_eq!(*revisions.borrow(), reader.load().revision);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_record_reaches_the_snapshot() {
    let zk = ZooKeeper::start().await;
    let config = registry_config(&zk, &unique_root());
    let writer = Registry::connect(config.clone(), Watch::None)
        .await
        .unwrap();
    let cluster = Cluster {
        name: "main".into(),
        topology: Topology::Standalone,
        endpoints: vec!["127.0.0.1:6379".into()],
        replicas: vec![],
        region: "local".into(),
        capacity_bytes: 1 << 30,
        epoch: 1,
        down_after_ms: 3_000,
        created_at_ms: 0,
    };
    // Written before the watcher starts: found by the first full read.
    writer
        .create(&paths::cluster("main"), &cluster)
        .await
        .unwrap();
    writer.ensure_dir(&paths::nodes("main")).await.unwrap();
    writer
        .create(&paths::namespace("orders"), &namespace("orders", "team", 1))
        .await
        .unwrap();

    let watcher = Running::start(config, Watch::Snapshot).await;
    let first = watcher.snapshot().load();
    assert_eq!(first.cluster("main").map(|c| &c.value), Some(&cluster));
    assert!(first.namespace("orders").is_some());

    // Written while it watches: each applied as it happens.
    let health = NodeHealth {
        endpoint: "127.0.0.1:6379".into(),
        agent: "agent-1".into(),
        up: true,
        ..Default::default()
    };
    writer
        .put_ephemeral(&paths::node("main", "127.0.0.1:6379"), &health)
        .await
        .unwrap();
    let key = SigningKey {
        kid: "k1".into(),
        alg: "EdDSA".into(),
        public_key: "AAAA".into(),
        state: KeyState::Active,
        created_at_ms: 0,
    };
    writer.create(&paths::key("k1"), &key).await.unwrap();
    let revocation = Revocation {
        jti: "j1".into(),
        expires_at: 4_000_000_000,
        revoked_at_ms: 0,
    };
    writer
        .create(&paths::revoked("j1"), &revocation)
        .await
        .unwrap();
    writer
        .put_ephemeral(&paths::gateway("gw-1"), &gateway("gw-1", "10.0.0.1:8080"))
        .await
        .unwrap();

    let seen = watcher
        .snapshot()
        .wait_for(PROPAGATION, |s| {
            s.nodes_of("main").count() == 1
                && s.keys.contains_key("k1")
                && s.is_revoked("j1")
                && s.gateways.contains_key("gw-1")
        })
        .await
        .expect("every record is seen");
    assert_eq!(seen.nodes_of("main").next().unwrap().value, health);
    assert_eq!(seen.keys["k1"].value, key);
    assert_eq!(seen.revoked["j1"].value, revocation);
    assert_eq!(seen.gateways["gw-1"].value.address, "10.0.0.1:8080");
    assert!(seen.invalid.is_empty(), "{:?}", seen.invalid);

    // Deregistering a cluster takes its node reports out of the snapshot.
    writer
        .remove_ephemeral(&paths::node("main", "127.0.0.1:6379"))
        .await
        .unwrap();
    writer.delete(&paths::nodes("main"), None).await.unwrap();
    writer.delete(&paths::cluster("main"), None).await.unwrap();
    watcher
        .snapshot()
        .wait_for(PROPAGATION, |s| {
            s.cluster("main").is_none() && s.nodes_of("main").count() == 0
        })
        .await
        .expect("the cluster's removal is seen");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_values_are_reported_and_not_applied() {
    let zk = ZooKeeper::start().await;
    let root = unique_root();
    let config = registry_config(&zk, &root);
    let watcher = Running::start(config.clone(), Watch::Snapshot).await;
    let writer = Registry::connect(config, Watch::None).await.unwrap();
    let raw = observer(&zk, &root).await;
    let reader = watcher.snapshot();

    writer
        .create(&paths::namespace("orders"), &namespace("orders", "team", 1))
        .await
        .unwrap();
    reader
        .wait_for(PROPAGATION, |s| s.namespace("orders").is_some())
        .await
        .expect("the valid value is seen");

    raw.set_data("/namespaces/orders", b"{not json", None)
        .await
        .unwrap();
    let broken = reader
        .wait_for(PROPAGATION, |s| {
            s.invalid.contains_key("/namespaces/orders")
        })
        .await
        .expect("the invalid value is reported");
    assert!(
        broken.invalid["/namespaces/orders"].contains("not JSON"),
        "{:?}",
        broken.invalid
    );
    assert!(
        broken.namespace("orders").is_none(),
        "an undecodable value is never served"
    );

    let mut newer = serde_json::to_value(namespace("future", "team", 1)).unwrap();
    newer["schema"] = 2.into();
    raw.create(
        "/namespaces/future",
        &serde_json::to_vec(&newer).unwrap(),
        &persistent(),
    )
    .await
    .unwrap();
    let future = reader
        .wait_for(PROPAGATION, |s| {
            s.invalid.contains_key("/namespaces/future")
        })
        .await
        .expect("a newer schema is reported");
    assert!(
        future.invalid["/namespaces/future"].contains("newer"),
        "{:?}",
        future.invalid
    );
    assert!(future.namespace("future").is_none());

    // A valid value written over the broken one is served again and clears the report.
    let stat = raw.check_stat("/namespaces/orders").await.unwrap().unwrap();
    writer
        .set(
            &paths::namespace("orders"),
            &namespace("orders", "team", 2),
            stat.version,
        )
        .await
        .unwrap();
    let fixed = reader
        .wait_for(PROPAGATION, |s| {
            s.namespace("orders").is_some_and(|n| n.value.revision == 2)
        })
        .await
        .expect("the repaired value is seen");
    assert!(!fixed.invalid.contains_key("/namespaces/orders"));
    assert!(fixed.invalid.contains_key("/namespaces/future"));

    // A fresh full read reports the same.
    let late = Running::start(registry_config(&zk, &root), Watch::Snapshot).await;
    let first = late.snapshot().load();
    assert!(first.invalid.contains_key("/namespaces/future"));
    assert_eq!(first.namespace("orders").unwrap().value.revision, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repaired_node_report_is_no_longer_reported_invalid() {
    let zk = ZooKeeper::start().await;
    let root = unique_root();
    let config = registry_config(&zk, &root);
    let watcher = Running::start(config.clone(), Watch::Snapshot).await;
    let writer = Registry::connect(config, Watch::None).await.unwrap();
    let raw = observer(&zk, &root).await;
    let reader = watcher.snapshot();
    let cluster = Cluster {
        name: "main".into(),
        topology: Topology::Standalone,
        endpoints: vec!["127.0.0.1:6379".into()],
        replicas: vec![],
        region: "local".into(),
        capacity_bytes: 1 << 30,
        epoch: 1,
        down_after_ms: 3_000,
        created_at_ms: 0,
    };
    writer
        .create(&paths::cluster("main"), &cluster)
        .await
        .unwrap();
    writer.ensure_dir(&paths::nodes("main")).await.unwrap();
    let node = paths::node("main", "127.0.0.1:6379");
    let health = NodeHealth {
        endpoint: "127.0.0.1:6379".into(),
        up: true,
        ..Default::default()
    };
    let mut problems = Vec::new();

    raw.create(&node, &codec::encode(&health), &persistent())
        .await
        .unwrap();
    reader
        .wait_for(PROPAGATION, |s| s.nodes_of("main").count() == 1)
        .await
        .expect("the valid report is applied");
    raw.set_data(&node, b"garbage", None).await.unwrap();
    reader
        .wait_for(PROPAGATION, |s| {
            s.nodes_of("main").count() == 0 && s.invalid.contains_key(&node)
        })
        .await
        .expect("the bad report replaces the good one and is flagged");
    raw.set_data(&node, &codec::encode(&health), None)
        .await
        .unwrap();
    let repaired = reader
        .wait_for(PROPAGATION, |s| s.nodes_of("main").count() == 1)
        .await
        .expect("the repaired report is applied");
    if repaired.invalid.contains_key(&node) {
        problems.push("a repaired report is still flagged invalid");
    }

    // A report that is bad from its first write.
    let other = paths::node("main", "127.0.0.1:6380");
    raw.create(&other, b"garbage", &persistent()).await.unwrap();
    writer
        .create(&paths::namespace("marker"), &namespace("marker", "team", 1))
        .await
        .unwrap();
    let later = reader
        .wait_for(PROPAGATION, |s| s.namespace("marker").is_some())
        .await
        .expect("a later change is seen");
    if !later.invalid.contains_key(&other) {
        problems.push("a report that is bad from the start is never flagged");
    }
    assert!(
        problems.is_empty(),
        "{problems:?}; invalid = {:?}",
        later.invalid
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_change_replaces_only_its_own_entry() {
    let zk = ZooKeeper::start().await;
    let config = registry_config(&zk, &unique_root());
    let watcher = Running::start(config.clone(), Watch::Snapshot).await;
    let writer = Registry::connect(config, Watch::None).await.unwrap();
    let reader = watcher.snapshot();
    for name in ["alpha", "beta", "gamma"] {
        writer
            .create(&paths::namespace(name), &namespace(name, "team", 1))
            .await
            .unwrap();
    }
    let before = reader
        .wait_for(PROPAGATION, |s| s.namespaces.len() == 3)
        .await
        .expect("all three are seen");

    writer
        .set(&paths::namespace("beta"), &namespace("beta", "team", 2), 0)
        .await
        .unwrap();
    let after = reader
        .wait_for(PROPAGATION, |s| {
            s.namespace("beta").is_some_and(|n| n.value.revision == 2)
        })
        .await
        .expect("the change is seen");

    assert_eq!(
        after.revision,
        before.revision + 1,
        "one change, one new revision"
    );
    for untouched in ["alpha", "gamma"] {
        assert!(
            Arc::ptr_eq(
                before.namespace(untouched).unwrap(),
                after.namespace(untouched).unwrap()
            ),
            "{untouched} was not re-read or copied"
        );
    }
    assert!(!Arc::ptr_eq(
        before.namespace("beta").unwrap(),
        after.namespace("beta").unwrap()
    ));
    assert_eq!(
        before.namespace("beta").unwrap().value.revision,
        1,
        "an old snapshot never changes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registries_with_different_roots_never_see_each_other() {
    let zk = ZooKeeper::start().await;
    let (root_a, root_b) = (unique_root(), unique_root());
    let watcher_a = Running::start(registry_config(&zk, &root_a), Watch::Snapshot).await;
    let watcher_b = Running::start(registry_config(&zk, &root_b), Watch::Snapshot).await;
    let writer_a = Registry::connect(registry_config(&zk, &root_a), Watch::None)
        .await
        .unwrap();
    let writer_b = Registry::connect(registry_config(&zk, &root_b), Watch::None)
        .await
        .unwrap();

    writer_b
        .create(
            &paths::namespace("only-b"),
            &namespace("only-b", "team-b", 1),
        )
        .await
        .unwrap();
    writer_b
        .create(
            &paths::namespace("shared"),
            &namespace("shared", "team-b", 1),
        )
        .await
        .unwrap();
    writer_a
        .create(
            &paths::namespace("shared"),
            &namespace("shared", "team-a", 1),
        )
        .await
        .unwrap();
    writer_a
        .create(
            &paths::namespace("only-a"),
            &namespace("only-a", "team-a", 1),
        )
        .await
        .unwrap();

    let seen_a = watcher_a
        .snapshot()
        .wait_for(PROPAGATION, |s| {
            s.namespace("only-a").is_some() && s.namespace("shared").is_some()
        })
        .await
        .expect("root a sees its own namespaces");
    let seen_b = watcher_b
        .snapshot()
        .wait_for(PROPAGATION, |s| {
            s.namespace("only-b").is_some() && s.namespace("shared").is_some()
        })
        .await
        .expect("root b sees its own namespaces");
    assert!(seen_a.namespace("only-b").is_none());
    assert!(seen_b.namespace("only-a").is_none());
    assert_eq!(seen_a.namespace("shared").unwrap().value.owner, "team-a");
    assert_eq!(seen_b.namespace("shared").unwrap().value.owner, "team-b");
    assert_eq!(
        writer_a.children(paths::NAMESPACES).await.unwrap(),
        ["only-a", "shared"]
    );

    let raw = zk.client().await;
    let b_namespaces = raw
        .list_children(&format!("{root_b}/namespaces"))
        .await
        .unwrap();
    assert_eq!(
        b_namespaces.len(),
        2,
        "root b holds only its own: {b_namespaces:?}"
    );
}

// ----- disconnects and expiry ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_back_within_the_session_timeout_resumes_the_session_and_rereads() {
    init_tracing();
    let mut zk = ZooKeeper::start().await;
    let root = unique_root();
    // A session timeout well above the time the server takes to restart, so the session
    // survives on both sides.
    let config = RegistryConfig {
        session_timeout_ms: 10_000,
        ..registry_config(&zk, &root)
    };
    // The watcher reaches ZooKeeper through a proxy, so it can be kept away after the
    // restart while another client writes.
    let proxy = TcpProxy::start(zk.address()).await;
    let watcher = Running::start(
        RegistryConfig {
            connect: proxy.connect_string(),
            ..config.clone()
        },
        Watch::Snapshot,
    )
    .await;
    let reader = watcher.snapshot();
    let writer = Registry::connect(config.clone(), Watch::None)
        .await
        .unwrap();
    writer
        .create(&paths::namespace("before"), &namespace("before", "team", 1))
        .await
        .unwrap();
    reader
        .wait_for(PROPAGATION, |s| s.namespace("before").is_some())
        .await
        .expect("seen before the crash");
    let session = watcher.session_id();
    let resyncs = watcher.status().borrow().resyncs;
    drop(writer);

    zk.kill();
    proxy.block();
    eventually(
        Duration::from_secs(5),
        "the watcher notices the disconnect",
        || async { !reader.status().connected },
    )
    .await;
    let staleness = reader.staleness();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        reader.staleness() > staleness && staleness > Duration::ZERO,
        "staleness grows while disconnected"
    );
    let last_known = reader.load();
    assert!(
        last_known.namespace("before").is_some(),
        "the last snapshot is still served"
    );

    // A write fails within the request timeout instead of hanging, while the server
    // restarts.
    let attempt = async {
        let started = Instant::now();
        let result = watcher
            .set(
                &paths::namespace("before"),
                &namespace("before", "team", 99),
                0,
            )
            .await;
        (result, started.elapsed())
    };
    let ((refused, took), ()) = tokio::join!(attempt, zk.start_again());
    assert!(
        matches!(refused, Err(RegistryError::Unavailable(_))),
        "{refused:?}"
    );
    assert!(
        took < REQUEST_TIMEOUT + Duration::from_secs(1),
        "the write took {took:?}"
    );

    // Another client writes while the watcher is still cut off.
    let other = Registry::connect(config.clone(), Watch::None)
        .await
        .unwrap();
    other
        .create(
            &paths::namespace("while-away"),
            &namespace("while-away", "team", 1),
        )
        .await
        .unwrap();
    assert!(!reader.status().connected);
    assert!(reader.load().namespace("while-away").is_none());

    proxy.unblock();
    eventually(
        Duration::from_secs(10),
        "the watcher is connected again",
        || async { reader.status().connected },
    )
    .await;
    assert_eq!(reader.staleness(), Duration::ZERO);
    let snapshot = reader.load();
    assert!(
        snapshot.namespace("while-away").is_some(),
        "the tree was re-read before reporting connected"
    );
    assert!(snapshot.namespace("before").is_some());
    let status = reader.status();
    assert_eq!(status.sessions, 1, "the same session resumed");
    assert_eq!(watcher.session_id(), session);
    assert!(status.resyncs > resyncs, "the watch was armed again");

    // The re-armed watch delivers changes made after the reconnect.
    other
        .create(&paths::namespace("after"), &namespace("after", "team", 1))
        .await
        .unwrap();
    reader
        .wait_for(PROPAGATION, |s| s.namespace("after").is_some())
        .await
        .expect("the watch works again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_expiry_restores_ephemerals_watch_and_candidacy() {
    init_tracing();
    let zk = ZooKeeper::start().await;
    let root = unique_root();
    let config = registry_config(&zk, &root);
    let proxy = TcpProxy::start(zk.address()).await;
    let registry = Running::start(
        registry_config_at(&proxy.connect_string(), &root),
        Watch::Snapshot,
    )
    .await;
    let raw = observer(&zk, &root).await;
    let gw_path = paths::gateway("gw-1");
    registry
        .put_ephemeral(&gw_path, &gateway("gw-1", "10.0.0.1:8080"))
        .await
        .unwrap();
    let first_candidate = registry.stand_for_leader(&candidate("cp-1")).await.unwrap();
    eventually(PROPAGATION, "the only candidate leads", || async {
        registry.is_leader()
    })
    .await;
    let old_session = registry.session_id();

    expire_session(&proxy, &registry, &raw, &gw_path).await;
    second_session(&registry).await;
    let new_session = registry.session_id();
    assert_ne!(new_session, old_session);

    assert_eq!(
        owner_of(&raw, &gw_path).await,
        Some(new_session),
        "the gateway node belongs to the new session"
    );
    let (bytes, _) = raw.get_data(&gw_path).await.unwrap();
    assert_eq!(
        codec::decode::<GatewayRecord>(&gw_path, &bytes).unwrap(),
        gateway("gw-1", "10.0.0.1:8080")
    );

    let new_candidate = registry.candidate().expect("still a candidate");
    assert_ne!(
        new_candidate, first_candidate,
        "candidacy renewed with a new znode"
    );
    let leader_dir = raw.list_children(paths::LEADER).await.unwrap();
    assert_eq!(
        leader_dir,
        [new_candidate.as_str()],
        "the old candidate died with its session"
    );
    assert_eq!(
        owner_of(&raw, &format!("{}/{new_candidate}", paths::LEADER)).await,
        Some(new_session)
    );
    eventually(PROPAGATION, "leads again", || async {
        registry.is_leader()
    })
    .await;

    // The watch was armed on the new session.
    let writer = Registry::connect(config, Watch::None).await.unwrap();
    writer
        .create(&paths::namespace("after"), &namespace("after", "team", 1))
        .await
        .unwrap();
    registry
        .snapshot()
        .wait_for(PROPAGATION, |s| s.namespace("after").is_some())
        .await
        .expect("changes are seen");
    assert!(registry.snapshot().load().gateways.contains_key("gw-1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_down_past_the_session_timeout_recovers_with_a_new_session() {
    init_tracing();
    let mut zk = ZooKeeper::start().await;
    let root = unique_root();
    let config = registry_config(&zk, &root);
    let registry = Running::start(config.clone(), Watch::Snapshot).await;
    let gw_path = paths::gateway("gw-1");
    registry
        .put_ephemeral(&gw_path, &gateway("gw-1", "10.0.0.1:8080"))
        .await
        .unwrap();
    registry.stand_for_leader(&candidate("cp-1")).await.unwrap();
    eventually(PROPAGATION, "the only candidate leads", || async {
        registry.is_leader()
    })
    .await;
    let old_session = registry.session_id();

    zk.kill();
    eventually(
        Duration::from_secs(5),
        "the disconnect is noticed",
        || async { !registry.status().borrow().connected },
    )
    .await;
    assert!(
        !registry.is_leader(),
        "a disconnected process does not claim to lead"
    );
    // The outage: longer than the client's own expiry bound (7/5 of the session timeout).
    tokio::time::sleep(SESSION_TIMEOUT * 3 / 2).await;
    assert!(
        registry.snapshot().load().gateways.contains_key("gw-1"),
        "the last snapshot is served throughout"
    );
    zk.start_again().await;

    second_session(&registry).await;
    let new_session = registry.session_id();
    assert_ne!(new_session, old_session);
    // The server restored the old session and keeps it for one more timeout: its
    // ephemeral node is replaced at once rather than waited out.
    let raw = observer(&zk, &root).await;
    assert_eq!(owner_of(&raw, &gw_path).await, Some(new_session));

    let writer = Registry::connect(config, Watch::None).await.unwrap();
    writer
        .create(&paths::namespace("after"), &namespace("after", "team", 1))
        .await
        .unwrap();
    registry
        .snapshot()
        .wait_for(PROPAGATION, |s| s.namespace("after").is_some())
        .await
        .expect("changes are seen");

    // The old session's candidate goes when the server expires that session.
    eventually(
        SESSION_TIMEOUT + Duration::from_secs(3),
        "leads again on the new session",
        || async { registry.is_leader() },
    )
    .await;
    let leader_dir = raw.list_children(paths::LEADER).await.unwrap();
    assert_eq!(leader_dir, [registry.candidate().unwrap()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_reported_unavailable_is_not_applied_later() {
    let mut zk = ZooKeeper::start().await;
    // Long enough for the session to survive the restart: the point is a resumed session.
    let config = RegistryConfig {
        session_timeout_ms: 10_000,
        ..registry_config(&zk, &unique_root())
    };
    let registry = Running::start(config.clone(), Watch::None).await;
    let session = registry.session_id();
    let path = paths::namespace("orders");
    registry
        .create(&path, &namespace("orders", "team", 1))
        .await
        .unwrap();

    zk.kill();
    eventually(
        Duration::from_secs(5),
        "the disconnect is noticed",
        || async { !registry.status().borrow().connected },
    )
    .await;
    let (changed, ghost, ghost_path) = (
        namespace("orders", "team", 2),
        namespace("ghost", "team", 1),
        paths::namespace("ghost"),
    );
    let (set, created) = tokio::join!(
        registry.set(&path, &changed, 0),
        registry.create(&ghost_path, &ghost)
    );
    assert!(
        matches!(&set, Err(e @ RegistryError::Unavailable(_)) if e.is_retryable()),
        "{set:?}"
    );
    assert!(
        matches!(created, Err(RegistryError::Unavailable(_))),
        "{created:?}"
    );

    zk.start_again().await;
    eventually(Duration::from_secs(10), "the session resumes", || async {
        registry.status().borrow().connected
    })
    .await;
    assert_eq!(
        (registry.session_id(), registry.status().borrow().sessions),
        (session, 1),
        "the same session"
    );
    // A request of this session is answered after anything it queued earlier.
    registry.get::<Namespace>(&path).await.unwrap();
    let stored = registry.get::<Namespace>(&path).await.unwrap().unwrap();
    assert_eq!(
        (stored.value.revision, stored.version),
        (1, 0),
        "a set the caller was told failed (and may retry) was applied later"
    );
    assert!(
        registry
            .get::<Namespace>(&ghost_path)
            .await
            .unwrap()
            .is_none(),
        "a create the caller was told failed was applied later"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_expiry_ends_the_session_every_time() {
    let zk = ZooKeeper::start().await;
    let registry = Running::start(registry_config(&zk, &unique_root()), Watch::None).await;
    for round in 1..=3 {
        let session = registry.session_id();
        let result = registry.force_expiry().await;
        assert!(result.is_ok(), "round {round}: {result:?}");
        eventually(Duration::from_secs(10), "a new session is up", || async {
            let status = *registry.status().borrow();
            status.sessions == round + 1 && status.connected
        })
        .await;
        assert_ne!(registry.session_id(), session);
    }
}

// ----- ephemeral nodes -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_ephemeral_replaces_the_leftover_of_a_dead_session() {
    let zk = ZooKeeper::start().await;
    let root = unique_root();
    let config = registry_config(&zk, &root);
    // Creates the root and its directories.
    let registry = Running::start(config.clone(), Watch::Snapshot).await;
    let gw_path = paths::gateway("gw-1");

    // An earlier incarnation that died without closing its session: its nodes stay
    // until the server expires the session.
    let dead = zk::Client::connector()
        .with_session_timeout(SESSION_TIMEOUT)
        .with_detached()
        .connect(&zk.connect_string())
        .await
        .unwrap()
        .chroot(root.clone())
        .unwrap();
    let ephemeral = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
    let leftover = codec::encode(&gateway("gw-1", "old-address:1"));
    dead.create(&gw_path, &leftover, &ephemeral).await.unwrap();
    dead.create(&paths::gateway("marker"), b"{}", &ephemeral)
        .await
        .unwrap();
    let dead_session = dead.session_id().0;
    drop(dead);

    let started = Instant::now();
    registry
        .put_ephemeral(&gw_path, &gateway("gw-1", "new-address:1"))
        .await
        .unwrap();
    assert!(
        started.elapsed() < SESSION_TIMEOUT / 2,
        "the leftover is replaced, not waited out"
    );
    let raw = observer(&zk, &root).await;
    assert_eq!(owner_of(&raw, &gw_path).await, Some(registry.session_id()));
    assert_ne!(registry.session_id(), dead_session);
    let (bytes, _) = raw.get_data(&gw_path).await.unwrap();
    assert_eq!(
        codec::decode::<GatewayRecord>(&gw_path, &bytes)
            .unwrap()
            .address,
        "new-address:1"
    );

    // When the dead session finally expires, the replacement stays.
    eventually(SESSION_TIMEOUT * 3, "the dead session expires", || async {
        raw.check_stat(&paths::gateway("marker"))
            .await
            .unwrap()
            .is_none()
    })
    .await;
    assert_eq!(owner_of(&raw, &gw_path).await, Some(registry.session_id()));
    let snapshot = registry
        .snapshot()
        .wait_for(PROPAGATION, |s| {
            s.gateways
                .get("gw-1")
                .is_some_and(|g| g.value.address == "new-address:1")
        })
        .await;
    assert!(snapshot.is_some(), "the snapshot shows the replacement");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_ephemeral_deletes_the_node_and_forgets_it() {
    let zk = ZooKeeper::start().await;
    let root = unique_root();
    let proxy = TcpProxy::start(zk.address()).await;
    // Agents hold a session without watching the tree.
    let agent = Running::start(
        registry_config_at(&proxy.connect_string(), &root),
        Watch::None,
    )
    .await;
    let raw = observer(&zk, &root).await;
    let kept = paths::gateway("kept");
    let removed = paths::gateway("removed");
    agent
        .put_ephemeral(&kept, &gateway("kept", "a:1"))
        .await
        .unwrap();
    agent
        .put_ephemeral(&removed, &gateway("removed", "b:1"))
        .await
        .unwrap();
    // A second put updates the value in place.
    agent
        .put_ephemeral(&kept, &gateway("kept", "a:2"))
        .await
        .unwrap();
    let (bytes, stat) = raw.get_data(&kept).await.unwrap();
    assert_eq!(
        codec::decode::<GatewayRecord>(&kept, &bytes)
            .unwrap()
            .address,
        "a:2"
    );
    assert_eq!(stat.ephemeral_owner, agent.session_id());

    agent.remove_ephemeral(&removed).await.unwrap();
    assert!(raw.check_stat(&removed).await.unwrap().is_none());
    agent
        .remove_ephemeral(&removed)
        .await
        .expect("removing twice is fine");
    assert_eq!(
        agent.snapshot().load().revision,
        0,
        "no snapshot is kept without a watch"
    );

    expire_session(&proxy, &agent, &raw, &kept).await;
    second_session(&agent).await;
    assert_eq!(
        owner_of(&raw, &kept).await,
        Some(agent.session_id()),
        "a kept node is restored"
    );
    assert!(
        raw.check_stat(&removed).await.unwrap().is_none(),
        "a removed node is not restored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_run_withdraws_ephemerals_and_candidacy_at_once() {
    let zk = ZooKeeper::start().await;
    let root = unique_root();
    let mut registry = Running::start(registry_config(&zk, &root), Watch::Snapshot).await;
    let raw = observer(&zk, &root).await;
    let gw_path = paths::gateway("gw-1");
    registry
        .put_ephemeral(&gw_path, &gateway("gw-1", "a:1"))
        .await
        .unwrap();
    let name = registry.stand_for_leader(&candidate("cp-1")).await.unwrap();
    assert!(raw.check_stat(&gw_path).await.unwrap().is_some());
    assert_eq!(raw.list_children(paths::LEADER).await.unwrap(), [name]);

    registry.stop().await;
    assert!(
        raw.check_stat(&gw_path).await.unwrap().is_none(),
        "the gateway node is gone when run returns"
    );
    assert!(
        raw.list_children(paths::LEADER).await.unwrap().is_empty(),
        "the candidacy is gone"
    );
    assert!(!registry.is_leader());
}

// ----- election and fencing ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_leads_and_a_cancelled_leader_hands_over_at_once() {
    let zk = ZooKeeper::start().await;
    let config = registry_config(&zk, &unique_root());
    let mut first = Running::start(config.clone(), Watch::Snapshot).await;
    let second = Running::start(config, Watch::Snapshot).await;
    first.stand_for_leader(&candidate("cp-1")).await.unwrap();
    second.stand_for_leader(&candidate("cp-2")).await.unwrap();

    eventually(PROPAGATION, "both see the same leader", || async {
        let a = first.snapshot().load();
        let b = second.snapshot().load();
        a.candidates.len() == 2
            && b.candidates.len() == 2
            && a.leader().map(|l| l.0) == b.leader().map(|l| l.0)
    })
    .await;
    assert!(first.is_leader(), "the first candidate leads");
    assert!(!second.is_leader());
    assert_eq!(
        second.snapshot().load().leader().unwrap().1.value.id,
        "cp-1"
    );

    let path = paths::namespace("orders");
    second
        .create(&path, &namespace("orders", "nobody", 0))
        .await
        .unwrap();
    let fenced = second
        .set_fenced(&path, &namespace("orders", "cp-2", 1), 0)
        .await;
    assert!(
        matches!(fenced, Err(RegistryError::Fenced)),
        "a follower's fenced write: {fenced:?}"
    );
    let written = first
        .set_fenced(&path, &namespace("orders", "cp-1", 1), 0)
        .await
        .unwrap();
    assert_eq!(written.version, 1);
    let stale = first
        .set_fenced(&path, &namespace("orders", "cp-1", 2), 0)
        .await;
    assert!(
        matches!(stale, Err(RegistryError::Conflict { .. })),
        "the leader's stale write: {stale:?}"
    );
    let bystander = Registry::connect(
        registry_config(&zk, first.config().root.as_str()),
        Watch::None,
    )
    .await
    .unwrap();
    let not_standing = bystander
        .set_fenced(&path, &namespace("orders", "x", 9), 1)
        .await;
    assert!(
        matches!(not_standing, Err(RegistryError::Fenced)),
        "{not_standing:?}"
    );

    let started = Instant::now();
    first.stop().await;
    let took = eventually(SESSION_TIMEOUT, "the second takes over", || async {
        second.is_leader()
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a cancelled leader withdraws at once (took {took:?}), not after the session timeout"
    );
    assert!(!first.is_leader());
    second
        .set_fenced(&path, &namespace("orders", "cp-2", 2), 1)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_is_replaced_and_fenced_off() {
    init_tracing();
    let zk = ZooKeeper::start().await;
    let root = unique_root();
    let config = registry_config(&zk, &root);
    let proxy = TcpProxy::start(zk.address()).await;
    let cut_off = Running::start(
        registry_config_at(&proxy.connect_string(), &root),
        Watch::Snapshot,
    )
    .await;
    let other = Running::start(config, Watch::Snapshot).await;
    cut_off.stand_for_leader(&candidate("cp-1")).await.unwrap();
    other.stand_for_leader(&candidate("cp-2")).await.unwrap();
    eventually(PROPAGATION, "the first candidate leads", || async {
        cut_off.is_leader() && other.snapshot().load().candidates.len() == 2
    })
    .await;
    let path = paths::namespace("orders");
    other
        .create(&path, &namespace("orders", "nobody", 0))
        .await
        .unwrap();
    cut_off
        .set_fenced(&path, &namespace("orders", "cp-1", 1), 0)
        .await
        .unwrap();

    let partitioned = Instant::now();
    proxy.block();
    eventually(
        Duration::from_secs(2),
        "the cut-off leader stops claiming to lead",
        || async { !cut_off.is_leader() },
    )
    .await;
    eventually(
        SESSION_TIMEOUT + Duration::from_secs(2),
        "the other takes over",
        || async { other.is_leader() },
    )
    .await;
    assert!(
        partitioned.elapsed() >= SESSION_TIMEOUT / 2,
        "not before the old leader's session could expire"
    );
    other
        .set_fenced(&path, &namespace("orders", "cp-2", 2), 1)
        .await
        .unwrap();

    let refused = cut_off
        .set_fenced(&path, &namespace("orders", "cp-1", 3), 2)
        .await;
    assert!(
        refused.is_err(),
        "the old leader cannot write while cut off: {refused:?}"
    );

    proxy.unblock();
    second_session(&cut_off).await;
    assert!(
        !cut_off.is_leader(),
        "it stands again, behind the new leader"
    );
    let fenced = cut_off
        .set_fenced(&path, &namespace("orders", "cp-1", 3), 2)
        .await;
    assert!(matches!(fenced, Err(RegistryError::Fenced)), "{fenced:?}");
    let stored = other.get::<Namespace>(&path).await.unwrap().unwrap();
    assert_eq!(
        (stored.value.owner.as_str(), stored.version),
        ("cp-2", 2),
        "only the new leader's write landed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_force_expired_leader_is_fenced_until_re_elected() {
    init_tracing();
    let zk = ZooKeeper::start().await;
    let root = unique_root();
    let proxy = TcpProxy::start(zk.address()).await;
    let leader = Running::start(
        registry_config_at(&proxy.connect_string(), &root),
        Watch::Snapshot,
    )
    .await;
    let mut follower = Running::start(registry_config(&zk, &root), Watch::Snapshot).await;
    let raw = observer(&zk, &root).await;
    let leader_candidate = leader.stand_for_leader(&candidate("cp-1")).await.unwrap();
    follower.stand_for_leader(&candidate("cp-2")).await.unwrap();
    eventually(PROPAGATION, "the first candidate leads", || async {
        leader.is_leader() && follower.snapshot().load().candidates.len() == 2
    })
    .await;
    let path = paths::namespace("orders");
    leader
        .create(&path, &namespace("orders", "nobody", 0))
        .await
        .unwrap();
    leader
        .set_fenced(&path, &namespace("orders", "cp-1", 1), 0)
        .await
        .unwrap();

    // The session ends: the follower must take over, and the old leader's writes fail.
    leader
        .force_expiry()
        .await
        .expect("force_expiry ends the session");
    eventually(PROPAGATION, "the follower takes over", || async {
        follower.is_leader()
    })
    .await;
    assert!(
        raw.check_stat(&format!("{}/{leader_candidate}", paths::LEADER))
            .await
            .unwrap()
            .is_none()
    );
    let refused = leader
        .set_fenced(&path, &namespace("orders", "stale", 9), 1)
        .await;
    assert!(
        refused.is_err(),
        "a leader whose session ended cannot write: {refused:?}"
    );
    follower
        .set_fenced(&path, &namespace("orders", "cp-2", 2), 1)
        .await
        .unwrap();

    second_session(&leader).await;
    eventually(
        PROPAGATION,
        "it stands again, behind the new leader",
        || async { leader.snapshot().load().candidates.len() == 2 && !leader.is_leader() },
    )
    .await;
    let fenced = leader
        .set_fenced(&path, &namespace("orders", "stale", 9), 2)
        .await;
    assert!(matches!(fenced, Err(RegistryError::Fenced)), "{fenced:?}");

    follower.stop().await;
    eventually(
        Duration::from_secs(2),
        "the old leader is re-elected",
        || async { leader.is_leader() },
    )
    .await;
    let written = leader
        .set_fenced(&path, &namespace("orders", "cp-1", 3), 2)
        .await
        .unwrap();
    assert_eq!(written.version, 3);
    let stored = leader.get::<Namespace>(&path).await.unwrap().unwrap();
    assert_eq!(
        (stored.value.owner.as_str(), stored.value.revision),
        ("cp-1", 3),
        "no fenced-off write landed"
    );
}

// ----- start-up --------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_a_closed_port_fails_fast_naming_the_address() {
    let address = format!("127.0.0.1:{}", ports::free_port());
    let started = Instant::now();
    let result = Registry::connect(registry_config_at(&address, "/larder"), Watch::Snapshot).await;
    let took = started.elapsed();
    match result {
        Err(RegistryError::Unavailable(message)) => {
            assert!(message.contains(&address), "{message}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(took < Duration::from_secs(3), "took {took:?}");
}
