//! Connections to the Redis deployments, one per deployment, shared by all requests.
//!
//! Standalone deployments get one multiplexed connection to the current master (the hot
//! path: one socket carries every request, pipelined); Redis Cluster gets the cluster
//! client, which follows `MOVED`/`ASK` and failovers itself. A connection is rebuilt
//! when the registry shows a new epoch or endpoints (a failover) or after an I/O error.
//!
//! A dropped or timed-out request cannot receive another request's reply: the
//! multiplexed connection's driver task matches replies to requests in order and
//! discards the replies of requests whose callers went away.
//!
//! Each deployment is its own bulkhead: a failed connect is remembered briefly so the
//! requests of a dead deployment fail fast with 503 instead of queueing, and no other
//! deployment is affected.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use larder_registry::model::{Cluster, Topology};
use prometheus::IntCounterVec;
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, RedisError};

use crate::error::ApiError;

/// How long a failed connect is remembered before the next attempt.
const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(250);

/// A live connection to one deployment; cheap to clone.
#[derive(Clone)]
pub enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

#[derive(Clone, PartialEq, Eq)]
struct Identity {
    epoch: u64,
    endpoints: Vec<String>,
}

struct Slot {
    identity: Identity,
    conn: Option<Conn>,
    failed: Option<(Instant, String)>,
    connecting: Arc<tokio::sync::Mutex<()>>,
}

/// All deployments' connections.
pub struct Backends {
    slots: RwLock<HashMap<String, Slot>>,
    connect_timeout: Duration,
    request_timeout: Duration,
    /// `larder_gateway_redis_errors_total{cluster,kind}`.
    errors: IntCounterVec,
}

fn identity(cluster: &Cluster) -> Identity {
    Identity {
        epoch: cluster.epoch,
        endpoints: cluster.endpoints.clone(),
    }
}

/// Whether an error means the connection itself is unusable.
fn broken(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
}

impl Backends {
    pub fn new(connect_timeout: Duration, request_timeout: Duration) -> Self {
        Self {
            slots: RwLock::new(HashMap::new()),
            connect_timeout,
            request_timeout,
            errors: crate::metrics::redis_errors_counter(),
        }
    }

    /// Counts failed calls into `errors` (the registered
    /// `larder_gateway_redis_errors_total`) instead of a private counter.
    pub fn with_error_counter(mut self, errors: IntCounterVec) -> Self {
        self.errors = errors;
        self
    }

    /// Counts a failed call to `cluster`, by kind; errors that are not Redis's are
    /// ignored.
    pub fn record_error(&self, cluster: &str, error: &ApiError) {
        if let Some(kind) = crate::metrics::redis_error_kind(error) {
            self.errors.with_label_values(&[cluster, kind]).inc();
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Slot>> {
        // Each write is a single insert or field update; a poisoned lock holds no
        // half-made state, so it stays usable.
        self.slots.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Slot>> {
        self.slots.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection for `cluster`, opening it if needed.
    pub async fn get(&self, cluster: &Cluster) -> Result<Conn, ApiError> {
        let id = identity(cluster);
        let connecting = {
            let slots = self.read();
            match slots.get(&cluster.name) {
                Some(slot) if slot.identity == id => {
                    if let Some(conn) = &slot.conn {
                        return Ok(conn.clone());
                    }
                    if let Some((at, why)) = &slot.failed
                        && at.elapsed() < RETRY_AFTER_FAILURE
                    {
                        return Err(unavailable(cluster, why));
                    }
                    Some(slot.connecting.clone())
                }
                _ => None,
            }
        };
        let connecting = match connecting {
            Some(c) => c,
            None => {
                let mut slots = self.write();
                let slot = slots.entry(cluster.name.clone()).or_insert_with(|| Slot {
                    identity: id.clone(),
                    conn: None,
                    failed: None,
                    connecting: Arc::default(),
                });
                if slot.identity != id {
                    *slot = Slot {
                        identity: id.clone(),
                        conn: None,
                        failed: None,
                        connecting: Arc::default(),
                    };
                }
                slot.connecting.clone()
            }
        };
        // One connect at a time per deployment; the others wait and reuse its result.
        let _guard = connecting.lock().await;
        {
            let slots = self.read();
            if let Some(slot) = slots.get(&cluster.name).filter(|s| s.identity == id) {
                if let Some(conn) = &slot.conn {
                    return Ok(conn.clone());
                }
                if let Some((at, why)) = &slot.failed
                    && at.elapsed() < RETRY_AFTER_FAILURE
                {
                    return Err(unavailable(cluster, why));
                }
            }
        }
        let result = self.connect(cluster).await;
        let mut slots = self.write();
        if let Some(slot) = slots.get_mut(&cluster.name).filter(|s| s.identity == id) {
            match &result {
                Ok(conn) => {
                    slot.conn = Some(conn.clone());
                    slot.failed = None;
                }
                Err(why) => slot.failed = Some((Instant::now(), why.clone())),
            }
        }
        result.map_err(|why| unavailable(cluster, &why))
    }

    async fn connect(&self, cluster: &Cluster) -> Result<Conn, String> {
        let work = async {
            match cluster.topology {
                Topology::Standalone => {
                    let master = cluster.master().ok_or("no master registered")?;
                    let client = redis::Client::open(format!("redis://{master}/"))
                        .map_err(|e| e.to_string())?;
                    let config = redis::AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(self.connect_timeout))
                        .set_response_timeout(Some(self.request_timeout));
                    let conn = client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok(Conn::Single(conn))
                }
                Topology::Cluster => {
                    let nodes: Vec<String> = cluster
                        .endpoints
                        .iter()
                        .map(|e| format!("redis://{e}/"))
                        .collect();
                    // Few, short internal retries: the client's default waits at least
                    // 1.28 s before a retry, so a request that met a dead master used up
                    // its retries (and most of its deadline) before it could follow the
                    // MOVED to the promoted replica. Waits of 10 ms doubling up to a
                    // quarter of the deadline follow a redirect at once, and a real
                    // failure still surfaces (and rebuilds the connection) in time.
                    let client = redis::cluster::ClusterClientBuilder::new(nodes)
                        .connection_timeout(self.connect_timeout)
                        .response_timeout(self.request_timeout)
                        .retries(4)
                        .min_retry_wait(10)
                        .max_retry_wait((self.request_timeout.as_millis() as u64 / 4).max(20))
                        .retry_wait_formula(10, 2)
                        .build()
                        .map_err(|e| e.to_string())?;
                    let conn = client
                        .get_async_connection()
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok(Conn::Cluster(conn))
                }
            }
        };
        match tokio::time::timeout(self.connect_timeout * 2, work).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "connect timed out after {} ms",
                self.connect_timeout.as_millis()
            )),
        }
    }

    /// Forgets a broken connection so the next request opens a new one.
    ///
    /// A standalone deployment's failure is the whole deployment's: its next requests
    /// fail fast for a moment instead of queueing on a dead master. A Redis Cluster
    /// failure is usually one node's (a dead master's slots), while the other masters
    /// serve on: the connection is rebuilt, but no request is failed on its behalf.
    fn evict(&self, cluster: &Cluster, why: &str) {
        let mut slots = self.write();
        if let Some(slot) = slots.get_mut(&cluster.name) {
            slot.conn = None;
            if cluster.topology == Topology::Standalone {
                slot.failed = Some((Instant::now(), why.to_owned()));
            }
        }
    }

    /// Runs `work` on a connection to `cluster` within the request deadline, mapping
    /// failures to 503 (unreachable; the connection is dropped for a fresh one), 504
    /// (deadline passed) or 502 (Redis refused the command).
    /// Every failure is counted in `larder_gateway_redis_errors_total`.
    pub async fn run<T, F, Fut>(&self, cluster: &Cluster, work: F) -> Result<T, ApiError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let result = self.run_uncounted(cluster, work).await;
        if let Err(e) = &result {
            self.record_error(&cluster.name, e);
        }
        result
    }

    async fn run_uncounted<T, F, Fut>(&self, cluster: &Cluster, work: F) -> Result<T, ApiError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.get(cluster).await?;
        let timeout = || ApiError::BackendTimeout {
            cluster: cluster.name.clone(),
            ms: self.request_timeout.as_millis() as u64,
        };
        // A Redis Cluster whose master died answers its slots with timeouts until the
        // cluster has promoted a replica; the client's slot map may still name the dead
        // node then. Dropping the connection after a timeout makes the next request build
        // a new one from the live seeds, with the current slot map.
        let rebuild_on_timeout = cluster.topology == Topology::Cluster;
        let timed_out = |why: &str| {
            if rebuild_on_timeout {
                self.evict(cluster, why);
            }
            timeout()
        };
        match tokio::time::timeout(self.request_timeout, work(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if e.is_timeout() => Err(timed_out(&e.to_string())),
            // MOVED, ASK, TRYAGAIN or CLUSTERDOWN left over after the client's own
            // retries: the cluster is moving slots (a failover); the request may be
            // retried, and the next connection starts from the current slot map.
            Ok(Err(e)) if broken(&e) || e.is_cluster_error() => {
                self.evict(cluster, &e.to_string());
                Err(unavailable(cluster, &e.to_string()))
            }
            Ok(Err(e)) => Err(ApiError::Backend {
                cluster: cluster.name.clone(),
                detail: e.to_string(),
            }),
            Err(_) => Err(timed_out("no answer within the deadline")),
        }
    }

    /// Runs one command on `cluster` within the request deadline.
    pub async fn query<T: FromRedisValue>(
        &self,
        cluster: &Cluster,
        cmd: &Cmd,
    ) -> Result<T, ApiError> {
        self.run(cluster, |conn| async move {
            match conn {
                Conn::Single(mut c) => cmd.query_async::<T>(&mut c).await,
                Conn::Cluster(mut c) => cmd.query_async::<T>(&mut c).await,
            }
        })
        .await
    }

    /// Runs a Lua script on `cluster` within the request deadline.
    pub async fn script<T: FromRedisValue>(
        &self,
        cluster: &Cluster,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, ApiError> {
        self.run(cluster, |conn| async move {
            match conn {
                Conn::Single(mut c) => invocation.invoke_async::<T>(&mut c).await,
                Conn::Cluster(mut c) => invocation.invoke_async::<T>(&mut c).await,
            }
        })
        .await
    }
}

impl Backends {
    /// The nodes a listing walks: the master of a standalone deployment, or every
    /// master of a Redis Cluster (`host:port`, sorted so a cursor's node index is stable).
    pub async fn nodes(&self, cluster: &Cluster) -> Result<Vec<String>, ApiError> {
        if cluster.topology == Topology::Standalone {
            return Ok(cluster
                .master()
                .map(|m| vec![m.to_owned()])
                .unwrap_or_default());
        }
        let slots: redis::Value = self
            .query(cluster, &redis::cmd("CLUSTER").arg("SLOTS").to_owned())
            .await?;
        let mut masters = Vec::new();
        if let redis::Value::Array(ranges) = slots {
            for range in ranges {
                if let redis::Value::Array(fields) = range
                    && let Some(redis::Value::Array(master)) = fields.get(2)
                {
                    let host = match master.first() {
                        Some(redis::Value::BulkString(h)) => {
                            String::from_utf8_lossy(h).into_owned()
                        }
                        _ => continue,
                    };
                    let port = match master.get(1) {
                        Some(redis::Value::Int(p)) => *p,
                        _ => continue,
                    };
                    masters.push(format!("{host}:{port}"));
                }
            }
        }
        masters.sort();
        masters.dedup();
        Ok(masters)
    }

    /// Runs `cmd` on one node (`host:port`) of `cluster`: the connection itself for a
    /// standalone deployment, the cluster client routed by address for Redis Cluster.
    pub async fn on_node<T: FromRedisValue>(
        &self,
        cluster: &Cluster,
        node: &str,
        cmd: Cmd,
    ) -> Result<T, ApiError> {
        let (host, port) = node
            .rsplit_once(':')
            .and_then(|(h, p)| p.parse::<u16>().ok().map(|p| (h.to_owned(), p)))
            .ok_or_else(|| ApiError::Internal(format!("bad node address {node}")))?;
        self.run(cluster, |conn| async move {
            match conn {
                Conn::Single(mut c) => cmd.query_async::<T>(&mut c).await,
                Conn::Cluster(mut c) => {
                    use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
                    let routing =
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
                    let value = c.route_command(cmd, routing).await?;
                    redis::from_redis_value(value).map_err(Into::into)
                }
            }
        })
        .await
    }
}

fn unavailable(cluster: &Cluster, why: &str) -> ApiError {
    ApiError::BackendUnavailable {
        cluster: cluster.name.clone(),
        detail: why.to_owned(),
    }
}
