//! A deployment's health from its agents' reports: a status (`ok`, `degraded`, `down`,
//! `unknown`) and the reasons behind it.
//!
//! Pure functions of the registered [`Cluster`] and the [`NodeHealth`] reports in the
//! snapshot, so every control-plane instance shows the same status for the same
//! registry, and no view or scrape waits on Redis. The leader's own probes of masters
//! (for failover, see [`crate::failover`]) stay out of it on purpose: a status that
//! changed with whichever instance answered would be worse than one that lags a probe.
//!
//! - **standalone**: `down` when the registered master is reported down, or has no
//!   report and no replica sees it; `degraded` when the master is up and anything else
//!   is off (a replica down, unreported, following another master, with its link down,
//!   a second node claiming to be master, a report older than three of its agent's
//!   heartbeats and a minute); `ok` otherwise.
//! - **cluster** (Redis Cluster): `down` when no reported node is an up master;
//!   `degraded` when some reported node is down or stale.
//! - `unknown` when no agent reports on the deployment at all.
//!
//! Nodes running a Redis version open to the Lua scripting CVEs are listed as warnings:
//! they do not change the status, which describes availability.

use larder_registry::model::{Cluster, NodeHealth, Role, Topology};

use crate::api::HealthStatus;

/// A report is stale when it is older than three of its agent's heartbeats (the record
/// says how often the agent re-writes it; 10 s by default) and at least this: the agent
/// is alive (its session holds the znode) but has stopped publishing. Also the bound
/// for a record that does not say.
pub const STALE_REPORT_MS: u64 = 60_000;

/// How old `report` may get before it is stale, ms.
fn stale_after_ms(report: &NodeHealth) -> u64 {
    report.heartbeat_ms.saturating_mul(3).max(STALE_REPORT_MS)
}

/// The health of one deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    pub status: HealthStatus,
    /// Why the status is not `ok`, one line per finding (empty when `ok`).
    pub reasons: Vec<String>,
    /// Worth knowing without changing the status (known-vulnerable Redis versions,
    /// reports from nodes that are not registered members).
    pub warnings: Vec<String>,
}

/// Whether two `host:port` endpoints name the same node as Redis reports them
/// (`localhost` and `127.0.0.1` are taken as one).
pub fn same_endpoint(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.trim().replace("localhost", "127.0.0.1");
    norm(a) == norm(b)
}

fn age_s(report: &NodeHealth, now_ms: u64) -> Option<u64> {
    let age = now_ms.checked_sub(report.reported_at_ms)?;
    (report.reported_at_ms > 0 && age > stale_after_ms(report)).then_some(age / 1000)
}

fn find<'a>(nodes: &'a [NodeHealth], endpoint: &str) -> Option<&'a NodeHealth> {
    nodes.iter().find(|n| same_endpoint(&n.endpoint, endpoint))
}

/// The health of `cluster` given its nodes' reports, as of `now_ms`.
pub fn assess(cluster: &Cluster, nodes: &[NodeHealth], now_ms: u64) -> Assessment {
    let mut warnings: Vec<String> = nodes
        .iter()
        .filter(|n| n.vulnerable_lua)
        .map(|n| {
            format!(
                "{} runs Redis {}, open to the Lua scripting CVEs (CVE-2025-49844 and others): \
                 upgrade to 6.2.20, 7.2.11, 7.4.6, 8.2.2 or later, or deny EVAL, EVALSHA and FUNCTION by ACL",
                n.endpoint, n.redis_version
            )
        })
        .collect();
    if nodes.is_empty() {
        return Assessment {
            status: HealthStatus::Unknown,
            reasons: vec!["no agent reports on this deployment".into()],
            warnings,
        };
    }
    let mut reasons = Vec::new();
    for n in nodes {
        if let Some(age) = age_s(n, now_ms) {
            reasons.push(format!(
                "the report on {} is {age} s old: its agent ({}) has stopped publishing",
                n.endpoint, n.agent
            ));
        }
    }
    let master_up = match cluster.topology {
        Topology::Standalone => standalone(cluster, nodes, &mut reasons, &mut warnings),
        Topology::Cluster => {
            for n in nodes.iter().filter(|n| !n.up) {
                reasons.push(format!(
                    "node {} does not answer its agent ({})",
                    n.endpoint, n.agent
                ));
            }
            let up = nodes.iter().any(|n| n.up && n.role == Role::Master);
            if !up {
                reasons.insert(0, "no node reports itself an up master".into());
            }
            up
        }
    };
    let status = if !master_up {
        HealthStatus::Down
    } else if reasons.is_empty() {
        HealthStatus::Ok
    } else {
        HealthStatus::Degraded
    };
    Assessment {
        status,
        reasons,
        warnings,
    }
}

/// The standalone rules; returns whether the registered master is up and takes writes.
fn standalone(
    cluster: &Cluster,
    nodes: &[NodeHealth],
    reasons: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> bool {
    let Some(master) = cluster.master() else {
        reasons.push("no master is registered".into());
        return false;
    };
    let members: Vec<&String> = cluster.endpoints.iter().chain(&cluster.replicas).collect();
    let master_up = match find(nodes, master) {
        Some(m) if !m.up => {
            reasons.push(format!(
                "master {master} does not answer its agent ({})",
                m.agent
            ));
            false
        }
        Some(m) if m.role == Role::Replica => {
            reasons.push(format!(
                "master {master} reports role replica{}: it refuses writes",
                m.master
                    .as_deref()
                    .map(|f| format!(" of {f}"))
                    .unwrap_or_default()
            ));
            false
        }
        Some(_) => true,
        None => {
            let seen = nodes.iter().any(|n| {
                n.up && n.role == Role::Replica
                    && n.master_link_up == Some(true)
                    && n.master
                        .as_deref()
                        .is_some_and(|f| same_endpoint(f, master))
            });
            if seen {
                reasons.push(format!(
                    "master {master} has no agent report; its replicas see it up"
                ));
            } else {
                reasons.push(format!(
                    "master {master} has no agent report and no replica sees it up"
                ));
            }
            seen
        }
    };
    if !master_up {
        // The headline first.
        let last = reasons.pop();
        reasons.splice(0..0, last);
    }
    for replica in members.iter().skip(1) {
        let Some(r) = find(nodes, replica) else {
            reasons.push(format!("replica {replica} has no agent report"));
            continue;
        };
        if !r.up {
            reasons.push(format!(
                "replica {replica} does not answer its agent ({})",
                r.agent
            ));
            continue;
        }
        match r.role {
            Role::Master => reasons.push(format!(
                "{replica} claims role master but the registered master is {master}; \
                 the leader makes it a replica"
            )),
            Role::Replica => match r.master.as_deref() {
                Some(follows) if !same_endpoint(follows, master) => reasons.push(format!(
                    "replica {replica} follows {follows}, not the master {master}"
                )),
                _ if r.master_link_up == Some(false) => {
                    reasons.push(format!("replica {replica}'s link to {master} is down"))
                }
                _ => {}
            },
            Role::Unknown => {}
        }
    }
    for n in nodes
        .iter()
        .filter(|n| !members.iter().any(|m| same_endpoint(m, &n.endpoint)))
    {
        warnings.push(format!(
            "{} reports under this deployment but is not a registered member",
            n.endpoint
        ));
    }
    master_up
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000_000_000;

    fn cluster(master: &str, replicas: &[&str]) -> Cluster {
        Cluster {
            name: "main".into(),
            topology: Topology::Standalone,
            endpoints: vec![master.into()],
            replicas: replicas.iter().map(|r| (*r).to_owned()).collect(),
            region: "local".into(),
            capacity_bytes: 1 << 30,
            epoch: 1,
            down_after_ms: 3_000,
            created_at_ms: 0,
        }
    }

    fn master(endpoint: &str, up: bool) -> NodeHealth {
        NodeHealth {
            endpoint: endpoint.into(),
            agent: "agent-a".into(),
            up,
            role: Role::Master,
            redis_version: "7.2.11".into(),
            reported_at_ms: NOW,
            ..Default::default()
        }
    }

    fn replica(endpoint: &str, of: &str, link: bool) -> NodeHealth {
        NodeHealth {
            endpoint: endpoint.into(),
            agent: "agent-b".into(),
            up: true,
            role: Role::Replica,
            master: Some(of.into()),
            master_link_up: Some(link),
            redis_version: "7.2.11".into(),
            reported_at_ms: NOW,
            ..Default::default()
        }
    }

    #[test]
    fn all_well_is_ok_without_reasons() {
        let c = cluster("m:1", &["r:1"]);
        let a = assess(&c, &[master("m:1", true), replica("r:1", "m:1", true)], NOW);
        assert_eq!(a.status, HealthStatus::Ok, "{a:?}");
        assert!(a.reasons.is_empty() && a.warnings.is_empty(), "{a:?}");
    }

    #[test]
    fn no_reports_is_unknown() {
        let a = assess(&cluster("m:1", &[]), &[], NOW);
        assert_eq!(a.status, HealthStatus::Unknown);
        assert_eq!(a.reasons, ["no agent reports on this deployment"]);
    }

    #[test]
    fn a_master_reported_down_is_down_with_the_reason_first() {
        let c = cluster("m:1", &["r:1"]);
        let a = assess(
            &c,
            &[master("m:1", false), replica("r:1", "m:1", false)],
            NOW,
        );
        assert_eq!(a.status, HealthStatus::Down);
        assert_eq!(
            a.reasons[0],
            "master m:1 does not answer its agent (agent-a)"
        );
        assert!(a.reasons.iter().any(|r| r.contains("link to m:1 is down")));
    }

    #[test]
    fn an_unreported_master_is_up_only_when_a_replica_sees_it() {
        let c = cluster("m:1", &["r:1"]);
        let seen = assess(&c, &[replica("r:1", "m:1", true)], NOW);
        assert_eq!(seen.status, HealthStatus::Degraded);
        assert!(
            seen.reasons[0].contains("its replicas see it up"),
            "{seen:?}"
        );
        let unseen = assess(&c, &[replica("r:1", "m:1", false)], NOW);
        assert_eq!(unseen.status, HealthStatus::Down);
        assert!(
            unseen.reasons[0].contains("no replica sees it up"),
            "{unseen:?}"
        );
    }

    #[test]
    fn replica_trouble_degrades() {
        let c = cluster("m:1", &["r:1", "r:2", "r:3", "r:4"]);
        let mut down = replica("r:2", "m:1", true);
        down.up = false;
        let a = assess(
            &c,
            &[
                master("m:1", true),
                replica("r:1", "x:9", true),
                down,
                master("r:3", true),
            ],
            NOW,
        );
        assert_eq!(a.status, HealthStatus::Degraded);
        assert_eq!(
            a.reasons,
            [
                "replica r:1 follows x:9, not the master m:1",
                "replica r:2 does not answer its agent (agent-b)",
                "r:3 claims role master but the registered master is m:1; the leader makes it a replica",
                "replica r:4 has no agent report",
            ]
        );
    }

    #[test]
    fn a_registered_master_that_is_a_replica_is_down() {
        let c = cluster("m:1", &["r:1"]);
        let mut m = replica("m:1", "r:1", true);
        m.agent = "agent-a".into();
        let a = assess(&c, &[m, master("r:1", true)], NOW);
        assert_eq!(a.status, HealthStatus::Down);
        assert!(
            a.reasons[0].contains("reports role replica of r:1"),
            "{a:?}"
        );
    }

    #[test]
    fn stale_reports_degrade_and_vulnerable_versions_warn() {
        let c = cluster("m:1", &["r:1"]);
        let mut old = replica("r:1", "m:1", true);
        old.reported_at_ms = NOW - STALE_REPORT_MS - 5_000;
        let mut m = master("m:1", true);
        m.redis_version = "7.0.15".into();
        m.vulnerable_lua = true;
        let a = assess(&c, &[m, old], NOW);
        assert_eq!(a.status, HealthStatus::Degraded);
        assert_eq!(a.reasons.len(), 1);
        assert!(a.reasons[0].contains("65 s old"), "{a:?}");
        assert_eq!(a.warnings.len(), 1);
        assert!(a.warnings[0].contains("CVE-2025-49844"));
        // An agent that says it re-writes only every 5 minutes is not stale at 65 s.
        let mut quiet = replica("r:1", "m:1", true);
        quiet.reported_at_ms = NOW - STALE_REPORT_MS - 5_000;
        quiet.heartbeat_ms = 300_000;
        let a = assess(&c, &[master("m:1", true), quiet], NOW);
        assert_eq!(a.status, HealthStatus::Ok, "{a:?}");
    }

    #[test]
    fn unregistered_reporters_warn_only() {
        let c = cluster("m:1", &[]);
        let a = assess(
            &c,
            &[master("m:1", true), replica("old:1", "m:1", true)],
            NOW,
        );
        assert_eq!(a.status, HealthStatus::Ok);
        assert!(a.warnings[0].contains("old:1 reports under this deployment"));
    }

    #[test]
    fn redis_cluster_needs_an_up_master() {
        let mut c = cluster("s:1", &[]);
        c.topology = Topology::Cluster;
        let mut down = master("s:2", false);
        down.agent = "agent-c".into();
        let degraded = assess(&c, &[master("s:1", true), down.clone()], NOW);
        assert_eq!(degraded.status, HealthStatus::Degraded);
        assert_eq!(
            degraded.reasons,
            ["node s:2 does not answer its agent (agent-c)"]
        );
        let gone = assess(&c, &[down], NOW);
        assert_eq!(gone.status, HealthStatus::Down);
        assert_eq!(gone.reasons[0], "no node reports itself an up master");
    }
}
