//! The platform end to end: the control plane registers real Redis deployments and a
//! namespace and issues a tenant token; the gateway serves PUT, GET and DELETE with that
//! token on both topologies; the agent publishes its node's health as an ephemeral znode.

use std::time::Duration;

use larder_control_plane::api::{CreateNamespace, HealthStatus, IssueToken, RegisterCluster};
use larder_control_plane::client::ClientError;
use larder_registry::auth::Permission;
use larder_registry::model::{Role, Topology};
use larder_tests::platform;
use larder_tests::{Redis, RedisCluster, ZooKeeper, eventually, unique_root};
use reqwest::StatusCode;

const CAPACITY: u64 = 256 << 20;

/// The status and problem slug of a call expected to fail.
fn status<T>(result: Result<T, ClientError>) -> (u16, String) {
    match result {
        Err(ClientError::Problem(p)) => (p.status, p.slug().to_owned()),
        Err(e) => panic!("expected a problem, got {e}"),
        Ok(_) => panic!("expected a problem, got success"),
    }
}

struct Tenant {
    http: reqwest::Client,
    gateway: String,
    token: String,
}

impl Tenant {
    fn url(&self, ns: &str, key: &str) -> String {
        format!("{}/v1/namespaces/{ns}/keys/{key}", self.gateway)
    }

    async fn put(&self, ns: &str, key: &str, body: &'static str) -> reqwest::Response {
        self.http
            .put(self.url(ns, key))
            .bearer_auth(&self.token)
            .header("content-type", "text/plain; charset=utf-8")
            .body(body)
            .send()
            .await
            .expect("gateway answers")
    }

    async fn get(&self, ns: &str, key: &str) -> reqwest::Response {
        self.http
            .get(self.url(ns, key))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("gateway answers")
    }

    async fn delete(&self, ns: &str, key: &str) -> reqwest::Response {
        self.http
            .delete(self.url(ns, key))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("gateway answers")
    }
}

async fn problem_type(response: reqwest::Response) -> String {
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let body: serde_json::Value = response.json().await.expect("problem body is JSON");
    body["type"]
        .as_str()
        .unwrap_or_default()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Reads, writes and deletes through the gateway and checks what landed in Redis.
async fn exercise(
    tenant: &Tenant,
    ns: &str,
    raw: impl Fn(Vec<u8>) -> tokio::task::JoinHandle<Option<Vec<u8>>>,
) {
    let put = tenant.put(ns, "greeting", "hello larder").await;
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    let etag = put
        .headers()
        .get("etag")
        .expect("PUT returns an ETag")
        .to_str()
        .unwrap()
        .to_owned();

    let got = tenant.get(ns, "greeting").await;
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.headers().get("etag").unwrap().to_str().unwrap(), etag);
    assert_eq!(
        got.headers().get("content-type").unwrap(),
        "text/plain; charset=utf-8"
    );
    assert_eq!(got.text().await.unwrap(), "hello larder");

    // The value sits in Redis under the namespace's prefix, nowhere else.
    let stored = raw(format!("larder:{ns}:k:greeting").into_bytes())
        .await
        .unwrap();
    assert!(
        stored
            .expect("value stored under the namespace prefix")
            .ends_with(b"hello larder")
    );

    // A key with a slash, a colon and non-UTF-8 bytes round-trips.
    let odd = "a%2Fb%3Ac%FF%00";
    assert_eq!(
        tenant.put(ns, odd, "odd").await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(tenant.get(ns, odd).await.text().await.unwrap(), "odd");
    let stored = raw(b"larder:"
        .iter()
        .chain(ns.as_bytes())
        .chain(b":k:a/b:c\xff\x00")
        .copied()
        .collect())
    .await
    .unwrap();
    assert!(
        stored.is_some(),
        "percent-decoded key bytes reach Redis as bytes"
    );

    assert_eq!(
        tenant.delete(ns, "greeting").await.status(),
        StatusCode::NO_CONTENT
    );
    let gone = tenant.get(ns, "greeting").await;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    assert_eq!(problem_type(gone).await, "key-not-found");
    assert_eq!(
        tenant.delete(ns, "greeting").await.status(),
        StatusCode::NOT_FOUND
    );
    assert!(
        raw(format!("larder:{ns}:k:greeting").into_bytes())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_gateway_and_agent_serve_a_tenant_on_both_topologies() {
    larder_tests::init_tracing();
    let zk = ZooKeeper::start().await;
    let master = Redis::start().await;
    let replica = Redis::start_replica_of(&master).await;
    let cluster = RedisCluster::start(3).await;
    let root = unique_root();
    let keys = tempfile::tempdir().unwrap();

    let cp = platform::control_plane(&zk, &root, keys.path()).await;
    let gw = platform::gateway(&zk, &root).await;
    let agent = platform::agent(
        &zk,
        &root,
        &[("main", master.address()), ("main", replica.address())],
    )
    .await;
    let admin = platform::admin(&cp, keys.path());

    // Register both deployments; each is checked live.
    let main = admin
        .register_cluster(&RegisterCluster {
            name: "main".into(),
            topology: Topology::Standalone,
            endpoints: vec![master.address()],
            replicas: vec![replica.address()],
            region: "local".into(),
            capacity_bytes: CAPACITY,
            down_after_ms: None,
        })
        .await
        .expect("standalone deployment registers");
    assert!(main.redis_version.as_deref().is_some_and(|v| !v.is_empty()));
    admin
        .register_cluster(&RegisterCluster {
            name: "shards".into(),
            topology: Topology::Cluster,
            endpoints: cluster.addresses(),
            replicas: vec![],
            region: "local".into(),
            capacity_bytes: CAPACITY,
            down_after_ms: None,
        })
        .await
        .expect("Redis Cluster registers");

    // The agent's ephemeral health reports reach the control plane's view.
    eventually(
        Duration::from_secs(15),
        "the agent's health reports show both nodes up",
        || {
            let admin = admin.clone();
            async move {
                admin.cluster("main").await.is_ok_and(|c| {
                    c.status == HealthStatus::Ok
                        && c.nodes.len() == 2
                        && c.nodes.iter().any(|n| n.role == Role::Master && n.up)
                        && c.nodes.iter().any(|n| n.role == Role::Replica && n.up)
                })
            }
        },
    )
    .await;

    for (ns, on) in [("alpha", "main"), ("beta", "shards")] {
        let created = admin
            .create_namespace(&CreateNamespace {
                name: ns.into(),
                owner: "team-e2e".into(),
                cluster: Some(on.into()),
                region: None,
                limits: None,
                near_cache: None,
            })
            .await
            .expect("namespace created");
        assert_eq!(created.namespace.cluster, on);
    }
    let token = |ns: &'static str| {
        let admin = admin.clone();
        async move {
            admin
                .issue_token(
                    ns,
                    &IssueToken {
                        subject: "e2e".into(),
                        permissions: vec![Permission::Read, Permission::Write],
                        ttl_s: Some(600),
                    },
                )
                .await
                .expect("token issued")
                .token
        }
    };
    let alpha = Tenant {
        http: reqwest::Client::new(),
        gateway: gw.url.clone(),
        token: token("alpha").await,
    };
    let beta = Tenant {
        http: reqwest::Client::new(),
        gateway: gw.url.clone(),
        token: token("beta").await,
    };

    let master_client = master.client();
    exercise(&alpha, "alpha", move |key| {
        let client = master_client.clone();
        tokio::spawn(async move {
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            redis::cmd("GET")
                .arg(key)
                .query_async(&mut conn)
                .await
                .unwrap()
        })
    })
    .await;
    let cluster_client = cluster.client();
    exercise(&beta, "beta", move |key| {
        let client = cluster_client.clone();
        tokio::spawn(async move {
            let mut conn = client.get_async_connection().await.unwrap();
            redis::cmd("GET")
                .arg(key)
                .query_async(&mut conn)
                .await
                .unwrap()
        })
    })
    .await;

    // One tenant's token does not open another tenant's namespace.
    let cross = alpha.get("beta", "greeting").await;
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);
    assert_eq!(problem_type(cross).await, "forbidden");
    let anonymous = reqwest::Client::new()
        .get(alpha.url("alpha", "greeting"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let forged = Tenant {
        token: format!("{}x", alpha.token),
        ..alpha
    };
    assert_eq!(
        forged.get("alpha", "greeting").await.status(),
        StatusCode::UNAUTHORIZED
    );

    // Stopping the agent removes its ephemeral health reports at once.
    agent.stop().await.expect("agent stops cleanly");
    eventually(Duration::from_secs(10), "the agent's nodes vanish", || {
        let admin = admin.clone();
        async move {
            admin
                .cluster("main")
                .await
                .is_ok_and(|c| c.nodes.is_empty() && c.status == HealthStatus::Unknown)
        }
    })
    .await;

    gw.stop().await.expect("gateway stops cleanly");
    cp.stop().await.expect("control plane stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_admin_input_gets_clear_problems() {
    let zk = ZooKeeper::start().await;
    let master = Redis::start().await;
    let root = unique_root();
    let keys = tempfile::tempdir().unwrap();
    let cp = platform::control_plane(&zk, &root, keys.path()).await;
    let admin = platform::admin(&cp, keys.path());

    let register = |name: &str, topology, endpoint: String| RegisterCluster {
        name: name.into(),
        topology,
        endpoints: vec![endpoint],
        replicas: vec![],
        region: "local".into(),
        capacity_bytes: CAPACITY,
        down_after_ms: None,
    };

    // Invalid names are 400; a deployment that is not what it claims is 422.
    assert_eq!(
        status(
            admin
                .register_cluster(&register(
                    "Bad Name",
                    Topology::Standalone,
                    master.address()
                ))
                .await
        )
        .0,
        400
    );
    assert_eq!(
        status(
            admin
                .register_cluster(&register("wrong", Topology::Cluster, master.address()))
                .await
        )
        .0,
        422
    );
    let closed = format!("127.0.0.1:{}", larder_tests::ports::free_port());
    assert_eq!(
        status(
            admin
                .register_cluster(&register("nobody", Topology::Standalone, closed))
                .await
        )
        .0,
        422
    );

    // Registration is idempotent; a different spec under the same name is 409.
    let ok = register("main", Topology::Standalone, master.address());
    admin.register_cluster(&ok).await.expect("registers");
    admin
        .register_cluster(&ok)
        .await
        .expect("same request again returns the registration");
    let mut other = ok.clone();
    other.capacity_bytes += 1;
    assert_eq!(
        status(admin.register_cluster(&other).await),
        (409, "conflict".into())
    );

    let ns = |name: &str| CreateNamespace {
        name: name.into(),
        owner: "team".into(),
        cluster: None,
        region: None,
        limits: None,
        near_cache: None,
    };
    for bad in ["A", "x", "has_underscore", "-dash", "a:b", "a*"] {
        assert_eq!(
            status(admin.create_namespace(&ns(bad)).await).0,
            400,
            "namespace name {bad:?}"
        );
    }
    // Placement: no cluster in the region → 409 with a reason.
    let mut elsewhere = ns("orders");
    elsewhere.region = Some("mars".into());
    assert_eq!(status(admin.create_namespace(&elsewhere).await).0, 409);
    let placed = admin
        .create_namespace(&ns("orders"))
        .await
        .expect("placed on the only cluster");
    assert_eq!(placed.namespace.cluster, "main");

    // Tokens: unknown namespace 404, admin permission refused, zero TTL refused.
    let issue = |perms: Vec<Permission>, ttl| IssueToken {
        subject: "s".into(),
        permissions: perms,
        ttl_s: ttl,
    };
    assert_eq!(
        status(
            admin
                .issue_token("nope", &issue(vec![Permission::Read], None))
                .await
        )
        .0,
        404
    );
    assert_eq!(
        status(
            admin
                .issue_token("orders", &issue(vec![Permission::Admin], None))
                .await
        )
        .0,
        400
    );
    assert_eq!(
        status(
            admin
                .issue_token("orders", &issue(vec![Permission::Read], Some(0)))
                .await
        )
        .0,
        400
    );

    // Unknown fields and malformed JSON are 400 problems, never 500.
    let http = reqwest::Client::new();
    let token = platform::admin_token(keys.path());
    for body in [
        r#"{"name":"zz","owner":"t","colour":"red"}"#,
        "{not json",
        "[]",
    ] {
        let r = http
            .post(format!("{}/v1/namespaces", cp.url))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    // Without an admin token: 401; with a tenant token: 401 (wrong audience).
    let r = http
        .get(format!("{}/v1/clusters", cp.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let tenant = admin
        .issue_token("orders", &issue(vec![Permission::Read], None))
        .await
        .unwrap()
        .token;
    let r = http
        .get(format!("{}/v1/clusters", cp.url))
        .bearer_auth(tenant)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}
