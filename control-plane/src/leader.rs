//! Leadership: which instance runs the background work, and the work itself.
//!
//! Every instance stands for election (ZooKeeper ephemeral sequential candidates; the
//! lowest leads). [`Leadership::watch`] runs in every instance and follows who leads, for
//! `/readyz` and the metrics. [`Leader::run`] runs in every instance too but acts only
//! while [`Registry::is_leader`](larder_registry::Registry::is_leader) holds — which
//! needs a connected session — and every write it makes is fenced on its candidate
//! znode: a leader that lost its session (paused, partitioned) may still believe it
//! leads for a moment, but ZooKeeper refuses its writes, and it stops at the first
//! refusal.
//!
//! The work: namespace deletion jobs ([`crate::deletion`]) and pruning of expired
//! revocations, expired token records and audit entries past retention.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use larder_registry::auth::LEEWAY_S;
use larder_registry::ledger::{AuditEntry, TokenRecord};
use larder_registry::{RegistryError, now_ms, paths};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::deletion;
use crate::state::AppState;

/// Who leads, as this instance sees it.
#[derive(Debug, Default)]
pub struct Leadership {
    leading: AtomicBool,
    changes: AtomicU64,
    since_ms: AtomicU64,
    current: Mutex<Option<LeaderInfo>>,
}

/// The current leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaderInfo {
    /// Its election candidate znode name.
    pub candidate: String,
    pub id: String,
    pub address: String,
}

impl Leadership {
    /// Whether this instance leads (and its background loop is acting).
    pub fn leading(&self) -> bool {
        self.leading.load(Ordering::Relaxed)
    }

    /// Changes of leader this instance has seen since it started.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    /// When the current leader was first seen, ms since the epoch.
    pub fn since_ms(&self) -> u64 {
        self.since_ms.load(Ordering::Relaxed)
    }

    pub fn current(&self) -> Option<LeaderInfo> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Follows the election through the snapshot until `cancel`.
    pub async fn watch(state: AppState, cancel: CancellationToken) {
        let mut revisions = state.snapshot.subscribe();
        loop {
            let snapshot = state.snapshot.load();
            let now = snapshot.leader().map(|(name, c)| LeaderInfo {
                candidate: name.clone(),
                id: c.value.id.clone(),
                address: c.value.address.clone(),
            });
            let changed = {
                let mut current = state
                    .leadership
                    .current
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                let changed =
                    current.as_ref().map(|c| &c.candidate) != now.as_ref().map(|c| &c.candidate);
                if changed {
                    *current = now.clone();
                }
                changed
            };
            if changed {
                if let Some(leader) = &now {
                    tracing::info!(leader = %leader.id, candidate = %leader.candidate, "control-plane leader");
                    state.leadership.changes.fetch_add(1, Ordering::Relaxed);
                    state.metrics.leader_changes.inc();
                    state.leadership.since_ms.store(now_ms(), Ordering::Relaxed);
                } else {
                    tracing::warn!("no control-plane leader");
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = revisions.changed() => if r.is_err() { return },
                // The session status (part of `is_leader`) changes without a revision.
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }
}

/// The leader's background loop.
pub struct Leader {
    pub state: AppState,
}

impl Leader {
    pub async fn run(self, cancel: CancellationToken) {
        let state = self.state;
        let tick = Duration::from_millis(state.config.background.tick_ms);
        let prune_every = Duration::from_millis(state.config.background.prune_interval_ms);
        let mut last_prune: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(tick) => {}
            }
            let leading = state.registry.is_leader();
            if leading != state.leadership.leading.swap(leading, Ordering::Relaxed) {
                if leading {
                    tracing::info!(id = %state.config.id, "this instance leads; running background work");
                } else {
                    tracing::warn!(id = %state.config.id, "this instance no longer leads; background work stopped");
                }
            }
            state.metrics.is_leader.set(i64::from(leading));
            if !leading {
                state.metrics.deletion_jobs.set(0);
                continue;
            }
            let work = async {
                deletion::run_jobs(&state, tick.max(Duration::from_secs(1))).await?;
                if last_prune.is_none_or(|t| t.elapsed() >= prune_every) {
                    prune(&state).await?;
                    last_prune = Some(Instant::now());
                }
                Ok::<_, RegistryError>(())
            };
            let started = Instant::now();
            tokio::select! {
                _ = cancel.cancelled() => break,
                result = work => match result {
                    Ok(()) => state
                        .metrics
                        .platform
                        .background_duration
                        .observe(started.elapsed().as_secs_f64()),
                    Err(RegistryError::Fenced) => {
                        state.metrics.fenced_writes.inc();
                        tracing::warn!("background write fenced off: this instance no longer leads");
                    }
                    Err(e) => {
                        state.metrics.background_errors.inc();
                        tracing::warn!(error = %e, "background work failed; will retry");
                    }
                },
            }
        }
        state.leadership.leading.store(false, Ordering::Relaxed);
        state.metrics.is_leader.set(0);
    }
}

/// Removes what has outlived its use: revocations and token records of tokens expired
/// for longer than the verifiers' clock leeway, and audit entries beyond the retention.
pub async fn prune(state: &AppState) -> Result<(), RegistryError> {
    let now_s = now_ms() / 1000;
    let expired: Vec<(String, i32)> = state
        .snapshot
        .load()
        .revoked
        .iter()
        .filter(|(_, r)| r.value.expires_at + LEEWAY_S < now_s)
        .map(|(jti, r)| (jti.clone(), r.version))
        .collect();
    for (jti, version) in expired {
        match state
            .registry
            .delete_fenced(&paths::revoked(&jti), Some(version))
            .await
        {
            Ok(()) => state
                .metrics
                .pruned
                .with_label_values(&["revocation"])
                .inc(),
            Err(RegistryError::NotFound { .. } | RegistryError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    for (jti, record) in token_records(state).await? {
        if record.value.expires_at + LEEWAY_S < now_s {
            match state
                .registry
                .delete_fenced(&paths::token(&jti), Some(record.version))
                .await
            {
                Ok(()) => state.metrics.pruned.with_label_values(&["token"]).inc(),
                Err(RegistryError::NotFound { .. } | RegistryError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    prune_audit(state).await
}

/// At most this many audit entries are removed per pruning round.
const AUDIT_PRUNE_BATCH: usize = 1_000;

async fn prune_audit(state: &AppState) -> Result<(), RegistryError> {
    let names = state.registry.children(paths::AUDIT).await?;
    let max = state.config.audit.max_entries as usize;
    let over = names.len().saturating_sub(max);
    let oldest_kept_ms =
        now_ms().saturating_sub(state.config.audit.retention_days * 24 * 3600 * 1000);
    let mut removed = 0;
    for name in names.iter().take(AUDIT_PRUNE_BATCH) {
        let path = paths::audit_entry(name);
        if removed >= over {
            // Within the count limit: only entries past the retention go, oldest first.
            match state.registry.get::<AuditEntry>(&path).await {
                Ok(Some(e)) if e.value.at_ms >= oldest_kept_ms => break,
                Ok(_) | Err(RegistryError::Invalid { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        match state.registry.delete_fenced(&path, None).await {
            Ok(()) | Err(RegistryError::NotFound { .. }) => {
                removed += 1;
                state.metrics.pruned.with_label_values(&["audit"]).inc();
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Every issued-token record, by `jti`, read with bounded concurrency.
pub async fn token_records(
    state: &AppState,
) -> Result<Vec<(String, larder_registry::Versioned<TokenRecord>)>, RegistryError> {
    let names = state.registry.children(paths::TOKENS).await?;
    let reads = futures::stream::iter(names)
        .map(|jti| async move {
            let record = state.registry.get::<TokenRecord>(&paths::token(&jti)).await;
            (jti, record)
        })
        .buffer_unordered(32);
    let results: Vec<_> = reads.collect().await;
    let mut out = Vec::with_capacity(results.len());
    for (jti, result) in results {
        match result {
            Ok(Some(record)) => out.push((jti, record)),
            Ok(None) => {}
            Err(RegistryError::Invalid { path, reason }) => {
                tracing::warn!(%path, %reason, "skipping an unreadable token record");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}
