//! Deleting a namespace: its keys go in the background, in bounded batches, then its
//! znode.
//!
//! `DELETE /v1/namespaces/{name}` marks the namespace `deleting` (gateways then refuse
//! it) and creates `/jobs/deletions/<ns>` in the same transaction. The leader works the
//! job: on each master of the deployment, `SCAN <cursor> MATCH larder:<ns>:* COUNT <n>`
//! then `UNLINK` of what it found, the cursor saved (fenced) after every batch, so a new
//! leader resumes where the last one stopped. `SCAN` cursors are stateless on the server,
//! so any instance can continue one. A pass that ends having found keys is followed by
//! another, which catches writes that were in flight when the namespace was marked; the
//! first pass that finds nothing ends the job: the namespace's tokens are revoked (a
//! namespace created again under the same name must not open to them), then the job and
//! the namespace znodes are removed together.

use std::time::{Duration, Instant};

use larder_registry::ledger::{AuditEntry, DeletionJob, Outcome, TokenRecord};
use larder_registry::model::{Namespace, Revocation};
use larder_registry::txn::Op;
use larder_registry::{RegistryError, keyspace, now_ms, paths};

use crate::deployment;
use crate::state::AppState;

/// Works every pending deletion job for about `budget` each.
pub async fn run_jobs(state: &AppState, budget: Duration) -> Result<(), RegistryError> {
    let jobs = state.registry.children(paths::DELETIONS).await?;
    state.metrics.deletion_jobs.set(jobs.len() as i64);
    for ns in jobs {
        work(state, &ns, budget).await?;
    }
    Ok(())
}

/// Why a job could not progress this round (the deployment did not answer); it is
/// retried on the next tick.
fn stalled(ns: &str, reason: String) -> Result<(), RegistryError> {
    tracing::warn!(namespace = %ns, %reason, "namespace deletion stalled; will retry");
    Ok(())
}

async fn work(state: &AppState, ns: &str, budget: Duration) -> Result<(), RegistryError> {
    let path = paths::deletion(ns);
    let Some(current) = state.registry.get::<DeletionJob>(&path).await? else {
        return Ok(());
    };
    let mut job = current.value;
    let mut version = current.version;
    let started = Instant::now();
    let timeout = Duration::from_millis(state.config.redis_timeout_ms);
    let batch = state.config.background.deletion_batch_keys;
    let pause = Duration::from_millis(state.config.background.deletion_pause_ms);
    let cluster = state
        .snapshot
        .load()
        .cluster(&job.cluster)
        .map(|c| c.value.clone());
    let masters = match &cluster {
        Some(cluster) => match deployment::masters(cluster, timeout).await {
            Ok(m) => m,
            Err(e) => return stalled(ns, e),
        },
        // The deployment is gone (it cannot be deregistered while it holds the
        // namespace, so only by hand): there is nothing left to scan.
        None => Vec::new(),
    };
    if job.pass == 0 || (job.cursors.is_empty() && job.finished.is_empty()) {
        start_pass(&mut job, &masters);
        version = save(state, &path, &mut job, version).await?;
    }
    // A node that became a master since the pass started (a failover) is scanned from
    // the start; one that stopped being a master has handed its keys to another.
    for m in &masters {
        if !job.cursors.contains_key(m) && !job.finished.contains(m) {
            job.cursors.insert(m.clone(), 0);
        }
    }
    job.cursors.retain(|node, _| masters.contains(node));
    let pattern = {
        let mut p = keyspace::namespace_prefix(ns);
        p.push(b'*');
        p
    };
    let nodes: Vec<String> = job.cursors.keys().cloned().collect();
    for node in nodes {
        let mut conn = match deployment::connect(&node, timeout).await {
            Ok(c) => c,
            Err(e) => return stalled(ns, e),
        };
        loop {
            let cursor = job.cursors.get(&node).copied().unwrap_or_default();
            let scanned: Result<(u64, Vec<Vec<u8>>), _> = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(batch)
                .query_async(&mut conn)
                .await;
            let (next, keys) = match scanned {
                Ok(r) => r,
                Err(e) => return stalled(ns, format!("{node}: SCAN: {e}")),
            };
            let mut deleted = 0u64;
            if !keys.is_empty() {
                // One UNLINK per key: keys of a Redis Cluster node may sit in different
                // slots, which a multi-key command refuses.
                let mut pipe = redis::pipe();
                for key in &keys {
                    pipe.cmd("UNLINK").arg(key);
                }
                match pipe.query_async::<Vec<u64>>(&mut conn).await {
                    Ok(counts) => deleted = counts.iter().sum(),
                    Err(e) => return stalled(ns, format!("{node}: UNLINK: {e}")),
                }
            }
            if next == 0 {
                job.cursors.remove(&node);
                job.finished.push(node.clone());
            } else {
                job.cursors.insert(node.clone(), next);
            }
            job.deleted_this_pass += deleted;
            job.deleted_keys += deleted;
            // Removing keys needs no fence (a stale leader removing a few more of a
            // namespace being deleted does no harm); recording progress does.
            version = save(state, &path, &mut job, version).await?;
            state.metrics.deleted_keys.inc_by(deleted);
            if next == 0 {
                break;
            }
            if started.elapsed() >= budget {
                return Ok(());
            }
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
    }
    if job.deleted_this_pass > 0 {
        // Something was still there: look once more.
        start_pass(&mut job, &masters);
        save(state, &path, &mut job, version).await?;
        return Ok(());
    }
    finish(state, ns, &job, version).await
}

fn start_pass(job: &mut DeletionJob, masters: &[String]) {
    job.pass += 1;
    job.cursors = masters.iter().map(|m| (m.clone(), 0)).collect();
    job.finished.clear();
    job.deleted_this_pass = 0;
}

/// Saves progress; only the leader's write commits.
async fn save(
    state: &AppState,
    path: &str,
    job: &mut DeletionJob,
    version: i32,
) -> Result<i32, RegistryError> {
    job.updated_by = state.config.id.clone();
    job.updated_at_ms = now_ms();
    let results = state
        .registry
        .transact_fenced(&[Op::set(path, &*job, version)])
        .await?;
    Ok(results
        .first()
        .and_then(|r| r.as_ref())
        .map(|v| v.version)
        .unwrap_or(version + 1))
}

async fn finish(
    state: &AppState,
    ns: &str,
    job: &DeletionJob,
    version: i32,
) -> Result<(), RegistryError> {
    let now_s = now_ms() / 1000;
    for (jti, record) in crate::leader::token_records(state).await? {
        let r = &record.value;
        if !r.namespaces.iter().any(|n| n == ns)
            || r.revoked_at_ms.is_some()
            || r.expires_at < now_s
        {
            continue;
        }
        let revoked = TokenRecord {
            revoked_at_ms: Some(now_ms()),
            revoked_by: Some("system".into()),
            ..r.clone()
        };
        let revocation = Revocation {
            jti: jti.clone(),
            expires_at: r.expires_at,
            revoked_at_ms: now_ms(),
        };
        let ops = [
            Op::create(paths::revoked(&jti), &revocation),
            Op::set(paths::token(&jti), &revoked, record.version),
        ];
        match state.registry.transact_fenced(&ops).await {
            Ok(_) | Err(RegistryError::AlreadyExists { .. } | RegistryError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let ns_path = paths::namespace(ns);
    let namespace = state.registry.get::<Namespace>(&ns_path).await?;
    let mut ops = vec![Op::delete(paths::deletion(ns), Some(version))];
    if let Some(n) = &namespace {
        ops.push(Op::delete(&ns_path, Some(n.version)));
    }
    state.registry.transact_fenced(&ops).await?;
    state.usage.invalidate(&job.cluster);
    tracing::info!(namespace = %ns, keys = job.deleted_keys, passes = job.pass, "namespace deleted");
    let entry = AuditEntry {
        at_ms: now_ms(),
        actor: "system".into(),
        actor_token: None,
        instance: state.config.id.clone(),
        action: "namespace.deleted".into(),
        target: format!("namespace/{ns}"),
        method: String::new(),
        path: String::new(),
        status: 200,
        outcome: Outcome::Ok,
        detail: Some(format!(
            "{} removed from {} in {}; tokens revoked",
            plural(job.deleted_keys, "key"),
            job.cluster,
            plural(u64::from(job.pass), "pass")
        )),
        request: None,
        request_id: None,
    };
    crate::audit::append(state, &entry).await;
    Ok(())
}

fn plural(n: u64, word: &str) -> String {
    match (n, word.ends_with('s')) {
        (1, _) => format!("1 {word}"),
        (_, true) => format!("{n} {word}es"),
        (_, false) => format!("{n} {word}s"),
    }
}
