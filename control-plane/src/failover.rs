//! Failover of replicated standalone deployments, and keeping their replication in line
//! with the registry. Runs in every instance; acts only while this instance leads.
//!
//! **When.** Every `failover.tick_ms` the leader PINGs each standalone deployment's
//! registered master itself. It fails the master over only on a quorum of three
//! independent observers:
//! 1. its own probes have failed for the deployment's `down_after_ms` without a break;
//! 2. the master's agent reports it down, or no agent reports on it any more (the agent's
//!    ephemeral znode is gone with its session: the host or the agent died);
//! 3. a replica's agent reports that replica's link to the master down.
//!
//! A flapping agent alone (2), or a leader cut off from the master (1), or a master
//! that stalls while its replicas keep the link (1 and 2 but not 3), does not promote.
//! A leader without ZooKeeper does nothing: `is_leader` needs a connected session, and
//! its registry writes are fenced on its election znode anyway.
//!
//! **How** (each step re-checked, so a repeat after any interruption converges):
//! 1. Re-read the deployment from ZooKeeper; stop if its master changed meanwhile.
//! 2. Ask every replica live (`INFO replication`). Any that still has its link to the
//!    master up vetoes the failover (the master is alive for it). Otherwise the one with
//!    the highest replication offset is chosen; one promoted by an interrupted failover
//!    wins a tie.
//! 3. `REPLICAOF NO ONE` on it.
//! 4. Write the deployment with the new master first, the old master among the
//!    replicas, and `epoch + 1`, compare-and-set on the version read in step 1 and
//!    fenced on leadership. Gateways follow the watch and reconnect.
//! 5. `REPLICAOF <new master>` on the other replicas.
//!
//! If the write in step 4 fails, the promoted replica is a master the registry does not
//! name. Nobody writes to it (gateways write only to the registered master), and the
//! reconciler below makes it a replica again once the registered master answers;
//! while the registered master stays down, the next round promotes the best replica
//! again, which is most likely the same one.
//!
//! **Fencing the old master.** While the registered master answers the leader, any
//! other member that reports itself master (the old master restarted, a promotion the
//! registry never recorded) or follows another node is made a replica of the registered
//! master with `REPLICAOF`, after a fresh registry read and a live `INFO` confirm it.
//! Gateways never write to it meanwhile: they write only to the registered master.
//!
//! Redis Cluster deployments fail over by themselves; the leader notices when a node
//! that reported itself a replica reports itself master, counts it in
//! `larder_cp_failovers_total` and writes it to the audit trail.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use larder_registry::ledger::{AuditEntry, Outcome};
use larder_registry::model::{Cluster, NodeHealth, Role, Topology};
use larder_registry::{RegistryError, now_ms, paths};
use redis::aio::MultiplexedConnection;
use tokio_util::sync::CancellationToken;

use crate::deployment;
use crate::health::same_endpoint;
use crate::state::AppState;

/// A node is sent `REPLICAOF` by the reconciler at most this often.
const REPOINT_BACKOFF: Duration = Duration::from_secs(5);

/// Why a failover could not complete.
#[derive(Debug, thiserror::Error)]
pub enum FailoverError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("no replica can take over: {0}")]
    NoCandidate(String),
    #[error("{endpoint}: {message}")]
    Redis { endpoint: String, message: String },
    #[error("this instance no longer leads")]
    NotLeader,
}

/// The evidence that a standalone master is down, one field per observer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evidence {
    /// How long the leader's own probes of the master have failed, without a break.
    pub probe_down_for: Option<Duration>,
    /// What the master's agent says: down, or gone (no report).
    pub agent: Option<String>,
    /// A replica whose agent reports its link to the master down.
    pub replica: Option<String>,
}

/// What to do about a standalone master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It answers the leader.
    Up,
    /// It does not, but the evidence is not (yet) enough; says what is missing.
    Suspect(String),
    FailOver,
}

/// The master's agent's word on it: `Some(reason)` when it is reported down or not
/// reported at all.
pub fn agent_evidence(master: &str, nodes: &[NodeHealth]) -> Option<String> {
    match nodes.iter().find(|n| same_endpoint(&n.endpoint, master)) {
        None => Some(format!("no agent reports on {master}")),
        Some(n) if !n.up => Some(format!("its agent ({}) reports it down", n.agent)),
        Some(_) => None,
    }
}

/// A registered replica that follows `master` and whose agent reports the link down.
pub fn replica_evidence(cluster: &Cluster, nodes: &[NodeHealth]) -> Option<String> {
    let master = cluster.master()?;
    nodes
        .iter()
        .filter(|n| {
            cluster
                .replicas
                .iter()
                .any(|r| same_endpoint(r, &n.endpoint))
                && !same_endpoint(&n.endpoint, master)
        })
        .find(|n| {
            n.up && n.role == Role::Replica
                && n.master_link_up == Some(false)
                && n.master
                    .as_deref()
                    .is_some_and(|m| same_endpoint(m, master))
        })
        .map(|n| format!("replica {} reports its link down", n.endpoint))
}

/// The quorum rule (see the module docs).
pub fn verdict(evidence: &Evidence, down_after: Duration) -> Verdict {
    let Some(down_for) = evidence.probe_down_for else {
        return Verdict::Up;
    };
    if down_for < down_after {
        return Verdict::Suspect(format!(
            "unreachable from the leader for {} ms of {} ms",
            down_for.as_millis(),
            down_after.as_millis()
        ));
    }
    match (&evidence.agent, &evidence.replica) {
        (None, _) => {
            Verdict::Suspect("unreachable from the leader, but its agent reports it up".into())
        }
        (Some(_), None) => Verdict::Suspect(
            "unreachable from the leader and its agent, but no replica reports its link down"
                .into(),
        ),
        (Some(_), Some(_)) => Verdict::FailOver,
    }
}

/// A node's replication state, as it answers `INFO replication` now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replication {
    pub role: Role,
    /// For a replica: the master it follows, `host:port`.
    pub master: Option<String>,
    pub link_up: Option<bool>,
    /// What a replica has applied, or what a master has produced.
    pub offset: u64,
    /// For a master: it was a replica until promoted (`second_repl_offset` set), so it
    /// holds the deployment's data; a master that never was one may have restarted empty.
    pub promoted: bool,
}

/// Parses `INFO replication`.
pub fn parse_replication(info: &str) -> Replication {
    let mut r = Replication::default();
    let (mut host, mut port, mut slave_offset, mut master_offset) = (None, None, None, 0);
    for line in info.lines() {
        let Some((key, value)) = line.trim_end_matches('\r').split_once(':') else {
            continue;
        };
        match key {
            "role" => {
                r.role = match value {
                    "master" => Role::Master,
                    "slave" | "replica" => Role::Replica,
                    _ => Role::Unknown,
                }
            }
            "master_host" => host = Some(value.to_owned()),
            "master_port" => port = Some(value.to_owned()),
            "master_link_status" => r.link_up = Some(value == "up"),
            "slave_repl_offset" => slave_offset = value.parse().ok(),
            "master_repl_offset" => master_offset = value.parse().unwrap_or_default(),
            "second_repl_offset" => r.promoted = value.parse::<i64>().is_ok_and(|o| o >= 0),
            _ => {}
        }
    }
    if let (Some(h), Some(p)) = (host, port) {
        r.master = Some(if h.contains(':') {
            format!("[{h}]:{p}")
        } else {
            format!("{h}:{p}")
        });
    }
    r.offset = match r.role {
        Role::Replica => slave_offset.unwrap_or_default(),
        _ => master_offset,
    };
    r.promoted &= r.role == Role::Master;
    r
}

/// The node to promote among the replicas that answered: refused when any of them still
/// has its link to `old_master` up; otherwise, among the replicas and the masters that
/// were promoted from a replica (by an interrupted failover), the highest offset, then
/// one already master, then the order given. A master that never was a replica (a
/// member restarted empty) is never chosen.
pub fn choose(old_master: &str, answers: &[(String, Replication)]) -> Result<String, String> {
    if let Some((endpoint, _)) = answers.iter().find(|(_, r)| {
        r.role == Role::Replica
            && r.link_up == Some(true)
            && r.master
                .as_deref()
                .is_some_and(|m| same_endpoint(m, old_master))
    }) {
        return Err(format!(
            "replica {endpoint} still has its link to {old_master} up"
        ));
    }
    answers
        .iter()
        .enumerate()
        .filter(|(_, (_, r))| r.role == Role::Replica || r.promoted)
        .max_by_key(|(i, (_, r))| (r.offset, r.role == Role::Master, std::cmp::Reverse(*i)))
        .map(|(_, (endpoint, _))| endpoint.clone())
        .ok_or_else(|| "no replica with the deployment's data answers".into())
}

/// `REPLICAOF host port`, or `REPLICAOF NO ONE` for `None`.
fn replicaof(master: Option<&str>) -> redis::Cmd {
    let mut cmd = redis::cmd("REPLICAOF");
    match master.and_then(|m| m.rsplit_once(':')) {
        Some((host, port)) => cmd
            .arg(host.trim_start_matches('[').trim_end_matches(']'))
            .arg(port),
        None => cmd.arg("NO").arg("ONE"),
    };
    cmd
}

/// Whether two endpoints name the same node, resolving host names when the strings
/// differ (a replica reports its master by address; the registry may hold a name).
async fn same_node(a: &str, b: &str) -> bool {
    if same_endpoint(a, b) {
        return true;
    }
    let resolve = |e: &str| {
        let e = e.to_owned();
        async move {
            tokio::net::lookup_host(e)
                .await
                .map(|addrs| addrs.collect::<Vec<_>>())
                .unwrap_or_default()
        }
    };
    let (left, right) = tokio::join!(resolve(a), resolve(b));
    left.iter().any(|x| right.contains(x))
}

/// What the leader keeps about one deployment between ticks.
#[derive(Default)]
struct Tracked {
    /// The registered master the fields below are about; a new one resets them.
    master: String,
    /// The leader's probe connection to it.
    conn: Option<MultiplexedConnection>,
    /// When the probes began failing; `None` while it answers.
    down_since: Option<Instant>,
    /// The last verdict logged, so a state is logged once, not every tick.
    logged: Option<Verdict>,
    /// No failover attempt before this, after a failed one.
    retry_at: Option<Instant>,
    /// When each node was last sent `REPLICAOF` by the reconciler.
    repointed: HashMap<String, Instant>,
    /// Redis Cluster: each node's last reported role, to notice failovers.
    roles: HashMap<String, Role>,
}

impl Tracked {
    async fn probe(&mut self, timeout: Duration) {
        let started = Instant::now();
        let ping = async {
            let conn = match &mut self.conn {
                Some(conn) => conn,
                None => self
                    .conn
                    .insert(deployment::connect(&self.master, timeout).await?),
            };
            redis::cmd("PING")
                .query_async::<String>(conn)
                .await
                .map_err(|e| e.to_string())
        };
        let ok = matches!(tokio::time::timeout(timeout, ping).await, Ok(Ok(_)));
        if ok {
            self.down_since = None;
        } else {
            // A broken or slow connection is not reused: the next probe connects anew.
            self.conn = None;
            self.down_since.get_or_insert(started);
        }
    }
}

/// The failover loop.
pub struct Failover {
    state: AppState,
    timeout: Duration,
}

impl Failover {
    pub fn new(state: AppState) -> Self {
        let timeout = Duration::from_millis(state.config.failover.probe_timeout_ms);
        Self { state, timeout }
    }

    /// Probes and acts every `failover.tick_ms` while this instance leads, until
    /// `cancel`. A round in progress is abandoned on cancellation; every step of a
    /// failover is safe to interrupt (see the module docs).
    pub async fn run(self, cancel: CancellationToken) {
        if !self.state.config.failover.enabled {
            tracing::info!("automatic failover is disabled (failover.enabled = false)");
            return;
        }
        let tick = Duration::from_millis(self.state.config.failover.tick_ms);
        let mut tracked: HashMap<String, Tracked> = HashMap::new();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(tick) => {}
            }
            if !self.state.registry.is_leader() {
                // A new leader starts from nothing: its own probes must see the master
                // down for the whole `down_after_ms` again.
                tracked.clear();
                continue;
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.round(&mut tracked) => {}
            }
        }
    }

    async fn round(&self, tracked: &mut HashMap<String, Tracked>) {
        let snapshot = self.state.snapshot.load();
        tracked.retain(|name, _| snapshot.cluster(name).is_some());
        let mut standalone = Vec::new();
        for c in snapshot.clusters.values() {
            let cluster = &c.value;
            let t = tracked.entry(cluster.name.clone()).or_default();
            match cluster.topology {
                Topology::Standalone => {
                    let Some(master) = cluster.master() else {
                        continue;
                    };
                    if t.master != master {
                        *t = Tracked {
                            master: master.to_owned(),
                            ..Tracked::default()
                        };
                    }
                    standalone.push(cluster.clone());
                }
                Topology::Cluster => {
                    let nodes: Vec<NodeHealth> = snapshot
                        .nodes_of(&cluster.name)
                        .map(|n| n.value.clone())
                        .collect();
                    self.observe_redis_cluster(cluster, &nodes, t).await;
                }
            }
        }
        let timeout = self.timeout;
        let probes = tracked
            .iter_mut()
            .filter(|(name, _)| standalone.iter().any(|c| &c.name == *name))
            .map(|(_, t)| t.probe(timeout));
        futures::future::join_all(probes).await;

        for cluster in &standalone {
            let Some(t) = tracked.get_mut(&cluster.name) else {
                continue;
            };
            let nodes: Vec<NodeHealth> = snapshot
                .nodes_of(&cluster.name)
                .map(|n| n.value.clone())
                .collect();
            let evidence = Evidence {
                probe_down_for: t.down_since.map(|s| s.elapsed()),
                agent: agent_evidence(&t.master, &nodes),
                replica: replica_evidence(cluster, &nodes),
            };
            let verdict = verdict(&evidence, Duration::from_millis(cluster.down_after_ms));
            self.log(cluster, t, &verdict, &evidence);
            match verdict {
                Verdict::Up => self.reconcile(cluster, &nodes, t).await,
                Verdict::Suspect(_) => {}
                Verdict::FailOver => {
                    if t.retry_at.is_some_and(|at| Instant::now() < at) {
                        continue;
                    }
                    let since = t.down_since.unwrap_or_else(Instant::now);
                    if let Err(error) = self.fail_over(cluster, &t.master, since).await {
                        self.failed(cluster, &error);
                        t.retry_at = Some(
                            Instant::now()
                                + Duration::from_millis(cluster.down_after_ms)
                                    .max(Duration::from_secs(1)),
                        );
                    }
                }
            }
        }
    }

    fn log(&self, cluster: &Cluster, t: &mut Tracked, verdict: &Verdict, evidence: &Evidence) {
        // Suspicion is logged when it starts and when the missing piece changes; the
        // counting-up "for N ms of M ms" would change every tick.
        let kind = |v: &Verdict| match v {
            Verdict::Suspect(why) if why.starts_with("unreachable from the leader for") => {
                Verdict::Suspect(String::new())
            }
            other => other.clone(),
        };
        if t.logged.as_ref().map(kind) == Some(kind(verdict)) {
            return;
        }
        match verdict {
            Verdict::Up if t.logged.is_some() => {
                tracing::info!(cluster = %cluster.name, master = %t.master, "master answers the leader again");
            }
            Verdict::Up => {}
            Verdict::Suspect(why) => tracing::warn!(
                cluster = %cluster.name,
                master = %t.master,
                agent = ?evidence.agent,
                replica = ?evidence.replica,
                "master suspected down: {why}"
            ),
            Verdict::FailOver => tracing::warn!(
                cluster = %cluster.name,
                master = %t.master,
                agent = ?evidence.agent,
                replica = ?evidence.replica,
                "master down by quorum of the leader, its agent and a replica; failing over"
            ),
        }
        t.logged = (verdict != &Verdict::Up).then(|| verdict.clone());
    }

    fn failed(&self, cluster: &Cluster, error: &FailoverError) {
        let metrics = &self.state.metrics;
        metrics
            .platform
            .failover_failures
            .with_label_values(&[cluster.name.as_str()])
            .inc();
        if matches!(error, FailoverError::Registry(RegistryError::Fenced)) {
            metrics.fenced_writes.inc();
        }
        tracing::error!(cluster = %cluster.name, %error, "failover did not complete; will retry");
    }

    /// Runs one Redis command on `endpoint` within the probe timeout.
    async fn command<T: redis::FromRedisValue>(
        &self,
        endpoint: &str,
        cmd: &redis::Cmd,
    ) -> Result<T, FailoverError> {
        let work = async {
            let mut conn = deployment::connect(endpoint, self.timeout).await?;
            cmd.query_async::<T>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(self.timeout * 2, work).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(message)) => Err(FailoverError::Redis {
                endpoint: endpoint.to_owned(),
                message,
            }),
            Err(_) => Err(FailoverError::Redis {
                endpoint: endpoint.to_owned(),
                message: format!("no answer within {} ms", (self.timeout * 2).as_millis()),
            }),
        }
    }

    async fn replication(&self, endpoint: &str) -> Result<Replication, FailoverError> {
        let info: String = self
            .command(endpoint, redis::cmd("INFO").arg("replication"))
            .await?;
        Ok(parse_replication(&info))
    }

    fn leading(&self) -> Result<(), FailoverError> {
        if self.state.registry.is_leader() {
            Ok(())
        } else {
            Err(FailoverError::NotLeader)
        }
    }

    /// Replaces `old_master` (see the module docs for the steps). Returns the new master.
    async fn fail_over(
        &self,
        seen: &Cluster,
        old_master: &str,
        since: Instant,
    ) -> Result<String, FailoverError> {
        let path = paths::cluster(&seen.name);
        let Some(current) = self.state.registry.get::<Cluster>(&path).await? else {
            return Ok(old_master.to_owned());
        };
        let cluster = current.value;
        if cluster.master() != Some(old_master) {
            return Ok(cluster.master().unwrap_or_default().to_owned());
        }
        let replicas: Vec<String> = cluster
            .replicas
            .iter()
            .filter(|r| !same_endpoint(r, old_master))
            .cloned()
            .collect();
        let asked = futures::future::join_all(
            replicas
                .iter()
                .map(|r| async move { (r.clone(), self.replication(r).await) }),
        )
        .await;
        let mut answers = Vec::new();
        let mut unreachable = Vec::new();
        for (endpoint, answer) in asked {
            match answer {
                Ok(r) => answers.push((endpoint, r)),
                Err(e) => unreachable.push(e.to_string()),
            }
        }
        let candidate = choose(old_master, &answers).map_err(|why| {
            FailoverError::NoCandidate(if unreachable.is_empty() {
                why
            } else {
                format!("{why} ({})", unreachable.join("; "))
            })
        })?;
        let offset = answers
            .iter()
            .find(|(e, _)| *e == candidate)
            .map(|(_, r)| r.offset)
            .unwrap_or_default();

        self.leading()?;
        let () = self.command(&candidate, &replicaof(None)).await?;

        let mut next = cluster.clone();
        next.endpoints = vec![candidate.clone()];
        next.replicas = replicas
            .iter()
            .filter(|r| **r != candidate)
            .cloned()
            .chain(std::iter::once(old_master.to_owned()))
            .collect();
        next.epoch += 1;
        self.state
            .registry
            .set_fenced(&path, &next, current.version)
            .await?;
        let took = since.elapsed();
        let platform = &self.state.metrics.platform;
        platform
            .failovers
            .with_label_values(&[cluster.name.as_str()])
            .inc();
        platform.failover_duration.observe(took.as_secs_f64());
        tracing::warn!(
            cluster = %cluster.name,
            old_master,
            new_master = %candidate,
            epoch = next.epoch,
            offset,
            took_ms = took.as_millis() as u64,
            "failed over"
        );

        // The other replicas follow the new master; one that does not answer now is
        // repointed by the reconciler once its agent reports it.
        let mut repointed = Vec::new();
        for replica in replicas.iter().filter(|r| **r != candidate) {
            match self
                .command::<()>(replica, &replicaof(Some(&candidate)))
                .await
            {
                Ok(()) => repointed.push(replica.clone()),
                Err(error) => {
                    tracing::warn!(cluster = %cluster.name, %error, "cannot repoint a replica yet")
                }
            }
        }
        self.audit(
            "cluster.failover",
            &cluster.name,
            Outcome::Ok,
            format!(
                "{old_master} down (leader, its agent and a replica agree) for {} ms; \
                 promoted {candidate} (replication offset {offset}), epoch {}; \
                 repointed: {}",
                took.as_millis(),
                next.epoch,
                if repointed.is_empty() {
                    "none".to_owned()
                } else {
                    repointed.join(", ")
                }
            ),
        )
        .await;
        Ok(candidate)
    }

    /// Makes members that claim to be master, or follow another node, replicas of the
    /// registered master (which answers the leader: this runs only then).
    async fn reconcile(&self, cluster: &Cluster, nodes: &[NodeHealth], t: &mut Tracked) {
        let master = t.master.clone();
        for member in cluster
            .endpoints
            .iter()
            .chain(&cluster.replicas)
            .filter(|m| !same_endpoint(m, &master))
        {
            let Some(report) = nodes.iter().find(|n| same_endpoint(&n.endpoint, member)) else {
                continue;
            };
            let astray = report.up
                && match report.role {
                    Role::Master => true,
                    Role::Replica => report
                        .master
                        .as_deref()
                        .is_some_and(|m| !same_endpoint(m, &master)),
                    Role::Unknown => false,
                };
            if !astray
                || t.repointed
                    .get(member)
                    .is_some_and(|at| at.elapsed() < REPOINT_BACKOFF)
            {
                continue;
            }
            t.repointed.insert(member.clone(), Instant::now());
            match self.repoint(&cluster.name, &master, member).await {
                Ok(_) => {}
                Err(FailoverError::Registry(RegistryError::Fenced)) => {
                    self.state.metrics.fenced_writes.inc();
                    return;
                }
                Err(error) => {
                    tracing::warn!(cluster = %cluster.name, %error, "cannot repoint a node yet")
                }
            }
        }
    }

    /// Makes `member` a replica of `master` if a fresh registry read and the node itself
    /// confirm it is astray. Returns whether it was repointed.
    async fn repoint(&self, name: &str, master: &str, member: &str) -> Result<bool, FailoverError> {
        let Some(current) = self
            .state
            .registry
            .get::<Cluster>(&paths::cluster(name))
            .await?
        else {
            return Ok(false);
        };
        let cluster = current.value;
        if cluster.master() != Some(master) || !cluster.replicas.iter().any(|r| r == member) {
            return Ok(false);
        }
        let live = self.replication(member).await?;
        let claimed = match live.role {
            Role::Master => "claimed role master".to_owned(),
            Role::Replica => match &live.master {
                Some(follows) if !same_node(follows, master).await => {
                    format!("followed {follows}")
                }
                _ => return Ok(false),
            },
            Role::Unknown => return Ok(false),
        };
        self.leading()?;
        self.command::<()>(member, &replicaof(Some(master))).await?;
        self.state
            .metrics
            .platform
            .demotions
            .with_label_values(&[name])
            .inc();
        tracing::warn!(cluster = %name, node = %member, %master, "{claimed}; made it a replica of the registered master");
        self.audit(
            "cluster.repoint",
            name,
            Outcome::Ok,
            format!("{member} {claimed}; made it a replica of the registered master {master}"),
        )
        .await;
        Ok(true)
    }

    /// Notices Redis Cluster failovers: a node that reported itself replica and now
    /// reports itself master.
    async fn observe_redis_cluster(
        &self,
        cluster: &Cluster,
        nodes: &[NodeHealth],
        t: &mut Tracked,
    ) {
        for promoted in observe_roles(&mut t.roles, nodes) {
            self.state
                .metrics
                .platform
                .failovers
                .with_label_values(&[cluster.name.as_str()])
                .inc();
            tracing::warn!(cluster = %cluster.name, node = %promoted, "Redis Cluster failed over: a replica took over as master");
            self.audit(
                "cluster.failover",
                &cluster.name,
                Outcome::Ok,
                format!("{promoted} took over as master (a Redis Cluster failover)"),
            )
            .await;
        }
    }

    async fn audit(&self, action: &str, cluster: &str, outcome: Outcome, detail: String) {
        let entry = AuditEntry {
            at_ms: now_ms(),
            actor: "system".into(),
            actor_token: None,
            instance: self.state.config.id.clone(),
            action: action.into(),
            target: format!("cluster/{cluster}"),
            method: String::new(),
            path: String::new(),
            status: 200,
            outcome,
            detail: Some(detail),
            request: None,
            request_id: None,
        };
        crate::audit::append(&self.state, &entry).await;
    }
}

/// Records each up node's reported role; returns the nodes that went from replica to
/// master since the last call.
pub fn observe_roles(roles: &mut HashMap<String, Role>, nodes: &[NodeHealth]) -> Vec<String> {
    let mut promoted = Vec::new();
    for n in nodes.iter().filter(|n| n.up && n.role != Role::Unknown) {
        if roles.insert(n.endpoint.clone(), n.role) == Some(Role::Replica) && n.role == Role::Master
        {
            promoted.push(n.endpoint.clone());
        }
    }
    promoted
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn evidence(probe_s: Option<u64>, agent: bool, replica: bool) -> Evidence {
        Evidence {
            probe_down_for: probe_s.map(Duration::from_secs),
            agent: agent.then(|| "its agent reports it down".into()),
            replica: replica.then(|| "replica r:1 reports its link down".into()),
        }
    }

    #[test]
    fn failover_needs_all_three_observers_for_down_after() {
        let down_after = 3 * SECOND;
        assert_eq!(
            verdict(&evidence(Some(3), true, true), down_after),
            Verdict::FailOver
        );
        assert_eq!(
            verdict(&evidence(None, true, true), down_after),
            Verdict::Up,
            "the leader reaches it"
        );
        for (e, missing) in [
            (evidence(Some(2), true, true), "for 2000 ms of 3000 ms"),
            (evidence(Some(9), false, true), "its agent reports it up"),
            (
                evidence(Some(9), true, false),
                "no replica reports its link down",
            ),
        ] {
            match verdict(&e, down_after) {
                Verdict::Suspect(why) => assert!(why.contains(missing), "{why}"),
                other => panic!("{e:?} gave {other:?}"),
            }
        }
    }

    fn cluster() -> Cluster {
        Cluster {
            name: "main".into(),
            topology: Topology::Standalone,
            endpoints: vec!["m:1".into()],
            replicas: vec!["r:1".into(), "r:2".into()],
            region: "local".into(),
            capacity_bytes: 1,
            epoch: 1,
            down_after_ms: 3_000,
            created_at_ms: 0,
        }
    }

    fn report(
        endpoint: &str,
        up: bool,
        role: Role,
        master: Option<&str>,
        link: Option<bool>,
    ) -> NodeHealth {
        NodeHealth {
            endpoint: endpoint.into(),
            agent: format!("agent-{endpoint}"),
            up,
            role,
            master: master.map(str::to_owned),
            master_link_up: link,
            ..Default::default()
        }
    }

    #[test]
    fn evidence_from_reports() {
        let c = cluster();
        assert_eq!(
            agent_evidence("m:1", &[]).as_deref(),
            Some("no agent reports on m:1")
        );
        let down = report("m:1", false, Role::Master, None, None);
        assert!(
            agent_evidence("m:1", std::slice::from_ref(&down))
                .is_some_and(|e| e.contains("reports it down"))
        );
        assert_eq!(
            agent_evidence("m:1", &[report("m:1", true, Role::Master, None, None)]),
            None
        );

        let linked = report("r:1", true, Role::Replica, Some("m:1"), Some(true));
        assert_eq!(replica_evidence(&c, std::slice::from_ref(&linked)), None);
        // A link down counts only from an up, registered replica of this master.
        for (n, counts) in [
            (
                report("r:2", true, Role::Replica, Some("m:1"), Some(false)),
                true,
            ),
            (
                report("r:2", false, Role::Replica, Some("m:1"), Some(false)),
                false,
            ),
            (
                report("r:2", true, Role::Replica, Some("x:1"), Some(false)),
                false,
            ),
            (
                report("x:9", true, Role::Replica, Some("m:1"), Some(false)),
                false,
            ),
        ] {
            assert_eq!(
                replica_evidence(&c, &[linked.clone(), n.clone()]).is_some(),
                counts,
                "{n:?}"
            );
        }
    }

    #[test]
    fn parses_info_replication() {
        let replica = parse_replication(
            "# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:6379\r\n\
             master_link_status:down\r\nslave_repl_offset:1048690\r\nmaster_repl_offset:1048707\r\n",
        );
        assert_eq!(
            replica,
            Replication {
                role: Role::Replica,
                master: Some("127.0.0.1:6379".into()),
                link_up: Some(false),
                offset: 1_048_690,
                promoted: false,
            }
        );
        let master = parse_replication(
            "role:master\nconnected_slaves:0\nmaster_repl_offset:42\nsecond_repl_offset:-1\n",
        );
        assert_eq!(master.role, Role::Master);
        assert_eq!(master.offset, 42);
        assert_eq!(master.master, None);
        assert!(!master.promoted, "started as a master");
        let promoted =
            parse_replication("role:master\nmaster_repl_offset:900\nsecond_repl_offset:871\n");
        assert!(promoted.promoted, "promoted from a replica at offset 871");
        assert_eq!(
            parse_replication("master_host:::1\nmaster_port:7\n")
                .master
                .as_deref(),
            Some("[::1]:7")
        );
    }

    fn replica(offset: u64, link: bool) -> Replication {
        Replication {
            role: Role::Replica,
            master: Some("m:1".into()),
            link_up: Some(link),
            offset,
            promoted: false,
        }
    }

    #[test]
    fn the_most_advanced_replica_is_chosen() {
        let answers = vec![
            ("r:1".to_owned(), replica(100, false)),
            ("r:2".to_owned(), replica(250, false)),
            ("r:3".to_owned(), replica(250, false)),
        ];
        assert_eq!(
            choose("m:1", &answers).unwrap(),
            "r:2",
            "highest, then first"
        );
        // One promoted by an interrupted failover wins a tie: promoting it again is a no-op.
        let mut with_master = answers.clone();
        with_master[2].1 = Replication {
            role: Role::Master,
            master: None,
            link_up: None,
            offset: 250,
            promoted: true,
        };
        assert_eq!(choose("m:1", &with_master).unwrap(), "r:3");
        // A member that is master without ever having been a replica (restarted empty)
        // is no candidate, whatever its offset.
        let mut restarted = answers.clone();
        restarted[0].1 = Replication {
            role: Role::Master,
            offset: 9_999,
            ..Replication::default()
        };
        assert_eq!(choose("m:1", &restarted).unwrap(), "r:2");
        assert!(
            choose("m:1", &restarted[..1])
                .unwrap_err()
                .contains("no replica with the deployment's data answers")
        );
        assert!(choose("m:1", &[]).is_err());
    }

    #[test]
    fn a_replica_still_linked_to_the_master_vetoes() {
        let answers = vec![
            ("r:1".to_owned(), replica(100, false)),
            ("r:2".to_owned(), replica(90, true)),
        ];
        assert!(
            choose("m:1", &answers)
                .unwrap_err()
                .contains("r:2 still has its link to m:1 up")
        );
        // Linked to another node is no veto.
        let mut other = answers.clone();
        other[1].1.master = Some("x:1".into());
        assert_eq!(choose("m:1", &other).unwrap(), "r:1");
    }

    #[test]
    fn replicaof_commands() {
        let packed =
            |c: redis::Cmd| String::from_utf8_lossy(&c.get_packed_command()).replace("\r\n", " ");
        assert!(packed(replicaof(None)).ends_with("$2 NO $3 ONE "));
        assert!(packed(replicaof(Some("10.0.0.5:6380"))).ends_with("$8 10.0.0.5 $4 6380 "));
        assert!(packed(replicaof(Some("[::1]:6380"))).ends_with("$3 ::1 $4 6380 "));
    }

    #[test]
    fn redis_cluster_failovers_are_noticed_once() {
        let mut roles = HashMap::new();
        let before = [
            report("s:1", true, Role::Master, None, None),
            report("s:4", true, Role::Replica, Some("s:1"), Some(true)),
        ];
        assert!(
            observe_roles(&mut roles, &before).is_empty(),
            "a first sight is no failover"
        );
        let during = [
            report("s:1", false, Role::Master, None, None),
            report("s:4", true, Role::Master, None, None),
        ];
        assert_eq!(observe_roles(&mut roles, &during), ["s:4"]);
        assert!(observe_roles(&mut roles, &during).is_empty());
        // The old master comes back as a replica, then a manual failover back.
        let back = [
            report("s:1", true, Role::Replica, Some("s:4"), Some(true)),
            report("s:4", true, Role::Master, None, None),
        ];
        assert!(observe_roles(&mut roles, &back).is_empty());
        let swapped = [
            report("s:1", true, Role::Master, None, None),
            report("s:4", true, Role::Replica, Some("s:1"), Some(true)),
        ];
        assert_eq!(observe_roles(&mut roles, &swapped), ["s:1"]);
    }
}
