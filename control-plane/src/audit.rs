//! The audit trail: every admin mutation — who, what, when, and how it ended.
//!
//! [`record`] wraps every `/v1` route. For a mutating method it authenticates the caller
//! first (so an anonymous caller can neither act nor fill the trail), lets the handler
//! run, then appends an [`AuditEntry`] under `/audit` (persistent sequential znodes,
//! so the trail survives restarts and is shared by every instance) before answering.
//! The entry carries the request's JSON body with anything secret-looking scrubbed, the
//! status, and the problem detail of a failure or the handler's [`AuditNote`].
//!
//! Entries stay out of the registry snapshot; [`query`] reads them on demand, newest
//! first. The leader prunes them by age and count (see [`crate::leader::prune`]).

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use larder_registry::ledger::{AuditEntry, Outcome};
use larder_registry::{RegistryError, now_ms, paths};
use serde_json::Value;

use crate::api::{AuditPage, AuditQuery, AuditRecord};
use crate::auth;
use crate::error::{ApiError, ProblemNote};
use crate::state::AppState;

/// Largest request body taken (and recorded) by a mutation.
pub const MAX_BODY: usize = 1 << 20;

/// Largest request body kept in an audit entry, serialised.
const MAX_RECORDED_BODY: usize = 16 << 10;

/// What a handler wants the audit entry to say about a success (the id it issued, the
/// deployment it chose, ...). Put it in the response's extensions.
#[derive(Debug, Clone)]
pub struct AuditNote(pub String);

/// A stable action name for a route and method.
pub fn action(method: &Method, route: &str) -> String {
    let name = match (method.as_str(), route) {
        ("POST", "/v1/clusters") => "cluster.register",
        ("DELETE", "/v1/clusters/{name}") => "cluster.deregister",
        ("POST", "/v1/namespaces") => "namespace.create",
        ("PATCH", "/v1/namespaces/{name}") => "namespace.update",
        ("POST", "/v1/namespaces/{name}/disable") => "namespace.disable",
        ("POST", "/v1/namespaces/{name}/enable") => "namespace.enable",
        ("DELETE", "/v1/namespaces/{name}") => "namespace.delete",
        ("POST", "/v1/namespaces/{name}/tokens") => "token.issue",
        ("POST", "/v1/tokens/{jti}/revoke") => "token.revoke",
        ("POST", "/v1/keys/rotate") => "key.rotate",
        ("POST", "/v1/keys/{kid}/retire") => "key.retire",
        _ => return format!("{} {route}", method.as_str().to_ascii_lowercase()),
    };
    name.to_owned()
}

/// What a call acted on: `<kind>/<name>` from the path's first parameter, or from the
/// body's `name` for a create.
pub fn target(route: &str, path: &str, body: Option<&Value>) -> String {
    let kind = |segment: &str| {
        match segment {
            "clusters" => "cluster",
            "namespaces" => "namespace",
            "tokens" => "token",
            "keys" => "key",
            other => other,
        }
        .to_owned()
    };
    let route_segments: Vec<&str> = route.trim_start_matches('/').split('/').collect();
    let path_segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    for (i, (r, p)) in route_segments.iter().zip(&path_segments).enumerate() {
        if r.starts_with('{') && i > 0 {
            return format!("{}/{p}", kind(route_segments[i - 1]));
        }
    }
    let collection = route_segments.get(1).copied().unwrap_or_default();
    match body.and_then(|b| b.get("name")).and_then(Value::as_str) {
        Some(name) => format!("{}/{name}", kind(collection)),
        None => collection.to_owned(),
    }
}

/// Replaces the value of any member whose name suggests a secret.
pub fn scrub(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let k = k.to_ascii_lowercase();
                if ["password", "secret", "token", "private"]
                    .iter()
                    .any(|s| k.contains(s))
                {
                    *v = Value::String("[scrubbed]".into());
                } else {
                    scrub(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(scrub),
        _ => {}
    }
}

/// Appends an entry; a failure is logged and counted, never returned: the mutation it
/// describes has happened either way.
pub async fn append(state: &AppState, entry: &AuditEntry) {
    let prefix = format!("{}/{}", paths::AUDIT, paths::AUDIT_PREFIX);
    if let Err(e) = state.registry.create_sequential(&prefix, entry).await {
        state.metrics.audit_failures.inc();
        // With ZooKeeper unreachable the mutation itself was refused as well; that is an
        // outage already alerted on, not a lost record of a change.
        if matches!(e, larder_registry::RegistryError::Unavailable(..)) {
            tracing::warn!(error = %e, action = %entry.action, target = %entry.target, "cannot write audit entry");
        } else {
            tracing::error!(error = %e, action = %entry.action, target = %entry.target, "cannot write audit entry");
        }
    }
}

/// The audit middleware of the `/v1` routes.
pub async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    let admin = match auth::authenticate(&state, request.headers()) {
        Ok(admin) => admin,
        Err(e) => return e.into_response(),
    };
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| path.clone());
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (mut parts, body) = request.into_parts();
    let (response, body_json) = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(bytes) => {
            let json = serde_json::from_slice::<Value>(&bytes).ok().map(|mut v| {
                scrub(&mut v);
                v
            });
            parts.extensions.insert(admin.clone());
            let response = next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await;
            (response, json)
        }
        Err(_) => (
            ApiError::BadRequest(format!("the body is larger than {MAX_BODY} bytes"))
                .into_response(),
            None,
        ),
    };
    let status = response.status();
    let detail = response
        .extensions()
        .get::<ProblemNote>()
        .map(|n| n.0.clone())
        .or_else(|| {
            response
                .extensions()
                .get::<AuditNote>()
                .map(|n| n.0.clone())
        });
    let recorded_body = body_json.map(|v| {
        if serde_json::to_vec(&v).map_or(0, |b| b.len()) > MAX_RECORDED_BODY {
            Value::String("[body too large to record]".into())
        } else {
            v
        }
    });
    let entry = AuditEntry {
        at_ms: now_ms(),
        actor: admin.subject().to_owned(),
        actor_token: Some(admin.0.jti.clone()),
        instance: state.config.id.clone(),
        action: action(&method, &route),
        target: target(&route, &path, recorded_body.as_ref()),
        method: method.to_string(),
        path,
        status: status.as_u16(),
        outcome: if status.is_success() {
            Outcome::Ok
        } else {
            Outcome::Error
        },
        detail,
        request: recorded_body,
        request_id,
    };
    append(&state, &entry).await;
    response
}

fn matches(entry: &AuditEntry, query: &AuditQuery, outcome: Option<Outcome>) -> bool {
    query.actor.as_ref().is_none_or(|a| entry.actor == *a)
        && query
            .action
            .as_ref()
            .is_none_or(|a| entry.action.starts_with(a.as_str()))
        && query.target.as_ref().is_none_or(|t| entry.target == *t)
        && outcome.is_none_or(|o| entry.outcome == o)
        && query.since_ms.is_none_or(|s| entry.at_ms >= s)
        && query.until_ms.is_none_or(|u| entry.at_ms < u)
}

/// Most entries read for one page, so a filter that matches little cannot make one
/// request read the whole trail; the page then ends early with a `next` cursor.
const MAX_SCANNED: usize = 5_000;

/// Reads a page of the trail, newest first.
pub async fn query(state: &AppState, query: &AuditQuery) -> Result<AuditPage, ApiError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::BadRequest("limit must be 1 to 500".into()));
    }
    // Times are milliseconds since the epoch as a signed 64-bit integer (the document's
    // `int64`); a larger value is no time at all.
    if query
        .since_ms
        .into_iter()
        .chain(query.until_ms)
        .any(|t| i64::try_from(t).is_err())
    {
        return Err(ApiError::BadRequest(format!(
            "since_ms and until_ms must be at most {}",
            i64::MAX
        )));
    }
    let outcome = match query.outcome.as_deref() {
        None => None,
        Some("ok") => Some(Outcome::Ok),
        Some("error") => Some(Outcome::Error),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "outcome {other:?} must be ok or error"
            )));
        }
    };
    if let Some(before) = &query.before
        && !valid_id(before)
    {
        return Err(ApiError::BadRequest(format!(
            "before {before:?} is not an audit entry id"
        )));
    }
    let mut names = state.registry.children(paths::AUDIT).await?;
    names.retain(|n| valid_id(n) && query.before.as_ref().is_none_or(|b| n < b));
    names.reverse();
    let mut items = Vec::new();
    let mut scanned = 0;
    let mut next = None;
    let mut chunks = names.chunks(64);
    'pages: for chunk in chunks.by_ref() {
        let reads = futures::stream::iter(chunk.iter().cloned())
            .map(|name| async move {
                let got = state
                    .registry
                    .get::<AuditEntry>(&paths::audit_entry(&name))
                    .await;
                (name, got)
            })
            .buffered(16);
        let results: Vec<_> = reads.collect().await;
        for (name, result) in results {
            scanned += 1;
            match result {
                Ok(Some(v)) if matches(&v.value, query, outcome) => {
                    items.push(AuditRecord {
                        id: name.clone(),
                        entry: v.value,
                    });
                    if items.len() == limit {
                        next = Some(name);
                        break 'pages;
                    }
                }
                Ok(_) => {}
                Err(RegistryError::Invalid { path, reason }) => {
                    tracing::warn!(%path, %reason, "skipping an unreadable audit entry");
                }
                Err(e) => return Err(e.into()),
            }
            if scanned >= MAX_SCANNED {
                next = Some(name);
                break 'pages;
            }
        }
    }
    // No `next` when nothing older is left.
    if let Some(n) = &next
        && names.last() == Some(n)
    {
        next = None;
    }
    Ok(AuditPage { items, next })
}

fn valid_id(id: &str) -> bool {
    id.strip_prefix(paths::AUDIT_PREFIX)
        .is_some_and(|seq| !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn actions_and_targets() {
        assert_eq!(action(&Method::POST, "/v1/namespaces"), "namespace.create");
        assert_eq!(action(&Method::PUT, "/v1/other"), "put /v1/other");
        assert_eq!(
            target(
                "/v1/namespaces",
                "/v1/namespaces",
                Some(&json!({"name": "orders"}))
            ),
            "namespace/orders"
        );
        assert_eq!(
            target(
                "/v1/namespaces/{name}/tokens",
                "/v1/namespaces/orders/tokens",
                None
            ),
            "namespace/orders"
        );
        assert_eq!(
            target("/v1/tokens/{jti}/revoke", "/v1/tokens/abc/revoke", None),
            "token/abc"
        );
        assert_eq!(target("/v1/keys/rotate", "/v1/keys/rotate", None), "keys");
    }

    #[test]
    fn scrubs_secrets() {
        let mut v = json!({"name": "a", "password": "p", "nested": [{"auth_token": "t"}]});
        scrub(&mut v);
        assert_eq!(
            v,
            json!({"name": "a", "password": "[scrubbed]", "nested": [{"auth_token": "[scrubbed]"}]})
        );
    }

    #[test]
    fn ids() {
        assert!(valid_id("e_0000000001"));
        assert!(!valid_id("e_"));
        assert!(!valid_id("x_1"));
        assert!(!valid_id("e_1/../x"));
    }
}
