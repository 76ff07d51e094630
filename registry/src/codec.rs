//! The schema envelope: every value is a JSON object with `"schema": 1` beside its fields.

use serde_json::Value;

use crate::error::{RegistryError, Result};
use crate::model::Record;

/// The schema this build writes and the newest it reads.
pub const SCHEMA: u64 = 1;

/// Serialises `value` with the envelope.
pub fn encode<T: Record>(value: &T) -> Vec<u8> {
    let mut json = serde_json::to_value(value).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut json {
        map.insert("schema".into(), Value::from(SCHEMA));
    }
    serde_json::to_vec(&json).unwrap_or_default()
}

/// Parses a value stored at `path`, refusing a missing or newer schema.
pub fn decode<T: Record>(path: &str, bytes: &[u8]) -> Result<T> {
    let invalid = |reason: String| RegistryError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let mut json: Value =
        serde_json::from_slice(bytes).map_err(|e| invalid(format!("not JSON: {e}")))?;
    let Value::Object(map) = &mut json else {
        return Err(invalid(format!("a {} must be a JSON object", T::KIND)));
    };
    match map.remove("schema").and_then(|v| v.as_u64()) {
        Some(SCHEMA) => {}
        Some(other) => {
            return Err(invalid(format!(
                "schema {other} is newer than this build understands"
            )));
        }
        None => return Err(invalid("no \"schema\" field".into())),
    }
    serde_json::from_value(json).map_err(|e| invalid(format!("not a valid {}: {e}", T::KIND)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Limits, Namespace, NamespaceState, NearCachePolicy};

    fn ns() -> Namespace {
        Namespace {
            name: "orders".into(),
            owner: "team-orders".into(),
            cluster: "main".into(),
            state: NamespaceState::Active,
            limits: Limits::default(),
            near_cache: NearCachePolicy::On {
                max_staleness_ms: 50,
            },
            revision: 3,
            created_at_ms: 1,
        }
    }

    #[test]
    fn round_trip_carries_the_schema() {
        let bytes = encode(&ns());
        let json: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["schema"], 1);
        assert_eq!(json["near_cache"]["mode"], "on");
        assert_eq!(
            decode::<Namespace>("/namespaces/orders", &bytes).unwrap(),
            ns()
        );
    }

    #[test]
    fn refuses_newer_missing_schema_and_garbage() {
        let mut json = serde_json::to_value(ns()).unwrap();
        assert!(decode::<Namespace>("/p", &serde_json::to_vec(&json).unwrap()).is_err());
        json["schema"] = 2.into();
        let err = decode::<Namespace>("/p", &serde_json::to_vec(&json).unwrap()).unwrap_err();
        assert!(err.to_string().contains("newer"), "{err}");
        assert!(decode::<Namespace>("/p", b"\xff").is_err());
        assert!(decode::<Namespace>("/p", b"[1]").is_err());
    }
}
