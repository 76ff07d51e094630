//! Queues on Redis Streams through the gateway, on a standalone Redis and on a
//! three-master Redis Cluster: redelivery of what a dead consumer never acknowledged,
//! poison messages in the dead-letter queue, blocking claims, idempotent enqueue, and
//! the problems bad requests get.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use larder_control_plane::api::{CreateNamespace, IssueToken, RegisterCluster};
use larder_registry::auth::Permission;
use larder_registry::model::{Limits, Topology};
use larder_tests::platform::{self, Service};
use larder_tests::{Redis, RedisCluster, ZooKeeper, eventually, unique_root};
use reqwest::StatusCode;
use serde_json::{Value, json};

const NS: &str = "shop";
/// The namespace's value limit, small so the 413 check sends little.
const MAX_VALUE: u64 = 4096;

/// Which Redis the namespace lives on.
enum Backing {
    Standalone(Redis),
    Cluster(RedisCluster),
}

/// ZooKeeper, Redis, a control plane and a gateway, with a namespace [`NS`] and tokens.
struct Platform {
    backing: Backing,
    gateway: Service,
    http: reqwest::Client,
    /// A token with the `queue` permission.
    token: String,
    /// A token with `read` and `write` but not `queue`.
    no_queue: String,
    _control_plane: Service,
    _keys: tempfile::TempDir,
    _zookeeper: ZooKeeper,
}

impl Platform {
    async fn start(topology: Topology) -> Platform {
        larder_tests::init_tracing();
        let zookeeper = ZooKeeper::start().await;
        let (backing, endpoints) = match topology {
            Topology::Standalone => {
                let redis = Redis::start().await;
                let endpoints = vec![redis.address()];
                (Backing::Standalone(redis), endpoints)
            }
            Topology::Cluster => {
                let cluster = RedisCluster::start(3).await;
                let endpoints = cluster.addresses();
                (Backing::Cluster(cluster), endpoints)
            }
        };
        let root = unique_root();
        let keys = tempfile::tempdir().expect("temporary key directory");
        let control_plane = platform::control_plane(&zookeeper, &root, keys.path()).await;
        let gateway = platform::gateway(&zookeeper, &root).await;
        let admin = platform::admin(&control_plane, keys.path());
        admin
            .register_cluster(&RegisterCluster {
                name: "main".into(),
                topology,
                endpoints,
                replicas: vec![],
                region: "local".into(),
                capacity_bytes: 256 << 20,
                down_after_ms: None,
            })
            .await
            .expect("deployment registers");
        admin
            .create_namespace(&CreateNamespace {
                name: NS.into(),
                owner: "team-shop".into(),
                cluster: Some("main".into()),
                region: None,
                limits: Some(Limits {
                    max_value_bytes: MAX_VALUE,
                    ..Limits::default()
                }),
                near_cache: None,
            })
            .await
            .expect("namespace created");
        let issue = |permissions: Vec<Permission>| {
            let admin = admin.clone();
            async move {
                admin
                    .issue_token(
                        NS,
                        &IssueToken {
                            subject: "queue-tests".into(),
                            permissions,
                            ttl_s: Some(600),
                        },
                    )
                    .await
                    .expect("token issued")
                    .token
            }
        };
        let token = issue(vec![Permission::Queue]).await;
        let no_queue = issue(vec![Permission::Read, Permission::Write]).await;
        let platform = Platform {
            backing,
            gateway,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(40))
                .build()
                .expect("HTTP client"),
            token,
            no_queue,
            _control_plane: control_plane,
            _keys: keys,
            _zookeeper: zookeeper,
        };
        eventually(
            Duration::from_secs(15),
            "the gateway knows the namespace",
            || async {
                let (status, body) = platform.stats_any("warmup").await;
                if status != StatusCode::OK {
                    tracing::debug!(%status, %body, "namespace not served yet");
                }
                status == StatusCode::OK
            },
        )
        .await;
        platform
    }

    fn url(&self, queue: &str, rest: &str) -> String {
        format!(
            "{}/v1/namespaces/{NS}/queues/{queue}{rest}",
            self.gateway.url
        )
    }

    async fn enqueue(&self, queue: &str, body: &str) -> String {
        let response = self
            .http
            .post(self.url(queue, "/messages"))
            .bearer_auth(&self.token)
            .header("content-type", "text/plain")
            .body(body.to_owned())
            .send()
            .await
            .expect("gateway answers");
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.expect("JSON answer");
        body["id"].as_str().expect("an id").to_owned()
    }

    async fn post_json(&self, queue: &str, rest: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.url(queue, rest))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("gateway answers");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Claims for `consumer` of group `workers`; panics unless the answer is 200.
    async fn claim(&self, queue: &str, consumer: &str, extra: Value) -> Value {
        let mut request = json!({"group": "workers", "consumer": consumer});
        if let (Some(r), Some(e)) = (request.as_object_mut(), extra.as_object()) {
            r.extend(e.clone());
        }
        let (status, body) = self.post_json(queue, "/claims", request).await;
        assert_eq!(status, StatusCode::OK, "claim answered {body}");
        body
    }

    async fn ack(&self, queue: &str, ids: &[&str]) -> u64 {
        let (status, body) = self
            .post_json(queue, "/acks", json!({"group": "workers", "ids": ids}))
            .await;
        assert_eq!(status, StatusCode::OK, "ack answered {body}");
        body["acknowledged"].as_u64().expect("a count")
    }

    async fn stats(&self, queue: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(self.url(queue, "?group=workers"))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("gateway answers");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn dead_letters(&self, queue: &str) -> Value {
        let response = self
            .http
            .get(self.url(queue, "/dead-letters?limit=10"))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("gateway answers");
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("JSON answer")
    }

    /// Clients of every Redis node: `(blocked, all)`, from `CLIENT LIST` (a blocked
    /// client is flagged `b`).
    async fn clients(&self) -> (usize, usize) {
        let nodes: Vec<&Redis> = match &self.backing {
            Backing::Standalone(redis) => vec![redis],
            Backing::Cluster(cluster) => cluster.nodes().iter().collect(),
        };
        let (mut blocked, mut all) = (0, 0);
        for node in nodes {
            let list: String = node
                .query(redis::cmd("CLIENT").arg("LIST"))
                .await
                .expect("CLIENT LIST");
            all += list.lines().count();
            blocked += list
                .lines()
                .filter(|l| {
                    l.split(' ')
                        .any(|f| f.strip_prefix("flags=").is_some_and(|f| f.contains('b')))
                })
                .count();
        }
        (blocked, all)
    }

    async fn blocked_clients(&self) -> usize {
        self.clients().await.0
    }
}

fn messages(claimed: &Value) -> &Vec<Value> {
    claimed["messages"].as_array().expect("messages array")
}

/// Claims for `consumer` until a message comes (polling every 50 ms via `eventually`).
async fn claim_until_some(p: &Platform, queue: &str, consumer: &str, extra: Value) -> Value {
    let got = RefCell::new(Value::Null);
    eventually(
        Duration::from_secs(15),
        &format!("{consumer} is handed a message"),
        || {
            let extra = extra.clone();
            let got = &got;
            async move {
                let claimed = p.claim(queue, consumer, extra).await;
                let some = !messages(&claimed).is_empty();
                *got.borrow_mut() = claimed;
                some
            }
        },
    )
    .await;
    got.into_inner()
}

/// A consumer that claims and dies without acknowledging: the message goes to another
/// consumer once its visibility timeout passes, with its delivery count raised. A
/// message nobody can process ends in the dead-letter queue after `max_deliveries`.
async fn redelivery_and_dead_letters(p: &Platform) {
    let q = "orders";
    let visibility = json!({"visibility_ms": 400, "max_deliveries": 2});
    let id = p.enqueue(q, "order #1").await;

    // Redis starts the visibility timeout between these two instants.
    let claiming = Instant::now();
    let first = p.claim(q, "alice", visibility.clone()).await;
    let first = messages(&first);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0]["id"], id.as_str());
    assert_eq!(first[0]["body"], "order #1");
    assert_eq!(first[0]["content_type"], "text/plain");
    assert_eq!(first[0]["deliveries"], 1);
    // alice dies here, without acknowledging.

    let nothing = p.claim(q, "bob", visibility.clone()).await;
    if claiming.elapsed() < Duration::from_millis(400) {
        assert!(
            messages(&nothing).is_empty(),
            "a message is invisible to others within its visibility timeout: {nothing}"
        );
    }

    let redelivered = claim_until_some(p, q, "bob", visibility.clone()).await;
    assert!(
        claiming.elapsed() >= Duration::from_millis(400),
        "redelivered only after the visibility timeout"
    );
    let redelivered = messages(&redelivered);
    assert_eq!(redelivered.len(), 1);
    assert_eq!(redelivered[0]["id"], id.as_str(), "the same message");
    assert_eq!(redelivered[0]["body"], "order #1");
    assert_eq!(redelivered[0]["deliveries"], 2);
    assert_eq!(p.ack(q, &[&id]).await, 1);
    assert_eq!(p.ack(q, &[&id]).await, 0, "an ack counts once");

    let (status, stats) = p.stats(q).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        stats["length"], 0,
        "acknowledged by the only group: {stats}"
    );
    assert_eq!(stats["pending"], 0);
    assert_eq!(stats["dead_lettered"], 0);

    // A poison message: every consumer that takes it dies.
    let poison = p.enqueue(q, "poison").await;
    for (consumer, deliveries) in [("carol", 1), ("dave", 2)] {
        let got = claim_until_some(p, q, consumer, visibility.clone()).await;
        assert_eq!(messages(&got)[0]["id"], poison.as_str());
        assert_eq!(messages(&got)[0]["deliveries"], deliveries);
    }
    let (_, stats) = p.stats(q).await;
    assert_eq!(stats["pending"], 1, "{stats}");
    // Once dave's visibility timeout has passed, the next claim does not deliver it a
    // third time but moves it to the dead-letter queue.
    let dead_lettered = Cell::new(0);
    eventually(
        Duration::from_secs(15),
        "the poison message is dead-lettered",
        || async {
            let claimed = p.claim(q, "erin", visibility.clone()).await;
            assert!(
                messages(&claimed).is_empty(),
                "never delivered beyond max_deliveries: {claimed}"
            );
            let now = claimed["dead_lettered"].as_u64().unwrap_or(0);
            dead_lettered.set(dead_lettered.get() + now);
            dead_lettered.get() > 0
        },
    )
    .await;
    assert_eq!(dead_lettered.get(), 1);

    let dlq = p.dead_letters(q).await;
    let entries = dlq["dead_letters"].as_array().expect("dead letters");
    assert_eq!(entries.len(), 1, "{dlq}");
    assert_eq!(entries[0]["message_id"], poison.as_str());
    assert_eq!(entries[0]["body"], "poison");
    assert_eq!(entries[0]["content_type"], "text/plain");
    assert_eq!(entries[0]["group"], "workers");
    assert_eq!(entries[0]["deliveries"], 2);
    assert!(dlq.get("next").is_none(), "one page");

    let (_, stats) = p.stats(q).await;
    assert_eq!(stats["dead_lettered"], 1, "{stats}");
    assert_eq!(stats["pending"], 0);
    assert_eq!(stats["length"], 0);
    assert_eq!(stats["groups"][0]["name"], "workers");
}

/// A claim with `wait_ms` returns as soon as a message arrives, and empty once the
/// wait is over. A waiting claim whose client hangs up stops waiting in Redis, so the
/// next message goes to a consumer that is still there.
async fn blocking_claims(p: &Platform) {
    let q = "signals";
    // Nothing arrives: an empty batch after the wait, not before.
    let started = Instant::now();
    let empty = p.claim(q, "idle", json!({"wait_ms": 700})).await;
    let waited = started.elapsed();
    assert!(messages(&empty).is_empty(), "{empty}");
    assert!(waited >= Duration::from_millis(700), "waited {waited:?}");
    assert!(
        waited < Duration::from_millis(700 + 3000),
        "waited {waited:?}"
    );
    assert_eq!(
        p.blocked_clients().await,
        0,
        "no read left blocked in Redis"
    );

    // A message arrives while a claim waits: it is returned at once.
    let waiter = {
        let http = p.http.clone();
        let url = p.url(q, "/claims");
        let token = p.token.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let response = http
                .post(url)
                .bearer_auth(token)
                .json(&json!({"group": "workers", "consumer": "waiter", "wait_ms": 20000}))
                .send()
                .await
                .expect("gateway answers");
            assert_eq!(response.status(), StatusCode::OK);
            let body: Value = response.json().await.expect("JSON answer");
            (started.elapsed(), body)
        })
    };
    eventually(
        Duration::from_secs(10),
        "the claim waits in Redis",
        || async { p.blocked_clients().await == 1 },
    )
    .await;
    let sent = Instant::now();
    let id = p.enqueue(q, "wake up").await;
    let (_, body) = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiting claim returns")
        .expect("waiter task");
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "returned {:?} after the message, not after the wait",
        sent.elapsed()
    );
    let got = messages(&body);
    assert_eq!(got.len(), 1, "{body}");
    assert_eq!(got[0]["id"], id.as_str());
    assert_eq!(got[0]["body"], "wake up");
    assert_eq!(p.ack(q, &[&id]).await, 1);

    // A client that gives up on its waiting claim.
    let abandoned = {
        let http = p.http.clone();
        let url = p.url(q, "/claims");
        let token = p.token.clone();
        tokio::spawn(async move {
            let _ = http
                .post(url)
                .bearer_auth(token)
                .json(&json!({"group": "workers", "consumer": "quitter", "wait_ms": 25000}))
                .send()
                .await;
        })
    };
    let connected = Cell::new(0);
    eventually(
        Duration::from_secs(10),
        "the abandoned claim waits in Redis",
        || async {
            let (blocked, all) = p.clients().await;
            connected.set(all);
            blocked == 1
        },
    )
    .await;
    abandoned.abort();
    let _ = abandoned.await;
    // Its connection is closed, not kept in the pool: Redis forgets the read at once.
    eventually(
        Duration::from_secs(5),
        "the connection of the claim whose client hung up is closed",
        || async { p.clients().await == (0, connected.get() - 1) },
    )
    .await;
    let id = p.enqueue(q, "for someone listening").await;
    let got = p.claim(q, "listener", json!({"wait_ms": 2000})).await;
    assert_eq!(
        messages(&got)[0]["id"],
        id.as_str(),
        "not handed to the consumer that hung up: {got}"
    );
    assert_eq!(messages(&got)[0]["deliveries"], 1);
}

/// Ten concurrent retries of one enqueue with the same `Idempotency-Key` enqueue one
/// message and all get its id; the key with another body is refused.
async fn idempotent_enqueue(p: &Platform) {
    let q = "payments";
    let send = |key: &'static str, body: &'static str| {
        let http = p.http.clone();
        let url = p.url(q, "/messages");
        let token = p.token.clone();
        async move {
            http.post(url)
                .bearer_auth(token)
                .header("idempotency-key", key)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("gateway answers")
        }
    };
    let retries: Vec<_> = (0..10)
        .map(|_| tokio::spawn(send("charge-42", r#"{"amount":42}"#)))
        .collect();
    let mut ids = Vec::new();
    let mut replayed = 0;
    for retry in retries {
        let response = retry.await.expect("request task");
        assert_eq!(response.status(), StatusCode::CREATED);
        if response.headers().get("idempotent-replayed").is_some() {
            replayed += 1;
        }
        let body: Value = response.json().await.expect("JSON answer");
        ids.push(body["id"].as_str().expect("an id").to_owned());
    }
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one id for all: {ids:?}"
    );
    assert_eq!(replayed, 9, "all but the first are replays");
    let (_, stats) = p.stats_any(q).await;
    assert_eq!(stats["length"], 1, "enqueued once: {stats}");

    let reused = send("charge-42", r#"{"amount":43}"#).await;
    assert_eq!(reused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem_type(reused).await, "idempotency-key-reused");

    let other = send("charge-43", r#"{"amount":42}"#).await;
    assert_eq!(other.status(), StatusCode::CREATED);
    let (_, stats) = p.stats_any(q).await;
    assert_eq!(stats["length"], 2);

    let claimed = p.claim(q, "payer", json!({"count": 10})).await;
    let got = messages(&claimed);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0]["id"], ids[0].as_str());
    assert_eq!(got[0]["body"], r#"{"amount":42}"#);
    assert_eq!(got[0]["content_type"], "application/json");
}

impl Platform {
    /// Statistics without naming a group.
    async fn stats_any(&self, queue: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(self.url(queue, ""))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("gateway answers");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
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
    let body: Value = response.json().await.expect("problem body is JSON");
    body["type"]
        .as_str()
        .unwrap_or_default()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_redeliver_a_dead_consumers_messages_and_dead_letter_poison_on_standalone_redis() {
    let p = Platform::start(Topology::Standalone).await;
    redelivery_and_dead_letters(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_redeliver_a_dead_consumers_messages_and_dead_letter_poison_on_redis_cluster() {
    let p = Platform::start(Topology::Cluster).await;
    redelivery_and_dead_letters(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_blocking_claims_wake_on_a_message_and_time_out_empty_on_standalone_redis() {
    let p = Platform::start(Topology::Standalone).await;
    blocking_claims(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_blocking_claims_wake_on_a_message_and_time_out_empty_on_redis_cluster() {
    let p = Platform::start(Topology::Cluster).await;
    blocking_claims(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_idempotent_enqueue_under_concurrent_retries_enqueues_once_on_standalone_redis() {
    let p = Platform::start(Topology::Standalone).await;
    idempotent_enqueue(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_idempotent_enqueue_under_concurrent_retries_enqueues_once_on_redis_cluster() {
    let p = Platform::start(Topology::Cluster).await;
    idempotent_enqueue(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_refuse_bad_names_bad_json_and_tokens_without_the_queue_permission() {
    let p = Platform::start(Topology::Standalone).await;
    let q = "inbox";
    let id = p.enqueue(q, "hello").await;

    // Without the queue permission: 403 on every route; without a token: 401.
    let routes = [
        ("POST", "/messages", None),
        (
            "POST",
            "/claims",
            Some(json!({"group": "workers", "consumer": "c"})),
        ),
        (
            "POST",
            "/acks",
            Some(json!({"group": "workers", "ids": [id.clone()]})),
        ),
        ("GET", "", None),
        ("GET", "/dead-letters", None),
    ];
    for (method, rest, body) in &routes {
        for (token, status, slug) in [
            (Some(&p.no_queue), StatusCode::FORBIDDEN, "forbidden"),
            (None, StatusCode::UNAUTHORIZED, "unauthorized"),
        ] {
            let mut request = p
                .http
                .request(method.parse().expect("a method"), p.url(q, rest));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            request = match body {
                Some(body) => request.json(body),
                None => request.body("x"),
            };
            let response = request.send().await.expect("gateway answers");
            assert_eq!(response.status(), status, "{method} {rest}");
            assert_eq!(problem_type(response).await, slug, "{method} {rest}");
        }
    }
    // Nothing was claimed or acknowledged by those requests.
    let (_, stats) = p.stats_any(q).await;
    assert_eq!(stats["length"], 1, "{stats}");
    assert_eq!(stats["groups"], json!([]));

    // Bad queue names.
    let too_long = "q".repeat(201);
    for bad in ["has%20space", "tab%09", too_long.as_str(), "%FF"] {
        let response = p
            .http
            .post(p.url(bad, "/messages"))
            .bearer_auth(&p.token)
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "queue {bad:?}");
        assert_eq!(problem_type(response).await, "bad-request");
    }

    // Bad claim bodies: names, bounds, unknown fields, malformed JSON.
    for body in [
        json!({"group": "has space", "consumer": "c"}),
        json!({"group": "g", "consumer": ""}),
        json!({"group": "g", "consumer": "c\u{1}"}),
        json!({"group": "g", "consumer": "c", "count": 0}),
        json!({"group": "g", "consumer": "c", "count": 101}),
        json!({"group": "g", "consumer": "c", "wait_ms": 30001}),
        json!({"group": "g", "consumer": "c", "max_deliveries": 0}),
        json!({"group": "g", "consumer": "c", "colour": "red"}),
        json!({"consumer": "c"}),
    ] {
        let (status, problem) = p.post_json(q, "/claims", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {problem}");
    }
    for raw in ["{not json", "[]", ""] {
        let response = p
            .http
            .post(p.url(q, "/claims"))
            .bearer_auth(&p.token)
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{raw:?}");
        assert_eq!(problem_type(response).await, "bad-request");
    }

    // Acknowledgements: bad ids are 400, an unknown group is 404.
    for ids in [json!([]), json!(["not-an-id"]), json!(["$"])] {
        let (status, _) = p
            .post_json(q, "/acks", json!({"group": "workers", "ids": ids}))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{ids}");
    }
    let response = p
        .http
        .post(p.url(q, "/acks"))
        .bearer_auth(&p.token)
        .json(&json!({"group": "nobody", "ids": [id]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(problem_type(response).await, "group-not-found");

    // Dead-letter paging: a bad limit or cursor is 400.
    for query in ["?limit=0", "?limit=1001", "?after=x", "?colour=red"] {
        let response = p
            .http
            .get(p.url(q, &format!("/dead-letters{query}")))
            .bearer_auth(&p.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
    }

    // A body over the namespace's limit is 413; binary bodies come back as base64.
    let response = p
        .http
        .post(p.url(q, "/messages"))
        .bearer_auth(&p.token)
        .body(vec![b'x'; MAX_VALUE as usize + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(problem_type(response).await, "value-too-large");
    let response = p
        .http
        .post(p.url(q, "/messages"))
        .bearer_auth(&p.token)
        .body(vec![0xff, 0x00, 0x01])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let claimed = p.claim(q, "reader", json!({"count": 10})).await;
    let got = messages(&claimed);
    assert_eq!(got.len(), 2, "{claimed}");
    assert_eq!(got[0]["body"], "hello");
    assert_eq!(got[1]["body_base64"], "/wAB");
    assert_eq!(got[1]["content_type"], "application/octet-stream");
    assert!(got[1].get("body").is_none());
}
