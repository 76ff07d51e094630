//! Shared state of the data API handlers, and the per-request authorisation step.

use std::sync::Arc;

use axum::http::HeaderMap;
use larder_registry::auth::Permission;
use larder_registry::model::{Cluster, Namespace, NamespaceState};
use larder_registry::{SnapshotReader, Versioned};

use crate::auth::{self, Verifier};
use crate::backend::Backends;
use crate::config::Config;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// Everything a handler needs, behind one `Arc`: every middleware and extractor clones
/// the state per request, so a clone is one atomic increment, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct Shared {
    pub snapshot: SnapshotReader,
    pub backends: Arc<Backends>,
    pub verifier: Arc<Verifier>,
    pub limiter: Arc<crate::ratelimit::RateLimiter>,
    pub near: Arc<crate::nearcache::NearCache>,
    pub hot: Arc<crate::hotkeys::HotKeys>,
    pub streams: Arc<crate::streams::Streams>,
    pub metrics: Arc<Metrics>,
    /// Latched once `/readyz` has said ready.
    pub readiness: Arc<crate::routes::health::Readiness>,
    pub overload: Arc<crate::overload::Overload>,
    pub config: Arc<Config>,
}

/// A request cleared to touch one namespace.
pub struct Access {
    pub namespace: Arc<Versioned<Namespace>>,
    pub cluster: Arc<Versioned<Cluster>>,
    /// The request's slot among the namespace's requests in flight, held until the
    /// handler returns.
    _in_flight: crate::overload::NamespaceSlot,
}

impl AppState {
    /// Authenticates the caller, then checks namespace, permission and namespace state —
    /// in that order, so a caller without a valid token learns nothing about which
    /// namespaces exist.
    pub fn authorize(
        &self,
        headers: &HeaderMap,
        namespace: &str,
        permission: Permission,
    ) -> Result<Access, ApiError> {
        self.authorize_all(headers, namespace, &[permission])
    }

    /// Like [`AppState::authorize`] for an operation that needs several permissions (a
    /// batch of reads and writes). The request takes one of the namespace's in-flight
    /// slots, then is charged to its rate limit once, here, after the token and namespace
    /// checks; a request refused for concurrency is not charged.
    pub fn authorize_all(
        &self,
        headers: &HeaderMap,
        namespace: &str,
        permissions: &[Permission],
    ) -> Result<Access, ApiError> {
        let snapshot = self.snapshot.load();
        let verified = self.verifier.verify(&snapshot, headers)?;
        for permission in permissions {
            auth::require(&verified.claims, namespace, *permission).map_err(ApiError::Forbidden)?;
        }
        let ns = snapshot
            .namespace(namespace)
            .cloned()
            .ok_or_else(|| ApiError::NamespaceNotFound(namespace.to_owned()))?;
        match ns.value.state {
            NamespaceState::Active | NamespaceState::Migrating => {}
            NamespaceState::Disabled => {
                return Err(ApiError::NamespaceUnavailable(
                    namespace.to_owned(),
                    "disabled",
                ));
            }
            NamespaceState::Deleting => {
                return Err(ApiError::NamespaceUnavailable(
                    namespace.to_owned(),
                    "being deleted",
                ));
            }
        }
        let cluster = snapshot
            .cluster(&ns.value.cluster)
            .cloned()
            .ok_or_else(|| ApiError::BackendUnavailable {
                cluster: ns.value.cluster.clone(),
                detail: "the namespace's deployment is not registered".into(),
            })?;
        let Some(in_flight) = self.overload.enter_namespace(namespace) else {
            self.metrics.shed_namespace.inc();
            return Err(ApiError::ConcurrencyLimited {
                namespace: namespace.to_owned(),
                limit: self.overload.max_per_namespace(),
            });
        };
        let limits = &ns.value.limits;
        let decision = self.limiter.check(
            namespace,
            limits.ops_per_sec,
            limits.burst,
            snapshot.gateways.len(),
        );
        crate::ratelimit::report(decision);
        if !decision.allowed {
            self.metrics
                .rate_limited
                .with_label_values(&[namespace])
                .inc();
            return Err(ApiError::RateLimited {
                namespace: namespace.to_owned(),
                limit: limits.ops_per_sec,
                retry_after_s: decision.retry_after_s,
            });
        }
        Ok(Access {
            namespace: ns,
            cluster,
            _in_flight: in_flight,
        })
    }
}
