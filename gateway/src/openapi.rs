//! The gateway's OpenAPI document, built from the handlers' annotations.
//!
//! `openapi/gateway.json` in the repository is this document; a test fails when they
//! differ (set `LARDER_UPDATE_OPENAPI=1` when running it to rewrite the file).

use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, path::ParameterIn};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use crate::routes;

/// An RFC 9457 problem, the body of every error.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Stable URI per kind of error, e.g. `https://larder.dev/problems/key-not-found`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: Option<String>,
    /// Seconds after which a retry may succeed (also sent as `Retry-After`).
    pub retry_after: Option<u64>,
}

/// A request body of any bytes (a value, a message), sent with any `Content-Type`.
pub struct Bytes;

impl PartialSchema for Bytes {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .description(Some("Any bytes"))
            .into()
    }
}

impl ToSchema for Bytes {}

/// A value as stored: whatever bytes were written, served with the `Content-Type` they
/// were written with, so no schema narrower than "anything" holds.
pub struct StoredValue;

impl PartialSchema for StoredValue {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .description(Some(
                "The bytes as written, with the Content-Type they were written with",
            ))
            .into()
    }
}

impl ToSchema for StoredValue {}

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Larder data API",
        description = "Namespaced cache operations for tenant teams. Authenticate with a tenant token: `Authorization: Bearer <JWT>`. Errors are application/problem+json.",
        version = "1"
    ),
    paths(
        routes::keys::get,
        routes::keys::put,
        routes::keys::delete,
        routes::keys::get_ttl,
        routes::keys::put_ttl,
        routes::list::list,
        routes::batch::batch,
        routes::counters::step,
        routes::counters::read,
        routes::counters::remove,
        routes::hotkeys::hotkeys,
    ),
    components(schemas(Problem, Bytes, StoredValue)),
    modifiers(&Bearer),
    tags(
        (name = "keys", description = "Values with TTL, conditional requests, leases, listing, batches"),
        (name = "counters", description = "Atomic bounded counters"),
        (name = "queues", description = "Queues with consumer groups on Redis Streams"),
    )
)]
struct GatewayApi;

/// Answers any tenant operation can give, whatever the resource: the token, namespace
/// and rate-limit checks run before the handler, and every handler reads the path, query
/// and headers. A handler's own description of one of these codes is kept.
const COMMON_RESPONSES: &[(&str, &str)] = &[
    (
        "400",
        "Malformed path, query, header or body (`bad-request`), or a key over the namespace's limit (`key-too-long`)",
    ),
    (
        "401",
        "Missing, malformed, expired or revoked token (`unauthorized`)",
    ),
    (
        "403",
        "The token is not valid for this namespace or lacks the permission (`forbidden`), or the namespace is disabled or being deleted (`namespace-disabled`)",
    ),
    ("404", "No such namespace (`namespace-not-found`)"),
    (
        "429",
        "Over the namespace's rate limit (`rate-limited`); retry after `Retry-After` seconds",
    ),
    (
        "502",
        "The namespace's Redis deployment answered with an error (`backend-error`)",
    ),
    (
        "503",
        "The namespace's Redis deployment cannot be reached (`backend-unavailable`); retry after `Retry-After` seconds",
    ),
    (
        "504",
        "The namespace's Redis deployment did not answer in time (`backend-timeout`)",
    ),
];

/// A namespace name (`larder_registry::names::namespace`).
const NAMESPACE_PATTERN: &str = "^[a-z][a-z0-9-]{1,62}$";

/// What holds for every tenant operation: the `ns` path parameter is a namespace name,
/// headers are strings (never `null`), and the [`COMMON_RESPONSES`] can be answered.
fn add_common_rules(doc: &mut utoipa::openapi::OpenApi) {
    use larder_service::openapi::{add_problem_responses, headers_are_strings, operations_mut};
    for item in doc.paths.paths.values_mut() {
        for operation in operations_mut(item) {
            headers_are_strings(operation);
            for parameter in operation.parameters.iter_mut().flatten() {
                if parameter.name == "ns" && parameter.parameter_in == ParameterIn::Path {
                    parameter.schema = Some(
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .pattern(Some(NAMESPACE_PATTERN))
                            .into(),
                    );
                }
            }
            add_problem_responses(operation, COMMON_RESPONSES);
        }
    }
}

/// The whole document.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = GatewayApi::openapi();
    doc.merge(routes::queues::QueuesApi::openapi());
    add_common_rules(&mut doc);
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_spec_matches_the_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/gateway.json");
        let generated = document().to_pretty_json().expect("document serialises") + "\n";
        if std::env::var_os("LARDER_UPDATE_OPENAPI").is_some() {
            std::fs::write(path, &generated).expect("write openapi/gateway.json");
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "openapi/gateway.json differs from the code; regenerate with LARDER_UPDATE_OPENAPI=1 cargo test -p larder-gateway openapi"
        );
    }
}
