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
///
/// Both the object and the idempotency key may hold `}:`, so written as they are, counter
/// `a}:b` with key `c` and counter `a` with key `b}:c` would share one record (and a
/// retry on one would replay the other's answer). In the idempotency key `%` and `}`
/// are therefore written `%25` and `%7D`: it then holds no `}`, so the last `}:` of the
/// record key is the separator and the mapping is injective. Keys without those two
/// characters (UUIDs, the common case) are written unchanged.
pub fn idempotency_key(ns: &str, kind: &str, object: &[u8], idempotency_key: &[u8]) -> Vec<u8> {
    let mut out = tagged(format!("larder:{ns}:x:idem:{kind}:"), object);
    out.push(b':');
    for &b in idempotency_key {
        match b {
            b'%' => out.extend_from_slice(b"%25"),
            b'}' => out.extend_from_slice(b"%7D"),
            _ => out.push(b),
        }
    }
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

    #[test]
    fn idempotency_records_of_different_objects_never_collide() {
        // Found by the injectivity property below: before escaping, both were
        // `larder:ns:x:idem:counter:{#a}:b}:c`.
        assert_ne!(
            idempotency_key("ns", "counter", b"a}:b", b"c"),
            idempotency_key("ns", "counter", b"a", b"b}:c")
        );
        assert_eq!(
            idempotency_key("ns", "counter", b"stock", b"5f0c-retry"),
            b"larder:ns:x:idem:counter:{#stock}:5f0c-retry".to_vec(),
            "plain keys keep their layout"
        );
    }

    /// Property tests: the mapping from (namespace, tenant name) to Redis key is
    /// injective, confined to the namespace, and `SCAN MATCH` patterns built from a
    /// tenant prefix match exactly the keys with that literal prefix.
    mod properties {
        use super::super::*;
        use super::hash_tag;
        use proptest::prelude::*;

        /// Redis's glob matcher (`stringmatchlen` in `util.c`), as `SCAN MATCH` applies
        /// it: `*`, `?`, `[...]` with `^` and ranges, `\` escapes.
        fn glob(p: &[u8], s: &[u8]) -> bool {
            match p.split_first() {
                None => s.is_empty(),
                Some((b'*', rest)) => (0..=s.len()).any(|i| glob(rest, &s[i..])),
                Some((b'?', rest)) => !s.is_empty() && glob(rest, &s[1..]),
                Some((b'[', rest)) => {
                    let Some((&c, s_rest)) = s.split_first() else {
                        return false;
                    };
                    let mut p = rest;
                    let not = p.first() == Some(&b'^');
                    if not {
                        p = &p[1..];
                    }
                    let mut matched = false;
                    loop {
                        match p {
                            [b'\\', x, tail @ ..] => {
                                matched |= *x == c;
                                p = tail;
                            }
                            [b']', tail @ ..] => {
                                p = tail;
                                break;
                            }
                            [] => break,
                            [a, b'-', z, tail @ ..] => {
                                let (lo, hi) = if a <= z { (*a, *z) } else { (*z, *a) };
                                matched |= (lo..=hi).contains(&c);
                                p = tail;
                            }
                            [x, tail @ ..] => {
                                matched |= *x == c;
                                p = tail;
                            }
                        }
                    }
                    matched != not && glob(p, s_rest)
                }
                Some((b'\\', rest)) if !rest.is_empty() => {
                    s.first() == Some(&rest[0]) && glob(&rest[1..], &s[1..])
                }
                Some((&c, rest)) => s.first() == Some(&c) && glob(rest, &s[1..]),
            }
        }

        #[test]
        fn the_reference_matcher_is_redis_glob() {
            assert!(glob(b"a*", b"abc"));
            assert!(glob(b"a?c", b"abc"));
            assert!(glob(b"[a-c]x", b"bx"));
            assert!(!glob(b"[^a-c]x", b"bx"));
            assert!(glob(b"a\\*", b"a*"));
            assert!(!glob(b"a\\*", b"ab"));
        }

        /// Namespace names from a tiny alphabet, so that two draws are often equal or
        /// one is a prefix of the other (`ab` / `ab-a`).
        fn namespace() -> impl Strategy<Value = String> {
            "[ab][ab-]{1,3}"
        }

        /// Tenant names rich in the bytes that could break out of a namespace or
        /// confuse a glob: separators, hash-tag braces, glob characters, escapes,
        /// dots, NUL, multi-byte UTF-8, bytes that are not UTF-8.
        fn name() -> impl Strategy<Value = Vec<u8>> {
            let piece = prop_oneof![
                Just(b":".to_vec()),
                Just(b"k:".to_vec()),
                Just(b"larder:".to_vec()),
                Just(b"{".to_vec()),
                Just(b"}".to_vec()),
                Just(b"}:".to_vec()),
                Just(b"#".to_vec()),
                Just(b"*".to_vec()),
                Just(b"?".to_vec()),
                Just(b"[".to_vec()),
                Just(b"]".to_vec()),
                Just(b"^".to_vec()),
                Just(b"-".to_vec()),
                Just(b"\\".to_vec()),
                Just(b"%".to_vec()),
                Just(b"..".to_vec()),
                Just(b"/".to_vec()),
                Just(b"\0".to_vec()),
                Just("ключ".as_bytes().to_vec()),
                Just(b"\xff".to_vec()),
                Just(b"a".to_vec()),
                Just(b"b".to_vec()),
                proptest::collection::vec(any::<u8>(), 1..4),
            ];
            proptest::collection::vec(piece, 0..6).prop_map(|p| p.concat())
        }

        /// A (name, idempotency key) pair.
        type Split = (Vec<u8>, Vec<u8>);

        /// Two (name, idempotency key) pairs cut from the same bytes at two different
        /// `}:` separators: the inputs most likely to render to the same Redis key if
        /// the layout were a plain concatenation. Independent draws almost never line
        /// up like this.
        fn same_bytes_split_twice() -> impl Strategy<Value = (Split, Split)> {
            (
                name(),
                name(),
                name(),
                any::<prop::sample::Index>(),
                any::<prop::sample::Index>(),
            )
                .prop_map(|(a, b, c, i, j)| {
                    let bytes = [a.as_slice(), b"}:", &b, b"}:", &c].concat();
                    let cuts: Vec<usize> = bytes
                        .windows(2)
                        .enumerate()
                        .filter(|(_, w)| *w == b"}:")
                        .map(|(at, _)| at)
                        .collect();
                    let split = |at: usize| (bytes[..at].to_vec(), bytes[at + 2..].to_vec());
                    (split(*i.get(&cuts)), split(*j.get(&cuts)))
                })
        }

        /// Every Redis key Larder builds for a tenant object, by kind.
        fn all_keys(ns: &str, name: &[u8], idem: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
            vec![
                ("data", data_key(ns, name)),
                ("counter", counter_key(ns, name)),
                ("queue", queue_key(ns, name)),
                ("dead-letter", dead_letter_key(ns, name)),
                ("idem-counter", idempotency_key(ns, "counter", name, idem)),
                ("idem-queue", idempotency_key(ns, "queue", name, idem)),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(500))]

            /// Two different (namespace, kind, name) triples never share a Redis key.
            #[test]
            fn the_key_layout_is_injective(
                ((ns1, n1, i1), (ns2, n2, i2)) in prop_oneof![
                    ((namespace(), name(), name()), (namespace(), name(), name())),
                    (namespace(), same_bytes_split_twice())
                        .prop_map(|(ns, ((n1, i1), (n2, i2)))| ((ns.clone(), n1, i1), (ns, n2, i2))),
                ],
            ) {
                for (kind1, k1) in all_keys(&ns1, &n1, &i1) {
                    for (kind2, k2) in all_keys(&ns2, &n2, &i2) {
                        let same_input = ns1 == ns2 && kind1 == kind2 && n1 == n2
                            && (i1 == i2 || !kind1.starts_with("idem"));
                        prop_assert_eq!(
                            k1 == k2, same_input,
                            "{} {:?}/{:?} vs {} {:?}/{:?}", kind1, ns1, n1, kind2, ns2, n2
                        );
                    }
                }
            }

            /// Every key of a namespace starts with that namespace's prefix and with no
            /// other namespace's; a data key reads back to its tenant key only in its own
            /// namespace.
            #[test]
            fn keys_are_confined_to_their_namespace(
                ns in namespace(), other in namespace(), n in name(), i in name(),
            ) {
                for (kind, key) in all_keys(&ns, &n, &i) {
                    prop_assert!(key.starts_with(&namespace_prefix(&ns)), "{}", kind);
                    if other != ns {
                        prop_assert!(!key.starts_with(&namespace_prefix(&other)), "{}", kind);
                    }
                }
                let data = data_key(&ns, &n);
                prop_assert_eq!(tenant_key(&ns, &data), Some(n.as_slice()));
                if other != ns {
                    prop_assert_eq!(tenant_key(&other, &data), None);
                }
                // No tenant key of a namespace ever reads as one of another's, nor does
                // a counter, queue or internal record read as a tenant key.
                for (kind, key) in all_keys(&other, &n, &i) {
                    if kind != "data" || other != ns {
                        prop_assert_eq!(tenant_key(&ns, &key), None, "{}", kind);
                    }
                }
            }

            /// Records updated together by one script (a counter or queue and its
            /// idempotency records, a queue and its dead letters) share a hash tag, so
            /// Redis Cluster puts them in one slot.
            #[test]
            fn related_records_share_a_hash_tag(ns in namespace(), n in name(), i in name()) {
                let counter = counter_key(&ns, &n);
                let counter_idem = idempotency_key(&ns, "counter", &n, &i);
                let queue = queue_key(&ns, &n);
                let dead = dead_letter_key(&ns, &n);
                let queue_idem = idempotency_key(&ns, "queue", &n, &i);
                prop_assert_eq!(hash_tag(&counter), hash_tag(&counter_idem));
                prop_assert_eq!(hash_tag(&queue), hash_tag(&dead));
                prop_assert_eq!(hash_tag(&queue), hash_tag(&queue_idem));
                // The tag is never empty (an empty tag would hash the whole key).
                prop_assert!(hash_tag(&counter).starts_with(b"#"));
            }

            /// `SCAN MATCH scan_pattern(ns, p)` matches a Redis key exactly when it is a
            /// data key of `ns` whose tenant key starts with the literal bytes `p`: glob
            /// characters in `p` match only themselves, and nothing of another namespace
            /// or kind ever matches.
            #[test]
            fn scan_patterns_match_exactly_the_literal_prefix(
                ns in namespace(), other in namespace(), prefix in name(), rest in name(),
                extend in any::<bool>(), i in name(),
            ) {
                let pattern = scan_pattern(&ns, &prefix);
                let key = if extend { [prefix.as_slice(), &rest].concat() } else { rest.clone() };
                prop_assert_eq!(
                    glob(&pattern, &data_key(&ns, &key)),
                    key.starts_with(&prefix),
                    "pattern {:?} key {:?}", String::from_utf8_lossy(&pattern), key
                );
                for (kind, k) in all_keys(&other, &key, &i) {
                    if kind != "data" || other != ns {
                        prop_assert!(!glob(&pattern, &k), "{} {:?}", kind, k);
                    }
                }
            }
        }
    }
}
