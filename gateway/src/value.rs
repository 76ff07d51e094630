//! How a stored value is laid out in Redis.
//!
//! One Redis string holds `L1` · content-type length (1 byte) · content type · ETag
//! (8 bytes) · the value. Keeping it one string makes every read and write a single
//! command (and a single round trip), and lets a Lua script compare the ETag atomically
//! for conditional writes. The ETag is a hash of content type and value, so every
//! gateway computes the same one.

use bytes::Bytes;
use sha2::{Digest, Sha256};

const MAGIC: &[u8; 2] = b"L1";
/// Content types longer than this are refused (it must fit the one-byte length).
pub const MAX_CONTENT_TYPE: usize = 255;

/// A decoded stored value.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub content_type: String,
    pub etag: [u8; 8],
    pub value: Bytes,
}

impl Stored {
    /// The strong ETag header value, quoted.
    pub fn etag_header(&self) -> String {
        etag_header(&self.etag)
    }
}

/// A strong ETag header value for `tag`.
pub fn etag_header(tag: &[u8; 8]) -> String {
    format!("\"{}\"", hex::encode(tag))
}

/// The ETag of a value.
pub fn etag(content_type: &str, value: &[u8]) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(content_type.as_bytes());
    h.update([0]);
    h.update(value);
    let digest = h.finalize();
    let mut out = [0; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

/// Lays out a value for storage; returns the bytes and the ETag.
pub fn encode(content_type: &str, value: &[u8]) -> (Vec<u8>, [u8; 8]) {
    let tag = etag(content_type, value);
    let ct = &content_type.as_bytes()[..content_type.len().min(MAX_CONTENT_TYPE)];
    let mut out = Vec::with_capacity(2 + 1 + ct.len() + 8 + value.len());
    out.extend_from_slice(MAGIC);
    out.push(ct.len() as u8);
    out.extend_from_slice(ct);
    out.extend_from_slice(&tag);
    out.extend_from_slice(value);
    (out, tag)
}

/// The placeholder a stampede lease keeps in the key while the holder computes the
/// value; readers see a miss.
pub fn lease_placeholder(token: &str) -> Vec<u8> {
    let mut out = b"\0LL".to_vec();
    out.extend_from_slice(token.as_bytes());
    out
}

/// Whether a raw stored value is a lease placeholder (a miss for readers).
pub fn is_lease(raw: &[u8]) -> bool {
    raw.starts_with(b"\0LL")
}

/// Reads a stored value. Anything not in the layout (a value written around Larder) is
/// served as `application/octet-stream` with a computed ETag rather than refused.
pub fn decode(raw: Bytes) -> Stored {
    if raw.len() >= 11 && raw.starts_with(MAGIC) {
        let ct_len = raw[2] as usize;
        if raw.len() >= 3 + ct_len + 8
            && let Ok(ct) = std::str::from_utf8(&raw[3..3 + ct_len])
        {
            let mut tag = [0; 8];
            tag.copy_from_slice(&raw[3 + ct_len..3 + ct_len + 8]);
            return Stored {
                content_type: ct.to_owned(),
                etag: tag,
                value: raw.slice(3 + ct_len + 8..),
            };
        }
    }
    let ct = "application/octet-stream";
    Stored {
        content_type: ct.to_owned(),
        etag: etag(ct, &raw),
        value: raw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let (raw, tag) = encode("text/plain", b"hello");
        let s = decode(Bytes::from(raw));
        assert_eq!(s.content_type, "text/plain");
        assert_eq!(s.value, Bytes::from_static(b"hello"));
        assert_eq!(s.etag, tag);
        assert_eq!(s.etag_header().len(), 18);
        let empty = decode(Bytes::from(encode("", b"").0));
        assert_eq!(empty.value.len(), 0);
    }

    #[test]
    fn foreign_values_are_served_raw() {
        let s = decode(Bytes::from_static(b"L1\xff short"));
        assert_eq!(s.content_type, "application/octet-stream");
        assert_eq!(s.value, Bytes::from_static(b"L1\xff short"));
    }

    #[test]
    fn etag_depends_on_content_type_and_value() {
        assert_ne!(etag("a", b"x"), etag("b", b"x"));
        assert_ne!(etag("a", b"x"), etag("a", b"y"));
        assert_eq!(etag("a", b"x"), etag("a", b"x"));
    }
}
