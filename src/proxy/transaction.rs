//! Transactions: MULTI, EXEC, DISCARD, WATCH, UNWATCH.
//!
//! The proxy queues a transaction itself, as Redis does: each command is checked (known,
//! arity, keys) and answered `+QUEUED`. All keys of the transaction, and the keys WATCHed
//! before it, must hash to one slot; otherwise the command gets `-CROSSSLOT` and EXEC answers
//! `-EXECABORT`, which is what Redis does after any queue-time error. EXEC sends the whole
//! block, `MULTI … EXEC`, to the slot's owner in one write:
//!
//! - **Without WATCH** it goes on the client's lane of the shared connection, where no other
//!   request can land inside it. Redis discards a block whole when any queued command or EXEC
//!   is redirected (`MOVED`, `ASK`, `TRYAGAIN`). The router then resends the block to the new
//!   owner, behind one `ASKING` for `ASK`, or after a backoff for `TRYAGAIN`. Nothing has run
//!   when Redis discards a block, so a transaction is never half applied and the client never
//!   sees a redirect.
//! - **With WATCH** it goes on the client's pinned connection, where the watch lives. If the
//!   slot moved away, moving its keys touched them, so EXEC answers nil, like Redis after a
//!   touched watched key. The client's retry loop then runs on the new owner.

use super::action::{common_slot, Action};
use super::pinned::{call_for_slot, Outcome, Pinned, SharedPinned};
use crate::cluster::router::{Retry, Router, Target};
use crate::protocol::command::{CommandInfo, Local, Policy};
use crate::protocol::keyspec::KeyPositions;
use crate::protocol::{reply, scan};
use crate::upstream::Lane;
use bytes::{Bytes, BytesMut};
use futures_util::future::FutureExt;
use std::sync::Arc;

const MULTI: &[u8] = b"*1\r\n$5\r\nMULTI\r\n";
const EXEC: &[u8] = b"*1\r\n$4\r\nEXEC\r\n";
const UNWATCH: &[u8] = b"*1\r\n$7\r\nUNWATCH\r\n";
const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";

/// A client's transaction state.
#[derive(Debug, Default)]
pub struct TxnState {
    queued: Option<Queued>,
    /// The slot of the keys WATCHed on the pinned connection.
    watched: Option<u16>,
    /// The client's own connection, opened by its first WATCH.
    pinned: SharedPinned,
    /// Whether the watch on the pinned connection still holds; cleared when the watched slot
    /// moves or the connection drops. Read and written only by exclusive reply futures.
    watch: Arc<parking_lot::Mutex<WatchHealth>>,
}

#[derive(Debug, Default)]
struct WatchHealth {
    broken: bool,
    /// The pinned connection's open count when the watch was set.
    connects: u64,
}

#[derive(Debug, Default)]
struct Queued {
    commands: Vec<Bytes>,
    slot: Option<u16>,
    failed: bool,
}

impl TxnState {
    /// Inside MULTI: commands other than the transaction's own are queued.
    pub fn in_multi(&self) -> bool {
        self.queued.is_some()
    }

    /// Commands queued since MULTI (`None`: not in MULTI), for CLIENT LIST.
    pub fn queued_len(&self) -> Option<usize> {
        self.queued.as_ref().map(|q| q.commands.len())
    }

    /// MULTI
    pub fn multi(&mut self) -> Bytes {
        if self.queued.is_some() {
            return reply::error("ERR MULTI calls can not be nested");
        }
        self.queued = Some(Queued::default());
        reply::ok()
    }

    /// Checks one command inside MULTI and queues it; the reply is `+QUEUED` or the error that
    /// will make EXEC fail.
    pub fn queue(&mut self, info: &CommandInfo, args: &[Bytes], raw: Bytes) -> Bytes {
        let watched = self.watched;
        let Some(queued) = self.queued.as_mut() else {
            return reply::error("ERR slotproxy: not in a transaction");
        };
        let slot = match queueable(info, args) {
            Ok(slot) => slot,
            Err(error) => {
                queued.failed = true;
                return error;
            }
        };
        if let Some(slot) = slot {
            if queued.slot.or(watched).is_some_and(|bound| bound != slot) {
                queued.failed = true;
                return reply::crossslot();
            }
            queued.slot = Some(slot);
        }
        queued.commands.push(raw);
        reply::simple("QUEUED")
    }

    /// Marks the transaction failed after a queue-time error found elsewhere (unknown
    /// command, wrong arity); returns that error.
    pub fn fail(&mut self, error: Bytes) -> Bytes {
        if let Some(queued) = self.queued.as_mut() {
            queued.failed = true;
        }
        error
    }

    /// EXEC
    pub fn exec(&mut self, router: &Arc<Router>, lane: Lane) -> Action {
        let Some(queued) = self.queued.take() else {
            return Action::now(reply::error("ERR EXEC without MULTI"));
        };
        let watched = self.watched.take();
        if queued.failed {
            return match watched {
                Some(_) => self.unwatch_then(router, reply::error(EXECABORT)),
                None => Action::now(reply::error(EXECABORT)),
            };
        }
        let slot = queued.slot.or(watched);
        let frames = queued.commands.len() + 2;
        let block = block(&queued.commands);
        let router = router.clone();
        if watched.is_none() {
            if queued.commands.is_empty() {
                return Action::now(Bytes::from_static(b"*0\r\n"));
            }
            let target = slot.map(Target::Slot).unwrap_or(Target::AnyMaster);
            let retry = Retry {
                write: true,
                tryagain_is_final: false,
                frames,
            };
            return Action::later(
                async move { router.send_call(lane, target, block, retry).await },
            );
        }
        let pinned = self.pinned.clone();
        let watch = self.watch.clone();
        Action::Exclusive(
            async move { exec_watched(&router, &pinned, &watch, block, frames, lane.resp3).await }
                .boxed(),
        )
    }

    /// DISCARD
    pub fn discard(&mut self, router: &Arc<Router>) -> Action {
        if self.queued.take().is_none() {
            return Action::now(reply::error("ERR DISCARD without MULTI"));
        }
        match self.watched.take() {
            Some(_) => self.unwatch_then(router, reply::ok()),
            None => Action::now(reply::ok()),
        }
    }

    /// WATCH key …
    pub fn watch(
        &mut self,
        router: &Arc<Router>,
        info: &CommandInfo,
        args: &[Bytes],
        resp3: bool,
    ) -> Action {
        if self.queued.is_some() {
            return Action::now(reply::error("ERR WATCH inside MULTI is not allowed"));
        }
        let slot = match info.key_positions(args) {
            KeyPositions::Known(positions) => common_slot(positions.iter().map(|&p| &args[p])),
            KeyPositions::AskCluster => Ok(None),
        };
        let slot = match slot {
            Ok(Some(slot)) => slot,
            Ok(None) => return Action::now(reply::error("ERR wrong number of arguments")),
            Err(crossslot) => return Action::now(crossslot),
        };
        if self.watched.is_some_and(|watched| watched != slot) {
            return Action::now(reply::crossslot());
        }
        let first = self.watched.replace(slot).is_none();
        let (router, pinned, watch) = (router.clone(), self.pinned.clone(), self.watch.clone());
        let raw = crate::protocol::request::encode_command(args);
        Action::Exclusive(
            async move {
                let mut pinned = pinned.lock().await;
                watch_on_pinned(&router, &mut pinned, &watch, slot, raw, first, resp3).await
            }
            .boxed(),
        )
    }

    /// UNWATCH
    pub fn unwatch(&mut self, router: &Arc<Router>) -> Action {
        match self.watched.take() {
            Some(_) => self.unwatch_then(router, reply::ok()),
            None => Action::now(reply::ok()),
        }
    }

    /// Forgets everything (RESET); the pinned connection closes with the last future using it.
    pub fn reset(&mut self) {
        *self = TxnState::default();
    }

    /// Clears the watch on the pinned connection, then answers `answer`.
    fn unwatch_then(&mut self, router: &Arc<Router>, answer: Bytes) -> Action {
        let (router, pinned, watch) = (router.clone(), self.pinned.clone(), self.watch.clone());
        Action::Exclusive(
            async move {
                let mut pinned = pinned.lock().await;
                unwatch(&router, &mut pinned, &watch).await;
                answer
            }
            .boxed(),
        )
    }
}

/// The slot a command inside MULTI binds the transaction to (`None`: keyless), or the error
/// that fails the transaction.
fn queueable(info: &CommandInfo, args: &[Bytes]) -> Result<Option<u16>, Bytes> {
    let upper = info.name.replace('|', " ").to_uppercase();
    match info.policy {
        Policy::Keyed | Policy::Split(_) | Policy::Blocking(_) => match info.key_positions(args) {
            KeyPositions::Known(positions) => common_slot(positions.iter().map(|&p| &args[p])),
            KeyPositions::AskCluster => Err(reply::error(&format!(
                "ERR slotproxy: '{upper}' with these arguments cannot be queued in MULTI: its keys are known only to the cluster"
            ))),
        },
        Policy::Local(Local::Ping | Local::Echo) => Ok(None),
        Policy::Refused(refusal) => Err(reply::error(&refusal.message(&info.name))),
        _ => Err(reply::error(&format!(
            "ERR slotproxy: '{upper}' cannot be part of a transaction: it is not served by the one node that runs the transaction"
        ))),
    }
}

/// `MULTI`, the commands, `EXEC`, as one payload.
fn block(commands: &[Bytes]) -> Bytes {
    let len = commands.iter().map(Bytes::len).sum::<usize>() + MULTI.len() + EXEC.len();
    let mut out = BytesMut::with_capacity(len);
    out.extend_from_slice(MULTI);
    for command in commands {
        out.extend_from_slice(command);
    }
    out.extend_from_slice(EXEC);
    out.freeze()
}

/// WATCH on the pinned connection, aimed at the slot's owner. A slot in mid-migration is
/// waited out; a watch whose slot moved, or whose connection dropped, is marked broken so
/// that EXEC answers nil.
async fn watch_on_pinned(
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
async fn exec_watched(
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
async fn unwatch(router: &Router, pinned: &mut Pinned, watch: &parking_lot::Mutex<WatchHealth>) {
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
