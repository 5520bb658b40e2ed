//! The wire: RESP framing in both directions and the command table.
//!
//! Parsing here does no I/O. Client requests are decoded by [`request::RequestDecoder`] (a
//! tokio-util `Decoder` with hard limits); replies from nodes are only framed by
//! [`scan::ReplyScanner`] and travel as raw bytes, so an untouched reply is never re-encoded.
//! Replies the proxy builds itself are encoded with `redis-protocol` in [`reply`].

pub mod acl_catalog;
pub mod command;
pub mod getkeys;
pub mod keyspec;
pub mod policy;
pub mod reply;
pub mod request;
pub mod reserved;
pub mod scan;

pub use request::Request;

/// Why a byte stream is not valid RESP; the text follows Redis' own `Protocol error: …` wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProtocolError(pub String);

impl ProtocolError {
    pub(crate) fn new(msg: impl Into<String>) -> Self {
        ProtocolError(msg.into())
    }
}

/// Finds `\r\n` in `buf` and returns the index of the `\r`.
#[inline]
pub(crate) fn find_crlf(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = buf[from..].iter().position(|&b| b == b'\r') {
        let at = from + i;
        if buf.get(at + 1) == Some(&b'\n') {
            return Some(at);
        }
        if at + 1 >= buf.len() {
            return None;
        }
        from = at + 1;
    }
    None
}

/// Parses a signed decimal as Redis does for lengths (no spaces, no plus sign).
#[inline]
pub(crate) fn parse_i64(digits: &[u8]) -> Option<i64> {
    let (neg, digits) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
    }
    Some(if neg { -n } else { n })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_search() {
        assert_eq!(find_crlf(b"abc\r\n"), Some(3));
        assert_eq!(find_crlf(b"a\rb\r\n"), Some(3));
        assert_eq!(find_crlf(b"abc\r"), None);
        assert_eq!(find_crlf(b""), None);
    }

    #[test]
    fn integers() {
        assert_eq!(parse_i64(b"123"), Some(123));
        assert_eq!(parse_i64(b"-1"), Some(-1));
        assert_eq!(parse_i64(b""), None);
        assert_eq!(parse_i64(b"1a"), None);
        assert_eq!(parse_i64(b"99999999999999999999"), None);
    }
}
