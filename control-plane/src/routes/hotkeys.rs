//! `GET /v1/namespaces/{name}/hotkeys`: a namespace's hottest keys across the platform.
//!
//! Each gateway keeps its own top-K of the keys it serves; the control plane asks every
//! live gateway (from `/gateways` in the registry) with a short-lived read token it
//! mints for the namespace, and sums the rates per key. A gateway that does not answer
//! within a second is left out and named in `missing`, so one slow gateway cannot stall
//! the view.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::State;
use larder_registry::auth::{Permission, TENANT_AUDIENCE};
use serde::{Deserialize, Serialize};

use crate::auth::Admin;
use crate::error::{ApiError, Json, Path, Query};
use crate::keys;
use crate::state::AppState;

/// Most keys a view holds (each gateway keeps at most this many per namespace).
pub const MAX_KEYS: usize = 64;

/// Query of the hot-key view.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HotKeyParams {
    /// How many keys, 1 to 64 (default 10).
    #[param(minimum = 1, maximum = 64)]
    pub limit: Option<usize>,
}

/// One hot key: its name (`key`, or `key_base64` for binary keys) and its request rate
/// summed over the gateways.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HotKey {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_base64: Option<String>,
    /// Requests per second (an upper estimate).
    pub rate: f64,
}

/// The platform-wide view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HotKeys {
    pub namespace: String,
    pub keys: Vec<HotKey>,
    /// Gateways asked.
    pub gateways: usize,
    /// Gateways that did not answer (their traffic is missing from the view).
    pub missing: Vec<String>,
}

#[derive(Deserialize)]
struct GatewayView {
    keys: Vec<HotKey>,
}

/// Sums per-gateway views into one ranking, hottest first.
pub fn merge(views: Vec<Vec<HotKey>>, limit: usize) -> Vec<HotKey> {
    let mut sums: HashMap<(Option<String>, Option<String>), f64> = HashMap::new();
    for view in views {
        for k in view {
            *sums.entry((k.key, k.key_base64)).or_default() += k.rate;
        }
    }
    let mut keys: Vec<HotKey> = sums
        .into_iter()
        .map(|((key, key_base64), rate)| HotKey {
            key,
            key_base64,
            rate,
        })
        .collect();
    keys.sort_by(|a, b| b.rate.total_cmp(&a.rate).then_with(|| a.key.cmp(&b.key)));
    keys.truncate(limit);
    keys
}

/// The hottest keys of a namespace across all live gateways.
#[utoipa::path(
    get,
    path = "/v1/namespaces/{name}/hotkeys",
    tag = "namespaces",
    params(("name" = String, Path, description = "Namespace name"), HotKeyParams),
    responses(
        (status = 200, description = "Hot keys, hottest first", body = HotKeys),
        (status = 400, description = "Bad limit", body = crate::openapi::model::Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or invalid admin token", body = crate::openapi::model::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such namespace", body = crate::openapi::model::Problem, content_type = "application/problem+json"),
    ),
    security(("admin" = []))
)]
pub async fn hotkeys(
    State(state): State<AppState>,
    Admin(_admin): Admin,
    Path(name): Path<String>,
    Query(params): Query<HotKeyParams>,
) -> Result<Json<HotKeys>, ApiError> {
    let limit = params.limit.unwrap_or(10);
    if !(1..=MAX_KEYS).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1 to {MAX_KEYS}"
        )));
    }
    let snapshot = state.snapshot.load();
    if snapshot.namespace(&name).is_none() {
        return Err(ApiError::NotFound(format!("no namespace {name:?}")));
    }
    let claims = keys::claims(
        "control-plane",
        TENANT_AUDIENCE,
        vec![name.clone()],
        vec![Permission::Read],
        60,
    );
    let (token, _) = state
        .keys
        .sign(&snapshot, &claims)
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let gateways: Vec<(String, String)> = snapshot
        .gateways
        .values()
        .map(|g| (g.value.id.clone(), g.value.address.clone()))
        .collect();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap_or_default();
    let asks = gateways.iter().map(|(id, address)| {
        let (http, token, name) = (http.clone(), token.clone(), name.clone());
        let address = address
            .replace("0.0.0.0:", "127.0.0.1:")
            .replace("[::]:", "127.0.0.1:");
        async move {
            let url = format!("http://{address}/v1/namespaces/{name}/hotkeys?limit={MAX_KEYS}");
            let answer = async {
                http.get(url)
                    .bearer_auth(token)
                    .send()
                    .await?
                    .error_for_status()?
                    .json::<GatewayView>()
                    .await
            };
            (id.clone(), answer.await.ok())
        }
    });
    let mut views = Vec::new();
    let mut missing = Vec::new();
    for (id, view) in futures::future::join_all(asks).await {
        match view {
            Some(v) => views.push(v.keys),
            None => missing.push(id),
        }
    }
    Ok(Json(HotKeys {
        namespace: name,
        keys: merge(views, limit),
        gateways: gateways.len(),
        missing,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(name: &str, rate: f64) -> HotKey {
        HotKey {
            key: Some(name.into()),
            key_base64: None,
            rate,
        }
    }

    #[test]
    fn merge_sums_rates_across_gateways() {
        let merged = merge(
            vec![
                vec![k("a", 10.0), k("b", 50.0)],
                vec![k("a", 45.0), k("c", 1.0)],
            ],
            2,
        );
        assert_eq!(merged, vec![k("a", 55.0), k("b", 50.0)]);
    }
}
