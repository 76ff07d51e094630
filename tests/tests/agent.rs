//! The agent against real Redis and ZooKeeper:
//! - health flips only after consecutive probe results (a Redis paused with SIGSTOP);
//! - its ephemeral reports vanish when the agent process is killed (after the session
//!   timeout) or stopped (at once), and come back when it restarts;
//! - it keeps probing through a ZooKeeper restart and a Redis restart, and its reports
//!   come back after the reconnect and after a session expiry;
//! - the Lua-CVE flag in the report and the metric follows the Redis version;
//! - `/metrics` uses redis_exporter's names with `instance` and `cluster` labels and
//!   passes `promtool check metrics`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use larder_registry::client::Watch;
use larder_registry::model::{Cluster, NodeHealth, Role, Topology};
use larder_registry::txn::Op;
use larder_registry::{Registry, paths};
use larder_tests::platform::{self, Service};
use larder_tests::ports::free_port;
use larder_tests::process::Process;
use larder_tests::{
    Redis, SESSION_TIMEOUT, TcpProxy, ZooKeeper, eventually, registry_config, unique_root,
};
use tokio_util::sync::CancellationToken;

/// A registry session of the test's own, to read what the agent published.
struct Reader {
    registry: Registry,
    stop: CancellationToken,
}

impl Reader {
    async fn start(zk: &ZooKeeper, root: &str) -> Reader {
        let registry = Registry::connect(registry_config(zk, root), Watch::None)
            .await
            .expect("a registry session");
        let stop = CancellationToken::new();
        tokio::spawn(registry.clone().run(stop.clone()));
        Reader { registry, stop }
    }

    /// Registers `cluster` with `master` directly in the registry (no control plane
    /// needed for the agent to publish).
    async fn register(&self, cluster: &str, master: &str, replicas: &[String]) {
        let record = Cluster {
            name: cluster.into(),
            topology: Topology::Standalone,
            endpoints: vec![master.into()],
            replicas: replicas.to_vec(),
            region: "local".into(),
            capacity_bytes: 1 << 30,
            epoch: 1,
            down_after_ms: 3_000,
            created_at_ms: 0,
        };
        self.registry
            .transact(&[
                Op::create(paths::cluster(cluster), &record),
                Op::Create {
                    path: paths::nodes(cluster),
                    data: Vec::new(),
                },
            ])
            .await
            .expect("the cluster is registered");
    }

    /// The report on `endpoint`; `None` when there is none (or ZooKeeper is away).
    async fn report(&self, endpoint: &str) -> Option<NodeHealth> {
        self.registry
            .get::<NodeHealth>(&paths::node("main", endpoint))
            .await
            .ok()
            .flatten()
            .map(|v| v.value)
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn scrape(agent_url: &str) -> String {
    reqwest::get(format!("{agent_url}/metrics"))
        .await
        .expect("the agent answers")
        .text()
        .await
        .expect("a metrics body")
}

/// The value of `name`'s series for `instance` in a scrape.
fn sample(text: &str, name: &str, instance: &str) -> Option<f64> {
    let label = format!("instance=\"{instance}\"");
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(&label))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Probes every 100 ms; down after 3 failures, up after 2 successes.
async fn fast_agent(zk: &ZooKeeper, root: &str, instances: &[(&str, String)]) -> Service {
    platform::agent_with(zk, root, instances, |c| {
        c.probe_interval_ms = 100;
        c.probe_timeout_ms = 80;
        c.fail_after = 3;
        c.recover_after = 2;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_health_flips_only_after_consecutive_probe_results() {
    larder_tests::init_tracing();
    let zk = ZooKeeper::start().await;
    let redis = Redis::start().await;
    let root = unique_root();
    let reader = Reader::start(&zk, &root).await;
    reader.register("main", &redis.address(), &[]).await;
    // Probes every 100 ms (80 ms timeout): down after 5 failures in a row, up after 2
    // successes.
    let agent = platform::agent_with(&zk, &root, &[("main", redis.address())], |c| {
        c.probe_interval_ms = 100;
        c.probe_timeout_ms = 80;
        c.fail_after = 5;
        c.recover_after = 2;
    })
    .await;
    let address = redis.address();
    eventually(
        Duration::from_secs(10),
        "the agent reports Redis up",
        || async { reader.report(&address).await.is_some_and(|r| r.up) },
    )
    .await;

    // A stall of 200 ms fails a probe or two: the metrics count them, the published
    // health does not move.
    let failures = |text: &str| sample(text, "larder_agent_probe_failures_total", &address);
    let before = failures(&scrape(&agent.url).await).unwrap_or_default();
    redis.pause();
    let paused = Instant::now();
    let (mut flipped, mut resumed) = (false, false);
    while paused.elapsed() < Duration::from_millis(800) {
        if !resumed && paused.elapsed() >= Duration::from_millis(200) {
            redis.resume();
            resumed = true;
        }
        flipped |= reader.report(&address).await.is_some_and(|r| !r.up);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = scrape(&agent.url).await;
    assert!(
        failures(&text).unwrap_or_default() > before,
        "the slow probes were counted as failures:\n{text}"
    );
    assert!(!flipped, "a short stall flipped the published health");
    assert_eq!(
        sample(&text, "larder_agent_instance_healthy", &address),
        Some(1.0)
    );

    // A long stall is five failures in a row: down, but not before five probes.
    redis.pause();
    let took = eventually(
        Duration::from_secs(5),
        "the report shows Redis down",
        || async { reader.report(&address).await.is_some_and(|r| !r.up) },
    )
    .await;
    assert!(
        took >= Duration::from_millis(400),
        "down after {took:?}, before five probes could fail"
    );
    let text = scrape(&agent.url).await;
    assert_eq!(sample(&text, "redis_up", &address), Some(0.0), "{text}");
    assert_eq!(
        sample(&text, "larder_agent_instance_healthy", &address),
        Some(0.0)
    );
    let down = reader.report(&address).await.expect("a report");
    assert_eq!(
        down.role,
        Role::Master,
        "a down report keeps what was last known"
    );
    assert!(!down.redis_version.is_empty());

    // Back after two good probes.
    redis.resume();
    eventually(
        Duration::from_secs(5),
        "the report shows Redis up again",
        || async { reader.report(&address).await.is_some_and(|r| r.up) },
    )
    .await;
    agent.stop().await.expect("the agent stops cleanly");
}

/// A `larder-agent` process probing `redis` every 100 ms.
fn agent_process(
    zk: &ZooKeeper,
    root: &str,
    redis: &Redis,
    dir: &std::path::Path,
) -> (Process, String) {
    let port = free_port();
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            r#"
listen = "127.0.0.1:{port}"
id = "agent-proc"
probe_interval_ms = 100
probe_timeout_ms = 80

[zookeeper]
connect = "{zk}"
root = "{root}"
session_timeout_ms = {session}
request_timeout_ms = 2000

[[instances]]
address = "{redis}"
cluster = "main"
"#,
            zk = zk.connect_string(),
            session = SESSION_TIMEOUT.as_millis(),
            redis = redis.address(),
        ),
    )
    .unwrap();
    let process = Process::spawn(
        "larder-agent",
        &platform::binary("larder-agent"),
        &["--config".into(), config.display().to_string()],
        &dir.join("agent.log"),
    );
    (process, format!("http://127.0.0.1:{port}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agents_reports_vanish_and_come_back_when_it_restarts() {
    larder_tests::init_tracing();
    let zk = ZooKeeper::start().await;
    let redis = Redis::start().await;
    let root = unique_root();
    let dir = tempfile::tempdir().unwrap();
    let reader = Reader::start(&zk, &root).await;
    reader.register("main", &redis.address(), &[]).await;
    let address = redis.address();
    let log = dir.path().join("agent.log");
    let published = || async { reader.report(&address).await.is_some_and(|r| r.up) };

    let (mut agent, _) = agent_process(&zk, &root, &redis, dir.path());
    eventually(
        Duration::from_secs(15),
        "the agent process publishes",
        published,
    )
    .await;

    // SIGKILL: nothing is withdrawn; the report goes with the session, after its timeout.
    agent.kill();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        reader.report(&address).await.is_some(),
        "the report lives as long as the killed agent's session"
    );
    eventually(
        SESSION_TIMEOUT + Duration::from_secs(5),
        "the killed agent's report vanishes",
        || async { reader.report(&address).await.is_none() },
    )
    .await;
    assert!(
        killed.elapsed() >= SESSION_TIMEOUT / 2,
        "gone after {:?}, sooner than a session timeout allows",
        killed.elapsed()
    );

    // Restarted: the report is back within a few probes.
    let (mut agent, _) = agent_process(&zk, &root, &redis, dir.path());
    eventually(
        Duration::from_secs(15),
        "the restarted agent publishes again",
        published,
    )
    .await;

    // SIGTERM: the agent withdraws its report at once, without waiting for expiry.
    let stopped = Instant::now();
    assert!(
        agent.terminate(Duration::from_secs(10)).await,
        "the agent stops on SIGTERM:\n{}",
        larder_tests::tail(&log, 20)
    );
    eventually(
        Duration::from_secs(3),
        "the stopped agent's report vanishes",
        || async { reader.report(&address).await.is_none() },
    )
    .await;
    assert!(
        stopped.elapsed() < SESSION_TIMEOUT,
        "withdrawn, not expired"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_keeps_probing_through_a_zookeeper_restart_and_republishes() {
    larder_tests::init_tracing();
    let mut zk = ZooKeeper::start().await;
    let mut redis = Redis::start().await;
    let root = unique_root();
    let reader = Reader::start(&zk, &root).await;
    reader.register("main", &redis.address(), &[]).await;
    let agent = fast_agent(&zk, &root, &[("main", redis.address())]).await;
    let address = redis.address();
    eventually(
        Duration::from_secs(10),
        "the agent reports Redis up",
        || async { reader.report(&address).await.is_some_and(|r| r.up) },
    )
    .await;

    // ZooKeeper goes away; meanwhile Redis crashes. The agent goes on probing and
    // exporting what it sees.
    zk.stop().await;
    redis.kill();
    let url = agent.url.clone();
    eventually(
        Duration::from_secs(10),
        "the agent's metrics show Redis down and ZooKeeper away",
        || {
            let url = url.clone();
            let address = address.clone();
            async move {
                let text = scrape(&url).await;
                sample(&text, "redis_up", &address) == Some(0.0)
                    && sample(&text, "larder_agent_instance_healthy", &address) == Some(0.0)
                    && text.contains("larder_agent_zookeeper_connected 0")
            }
        },
    )
    .await;
    let failures = |text: &str| {
        sample(text, "larder_agent_probe_failures_total", &address).unwrap_or_default()
    };
    let seen = failures(&scrape(&agent.url).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        failures(&scrape(&agent.url).await) > seen,
        "probing goes on while ZooKeeper is away"
    );

    // ZooKeeper is back (sessions survive its restart): the change is published.
    zk.start_again().await;
    eventually(
        Duration::from_secs(15),
        "the report shows Redis down after the reconnect",
        || async { reader.report(&address).await.is_some_and(|r| !r.up) },
    )
    .await;

    // Redis restarts: up again, without touching the agent.
    redis.restart().await;
    eventually(
        Duration::from_secs(10),
        "the report shows Redis up again",
        || async { reader.report(&address).await.is_some_and(|r| r.up) },
    )
    .await;
    let ready: serde_json::Value = reqwest::get(format!("{}/readyz", agent.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["ready"], true, "{ready}");
    agent.stop().await.expect("the agent stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_republishes_after_its_session_expires() {
    larder_tests::init_tracing();
    let zk = ZooKeeper::start().await;
    let redis = Redis::start().await;
    let root = unique_root();
    let reader = Reader::start(&zk, &root).await;
    reader.register("main", &redis.address(), &[]).await;
    // The agent reaches ZooKeeper through a proxy, so it alone can be cut off.
    let proxy = TcpProxy::start(zk.address()).await;
    let connect = proxy.connect_string();
    let agent = platform::agent_with(&zk, &root, &[("main", redis.address())], |c| {
        c.zookeeper.connect = connect;
        c.probe_interval_ms = 100;
        c.probe_timeout_ms = 80;
    })
    .await;
    let address = redis.address();
    eventually(
        Duration::from_secs(10),
        "the agent reports Redis up",
        || async { reader.report(&address).await.is_some_and(|r| r.up) },
    )
    .await;

    // Cut off past its session timeout: ZooKeeper expires the session, which removes the
    // report.
    proxy.block();
    eventually(
        SESSION_TIMEOUT + Duration::from_secs(5),
        "the cut-off agent's report expires with its session",
        || async { reader.report(&address).await.is_none() },
    )
    .await;

    // Reconnected, the agent learns its session expired, opens a new one and publishes
    // again.
    proxy.unblock();
    eventually(
        Duration::from_secs(20),
        "the agent publishes again on a new session",
        || async { reader.report(&address).await.is_some_and(|r| r.up) },
    )
    .await;
    let ready: serde_json::Value = reqwest::get(format!("{}/readyz", agent.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["sessions"], 2, "{ready}");
    agent.stop().await.expect("the agent stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_flags_redis_versions_with_the_lua_cves() {
    larder_tests::init_tracing();
    let zk = ZooKeeper::start().await;
    let redis = Redis::start().await;
    let root = unique_root();
    let reader = Reader::start(&zk, &root).await;
    reader.register("main", &redis.address(), &[]).await;
    let agent = fast_agent(&zk, &root, &[("main", redis.address())]).await;
    let address = redis.address();
    let info = redis.info("server").await.expect("INFO server");
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .expect("a redis_version")
        .trim()
        .to_owned();
    let expected = larder_agent::vulnerable_lua(&version);
    // The Debian package in the test image is 7.0.15: a line that never got the fix.
    if version == "7.0.15" {
        assert!(expected, "7.0.15 is open to CVE-2025-49844");
    }
    eventually(
        Duration::from_secs(10),
        "the agent reports Redis",
        || async { reader.report(&address).await.is_some_and(|r| r.up) },
    )
    .await;
    let report = reader.report(&address).await.expect("a report");
    assert_eq!(report.redis_version, version);
    assert_eq!(
        report.heartbeat_ms, 10_000,
        "the record says how often it is re-written"
    );
    assert_eq!(report.vulnerable_lua, expected, "{report:?}");
    let text = scrape(&agent.url).await;
    assert_eq!(
        sample(&text, "larder_agent_lua_cve_vulnerable", &address),
        Some(if expected { 1.0 } else { 0.0 }),
        "{text}"
    );
    agent.stop().await.expect("the agent stops cleanly");
}

fn promtool() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("promtool"))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_else(|| {
            panic!("`promtool` not found on PATH: run ./deploy/local/test.sh (it installs the Debian package prometheus)")
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_exports_redis_exporter_names_that_promtool_accepts() {
    larder_tests::init_tracing();
    let zk = ZooKeeper::start().await;
    let master = Redis::start().await;
    let replica = Redis::start_replica_of(&master).await;
    let root = unique_root();
    let reader = Reader::start(&zk, &root).await;
    reader
        .register("main", &master.address(), &[replica.address()])
        .await;
    let agent = fast_agent(
        &zk,
        &root,
        &[("main", master.address()), ("main", replica.address())],
    )
    .await;
    let (m, r) = (master.address(), replica.address());
    let url = agent.url.clone();
    eventually(
        Duration::from_secs(10),
        "both instances are scraped",
        || {
            let url = url.clone();
            let (m, r) = (m.clone(), r.clone());
            async move {
                let text = scrape(&url).await;
                sample(&text, "redis_connected_slaves", &m) == Some(1.0)
                    && sample(&text, "redis_master_link_up", &r) == Some(1.0)
            }
        },
    )
    .await;
    let text = scrape(&agent.url).await;
    for (name, kind) in [
        ("redis_up", "gauge"),
        ("redis_memory_used_bytes", "gauge"),
        ("redis_memory_max_bytes", "gauge"),
        ("redis_connected_clients", "gauge"),
        ("redis_commands_processed_total", "counter"),
        ("redis_keyspace_hits_total", "counter"),
        ("redis_keyspace_misses_total", "counter"),
        ("redis_evicted_keys_total", "counter"),
        ("redis_expired_keys_total", "counter"),
        ("redis_connected_slaves", "gauge"),
        ("redis_uptime_in_seconds", "gauge"),
        ("larder_agent_probe_failures_total", "counter"),
        ("larder_agent_instance_healthy", "gauge"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} is not exported as a {kind}:\n{text}"
        );
        for instance in [&m, &r] {
            assert!(
                text.lines().any(|l| l.starts_with(&format!("{name}{{"))
                    && l.contains(&format!("instance=\"{instance}\""))
                    && l.contains("cluster=\"main\"")),
                "{name} has no series for {instance} in cluster main:\n{text}"
            );
        }
    }
    assert_eq!(sample(&text, "redis_connected_slaves", &m), Some(1.0));
    assert_eq!(sample(&text, "redis_master_link_up", &r), Some(1.0));
    assert_eq!(
        sample(&text, "redis_master_link_up", &m),
        None,
        "a master has no link series, as with redis_exporter"
    );
    assert!(
        text.contains("# TYPE larder_agent_probe_duration_seconds histogram\n"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("redis_instance_info{")
            && l.contains(&format!("instance=\"{r}\""))
            && l.contains("role=\"slave\"")),
        "{text}"
    );

    // promtool's lint: only redis_exporter's own abbreviation is tolerated.
    use std::io::Write;
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let findings: Vec<&str> = report
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty()
                && *l
                    != "redis_instantaneous_ops_per_sec metric names should not contain abbreviated units"
        })
        .collect();
    assert!(
        findings.is_empty(),
        "promtool check metrics refuses the agent's scrape:\n{report}"
    );
    agent.stop().await.expect("the agent stops cleanly");
}
