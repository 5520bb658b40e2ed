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
//!
//! WATCHed keys on several masters, or a watched transaction whose commands are on other
//! masters: [`super::crossslot::watched`] commits on one master, whose watches Redis checks
//! atomically with the commit, after checking the others' watches.

use super::action::Action;
use super::crossslot::run::Engine;
use super::crossslot::txn::{self as cross_txn, EXECABORT};
use super::watch::{exec_watched, unwatch_all, watch_on_pinned, Watcher};
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
/// EXEC of a transaction across slots with `FCALL` in it: its commands run inside the proxy's
/// script, and no script may call `FCALL`.
const FCALL_IN_CROSS_SLOT_EXEC: &str = "EXECABORT slotproxy: FCALL cannot be part of a transaction whose keys are in several slots (the transaction runs as a script, and no script may call FCALL); nothing was run";
const EXEC: &[u8] = b"*1\r\n$4\r\nEXEC\r\n";

/// One `WATCH` to send: its slot, the command, and whether it is its watcher's first.
type WatchCall = (u16, Bytes, bool);

/// A client's transaction state.
#[derive(Debug, Default)]
pub struct TxnState {
    queued: Option<Queued>,
    /// The watches, one watcher per master.
    watchers: Vec<Watcher>,
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
    info: Arc<CommandInfo>,
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

    /// Whether keys are WATCHed: EXEC then runs on the client's own connection.
    pub fn watching(&self) -> bool {
        !self.watchers.is_empty()
    }

    /// Commands queued since MULTI (`None`: not in MULTI), for CLIENT LIST.
    pub fn queued_len(&self) -> Option<usize> {
        self.queued.as_ref().map(|q| q.commands.len())
    }

    /// The queued commands with their arguments, in order (none outside MULTI, or when a
    /// queue-time error already doomed the transaction), for EXEC's permission re-check.
    pub fn queued(&self) -> impl Iterator<Item = (&Arc<CommandInfo>, &[Bytes])> + '_ {
        self.queued
            .iter()
            .filter(|q| !q.failed)
            .flat_map(|q| q.commands.iter().map(|c| (&c.info, &c.args[..])))
    }

    /// Takes the commands at `positions` (ascending) out of the queue: EXEC will not run them.
    pub fn drop_queued(&mut self, positions: &[usize]) {
        if let Some(queued) = self.queued.as_mut() {
            let mut index = 0;
            queued.commands.retain(|_| {
                index += 1;
                positions.binary_search(&(index - 1)).is_err()
            });
        }
    }

    fn watched_slots(&self) -> impl Iterator<Item = u16> + '_ {
        self.watchers.iter().flat_map(|w| w.slots.iter().copied())
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
        info: &Arc<CommandInfo>,
        args: &[Bytes],
        raw: Bytes,
        refuse_across: Option<&SlotMap>,
    ) -> Bytes {
        let watched: Vec<u16> = self.watched_slots().collect();
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
            info: info.clone(),
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
        if queued.failed {
            return self.unwatch_then(router, reply::error(EXECABORT));
        }
        let watchers = std::mem::take(&mut self.watchers);
        let mut slots: Vec<u16> = queued
            .slots()
            .chain(watchers.iter().flat_map(|w| w.slots.iter().copied()))
            .collect();
        slots.sort_unstable();
        slots.dedup();
        if slots.len() > 1 || watchers.len() > 1 {
            // The proxy's own script runs these with the proxy's rights (no script runs
            // EVAL or FCALL from there), after the proxy checked every command.
            let lane = Lane {
                identity: crate::upstream::identity::PROXY,
                ..lane
            };
            return exec_across_slots(engine, lane, queued, watchers);
        }
        let slot = slots.first().copied();
        let frames = queued.commands.len() + 2;
        let raws: Vec<Bytes> = queued.commands.iter().map(|c| c.raw.clone()).collect();
        let block = block(&raws);
        let router = router.clone();
        let Some(watcher) = watchers.into_iter().next() else {
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
        };
        Action::Exclusive(
            async move {
                exec_watched(
                    &router,
                    &watcher.pinned,
                    &watcher.health,
                    block,
                    frames,
                    lane.resp3,
                )
                .await
            }
            .boxed(),
        )
    }

    /// DISCARD
    pub fn discard(&mut self, router: &Arc<Router>) -> Action {
        if self.queued.take().is_none() {
            return Action::now(reply::error("ERR DISCARD without MULTI"));
        }
        self.unwatch_then(router, reply::ok())
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
        // One WATCH per slot (a node refuses one WATCH over two), on the watcher of the
        // slot's master.
        let mut by_slot: Vec<(u16, Vec<Bytes>)> = Vec::new();
        for &p in &positions {
            let slot = key_slot(&args[p]);
            match by_slot.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, keys)) => keys.push(args[p].clone()),
                None => by_slot.push((slot, vec![args[p].clone()])),
            }
        }
        let mut work: Vec<(Watcher, Vec<WatchCall>)> = Vec::new();
        for (slot, keys) in by_slot {
            let node = router.owner_addr(Some(slot)).unwrap_or_default();
            let index = match self.watchers.iter().position(|w| w.node == node) {
                Some(index) => index,
                None => {
                    self.watchers.push(Watcher {
                        node: node.clone(),
                        ..Watcher::default()
                    });
                    self.watchers.len() - 1
                }
            };
            let watcher = &mut self.watchers[index];
            let first = watcher.slots.is_empty();
            if !watcher.slots.contains(&slot) {
                watcher.slots.push(slot);
            }
            let mut command = vec![Bytes::from_static(b"WATCH")];
            command.extend(keys);
            let raw = crate::protocol::request::encode_command(&command);
            match work.iter_mut().find(|(w, _)| w.node == watcher.node) {
                Some((_, calls)) => calls.push((slot, raw, first)),
                None => work.push((watcher.clone(), vec![(slot, raw, first)])),
            }
        }
        let router = router.clone();
        Action::Exclusive(
            async move {
                let mut answer = reply::ok();
                for (watcher, calls) in work {
                    let mut pinned = watcher.pinned.lock().await;
                    let mut first = true;
                    for (slot, raw, fresh) in calls {
                        answer = watch_on_pinned(
                            &router,
                            &mut pinned,
                            &watcher.health,
                            slot,
                            raw,
                            fresh && first,
                            resp3,
                        )
                        .await;
                        first = false;
                        if scan::is_error(&answer) {
                            return answer;
                        }
                    }
                }
                answer
            }
            .boxed(),
        )
    }

    /// UNWATCH
    pub fn unwatch(&mut self, router: &Arc<Router>) -> Action {
        self.unwatch_then(router, reply::ok())
    }

    /// Forgets everything (RESET); the pinned connections close with the last future using
    /// them.
    pub fn reset(&mut self) {
        *self = TxnState::default();
    }

    /// Clears every watch, then answers `answer`.
    fn unwatch_then(&mut self, router: &Arc<Router>, answer: Bytes) -> Action {
        let watchers = std::mem::take(&mut self.watchers);
        if watchers.is_empty() {
            return Action::now(answer);
        }
        let router = router.clone();
        Action::Exclusive(
            async move {
                unwatch_all(&router, &watchers).await;
                answer
            }
            .boxed(),
        )
    }
}

/// EXEC of a transaction whose keys (queued or watched) are in several slots (see
/// [`super::crossslot::txn`] and [`super::crossslot::watched`]).
fn exec_across_slots(
    engine: &Engine,
    lane: Lane,
    queued: Queued,
    watchers: Vec<Watcher>,
) -> Action {
    if queued
        .commands
        .iter()
        .any(|c| matches!(c.name.as_str(), "fcall" | "fcall_ro"))
    {
        let router = engine.router.clone();
        return Action::Exclusive(
            async move {
                unwatch_all(&router, &watchers).await;
                reply::error(FCALL_IN_CROSS_SLOT_EXEC)
            }
            .boxed(),
        );
    }
    let ops = queued
        .commands
        .into_iter()
        .map(|c| cross_txn::op_of(&c.name, c.args, c.positions))
        .collect();
    match watchers.is_empty() {
        true => cross_txn::exec(engine, lane, ops),
        false => super::crossslot::watched::exec(engine, lane, ops, watchers),
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
