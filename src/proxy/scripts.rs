//! Lua scripts across masters: the proxy remembers every script body it sees (`EVAL`,
//! `SCRIPT LOAD`), so when `EVALSHA` meets `NOSCRIPT` on a node that never saw the script —
//! its slot moved there, the node was added or restarted — the proxy loads the script on that
//! node and runs the call again. The client never sees `NOSCRIPT` for a script it gave the
//! proxy before.

use crate::cluster::router::{Router, Target};
use crate::protocol::request::encode_command;
use crate::upstream::Lane;
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::HashMap;

/// Scripts remembered at most; beyond that new ones are not cached (NOSCRIPT then reaches
/// the client, as with a plain Redis after SCRIPT FLUSH).
const MAX_SCRIPTS: usize = 10_000;

/// Script bodies by lowercase SHA1.
#[derive(Debug, Default)]
pub struct ScriptCache {
    bodies: Mutex<HashMap<String, Bytes>>,
}

impl ScriptCache {
    /// Remembers `body` under its SHA1.
    pub fn remember(&self, body: &Bytes) {
        let sha = sha1_smol::Sha1::from(&body[..]).digest().to_string();
        let mut bodies = self.bodies.lock();
        if bodies.len() < MAX_SCRIPTS || bodies.contains_key(&sha) {
            bodies.insert(sha, body.clone());
        }
    }

    /// The body for `sha`, if the proxy saw it.
    pub fn body(&self, sha: &[u8]) -> Option<Bytes> {
        let sha = String::from_utf8_lossy(sha).to_ascii_lowercase();
        let bodies = self.bodies.lock();
        bodies.get(&sha).cloned()
    }

    /// Forgets every script (`SCRIPT FLUSH`).
    pub fn clear(&self) {
        self.bodies.lock().clear();
    }
}

/// Runs `EVALSHA`/`EVALSHA_RO`; on `NOSCRIPT`, loads the remembered body on the same target
/// and runs it once more.
pub async fn evalsha(
    router: &Router,
    cache: &ScriptCache,
    lane: Lane,
    target: Target,
    request: (Bytes, Bytes),
    write: bool,
) -> Bytes {
    let (payload, sha) = request;
    let reply = router.send(lane, target, payload.clone(), write).await;
    if !reply.starts_with(b"-NOSCRIPT") {
        return reply;
    }
    let Some(body) = cache.body(&sha) else {
        return reply;
    };
    let load = encode_command(&[&b"SCRIPT"[..], b"LOAD", &body]);
    // Loading runs nothing; the proxy does it with its own rights (the user may lack
    // `SCRIPT LOAD`), the call itself runs with the user's.
    let own = Lane {
        identity: crate::upstream::identity::PROXY,
        ..lane
    };
    let loaded = router.send(own, target, load, false).await;
    if loaded.starts_with(b"-") {
        return reply;
    }
    router.send(lane, target, payload, write).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_by_sha1() {
        let cache = ScriptCache::default();
        let body = Bytes::from_static(b"return 1");
        cache.remember(&body);
        // SHA1("return 1"), as Redis computes it.
        let sha = b"E0E1F9FABFC9D4800C877A703B823AC0578FF8DB";
        assert_eq!(cache.body(sha), Some(body));
        cache.clear();
        assert_eq!(cache.body(sha), None);
    }
}
