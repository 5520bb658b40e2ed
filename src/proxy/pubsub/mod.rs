//! Pub/Sub for one client: SUBSCRIBE/PSUBSCRIBE on one node, the owner of [`BUS_SLOT`] (the
//! cluster bus carries every PUBLISH to all nodes), SSUBSCRIBE on the node owning each shard
//! channel's slot.
//!
//! The proxy keeps the client's subscriptions itself and answers the (un)subscribe commands
//! with its own counts, as one Redis would; the nodes only deliver messages. A subscribe is
//! confirmed to the client once the node has acted on it, so a message published after the
//! confirmation is never missed. When a shard channel's slot moves, the old owner drops the
//! channel (or refuses it with `MOVED`) and the proxy subscribes it again on the new owner.
//! When a subscriber connection breaks, its subscriptions are made again on a live node.
//! Channels and patterns that may carry keyspace notifications, which each node publishes
//! only locally, are subscribed on every master ([`local`]).
//!
//! Messages wait in an unbounded queue only up to `proxy.pubsub_output_limit_bytes`: a
//! subscriber that reads slower than messages arrive is disconnected at that point, as Redis
//! does with its `client-output-buffer-limit pubsub`.

pub mod local;
pub mod upstream;

/// Channels and patterns are subscribed on the owner of this slot, and PUBLISH is sent there
/// too: a node's PUBLISH reply counts only its own subscribers, so meeting on one node makes
/// the count every proxy client sees exact, as on a single Redis.
pub const BUS_SLOT: u16 = 0;

/// How often a client subscribed to keyspace notifications checks the masters it listens on.
const NOTIFICATION_SYNC: Duration = Duration::from_secs(1);

use crate::cluster::key_slot;
use crate::cluster::router::Router;
use crate::protocol::command::PubSubCommand;
use crate::protocol::reply;
use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use upstream::{Event, Sink, SubConn};

/// What the session should do after waking the Pub/Sub state.
pub enum Wakeup {
    /// Write this message to the client.
    Message(Bytes),
    /// Nothing for the client.
    Nothing,
}

/// One client's subscriptions and the node connections that serve them.
#[derive(Debug)]
pub struct PubSub {
    channels: BTreeSet<Bytes>,
    patterns: BTreeSet<Bytes>,
    /// Shard channel → the node it is subscribed on (`None`: to be subscribed again).
    shard: BTreeMap<Bytes, Option<Arc<str>>>,
    /// The connection for channels and patterns.
    global: Option<SubConn>,
    /// Connections for shard channels, by node.
    nodes: HashMap<Arc<str>, SubConn>,
    /// Connections to the other masters, for keyspace notifications.
    locals: local::Locals,
    sink: Sink,
    events: mpsc::UnboundedReceiver<Event>,
    next_conn: u64,
    /// When to subscribe again what lost its node.
    repair_at: Option<Instant>,
    repair_attempt: u32,
}

/// The error for other commands in subscribed mode, in Redis' words.
pub fn not_allowed(name: &str) -> Bytes {
    reply::error(&format!(
        "ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
    ))
}

/// `PING [message]` in subscribed mode (RESP2): `["pong", message]`.
pub fn ping(args: &[Bytes]) -> Bytes {
    if args.len() > 2 {
        return reply::error("ERR wrong number of arguments for 'ping' command");
    }
    let message = args.get(1).cloned().unwrap_or_default();
    push(&[b"pong", &message[..]], None)
}

/// A Pub/Sub reply array: bulk strings, then the count if given (nil for an empty name).
fn push(parts: &[&[u8]], count: Option<usize>) -> Bytes {
    let mut elements: Vec<Bytes> = parts
        .iter()
        .map(|p| reply::bulk(Bytes::copy_from_slice(p)))
        .collect();
    if let Some(count) = count {
        elements.push(reply::integer(count as i64));
    }
    reply::array_of_raw(&elements)
}

impl PubSub {
    /// Empty state; `overflow` is the client's disconnect switch.
    pub fn new(limit: usize, overflow: CancellationToken) -> PubSub {
        let (events, rx) = mpsc::unbounded_channel();
        PubSub {
            channels: BTreeSet::new(),
            patterns: BTreeSet::new(),
            shard: BTreeMap::new(),
            global: None,
            nodes: HashMap::new(),
            locals: local::Locals::default(),
            sink: Sink {
                events,
                queued: Arc::new(AtomicUsize::new(0)),
                limit,
                overflow,
            },
            events: rx,
            next_conn: 0,
            repair_at: None,
            repair_attempt: 0,
        }
    }

    /// Subscribed to anything: the client is in subscribed mode.
    pub fn active(&self) -> bool {
        !(self.channels.is_empty() && self.patterns.is_empty() && self.shard.is_empty())
    }

    /// Channels, patterns and shard channels subscribed (for CLIENT LIST).
    pub fn counts(&self) -> [usize; 3] {
        [self.channels.len(), self.patterns.len(), self.shard.len()]
    }

    /// Every subscription, and whether it is a pattern (for ACL re-checks).
    pub fn names(&self) -> Vec<(Bytes, bool)> {
        let plain = self.channels.iter().chain(self.shard.keys());
        plain
            .map(|c| (c.clone(), false))
            .chain(self.patterns.iter().map(|p| (p.clone(), true)))
            .collect()
    }

    fn global_count(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }

    /// Runs one (un)subscribe command; the reply is ready once the nodes acted on it.
    pub fn command(
        &mut self,
        router: &Arc<Router>,
        command: PubSubCommand,
        args: &[Bytes],
        resp3: bool,
    ) -> BoxFuture<'static, Bytes> {
        let push = |parts: &[&[u8]], count: Option<usize>| match resp3 {
            true => reply::as_push(push(parts, count)),
            false => push(parts, count),
        };
        let empty_unsubscribe = |kind: &[u8], count: usize| match resp3 {
            true => reply::as_push(empty_unsubscribe(kind, count, true)),
            false => empty_unsubscribe(kind, count, false),
        };
        let names = &args[1..];
        let (frames, done) = match command {
            PubSubCommand::Subscribe | PubSubCommand::PSubscribe => {
                let (kind, set): (&[u8], _) = match command {
                    PubSubCommand::Subscribe => (b"subscribe", &mut self.channels),
                    _ => (b"psubscribe", &mut self.patterns),
                };
                let fresh: Vec<&[u8]> = names
                    .iter()
                    .filter(|n| set.insert((*n).clone()))
                    .map(|n| &n[..])
                    .collect();
                let mut frames = Vec::new();
                let mut count = self.global_count() - fresh.len();
                let mut seen = BTreeSet::new();
                for name in names {
                    if fresh.contains(&&name[..]) && seen.insert(name.clone()) {
                        count += 1;
                    }
                    frames.push(push(&[kind, name], Some(count)));
                }
                let done = match fresh.is_empty() {
                    true => None,
                    false => {
                        let verb: &[u8] = match command {
                            PubSubCommand::Subscribe => b"SUBSCRIBE",
                            _ => b"PSUBSCRIBE",
                        };
                        let pattern = command == PubSubCommand::PSubscribe;
                        let notes: Vec<&[u8]> = fresh
                            .iter()
                            .copied()
                            .filter(|n| local::may_carry_notifications(n, pattern))
                            .collect();
                        let conn = self.global_conn(router);
                        let (tx, rx) = oneshot::channel();
                        let mut cmd: Vec<&[u8]> = vec![verb];
                        cmd.extend(fresh);
                        conn.send(&cmd, Some(tx));
                        let mut waits = vec![rx];
                        if !notes.is_empty() {
                            self.sync_locals(router);
                            self.watch_masters();
                            let mut cmd: Vec<&[u8]> = vec![verb];
                            cmd.extend(notes);
                            waits.extend(self.locals.send_all(&cmd, true));
                        }
                        Some(futures_util::future::join_all(waits).map(|_| ()).boxed())
                    }
                };
                (frames, done)
            }
            PubSubCommand::SSubscribe => {
                // Shard channels of several slots (one Redis takes them all at once) are
                // subscribed slot by slot, each on its slot's owner.
                let mut owners: Vec<Arc<str>> = Vec::with_capacity(names.len());
                for name in names {
                    let Some(owner) = router.owner_addr(Some(key_slot(name))) else {
                        return futures_util::future::ready(reply::error(
                            "CLUSTERDOWN Hash slot not served",
                        ))
                        .boxed();
                    };
                    owners.push(owner.into());
                }
                let mut frames = Vec::new();
                let mut fresh: Vec<(Arc<str>, &[u8])> = Vec::new();
                for (name, owner) in names.iter().zip(owners) {
                    if !self.shard.contains_key(name) {
                        self.shard.insert(name.clone(), Some(owner.clone()));
                        fresh.push((owner, name));
                    }
                    frames.push(push(&[b"ssubscribe", name], Some(self.shard.len())));
                }
                // One SSUBSCRIBE per slot: a node refuses one over two of its slots.
                let mut slots: Vec<(u16, Arc<str>)> = fresh
                    .iter()
                    .map(|(o, n)| (key_slot(n), o.clone()))
                    .collect();
                slots.sort();
                slots.dedup();
                let mut waits = Vec::new();
                for (slot, node) in slots {
                    let conn = self.node_conn(router, &node);
                    let (tx, rx) = oneshot::channel();
                    let mut cmd: Vec<&[u8]> = vec![b"SSUBSCRIBE"];
                    cmd.extend(
                        fresh
                            .iter()
                            .filter(|(_, n)| key_slot(n) == slot)
                            .map(|(_, n)| *n),
                    );
                    conn.send(&cmd, Some(tx));
                    waits.push(rx);
                }
                let done = match waits.is_empty() {
                    true => None,
                    false => Some(futures_util::future::join_all(waits).map(|_| ()).boxed()),
                };
                (frames, done)
            }
            PubSubCommand::Unsubscribe | PubSubCommand::PUnsubscribe => {
                let (kind, verb): (&[u8], &[u8]) = match command {
                    PubSubCommand::Unsubscribe => (b"unsubscribe", b"UNSUBSCRIBE"),
                    _ => (b"punsubscribe", b"PUNSUBSCRIBE"),
                };
                let set = match command {
                    PubSubCommand::Unsubscribe => &mut self.channels,
                    _ => &mut self.patterns,
                };
                let names: Vec<Bytes> = match names.is_empty() {
                    true => set.iter().cloned().collect(),
                    false => names.to_vec(),
                };
                let gone: Vec<Bytes> = names.iter().filter(|n| set.remove(*n)).cloned().collect();
                let mut frames = Vec::new();
                let mut count = self.global_count() + gone.len();
                let mut seen = BTreeSet::new();
                for name in &names {
                    if gone.contains(name) && seen.insert(name.clone()) {
                        count -= 1;
                    }
                    frames.push(push(&[kind, name], Some(count)));
                }
                if names.is_empty() {
                    frames.push(empty_unsubscribe(kind, self.global_count()));
                }
                if self.global_count() == 0 {
                    self.global = None;
                } else if let Some(conn) = &self.global {
                    let mut cmd: Vec<&[u8]> = vec![verb];
                    cmd.extend(gone.iter().map(|g| &g[..]));
                    if !gone.is_empty() {
                        conn.send(&cmd, None);
                    }
                }
                let pattern = command == PubSubCommand::PUnsubscribe;
                let notes: Vec<&[u8]> = gone
                    .iter()
                    .filter(|g| local::may_carry_notifications(g, pattern))
                    .map(|g| &g[..])
                    .collect();
                if !self.wants_notifications() {
                    self.locals.clear();
                } else if !notes.is_empty() {
                    let mut cmd: Vec<&[u8]> = vec![verb];
                    cmd.extend(notes);
                    self.locals.send_all(&cmd, false);
                }
                (frames, None)
            }
            PubSubCommand::SUnsubscribe => {
                let names: Vec<Bytes> = match names.is_empty() {
                    true => self.shard.keys().cloned().collect(),
                    false => names.to_vec(),
                };
                let mut frames = Vec::new();
                for name in &names {
                    if let Some(Some(addr)) = self.shard.remove(name) {
                        if let Some(conn) = self.nodes.get(&addr) {
                            conn.send(&[b"SUNSUBSCRIBE", name], None);
                        }
                    }
                    frames.push(push(&[b"sunsubscribe", name], Some(self.shard.len())));
                }
                if names.is_empty() {
                    frames.push(empty_unsubscribe(b"sunsubscribe", self.shard.len()));
                }
                self.drop_idle_nodes();
                (frames, None)
            }
        };
        let wait = router.request_timeout();
        async move {
            if let Some(done) = done {
                let _ = tokio::time::timeout(wait, done).await;
            }
            Bytes::from(frames.concat())
        }
        .boxed()
    }

    /// Waits for the next thing to act on: an event from a node, or a due repair.
    pub async fn next(&mut self) -> Option<Event> {
        let repair = async {
            match self.repair_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => futures_util::future::pending().await,
            }
        };
        tokio::select! {
            event = self.events.recv() => event,
            _ = repair => None,
        }
    }

    /// Acts on what [`PubSub::next`] returned (`None`: a repair is due).
    pub fn handle(&mut self, router: &Arc<Router>, event: Option<Event>) -> Wakeup {
        match event {
            None => {
                self.repair(router);
                Wakeup::Nothing
            }
            Some(Event::Message { kind, name, raw }) => {
                self.sink.queued.fetch_sub(raw.len(), Ordering::Relaxed);
                let wanted = match &kind[..] {
                    b"message" => self.channels.contains(&name),
                    b"pmessage" => self.patterns.contains(&name),
                    _ => self.shard.contains_key(&name),
                };
                match wanted {
                    true => Wakeup::Message(raw),
                    false => Wakeup::Nothing,
                }
            }
            Some(Event::ShardDropped { conn, channel }) => {
                let addr = self
                    .nodes
                    .values()
                    .find(|c| c.id == conn)
                    .map(|c| c.addr.clone());
                if let (Some(entry), Some(addr)) = (self.shard.get_mut(&channel), addr) {
                    if entry.as_deref() == Some(&*addr) {
                        // Not our own SUNSUBSCRIBE: the channel's slot left that node.
                        *entry = None;
                        self.schedule_repair(router);
                    }
                }
                Wakeup::Nothing
            }
            Some(Event::Refused { error, .. }) => {
                if let crate::protocol::scan::Redirect::Moved(slot, to) =
                    crate::protocol::scan::classify(&error)
                {
                    router.topology.note_moved(slot, to);
                    for (channel, node) in self.shard.iter_mut() {
                        if key_slot(channel) == slot {
                            *node = None;
                        }
                    }
                } else {
                    tracing::debug!(error = %String::from_utf8_lossy(&error).trim(), "node refused a subscription");
                }
                self.schedule_repair(router);
                Wakeup::Nothing
            }
            Some(Event::Closed { conn }) => {
                if self.global.as_ref().is_some_and(|g| g.id == conn) {
                    self.global = None;
                }
                self.locals.remove_conn(conn);
                let lost: Option<Arc<str>> = self
                    .nodes
                    .values()
                    .find(|c| c.id == conn)
                    .map(|c| c.addr.clone());
                if let Some(addr) = lost {
                    self.nodes.remove(&addr);
                    for node in self.shard.values_mut() {
                        if node.as_deref() == Some(&*addr) {
                            *node = None;
                        }
                    }
                }
                self.schedule_repair(router);
                Wakeup::Nothing
            }
        }
    }

    fn schedule_repair(&mut self, router: &Router) {
        router.topology.request_refresh();
        let delay = router
            .backoff(self.repair_attempt)
            .max(Duration::from_millis(20));
        self.repair_attempt = (self.repair_attempt + 1).min(16);
        let at = Instant::now() + delay;
        self.repair_at = Some(self.repair_at.map_or(at, |t| t.min(at)));
    }

    /// Subscribes again whatever lost its node, on the current owners.
    fn repair(&mut self, router: &Arc<Router>) {
        self.repair_at = None;
        if self.global.is_none() && self.global_count() > 0 {
            let channels: Vec<Bytes> = self.channels.iter().cloned().collect();
            let patterns: Vec<Bytes> = self.patterns.iter().cloned().collect();
            let conn = self.global_conn(router);
            for (verb, names) in [(&b"SUBSCRIBE"[..], channels), (b"PSUBSCRIBE", patterns)] {
                if !names.is_empty() {
                    let mut cmd: Vec<&[u8]> = vec![verb];
                    cmd.extend(names.iter().map(|n| &n[..]));
                    conn.send(&cmd, None);
                }
            }
        }
        let homeless: Vec<Bytes> = self
            .shard
            .iter()
            .filter(|(_, node)| node.is_none())
            .map(|(c, _)| c.clone())
            .collect();
        let mut unresolved = false;
        for channel in homeless {
            let Some(owner) = router.owner_addr(Some(key_slot(&channel))) else {
                unresolved = true;
                continue;
            };
            let owner: Arc<str> = owner.into();
            self.node_conn(router, &owner)
                .send(&[b"SSUBSCRIBE", &channel], None);
            self.shard.insert(channel, Some(owner));
        }
        self.drop_idle_nodes();
        self.sync_locals(router);
        if unresolved {
            self.schedule_repair(router);
        } else {
            self.repair_attempt = 0;
        }
        self.watch_masters();
    }

    /// While notifications are wanted, looks at the masters again within a second, so that
    /// one that joins is subscribed too.
    fn watch_masters(&mut self) {
        if self.wants_notifications() {
            let at = Instant::now() + NOTIFICATION_SYNC;
            self.repair_at = Some(self.repair_at.map_or(at, |t| t.min(at)));
        }
    }

    /// True when a channel or pattern may carry keyspace notifications.
    fn wants_notifications(&self) -> bool {
        self.channels
            .iter()
            .any(|c| local::may_carry_notifications(c, false))
            || self
                .patterns
                .iter()
                .any(|p| local::may_carry_notifications(p, true))
    }

    /// Brings the connections to the other masters in line with the slot map.
    fn sync_locals(&mut self, router: &Router) {
        if !self.wants_notifications() {
            self.locals.clear();
            return;
        }
        let Some(meeting) = self.global.as_ref().map(|g| g.addr.clone()) else {
            return; // The repair opens the meeting point first, then comes back here.
        };
        let masters: Vec<Arc<str>> = match router.topology.snapshot() {
            Some(snapshot) => snapshot
                .masters()
                .iter()
                .map(|p| p.addr().clone())
                .collect(),
            None => return,
        };
        let channels: Vec<Bytes> = self
            .channels
            .iter()
            .filter(|c| local::may_carry_notifications(c, false))
            .cloned()
            .collect();
        let patterns: Vec<Bytes> = self
            .patterns
            .iter()
            .filter(|p| local::may_carry_notifications(p, true))
            .cloned()
            .collect();
        let settings = router.topology.settings().clone();
        let sink = self.sink.clone();
        let next_conn = &mut self.next_conn;
        self.locals
            .sync(&masters, &meeting, &channels, &patterns, |addr| {
                *next_conn += 1;
                SubConn::open(*next_conn, addr, settings.clone(), sink.clone(), true)
            });
    }

    fn open(&mut self, router: &Router, addr: &str) -> SubConn {
        self.next_conn += 1;
        let settings = router.topology.settings().clone();
        SubConn::open(self.next_conn, addr, settings, self.sink.clone(), false)
    }

    fn global_conn(&mut self, router: &Router) -> &SubConn {
        let conn = match self.global.take() {
            Some(conn) => conn,
            // With no slot map yet the connection fails, and the repair tries again later.
            None => {
                let addr = router.owner_addr(Some(BUS_SLOT)).unwrap_or_default();
                self.open(router, &addr)
            }
        };
        self.global.insert(conn)
    }

    fn node_conn(&mut self, router: &Router, addr: &Arc<str>) -> &SubConn {
        let conn = match self.nodes.remove(addr) {
            Some(conn) => conn,
            None => self.open(router, addr),
        };
        self.nodes.entry(addr.clone()).or_insert(conn)
    }

    fn drop_idle_nodes(&mut self) {
        let shard = &self.shard;
        self.nodes
            .retain(|addr, _| shard.values().any(|n| n.as_deref() == Some(&**addr)));
    }
}

/// The reply to an unsubscribe with nothing to unsubscribe: `[kind, nil, count]`.
fn empty_unsubscribe(kind: &[u8], count: usize, resp3: bool) -> Bytes {
    reply::array_of_raw(&[
        reply::bulk(Bytes::copy_from_slice(kind)),
        reply::null_for(resp3),
        reply::integer(count as i64),
    ])
}
