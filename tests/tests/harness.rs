//! The harness itself: the servers it starts behave as the other tests rely on.

use std::time::Duration;

use larder_tests::{Redis, RedisCluster, TcpProxy, ZooKeeper, eventually};
use redis::AsyncCommands;
use zookeeper_client as zk;

fn persistent() -> zk::CreateOptions<'static> {
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_keeps_its_data_across_kill_and_start_again() {
    let mut zk = ZooKeeper::start().await;
    assert_eq!(zk.four_letter_word("ruok").await.unwrap(), "imok");
    let client = zk.client().await;
    client.create("/kept", b"v1", &persistent()).await.unwrap();
    drop(client);

    zk.kill();
    assert!(!zk.is_running());
    assert!(
        zk.four_letter_word("ruok").await.is_err(),
        "nothing answers on the port of a killed server"
    );

    zk.start_again().await;
    let client = zk.client().await;
    let (data, _) = client.get_data("/kept").await.unwrap();
    assert_eq!(data, b"v1");

    zk.stop().await;
    assert!(!zk.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_zookeeper_answers_nothing_until_resumed() {
    let zk = ZooKeeper::start().await;
    zk.pause();
    let answer = zk.four_letter_word("ruok").await;
    assert!(
        answer.is_err(),
        "a paused server must not answer: {answer:?}"
    );
    zk.resume();
    eventually(
        Duration::from_secs(5),
        "the resumed server answers",
        || async { zk.four_letter_word("ruok").await.is_ok_and(|a| a == "imok") },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_proxy_cuts_its_clients_and_an_unblocked_one_forwards() {
    let zk = ZooKeeper::start().await;
    let proxy = TcpProxy::start(zk.address()).await;
    let through = zookeeper_client::Client::connector()
        .connect(&proxy.connect_string())
        .await
        .unwrap();
    through
        .create("/via-proxy", b"", &persistent())
        .await
        .unwrap();
    let mut state = through.state_watcher();

    proxy.block();
    let changed = tokio::time::timeout(Duration::from_secs(5), state.changed()).await;
    assert_eq!(
        changed.expect("the client notices the cut"),
        zk::SessionState::Disconnected
    );

    proxy.unblock();
    let back = tokio::time::timeout(Duration::from_secs(10), state.changed()).await;
    assert_eq!(
        back.expect("the client reconnects"),
        zk::SessionState::SyncConnected
    );
    assert!(through.check_stat("/via-proxy").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_follows_its_master() {
    let master = Redis::start().await;
    let replica = Redis::start_replica_of(&master).await;
    let mut on_master = master.connection().await;
    let _: () = on_master.set("greeting", "hello").await.unwrap();
    let mut on_replica = replica.connection().await;
    eventually(
        Duration::from_secs(5),
        "the replica has the master's write",
        || {
            let mut con = on_replica.clone();
            async move {
                con.get::<_, Option<String>>("greeting")
                    .await
                    .ok()
                    .flatten()
                    .as_deref()
                    == Some("hello")
            }
        },
    )
    .await;
    let refused: redis::RedisResult<()> = on_replica.set("greeting", "bye").await;
    assert!(refused.is_err(), "a replica refuses writes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_redis_comes_back_empty_on_the_same_port() {
    let mut redis = Redis::start().await;
    let port = redis.port();
    let mut con = redis.connection().await;
    let _: () = con.set("k", "v").await.unwrap();
    redis.kill();
    assert!(redis.query::<String>(&redis::cmd("PING")).await.is_err());
    redis.restart().await;
    assert_eq!(redis.port(), port);
    let mut con = redis.connection().await;
    let value: Option<String> = con.get("k").await.unwrap();
    assert_eq!(value, None, "nothing is kept on disk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_serves_every_slot_and_recovers_a_restarted_node() {
    let mut cluster = RedisCluster::start(3).await;
    let mut con = cluster.client().get_async_connection().await.unwrap();
    // Keys spread over the slots of all three masters.
    for i in 0..30 {
        let _: () = con.set(format!("key-{i}"), i).await.unwrap();
    }
    for i in 0..30 {
        let value: i64 = con.get(format!("key-{i}")).await.unwrap();
        assert_eq!(value, i);
    }
    for node in cluster.nodes() {
        let keys: i64 = node.query(&redis::cmd("DBSIZE")).await.unwrap();
        assert!(keys > 0, "{} holds some of the keys", node.address());
    }

    cluster.kill_node(2);
    let survivor = cluster.node(0);
    eventually(
        Duration::from_secs(10),
        "the survivors see the cluster fail",
        || async {
            survivor
                .query::<String>(redis::cmd("CLUSTER").arg("INFO"))
                .await
                .is_ok_and(|i| i.contains("cluster_state:fail"))
        },
    )
    .await;

    cluster.restart_node(2).await;
    let mut con = cluster.client().get_async_connection().await.unwrap();
    for i in 0..30 {
        let _: () = con.set(format!("after-{i}"), i).await.unwrap();
    }
}
