//! `/v1/namespaces/{ns}/keys/{key}`: plain values with TTL.

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use larder_registry::auth::Permission;
use larder_registry::keyspace;
use larder_registry::model::Limits;
use serde::Deserialize;

use crate::error::ApiError;
use crate::routes::ns_and_key;
use crate::state::{Access, AppState};
use crate::value;

/// Query parameters of `PUT`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutParams {
    /// Time to live in seconds; the namespace default applies when absent.
    pub ttl: Option<u64>,
}

fn check_key(key: &[u8], limits: &Limits) -> Result<(), ApiError> {
    if key.len() > limits.max_key_bytes as usize {
        return Err(ApiError::KeyTooLong {
            len: key.len(),
            max: limits.max_key_bytes,
        });
    }
    Ok(())
}

/// The TTL a write gets: the one asked for, else the namespace default; never above the
/// namespace maximum.
pub fn effective_ttl(asked: Option<u64>, limits: &Limits) -> Result<Option<u64>, ApiError> {
    match asked {
        Some(0) => Err(ApiError::BadRequest("ttl must be at least 1 second".into())),
        Some(t) if limits.max_ttl_s.is_some_and(|m| t > m) => Err(ApiError::BadRequest(format!(
            "ttl {t} exceeds the namespace maximum of {} seconds",
            limits.max_ttl_s.unwrap_or_default()
        ))),
        Some(t) => Ok(Some(t)),
        None => Ok(limits.default_ttl_s.or(limits.max_ttl_s)),
    }
}

fn access(
    state: &AppState,
    headers: &HeaderMap,
    uri: &Uri,
    perm: Permission,
) -> Result<(Access, Vec<u8>), ApiError> {
    let (ns, key) = ns_and_key(uri, "keys")?;
    let access = state.authorize(headers, &ns, perm)?;
    check_key(&key, &access.namespace.value.limits)?;
    Ok((access, key))
}

/// Reads a value (`HEAD` is served by the same handler, without the body).
pub async fn get(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (access, key) = access(&state, &headers, &uri, Permission::Read)?;
    let ns = &access.namespace.value.name;
    let redis_key = keyspace::data_key(ns, &key);
    let raw: Option<Bytes> = state
        .backends
        .query(&access.cluster.value, redis::cmd("GET").arg(&redis_key))
        .await?;
    let Some(raw) = raw else {
        state.metrics.misses.with_label_values(&[ns]).inc();
        return Err(ApiError::KeyNotFound);
    };
    state.metrics.hits.with_label_values(&[ns]).inc();
    let stored = value::decode(raw);
    let etag = stored.etag_header();
    if let Some(inm) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        && inm.split(',').any(|t| t.trim() == etag || t.trim() == "*")
    {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let mut response = Response::new(Body::from(stored.value));
    let h = response.headers_mut();
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&stored.content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    Ok(response)
}

/// Stores the body as the value, keeping its `Content-Type`.
pub async fn put(
    State(state): State<AppState>,
    uri: Uri,
    query: Result<Query<PutParams>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (access, key) = access(&state, &headers, &uri, Permission::Write)?;
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limits = &access.namespace.value.limits;
    let max = limits.max_value_bytes;
    // Refuse a declared oversize body before reading any of it.
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > max
    {
        return Err(ApiError::ValueTooLarge { max });
    }
    let ttl = effective_ttl(query.ttl, limits)?;
    let content_type = match headers.get(header::CONTENT_TYPE) {
        None => "application/octet-stream",
        Some(v) => v
            .to_str()
            .ok()
            .filter(|s| s.len() <= value::MAX_CONTENT_TYPE)
            .ok_or_else(|| {
                ApiError::BadRequest(
                    "Content-Type must be visible ASCII of at most 255 bytes".into(),
                )
            })?,
    };
    let body = axum::body::to_bytes(body, max as usize)
        .await
        .map_err(|_| ApiError::ValueTooLarge { max })?;
    let (raw, tag) = value::encode(content_type, &body);
    let redis_key = keyspace::data_key(&access.namespace.value.name, &key);
    let mut cmd = redis::cmd("SET");
    cmd.arg(&redis_key).arg(raw);
    if let Some(ttl) = ttl {
        cmd.arg("EX").arg(ttl);
    }
    let () = state.backends.query(&access.cluster.value, &cmd).await?;
    Ok((
        StatusCode::NO_CONTENT,
        [(header::ETAG, value::etag_header(&tag))],
    )
        .into_response())
}

/// Deletes a key: 204 when it existed, 404 otherwise.
pub async fn delete(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let (access, key) = access(&state, &headers, &uri, Permission::Write)?;
    let redis_key = keyspace::data_key(&access.namespace.value.name, &key);
    let removed: u64 = state
        .backends
        .query(&access.cluster.value, redis::cmd("UNLINK").arg(&redis_key))
        .await?;
    if removed == 0 {
        Err(ApiError::KeyNotFound)
    } else {
        Ok(StatusCode::NO_CONTENT)
    }
}
