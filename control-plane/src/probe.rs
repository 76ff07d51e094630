//! Checks a Redis deployment before it is registered: reachable, speaking Redis, the
//! declared topology, the expected roles, a recent enough version, and `maxmemory` room
//! for the declared capacity. What is wrong is refused with a reason; what is merely
//! unwise (no `maxmemory`, a non-evicting policy) is reported as a warning.

use std::time::Duration;

use larder_registry::model::Topology;

use crate::api::RegisterCluster;
use crate::deployment;

/// What one endpoint said about itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    pub role: String,
    pub cluster_enabled: bool,
    pub version: String,
    pub maxmemory: u64,
    pub maxmemory_policy: String,
    /// For a replica: the master it follows (`host:port`) and whether the link is up.
    pub master: Option<String>,
    pub master_link_up: bool,
    pub cluster_state_ok: bool,
}

/// What registration found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Findings {
    /// The master's (first seed's) Redis version.
    pub redis_version: String,
    /// `maxmemory` summed over the masters; 0 when any master has none.
    pub maxmemory_bytes: u64,
    pub warnings: Vec<String>,
}

fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(':')))
        .map(str::trim)
}

/// Parses the bits of `INFO` registration cares about.
pub fn parse_info(info: &str) -> Facts {
    let master = match (field(info, "master_host"), field(info, "master_port")) {
        (Some(h), Some(p)) => Some(format!("{h}:{p}")),
        _ => None,
    };
    Facts {
        role: field(info, "role").unwrap_or_default().to_owned(),
        cluster_enabled: field(info, "cluster_enabled") == Some("1"),
        version: field(info, "redis_version").unwrap_or_default().to_owned(),
        maxmemory: field(info, "maxmemory")
            .and_then(|v| v.parse().ok())
            .unwrap_or_default(),
        maxmemory_policy: field(info, "maxmemory_policy")
            .unwrap_or_default()
            .to_owned(),
        master,
        master_link_up: field(info, "master_link_status") == Some("up"),
        cluster_state_ok: false,
    }
}

/// `major.minor[.patch]` as numbers.
pub fn parse_version(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().unwrap_or("0").parse().ok()?;
    Some((major, minor))
}

async fn facts(endpoint: &str, timeout: Duration) -> Result<Facts, String> {
    let work = async {
        let mut conn = deployment::connect(endpoint, timeout).await?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .arg("replication")
            .arg("cluster")
            .arg("memory")
            .query_async(&mut conn)
            .await
            .map_err(|e| format!("{endpoint}: does not answer INFO like Redis: {e}"))?;
        let mut facts = parse_info(&info);
        if facts.version.is_empty() {
            return Err(format!("{endpoint}: does not look like a Redis server"));
        }
        if facts.cluster_enabled {
            let state: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async(&mut conn)
                .await
                .map_err(|e| format!("{endpoint}: CLUSTER INFO: {e}"))?;
            facts.cluster_state_ok = field(&state, "cluster_state") == Some("ok");
        }
        Ok(facts)
    };
    match tokio::time::timeout(timeout * 3, work).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "{endpoint}: no answer within {} ms",
            (timeout * 3).as_millis()
        )),
    }
}

fn check_version(endpoint: &str, facts: &Facts, minimum: &str) -> Result<(), String> {
    let (Some(have), Some(need)) = (parse_version(&facts.version), parse_version(minimum)) else {
        return Err(format!(
            "{endpoint}: cannot read its Redis version {:?}",
            facts.version
        ));
    };
    if have < need {
        return Err(format!(
            "{endpoint} runs Redis {}; Larder needs {minimum} or newer",
            facts.version
        ));
    }
    Ok(())
}

fn same_endpoint(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.replace("localhost", "127.0.0.1");
    norm(a) == norm(b)
}

/// Checks `request` against the live deployment.
pub async fn check(
    request: &RegisterCluster,
    timeout: Duration,
    min_version: &str,
) -> Result<Findings, String> {
    let mut findings = Findings::default();
    let mut maxmemory: Vec<(String, Facts)> = Vec::new();
    match request.topology {
        Topology::Standalone => {
            let endpoint = &request.endpoints[0];
            let master = facts(endpoint, timeout).await?;
            if master.cluster_enabled {
                return Err(format!(
                    "{endpoint} runs in cluster mode; register it with topology \"cluster\""
                ));
            }
            if master.role != "master" {
                return Err(format!(
                    "{endpoint} is declared the master but its role is {}",
                    master.role
                ));
            }
            check_version(endpoint, &master, min_version)?;
            for replica in &request.replicas {
                let f = facts(replica, timeout).await?;
                if f.role != "slave" {
                    return Err(format!(
                        "{replica} is declared a replica but its role is {}",
                        f.role
                    ));
                }
                match &f.master {
                    Some(m) if same_endpoint(m, endpoint) => {}
                    Some(m) => {
                        return Err(format!(
                            "{replica} replicates {m}, not the declared master {endpoint}"
                        ));
                    }
                    None => return Err(format!("{replica} reports no master")),
                }
                if !f.master_link_up {
                    findings
                        .warnings
                        .push(format!("{replica}: replication link to {endpoint} is down"));
                }
                check_version(replica, &f, min_version)?;
            }
            findings.redis_version = master.version.clone();
            maxmemory.push((endpoint.clone(), master));
        }
        Topology::Cluster => {
            for seed in &request.endpoints {
                let f = facts(seed, timeout).await?;
                if !f.cluster_enabled {
                    return Err(format!(
                        "{seed} is not in cluster mode; register it with topology \"standalone\""
                    ));
                }
                if !f.cluster_state_ok {
                    return Err(format!("{seed} reports a cluster_state other than ok"));
                }
                check_version(seed, &f, min_version)?;
                if findings.redis_version.is_empty() {
                    findings.redis_version = f.version.clone();
                }
            }
            let nodes = deployment::cluster_nodes(&request.endpoints, timeout).await?;
            let failing: Vec<&str> = nodes
                .iter()
                .filter(|n| n.failing)
                .map(|n| n.address.as_str())
                .collect();
            if !failing.is_empty() {
                findings
                    .warnings
                    .push(format!("nodes flagged failing: {}", failing.join(", ")));
            }
            for node in nodes.iter().filter(|n| n.master && !n.failing) {
                let f = facts(&node.address, timeout).await?;
                check_version(&node.address, &f, min_version)?;
                maxmemory.push((node.address.clone(), f));
            }
        }
    }
    let unlimited: Vec<&str> = maxmemory
        .iter()
        .filter(|(_, f)| f.maxmemory == 0)
        .map(|(e, _)| e.as_str())
        .collect();
    if unlimited.is_empty() {
        findings.maxmemory_bytes = maxmemory.iter().map(|(_, f)| f.maxmemory).sum();
        if request.capacity_bytes > findings.maxmemory_bytes {
            return Err(format!(
                "capacity_bytes {} exceeds the deployment's maxmemory of {} bytes",
                request.capacity_bytes, findings.maxmemory_bytes
            ));
        }
    } else {
        findings.warnings.push(format!(
            "no maxmemory set on {}: Redis may take all of the host's memory",
            unlimited.join(", ")
        ));
    }
    let noeviction: Vec<&str> = maxmemory
        .iter()
        .filter(|(_, f)| f.maxmemory_policy == "noeviction")
        .map(|(e, _)| e.as_str())
        .collect();
    if !noeviction.is_empty() {
        findings.warnings.push(format!(
            "maxmemory-policy noeviction on {}: writes fail instead of evicting when full",
            noeviction.join(", ")
        ));
    }
    Ok(findings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_info() {
        let info = "# Server\r\nredis_version:7.0.15\r\n# Replication\r\nrole:master\r\n# Cluster\r\ncluster_enabled:0\r\nmaxmemory:1024\r\nmaxmemory_policy:allkeys-lru\r\n";
        let f = parse_info(info);
        assert_eq!(f.version, "7.0.15");
        assert_eq!(f.role, "master");
        assert!(!f.cluster_enabled);
        assert_eq!(f.maxmemory, 1024);
        assert_eq!(f.maxmemory_policy, "allkeys-lru");
        assert_eq!(f.master, None);
        let replica = parse_info(
            "role:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:6379\r\nmaster_link_status:up\r\n",
        );
        assert_eq!(replica.master.as_deref(), Some("127.0.0.1:6379"));
        assert!(replica.master_link_up);
    }

    #[test]
    fn versions_compare() {
        assert_eq!(parse_version("7.0.15"), Some((7, 0)));
        assert_eq!(parse_version("6.2"), Some((6, 2)));
        assert!(parse_version("6.0.9") < parse_version("6.2"));
        assert_eq!(parse_version("x"), None);
        let old = Facts {
            version: "5.0.7".into(),
            ..Default::default()
        };
        assert!(
            check_version("h:1", &old, "6.2")
                .unwrap_err()
                .contains("needs 6.2")
        );
    }
}
