//! Two real `larder-control-plane` processes on one registry: exactly one leads and runs
//! the background work; a leader paused (SIGSTOP) past its session timeout is replaced
//! and, once resumed, cannot write; a killed leader is replaced within the session
//! timeout plus two seconds.

use std::path::Path;
use std::time::{Duration, Instant};

use larder_control_plane::api::{CreateNamespace, RegisterCluster};
use larder_registry::client::Watch;
use larder_registry::ledger::DeletionJob;
use larder_registry::model::{Limits, Topology};
use larder_registry::{Registry, paths};
use larder_tests::platform;
use larder_tests::ports::free_port;
use larder_tests::process::Process;
use larder_tests::{Redis, SESSION_TIMEOUT, ZooKeeper, eventually, registry_config, unique_root};
use nix::sys::signal::Signal;
use serde_json::Value;

/// A control-plane process and its URL.
struct Instance {
    id: String,
    url: String,
    process: Process,
    log: std::path::PathBuf,
}

fn start(id: &str, zk: &ZooKeeper, root: &str, keys: &Path, dir: &Path) -> Instance {
    let port = free_port();
    let config = dir.join(format!("{id}.toml"));
    std::fs::write(
        &config,
        format!(
            r#"
listen = "127.0.0.1:{port}"
id = "{id}"
key_dir = "{keys}"

[background]
tick_ms = 100
deletion_batch_keys = 20
deletion_pause_ms = 150

[usage]
sample_interval_ms = 0

[zookeeper]
connect = "{zk}"
root = "{root}"
session_timeout_ms = {session}
request_timeout_ms = 2000
"#,
            keys = keys.display(),
            zk = zk.connect_string(),
            session = SESSION_TIMEOUT.as_millis(),
        ),
    )
    .unwrap();
    let log = dir.join(format!("{id}.log"));
    let process = Process::spawn(
        id,
        &platform::binary("larder-control-plane"),
        &["--config".into(), config.display().to_string()],
        &log,
    );
    Instance {
        id: id.into(),
        url: format!("http://127.0.0.1:{port}"),
        process,
        log,
    }
}

impl Instance {
    async fn readyz(&self) -> Option<Value> {
        let response = reqwest::Client::new()
            .get(format!("{}/readyz", self.url))
            .timeout(Duration::from_millis(500))
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    }

    async fn leads(&self) -> bool {
        self.readyz()
            .await
            .is_some_and(|r| r["ready"] == true && r["leader"] == true)
    }

    async fn wait_ready(&mut self) {
        let started = Instant::now();
        while !self.readyz().await.is_some_and(|r| r["ready"] == true) {
            assert!(
                self.process.exited().is_none(),
                "{} exited:\n{}",
                self.id,
                larder_tests::tail(&self.log, 30)
            );
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{} not ready:\n{}",
                self.id,
                larder_tests::tail(&self.log, 30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_fenced_and_a_killed_one_replaced() {
    larder_tests::init_tracing();
    let zk = ZooKeeper::start().await;
    let master = Redis::start().await;
    let root = unique_root();
    let keys = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut a = start("cp-a", &zk, &root, keys.path(), dir.path());
    a.wait_ready().await;
    let mut b = start("cp-b", &zk, &root, keys.path(), dir.path());
    b.wait_ready().await;
    // The first to stand leads; both report who that is.
    eventually(Duration::from_secs(5), "cp-a leads", || a.leads()).await;
    assert!(!b.leads().await);
    assert_eq!(b.readyz().await.unwrap()["leader_id"], "cp-a");
    assert_eq!(a.metric("larder_cp_is_leader").await, 1.0);
    assert_eq!(b.metric("larder_cp_is_leader").await, 0.0);

    // Background work for the leader: deleting a namespace of 800 keys, 20 keys per
    // batch with a pause between batches, so it lasts several seconds and the leader
    // spends most of it between batches.
    let admin =
        larder_control_plane::client::Client::new(&b.url, Some(platform::admin_token(keys.path())));
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
            name: "doomed".into(),
            owner: "team".into(),
            cluster: None,
            region: None,
            limits: Some(Limits::default()),
            near_cache: None,
        })
        .await
        .unwrap();
    let mut conn = master.connection().await;
    let mut pipe = redis::pipe();
    for i in 0..800 {
        pipe.cmd("SET")
            .arg(format!("larder:doomed:k:{i}"))
            .arg(i)
            .ignore();
    }
    let () = pipe.query_async(&mut conn).await.unwrap();
    admin.delete_namespace("doomed").await.unwrap();

    let registry = Registry::connect(registry_config(&zk, &root), Watch::None)
        .await
        .unwrap();
    let job = || async {
        registry
            .get::<DeletionJob>(&paths::deletion("doomed"))
            .await
            .unwrap()
    };
    eventually(
        Duration::from_secs(10),
        "cp-a works the deletion",
        || async {
            job()
                .await
                .is_some_and(|j| j.value.updated_by == "cp-a" && j.value.deleted_keys > 0)
        },
    )
    .await;

    // Pause the leader mid-job, past its session timeout.
    a.process.signal(Signal::SIGSTOP);
    let paused = Instant::now();
    let took = eventually(Duration::from_secs(15), "cp-b takes over", || b.leads()).await;
    println!(
        "paused leader replaced after {} ms (session timeout {} ms)",
        took.as_millis(),
        SESSION_TIMEOUT.as_millis()
    );
    assert!(
        took < SESSION_TIMEOUT + Duration::from_secs(2),
        "took {took:?}"
    );
    eventually(
        Duration::from_secs(10),
        "cp-b resumes the deletion",
        || async { job().await.is_some_and(|j| j.value.updated_by == "cp-b") },
    )
    .await;
    let before_resume = job().await.expect("the job is still running").value;
    assert!(before_resume.deleted_keys < 800, "{before_resume:?}");

    // Resumed, the old leader still believes it leads for a moment and goes on with its
    // batch, but none of its writes commit.
    a.process.signal(Signal::SIGCONT);
    println!(
        "cp-a resumed after {} ms paused",
        paused.elapsed().as_millis()
    );
    let watch_until = Instant::now() + Duration::from_secs(3);
    let mut last_version = -1;
    while Instant::now() < watch_until {
        match job().await {
            Some(j) => {
                if j.version != last_version {
                    assert_eq!(
                        j.value.updated_by, "cp-b",
                        "a write of the fenced leader committed: {:?}",
                        j.value
                    );
                    last_version = j.version;
                }
            }
            None => break,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eventually(
        Duration::from_secs(10),
        "cp-a knows it does not lead",
        || async {
            a.readyz().await.is_some_and(|r| {
                r["ready"] == true && r["leader"] == false && r["leader_id"] == "cp-b"
            })
        },
    )
    .await;
    assert!(b.leads().await);
    println!(
        "after resuming, cp-a had {} background writes fenced off by ZooKeeper and {} rounds \
         refused before reaching it (its session was no longer usable); none committed",
        a.metric("larder_cp_fenced_writes_total").await,
        a.metric("larder_cp_background_errors_total").await
    );
    eventually(
        Duration::from_secs(20),
        "cp-b finishes the deletion",
        || async { job().await.is_none() },
    )
    .await;
    let mut keys_left: Vec<String> = redis::cmd("KEYS")
        .arg("larder:doomed:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    keys_left.sort();
    assert!(keys_left.is_empty(), "{keys_left:?}");
    assert!(b.metric("larder_cp_leader_changes_total").await >= 2.0);

    // Kill the leader: the other takes over once its session has expired.
    b.process.kill();
    let killed = Instant::now();
    let took = eventually(Duration::from_secs(15), "cp-a takes over", || a.leads()).await;
    println!(
        "killed leader replaced after {} ms (session timeout {} ms)",
        took.as_millis(),
        SESSION_TIMEOUT.as_millis()
    );
    assert!(killed.elapsed() < SESSION_TIMEOUT + Duration::from_secs(2));
    assert_eq!(a.metric("larder_cp_is_leader").await, 1.0);
    assert!(
        a.process.terminate(Duration::from_secs(10)).await,
        "cp-a drains on SIGTERM"
    );
}
