//! `POST /v1/namespaces/{ns}/batch`: many get/put/delete operations in one request, a
//! result per operation.
//!
//! Operations on different keys run concurrently, each routed to its own key's node, so
//! a batch works on Redis Cluster across hash slots; operations on the same key apply in
//! the order given. A batch is not a transaction: each operation succeeds or fails on its
//! own, and its result says which. Every operation is idempotent, so a whole batch may be
//! retried.

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use larder_registry::auth::Permission;
use larder_registry::keyspace;
use larder_registry::model::{Cluster, Limits};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, Json};
use crate::routes::keys::effective_ttl;
use crate::state::AppState;
use crate::value;

/// Most operations in one batch.
pub const MAX_OPERATIONS: usize = 100;

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Get,
    Put,
    Delete,
}

/// One operation. The key is `key` (text) or `key_base64` (URL-safe, no padding) for
/// binary keys; a put's value is `value` (text) or `value_base64` (standard).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Operation {
    pub op: Op,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub key_base64: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub value_base64: Option<String>,
    #[serde(default)]
    pub content_type: Option<String>,
    /// Seconds; namespace default and maximum apply.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 3153600000_u64)]
    pub ttl: Option<u64>,
}

/// A batch request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    #[schema(min_items = 1, max_items = 100)]
    pub operations: Vec<Operation>,
}

/// The outcome of one operation: an HTTP-like status, and for a hit the value (`value`
/// when UTF-8, else `value_base64`), its content type and ETag; for a failure the
/// problem type and detail.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OpResult {
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl OpResult {
    fn error(e: &ApiError) -> Self {
        let p = e.problem();
        Self {
            status: p.status,
            kind: Some(p.kind),
            detail: p.detail,
            ..Default::default()
        }
    }
}

/// The results, in the order of the operations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BatchResults {
    pub results: Vec<OpResult>,
}

fn key_of(op: &Operation, max: u32) -> Result<Vec<u8>, ApiError> {
    let key = match (&op.key, &op.key_base64) {
        (Some(k), None) => k.as_bytes().to_vec(),
        (None, Some(b)) => URL_SAFE_NO_PAD
            .decode(b)
            .map_err(|_| ApiError::BadRequest("key_base64 is not base64url".into()))?,
        _ => {
            return Err(ApiError::BadRequest(
                "give exactly one of key and key_base64".into(),
            ));
        }
    };
    if key.is_empty() {
        return Err(ApiError::BadRequest("the key must not be empty".into()));
    }
    if key.len() > max as usize {
        return Err(ApiError::KeyTooLong {
            len: key.len(),
            max,
        });
    }
    Ok(key)
}

/// Runs a batch.
#[utoipa::path(
    post,
    path = "/v1/namespaces/{ns}/batch",
    tag = "keys",
    params(("ns" = String, Path, description = "Namespace")),
    request_body = Batch,
    responses(
        (status = 200, description = "One result per operation", body = BatchResults),
        (status = 400, description = "Malformed batch or more than 100 operations", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn batch(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    Json(batch): Json<Batch>,
) -> Result<Json<BatchResults>, ApiError> {
    let ns = uri
        .path()
        .strip_prefix("/v1/namespaces/")
        .and_then(|r| r.strip_suffix("/batch"))
        .ok_or_else(|| ApiError::BadRequest("unexpected path".into()))?;
    let ns = percent_encoding::percent_decode_str(ns)
        .decode_utf8_lossy()
        .into_owned();
    let mut needs = Vec::with_capacity(2);
    if batch.operations.iter().any(|o| o.op == Op::Get) {
        needs.push(Permission::Read);
    }
    if batch.operations.iter().any(|o| o.op != Op::Get) {
        needs.push(Permission::Write);
    }
    let access = state.authorize_all(&headers, &ns, &needs)?;
    if batch.operations.is_empty() || batch.operations.len() > MAX_OPERATIONS {
        return Err(ApiError::BadRequest(format!(
            "a batch holds 1 to {MAX_OPERATIONS} operations"
        )));
    }
    let limits = &access.namespace.value.limits;
    let cluster = &access.cluster.value;
    // Same key → one sequence, in request order; different keys → concurrently.
    let mut results: Vec<Option<OpResult>> = vec![None; batch.operations.len()];
    let mut sequences: Vec<(Vec<u8>, Vec<usize>)> = Vec::new();
    for (i, op) in batch.operations.iter().enumerate() {
        match key_of(op, limits.max_key_bytes) {
            Err(e) => results[i] = Some(OpResult::error(&e)),
            Ok(key) => match sequences.iter_mut().find(|(k, _)| *k == key) {
                Some((_, idx)) => idx.push(i),
                None => sequences.push((key, vec![i])),
            },
        }
    }
    let ops = &batch.operations;
    let (ns, state) = (ns.as_str(), &state);
    let runs = sequences.into_iter().map(|(key, idx)| async move {
        let mut out = Vec::with_capacity(idx.len());
        for i in idx {
            out.push((i, run_one(state, ns, cluster, limits, &ops[i], &key).await));
        }
        out
    });
    for (i, result) in futures::future::join_all(runs).await.into_iter().flatten() {
        results[i] = Some(result);
    }
    let results = results.into_iter().map(Option::unwrap_or_default).collect();
    Ok(Json(BatchResults { results }))
}

/// Runs one operation on `key` (already checked) and reports its outcome.
async fn run_one(
    state: &AppState,
    ns: &str,
    cluster: &Cluster,
    limits: &Limits,
    op: &Operation,
    key: &[u8],
) -> OpResult {
    let outcome: Result<OpResult, ApiError> = async {
        let key = keyspace::data_key(ns, key);
        match op.op {
            Op::Get => {
                let raw: Option<Bytes> = state
                    .backends
                    .query(cluster, redis::cmd("GET").arg(&key))
                    .await?;
                match raw.filter(|r| !value::is_lease(r)) {
                    None => Err(ApiError::KeyNotFound),
                    Some(raw) => {
                        let stored = value::decode(raw);
                        let (text, b64) = match std::str::from_utf8(&stored.value) {
                            Ok(t) => (Some(t.to_owned()), None),
                            Err(_) => (None, Some(STANDARD.encode(&stored.value))),
                        };
                        Ok(OpResult {
                            status: 200,
                            value: text,
                            value_base64: b64,
                            etag: Some(stored.etag_header()),
                            content_type: Some(stored.content_type),
                            ..Default::default()
                        })
                    }
                }
            }
            Op::Put => {
                let body = match (&op.value, &op.value_base64) {
                    (Some(v), None) => v.as_bytes().to_vec(),
                    (None, Some(b)) => STANDARD
                        .decode(b)
                        .map_err(|_| ApiError::BadRequest("value_base64 is not base64".into()))?,
                    _ => {
                        return Err(ApiError::BadRequest(
                            "give exactly one of value and value_base64".into(),
                        ));
                    }
                };
                if body.len() as u64 > limits.max_value_bytes {
                    return Err(ApiError::ValueTooLarge {
                        max: limits.max_value_bytes,
                    });
                }
                let ct = op
                    .content_type
                    .as_deref()
                    .unwrap_or("application/octet-stream");
                if ct.len() > value::MAX_CONTENT_TYPE {
                    return Err(ApiError::BadRequest(
                        "content_type must be at most 255 bytes".into(),
                    ));
                }
                let ttl = effective_ttl(op.ttl, limits)?;
                let (raw, tag) = value::encode(ct, &body);
                let mut cmd = redis::cmd("SET");
                cmd.arg(&key).arg(raw);
                if let Some(t) = ttl {
                    cmd.arg("EX").arg(t);
                }
                let () = state.backends.query(cluster, &cmd).await?;
                Ok(OpResult {
                    status: 204,
                    etag: Some(value::etag_header(&tag)),
                    ..Default::default()
                })
            }
            Op::Delete => {
                let n: u64 = state
                    .backends
                    .query(cluster, redis::cmd("UNLINK").arg(&key))
                    .await?;
                if n == 0 {
                    Err(ApiError::KeyNotFound)
                } else {
                    Ok(OpResult {
                        status: 204,
                        ..Default::default()
                    })
                }
            }
        }
    }
    .await;
    outcome.unwrap_or_else(|e| OpResult::error(&e))
}

/// Property tests of how a batch operation names its key.
#[cfg(test)]
mod properties {
    use super::*;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1_000))]

        /// Exactly one of `key` and `key_base64` names a key of 1 to `max` bytes; the
        /// bytes are the text's or the decoded base64url's; anything else is a 400.
        #[test]
        fn operation_keys_are_one_bounded_name(
            key in proptest::option::of(prop_oneof![any::<String>(), "[a-z:{}*?\\[\\]/.]{0,8}"]),
            key_base64 in proptest::option::of(prop_oneof![
                any::<String>(),
                proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| URL_SAFE_NO_PAD.encode(b)),
                proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| STANDARD.encode(b)),
            ]),
            max in prop_oneof![Just(0u32), 1..64u32, Just(512)],
        ) {
            let op = Operation {
                op: Op::Get,
                key: key.clone(),
                key_base64: key_base64.clone(),
                value: None,
                value_base64: None,
                content_type: None,
                ttl: None,
            };
            let named: Option<Vec<u8>> = match (&key, &key_base64) {
                (Some(k), None) => Some(k.as_bytes().to_vec()),
                (None, Some(b)) => URL_SAFE_NO_PAD.decode(b).ok(),
                _ => None,
            };
            match key_of(&op, max) {
                Ok(k) => {
                    prop_assert!(!k.is_empty() && k.len() <= max as usize);
                    prop_assert_eq!(Some(k), named);
                }
                Err(e) => {
                    prop_assert!(named.is_none_or(|k| k.is_empty() || k.len() > max as usize));
                    prop_assert_eq!(e.into_response().status(), StatusCode::BAD_REQUEST);
                }
            }
        }
    }
}
