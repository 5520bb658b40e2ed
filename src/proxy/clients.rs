//! The proxy's own client list. `CLIENT LIST`, `CLIENT INFO` and `CLIENT KILL` see the
//! clients of the proxy, as they would see the clients of one Redis, never the proxy's
//! connections to the nodes.
//!
//! Each session registers a [`ClientHandle`] that it keeps current with cheap stores (last
//! activity, last command); other sessions read it only when someone asks for the list.

use crate::protocol::command::CommandInfo;
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// What other sessions may see of one client, and the switch that disconnects it.
#[derive(Debug)]
pub struct ClientHandle {
    /// CLIENT ID
    pub id: u64,
    /// The client's address.
    pub peer: String,
    /// The proxy's address the client connected to.
    pub local: String,
    created: Instant,
    /// Milliseconds after `created` of the last command.
    last_active: AtomicU64,
    last_command: Mutex<Option<Arc<CommandInfo>>>,
    name: Mutex<Option<Bytes>>,
    user: Mutex<String>,
    resp3: AtomicBool,
    /// Channels, patterns, shard channels.
    subscriptions: [AtomicUsize; 3],
    /// The subscriptions by name (pattern or not), for ACL re-checks when the user changes.
    subscribed_to: Mutex<Vec<(Bytes, bool)>>,
    /// Commands queued in MULTI; -1 outside MULTI.
    multi: AtomicI64,
    /// Tripped by `CLIENT KILL`: the session ends.
    pub kill: CancellationToken,
    /// A blocking command is waiting (CLIENT UNBLOCK may end it).
    blocked: AtomicBool,
    /// How CLIENT UNBLOCK ended the wait: `true` with an error, `false` as a timeout.
    unblock_with_error: AtomicBool,
    /// Wakes the blocked command for CLIENT UNBLOCK.
    pub unblock: tokio::sync::Notify,
}

impl ClientHandle {
    /// A fresh client.
    pub fn new(id: u64, peer: String, local: String) -> ClientHandle {
        ClientHandle {
            id,
            peer,
            local,
            created: Instant::now(),
            last_active: AtomicU64::new(0),
            last_command: Mutex::new(None),
            name: Mutex::new(None),
            user: Mutex::new("default".into()),
            resp3: AtomicBool::new(false),
            subscriptions: Default::default(),
            subscribed_to: Mutex::new(Vec::new()),
            multi: AtomicI64::new(-1),
            kill: CancellationToken::new(),
            blocked: AtomicBool::new(false),
            unblock_with_error: AtomicBool::new(false),
            unblock: tokio::sync::Notify::new(),
        }
    }

    /// Marks the start or end of a blocking command.
    pub fn set_blocked(&self, blocked: bool) {
        self.blocked.store(blocked, Ordering::Relaxed);
    }

    /// CLIENT UNBLOCK: wakes the client's blocking command; `false` if it was not blocked.
    pub fn wake(&self, with_error: bool) -> bool {
        if !self.blocked.load(Ordering::Relaxed) {
            return false;
        }
        self.unblock_with_error.store(with_error, Ordering::Relaxed);
        self.unblock.notify_one();
        true
    }

    /// Whether the last CLIENT UNBLOCK asked for an error.
    pub fn unblocked_with_error(&self) -> bool {
        self.unblock_with_error.load(Ordering::Relaxed)
    }

    /// Notes a command read at `at` and about to run; `changed` says it differs from the
    /// client's previous one (only then is the shared copy updated, so a repeated command
    /// costs one store). `at` is the session's clock read for its batch of commands: no
    /// clock read per command.
    pub fn ran(&self, command: &Arc<CommandInfo>, changed: bool, at: Instant) {
        let now = at.saturating_duration_since(self.created).as_millis() as u64;
        self.last_active.store(now, Ordering::Relaxed);
        if changed {
            *self.last_command.lock() = Some(command.clone());
        }
    }

    /// CLIENT SETNAME
    pub fn set_name(&self, name: Option<Bytes>) {
        *self.name.lock() = name;
    }

    /// CLIENT GETNAME
    pub fn name(&self) -> Option<Bytes> {
        self.name.lock().clone()
    }

    /// The user the client authenticated as.
    pub fn set_user(&self, user: &str) {
        *self.user.lock() = user.to_string();
    }

    /// The user the client runs as.
    pub fn user(&self) -> String {
        self.user.lock().clone()
    }

    /// The protocol the client speaks.
    pub fn set_resp3(&self, resp3: bool) {
        self.resp3.store(resp3, Ordering::Relaxed);
    }

    /// Current subscription counts: channels, patterns, shard channels.
    pub fn set_subscriptions(&self, counts: [usize; 3]) {
        for (slot, count) in self.subscriptions.iter().zip(counts) {
            slot.store(count, Ordering::Relaxed);
        }
    }

    /// The subscriptions by name, and whether each is a pattern.
    pub fn set_subscribed_to(&self, names: Vec<(Bytes, bool)>) {
        *self.subscribed_to.lock() = names;
    }

    /// What [`ClientHandle::set_subscribed_to`] recorded.
    pub fn subscribed_to(&self) -> Vec<(Bytes, bool)> {
        self.subscribed_to.lock().clone()
    }

    /// Commands queued in MULTI (`None`: not in MULTI).
    pub fn set_multi(&self, queued: Option<usize>) {
        let value = queued.map_or(-1, |n| n as i64);
        self.multi.store(value, Ordering::Relaxed);
    }

    fn subscribed(&self) -> bool {
        self.subscriptions
            .iter()
            .any(|s| s.load(Ordering::Relaxed) > 0)
    }

    /// One line of `CLIENT LIST` (the fields Redis prints; memory figures are the proxy's
    /// business and shown as 0).
    pub fn line(&self) -> String {
        let age = self.created.elapsed();
        let idle = age.as_millis() as u64
            - self
                .last_active
                .load(Ordering::Relaxed)
                .min(age.as_millis() as u64);
        let name = self
            .name()
            .map(|n| String::from_utf8_lossy(&n).into_owned());
        let multi = self.multi.load(Ordering::Relaxed);
        let flags = match (self.subscribed(), multi >= 0) {
            (true, _) => "P",
            (false, true) => "x",
            (false, false) => "N",
        };
        let command = self
            .last_command
            .lock()
            .as_ref()
            .map_or_else(|| "NULL".to_string(), |c| c.name.clone());
        let [sub, psub, ssub] = [0, 1, 2].map(|i| self.subscriptions[i].load(Ordering::Relaxed));
        let mut line = String::new();
        let _ = writeln!(
            line,
            "id={} addr={} laddr={} fd=-1 name={} age={} idle={} flags={flags} db=0 sub={sub} psub={psub} ssub={ssub} multi={multi} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={command} user={} redir=-1 resp={}",
            self.id,
            self.peer,
            self.local,
            name.unwrap_or_default(),
            age.as_secs(),
            idle / 1000,
            self.user(),
            if self.resp3.load(Ordering::Relaxed) { 3 } else { 2 },
        );
        line
    }
}

/// Every connected client.
#[derive(Debug, Default)]
pub struct Registry {
    clients: Mutex<BTreeMap<u64, Arc<ClientHandle>>>,
}

/// Which clients `CLIENT KILL` picks.
#[derive(Debug, Default)]
pub struct KillFilter {
    /// `ID`
    pub id: Option<u64>,
    /// `ADDR` (or the old one-argument form)
    pub addr: Option<String>,
    /// `LADDR`
    pub laddr: Option<String>,
    /// `USER`
    pub user: Option<String>,
    /// `TYPE pubsub` (`Some(true)`) or `TYPE normal` (`Some(false)`).
    pub pubsub: Option<bool>,
    /// `SKIPME yes` (the default): never the caller.
    pub skip_me: bool,
}

impl Registry {
    /// Adds a client; it stays listed until [`Registry::remove`].
    pub fn add(&self, client: Arc<ClientHandle>) {
        self.lock().insert(client.id, client);
    }

    /// Removes a client that left.
    pub fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Every client now (killed ones that have not left yet excluded).
    pub fn all(&self) -> Vec<Arc<ClientHandle>> {
        self.lock()
            .values()
            .filter(|c| !c.kill.is_cancelled())
            .cloned()
            .collect()
    }

    /// Clients waiting in a blocking command now (`INFO`'s `blocked_clients`).
    pub fn blocked_count(&self) -> usize {
        self.lock()
            .values()
            .filter(|c| !c.kill.is_cancelled() && c.blocked.load(Ordering::Relaxed))
            .count()
    }

    /// `CLIENT LIST [ID id …]` text (a killed client is gone at once, as in Redis).
    pub fn list(&self, ids: Option<&[u64]>) -> String {
        self.lock()
            .values()
            .filter(|c| !c.kill.is_cancelled())
            .filter(|c| ids.map_or(true, |ids| ids.contains(&c.id)))
            .map(|c| c.line())
            .collect()
    }

    /// The client with this id.
    pub fn get(&self, id: u64) -> Option<Arc<ClientHandle>> {
        self.lock().get(&id).cloned()
    }

    /// Disconnects the clients `filter` picks; returns how many.
    pub fn kill(&self, filter: &KillFilter, me: u64) -> usize {
        let clients = self.lock();
        let mut killed = 0;
        for client in clients.values() {
            let picked = !(filter.skip_me && client.id == me)
                && filter.id.map_or(true, |id| id == client.id)
                && filter.addr.as_ref().map_or(true, |a| *a == client.peer)
                && filter.laddr.as_ref().map_or(true, |a| *a == client.local)
                && filter.user.as_ref().map_or(true, |u| *u == client.user())
                && filter.pubsub.map_or(true, |p| p == client.subscribed());
            if picked {
                client.kill.cancel();
                killed += 1;
            }
        }
        killed
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, BTreeMap<u64, Arc<ClientHandle>>> {
        self.clients.lock()
    }
}
