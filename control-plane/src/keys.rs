//! The signing key set: private Ed25519 keys on disk, public halves in the registry.
//!
//! Private keys live in `key_dir` as `<kid>.pem` (PKCS#8, mode 0600) and are readable
//! only on control-plane hosts; gateways and agents never see them. The newest key signs;
//! every active key verifies, so rotation does not break tokens already issued.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use ed25519_dalek::SigningKey as DalekKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use larder_registry::auth::{Claims, ISSUER};
use larder_registry::model::{KeyState, SigningKey};
use larder_registry::{Registry, RegistryError, paths};

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

    /// Signs `claims` with the active key.
    pub fn sign(&self, claims: &Claims) -> Result<(String, String), KeyError> {
        let key = self.active()?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        let token = jsonwebtoken::encode(&header, claims, &key.encoding)
            .map_err(|e| KeyError::Sign(e.to_string()))?;
        Ok((token, key.kid.clone()))
    }

    /// Publishes each public key the registry does not hold yet. A key id already
    /// published with another public key is refused: two key sets must not mix.
    pub async fn publish(&self, registry: &Registry) -> Result<(), KeyError> {
        for key in &self.keys {
            let record = SigningKey {
                kid: key.kid.clone(),
                alg: "EdDSA".into(),
                public_key: key.public_key.clone(),
                state: KeyState::Active,
                created_at_ms: key.created_at_ms,
            };
            match registry.create(&paths::key(&key.kid), &record).await {
                Ok(_) => tracing::info!(kid = %key.kid, "published signing key"),
                Err(RegistryError::AlreadyExists { .. }) => {
                    let existing = registry.get::<SigningKey>(&paths::key(&key.kid)).await?;
                    if existing.is_some_and(|e| e.value.public_key != key.public_key) {
                        return Err(KeyError::Mismatch {
                            kid: key.kid.clone(),
                        });
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
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
