//! The proxy's own Lua scripts for commands across slots, and how they are called: by SHA,
//! and with the whole body once a node answers `NOSCRIPT` (which also caches it there). The
//! set is fixed, so the nodes' script caches do not grow with the commands clients send.

use crate::cluster::router::{Retry, Router, Target};
use crate::protocol::request::{push_bulk, push_header};
use crate::upstream::Lane;
use bytes::{Bytes, BytesMut};
use std::sync::OnceLock;

/// One of the proxy's scripts.
#[derive(Debug)]
pub struct Script {
    body: &'static str,
    sha: OnceLock<String>,
}

impl Script {
    const fn new(body: &'static str) -> Script {
        Script {
            body,
            sha: OnceLock::new(),
        }
    }

    /// The body's SHA1, as `EVALSHA` wants it.
    pub fn sha(&self) -> &str {
        self.sha
            .get_or_init(|| sha1_smol::Sha1::from(self.body).digest().to_string())
    }

    /// The body.
    pub fn body(&self) -> &'static str {
        self.body
    }

    /// `EVALSHA sha 0 argv…` (or, with `by_body`, `EVAL body 0 argv…`).
    pub fn call(&self, argv: &[Bytes], by_body: bool) -> Bytes {
        let size: usize = argv.iter().map(|a| a.len() + 16).sum::<usize>() + self.body.len() + 32;
        let mut out = BytesMut::with_capacity(size);
        push_header(&mut out, b'*', 3 + argv.len());
        match by_body {
            false => {
                push_bulk(&mut out, b"EVALSHA");
                push_bulk(&mut out, self.sha().as_bytes());
            }
            true => {
                push_bulk(&mut out, b"EVAL");
                push_bulk(&mut out, self.body.as_bytes());
            }
        }
        push_bulk(&mut out, b"0");
        for arg in argv {
            push_bulk(&mut out, arg);
        }
        out.freeze()
    }
}

/// Runs the commands of one node, copying keys of other slots (see `exec.lua`).
pub static EXEC: Script = Script::new(include_str!("exec.lua"));
/// Reads keys of a node for a command across nodes (see `dump.lua`).
pub static DUMP: Script = Script::new(include_str!("dump.lua"));
/// Writes back what a command across nodes changed on a node (see `apply.lua`).
pub static APPLY: Script = Script::new(include_str!("apply.lua"));

/// Runs `script` with `argv` on the owner of `slot`; a node that does not have it yet gets
/// the body. The reply is the script's, or the router's error.
pub async fn run(router: &Router, lane: Lane, slot: u16, script: &Script, argv: &[Bytes]) -> Bytes {
    let target = Target::Slot(slot);
    let reply = router
        .send_call(lane, target, script.call(argv, false), Retry::single(true))
        .await;
    if !reply.starts_with(b"-NOSCRIPT") {
        return reply;
    }
    router
        .send_call(lane, target, script.call(argv, true), Retry::single(true))
        .await
}

/// Whether a script's reply says a key is not served by that node now (nothing was written).
pub fn must_retry(reply: &[u8]) -> bool {
    reply.starts_with(b"-SLOTPROXY-RETRY")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_by_sha_or_body() {
        let argv = [Bytes::from_static(b"x")];
        let by_sha = EXEC.call(&argv, false);
        assert!(by_sha.starts_with(b"*4\r\n$7\r\nEVALSHA\r\n$40\r\n"));
        assert!(by_sha.ends_with(b"$1\r\n0\r\n$1\r\nx\r\n"));
        let by_body = EXEC.call(&argv, true);
        assert!(by_body.starts_with(b"*4\r\n$4\r\nEVAL\r\n"));
        assert!(EXEC
            .body()
            .starts_with("#!lua flags=allow-cross-slot-keys\n"));
        assert_eq!(DUMP.sha().len(), 40);
    }
}
