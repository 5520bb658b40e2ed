//! MONITOR: every command the proxy's clients send, as they sent it, in Redis's format.
//!
//! The nodes' own MONITOR would show the proxy's connections and its rewritten commands
//! (ASKING, split parts, MULTI blocks), so the proxy keeps its own feed. While nobody monitors,
//! the cost is one relaxed atomic load per command. A monitor that reads slower than commands
//! arrive misses lines rather than growing the proxy's memory; the feed holds the latest
//! [`FEED_CAPACITY`] lines.

use crate::protocol::Request;
use bytes::Bytes;
use std::fmt::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;

/// Lines kept for monitors that fall behind.
pub const FEED_CAPACITY: usize = 4096;

/// The feed every monitor reads.
#[derive(Debug)]
pub struct Monitors {
    feed: broadcast::Sender<Bytes>,
    watching: Arc<AtomicUsize>,
}

impl Default for Monitors {
    fn default() -> Self {
        Monitors {
            feed: broadcast::channel(FEED_CAPACITY).0,
            watching: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// One monitoring client's subscription; dropping it stops the feed for that client.
#[derive(Debug)]
pub struct Subscription {
    /// Lines to write to the client.
    pub lines: broadcast::Receiver<Bytes>,
    watching: Arc<AtomicUsize>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.watching.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Monitors {
    /// MONITOR: starts a feed for one client.
    pub fn subscribe(&self) -> Subscription {
        self.watching.fetch_add(1, Ordering::Relaxed);
        Subscription {
            lines: self.feed.subscribe(),
            watching: self.watching.clone(),
        }
    }

    /// Publishes one command from `peer`, if anyone is watching. Credentials never appear:
    /// AUTH and HELLO are left out, as Redis leaves them out.
    pub fn publish(&self, peer: &str, request: &Request) {
        if self.watching.load(Ordering::Relaxed) == 0 {
            return;
        }
        let Some(name) = request.args.first() else {
            return;
        };
        if name.eq_ignore_ascii_case(b"auth") || name.eq_ignore_ascii_case(b"hello") {
            return;
        }
        // ACL SETUSER carries passwords: its rules show as "(redacted)", as in Redis.
        let setuser = name.eq_ignore_ascii_case(b"acl")
            && request
                .args
                .get(1)
                .is_some_and(|a| a.eq_ignore_ascii_case(b"setuser"));
        if setuser {
            let mut args = request.args[..2.min(request.args.len())].to_vec();
            args.extend(
                request.args[2..]
                    .iter()
                    .map(|_| Bytes::from_static(b"(redacted)")),
            );
            let _ = self.feed.send(line(peer, &args));
            return;
        }
        let _ = self.feed.send(line(peer, &request.args));
    }
}

/// `+1700000000.123456 [0 127.0.0.1:5000] "set" "k" "v"`
fn line(peer: &str, args: &[Bytes]) -> Bytes {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut out = String::with_capacity(64);
    let _ = write!(
        out,
        "+{}.{:06} [0 {peer}]",
        now.as_secs(),
        now.subsec_micros()
    );
    for arg in args {
        out.push_str(" \"");
        for &b in arg.iter() {
            match b {
                b'\\' => out.push_str("\\\\"),
                b'"' => out.push_str("\\\""),
                b'\n' => out.push_str("\\n"),
                b'\r' => out.push_str("\\r"),
                b'\t' => out.push_str("\\t"),
                0x07 => out.push_str("\\a"),
                0x08 => out.push_str("\\b"),
                b if b.is_ascii_graphic() || b == b' ' => out.push(char::from(b)),
                b => {
                    let _ = write!(out, "\\x{b:02x}");
                }
            }
        }
        out.push('"');
    }
    out.push_str("\r\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_redis() {
        let args = [
            Bytes::from_static(b"set"),
            Bytes::from_static(b"k\"1"),
            Bytes::from_static(b"a\r\n\x01"),
        ];
        let text = String::from_utf8(line("1.2.3.4:5", &args).to_vec()).unwrap();
        assert!(text.starts_with('+'), "{text}");
        assert!(
            text.ends_with(" [0 1.2.3.4:5] \"set\" \"k\\\"1\" \"a\\r\\n\\x01\"\r\n"),
            "{text}"
        );
    }
}
