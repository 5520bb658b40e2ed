//! Raw conversations with the proxy: HTTP requests to the admin listener, RESP bytes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A minimal HTTP/1.1 GET.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_raw(addr, "GET", path, "", None)
}

/// One HTTP/1.1 request on its own connection; returns (status, body).
fn http_raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect admin");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Sends raw bytes and reads until the server closes or `timeout` passes.
pub fn raw_exchange(addr: SocketAddr, input: &[u8], timeout: Duration) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(timeout)).expect("timeout");
    stream.write_all(input).expect("write");
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    out
}

/// Sends each command of `script` in turn on a fresh connection to `addr`, reading for
/// `settle` after each; returns every byte received.
pub fn conversation(addr: SocketAddr, script: &[&[&str]], settle: Duration) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut out = Vec::new();
    let mut input = Vec::new();
    for command in script {
        input.extend_from_slice(format!("*{}\r\n", command.len()).as_bytes());
        for arg in *command {
            input.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
        }
        // One command at a time, as a client waiting for each reply would.
        stream.write_all(&input).expect("write");
        input.clear();
        let until = Instant::now() + settle;
        let mut buf = [0u8; 4096];
        while Instant::now() < until {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
    }
    out
}

/// A minimal HTTP/1.1 request with an optional bearer token; the body is parsed as JSON
/// (`Null` when it is not JSON).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> (u16, serde_json::Value) {
    let (status, body) = http_raw(addr, method, path, body, token);
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// A RESP client that sends one command at a time and reads exactly its reply (framed by
/// the proxy's own reply scanner), for byte-for-byte comparisons.
pub struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Wire {
    /// Connects to `addr`; with `resp3`, switches to RESP3 first (`HELLO 3`).
    pub fn connect(addr: &str, resp3: bool) -> Wire {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut wire = Wire {
            stream,
            buf: Vec::new(),
        };
        if resp3 {
            wire.call(&["HELLO", "3"]);
        }
        wire
    }

    /// Sends `args` and returns its reply's bytes.
    pub fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Vec<u8> {
        let mut input = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            let arg = arg.as_ref();
            input.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            input.extend_from_slice(arg);
            input.extend_from_slice(b"\r\n");
        }
        self.stream.write_all(&input).expect("write");
        loop {
            if let Ok(Some(len)) = slotproxy::protocol::scan::frame_len(&self.buf) {
                return self.buf.drain(..len).collect();
            }
            let mut chunk = [0u8; 16384];
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("connection closed waiting for the reply"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("reading the reply: {e}"),
            }
        }
    }
}
