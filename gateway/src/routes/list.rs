//! `GET /v1/namespaces/{ns}/keys?prefix=&cursor=&limit=`: listing by prefix.
//!
//! Listing runs `SCAN` with a `MATCH` pattern built by the server from the namespace
//! prefix and the literal (glob-escaped) client prefix, and re-checks every returned key
//! against the namespace before it is returned. On Redis Cluster it walks each master in
//! turn. The cursor is opaque to clients: it names the node, the node's SCAN cursor, and
//! how many matches of that SCAN batch were already returned, so a page never exceeds
//! `limit`. Like SCAN, a key present for the whole walk is returned; keys written or
//! deleted during it may or may not be.

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use larder_registry::auth::Permission;
use larder_registry::keyspace;
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, Json, Query};
use crate::state::AppState;

/// Default and largest page size.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1_000;
/// SCAN calls one page may make before it returns what it has (bounded work per request).
const MAX_SCANS: usize = 64;

/// Query of a listing.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Literal key prefix (glob characters have no special meaning).
    pub prefix: Option<String>,
    /// The `cursor` of the previous page.
    #[param(pattern = "^[A-Za-z0-9_-]+$")]
    pub cursor: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// One listed key: `key` when it is UTF-8 text, `key_base64` (URL-safe, no padding)
/// otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ListedKey {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_base64: Option<String>,
}

impl ListedKey {
    pub fn new(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(s) => Self {
                key: Some(s.to_owned()),
                key_base64: None,
            },
            Err(_) => Self {
                key: None,
                key_base64: Some(URL_SAFE_NO_PAD.encode(bytes)),
            },
        }
    }
}

/// A page of keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyPage {
    pub keys: Vec<ListedKey>,
    /// Pass it back for the next page; `null` when the listing is complete.
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct Cursor {
    /// Index of the node in the sorted list of masters.
    n: usize,
    /// The node's SCAN cursor.
    c: u64,
    /// Matches of the batch at `c` already returned.
    s: usize,
}

impl Cursor {
    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(text: &str) -> Result<Self, ApiError> {
        let bad = || ApiError::BadRequest("invalid cursor".into());
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
        serde_json::from_slice(&bytes).map_err(|_| bad())
    }
}

/// Lists keys of a namespace by prefix.
#[utoipa::path(
    get,
    path = "/v1/namespaces/{ns}/keys",
    tag = "keys",
    params(("ns" = String, Path, description = "Namespace"), ListParams),
    responses(
        (status = 200, body = KeyPage),
        (status = 400, description = "Invalid cursor or limit", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    uri: Uri,
    Query(params): Query<ListParams>,
    headers: HeaderMap,
) -> Result<Json<KeyPage>, ApiError> {
    let ns = uri
        .path()
        .strip_prefix("/v1/namespaces/")
        .and_then(|r| r.strip_suffix("/keys"))
        .ok_or_else(|| ApiError::BadRequest("unexpected path".into()))?;
    let ns = percent_encoding::percent_decode_str(ns)
        .decode_utf8_lossy()
        .into_owned();
    let access = state.authorize(&headers, &ns, Permission::Read)?;
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1 to {MAX_LIMIT}"
        )));
    }
    let prefix = params.prefix.unwrap_or_default();
    if prefix.len() > access.namespace.value.limits.max_key_bytes as usize {
        return Err(ApiError::KeyTooLong {
            len: prefix.len(),
            max: access.namespace.value.limits.max_key_bytes,
        });
    }
    let mut cursor = match &params.cursor {
        Some(c) => Cursor::decode(c)?,
        None => Cursor::default(),
    };
    let cluster = &access.cluster.value;
    let nodes = state.backends.nodes(cluster).await?;
    let pattern = keyspace::scan_pattern(&ns, prefix.as_bytes());
    let count = limit.clamp(10, 1_000);
    let mut keys = Vec::with_capacity(limit);
    for _ in 0..MAX_SCANS {
        let Some(node) = nodes.get(cursor.n) else {
            return Ok(Json(KeyPage { keys, cursor: None }));
        };
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor.c)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(count);
        let (next, batch): (u64, Vec<Vec<u8>>) = state.backends.on_node(cluster, node, cmd).await?;
        // Re-check: only keys of this namespace with the literal prefix, ever.
        let matched: Vec<&[u8]> = batch
            .iter()
            .filter_map(|k| keyspace::tenant_key(&ns, k))
            .filter(|k| k.starts_with(prefix.as_bytes()))
            .collect();
        let available = matched.get(cursor.s..).unwrap_or_default();
        let take = available.len().min(limit - keys.len());
        keys.extend(available[..take].iter().map(|k| ListedKey::new(k)));
        if take < available.len() {
            cursor.s += take;
            return Ok(Json(KeyPage {
                keys,
                cursor: Some(cursor.encode()),
            }));
        }
        cursor = if next == 0 {
            Cursor {
                n: cursor.n + 1,
                c: 0,
                s: 0,
            }
        } else {
            Cursor {
                n: cursor.n,
                c: next,
                s: 0,
            }
        };
        if cursor.n >= nodes.len() {
            return Ok(Json(KeyPage { keys, cursor: None }));
        }
        if keys.len() == limit {
            break;
        }
    }
    Ok(Json(KeyPage {
        keys,
        cursor: Some(cursor.encode()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let c = Cursor {
            n: 2,
            c: 12345,
            s: 3,
        };
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        assert!(Cursor::decode("!!").is_err());
        assert!(Cursor::decode(&URL_SAFE_NO_PAD.encode(b"{\"n\":-1}")).is_err());
    }

    #[test]
    fn listed_keys_are_text_or_base64() {
        assert_eq!(ListedKey::new(b"a/b").key.as_deref(), Some("a/b"));
        assert_eq!(ListedKey::new(b"\xff").key_base64.as_deref(), Some("_w"));
    }
}

/// Property tests of the listing cursor: it round-trips, is URL-safe, and anything else
/// a client sends as a cursor is a 400, never a panic.
#[cfg(test)]
mod properties {
    use super::*;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use proptest::prelude::*;

    /// JSON a client could forge into a cursor: the right fields with wrong types,
    /// negative or huge numbers, extra fields.
    fn forged() -> impl Strategy<Value = String> {
        let number = prop_oneof![
            Just(serde_json::json!(-1)),
            Just(serde_json::json!(0)),
            Just(serde_json::json!(u64::MAX)),
            Just(serde_json::json!(1e300)),
            Just(serde_json::json!(0.5)),
            Just(serde_json::json!("7")),
            Just(serde_json::Value::Null),
            any::<u64>().prop_map(serde_json::Value::from),
        ];
        proptest::collection::btree_map(
            prop::sample::select(vec!["n", "c", "s", "x"]),
            number,
            0..5,
        )
        .prop_map(|m| {
            let object: serde_json::Map<String, serde_json::Value> =
                m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            URL_SAFE_NO_PAD.encode(serde_json::Value::Object(object).to_string())
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1_000))]

        #[test]
        fn cursors_round_trip(n in any::<usize>(), c in any::<u64>(), s in any::<usize>()) {
            let cursor = Cursor { n, c, s };
            let text = cursor.encode();
            prop_assert!(
                text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "not URL-safe: {}", text
            );
            prop_assert_eq!(Cursor::decode(&text).unwrap(), cursor);
        }

        /// Arbitrary text, base64 of anything, and forged JSON: a well-formed cursor
        /// re-encodes to one that decodes the same, anything else is a 400.
        #[test]
        fn other_cursors_are_bad_requests(text in prop_oneof![
            any::<String>(),
            "[A-Za-z0-9_-]{0,64}",
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| URL_SAFE_NO_PAD.encode(b)),
            forged(),
        ]) {
            match Cursor::decode(&text) {
                Ok(c) => prop_assert_eq!(Cursor::decode(&c.encode()).unwrap(), c),
                Err(e) => prop_assert_eq!(e.into_response().status(), StatusCode::BAD_REQUEST),
            }
        }
    }
}
