//! Namespace usage: key count, memory estimate and ops/s.
//!
//! - **Keys and memory** come from one `SCAN MATCH larder:*` pass over each master of a
//!   deployment, counting keys by namespace prefix, bounded by `usage.scan_max_keys` per
//!   node and `usage.scan_timeout_ms` overall. When the pass cannot finish, counts are
//!   scaled by `DBSIZE` over the share examined and marked inexact. Memory is the mean
//!   `MEMORY USAGE` of up to [`SAMPLES`] keys per namespace and node, times the count.
//!   Results are cached per deployment for `usage.cache_ms`, so listing many namespaces
//!   costs one pass per deployment.
//! - **Ops/s** is the rate of `larder_gateway_requests_total{namespace}` summed over the
//!   live gateways (their addresses come from the registry), sampled every
//!   `usage.sample_interval_ms` by [`OpsSampler::run`] in each control-plane instance.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use larder_registry::model::Cluster;
use larder_registry::{SnapshotReader, now_ms};
use tokio_util::sync::CancellationToken;

use crate::api::Usage;
use crate::config::UsageConfig;
use crate::deployment;

/// Keys per namespace and node whose `MEMORY USAGE` is measured.
pub const SAMPLES: usize = 8;

/// Keys asked of one `SCAN` call.
const SCAN_COUNT: u64 = 1_000;

#[derive(Debug, Clone, Default)]
struct Count {
    keys: f64,
    memory: f64,
}

/// One deployment's figures.
#[derive(Debug, Clone, Default)]
pub struct DeploymentUsage {
    per_namespace: HashMap<String, Count>,
    exact: bool,
    measured_at_ms: u64,
    error: Option<String>,
}

/// Node-level scan result.
#[derive(Default)]
struct NodeScan {
    keys: HashMap<String, u64>,
    samples: HashMap<String, Vec<Vec<u8>>>,
    complete: bool,
    scale: f64,
}

/// The namespace a Redis key belongs to (`larder:<ns>:...`).
pub fn namespace_of(key: &[u8]) -> Option<&str> {
    let rest = key.strip_prefix(b"larder:")?;
    let end = rest.iter().position(|b| *b == b':')?;
    std::str::from_utf8(&rest[..end]).ok()
}

async fn scan_node(
    endpoint: &str,
    connect_timeout: Duration,
    max_keys: u64,
    deadline: tokio::time::Instant,
) -> Result<(NodeScan, HashMap<String, (u64, u64)>), String> {
    let mut conn = deployment::connect(endpoint, connect_timeout).await?;
    let dbsize: u64 = redis::cmd("DBSIZE")
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("{endpoint}: DBSIZE: {e}"))?;
    let mut scan = NodeScan::default();
    let mut cursor = 0u64;
    let mut examined = 0u64;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("larder:*")
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query_async(&mut conn)
            .await
            .map_err(|e| format!("{endpoint}: SCAN: {e}"))?;
        examined += SCAN_COUNT;
        for key in keys {
            if let Some(ns) = namespace_of(&key) {
                *scan.keys.entry(ns.to_owned()).or_default() += 1;
                let samples = scan.samples.entry(ns.to_owned()).or_default();
                if samples.len() < SAMPLES {
                    samples.push(key);
                }
            }
        }
        cursor = next;
        if cursor == 0 {
            scan.complete = true;
            break;
        }
        if examined >= max_keys || tokio::time::Instant::now() >= deadline {
            break;
        }
    }
    scan.scale = if scan.complete || examined >= dbsize {
        1.0
    } else {
        dbsize as f64 / examined.max(1) as f64
    };
    // Memory of the sampled keys, per namespace: (bytes, keys measured).
    let mut memory: HashMap<String, (u64, u64)> = HashMap::new();
    let mut pipe = redis::pipe();
    let mut order = Vec::new();
    for (ns, keys) in &scan.samples {
        for key in keys {
            pipe.cmd("MEMORY").arg("USAGE").arg(key);
            order.push(ns.clone());
        }
    }
    if !order.is_empty() {
        let sizes: Vec<Option<u64>> = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| format!("{endpoint}: MEMORY USAGE: {e}"))?;
        for (ns, size) in order.into_iter().zip(sizes) {
            if let Some(size) = size {
                let entry = memory.entry(ns).or_default();
                entry.0 += size;
                entry.1 += 1;
            }
        }
    }
    Ok((scan, memory))
}

/// Estimates usage for every deployment asked about, with a short cache.
pub struct UsageEstimator {
    config: UsageConfig,
    connect_timeout: Duration,
    cache: Mutex<HashMap<String, (Instant, Arc<DeploymentUsage>)>>,
    /// Requests per second by namespace; `None` until two samples have been taken.
    ops: RwLock<Option<HashMap<String, f64>>>,
}

impl UsageEstimator {
    pub fn new(config: UsageConfig, connect_timeout: Duration) -> Self {
        Self {
            config,
            connect_timeout,
            cache: Mutex::new(HashMap::new()),
            ops: RwLock::new(None),
        }
    }

    fn cached(&self, cluster: &str) -> Option<Arc<DeploymentUsage>> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(cluster)
            .filter(|(at, _)| at.elapsed() < Duration::from_millis(self.config.cache_ms))
            .map(|(_, u)| u.clone())
    }

    /// The figures of `cluster`, measured now unless cached.
    pub async fn deployment(&self, cluster: &Cluster) -> Arc<DeploymentUsage> {
        if let Some(hit) = self.cached(&cluster.name) {
            return hit;
        }
        let budget = Duration::from_millis(self.config.scan_timeout_ms);
        let measured = match tokio::time::timeout(
            budget + self.connect_timeout * 2,
            self.measure(cluster, budget),
        )
        .await
        {
            Ok(Ok(u)) => u,
            Ok(Err(e)) => DeploymentUsage {
                error: Some(e),
                measured_at_ms: now_ms(),
                ..Default::default()
            },
            Err(_) => DeploymentUsage {
                error: Some(format!(
                    "deployment {} did not answer the usage scan in time",
                    cluster.name
                )),
                measured_at_ms: now_ms(),
                ..Default::default()
            },
        };
        let measured = Arc::new(measured);
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(cluster.name.clone(), (Instant::now(), measured.clone()));
        measured
    }

    async fn measure(
        &self,
        cluster: &Cluster,
        budget: Duration,
    ) -> Result<DeploymentUsage, String> {
        let deadline = tokio::time::Instant::now() + budget;
        let masters = deployment::masters(cluster, self.connect_timeout).await?;
        let scans = futures::future::join_all(
            masters
                .iter()
                .map(|m| scan_node(m, self.connect_timeout, self.config.scan_max_keys, deadline)),
        )
        .await;
        let mut usage = DeploymentUsage {
            exact: true,
            measured_at_ms: now_ms(),
            ..Default::default()
        };
        for scan in scans {
            let (scan, memory) = scan?;
            usage.exact &= scan.complete;
            for (ns, keys) in scan.keys {
                let keys = keys as f64 * scan.scale;
                let mean = memory
                    .get(&ns)
                    .filter(|(_, n)| *n > 0)
                    .map(|(bytes, n)| *bytes as f64 / *n as f64)
                    .unwrap_or_default();
                let count = usage.per_namespace.entry(ns).or_default();
                count.keys += keys;
                count.memory += keys * mean;
            }
        }
        Ok(usage)
    }

    /// The usage of namespace `ns` in `deployment`'s figures.
    pub fn namespace(&self, deployment: &DeploymentUsage, ns: &str) -> Usage {
        let count = deployment
            .per_namespace
            .get(ns)
            .cloned()
            .unwrap_or_default();
        let ops = self
            .ops
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|rates| rates.get(ns).copied().unwrap_or_default());
        Usage {
            keys: count.keys.round() as u64,
            memory_bytes: count.memory.round() as u64,
            exact: deployment.exact && deployment.error.is_none(),
            ops_per_sec: ops,
            measured_at_ms: deployment.measured_at_ms,
            note: deployment.error.clone(),
        }
    }

    /// Forgets a deployment's cached figures (after a deletion, for example).
    pub fn invalidate(&self, cluster: &str) {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(cluster);
    }

    fn set_ops(&self, rates: HashMap<String, f64>) {
        *self.ops.write().unwrap_or_else(|p| p.into_inner()) = Some(rates);
    }
}

/// Sums `larder_gateway_requests_total` by namespace from a Prometheus text page.
pub fn requests_by_namespace(page: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in page.lines() {
        let Some(rest) = line.strip_prefix("larder_gateway_requests_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once('}') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let ns = labels
            .split(',')
            .find_map(|l| l.trim().strip_prefix("namespace=\""))
            .and_then(|v| v.strip_suffix('"'));
        if let Some(ns) = ns {
            *out.entry(ns.to_owned()).or_default() += value;
        }
    }
    out
}

/// Samples the gateways' request counters to keep ops/s per namespace current.
pub struct OpsSampler {
    pub usage: Arc<UsageEstimator>,
    pub snapshot: SnapshotReader,
    pub interval: Duration,
}

impl OpsSampler {
    pub async fn run(self, cancel: CancellationToken) {
        if self.interval.is_zero() {
            return;
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap_or_default();
        // Last sample per gateway id: when, and counters by namespace.
        let mut last: HashMap<String, (Instant, HashMap<String, f64>)> = HashMap::new();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
            let gateways: Vec<(String, String)> = self
                .snapshot
                .load()
                .gateways
                .values()
                .map(|g| (g.value.id.clone(), g.value.address.clone()))
                .collect();
            let pages = futures::future::join_all(gateways.iter().map(|(id, address)| {
                let http = http.clone();
                let address = address
                    .replace("0.0.0.0:", "127.0.0.1:")
                    .replace("[::]:", "127.0.0.1:");
                async move {
                    let page = async {
                        http.get(format!("http://{address}/metrics"))
                            .send()
                            .await?
                            .text()
                            .await
                    }
                    .await;
                    (id.clone(), page)
                }
            }))
            .await;
            let mut rates: HashMap<String, f64> = HashMap::new();
            let mut seen = Vec::new();
            let mut measured = false;
            for (id, page) in pages {
                let Ok(page) = page else { continue };
                let now = Instant::now();
                let counts = requests_by_namespace(&page);
                if let Some((at, before)) = last.get(&id) {
                    measured = true;
                    let secs = now.duration_since(*at).as_secs_f64().max(0.001);
                    for (ns, count) in &counts {
                        let prev = before.get(ns).copied().unwrap_or_default();
                        // A restarted gateway starts from zero again.
                        let delta = if *count >= prev { count - prev } else { *count };
                        *rates.entry(ns.clone()).or_default() += delta / secs;
                    }
                }
                last.insert(id.clone(), (now, counts));
                seen.push(id);
            }
            last.retain(|id, _| seen.contains(id));
            if measured || gateways.is_empty() {
                self.usage.set_ops(rates);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_of_keys() {
        assert_eq!(namespace_of(b"larder:orders:k:a:b"), Some("orders"));
        assert_eq!(namespace_of(b"larder:orders:x:rl"), Some("orders"));
        assert_eq!(namespace_of(b"other:orders:k"), None);
        assert_eq!(namespace_of(b"larder:nocolon"), None);
    }

    #[test]
    fn sums_gateway_requests_by_namespace() {
        let page = "\
# HELP larder_gateway_requests_total Data API requests
# TYPE larder_gateway_requests_total counter
larder_gateway_requests_total{namespace=\"alpha\",op=\"key.get\",status=\"200\"} 5
larder_gateway_requests_total{namespace=\"alpha\",op=\"key.put\",status=\"204\"} 3
larder_gateway_requests_total{namespace=\"beta\",op=\"key.get\",status=\"404\"} 1
larder_gateway_request_duration_seconds_count{namespace=\"alpha\",op=\"key.get\"} 5
";
        let counts = requests_by_namespace(page);
        assert_eq!(counts.get("alpha"), Some(&8.0));
        assert_eq!(counts.get("beta"), Some(&1.0));
        assert_eq!(counts.len(), 2);
    }
}
