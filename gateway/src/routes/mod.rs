//! Handlers, one file per resource.

pub mod batch;
pub mod counters;
pub mod health;
pub mod hotkeys;
pub mod keys;
pub mod list;
pub mod queues;

use axum::http::Uri;

use crate::error::ApiError;

/// The namespace and the key (percent-decoded, any bytes) of a
/// `/v1/namespaces/{ns}/<resource>/{*key}` request, read from the raw request path.
///
/// The raw path is used because a key is bytes, not necessarily UTF-8: `%FF` must reach
/// Redis as the byte 0xFF, and axum's own path extractors refuse non-UTF-8 values.
pub(crate) fn ns_and_key(uri: &Uri, resource: &str) -> Result<(String, Vec<u8>), ApiError> {
    let path = uri.path();
    let rest = path
        .strip_prefix("/v1/namespaces/")
        .ok_or_else(|| ApiError::BadRequest("unexpected path".into()))?;
    let (ns, rest) = rest
        .split_once('/')
        .ok_or_else(|| ApiError::BadRequest("unexpected path".into()))?;
    let key = rest
        .strip_prefix(resource)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(|| ApiError::BadRequest("unexpected path".into()))?;
    let ns = percent_encoding::percent_decode_str(ns)
        .decode_utf8()
        .map_err(|_| ApiError::BadRequest("namespace is not UTF-8".into()))?
        .into_owned();
    let key: Vec<u8> = percent_encoding::percent_decode_str(key).collect();
    if key.is_empty() {
        return Err(ApiError::BadRequest("the key must not be empty".into()));
    }
    Ok((ns, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_bytes() {
        let uri: Uri = "/v1/namespaces/demo/keys/a%2Fb/c%FF%00?ttl=1"
            .parse()
            .unwrap();
        let (ns, key) = ns_and_key(&uri, "keys").unwrap();
        assert_eq!(ns, "demo");
        assert_eq!(key, b"a/b/c\xff\x00");
        let empty: Uri = "/v1/namespaces/demo/keys/".parse().unwrap();
        assert!(ns_and_key(&empty, "keys").is_err());
    }
}
