//! Moving many slots of one source and one target together: every step of the one-slot
//! protocol ([`super::executor`]) goes out for all slots of the batch in one pipelined write
//! per node, except the `MIGRATE`s, one per slot at a time, since each blocks the source. So
//! a batch of 64 slots costs some 80 round trips instead of some 700, the nodes rewrite
//! `nodes.conf` once per pipelined step instead of once per slot, and the target broadcasts
//! its new slots once per batch ([`target_node`]).
//!
//! The safety rules hold for every slot: `IMPORTING` on the target for all of them before
//! `MIGRATING` on the source; the empty-source gate (`COUNTKEYSINSLOT == 0`) before `NODE`;
//! `NODE` on the target, then the source, then the other masters. The runner journals every
//! slot of a batch as in flight before [`move_batch`] opens one, so a crash anywhere leaves a
//! journal naming each slot that may be open, and each is finished by the one-slot path,
//! whose every step may be repeated.
//!
//! Slots that need care go the one-slot way: a slot holding a key over
//! `migration.big_key_bytes` is left out before anything is opened ([`Plan::single`]); a slot
//! whose keys did not all go in its `MIGRATE` (more than `batch_keys` keys,
//! `BUSYKEY`, `IOERR`, keys written since they were listed) is drained by
//! [`executor::drain_slot`] inside the batch. Empty slots get no `MIGRATE` at all.

pub use super::batch_migrate::Planned;
use super::batch_migrate::{migrate_listed, step_error, Progress};
use super::bigkeys;
use super::context::{Conns, MoveContext};
use super::epochs;
use super::executor;
use super::roles::{ensure_master, explain};
use super::types::{Endpoint, MoveError, MoveEvent};
use crate::failpoint::freeze_at;
use crate::protocol::scan;
use bytes::Bytes;

/// A batch holds at most this many `batch_keys` worth of keys: slots stay open (clients
/// meet `ASK`) from the batch's `MIGRATING` to its `NODE`, so the batch's work stays short.
const KEY_BUDGET_IN_MIGRATE_BATCHES: usize = 10;

/// What [`plan`] made of the slots offered for a batch.
#[derive(Debug, Default)]
pub struct Plan {
    /// Slots to move together.
    pub slots: Vec<Planned>,
    /// Slots with a big key: each goes by the one-slot path, which sizes and paces it.
    pub single: Vec<u16>,
    /// Slots over the batch's key budget: back to the queue for a later batch.
    pub deferred: Vec<u16>,
}

/// The reply of each slot's move in a batch: keys moved, or why the slot is not done.
pub type SlotResults = Vec<(u16, Result<u64, MoveError>)>;

fn setslot(slot: u16, state: &str, node: &str) -> Vec<Vec<u8>> {
    ["CLUSTER", "SETSLOT", slot.to_string().as_str(), state, node]
        .iter()
        .map(|a| a.as_bytes().to_vec())
        .collect()
}

fn setslot_stable(slot: u16) -> Vec<Vec<u8>> {
    ["CLUSTER", "SETSLOT", slot.to_string().as_str(), "STABLE"]
        .iter()
        .map(|a| a.as_bytes().to_vec())
        .collect()
}

fn cluster_slot(sub: &str, slot: u16, extra: Option<usize>) -> Vec<Vec<u8>> {
    let mut args = vec![
        b"CLUSTER".to_vec(),
        sub.as_bytes().to_vec(),
        slot.to_string().into_bytes(),
    ];
    if let Some(n) = extra {
        args.push(n.to_string().into_bytes());
    }
    args
}

/// Before anything is opened: both ends still masters, every offered slot's key count, and
/// for the slots the batch keeps (within its key budget) their first keys and those keys'
/// sizes, all pipelined.
pub async fn plan(
    ctx: &MoveContext,
    conns: &mut Conns,
    from: &Endpoint,
    to: &Endpoint,
    slots: &[u16],
) -> Result<Plan, MoveError> {
    tracing::debug!(
        slots = slots.len(),
        "step 0: ROLE of both ends, COUNTKEYSINSLOT of every slot"
    );
    ensure_master(ctx, conns, from).await?;
    ensure_master(ctx, conns, to).await?;
    let commands: Vec<Vec<Vec<u8>>> = slots
        .iter()
        .map(|&s| cluster_slot("COUNTKEYSINSLOT", s, None))
        .collect();
    let replies = ctx
        .pipeline(conns, &from.addr, &commands, ctx.call_timeout)
        .await?;
    // Under a keys/s cap, a batch is at most about a second of work, so that a pause or a
    // cancel (taken between batches) is heard within about a second.
    let mut budget = ctx.batch_keys * KEY_BUDGET_IN_MIGRATE_BATCHES;
    if ctx.throttle.rate() > 0 {
        budget = budget.min(ctx.throttle.rate() as usize);
    }
    let mut out = Plan::default();
    let mut counts = Vec::new();
    for (&slot, reply) in slots.iter().zip(&replies) {
        let count = match reply {
            Ok(raw) => scan::integer(raw)
                .ok_or_else(|| {
                    MoveError::Retry(format!("{}: odd COUNTKEYSINSLOT reply", from.addr))
                })?
                .max(0) as usize,
            Err(text) => return Err(step_error(text, &from.addr, "COUNTKEYSINSLOT", slot)),
        };
        if !out.slots.is_empty() && count > budget {
            out.deferred.push(slot);
            continue;
        }
        budget = budget.saturating_sub(count);
        counts.push(count);
        out.slots.push(Planned {
            slot,
            keys: Vec::new(),
            sizes: Vec::new(),
            bytes: 0,
        });
    }
    // Keys are listed only for the slots the batch keeps: listing every offered slot's keys
    // (most of them deferred when slots hold many keys) held the source for milliseconds
    // (measured with ~61 keys per slot: requests sent in this step slow 37 % of the time).
    tracing::debug!(
        slots = out.slots.len(),
        "step 0: GETKEYSINSLOT of the slots kept"
    );
    let commands: Vec<Vec<Vec<u8>>> = out
        .slots
        .iter()
        .zip(&counts)
        .filter(|(_, &count)| count > 0)
        .map(|(p, _)| cluster_slot("GETKEYSINSLOT", p.slot, Some(ctx.batch_keys)))
        .collect();
    let replies = ctx
        .pipeline(conns, &from.addr, &commands, ctx.call_timeout)
        .await?;
    let mut replies = replies.into_iter();
    for (planned, _) in out.slots.iter_mut().zip(&counts).filter(|(_, &c)| c > 0) {
        planned.keys = match replies.next() {
            Some(Ok(raw)) => scan::array_elements(&raw)
                .ok_or_else(|| MoveError::Retry(format!("{}: odd GETKEYSINSLOT reply", from.addr)))?
                .iter()
                .filter_map(|e| scan::string(e).map(Bytes::copy_from_slice))
                .collect(),
            Some(Err(text)) => {
                return Err(step_error(&text, &from.addr, "GETKEYSINSLOT", planned.slot))
            }
            None => {
                return Err(MoveError::Retry(format!(
                    "{}: too few GETKEYSINSLOT replies",
                    from.addr
                )))
            }
        };
    }
    let all: Vec<Bytes> = out.slots.iter().flat_map(|p| p.keys.clone()).collect();
    tracing::debug!(keys = all.len(), "step 0: MEMORY USAGE of the listed keys");
    let sizes = bigkeys::sizes(ctx, conns, &from.addr, &all).await?;
    let mut offset = 0;
    let mut kept = Vec::with_capacity(out.slots.len());
    for (mut planned, count) in out.slots.into_iter().zip(counts) {
        let these = &sizes[offset..offset + planned.keys.len()];
        offset += planned.keys.len();
        let mut big = these.iter().any(|&b| b > ctx.big_key_bytes);
        if !big && count > planned.keys.len() {
            // More keys than were listed: look at all of them, as the one-slot path does.
            match bigkeys::preflight_big_keys(ctx, conns, &from.addr, planned.slot).await {
                Ok(()) => {}
                Err(MoveError::TooBig { .. }) => big = true,
                Err(e) => return Err(e),
            }
        }
        if big {
            out.single.push(planned.slot);
        } else {
            planned.bytes = these.iter().sum();
            planned.sizes = these.to_vec();
            kept.push(planned);
        }
    }
    out.slots = kept;
    Ok(out)
}

/// Runs the protocol for every slot of `batch` at once. A step that fails for the batch as
/// a whole (a connection, a failover, `SETSLOT` refused) is `Err`, turned into
/// [`MoveError::Changed`] when one end is no longer the master it was; the runner then
/// hands each slot to the one-slot path or repairs it. Otherwise each slot has its own
/// result: a slot that failed is still open.
pub async fn move_batch(
    ctx: &MoveContext,
    conns: &mut Conns,
    batch: &[Planned],
    (from, to): (&Endpoint, &Endpoint),
    others: &[Endpoint],
    on_event: &mut (dyn FnMut(MoveEvent) + Send),
) -> Result<SlotResults, MoveError> {
    match steps(ctx, conns, batch, (from, to), others, on_event).await {
        Ok(results) => Ok(results),
        Err(e) => Err(explain(ctx, conns, e, from, to).await),
    }
}

async fn steps(
    ctx: &MoveContext,
    conns: &mut Conns,
    batch: &[Planned],
    (from, to): (&Endpoint, &Endpoint),
    others: &[Endpoint],
    on_event: &mut (dyn FnMut(MoveEvent) + Send),
) -> Result<SlotResults, MoveError> {
    let mut state: Vec<Progress> = batch
        .iter()
        .map(|_| Progress {
            owned: false,
            replace: false,
            keys: 0,
            failed: None,
        })
        .collect();
    tracing::debug!(
        slots = batch.len(),
        "step 1: SETSLOT IMPORTING on the target"
    );
    let importing: Vec<_> = batch
        .iter()
        .map(|p| setslot(p.slot, "IMPORTING", &from.id))
        .collect();
    let replies = ctx
        .pipeline(conns, &to.addr, &importing, ctx.call_timeout)
        .await?;
    for ((planned, reply), st) in batch.iter().zip(&replies).zip(&mut state) {
        match reply {
            Ok(_) => {}
            Err(text) if text.contains("already the owner") => st.owned = true,
            Err(text) => {
                return Err(step_error(
                    text,
                    &to.addr,
                    "SETSLOT IMPORTING",
                    planned.slot,
                ))
            }
        }
    }
    freeze_at("migration::after_importing").await;
    tracing::debug!("step 2: SETSLOT MIGRATING on the source");
    let open: Vec<usize> = (0..batch.len()).filter(|&i| !state[i].owned).collect();
    let migrating: Vec<_> = open
        .iter()
        .map(|&i| setslot(batch[i].slot, "MIGRATING", &to.id))
        .collect();
    let replies = ctx
        .pipeline(conns, &from.addr, &migrating, ctx.call_timeout)
        .await?;
    for (&i, reply) in open.iter().zip(&replies) {
        if let Err(text) = reply {
            return Err(step_error(
                text,
                &from.addr,
                "SETSLOT MIGRATING",
                batch[i].slot,
            ));
        }
    }
    freeze_at("migration::after_migrating").await;
    tracing::debug!("step 3: MIGRATE the listed keys, one MIGRATE per slot at a time");
    migrate_listed(ctx, conns, batch, &open, (from, to), &mut state, on_event).await?;
    freeze_at("migration::mid_migrate").await;
    tracing::debug!("step 4: the gate, and the one-slot drain for slots with keys left");
    let gate: Vec<_> = open
        .iter()
        .filter(|&&i| state[i].failed.is_none())
        .map(|&i| cluster_slot("COUNTKEYSINSLOT", batch[i].slot, None))
        .collect();
    let replies = ctx
        .pipeline(conns, &from.addr, &gate, ctx.call_timeout)
        .await?;
    let gated: Vec<usize> = open
        .iter()
        .copied()
        .filter(|&i| state[i].failed.is_none())
        .collect();
    for (&i, reply) in gated.iter().zip(&replies) {
        let left = match reply {
            Ok(raw) => scan::integer(raw).unwrap_or(1),
            Err(text) => {
                return Err(step_error(
                    text,
                    &from.addr,
                    "COUNTKEYSINSLOT",
                    batch[i].slot,
                ))
            }
        };
        if left == 0 {
            continue;
        }
        let slot = batch[i].slot;
        let ends = (from.addr.as_str(), to.addr.as_str());
        match executor::drain_slot(ctx, conns, slot, ends, state[i].replace, on_event).await {
            Ok(keys) => state[i].keys += keys,
            // A failover stops the whole batch: its other slots are repaired too.
            Err(e @ MoveError::Changed(_)) => return Err(e),
            Err(e) => state[i].failed = Some(e),
        }
    }
    hand_over(ctx, conns, batch, (from, to), others, &mut state).await?;
    Ok(batch
        .iter()
        .zip(state)
        .map(|(p, st)| (p.slot, st.failed.map_or(Ok(st.keys), Err)))
        .collect())
}

/// `SETSLOT NODE` on the target for the `ready` slots of a batch.
///
/// `SETSLOT NODE` to itself of a slot the target imports bumps its config epoch and
/// broadcasts a PONG; every node scans all 16,384 slots for each and rewrites and fsyncs
/// `nodes.conf`: 64 at once stalled every node for milliseconds (a bystander's p99 0.3 →
/// 4.5 ms with empty slots; 0.7 ms this way). So first `CLUSTER BUMPEPOCH` alone makes the
/// target's epoch the greatest without a broadcast (where it is refused, the first slot's
/// own `NODE` does it); then one write marks each slot but the last `STABLE` and assigns
/// it, claiming it under that epoch silently, and the last one's plain `NODE` broadcasts
/// them all (to the target's replicas too: Redis 7.0 does not replicate `SETSLOT`, and a
/// replica promoted unaware of a slot leaves it to its dead master). No slot is claimed
/// under an epoch below the source's (gossip would hand it back and the target would
/// delete its keys). Between its `STABLE` and `NODE` a slot sends `ASKING` clients back to
/// the empty, `MIGRATING` source, which sends them to the target again: no write lands,
/// and the one-slot repair finishes a slot a crash left there.
async fn target_node(
    ctx: &MoveContext,
    conns: &mut Conns,
    batch: &[Planned],
    ready: &[usize],
    to: &Endpoint,
    state: &mut [Progress],
) -> Result<(), MoveError> {
    let importing: Vec<usize> = ready.iter().copied().filter(|&i| !state[i].owned).collect();
    // The slot whose own NODE bumped the epoch, when BUMPEPOCH is refused.
    let mut bumped_by = None;
    if importing.len() > 1 {
        let bump = [vec![b"CLUSTER".to_vec(), b"BUMPEPOCH".to_vec()]];
        let reply = ctx
            .pipeline(conns, &to.addr, &bump, ctx.call_timeout)
            .await?;
        if let Some(Err(text)) = reply.first() {
            tracing::debug!(node = %to.addr, error = %text, "CLUSTER BUMPEPOCH refused: the first slot's NODE bumps the epoch");
            let first = importing[0];
            let command = vec![setslot(batch[first].slot, "NODE", &to.id)];
            send_node(ctx, conns, batch, &[(first, command)], to, state).await?;
            if let Some(e) = &state[first].failed {
                // Without the bump the others would be claimed under an old epoch: they
                // stay open for the runner to finish one by one.
                let why = format!(
                    "not assigned: SETSLOT NODE of slot {} failed first ({e})",
                    batch[first].slot
                );
                for &i in ready.iter().filter(|&&i| i != first) {
                    state[i].failed = Some(MoveError::Retry(why.clone()));
                }
                return Ok(());
            }
            bumped_by = Some(first);
        }
    }
    // Batches only: the target's epoch is bumped, every slot still to assign.
    freeze_at("migration::mid_target_node").await;
    let broadcast = importing.last().copied().filter(|&i| Some(i) != bumped_by);
    let rest = ready
        .iter()
        .copied()
        .filter(|&i| Some(i) != bumped_by && Some(i) != broadcast)
        .chain(broadcast);
    let mut sent: Vec<(usize, Vec<Vec<Vec<u8>>>)> = Vec::new();
    for i in rest {
        let slot = batch[i].slot;
        let node = setslot(slot, "NODE", &to.id);
        // An owned slot has no importing marker left to clear.
        let commands = if state[i].owned || Some(i) == broadcast {
            vec![node]
        } else {
            vec![setslot_stable(slot), node]
        };
        sent.push((i, commands));
    }
    send_node(ctx, conns, batch, &sent, to, state).await
}

/// One pipelined write of each slot's commands to the target; a slot whose any reply is an
/// error is failed.
async fn send_node(
    ctx: &MoveContext,
    conns: &mut Conns,
    batch: &[Planned],
    per_slot: &[(usize, Vec<Vec<Vec<u8>>>)],
    to: &Endpoint,
    state: &mut [Progress],
) -> Result<(), MoveError> {
    let commands: Vec<Vec<Vec<u8>>> = per_slot.iter().flat_map(|(_, c)| c.clone()).collect();
    let replies = ctx
        .pipeline(conns, &to.addr, &commands, ctx.call_timeout)
        .await?;
    let mut replies = replies.into_iter();
    for (i, slot_commands) in per_slot {
        for reply in replies.by_ref().take(slot_commands.len()) {
            if let Err(text) = reply {
                match step_error(&text, &to.addr, "SETSLOT NODE", batch[*i].slot) {
                    e @ MoveError::Changed(_) => return Err(e),
                    e => state[*i].failed = Some(e),
                }
            }
        }
    }
    Ok(())
}

/// Step 5 and 6 for the slots that passed the gate: `SETSLOT NODE` on the target, the
/// source, then every other master, each one pipelined write; then one map install.
async fn hand_over(
    ctx: &MoveContext,
    conns: &mut Conns,
    batch: &[Planned],
    (from, to): (&Endpoint, &Endpoint),
    others: &[Endpoint],
    state: &mut [Progress],
) -> Result<(), MoveError> {
    tracing::debug!("step 5: SETSLOT NODE on the target, the source, every other master");
    let node = |ready: &[usize]| -> Vec<Vec<Vec<u8>>> {
        ready
            .iter()
            .map(|&i| setslot(batch[i].slot, "NODE", &to.id))
            .collect()
    };
    let mut ready: Vec<usize> = (0..batch.len())
        .filter(|&i| state[i].failed.is_none())
        .collect();
    freeze_at("migration::before_target_node").await;
    if !ready.is_empty() {
        epochs::outrank_source(ctx, conns, from, to).await?;
    }
    target_node(ctx, conns, batch, &ready, to, state).await?;
    ready.retain(|&i| state[i].failed.is_none());
    freeze_at("migration::after_target_node").await;
    let replies = ctx
        .pipeline(conns, &from.addr, &node(&ready), ctx.call_timeout)
        .await?;
    let mut checked_replica = false;
    for (&i, reply) in ready.iter().zip(&replies) {
        match reply {
            Ok(_) => {}
            // The source lost its last slot and turned into a replica of the target; a
            // replica of anyone else means a failover happened.
            Err(text) if text.contains("only with masters") => {
                if !checked_replica {
                    let (me, _) = ctx.node_view(conns, &from.addr).await?;
                    if me.master_id.as_deref() != Some(to.id.as_str()) {
                        return Err(MoveError::Changed(format!(
                            "{}: SETSLOT NODE: {text} (a failover: it is a replica, not of the target)",
                            from.addr
                        )));
                    }
                    checked_replica = true;
                }
            }
            Err(text) => match step_error(text, &from.addr, "SETSLOT NODE", batch[i].slot) {
                e @ MoveError::Changed(_) => return Err(e),
                e => state[i].failed = Some(e),
            },
        }
    }
    ready.retain(|&i| state[i].failed.is_none());
    freeze_at("migration::after_source_node").await;
    let handed: Vec<u16> = ready.iter().map(|&i| batch[i].slot).collect();
    epochs::secure_claim(ctx, conns, &handed, from, to).await?;
    let commands = node(&ready);
    for other in others.iter().filter(|o| o.id != from.id && o.id != to.id) {
        // Others also learn it through gossip; a failure here is not worth stopping for.
        match ctx
            .pipeline(conns, &other.addr, &commands, ctx.call_timeout)
            .await
        {
            Ok(replies) => {
                if let Some(Err(text)) = replies.iter().find(|r| r.is_err()) {
                    tracing::debug!(node = %other.addr, error = %text, "SETSLOT NODE on a bystander");
                }
            }
            Err(e) => {
                tracing::debug!(node = %other.addr, error = %e, "SETSLOT NODE on a bystander")
            }
        }
    }
    let slots: Vec<u16> = ready.iter().map(|&i| batch[i].slot).collect();
    ctx.topology.set_owners(&slots, &to.addr);
    tracing::debug!(owner = %to.addr, slots = slots.len(), "step 6: the proxy's map points at the new owner");
    Ok(())
}
