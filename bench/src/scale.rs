//! Scale figures with real `larder-gateway` and `larder-control-plane` processes.
//!
//! A fresh ZooKeeper and Redis are started on free ports (the test harness's servers).
//! For each registry size (by default 100 namespaces on 5 deployments, then 10,000 on
//! 500), the registry is written directly under its own root, every deployment pointing
//! at the one real Redis; then:
//!
//! - **start to ready**: a gateway process is started and timed from spawn to its first
//!   `200` on `/readyz` (registry read, every deployment holding a namespace answered),
//!   several times in a row; its resident memory (`VmRSS`, `VmHWM`) is read from `/proc`.
//! - **apply time of one change**: one namespace's limits are rewritten with a
//!   compare-and-set, and the time runs from just before the write until the gateway's
//!   `/readyz` reports an `applied_zxid` at or past the write's zxid.
//!
//! Then, on the large registry, a control plane and 3 gateways run, and **propagation**
//! is measured through the admin API as a tenant sees it: a token is revoked (each
//! gateway polled until the token gets `401`), and a namespace's value limit is lowered
//! and raised again (each gateway polled with a 100-byte `PUT` until it gets `413`,
//! then `204`). Times run from just before the admin request is sent.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{FutureExt, StreamExt, TryStreamExt};
use larder_control_plane::api::{CreateNamespace, IssueToken, UpdateNamespace};
use larder_control_plane::client::Client as AdminClient;
use larder_registry::client::Watch;
use larder_registry::model::{Cluster, Namespace};
use larder_registry::{Registry, RegistryConfig, paths};
use larder_tests::process::Process;
use larder_tests::{Redis, ZooKeeper};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::proc;
use crate::stats::percentile;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Directory holding `larder-gateway` and `larder-control-plane` (default: the
    /// directory of this program, so a release build measures release binaries).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Namespaces of the large registry.
    #[arg(long, default_value_t = 10_000)]
    pub namespaces: u32,
    /// Redis deployments of the large registry.
    #[arg(long, default_value_t = 500)]
    pub clusters: u32,
    /// Namespaces of the small registry the apply time is compared with.
    #[arg(long, default_value_t = 100)]
    pub small_namespaces: u32,
    /// Gateway starts timed at each registry size.
    #[arg(long, default_value_t = 3)]
    pub starts: u32,
    /// Namespace changes timed at each registry size.
    #[arg(long, default_value_t = 50)]
    pub changes: u32,
    /// Gateways the propagation is measured on.
    #[arg(long, default_value_t = 3)]
    pub gateways: u32,
    /// Propagation rounds of each kind (token revocation; limit change down and up).
    #[arg(long, default_value_t = 100)]
    pub rounds: u32,
    /// Write the result here as JSON (it is printed as well).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Percentiles of a set of durations, milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub n: usize,
}

impl Summary {
    pub fn of(samples: &[Duration]) -> Summary {
        let mut us: Vec<u64> = samples.iter().map(|d| d.as_micros() as u64).collect();
        us.sort_unstable();
        let ms = |v: u64| v as f64 / 1000.0;
        Summary {
            p50_ms: ms(percentile(&us, 50.0)),
            p99_ms: ms(percentile(&us, 99.0)),
            max_ms: ms(us.last().copied().unwrap_or(0)),
            n: us.len(),
        }
    }
}

/// Figures of one registry size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistryFigures {
    pub namespaces: u32,
    pub clusters: u32,
    /// Seconds to write the registry (not a target; for context).
    pub populate_s: f64,
    /// Each timed start, milliseconds from spawn to ready.
    pub start_to_ready_ms: Vec<f64>,
    /// Resident memory right after ready, MiB (one value per start).
    pub rss_mib: Vec<f64>,
    /// Peak resident memory of the last gateway after the changes, MiB.
    pub peak_rss_mib: f64,
    /// Time from a namespace write to the gateway reporting it applied.
    pub apply: Summary,
}

/// Propagation of control-plane changes to every gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Propagation {
    pub gateways: u32,
    pub registry_namespaces: u32,
    /// Per gateway and round: revocation to `401`.
    pub revocation: Summary,
    /// Per round: until the slowest gateway answered `401`.
    pub revocation_all: Summary,
    /// Per gateway and change: value limit lowered or raised to the new answer.
    pub limit: Summary,
    /// Per change: until the slowest gateway applied it.
    pub limit_all: Summary,
    /// Resident memory of each propagation gateway at the end, MiB.
    pub rss_mib: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleResult {
    pub registries: Vec<RegistryFigures>,
    pub propagation: Propagation,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn bin_dir(args: &Args) -> anyhow::Result<PathBuf> {
    let dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no directory for this program")?
            .to_owned(),
    };
    for b in ["larder-gateway", "larder-control-plane"] {
        if !dir.join(b).is_file() {
            bail!(
                "{} not found; build with `cargo build --release --bins`",
                dir.join(b).display()
            );
        }
    }
    Ok(dir)
}

pub async fn run(args: &Args) -> anyhow::Result<ScaleResult> {
    if args.namespaces == 0 || args.small_namespaces == 0 || args.clusters == 0 {
        bail!("--namespaces, --small-namespaces and --clusters must be above zero");
    }
    let bins = bin_dir(args)?;
    let work = tempfile::Builder::new().prefix("larder-scale-").tempdir()?;
    eprintln!("scale: starting ZooKeeper and Redis");
    let zk = ZooKeeper::start().await;
    let redis = Redis::start().await;

    let small_clusters = (args.clusters * args.small_namespaces / args.namespaces).max(1);
    let mut registries = Vec::new();
    let mut large_root = String::new();
    for (namespaces, clusters) in [
        (args.small_namespaces, small_clusters),
        (args.namespaces, args.clusters),
    ] {
        let root = format!("/scale-{namespaces}");
        let figures = registry_figures(
            args,
            &bins,
            work.path(),
            &zk,
            &redis,
            &root,
            namespaces,
            clusters,
        )
        .await?;
        eprintln!(
            "scale: {namespaces} namespaces / {clusters} deployments: start to ready {:?} ms, RSS {:?} MiB, apply p50 {:.1} ms p99 {:.1} ms",
            figures.start_to_ready_ms, figures.rss_mib, figures.apply.p50_ms, figures.apply.p99_ms
        );
        registries.push(figures);
        large_root = root;
    }
    let propagation = propagation(args, &bins, work.path(), &zk, &large_root).await?;
    eprintln!(
        "scale: propagation to {} gateways: revocation p50 {:.1} ms p99 {:.1} ms max {:.1} ms; limit p50 {:.1} ms p99 {:.1} ms max {:.1} ms",
        propagation.gateways,
        propagation.revocation_all.p50_ms,
        propagation.revocation_all.p99_ms,
        propagation.revocation_all.max_ms,
        propagation.limit_all.p50_ms,
        propagation.limit_all.p99_ms,
        propagation.limit_all.max_ms,
    );
    drop(redis);
    drop(zk);
    Ok(ScaleResult {
        registries,
        propagation,
    })
}

fn registry_config(zk: &ZooKeeper, root: &str) -> RegistryConfig {
    RegistryConfig {
        connect: zk.connect_string(),
        root: root.to_owned(),
        session_timeout_ms: 10_000,
        request_timeout_ms: 10_000,
    }
}

/// A registry session with its background loop, for writing directly.
struct Session {
    registry: Registry,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Session {
    async fn open(zk: &ZooKeeper, root: &str) -> anyhow::Result<Session> {
        let registry = Registry::connect(registry_config(zk, root), Watch::None).await?;
        let cancel = CancellationToken::new();
        let task = tokio::spawn(registry.clone().run(cancel.clone()));
        Ok(Session {
            registry,
            cancel,
            task,
        })
    }

    async fn close(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

fn cluster_name(i: u32) -> String {
    format!("c-{i:04}")
}

fn namespace_name(i: u32) -> String {
    format!("ns-{i:05}")
}

/// Writes `clusters` deployments (all pointing at `redis`) and `namespaces` namespaces
/// spread over them.
async fn populate(
    registry: &Registry,
    redis: &str,
    namespaces: u32,
    clusters: u32,
) -> anyhow::Result<()> {
    let now = larder_registry::now_ms();
    let cluster_values = (0..clusters).map(|i| {
        serde_json::from_value::<Cluster>(json!({
            "name": cluster_name(i),
            "topology": "standalone",
            "endpoints": [redis],
            "region": "local",
            "capacity_bytes": 1u64 << 40,
            "created_at_ms": now,
        }))
    });
    futures::stream::iter(cluster_values)
        .map(|c| async move {
            let c = c?;
            registry.create(&paths::cluster(&c.name), &c).await?;
            anyhow::Ok(())
        })
        .buffer_unordered(64)
        .try_collect::<()>()
        .await?;
    let namespace_values = (0..namespaces).map(|i| {
        serde_json::from_value::<Namespace>(json!({
            "name": namespace_name(i),
            "owner": "scale",
            "cluster": cluster_name(i % clusters),
            "limits": {"ops_per_sec": 1_000_000, "burst": 1_000_000},
            "revision": 1,
            "created_at_ms": now,
        }))
    });
    futures::stream::iter(namespace_values)
        .map(|n| async move {
            let n = n?;
            registry.create(&paths::namespace(&n.name), &n).await?;
            anyhow::Ok(())
        })
        .buffer_unordered(64)
        .try_collect::<()>()
        .await
}

/// A `larder-gateway` process.
struct Gateway {
    url: String,
    process: Process,
    log: PathBuf,
}

impl Gateway {
    /// Starts a gateway and returns it with the time from spawn to ready.
    async fn start(
        bins: &Path,
        work: &Path,
        zk: &ZooKeeper,
        root: &str,
        id: &str,
    ) -> anyhow::Result<(Gateway, Duration)> {
        let port = larder_tests::ports::free_port();
        let log = work.join(format!("{id}.log"));
        let args = [
            "--listen".to_owned(),
            format!("127.0.0.1:{port}"),
            "--id".to_owned(),
            id.to_owned(),
            "--zookeeper".to_owned(),
            zk.connect_string(),
            "--root".to_owned(),
            root.to_owned(),
        ];
        let started = Instant::now();
        let process = Process::spawn(id, &bins.join("larder-gateway"), &args, &log);
        let mut gateway = Gateway {
            url: format!("http://127.0.0.1:{port}"),
            process,
            log,
        };
        let ready = gateway.wait_ready(started).await?;
        Ok((gateway, ready))
    }

    async fn wait_ready(&mut self, started: Instant) -> anyhow::Result<Duration> {
        let http = reqwest::Client::new();
        let url = format!("{}/readyz", self.url);
        loop {
            if http
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(started.elapsed());
            }
            if let Some(status) = self.process.exited() {
                bail!(
                    "gateway exited ({status}):\n{}",
                    larder_tests::tail(&self.log, 20)
                );
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!(
                    "gateway not ready within 60 s:\n{}",
                    larder_tests::tail(&self.log, 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.process.pid().as_raw() as u32
    }

    async fn stop(mut self) {
        self.process.terminate(Duration::from_secs(10)).await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn registry_figures(
    args: &Args,
    bins: &Path,
    work: &Path,
    zk: &ZooKeeper,
    redis: &Redis,
    root: &str,
    namespaces: u32,
    clusters: u32,
) -> anyhow::Result<RegistryFigures> {
    let session = Session::open(zk, root).await?;
    let started = Instant::now();
    populate(&session.registry, &redis.address(), namespaces, clusters)
        .await
        .context("writing the registry")?;
    let populate_s = started.elapsed().as_secs_f64();
    eprintln!(
        "scale: wrote {namespaces} namespaces and {clusters} deployments in {populate_s:.1} s"
    );

    let mut start_to_ready_ms = Vec::new();
    let mut rss_mib = Vec::new();
    let mut last = None;
    for i in 0..args.starts.max(1) {
        if let Some(previous) = last.take() {
            Gateway::stop(previous).await;
        }
        let id = format!("gw-scale-{namespaces}-{i}");
        let (gateway, ready) = Gateway::start(bins, work, zk, root, &id).await?;
        start_to_ready_ms.push(ready.as_secs_f64() * 1000.0);
        rss_mib.push(mib(proc::memory(gateway.pid())?.rss));
        last = Some(gateway);
    }
    let gateway = last.context("no gateway started")?;

    let http = reqwest::Client::new();
    let mut samples = Vec::new();
    for i in 0..args.changes {
        let name = namespace_name((i * 7_919) % namespaces);
        let path = paths::namespace(&name);
        let current = session
            .registry
            .get::<Namespace>(&path)
            .await?
            .with_context(|| format!("{path} is missing"))?;
        let mut next = current.value.clone();
        next.limits.ops_per_sec = 1_000_000 + i;
        next.revision += 1;
        let t0 = Instant::now();
        let written = session.registry.set(&path, &next, current.version).await?;
        wait_applied(&http, &gateway.url, written.modified_zxid).await?;
        samples.push(t0.elapsed());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let peak_rss_mib = mib(proc::memory(gateway.pid())?.peak);
    gateway.stop().await;
    session.close().await;
    Ok(RegistryFigures {
        namespaces,
        clusters,
        populate_s,
        start_to_ready_ms,
        rss_mib,
        peak_rss_mib,
        apply: Summary::of(&samples),
    })
}

/// Polls `/readyz` until the gateway reports `applied_zxid >= zxid`.
async fn wait_applied(http: &reqwest::Client, gateway: &str, zxid: i64) -> anyhow::Result<()> {
    #[derive(Deserialize)]
    struct Ready {
        applied_zxid: i64,
    }
    let url = format!("{gateway}/readyz");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready: Ready = http.get(&url).send().await?.json().await?;
        if ready.applied_zxid >= zxid {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{gateway} did not apply zxid {zxid} within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Polls `check` about every millisecond until it holds; returns the time since `t0`.
async fn poll_until<F, Fut>(t0: Instant, what: &str, mut check: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    loop {
        if check().await {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > Duration::from_secs(10) {
            bail!("not seen within 10 s: {what}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn status_of(request: reqwest::RequestBuilder) -> u16 {
    match request.send().await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

async fn propagation(
    args: &Args,
    bins: &Path,
    work: &Path,
    zk: &ZooKeeper,
    root: &str,
) -> anyhow::Result<Propagation> {
    let key_dir = work.join("keys");
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().mode(0o700).create(&key_dir)?;
    }
    let cp_port = larder_tests::ports::free_port();
    let cp_log = work.join("control-plane.log");
    let cp_args = [
        "--listen".to_owned(),
        format!("127.0.0.1:{cp_port}"),
        "--key-dir".to_owned(),
        key_dir.display().to_string(),
        "--zookeeper".to_owned(),
        zk.connect_string(),
        "--root".to_owned(),
        root.to_owned(),
    ];
    let mut cp = Process::spawn(
        "control plane",
        &bins.join("larder-control-plane"),
        &cp_args,
        &cp_log,
    );
    let cp_url = format!("http://127.0.0.1:{cp_port}");
    let http = reqwest::Client::new();
    let started = Instant::now();
    while !http
        .get(format!("{cp_url}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        if cp.exited().is_some() || started.elapsed() > Duration::from_secs(60) {
            bail!(
                "control plane not ready:\n{}",
                larder_tests::tail(&cp_log, 20)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let admin = AdminClient::new(&cp_url, Some(larder_tests::platform::admin_token(&key_dir)));
    let ns = "prop";
    let create: CreateNamespace = serde_json::from_value(json!({
        "name": ns,
        "owner": "bench",
        "cluster": cluster_name(0),
        "limits": {"ops_per_sec": 1_000_000, "burst": 1_000_000, "max_value_bytes": 1 << 20},
    }))?;
    admin.create_namespace(&create).await?;
    let writer: IssueToken = serde_json::from_value(json!({
        "subject": "bench-writer", "permissions": ["read", "write"], "ttl_s": 3600,
    }))?;
    let writer = admin.issue_token(ns, &writer).await?.token;

    let mut gateways = Vec::new();
    for i in 0..args.gateways.max(1) {
        let (g, _) = Gateway::start(bins, work, zk, root, &format!("gw-prop-{i}")).await?;
        gateways.push(g);
    }
    let key_url = |g: &Gateway| format!("{}/v1/namespaces/{ns}/keys/probe", g.url);
    let body = vec![b'x'; 100];
    for g in &gateways {
        let url = key_url(g);
        poll_until(Instant::now(), "the writer's PUT succeeds", || {
            status_of(http.put(&url).bearer_auth(&writer).body(body.clone()))
                .map(|s| (200..300).contains(&s))
        })
        .await?;
    }

    let reader: IssueToken = serde_json::from_value(json!({
        "subject": "bench-reader", "permissions": ["read"], "ttl_s": 3600,
    }))?;
    let mut revocation = Vec::new();
    let mut revocation_all = Vec::new();
    let mut limit = Vec::new();
    let mut limit_all = Vec::new();
    for round in 0..args.rounds {
        // Revocation: a fresh token, accepted by every gateway, then revoked.
        let issued = admin.issue_token(ns, &reader).await?;
        for g in &gateways {
            let url = key_url(g);
            poll_until(Instant::now(), "a new token is accepted", || {
                status_of(http.get(&url).bearer_auth(&issued.token)).map(|s| s == 200)
            })
            .await?;
        }
        let t0 = Instant::now();
        let polls = gateways.iter().map(|g| {
            let url = key_url(g);
            let token = issued.token.clone();
            let http = http.clone();
            async move {
                poll_until(t0, "a revoked token is refused", || {
                    status_of(http.get(&url).bearer_auth(&token)).map(|s| s == 401)
                })
                .await
            }
        });
        let (revoked, seen) = tokio::join!(
            admin.revoke_token(&issued.jti),
            futures::future::try_join_all(polls)
        );
        revoked?;
        let seen = seen.with_context(|| format!("revocation round {round}"))?;
        revocation_all.push(seen.iter().copied().max().unwrap_or_default());
        revocation.extend(seen);

        // Limit change: the value limit lowered below the body, then raised again.
        for (max_value_bytes, expect_ok) in [(64u64, false), (1u64 << 20, true)] {
            let update: UpdateNamespace =
                serde_json::from_value(json!({"limits": {"max_value_bytes": max_value_bytes}}))?;
            let t0 = Instant::now();
            let polls = gateways.iter().map(|g| {
                let url = key_url(g);
                let (http, writer, body) = (http.clone(), writer.clone(), body.clone());
                async move {
                    poll_until(t0, "a value-limit change applies", || {
                        status_of(http.put(&url).bearer_auth(&writer).body(body.clone())).map(|s| {
                            if expect_ok {
                                (200..300).contains(&s)
                            } else {
                                s == 413
                            }
                        })
                    })
                    .await
                }
            });
            let (updated, seen) = tokio::join!(
                admin.update_namespace(ns, &update),
                futures::future::try_join_all(polls)
            );
            updated?;
            let seen = seen.with_context(|| format!("limit round {round}"))?;
            limit_all.push(seen.iter().copied().max().unwrap_or_default());
            limit.extend(seen);
        }
        if (round + 1) % 25 == 0 {
            eprintln!("scale: propagation round {}/{}", round + 1, args.rounds);
        }
    }
    let rss_mib = gateways
        .iter()
        .map(|g| proc::memory(g.pid()).map(|m| mib(m.rss)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for g in gateways {
        g.stop().await;
    }
    cp.terminate(Duration::from_secs(10)).await;
    Ok(Propagation {
        gateways: args.gateways.max(1),
        registry_namespaces: args.namespaces,
        revocation: Summary::of(&revocation),
        revocation_all: Summary::of(&revocation_all),
        limit: Summary::of(&limit),
        limit_all: Summary::of(&limit_all),
        rss_mib,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_in_milliseconds() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let s = Summary::of(&samples);
        assert_eq!(
            (s.p50_ms, s.p99_ms, s.max_ms, s.n),
            (50.0, 99.0, 100.0, 100)
        );
    }

    #[test]
    fn generated_records_are_valid() {
        let c = serde_json::from_value::<Cluster>(json!({
            "name": cluster_name(7), "topology": "standalone", "endpoints": ["127.0.0.1:1"],
            "region": "local", "capacity_bytes": 1,
        }))
        .unwrap();
        larder_registry::names::cluster(&c.name).unwrap();
        larder_registry::names::namespace(&namespace_name(9_999)).unwrap();
    }
}
