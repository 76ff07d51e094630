//! A typed client of the admin API, used by `larderctl` and by tests.

use larder_service::Problem;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{
    ClusterView, CreateNamespace, IssueToken, IssuedToken, List, NamespaceView, RegisterCluster,
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

/// Admin API client.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http: reqwest::Client::new(),
        }
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| ClientError::Unexpected {
                status,
                body: format!("{e}: {}", String::from_utf8_lossy(&bytes)),
            });
        }
        match serde_json::from_slice::<Problem>(&bytes) {
            Ok(problem) => Err(ClientError::Problem(problem)),
            Err(_) => Err(ClientError::Unexpected {
                status,
                body: String::from_utf8_lossy(&bytes).into_owned(),
            }),
        }
    }

    pub async fn register_cluster(
        &self,
        request: &RegisterCluster,
    ) -> Result<ClusterView, ClientError> {
        self.call(Method::POST, "/v1/clusters", Some(request)).await
    }

    pub async fn clusters(&self) -> Result<List<ClusterView>, ClientError> {
        self.call::<(), _>(Method::GET, "/v1/clusters", None).await
    }

    pub async fn cluster(&self, name: &str) -> Result<ClusterView, ClientError> {
        self.call::<(), _>(Method::GET, &format!("/v1/clusters/{name}"), None)
            .await
    }

    pub async fn create_namespace(
        &self,
        request: &CreateNamespace,
    ) -> Result<NamespaceView, ClientError> {
        self.call(Method::POST, "/v1/namespaces", Some(request))
            .await
    }

    pub async fn namespaces(&self) -> Result<List<NamespaceView>, ClientError> {
        self.call::<(), _>(Method::GET, "/v1/namespaces", None)
            .await
    }

    pub async fn namespace(&self, name: &str) -> Result<NamespaceView, ClientError> {
        self.call::<(), _>(Method::GET, &format!("/v1/namespaces/{name}"), None)
            .await
    }

    pub async fn issue_token(
        &self,
        namespace: &str,
        request: &IssueToken,
    ) -> Result<IssuedToken, ClientError> {
        self.call(
            Method::POST,
            &format!("/v1/namespaces/{namespace}/tokens"),
            Some(request),
        )
        .await
    }
}
