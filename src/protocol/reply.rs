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

/// The nil reply in the client's protocol: RESP3 has one null for every type.
pub fn null_for(resp3: bool) -> Bytes {
    match resp3 {
        true => Bytes::from_static(b"_\r\n"),
        false => null(),
    }
}

/// The nil array (EXEC after a touched WATCH) in the client's protocol.
pub fn null_array_for(resp3: bool) -> Bytes {
    match resp3 {
        true => Bytes::from_static(b"_\r\n"),
        false => Bytes::from_static(b"*-1\r\n"),
    }
}

/// Whether a raw reply is a nil of either protocol.
pub fn is_null(raw: &[u8]) -> bool {
    matches!(raw, b"$-1\r\n" | b"*-1\r\n" | b"_\r\n")
}

/// Text for humans (INFO, CLIENT INFO): a RESP3 verbatim string, or a RESP2 bulk string.
pub fn verbatim(text: &str, resp3: bool) -> Bytes {
    if !resp3 {
        return bulk(Bytes::copy_from_slice(text.as_bytes()));
    }
    let mut out = BytesMut::with_capacity(text.len() + 16);
    super::request::push_header(&mut out, b'=', text.len() + 4);
    out.extend_from_slice(b"txt:");
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.freeze()
}

/// Encoded key/value pairs as a RESP3 map, or as RESP2's flat array.
pub fn map_of_raw(pairs: &[(Bytes, Bytes)], resp3: bool) -> Bytes {
    let mut out = BytesMut::new();
    match resp3 {
        true => super::request::push_header(&mut out, b'%', pairs.len()),
        false => super::request::push_header(&mut out, b'*', pairs.len() * 2),
    }
    for (key, value) in pairs {
        out.extend_from_slice(key);
        out.extend_from_slice(value);
    }
    out.freeze()
}

/// Out-of-band data (Pub/Sub) as a RESP3 push, or as RESP2's array.
pub fn push_of_raw(elements: &[Bytes], resp3: bool) -> Bytes {
    let array = array_of_raw(elements);
    match resp3 {
        true => as_push(array),
        false => array,
    }
}

/// A RESP2 array frame re-marked as a RESP3 push (the rest of the bytes are the same).
pub fn as_push(array: Bytes) -> Bytes {
    if array.first() != Some(&b'*') {
        return array;
    }
    let mut out = BytesMut::from(&array[..]);
    out[0] = b'>';
    out.freeze()
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
        assert_eq!(&verbatim("a:1", true)[..], b"=7\r\ntxt:a:1\r\n");
        assert_eq!(&verbatim("a:1", false)[..], b"$3\r\na:1\r\n");
        let pairs = [(bulk(Bytes::from_static(b"k")), integer(1))];
        assert_eq!(&map_of_raw(&pairs, true)[..], b"%1\r\n$1\r\nk\r\n:1\r\n");
        assert_eq!(&map_of_raw(&pairs, false)[..], b"*2\r\n$1\r\nk\r\n:1\r\n");
        assert_eq!(&push_of_raw(&[integer(1)], true)[..], b">1\r\n:1\r\n");
        assert!(is_null(b"_\r\n") && is_null(b"$-1\r\n") && !is_null(b"+OK\r\n"));
    }
}
