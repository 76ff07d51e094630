//! `/v1/namespaces/{ns}/counters/{key}`: atomic counters with floor and ceiling — the
//! flash-sale stock deduction that never oversells — and `Idempotency-Key` retries.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use larder_registry::auth::Permission;
use larder_registry::keyspace;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{ApiError, Json};
use crate::routes::keys::{access, effective_ttl};
use crate::scripts;
use crate::state::AppState;

/// Largest magnitude of a counter or delta: values stay exact in Redis's Lua numbers.
pub const MAX_MAGNITUDE: i64 = 1 << 53;
/// How long an `Idempotency-Key` is remembered, seconds.
pub const IDEMPOTENCY_TTL_S: u64 = 24 * 3600;
/// Longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// One step of a counter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CounterStep {
    /// Added to the counter (negative to decrement).
    #[schema(minimum = -9007199254740992_i64, maximum = 9007199254740992_i64)]
    pub delta: i64,
    /// The step is refused (409) when the result would fall below this.
    #[serde(default)]
    #[schema(minimum = -9007199254740992_i64, maximum = 9007199254740992_i64)]
    pub floor: Option<i64>,
    /// The step is refused (409) when the result would rise above this.
    #[serde(default)]
    #[schema(minimum = -9007199254740992_i64, maximum = 9007199254740992_i64)]
    pub ceiling: Option<i64>,
    /// Sets the counter's TTL in seconds; without it an existing TTL is kept.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 3153600000_u64)]
    pub ttl: Option<u64>,
}

/// A counter's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CounterValue {
    pub value: i64,
    /// Whether this answer replays an earlier request with the same `Idempotency-Key`.
    #[serde(default)]
    pub replayed: bool,
}

/// The `Idempotency-Key` header, if present and well-formed.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => {
            let v = v.to_str().map_err(|_| {
                ApiError::BadRequest("Idempotency-Key must be visible ASCII".into())
            })?;
            if v.is_empty() || v.len() > MAX_IDEMPOTENCY_KEY {
                return Err(ApiError::BadRequest(format!(
                    "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters"
                )));
            }
            Ok(Some(v))
        }
    }
}

fn check_magnitude(name: &str, v: Option<i64>) -> Result<(), ApiError> {
    match v {
        Some(v) if v.unsigned_abs() > MAX_MAGNITUDE as u64 => {
            Err(ApiError::BadRequest(format!("{name} must be within ±2^53")))
        }
        _ => Ok(()),
    }
}

/// Applies a step atomically. A step that would pass the floor or ceiling is not
/// applied: 409 with the current value in `current`.
#[utoipa::path(
    post,
    path = "/v1/namespaces/{ns}/counters/{key}",
    tag = "counters",
    params(("ns" = String, Path, description = "Namespace"), ("key" = String, Path, description = "Counter name, percent-encoded bytes", min_length = 1),
        ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key returns the first answer and is applied once", pattern = "^[!-~]{1,255}$")),
    request_body = CounterStep,
    responses(
        (status = 200, body = CounterValue),
        (status = 409, description = "Would pass the floor or ceiling; `current` holds the value", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Idempotency-Key reused for a different request", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn step(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    Json(step): Json<CounterStep>,
) -> Result<Json<CounterValue>, ApiError> {
    let (access, key) = access(&state, &headers, &uri, "counters", Permission::Write)?;
    check_magnitude("delta", Some(step.delta))?;
    check_magnitude("floor", step.floor)?;
    check_magnitude("ceiling", step.ceiling)?;
    if let (Some(f), Some(c)) = (step.floor, step.ceiling)
        && f > c
    {
        return Err(ApiError::BadRequest("floor must not exceed ceiling".into()));
    }
    let ttl = step
        .ttl
        .map(|t| effective_ttl(Some(t), &access.namespace.value.limits))
        .transpose()?
        .flatten();
    let ns = &access.namespace.value.name;
    let counter = keyspace::counter_key(ns, &key);
    let idem = idempotency_key(&headers)?;
    let (record, fingerprint) = match idem {
        Some(k) => {
            let body = serde_json::to_vec(&step).unwrap_or_default();
            let fp = hex::encode(&Sha256::digest(&body)[..12]);
            (
                keyspace::idempotency_key(ns, "counter", &key, k.as_bytes()),
                fp,
            )
        }
        None => (counter.clone(), String::new()),
    };
    let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
    let mut inv = scripts::COUNTER_STEP.key(&counter);
    inv.key(&record)
        .arg(step.delta)
        .arg(opt(step.floor))
        .arg(opt(step.ceiling))
        .arg(ttl.map(|t| t.to_string()).unwrap_or_default())
        .arg(&fingerprint)
        .arg(IDEMPOTENCY_TTL_S);
    let (status, value, replayed): (u16, i64, i64) =
        state.backends.script(&access.cluster.value, &inv).await?;
    match status {
        200 => Ok(Json(CounterValue {
            value,
            replayed: replayed == 1,
        })),
        409 => Err(ApiError::Conflict {
            slug: "counter-bound",
            detail: format!("the step would pass the counter's bound; it stays at {value}"),
            current: Some(value.into()),
        }),
        422 => Err(ApiError::Unprocessable {
            slug: "idempotency-key-reused",
            detail: "this Idempotency-Key was used for a different request".into(),
        }),
        other => Err(ApiError::Internal(format!(
            "counter script answered {other}"
        ))),
    }
}

/// Reads a counter.
#[utoipa::path(
    get,
    path = "/v1/namespaces/{ns}/counters/{key}",
    tag = "counters",
    params(("ns" = String, Path, description = "Namespace"), ("key" = String, Path, description = "Counter name, percent-encoded bytes", min_length = 1)),
    responses(
        (status = 200, body = CounterValue),
        (status = 404, description = "No such counter", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn read(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<CounterValue>, ApiError> {
    let (access, key) = access(&state, &headers, &uri, "counters", Permission::Read)?;
    let counter = keyspace::counter_key(&access.namespace.value.name, &key);
    let value: Option<i64> = state
        .backends
        .query(&access.cluster.value, redis::cmd("GET").arg(&counter))
        .await?;
    value
        .map(|value| {
            Json(CounterValue {
                value,
                replayed: false,
            })
        })
        .ok_or(ApiError::KeyNotFound)
}

/// Deletes a counter.
#[utoipa::path(
    delete,
    path = "/v1/namespaces/{ns}/counters/{key}",
    tag = "counters",
    params(("ns" = String, Path, description = "Namespace"), ("key" = String, Path, description = "Counter name, percent-encoded bytes", min_length = 1)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such counter", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn remove(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let (access, key) = access(&state, &headers, &uri, "counters", Permission::Write)?;
    let counter = keyspace::counter_key(&access.namespace.value.name, &key);
    let removed: u64 = state
        .backends
        .query(&access.cluster.value, redis::cmd("UNLINK").arg(&counter))
        .await?;
    if removed == 0 {
        Err(ApiError::KeyNotFound)
    } else {
        Ok(StatusCode::NO_CONTENT)
    }
}

/// Property tests of the counter request parsers: the `Idempotency-Key` header and the
/// step body.
#[cfg(test)]
mod properties {
    use super::*;
    use axum::http::HeaderValue;
    use axum::response::IntoResponse;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1_000))]

        /// Any header value (visible ASCII, spaces, obs-text bytes) is taken exactly
        /// when it is 1 to 255 characters of text, else refused with 400.
        #[test]
        fn idempotency_keys_are_bounded_text(value in proptest::collection::vec(
            prop_oneof![8 => 0x20u8..0x7f, 1 => 0x80u8..=0xff, 1 => Just(b'\t')], 0..300,
        )) {
            let Ok(header) = HeaderValue::from_bytes(&value) else {
                return Ok(());
            };
            let mut headers = HeaderMap::new();
            headers.insert("idempotency-key", header);
            // `HeaderValue::to_str` takes visible ASCII, space and tab.
            let textual = value.iter().all(|&b| (0x20..0x7f).contains(&b) || b == b'\t');
            let expected = (textual && (1..=MAX_IDEMPOTENCY_KEY).contains(&value.len()))
                .then(|| std::str::from_utf8(&value).unwrap());
            match idempotency_key(&headers) {
                Ok(got) => prop_assert_eq!(got, expected),
                Err(e) => {
                    prop_assert!(expected.is_none());
                    prop_assert_eq!(e.into_response().status(), StatusCode::BAD_REQUEST);
                }
            }
        }

        /// Step bodies: anything that parses is re-serialised to the same step (the
        /// idempotency fingerprint is taken from that), and the magnitude and bound
        /// checks never panic on extreme numbers.
        #[test]
        fn step_bodies_parse_or_are_refused(
            delta in prop_oneof![any::<i64>(), Just(i64::MIN), Just(MAX_MAGNITUDE), Just(MAX_MAGNITUDE + 1)],
            floor in proptest::option::of(prop_oneof![any::<i64>(), Just(i64::MIN), Just(-MAX_MAGNITUDE)]),
            ceiling in proptest::option::of(any::<i64>()),
            extra in proptest::option::of("[a-z]{1,6}"),
        ) {
            let mut body = serde_json::json!({"delta": delta, "floor": floor, "ceiling": ceiling});
            if let Some(x) = &extra {
                body[x] = serde_json::json!(1);
            }
            match serde_json::from_value::<CounterStep>(body) {
                Ok(step) => {
                    let again: CounterStep = serde_json::from_slice(&serde_json::to_vec(&step).unwrap()).unwrap();
                    prop_assert_eq!(&again, &step);
                    let checked = check_magnitude("delta", Some(step.delta))
                        .and(check_magnitude("floor", step.floor))
                        .and(check_magnitude("ceiling", step.ceiling));
                    let in_range = |v: i64| v.unsigned_abs() <= MAX_MAGNITUDE as u64;
                    prop_assert_eq!(
                        checked.is_ok(),
                        in_range(step.delta) && step.floor.is_none_or(in_range) && step.ceiling.is_none_or(in_range)
                    );
                }
                Err(_) => prop_assert!(
                    extra.is_some_and(|x| !["delta", "floor", "ceiling", "ttl"].contains(&x.as_str()))
                ),
            }
        }
    }
}
