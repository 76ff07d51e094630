//! Known-vulnerable Redis versions: the Lua scripting CVEs of October 2025.
//!
//! CVE-2025-49844 (use-after-free in the Lua parser, remote code execution), with
//! CVE-2025-46817, CVE-2025-46818 and CVE-2025-46819, affect every Redis with Lua
//! scripting. They were fixed in 6.2.20, 7.2.11, 7.4.6, 8.0.4 and 8.2.2; 8.4 and later
//! ship the fix. Lines that got no fix (7.0, anything older than 6.2) stay vulnerable
//! for good: the advice there is to upgrade, or to deny `EVAL`/`EVALSHA`/`FUNCTION` by
//! ACL until then.

/// Per release line `(major, minor)`, the first patch release that carries the fix.
const FIXED: [(u32, u32, u32); 5] = [(6, 2, 20), (7, 2, 11), (7, 4, 6), (8, 0, 4), (8, 2, 2)];

/// The first line released with the fix from its start.
const FIXED_FROM_LINE: (u32, u32) = (8, 4);

/// Whether a `redis_version` string names a release open to the Lua CVEs above.
///
/// A version that does not parse as `major.minor.patch` is reported as not vulnerable:
/// the flag raises an alert, and an alert must come from knowledge, not from a guess.
pub fn vulnerable_lua(version: &str) -> bool {
    let Some((major, minor, patch)) = parse(version) else {
        return false;
    };
    if (major, minor) >= FIXED_FROM_LINE {
        return false;
    }
    match FIXED
        .iter()
        .find(|(ma, mi, _)| (*ma, *mi) == (major, minor))
    {
        Some((_, _, fixed)) => patch < *fixed,
        // Older lines and lines that never got the fix (7.0, pre-releases numbered
        // between lines).
        None => true,
    }
}

fn parse(version: &str) -> Option<(u32, u32, u32)> {
    let mut parts = version.trim().split('.');
    let mut next = || parts.next()?.parse::<u32>().ok();
    let parsed = (next()?, next()?, next()?);
    match parts.next() {
        None => Some(parsed),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_fixed_line_at_its_boundary() {
        for (vulnerable, fixed) in [
            ("6.2.19", "6.2.20"),
            ("7.2.10", "7.2.11"),
            ("7.4.5", "7.4.6"),
            ("8.0.3", "8.0.4"),
            ("8.2.1", "8.2.2"),
        ] {
            assert!(vulnerable_lua(vulnerable), "{vulnerable}");
            assert!(!vulnerable_lua(fixed), "{fixed}");
        }
        for later in ["6.2.21", "7.2.12", "7.4.7", "8.0.5", "8.2.3"] {
            assert!(!vulnerable_lua(later), "{later}");
        }
    }

    #[test]
    fn unfixed_and_old_lines_are_vulnerable() {
        for v in [
            "7.0.0", "7.0.15", "6.0.20", "5.0.14", "4.0.14", "3.2.12", "6.2.0", "8.0.0",
        ] {
            assert!(vulnerable_lua(v), "{v}");
        }
    }

    #[test]
    fn newer_lines_are_not() {
        for v in ["8.4.0", "8.6.1", "9.0.0", "255.255.255"] {
            assert!(!vulnerable_lua(v), "{v}");
        }
    }

    #[test]
    fn unparseable_is_not_flagged() {
        for v in [
            "", "7", "7.2", "7.2.x", "7.2.4.1", "v7.2.4", "unknown", "-1.0.0",
        ] {
            assert!(!vulnerable_lua(v), "{v:?}");
        }
        assert!(
            vulnerable_lua(" 7.2.4\r"),
            "surrounding whitespace is tolerated"
        );
    }
}
