//! Validation of the names that become znode path segments or Redis key prefixes.
//!
//! Every name is checked before it touches a path, so a path segment can never contain
//! `/`, `..`, a glob character, a brace or a colon.

use crate::error::{RegistryError, Result};

fn invalid(what: &'static str, value: &str, reason: &'static str) -> RegistryError {
    RegistryError::InvalidName {
        what,
        value: value.to_owned(),
        reason,
    }
}

/// `^[a-z][a-z0-9-]{1,62}$`: lower-case, starts with a letter, 2 to 63 characters.
fn check_slug(what: &'static str, value: &str) -> Result<()> {
    let bytes = value.as_bytes();
    if bytes.len() < 2 || bytes.len() > 63 {
        return Err(invalid(what, value, "must be 2 to 63 characters"));
    }
    if !bytes[0].is_ascii_lowercase() {
        return Err(invalid(what, value, "must start with a lower-case letter"));
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
    {
        return Err(invalid(what, value, "may hold only a-z, 0-9 and '-'"));
    }
    Ok(())
}

/// A tenant namespace name.
pub fn namespace(value: &str) -> Result<()> {
    check_slug("namespace name", value)
}

/// A Redis deployment (cluster) name; same rules as a namespace.
pub fn cluster(value: &str) -> Result<()> {
    check_slug("cluster name", value)
}

/// A signing key id, token id, gateway or agent id: `[A-Za-z0-9_-]{1,64}`.
pub fn id(what: &'static str, value: &str) -> Result<()> {
    if value.is_empty() || value.len() > 64 {
        return Err(invalid(what, value, "must be 1 to 64 characters"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(invalid(
            what,
            value,
            "may hold only A-Z, a-z, 0-9, '-' and '_'",
        ));
    }
    Ok(())
}

/// A Redis endpoint `host:port`, used as the node znode name.
pub fn endpoint(value: &str) -> Result<()> {
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err(invalid("endpoint", value, "must be host:port"));
    };
    if host.is_empty() || host.len() > 253 {
        return Err(invalid(
            "endpoint",
            value,
            "host must be 1 to 253 characters",
        ));
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b))
    {
        return Err(invalid(
            "endpoint",
            value,
            "host may hold only letters, digits, '-', '.', '_'",
        ));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(invalid("endpoint", value, "port must be 1 to 65535")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names() {
        for ok in [
            "ab",
            "orders",
            "flash-sale-2026",
            &format!("a{}", "b".repeat(62)),
        ] {
            assert!(namespace(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a",
            "A",
            "1abc",
            "-ab",
            "ab_c",
            "a:b",
            "a/b",
            "a..b",
            "a*",
            "a{b}",
            "ab\0",
            "ä",
            &format!("a{}", "b".repeat(63)),
        ] {
            assert!(namespace(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn endpoints() {
        assert!(endpoint("127.0.0.1:6379").is_ok());
        assert!(endpoint("redis-0.redis:6379").is_ok());
        for bad in ["127.0.0.1", ":6379", "h:0", "h:70000", "h/x:1", "h:p"] {
            assert!(endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids() {
        assert!(id("kid", "k-20261123_ab").is_ok());
        assert!(id("kid", "").is_err());
        assert!(id("kid", "a/b").is_err());
        assert!(id("kid", "..").is_err());
    }

    /// Property tests: each validator accepts exactly its documented language, never
    /// panics, and nothing it accepts can leave its path segment or key prefix.
    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// `^[a-z][a-z0-9-]{1,62}$`, written independently of `check_slug`.
        fn is_slug(s: &str) -> bool {
            let mut chars = s.chars();
            let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
            first_ok
                && (2..=63).contains(&s.chars().count())
                && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        }

        /// Strings near the edge of the language: slug characters mixed with the ones
        /// that would be dangerous in a znode path or a Redis key.
        fn near_slug() -> impl Strategy<Value = String> {
            proptest::collection::vec(
                prop_oneof![
                    8 => proptest::char::range('a', 'z'),
                    2 => proptest::char::range('0', '9'),
                    2 => Just('-'),
                    1 => prop::sample::select(vec![
                        'A', 'Z', '_', ':', '/', '.', '*', '?', '[', '{', '}', '\\', '\0', ' ',
                        'é', 'ß', 'K', '\u{212a}', '\u{ff41}',
                    ]),
                ],
                0..70,
            )
            .prop_map(|c| c.into_iter().collect())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1_000))]

            #[test]
            fn namespace_names_are_exactly_the_slugs(s in prop_oneof![near_slug(), any::<String>()]) {
                prop_assert_eq!(namespace(&s).is_ok(), is_slug(&s), "{:?}", s);
                prop_assert_eq!(cluster(&s).is_ok(), is_slug(&s), "{:?}", s);
            }

            /// Whatever is accepted is safe as one path segment and as the namespace part
            /// of a Redis key: no separator, dot, glob, brace, escape or non-ASCII.
            #[test]
            fn accepted_names_cannot_escape(s in prop_oneof![near_slug(), "[a-z][a-z0-9-]{1,62}"]) {
                if namespace(&s).is_ok() {
                    prop_assert!(s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
                    prop_assert!(!s.contains(".."));
                    let prefix = crate::keyspace::namespace_prefix(&s);
                    prop_assert_eq!(prefix.iter().filter(|&&b| b == b':').count(), 2);
                }
            }

            #[test]
            fn ids_are_short_url_safe_words(s in prop_oneof![near_slug(), any::<String>(), "[A-Za-z0-9_-]{1,64}"]) {
                let expected = (1..=64).contains(&s.len())
                    && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                prop_assert_eq!(id("id", &s).is_ok(), expected, "{:?}", s);
            }

            /// Arbitrary input never panics; an accepted endpoint holds no path separator
            /// and ends in a port 1 to 65535.
            #[test]
            fn endpoints_never_panic(s in prop_oneof![
                any::<String>(),
                "[a-z0-9.:\\[\\]/-]{0,20}:[0-9+-]{0,7}",
            ]) {
                if endpoint(&s).is_ok() {
                    prop_assert!(!s.contains('/'));
                    let port = s.rsplit_once(':').map(|(_, p)| p.parse::<u16>());
                    prop_assert!(matches!(port, Some(Ok(p)) if p > 0), "{:?}", s);
                }
            }
        }
    }
}
