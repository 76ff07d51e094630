//! The gateway's OpenAPI document, built from the handlers' annotations.
//!
//! `openapi/gateway.json` in the repository is this document; a test fails when they
//! differ (set `LARDER_UPDATE_OPENAPI=1` when running it to rewrite the file).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

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
    components(schemas(Problem)),
    modifiers(&Bearer),
    tags(
        (name = "keys", description = "Values with TTL, conditional requests, leases, listing, batches"),
        (name = "counters", description = "Atomic bounded counters"),
        (name = "queues", description = "Queues with consumer groups on Redis Streams"),
    )
)]
struct GatewayApi;

/// The whole document.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = GatewayApi::openapi();
    doc.merge(routes::queues::QueuesApi::openapi());
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
