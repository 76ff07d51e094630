//! The ZooKeeper layout, relative to the registry root (a chroot, `/larder` by default).
//!
//! | path | kind | holds |
//! | --- | --- | --- |
//! | `/clusters/<cluster>` | persistent | [`Cluster`](crate::model::Cluster) |
//! | `/clusters/<cluster>/nodes/<host:port>` | ephemeral | [`NodeHealth`](crate::model::NodeHealth) |
//! | `/namespaces/<ns>` | persistent | [`Namespace`](crate::model::Namespace) |
//! | `/auth/keys/<kid>` | persistent | [`SigningKey`](crate::model::SigningKey) |
//! | `/auth/revoked/<jti>` | persistent | [`Revocation`](crate::model::Revocation) |
//! | `/gateways/<id>` | ephemeral | [`GatewayRecord`](crate::model::GatewayRecord) |
//! | `/leader/n_<seq>` | ephemeral sequential | [`LeaderCandidate`](crate::model::LeaderCandidate) |
//! | `/auth/tokens/<jti>` | persistent | [`TokenRecord`](crate::ledger::TokenRecord) |
//! | `/audit/e_<seq>` | persistent sequential | [`AuditEntry`](crate::ledger::AuditEntry) |
//! | `/jobs/deletions/<ns>` | persistent | [`DeletionJob`](crate::ledger::DeletionJob) |
//!
//! The last three are the control plane's own ledger: [`classify`] does not know them,
//! so the watcher ignores them and they never enter a gateway's snapshot; the control
//! plane reads them on demand.
//!
//! Callers pass names already checked by [`crate::names`].

pub const CLUSTERS: &str = "/clusters";
pub const NAMESPACES: &str = "/namespaces";
pub const AUTH: &str = "/auth";
pub const KEYS: &str = "/auth/keys";
pub const REVOKED: &str = "/auth/revoked";
pub const GATEWAYS: &str = "/gateways";
pub const LEADER: &str = "/leader";
pub const TOKENS: &str = "/auth/tokens";
pub const AUDIT: &str = "/audit";
pub const JOBS: &str = "/jobs";
pub const DELETIONS: &str = "/jobs/deletions";

/// Persistent parents created once at start-up, in order.
pub const DIRECTORIES: [&str; 11] = [
    CLUSTERS, NAMESPACES, AUTH, KEYS, REVOKED, GATEWAYS, LEADER, TOKENS, AUDIT, JOBS, DELETIONS,
];

/// Prefix of audit entries under [`AUDIT`] (followed by a ten-digit sequence number).
pub const AUDIT_PREFIX: &str = "e_";

/// Prefix of election candidates under [`LEADER`].
pub const CANDIDATE_PREFIX: &str = "n_";

pub fn cluster(name: &str) -> String {
    format!("{CLUSTERS}/{name}")
}

pub fn nodes(cluster: &str) -> String {
    format!("{CLUSTERS}/{cluster}/nodes")
}

pub fn node(cluster: &str, endpoint: &str) -> String {
    format!("{CLUSTERS}/{cluster}/nodes/{endpoint}")
}

pub fn namespace(name: &str) -> String {
    format!("{NAMESPACES}/{name}")
}

pub fn key(kid: &str) -> String {
    format!("{KEYS}/{kid}")
}

pub fn revoked(jti: &str) -> String {
    format!("{REVOKED}/{jti}")
}

pub fn gateway(id: &str) -> String {
    format!("{GATEWAYS}/{id}")
}

pub fn token(jti: &str) -> String {
    format!("{TOKENS}/{jti}")
}

pub fn deletion(ns: &str) -> String {
    format!("{DELETIONS}/{ns}")
}

/// An audit entry by its znode name (`e_<seq>`).
pub fn audit_entry(name: &str) -> String {
    format!("{AUDIT}/{name}")
}

/// What a path under the root denotes; the watcher routes each event by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry<'a> {
    Cluster(&'a str),
    Nodes(&'a str),
    Node {
        cluster: &'a str,
        endpoint: &'a str,
    },
    Namespace(&'a str),
    Key(&'a str),
    Revoked(&'a str),
    Gateway(&'a str),
    Candidate(&'a str),
    /// A directory or anything the model does not know.
    Other,
}

/// Classifies `path` (relative to the root).
pub fn classify(path: &str) -> Entry<'_> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["clusters", c] => Entry::Cluster(c),
        ["clusters", c, "nodes"] => Entry::Nodes(c),
        ["clusters", c, "nodes", e] => Entry::Node {
            cluster: c,
            endpoint: e,
        },
        ["namespaces", n] => Entry::Namespace(n),
        ["auth", "keys", k] => Entry::Key(k),
        ["auth", "revoked", j] => Entry::Revoked(j),
        ["gateways", g] => Entry::Gateway(g),
        ["leader", n] => Entry::Candidate(n),
        _ => Entry::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_round_trips_the_helpers() {
        assert_eq!(classify(&cluster("main")), Entry::Cluster("main"));
        assert_eq!(classify(&nodes("main")), Entry::Nodes("main"));
        assert_eq!(
            classify(&node("main", "127.0.0.1:6379")),
            Entry::Node {
                cluster: "main",
                endpoint: "127.0.0.1:6379"
            }
        );
        assert_eq!(classify(&namespace("orders")), Entry::Namespace("orders"));
        assert_eq!(classify(&key("k1")), Entry::Key("k1"));
        assert_eq!(classify(&revoked("j1")), Entry::Revoked("j1"));
        assert_eq!(classify(&gateway("g1")), Entry::Gateway("g1"));
        assert_eq!(
            classify("/leader/n_0000000001"),
            Entry::Candidate("n_0000000001")
        );
        assert_eq!(classify("/clusters"), Entry::Other);
        assert_eq!(classify("/auth"), Entry::Other);
        // The control plane's ledger stays out of every snapshot.
        assert_eq!(classify(&token("j1")), Entry::Other);
        assert_eq!(classify(&deletion("orders")), Entry::Other);
        assert_eq!(classify(&audit_entry("e_0000000001")), Entry::Other);
    }
}
