//! `/v1/namespaces/{ns}/queues/{q}/…`: queues on Redis Streams.

use axum::Router;

use crate::state::AppState;

/// The queue routes.
pub fn routes() -> Router<AppState> {
    Router::new()
}

/// The queue routes' part of the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi()]
pub struct QueuesApi;
