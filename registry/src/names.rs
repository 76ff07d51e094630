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
}
