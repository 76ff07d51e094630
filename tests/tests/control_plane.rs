//! The admin API against real ZooKeeper and Redis: every resource's success and failure
//! paths, placement, concurrent reservations, namespace deletion in the background,
//! tokens, key rotation, the audit trail and the served OpenAPI document.

use std::time::Duration;

use larder_control_plane::api::{
    AuditQuery, CreateNamespace, IssueToken, LimitsPatch, RegisterCluster, TokenQuery, TokenState,
    UpdateNamespace,
};
use larder_control_plane::client::{Client, ClientError};
use larder_registry::auth::Permission;
use larder_registry::client::Watch;
use larder_registry::ledger::{Outcome, TokenRecord};
use larder_registry::model::{KeyState, Limits, NamespaceState, Revocation, Topology};
use larder_registry::{Registry, paths};
use larder_tests::platform::{self, Service};
use larder_tests::{Redis, RedisCluster, ZooKeeper, eventually, registry_config, unique_root};
use reqwest::StatusCode;

const MIB: u64 = 1 << 20;

/// The status and problem slug of a call expected to fail.
fn problem<T: std::fmt::Debug>(result: Result<T, ClientError>) -> (u16, String) {
    match result {
        Err(ClientError::Problem(p)) => (p.status, p.slug().to_owned()),
        other => panic!("expected a problem, got {other:?}"),
    }
}

fn standalone(name: &str, master: &Redis, capacity: u64) -> RegisterCluster {
    RegisterCluster {
        name: name.into(),
        topology: Topology::Standalone,
        endpoints: vec![master.address()],
        replicas: vec![],
        region: "local".into(),
        capacity_bytes: capacity,
        down_after_ms: None,
    }
}

fn namespace(name: &str, memory: u64) -> CreateNamespace {
    CreateNamespace {
        name: name.into(),
        owner: "team-test".into(),
        cluster: None,
        region: None,
        limits: Some(Limits {
            memory_bytes: memory,
            ..Limits::default()
        }),
        near_cache: None,
    }
}

fn token_request(perms: Vec<Permission>) -> IssueToken {
    IssueToken {
        subject: "svc".into(),
        permissions: perms,
        ttl_s: Some(600),
    }
}

async fn set_maxmemory(redis: &Redis, bytes: u64) {
    let () = redis
        .query(redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(bytes))
        .await
        .expect("CONFIG SET maxmemory");
}

/// Writes `count` keys of namespace `ns` straight into Redis.
async fn fill(redis: &Redis, ns: &str, count: usize) {
    let mut conn = redis.connection().await;
    for chunk in (0..count).collect::<Vec<_>>().chunks(500) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.cmd("SET")
                .arg(format!("larder:{ns}:k:key-{i}"))
                .arg("v".repeat(100))
                .ignore();
        }
        let () = pipe.query_async(&mut conn).await.expect("fill keys");
    }
}

/// How many keys of namespace `ns` are in Redis.
async fn count(redis: &Redis, ns: &str) -> usize {
    let mut conn = redis.connection().await;
    let mut cursor = 0u64;
    let mut total = 0;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("larder:{ns}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .unwrap();
        total += keys.len();
        cursor = next;
        if cursor == 0 {
            return total;
        }
    }
}

struct Platform {
    zk: ZooKeeper,
    root: String,
    keys: tempfile::TempDir,
    cp: Service,
    admin: Client,
}

impl Platform {
    async fn start(configure: impl FnOnce(&mut larder_control_plane::Config)) -> Platform {
        larder_tests::init_tracing();
        let zk = ZooKeeper::start().await;
        let root = unique_root();
        let keys = tempfile::tempdir().unwrap();
        let cp = platform::control_plane_with(&zk, &root, keys.path(), configure).await;
        let admin = platform::admin(&cp, keys.path());
        Platform {
            zk,
            root,
            keys,
            cp,
            admin,
        }
    }

    async fn registry(&self) -> Registry {
        Registry::connect(registry_config(&self.zk, &self.root), Watch::None)
            .await
            .expect("registry")
    }

    /// A raw admin request, for what the typed client cannot send.
    async fn raw(&self, method: reqwest::Method, path: &str, body: &str) -> reqwest::Response {
        reqwest::Client::new()
            .request(method, format!("{}{path}", self.cp.url))
            .bearer_auth(platform::admin_token(self.keys.path()))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_are_checked_live_listed_and_deregistered() {
    let p = Platform::start(|c| c.redis_timeout_ms = 500).await;
    let master = Redis::start().await;
    let replica = Redis::start_replica_of(&master).await;
    set_maxmemory(&master, 256 * MIB).await;

    // Registration checks the deployment and reports what it found.
    let mut request = standalone("main", &master, 128 * MIB);
    request.replicas = vec![replica.address()];
    let registered = p.admin.register_cluster(&request).await.expect("registers");
    assert_eq!(
        registered.redis_version.as_deref().map(|v| !v.is_empty()),
        Some(true)
    );
    assert_eq!(registered.maxmemory_bytes, Some(256 * MIB));
    // The same request again is the same registration; another spec is a conflict.
    let again = p.admin.register_cluster(&request).await.expect("repeat");
    assert_eq!(again.cluster, registered.cluster);
    let mut other = request.clone();
    other.region = "eu".into();
    assert_eq!(
        problem(p.admin.register_cluster(&other).await),
        (409, "conflict".into())
    );

    // What is refused, with a reason that names the problem.
    let refused = |r: Result<_, ClientError>, needle: &str| match r {
        Err(ClientError::Problem(p)) => {
            assert_eq!(p.status, 422, "{p:?}");
            assert_eq!(p.slug(), "deployment-check-failed");
            let detail = p.detail.unwrap_or_default();
            assert!(detail.contains(needle), "{needle:?} not in {detail:?}");
        }
        other => panic!("expected 422, got {other:?}"),
    };
    let mut too_big = standalone("toobig", &master, 512 * MIB);
    too_big.replicas = vec![replica.address()];
    refused(
        p.admin.register_cluster(&too_big).await,
        "exceeds the deployment's maxmemory",
    );
    refused(
        p.admin
            .register_cluster(&standalone("wrongrole", &replica, MIB))
            .await,
        "role is slave",
    );
    let stranger = Redis::start().await;
    let mut replica_of_nothing = standalone("wrongreplica", &master, MIB);
    replica_of_nothing.replicas = vec![stranger.address()];
    refused(
        p.admin.register_cluster(&replica_of_nothing).await,
        "declared a replica",
    );
    // A port that speaks HTTP, and one that speaks ZooKeeper: not Redis.
    let http_port = p.cp.url.trim_start_matches("http://").to_owned();
    let mut not_redis = standalone("http", &master, MIB);
    not_redis.endpoints = vec![http_port];
    refused(p.admin.register_cluster(&not_redis).await, "");
    let mut zk_port = standalone("zk", &master, MIB);
    zk_port.endpoints = vec![p.zk.connect_string()];
    refused(p.admin.register_cluster(&zk_port).await, "");
    let closed = format!("127.0.0.1:{}", larder_tests::ports::free_port());
    let mut unreachable = standalone("closed", &master, MIB);
    unreachable.endpoints = vec![closed.clone()];
    refused(p.admin.register_cluster(&unreachable).await, &closed);
    // Wrong topology both ways.
    let mut as_cluster = standalone("ascluster", &master, MIB);
    as_cluster.topology = Topology::Cluster;
    refused(
        p.admin.register_cluster(&as_cluster).await,
        "not in cluster mode",
    );
    let shards = RedisCluster::start(3).await;
    let mut as_standalone = standalone("asstandalone", &master, MIB);
    as_standalone.endpoints = vec![shards.addresses()[0].clone()];
    refused(
        p.admin.register_cluster(&as_standalone).await,
        "cluster mode",
    );
    let cluster = RegisterCluster {
        name: "shards".into(),
        topology: Topology::Cluster,
        endpoints: vec![shards.addresses()[0].clone()],
        replicas: vec![],
        region: "eu".into(),
        capacity_bytes: 64 * MIB,
        down_after_ms: Some(5_000),
    };
    let shards_view = p
        .admin
        .register_cluster(&cluster)
        .await
        .expect("Redis Cluster registers");
    assert!(
        shards_view
            .warnings
            .iter()
            .any(|w| w.contains("no maxmemory")),
        "{:?}",
        shards_view.warnings
    );
    // Malformed requests are 400.
    for bad in [
        standalone("Bad_Name", &master, MIB),
        RegisterCluster {
            endpoints: vec!["nohost".into()],
            ..standalone("x1", &master, MIB)
        },
        standalone("zero", &master, 0),
    ] {
        assert_eq!(
            problem(p.admin.register_cluster(&bad).await).0,
            400,
            "{bad:?}"
        );
    }
    let r = p
        .raw(
            reqwest::Method::POST,
            "/v1/clusters",
            r#"{"name":"x2","topology":"standalone","endpoints":["127.0.0.1:1"],"capacity_bytes":1,"colour":"red"}"#,
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Listed and shown; unknown ones are 404.
    let names: Vec<String> = p
        .admin
        .clusters()
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|c| c.cluster.name)
        .collect();
    assert_eq!(names, ["main", "shards"]);
    assert_eq!(
        p.admin.cluster("shards").await.unwrap().cluster.region,
        "eu"
    );
    assert_eq!(
        problem(p.admin.cluster("nope").await),
        (404, "not-found".into())
    );

    // A deployment holding a namespace cannot be deregistered.
    p.admin
        .create_namespace(&CreateNamespace {
            cluster: Some("main".into()),
            ..namespace("holder", MIB)
        })
        .await
        .unwrap();
    assert_eq!(problem(p.admin.deregister_cluster("main").await).0, 409);
    p.admin
        .deregister_cluster("shards")
        .await
        .expect("empty deployment goes");
    assert_eq!(problem(p.admin.cluster("shards").await).0, 404);
    assert_eq!(problem(p.admin.deregister_cluster("shards").await).0, 404);
    p.admin.delete_namespace("holder").await.unwrap();
    eventually(
        Duration::from_secs(10),
        "the namespace is deleted",
        || async { p.admin.namespace("holder").await.is_err() },
    )
    .await;
    p.admin
        .deregister_cluster("main")
        .await
        .expect("now it goes");
    assert!(p.admin.clusters().await.unwrap().items.is_empty());

    // Without a token nothing is done.
    let anonymous = Client::new(&p.cp.url, None);
    assert_eq!(problem(anonymous.register_cluster(&request).await).0, 401);
    assert_eq!(problem(anonymous.clusters().await).0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_prefers_healthy_roomy_clusters_and_reserves_capacity_atomically() {
    let p = Platform::start(|_| {}).await;
    let (a, b, c) = (
        Redis::start().await,
        Redis::start().await,
        Redis::start().await,
    );
    p.admin
        .register_cluster(&standalone("small", &a, 100 * MIB))
        .await
        .unwrap();
    p.admin
        .register_cluster(&standalone("big", &b, 400 * MIB))
        .await
        .unwrap();
    p.admin
        .register_cluster(&RegisterCluster {
            region: "eu".into(),
            ..standalone("europe", &c, 100 * MIB)
        })
        .await
        .unwrap();

    // No agent reports yet: the one with the most room wins.
    let placed = p
        .admin
        .create_namespace(&namespace("first", 10 * MIB))
        .await
        .unwrap();
    assert_eq!(placed.namespace.cluster, "big");
    // A healthy deployment is preferred over ones nobody reports on.
    let agent = platform::agent(&p.zk, &p.root, &[("small", a.address())]).await;
    eventually(Duration::from_secs(10), "small reports healthy", || async {
        p.admin
            .cluster("small")
            .await
            .is_ok_and(|c| c.status == larder_control_plane::api::HealthStatus::Ok)
    })
    .await;
    let placed = p
        .admin
        .create_namespace(&namespace("second", 10 * MIB))
        .await
        .unwrap();
    assert_eq!(placed.namespace.cluster, "small");
    // A region narrows the choice; an explicit cluster is taken as is.
    let mut in_eu = namespace("third", 10 * MIB);
    in_eu.region = Some("eu".into());
    assert_eq!(
        p.admin
            .create_namespace(&in_eu)
            .await
            .unwrap()
            .namespace
            .cluster,
        "europe"
    );
    let mut pinned = namespace("fourth", 10 * MIB);
    pinned.cluster = Some("big".into());
    assert_eq!(
        p.admin
            .create_namespace(&pinned)
            .await
            .unwrap()
            .namespace
            .cluster,
        "big"
    );
    agent.stop().await.unwrap();

    // What cannot be placed, and why.
    let mut nowhere = namespace("nowhere", MIB);
    nowhere.region = Some("mars".into());
    assert_eq!(
        problem(p.admin.create_namespace(&nowhere).await),
        (409, "no-placement".into())
    );
    assert_eq!(
        problem(p.admin.create_namespace(&namespace("huge", 1 << 40)).await),
        (409, "capacity-exhausted".into())
    );
    let mut unknown = namespace("unknown", MIB);
    unknown.cluster = Some("nope".into());
    assert_eq!(problem(p.admin.create_namespace(&unknown).await).0, 422);
    let mut wrong_region = namespace("wrongregion", MIB);
    wrong_region.cluster = Some("big".into());
    wrong_region.region = Some("eu".into());
    assert_eq!(
        problem(p.admin.create_namespace(&wrong_region).await).0,
        422
    );
    let mut full = namespace("full", 200 * MIB);
    full.cluster = Some("small".into());
    assert_eq!(
        problem(p.admin.create_namespace(&full).await),
        (409, "capacity-exhausted".into())
    );

    // Bad names and limits are 400; duplicates are the same result or 409.
    for bad in ["A", "x", "has_underscore", "-dash", "a:b", "a*", "ä-b"] {
        assert_eq!(
            problem(p.admin.create_namespace(&namespace(bad, MIB)).await).0,
            400,
            "{bad}"
        );
    }
    let mut bad_limits = namespace("badlimits", MIB);
    bad_limits.limits.as_mut().unwrap().max_value_bytes = 0;
    assert_eq!(problem(p.admin.create_namespace(&bad_limits).await).0, 400);
    let again = p
        .admin
        .create_namespace(&namespace("first", 10 * MIB))
        .await
        .unwrap();
    assert_eq!(again.namespace.cluster, "big");
    assert_eq!(again.namespace.revision, 1);
    assert_eq!(
        problem(
            p.admin
                .create_namespace(&namespace("first", 20 * MIB))
                .await
        ),
        (409, "conflict".into())
    );

    // Ten concurrent creates, each needing 40 MiB of the 90 MiB left on "small": exactly
    // two fit, whatever the interleaving.
    let left = p.admin.cluster("small").await.unwrap();
    assert_eq!(left.reserved_bytes, 10 * MIB);
    let mut attempts = Vec::new();
    for i in 0..10 {
        let admin = p.admin.clone();
        attempts.push(tokio::spawn(async move {
            let mut request = namespace(&format!("race-{i}"), 40 * MIB);
            request.cluster = Some("small".into());
            admin.create_namespace(&request).await
        }));
    }
    let mut created = 0;
    for a in attempts {
        match a.await.unwrap() {
            Ok(_) => created += 1,
            Err(e) => assert_eq!(problem::<()>(Err(e)), (409, "capacity-exhausted".into())),
        }
    }
    assert_eq!(created, 2);
    let small = p.admin.cluster("small").await.unwrap();
    assert_eq!(small.reserved_bytes, 90 * MIB);
    assert!(small.reserved_bytes <= small.cluster.capacity_bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_update_disable_show_usage_and_delete_in_the_background() {
    let p = Platform::start(|c| {
        c.background.tick_ms = 100;
        c.background.deletion_batch_keys = 100;
        c.usage.cache_ms = 0;
    })
    .await;
    let master = Redis::start().await;
    p.admin
        .register_cluster(&standalone("main", &master, 512 * MIB))
        .await
        .unwrap();
    p.admin
        .create_namespace(&namespace("orders", 64 * MIB))
        .await
        .unwrap();
    p.admin
        .create_namespace(&namespace("orders-2", 64 * MIB))
        .await
        .unwrap();

    // Usage: keys and memory from a scan of the deployment.
    fill(&master, "orders", 1_200).await;
    fill(&master, "orders-2", 50).await;
    let shown = p.admin.namespace("orders").await.unwrap();
    let usage = shown.usage.expect("usage shown");
    assert_eq!((usage.keys, usage.exact), (1_200, true), "{usage:?}");
    assert!(usage.memory_bytes > 1_200 * 100, "{usage:?}");
    let listed = p.admin.namespaces().await.unwrap();
    let other = listed
        .items
        .iter()
        .find(|n| n.namespace.name == "orders-2")
        .unwrap();
    assert_eq!(other.usage.as_ref().map(|u| u.keys), Some(50));

    // Limits change with a raised revision; invalid changes are refused.
    let update = UpdateNamespace {
        limits: Some(LimitsPatch {
            max_value_bytes: Some(2048),
            default_ttl_s: Some(Some(600)),
            ..Default::default()
        }),
        ..Default::default()
    };
    let updated = p.admin.update_namespace("orders", &update).await.unwrap();
    assert_eq!(updated.namespace.limits.max_value_bytes, 2048);
    assert_eq!(updated.namespace.limits.default_ttl_s, Some(600));
    assert_eq!(updated.namespace.revision, 2);
    let same = p.admin.update_namespace("orders", &update).await.unwrap();
    assert_eq!(same.namespace.revision, 2, "no change, no new revision");
    let clear_ttl = UpdateNamespace {
        limits: Some(LimitsPatch {
            default_ttl_s: Some(None),
            ..Default::default()
        }),
        ..Default::default()
    };
    let cleared = p
        .admin
        .update_namespace("orders", &clear_ttl)
        .await
        .unwrap();
    assert_eq!(cleared.namespace.limits.default_ttl_s, None);
    let bad = UpdateNamespace {
        limits: Some(LimitsPatch {
            ops_per_sec: Some(0),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(
        problem(p.admin.update_namespace("orders", &bad).await).0,
        400
    );
    let greedy = UpdateNamespace {
        limits: Some(LimitsPatch {
            memory_bytes: Some(1 << 40),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(
        problem(p.admin.update_namespace("orders", &greedy).await),
        (409, "capacity-exhausted".into())
    );
    assert_eq!(
        problem(p.admin.update_namespace("nope", &update).await).0,
        404
    );
    let r = p
        .raw(
            reqwest::Method::PATCH,
            "/v1/namespaces/orders",
            r#"{"limits":{"max_value":1}}"#,
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Disable and enable, both idempotent.
    let disabled = p.admin.disable_namespace("orders").await.unwrap();
    assert_eq!(disabled.namespace.state, NamespaceState::Disabled);
    let again = p.admin.disable_namespace("orders").await.unwrap();
    assert_eq!(again.namespace.revision, disabled.namespace.revision);
    let enabled = p.admin.enable_namespace("orders").await.unwrap();
    assert_eq!(enabled.namespace.state, NamespaceState::Active);
    assert_eq!(problem(p.admin.enable_namespace("nope").await).0, 404);

    // Delete: at once `deleting`, keys removed in batches, tokens revoked, then gone.
    let token = p
        .admin
        .issue_token("orders", &token_request(vec![Permission::Read]))
        .await
        .unwrap();
    let deleting = p.admin.delete_namespace("orders").await.unwrap();
    assert_eq!(deleting.namespace.state, NamespaceState::Deleting);
    let repeat = p.admin.delete_namespace("orders").await.unwrap();
    assert_eq!(repeat.namespace.state, NamespaceState::Deleting);
    assert_eq!(problem(p.admin.disable_namespace("orders").await).0, 409);
    assert_eq!(
        problem(p.admin.update_namespace("orders", &update).await).0,
        409
    );
    assert_eq!(
        problem(
            p.admin
                .issue_token("orders", &token_request(vec![Permission::Read]))
                .await
        )
        .0,
        409
    );
    assert_eq!(
        problem(
            p.admin
                .create_namespace(&namespace("orders", 64 * MIB))
                .await
        )
        .0,
        409
    );
    let took = eventually(Duration::from_secs(20), "orders is deleted", || async {
        matches!(p.admin.namespace("orders").await, Err(ClientError::Problem(p)) if p.status == 404)
    })
    .await;
    println!("deleting 1200 keys in batches of 100 took {took:?}");
    assert_eq!(count(&master, "orders").await, 0);
    assert_eq!(
        count(&master, "orders-2").await,
        50,
        "other namespaces keep their keys"
    );
    assert_eq!(
        p.admin.token(&token.jti).await.unwrap().state,
        TokenState::Revoked
    );
    let registry = p.registry().await;
    assert!(
        registry
            .children(paths::DELETIONS)
            .await
            .unwrap()
            .is_empty()
    );
    // The name is free again.
    let recreated = p
        .admin
        .create_namespace(&namespace("orders", 64 * MIB))
        .await
        .unwrap();
    assert_eq!(recreated.namespace.state, NamespaceState::Active);
    assert_eq!(problem(p.admin.delete_namespace("nope").await).0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_listed_without_secrets_revoked_idempotent_and_pruned() {
    let p = Platform::start(|c| {
        c.background.tick_ms = 100;
        c.background.prune_interval_ms = 200;
    })
    .await;
    let master = Redis::start().await;
    p.admin
        .register_cluster(&standalone("main", &master, 512 * MIB))
        .await
        .unwrap();
    for ns in ["orders", "stock"] {
        p.admin.create_namespace(&namespace(ns, MIB)).await.unwrap();
    }
    let one = p
        .admin
        .issue_token(
            "orders",
            &token_request(vec![Permission::Read, Permission::Write]),
        )
        .await
        .unwrap();
    let two = p
        .admin
        .issue_token("stock", &token_request(vec![Permission::Queue]))
        .await
        .unwrap();
    assert_ne!(one.jti, two.jti);

    // Listing shows metadata, never the token.
    let all = p.admin.tokens(&TokenQuery::default()).await.unwrap();
    assert_eq!(all.items.len(), 2);
    let page = p
        .raw(reqwest::Method::GET, "/v1/tokens", "")
        .await
        .text()
        .await
        .unwrap();
    assert!(!page.contains(&one.token) && !page.contains(one.token.split('.').nth(2).unwrap()));
    let orders = p
        .admin
        .tokens(&TokenQuery {
            namespace: Some("orders".into()),
            all: None,
        })
        .await
        .unwrap();
    assert_eq!(orders.items.len(), 1);
    assert_eq!(orders.items[0].jti, one.jti);
    assert_eq!(
        orders.items[0].permissions,
        [Permission::Read, Permission::Write]
    );
    assert_eq!(orders.items[0].issued_by, "test-admin");
    let r = p
        .raw(reqwest::Method::GET, "/v1/namespaces/stock/tokens", "")
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["items"][0]["jti"], two.jti.as_str());
    assert_eq!(body["items"].as_array().unwrap().len(), 1);
    let r = p
        .raw(
            reqwest::Method::GET,
            "/v1/namespaces/stock/tokens?all=maybe",
            "",
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        p.admin.token(&one.jti).await.unwrap().state,
        TokenState::Active
    );
    assert_eq!(problem(p.admin.token("nope").await).0, 404);
    assert_eq!(problem(p.admin.token("bad%2Fid").await).0, 400);

    // Revocation; again is harmless; unknown ids are 404.
    let revoked = p.admin.revoke_token(&one.jti).await.unwrap();
    assert_eq!(revoked.state, TokenState::Revoked);
    assert_eq!(revoked.revoked_by.as_deref(), Some("test-admin"));
    assert_eq!(
        p.admin.revoke_token(&one.jti).await.unwrap().state,
        TokenState::Revoked
    );
    assert_eq!(problem(p.admin.revoke_token("nope").await).0, 404);
    let active = p.admin.tokens(&TokenQuery::default()).await.unwrap();
    assert_eq!(
        active.items.len(),
        1,
        "revoked tokens are hidden unless asked for"
    );
    let everything = p
        .admin
        .tokens(&TokenQuery {
            namespace: None,
            all: Some(true),
        })
        .await
        .unwrap();
    assert_eq!(everything.items.len(), 2);

    // An Idempotency-Key makes a retry return the very same token.
    let request = token_request(vec![Permission::Read]);
    let first = p
        .admin
        .issue_token_idempotent("orders", &request, "deploy-42")
        .await
        .unwrap();
    let retry = p
        .admin
        .issue_token_idempotent("orders", &request, "deploy-42")
        .await
        .unwrap();
    assert_eq!(first, retry);
    let other_body = IssueToken {
        subject: "someone-else".into(),
        ..request.clone()
    };
    assert_eq!(
        problem(
            p.admin
                .issue_token_idempotent("orders", &other_body, "deploy-42")
                .await
        )
        .0,
        409
    );

    // Bad requests.
    assert_eq!(problem(p.admin.issue_token("nope", &request).await).0, 404);
    assert_eq!(
        problem(p.admin.issue_token("orders", &token_request(vec![])).await).0,
        400
    );
    assert_eq!(
        problem(
            p.admin
                .issue_token(
                    "orders",
                    &IssueToken {
                        ttl_s: Some(100 * 365 * 24 * 3600),
                        ..request.clone()
                    }
                )
                .await
        )
        .0,
        400
    );

    // The leader prunes revocations and token records once their token has expired
    // (beyond the verifiers' clock leeway).
    let registry = p.registry().await;
    let long_ago = larder_registry::now_ms() / 1000 - 3_600;
    let expired = TokenRecord {
        expires_at: long_ago,
        issued_at: long_ago - 60,
        ..registry
            .get::<TokenRecord>(&paths::token(&two.jti))
            .await
            .unwrap()
            .unwrap()
            .value
    };
    registry
        .create(
            &paths::token("expired1"),
            &TokenRecord {
                jti: "expired1".into(),
                ..expired.clone()
            },
        )
        .await
        .unwrap();
    registry
        .create(
            &paths::revoked("expired1"),
            &Revocation {
                jti: "expired1".into(),
                expires_at: long_ago,
                revoked_at_ms: 0,
            },
        )
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "expired records are pruned",
        || async {
            registry
                .get::<TokenRecord>(&paths::token("expired1"))
                .await
                .unwrap()
                .is_none()
                && registry
                    .get::<Revocation>(&paths::revoked("expired1"))
                    .await
                    .unwrap()
                    .is_none()
        },
    )
    .await;
    // Live ones stay.
    assert!(
        registry
            .get::<Revocation>(&paths::revoked(&one.jti))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        registry
            .get::<TokenRecord>(&paths::token(&two.jti))
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_keys_sign_old_ones_verify_until_retired_across_instances() {
    let p = Platform::start(|_| {}).await;
    let master = Redis::start().await;
    let gw = platform::gateway(&p.zk, &p.root).await;
    p.admin
        .register_cluster(&standalone("main", &master, 512 * MIB))
        .await
        .unwrap();
    p.admin
        .create_namespace(&namespace("orders", MIB))
        .await
        .unwrap();
    // A second instance sharing the key directory.
    let cp2 = platform::control_plane(&p.zk, &p.root, p.keys.path()).await;
    let admin2 = platform::admin(&cp2, p.keys.path());

    let old = p.admin.keys().await.unwrap().items;
    assert_eq!(old.len(), 1);
    assert!(old[0].signing && old[0].held_here);
    let old_kid = old[0].kid.clone();
    let old_admin = p.admin.clone();
    let tenant_old = p
        .admin
        .issue_token("orders", &token_request(vec![Permission::Read]))
        .await
        .unwrap();
    assert_eq!(tenant_old.kid, old_kid);

    let http = reqwest::Client::new();
    let gateway_status = |token: String| {
        let http = http.clone();
        let url = format!("{}/v1/namespaces/orders/keys/k", gw.url);
        async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(
        gateway_status(tenant_old.token.clone()).await,
        StatusCode::NOT_FOUND
    );

    // Rotate on one instance; the other signs with the new key too.
    let new = p.admin.rotate_key().await.unwrap();
    assert_ne!(new.kid, old_kid);
    assert!(new.signing && new.state == KeyState::Active);
    let tenant_new = admin2
        .issue_token("orders", &token_request(vec![Permission::Read]))
        .await
        .unwrap();
    assert_eq!(
        tenant_new.kid, new.kid,
        "the other instance signs with the rotated key"
    );
    // Tokens of the old key keep verifying until it is retired.
    assert_eq!(
        gateway_status(tenant_old.token.clone()).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        gateway_status(tenant_new.token.clone()).await,
        StatusCode::NOT_FOUND
    );
    assert!(old_admin.clusters().await.is_ok());

    // The signing key cannot be retired; unknown keys are 404.
    assert_eq!(problem(p.admin.retire_key(&new.kid).await).0, 409);
    assert_eq!(problem(p.admin.retire_key("k-unknown").await).0, 404);
    let retired = p.admin.retire_key(&old_kid).await.unwrap();
    assert_eq!(retired.state, KeyState::Retired);
    // Old tokens stop working everywhere, admin ones included; new ones keep working.
    eventually(
        Duration::from_secs(5),
        "the gateway refuses the old key",
        || async { gateway_status(tenant_old.token.clone()).await == StatusCode::UNAUTHORIZED },
    )
    .await;
    assert_eq!(
        gateway_status(tenant_new.token.clone()).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(problem(old_admin.clusters().await).0, 401);
    let fresh = platform::admin(&p.cp, p.keys.path());
    assert!(
        fresh.clusters().await.is_ok(),
        "admin-token signs with the newest key"
    );
    let keys = fresh.keys().await.unwrap().items;
    assert_eq!(keys.len(), 2);
    drop(cp2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mutation_is_audited_queryable_and_kept_across_restarts() {
    let p = Platform::start(|c| c.background.tick_ms = 100).await;
    let master = Redis::start().await;
    let admin = &p.admin;
    admin
        .register_cluster(&standalone("main", &master, 512 * MIB))
        .await
        .unwrap();
    let _ = admin
        .register_cluster(&standalone("Bad", &master, MIB))
        .await;
    admin
        .create_namespace(&namespace("orders", MIB))
        .await
        .unwrap();
    let _ = admin.create_namespace(&namespace("orders", 2 * MIB)).await;
    admin
        .update_namespace(
            "orders",
            &UpdateNamespace {
                owner: Some("team-b".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    admin.disable_namespace("orders").await.unwrap();
    admin.enable_namespace("orders").await.unwrap();
    let token = admin
        .issue_token("orders", &token_request(vec![Permission::Read]))
        .await
        .unwrap();
    admin.revoke_token(&token.jti).await.unwrap();
    let key = admin.rotate_key().await.unwrap();
    let old_kid = admin
        .keys()
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|k| k.kid != key.kid)
        .unwrap()
        .kid;
    // Sign the rest with the new key, so retiring the old one keeps us in.
    let admin = platform::admin(&p.cp, p.keys.path());
    admin.retire_key(&old_kid).await.unwrap();
    admin.delete_namespace("orders").await.unwrap();
    eventually(Duration::from_secs(10), "orders is deleted", || async {
        admin.namespace("orders").await.is_err()
    })
    .await;
    admin.deregister_cluster("main").await.unwrap();
    // Unauthenticated attempts are refused and leave no trace.
    let _ = Client::new(&p.cp.url, None).rotate_key().await;

    let revoke_target = format!("token/{}", token.jti);
    let retire_target = format!("key/{old_kid}");
    let expected = [
        ("cluster.register", "cluster/main", Outcome::Ok),
        ("cluster.register", "cluster/Bad", Outcome::Error),
        ("namespace.create", "namespace/orders", Outcome::Ok),
        ("namespace.create", "namespace/orders", Outcome::Error),
        ("namespace.update", "namespace/orders", Outcome::Ok),
        ("namespace.disable", "namespace/orders", Outcome::Ok),
        ("namespace.enable", "namespace/orders", Outcome::Ok),
        ("token.issue", "namespace/orders", Outcome::Ok),
        ("token.revoke", revoke_target.as_str(), Outcome::Ok),
        ("key.rotate", "keys", Outcome::Ok),
        ("key.retire", retire_target.as_str(), Outcome::Ok),
        ("namespace.delete", "namespace/orders", Outcome::Ok),
        ("namespace.deleted", "namespace/orders", Outcome::Ok),
        ("cluster.deregister", "cluster/main", Outcome::Ok),
    ];
    let check = |page: &larder_control_plane::api::AuditPage| {
        let mut got: Vec<_> = page
            .items
            .iter()
            .map(|r| {
                (
                    r.entry.action.clone(),
                    r.entry.target.clone(),
                    r.entry.outcome,
                )
            })
            .collect();
        got.reverse();
        let want: Vec<_> = expected
            .iter()
            .map(|(a, t, o)| ((*a).to_owned(), (*t).to_owned(), *o))
            .collect();
        assert_eq!(got, want);
        for r in &page.items {
            let e = &r.entry;
            let expected_actor = if e.action == "namespace.deleted" {
                "system"
            } else {
                "test-admin"
            };
            assert_eq!(e.actor, expected_actor, "{e:?}");
            assert!(e.at_ms > 0 && !e.instance.is_empty());
        }
    };
    let page = admin
        .audit(&AuditQuery {
            limit: Some(100),
            ..Default::default()
        })
        .await
        .unwrap();
    check(&page);
    assert!(page.next.is_none());
    // Failures carry the problem; successes the request and a note; no secret recorded.
    let failed = &page
        .items
        .iter()
        .find(|r| r.entry.target == "cluster/Bad")
        .unwrap()
        .entry;
    assert_eq!(failed.status, 400);
    assert!(failed.detail.as_deref().unwrap().contains("cluster name"));
    let issued = &page
        .items
        .iter()
        .find(|r| r.entry.action == "token.issue")
        .unwrap()
        .entry;
    assert_eq!(issued.status, 201);
    assert!(issued.detail.as_deref().unwrap().contains(&token.jti));
    assert_eq!(issued.request.as_ref().unwrap()["subject"], "svc");
    let all_text = serde_json::to_string(&page).unwrap();
    assert!(!all_text.contains(&token.token));

    // Filters and paging.
    let errors = admin
        .audit(&AuditQuery {
            outcome: Some("error".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(errors.items.len(), 2);
    let namespace_ops = admin
        .audit(&AuditQuery {
            action: Some("namespace.".into()),
            target: Some("namespace/orders".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(namespace_ops.items.len(), 7);
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = admin
            .audit(&AuditQuery {
                limit: Some(4),
                before: before.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        seen.extend(page.items.iter().map(|r| r.id.clone()));
        match page.next {
            Some(n) => before = Some(n),
            None => break,
        }
    }
    assert_eq!(seen.len(), expected.len());
    let r = p
        .raw(reqwest::Method::GET, "/v1/audit?colour=red", "")
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = p.raw(reqwest::Method::GET, "/v1/audit?limit=0", "").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Another instance, after this one is gone, reads the same trail.
    let Platform {
        zk, root, keys, cp, ..
    } = p;
    cp.stop().await.unwrap();
    let cp = platform::control_plane(&zk, &root, keys.path()).await;
    let page = platform::admin(&cp, keys.path())
        .audit(&AuditQuery {
            limit: Some(100),
            ..Default::default()
        })
        .await
        .unwrap();
    check(&page);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_and_swagger_ui_are_served() {
    let p = Platform::start(|_| {}).await;
    let http = reqwest::Client::new();
    let served: serde_json::Value = http
        .get(format!("{}/openapi.json", p.cp.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let committed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi/control-plane.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(served, committed);
    for path in [
        "/v1/namespaces/{name}",
        "/v1/tokens/{jti}/revoke",
        "/v1/audit",
    ] {
        assert!(served["paths"][path].is_object(), "{path} documented");
    }
    let docs = http
        .get(format!("{}/docs/", p.cp.url))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(docs.text().await.unwrap().contains("swagger"));
    // Unknown routes are problems too.
    let r = http
        .get(format!("{}/v2/nothing", p.cp.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
}
