//! Token claims shared by the issuer (control plane) and the verifiers (gateway, control plane).
//!
//! Tokens are JWTs signed with Ed25519 (`alg: EdDSA`); the header's `kid` names a public
//! key under `/auth/keys`. The algorithm is fixed by the verifier, never taken from the token.

use serde::{Deserialize, Serialize};

/// `iss` of every token.
pub const ISSUER: &str = "larder";
/// `aud` of tenant tokens, accepted by gateways.
pub const TENANT_AUDIENCE: &str = "larder-gateway";
/// `aud` of admin tokens, accepted by the control plane.
pub const ADMIN_AUDIENCE: &str = "larder-admin";
/// Clock skew tolerated on `exp` and `nbf`, seconds.
pub const LEEWAY_S: u64 = 30;

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    Read,
    Write,
    Queue,
    Admin,
}

impl Permission {
    pub const TENANT: [Permission; 3] = [Permission::Read, Permission::Write, Permission::Queue];
}

/// The claims Larder puts in every token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// Who holds the token (a team, service or person).
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    #[serde(default)]
    pub nbf: u64,
    #[serde(default)]
    pub iat: u64,
    /// Token id; revocation is by `jti`.
    pub jti: String,
    /// Namespaces the token may touch (empty for admin tokens).
    #[serde(default)]
    pub ns: Vec<String>,
    pub perms: Vec<Permission>,
}

impl Claims {
    pub fn allows(&self, namespace: &str, permission: Permission) -> bool {
        self.perms.contains(&permission) && self.ns.iter().any(|n| n == namespace)
    }
}

/// Why a token was refused. Every variant is the caller's fault (401), so the message
/// may be shown to the client; it never contains the token itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no bearer token")]
    Missing,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token algorithm {0} is not accepted (only EdDSA)")]
    Algorithm(String),
    #[error("token names no key id (kid)")]
    NoKeyId,
    #[error("unknown signing key {0:?}")]
    UnknownKey(String),
    #[error("signing key {0:?} is retired")]
    RetiredKey(String),
    #[error("token expired")]
    Expired,
    #[error("token not valid yet (nbf)")]
    NotYetValid,
    #[error("token is for another audience")]
    Audience,
    #[error("token has the wrong issuer")]
    Issuer,
    #[error("bad token signature")]
    Signature,
    #[error("invalid token claims: {0}")]
    Claims(String),
    #[error("token has been revoked")]
    Revoked,
}

/// Verifies `token` for `audience` against the public keys and revocations in
/// `snapshot`. The algorithm is fixed to EdDSA here, whatever the header says, so
/// `alg: none` and HMAC-with-the-public-key forgeries are refused before any crypto.
pub fn verify(
    snapshot: &crate::Snapshot,
    token: &str,
    audience: &str,
) -> Result<Claims, TokenError> {
    use jsonwebtoken::errors::ErrorKind;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};

    let header =
        jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
    if header.alg != Algorithm::EdDSA {
        return Err(TokenError::Algorithm(format!("{:?}", header.alg)));
    }
    let kid = header.kid.ok_or(TokenError::NoKeyId)?;
    let key = snapshot
        .keys
        .get(&kid)
        .ok_or_else(|| TokenError::UnknownKey(kid.clone()))?;
    if key.value.state != crate::model::KeyState::Active {
        return Err(TokenError::RetiredKey(kid));
    }
    let decoding = DecodingKey::from_ed_components(&key.value.public_key)
        .map_err(|_| TokenError::UnknownKey(kid.clone()))?;
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.leeway = LEEWAY_S;
    validation.validate_nbf = true;
    validation.set_audience(&[audience]);
    validation.set_issuer(&[ISSUER]);
    validation.set_required_spec_claims(&["exp", "aud", "iss"]);
    let data =
        jsonwebtoken::decode::<Claims>(token, &decoding, &validation).map_err(|e| {
            match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidAudience => TokenError::Audience,
                ErrorKind::InvalidIssuer => TokenError::Issuer,
                ErrorKind::InvalidSignature => TokenError::Signature,
                ErrorKind::Json(_) | ErrorKind::MissingRequiredClaim(_) => {
                    TokenError::Claims(e.to_string())
                }
                _ => TokenError::Malformed(e.to_string()),
            }
        })?;
    if snapshot.is_revoked(&data.claims.jti) {
        return Err(TokenError::Revoked);
    }
    Ok(data.claims)
}

/// Property tests of [`verify`] against a snapshot holding one active Ed25519 key: no
/// input panics, nothing but a well-formed, correctly signed, EdDSA token with the right
/// claims verifies, and every byte change to a real token breaks it.
#[cfg(test)]
mod properties {
    use std::sync::Arc;

    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;
    use crate::Versioned;
    use crate::model::{KeyState, Revocation, SigningKey};
    use crate::snapshot::Snapshot;

    const KID: &str = "k-test";
    const RETIRED_KID: &str = "k-retired";
    const REVOKED_JTI: &str = "revoked-1";

    fn signing_key(seed: u8) -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
    }

    fn encoding_key(seed: u8) -> EncodingKey {
        let pem = signing_key(seed)
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .unwrap();
        EncodingKey::from_ed_pem(pem.as_bytes()).unwrap()
    }

    fn public_key(seed: u8) -> String {
        URL_SAFE_NO_PAD.encode(signing_key(seed).verifying_key().as_bytes())
    }

    /// A snapshot with the active key `KID` (seed 1), the retired key `RETIRED_KID`
    /// (seed 2) and one revoked token id.
    fn snapshot() -> Snapshot {
        let mut s = Snapshot::default();
        for (kid, seed, state) in [
            (KID, 1, KeyState::Active),
            (RETIRED_KID, 2, KeyState::Retired),
        ] {
            s.keys.insert(
                kid.into(),
                Arc::new(Versioned {
                    value: SigningKey {
                        kid: kid.into(),
                        alg: "EdDSA".into(),
                        public_key: public_key(seed),
                        state,
                        created_at_ms: 0,
                    },
                    version: 0,
                    modified_zxid: 0,
                }),
            );
        }
        s.revoked.insert(
            REVOKED_JTI.into(),
            Arc::new(Versioned {
                value: Revocation {
                    jti: REVOKED_JTI.into(),
                    expires_at: u64::MAX,
                    revoked_at_ms: 0,
                },
                version: 0,
                modified_zxid: 0,
            }),
        );
        s
    }

    fn now() -> i64 {
        (crate::now_ms() / 1000) as i64
    }

    fn claims(aud: &str, iss: &str, exp: i64, nbf: i64, jti: &str) -> Value {
        json!({"iss": iss, "aud": aud, "sub": "team", "exp": exp, "nbf": nbf, "iat": now(),
               "jti": jti, "ns": ["orders"], "perms": ["read", "write"]})
    }

    fn sign(kid: Option<&str>, seed: u8, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &encoding_key(seed)).unwrap()
    }

    fn real_token() -> String {
        let c = claims(TENANT_AUDIENCE, ISSUER, now() + 3600, now(), "jti-1");
        sign(Some(KID), 1, &c)
    }

    #[test]
    fn the_real_token_verifies() {
        let claims = verify(&snapshot(), &real_token(), TENANT_AUDIENCE).unwrap();
        assert_eq!(claims.ns, ["orders"]);
    }

    /// One edit of a token's text.
    #[derive(Debug, Clone)]
    enum Mutation {
        Replace(usize, char),
        Insert(usize, char),
        Remove(usize, usize),
        Truncate(usize),
        SwapSegments(usize, usize),
        Append(String),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        let c = prop_oneof![
            8 => prop::sample::select(
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
                    .chars()
                    .collect::<Vec<_>>()
            ),
            1 => prop::sample::select(vec!['.', '=', '+', '/', ' ', '\0', 'é']),
        ];
        prop_oneof![
            4 => (any::<usize>(), c.clone()).prop_map(|(i, c)| Mutation::Replace(i, c)),
            2 => (any::<usize>(), c).prop_map(|(i, c)| Mutation::Insert(i, c)),
            2 => (any::<usize>(), 1..8usize).prop_map(|(i, n)| Mutation::Remove(i, n)),
            1 => any::<usize>().prop_map(Mutation::Truncate),
            1 => (0..3usize, 0..3usize).prop_map(|(a, b)| Mutation::SwapSegments(a, b)),
            1 => "[.A-Za-z0-9_-]{1,12}".prop_map(Mutation::Append),
        ]
    }

    fn apply(token: &str, m: &Mutation) -> String {
        let mut chars: Vec<char> = token.chars().collect();
        let n = chars.len();
        match m {
            Mutation::Replace(i, c) => chars[i % n] = *c,
            Mutation::Insert(i, c) => chars.insert(i % (n + 1), *c),
            Mutation::Remove(i, k) => {
                let at = i % n;
                chars.drain(at..(at + k).min(n));
            }
            Mutation::Truncate(i) => chars.truncate(i % n),
            Mutation::SwapSegments(a, b) => {
                let mut parts: Vec<&str> = token.split('.').collect();
                if *a < parts.len() && *b < parts.len() {
                    parts.swap(*a, *b);
                }
                return parts.join(".");
            }
            Mutation::Append(s) => chars.extend(s.chars()),
        }
        chars.into_iter().collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1_000))]

        /// Arbitrary text, and text shaped like a JWT, never panics and never verifies.
        #[test]
        fn arbitrary_strings_never_verify(token in prop_oneof![
            any::<String>(),
            "[A-Za-z0-9_-]{0,60}\\.[A-Za-z0-9_-]{0,60}\\.[A-Za-z0-9_-]{0,90}",
            "eyJ[A-Za-z0-9_-]{0,60}\\.eyJ[A-Za-z0-9_-]{0,60}\\.[A-Za-z0-9_-]{86}",
        ]) {
            prop_assert!(verify(&snapshot(), &token, TENANT_AUDIENCE).is_err());
        }

    }

    proptest! {
        // Each case signs or verifies an Ed25519 signature: fewer cases, same coverage
        // of the small input space.
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Every edit of a real token's text makes it fail: header, claims and
        /// signature are all covered by the signature, and no other spelling of the same
        /// bytes is accepted.
        #[test]
        fn mutated_tokens_never_verify(mutations in proptest::collection::vec(mutation(), 1..4)) {
            let token = real_token();
            let mutated = mutations.iter().fold(token.clone(), |t, m| if t.is_empty() { t } else { apply(&t, m) });
            prop_assume!(mutated != token);
            let outcome = verify(&snapshot(), &mutated, TENANT_AUDIENCE);
            prop_assert!(outcome.is_err(), "{:?} verified: {:?}", mutated, outcome);
        }

    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1_000))]

        /// Only EdDSA is accepted, whatever the header asks for: `none`, HMAC keyed with
        /// the public key (the classic algorithm-confusion forgery), RSA and ECDSA names,
        /// and unknown names are refused before any signature check.
        #[test]
        fn only_eddsa_is_accepted(
            alg in prop_oneof![
                prop::sample::select(vec![
                    "none", "None", "NONE", "HS256", "HS384", "HS512", "RS256", "PS256",
                    "ES256", "ES384", "eddsa", "EDDSA", "Ed25519", "",
                ]).prop_map(str::to_owned),
                "[A-Za-z0-9]{0,8}",
            ],
            signature in prop_oneof![
                Just(String::new()),
                "[A-Za-z0-9_-]{1,90}",
            ],
        ) {
            prop_assume!(alg != "EdDSA");
            let header = json!({"alg": alg, "typ": "JWT", "kid": KID});
            let body = claims(TENANT_AUDIENCE, ISSUER, now() + 3600, now(), "jti-1");
            let token = format!(
                "{}.{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(body.to_string()),
                signature
            );
            let outcome = verify(&snapshot(), &token, TENANT_AUDIENCE);
            prop_assert!(
                matches!(outcome, Err(TokenError::Algorithm(_) | TokenError::Malformed(_))),
                "{} -> {:?}", alg, outcome
            );
        }

    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// A properly signed token verifies exactly when every rule holds: active known
        /// key, tenant audience, Larder issuer, not expired, valid now (30 s leeway
        /// either way), not revoked.
        #[test]
        fn signed_tokens_verify_only_when_every_rule_holds(
            kid in prop::sample::select(vec![Some(KID), Some(RETIRED_KID), Some("k-unknown"), None]),
            seed in prop::sample::select(vec![1u8, 2, 3]),
            aud in prop::sample::select(vec![TENANT_AUDIENCE, ADMIN_AUDIENCE, "", "larder-gateway "]),
            iss in prop::sample::select(vec![ISSUER, "Larder", "", "evil"]),
            exp in prop::sample::select(vec![-3600i64, -100, -40, -20, 0, 100, 3600]),
            nbf in prop::sample::select(vec![-3600i64, -20, 0, 20, 40, 3600]),
            jti in prop::sample::select(vec!["jti-1", REVOKED_JTI]),
        ) {
            let c = claims(aud, iss, now() + exp, now() + nbf, jti);
            let token = sign(kid, seed, &c);
            let signed_by_the_named_key = match kid {
                Some(KID) => seed == 1,
                Some(RETIRED_KID) => seed == 2,
                _ => false,
            };
            let expected = kid == Some(KID)
                && signed_by_the_named_key
                && aud == TENANT_AUDIENCE
                && iss == ISSUER
                && exp > -(LEEWAY_S as i64)
                && nbf <= LEEWAY_S as i64
                && jti != REVOKED_JTI;
            let outcome = verify(&snapshot(), &token, TENANT_AUDIENCE);
            prop_assert_eq!(outcome.is_ok(), expected, "{:?}", outcome);
        }
    }
}
