//! How tenant keys map onto Redis keys.
//!
//! A tenant key `k` (any bytes) of namespace `ns` is stored as `larder:<ns>:k:<k>`.
//! Namespace names hold only `[a-z0-9-]` (see [`crate::names`]), so the prefix up to the
//! third colon is fixed by the namespace and nothing in `k` — colons, braces, glob
//! characters, `..`, NUL, any Unicode — can make two (namespace, key) pairs collide or
//! move a key into another namespace: the mapping is injective and prefix-confined.
//! Larder's own per-namespace records use `larder:<ns>:x:`, which no tenant key can reach.
//!
//! Braces in a tenant key act as Redis Cluster hash tags within the namespace only, which
//! lets a tenant co-locate related keys; the namespace prefix carries no tag, so a
//! namespace spreads across all slots.

/// The prefix of every Redis key of a namespace (data and internal records).
pub fn namespace_prefix(ns: &str) -> Vec<u8> {
    format!("larder:{ns}:").into_bytes()
}

/// The prefix of a namespace's tenant keys.
pub fn data_prefix(ns: &str) -> Vec<u8> {
    format!("larder:{ns}:k:").into_bytes()
}

/// The Redis key of tenant key `key` in namespace `ns`.
pub fn data_key(ns: &str, key: &[u8]) -> Vec<u8> {
    let mut out = data_prefix(ns);
    out.extend_from_slice(key);
    out
}

/// The tenant key of a Redis key, if it belongs to namespace `ns`.
pub fn tenant_key<'a>(ns: &str, redis_key: &'a [u8]) -> Option<&'a [u8]> {
    redis_key.strip_prefix(data_prefix(ns).as_slice())
}

/// Wraps `name` as a Redis Cluster hash tag: `{#name}`. Every record that must be
/// touched atomically together with a tenant object (an idempotency record with its
/// counter or queue) carries the same tag, so they share a slot and one Lua script can
/// update both. The tag is whatever lies between the first `{` and the next `}`; the
/// prefix before it holds no brace, so for two keys built from the same `name` the tags
/// are equal (even when `name` itself holds braces). The `#` keeps the tag non-empty
/// when `name` starts with `}` (an empty tag would hash the whole key instead).
fn tagged(prefix: String, name: &[u8]) -> Vec<u8> {
    let mut out = prefix.into_bytes();
    out.extend_from_slice(b"{#");
    out.extend_from_slice(name);
    out.push(b'}');
    out
}

/// The Redis key of a counter (`/counters/{key}`): `larder:<ns>:c:{#<key>}`.
pub fn counter_key(ns: &str, key: &[u8]) -> Vec<u8> {
    tagged(format!("larder:{ns}:c:"), key)
}

/// The Redis stream of a queue (`/queues/{q}`): `larder:<ns>:q:{#<q>}`.
pub fn queue_key(ns: &str, queue: &[u8]) -> Vec<u8> {
    tagged(format!("larder:{ns}:q:"), queue)
}

/// The dead-letter stream of a queue: `larder:<ns>:dlq:{#<q>}` (same slot as the queue).
pub fn dead_letter_key(ns: &str, queue: &[u8]) -> Vec<u8> {
    tagged(format!("larder:{ns}:dlq:"), queue)
}

/// The record of an `Idempotency-Key` used on the object `object` (a counter or queue
/// name): `larder:<ns>:x:idem:<kind>:{#<object>}:<idempotency key>`, in the object's slot.
pub fn idempotency_key(ns: &str, kind: &str, object: &[u8], idempotency_key: &[u8]) -> Vec<u8> {
    let mut out = tagged(format!("larder:{ns}:x:idem:{kind}:"), object);
    out.push(b':');
    out.extend_from_slice(idempotency_key);
    out
}

/// The Redis key of an internal record (`kind` is a fixed word chosen by Larder).
pub fn internal_key(ns: &str, kind: &str, id: &[u8]) -> Vec<u8> {
    let mut out = format!("larder:{ns}:x:{kind}:").into_bytes();
    out.extend_from_slice(id);
    out
}

/// A `SCAN MATCH` pattern for keys of `ns` starting with the literal bytes `prefix`:
/// every glob character and backslash in `prefix` is escaped.
pub fn scan_pattern(ns: &str, prefix: &[u8]) -> Vec<u8> {
    let mut out = data_prefix(ns);
    for &b in prefix {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\' | b'^' | b'-') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'*');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_in_their_namespace() {
        let hostile: [&[u8]; 9] = [
            b"",
            b"*",
            b"..",
            b"../b",
            b":b:k:x",
            b"{b}x",
            b"}{",
            b"\0",
            "ключ".as_bytes(),
        ];
        for k in hostile {
            let rk = data_key("aa", k);
            assert!(rk.starts_with(b"larder:aa:k:"));
            assert_eq!(tenant_key("aa", &rk), Some(k));
            assert_eq!(tenant_key("ab", &rk), None);
        }
        // Injective across namespaces: "a" + ":b..." never equals "a:b" + "...".
        assert_ne!(data_key("ab", b"c:k:d"), data_key("ab-c", b"d"));
    }

    /// The hash tag Redis Cluster would use for `key`.
    fn hash_tag(key: &[u8]) -> &[u8] {
        if let Some(open) = key.iter().position(|&b| b == b'{')
            && let Some(len) = key[open + 1..].iter().position(|&b| b == b'}')
            && len > 0
        {
            return &key[open + 1..open + 1 + len];
        }
        key
    }

    #[test]
    fn related_records_share_a_slot() {
        for name in [&b"stock"[..], b"a}b", b"{x}", b"", b"}"] {
            let c = counter_key("ns", name);
            let i = idempotency_key("ns", "counter", name, b"retry-1");
            assert_eq!(hash_tag(&c), hash_tag(&i), "{name:?}");
            assert_eq!(
                hash_tag(&queue_key("ns", name)),
                hash_tag(&dead_letter_key("ns", name))
            );
            assert!(c.starts_with(b"larder:ns:c:{#"));
        }
    }

    #[test]
    fn scan_pattern_escapes_globs() {
        assert_eq!(
            scan_pattern("ns", b"a*[?]\\"),
            b"larder:ns:k:a\\*\\[\\?\\]\\\\*".to_vec()
        );
    }
}
