//! A typed client of the admin API, used by `larderctl` and by tests.

use larder_service::Problem;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{
    AuditPage, AuditQuery, ClusterView, CreateNamespace, IssueToken, IssuedToken, KeyView, List,
    NamespaceQuery, NamespaceView, RegisterCluster, TokenQuery, TokenView, UpdateNamespace,
};

/// What a call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a problem.
    #[error("{}{}", .0.title, .0.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Problem(Problem),
    #[error("cannot reach the control plane: {0}")]
    Transport(#[from] reqwest::Error),
    #[error("unexpected answer ({status}): {body}")]
    Unexpected { status: StatusCode, body: String },
}

impl ClientError {
    /// The problem's HTTP status, if the server answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Problem(p) => Some(p.status),
            ClientError::Unexpected { status, .. } => Some(status.as_u16()),
            ClientError::Transport(_) => None,
        }
    }
}

/// Admin API client.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// A path segment, percent-encoded.
fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http: reqwest::Client::new(),
        }
    }

    async fn send<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        headers: &[(&str, String)],
        body: Option<&B>,
    ) -> Result<(StatusCode, bytes::Bytes), ClientError> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        if status.is_success() {
            return Ok((status, bytes));
        }
        match serde_json::from_slice::<Problem>(&bytes) {
            Ok(problem) => Err(ClientError::Problem(problem)),
            Err(_) => Err(ClientError::Unexpected {
                status,
                body: String::from_utf8_lossy(&bytes).into_owned(),
            }),
        }
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let (status, bytes) = self.send(method, path, query, &[], body).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Unexpected {
            status,
            body: format!("{e}: {}", String::from_utf8_lossy(&bytes)),
        })
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, ClientError> {
        self.call::<(), T>(Method::GET, path, query, None).await
    }

    async fn post_empty<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call::<(), T>(Method::POST, path, &[], None).await
    }

    // ----- clusters ---------------------------------------------------------------------

    pub async fn register_cluster(
        &self,
        request: &RegisterCluster,
    ) -> Result<ClusterView, ClientError> {
        self.call(Method::POST, "/v1/clusters", &[], Some(request))
            .await
    }

    pub async fn clusters(&self) -> Result<List<ClusterView>, ClientError> {
        self.get("/v1/clusters", &[]).await
    }

    pub async fn cluster(&self, name: &str) -> Result<ClusterView, ClientError> {
        self.get(&format!("/v1/clusters/{}", seg(name)), &[]).await
    }

    pub async fn deregister_cluster(&self, name: &str) -> Result<(), ClientError> {
        self.send::<()>(
            Method::DELETE,
            &format!("/v1/clusters/{}", seg(name)),
            &[],
            &[],
            None,
        )
        .await
        .map(|_| ())
    }

    // ----- namespaces -------------------------------------------------------------------

    pub async fn create_namespace(
        &self,
        request: &CreateNamespace,
    ) -> Result<NamespaceView, ClientError> {
        self.call(Method::POST, "/v1/namespaces", &[], Some(request))
            .await
    }

    pub async fn namespaces(&self) -> Result<List<NamespaceView>, ClientError> {
        self.namespaces_where(&NamespaceQuery::default()).await
    }

    pub async fn namespaces_where(
        &self,
        query: &NamespaceQuery,
    ) -> Result<List<NamespaceView>, ClientError> {
        let mut q = Vec::new();
        if let Some(c) = &query.cluster {
            q.push(("cluster", c.clone()));
        }
        if let Some(o) = &query.owner {
            q.push(("owner", o.clone()));
        }
        if let Some(u) = query.usage {
            q.push(("usage", u.to_string()));
        }
        self.get("/v1/namespaces", &q).await
    }

    /// A namespace's hottest keys across all live gateways.
    pub async fn hot_keys(
        &self,
        name: &str,
        limit: usize,
    ) -> Result<crate::routes::hotkeys::HotKeys, ClientError> {
        self.get(
            &format!("/v1/namespaces/{}/hotkeys", seg(name)),
            &[("limit", limit.to_string())],
        )
        .await
    }

    pub async fn namespace(&self, name: &str) -> Result<NamespaceView, ClientError> {
        self.get(&format!("/v1/namespaces/{}", seg(name)), &[])
            .await
    }

    pub async fn update_namespace(
        &self,
        name: &str,
        request: &UpdateNamespace,
    ) -> Result<NamespaceView, ClientError> {
        self.call(
            Method::PATCH,
            &format!("/v1/namespaces/{}", seg(name)),
            &[],
            Some(request),
        )
        .await
    }

    pub async fn disable_namespace(&self, name: &str) -> Result<NamespaceView, ClientError> {
        self.post_empty(&format!("/v1/namespaces/{}/disable", seg(name)))
            .await
    }

    pub async fn enable_namespace(&self, name: &str) -> Result<NamespaceView, ClientError> {
        self.post_empty(&format!("/v1/namespaces/{}/enable", seg(name)))
            .await
    }

    /// Starts (or reports) the namespace's deletion.
    pub async fn delete_namespace(&self, name: &str) -> Result<NamespaceView, ClientError> {
        self.call::<(), _>(
            Method::DELETE,
            &format!("/v1/namespaces/{}", seg(name)),
            &[],
            None,
        )
        .await
    }

    // ----- tokens -----------------------------------------------------------------------

    pub async fn issue_token(
        &self,
        namespace: &str,
        request: &IssueToken,
    ) -> Result<IssuedToken, ClientError> {
        self.call(
            Method::POST,
            &format!("/v1/namespaces/{}/tokens", seg(namespace)),
            &[],
            Some(request),
        )
        .await
    }

    /// Issues a token under an `Idempotency-Key`: the same key and body again return
    /// the same token.
    pub async fn issue_token_idempotent(
        &self,
        namespace: &str,
        request: &IssueToken,
        key: &str,
    ) -> Result<IssuedToken, ClientError> {
        let (status, bytes) = self
            .send(
                Method::POST,
                &format!("/v1/namespaces/{}/tokens", seg(namespace)),
                &[],
                &[("idempotency-key", key.to_owned())],
                Some(request),
            )
            .await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Unexpected {
            status,
            body: e.to_string(),
        })
    }

    pub async fn tokens(&self, query: &TokenQuery) -> Result<List<TokenView>, ClientError> {
        let mut q = Vec::new();
        if let Some(ns) = &query.namespace {
            q.push(("namespace", ns.clone()));
        }
        if let Some(all) = query.all {
            q.push(("all", all.to_string()));
        }
        self.get("/v1/tokens", &q).await
    }

    pub async fn token(&self, jti: &str) -> Result<TokenView, ClientError> {
        self.get(&format!("/v1/tokens/{}", seg(jti)), &[]).await
    }

    pub async fn revoke_token(&self, jti: &str) -> Result<TokenView, ClientError> {
        self.post_empty(&format!("/v1/tokens/{}/revoke", seg(jti)))
            .await
    }

    // ----- keys -------------------------------------------------------------------------

    pub async fn keys(&self) -> Result<List<KeyView>, ClientError> {
        self.get("/v1/keys", &[]).await
    }

    pub async fn rotate_key(&self) -> Result<KeyView, ClientError> {
        self.post_empty("/v1/keys/rotate").await
    }

    pub async fn retire_key(&self, kid: &str) -> Result<KeyView, ClientError> {
        self.post_empty(&format!("/v1/keys/{}/retire", seg(kid)))
            .await
    }

    // ----- audit ------------------------------------------------------------------------

    pub async fn audit(&self, query: &AuditQuery) -> Result<AuditPage, ClientError> {
        let mut q: Vec<(&str, String)> = Vec::new();
        let mut push = |k: &'static str, v: Option<String>| {
            if let Some(v) = v {
                q.push((k, v));
            }
        };
        push("actor", query.actor.clone());
        push("action", query.action.clone());
        push("target", query.target.clone());
        push("outcome", query.outcome.clone());
        push("since_ms", query.since_ms.map(|v| v.to_string()));
        push("until_ms", query.until_ms.map(|v| v.to_string()));
        push("limit", query.limit.map(|v| v.to_string()));
        push("before", query.before.clone());
        self.get("/v1/audit", &q).await
    }
}
