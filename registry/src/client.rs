//! [`Registry`]: a ZooKeeper session that outlives disconnects and expiry.
//!
//! One background loop ([`Registry::run`]) owns the session's life:
//! - **Disconnected**: the snapshot keeps serving and reports its staleness.
//! - **Reconnected** (same session): the persistent watch is armed anew and the tree is
//!   re-read, because events that happened while disconnected are not replayed
//!   (ZOOKEEPER-4698) and persistent watches cannot be trusted to come back.
//! - **Expired**: the session is final. A new one is opened, this process's own
//!   ephemeral nodes are created again, its election candidacy is renewed, and the watch
//!   and snapshot are rebuilt.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use zookeeper_client as zk;

use crate::codec;
use crate::error::{RegistryError, Result};
use crate::model::{LeaderCandidate, Record};
use crate::paths;
use crate::snapshot::{Snapshot, SnapshotCell, SnapshotReader, Versioned};

/// Where the registry lives and how the session behaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// ZooKeeper servers, `host:port[,host:port...]`.
    pub connect: String,
    /// Root znode (a chroot) under which the whole layout lives; several platforms or
    /// tests can share one ZooKeeper with different roots.
    pub root: String,
    /// Session timeout asked of ZooKeeper, milliseconds. Ephemeral nodes vanish this long
    /// after a process dies; a leader is replaced after about this long.
    pub session_timeout_ms: u64,
    /// How long one request or the first connection may take, milliseconds.
    pub request_timeout_ms: u64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            connect: "127.0.0.1:2181".into(),
            root: "/larder".into(),
            session_timeout_ms: 6_000,
            request_timeout_ms: 5_000,
        }
    }
}

impl RegistryConfig {
    /// Checks the fields, naming the bad one.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.connect.trim().is_empty() {
            return Err("zookeeper.connect must name at least one host:port".into());
        }
        for server in self.connect.split(',') {
            crate::names::endpoint(server.trim()).map_err(|e| format!("zookeeper.connect: {e}"))?;
        }
        let root_ok = self.root.starts_with('/')
            && self.root.len() > 1
            && !self.root.ends_with('/')
            && self.root[1..].split('/').all(|s| {
                !s.is_empty()
                    && s != "."
                    && s != ".."
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            });
        if !root_ok {
            return Err(format!(
                "zookeeper.root {:?} must be an absolute path like /larder",
                self.root
            ));
        }
        if !(2_000..=120_000).contains(&self.session_timeout_ms) {
            return Err("zookeeper.session_timeout_ms must be between 2000 and 120000".into());
        }
        if !(100..=60_000).contains(&self.request_timeout_ms) {
            return Err("zookeeper.request_timeout_ms must be between 100 and 60000".into());
        }
        Ok(())
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// Whether this process keeps a [`Snapshot`] of the whole layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// Keep the snapshot current (gateways, control plane).
    Snapshot,
    /// Only hold a session (agents: thousands of them must not all watch everything).
    None,
}

/// The session as last seen by the background loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionStatus {
    pub connected: bool,
    /// When the snapshot was last known to be current: now while connected, the moment
    /// the connection was lost otherwise.
    pub last_confirmed: Instant,
    /// How many sessions this process has opened (rises after each expiry).
    pub sessions: u64,
    /// How many times the watch was armed and the tree re-read.
    pub resyncs: u64,
}

impl SessionStatus {
    /// Time since the snapshot was last confirmed; zero while connected.
    pub fn staleness(&self) -> Duration {
        if self.connected {
            Duration::ZERO
        } else {
            self.last_confirmed.elapsed()
        }
    }
}

/// What this process owns in ZooKeeper and must restore after an expiry.
#[derive(Debug, Default)]
struct Owned {
    /// Ephemeral znodes by path, with their latest value.
    ephemerals: BTreeMap<String, Vec<u8>>,
    /// Election candidacy: its value, and the znode it currently has (if any).
    candidate: Option<(Vec<u8>, Option<String>)>,
}

#[derive(Debug)]
struct Inner {
    config: RegistryConfig,
    watch: Watch,
    /// The current session's client; `None` between an ended session and the next.
    client: ArcSwapOption<zk::Client>,
    owned: Mutex<Owned>,
    status: watch::Sender<SessionStatus>,
    snapshot: Arc<SnapshotCell>,
    /// Asks the background loop to end the session as an expiry would.
    expire: tokio::sync::Notify,
}

/// A handle to the registry; cheap to clone.
#[derive(Debug, Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

fn acl() -> zk::Acls<'static> {
    zk::Acls::anyone_all()
}

async fn open_session(config: &RegistryConfig) -> Result<zk::Client> {
    let connect = async {
        let client = zk::Client::connector()
            .with_session_timeout(Duration::from_millis(config.session_timeout_ms))
            .with_connection_timeout(config.request_timeout())
            .with_fail_eagerly()
            .connect(&config.connect)
            .await
            .map_err(|e| {
                RegistryError::Unavailable(format!(
                    "cannot connect to ZooKeeper at {}: {e}",
                    config.connect
                ))
            })?;
        let options = zk::CreateMode::Persistent.with_acls(acl());
        match client.mkdir(&config.root, &options).await {
            Ok(()) | Err(zk::Error::NodeExists) => {}
            Err(e) => return Err(RegistryError::from_zk(&config.root, e)),
        }
        let client = client
            .chroot(config.root.clone())
            .map_err(|_| RegistryError::Unavailable(format!("bad root {}", config.root)))?;
        for dir in paths::DIRECTORIES {
            match client.create(dir, b"", &options).await {
                Ok(_) | Err(zk::Error::NodeExists) => {}
                Err(e) => return Err(RegistryError::from_zk(dir, e)),
            }
        }
        Ok(client)
    };
    match tokio::time::timeout(config.request_timeout() * 2, connect).await {
        Ok(result) => result,
        Err(_) => Err(RegistryError::Unavailable(format!(
            "ZooKeeper at {} did not answer within {} ms",
            config.connect,
            config.request_timeout_ms * 2
        ))),
    }
}

impl Registry {
    /// Opens a session, creating the root and its directories when missing. Fails fast
    /// with [`RegistryError::Unavailable`] when ZooKeeper cannot be reached, so a service
    /// can refuse to start with a clear message. Call [`Registry::run`] next.
    pub async fn connect(config: RegistryConfig, watch: Watch) -> Result<Self> {
        config.validate().map_err(RegistryError::Config)?;
        let client = open_session(&config).await?;
        let status = SessionStatus {
            connected: true,
            last_confirmed: Instant::now(),
            sessions: 1,
            resyncs: 0,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                watch,
                client: ArcSwapOption::from_pointee(client),
                owned: Mutex::new(Owned::default()),
                status: watch::Sender::new(status),
                snapshot: Arc::new(SnapshotCell::new()),
                expire: tokio::sync::Notify::new(),
            }),
        })
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.inner.config
    }

    /// The snapshot reader (empty until [`Registry::run`] has read the tree once).
    pub fn snapshot(&self) -> SnapshotReader {
        SnapshotReader {
            cell: self.inner.snapshot.clone(),
            status: self.inner.status.subscribe(),
        }
    }

    /// Session status updates.
    pub fn status(&self) -> watch::Receiver<SessionStatus> {
        self.inner.status.subscribe()
    }

    /// The id of the current ZooKeeper session (changes after an expiry).
    pub fn session_id(&self) -> i64 {
        self.inner
            .client
            .load()
            .as_ref()
            .map(|c| c.session_id().0)
            .unwrap_or_default()
    }

    pub(crate) fn client(&self) -> Result<Arc<zk::Client>> {
        let client = self.inner.client.load_full().ok_or_else(|| {
            RegistryError::Unavailable("no ZooKeeper session (a new one is being opened)".into())
        })?;
        // A request made while disconnected would wait inside the client and be sent after
        // the reconnect, long after its caller gave up (and was told to retry). Refuse it
        // here instead, before anything is queued.
        match client.state() {
            zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => Ok(client),
            state => Err(RegistryError::Unavailable(format!(
                "ZooKeeper session is {state:?}"
            ))),
        }
    }

    /// Like [`Registry::timed`] for a write: past the deadline its outcome is unknown.
    pub(crate) async fn timed_write<T>(
        &self,
        path: &str,
        fut: impl Future<Output = Result<T, zk::Error>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.inner.config.request_timeout(), fut).await {
            Ok(Err(zk::Error::ConnectionLoss)) => Err(RegistryError::Indeterminate {
                path: path.to_owned(),
            }),
            Ok(result) => result.map_err(|e| RegistryError::from_zk(path, e)),
            Err(_) => Err(RegistryError::Indeterminate {
                path: path.to_owned(),
            }),
        }
    }

    async fn timed<T>(
        &self,
        path: &str,
        fut: impl Future<Output = Result<T, zk::Error>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.inner.config.request_timeout(), fut).await {
            Ok(result) => result.map_err(|e| RegistryError::from_zk(path, e)),
            Err(_) => Err(RegistryError::Unavailable(format!(
                "request on {path} timed out"
            ))),
        }
    }

    // ----- reads and compare-and-set writes ---------------------------------------------

    /// Reads and decodes a znode; `None` when it does not exist.
    pub async fn get<T: Record>(&self, path: &str) -> Result<Option<Versioned<T>>> {
        let client = self.client()?;
        match self.timed(path, client.get_data(path)).await {
            Ok((bytes, stat)) => {
                let value = codec::decode(path, &bytes)?;
                Ok(Some(Versioned {
                    value,
                    version: stat.version,
                    modified_zxid: stat.mzxid,
                }))
            }
            Err(RegistryError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Names of a znode's children, sorted.
    pub async fn children(&self, path: &str) -> Result<Vec<String>> {
        let client = self.client()?;
        let mut names = self.timed(path, client.list_children(path)).await?;
        names.sort();
        Ok(names)
    }

    /// Creates a persistent znode; [`RegistryError::AlreadyExists`] when it exists.
    pub async fn create<T: Record>(&self, path: &str, value: &T) -> Result<Versioned<()>> {
        let client = self.client()?;
        let options = zk::CreateMode::Persistent.with_acls(acl());
        let (stat, _) = self
            .timed_write(path, client.create(path, &codec::encode(value), &options))
            .await?;
        Ok(Versioned {
            value: (),
            version: stat.version,
            modified_zxid: stat.mzxid,
        })
    }

    /// Creates an empty persistent znode unless it exists.
    pub async fn ensure_dir(&self, path: &str) -> Result<()> {
        let client = self.client()?;
        let options = zk::CreateMode::Persistent.with_acls(acl());
        match self.timed(path, client.create(path, b"", &options)).await {
            Ok(_) | Err(RegistryError::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Replaces a znode's value if its version is still `expected_version`;
    /// [`RegistryError::Conflict`] otherwise. Returns the new version.
    pub async fn set<T: Record>(
        &self,
        path: &str,
        value: &T,
        expected_version: i32,
    ) -> Result<Versioned<()>> {
        let client = self.client()?;
        let stat = self
            .timed_write(
                path,
                client.set_data(path, &codec::encode(value), Some(expected_version)),
            )
            .await?;
        Ok(Versioned {
            value: (),
            version: stat.version,
            modified_zxid: stat.mzxid,
        })
    }

    /// Deletes a znode, at `expected_version` when given.
    pub async fn delete(&self, path: &str, expected_version: Option<i32>) -> Result<()> {
        let client = self.client()?;
        self.timed_write(path, client.delete(path, expected_version))
            .await
    }

    /// Read-modify-write with compare-and-set, retried on conflict (at most 16 times).
    /// `change` may refuse by returning an error, which is passed through.
    pub async fn update<T, F>(&self, path: &str, mut change: F) -> Result<Versioned<T>>
    where
        T: Record + Clone,
        F: FnMut(&mut T) -> Result<()>,
    {
        for _ in 0..16 {
            let Some(current) = self.get::<T>(path).await? else {
                return Err(RegistryError::NotFound {
                    path: path.to_owned(),
                });
            };
            let mut next = current.value.clone();
            change(&mut next)?;
            match self.set(path, &next, current.version).await {
                Ok(v) => {
                    return Ok(Versioned {
                        value: next,
                        version: v.version,
                        modified_zxid: v.modified_zxid,
                    });
                }
                Err(RegistryError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(RegistryError::Conflict {
            path: path.to_owned(),
        })
    }

    // ----- owned ephemeral nodes --------------------------------------------------------

    /// Publishes `value` at the ephemeral `path` and remembers it, so it is re-created
    /// after a session expiry. A leftover node of an earlier session of the same owner
    /// (a restarted process) is replaced rather than waited out.
    pub async fn put_ephemeral<T: Record>(&self, path: &str, value: &T) -> Result<()> {
        let bytes = codec::encode(value);
        self.lock_owned()
            .ephemerals
            .insert(path.to_owned(), bytes.clone());
        self.write_ephemeral(&*self.client()?, path, &bytes).await
    }

    /// Removes an ephemeral node this process published and forgets it.
    pub async fn remove_ephemeral(&self, path: &str) -> Result<()> {
        self.lock_owned().ephemerals.remove(path);
        match self.delete(path, None).await {
            Ok(()) | Err(RegistryError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn lock_owned(&self) -> std::sync::MutexGuard<'_, Owned> {
        // A panic while holding this lock cannot leave `Owned` half-written (each
        // mutation is one map operation), so a poisoned lock is still usable.
        self.inner.owned.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn write_ephemeral(&self, client: &zk::Client, path: &str, bytes: &[u8]) -> Result<()> {
        let options = zk::CreateMode::Ephemeral.with_acls(acl());
        for _ in 0..4 {
            match self.timed(path, client.check_stat(path)).await? {
                Some(stat) if stat.ephemeral_owner == client.session_id().0 => {
                    match self
                        .timed(path, client.set_data(path, bytes, Some(stat.version)))
                        .await
                    {
                        Err(RegistryError::Conflict { .. } | RegistryError::NotFound { .. }) => {
                            continue;
                        }
                        other => return other.map(|_| ()),
                    }
                }
                Some(stat) => {
                    // Left by an earlier session of ours (or a persistent stray): replace it.
                    match self
                        .timed(path, client.delete(path, Some(stat.version)))
                        .await
                    {
                        Ok(())
                        | Err(RegistryError::NotFound { .. } | RegistryError::Conflict { .. }) => {
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                }
                None => match self.timed(path, client.create(path, bytes, &options)).await {
                    Ok(_) => return Ok(()),
                    Err(RegistryError::AlreadyExists { .. }) => continue,
                    Err(e) => return Err(e),
                },
            }
        }
        Err(RegistryError::Conflict {
            path: path.to_owned(),
        })
    }

    // ----- election and fencing ---------------------------------------------------------

    /// Stands for election under `/leader` (ephemeral sequential). The lowest candidate
    /// leads. Candidacy is renewed after a session expiry. Needs [`Watch::Snapshot`] to
    /// observe the outcome through [`Snapshot::leader`] and [`Registry::is_leader`].
    pub async fn stand_for_leader(&self, candidate: &LeaderCandidate) -> Result<String> {
        let bytes = codec::encode(candidate);
        self.lock_owned().candidate = Some((bytes.clone(), None));
        self.create_candidate(&*self.client()?, &bytes).await
    }

    async fn create_candidate(&self, client: &zk::Client, bytes: &[u8]) -> Result<String> {
        let prefix = format!("{}/{}", paths::LEADER, paths::CANDIDATE_PREFIX);
        let options = zk::CreateMode::EphemeralSequential.with_acls(acl());
        let (_, seq) = self
            .timed(&prefix, client.create(&prefix, bytes, &options))
            .await?;
        let name = format!("{}{seq}", paths::CANDIDATE_PREFIX);
        if let Some((_, node)) = self.lock_owned().candidate.as_mut() {
            *node = Some(name.clone());
        }
        Ok(name)
    }

    /// This process's current candidate znode name, if it stands for election.
    pub fn candidate(&self) -> Option<String> {
        self.lock_owned()
            .candidate
            .as_ref()
            .and_then(|(_, n)| n.clone())
    }

    /// Whether this process leads according to the current snapshot.
    pub fn is_leader(&self) -> bool {
        let Some(mine) = self.candidate() else {
            return false;
        };
        self.inner
            .snapshot
            .load()
            .leader()
            .is_some_and(|(name, _)| *name == mine)
            && self.inner.status.borrow().connected
    }

    /// A write that only commits while this process still holds its candidate znode and
    /// that znode is the leader's: ZooKeeper checks both in one transaction, so a leader
    /// that lost its session (a paused process, a partition) cannot write afterwards.
    pub async fn set_fenced<T: Record>(
        &self,
        path: &str,
        value: &T,
        expected_version: i32,
    ) -> Result<Versioned<()>> {
        let Some(mine) = self.candidate() else {
            return Err(RegistryError::Fenced);
        };
        let client = self.client()?;
        let candidates = self.children(paths::LEADER).await?;
        if candidates.first() != Some(&mine) {
            return Err(RegistryError::Fenced);
        }
        let fence = format!("{}/{mine}", paths::LEADER);
        let bytes = codec::encode(value);
        let mut writer = client.new_multi_writer();
        let build = writer
            .add_check_version(&fence, 0)
            .and_then(|_| writer.add_set_data(path, &bytes, Some(expected_version)));
        build.map_err(|e| RegistryError::from_zk(path, e))?;
        match tokio::time::timeout(self.inner.config.request_timeout(), writer.commit()).await {
            Err(_) => Err(RegistryError::Unavailable(format!(
                "fenced write on {path} timed out"
            ))),
            Ok(Ok(results)) => match results.get(1) {
                Some(zk::MultiWriteResult::SetData { stat }) => Ok(Versioned {
                    value: (),
                    version: stat.version,
                    modified_zxid: stat.mzxid,
                }),
                _ => Err(RegistryError::Unavailable("unexpected multi result".into())),
            },
            Ok(Err(zk::MultiWriteError::OperationFailed { index: 0, .. })) => {
                Err(RegistryError::Fenced)
            }
            Ok(Err(zk::MultiWriteError::OperationFailed { source, .. })) => {
                Err(RegistryError::from_zk(path, source))
            }
            Ok(Err(zk::MultiWriteError::RequestFailed { source })) => {
                Err(RegistryError::from_zk(path, source))
            }
        }
    }

    /// Ends the current session from the server's side, as a long partition would: a
    /// second connection takes over the session and closes it. The background loop then
    /// sees `Expired` and recovers. For fault-injection tests and drills.
    pub async fn force_expiry(&self) -> Result<()> {
        // Taking the session over from a second connection races with this client's own
        // reconnects; ending it from the loop that owns it is deterministic. The loop
        // abandons the session (closing it, which removes its ephemeral nodes on the
        // server) and recovers exactly as after a server-side expiry.
        self.inner.expire.notify_one();
        Ok(())
    }

    /// Deletes this process's ephemeral nodes and candidacy now, so peers see it leave at
    /// once instead of after the session timeout.
    async fn withdraw(&self) {
        let (paths, candidate) = {
            let mut owned = self.lock_owned();
            let paths: Vec<String> = std::mem::take(&mut owned.ephemerals).into_keys().collect();
            (paths, owned.candidate.take().and_then(|(_, n)| n))
        };
        let candidate = candidate.map(|n| format!("{}/{n}", paths::LEADER));
        for path in paths.iter().chain(candidate.iter()) {
            let _ = self.delete(path, None).await;
        }
    }

    // ----- the background loop ----------------------------------------------------------

    fn set_connected(&self, connected: bool) {
        self.inner.status.send_modify(|s| {
            if connected || s.connected {
                s.last_confirmed = Instant::now();
            }
            s.connected = connected;
        });
    }

    /// Keeps the session, the owned nodes and (with [`Watch::Snapshot`]) the snapshot
    /// current until `cancel` fires; then closes the session, which removes this
    /// process's ephemeral nodes at once.
    pub async fn run(self, cancel: CancellationToken) {
        let mut fresh_session = false;
        loop {
            let outcome = {
                // Held only for this session, so that ending it drops the last handle.
                let Some(client) = self.inner.client.load_full() else {
                    return;
                };
                self.serve_session(&client, fresh_session, &cancel).await
            };
            match outcome {
                Outcome::Cancelled => {
                    self.withdraw().await;
                    self.set_connected(false);
                    return;
                }
                Outcome::Reconnected => fresh_session = false,
                Outcome::Expired => {
                    self.set_connected(false);
                    // Drop the old client: if its session is still open (a forced
                    // expiry), closing it removes its ephemeral nodes on the server, as
                    // an expiry would, before the new session re-creates them.
                    self.inner.client.store(None);
                    tracing::warn!("ZooKeeper session ended; opening a new one");
                    let mut backoff = Duration::from_millis(100);
                    let new_client = loop {
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            result = open_session(&self.inner.config) => match result {
                                Ok(c) => break c,
                                Err(e) => tracing::debug!(error = %e, "new session not yet possible"),
                            },
                        }
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    };
                    self.inner.client.store(Some(Arc::new(new_client)));
                    self.inner.status.send_modify(|s| s.sessions += 1);
                    tracing::info!(session = self.session_id(), "new ZooKeeper session");
                    fresh_session = true;
                }
            }
        }
    }

    async fn serve_session(
        &self,
        client: &zk::Client,
        fresh_session: bool,
        cancel: &CancellationToken,
    ) -> Outcome {
        let mut state = client.state_watcher();
        // Set up until it works or the session ends: restore owned nodes, arm the watch,
        // re-read the tree.
        let mut watcher = loop {
            match client.state() {
                zk::SessionState::Expired
                | zk::SessionState::Closed
                | zk::SessionState::AuthFailed => {
                    return Outcome::Expired;
                }
                _ => {}
            }
            match self.establish(client, fresh_session).await {
                Ok(w) => break w,
                Err(e) => {
                    tracing::debug!(error = %e, "registry set-up failed; retrying");
                    self.set_connected(false);
                    tokio::select! {
                        _ = cancel.cancelled() => return Outcome::Cancelled,
                        _ = state.changed() => {},
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {},
                    }
                }
            }
        };
        self.set_connected(true);
        self.inner.status.send_modify(|s| s.resyncs += 1);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Outcome::Cancelled,
                _ = self.inner.expire.notified() => return Outcome::Expired,
                s = state.changed() => match s {
                    zk::SessionState::Disconnected => {
                        tracing::warn!("ZooKeeper disconnected; serving the last snapshot");
                        self.set_connected(false);
                    }
                    zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {
                        tracing::info!("ZooKeeper reconnected; re-arming watches and re-reading");
                        return Outcome::Reconnected;
                    }
                    _ => return Outcome::Expired,
                },
                event = next_event(&mut watcher) => {
                    if event.event_type == zk::EventType::Session {
                        match event.session_state {
                            zk::SessionState::Expired | zk::SessionState::Closed | zk::SessionState::AuthFailed => {
                                return Outcome::Expired;
                            }
                            // Connection changes are handled through `state`.
                            _ => continue,
                        }
                    }
                    self.apply_event(client, &event.path).await;
                }
            }
        }
    }

    /// Restores owned nodes and, when watching, arms the recursive watch then re-reads
    /// the tree (in that order, so no change between the two is missed).
    async fn establish(
        &self,
        client: &zk::Client,
        fresh_session: bool,
    ) -> Result<Option<zk::PersistentWatcher>> {
        let (ephemerals, candidate) = {
            let owned = self.lock_owned();
            (owned.ephemerals.clone(), owned.candidate.clone())
        };
        for (path, bytes) in &ephemerals {
            match self.write_ephemeral(client, path, bytes).await {
                Ok(()) => {}
                // The parent went away (a deregistered cluster): nothing to restore.
                Err(RegistryError::NotFound { .. }) => {
                    tracing::warn!(%path, "parent gone; not restoring")
                }
                Err(e) => return Err(e),
            }
        }
        if let Some((bytes, node)) = candidate {
            let alive = match &node {
                Some(name) if !fresh_session => {
                    let path = format!("{}/{name}", paths::LEADER);
                    self.timed(&path, client.check_stat(&path)).await?.is_some()
                }
                _ => false,
            };
            if !alive {
                self.create_candidate(client, &bytes).await?;
            }
        }
        if self.inner.watch == Watch::None {
            return Ok(None);
        }
        let watcher = self
            .timed(
                "/",
                client.watch("/", zk::AddWatchMode::PersistentRecursive),
            )
            .await?;
        let snapshot = self.read_all(client).await?;
        self.inner.snapshot.publish(snapshot);
        Ok(Some(watcher))
    }

    /// Reads the whole layout into a new snapshot, many requests in flight at once.
    async fn read_all(&self, client: &zk::Client) -> Result<Snapshot> {
        let mut paths_to_read = Vec::new();
        for dir in [
            paths::CLUSTERS,
            paths::NAMESPACES,
            paths::KEYS,
            paths::REVOKED,
            paths::GATEWAYS,
            paths::LEADER,
        ] {
            for child in self.timed(dir, client.list_children(dir)).await? {
                paths_to_read.push(format!("{dir}/{child}"));
            }
        }
        let clusters: Vec<String> = paths_to_read
            .iter()
            .filter_map(|p| p.strip_prefix("/clusters/").map(str::to_owned))
            .collect();
        for cluster in clusters {
            let dir = paths::nodes(&cluster);
            match self.timed(&dir, client.list_children(&dir)).await {
                Ok(children) => {
                    paths_to_read.extend(children.into_iter().map(|c| format!("{dir}/{c}")))
                }
                Err(RegistryError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let reads = futures::stream::iter(paths_to_read)
            .map(|path| async move {
                let result = self.timed(&path, client.get_data(&path)).await;
                (path, result)
            })
            .buffer_unordered(128);
        let results: Vec<_> = reads.collect().await;
        let mut snapshot = Snapshot::default();
        for (path, result) in results {
            match result {
                Ok((bytes, stat)) => {
                    snapshot.apply(&path, Some((&bytes, stat.version, stat.mzxid)));
                }
                Err(RegistryError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(snapshot)
    }

    /// Applies one watch event by reading the node's current value: O(1) ZooKeeper
    /// requests and O(log n) snapshot work per change.
    async fn apply_event(&self, client: &zk::Client, path: &str) {
        if matches!(
            paths::classify(path),
            paths::Entry::Other | paths::Entry::Nodes(_)
        ) {
            return;
        }
        let data = match self.timed(path, client.get_data(path)).await {
            Ok((bytes, stat)) => Some((bytes, stat.version, stat.mzxid)),
            Err(RegistryError::NotFound { .. }) => None,
            Err(e) => {
                // Connection trouble: the reconnect path re-reads everything.
                tracing::debug!(%path, error = %e, "could not read changed node");
                return;
            }
        };
        let mut next = (*self.inner.snapshot.load()).clone();
        if next.apply(path, data.as_ref().map(|(b, v, z)| (b.as_slice(), *v, *z))) {
            self.inner.snapshot.publish(next);
        }
    }
}

enum Outcome {
    Cancelled,
    Reconnected,
    Expired,
}

async fn next_event(watcher: &mut Option<zk::PersistentWatcher>) -> zk::WatchedEvent {
    match watcher {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}
