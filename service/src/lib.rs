//! What every Larder process shares at its edges.
//!
//! - [`shutdown`]: one root [`CancellationToken`](tokio_util::sync::CancellationToken) per
//!   process; the first SIGTERM/SIGINT starts a drain, a second one exits at once.
//! - [`telemetry`]: `tracing` set-up, text or JSON.
//! - [`config`]: layered configuration (file < `LARDER_*` environment < command line) into
//!   one typed struct per binary, validated at load.
//! - [`problem`]: the RFC 9457 `application/problem+json` body every HTTP error uses.
//! - [`http`]: serving a router on an already bound listener with graceful drain, and the
//!   layers every HTTP service shares (request ids, request spans, scrubbed headers).
//! - [`json`]: the JSON body extractor, which also takes integers written as `5.0`.
//! - [`openapi`]: rules both services apply to their generated OpenAPI documents.
//!
//! Services depend on this crate and on `larder-registry`, never on each other.

pub mod config;
pub mod http;
pub mod json;
pub mod openapi;
pub mod problem;
pub mod shutdown;
pub mod telemetry;

pub use problem::Problem;
