//! Closing an open slot (one with `MIGRATING`/`IMPORTING` markers) the way
//! `redis-cli --cluster fix` does:
//! - the owner is `MIGRATING` to a node: the move is resumed forward (the keys already moved
//!   live on the target, and clients' new keys went there through `ASK`);
//! - otherwise (the owner is not migrating, or migrating to a node that is no longer a
//!   master, as after a failover of either end), the keys of the slot on every other master
//!   are handed back to the owner, and every marker is cleared with `SETSLOT STABLE`. A key
//!   on both sides takes the copy being handed back (`REPLACE`), as `redis-cli --cluster fix`
//!   does: keys reach a non-owner only by `MIGRATE`, which deletes them at the source, and
//!   clients' later writes to them went there by `ASK`.
//!
//! Start-up recovery and `POST /cluster/fix` ([`super::recovery`]) use it under the
//! migration lease, and a running job uses [`repair_slot`] when a failover changes the
//! cluster under one of its slots.

use super::context::{Conns, MoveContext};
use super::executor;
use super::types::{masters, Endpoint, MoveError, MoveEvent};
use crate::cluster::nodes::NodeLine;
use crate::cluster::topology::RefreshCause;
use std::collections::BTreeMap;
use std::time::Duration;

/// What the masters say about one slot.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SlotState {
    /// Nodes that claim the slot in their own view.
    claimants: Vec<String>,
    /// (node, target) pairs.
    migrating: Vec<(String, String)>,
    /// (node, source) pairs.
    importing: Vec<(String, String)>,
    /// Keys of the slot on every master: a count that changes means someone is still moving
    /// the slot, and non-owners with keys get them handed back.
    counts: Vec<(String, i64)>,
}

/// The `myself` line of every master in the proxy's map. A node of the map that calls
/// itself a replica (a failover the map has not caught up with) is left out: its keys are
/// copies.
async fn master_views(ctx: &MoveContext, conns: &mut Conns) -> Result<Vec<NodeLine>, MoveError> {
    let snapshot = ctx
        .topology
        .snapshot()
        .ok_or_else(|| MoveError::Retry("no slot map loaded".into()))?;
    let mut lines = Vec::new();
    for node in &snapshot.map.nodes {
        let (me, _) = ctx.node_view(conns, &node.addr).await?;
        if me.is_master() {
            lines.push(me);
        }
    }
    Ok(lines)
}

/// What the masters say about `slot`, with every master's key count.
async fn slot_state(
    ctx: &MoveContext,
    conns: &mut Conns,
    lines: &[NodeLine],
    slot: u16,
) -> Result<SlotState, MoveError> {
    let mut state = SlotState::default();
    for me in lines {
        if me.owns(slot) {
            state.claimants.push(me.id.clone());
        }
        for (_, target) in me.migrating.iter().filter(|(s, _)| *s == slot) {
            state.migrating.push((me.id.clone(), target.clone()));
        }
        for (_, source) in me.importing.iter().filter(|(s, _)| *s == slot) {
            state.importing.push((me.id.clone(), source.clone()));
        }
        let count = ctx.count_in_slot(conns, &me.addr, slot).await?;
        state.counts.push((me.id.clone(), count));
    }
    Ok(state)
}

/// Every slot with a migrating/importing marker on some master.
pub async fn open_slots(ctx: &MoveContext) -> Result<BTreeMap<u16, SlotState>, MoveError> {
    let mut conns = Conns::new(ctx.settings.clone());
    let lines = master_views(ctx, &mut conns).await?;
    let marked: std::collections::BTreeSet<u16> = lines
        .iter()
        .flat_map(|l| {
            l.migrating
                .iter()
                .chain(l.importing.iter())
                .map(|(s, _)| *s)
        })
        .collect();
    let mut open = BTreeMap::new();
    for slot in marked {
        let state = slot_state(ctx, &mut conns, &lines, slot).await?;
        open.insert(slot, state);
    }
    Ok(open)
}

/// Repairs `slot` after the cluster changed under a job's move of it (a failover): reloads
/// the map, reads the slot's state from every master and applies the rules above. Returns
/// what was done, or why the slot is still open. Retries for up to 30 s while a failed
/// master is still in the map (the cluster takes `cluster-node-timeout` to mark it).
pub async fn repair_slot(
    ctx: &MoveContext,
    conns: &mut Conns,
    slot: u16,
) -> Result<Vec<String>, MoveError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    // A failover in progress leaves a shard without a master for a while; the promoted
    // replica may hold keys of the slot (copies of what the failed target received), so the
    // slot's state is read only once every slot has an owner again (or the time is up).
    loop {
        let _ = ctx.topology.refresh(RefreshCause::Admin).await;
        let covered = ctx
            .topology
            .snapshot()
            .is_some_and(|s| s.map.covered() == crate::cluster::SLOT_COUNT);
        if covered || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Nodes learn of a failover by gossip, one after the other: a step refused because a
    // node's view lags ("Target node is not a master") is tried again from a fresh read.
    let mut notes: Vec<String> = Vec::new();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let _ = ctx.topology.refresh(RefreshCause::Admin).await;
        let read = match master_views(ctx, conns).await {
            Ok(lines) => slot_state(ctx, conns, &lines, slot).await,
            Err(e) => Err(e),
        };
        let state = match read {
            Ok(state) => state,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(MoveError::Retry(format!(
                    "cannot read the slot's state: {e}"
                )))
            }
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let stray_keys = state
            .counts
            .iter()
            .any(|(node, n)| *n > 0 && !state.claimants.contains(node));
        if state.migrating.is_empty() && state.importing.is_empty() && !stray_keys {
            if notes.is_empty() {
                notes.push(format!("slot {slot}: nothing open, nothing to repair"));
            }
            return Ok(notes);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(MoveError::Retry(format!(
                "still open after {attempts} repair attempts: {}",
                notes.join("; ")
            )));
        }
        if attempts > 1 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        for note in repair(ctx, conns, slot, &state).await {
            if !notes.contains(&note) {
                notes.push(note);
            }
        }
    }
}

/// Applies the rules above once to `slot` in `state`; returns a note per step taken (or
/// why nothing was done).
pub async fn repair(
    ctx: &MoveContext,
    conns: &mut Conns,
    slot: u16,
    state: &SlotState,
) -> Vec<String> {
    let mut notes = Vec::new();
    let Some(snapshot) = ctx.topology.snapshot() else {
        return notes;
    };
    let all = masters(&snapshot);
    let find = |id: &str| all.iter().find(|e| e.id == id).cloned();
    // The owner is migrating to a live master: finish the move it started.
    let forward = state
        .migrating
        .iter()
        .find(|(node, target)| state.claimants.contains(node) && find(target).is_some());
    if let Some((owner, target)) = forward {
        let (Some(from), Some(to)) = (find(owner), find(target)) else {
            return notes;
        };
        let mut ignore = |_e: MoveEvent| {};
        notes.push(
            match executor::move_slot(ctx, conns, slot, &from, &to, &all, &mut ignore).await {
                Ok(keys) => format!(
                    "slot {slot}: finished the interrupted move {} → {} ({keys} keys)",
                    from.addr, to.addr
                ),
                Err(e) => format!(
                    "slot {slot}: could not finish the move {} → {}: {e}",
                    from.addr, to.addr
                ),
            },
        );
        return notes;
    }
    let [owner_id] = state.claimants.as_slice() else {
        notes.push(format!(
            "slot {slot}: {} masters claim it; left for the cluster to settle",
            state.claimants.len()
        ));
        return notes;
    };
    let Some(owner) = find(owner_id) else {
        return notes;
    };
    // A migrating owner answers a RESTORE of a key it lacks with ASK, so its marker (to a
    // node that is no longer a master) is cleared first; until the keys are back, reads of
    // them miss for the few milliseconds the hand-back takes.
    for (node, target) in &state.migrating {
        let Some(n) = find(node) else { continue };
        let cleared = ctx.setslot(conns, &n.addr, slot, b"STABLE", None).await;
        notes.push(match cleared {
            Ok(Ok(_)) => format!(
                "slot {slot}: cleared the MIGRATING marker (to {target}) on {}",
                n.addr
            ),
            Ok(Err(e)) => format!("slot {slot}: SETSLOT STABLE on {}: {e}", n.addr),
            Err(e) => format!("slot {slot}: SETSLOT STABLE on {}: {e}", n.addr),
        });
    }
    // Keys on any other master go back to the owner.
    let holders = state.counts.iter().filter(|(node, n)| {
        node != owner_id && (*n > 0 || state.importing.iter().any(|(i, _)| i == node))
    });
    for (node, _) in holders {
        let Some(holder) = find(node) else { continue };
        notes.push(match hand_back(ctx, conns, slot, &holder, &owner).await {
            Ok(moved) => format!(
                "slot {slot}: closed IMPORTING on {}: {moved} keys handed back to {}",
                holder.addr, owner.addr
            ),
            Err(e) => format!("slot {slot}: could not close it on {}: {e}", holder.addr),
        });
    }
    notes
}

/// Moves a non-owner's keys of `slot` to the owner, key by key (replacing the owner's copy
/// of a key on both), then makes the slot stable there. The holder is made `IMPORTING` first
/// if it is not: only then does it accept `ASKING` + `MIGRATE` for a slot it does not own.
async fn hand_back(
    ctx: &MoveContext,
    conns: &mut Conns,
    slot: u16,
    holder: &Endpoint,
    owner: &Endpoint,
) -> Result<u64, MoveError> {
    let mut moved = 0u64;
    // An importing node ignores every claim on the slot, so after a failover of the source
    // it may still believe the slot has no owner ("CLUSTERDOWN Hash slot not served"): tell
    // it the owner first, then (re)open it for ASKING.
    if let Err(text) = ctx
        .setslot(conns, &holder.addr, slot, b"NODE", Some(&owner.id))
        .await?
    {
        return Err(MoveError::Retry(format!(
            "{}: SETSLOT NODE: {text}",
            holder.addr
        )));
    }
    if let Err(text) = ctx
        .setslot(conns, &holder.addr, slot, b"IMPORTING", Some(&owner.id))
        .await?
    {
        return Err(MoveError::Retry(format!(
            "{}: SETSLOT IMPORTING: {text}",
            holder.addr
        )));
    }
    loop {
        let keys = ctx
            .keys_in_slot(conns, &holder.addr, slot, ctx.batch_keys)
            .await?;
        if keys.is_empty() {
            break;
        }
        for key in keys {
            let command = ctx.migrate_command(
                &owner.addr,
                std::slice::from_ref(&key),
                true,
                ctx.migrate_timeout,
            )?;
            let args: Vec<&[u8]> = command.iter().map(Vec::as_slice).collect();
            ctx.call(conns, &holder.addr, &[b"ASKING"], ctx.call_timeout)
                .await?
                .map_err(MoveError::Retry)?;
            match ctx
                .call(
                    conns,
                    &holder.addr,
                    &args,
                    ctx.migrate_timeout + ctx.call_timeout,
                )
                .await?
            {
                Ok(_) => moved += 1,
                Err(text) => {
                    return Err(MoveError::Retry(format!(
                        "{}: MIGRATE: {text}",
                        holder.addr
                    )))
                }
            }
        }
    }
    let reply = ctx
        .setslot(conns, &holder.addr, slot, b"STABLE", None)
        .await?;
    if let Err(text) = reply {
        return Err(MoveError::Retry(text));
    }
    Ok(moved)
}
