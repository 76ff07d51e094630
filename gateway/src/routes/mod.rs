//! Handlers, one file per resource.

pub mod health;
pub mod keys;

use axum::extract::RawPathParams;

use crate::error::ApiError;

/// The namespace and (percent-decoded, any bytes) key of a `/keys/{*key}` route.
///
/// Raw parameters are used because a key is bytes, not necessarily UTF-8: `%FF` must
/// reach Redis as the byte 0xFF, not be refused or re-encoded.
pub(crate) fn ns_and_key(params: &RawPathParams) -> Result<(String, Vec<u8>), ApiError> {
    let mut ns = None;
    let mut key = None;
    for (name, value) in params {
        match name {
            "ns" => ns = Some(value),
            "key" => key = Some(value),
            _ => {}
        }
    }
    let ns = ns.ok_or_else(|| ApiError::BadRequest("missing namespace".into()))?;
    let ns = percent_encoding::percent_decode_str(ns)
        .decode_utf8()
        .map_err(|_| ApiError::BadRequest("namespace is not UTF-8".into()))?
        .into_owned();
    let key: Vec<u8> = percent_encoding::percent_decode_str(key.unwrap_or_default()).collect();
    if key.is_empty() {
        return Err(ApiError::BadRequest("the key must not be empty".into()));
    }
    Ok((ns, key))
}
