//! Framing of replies from nodes without decoding them.
//!
//! The proxy forwards most replies untouched, so it only needs to know where each reply ends
//! and whether it is a cluster redirect. [`ReplyScanner`] walks nested RESP2 frames
//! iteratively (no recursion, so no stack depth to exhaust) and resumes where it stopped when
//! more bytes arrive. The helpers below read the few replies the proxy must look into.

use super::{find_crlf, parse_i64, ProtocolError};
use bytes::Bytes;

/// Largest reply element count accepted from a node; a sanity bound, not a policy.
const MAX_ELEMENTS: i64 = i32::MAX as i64;

/// Resumable frame-boundary finder for a stream of RESP2 replies.
#[derive(Debug, Default)]
pub struct ReplyScanner {
    /// Offset of the next unscanned byte of the current frame.
    pos: usize,
    /// Frames still to scan before the current top-level frame is complete (0 = idle).
    pending: u64,
}

impl ReplyScanner {
    /// Returns the length of the first complete frame in `buf`, or `None` if more bytes are
    /// needed. After `Some(n)`, the caller must remove exactly `n` bytes from the front of
    /// `buf`; after `None`, it may only append to `buf`.
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        if self.pending == 0 {
            self.pos = 0;
            self.pending = 1;
        }
        while self.pending > 0 {
            let Some(&kind) = buf.get(self.pos) else {
                return Ok(None);
            };
            let Some(end) = find_crlf(&buf[self.pos..]) else {
                return Ok(None);
            };
            let header_end = self.pos + end + 2;
            match kind {
                // RESP2 simple types, and RESP3 null, double, boolean, big number.
                b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => {
                    self.pos = header_end;
                    self.pending -= 1;
                }
                // Bulk string; RESP3 verbatim string and blob error.
                b'$' | b'=' | b'!' => {
                    let len = parse_i64(&buf[self.pos + 1..self.pos + end])
                        .ok_or_else(|| ProtocolError::new("invalid bulk length in reply"))?;
                    if len < 0 {
                        self.pos = header_end;
                    } else {
                        let total = header_end + len as usize + 2;
                        if buf.len() < total {
                            return Ok(None);
                        }
                        self.pos = total;
                    }
                    self.pending -= 1;
                }
                // Array; RESP3 set, push, map (two frames an entry), attribute (a map that
                // precedes the reply it describes, so that reply is still due).
                b'*' | b'~' | b'>' | b'%' | b'|' => {
                    let n = parse_i64(&buf[self.pos + 1..self.pos + end])
                        .filter(|&n| n <= MAX_ELEMENTS)
                        .ok_or_else(|| ProtocolError::new("invalid array length in reply"))?;
                    let n = n.max(0) as u64;
                    self.pos = header_end;
                    self.pending = match kind {
                        b'%' => self.pending - 1 + 2 * n,
                        b'|' => self.pending + 2 * n,
                        _ => self.pending - 1 + n,
                    };
                }
                other => {
                    return Err(ProtocolError::new(format!(
                        "unexpected reply type byte '{}'",
                        other.escape_ascii()
                    )))
                }
            }
        }
        Ok(Some(self.pos))
    }
}

/// Length of the first complete frame in `buf` (one-shot form of [`ReplyScanner::scan`]).
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
    ReplyScanner::default().scan(buf)
}

/// The elements of an array reply, each as its own raw frame; `None` if `raw` is not an array
/// (an error reply, for instance).
pub fn array_elements(raw: &Bytes) -> Option<Vec<Bytes>> {
    if raw.first() != Some(&b'*') {
        return None;
    }
    let end = find_crlf(raw)?;
    let n = parse_i64(&raw[1..end])?;
    let mut pos = end + 2;
    let mut out = Vec::with_capacity(n.clamp(0, 1024) as usize);
    for _ in 0..n.max(0) {
        let len = frame_len(&raw[pos..]).ok()??;
        out.push(raw.slice(pos..pos + len));
        pos += len;
    }
    Some(out)
}

/// The value of an integer reply.
pub fn integer(raw: &[u8]) -> Option<i64> {
    let rest = raw.strip_prefix(b":")?;
    parse_i64(&rest[..find_crlf(rest)?])
}

/// The contents of a bulk or simple string reply (`None` for nil and other kinds).
pub fn string(raw: &[u8]) -> Option<&[u8]> {
    match raw.first()? {
        b'+' => Some(&raw[1..1 + find_crlf(&raw[1..])?]),
        b'$' => {
            let end = find_crlf(raw)?;
            let len = usize::try_from(parse_i64(&raw[1..end])?).ok()?;
            raw.get(end + 2..end + 2 + len)
        }
        _ => None,
    }
}

/// True for an error reply (`-…`).
pub fn is_error(raw: &[u8]) -> bool {
    raw.first() == Some(&b'-')
}

/// What a node's reply means for routing.
#[derive(Debug, PartialEq, Eq)]
pub enum Redirect<'a> {
    /// A normal reply for the client.
    None,
    /// `-MOVED <slot> <addr>`: the slot lives elsewhere for good.
    Moved(u16, &'a str),
    /// `-ASK <slot> <addr>`: this one command must be asked of another node.
    Ask(&'a str),
    /// `-TRYAGAIN …`: a multi-key command hit a slot in mid-migration.
    TryAgain,
    /// `-CLUSTERDOWN …`: the cluster cannot serve the slot right now.
    ClusterDown,
}

/// Classifies a reply. Only error replies are inspected, so this is cheap on the hot path.
pub fn classify<'a>(raw: &'a [u8]) -> Redirect<'a> {
    if raw.first() != Some(&b'-') {
        return Redirect::None;
    }
    let line = &raw[1..find_crlf(raw).unwrap_or(raw.len())];
    fn addr(rest: &[u8]) -> Option<&str> {
        std::str::from_utf8(rest).ok()?.split(' ').nth(1)
    }
    fn slot(rest: &[u8]) -> Option<u16> {
        std::str::from_utf8(rest)
            .ok()?
            .split(' ')
            .next()?
            .parse()
            .ok()
    }
    if let Some(rest) = line.strip_prefix(b"MOVED ") {
        if let (Some(s), Some(a)) = (slot(rest), addr(rest)) {
            return Redirect::Moved(s, a);
        }
    } else if let Some(rest) = line.strip_prefix(b"ASK ") {
        if let Some(a) = addr(rest) {
            return Redirect::Ask(a);
        }
    } else if line.starts_with(b"TRYAGAIN") {
        return Redirect::TryAgain;
    } else if line.starts_with(b"CLUSTERDOWN") {
        return Redirect::ClusterDown;
    }
    Redirect::None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_all_kinds() {
        assert_eq!(frame_len(b"+OK\r\n").unwrap(), Some(5));
        assert_eq!(frame_len(b"$-1\r\n").unwrap(), Some(5));
        assert_eq!(frame_len(b"$3\r\nfoo\r\n+OK").unwrap(), Some(9));
        assert_eq!(
            frame_len(b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n").unwrap(),
            Some(19)
        );
        assert_eq!(frame_len(b"*-1\r\n").unwrap(), Some(5));
        assert_eq!(frame_len(b"*0\r\n").unwrap(), Some(4));
        assert_eq!(frame_len(b"$3\r\nfo").unwrap(), None);
        assert!(frame_len(b"?x\r\n").is_err());
    }

    #[test]
    fn scans_resp3_kinds() {
        assert_eq!(frame_len(b"_\r\n").unwrap(), Some(3));
        assert_eq!(frame_len(b",3.5\r\n#t\r\n").unwrap(), Some(6));
        assert_eq!(frame_len(b"(123\r\n").unwrap(), Some(6));
        assert_eq!(frame_len(b"=7\r\ntxt:abc\r\n").unwrap(), Some(13));
        let map = b"%2\r\n+a\r\n:1\r\n+b\r\n~1\r\n,2\r\n";
        assert_eq!(frame_len(map).unwrap(), Some(map.len()));
        assert_eq!(frame_len(&map[..map.len() - 1]).unwrap(), None);
        let push = b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n";
        assert_eq!(frame_len(push).unwrap(), Some(push.len()));
        // An attribute is followed by the reply it describes: both make one frame.
        let attributed = b"|1\r\n+ttl\r\n:5\r\n$1\r\nv\r\n";
        assert_eq!(frame_len(attributed).unwrap(), Some(attributed.len()));
    }

    #[test]
    fn resumes_across_reads() {
        let full = b"*3\r\n$3\r\nabc\r\n:12\r\n*1\r\n+x\r\n";
        let mut s = ReplyScanner::default();
        for cut in 1..full.len() {
            assert_eq!(s.scan(&full[..cut]).unwrap(), None, "cut {cut}");
        }
        assert_eq!(s.scan(full).unwrap(), Some(full.len()));
    }

    #[test]
    fn elements_and_values() {
        let raw = Bytes::from_static(b"*3\r\n$1\r\na\r\n$-1\r\n:7\r\n");
        let el = array_elements(&raw).unwrap();
        assert_eq!(el.len(), 3);
        assert_eq!(string(&el[0]), Some(&b"a"[..]));
        assert_eq!(string(&el[1]), None);
        assert_eq!(integer(&el[2]), Some(7));
        assert!(array_elements(&Bytes::from_static(b"-ERR x\r\n")).is_none());
    }

    #[test]
    fn redirects() {
        assert_eq!(
            classify(b"-MOVED 3999 127.0.0.1:6381\r\n"),
            Redirect::Moved(3999, "127.0.0.1:6381")
        );
        assert_eq!(
            classify(b"-ASK 3999 ::1:6381\r\n"),
            Redirect::Ask("::1:6381")
        );
        assert_eq!(classify(b"-TRYAGAIN Multiple keys\r\n"), Redirect::TryAgain);
        assert_eq!(classify(b"-CLUSTERDOWN down\r\n"), Redirect::ClusterDown);
        assert_eq!(classify(b"-ERR wrong\r\n"), Redirect::None);
        assert_eq!(classify(b"$5\r\nMOVED\r\n"), Redirect::None);
    }
}
