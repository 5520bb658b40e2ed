//! WATCH: the client's own connections to the masters whose keys it watches (one each), and
//! what a watch still guarantees when EXEC comes.
//!
//! A watch lives on a node connection, so each watched master gets a pinned connection of
//! the client's. The watch is kept broken (EXEC answers nil) when its slot moves away or its
//! connection drops, since either may have hidden a change.

use super::pinned::{call_for_slot, Outcome, Pinned, SharedPinned};
use crate::cluster::router::Router;
use crate::protocol::{reply, scan};
use bytes::Bytes;
use std::sync::Arc;

const UNWATCH: &[u8] = b"*1\r\n$7\r\nUNWATCH\r\n";

/// The watches on one master.
#[derive(Debug, Default, Clone)]
pub struct Watcher {
    /// The master (`host:port`) when the first key was watched.
    pub node: String,
    /// Slots of the keys watched there.
    pub slots: Vec<u16>,
    /// The client's connection to it.
    pub pinned: SharedPinned,
    /// Whether the watch still holds.
    pub health: Arc<parking_lot::Mutex<WatchHealth>>,
}

/// Whether a watch still holds; cleared when the watched slot moves or the connection drops.
/// Read and written only by exclusive reply futures.
#[derive(Debug, Default)]
pub struct WatchHealth {
    /// The watch cannot be trusted any more.
    pub broken: bool,
    /// The pinned connection's open count when the watch was set.
    pub connects: u64,
}

impl Watcher {
    /// Whether the watch is intact now (and forgets its health: EXEC ends it either way).
    pub fn take_health(&self, pinned: &Pinned) -> bool {
        let health = std::mem::take(&mut *self.health.lock());
        pinned.addr().is_some() && !health.broken && pinned.connects() == health.connects
    }
}

/// WATCH on the pinned connection, aimed at the slot's owner. A slot in mid-migration is
/// waited out; a watch whose slot moved, or whose connection dropped, is marked broken so
/// that EXEC answers nil.
pub async fn watch_on_pinned(
    router: &Router,
    pinned: &mut Pinned,
    watch: &parking_lot::Mutex<WatchHealth>,
    slot: u16,
    raw: Bytes,
    first: bool,
    resp3: bool,
) -> Bytes {
    let health = |f: &mut dyn FnMut(&mut WatchHealth)| {
        let mut h = watch.lock();
        f(&mut h)
    };
    if first {
        health(&mut |h| *h = WatchHealth::default());
    } else if pinned.addr().map(str::to_string) != router.owner_addr(Some(slot)) {
        health(&mut |h| h.broken = true);
        return reply::ok();
    }
    let before = pinned.connects();
    let timeout = router.request_timeout();
    for _ in 0..=router.max_retries() {
        let to = (Some(slot), resp3);
        let outcome = call_for_slot(router, pinned, to, || (raw.clone(), timeout)).await;
        let reply = match outcome {
            Outcome::Moved if first => continue,
            Outcome::Moved => {
                health(&mut |h| h.broken = true);
                return reply::ok();
            }
            Outcome::Reply(reply) => reply,
        };
        if scan::is_error(&reply) {
            // A slot that never settled, or a lost node: EXEC will report the watch broken.
            health(&mut |h| h.broken = true);
            return if reply.starts_with(b"-ERR") {
                reply
            } else {
                reply::ok()
            };
        }
        let connects = pinned.connects();
        health(&mut |h| {
            if first {
                h.connects = connects;
            } else if connects != before || connects != h.connects {
                h.broken = true;
            }
        });
        return reply;
    }
    health(&mut |h| h.broken = true);
    reply::ok()
}

/// EXEC of a watched transaction on the pinned connection.
pub async fn exec_watched(
    router: &Router,
    pinned: &SharedPinned,
    watch: &parking_lot::Mutex<WatchHealth>,
    block: Bytes,
    frames: usize,
    resp3: bool,
) -> Bytes {
    let mut pinned = pinned.lock().await;
    let health = std::mem::take(&mut *watch.lock());
    let Some(addr) = pinned.addr().map(str::to_string) else {
        return reply::null_array_for(resp3);
    };
    if health.broken || pinned.connects() != health.connects {
        unwatch(router, &mut pinned, watch).await;
        return reply::null_array_for(resp3);
    }
    let result = pinned
        .call(
            router,
            (&addr, resp3),
            &block,
            frames,
            false,
            router.request_timeout(),
        )
        .await;
    let replies = match result {
        Ok(replies) => replies,
        Err(error) => return error.to_reply(),
    };
    if replies
        .iter()
        .any(|r| scan::classify(r) != scan::Redirect::None)
    {
        // Redis discarded the block (and the watch) because the slot moved or is moving:
        // its keys were touched by the move.
        router.topology.request_refresh();
        return reply::null_array_for(resp3);
    }
    replies
        .into_iter()
        .last()
        .unwrap_or_else(|| reply::null_for(resp3))
}

/// Clears the pinned connection's watch (a broken connection is simply dropped).
pub async fn unwatch(
    router: &Router,
    pinned: &mut Pinned,
    watch: &parking_lot::Mutex<WatchHealth>,
) {
    *watch.lock() = WatchHealth::default();
    let Some(addr) = pinned.addr().map(str::to_string) else {
        return;
    };
    let result = pinned
        .call(
            router,
            (&addr, pinned.resp3()),
            UNWATCH,
            1,
            false,
            router.request_timeout(),
        )
        .await;
    if result.is_err() {
        pinned.close();
    }
}

/// Checks, on a watcher whose master takes no write, that nobody touched its keys: an empty
/// `MULTI`/`EXEC` there answers nil when a watched key changed (and ends the watch).
pub async fn untouched(router: &Router, watcher: &Watcher) -> bool {
    let mut pinned = watcher.pinned.lock().await;
    if !watcher.take_health(&pinned) {
        unwatch(router, &mut pinned, &watcher.health).await;
        return false;
    }
    let Some(addr) = pinned.addr().map(str::to_string) else {
        return false;
    };
    let block = b"*1\r\n$5\r\nMULTI\r\n*1\r\n$4\r\nEXEC\r\n";
    let resp3 = pinned.resp3();
    let result = pinned
        .call(
            router,
            (&addr, resp3),
            block,
            2,
            false,
            router.request_timeout(),
        )
        .await;
    matches!(result, Ok(replies) if replies.last().is_some_and(|r| r.starts_with(b"*0")))
}

/// Ends every watch of a transaction (after EXEC decided not to run, or DISCARD/UNWATCH).
pub async fn unwatch_all(router: &Router, watchers: &[Watcher]) {
    for watcher in watchers {
        let mut pinned = watcher.pinned.lock().await;
        unwatch(router, &mut pinned, &watcher.health).await;
    }
}
