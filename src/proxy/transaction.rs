//! Transactions: MULTI, EXEC, DISCARD, WATCH, UNWATCH.
//!
//! The proxy queues a transaction itself, as Redis does: each command is checked (known,
//! arity, keys) and answered `+QUEUED`. When all keys of the transaction, and the keys
//! WATCHed before it, hash to one slot, EXEC sends the whole block, `MULTI … EXEC`, to the
//! slot's owner in one write (below). Keys in several slots are served by
//! [`super::crossslot::txn`]; with `compat.cross_node = "refuse"`, a command whose keys are
//! on another master than the earlier ones gets `-CROSSSLOT` at queue time and EXEC answers
//! `-EXECABORT`, as Redis does after any queue-time error. For one slot:
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

use super::action::Action;
use super::crossslot::run::Engine;
use super::crossslot::txn::{self as cross_txn, EXECABORT};
use super::pinned::{call_for_slot, Outcome, Pinned, SharedPinned};
use crate::cluster::router::{Retry, Router, Target};
use crate::cluster::{key_slot, SlotMap};
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

/// A client's transaction state.
#[derive(Debug, Default)]
pub struct TxnState {
    queued: Option<Queued>,
    /// The slots of the keys WATCHed on the pinned connection (all of one master).
    watched: Vec<u16>,
    /// Keys were WATCHed on another master than the pinned connection's: EXEC is refused.
    watched_elsewhere: bool,
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
    commands: Vec<QueuedCommand>,
    failed: bool,
}

/// One queued command, with what EXEC needs to run it across slots.
#[derive(Debug)]
struct QueuedCommand {
    raw: Bytes,
    name: String,
    args: Vec<Bytes>,
    positions: Vec<usize>,
}

impl Queued {
    /// The slots of every queued key.
    fn slots(&self) -> impl Iterator<Item = u16> + '_ {
        self.commands
            .iter()
            .flat_map(|c| c.positions.iter().map(|&p| key_slot(&c.args[p])))
    }
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
    /// will make EXEC fail. `refuse_across` (the map, with `compat.cross_node = "refuse"`)
    /// refuses keys on another master than the transaction's others.
    pub fn queue(
        &mut self,
        info: &CommandInfo,
        args: &[Bytes],
        raw: Bytes,
        refuse_across: Option<&SlotMap>,
    ) -> Bytes {
        let watched = self.watched.clone();
        let Some(queued) = self.queued.as_mut() else {
            return reply::error("ERR slotproxy: not in a transaction");
        };
        let positions = match queueable(info, args) {
            Ok(positions) => positions,
            Err(error) => {
                queued.failed = true;
                return error;
            }
        };
        if let Some(map) = refuse_across {
            let owners: Vec<Option<usize>> = queued
                .slots()
                .chain(watched.iter().copied())
                .chain(positions.iter().map(|&p| key_slot(&args[p])))
                .map(|slot| map.owner(slot))
                .collect();
            let across = owners.windows(2).any(|w| w[0] != w[1]);
            if across {
                queued.failed = true;
                return reply::crossslot();
            }
        }
        queued.commands.push(QueuedCommand {
            raw,
            name: info.name.clone(),
            args: args.to_vec(),
            positions,
        });
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
    pub fn exec(&mut self, engine: &Engine, lane: Lane) -> Action {
        let router = &engine.router;
        let Some(queued) = self.queued.take() else {
            return Action::now(reply::error("ERR EXEC without MULTI"));
        };
        let watched = std::mem::take(&mut self.watched);
        let watched_elsewhere = std::mem::take(&mut self.watched_elsewhere);
        if queued.failed {
            return match watched.is_empty() {
                false => self.unwatch_then(router, reply::error(EXECABORT)),
                true => Action::now(reply::error(EXECABORT)),
            };
        }
        let mut slots: Vec<u16> = queued.slots().chain(watched.iter().copied()).collect();
        slots.sort_unstable();
        slots.dedup();
        if slots.len() > 1 || watched_elsewhere {
            return self.exec_across_slots(engine, lane, queued, watched, watched_elsewhere);
        }
        let slot = slots.first().copied();
        let frames = queued.commands.len() + 2;
        let raws: Vec<Bytes> = queued.commands.iter().map(|c| c.raw.clone()).collect();
        let block = block(&raws);
        let router = router.clone();
        if watched.is_empty() {
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

    /// EXEC of a transaction whose keys are in several slots (see
    /// [`super::crossslot::txn`]).
    fn exec_across_slots(
        &mut self,
        engine: &Engine,
        lane: Lane,
        queued: Queued,
        watched: Vec<u16>,
        watched_elsewhere: bool,
    ) -> Action {
        let ops = queued
            .commands
            .into_iter()
            .map(|c| cross_txn::op_of(&c.name, c.args, c.positions))
            .collect();
        if watched.is_empty() && !watched_elsewhere {
            return cross_txn::exec(engine, lane, ops);
        }
        let plan = super::crossslot::plan::Plan::new(ops);
        let router = &engine.router;
        let mut owners: Vec<Option<String>> = watched
            .iter()
            .chain(plan.keys.iter().map(|k| &k.slot))
            .map(|&slot| router.owner_addr(Some(slot)))
            .collect();
        owners.sort();
        owners.dedup();
        if watched_elsewhere || owners.len() > 1 {
            engine.metrics.count_cross_slot("refused");
            let nodes: Vec<String> = owners.into_iter().flatten().collect();
            let error = reply::error(&format!(
                "EXECABORT slotproxy: this transaction WATCHes keys and touches keys on more than one master ({}); a commit there cannot be all-or-nothing, so nothing was run",
                nodes.join(", ")
            ));
            return self.unwatch_then(router, error);
        }
        let (engine, pinned, watch) = (engine.clone(), self.pinned.clone(), self.watch.clone());
        Action::Exclusive(
            async move {
                let mut pinned = pinned.lock().await;
                let health = std::mem::take(&mut *watch.lock());
                let Some(addr) = pinned.addr().map(str::to_string) else {
                    return reply::null_array_for(lane.resp3);
                };
                if health.broken || pinned.connects() != health.connects {
                    unwatch(&engine.router, &mut pinned, &watch).await;
                    return reply::null_array_for(lane.resp3);
                }
                cross_txn::exec_watched(&engine, &mut pinned, &addr, lane.resp3, &plan).await
            }
            .boxed(),
        )
    }

    /// DISCARD
    pub fn discard(&mut self, router: &Arc<Router>) -> Action {
        if self.queued.take().is_none() {
            return Action::now(reply::error("ERR DISCARD without MULTI"));
        }
        self.watched_elsewhere = false;
        match std::mem::take(&mut self.watched).is_empty() {
            false => self.unwatch_then(router, reply::ok()),
            true => Action::now(reply::ok()),
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
        let positions = match info.key_positions(args) {
            KeyPositions::Known(positions) => positions,
            KeyPositions::AskCluster => Vec::new(),
        };
        if positions.is_empty() {
            return Action::now(reply::error("ERR wrong number of arguments"));
        }
        // One WATCH per slot (a node refuses one WATCH over two), all on the master of the
        // first watched key; keys of other masters cannot be watched on that connection.
        let mut by_slot: Vec<(u16, Vec<Bytes>)> = Vec::new();
        for &p in &positions {
            let slot = key_slot(&args[p]);
            match by_slot.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, keys)) => keys.push(args[p].clone()),
                None => by_slot.push((slot, vec![args[p].clone()])),
            }
        }
        let node = self
            .watched
            .first()
            .or(by_slot.first().map(|(s, _)| s))
            .and_then(|&s| router.owner_addr(Some(s)));
        let mut watches = Vec::new();
        for (slot, keys) in by_slot {
            if router.owner_addr(Some(slot)) != node {
                self.watched_elsewhere = true;
                continue;
            }
            let first = self.watched.is_empty();
            if !self.watched.contains(&slot) {
                self.watched.push(slot);
            }
            let mut command = vec![Bytes::from_static(b"WATCH")];
            command.extend(keys);
            watches.push((
                slot,
                crate::protocol::request::encode_command(&command),
                first,
            ));
        }
        let (router, pinned, watch) = (router.clone(), self.pinned.clone(), self.watch.clone());
        Action::Exclusive(
            async move {
                let mut pinned = pinned.lock().await;
                let mut answer = reply::ok();
                for (slot, raw, first) in watches {
                    answer = watch_on_pinned(&router, &mut pinned, &watch, slot, raw, first, resp3)
                        .await;
                    if scan::is_error(&answer) {
                        break;
                    }
                }
                answer
            }
            .boxed(),
        )
    }

    /// UNWATCH
    pub fn unwatch(&mut self, router: &Arc<Router>) -> Action {
        self.watched_elsewhere = false;
        match std::mem::take(&mut self.watched).is_empty() {
            false => self.unwatch_then(router, reply::ok()),
            true => Action::now(reply::ok()),
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

/// Where a command inside MULTI has its keys, or the error that fails the transaction.
fn queueable(info: &CommandInfo, args: &[Bytes]) -> Result<Vec<usize>, Bytes> {
    let upper = info.name.replace('|', " ").to_uppercase();
    match info.policy {
        Policy::Keyed | Policy::Split(_) | Policy::Blocking(_) => match info.key_positions(args) {
            KeyPositions::Known(positions) => Ok(positions),
            KeyPositions::AskCluster => Err(reply::error(&format!(
                "ERR slotproxy: '{upper}' with these arguments cannot be queued in MULTI: its keys are known only to the cluster"
            ))),
        },
        Policy::Local(Local::Ping | Local::Echo) => Ok(Vec::new()),
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
