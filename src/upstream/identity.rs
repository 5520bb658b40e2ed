//! Node users a request may run as, other than the proxy's own.
//!
//! Some requests must run on a node with a client's rights rather than the proxy's: a
//! script checks every `redis.call` against the user of the connection it runs on. Such a
//! request names an identity in its [`super::Lane`]; each node pool keeps one connection per
//! identity in use, which logs in with the proxy's credentials, runs the identity's set-up
//! command (creating the node user, e.g. `ACL SETUSER`), and then logs in as that user. If
//! either step fails the connection is never used, so a request can never run with more
//! rights than its identity has.
//!
//! This layer knows nothing of what the identity stands for; the proxy registers and
//! forgets identities as its users change.

use bytes::Bytes;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// The proxy's own node user.
pub const PROXY: u32 = 0;

/// One node user requests may run as.
pub struct NodeUser {
    /// Sent first, with the proxy's rights; must answer `+OK`.
    pub setup: Bytes,
    /// The node user to log in as afterwards.
    pub username: String,
    /// Its password.
    pub password: String,
    /// Set when forgotten: its connections stop instead of reconnecting.
    pub forgotten: std::sync::atomic::AtomicBool,
}

impl NodeUser {
    /// A node user set up by `setup`, logged in as `username` / `password`.
    pub fn new(setup: Bytes, username: String, password: String) -> NodeUser {
        NodeUser {
            setup,
            username,
            password,
            forgotten: Default::default(),
        }
    }

    /// Whether it was forgotten (see [`Identities::forget`]).
    pub fn is_forgotten(&self) -> bool {
        self.forgotten.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for NodeUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeUser")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The identities in use, by number; shared by every pool through [`super::Settings`].
#[derive(Debug, Default)]
pub struct Identities {
    by_id: RwLock<HashMap<u32, Arc<NodeUser>>>,
    next: AtomicU32,
    /// Bumped when one is forgotten, so pools drop their connections lazily.
    forgotten: AtomicU64,
}

impl Identities {
    /// Registers `user`; requests whose lane carries the returned number run as it.
    pub fn register(&self, user: NodeUser) -> u32 {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.by_id.write().insert(id, Arc::new(user));
        id
    }

    /// Forgets an identity: its connections close, and requests still naming it fail.
    pub fn forget(&self, id: u32) {
        if let Some(user) = self.by_id.write().remove(&id) {
            user.forgotten.store(true, Ordering::Relaxed);
            self.forgotten.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The node user behind `id`, while registered.
    pub fn get(&self, id: u32) -> Option<Arc<NodeUser>> {
        self.by_id.read().get(&id).cloned()
    }

    /// How many identities were forgotten so far.
    pub fn forgotten(&self) -> u64 {
        self.forgotten.load(Ordering::Relaxed)
    }
}
