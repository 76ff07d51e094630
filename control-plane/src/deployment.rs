//! Direct connections to the Redis nodes of a registered deployment, for the control
//! plane's own work on them: registration checks, usage scans and namespace deletion.
//!
//! These talk to one node at a time (a Redis Cluster master answers `SCAN` for its own
//! slots only), unlike the gateway's connections which route by key.

use std::time::Duration;

use larder_registry::model::{Cluster, Topology};
use redis::aio::MultiplexedConnection;

/// Opens a connection to `endpoint` (`host:port`), bounded by `timeout`.
pub async fn connect(endpoint: &str, timeout: Duration) -> Result<MultiplexedConnection, String> {
    let client = redis::Client::open(format!("redis://{endpoint}/"))
        .map_err(|e| format!("{endpoint}: {e}"))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    match tokio::time::timeout(
        timeout * 2,
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await
    {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(format!("{endpoint}: cannot connect: {e}")),
        Err(_) => Err(format!(
            "{endpoint}: no answer within {} ms",
            (timeout * 2).as_millis()
        )),
    }
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    /// `host:port` clients use.
    pub address: String,
    pub master: bool,
    /// Flagged `fail` or `fail?`, or not connected.
    pub failing: bool,
}

/// Parses `CLUSTER NODES` output.
pub fn parse_cluster_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            let address = fields[1].split('@').next()?.to_owned();
            if address.is_empty() || address.starts_with(':') {
                return None;
            }
            let flags: Vec<&str> = fields[2].split(',').collect();
            Some(ClusterNode {
                address,
                master: flags.contains(&"master"),
                failing: flags.iter().any(|f| *f == "fail" || *f == "fail?")
                    || fields[7] != "connected",
            })
        })
        .collect()
}

/// `CLUSTER NODES` as seen by the first of `seeds` that answers.
pub async fn cluster_nodes(
    seeds: &[String],
    timeout: Duration,
) -> Result<Vec<ClusterNode>, String> {
    let mut last = String::from("no seed node given");
    for seed in seeds {
        let attempt = async {
            let mut conn = connect(seed, timeout).await?;
            redis::cmd("CLUSTER")
                .arg("NODES")
                .query_async::<String>(&mut conn)
                .await
                .map_err(|e| format!("{seed}: CLUSTER NODES: {e}"))
        };
        match attempt.await {
            Ok(text) => return Ok(parse_cluster_nodes(&text)),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The nodes that hold a deployment's data: the master of a standalone deployment, every
/// healthy master of a Redis Cluster.
pub async fn masters(cluster: &Cluster, timeout: Duration) -> Result<Vec<String>, String> {
    match cluster.topology {
        Topology::Standalone => cluster
            .master()
            .map(|m| vec![m.to_owned()])
            .ok_or_else(|| format!("deployment {} has no master", cluster.name)),
        Topology::Cluster => {
            let nodes = cluster_nodes(&cluster.endpoints, timeout).await?;
            let masters: Vec<String> = nodes
                .into_iter()
                .filter(|n| n.master && !n.failing)
                .map(|n| n.address)
                .collect();
            if masters.is_empty() {
                return Err(format!(
                    "deployment {} reports no healthy master",
                    cluster.name
                ));
            }
            Ok(masters)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cluster_nodes() {
        let text = "\
07c37dfeb2352e0b 127.0.0.1:30004@31004,host-a slave e7d1eecce10fd609 0 1426238317239 4 connected
67ed2db8d677e59e 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460
6ec23923021cf3ff 127.0.0.1:30003@31003 master,fail - 1426238317741 1426238316232 3 connected 10923-16383
";
        let nodes = parse_cluster_nodes(text);
        assert_eq!(nodes.len(), 4);
        assert_eq!(nodes[0].address, "127.0.0.1:30004");
        assert!(!nodes[0].master);
        assert!(nodes[1].master && !nodes[1].failing);
        assert!(nodes[2].master && !nodes[2].failing);
        assert!(nodes[3].master && nodes[3].failing);
    }
}
