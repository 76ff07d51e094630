//! `/v1/namespaces/{ns}/keys/{key}` and `/ttl/{key}`: values with TTL, conditional
//! requests and stampede leases; `/keys` lists by prefix.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use larder_registry::auth::Permission;
use larder_registry::keyspace;
use std::time::Duration;

use larder_registry::model::{Limits, NearCachePolicy};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, Json, Query};
use crate::routes::ns_and_key;
use crate::state::{Access, AppState};
use crate::{scripts, value};

/// Header carrying a stampede lease token (response of a leased miss, request of a fill).
pub const LEASE_TOKEN: &str = "lease-token";

/// Longest lease a caller may ask for, milliseconds.
pub const MAX_LEASE_MS: u64 = 60_000;

/// Longest TTL any write may ask for, whatever the namespace's maximum: 100 years.
/// Redis refuses an expiry it cannot hold in milliseconds since the epoch (from about
/// 9.2e12 seconds on), and a value past `i64` is not even a number to it; without this
/// bound such a request was passed through and came back as a 502.
pub const MAX_TTL_S: u64 = 100 * 365 * 24 * 3600;

/// Query parameters of `GET`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GetParams {
    /// On a miss, ask for a stampede lease of this many milliseconds (1 to 60000).
    #[param(minimum = 1, maximum = 60000)]
    pub lease: Option<u64>,
}

/// Query parameters of `PUT`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PutParams {
    /// Time to live in seconds; the namespace default applies when absent.
    #[param(minimum = 1, maximum = 3153600000_u64)]
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
        Some(t) if t > MAX_TTL_S => Err(ApiError::BadRequest(format!(
            "ttl {t} exceeds the longest TTL of {MAX_TTL_S} seconds"
        ))),
        Some(t) if limits.max_ttl_s.is_some_and(|m| t > m) => Err(ApiError::BadRequest(format!(
            "ttl {t} exceeds the namespace maximum of {} seconds",
            limits.max_ttl_s.unwrap_or_default()
        ))),
        Some(t) => Ok(Some(t)),
        // The namespace's own figures are clamped too: the control plane stores what it
        // is given, and 0 or a huge default must not turn every write into a 502.
        None => Ok(limits
            .default_ttl_s
            .or(limits.max_ttl_s)
            .map(|t| t.clamp(1, MAX_TTL_S))),
    }
}

/// Authorises a request on `/<resource>/{key}` and checks the key against the limits.
pub(crate) fn access(
    state: &AppState,
    headers: &HeaderMap,
    uri: &Uri,
    resource: &str,
    perm: Permission,
) -> Result<(Access, Vec<u8>), ApiError> {
    let (ns, key) = ns_and_key(uri, resource)?;
    let access = state.authorize(headers, &ns, perm)?;
    check_key(&key, &access.namespace.value.limits)?;
    Ok((access, key))
}

/// A quoted ETag from `If-Match`, as the 8 stored bytes.
fn parse_etag(value: &str) -> Result<[u8; 8], ApiError> {
    let bad =
        || ApiError::PreconditionFailed(format!("{value:?} is not an ETag this service issued"));
    let inner = value
        .trim()
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .ok_or_else(bad)?;
    let bytes = hex::decode(inner).map_err(|_| bad())?;
    bytes.try_into().map_err(|_| bad())
}

fn header_str(
    headers: &HeaderMap,
    name: impl header::AsHeaderName,
) -> Result<Option<&str>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| ApiError::BadRequest("header is not visible ASCII".into())),
    }
}

fn value_response(
    state: &AppState,
    ns: &str,
    headers: &HeaderMap,
    raw: Bytes,
) -> Result<Response, ApiError> {
    state.metrics.hits.with_label_values(&[ns]).inc();
    let stored = value::decode(raw);
    let etag = stored.etag_header();
    if let Some(inm) = header_str(headers, header::IF_NONE_MATCH)?
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

/// Reads a value; `HEAD` is served by the same handler without the body.
#[utoipa::path(
    get,
    path = "/v1/namespaces/{ns}/keys/{key}",
    tag = "keys",
    params(("ns" = String, Path, description = "Namespace"), ("key" = String, Path, description = "Key, percent-encoded bytes", min_length = 1), GetParams,
        ("If-None-Match" = Option<String>, Header, description = "ETag(s) the client holds: 304 when it still matches")),
    responses(
        (status = 200, description = "The value, with the Content-Type it was stored with and its ETag", content_type = "*/*", body = crate::openapi::StoredValue),
        (status = 304, description = "Not modified"),
        (status = 404, description = "No such key (with a `Lease-Token` header when a lease was granted), or `lease-pending`", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    uri: Uri,
    Query(params): Query<GetParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (access, key) = access(&state, &headers, &uri, "keys", Permission::Read)?;
    let ns = access.namespace.value.name.as_str();
    let cluster = &access.cluster.value;
    let redis_key = keyspace::data_key(ns, &key);
    let miss = |state: &AppState| state.metrics.misses.with_label_values(&[ns]).inc();
    state.hot.record(ns, &key);
    let Some(lease_ms) = params.lease else {
        // The near cache first (a hit needs no hot-key check: only keys found hot were
        // put there under `auto`), then whether this read may fill it.
        let policy = access.namespace.value.near_cache;
        if policy != NearCachePolicy::Off
            && let Some(raw) = state.near.get(ns, &key)
        {
            state.metrics.near_hits(ns);
            return value_response(&state, ns, &headers, raw);
        }
        let near = match policy {
            NearCachePolicy::Off => None,
            NearCachePolicy::On { max_staleness_ms } => Some(max_staleness_ms),
            NearCachePolicy::Auto {
                max_staleness_ms,
                min_rate_per_s,
            } => {
                (state.hot.rate(ns, &key) >= f64::from(min_rate_per_s)).then_some(max_staleness_ms)
            }
        };
        let ticket = state.near.ticket(ns);
        let raw: Option<Bytes> = state
            .backends
            .query(cluster, redis::cmd("GET").arg(&redis_key))
            .await?;
        return match raw {
            Some(raw) if !value::is_lease(&raw) => {
                if let Some(ms) = near {
                    state
                        .near
                        .fill(ticket, ns, &key, raw.clone(), Duration::from_millis(ms));
                }
                value_response(&state, ns, &headers, raw)
            }
            _ => {
                miss(&state);
                Err(ApiError::KeyNotFound)
            }
        };
    };
    if !(1..=MAX_LEASE_MS).contains(&lease_ms) {
        return Err(ApiError::BadRequest(format!(
            "lease must be 1 to {MAX_LEASE_MS} milliseconds"
        )));
    }
    // Asking for a lease is a read; filling it (PUT with Lease-Token) needs write.
    let token = uuid::Uuid::new_v4().simple().to_string();
    let placeholder = value::lease_placeholder(&token);
    let mut invocation = scripts::GET_OR_LEASE.key(&redis_key);
    invocation.arg(&placeholder).arg(lease_ms);
    let (outcome, raw): (u8, Option<Bytes>) = state
        .backends
        .script(cluster, &invocation)
        .await
        .map(|v: Vec<redis::Value>| {
            let outcome = match v.first() {
                Some(redis::Value::Int(i)) => *i as u8,
                _ => 0,
            };
            let raw = match v.get(1) {
                Some(redis::Value::BulkString(b)) => Some(Bytes::from(b.clone())),
                _ => None,
            };
            (outcome, raw)
        })?;
    match (outcome, raw) {
        (1, Some(raw)) => value_response(&state, ns, &headers, raw),
        (2, _) => {
            miss(&state);
            let mut response = ApiError::KeyNotFound.into_response();
            let h = response.headers_mut();
            h.insert(
                LEASE_TOKEN,
                HeaderValue::from_str(&token).map_err(|e| ApiError::Internal(e.to_string()))?,
            );
            Ok(response)
        }
        _ => {
            miss(&state);
            Err(ApiError::LeasePending)
        }
    }
}

/// Stores the body as the value, keeping its `Content-Type`.
///
/// `If-Match: <etag>` makes it a compare-and-set, `If-None-Match: *` create-only (412
/// when the condition fails); `Lease-Token` fills a leased miss, refused with 409 when a
/// write or delete voided the lease.
#[utoipa::path(
    put,
    path = "/v1/namespaces/{ns}/keys/{key}",
    tag = "keys",
    params(("ns" = String, Path, description = "Namespace"), ("key" = String, Path, description = "Key, percent-encoded bytes", min_length = 1), PutParams,
        ("If-Match" = Option<String>, Header, description = "Write only if the current ETag is this one", pattern = r#"^"[0-9a-fA-F]{16}"$"#),
        ("If-None-Match" = Option<String>, Header, description = "`*`: write only if the key does not exist", pattern = r"^\*$"),
        ("Lease-Token" = Option<String>, Header, description = "Fill a leased miss", pattern = "^[0-9a-f]{32}$")),
    request_body(content = crate::openapi::Bytes, content_type = "application/octet-stream", description = "The value, stored as is with the request's Content-Type"),
    responses(
        (status = 204, description = "Stored; the new ETag is in the ETag header"),
        (status = 409, description = "The lease was voided", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 412, description = "A condition failed", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Over the namespace's value limit", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn put(
    State(state): State<AppState>,
    uri: Uri,
    Query(query): Query<PutParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (access, key) = access(&state, &headers, &uri, "keys", Permission::Write)?;
    let limits = &access.namespace.value.limits;
    let max = limits.max_value_bytes;
    // Refuse a declared oversize body before reading any of it.
    if let Some(len) =
        header_str(&headers, header::CONTENT_LENGTH)?.and_then(|v| v.parse::<u64>().ok())
        && len > max
    {
        return Err(ApiError::ValueTooLarge { max });
    }
    let ttl = effective_ttl(query.ttl, limits)?;
    let content_type = match header_str(&headers, header::CONTENT_TYPE)? {
        None => "application/octet-stream",
        Some(v) if v.len() <= value::MAX_CONTENT_TYPE => v,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "Content-Type must be at most 255 bytes".into(),
            ));
        }
    };
    let if_match = header_str(&headers, header::IF_MATCH)?
        .map(parse_etag)
        .transpose()?;
    let create_only = match header_str(&headers, header::IF_NONE_MATCH)? {
        None => false,
        Some("*") => true,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "If-None-Match on PUT must be *".into(),
            ));
        }
    };
    let lease = header_str(&headers, LEASE_TOKEN)?;
    if usize::from(if_match.is_some()) + usize::from(create_only) + usize::from(lease.is_some()) > 1
    {
        return Err(ApiError::BadRequest(
            "use at most one of If-Match, If-None-Match and Lease-Token".into(),
        ));
    }
    let body = axum::body::to_bytes(body, max as usize)
        .await
        .map_err(|e| ApiError::from_body(&e, || ApiError::ValueTooLarge { max }))?;
    let (raw, tag) = value::encode(content_type, &body);
    let redis_key = keyspace::data_key(&access.namespace.value.name, &key);
    let cluster = &access.cluster.value;
    let ttl_arg = ttl.map(|t| t.to_string()).unwrap_or_default();
    let written = if let Some(expected) = if_match {
        let mut inv = scripts::PUT_IF_MATCH.key(&redis_key);
        inv.arg(&expected[..]).arg(&raw).arg(&ttl_arg);
        state.backends.script::<i64>(cluster, &inv).await? == 1
    } else if create_only {
        let mut inv = scripts::PUT_IF_ABSENT.key(&redis_key);
        inv.arg(&raw).arg(&ttl_arg);
        state.backends.script::<i64>(cluster, &inv).await? == 1
    } else if let Some(token) = lease {
        let mut inv = scripts::FILL_LEASE.key(&redis_key);
        inv.arg(value::lease_placeholder(token))
            .arg(&raw)
            .arg(&ttl_arg);
        if state.backends.script::<i64>(cluster, &inv).await? != 1 {
            return Err(ApiError::Conflict {
                slug: "lease-void",
                detail:
                    "the lease expired or a write or delete voided it; the value was not stored"
                        .into(),
                current: None,
            });
        }
        true
    } else {
        let mut cmd = redis::cmd("SET");
        cmd.arg(&redis_key).arg(&raw);
        if let Some(ttl) = ttl {
            cmd.arg("EX").arg(ttl);
        }
        let () = state.backends.query(cluster, &cmd).await?;
        true
    };
    state.near.invalidate(&access.namespace.value.name, &key);
    if !written {
        let why = if create_only {
            "the key exists"
        } else {
            "the key's current ETag differs (or the key is gone)"
        };
        return Err(ApiError::PreconditionFailed(why.into()));
    }
    Ok((
        StatusCode::NO_CONTENT,
        [(header::ETAG, value::etag_header(&tag))],
    )
        .into_response())
}

/// Deletes a key (and voids any lease on it): 204 when it existed, 404 otherwise.
/// `If-Match: <etag>` deletes only that version (412 otherwise).
#[utoipa::path(
    delete,
    path = "/v1/namespaces/{ns}/keys/{key}",
    tag = "keys",
    params(("ns" = String, Path, description = "Namespace"), ("key" = String, Path, description = "Key, percent-encoded bytes", min_length = 1),
        ("If-Match" = Option<String>, Header, description = "Delete only if the current ETag is this one", pattern = r#"^"[0-9a-fA-F]{16}"$"#)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such key", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 412, description = "The ETag differs", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let (access, key) = access(&state, &headers, &uri, "keys", Permission::Write)?;
    let redis_key = keyspace::data_key(&access.namespace.value.name, &key);
    let cluster = &access.cluster.value;
    if let Some(expected) = header_str(&headers, header::IF_MATCH)?
        .map(parse_etag)
        .transpose()?
    {
        let mut inv = scripts::DELETE_IF_MATCH.key(&redis_key);
        inv.arg(&expected[..]);
        let deleted = state.backends.script::<i64>(cluster, &inv).await?;
        state.near.invalidate(&access.namespace.value.name, &key);
        return match deleted {
            1 => Ok(StatusCode::NO_CONTENT),
            _ => Err(ApiError::PreconditionFailed(
                "the key's current ETag differs (or the key is gone)".into(),
            )),
        };
    }
    let removed: u64 = state
        .backends
        .query(cluster, redis::cmd("UNLINK").arg(&redis_key))
        .await?;
    if removed == 0 {
        Err(ApiError::KeyNotFound)
    } else {
        Ok(StatusCode::NO_CONTENT)
    }
}

/// The remaining lifetime of a key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Ttl {
    /// Seconds left (rounded up); `null` when the key does not expire.
    #[schema(minimum = 1, maximum = 3153600000_u64)]
    pub ttl_s: Option<u64>,
}

/// Reads a key's remaining TTL.
#[utoipa::path(
    get,
    path = "/v1/namespaces/{ns}/ttl/{key}",
    tag = "keys",
    params(("ns" = String, Path, description = "Namespace"), ("key" = String, Path, description = "Key, percent-encoded bytes", min_length = 1)),
    responses(
        (status = 200, body = Ttl),
        (status = 404, description = "No such key", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_ttl(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<Ttl>, ApiError> {
    let (access, key) = access(&state, &headers, &uri, "ttl", Permission::Read)?;
    let redis_key = keyspace::data_key(&access.namespace.value.name, &key);
    let ms: i64 = state
        .backends
        .query(&access.cluster.value, redis::cmd("PTTL").arg(&redis_key))
        .await?;
    match ms {
        -2 => Err(ApiError::KeyNotFound),
        -1 => Ok(Json(Ttl { ttl_s: None })),
        ms => Ok(Json(Ttl {
            ttl_s: Some((ms as u64).div_ceil(1000)),
        })),
    }
}

/// Changes a key's TTL without rewriting its value (`null` removes it, where the
/// namespace has no maximum TTL).
#[utoipa::path(
    put,
    path = "/v1/namespaces/{ns}/ttl/{key}",
    tag = "keys",
    params(("ns" = String, Path, description = "Namespace"), ("key" = String, Path, description = "Key, percent-encoded bytes", min_length = 1)),
    request_body = Ttl,
    responses(
        (status = 204, description = "Changed"),
        (status = 400, description = "Out of the namespace's TTL bounds", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such key", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn put_ttl(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    Json(ttl): Json<Ttl>,
) -> Result<StatusCode, ApiError> {
    let (access, key) = access(&state, &headers, &uri, "ttl", Permission::Write)?;
    let limits = &access.namespace.value.limits;
    let redis_key = keyspace::data_key(&access.namespace.value.name, &key);
    let cluster = &access.cluster.value;
    let changed: i64 = match ttl.ttl_s {
        Some(t) => {
            let t = effective_ttl(Some(t), limits)?.unwrap_or(t);
            state
                .backends
                .query(cluster, redis::cmd("EXPIRE").arg(&redis_key).arg(t))
                .await?
        }
        None if limits.max_ttl_s.is_some() => {
            return Err(ApiError::BadRequest(
                "the namespace has a maximum TTL; a key cannot be made permanent".into(),
            ));
        }
        None => {
            let exists: i64 = state
                .backends
                .query(cluster, redis::cmd("EXISTS").arg(&redis_key))
                .await?;
            if exists == 1 {
                let _: i64 = state
                    .backends
                    .query(cluster, redis::cmd("PERSIST").arg(&redis_key))
                    .await?;
            }
            exists
        }
    };
    if changed == 1 {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::KeyNotFound)
    }
}

/// Property tests of the request parsers of this file: conditional headers and TTLs.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn limits() -> impl Strategy<Value = Limits> {
        (
            proptest::option::of(prop_oneof![0..1_000u64, Just(u64::MAX)]),
            proptest::option::of(prop_oneof![0..1_000u64, Just(MAX_TTL_S), Just(u64::MAX)]),
        )
            .prop_map(|(default_ttl_s, max_ttl_s)| Limits {
                default_ttl_s: default_ttl_s.filter(|d| max_ttl_s.is_none_or(|m| *d <= m)),
                max_ttl_s,
                ..Limits::default()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1_000))]

        /// The ETags this service issues parse back to their bytes, with or without
        /// surrounding whitespace.
        #[test]
        fn issued_etags_parse_back(tag in any::<[u8; 8]>(), pad in "[ \t]{0,2}") {
            let header = format!("{pad}{}{pad}", value::etag_header(&tag));
            prop_assert_eq!(parse_etag(&header).unwrap(), tag);
        }

        /// Any other `If-Match` text is refused with 412, never a panic: only a quoted
        /// 16-digit hex string is an ETag of ours.
        #[test]
        fn other_if_match_values_are_refused(text in prop_oneof![
            any::<String>(),
            "\"[0-9a-fA-F]{0,20}\"",
            "W/\"[0-9a-f]{16}\"",
            "\"[0-9a-f]{16}\", \"[0-9a-f]{16}\"",
        ]) {
            let inner = text.trim().strip_prefix('"').and_then(|t| t.strip_suffix('"'));
            let ours = inner.is_some_and(|i| i.len() == 16 && i.bytes().all(|b| b.is_ascii_hexdigit()));
            match parse_etag(&text) {
                Ok(_) => prop_assert!(ours, "{:?} accepted", text),
                Err(e) => {
                    prop_assert!(!ours, "{:?} refused", text);
                    prop_assert_eq!(e.into_response().status(), StatusCode::PRECONDITION_FAILED);
                }
            }
        }

        /// A TTL is accepted only from 1 s up to the namespace's maximum and
        /// [`MAX_TTL_S`], so every TTL that reaches Redis is one Redis can hold; a
        /// refused TTL is a 400.
        #[test]
        fn ttls_that_reach_redis_are_in_range(
            asked in proptest::option::of(prop_oneof![
                Just(0u64), 1..10_000u64, Just(MAX_TTL_S), Just(MAX_TTL_S + 1),
                Just(9_223_372_036_854u64), Just(i64::MAX as u64), Just(u64::MAX), any::<u64>(),
            ]),
            limits in limits(),
        ) {
            match effective_ttl(asked, &limits) {
                Ok(Some(t)) => {
                    prop_assert!((1..=MAX_TTL_S).contains(&t), "{}", t);
                    prop_assert!(limits.max_ttl_s.is_none_or(|m| t <= m.max(1)));
                    if let Some(a) = asked {
                        prop_assert_eq!(t, a);
                    }
                }
                Ok(None) => prop_assert!(asked.is_none() && limits.max_ttl_s.is_none()),
                Err(e) => {
                    prop_assert!(asked.is_some());
                    prop_assert_eq!(e.into_response().status(), StatusCode::BAD_REQUEST);
                }
            }
        }
    }

    #[test]
    fn ttls_past_what_redis_holds_are_bad_requests() {
        // Found by the router property test: these went to Redis and came back as 502.
        for t in [
            9_223_372_036_854u64,
            i64::MAX as u64,
            u64::MAX,
            MAX_TTL_S + 1,
        ] {
            let e = effective_ttl(Some(t), &Limits::default()).unwrap_err();
            assert_eq!(e.into_response().status(), StatusCode::BAD_REQUEST, "{t}");
        }
        assert_eq!(
            effective_ttl(Some(MAX_TTL_S), &Limits::default()).unwrap(),
            Some(MAX_TTL_S)
        );
    }
}
