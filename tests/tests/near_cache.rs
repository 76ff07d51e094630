//! The near cache across two gateways: a write through one is visible through the other
//! within the namespace's staleness bound (measured, and the test fails past it), and a
//! write through the same gateway is never served stale. Hot keys are detected and, under
//! the `auto` policy, served from the near cache.

use std::time::{Duration, Instant};

use larder_tests::platform;
use larder_tests::{Redis, ZooKeeper, eventually, unique_root};
use reqwest::StatusCode;
use serde_json::{Value, json};

struct Setup {
    _zk: ZooKeeper,
    _redis: Redis,
    cp: platform::Service,
    admin: String,
    gateways: Vec<platform::Service>,
    token: String,
    http: reqwest::Client,
}

async fn setup(near_cache: Value, gateways: usize) -> Setup {
    larder_tests::init_tracing();
    let zk = ZooKeeper::start().await;
    let redis = Redis::start().await;
    let root = unique_root();
    let keys = tempfile::tempdir().unwrap();
    let cp = platform::control_plane(&zk, &root, keys.path()).await;
    let mut gws = Vec::new();
    for _ in 0..gateways {
        gws.push(platform::gateway(&zk, &root).await);
    }
    let http = reqwest::Client::new();
    let admin = platform::admin_token(keys.path());
    let post = |path: &str, body: Value| {
        http.post(format!("{}{path}", cp.url))
            .bearer_auth(&admin)
            .json(&body)
            .send()
    };
    assert!(post("/v1/clusters", json!({"name": "main", "topology": "standalone", "endpoints": [redis.address()], "capacity_bytes": 1u64 << 30})).await.unwrap().status().is_success());
    let ns = json!({"name": "hot", "owner": "t", "cluster": "main", "near_cache": near_cache, "limits": {"ops_per_sec": 1000000, "burst": 1000000}});
    let r = post("/v1/namespaces", ns).await.unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let token: Value = post(
        "/v1/namespaces/hot/tokens",
        json!({"subject": "t", "permissions": ["read", "write"]}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    for gw in &gws {
        eventually(
            Duration::from_secs(5),
            "gateway serves the namespace",
            || async {
                http.get(format!("{}/v1/namespaces/hot/keys/x", gw.url))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    == StatusCode::NOT_FOUND
            },
        )
        .await;
    }
    Setup {
        _zk: zk,
        _redis: redis,
        cp,
        admin,
        gateways: gws,
        token,
        http,
    }
}

impl Setup {
    async fn put(&self, gw: usize, key: &str, value: &str) {
        let r = self
            .http
            .put(format!(
                "{}/v1/namespaces/hot/keys/{key}",
                self.gateways[gw].url
            ))
            .bearer_auth(&self.token)
            .body(value.to_owned())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }

    async fn get(&self, gw: usize, key: &str) -> String {
        let r = self
            .http
            .get(format!(
                "{}/v1/namespaces/hot/keys/{key}",
                self.gateways[gw].url
            ))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.text().await.unwrap()
    }

    async fn metric(&self, gw: usize, name: &str) -> f64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.gateways[gw].url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_another_gateway_are_seen_within_the_bound() {
    const BOUND_MS: u64 = 300;
    let s = setup(json!({"mode": "on", "max_staleness_ms": BOUND_MS}), 2).await;
    let mut worst = Duration::ZERO;
    for round in 0..5 {
        let key = format!("page-{round}");
        s.put(0, &key, "v1").await;
        // Gateway 1 caches v1.
        assert_eq!(s.get(1, &key).await, "v1");
        assert_eq!(s.get(1, &key).await, "v1");
        // A write through gateway 0 ...
        s.put(0, &key, "v2").await;
        let written = Instant::now();
        // ... is served by gateway 0 at once (never stale through the writer) ...
        assert_eq!(s.get(0, &key).await, "v2");
        // ... and by gateway 1 within the bound.
        loop {
            if s.get(1, &key).await == "v2" {
                break;
            }
            assert!(
                written.elapsed() < Duration::from_millis(BOUND_MS * 3),
                "still stale after {:?}",
                written.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let seen = written.elapsed();
        worst = worst.max(seen);
        assert!(
            seen <= Duration::from_millis(BOUND_MS + 100),
            "round {round}: stale for {seen:?}, bound {BOUND_MS} ms"
        );
    }
    println!("near cache: worst cross-gateway staleness {worst:?} with a bound of {BOUND_MS} ms");
    assert!(
        s.metric(1, "larder_gateway_near_cache_hits_total").await >= 5.0,
        "reads were served from the near cache"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_never_serves_its_own_writes_stale() {
    let s = setup(json!({"mode": "on", "max_staleness_ms": 60000}), 1).await;
    for i in 0..200 {
        let value = format!("v{i}");
        s.put(0, "k", &value).await;
        assert_eq!(
            s.get(0, "k").await,
            value,
            "read after write through the same gateway"
        );
        assert_eq!(s.get(0, "k").await, value);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_keys_are_found_and_cached_under_auto() {
    let s = setup(json!({"mode": "auto", "max_staleness_ms": 1000}), 1).await;
    s.put(0, "celebrity", "x").await;
    for i in 0..50 {
        s.put(0, &format!("cold-{i}"), "y").await;
    }
    let before = s.metric(0, "larder_gateway_near_cache_hits_total").await;
    for round in 0..400 {
        s.get(0, "celebrity").await;
        if round % 20 == 0 {
            s.get(0, &format!("cold-{}", round / 20)).await;
        }
    }
    let top: Value = s
        .http
        .get(format!(
            "{}/v1/namespaces/hot/hotkeys?limit=3",
            s.gateways[0].url
        ))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(top["keys"][0]["key"], "celebrity", "{top}");
    assert!(
        top["keys"][0]["rate"].as_f64().unwrap() > top["keys"][1]["rate"].as_f64().unwrap_or(0.0)
    );
    let served = s.metric(0, "larder_gateway_near_cache_hits_total").await - before;
    assert!(
        served >= 100.0,
        "the hot key is served from the near cache: {served}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_sums_hot_keys_across_gateways() {
    let s = setup(json!({"mode": "off"}), 2).await;
    s.put(0, "celebrity", "x").await;
    s.put(0, "warm", "y").await;
    for _ in 0..150 {
        s.get(0, "celebrity").await;
        s.get(1, "celebrity").await;
    }
    for _ in 0..40 {
        s.get(1, "warm").await;
    }
    let view: Value = s
        .http
        .get(format!("{}/v1/namespaces/hot/hotkeys?limit=2", s.cp.url))
        .bearer_auth(&s.admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["gateways"], 2, "{view}");
    assert_eq!(view["missing"].as_array().unwrap().len(), 0, "{view}");
    let keys = view["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0]["key"], "celebrity");
    assert_eq!(keys[1]["key"], "warm");
    // Both gateways' traffic counts: the sum is above what either saw alone.
    let one: Value = s
        .http
        .get(format!(
            "{}/v1/namespaces/hot/hotkeys?limit=1",
            s.gateways[0].url
        ))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        keys[0]["rate"].as_f64().unwrap() > one["keys"][0]["rate"].as_f64().unwrap() * 1.5,
        "{view} vs {one}"
    );
    let bad = s
        .http
        .get(format!("{}/v1/namespaces/hot/hotkeys?limit=0", s.cp.url))
        .bearer_auth(&s.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}
