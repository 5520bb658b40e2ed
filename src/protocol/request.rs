//! Client request decoding: RESP multibulk arrays and inline commands, with limits.
//!
//! Limits are checked from headers before any data is buffered for them, and nothing is
//! allocated by a declared count: a client that announces `*2147483647` or `$536870912` costs
//! the proxy only the bytes it actually sends. Decoding is resumable, so a large request that
//! arrives in many reads is scanned once, not once per read.

use super::{find_crlf, parse_i64, ProtocolError};
use bytes::{Bytes, BytesMut};
use std::ops::Range;
use tokio_util::codec::Decoder;

/// One client command.
#[derive(Debug, Clone)]
pub struct Request {
    /// The command as a RESP array, exactly as the client sent it (inline commands are
    /// re-encoded), so it can be forwarded without re-encoding.
    pub raw: Bytes,
    /// Command name followed by its arguments; each is a slice of `raw`.
    pub args: Vec<Bytes>,
}

impl Request {
    /// Builds a request from arguments, encoding it as a RESP array.
    pub fn from_args(args: Vec<Bytes>) -> Request {
        let raw = encode_command(&args);
        let args = slice_args(&raw, args.len());
        Request { raw, args }
    }

    /// The command name (first argument); empty for an empty request.
    pub fn name(&self) -> &[u8] {
        self.args.first().map(|a| a.as_ref()).unwrap_or(b"")
    }
}

/// Encodes arguments as a RESP array of bulk strings.
pub fn encode_command<B: AsRef<[u8]>>(args: &[B]) -> Bytes {
    let len: usize = args.iter().map(|a| a.as_ref().len() + 16).sum::<usize>() + 16;
    let mut out = BytesMut::with_capacity(len);
    push_header(&mut out, b'*', args.len());
    for arg in args {
        push_bulk(&mut out, arg.as_ref());
    }
    out.freeze()
}

/// Appends a `<prefix><n>\r\n` header.
pub fn push_header(out: &mut BytesMut, prefix: u8, n: usize) {
    // Built on the stack and appended at once: one capacity check, not three.
    let mut buf = [0u8; 23];
    let digits = format_usize(n, &mut buf[..21]);
    let start = 21 - digits - 1;
    buf[start] = prefix;
    buf[21] = b'\r';
    buf[22] = b'\n';
    out.extend_from_slice(&buf[start..]);
}

/// Appends one bulk string.
pub fn push_bulk(out: &mut BytesMut, data: &[u8]) {
    push_header(out, b'$', data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Writes `n` in decimal at the end of `buf` (at least 20 bytes long) and returns how many
/// digits it took.
fn format_usize(mut n: usize, buf: &mut [u8]) -> usize {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.len() - i
}

/// Re-slices the arguments out of an encoded RESP array we produced ourselves.
fn slice_args(raw: &Bytes, argc: usize) -> Vec<Bytes> {
    let mut args = Vec::with_capacity(argc);
    let mut pos = find_crlf(raw).map(|i| i + 2).unwrap_or(raw.len());
    for _ in 0..argc {
        let Some(end) = find_crlf(&raw[pos..]) else {
            break;
        };
        let len = parse_i64(&raw[pos + 1..pos + end]).unwrap_or(0).max(0) as usize;
        let start = pos + end + 2;
        args.push(raw.slice(start..start + len));
        pos = start + len + 2;
    }
    args
}

/// Limits for one client connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest inline command or header line.
    pub max_inline: usize,
    /// Longest bulk string.
    pub max_bulk: usize,
    /// Most arguments in one command.
    pub max_args: usize,
    /// Largest whole request.
    pub max_request: usize,
    /// The client has not authenticated yet: Redis's pre-auth limits apply (10 arguments,
    /// 16 KiB bulk strings), with Redis's error texts.
    pub unauthenticated: bool,
}

/// Most arguments before authentication (as Redis).
const PRE_AUTH_ARGS: i64 = 10;
/// Longest bulk string before authentication (as Redis).
const PRE_AUTH_BULK: i64 = 16 * 1024;

impl Limits {
    /// The limits configured in `[proxy]`.
    pub fn from_config(p: &crate::config::ProxySection) -> Limits {
        Limits {
            max_inline: p.max_inline_bytes,
            max_bulk: p.max_bulk_bytes,
            max_args: p.max_args,
            max_request: p.max_request_bytes,
            unauthenticated: false,
        }
    }

    /// These limits for a client that still has to authenticate.
    pub fn pre_auth(self) -> Limits {
        Limits {
            unauthenticated: true,
            ..self
        }
    }
}

/// Error from the request decoder: the socket failed or the client broke the protocol.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Reading from the client failed.
    #[error("client read failed: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes are not a valid request.
    #[error("Protocol error: {0}")]
    Protocol(#[from] ProtocolError),
}

/// A multibulk request whose header has been read but whose arguments are still arriving.
#[derive(Debug)]
struct Partial {
    argc: usize,
    /// Offset of the next unread byte.
    pos: usize,
    args: Vec<Range<usize>>,
}

/// Resumable decoder for client requests.
#[derive(Debug)]
pub struct RequestDecoder {
    limits: Limits,
    partial: Option<Partial>,
}

impl RequestDecoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        RequestDecoder {
            limits,
            partial: None,
        }
    }

    /// Changes the limits (after the client authenticates, or is reset).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    fn decode_multibulk(&mut self, src: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        let limits = self.limits;
        let mut partial = match self.partial.take() {
            Some(p) => p,
            None => {
                let Some(end) =
                    find_crlf(&src[..src.len().min(limits.max_inline.saturating_add(2))])
                else {
                    if src.len() > limits.max_inline {
                        return Err(ProtocolError::new("too big mbulk count string"));
                    }
                    return Ok(None);
                };
                let argc = parse_i64(&src[1..end])
                    .filter(|&n| n <= limits.max_args as i64)
                    .ok_or_else(|| ProtocolError::new("invalid multibulk length"))?;
                if limits.unauthenticated && argc > PRE_AUTH_ARGS {
                    return Err(ProtocolError::new("unauthenticated multibulk length"));
                }
                if argc <= 0 {
                    // Redis ignores empty multibulks.
                    let _ = src.split_to(end + 2);
                    return Ok(None);
                }
                let argc = argc as usize;
                Partial {
                    argc,
                    pos: end + 2,
                    args: Vec::with_capacity(argc.min(16)),
                }
            }
        };
        while partial.args.len() < partial.argc {
            let pos = partial.pos;
            if pos >= src.len() {
                self.partial = Some(partial);
                return Ok(None);
            }
            if src[pos] != b'$' {
                return Err(ProtocolError::new(format!(
                    "expected '$', got '{}'",
                    char::from(src[pos])
                )));
            }
            let window = &src[pos..src
                .len()
                .min(pos.saturating_add(limits.max_inline).saturating_add(2))];
            let Some(end) = find_crlf(window) else {
                if window.len() > limits.max_inline {
                    return Err(ProtocolError::new("too big bulk count string"));
                }
                self.partial = Some(partial);
                return Ok(None);
            };
            let len = parse_i64(&window[1..end])
                .filter(|&n| n >= 0 && n as u64 <= limits.max_bulk as u64)
                .ok_or_else(|| ProtocolError::new("invalid bulk length"))?;
            if limits.unauthenticated && len > PRE_AUTH_BULK {
                return Err(ProtocolError::new("unauthenticated bulk length"));
            }
            let len = len as usize;
            let start = pos + end + 2;
            if start + len > limits.max_request {
                return Err(ProtocolError::new(format!(
                    "request larger than {} bytes",
                    limits.max_request
                )));
            }
            if src.len() < start + len + 2 {
                self.partial = Some(partial);
                return Ok(None);
            }
            if &src[start + len..start + len + 2] != b"\r\n" {
                return Err(ProtocolError::new("expected CRLF after bulk string"));
            }
            partial.args.push(start..start + len);
            partial.pos = start + len + 2;
        }
        let raw = src.split_to(partial.pos).freeze();
        let args = partial.args.into_iter().map(|r| raw.slice(r)).collect();
        Ok(Some(Request { raw, args }))
    }

    fn decode_inline(&mut self, src: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        let window = &src[..src.len().min(self.limits.max_inline.saturating_add(1))];
        let Some(end) = window.iter().position(|&b| b == b'\n') else {
            if src.len() > self.limits.max_inline {
                return Err(ProtocolError::new("too big inline request"));
            }
            return Ok(None);
        };
        let line = src.split_to(end + 1);
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        let args = split_inline(text)?;
        if args.is_empty() {
            return Ok(None);
        }
        // The same argument limit as a multibulk request, so that no path around it exists.
        if args.len() > self.limits.max_args {
            return Err(ProtocolError::new(format!(
                "inline request with more than {} arguments",
                self.limits.max_args
            )));
        }
        Ok(Some(Request::from_args(args)))
    }
}

/// Free room a client's read buffer gets once a command spans two reads, in bytes.
const GROWN_BUFFER: usize = 16 * 1024;

impl Decoder for RequestDecoder {
    type Item = Request;
    type Error = DecodeError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Request>, DecodeError> {
        loop {
            if src.is_empty() {
                return Ok(None);
            }
            let before = src.len();
            let result = if self.partial.is_some() || src[0] == b'*' {
                self.decode_multibulk(src)?
            } else {
                self.decode_inline(src)?
            };
            match result {
                Some(request) => return Ok(Some(request)),
                // Something was consumed (empty line or empty multibulk): look again.
                None if src.len() < before => continue,
                None => {
                    // A command spans reads: this client sends more than a small buffer
                    // holds, so give the next read room (connections start small; see
                    // docs/perf.md).
                    if src.capacity() - src.len() < GROWN_BUFFER / 2 {
                        src.reserve(GROWN_BUFFER);
                    }
                    return Ok(None);
                }
            }
        }
    }
}

/// Splits an inline command line into arguments, honouring quotes like `redis-cli` and Redis do.
fn split_inline(line: &[u8]) -> Result<Vec<Bytes>, ProtocolError> {
    let unbalanced = || ProtocolError::new("unbalanced quotes in request");
    let mut args = Vec::new();
    let mut i = 0;
    while i < line.len() {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= line.len() {
            break;
        }
        let mut arg = Vec::new();
        match line[i] {
            quote @ (b'"' | b'\'') => {
                i += 1;
                loop {
                    let &c = line.get(i).ok_or_else(unbalanced)?;
                    i += 1;
                    if c == quote {
                        if line.get(i).is_some_and(|c| !c.is_ascii_whitespace()) {
                            return Err(unbalanced());
                        }
                        break;
                    }
                    if c == b'\\' && quote == b'"' {
                        let &e = line.get(i).ok_or_else(unbalanced)?;
                        i += 1;
                        arg.push(match e {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'a' => 7,
                            b'b' => 8,
                            b'x' => {
                                let hex = line.get(i..i + 2).ok_or_else(unbalanced)?;
                                let s = std::str::from_utf8(hex).map_err(|_| unbalanced())?;
                                i += 2;
                                u8::from_str_radix(s, 16).map_err(|_| unbalanced())?
                            }
                            other => other,
                        });
                    } else if c == b'\\' && line.get(i) == Some(&b'\'') {
                        arg.push(b'\'');
                        i += 1;
                    } else {
                        arg.push(c);
                    }
                }
            }
            _ => {
                while i < line.len() && !line[i].is_ascii_whitespace() {
                    arg.push(line[i]);
                    i += 1;
                }
            }
        }
        args.push(Bytes::from(arg));
    }
    Ok(args)
}

/// The arguments of a command written as words split by spaces (`"SET k v"`), for tests.
#[cfg(test)]
pub fn words(s: &str) -> Vec<Bytes> {
    s.split(' ')
        .map(|w| Bytes::copy_from_slice(w.as_bytes()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            unauthenticated: false,
            max_inline: 64 * 1024,
            max_bulk: 1024,
            max_args: 100,
            max_request: 4096,
        }
    }

    fn decode_all(input: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, DecodeError> {
        let mut d = RequestDecoder::new(limits());
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(r) = d.decode(&mut buf)? {
            out.push(r.args.iter().map(|a| a.to_vec()).collect());
        }
        Ok(out)
    }

    #[test]
    fn multibulk_and_inline() {
        let got =
            decode_all(b"*2\r\n$3\r\nGET\r\n$3\r\nfoo\r\nSET a \"b c\"\r\n\r\nPING\n").unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], vec![b"GET".to_vec(), b"foo".to_vec()]);
        assert_eq!(
            got[1],
            vec![b"SET".to_vec(), b"a".to_vec(), b"b c".to_vec()]
        );
        assert_eq!(got[2], vec![b"PING".to_vec()]);
    }

    #[test]
    fn byte_by_byte_is_resumable() {
        let input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n";
        let mut d = RequestDecoder::new(limits());
        let mut buf = BytesMut::new();
        let mut got = None;
        for &b in input.iter() {
            buf.extend_from_slice(&[b]);
            if let Some(r) = d.decode(&mut buf).unwrap() {
                got = Some(r);
            }
        }
        let r = got.expect("decoded");
        assert_eq!(&r.raw[..], &input[..]);
        assert_eq!(&r.args[2][..], b"hello");
        assert!(buf.is_empty());
    }

    #[test]
    fn limits_are_enforced_from_headers() {
        let e = decode_all(b"*2\r\n$3\r\nGET\r\n$999999\r\n").unwrap_err();
        assert_eq!(e.to_string(), "Protocol error: invalid bulk length");
        let e = decode_all(b"*2147483647\r\n").unwrap_err();
        assert_eq!(e.to_string(), "Protocol error: invalid multibulk length");
        let e = decode_all(b"*1\r\n+GET\r\n").unwrap_err();
        assert_eq!(e.to_string(), "Protocol error: expected '$', got '+'");
        let e = decode_all(b"*x\r\n").unwrap_err();
        assert_eq!(e.to_string(), "Protocol error: invalid multibulk length");
        let e = decode_all(b"SET a \"b\r\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Protocol error: unbalanced quotes in request"
        );
    }

    #[test]
    fn long_inline_rejected() {
        let mut d = RequestDecoder::new(limits());
        let mut buf = BytesMut::from(&vec![b'a'; 64 * 1024 + 10][..]);
        let e = d.decode(&mut buf).unwrap_err();
        assert_eq!(e.to_string(), "Protocol error: too big inline request");
    }

    #[test]
    fn inline_argument_limit_holds() {
        let mut d = RequestDecoder::new(Limits {
            max_args: 3,
            ..limits()
        });
        let mut buf = BytesMut::from(&b"a b c\r\na b c d\r\n"[..]);
        assert_eq!(d.decode(&mut buf).unwrap().unwrap().args.len(), 3);
        let e = d.decode(&mut buf).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Protocol error: inline request with more than 3 arguments"
        );
    }

    #[test]
    fn encode_round_trip() {
        let r = Request::from_args(vec![Bytes::from_static(b"MGET"), Bytes::from_static(b"a")]);
        assert_eq!(&r.raw[..], b"*2\r\n$4\r\nMGET\r\n$1\r\na\r\n");
        assert_eq!(&r.args[1][..], b"a");
    }

    #[test]
    fn headers_for_every_width() {
        for n in [0, 7, 10, 12345, usize::MAX] {
            let mut out = BytesMut::new();
            push_header(&mut out, b'$', n);
            assert_eq!(&out[..], format!("${n}\r\n").as_bytes());
        }
    }
}
