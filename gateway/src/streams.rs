//! Exclusive connections for blocking queue reads.
//!
//! A claim with a wait runs `XREADGROUP … BLOCK`. Redis answers nothing else on a
//! connection while it is blocked, so a blocking read must never run on the shared
//! multiplexed connection of [`Backends`](crate::backend::Backends): every request
//! pipelined behind it would stall. Blocking reads run instead on exclusive connections
//! taken from a [`bb8`] pool of [`bb8_redis::RedisConnectionManager`] connections,
//! one pool per Redis node address:
//!
//! - **Which node.** Standalone: the deployment's master. Redis Cluster: the master that
//!   owns the stream key's hash slot (CRC16 of the key, honouring hash tags, modulo
//!   16384), looked up in a slot map read with `CLUSTER SLOTS` through
//!   [`Backends`](crate::backend::Backends) and cached per deployment until its epoch or
//!   endpoints change. A `MOVED` reply refreshes the map once and retries on the new
//!   owner; an `ASK` reply retries once on the importing node with `ASKING`.
//! - **Bounds.** At most [`MAX_PER_NODE`] connections per node and
//!   [`MAX_TOTAL`] across all nodes of this gateway. A claim that cannot get a connection
//!   within its wait slice does not fail: it falls back to looking again without
//!   blocking, so a saturated gateway degrades to polling instead of refusing work.
//!   Idle connections are closed after [`IDLE_TIMEOUT`].
//! - **Cancellation.** A connection goes back to its pool only after Redis answered the
//!   command that ran on it. If the request is dropped mid-wait (the client hung up, the
//!   deadline passed, the gateway shuts down), the connection is discarded instead of
//!   returned: closing it makes Redis forget the blocked read at once, so no later
//!   message is handed to a consumer nobody is listening for, and no later borrower
//!   inherits a connection still blocked on someone else's read.
//! - **Deadlines.** Each blocking command is bounded by its `BLOCK` time plus the
//!   request deadline; past that the connection is discarded and the request fails with
//!   504.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bb8::{Pool, PooledConnection, RunError};
use bb8_redis::RedisConnectionManager;
use larder_registry::model::{Cluster, Topology};
use redis::aio::MultiplexedConnection;
use redis::{Cmd, RedisError, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::backend::Backends;
use crate::error::ApiError;

/// Exclusive connections per Redis node.
pub const MAX_PER_NODE: u32 = 16;
/// Exclusive connections across all nodes, so a burst of waiting claims cannot exhaust
/// the gateway's sockets or the nodes' client limits.
pub const MAX_TOTAL: usize = 256;
/// Idle exclusive connections are closed after this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Number of hash slots of Redis Cluster.
pub const SLOTS: u16 = 16_384;

/// An exclusive connection and whether it may be reused. It is reusable only while no
/// command is outstanding on it; [`BlockingConnections::has_broken`] makes the pool
/// discard it otherwise.
pub struct Exclusive {
    conn: MultiplexedConnection,
    idle: bool,
}

/// The pool's connection manager: [`RedisConnectionManager`] connections, discarded on
/// return unless the last command on them was answered.
#[derive(Clone)]
pub struct BlockingConnections {
    inner: RedisConnectionManager,
}

impl bb8::ManageConnection for BlockingConnections {
    type Connection = Exclusive;
    type Error = RedisError;

    async fn connect(&self) -> Result<Exclusive, RedisError> {
        let conn = self.inner.connect().await?;
        Ok(Exclusive { conn, idle: true })
    }

    async fn is_valid(&self, conn: &mut Exclusive) -> Result<(), RedisError> {
        self.inner.is_valid(&mut conn.conn).await
    }

    fn has_broken(&self, conn: &mut Exclusive) -> bool {
        !conn.idle
    }
}

/// Timeouts a [`Blocker`] works with.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Opening a connection (and waiting for a pooled one).
    pub connect: Duration,
    /// Added to every `BLOCK` time to bound one blocking command.
    pub request: Duration,
}

/// A deployment's slot map: which master owns which hash slots.
struct SlotMap {
    epoch: u64,
    endpoints: Vec<String>,
    /// `(first slot, last slot, "host:port")`, sorted by first slot.
    ranges: Vec<(u16, u16, String)>,
}

impl SlotMap {
    fn owner(&self, slot: u16) -> Option<&str> {
        let i = self.ranges.partition_point(|(first, _, _)| *first <= slot);
        let (first, last, node) = self.ranges.get(i.checked_sub(1)?)?;
        (*first..=*last).contains(&slot).then_some(node.as_str())
    }
}

/// Pools of exclusive connections, one pool per Redis node.
pub struct Streams {
    permits: Arc<Semaphore>,
    pools: Mutex<HashMap<String, Pool<BlockingConnections>>>,
    slot_maps: RwLock<HashMap<String, Arc<SlotMap>>>,
    shutdown: CancellationToken,
}

impl Default for Streams {
    fn default() -> Self {
        Self::new()
    }
}

impl Streams {
    pub fn new() -> Self {
        Self {
            permits: Arc::new(Semaphore::new(MAX_TOTAL)),
            pools: Mutex::new(HashMap::new()),
            slot_maps: RwLock::new(HashMap::new()),
            shutdown: CancellationToken::new(),
        }
    }

    /// Ends every blocking wait now and refuses new ones (they return as if nothing
    /// arrived), so a draining gateway is not held up by long polls.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Exclusive connections currently lent out, across all nodes.
    pub fn in_use(&self) -> usize {
        MAX_TOTAL - self.permits.available_permits()
    }

    /// A blocker for commands on `key` of `cluster`; it borrows an exclusive connection
    /// on first use and keeps it until dropped.
    pub fn blocker<'a>(
        &'a self,
        backends: &'a Backends,
        cluster: &'a Cluster,
        key: &[u8],
        timeouts: Timeouts,
    ) -> Blocker<'a> {
        Blocker {
            streams: self,
            backends,
            cluster,
            slot: key_slot(key),
            timeouts,
            lease: None,
        }
    }

    fn pool(&self, node: &str, connect: Duration) -> Result<Pool<BlockingConnections>, String> {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pool) = pools.get(node) {
            return Ok(pool.clone());
        }
        let inner =
            RedisConnectionManager::new(format!("redis://{node}/")).map_err(|e| e.to_string())?;
        let pool = Pool::builder()
            .max_size(MAX_PER_NODE)
            .min_idle(None)
            .idle_timeout(Some(IDLE_TIMEOUT))
            .connection_timeout(connect)
            // A node that refuses connections is reported at once (503), not retried
            // until the wait runs out.
            .retry_connection(false)
            .test_on_check_out(true)
            .build_unchecked(BlockingConnections { inner });
        pools.insert(node.to_owned(), pool.clone());
        Ok(pool)
    }

    /// The node serving `slot` on `cluster`; `refresh` re-reads the slot map first.
    async fn node(
        &self,
        backends: &Backends,
        cluster: &Cluster,
        slot: u16,
        refresh: bool,
    ) -> Result<String, ApiError> {
        if cluster.topology == Topology::Standalone {
            return cluster
                .master()
                .map(str::to_owned)
                .ok_or_else(|| unavailable(cluster, "no master registered"));
        }
        if !refresh {
            let maps = self.slot_maps.read().unwrap_or_else(|p| p.into_inner());
            if let Some(map) = maps.get(&cluster.name)
                && map.epoch == cluster.epoch
                && map.endpoints == cluster.endpoints
                && let Some(node) = map.owner(slot)
            {
                return Ok(node.to_owned());
            }
        }
        let reply: Value = backends
            .query(cluster, redis::cmd("CLUSTER").arg("SLOTS"))
            .await?;
        let map = SlotMap {
            epoch: cluster.epoch,
            endpoints: cluster.endpoints.clone(),
            ranges: parse_cluster_slots(&reply),
        };
        let node = map.owner(slot).map(str::to_owned);
        self.slot_maps
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(cluster.name.clone(), Arc::new(map));
        node.ok_or_else(|| unavailable(cluster, &format!("no node serves slot {slot}")))
    }
}

/// An exclusive connection lent to one request, with its share of [`MAX_TOTAL`].
struct Lease {
    node: String,
    conn: PooledConnection<'static, BlockingConnections>,
    _permit: OwnedSemaphorePermit,
}

/// Runs blocking commands of one request on an exclusive connection.
pub struct Blocker<'a> {
    streams: &'a Streams,
    backends: &'a Backends,
    cluster: &'a Cluster,
    slot: u16,
    timeouts: Timeouts,
    lease: Option<Lease>,
}

/// Where the next attempt of a command goes.
enum Route {
    /// The node the slot map names.
    Owner { refresh: bool },
    /// The node of an `ASK` redirect, with `ASKING` first.
    Asking(String),
}

impl Blocker<'_> {
    /// Runs `cmd` (a command that blocks for at most `block`) on an exclusive
    /// connection. `Ok(None)` when no exclusive connection became free within `block`
    /// or the gateway is shutting down: the caller should look again without blocking.
    pub async fn run(&mut self, cmd: &Cmd, block: Duration) -> Result<Option<Value>, ApiError> {
        let started = Instant::now();
        let mut route = Route::Owner { refresh: false };
        // The first attempt, one after a MOVED (with a fresh slot map) and one after an
        // ASK: a key that keeps moving is a 503 the client may retry.
        for _ in 0..3 {
            let (node, asking) = match route {
                Route::Owner { refresh } => (
                    self.streams
                        .node(self.backends, self.cluster, self.slot, refresh)
                        .await?,
                    false,
                ),
                Route::Asking(ref node) => (node.clone(), true),
            };
            let within = block.saturating_sub(started.elapsed());
            if !self.lease_on(&node, within).await? {
                return Ok(None);
            }
            let Some(lease) = self.lease.as_mut() else {
                return Ok(None);
            };
            let limit = block + self.timeouts.request;
            let reply = tokio::select! {
                reply = run_on(&mut lease.conn, cmd, asking, limit) => Some(reply),
                () = self.streams.shutdown.cancelled() => None,
            };
            let Some(reply) = reply else {
                // The command was abandoned with the connection marked busy: dropping
                // the lease closes the connection instead of reusing it.
                self.lease = None;
                return Ok(None);
            };
            match reply {
                Ok(value) => return Ok(Some(value)),
                Err(Failure::Redirect { moved: true, .. }) => {
                    tracing::debug!(%node, "blocking read moved; refreshing the slot map");
                    route = Route::Owner { refresh: true };
                }
                Err(Failure::Redirect { moved: false, to }) => route = Route::Asking(to),
                Err(Failure::Timeout) => {
                    self.lease = None;
                    return Err(self.counted(ApiError::BackendTimeout {
                        cluster: self.cluster.name.clone(),
                        ms: limit.as_millis() as u64,
                    }));
                }
                Err(Failure::Broken(why)) => {
                    self.lease = None;
                    return Err(self.counted(unavailable(self.cluster, &why)));
                }
                Err(Failure::Redis(why)) => {
                    return Err(self.counted(ApiError::Backend {
                        cluster: self.cluster.name.clone(),
                        detail: why,
                    }));
                }
            }
        }
        Err(self.counted(unavailable(
            self.cluster,
            "the queue's hash slot kept moving; retry",
        )))
    }

    /// Counts a failure of this connection in `larder_gateway_redis_errors_total`, as
    /// [`Backends::run`] counts those of the shared connections.
    fn counted(&self, error: ApiError) -> ApiError {
        self.backends.record_error(&self.cluster.name, &error);
        error
    }

    /// Makes sure the lease is a connection to `node`, waiting at most `within` for one.
    /// `Ok(false)` when none became free in time.
    async fn lease_on(&mut self, node: &str, within: Duration) -> Result<bool, ApiError> {
        if self.lease.as_ref().is_some_and(|l| l.node == node) {
            return Ok(true);
        }
        // Give back a connection to another node before taking one.
        self.lease = None;
        if self.streams.shutdown.is_cancelled() {
            return Ok(false);
        }
        let acquire = async {
            let permit = self
                .streams
                .permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| None)?;
            let pool = self
                .streams
                .pool(node, self.timeouts.connect)
                .map_err(Some)?;
            match pool.get_owned().await {
                Ok(conn) => Ok((permit, conn)),
                Err(RunError::TimedOut) => Err(None),
                Err(RunError::User(e)) => Err(Some(e.to_string())),
            }
        };
        match tokio::time::timeout(within, acquire).await {
            Ok(Ok((permit, conn))) => {
                self.lease = Some(Lease {
                    node: node.to_owned(),
                    conn,
                    _permit: permit,
                });
                Ok(true)
            }
            Ok(Err(Some(why))) => Err(self.counted(unavailable(self.cluster, &why))),
            Ok(Err(None)) | Err(_) => Ok(false),
        }
    }
}

/// Why a blocking command did not answer.
enum Failure {
    /// `MOVED` (`moved`) or `ASK` to node `to`; the connection is fine.
    Redirect { moved: bool, to: String },
    /// No answer within the limit; the connection was left busy.
    Timeout,
    /// The connection failed.
    Broken(String),
    /// Redis answered with an error; the connection is fine.
    Redis(String),
}

/// Runs `cmd` on `conn` within `limit`. The connection is marked busy for the whole
/// command, so if this future is dropped before Redis answers, the pool discards it.
async fn run_on(
    conn: &mut Exclusive,
    cmd: &Cmd,
    asking: bool,
    limit: Duration,
) -> Result<Value, Failure> {
    conn.idle = false;
    // The pool's connections carry redis-rs's short default response timeout; a
    // blocking command needs its whole BLOCK time plus the deadline.
    conn.conn.set_response_timeout(limit);
    let work = async {
        if asking {
            let mut pipe = redis::pipe();
            pipe.cmd("ASKING").ignore().add_command(cmd.clone());
            let mut replies: Vec<Value> = pipe.query_async(&mut conn.conn).await?;
            Ok(replies.pop().unwrap_or(Value::Nil))
        } else {
            cmd.query_async::<Value>(&mut conn.conn).await
        }
    };
    let result = match tokio::time::timeout(limit, work).await {
        Err(_) => return Err(Failure::Timeout),
        Ok(result) => result,
    };
    match result {
        Ok(value) => {
            conn.idle = true;
            Ok(value)
        }
        Err(e) if e.is_timeout() => Err(Failure::Timeout),
        Err(e)
            if e.is_io_error()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.is_unrecoverable_error() =>
        {
            Err(Failure::Broken(e.to_string()))
        }
        Err(e) => {
            // Redis answered; nothing is outstanding on the connection.
            conn.idle = true;
            match e.redirect_node() {
                Some((host, port)) => Err(Failure::Redirect {
                    moved: matches!(
                        e.kind(),
                        redis::ErrorKind::Server(redis::ServerErrorKind::Moved)
                    ),
                    to: format!("{host}:{port}"),
                }),
                None => Err(Failure::Redis(e.to_string())),
            }
        }
    }
}

fn unavailable(cluster: &Cluster, why: &str) -> ApiError {
    ApiError::BackendUnavailable {
        cluster: cluster.name.clone(),
        detail: why.to_owned(),
    }
}

/// CRC16/XMODEM, the checksum Redis Cluster hashes keys with.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The Redis Cluster hash slot of `key`: only the hash tag is hashed when the key has
/// one (the bytes between the first `{` and the next `}`, if not empty).
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let tag = &key[open + 1..];
            let close = tag.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &tag[..close])
        })
        .unwrap_or(key);
    crc16(hashed) % SLOTS
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(i) => Some(*i),
        other => text(other)?.parse().ok(),
    }
}

/// The master ranges of a `CLUSTER SLOTS` reply, sorted. Entries without a usable
/// address (an empty or `?` host) are skipped.
fn parse_cluster_slots(reply: &Value) -> Vec<(u16, u16, String)> {
    let Value::Array(entries) = reply else {
        return Vec::new();
    };
    let mut ranges: Vec<(u16, u16, String)> = entries
        .iter()
        .filter_map(|entry| {
            let Value::Array(fields) = entry else {
                return None;
            };
            let first = u16::try_from(int(fields.first()?)?).ok()?;
            let last = u16::try_from(int(fields.get(1)?)?).ok()?;
            let Value::Array(master) = fields.get(2)? else {
                return None;
            };
            let host = text(master.first()?)?;
            let port = int(master.get(1)?)?;
            if host.is_empty() || host == "?" {
                return None;
            }
            Some((first, last, format!("{host}:{port}")))
        })
        .collect();
    ranges.sort();
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis_cluster() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
        // Values of `CLUSTER KEYSLOT`.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"somekey"), 11058);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        // An empty tag hashes the whole key; only the first tag counts.
        assert_eq!(key_slot(b"{}x"), crc16(b"{}x") % SLOTS);
        assert_eq!(key_slot(b"a{b}{c}"), key_slot(b"b"));
        assert_eq!(key_slot(b"a{b"), crc16(b"a{b") % SLOTS);
        // A queue, its dead letters and its idempotency records share a slot.
        use larder_registry::keyspace;
        for q in [&b"orders"[..], b"a}b", b"{x}", b"}"] {
            let slot = key_slot(&keyspace::queue_key("ns", q));
            assert_eq!(slot, key_slot(&keyspace::dead_letter_key("ns", q)));
            assert_eq!(
                slot,
                key_slot(&keyspace::idempotency_key("ns", "queue", q, b"k"))
            );
        }
    }

    #[test]
    fn cluster_slots_reply_maps_slots_to_masters() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(10922),
                node("127.0.0.1", 7002),
                node("127.0.0.1", 7005),
            ]),
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("127.0.0.1", 7001),
            ]),
            Value::Array(vec![Value::Int(10923), Value::Int(16383), node("", 7003)]),
        ]);
        let map = SlotMap {
            epoch: 1,
            endpoints: vec![],
            ranges: parse_cluster_slots(&reply),
        };
        assert_eq!(map.owner(0), Some("127.0.0.1:7001"));
        assert_eq!(map.owner(5460), Some("127.0.0.1:7001"));
        assert_eq!(map.owner(5461), Some("127.0.0.1:7002"));
        assert_eq!(map.owner(10922), Some("127.0.0.1:7002"));
        assert_eq!(map.owner(10923), None, "no usable address");
        assert_eq!(map.owner(16383), None);
    }
}
