//! [`ApiError`]: every failure of the data API, with who is at fault and whether a retry
//! can help. The source is a metrics label; the body is problem+json.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
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
    #[error("internal error: {0}")]
    Internal(String),
}

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
            ApiError::BackendUnavailable { .. } | ApiError::BackendTimeout { .. }
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
