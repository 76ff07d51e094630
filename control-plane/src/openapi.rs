//! The admin API's OpenAPI document, generated from the handlers' annotations.
//!
//! `openapi/control-plane.json` in the repository is this document; a test fails when the
//! two differ (`LARDER_UPDATE_OPENAPI=1 cargo test -p larder-control-plane openapi`
//! rewrites the file). The server serves it at `/openapi.json`, with Swagger UI at
//! `/docs` (bundled, no network needed).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api;
use crate::routes;

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Larder control plane",
        description = "The admin API of Larder: Redis deployments, tenant namespaces with limits, tokens, signing keys and the audit trail. Every `/v1` call needs an admin token (a JWT with audience `larder-admin`); errors are `application/problem+json`.",
        license(name = "Apache-2.0")
    ),
    paths(
        routes::clusters::register,
        routes::clusters::list,
        routes::clusters::show,
        routes::clusters::deregister,
        routes::namespaces::create,
        routes::namespaces::list,
        routes::namespaces::show,
        routes::hotkeys::hotkeys,
        routes::namespaces::update,
        routes::namespaces::disable,
        routes::namespaces::enable,
        routes::namespaces::delete,
        routes::tokens::issue,
        routes::tokens::list_for_namespace,
        routes::tokens::list,
        routes::tokens::show,
        routes::tokens::revoke,
        routes::keys::list,
        routes::keys::rotate,
        routes::keys::retire,
        routes::audit::query,
        routes::health::healthz,
        routes::health::readyz,
    ),
    components(schemas(
        api::List<api::ClusterView>,
        api::List<api::NamespaceView>,
        api::List<api::TokenView>,
        api::List<api::KeyView>,
        model::Problem,
    )),
    modifiers(&AdminToken, &CommonRules),
    tags(
        (name = "clusters", description = "Redis deployments"),
        (name = "namespaces", description = "Tenant namespaces, their limits and usage"),
        (name = "tokens", description = "Tenant tokens"),
        (name = "keys", description = "Token signing keys"),
        (name = "audit", description = "The record of admin mutations"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
pub struct ApiDoc;

struct AdminToken;

impl Modify for AdminToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An admin token (audience larder-admin, permission admin); the first one comes from `larderctl admin-token` on a control-plane host.",
                    ))
                    .build(),
            ),
        );
    }
}

/// Answers every admin operation can give whatever it does: the token is checked and
/// the path, query and body parsed before the handler runs, and any call may find
/// ZooKeeper unreachable. A handler's own description of one of these codes is kept.
const COMMON_RESPONSES: &[(&str, &str)] = &[
    (
        "400",
        "Malformed path, query or body, or an invalid name (`bad-request`)",
    ),
    ("401", "No or invalid admin token (`unauthorized`)"),
    (
        "503",
        "ZooKeeper cannot be reached or the write's outcome is unknown (`registry-unavailable`); retry after `Retry-After` seconds",
    ),
];

/// The form of each path parameter: deployment and namespace names
/// (`larder_registry::names::cluster`, `::namespace`), token and key ids (`::id`).
const PATH_PATTERNS: &[(&str, &str)] = &[
    ("name", "^[a-z][a-z0-9-]{1,62}$"),
    ("jti", "^[A-Za-z0-9_-]{1,64}$"),
    ("kid", "^[A-Za-z0-9_-]{1,64}$"),
];

/// Applies [`COMMON_RESPONSES`] to every `/v1` operation and [`PATH_PATTERNS`] to the
/// path parameters.
struct CommonRules;

impl Modify for CommonRules {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use larder_service::openapi::{add_problem_responses, headers_are_strings, operations_mut};
        use utoipa::openapi::path::ParameterIn;
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        for (path, item) in openapi.paths.paths.iter_mut() {
            for operation in operations_mut(item) {
                headers_are_strings(operation);
                for parameter in operation.parameters.iter_mut().flatten() {
                    if parameter.parameter_in != ParameterIn::Path {
                        continue;
                    }
                    if let Some((_, pattern)) = PATH_PATTERNS
                        .iter()
                        .find(|(name, _)| *name == parameter.name)
                    {
                        parameter.schema = Some(
                            ObjectBuilder::new()
                                .schema_type(Type::String)
                                .pattern(Some(*pattern))
                                .into(),
                        );
                    }
                }
                if path.starts_with("/v1/") {
                    add_problem_responses(operation, COMMON_RESPONSES);
                }
            }
        }
    }
}

/// The document as pretty JSON, as committed.
pub fn json() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

/// OpenAPI schemas of the registry model types the API carries.
///
/// The registry crate knows nothing of OpenAPI, so each type is mirrored here with the
/// same serde shape; a test round-trips real values through each mirror so a change in
/// the model that is not made here fails.
pub mod model {
    use serde::{Deserialize, Serialize};
    use utoipa::ToSchema;

    /// How a Redis deployment is laid out.
    #[derive(Debug, Serialize, Deserialize, ToSchema)]
    #[serde(rename_all = "lowercase")]
    #[schema(as = Topology)]
    pub enum Topology {
        /// One master with asynchronous replicas.
        Standalone,
        /// Redis Cluster.
        Cluster,
    }

    /// A registered Redis deployment.
    // Not `deny_unknown_fields`: the API flattens this into a view with more fields,
    // and a closed schema would refuse those (the round-trip test still catches a
    // field missing here).
    #[derive(Debug, Serialize, Deserialize, ToSchema)]
    #[schema(as = Cluster)]
    pub struct Cluster {
        pub name: String,
        pub topology: Topology,
        /// For `standalone`, the current master first; for `cluster`, seed nodes.
        pub endpoints: Vec<String>,
        pub replicas: Vec<String>,
        pub region: String,
        /// Memory the platform may hand out to namespaces, bytes.
        pub capacity_bytes: u64,
        /// Raised at every failover.
        pub epoch: u64,
        /// How long the master must look down before a failover, ms.
        pub down_after_ms: u64,
        pub created_at_ms: u64,
    }

    /// Replication role.
    #[derive(Debug, Serialize, Deserialize, ToSchema)]
    #[serde(rename_all = "lowercase")]
    #[schema(as = Role)]
    pub enum Role {
        Master,
        Replica,
        Unknown,
    }

    /// One Redis instance's health, as its agent reports it.
    #[derive(Debug, Serialize, Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    #[schema(as = NodeHealth)]
    pub struct NodeHealth {
        pub endpoint: String,
        pub agent: String,
        pub up: bool,
        pub role: Role,
        pub master: Option<String>,
        pub master_link_up: Option<bool>,
        pub replication_offset: u64,
        pub used_memory_bytes: u64,
        pub max_memory_bytes: u64,
        pub connected_clients: u64,
        pub ops_per_sec: u64,
        /// PING round trip, microseconds.
        pub latency_us: u64,
        pub redis_version: String,
        pub vulnerable_lua: bool,
        pub uptime_s: u64,
        pub reported_at_ms: u64,
        /// How often the agent re-writes an unchanged record, ms (0: not said).
        pub heartbeat_ms: u64,
    }

    /// Lifecycle of a namespace.
    #[derive(Debug, Serialize, Deserialize, ToSchema)]
    #[serde(rename_all = "lowercase")]
    #[schema(as = NamespaceState)]
    pub enum NamespaceState {
        Active,
        Migrating,
        Disabled,
        /// Keys are being removed in the background; the namespace goes last.
        Deleting,
    }

    /// Per-namespace limits, enforced by every gateway. A field left out of a request
    /// takes its default.
    #[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
    #[serde(default, deny_unknown_fields)]
    #[schema(as = Limits)]
    pub struct Limits {
        #[schema(default = 512, minimum = 1, maximum = 65536)]
        pub max_key_bytes: u32,
        #[schema(default = 1048576, minimum = 1, maximum = 536870912)]
        pub max_value_bytes: u64,
        /// TTL applied when a write names none; null keeps keys until evicted.
        #[schema(minimum = 1)]
        pub default_ttl_s: Option<u64>,
        /// Upper bound on any TTL; null means unbounded.
        #[schema(minimum = 1)]
        pub max_ttl_s: Option<u64>,
        /// Sustained operations per second across all gateways.
        #[schema(default = 1000, minimum = 1, maximum = 2147483647)]
        pub ops_per_sec: u32,
        /// Extra operations allowed in a burst.
        #[schema(default = 2000, maximum = 2147483647)]
        pub burst: u32,
        /// Memory budget, reserved on the deployment at placement, bytes.
        #[schema(default = 67108864, minimum = 1)]
        pub memory_bytes: u64,
    }

    /// Whether gateways keep a local copy of values.
    #[derive(Debug, Serialize, Deserialize, ToSchema)]
    #[serde(tag = "mode", rename_all = "lowercase", deny_unknown_fields)]
    #[schema(as = NearCachePolicy)]
    pub enum NearCachePolicy {
        Off,
        /// Every key, served at most `max_staleness_ms` old.
        On {
            #[schema(minimum = 1, maximum = 60000)]
            max_staleness_ms: u64,
        },
        /// Only keys detected as hot: at least `min_rate_per_s` requests per second.
        Auto {
            #[schema(minimum = 1, maximum = 60000)]
            max_staleness_ms: u64,
            #[serde(default)]
            #[schema(default = 50, minimum = 1, maximum = 1000000)]
            min_rate_per_s: u32,
        },
    }

    /// A tenant namespace.
    // Not `deny_unknown_fields`: the API flattens this into a view with more fields,
    // and a closed schema would refuse those (the round-trip test still catches a
    // field missing here).
    #[derive(Debug, Serialize, Deserialize, ToSchema)]
    #[schema(as = Namespace)]
    pub struct Namespace {
        pub name: String,
        pub owner: String,
        /// The deployment its keys live on.
        pub cluster: String,
        pub state: NamespaceState,
        pub limits: Limits,
        pub near_cache: NearCachePolicy,
        /// Raised at every change.
        pub revision: u64,
        pub created_at_ms: u64,
    }

    /// What a token lets its holder do.
    #[derive(Debug, Serialize, Deserialize, ToSchema)]
    #[serde(rename_all = "lowercase")]
    #[schema(as = Permission)]
    pub enum Permission {
        Read,
        Write,
        Queue,
        Admin,
    }

    /// Whether a signing key still verifies tokens.
    /// A Redis endpoint, `host:port` (`larder_registry::names::endpoint`): a host of
    /// letters, digits, `-`, `.`, `_` (or a bracketed IPv6 address) and a port from 1
    /// to 65535. Endpoints travel as strings; this documents their form.
    pub struct Endpoint;

    impl utoipa::PartialSchema for Endpoint {
        fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
            utoipa::openapi::schema::ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::String)
                .pattern(Some(
                    r"^[A-Za-z0-9._\[\]:-]{1,253}:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$",
                ))
                .into()
        }
    }

    impl ToSchema for Endpoint {}

    /// What a tenant token may carry.
    #[derive(Debug, Serialize, Deserialize, ToSchema)]
    #[serde(rename_all = "lowercase")]
    #[schema(as = TenantPermission)]
    pub enum TenantPermission {
        Read,
        Write,
        Queue,
    }

    #[derive(Debug, Serialize, Deserialize, ToSchema)]
    #[serde(rename_all = "lowercase")]
    #[schema(as = KeyState)]
    pub enum KeyState {
        Active,
        Retired,
    }

    /// How an audited call ended.
    #[derive(Debug, Serialize, Deserialize, ToSchema)]
    #[serde(rename_all = "lowercase")]
    #[schema(as = Outcome)]
    pub enum Outcome {
        Ok,
        Error,
    }

    /// One admin mutation: who, what, when and how it ended.
    // Not `deny_unknown_fields`: the API flattens this into a view with more fields,
    // and a closed schema would refuse those (the round-trip test still catches a
    // field missing here).
    #[derive(Debug, Serialize, Deserialize, ToSchema)]
    #[schema(as = AuditEntry)]
    pub struct AuditEntry {
        /// When the call finished, ms since the epoch.
        pub at_ms: u64,
        /// The admin token's subject (`system` for the leader's own work).
        pub actor: String,
        /// The `jti` of the admin token used.
        pub actor_token: Option<String>,
        /// The control-plane instance that served the call.
        pub instance: String,
        /// A stable action name such as `namespace.create`.
        pub action: String,
        /// What it acted on, such as `namespace/orders`.
        pub target: String,
        pub method: String,
        pub path: String,
        pub status: u16,
        pub outcome: Outcome,
        pub detail: Option<String>,
        /// The JSON request body, secrets scrubbed.
        /// The request body as sent, when it was JSON (any JSON value).
        #[schema(value_type = Option<serde_json::Value>)]
        pub request: Option<serde_json::Value>,
        pub request_id: Option<String>,
    }

    /// An RFC 9457 problem: the body of every error.
    #[derive(Debug, Serialize, Deserialize, ToSchema)]
    #[schema(as = Problem)]
    pub struct Problem {
        /// Stable per kind of error, e.g. `https://larder.dev/problems/conflict`.
        #[serde(rename = "type")]
        pub kind: String,
        pub title: String,
        pub status: u16,
        pub detail: Option<String>,
        /// Seconds after which a retry may succeed (also `Retry-After`).
        pub retry_after: Option<u64>,
    }
}

#[cfg(test)]
mod tests {
    use larder_registry::auth::Permission;
    use larder_registry::ledger::{AuditEntry, Outcome};
    use larder_registry::model::{
        Cluster, KeyState, Limits, Namespace, NamespaceState, NearCachePolicy, NodeHealth, Role,
        Topology,
    };
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use super::model;

    /// `value` survives a trip through its mirror unchanged.
    fn mirrors<T: Serialize, M: Serialize + DeserializeOwned>(value: &T) {
        let json = serde_json::to_value(value).unwrap();
        let mirror: M = serde_json::from_value(json.clone())
            .unwrap_or_else(|e| panic!("mirror refuses {json}: {e}"));
        assert_eq!(serde_json::to_value(mirror).unwrap(), json);
    }

    #[test]
    fn mirrors_match_the_registry_model() {
        mirrors::<_, model::Cluster>(&Cluster {
            name: "main".into(),
            topology: Topology::Cluster,
            endpoints: vec!["h:1".into()],
            replicas: vec!["h:2".into()],
            region: "eu".into(),
            capacity_bytes: 1,
            epoch: 2,
            down_after_ms: 3,
            created_at_ms: 4,
        });
        for role in [Role::Master, Role::Replica, Role::Unknown] {
            mirrors::<_, model::NodeHealth>(&NodeHealth {
                endpoint: "h:1".into(),
                role,
                master: Some("h:2".into()),
                master_link_up: Some(true),
                ..Default::default()
            });
        }
        for (state, near_cache) in [
            (NamespaceState::Active, NearCachePolicy::Off),
            (
                NamespaceState::Migrating,
                NearCachePolicy::On {
                    max_staleness_ms: 5,
                },
            ),
            (
                NamespaceState::Disabled,
                NearCachePolicy::Auto {
                    max_staleness_ms: 5,
                    min_rate_per_s: 50,
                },
            ),
            (NamespaceState::Deleting, NearCachePolicy::Off),
        ] {
            mirrors::<_, model::Namespace>(&Namespace {
                name: "orders".into(),
                owner: "team".into(),
                cluster: "main".into(),
                state,
                limits: Limits {
                    default_ttl_s: Some(1),
                    max_ttl_s: Some(2),
                    ..Limits::default()
                },
                near_cache,
                revision: 1,
                created_at_ms: 2,
            });
        }
        for p in [
            Permission::Read,
            Permission::Write,
            Permission::Queue,
            Permission::Admin,
        ] {
            mirrors::<_, model::Permission>(&p);
        }
        mirrors::<_, model::KeyState>(&KeyState::Active);
        mirrors::<_, model::KeyState>(&KeyState::Retired);
        for outcome in [Outcome::Ok, Outcome::Error] {
            mirrors::<_, model::AuditEntry>(&AuditEntry {
                at_ms: 1,
                actor: "a".into(),
                actor_token: Some("j".into()),
                instance: "cp".into(),
                action: "namespace.create".into(),
                target: "namespace/x".into(),
                method: "POST".into(),
                path: "/v1/namespaces".into(),
                status: 201,
                outcome,
                detail: Some("d".into()),
                request: Some(serde_json::json!({"name": "x"})),
                request_id: Some("r".into()),
            });
        }
        let problem =
            larder_service::Problem::new(axum::http::StatusCode::CONFLICT, "conflict", "Conflict")
                .with_detail("d")
                .with_retry_after(1);
        mirrors::<_, model::Problem>(&problem);
    }

    /// The committed document is the one the code generates.
    #[test]
    fn openapi_document_is_committed() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi/control-plane.json");
        let generated = super::json();
        if std::env::var_os("LARDER_UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{} is not what the code generates; run \
             LARDER_UPDATE_OPENAPI=1 cargo test -p larder-control-plane openapi and commit it",
            path.display()
        );
    }
}
