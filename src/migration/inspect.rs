//! Reading the cluster as an operator does with `redis-cli --cluster check`: every master's
//! own view compared, slot coverage, open slots, replicas and key counts per master.

use super::context::{Conns, MoveContext};
use super::ranges;
use crate::cluster::nodes::{self, NodeLine};
use crate::cluster::{SlotMap, SLOT_COUNT};
use crate::protocol::scan;

/// A slot range and the id of the master owning it, in one master's view.
type Owned = (u16, u16, String);

/// Every node's own `CLUSTER NODES` lines, read from the masters of the current map: (the
/// master's address, its lines), or the error that master gave.
pub async fn views(
    ctx: &MoveContext,
    addrs: &[String],
) -> Vec<(String, Result<Vec<NodeLine>, String>)> {
    let mut conns = Conns::new(ctx.settings.clone());
    let mut out = Vec::new();
    for addr in addrs {
        let view = ctx
            .node_view(&mut conns, addr)
            .await
            .map(|(_, lines)| lines)
            .map_err(|e| e.to_string());
        out.push((addr.clone(), view));
    }
    out
}

/// Open slots in `lines` of every master, as JSON.
pub fn open_slots(views: &[(String, Result<Vec<NodeLine>, String>)]) -> Vec<serde_json::Value> {
    let mut open = Vec::new();
    for (addr, lines) in views {
        let Some(me) = lines.as_ref().ok().and_then(|l| nodes::myself(l)) else {
            continue;
        };
        for (slot, peer) in &me.migrating {
            open.push(serde_json::json!({
                "slot": slot, "node": me.id, "addr": addr, "state": "migrating", "peer": peer,
            }));
        }
        for (slot, peer) in &me.importing {
            open.push(serde_json::json!({
                "slot": slot, "node": me.id, "addr": addr, "state": "importing", "peer": peer,
            }));
        }
    }
    open
}

/// Like `redis-cli --cluster check`: every master's own view of slot ownership (of `map`'s
/// masters) compared with the others', coverage of all 16384 slots, open slots. `ok` only
/// when all is clean.
pub async fn check(ctx: &MoveContext, map: &SlotMap) -> serde_json::Value {
    let addrs: Vec<String> = map.nodes.iter().map(|n| n.addr.clone()).collect();
    let views = views(ctx, &addrs).await;
    let mut problems = Vec::new();
    let mut disagreements = Vec::new();
    // Ownership as each master sees it, compared with the first master that answered.
    let mut reference: Option<(String, Vec<Owned>)> = None;
    for (addr, view) in &views {
        let lines = match view {
            Ok(lines) => lines,
            Err(e) => {
                problems.push(format!("{addr} does not answer: {e}"));
                continue;
            }
        };
        let mut owners: Vec<(u16, u16, String)> = lines
            .iter()
            .filter(|l| l.is_master())
            .flat_map(|l| l.slots.iter().map(|&(a, b)| (a, b, l.id.clone())))
            .collect();
        owners.sort();
        match &reference {
            None => reference = Some((addr.clone(), owners)),
            Some((first, theirs)) if *theirs != owners => {
                disagreements.push(serde_json::json!({ "addr": addr, "differs_from": first }));
                problems.push(format!(
                    "{addr} and {first} do not agree about slot ownership"
                ));
            }
            Some(_) => {}
        }
    }
    let covered = map.covered();
    if covered < SLOT_COUNT {
        let missing: Vec<u16> = (0..SLOT_COUNT as u16)
            .filter(|&s| map.owner(s).is_none())
            .collect();
        problems.push(format!(
            "{} slots not covered: {}",
            missing.len(),
            ranges::format(&missing)
        ));
    }
    let open = open_slots(&views);
    for slot in &open {
        problems.push(format!(
            "slot {} is {} on {} ({} {})",
            slot["slot"],
            slot["state"].as_str().unwrap_or(""),
            slot["addr"].as_str().unwrap_or(""),
            if slot["state"] == "migrating" {
                "to"
            } else {
                "from"
            },
            slot["peer"].as_str().unwrap_or("")
        ));
    }
    serde_json::json!({
        "ok": problems.is_empty(),
        "masters": addrs.len(),
        "covered_slots": covered,
        "agree": disagreements.is_empty() && views.iter().all(|(_, v)| v.is_ok()),
        "disagreements": disagreements,
        "open_slots": open,
        "problems": problems,
    })
}

/// Keys each master holds (`DBSIZE`), by address; `None` for a master that did not answer.
pub async fn key_counts(ctx: &MoveContext, addrs: &[String]) -> Vec<Option<i64>> {
    let mut conns = Conns::new(ctx.settings.clone());
    let mut out = Vec::new();
    for addr in addrs {
        let reply = ctx
            .call(&mut conns, addr, &[b"DBSIZE"], ctx.call_timeout)
            .await;
        out.push(match reply {
            Ok(Ok(raw)) => scan::integer(&raw),
            _ => None,
        });
    }
    out
}

/// Replicas of each master and the open slots, from every master's own `CLUSTER NODES`.
pub async fn topology_details(
    ctx: &MoveContext,
    addrs: &[String],
) -> (Vec<Vec<String>>, Vec<serde_json::Value>) {
    let views = views(ctx, addrs).await;
    let all: Vec<&NodeLine> = views
        .iter()
        .filter_map(|(_, v)| v.as_ref().ok())
        .flatten()
        .collect();
    let replicas = views
        .iter()
        .map(|(_, v)| {
            let me = v.as_ref().ok().and_then(|l| nodes::myself(l));
            let mut found: Vec<String> = all
                .iter()
                .filter(|l| me.is_some_and(|m| l.master_id.as_deref() == Some(m.id.as_str())))
                .map(|l| l.addr.clone())
                .collect();
            found.sort();
            found.dedup();
            found
        })
        .collect();
    (replicas, open_slots(&views))
}
