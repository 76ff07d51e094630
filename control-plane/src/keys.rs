//! The signing key set: private Ed25519 keys on disk, public halves in the registry.
//!
//! Private keys live in `key_dir` as `<kid>.pem` (PKCS#8, mode 0600) and are readable
//! only on control-plane hosts; gateways and agents never see them. The newest key that
//! the registry lists as active signs; every active key verifies, so rotation does not
//! break tokens already issued, and retiring a key (in the registry) makes every verifier
//! refuse its tokens.
//!
//! [`KeyRing`] is what a running control plane holds: the [`KeyStore`] behind a lock,
//! re-read from disk when the registry shows an active key this instance does not hold
//! (another instance sharing the directory rotated).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use ed25519_dalek::SigningKey as DalekKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use larder_registry::auth::{Claims, ISSUER};
use larder_registry::model::{KeyState, SigningKey};
use larder_registry::{Registry, RegistryError, Snapshot, paths};

/// Failures handling the key directory.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key directory {dir}: {source}")]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("signing key {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("no signing key in {0}")]
    Empty(PathBuf),
    #[error("signing key {kid} differs from the one published in the registry")]
    Mismatch { kid: String },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("cannot sign: {0}")]
    Sign(String),
    #[error(
        "this instance holds no active signing key; copy the key directory from another control-plane host or rotate"
    )]
    NoActiveKey,
    #[error("signing key {0} is not held by this instance")]
    NotHeld(String),
}

/// One private key.
pub struct PrivateKey {
    pub kid: String,
    encoding: EncodingKey,
    /// Raw public key, base64url (JWK `x`).
    pub public_key: String,
    pub created_at_ms: u64,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// The keys of one key directory, newest last.
#[derive(Debug)]
pub struct KeyStore {
    dir: PathBuf,
    keys: Vec<PrivateKey>,
}

fn io(dir: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        dir: dir.to_owned(),
        source,
    }
}

impl KeyStore {
    /// Loads every `<kid>.pem` in `dir`.
    pub fn load(dir: &Path) -> Result<Self, KeyError> {
        let mut keys = Vec::new();
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self {
                    dir: dir.to_owned(),
                    keys,
                });
            }
            Err(e) => return Err(io(dir)(e)),
        };
        for entry in entries {
            let path = entry.map_err(io(dir))?.path();
            let Some(kid) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".pem"))
            else {
                continue;
            };
            let invalid = |reason: String| KeyError::Invalid {
                path: path.clone(),
                reason,
            };
            let mode = fs::metadata(&path).map_err(io(dir))?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(invalid(format!(
                    "mode {:o} lets others read it; chmod 600",
                    mode & 0o777
                )));
            }
            let pem = fs::read_to_string(&path).map_err(io(dir))?;
            let dalek = DalekKey::from_pkcs8_pem(&pem).map_err(|e| invalid(e.to_string()))?;
            let encoding =
                EncodingKey::from_ed_pem(pem.as_bytes()).map_err(|e| invalid(e.to_string()))?;
            let created_at_ms = fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as u64)
                .unwrap_or_default();
            keys.push(PrivateKey {
                kid: kid.to_owned(),
                encoding,
                public_key: base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(dalek.verifying_key().as_bytes()),
                created_at_ms,
            });
        }
        // Key ids embed their creation time, so name order is age order.
        keys.sort_by(|a, b| a.kid.cmp(&b.kid));
        Ok(Self {
            dir: dir.to_owned(),
            keys,
        })
    }

    /// Loads the directory, creating it and a first key when it holds none.
    pub fn load_or_create(dir: &Path) -> Result<Self, KeyError> {
        let mut store = Self::load(dir)?;
        if store.keys.is_empty() {
            store.generate()?;
        }
        Ok(store)
    }

    /// Creates a new key; it signs from now on.
    pub fn generate(&mut self) -> Result<&PrivateKey, KeyError> {
        fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700)).map_err(io(&self.dir))?;
        let key = DalekKey::generate(&mut rand::rngs::OsRng);
        let pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| KeyError::Sign(e.to_string()))?;
        let kid = format!(
            "k{}-{:08x}",
            larder_registry::now_ms(),
            rand::random::<u32>()
        );
        let path = self.dir.join(format!("{kid}.pem"));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io(&self.dir))?;
        file.write_all(pem.as_bytes()).map_err(io(&self.dir))?;
        *self = Self::load(&self.dir)?;
        self.keys
            .last()
            .ok_or_else(|| KeyError::Empty(self.dir.clone()))
    }

    /// The key that signs new tokens.
    pub fn active(&self) -> Result<&PrivateKey, KeyError> {
        self.keys
            .last()
            .ok_or_else(|| KeyError::Empty(self.dir.clone()))
    }

    pub fn keys(&self) -> &[PrivateKey] {
        &self.keys
    }

    /// Signs `claims` with the newest key in the directory (the bootstrap path, which has
    /// no registry to ask which keys are retired).
    pub fn sign(&self, claims: &Claims) -> Result<(String, String), KeyError> {
        let key = self.active()?;
        Ok((sign_with(key, claims)?, key.kid.clone()))
    }

    /// The key `kid`, if this directory holds it.
    pub fn get(&self, kid: &str) -> Option<&PrivateKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    /// The public records of every key held, as they are first published.
    pub fn records(&self) -> Vec<SigningKey> {
        self.keys
            .iter()
            .map(|key| SigningKey {
                kid: key.kid.clone(),
                alg: "EdDSA".into(),
                public_key: key.public_key.clone(),
                state: KeyState::Active,
                created_at_ms: key.created_at_ms,
            })
            .collect()
    }

    /// Publishes each public key the registry does not hold yet. A key id already
    /// published with another public key is refused: two key sets must not mix.
    pub async fn publish(&self, registry: &Registry) -> Result<(), KeyError> {
        publish(registry, self.records()).await
    }
}

fn sign_with(key: &PrivateKey, claims: &Claims) -> Result<String, KeyError> {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding).map_err(|e| KeyError::Sign(e.to_string()))
}

async fn publish(registry: &Registry, records: Vec<SigningKey>) -> Result<(), KeyError> {
    for record in records {
        let path = paths::key(&record.kid);
        match registry.create(&path, &record).await {
            Ok(_) => tracing::info!(kid = %record.kid, "published signing key"),
            Err(RegistryError::AlreadyExists { .. }) => {
                let existing = registry.get::<SigningKey>(&path).await?;
                if existing.is_some_and(|e| e.value.public_key != record.public_key) {
                    return Err(KeyError::Mismatch { kid: record.kid });
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// How often the key directory may be re-read while the registry lists an active key
/// this instance does not hold (a key directory not shared with the instance that
/// rotated would otherwise be re-read on every request).
const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// The running control plane's key set.
#[derive(Debug)]
pub struct KeyRing {
    store: RwLock<KeyStore>,
    last_reload: Mutex<Option<Instant>>,
}

impl KeyRing {
    pub fn new(store: KeyStore) -> Self {
        Self {
            store: RwLock::new(store),
            last_reload: Mutex::new(None),
        }
    }

    // A panic while holding either lock cannot leave the store half-replaced (it is
    // swapped whole), so a poisoned lock is still usable.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, KeyStore> {
        self.store.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, KeyStore> {
        self.store.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Key ids held by this instance, oldest first.
    pub fn held(&self) -> Vec<String> {
        self.read().keys.iter().map(|k| k.kid.clone()).collect()
    }

    /// Re-reads the directory when `snapshot` lists an active key not held here.
    fn refresh(&self, snapshot: &Snapshot) {
        let missing = {
            let store = self.read();
            snapshot
                .keys
                .values()
                .any(|k| k.value.state == KeyState::Active && store.get(&k.value.kid).is_none())
        };
        if !missing {
            return;
        }
        {
            let mut last = self.last_reload.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < RELOAD_INTERVAL) {
                return;
            }
            *last = Some(Instant::now());
        }
        let dir = self.read().dir.clone();
        match KeyStore::load(&dir) {
            Ok(store) => *self.write() = store,
            Err(e) => tracing::warn!(error = %e, "cannot re-read the key directory"),
        }
    }

    /// The key that signs now: the newest held key the registry lists as active.
    pub fn signer(&self, snapshot: &Snapshot) -> Result<String, KeyError> {
        self.refresh(snapshot);
        let store = self.read();
        store
            .keys
            .iter()
            .rev()
            .find(|k| {
                snapshot
                    .keys
                    .get(&k.kid)
                    .is_some_and(|r| r.value.state == KeyState::Active)
            })
            .map(|k| k.kid.clone())
            .ok_or(KeyError::NoActiveKey)
    }

    /// Signs `claims` with the current signer; returns the token and the key id.
    pub fn sign(&self, snapshot: &Snapshot, claims: &Claims) -> Result<(String, String), KeyError> {
        let kid = self.signer(snapshot)?;
        let token = self.sign_with(&kid, claims)?;
        Ok((token, kid))
    }

    /// Signs `claims` with the key `kid` (Ed25519 is deterministic: the same claims and
    /// key give the same token).
    pub fn sign_with(&self, kid: &str, claims: &Claims) -> Result<String, KeyError> {
        let store = self.read();
        let key = store
            .get(kid)
            .ok_or_else(|| KeyError::NotHeld(kid.to_owned()))?;
        sign_with(key, claims)
    }

    /// Creates a new key in the directory and publishes its public half; it signs from
    /// then on. Returns its record.
    pub async fn rotate(&self, registry: &Registry) -> Result<SigningKey, KeyError> {
        let record = {
            let mut store = self.write();
            let kid = store.generate()?.kid.clone();
            store
                .records()
                .into_iter()
                .find(|r| r.kid == kid)
                .ok_or(KeyError::NoActiveKey)?
        };
        publish(registry, vec![record.clone()]).await?;
        Ok(record)
    }

    /// Publishes every held key the registry does not list yet.
    pub async fn publish(&self, registry: &Registry) -> Result<(), KeyError> {
        let records = self.read().records();
        publish(registry, records).await
    }
}

/// Claims of a new token.
pub fn claims(
    subject: &str,
    audience: &str,
    namespaces: Vec<String>,
    perms: Vec<larder_registry::auth::Permission>,
    ttl_s: u64,
) -> Claims {
    let now = larder_registry::now_ms() / 1000;
    Claims {
        iss: ISSUER.into(),
        aud: audience.into(),
        sub: subject.into(),
        exp: now + ttl_s,
        nbf: now,
        iat: now,
        jti: uuid::Uuid::new_v4().simple().to_string(),
        ns: namespaces,
        perms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_private_and_sign() {
        let dir = std::env::temp_dir().join(format!("larder-keys-{}", uuid::Uuid::new_v4()));
        let store = KeyStore::load_or_create(&dir).unwrap();
        let kid = store.active().unwrap().kid.clone();
        let mode = fs::metadata(dir.join(format!("{kid}.pem")))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let c = claims("me", "aud", vec![], vec![], 60);
        let (token, signed_by) = store.sign(&c).unwrap();
        assert_eq!(signed_by, kid);
        assert_eq!(token.split('.').count(), 3);
        // A world-readable key is refused at load.
        fs::set_permissions(
            dir.join(format!("{kid}.pem")),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        assert!(
            KeyStore::load(&dir)
                .unwrap_err()
                .to_string()
                .contains("chmod 600")
        );
        fs::remove_dir_all(dir).unwrap();
    }
}
