//! Replies the proxy composes itself, encoded with `redis-protocol`.
//!
//! Replies from nodes are forwarded as raw bytes; only local answers (PING, HELLO, INFO, errors
//! about refused commands, joined fan-out results) are built here.

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::{encode::extend_encode, types::BytesFrame};

/// Encodes one frame.
pub fn encode(frame: &BytesFrame) -> Bytes {
    let mut out = BytesMut::new();
    // Encoding into a growable buffer cannot run out of space.
    if extend_encode(&mut out, frame, false).is_err() {
        return error("ERR slotproxy: failed to encode reply");
    }
    out.freeze()
}

/// `+OK`
pub fn ok() -> Bytes {
    Bytes::from_static(b"+OK\r\n")
}

/// A simple string reply.
pub fn simple(text: &str) -> Bytes {
    encode(&BytesFrame::SimpleString(Bytes::copy_from_slice(
        text.as_bytes(),
    )))
}

/// An error reply; `msg` starts with its code (`ERR`, `CROSSSLOT`, …). Line breaks are
/// replaced so one error is always one line.
pub fn error(msg: &str) -> Bytes {
    let clean: String = msg
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    encode(&BytesFrame::Error(clean.into()))
}

/// An integer reply.
pub fn integer(n: i64) -> Bytes {
    encode(&BytesFrame::Integer(n))
}

/// A bulk string reply.
pub fn bulk(data: impl Into<Bytes>) -> Bytes {
    encode(&BytesFrame::BulkString(data.into()))
}

/// The nil bulk reply.
pub fn null() -> Bytes {
    Bytes::from_static(b"$-1\r\n")
}

/// Joins already-encoded frames into one array reply.
pub fn array_of_raw(elements: &[Bytes]) -> Bytes {
    let mut out = BytesMut::with_capacity(elements.iter().map(|e| e.len()).sum::<usize>() + 16);
    super::request::push_header(&mut out, b'*', elements.len());
    for element in elements {
        out.extend_from_slice(element);
    }
    out.freeze()
}

/// `CROSSSLOT`, worded exactly as Redis Cluster words it.
pub fn crossslot() -> Bytes {
    error("CROSSSLOT Keys in request don't hash to the same slot")
}

/// Renders a command name for error messages the way Redis does (lowercase).
pub fn display_name(name: &[u8]) -> String {
    String::from_utf8_lossy(name).to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes() {
        assert_eq!(&ok()[..], b"+OK\r\n");
        assert_eq!(&error("ERR a\r\nb")[..], b"-ERR a  b\r\n");
        assert_eq!(&integer(-3)[..], b":-3\r\n");
        assert_eq!(&bulk(Bytes::from_static(b"hi"))[..], b"$2\r\nhi\r\n");
        let joined = array_of_raw(&[integer(1), null()]);
        assert_eq!(&joined[..], b"*2\r\n:1\r\n$-1\r\n");
    }
}
