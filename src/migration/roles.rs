//! Noticing that the cluster changed under a slot move: a failover turned the source or the
//! target into a replica, or another node took the slot.
//!
//! A move must never go on against a node that is no longer the master it started with: the
//! keys it sends would land on a replica's former shard, and `SETSLOT NODE` could hand a slot
//! to the wrong owner. So the executor checks both ends before each slot, and every reply
//! that means "I am not who you think" (`MOVED`, `Please use SETSLOT only with masters`, …)
//! becomes [`MoveError::Changed`], which stops the job and repairs the slot instead of
//! retrying or skipping it.

use super::context::{Conns, MoveContext};
use super::job::{Job, SlotMove};
use super::types::{masters, Endpoint, MoveError};
use crate::cluster::topology::RefreshCause;
use crate::cluster::SlotMap;
use crate::protocol::scan;
use std::time::Duration;

/// `Ok` when `node` still is a master (`ROLE`); [`MoveError::Changed`] naming its master
/// when a failover made it a replica.
pub async fn ensure_master(
    ctx: &MoveContext,
    conns: &mut Conns,
    node: &Endpoint,
) -> Result<(), MoveError> {
    let reply = ctx
        .call(conns, &node.addr, &[b"ROLE"], ctx.call_timeout)
        .await?
        .map_err(|e| MoveError::Retry(format!("{}: ROLE: {e}", node.addr)))?;
    let parts = scan::array_elements(&reply).unwrap_or_default();
    let field = |i: usize| {
        parts
            .get(i)
            .and_then(|p| scan::string(p).map(|s| String::from_utf8_lossy(s).into_owned()))
            .unwrap_or_default()
    };
    match field(0).as_str() {
        "master" => Ok(()),
        "slave" => {
            let port = parts.get(2).and_then(|p| scan::integer(p)).unwrap_or(0);
            Err(MoveError::Changed(format!(
                "{} is now a replica of {}:{port} (a failover)",
                node.addr,
                field(1)
            )))
        }
        other => Err(MoveError::Retry(format!(
            "{}: ROLE says {other:?}",
            node.addr
        ))),
    }
}

/// Turns an error into [`MoveError::Changed`] when one end of the move is no longer the
/// master it was, saying so (the error itself may only say "connection refused" or
/// "MOVED").
pub async fn explain(
    ctx: &MoveContext,
    conns: &mut Conns,
    error: MoveError,
    from: &Endpoint,
    to: &Endpoint,
) -> MoveError {
    for node in [from, to] {
        if let Err(MoveError::Changed(why)) = ensure_master(ctx, conns, node).await {
            return MoveError::Changed(format!("{why}; stopped on: {error}"));
        }
    }
    error
}

/// Source, target and every master of the move `m`, by its node ids, from the current map.
///
/// A map read from a node whose gossip lags may not show yet that a node became master (a
/// failover the job followed on resume): when a node missing from the map's masters says
/// itself that it is one, the map is read again, for a few seconds, before the move gives
/// up. A node that is no master by its own word is a [`MoveError::Changed`] at once.
pub async fn endpoints(
    ctx: &MoveContext,
    conns: &mut Conns,
    m: &SlotMove,
) -> Result<(Endpoint, Endpoint, Vec<Endpoint>), MoveError> {
    let mut wait = Duration::from_millis(100);
    loop {
        let snapshot = ctx
            .topology
            .snapshot()
            .ok_or_else(|| MoveError::Retry("no slot map loaded".into()))?;
        let all = masters(&snapshot);
        let find = |id: &str| all.iter().find(|e| e.id == id).cloned();
        let missing = match (find(&m.from), find(&m.to)) {
            (Some(from), Some(to)) => return Ok((from, to, all.clone())),
            (None, _) => &m.from,
            (_, None) => &m.to,
        };
        let addr = snapshot
            .map
            .nodes
            .iter()
            .find(|n| &n.id == missing)
            .map(|n| n.addr.clone());
        let says_master = match addr {
            Some(addr) => matches!(
                ctx.node_view(conns, &addr).await,
                Ok((me, _)) if &me.id == missing && me.is_master()
            ),
            None => false,
        };
        if !says_master || wait > MAP_LAG {
            return Err(MoveError::Changed(format!(
                "node {missing} is no longer a master in the slot map (a failover, or it left)"
            )));
        }
        tokio::time::sleep(wait).await;
        wait *= 2;
        let _ = ctx.topology.refresh(RefreshCause::Admin).await;
    }
}

/// How long [`endpoints`] waits, at most, for the slot map to show a node as the master it
/// says it is.
const MAP_LAG: Duration = Duration::from_secs(4);

/// (which end, old node, new node) of a move rewritten by [`follow_failovers`].
type Change = (&'static str, String, String);

/// Before a stopped job runs again: moves whose source is no longer a master start from the
/// slot's current owner, and moves whose target a failover made a replica go to that
/// replica's master. Moves whose slot already sits on its target count as done. Returns what
/// changed, for the job's error list.
pub async fn follow_failovers(ctx: &MoveContext, job: &Job) -> Vec<String> {
    let _ = ctx.topology.refresh(RefreshCause::Admin).await;
    let Some(snapshot) = ctx.topology.snapshot() else {
        return Vec::new();
    };
    let mut conns = Conns::new(ctx.settings.clone());
    let mut shards = None;
    for node in &snapshot.map.nodes {
        let reply = ctx
            .call(
                &mut conns,
                &node.addr,
                &[b"CLUSTER", b"SHARDS"],
                ctx.call_timeout,
            )
            .await;
        if let Ok(Ok(raw)) = reply {
            if let Ok(parsed) = SlotMap::shard_members(&raw) {
                shards = Some(parsed);
                break;
            }
        }
    }
    // Without any node's shard list, nodes still answer for themselves below.
    let shards = shards.unwrap_or_default();
    // Every node the job names, asked about itself (maps read from a node whose gossip lags
    // may still show a failed-over master as one): `None` for a node that still is a master,
    // `Some(new master)` for one replaced by a failover.
    let mut ids: Vec<String> = {
        let p = job.lock();
        p.queue
            .iter()
            .flat_map(|m| [m.from.clone(), m.to.clone()])
            .collect()
    };
    ids.sort();
    ids.dedup();
    let mut replaced: std::collections::HashMap<String, Option<String>> = Default::default();
    for id in ids {
        let addr = snapshot
            .map
            .nodes
            .iter()
            .find(|n| n.id == id)
            .map(|n| n.addr.clone());
        let answer = match addr {
            Some(addr) => ctx.node_view(&mut conns, &addr).await.ok(),
            None => None,
        };
        let replacement = match answer {
            Some((me, _)) if me.id == id && me.is_master() => None,
            Some((me, _)) if me.id == id => me.master_id.clone(),
            // Gone or unreachable: whoever took its slots, or the master of its shard.
            _ => ctx.topology.successor_of(&id).or_else(|| {
                shards
                    .iter()
                    .find(|(members, _)| members.iter().any(|m| m == &id))
                    .and_then(|(_, master)| master.clone())
                    .filter(|master| master != &id)
            }),
        };
        replaced.insert(id, replacement);
    }
    let replacement = |id: &str| replaced.get(id).cloned().flatten();
    // A source the map no longer lists as a master, whose successor nobody named (it could not
    // be asked, and the shard lists lag): each of its slots starts from the slot's owner now.
    let in_map = |id: &str| snapshot.map.nodes.iter().any(|n| n.id == id);
    let owner_of = |slot: u16| {
        snapshot
            .map
            .owner(slot)
            .and_then(|i| snapshot.map.nodes.get(i))
            .map(|n| n.id.clone())
    };
    // (what changed, old node, new node) → slots, for one note per change.
    let mut changes: Vec<(Change, Vec<u16>)> = Vec::new();
    let mut note = |what: &'static str, old: &str, new: &str, slot: u16| {
        let key = (what, old.to_string(), new.to_string());
        match changes.iter_mut().find(|(k, _)| *k == key) {
            Some((_, slots)) => slots.push(slot),
            None => changes.push((key, vec![slot])),
        }
    };
    let mut p = job.lock();
    let moves: Vec<SlotMove> = p.queue.drain(..).collect();
    for mut m in moves {
        if let Some(master) = replacement(&m.to) {
            note("target", &m.to, &master, m.slot);
            m.to = master;
        }
        if let Some(master) =
            replacement(&m.from).or_else(|| (!in_map(&m.from)).then(|| owner_of(m.slot)).flatten())
        {
            note("source", &m.from, &master, m.slot);
            m.from = master;
        }
        if m.from == m.to {
            p.slots_done += 1;
            continue;
        }
        p.queue.push_back(m);
    }
    drop(p);
    changes
        .into_iter()
        .map(|((what, old, new), slots)| {
            let slots = super::ranges::format(&slots);
            match what {
                "target" => format!(
                    "slots {slots}: target {old} is no longer a master; they go to {new}, \
                     which took over from it"
                ),
                _ => format!(
                    "slots {slots}: source {old} is no longer a master; they move from {new}, \
                     which took over from it"
                ),
            }
        })
        .collect()
}
