//! Real Redis servers: a standalone master, its replicas, and a three-master Redis Cluster.
//!
//! Servers keep nothing on disk (`--save '' --appendonly no`): a restarted server comes
//! back empty, as a crashed cache node does. Cluster nodes keep their `nodes.conf`, so a
//! restarted node rejoins with its identity and slots.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use tempfile::TempDir;

use crate::ports::free_port;
use crate::process::{Process, require_program};
use crate::tail;

/// How long a start or a cluster formation may take before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// One `redis-server` process. Dropping it kills the process and removes its directory.
#[derive(Debug)]
pub struct Redis {
    port: u16,
    dir: TempDir,
    /// Options beyond the common ones (replication, cluster mode).
    extra: Vec<String>,
    process: Option<Process>,
}

impl Redis {
    /// Starts a standalone master on a free port and waits until it answers `PING`.
    pub async fn start() -> Redis {
        Redis::start_with(Vec::new()).await
    }

    /// Starts a replica of `master` and waits until its replication link is up.
    pub async fn start_replica_of(master: &Redis) -> Redis {
        let replica = Redis::start_with(vec![
            "--replicaof".into(),
            "127.0.0.1".into(),
            master.port.to_string(),
        ])
        .await;
        let started = Instant::now();
        loop {
            if replica
                .info("replication")
                .await
                .is_ok_and(|info| info.contains("master_link_status:up"))
            {
                return replica;
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "replica {} did not sync with {} within {START_TIMEOUT:?}\n{}",
                replica.address(),
                master.address(),
                replica.log_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn start_with(extra: Vec<String>) -> Redis {
        let dir = tempfile::Builder::new()
            .prefix("larder-redis-")
            .tempdir()
            .expect("cannot create a temporary directory");
        let mut redis = Redis {
            port: 0,
            dir,
            extra,
            process: None,
        };
        let mut last_failure = String::new();
        // A port found free may be taken by another test process before the server binds
        // it; the server then exits and a new port is tried.
        for _ in 0..3 {
            redis.port = free_port();
            match redis.launch().await {
                Ok(()) => return redis,
                Err(failure) => last_failure = failure,
            }
        }
        panic!("{last_failure}");
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://{}/", self.address())
    }

    /// A client for this server.
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("a valid Redis URL")
    }

    /// A new multiplexed connection to this server.
    pub async fn connection(&self) -> MultiplexedConnection {
        self.client()
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("cannot connect to Redis at {}: {e}", self.address()))
    }

    /// `INFO <section>` as text.
    pub async fn info(&self, section: &str) -> redis::RedisResult<String> {
        self.query(redis::cmd("INFO").arg(section)).await
    }

    /// Runs one command on a fresh connection, giving up after two seconds.
    pub async fn query<T: redis::FromRedisValue>(
        &self,
        command: &redis::Cmd,
    ) -> redis::RedisResult<T> {
        let run = async {
            let mut connection = self.client().get_multiplexed_async_connection().await?;
            command.query_async(&mut connection).await
        };
        match tokio::time::timeout(Duration::from_secs(2), run).await {
            Ok(result) => result,
            Err(_) => Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("Redis at {} did not answer within 2 s", self.address()),
            ))),
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(|p| p.exited().is_none())
    }

    /// SIGKILL, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// SIGTERM, then waits for the process to end (killing it after 10 s).
    pub async fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.terminate(Duration::from_secs(10)).await;
        }
    }

    /// Starts the server again on the same port with the same options and directory.
    pub async fn restart(&mut self) {
        assert!(
            self.process.is_none(),
            "restart: Redis at {} is still running",
            self.address()
        );
        if let Err(failure) = self.launch().await {
            panic!("{failure}");
        }
    }

    /// SIGSTOP: connections stay open, nothing is answered.
    pub fn pause(&self) {
        self.running().stop_and_wait();
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.running().continue_and_wait();
    }

    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for file in ["redis.log", "redis.out"] {
            let _ = writeln!(
                out,
                "--- {file} ---\n{}",
                tail(&self.dir.path().join(file), lines)
            );
        }
        out
    }

    fn running(&self) -> &Process {
        self.process
            .as_ref()
            .unwrap_or_else(|| panic!("Redis at {} is not running", self.address()))
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    async fn launch(&mut self) -> Result<(), String> {
        let server: PathBuf = require_program("redis-server");
        let mut args: Vec<String> = [
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            // Replicas sync at once instead of after the default five-second delay.
            "--repl-diskless-sync-delay",
            "0",
            "--dir",
            &self.dir().display().to_string(),
            "--logfile",
            &self.dir().join("redis.log").display().to_string(),
        ]
        .map(str::to_owned)
        .to_vec();
        args.extend(self.extra.iter().cloned());
        let output = self.dir().join("redis.out");
        self.process = Some(Process::spawn(
            format!("redis-server on port {}", self.port),
            &server,
            &args,
            &output,
        ));
        let started = Instant::now();
        loop {
            if self
                .query::<String>(&redis::cmd("PING"))
                .await
                .is_ok_and(|pong| pong == "PONG")
            {
                return Ok(());
            }
            let exited = self.process.as_mut().and_then(Process::exited);
            if exited.is_some() || started.elapsed() > START_TIMEOUT {
                self.kill();
                let why = match exited {
                    Some(status) => format!("exited ({status})"),
                    None => format!("did not answer PING within {START_TIMEOUT:?}"),
                };
                return Err(format!(
                    "Redis on port {} {why}\n{}",
                    self.port,
                    self.log_tail(30)
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of masters, all slots assigned; replicas join with
/// [`RedisCluster::add_replica`].
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<Redis>,
}

impl RedisCluster {
    /// Starts `masters` cluster-mode servers, joins them with `redis-cli --cluster create`
    /// and waits until every node reports `cluster_state:ok`.
    pub async fn start(masters: usize) -> RedisCluster {
        assert!(masters >= 3, "Redis Cluster needs at least three masters");
        let cli = require_program("redis-cli");
        let mut nodes = Vec::with_capacity(masters);
        for _ in 0..masters {
            let extra = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
                // The bus port defaults to port + 10000, which nobody checked is free.
                "--cluster-port",
                &free_port().to_string(),
            ]
            .map(str::to_owned)
            .to_vec();
            nodes.push(Redis::start_with(extra).await);
        }
        let mut create = tokio::process::Command::new(&cli);
        create.arg("--cluster").arg("create");
        create.args(nodes.iter().map(Redis::address));
        create.args(["--cluster-replicas", "0", "--cluster-yes"]);
        let output = tokio::time::timeout(START_TIMEOUT, create.kill_on_drop(true).output())
            .await
            .unwrap_or_else(|_| {
                panic!("redis-cli --cluster create did not finish within {START_TIMEOUT:?}")
            })
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", cli.display()));
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_until_ok().await;
        cluster
    }

    /// Starts one more cluster node, joins it as a replica of node `of` and waits until
    /// its replication link is up and every node reports `cluster_state:ok`. Returns its
    /// index. With a replica, the cluster fails `of` over by itself when it dies.
    pub async fn add_replica(&mut self, of: usize) -> usize {
        let extra = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "2000",
            "--cluster-port",
            &free_port().to_string(),
        ]
        .map(str::to_owned)
        .to_vec();
        let replica = Redis::start_with(extra).await;
        let master = &self.nodes[of];
        let master_id: String = master
            .query(redis::cmd("CLUSTER").arg("MYID"))
            .await
            .unwrap_or_else(|e| panic!("CLUSTER MYID on {}: {e}", master.address()));
        // The bus port is not the default port + 10000 here: MEET must name it.
        let bus: Vec<String> = master
            .query(redis::cmd("CONFIG").arg("GET").arg("cluster-port"))
            .await
            .unwrap_or_else(|e| panic!("CONFIG GET cluster-port on {}: {e}", master.address()));
        let bus = bus.get(1).cloned().unwrap_or_default();
        let () = replica
            .query(
                redis::cmd("CLUSTER")
                    .arg("MEET")
                    .arg("127.0.0.1")
                    .arg(master.port)
                    .arg(&bus),
            )
            .await
            .unwrap_or_else(|e| panic!("CLUSTER MEET from {}: {e}", replica.address()));
        let started = Instant::now();
        // REPLICATE needs the master known to the new node first.
        loop {
            let replicated: redis::RedisResult<()> = replica
                .query(redis::cmd("CLUSTER").arg("REPLICATE").arg(&master_id))
                .await;
            if replicated.is_ok() {
                break;
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "CLUSTER REPLICATE on {}: {replicated:?}",
                replica.address()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        loop {
            if replica
                .info("replication")
                .await
                .is_ok_and(|info| info.contains("master_link_status:up"))
            {
                break;
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "cluster replica {} did not sync with {}\n{}",
                replica.address(),
                master.address(),
                replica.log_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // A replica is only elected by masters that know it: the other masters learn of
        // it by gossip, which can lag behind MEET. Until they do, a dead master stays
        // failed and its slots unserved.
        let replica_id: String = replica
            .query(redis::cmd("CLUSTER").arg("MYID"))
            .await
            .unwrap_or_else(|e| panic!("CLUSTER MYID on {}: {e}", replica.address()));
        let expected = format!("slave {master_id}");
        for node in &self.nodes {
            loop {
                let nodes: String = node
                    .query(redis::cmd("CLUSTER").arg("NODES"))
                    .await
                    .unwrap_or_default();
                if nodes
                    .lines()
                    .any(|l| l.starts_with(&replica_id) && l.contains(&expected))
                {
                    break;
                }
                assert!(
                    started.elapsed() < START_TIMEOUT,
                    "{} does not know replica {} of {}:\n{nodes}",
                    node.address(),
                    replica.address(),
                    master.address()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        self.nodes.push(replica);
        self.wait_until_ok().await;
        self.nodes.len() - 1
    }

    /// `127.0.0.1:<port>` of every node.
    pub fn addresses(&self) -> Vec<String> {
        self.nodes.iter().map(Redis::address).collect()
    }

    pub fn node(&self, index: usize) -> &Redis {
        &self.nodes[index]
    }

    pub fn nodes(&self) -> &[Redis] {
        &self.nodes
    }

    /// A cluster client seeded with every node.
    pub fn client(&self) -> redis::cluster::ClusterClient {
        redis::cluster::ClusterClient::new(self.nodes.iter().map(Redis::url).collect::<Vec<_>>())
            .expect("valid Redis Cluster URLs")
    }

    /// Kills one node (SIGKILL). Its slots stay unserved until it comes back.
    pub fn kill_node(&mut self, index: usize) {
        self.nodes[index].kill();
    }

    /// Restarts a killed node (same port and `nodes.conf`) and waits until the whole
    /// cluster reports `cluster_state:ok` again.
    pub async fn restart_node(&mut self, index: usize) {
        self.nodes[index].restart().await;
        self.wait_until_ok().await;
    }

    /// Waits until every running node reports `cluster_state:ok`.
    pub async fn wait_until_ok(&self) {
        let started = Instant::now();
        loop {
            let mut not_ok = Vec::new();
            for node in &self.nodes {
                let info = node
                    .query::<String>(redis::cmd("CLUSTER").arg("INFO"))
                    .await;
                if !info.as_ref().is_ok_and(|i| i.contains("cluster_state:ok")) {
                    not_ok.push(format!("{}: {info:?}", node.address()));
                }
            }
            if not_ok.is_empty() {
                return;
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "Redis Cluster not ok after {START_TIMEOUT:?}:\n{}",
                not_ok.join("\n")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
