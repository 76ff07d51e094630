//! [`ApiError`]: every failure of the data API, with who is at fault and whether a retry
//! can help. The source is a metrics label; the body is problem+json.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use http_body_util::LengthLimitError;
use larder_registry::auth::TokenError;
use larder_service::Problem;

/// Who caused an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Client,
    Redis,
    Registry,
    Internal,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Client => "client",
            Source::Redis => "redis",
            Source::Registry => "registry",
            Source::Internal => "internal",
        }
    }
}

/// Every failure of the data API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Unauthorized(#[from] TokenError),
    #[error("{0}")]
    Forbidden(String),
    #[error("no such route")]
    NoRoute,
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("no namespace {0:?}")]
    NamespaceNotFound(String),
    #[error("namespace {0:?} is {1}")]
    NamespaceUnavailable(String, &'static str),
    #[error("no such key")]
    KeyNotFound,
    #[error("key is {len} bytes; the namespace allows {max}")]
    KeyTooLong { len: usize, max: u32 },
    #[error("value is larger than the namespace's limit of {max} bytes")]
    ValueTooLarge { max: u64 },
    /// The deployment cannot be reached (connection refused, down, no master).
    #[error("Redis deployment {cluster} unavailable: {detail}")]
    BackendUnavailable { cluster: String, detail: String },
    /// The deployment did not answer within the request deadline.
    #[error("Redis deployment {cluster} did not answer within {ms} ms")]
    BackendTimeout { cluster: String, ms: u64 },
    /// Redis answered with an error we did not expect.
    #[error("Redis error on {cluster}: {detail}")]
    Backend { cluster: String, detail: String },
    /// A condition of the request (`If-Match`, `If-None-Match: *`) does not hold.
    #[error("{0}")]
    PreconditionFailed(String),
    /// The operation conflicts with the current state; `current` carries what the
    /// client needs to decide (a counter's value).
    #[error("{detail}")]
    Conflict {
        slug: &'static str,
        detail: String,
        current: Option<serde_json::Value>,
    },
    /// Well-formed but not acceptable (an `Idempotency-Key` reused for another request).
    #[error("{detail}")]
    Unprocessable { slug: &'static str, detail: String },
    /// Over the namespace's rate limit.
    #[error("namespace {namespace} is over its limit of {limit} operations per second")]
    RateLimited {
        namespace: String,
        limit: u32,
        retry_after_s: u64,
    },
    /// The gateway is serving as many requests as it allows at once
    /// ([`Config::max_in_flight`](crate::Config::max_in_flight)); shed at once, never queued.
    #[error("the gateway is serving its limit of {limit} requests at once; retry shortly")]
    Overloaded { limit: usize },
    /// The namespace has as many requests in flight through this gateway as it may
    /// ([`Config::max_in_flight_per_namespace`](crate::Config::max_in_flight_per_namespace)).
    #[error(
        "namespace {namespace} has its limit of {limit} requests in flight on this gateway; retry shortly"
    )]
    ConcurrencyLimited { namespace: String, limit: u32 },
    /// The request body is over the gateway's bound
    /// ([`Config::max_body_bytes`](crate::Config::max_body_bytes)).
    #[error(
        "the request body is larger than the gateway accepts{}",
        .max.map(|m| format!(" ({m} bytes)")).unwrap_or_default()
    )]
    BodyTooLarge { max: Option<u64> },
    /// The request body did not arrive in full in time (a slow or stalled client).
    #[error("{0}")]
    BodyTimeout(larder_service::http::BodyTimeout),
    /// Missed a key whose stampede lease another caller holds: retry shortly.
    #[error("another caller holds the lease for this key; retry shortly")]
    LeasePending,
    /// A named thing other than a key or namespace does not exist (a queue's consumer
    /// group: `group-not-found`); `slug` is its stable problem type.
    #[error("{detail}")]
    NotFound { slug: &'static str, detail: String },
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(e: axum::extract::rejection::JsonRejection) -> Self {
        if let Some(timeout) = larder_service::http::find_in_chain(&e) {
            return ApiError::BodyTimeout(*timeout);
        }
        if larder_service::http::find_in_chain::<LengthLimitError>(&e).is_some() {
            return ApiError::BodyTooLarge { max: None };
        }
        ApiError::BadRequest(e.body_text())
    }
}

impl ApiError {
    /// The error for a request body that could not be read in full: too slow (408),
    /// over a size limit (`too_large`), or cut short by the client (400).
    pub fn from_body(error: &axum::Error, too_large: impl FnOnce() -> ApiError) -> ApiError {
        if let Some(timeout) = larder_service::http::find_in_chain(error) {
            return ApiError::BodyTimeout(*timeout);
        }
        if larder_service::http::find_in_chain::<LengthLimitError>(error).is_some() {
            return too_large();
        }
        ApiError::BadRequest(format!("the request body could not be read: {error}"))
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(e: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::BadRequest(e.body_text())
    }
}

/// The JSON extractor of the data API: malformed bodies and unknown fields get the
/// same problem+json shape as every other error.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequest)]
#[from_request(via(larder_service::json::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// The query extractor of the data API, with problem+json rejections.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

impl ApiError {
    pub fn source(&self) -> Source {
        match self {
            ApiError::BackendUnavailable { .. }
            | ApiError::BackendTimeout { .. }
            | ApiError::Backend { .. } => Source::Redis,
            ApiError::Internal(_) => Source::Internal,
            _ => Source::Client,
        }
    }

    /// Whether the same request may succeed later.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            ApiError::BackendUnavailable { .. }
                | ApiError::BackendTimeout { .. }
                | ApiError::Overloaded { .. }
                | ApiError::ConcurrencyLimited { .. }
        )
    }

    /// The problem body; internals are logged, never returned.
    pub fn problem(&self) -> Problem {
        use StatusCode as S;
        let detail = self.to_string();
        let p = match self {
            ApiError::BadRequest(_) => Problem::new(S::BAD_REQUEST, "bad-request", "Bad request"),
            ApiError::Unauthorized(_) => {
                Problem::new(S::UNAUTHORIZED, "unauthorized", "Missing or invalid token")
            }
            ApiError::Forbidden(_) => Problem::new(S::FORBIDDEN, "forbidden", "Not allowed"),
            ApiError::NoRoute => Problem::new(S::NOT_FOUND, "no-route", "No such route"),
            ApiError::MethodNotAllowed => Problem::new(
                S::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            ApiError::NamespaceNotFound(_) => {
                Problem::new(S::NOT_FOUND, "namespace-not-found", "Namespace not found")
            }
            ApiError::NamespaceUnavailable(..) => {
                Problem::new(S::FORBIDDEN, "namespace-disabled", "Namespace not serving")
            }
            ApiError::KeyNotFound => Problem::new(S::NOT_FOUND, "key-not-found", "Key not found"),
            ApiError::KeyTooLong { .. } => {
                Problem::new(S::BAD_REQUEST, "key-too-long", "Key too long")
            }
            ApiError::ValueTooLarge { .. } => {
                Problem::new(S::PAYLOAD_TOO_LARGE, "value-too-large", "Value too large")
            }
            ApiError::BackendUnavailable { .. } => Problem::new(
                S::SERVICE_UNAVAILABLE,
                "backend-unavailable",
                "Cache backend unavailable",
            )
            .with_retry_after(1),
            ApiError::BackendTimeout { .. } => Problem::new(
                S::GATEWAY_TIMEOUT,
                "backend-timeout",
                "Cache backend timed out",
            ),
            ApiError::Backend { .. } => {
                Problem::new(S::BAD_GATEWAY, "backend-error", "Cache backend error")
            }
            ApiError::PreconditionFailed(_) => Problem::new(
                S::PRECONDITION_FAILED,
                "precondition-failed",
                "Precondition failed",
            ),
            ApiError::Conflict { slug, current, .. } => {
                let p = Problem::new(S::CONFLICT, slug, "Conflict");
                match current {
                    Some(v) => p.with_extension("current", v.clone()),
                    None => p,
                }
            }
            ApiError::Unprocessable { slug, .. } => {
                Problem::new(S::UNPROCESSABLE_ENTITY, slug, "Unprocessable request")
            }
            ApiError::RateLimited { retry_after_s, .. } => {
                Problem::new(S::TOO_MANY_REQUESTS, "rate-limited", "Rate limit exceeded")
                    .with_retry_after(*retry_after_s)
            }
            ApiError::Overloaded { .. } => Problem::new(
                S::SERVICE_UNAVAILABLE,
                "overloaded",
                "Gateway at its request limit",
            )
            .with_retry_after(1),
            ApiError::ConcurrencyLimited { .. } => Problem::new(
                S::TOO_MANY_REQUESTS,
                "concurrency-limited",
                "Too many requests in flight for the namespace",
            )
            .with_retry_after(1),
            ApiError::BodyTooLarge { .. } => Problem::new(
                S::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "Request body too large",
            ),
            ApiError::BodyTimeout(_) => Problem::new(
                S::REQUEST_TIMEOUT,
                "body-timeout",
                "Request body not received in time",
            ),
            ApiError::LeasePending => {
                Problem::new(S::NOT_FOUND, "lease-pending", "Key not found; lease held")
                    .with_retry_after(1)
            }
            ApiError::NotFound { slug, .. } => Problem::new(S::NOT_FOUND, slug, "Not found"),
            ApiError::Internal(_) => {
                return Problem::new(S::INTERNAL_SERVER_ERROR, "internal", "Internal error");
            }
        };
        p.with_detail(detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self.source() {
            Source::Client => tracing::debug!(error = %self, "request refused"),
            source => {
                tracing::warn!(error = %self, source = source.as_str(), retryable = self.retryable(), "request failed")
            }
        }
        let mut response = self.problem().into_response();
        response.extensions_mut().insert(self.source());
        response
    }
}
