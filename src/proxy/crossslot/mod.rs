//! Commands, transactions and scripts whose keys are in several hash slots, served as one
//! Redis would serve them.
//!
//! A Redis Cluster node refuses one command whose keys are in two slots (`CROSSSLOT`), even
//! when it owns both. But a Lua script flagged `allow-cross-slot-keys` may run several
//! single-slot commands on different slots of its node, atomically. So the proxy runs the
//! client's command inside its own script (`exec.lua`): keys outside the command's home slot
//! are copied into temporary keys of that slot (`DUMP`/`RESTORE`, expiry kept), the real
//! command runs on them, what it changed is written back and the temporaries go. Redis
//! computes the result; nothing is re-implemented here.
//!
//! - Keys on one master: one script there, atomic as on one Redis.
//! - Keys on several masters, `compat.cross_node = "split"`: the others' keys are read, the
//!   command runs where its first key lives, and what changed is written back on each
//!   master; every step is atomic on its master, but another client may see the steps apart
//!   (the proxy runs such a command alone, so the client's own pipeline keeps its order).
//!   `"refuse"`: `-CROSSSLOT`, as Redis Cluster answers.
//! - A key bigger than `compat.max_copy_bytes` (serialized) gets an error, not a copy.
//!
//! [`plan`] says what a script is told, [`run`] runs it (with the retries a slot in
//! migration needs), [`scripts`] holds the Lua, [`tags`] names temporaries.

pub mod blocking;
pub mod eval;
pub mod plan;
pub mod run;
pub mod scripts;
pub mod streams;
pub mod tags;
pub mod txn;
pub mod watched;

use super::action::Action;
use super::clients::ClientHandle;
use super::Shared;
use crate::config::CrossNode;
use crate::protocol::command::CommandInfo;
use crate::protocol::reply;
use crate::upstream::Lane;
use bytes::Bytes;
use futures_util::FutureExt;
use plan::{Op, Plan};
use run::{placement, Engine, Placement};
use std::sync::Arc;

/// `FCALL` whose keys are in several slots. A node refuses it (even for a function flagged
/// `allow-cross-slot-keys`), and no script may call `FCALL`, so the proxy cannot wrap it.
pub const FCALL_ACROSS_SLOTS: &str = "CROSSSLOT Keys in request don't hash to the same slot (slotproxy: a function cannot run over keys in several slots: Redis Cluster refuses it and no script may call FCALL; use EVAL or keys of one slot)";

/// A keyed command whose keys (at `positions`) are in several slots: stream reads are split
/// per stream, blocking commands are tried until they get something, everything else runs
/// in one plan.
pub fn command(
    shared: &Shared,
    lane: Lane,
    handle: Arc<ClientHandle>,
    info: &CommandInfo,
    args: Vec<Bytes>,
    positions: Vec<usize>,
) -> Action {
    let engine = &shared.crossslot;
    if matches!(
        info.name.as_str(),
        "eval" | "eval_ro" | "evalsha" | "evalsha_ro"
    ) {
        return eval::action(engine, &shared.scripts, lane, &info.name, &args, &positions);
    }
    if matches!(info.name.as_str(), "fcall" | "fcall_ro") {
        engine.metrics.count_cross_slot("refused");
        return Action::now(reply::error(FCALL_ACROSS_SLOTS));
    }
    if matches!(info.name.as_str(), "xread" | "xreadgroup") {
        return streams::action(engine, lane, handle, &args, &positions);
    }
    if let Some(action) = blocking::action(engine, lane, handle, &info.name, &args) {
        return action;
    }
    let plan = Plan::new(vec![Op::new(&info.name, args, positions)]);
    run_plan(engine, lane, plan, true)
}

/// Where `keys` (as `COMMAND GETKEYS` lists them, in order) are among `args`.
pub fn positions_of(args: &[Bytes], keys: &[Bytes]) -> Vec<usize> {
    let mut positions = Vec::with_capacity(keys.len());
    for key in keys {
        let after = positions.last().map_or(1, |&p: &usize| p + 1);
        let found = (after..args.len())
            .chain(1..after)
            .find(|&i| args[i] == key && !positions.contains(&i));
        if let Some(i) = found {
            positions.push(i);
        }
    }
    positions
}

/// Runs `plan` as the action of one client command: a future queued in order when the keys
/// are on one master (its one request leaves at once), an exclusive step when they span
/// masters (several round trips that later commands must not overtake).
pub fn run_plan(engine: &Engine, lane: Lane, plan: Plan, single: bool) -> Action {
    let engine = engine.clone();
    match placement(&engine.router, &plan) {
        Placement::Nodes if engine.settings.cross_node == CrossNode::Refuse => {
            engine.metrics.count_cross_slot("refused");
            Action::now(reply::crossslot())
        }
        Placement::Nodes => {
            Action::Exclusive(async move { engine.execute(lane, &plan, single).await }.boxed())
        }
        Placement::OneNode(_) | Placement::Unserved => {
            Action::later(async move { engine.execute(lane, &plan, single).await })
        }
    }
}
