//! `/v1/keys`: the token signing keys.
//!
//! Rotating creates a new key in the key directory and publishes its public half; it
//! signs from then on, while tokens signed by older keys keep verifying until those keys
//! are retired. Retiring marks a key retired in the registry: every verifier (gateways,
//! control planes) refuses its tokens from then on. The newest active key cannot be
//! retired — rotate first — so the platform always keeps a key that signs.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use larder_registry::model::{KeyState, SigningKey};
use larder_registry::{Snapshot, names, paths};

use crate::api::{KeyView, List};
use crate::audit::AuditNote;
use crate::auth::Admin;
use crate::error::{ApiError, Json, Path};
use crate::openapi::model::Problem;
use crate::state::AppState;

fn views(state: &AppState, snapshot: &Snapshot) -> Vec<KeyView> {
    let held = state.keys.held();
    let signer = state.keys.signer(snapshot).ok();
    snapshot
        .keys
        .values()
        .map(|k| {
            let k = &k.value;
            KeyView {
                kid: k.kid.clone(),
                alg: k.alg.clone(),
                state: k.state,
                created_at_ms: k.created_at_ms,
                signing: signer.as_deref() == Some(k.kid.as_str()),
                held_here: held.contains(&k.kid),
            }
        })
        .collect()
}

/// The newest key the registry lists as active.
fn newest_active(snapshot: &Snapshot) -> Option<String> {
    snapshot
        .keys
        .values()
        .filter(|k| k.value.state == KeyState::Active)
        .map(|k| k.value.kid.clone())
        .max()
}

/// Every signing key with its state.
#[utoipa::path(
    get,
    path = "/v1/keys",
    tag = "keys",
    responses(
        (status = 200, description = "Signing keys, oldest first", body = List<KeyView>),
        (status = 401, description = "No or invalid admin token", body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin" = []))
)]
pub async fn list(State(state): State<AppState>, _admin: Admin) -> Json<List<KeyView>> {
    let snapshot = state.snapshot.load();
    Json(List {
        items: views(&state, &snapshot),
    })
}

/// Creates a new signing key; it signs every token issued from now on.
#[utoipa::path(
    post,
    path = "/v1/keys/rotate",
    tag = "keys",
    responses(
        (status = 201, description = "The new key", body = KeyView),
        (status = 401, description = "No or invalid admin token", body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin" = []))
)]
pub async fn rotate(State(state): State<AppState>, _admin: Admin) -> Result<Response, ApiError> {
    let record = state.keys.rotate(&state.registry).await?;
    let kid = record.kid.clone();
    super::observe(&state, |s| s.keys.contains_key(&kid)).await?;
    let snapshot = state.snapshot.load();
    let view = views(&state, &snapshot)
        .into_iter()
        .find(|k| k.kid == kid)
        .ok_or_else(|| ApiError::Internal(format!("rotated key {kid} not in view")))?;
    tracing::info!(%kid, "rotated signing key");
    Ok((
        StatusCode::CREATED,
        axum::Extension(AuditNote(format!("new key {kid}"))),
        Json(view),
    )
        .into_response())
}

/// Retires a key: tokens it signed stop verifying everywhere.
#[utoipa::path(
    post,
    path = "/v1/keys/{kid}/retire",
    tag = "keys",
    params(("kid" = String, Path, description = "Key id")),
    responses(
        (status = 200, description = "Retired (or already was)", body = KeyView),
        (status = 401, description = "No or invalid admin token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such key", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "It is the newest active key: rotate first", body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin" = []))
)]
pub async fn retire(
    State(state): State<AppState>,
    _admin: Admin,
    Path(kid): Path<String>,
) -> Result<Json<KeyView>, ApiError> {
    names::id("key id", &kid)?;
    let path = paths::key(&kid);
    let current = state
        .registry
        .get::<SigningKey>(&path)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no signing key {kid:?}")))?;
    if current.value.state == KeyState::Active {
        // A lagging snapshot can only miss a newer key, which makes this refuse more,
        // never retire the key that signs.
        let snapshot = state.snapshot.load();
        if newest_active(&snapshot).is_none_or(|newest| newest <= kid) {
            return Err(ApiError::Conflict(format!(
                "{kid} is the newest active key and signs new tokens; rotate first"
            )));
        }
        let done = state
            .registry
            .update::<SigningKey, _>(&path, |key| {
                key.state = KeyState::Retired;
                Ok(())
            })
            .await?;
        let version = done.version;
        super::observe(&state, |s| {
            s.keys.get(&kid).is_some_and(|k| k.version >= version)
        })
        .await?;
        tracing::info!(%kid, "retired signing key");
    }
    let snapshot = state.snapshot.load();
    views(&state, &snapshot)
        .into_iter()
        .find(|k| k.kid == kid)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no signing key {kid:?}")))
}
