//! Multi-znode transactions: several checks and writes that commit together or not at all.
//!
//! [`Registry::transact`] is the plain form (for example: create a namespace and bump its
//! deployment's version in one step, so two placements racing for the same capacity
//! cannot both win). [`Registry::transact_fenced`] prepends a check that this process's
//! election candidate still exists and leads, so a leader that lost its session — paused,
//! partitioned — cannot write after another instance took over.

use std::time::Duration;

use zookeeper_client as zk;

use crate::codec;
use crate::error::{RegistryError, Result};
use crate::model::Record;
use crate::paths;
use crate::{Registry, Versioned};

/// One step of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// The znode exists at exactly `version`.
    Check { path: String, version: i32 },
    /// Creates a persistent znode.
    Create { path: String, data: Vec<u8> },
    /// Replaces a value if the znode is still at `version`.
    Set {
        path: String,
        data: Vec<u8>,
        version: i32,
    },
    /// Deletes a znode (at `version` when given).
    Delete { path: String, version: Option<i32> },
}

impl Op {
    pub fn check(path: impl Into<String>, version: i32) -> Self {
        Op::Check {
            path: path.into(),
            version,
        }
    }

    pub fn create<T: Record>(path: impl Into<String>, value: &T) -> Self {
        Op::Create {
            path: path.into(),
            data: codec::encode(value),
        }
    }

    pub fn set<T: Record>(path: impl Into<String>, value: &T, version: i32) -> Self {
        Op::Set {
            path: path.into(),
            data: codec::encode(value),
            version,
        }
    }

    pub fn delete(path: impl Into<String>, version: Option<i32>) -> Self {
        Op::Delete {
            path: path.into(),
            version,
        }
    }

    pub fn path(&self) -> &str {
        match self {
            Op::Check { path, .. }
            | Op::Create { path, .. }
            | Op::Set { path, .. }
            | Op::Delete { path, .. } => path,
        }
    }
}

/// What each step of a committed transaction left behind: the znode's new version and
/// zxid for creates and sets, `None` for checks and deletes.
pub type OpResult = Option<Versioned<()>>;

fn acl() -> zk::Acls<'static> {
    zk::Acls::anyone_all()
}

impl Registry {
    fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.config().request_timeout_ms)
    }

    /// Commits `ops` atomically. A failed step is reported as the typed error of that
    /// step's path ([`RegistryError::Conflict`], [`RegistryError::AlreadyExists`], ...);
    /// a transaction that got no answer is [`RegistryError::Indeterminate`].
    pub async fn transact(&self, ops: &[Op]) -> Result<Vec<OpResult>> {
        self.commit(None, ops).await
    }

    /// Commits `ops` only while this process leads: ZooKeeper checks in the same
    /// transaction that its candidate znode still exists, and it was the first candidate
    /// when the transaction was built (later candidates always sort after it).
    /// [`RegistryError::Fenced`] otherwise — also when the session that holds the
    /// candidacy has expired, since its candidate znode is gone with it.
    pub async fn transact_fenced(&self, ops: &[Op]) -> Result<Vec<OpResult>> {
        let Some(mine) = self.candidate() else {
            return Err(RegistryError::Fenced);
        };
        let client = self.client()?;
        let mut candidates =
            match tokio::time::timeout(self.request_timeout(), client.list_children(paths::LEADER))
                .await
            {
                Ok(Ok(c)) => c,
                Ok(Err(zk::Error::SessionExpired)) => return Err(RegistryError::Fenced),
                Ok(Err(e)) => return Err(RegistryError::from_zk(paths::LEADER, e)),
                Err(_) => {
                    return Err(RegistryError::Unavailable(format!(
                        "request on {} timed out",
                        paths::LEADER
                    )));
                }
            };
        candidates.sort();
        if candidates.first() != Some(&mine) {
            return Err(RegistryError::Fenced);
        }
        self.commit(Some(format!("{}/{mine}", paths::LEADER)), ops)
            .await
    }

    /// Creates a persistent znode while this process leads.
    pub async fn create_fenced<T: Record>(&self, path: &str, value: &T) -> Result<()> {
        self.transact_fenced(&[Op::create(path, value)])
            .await
            .map(|_| ())
    }

    /// Deletes a znode while this process leads.
    pub async fn delete_fenced(&self, path: &str, expected_version: Option<i32>) -> Result<()> {
        self.transact_fenced(&[Op::delete(path, expected_version)])
            .await
            .map(|_| ())
    }

    /// Creates a persistent sequential znode `<prefix><seq>` and returns its name (the
    /// last path segment). Sequence numbers rise with every child created under the
    /// parent, so names sort in creation order.
    pub async fn create_sequential<T: Record>(&self, prefix: &str, value: &T) -> Result<String> {
        let client = self.client()?;
        let options = zk::CreateMode::PersistentSequential.with_acls(acl());
        let create = client.create(prefix, &codec::encode(value), &options);
        let (_, seq) = match tokio::time::timeout(self.request_timeout(), create).await {
            Ok(Err(zk::Error::ConnectionLoss)) | Err(_) => {
                return Err(RegistryError::Indeterminate {
                    path: prefix.to_owned(),
                });
            }
            Ok(result) => result.map_err(|e| RegistryError::from_zk(prefix, e))?,
        };
        let last = prefix.rsplit('/').next().unwrap_or_default();
        Ok(format!("{last}{seq}"))
    }

    async fn commit(&self, fence: Option<String>, ops: &[Op]) -> Result<Vec<OpResult>> {
        if ops.is_empty() && fence.is_none() {
            return Ok(Vec::new());
        }
        let client = self.client()?;
        let options = zk::CreateMode::Persistent.with_acls(acl());
        let mut writer = client.new_multi_writer();
        let offset = usize::from(fence.is_some());
        if let Some(fence) = &fence {
            writer
                .add_check_version(fence, 0)
                .map_err(|e| RegistryError::from_zk(fence, e))?;
        }
        for op in ops {
            let added = match op {
                Op::Check { path, version } => writer.add_check_version(path, *version),
                Op::Create { path, data } => writer.add_create(path, data, &options),
                Op::Set {
                    path,
                    data,
                    version,
                } => writer.add_set_data(path, data, Some(*version)),
                Op::Delete { path, version } => writer.add_delete(path, *version),
            };
            added.map_err(|e| RegistryError::from_zk(op.path(), e))?;
        }
        let first_path = ops.first().map(Op::path).unwrap_or("/");
        let results = match tokio::time::timeout(self.request_timeout(), writer.commit()).await {
            // Sent, but no answer: it may or may not have been applied.
            Err(_)
            | Ok(Err(zk::MultiWriteError::RequestFailed {
                source: zk::Error::ConnectionLoss,
            })) => {
                return Err(RegistryError::Indeterminate {
                    path: first_path.to_owned(),
                });
            }
            Ok(Ok(results)) => results,
            Ok(Err(zk::MultiWriteError::OperationFailed { index, source })) => {
                if fence.is_some() && index == 0 {
                    return Err(RegistryError::Fenced);
                }
                let path = ops.get(index - offset).map(Op::path).unwrap_or(first_path);
                return Err(RegistryError::from_zk(path, source));
            }
            Ok(Err(zk::MultiWriteError::RequestFailed {
                source: zk::Error::SessionExpired,
            })) if fence.is_some() => return Err(RegistryError::Fenced),
            Ok(Err(zk::MultiWriteError::RequestFailed { source })) => {
                return Err(RegistryError::from_zk(first_path, source));
            }
        };
        Ok(results
            .into_iter()
            .skip(offset)
            .map(|r| match r {
                zk::MultiWriteResult::Create { stat, .. }
                | zk::MultiWriteResult::SetData { stat } => Some(Versioned {
                    value: (),
                    version: stat.version,
                    modified_zxid: stat.mzxid,
                }),
                _ => None,
            })
            .collect())
    }
}
