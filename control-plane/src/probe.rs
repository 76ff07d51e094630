//! Checks a Redis deployment before it is registered: reachable, the declared topology,
//! the expected roles. What it finds is reported; what is wrong is refused with a reason.

use std::time::Duration;

use crate::api::RegisterCluster;
use larder_registry::model::Topology;

/// What one endpoint said about itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    pub role: String,
    pub cluster_enabled: bool,
    pub version: String,
    pub maxmemory: u64,
    pub cluster_state_ok: bool,
}

fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(':')))
        .map(str::trim)
}

/// Parses the bits of `INFO` registration cares about.
pub fn parse_info(info: &str) -> Facts {
    Facts {
        role: field(info, "role").unwrap_or_default().to_owned(),
        cluster_enabled: field(info, "cluster_enabled") == Some("1"),
        version: field(info, "redis_version").unwrap_or_default().to_owned(),
        maxmemory: field(info, "maxmemory")
            .and_then(|v| v.parse().ok())
            .unwrap_or_default(),
        cluster_state_ok: false,
    }
}

async fn facts(endpoint: &str, timeout: Duration) -> Result<Facts, String> {
    let work = async {
        let client =
            redis::Client::open(format!("redis://{endpoint}/")).map_err(|e| e.to_string())?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .arg("replication")
            .arg("cluster")
            .arg("memory")
            .query_async(&mut conn)
            .await
            .map_err(|e| format!("does not answer INFO like Redis: {e}"))?;
        let mut facts = parse_info(&info);
        if facts.version.is_empty() {
            return Err("does not look like a Redis server".to_string());
        }
        if facts.cluster_enabled {
            let state: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            facts.cluster_state_ok = field(&state, "cluster_state") == Some("ok");
        }
        Ok(facts)
    };
    match tokio::time::timeout(timeout * 2, work).await {
        Ok(result) => result.map_err(|e| format!("{endpoint}: {e}")),
        Err(_) => Err(format!(
            "{endpoint}: no answer within {} ms",
            (timeout * 2).as_millis()
        )),
    }
}

/// Checks `request` against the live deployment; returns the master's (or first seed's)
/// Redis version.
pub async fn check(request: &RegisterCluster, timeout: Duration) -> Result<String, String> {
    match request.topology {
        Topology::Standalone => {
            let master = facts(&request.endpoints[0], timeout).await?;
            if master.cluster_enabled {
                return Err(format!(
                    "{} runs in cluster mode; register it with topology \"cluster\"",
                    request.endpoints[0]
                ));
            }
            if master.role != "master" {
                return Err(format!(
                    "{} is a {}, not a master",
                    request.endpoints[0], master.role
                ));
            }
            for replica in &request.replicas {
                let f = facts(replica, timeout).await?;
                if f.role != "slave" {
                    return Err(format!(
                        "{replica} is declared a replica but its role is {}",
                        f.role
                    ));
                }
            }
            Ok(master.version)
        }
        Topology::Cluster => {
            let mut version = String::new();
            for seed in &request.endpoints {
                let f = facts(seed, timeout).await?;
                if !f.cluster_enabled {
                    return Err(format!(
                        "{seed} is not in cluster mode; register it with topology \"standalone\""
                    ));
                }
                if !f.cluster_state_ok {
                    return Err(format!("{seed} reports cluster_state other than ok"));
                }
                version = f.version;
            }
            Ok(version)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_info() {
        let info = "# Server\r\nredis_version:7.0.15\r\n# Replication\r\nrole:master\r\n# Cluster\r\ncluster_enabled:0\r\nmaxmemory:1024\r\n";
        let f = parse_info(info);
        assert_eq!(f.version, "7.0.15");
        assert_eq!(f.role, "master");
        assert!(!f.cluster_enabled);
        assert_eq!(f.maxmemory, 1024);
    }
}
