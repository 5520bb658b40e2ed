//! Crash recovery: finish what a previous run (of this proxy, or of `redis-cli`) left open.
//!
//! On start the proxy reads its journal and asks every master for `CLUSTER NODES`, whose
//! `myself` line shows the node's open slots. Slots of journaled jobs are finished by the
//! job itself when it resumes (every step of a move may be repeated). Open slots no journal
//! explains are closed like `redis-cli --cluster fix` does:
//! - the owner is `MIGRATING` to a node: the move is resumed forward (the keys already moved
//!   live on the target, and clients' new keys went there through `ASK`);
//! - a node is `IMPORTING` from the owner, which is not migrating: its keys are handed back
//!   to the owner (the owner's own copy wins a clash, since it has served the slot all along)
//!   and the slot is made `STABLE` there;
//! - a `MIGRATING` marker on a node that does not own the slot is cleared.
//!
//! All of it happens under the migration lease, so a proxy never "repairs" a slot another
//! live proxy is moving.

use super::executor::{Conns, Endpoint, MoveError};
use super::job::Job;
use super::lease::LeaseError;
use super::service::{masters, Migrations};
use crate::cluster::nodes::{self, NodeLine};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// What the masters say about one slot.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct SlotState {
    /// Nodes that claim the slot in their own view.
    claimants: Vec<String>,
    /// (node, target) pairs.
    migrating: Vec<(String, String)>,
    /// (node, source) pairs.
    importing: Vec<(String, String)>,
    /// Keys of the slot on each node with a marker: a count that changes means someone is
    /// still moving the slot.
    counts: Vec<(String, i64)>,
}

/// Runs once after start: repairs open slots and resumes journaled jobs; new jobs wait
/// until it is done.
pub async fn recover(service: Arc<Migrations>) {
    recover_inner(&service).await;
    service.mark_recovered();
    service.publish();
}

async fn recover_inner(service: &Arc<Migrations>) {
    while service.topology.snapshot().is_none() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let records = service.journal().load_all();
    loop {
        let open = match open_slots(service).await {
            Ok(open) => open,
            Err(e) => {
                tracing::warn!(error = %e, "recovery: cannot read every master's CLUSTER NODES; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if records.is_empty() && open.is_empty() {
            return;
        }
        match service.lease.acquire().await {
            Ok(()) => {}
            Err(LeaseError::HeldBy(who)) => {
                tracing::info!(holder = %who, "recovery waits: another proxy holds the migration lease");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
            Err(LeaseError::Unavailable(why)) => {
                tracing::warn!(error = %why, "recovery: cannot take the migration lease; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        // Re-read under the lease: what we saw before may have been another proxy's work.
        let open = open_slots(service).await.unwrap_or(open);
        let journaled: std::collections::BTreeSet<u16> = records
            .iter()
            .flat_map(|r| r.moves().into_iter().map(|m| m.slot))
            .collect();
        // A slot no journal explains may be an operator's tool (redis-cli) at work right now:
        // only slots that stay exactly as they are through the grace period are repaired.
        let mut open = open;
        if open.keys().any(|s| !journaled.contains(s)) {
            tokio::time::sleep(service.repair_grace).await;
            let later = open_slots(service).await.unwrap_or_default();
            open.retain(|slot, state| journaled.contains(slot) || later.get(slot) == Some(state));
        }
        let mut conns = Conns::new(service.ctx.settings.clone());
        for (slot, state) in &open {
            if journaled.contains(slot) {
                continue;
            }
            repair(service, &mut conns, *slot, state).await;
        }
        for record in records {
            let id = record.id.clone();
            let state = record.state;
            service.note_repair(format!(
                "job {id} restored from the journal ({state:?}, {} slots left)",
                record.moves().len()
            ));
            service.restore(Arc::new(Job::from_record(record))).await;
        }
        service.lease.release().await;
        return;
    }
}

/// Every slot with a migrating/importing marker on some master.
async fn open_slots(service: &Migrations) -> Result<BTreeMap<u16, SlotState>, String> {
    let snapshot = service.topology.snapshot().ok_or("no slot map")?;
    let mut conns = Conns::new(service.ctx.settings.clone());
    let mut open: BTreeMap<u16, SlotState> = BTreeMap::new();
    let mut lines: Vec<NodeLine> = Vec::new();
    for node in &snapshot.map.nodes {
        let reply = service
            .ctx
            .call(
                &mut conns,
                &node.addr,
                &[b"CLUSTER", b"NODES"],
                service.ctx.call_timeout,
            )
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("{}: {e}", node.addr))?;
        let text = crate::protocol::scan::string(&reply)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .ok_or_else(|| format!("{}: odd CLUSTER NODES reply", node.addr))?;
        let parsed = nodes::parse(&text)?;
        if let Some(me) = nodes::myself(&parsed) {
            lines.push(me.clone());
        }
    }
    for me in &lines {
        for (slot, target) in &me.migrating {
            open.entry(*slot)
                .or_default()
                .migrating
                .push((me.id.clone(), target.clone()));
        }
        for (slot, source) in &me.importing {
            open.entry(*slot)
                .or_default()
                .importing
                .push((me.id.clone(), source.clone()));
        }
    }
    for (slot, state) in open.iter_mut() {
        state.claimants = lines
            .iter()
            .filter(|l| l.owns(*slot))
            .map(|l| l.id.clone())
            .collect();
        let marked: Vec<&String> = state
            .migrating
            .iter()
            .chain(state.importing.iter())
            .map(|(node, _)| node)
            .collect();
        for node in marked {
            let Some(addr) = lines.iter().find(|l| &l.id == node).map(|l| l.addr.clone()) else {
                continue;
            };
            let count = service
                .ctx
                .count_in_slot(&mut conns, &addr, *slot)
                .await
                .map_err(|e| e.to_string())?;
            state.counts.push((node.clone(), count));
        }
    }
    Ok(open)
}

async fn repair(service: &Migrations, conns: &mut Conns, slot: u16, state: &SlotState) {
    let Some(snapshot) = service.topology.snapshot() else {
        return;
    };
    let all = masters(&snapshot);
    let find = |id: &str| all.iter().find(|e| e.id == id).cloned();
    // The owner is migrating: finish the move it started.
    let forward = state
        .migrating
        .iter()
        .find(|(node, _)| state.claimants.contains(node));
    if let Some((owner, target)) = forward {
        let (Some(from), Some(to)) = (find(owner), find(target)) else {
            service.note_repair(format!(
                "slot {slot}: migrating to unknown node {target}; left for the operator"
            ));
            return;
        };
        let mut ignore = |_n: u64| {};
        match service
            .ctx
            .move_slot(conns, slot, &from, &to, &all, &mut ignore)
            .await
        {
            Ok(keys) => service.note_repair(format!(
                "slot {slot}: finished the interrupted move {} → {} ({keys} keys)",
                from.addr, to.addr
            )),
            Err(e) => service.note_repair(format!(
                "slot {slot}: could not finish the move {} → {}: {e}",
                from.addr, to.addr
            )),
        }
        return;
    }
    for (node, _) in &state.migrating {
        if let Some(n) = find(node) {
            let _ = service
                .ctx
                .setslot(conns, &n.addr, slot, b"STABLE", None)
                .await;
            service.note_repair(format!(
                "slot {slot}: cleared a stray MIGRATING marker on {}",
                n.addr
            ));
        }
    }
    let [owner_id] = state.claimants.as_slice() else {
        service.note_repair(format!(
            "slot {slot}: {} masters claim it; left for the cluster to settle",
            state.claimants.len()
        ));
        return;
    };
    let Some(owner) = find(owner_id) else { return };
    for (node, _) in &state.importing {
        let Some(importer) = find(node) else { continue };
        match hand_back(service, conns, slot, &importer, &owner).await {
            Ok((moved, dropped)) => service.note_repair(format!(
                "slot {slot}: closed IMPORTING on {}: {moved} keys handed back to {}, {dropped} stale copies dropped",
                importer.addr, owner.addr
            )),
            Err(e) => service.note_repair(format!("slot {slot}: could not close IMPORTING on {}: {e}", importer.addr)),
        }
    }
}

/// Moves an importing node's keys of `slot` to the owner, key by key; where the owner has the
/// key too, the owner's copy wins and the importer's is deleted. Then the slot is made stable.
async fn hand_back(
    service: &Migrations,
    conns: &mut Conns,
    slot: u16,
    importer: &Endpoint,
    owner: &Endpoint,
) -> Result<(u64, u64), MoveError> {
    let ctx = &service.ctx;
    let (mut moved, mut dropped) = (0u64, 0u64);
    let (host, port) = crate::config::split_host_port(&owner.addr).map_err(MoveError::Fatal)?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = port.to_string();
    let timeout = ctx.migrate_timeout.as_millis().to_string();
    loop {
        let keys = ctx
            .keys_in_slot(conns, &importer.addr, slot, ctx.batch_keys)
            .await?;
        if keys.is_empty() {
            break;
        }
        for key in keys {
            let args: [&[u8]; 6] = [
                b"MIGRATE",
                host.as_bytes(),
                port.as_bytes(),
                &key,
                b"0",
                timeout.as_bytes(),
            ];
            match ctx
                .call(
                    conns,
                    &importer.addr,
                    &args,
                    ctx.migrate_timeout + ctx.call_timeout,
                )
                .await?
            {
                Ok(_) => moved += 1,
                Err(text) if text.contains("BUSYKEY") => {
                    ctx.call(conns, &importer.addr, &[b"ASKING"], ctx.call_timeout)
                        .await?
                        .map_err(MoveError::Retry)?;
                    let reply = ctx
                        .call(
                            conns,
                            &importer.addr,
                            &[b"DEL".as_slice(), &key],
                            ctx.call_timeout,
                        )
                        .await?;
                    reply.map_err(MoveError::Retry)?;
                    dropped += 1;
                }
                Err(text) => {
                    return Err(MoveError::Retry(format!(
                        "{}: MIGRATE: {text}",
                        importer.addr
                    )))
                }
            }
        }
    }
    let reply = ctx
        .setslot(conns, &importer.addr, slot, b"STABLE", None)
        .await?;
    if let Err(text) = reply {
        return Err(MoveError::Retry(text));
    }
    Ok((moved, dropped))
}
