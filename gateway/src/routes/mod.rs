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

/// Property tests of the path parser shared by every keyed route.
#[cfg(test)]
mod properties {
    use super::*;
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    use proptest::prelude::*;

    /// What a client must escape in a path segment (everything but unreserved).
    const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1_000))]

        /// Any key bytes, percent-encoded by the client, arrive as exactly those bytes,
        /// whatever the resource and query.
        #[test]
        fn encoded_keys_arrive_intact(
            ns in "[a-z][a-z0-9-]{1,20}",
            key in proptest::collection::vec(any::<u8>(), 1..64),
            resource in prop::sample::select(vec!["keys", "ttl", "counters"]),
            query in "(\\?[a-z=&%0-9]{0,12})?",
        ) {
            let encoded: String = percent_encoding::percent_encode(&key, SEGMENT).collect();
            let uri: Uri = format!("/v1/namespaces/{ns}/{resource}/{encoded}{query}").parse().unwrap();
            let (got_ns, got_key) = ns_and_key(&uri, resource).unwrap();
            prop_assert_eq!(got_ns, ns);
            prop_assert_eq!(got_key, key);
        }

        /// Any path a client can send parses to a non-empty key or is refused with a
        /// 400, never a panic; raw `/`, `..` and `%` sequences stay in the key.
        #[test]
        fn any_path_parses_or_is_a_bad_request(
            ns in prop_oneof!["[a-z-]{0,8}", "%[0-9A-Fa-f]{2}[a-z]{0,3}", Just(String::new())],
            rest in "[a-zA-Z0-9/.%:*?\\[\\]{}@!$&'()+,;=~-]{0,40}",
            resource in prop::sample::select(vec!["keys", "ttl", "counters"]),
        ) {
            let Ok(uri) = format!("/v1/namespaces/{ns}/{rest}").parse::<Uri>() else {
                return Ok(());
            };
            match ns_and_key(&uri, resource) {
                Ok((_, key)) => {
                    prop_assert!(!key.is_empty());
                    let raw = uri.path().splitn(5, '/').nth(4).unwrap_or_default();
                    let marker = format!("/{resource}/");
                    prop_assert!(uri.path().contains(&marker));
                    prop_assert_eq!(key, percent_encoding::percent_decode_str(
                        raw.strip_prefix(resource).and_then(|r| r.strip_prefix('/')).unwrap_or_default()
                    ).collect::<Vec<u8>>());
                }
                Err(e) => prop_assert!(matches!(e, ApiError::BadRequest(_)), "{:?}", e),
            }
        }

        /// A namespace segment that is not UTF-8 once decoded is refused, never
        /// replaced with lossy text that could name another namespace.
        #[test]
        fn namespaces_are_never_decoded_lossily(
            ns in proptest::collection::vec(any::<u8>(), 1..12),
        ) {
            let encoded: String = percent_encoding::percent_encode(&ns, SEGMENT).collect();
            let uri: Uri = format!("/v1/namespaces/{encoded}/keys/k").parse().unwrap();
            match ns_and_key(&uri, "keys") {
                Ok((got, _)) => prop_assert_eq!(got.as_bytes(), ns.as_slice()),
                Err(e) => {
                    prop_assert!(std::str::from_utf8(&ns).is_err(), "{:?}", e);
                }
            }
        }
    }

    #[test]
    fn utf8_namespaces_round_trip() {
        let encoded: String = utf8_percent_encode("ключ", SEGMENT).collect();
        let uri: Uri = format!("/v1/namespaces/{encoded}/keys/k").parse().unwrap();
        assert_eq!(ns_and_key(&uri, "keys").unwrap().0, "ключ");
    }
}
