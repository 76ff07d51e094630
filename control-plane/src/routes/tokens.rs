//! Tenant tokens: issuing, listing (metadata only) and revoking.
//!
//! Each issued token leaves a record under `/auth/tokens/<jti>` (never the token). A
//! revocation creates `/auth/revoked/<jti>`, which every gateway's watch delivers within
//! the propagation bound; the leader prunes both once the token has expired.
//!
//! Issuing is made safe to retry with an `Idempotency-Key` header: the key (with the
//! namespace) names the token id, and Ed25519 signatures are deterministic, so the same
//! request again re-signs the recorded claims and returns the very same token.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use larder_registry::auth::{Claims, ISSUER, Permission, TENANT_AUDIENCE};
use larder_registry::ledger::TokenRecord;
use larder_registry::model::{NamespaceState, Revocation};
use larder_registry::txn::Op;
use larder_registry::{RegistryError, names, now_ms, paths};
use sha2::{Digest, Sha256};

use crate::api::{IssueToken, IssuedToken, List, TokenQuery, TokenState, TokenView};
use crate::audit::AuditNote;
use crate::auth::Admin;
use crate::error::{ApiError, Json, Path, Query};
use crate::openapi::model::Problem;
use crate::state::AppState;

/// Default lifetime of a tenant token: one day.
pub const DEFAULT_TTL_S: u64 = 24 * 3600;

/// The header that makes an issue request safe to retry.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

fn claims_of(record: &TokenRecord) -> Claims {
    Claims {
        iss: ISSUER.into(),
        aud: record.audience.clone(),
        sub: record.subject.clone(),
        exp: record.expires_at,
        nbf: record.issued_at,
        iat: record.issued_at,
        jti: record.jti.clone(),
        ns: record.namespaces.clone(),
        perms: record.permissions.clone(),
    }
}

pub fn view(record: &TokenRecord) -> TokenView {
    let state = if record.revoked_at_ms.is_some() {
        TokenState::Revoked
    } else if record.expires_at <= now_ms() / 1000 {
        TokenState::Expired
    } else {
        TokenState::Active
    };
    TokenView {
        jti: record.jti.clone(),
        kid: record.kid.clone(),
        subject: record.subject.clone(),
        namespaces: record.namespaces.clone(),
        permissions: record.permissions.clone(),
        state,
        issued_at: record.issued_at,
        expires_at: record.expires_at,
        issued_by: record.issued_by.clone(),
        revoked_at_ms: record.revoked_at_ms,
        revoked_by: record.revoked_by.clone(),
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        // `to_str` also lets spaces and tabs through; the key is visible ASCII only.
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::BadRequest("Idempotency-Key must be 1 to 255 visible ASCII characters".into())
        })?;
    Ok(Some(key.to_owned()))
}

/// The token id an idempotency key stands for, within one namespace.
fn jti_for(namespace: &str, key: &str) -> String {
    let digest = Sha256::digest(format!("{namespace}\n{key}").as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

fn issued(record: &TokenRecord, token: String) -> IssuedToken {
    IssuedToken {
        token,
        jti: record.jti.clone(),
        kid: record.kid.clone(),
        subject: record.subject.clone(),
        namespaces: record.namespaces.clone(),
        permissions: record.permissions.clone(),
        expires_at: record.expires_at,
    }
}

/// Issues a token for one namespace, signed with the current signing key.
#[utoipa::path(
    post,
    path = "/v1/namespaces/{name}/tokens",
    tag = "tokens",
    params(
        ("name" = String, Path, description = "Namespace name"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry return the same token instead of a new one", pattern = "^[!-~]{1,255}$"),
    ),
    request_body = IssueToken,
    responses(
        (status = 201, description = "Issued; the token is shown only here", body = IssuedToken),
        (status = 200, description = "A retry with the same Idempotency-Key and body: the same token", body = IssuedToken),
        (status = 400, description = "Invalid subject, permissions or lifetime; unknown field", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or invalid admin token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such namespace", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The namespace is being deleted; the Idempotency-Key was used with another body or its token revoked", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "This instance holds no active signing key", body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin" = []))
)]
pub async fn issue(
    State(state): State<AppState>,
    admin: Admin,
    Path(ns): Path<String>,
    headers: HeaderMap,
    Json(request): Json<IssueToken>,
) -> Result<Response, ApiError> {
    names::namespace(&ns)?;
    let key = idempotency_key(&headers)?;
    let snapshot = state.snapshot.load();
    match snapshot.namespace(&ns) {
        None => return Err(ApiError::NotFound(format!("no namespace {ns:?}"))),
        Some(n) if n.value.state == NamespaceState::Deleting => {
            return Err(ApiError::Conflict(format!(
                "namespace {ns} is being deleted"
            )));
        }
        Some(_) => {}
    }
    if request.subject.trim().is_empty()
        || request.subject.chars().count() > 128
        || request.subject.chars().any(char::is_control)
    {
        return Err(ApiError::BadRequest(
            "subject must be 1 to 128 printable characters".into(),
        ));
    }
    if request.permissions.is_empty() {
        return Err(ApiError::BadRequest(
            "permissions must name at least one of read, write, queue".into(),
        ));
    }
    if request.permissions.contains(&Permission::Admin) {
        return Err(ApiError::BadRequest(
            "a tenant token cannot carry the admin permission".into(),
        ));
    }
    let ttl = request.ttl_s.unwrap_or(DEFAULT_TTL_S);
    if ttl == 0 || ttl > state.config.max_token_ttl_s {
        return Err(ApiError::BadRequest(format!(
            "ttl_s must be 1 to {}",
            state.config.max_token_ttl_s
        )));
    }
    let mut permissions = request.permissions.clone();
    permissions.sort();
    permissions.dedup();
    let now_s = now_ms() / 1000;
    let record = TokenRecord {
        jti: match &key {
            Some(k) => jti_for(&ns, k),
            None => uuid::Uuid::new_v4().simple().to_string(),
        },
        kid: state.keys.signer(&snapshot)?,
        subject: request.subject.clone(),
        audience: TENANT_AUDIENCE.into(),
        namespaces: vec![ns.clone()],
        permissions,
        issued_at: now_s,
        expires_at: now_s + ttl,
        issued_by: admin.subject().to_owned(),
        revoked_at_ms: None,
        revoked_by: None,
        idempotent: key.is_some(),
    };
    let path = paths::token(&record.jti);
    match state.registry.create(&path, &record).await {
        Ok(_) => {}
        Err(RegistryError::AlreadyExists { .. }) if key.is_some() => {
            let earlier = state
                .registry
                .get::<TokenRecord>(&path)
                .await?
                .ok_or_else(|| ApiError::Conflict("the token record vanished; retry".into()))?
                .value;
            let same = earlier.subject == record.subject
                && earlier.permissions == record.permissions
                && earlier.namespaces == record.namespaces
                && earlier.expires_at.saturating_sub(earlier.issued_at) == ttl;
            if !same {
                return Err(ApiError::Conflict(
                    "this Idempotency-Key was used with a different request".into(),
                ));
            }
            if earlier.revoked_at_ms.is_some() {
                return Err(ApiError::Conflict(format!(
                    "the token issued under this Idempotency-Key ({}) was revoked",
                    earlier.jti
                )));
            }
            let token = state.keys.sign_with(&earlier.kid, &claims_of(&earlier))?;
            let note = format!("jti {} (repeat)", earlier.jti);
            return Ok((
                StatusCode::OK,
                axum::Extension(AuditNote(note)),
                Json(issued(&earlier, token)),
            )
                .into_response());
        }
        Err(e) => return Err(e.into()),
    }
    let token = state.keys.sign_with(&record.kid, &claims_of(&record))?;
    tracing::info!(namespace = %ns, jti = %record.jti, subject = %record.subject, "issued token");
    let note = format!(
        "jti {} kid {} expires_at {}",
        record.jti, record.kid, record.expires_at
    );
    Ok((
        StatusCode::CREATED,
        axum::Extension(AuditNote(note)),
        Json(issued(&record, token)),
    )
        .into_response())
}

async fn listed(state: &AppState, query: &TokenQuery) -> Result<List<TokenView>, ApiError> {
    if let Some(ns) = &query.namespace {
        names::namespace(ns)?;
    }
    let all = query.all.unwrap_or(false);
    let mut items: Vec<TokenView> = crate::leader::token_records(state)
        .await?
        .into_iter()
        .map(|(_, r)| view(&r.value))
        .filter(|t| {
            query
                .namespace
                .as_ref()
                .is_none_or(|ns| t.namespaces.contains(ns))
        })
        .filter(|t| all || t.state == TokenState::Active)
        .collect();
    items.sort_by(|a, b| {
        b.issued_at
            .cmp(&a.issued_at)
            .then_with(|| a.jti.cmp(&b.jti))
    });
    Ok(List { items })
}

/// Issued tokens (metadata only, never the token), newest first.
#[utoipa::path(
    get,
    path = "/v1/tokens",
    tag = "tokens",
    params(TokenQuery),
    responses(
        (status = 200, description = "Issued tokens", body = List<TokenView>),
        (status = 400, description = "Unknown or malformed parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or invalid admin token", body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    _admin: Admin,
    Query(query): Query<TokenQuery>,
) -> Result<Json<List<TokenView>>, ApiError> {
    Ok(Json(listed(&state, &query).await?))
}

/// A namespace's issued tokens (metadata only), newest first.
#[utoipa::path(
    get,
    path = "/v1/namespaces/{name}/tokens",
    tag = "tokens",
    params(
        ("name" = String, Path, description = "Namespace name"),
        ("all" = Option<bool>, Query, description = "Include revoked and expired tokens"),
    ),
    responses(
        (status = 200, description = "Issued tokens", body = List<TokenView>),
        (status = 401, description = "No or invalid admin token", body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin" = []))
)]
pub async fn list_for_namespace(
    State(state): State<AppState>,
    _admin: Admin,
    Path(ns): Path<String>,
    Query(query): Query<TokenQuery>,
) -> Result<Json<List<TokenView>>, ApiError> {
    let query = TokenQuery {
        namespace: Some(ns),
        ..query
    };
    Ok(Json(listed(&state, &query).await?))
}

/// One issued token's metadata.
#[utoipa::path(
    get,
    path = "/v1/tokens/{jti}",
    tag = "tokens",
    params(("jti" = String, Path, description = "Token id")),
    responses(
        (status = 200, description = "The token's metadata", body = TokenView),
        (status = 401, description = "No or invalid admin token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such token (or pruned after expiry)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin" = []))
)]
pub async fn show(
    State(state): State<AppState>,
    _admin: Admin,
    Path(jti): Path<String>,
) -> Result<Json<TokenView>, ApiError> {
    names::id("token id", &jti)?;
    let record = state
        .registry
        .get::<TokenRecord>(&paths::token(&jti))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no token {jti:?}")))?;
    Ok(Json(view(&record.value)))
}

/// Revokes a token: gateways refuse it as soon as their registry watch delivers the
/// revocation. Revoking again is harmless.
#[utoipa::path(
    post,
    path = "/v1/tokens/{jti}/revoke",
    tag = "tokens",
    params(("jti" = String, Path, description = "Token id")),
    responses(
        (status = 200, description = "Revoked (or already was)", body = TokenView),
        (status = 401, description = "No or invalid admin token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such token", body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin" = []))
)]
pub async fn revoke(
    State(state): State<AppState>,
    admin: Admin,
    Path(jti): Path<String>,
) -> Result<Json<TokenView>, ApiError> {
    names::id("token id", &jti)?;
    let path = paths::token(&jti);
    for _ in 0..8 {
        let record = state
            .registry
            .get::<TokenRecord>(&path)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no token {jti:?}")))?;
        if record.value.revoked_at_ms.is_some() && state.snapshot.load().is_revoked(&jti) {
            return Ok(Json(view(&record.value)));
        }
        let now = now_ms();
        let revoked = TokenRecord {
            revoked_at_ms: Some(record.value.revoked_at_ms.unwrap_or(now)),
            revoked_by: Some(
                record
                    .value
                    .revoked_by
                    .clone()
                    .unwrap_or_else(|| admin.subject().to_owned()),
            ),
            ..record.value.clone()
        };
        let revocation = Revocation {
            jti: jti.clone(),
            expires_at: record.value.expires_at,
            revoked_at_ms: now,
        };
        let mut ops = vec![Op::set(&path, &revoked, record.version)];
        if !state.snapshot.load().is_revoked(&jti) {
            ops.push(Op::create(paths::revoked(&jti), &revocation));
        }
        match state.registry.transact(&ops).await {
            Ok(_) => {
                super::observe(&state, |s| s.is_revoked(&jti)).await?;
                tracing::info!(%jti, "revoked token");
                return Ok(Json(view(&revoked)));
            }
            // Revoked or changed meanwhile: look again.
            Err(RegistryError::Conflict { .. } | RegistryError::AlreadyExists { .. }) => {
                super::observe_briefly(&state, |s| s.is_revoked(&jti)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Conflict(format!(
        "token {jti} kept changing; retry"
    )))
}
