//! ZooKeeper outages under steady load, the whole platform running: a control plane, a
//! gateway and an agent against a real ZooKeeper and a real Redis.
//!
//! Two faults, each lasting 60 s (longer with `LARDER_SOAK_SECS`):
//! - ZooKeeper stopped (SIGTERM) and started again on the same data directory;
//! - ZooKeeper frozen with SIGSTOP and thawed with SIGCONT: its connections stay open
//!   and nothing answers, as in a partition or a long pause.
//!
//! Both far exceed the session timeout of every component (4 s), so every session
//! expires; the test checks that it did (each ephemeral znode is owned by a new session
//! afterwards). Throughout, a few clients PUT and GET through the gateway at a bounded
//! rate: not one request may fail and every read returns what its client wrote. The
//! gateway stays ready and reports its growing staleness; the control plane refuses
//! mutations promptly with 503 problem+json. Once ZooKeeper is back, without restarting
//! anything: the gateway reconnects, its `/gateways/<id>` and the agent's health report
//! are re-created, the control plane leads again, and admin changes made after the
//! outage reach the gateway (its watch fires). Each figure is printed.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use larder_control_plane::api::{CreateNamespace, IssueToken, IssuedToken, RegisterCluster};
use larder_control_plane::client::Client as AdminClient;
use larder_registry::auth::Permission;
use larder_registry::model::{Limits, NodeHealth, Topology};
use larder_registry::{codec, paths};
use larder_tests::platform::{self, Service};
use larder_tests::{REQUEST_TIMEOUT, Redis, SESSION_TIMEOUT, ZooKeeper, eventually, unique_root};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use zookeeper_client as zk;

/// How long ZooKeeper stays away unless `LARDER_SOAK_SECS` says longer.
const DEFAULT_OUTAGE: Duration = Duration::from_secs(60);

/// Concurrent load clients; each does PUT then GET of its own keys, pausing [`PACE`]
/// between pairs: about 150 requests/s in all, well under the namespace's rate limit.
const CLIENTS: usize = 4;
const PACE: Duration = Duration::from_millis(40);

/// A load request that takes longer than this counts as failed.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the control plane may take to refuse a mutation while ZooKeeper is away.
const REFUSAL_BOUND: Duration = Duration::from_secs(3);

/// How long each item may take to recover once ZooKeeper is back.
const RECOVERY_BOUND: Duration = Duration::from_secs(30);

/// How long an admin change made after the outage may take to reach the gateway (the
/// propagation tests hold a healthy platform to the same bound).
const PROPAGATION_BOUND: Duration = Duration::from_secs(2);

/// The outage: [`DEFAULT_OUTAGE`], or `LARDER_SOAK_SECS` seconds for a soak run
/// (`LARDER_SOAK_SECS=900 ./deploy/local/test.sh`). Shorter than the default is refused:
/// the guarantee under test is about a 60 s outage.
fn outage() -> Duration {
    match std::env::var("LARDER_SOAK_SECS") {
        Err(_) => DEFAULT_OUTAGE,
        Ok(text) => {
            let secs: u64 = text.trim().parse().unwrap_or_else(|_| {
                panic!("LARDER_SOAK_SECS={text:?}: expected a whole number of seconds")
            });
            assert!(
                secs >= DEFAULT_OUTAGE.as_secs(),
                "LARDER_SOAK_SECS={secs}: a soak outage is at least {} s",
                DEFAULT_OUTAGE.as_secs()
            );
            Duration::from_secs(secs)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// SIGTERM, then started again on the same port and data directory.
    Stop,
    /// SIGSTOP, then SIGCONT.
    Freeze,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Stop => "stopped",
            Fault::Freeze => "frozen (SIGSTOP)",
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_stopped_under_load_loses_no_request_and_everything_recovers() {
    outage_under_load(Fault::Stop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_frozen_under_load_loses_no_request_and_everything_recovers() {
    outage_under_load(Fault::Freeze).await;
}

// ----- the platform ------------------------------------------------------------------

/// Everything one scenario runs, started and provisioned.
struct Platform {
    zk: ZooKeeper,
    root: String,
    redis: Redis,
    cp: Service,
    gw: Service,
    _agent: Service,
    keys: tempfile::TempDir,
    admin: AdminClient,
    /// The gateway's id, as registered under `/gateways`.
    gateway_id: String,
    /// A read-write token of namespace `orders`, valid well past the outage.
    token: String,
    http: reqwest::Client,
}

impl Platform {
    async fn start(outage: Duration) -> Platform {
        larder_tests::init_tracing();
        let zk = ZooKeeper::start().await;
        let redis = Redis::start().await;
        let root = unique_root();
        let keys = tempfile::tempdir().unwrap();
        // Every component uses the harness's registry settings: a 4 s session timeout,
        // so a 60 s outage expires every session.
        let cp = platform::control_plane(&zk, &root, keys.path()).await;
        let gw = platform::gateway(&zk, &root).await;
        let admin = platform::admin(&cp, keys.path());
        admin
            .register_cluster(&RegisterCluster {
                name: "main".into(),
                topology: Topology::Standalone,
                endpoints: vec![redis.address()],
                replicas: vec![],
                region: "local".into(),
                capacity_bytes: 256 << 20,
                down_after_ms: None,
            })
            .await
            .unwrap();
        let agent = platform::agent(&zk, &root, &[("main", redis.address())]).await;
        admin.create_namespace(&namespace("orders")).await.unwrap();
        let token = issue(&admin, "orders", outage + Duration::from_secs(900))
            .await
            .unwrap()
            .token;
        let mut platform = Platform {
            zk,
            root,
            redis,
            cp,
            gw,
            _agent: agent,
            keys,
            admin,
            gateway_id: String::new(),
            token,
            http: reqwest::Client::builder()
                .timeout(CLIENT_TIMEOUT)
                .build()
                .unwrap(),
        };
        let raw = platform.observer().await;
        let gateways = raw.list_children(paths::GATEWAYS).await.unwrap();
        assert_eq!(gateways.len(), 1, "one gateway registered: {gateways:?}");
        platform.gateway_id = gateways[0].clone();
        platform
    }

    /// A plain ZooKeeper client inside the root, to see who owns the ephemeral nodes.
    async fn observer(&self) -> zk::Client {
        self.zk
            .client()
            .await
            .chroot(self.root.clone())
            .expect("a valid root")
    }

    fn agent_report_path(&self) -> String {
        paths::node("main", &self.redis.address())
    }

    async fn get_json(&self, url: String) -> Option<(StatusCode, Value)> {
        let response = self.http.get(url).send().await.ok()?;
        let status = response.status();
        Some((status, response.json().await.ok()?))
    }

    async fn gateway_readyz(&self) -> Option<(StatusCode, Value)> {
        self.get_json(format!("{}/readyz", self.gw.url)).await
    }

    async fn control_plane_readyz(&self) -> Option<(StatusCode, Value)> {
        self.get_json(format!("{}/readyz", self.cp.url)).await
    }

    /// One sample of the gateway's `/metrics`.
    async fn gateway_metric(&self, name: &str) -> Option<f64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.gw.url))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines().find_map(|line| {
            line.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
    }

    /// PUT of `value` at `key` in `ns` through the gateway.
    async fn put(&self, ns: &str, key: &str, token: &str, value: &str) -> Option<StatusCode> {
        self.http
            .put(format!("{}/v1/namespaces/{ns}/keys/{key}", self.gw.url))
            .bearer_auth(token)
            .body(value.to_owned())
            .send()
            .await
            .ok()
            .map(|r| r.status())
    }

    /// What a failure message needs besides its own words.
    fn diagnostics(&self, load: &Stats) -> String {
        format!(
            "load so far: {}\nZooKeeper log:\n{}",
            load.summary(),
            self.zk.log_tail(30)
        )
    }
}

fn namespace(name: &str) -> CreateNamespace {
    CreateNamespace {
        name: name.into(),
        owner: "team-orders".into(),
        cluster: Some("main".into()),
        region: None,
        limits: Some(Limits::default()),
        near_cache: None,
    }
}

async fn issue(
    admin: &AdminClient,
    ns: &str,
    ttl: Duration,
) -> Result<IssuedToken, larder_control_plane::client::ClientError> {
    admin
        .issue_token(
            ns,
            &IssueToken {
                subject: format!("{ns}-svc"),
                permissions: vec![Permission::Read, Permission::Write],
                ttl_s: Some(ttl.as_secs()),
            },
        )
        .await
}

/// The session owning the ephemeral node at `path`; `None` when there is none or
/// ZooKeeper does not answer.
async fn owner(raw: &zk::Client, path: &str) -> Option<i64> {
    raw.check_stat(path)
        .await
        .ok()
        .flatten()
        .map(|stat| stat.ephemeral_owner)
}

/// The election candidates under `/leader` with their owning sessions.
async fn candidates(raw: &zk::Client) -> Vec<(String, i64)> {
    let Ok(children) = raw.list_children(paths::LEADER).await else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for child in children {
        if let Some(session) = owner(raw, &format!("{}/{child}", paths::LEADER)).await {
            out.push((child, session));
        }
    }
    out
}

/// The agent's report on the Redis, when it exists and says up.
async fn report_up(raw: &zk::Client, path: &str) -> bool {
    match raw.get_data(path).await {
        Ok((bytes, _)) => codec::decode::<NodeHealth>(path, &bytes).is_ok_and(|r| r.up),
        Err(_) => false,
    }
}

/// Polls `check` every 50 ms until it holds; the time since `since`, or a message
/// naming `what` once `bound` (counted from `since`) has passed.
async fn recovered<F, Fut>(
    since: Instant,
    bound: Duration,
    what: &str,
    mut check: F,
) -> Result<Duration, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    loop {
        if check().await {
            return Ok(since.elapsed());
        }
        if since.elapsed() > bound {
            return Err(format!(
                "{what}: not within {bound:?} of ZooKeeper's return"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ----- the load ----------------------------------------------------------------------

const BEFORE: u8 = 0;
const DURING: u8 = 1;
const AFTER: u8 = 2;
const PHASES: [&str; 3] = ["before", "during", "after"];

/// What the load clients saw, by phase of the outage (the phase a request started in).
#[derive(Default)]
struct Stats {
    phase: AtomicU8,
    served: [AtomicU64; 3],
    failed: [AtomicU64; 3],
    slowest_us: [AtomicU64; 3],
    /// The first failures, word for word.
    failures: Mutex<Vec<String>>,
}

impl Stats {
    fn record(&self, phase: u8, started: Instant, outcome: Result<(), String>) {
        let i = phase as usize;
        let took = started.elapsed().as_micros() as u64;
        self.slowest_us[i].fetch_max(took, Ordering::Relaxed);
        match outcome {
            Ok(()) => {
                self.served[i].fetch_add(1, Ordering::Relaxed);
            }
            Err(why) => {
                self.failed[i].fetch_add(1, Ordering::Relaxed);
                let mut failures = self.failures.lock().unwrap();
                if failures.len() < 20 {
                    failures.push(format!("[{} the outage] {why}", PHASES[i]));
                }
            }
        }
    }

    fn served(&self, phase: u8) -> u64 {
        self.served[phase as usize].load(Ordering::Relaxed)
    }

    fn failed_total(&self) -> u64 {
        self.failed.iter().map(|f| f.load(Ordering::Relaxed)).sum()
    }

    fn summary(&self) -> String {
        let mut out = String::new();
        for (i, phase) in PHASES.iter().enumerate() {
            out.push_str(&format!(
                "{phase} the outage: {} served, {} failed, slowest {} ms; ",
                self.served[i].load(Ordering::Relaxed),
                self.failed[i].load(Ordering::Relaxed),
                self.slowest_us[i].load(Ordering::Relaxed) / 1000,
            ));
        }
        let failures = self.failures.lock().unwrap();
        if !failures.is_empty() {
            out.push_str(&format!("first failures:\n  {}", failures.join("\n  ")));
        }
        out
    }
}

/// [`CLIENTS`] loops of PUT then GET through the gateway, until stopped or `deadline`.
struct Load {
    stats: Arc<Stats>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(platform: &Platform, deadline: Instant) -> Load {
        let stats = Arc::new(Stats::default());
        let stop = CancellationToken::new();
        let tasks = (0..CLIENTS)
            .map(|client| {
                let base = format!("{}/v1/namespaces/orders/keys", platform.gw.url);
                tokio::spawn(load_client(
                    client,
                    base,
                    platform.token.clone(),
                    platform.http.clone(),
                    stats.clone(),
                    stop.clone(),
                    deadline,
                ))
            })
            .collect();
        Load { stats, stop, tasks }
    }

    fn set_phase(&self, phase: u8) {
        self.stats.phase.store(phase, Ordering::Relaxed);
    }

    async fn finish(self) -> Arc<Stats> {
        self.stop.cancel();
        for task in self.tasks {
            task.await.expect("a load client does not panic");
        }
        self.stats
    }
}

async fn load_client(
    client: usize,
    base: String,
    token: String,
    http: reqwest::Client,
    stats: Arc<Stats>,
    stop: CancellationToken,
    deadline: Instant,
) {
    let mut round = 0u64;
    while !stop.is_cancelled() && Instant::now() < deadline {
        // Each client owns its keys, so what it reads back is what it wrote last.
        let key = format!("load-{client}-{}", round % 64);
        let value = format!("client {client} round {round}");
        let url = format!("{base}/{key}");

        let phase = stats.phase.load(Ordering::Relaxed);
        let started = Instant::now();
        let put = match http
            .put(&url)
            .bearer_auth(&token)
            .body(value.clone())
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!(
                "PUT {key}: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            )),
            Err(e) => Err(format!("PUT {key}: {e}")),
        };
        let written = put.is_ok();
        stats.record(phase, started, put);

        if written {
            let phase = stats.phase.load(Ordering::Relaxed);
            let started = Instant::now();
            let get = match http.get(&url).bearer_auth(&token).send().await {
                Ok(r) if r.status() == StatusCode::OK => match r.bytes().await {
                    Ok(body) if body == value.as_bytes() => Ok(()),
                    Ok(body) => Err(format!(
                        "GET {key}: read {:?}, wrote {value:?}",
                        String::from_utf8_lossy(&body)
                    )),
                    Err(e) => Err(format!("GET {key}: body: {e}")),
                },
                Ok(r) => Err(format!(
                    "GET {key}: {} {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                )),
                Err(e) => Err(format!("GET {key}: {e}")),
            };
            stats.record(phase, started, get);
        }
        round += 1;
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(PACE) => {}
        }
    }
}

// ----- the scenario ------------------------------------------------------------------

/// A mutation refused while ZooKeeper is away: 503, problem+json, type
/// `registry-unavailable`, `Retry-After`, within [`REFUSAL_BOUND`]. Returns how long
/// the answer took.
async fn refused(request: reqwest::RequestBuilder, what: &str) -> Duration {
    let started = Instant::now();
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{what} during the outage: no answer: {e}"));
    let took = started.elapsed();
    let status = response.status();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let retry_after = response
        .headers()
        .contains_key(reqwest::header::RETRY_AFTER);
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{what} during the outage: {body}"
    );
    assert!(
        content_type.starts_with("application/problem+json"),
        "{what} during the outage: content type {content_type:?}"
    );
    assert!(
        body["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("registry-unavailable")),
        "{what} during the outage: {body}"
    );
    assert!(retry_after, "{what} during the outage: no Retry-After");
    assert!(
        took < REFUSAL_BOUND,
        "{what} during the outage took {took:?} to be refused"
    );
    took
}

async fn outage_under_load(fault: Fault) {
    let outage = outage();
    let mut p = Platform::start(outage).await;
    let admin_token = platform::admin_token(p.keys.path());

    // Everything in place before the fault, and who owns what.
    let raw = p.observer().await;
    let gateway_path = paths::gateway(&p.gateway_id);
    let report_path = p.agent_report_path();
    eventually(
        Duration::from_secs(10),
        "the agent reports Redis up",
        || report_up(&raw, &report_path),
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the control plane leads",
        || async {
            p.control_plane_readyz()
                .await
                .is_some_and(|(_, r)| r["leader"] == true)
        },
    )
    .await;
    let gateway_owner = owner(&raw, &gateway_path)
        .await
        .expect("gateway registered");
    let report_owner = owner(&raw, &report_path).await.expect("agent report");
    let old_candidates = candidates(&raw).await;
    assert_eq!(old_candidates.len(), 1, "{old_candidates:?}");
    let leader_owner = old_candidates[0].1;
    // Its session would expire during the outage too; a new one is opened afterwards.
    drop(raw);

    let load = Load::start(&p, Instant::now() + outage + Duration::from_secs(180));
    eventually(
        Duration::from_secs(10),
        "the load is served before the fault",
        || async { load.stats.served(BEFORE) >= 100 },
    )
    .await;
    assert_eq!(load.stats.failed_total(), 0, "{}", load.stats.summary());

    // The fault.
    load.set_phase(DURING);
    let fault_at = Instant::now();
    match fault {
        Fault::Stop => p.zk.stop().await,
        Fault::Freeze => p.zk.pause(),
    }
    let fault_end = fault_at + outage;

    // The gateway notices, stays ready and reports staleness; the control plane
    // notices too.
    let mut gateway_noticed = None;
    let mut control_plane_noticed = None;
    while gateway_noticed.is_none() || control_plane_noticed.is_none() {
        assert!(
            fault_at.elapsed() < Duration::from_secs(20),
            "the loss of ZooKeeper not noticed within 20 s (gateway: {gateway_noticed:?}, \
             control plane: {control_plane_noticed:?})\n{}",
            p.diagnostics(&load.stats)
        );
        if gateway_noticed.is_none()
            && p.gateway_readyz()
                .await
                .is_some_and(|(_, r)| r["zookeeper_connected"] == false)
        {
            gateway_noticed = Some(fault_at.elapsed());
        }
        if control_plane_noticed.is_none()
            && p.control_plane_readyz()
                .await
                .is_some_and(|(_, r)| r["zookeeper_connected"] == false)
        {
            control_plane_noticed = Some(fault_at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gateway_noticed = gateway_noticed.unwrap();
    let control_plane_noticed = control_plane_noticed.unwrap();

    // Until ZooKeeper returns: the gateway's readiness every second, mutations of the
    // control plane every five.
    let mut last_staleness_ms = 0;
    let mut refusals = 0u32;
    let mut slowest_refusal = Duration::ZERO;
    let mut next_mutation = Instant::now();
    while Instant::now() < fault_end {
        let (status, body) = p
            .gateway_readyz()
            .await
            .unwrap_or_else(|| panic!("the gateway's /readyz does not answer during the outage"));
        assert_eq!(status, StatusCode::OK, "the gateway stays ready: {body}");
        assert_eq!(body["ready"], true, "{body}");
        assert_eq!(body["zookeeper_connected"], false, "{body}");
        let staleness_ms = body["staleness_ms"].as_u64().unwrap();
        assert!(
            staleness_ms >= last_staleness_ms,
            "staleness only grows: {staleness_ms} after {last_staleness_ms}"
        );
        last_staleness_ms = staleness_ms;

        let (status, body) = p.control_plane_readyz().await.unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["zookeeper_connected"], false, "{body}");
        assert_eq!(body["leader"], false, "no leader without ZooKeeper: {body}");

        if Instant::now() >= next_mutation {
            let n = refusals;
            let create = p
                .http
                .post(format!("{}/v1/namespaces", p.cp.url))
                .bearer_auth(&admin_token)
                .json(&json!({"name": format!("during-{n}"), "owner": "team", "cluster": "main"}));
            let took = refused(create, "create namespace").await;
            slowest_refusal = slowest_refusal.max(took);
            let token = p
                .http
                .post(format!("{}/v1/namespaces/orders/tokens", p.cp.url))
                .bearer_auth(&admin_token)
                .json(&json!({"subject": "during", "permissions": ["read"]}));
            let took = refused(token, "issue token").await;
            slowest_refusal = slowest_refusal.max(took);
            refusals += 2;
            next_mutation = Instant::now() + Duration::from_secs(5);
        }
        let left = fault_end.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
    }
    let stale_for = fault_at.elapsed().saturating_sub(gateway_noticed);
    let metric = p
        .gateway_metric("larder_gateway_registry_staleness_seconds")
        .await
        .expect("the gateway exports larder_gateway_registry_staleness_seconds");
    assert!(
        metric + 1.0 >= stale_for.as_secs_f64(),
        "larder_gateway_registry_staleness_seconds = {metric} after {stale_for:?} disconnected"
    );
    assert!(
        load.stats.failed_total() == 0,
        "requests failed during the outage: {}",
        p.diagnostics(&load.stats)
    );

    // ZooKeeper returns.
    match fault {
        Fault::Stop => p.zk.start_again().await,
        Fault::Freeze => p.zk.resume(),
    }
    let back = Instant::now();
    let outage_lasted = back - fault_at;
    load.set_phase(AFTER);
    let raw = p.observer().await;

    let cp_readyz = || async {
        p.control_plane_readyz()
            .await
            .is_some_and(|(s, r)| s == StatusCode::OK && r["leader"] == true)
    };
    let (gateway_back, gateway_node, agent_node, leader, mutation) = tokio::join!(
        recovered(back, RECOVERY_BOUND, "the gateway reconnected", || async {
            p.gateway_readyz()
                .await
                .is_some_and(|(_, r)| r["zookeeper_connected"] == true && r["staleness_ms"] == 0)
        }),
        recovered(
            back,
            RECOVERY_BOUND,
            "the gateway's /gateways/<id> re-created by a new session",
            || async {
                owner(&raw, &gateway_path)
                    .await
                    .is_some_and(|o| o != gateway_owner)
            }
        ),
        recovered(
            back,
            RECOVERY_BOUND,
            "the agent's health report re-created by a new session, Redis up",
            || async {
                owner(&raw, &report_path)
                    .await
                    .is_some_and(|o| o != report_owner)
                    && report_up(&raw, &report_path).await
            }
        ),
        recovered(
            back,
            RECOVERY_BOUND,
            "the control plane leads again, the only candidate, on a new session",
            || async {
                let c = candidates(&raw).await;
                c.len() == 1 && c[0].1 != leader_owner && cp_readyz().await
            }
        ),
        recovered(
            back,
            RECOVERY_BOUND,
            "the control plane accepts a mutation",
            || async {
                let spec = namespace("after");
                tokio::time::timeout(CLIENT_TIMEOUT, p.admin.create_namespace(&spec))
                    .await
                    .is_ok_and(|r| r.is_ok())
            }
        ),
    );
    let recovery: Vec<(&str, Duration)> = [
        ("gateway reconnected, staleness 0", gateway_back),
        ("gateway's /gateways/<id> re-created", gateway_node),
        ("agent's health report re-created", agent_node),
        ("control plane leads again", leader),
        ("control plane accepts mutations", mutation),
    ]
    .into_iter()
    .map(|(what, result)| match result {
        Ok(took) => (what, took),
        Err(why) => panic!("{why}\n{}", p.diagnostics(&load.stats)),
    })
    .collect();

    // Watches fire: admin changes made now reach the gateway.
    let started = Instant::now();
    let after_token = issue(&p.admin, "after", Duration::from_secs(600))
        .await
        .expect("a token for the namespace created after the outage");
    let new_namespace = recovered(
        started,
        PROPAGATION_BOUND,
        "the namespace created after the outage is served by the gateway",
        || async {
            p.put("after", "first", &after_token.token, "hello")
                .await
                .is_some_and(|s| s.is_success())
        },
    )
    .await
    .unwrap_or_else(|why| panic!("{why}\n{}", p.diagnostics(&load.stats)));
    let doomed = issue(&p.admin, "orders", Duration::from_secs(600))
        .await
        .unwrap();
    assert!(
        p.put("orders", "doomed", &doomed.token, "x")
            .await
            .is_some_and(|s| s.is_success()),
        "a token issued after the outage works"
    );
    let started = Instant::now();
    p.admin.revoke_token(&doomed.jti).await.unwrap();
    let revocation = recovered(
        started,
        PROPAGATION_BOUND,
        "a revocation made after the outage is enforced by the gateway",
        || async {
            p.put("orders", "doomed", &doomed.token, "x").await == Some(StatusCode::UNAUTHORIZED)
        },
    )
    .await
    .unwrap_or_else(|why| panic!("{why}\n{}", p.diagnostics(&load.stats)));

    // Once the server has expired the old sessions (one session timeout after its
    // return at most), the new nodes are still there: nothing of the old sessions'
    // clean-up removed them.
    tokio::time::sleep(SESSION_TIMEOUT + Duration::from_secs(1)).await;
    let gateway_now = owner(&raw, &gateway_path).await;
    assert!(
        gateway_now.is_some_and(|o| o != gateway_owner),
        "the gateway's node after the old sessions expired: {gateway_now:?}"
    );
    let report_now = owner(&raw, &report_path).await;
    assert!(
        report_now.is_some_and(|o| o != report_owner),
        "the agent's report after the old sessions expired: {report_now:?}"
    );
    let leaders = candidates(&raw).await;
    assert!(
        leaders.len() == 1 && leaders[0].1 != leader_owner && cp_readyz().await,
        "one leader on a new session: {leaders:?}"
    );
    assert_eq!(
        p.gateway_metric("larder_gateway_registry_staleness_seconds")
            .await,
        Some(0.0)
    );

    let stats = load.finish().await;
    assert_eq!(
        stats.failed_total(),
        0,
        "requests failed: {}",
        p.diagnostics(&stats)
    );
    let during = stats.served(DURING);
    // About 150 requests/s are sent; a third of that is a generous floor on a busy
    // machine, and still shows the load did not stall.
    let floor = outage_lasted.as_secs() * 50;
    assert!(
        during >= floor,
        "only {during} requests served in {outage_lasted:?} of outage (floor {floor}): {}",
        stats.summary()
    );

    let name = fault.name();
    println!(
        "ZooKeeper {name} for {:.1} s (session timeout {} ms, registry request timeout {} ms)",
        outage_lasted.as_secs_f64(),
        SESSION_TIMEOUT.as_millis(),
        REQUEST_TIMEOUT.as_millis()
    );
    println!(
        "  data plane ({CLIENTS} clients, PUT+GET): {}",
        stats.summary()
    );
    println!(
        "  data plane during the outage: {during} requests served, {} failed, {:.0} requests/s",
        stats.failed[DURING as usize].load(Ordering::Relaxed),
        during as f64 / outage_lasted.as_secs_f64()
    );
    println!(
        "  loss noticed after {} ms by the gateway, {} ms by the control plane; \
         gateway staleness at the end {metric:.1} s ({last_staleness_ms} ms in /readyz)",
        gateway_noticed.as_millis(),
        control_plane_noticed.as_millis()
    );
    println!(
        "  control plane: {refusals} mutations refused with 503 problem+json, slowest in {} ms",
        slowest_refusal.as_millis()
    );
    println!(
        "  sessions expired: gateway node owner {gateway_owner:#x} -> {:#x}, agent report \
         owner {report_owner:#x} -> {:#x}, leader candidate owner {leader_owner:#x} -> {:#x}",
        gateway_now.unwrap(),
        report_now.unwrap(),
        leaders[0].1
    );
    for (what, took) in &recovery {
        println!(
            "  recovered after ZooKeeper returned: {what} in {} ms",
            took.as_millis()
        );
    }
    println!(
        "  after recovery: a new namespace served by the gateway {} ms after its token \
         was requested; a revocation enforced {} ms after the admin call started",
        new_namespace.as_millis(),
        revocation.as_millis()
    );
}
