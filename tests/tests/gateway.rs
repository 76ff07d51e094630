//! The tenant data API against real Redis (standalone and Redis Cluster) and a real
//! registry: every operation's success and failure paths, isolation between tenants,
//! token checks, limits, bulkheads and cancellation safety.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use larder_registry::auth::{ISSUER, TENANT_AUDIENCE};
use larder_registry::client::Watch;
use larder_registry::model::{Namespace, NamespaceState, Revocation};
use larder_registry::{Registry, paths};
use larder_tests::platform::{self, Service};
use larder_tests::{Redis, RedisCluster, ZooKeeper, eventually, registry_config, unique_root};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

enum Deployment {
    Standalone(Redis),
    Cluster(RedisCluster),
}

impl Deployment {
    async fn start(cluster: bool) -> Self {
        if cluster {
            Deployment::Cluster(RedisCluster::start(3).await)
        } else {
            Deployment::Standalone(Redis::start().await)
        }
    }

    fn registration(&self, name: &str) -> Value {
        match self {
            Deployment::Standalone(r) => {
                json!({"name": name, "topology": "standalone", "endpoints": [r.address()], "capacity_bytes": 1u64 << 30})
            }
            Deployment::Cluster(c) => {
                json!({"name": name, "topology": "cluster", "endpoints": c.addresses(), "capacity_bytes": 1u64 << 30})
            }
        }
    }

    /// Reads a raw Redis key, bypassing Larder.
    async fn raw_get(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self {
            Deployment::Standalone(r) => {
                let mut c = r.client().get_multiplexed_async_connection().await.unwrap();
                redis::cmd("GET")
                    .arg(key)
                    .query_async(&mut c)
                    .await
                    .unwrap()
            }
            Deployment::Cluster(cl) => {
                let mut c = cl.client().get_async_connection().await.unwrap();
                redis::cmd("GET")
                    .arg(key)
                    .query_async(&mut c)
                    .await
                    .unwrap()
            }
        }
    }
}

/// A running platform: ZooKeeper, one deployment, a control plane and a gateway.
struct Fixture {
    _zk: ZooKeeper,
    deployment: Deployment,
    keys: tempfile::TempDir,
    cp: Service,
    gw: Service,
    registry: Registry,
    http: reqwest::Client,
    admin_token: String,
}

impl Fixture {
    async fn start(cluster: bool) -> Self {
        larder_tests::init_tracing();
        let zk = ZooKeeper::start().await;
        let deployment = Deployment::start(cluster).await;
        let root = unique_root();
        let keys = tempfile::tempdir().unwrap();
        let cp = platform::control_plane(&zk, &root, keys.path()).await;
        let gw = platform::gateway(&zk, &root).await;
        let registry = Registry::connect(registry_config(&zk, &root), Watch::None)
            .await
            .unwrap();
        let admin_token = sign(keys.path(), admin_claims());
        let f = Fixture {
            _zk: zk,
            deployment,
            keys,
            cp,
            gw,
            registry,
            http: reqwest::Client::new(),
            admin_token,
        };
        f.admin(
            Method::POST,
            "/v1/clusters",
            f.deployment.registration("main"),
        )
        .await;
        f
    }

    async fn admin(&self, method: Method, path: &str, body: Value) -> Value {
        let r = self
            .http
            .request(method, format!("{}{path}", self.cp.url))
            .bearer_auth(&self.admin_token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    /// Creates a namespace on the deployment and returns a token with `perms`.
    async fn tenant(&self, ns: &str, limits: Value, perms: &[&str]) -> Tenant {
        let mut spec = json!({"name": ns, "owner": "team", "cluster": "main"});
        if !limits.is_null() {
            spec["limits"] = limits;
        }
        self.admin(Method::POST, "/v1/namespaces", spec).await;
        let t = Tenant {
            http: self.http.clone(),
            gw: self.gw.url.clone(),
            ns: ns.into(),
            token: self.token(ns, perms).await,
        };
        // The gateway learns of the namespace (and the token's key) through its watch.
        eventually(
            Duration::from_secs(5),
            "the gateway serves the namespace",
            || async {
                let r = t.send(Method::GET, "keys/probe", None, &[]).await;
                let body: Value = r.json().await.unwrap_or(Value::Null);
                body["type"]
                    .as_str()
                    .is_some_and(|k| k.ends_with("/key-not-found") || k.ends_with("/rate-limited"))
            },
        )
        .await;
        t
    }

    async fn token(&self, ns: &str, perms: &[&str]) -> String {
        let issued = self
            .admin(
                Method::POST,
                &format!("/v1/namespaces/{ns}/tokens"),
                json!({"subject": "tests", "permissions": perms, "ttl_s": 3600}),
            )
            .await;
        issued["token"].as_str().unwrap().to_owned()
    }

    /// Changes a namespace directly in the registry, as the control plane would.
    async fn change_namespace(&self, ns: &str, change: impl Fn(&mut Namespace)) {
        self.registry
            .update::<Namespace, _>(&paths::namespace(ns), |n| {
                change(n);
                n.revision += 1;
                Ok(())
            })
            .await
            .unwrap();
    }
}

fn now() -> u64 {
    larder_registry::now_ms() / 1000
}

fn admin_claims() -> Value {
    json!({"iss": ISSUER, "aud": "larder-admin", "sub": "tests", "exp": now() + 3600, "nbf": now(), "iat": now(), "jti": "admin-1", "ns": [], "perms": ["admin"]})
}

/// Signs `claims` with the newest key of the control plane's key directory.
fn sign(dir: &Path, claims: Value) -> String {
    let mut pems: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pem"))
        .collect();
    pems.sort();
    let pem = pems.last().expect("a signing key");
    let kid = pem.file_stem().unwrap().to_str().unwrap().to_owned();
    let key = jsonwebtoken::EncodingKey::from_ed_pem(&std::fs::read(pem).unwrap()).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(kid);
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

struct Tenant {
    http: reqwest::Client,
    gw: String,
    ns: String,
    token: String,
}

impl Tenant {
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut r = self
            .http
            .request(
                method,
                format!("{}/v1/namespaces/{}/{path}", self.gw, self.ns),
            )
            .bearer_auth(&self.token);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        if let Some(b) = body {
            r = r.body(b);
        }
        r.send().await.unwrap()
    }

    async fn json(
        &self,
        method: Method,
        path: &str,
        body: Value,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        let r = self
            .send(method, path, Some(serde_json::to_vec(&body).unwrap()), &all)
            .await;
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }

    async fn put(&self, key: &str, value: &str) -> StatusCode {
        self.send(
            Method::PUT,
            &format!("keys/{key}"),
            Some(value.as_bytes().to_vec()),
            &[],
        )
        .await
        .status()
    }

    async fn get(&self, key: &str) -> (StatusCode, String) {
        let r = self
            .send(Method::GET, &format!("keys/{key}"), None, &[])
            .await;
        (r.status(), r.text().await.unwrap())
    }
}

async fn problem(r: reqwest::Response) -> (StatusCode, String) {
    let status = r.status();
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "{status}"
    );
    let body: Value = r.json().await.unwrap();
    (
        status,
        body["type"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_owned(),
    )
}

on_both_topologies!(keys_ttl_and_conditions);
async fn keys_ttl_and_conditions(cluster: bool) {
    let f = Fixture::start(cluster).await;
    let t = f.tenant("shop", json!({"max_key_bytes": 64, "max_value_bytes": 1024, "default_ttl_s": 100, "max_ttl_s": 1000}), &["read", "write"]).await;

    // Store with the namespace default TTL; read back value, type and ETag; HEAD has no body.
    let r = t
        .send(
            Method::PUT,
            "keys/item",
            Some(b"{\"a\":1}".to_vec()),
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let r = t.send(Method::GET, "keys/item", None, &[]).await;
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(r.text().await.unwrap(), "{\"a\":1}");
    let r = t.send(Method::HEAD, "keys/item", None, &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(r.bytes().await.unwrap().len(), 0);
    let (s, ttl) = t.json(Method::GET, "ttl/item", Value::Null, &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        (95..=100).contains(&ttl["ttl_s"].as_u64().unwrap()),
        "{ttl}"
    );

    // TTL bounds: above the maximum is refused; a change keeps the value.
    let r = t
        .send(Method::PUT, "keys/item?ttl=5000", Some(b"x".to_vec()), &[])
        .await;
    assert_eq!(
        problem(r).await,
        (StatusCode::BAD_REQUEST, "bad-request".into())
    );
    assert_eq!(
        t.json(Method::PUT, "ttl/item", json!({"ttl_s": 500}), &[])
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert!(
        (495..=500).contains(
            &t.json(Method::GET, "ttl/item", Value::Null, &[]).await.1["ttl_s"]
                .as_u64()
                .unwrap()
        )
    );
    assert_eq!(
        t.json(Method::PUT, "ttl/item", json!({"ttl_s": null}), &[])
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        t.json(Method::PUT, "ttl/absent", json!({"ttl_s": 10}), &[])
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(t.get("item").await.1, "{\"a\":1}");

    // Conditional requests.
    let r = t
        .send(Method::GET, "keys/item", None, &[("if-none-match", &etag)])
        .await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let r = t
        .send(
            Method::PUT,
            "keys/item",
            Some(b"v2".to_vec()),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let etag2 = r.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(etag, etag2);
    let r = t
        .send(
            Method::PUT,
            "keys/item",
            Some(b"v3".to_vec()),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(
        problem(r).await,
        (
            StatusCode::PRECONDITION_FAILED,
            "precondition-failed".into()
        )
    );
    assert_eq!(
        t.get("item").await.1,
        "v2",
        "a failed compare-and-set changes nothing"
    );
    let r = t
        .send(
            Method::PUT,
            "keys/item",
            Some(b"v4".to_vec()),
            &[("if-none-match", "*")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    let r = t
        .send(
            Method::PUT,
            "keys/fresh",
            Some(b"new".to_vec()),
            &[("if-none-match", "*")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        t.send(Method::DELETE, "keys/item", None, &[("if-match", &etag)])
            .await
            .status(),
        StatusCode::PRECONDITION_FAILED
    );
    assert_eq!(
        t.send(Method::DELETE, "keys/item", None, &[("if-match", &etag2)])
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    let r = t.send(Method::GET, "keys/item", None, &[]).await;
    assert_eq!(
        problem(r).await,
        (StatusCode::NOT_FOUND, "key-not-found".into())
    );
    let r = t
        .send(
            Method::PUT,
            "keys/item",
            Some(b"x".to_vec()),
            &[("if-match", "not-an-etag")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);

    // Limits: oversize value 413 (declared length refused before the body is read), long key 400.
    let r = t
        .send(Method::PUT, "keys/big", Some(vec![b'x'; 1025]), &[])
        .await;
    assert_eq!(
        problem(r).await,
        (StatusCode::PAYLOAD_TOO_LARGE, "value-too-large".into())
    );
    let long = "k".repeat(65);
    let r = t
        .send(
            Method::PUT,
            &format!("keys/{long}"),
            Some(b"x".to_vec()),
            &[],
        )
        .await;
    assert_eq!(
        problem(r).await,
        (StatusCode::BAD_REQUEST, "key-too-long".into())
    );
    assert_eq!(t.put(&"k".repeat(64), "ok").await, StatusCode::NO_CONTENT);
    let r = t
        .send(Method::PUT, "keys/x?colour=red", Some(b"x".to_vec()), &[])
        .await;
    assert_eq!(problem(r).await.0, StatusCode::BAD_REQUEST);
    let r = t.send(Method::POST, "keys/x", None, &[]).await;
    assert_eq!(problem(r).await.0, StatusCode::METHOD_NOT_ALLOWED);
}

on_both_topologies!(batches_span_slots);
async fn batches_span_slots(cluster: bool) {
    let f = Fixture::start(cluster).await;
    let t = f.tenant("bulk", Value::Null, &["read", "write"]).await;
    let puts: Vec<Value> = (0..60)
        .map(|i| json!({"op": "put", "key": format!("item-{i}"), "value": format!("value-{i}")}))
        .collect();
    let (s, body) = t
        .json(Method::POST, "batch", json!({"operations": puts}), &[])
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        body["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == 204),
        "{body}"
    );
    let mut gets: Vec<Value> = (0..60)
        .map(|i| json!({"op": "get", "key": format!("item-{i}")}))
        .collect();
    gets.push(json!({"op": "get", "key": "missing"}));
    gets.push(json!({"op": "delete", "key": "item-0"}));
    gets.push(json!({"op": "get", "key_base64": URL_SAFE_NO_PAD.encode(b"\xff\x00")}));
    let (s, body) = t
        .json(Method::POST, "batch", json!({"operations": gets}), &[])
        .await;
    assert_eq!(s, StatusCode::OK);
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 63);
    for (i, r) in results[..60].iter().enumerate() {
        assert_eq!(r["status"], 200, "item-{i}: {r}");
        assert_eq!(r["value"], format!("value-{i}"));
    }
    assert_eq!(results[60]["status"], 404);
    assert_eq!(results[61]["status"], 204);
    assert_eq!(results[62]["status"], 404);
    // Every key really is in Redis under the namespace's prefix.
    assert!(
        f.deployment
            .raw_get(b"larder:bulk:k:item-59")
            .await
            .is_some()
    );
    // Bounded and validated.
    let too_many: Vec<Value> = (0..101)
        .map(|i| json!({"op": "get", "key": format!("k{i}")}))
        .collect();
    assert_eq!(
        t.json(Method::POST, "batch", json!({"operations": too_many}), &[])
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        t.json(
            Method::POST,
            "batch",
            json!({"operations": [{"op": "put", "key": "a"}]}),
            &[]
        )
        .await
        .1["results"][0]["status"],
        400
    );
    assert_eq!(
        t.json(Method::POST, "batch", json!({"ops": []}), &[])
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    let r = t
        .send(
            Method::POST,
            "batch",
            Some(b"{not json".to_vec()),
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(problem(r).await.0, StatusCode::BAD_REQUEST);
    // A read-only token cannot write through a batch.
    let ro = Tenant {
        token: f.token("bulk", &["read"]).await,
        ..t
    };
    let (s, _) = ro
        .json(
            Method::POST,
            "batch",
            json!({"operations": [{"op": "delete", "key": "item-1"}]}),
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

on_both_topologies!(listing_pages_through_every_key_once);
async fn listing_pages_through_every_key_once(cluster: bool) {
    let f = Fixture::start(cluster).await;
    let a = f.tenant("alpha", Value::Null, &["read", "write"]).await;
    let b = f.tenant("beta", Value::Null, &["read", "write"]).await;
    let mut expected = BTreeSet::new();
    let puts: Vec<Value> = (0..230)
        .map(|i| {
            expected.insert(format!("p/{i:03}"));
            json!({"op": "put", "key": format!("p/{i:03}"), "value": "x"})
        })
        .collect();
    for chunk in puts.chunks(100) {
        assert_eq!(
            a.json(Method::POST, "batch", json!({"operations": chunk}), &[])
                .await
                .0,
            StatusCode::OK
        );
    }
    for k in ["q/1", "p*", "p?x", "p[1]", "P/upper"] {
        assert_eq!(a.put(&urlencode(k), "x").await, StatusCode::NO_CONTENT);
    }
    assert_eq!(b.put("p%2Fsecret", "b's").await, StatusCode::NO_CONTENT);

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..50 {
        let mut path = "keys?prefix=p%2F&limit=40".to_owned();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (s, page) = a.json(Method::GET, &path, Value::Null, &[]).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        let keys = page["keys"].as_array().unwrap();
        assert!(keys.len() <= 40);
        seen.extend(keys.iter().map(|k| k["key"].as_str().unwrap().to_owned()));
        match page["cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique, expected, "every p/ key of alpha, nothing else");
    assert!(
        !seen.iter().any(|k| k.contains("secret")),
        "never another namespace's key"
    );

    // Glob characters in the prefix are literal.
    let (_, page) = a
        .json(Method::GET, "keys?prefix=p*", Value::Null, &[])
        .await;
    let keys: Vec<&str> = page["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, vec!["p*"]);
    let (_, page) = a
        .json(Method::GET, "keys?prefix=p%5B", Value::Null, &[])
        .await;
    assert_eq!(page["keys"].as_array().unwrap().len(), 1);
    for bad in [
        "keys?limit=0",
        "keys?limit=5000",
        "keys?cursor=garbage",
        "keys?prefix=x&extra=1",
    ] {
        assert_eq!(
            a.json(Method::GET, bad, Value::Null, &[]).await.0,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

on_both_topologies!(flash_sale_never_oversells);
async fn flash_sale_never_oversells(cluster: bool) {
    let f = Fixture::start(cluster).await;
    let t = Arc::new(
        f.tenant(
            "sale",
            json!({"ops_per_sec": 100000, "burst": 100000}),
            &["read", "write"],
        )
        .await,
    );
    let (s, v) = t
        .json(Method::POST, "counters/stock", json!({"delta": 50}), &[])
        .await;
    assert_eq!((s, v["value"].as_i64()), (StatusCode::OK, Some(50)));

    let buyers: Vec<_> = (0..200)
        .map(|_| {
            let t = t.clone();
            tokio::spawn(async move {
                t.json(
                    Method::POST,
                    "counters/stock",
                    json!({"delta": -1, "floor": 0}),
                    &[],
                )
                .await
            })
        })
        .collect();
    let mut sold = 0;
    let mut refused = 0;
    for b in buyers {
        let (s, body) = b.await.unwrap();
        match s {
            StatusCode::OK => sold += 1,
            StatusCode::CONFLICT => {
                refused += 1;
                assert_eq!(body["current"], 0, "a refusal reports the stock left");
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!((sold, refused), (50, 150), "exactly the stock is sold");
    assert_eq!(
        t.json(Method::GET, "counters/stock", Value::Null, &[])
            .await
            .1["value"],
        0
    );

    // Retries with one Idempotency-Key, even concurrent, apply once.
    t.json(Method::POST, "counters/stock", json!({"delta": 10}), &[])
        .await;
    let retries: Vec<_> = (0..10)
        .map(|_| {
            let t = t.clone();
            tokio::spawn(async move {
                t.json(
                    Method::POST,
                    "counters/stock",
                    json!({"delta": -3, "floor": 0}),
                    &[("idempotency-key", "order-42")],
                )
                .await
            })
        })
        .collect();
    for r in retries {
        let (s, body) = r.await.unwrap();
        assert_eq!(
            (s, body["value"].as_i64()),
            (StatusCode::OK, Some(7)),
            "{body}"
        );
    }
    assert_eq!(
        t.json(Method::GET, "counters/stock", Value::Null, &[])
            .await
            .1["value"],
        7
    );
    let (s, body) = t
        .json(
            Method::POST,
            "counters/stock",
            json!({"delta": -4}),
            &[("idempotency-key", "order-42")],
        )
        .await;
    assert_eq!(
        (
            s,
            body["type"].as_str().unwrap().rsplit('/').next().unwrap()
        ),
        (StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key-reused")
    );
    // Ceiling, bad input.
    assert_eq!(
        t.json(
            Method::POST,
            "counters/stock",
            json!({"delta": 100, "ceiling": 50}),
            &[]
        )
        .await
        .0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        t.json(Method::POST, "counters/stock", json!({"delta": "1"}), &[])
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        t.json(
            Method::POST,
            "counters/stock",
            json!({"delta": 1, "floor": 5, "ceiling": 1}),
            &[]
        )
        .await
        .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        t.json(
            Method::POST,
            "counters/stock",
            json!({"delta": i64::MAX}),
            &[]
        )
        .await
        .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        t.json(Method::GET, "counters/none", Value::Null, &[])
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        t.send(Method::DELETE, "counters/stock", None, &[])
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
}

on_both_topologies!(stampede_leases);
async fn stampede_leases(cluster: bool) {
    let f = Fixture::start(cluster).await;
    let t = f.tenant("hot", Value::Null, &["read", "write"]).await;
    // First miss gets the lease; the others are told to retry.
    let r = t.send(Method::GET, "keys/page?lease=5000", None, &[]).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let lease = r.headers()["lease-token"].to_str().unwrap().to_owned();
    for _ in 0..3 {
        let r = t.send(Method::GET, "keys/page?lease=5000", None, &[]).await;
        assert!(r.headers().get("lease-token").is_none());
        assert_eq!(r.headers()["retry-after"], "1");
        assert_eq!(
            problem(r).await,
            (StatusCode::NOT_FOUND, "lease-pending".into())
        );
    }
    assert_eq!(
        t.get("page").await.0,
        StatusCode::NOT_FOUND,
        "a plain read of a leased key is a miss"
    );
    // The holder fills it.
    let r = t
        .send(
            Method::PUT,
            "keys/page",
            Some(b"rendered".to_vec()),
            &[("lease-token", &lease)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(t.get("page").await, (StatusCode::OK, "rendered".into()));
    let r = t.send(Method::GET, "keys/page?lease=5000", None, &[]).await;
    assert_eq!(r.status(), StatusCode::OK, "a hit needs no lease");

    // A delete between lease and fill voids the lease: the stale fill is refused.
    assert_eq!(
        t.send(Method::DELETE, "keys/page", None, &[])
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    let r = t.send(Method::GET, "keys/page?lease=5000", None, &[]).await;
    let lease = r.headers()["lease-token"].to_str().unwrap().to_owned();
    assert_eq!(
        t.send(Method::DELETE, "keys/page", None, &[])
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    let r = t
        .send(
            Method::PUT,
            "keys/page",
            Some(b"stale".to_vec()),
            &[("lease-token", &lease)],
        )
        .await;
    assert_eq!(
        problem(r).await,
        (StatusCode::CONFLICT, "lease-void".into())
    );
    assert_eq!(t.get("page").await.0, StatusCode::NOT_FOUND);
    // A lease expires by itself.
    let r = t.send(Method::GET, "keys/page?lease=200", None, &[]).await;
    let lease = r.headers()["lease-token"].to_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = t
        .send(
            Method::PUT,
            "keys/page",
            Some(b"late".to_vec()),
            &[("lease-token", &lease)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(
        t.send(Method::GET, "keys/page?lease=0", None, &[])
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
}

on_both_topologies!(tenants_never_reach_each_other);
async fn tenants_never_reach_each_other(cluster: bool) {
    let f = Fixture::start(cluster).await;
    let a = f.tenant("tenant-a", Value::Null, &["read", "write"]).await;
    let b = f.tenant("tenant-b", Value::Null, &["read", "write"]).await;
    for key in ["secret", "b:secret", "x"] {
        assert_eq!(b.put(key, "b-data").await, StatusCode::NO_CONTENT);
    }
    let hostile = [
        "*",
        "%5Ba-z%5D*",
        "%3F",
        "%5C",
        "%7Bb%7Dx",
        "%7D%7B",
        "..",
        "..%2Fb",
        "%2E%2E%2Ftenant-b%2Fkeys%2Fsecret",
        "%00",
        "%3A",
        "b%3Asecret",
        ":k:secret",
        "tenant-b:k:secret",
        "%FF%FE",
        "..%2F..%2Ftenant-b",
    ];
    let multibyte = urlencode(&"ключ".repeat(128));
    for key in hostile
        .iter()
        .map(|k| k.to_string())
        .chain([multibyte.clone(), "k".repeat(600)])
    {
        let _ = a
            .send(
                Method::PUT,
                &format!("keys/{key}"),
                Some(b"a-data".to_vec()),
                &[],
            )
            .await;
        let _ = a.get(&key).await;
        let _ = a
            .send(Method::DELETE, &format!("keys/{key}"), None, &[])
            .await;
        let (_, page) = a
            .json(Method::GET, &format!("keys?prefix={key}"), Value::Null, &[])
            .await;
        for k in page["keys"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            assert_ne!(k["key"].as_str(), Some("b-data"));
        }
        let ops = json!({"operations": [
            {"op": "get", "key": percent_decode(&key)}, {"op": "put", "key": percent_decode(&key), "value": "a"},
            {"op": "delete", "key": percent_decode(&key)}]});
        let _ = a.json(Method::POST, "batch", ops, &[]).await;
    }
    // An empty key addresses nothing (no route), never the namespace prefix itself.
    let r = a.send(Method::GET, "keys/", None, &[]).await;
    assert_eq!(problem(r).await, (StatusCode::NOT_FOUND, "no-route".into()));
    // tenant-b's data is untouched, and a's token cannot reach it by the front door.
    for key in ["secret", "b:secret", "x"] {
        assert_eq!(b.get(key).await, (StatusCode::OK, "b-data".into()), "{key}");
        assert!(
            f.deployment
                .raw_get(format!("larder:tenant-b:k:{key}").as_bytes())
                .await
                .unwrap()
                .ends_with(b"b-data"),
            "{key}"
        );
    }
    let cross = Tenant {
        ns: "tenant-b".into(),
        ..a
    };
    assert_eq!(
        problem(cross.send(Method::GET, "keys/secret", None, &[]).await).await,
        (StatusCode::FORBIDDEN, "forbidden".into())
    );
    let (_, page) = b.json(Method::GET, "keys", Value::Null, &[]).await;
    let bkeys: BTreeSet<&str> = page["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        bkeys,
        BTreeSet::from(["secret", "b:secret", "x"]),
        "nothing of a's appeared in b"
    );
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked() {
    let f = Fixture::start(false).await;
    let good = f.tenant("vault", Value::Null, &["read", "write"]).await;
    f.tenant("other", Value::Null, &["read"]).await;
    assert_eq!(good.put("k", "v").await, StatusCode::NO_CONTENT);
    let claims = |patch: Value| {
        let mut c = json!({"iss": ISSUER, "aud": TENANT_AUDIENCE, "sub": "t", "exp": now() + 600, "nbf": now(), "iat": now(), "jti": format!("j-{}", rand_id()), "ns": ["vault"], "perms": ["read", "write"]});
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    let public_key = {
        let snap = f.registry.children(paths::KEYS).await.unwrap();
        let key: larder_registry::model::SigningKey = f
            .registry
            .get(&paths::key(&snap[0]))
            .await
            .unwrap()
            .unwrap()
            .value;
        key.public_key
    };
    let hs256 = {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some(f.registry.children(paths::KEYS).await.unwrap()[0].clone());
        jsonwebtoken::encode(
            &h,
            &claims(json!({})),
            &jsonwebtoken::EncodingKey::from_secret(public_key.as_bytes()),
        )
        .unwrap()
    };
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims(json!({})))
    );
    let revoked_jti = format!("revoked-{}", rand_id());
    f.registry
        .create(
            &paths::revoked(&revoked_jti),
            &Revocation {
                jti: revoked_jti.clone(),
                expires_at: now() + 600,
                revoked_at_ms: larder_registry::now_ms(),
            },
        )
        .await
        .unwrap();
    let mut unknown_kid = jsonwebtoken::decode_header(&good.token).unwrap();
    unknown_kid.kid = Some("nope".into());
    let cases: Vec<(&str, String, StatusCode)> = vec![
        ("alg none", none, StatusCode::UNAUTHORIZED),
        (
            "HS256 with the public key as secret",
            hs256,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "expired",
            sign(f.keys.path(), claims(json!({"exp": now() - 120}))),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "nbf in the future",
            sign(f.keys.path(), claims(json!({"nbf": now() + 600}))),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "wrong aud",
            sign(f.keys.path(), claims(json!({"aud": "larder-admin"}))),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "wrong iss",
            sign(f.keys.path(), claims(json!({"iss": "evil"}))),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "exp as a string",
            sign(
                f.keys.path(),
                claims(json!({"exp": (now() + 600).to_string()})),
            ),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "no exp",
            sign(f.keys.path(), {
                let mut c = claims(json!({}));
                c.as_object_mut().unwrap().remove("exp");
                c
            }),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "unknown kid",
            {
                let parts: Vec<&str> = good.token.split('.').collect();
                format!(
                    "{}.{}.{}",
                    b64(&serde_json::to_value(&unknown_kid).unwrap()),
                    parts[1],
                    parts[2]
                )
            },
            StatusCode::UNAUTHORIZED,
        ),
        (
            "revoked jti",
            sign(f.keys.path(), claims(json!({"jti": revoked_jti}))),
            StatusCode::UNAUTHORIZED,
        ),
        ("garbage", "not.a.token".into(), StatusCode::UNAUTHORIZED),
        (
            "another namespace",
            sign(f.keys.path(), claims(json!({"ns": ["other"]}))),
            StatusCode::FORBIDDEN,
        ),
        (
            "read-only writing",
            sign(f.keys.path(), claims(json!({"perms": ["read"]}))),
            StatusCode::FORBIDDEN,
        ),
        (
            "valid within leeway",
            sign(f.keys.path(), claims(json!({"exp": now() - 5}))),
            StatusCode::NO_CONTENT,
        ),
    ];
    for (what, token, expected) in cases {
        let t = Tenant {
            token,
            http: good.http.clone(),
            gw: good.gw.clone(),
            ns: "vault".into(),
        };
        let r = t
            .send(Method::PUT, "keys/k", Some(b"w".to_vec()), &[])
            .await;
        let status = r.status();
        assert_eq!(status, expected, "{what}");
        if status != StatusCode::NO_CONTENT {
            assert_eq!(
                r.headers()["content-type"],
                "application/problem+json",
                "{what}"
            );
        }
    }
    // A cached token is refused once revoked (the revocation arrives by watch).
    let jti: String = {
        let parts: Vec<&str> = good.token.split('.').collect();
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        claims["jti"].as_str().unwrap().to_owned()
    };
    assert_eq!(good.get("k").await.0, StatusCode::OK);
    let started = Instant::now();
    f.registry
        .create(
            &paths::revoked(&jti),
            &Revocation {
                jti: jti.clone(),
                expires_at: now() + 3600,
                revoked_at_ms: 0,
            },
        )
        .await
        .unwrap();
    eventually(
        Duration::from_secs(5),
        "the revocation reaches the gateway",
        || async { good.get("k").await.0 == StatusCode::UNAUTHORIZED },
    )
    .await;
    println!(
        "revocation applied by the gateway after {:?}",
        started.elapsed()
    );
}

fn rand_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_namespace_changes_apply_live() {
    let f = Fixture::start(false).await;
    let t = f
        .tenant(
            "metered",
            json!({"ops_per_sec": 5, "burst": 5}),
            &["read", "write"],
        )
        .await;
    // The tenant() readiness probe may have used some budget; wait for a full bucket.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let r = t.send(Method::GET, "keys/k", None, &[]).await;
        statuses.push(r.status());
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(
                r.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
                    >= 1
            );
            assert_eq!(r.headers()["ratelimit-remaining"], "0");
            assert!(
                r.headers().contains_key("ratelimit-limit")
                    && r.headers().contains_key("ratelimit-reset")
            );
            assert_eq!(problem(r).await.1, "rate-limited");
        } else {
            assert!(r.headers().contains_key("ratelimit-remaining"));
        }
    }
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(
        limited >= 3,
        "burst of 5 allows at most ~5 of 8: {statuses:?}"
    );

    // Raising the limit and shrinking the value size apply without a restart.
    f.change_namespace("metered", |n| {
        n.limits.ops_per_sec = 100_000;
        n.limits.burst = 100_000;
        n.limits.max_value_bytes = 4;
    })
    .await;
    let started = Instant::now();
    eventually(
        Duration::from_secs(5),
        "the new limits reach the gateway",
        || async { t.put("k", "12345").await == StatusCode::PAYLOAD_TOO_LARGE },
    )
    .await;
    println!(
        "limit change applied by the gateway after {:?}",
        started.elapsed()
    );
    assert_eq!(t.put("k", "1234").await, StatusCode::NO_CONTENT);

    // Disabling refuses the namespace; enabling restores it.
    f.change_namespace("metered", |n| n.state = NamespaceState::Disabled)
        .await;
    eventually(
        Duration::from_secs(5),
        "disabled namespace is refused",
        || async { t.get("k").await.0 == StatusCode::FORBIDDEN },
    )
    .await;
    f.change_namespace("metered", |n| n.state = NamespaceState::Active)
        .await;
    eventually(Duration::from_secs(5), "enabled again", || async {
        t.get("k").await.0 == StatusCode::OK
    })
    .await;
    // An unknown namespace named by a token is 404.
    let ghost = Tenant {
        ns: "ghost".into(),
        token: sign(
            f.keys.path(),
            json!({"iss": ISSUER, "aud": TENANT_AUDIENCE, "sub": "t", "exp": now() + 60, "jti": "g", "ns": ["ghost"], "perms": ["read"]}),
        ),
        ..t
    };
    assert_eq!(
        problem(ghost.send(Method::GET, "keys/k", None, &[]).await).await,
        (StatusCode::NOT_FOUND, "namespace-not-found".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_deployment_fails_fast_and_alone() {
    let f = Fixture::start(false).await;
    let mut other = Redis::start().await;
    f.admin(Method::POST, "/v1/clusters", json!({"name": "second", "topology": "standalone", "endpoints": [other.address()], "capacity_bytes": 1u64 << 30})).await;
    let healthy = f.tenant("healthy", Value::Null, &["read", "write"]).await;
    f.admin(
        Method::POST,
        "/v1/namespaces",
        json!({"name": "doomed", "owner": "t", "cluster": "second"}),
    )
    .await;
    let doomed = Tenant {
        ns: "doomed".into(),
        token: f.token("doomed", &["read", "write"]).await,
        http: f.http.clone(),
        gw: f.gw.url.clone(),
    };
    eventually(Duration::from_secs(5), "doomed is served", || async {
        doomed.put("k", "v").await == StatusCode::NO_CONTENT
    })
    .await;

    // Frozen Redis: 504 within the deadline (2 s in tests), never a hang.
    other.pause();
    let started = Instant::now();
    let r = doomed.send(Method::GET, "keys/k", None, &[]).await;
    let took = started.elapsed();
    assert_eq!(
        problem(r).await,
        (StatusCode::GATEWAY_TIMEOUT, "backend-timeout".into())
    );
    assert!(took < Duration::from_secs(4), "answered after {took:?}");
    assert_eq!(
        healthy.put("k", "fine").await,
        StatusCode::NO_CONTENT,
        "other namespaces unaffected"
    );
    other.resume();

    // Dead Redis: 503 with Retry-After, fast; the healthy namespace keeps working.
    other.kill();
    let mut saw_503 = false;
    for _ in 0..5 {
        let started = Instant::now();
        let r = doomed.send(Method::GET, "keys/k", None, &[]).await;
        assert!(started.elapsed() < Duration::from_secs(3));
        if r.status() == StatusCode::SERVICE_UNAVAILABLE {
            assert!(r.headers().contains_key("retry-after"));
            assert_eq!(problem(r).await.1, "backend-unavailable");
            saw_503 = true;
        }
        assert_eq!(healthy.get("k").await, (StatusCode::OK, "fine".into()));
    }
    assert!(saw_503);
    // It comes back by itself once Redis does.
    other.restart().await;
    eventually(
        Duration::from_secs(10),
        "the deployment is served again",
        || async { doomed.put("k", "back").await == StatusCode::NO_CONTENT },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_requests_never_desync_replies() {
    let f = Fixture::start(false).await;
    let t = Arc::new(
        f.tenant(
            "cancel",
            json!({"ops_per_sec": 1000000, "burst": 1000000}),
            &["read", "write"],
        )
        .await,
    );
    for i in 0..50 {
        assert_eq!(
            t.put(&format!("key-{i}"), &format!("value-of-key-{i}"))
                .await,
            StatusCode::NO_CONTENT
        );
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(3))
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let t = t.clone();
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut cancelled, mut wrong) = (0, 0, 0);
            for n in 0..250 {
                let i = (w * 31 + n * 7) % 50;
                let url = format!("{}/v1/namespaces/cancel/keys/key-{i}", t.gw);
                // Every other request may be cut off by its 3 ms client timeout.
                let c = if n % 2 == 0 { &client } else { &t.http };
                match c.get(&url).bearer_auth(&t.token).send().await {
                    Ok(r) => match r.text().await {
                        Ok(body) if body == format!("value-of-key-{i}") => ok += 1,
                        Ok(body) if body.contains("rate-limited") => {}
                        Ok(body) => {
                            wrong += 1;
                            eprintln!("key-{i} got {body}");
                        }
                        Err(_) => cancelled += 1,
                    },
                    Err(_) => cancelled += 1,
                }
            }
            (ok, cancelled, wrong)
        }));
    }
    let (mut ok, mut cancelled, mut wrong) = (0, 0, 0);
    for task in tasks {
        let (o, c, w) = task.await.unwrap();
        ok += o;
        cancelled += c;
        wrong += w;
    }
    println!(
        "cancellation run: {ok} answered, {cancelled} cancelled by the client, {wrong} mismatched"
    );
    assert_eq!(wrong, 0, "a reply was delivered to the wrong request");
    assert!(ok >= 1000, "the uncancelled half answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_a_new_master_and_reports_what_it_applied() {
    let zk = ZooKeeper::start().await;
    let master = Redis::start().await;
    let replica = Redis::start_replica_of(&master).await;
    let root = unique_root();
    let keys = tempfile::tempdir().unwrap();
    let cp = platform::control_plane(&zk, &root, keys.path()).await;
    let gw = platform::gateway(&zk, &root).await;
    let registry = Registry::connect(registry_config(&zk, &root), Watch::None)
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let admin = sign(keys.path(), admin_claims());
    let post = |path: &str, body: Value| {
        http.post(format!("{}{path}", cp.url))
            .bearer_auth(&admin)
            .json(&body)
            .send()
    };
    assert!(post("/v1/clusters", json!({"name": "main", "topology": "standalone", "endpoints": [master.address()], "replicas": [replica.address()], "capacity_bytes": 1u64 << 30})).await.unwrap().status().is_success());
    assert!(
        post(
            "/v1/namespaces",
            json!({"name": "app", "owner": "t", "cluster": "main"})
        )
        .await
        .unwrap()
        .status()
        .is_success()
    );
    let token: Value = post(
        "/v1/namespaces/app/tokens",
        json!({"subject": "t", "permissions": ["read", "write"]}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let t = Tenant {
        http: http.clone(),
        gw: gw.url.clone(),
        ns: "app".into(),
        token: token["token"].as_str().unwrap().into(),
    };
    eventually(Duration::from_secs(5), "served", || async {
        t.put("before", "1").await == StatusCode::NO_CONTENT
    })
    .await;

    // Promote the replica by hand and point the registry at it, as a failover does —
    // once replication (asynchronous) has copied the write.
    let mut c = replica
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "the replica has the write", || {
        let mut c = c.clone();
        async move {
            let v: Option<Vec<u8>> = redis::cmd("GET")
                .arg("larder:app:k:before")
                .query_async(&mut c)
                .await
                .unwrap();
            v.is_some()
        }
    })
    .await;
    let () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query_async(&mut c)
        .await
        .unwrap();
    let written = registry
        .update::<larder_registry::model::Cluster, _>(&paths::cluster("main"), |cl| {
            cl.endpoints = vec![replica.address()];
            cl.replicas = vec![];
            cl.epoch += 1;
            Ok(())
        })
        .await
        .unwrap();
    eventually(
        Duration::from_secs(5),
        "writes reach the new master",
        || async {
            t.put("after", "2").await == StatusCode::NO_CONTENT && {
                let v: Option<Vec<u8>> = redis::cmd("GET")
                    .arg("larder:app:k:after")
                    .query_async(&mut c.clone())
                    .await
                    .unwrap();
                v.is_some()
            }
        },
    )
    .await;
    assert_eq!(
        t.get("before").await,
        (StatusCode::OK, "1".into()),
        "replicated data is served by the new master"
    );

    // The gateway's znode and /readyz report the configuration it applied.
    eventually(
        Duration::from_secs(5),
        "the gateway reports the applied zxid",
        || async {
            let gws = registry.children(paths::GATEWAYS).await.unwrap();
            let mut all = Vec::new();
            for g in gws {
                all.push(
                    registry
                        .get::<larder_registry::model::GatewayRecord>(&paths::gateway(&g))
                        .await
                        .unwrap()
                        .unwrap()
                        .value,
                );
            }
            !all.is_empty() && all.iter().all(|g| g.applied_zxid >= written.modified_zxid)
        },
    )
    .await;
    let ready: Value = http
        .get(format!("{}/readyz", gw.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        ready["applied_zxid"].as_i64().unwrap() >= written.modified_zxid,
        "{ready}"
    );
}
