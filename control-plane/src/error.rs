//! [`ApiError`]: every failure of the admin API, mapped to a status and a problem+json body.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use larder_registry::RegistryError;
use larder_registry::auth::TokenError;
use larder_service::Problem;

/// What went wrong, by who is at fault.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or names something invalid.
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Unauthorized(#[from] TokenError),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// The request conflicts with what exists (a different body for an existing name,
    /// a cluster that still holds namespaces, a lost compare-and-set).
    #[error("{0}")]
    Conflict(String),
    /// Well-formed but cannot be done (an unknown cluster named, a region mismatch).
    #[error("{0}")]
    Unprocessable(String),
    /// A deployment offered for registration is unreachable or not what was declared.
    #[error("{0}")]
    DeploymentCheck(String),
    /// No deployment has room for the namespace's memory budget.
    #[error("{0}")]
    CapacityExhausted(String),
    /// No deployment is registered where the namespace should go.
    #[error("{0}")]
    NoPlacement(String),
    /// This instance holds no usable signing key.
    #[error("{0}")]
    NoSigningKey(String),
    /// ZooKeeper cannot be reached: mutations wait for it to come back.
    #[error("registry unavailable: {0}")]
    Unavailable(String),
    /// A bug or an unexpected failure; details are logged, not returned.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Conflict { .. }
            | RegistryError::AlreadyExists { .. }
            | RegistryError::NotEmpty { .. } => ApiError::Conflict(e.to_string()),
            RegistryError::NotFound { .. } => ApiError::NotFound(e.to_string()),
            RegistryError::InvalidName { .. } => ApiError::BadRequest(e.to_string()),
            RegistryError::Unavailable(_) => ApiError::Unavailable(e.to_string()),
            RegistryError::Indeterminate { .. } => {
                ApiError::Unavailable(format!("{e}; read the resource back before retrying"))
            }
            RegistryError::Fenced => {
                ApiError::Unavailable("this instance lost leadership; retry".into())
            }
            RegistryError::Invalid { .. }
            | RegistryError::ZooKeeper { .. }
            | RegistryError::Config(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        ApiError::BadRequest(e.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        ApiError::BadRequest(e.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        ApiError::BadRequest(e.body_text())
    }
}

impl ApiError {
    /// The problem body; internals never leak into it.
    pub fn problem(&self) -> Problem {
        use StatusCode as S;
        match self {
            ApiError::BadRequest(d) => {
                Problem::new(S::BAD_REQUEST, "bad-request", "Bad request").with_detail(d)
            }
            ApiError::Unauthorized(e) => {
                Problem::new(S::UNAUTHORIZED, "unauthorized", "Missing or invalid token")
                    .with_detail(e.to_string())
            }
            ApiError::Forbidden(d) => {
                Problem::new(S::FORBIDDEN, "forbidden", "Not allowed").with_detail(d)
            }
            ApiError::NotFound(d) => {
                Problem::new(S::NOT_FOUND, "not-found", "Not found").with_detail(d)
            }
            ApiError::MethodNotAllowed => Problem::new(
                S::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            )
            .with_detail(self.to_string()),
            ApiError::Conflict(d) => {
                Problem::new(S::CONFLICT, "conflict", "Conflict").with_detail(d)
            }
            ApiError::Unprocessable(d) => {
                Problem::new(S::UNPROCESSABLE_ENTITY, "unprocessable", "Cannot be done")
                    .with_detail(d)
            }
            ApiError::DeploymentCheck(d) => Problem::new(
                S::UNPROCESSABLE_ENTITY,
                "deployment-check-failed",
                "Deployment check failed",
            )
            .with_detail(d),
            ApiError::CapacityExhausted(d) => {
                Problem::new(S::CONFLICT, "capacity-exhausted", "No capacity").with_detail(d)
            }
            ApiError::NoPlacement(d) => {
                Problem::new(S::CONFLICT, "no-placement", "No deployment fits").with_detail(d)
            }
            ApiError::NoSigningKey(d) => {
                Problem::new(S::SERVICE_UNAVAILABLE, "no-signing-key", "No signing key")
                    .with_detail(d)
                    .with_retry_after(5)
            }
            ApiError::Unavailable(d) => Problem::new(
                S::SERVICE_UNAVAILABLE,
                "registry-unavailable",
                "Registry unavailable",
            )
            .with_detail(d)
            .with_retry_after(1),
            ApiError::Internal(_) => {
                Problem::new(S::INTERNAL_SERVER_ERROR, "internal", "Internal error")
            }
        }
    }
}

impl From<crate::keys::KeyError> for ApiError {
    fn from(e: crate::keys::KeyError) -> Self {
        use crate::keys::KeyError as K;
        match e {
            K::Registry(r) => r.into(),
            K::NoActiveKey | K::NotHeld(_) => ApiError::NoSigningKey(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// The problem an error response carried, kept in the response's extensions for the
/// audit record.
#[derive(Debug, Clone)]
pub struct ProblemNote(pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(%detail, "internal error");
        }
        let problem = self.problem();
        let note = match &problem.detail {
            Some(detail) => format!("{}: {detail}", problem.title),
            None => problem.title.clone(),
        };
        let mut response = problem.into_response();
        response.extensions_mut().insert(ProblemNote(note));
        response
    }
}

/// The query-string extractor of the admin API: unknown or malformed parameters are a
/// problem+json 400.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// The path extractor of the admin API: a bad path segment is a problem+json 400.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// The JSON extractor of the admin API: malformed bodies and unknown fields get the
/// same problem+json shape as every other error.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequest)]
#[from_request(via(larder_service::json::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}
