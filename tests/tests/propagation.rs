//! Admin changes reaching a running gateway: a revoked token, a lowered limit, a
//! disabled namespace. Each is measured from the admin call to the first request the
//! gateway answers differently, and printed; the bound asserted is generous, the figure
//! is what matters.

use std::time::{Duration, Instant};

use larder_control_plane::api::{
    CreateNamespace, IssueToken, LimitsPatch, RegisterCluster, UpdateNamespace,
};
use larder_registry::auth::Permission;
use larder_registry::model::{Limits, Topology};
use larder_tests::platform;
use larder_tests::{Redis, ZooKeeper, eventually, unique_root};
use reqwest::StatusCode;

/// The bound asserted on every propagation.
const BOUND: Duration = Duration::from_secs(2);

/// Polls `request` every 2 ms until it answers `want`; returns the time since `since`.
async fn until_status<F, Fut>(
    since: Instant,
    want: StatusCode,
    what: &str,
    mut request: F,
) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = StatusCode>,
{
    loop {
        if request().await == want {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "{what}: the gateway did not answer {want} within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_limits_and_state_reach_a_running_gateway_quickly() {
    larder_tests::init_tracing();
    let zk = ZooKeeper::start().await;
    let master = Redis::start().await;
    let root = unique_root();
    let keys = tempfile::tempdir().unwrap();
    let cp = platform::control_plane_with(&zk, &root, keys.path(), |c| {
        c.usage.sample_interval_ms = 200;
    })
    .await;
    let gw = platform::gateway(&zk, &root).await;
    let admin = platform::admin(&cp, keys.path());
    admin
        .register_cluster(&RegisterCluster {
            name: "main".into(),
            topology: Topology::Standalone,
            endpoints: vec![master.address()],
            replicas: vec![],
            region: "local".into(),
            capacity_bytes: 256 << 20,
            down_after_ms: None,
        })
        .await
        .unwrap();
    admin
        .create_namespace(&CreateNamespace {
            name: "orders".into(),
            owner: "team-orders".into(),
            cluster: None,
            region: None,
            limits: Some(Limits {
                max_value_bytes: 4096,
                ..Limits::default()
            }),
            near_cache: None,
        })
        .await
        .unwrap();
    let issue = || {
        let admin = admin.clone();
        async move {
            admin
                .issue_token(
                    "orders",
                    &IssueToken {
                        subject: "orders-svc".into(),
                        permissions: vec![Permission::Read, Permission::Write],
                        ttl_s: Some(600),
                    },
                )
                .await
                .unwrap()
        }
    };
    let http = reqwest::Client::new();
    let url = format!("{}/v1/namespaces/orders/keys/item", gw.url);
    let put = move |token: String, size: usize| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            http.put(&url)
                .bearer_auth(token)
                .body(vec![b'x'; size])
                .send()
                .await
                .unwrap()
                .status()
        }
    };

    // Revocation.
    let doomed = issue().await;
    let kept = issue().await;
    assert_eq!(
        put(doomed.token.clone(), 2000).await,
        StatusCode::NO_CONTENT
    );
    let started = Instant::now();
    admin.revoke_token(&doomed.jti).await.unwrap();
    let api = started.elapsed();
    let revoked = until_status(started, StatusCode::UNAUTHORIZED, "revocation", || {
        put(doomed.token.clone(), 10)
    })
    .await;
    println!(
        "revocation reached the gateway {} ms after the admin call started (the call itself took {} ms)",
        revoked.as_millis(),
        api.as_millis()
    );
    assert!(revoked < BOUND, "revocation took {revoked:?}");
    assert_eq!(put(kept.token.clone(), 10).await, StatusCode::NO_CONTENT);

    // A lower value limit.
    assert_eq!(put(kept.token.clone(), 2000).await, StatusCode::NO_CONTENT);
    let started = Instant::now();
    admin
        .update_namespace(
            "orders",
            &UpdateNamespace {
                limits: Some(LimitsPatch {
                    max_value_bytes: Some(1024),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let api = started.elapsed();
    let limited = until_status(
        started,
        StatusCode::PAYLOAD_TOO_LARGE,
        "limit change",
        || put(kept.token.clone(), 2000),
    )
    .await;
    println!(
        "max_value_bytes 4096 -> 1024 was enforced by the gateway {} ms after the admin call started (the call itself took {} ms)",
        limited.as_millis(),
        api.as_millis()
    );
    assert!(limited < BOUND, "limit change took {limited:?}");
    assert_eq!(put(kept.token.clone(), 1000).await, StatusCode::NO_CONTENT);

    // Disabling and enabling.
    let started = Instant::now();
    admin.disable_namespace("orders").await.unwrap();
    let disabled = until_status(started, StatusCode::FORBIDDEN, "disable", || {
        put(kept.token.clone(), 10)
    })
    .await;
    let started = Instant::now();
    admin.enable_namespace("orders").await.unwrap();
    let enabled = until_status(started, StatusCode::NO_CONTENT, "enable", || {
        put(kept.token.clone(), 10)
    })
    .await;
    println!(
        "disable took {} ms and enable {} ms to reach the gateway",
        disabled.as_millis(),
        enabled.as_millis()
    );
    assert!(disabled < BOUND && enabled < BOUND);

    // The gateway's traffic shows up as the namespace's ops/s.
    let traffic = tokio::spawn({
        let put = put.clone();
        let token = kept.token.clone();
        async move {
            for _ in 0..200 {
                put(token.clone(), 10).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    eventually(
        Duration::from_secs(10),
        "ops/s is sampled from the gateway",
        || async {
            admin
                .namespace("orders")
                .await
                .ok()
                .and_then(|n| n.usage)
                .and_then(|u| u.ops_per_sec)
                .is_some_and(|ops| ops > 1.0)
        },
    )
    .await;
    traffic.await.unwrap();
    let usage = admin.namespace("orders").await.unwrap().usage.unwrap();
    assert_eq!(usage.keys, 1, "{usage:?}");
}
