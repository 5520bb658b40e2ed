//! `GET /cluster/check`, `POST /cluster/fix`, `DELETE /nodes/{id}`: the checks and repairs an
//! operator runs with `redis-cli --cluster check|fix|del-node`, done by the proxy.

use super::cluster_routes::fresh_map;
use super::http::{json, Reply};
use super::AdminState;
use crate::cluster::nodes::{self, NodeLine};
use crate::cluster::topology::RefreshCause;
use crate::cluster::SLOT_COUNT;
use crate::migration::executor::Conns;
use crate::migration::ranges;
use crate::migration::service::ApiError;
use crate::protocol::scan;
use hyper::StatusCode;

/// A slot range and the id of the master owning it, in one master's view.
type Owned = (u16, u16, String);

/// Every node's own `CLUSTER NODES` lines, read from the masters of the current map: (the
/// master's address, its lines), or the error that master gave.
async fn views(
    state: &AdminState,
    addrs: &[String],
) -> Vec<(String, Result<Vec<NodeLine>, String>)> {
    let ctx = &state.migrations.ctx;
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

/// `GET /cluster/check`: like `redis-cli --cluster check`: every master's own view of slot
/// ownership compared with the others', coverage of all 16384 slots, open slots. `ok` only
/// when all is clean.
pub async fn check(state: &AdminState) -> Result<Reply, ApiError> {
    let map = fresh_map(state).await?;
    let addrs: Vec<String> = map.nodes.iter().map(|n| n.addr.clone()).collect();
    let views = views(state, &addrs).await;
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
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "ok": problems.is_empty(),
            "masters": addrs.len(),
            "covered_slots": covered,
            "agree": disagreements.is_empty() && views.iter().all(|(_, v)| v.is_ok()),
            "disagreements": disagreements,
            "open_slots": open,
            "problems": problems,
        }),
    ))
}

/// `POST /cluster/fix`: repairs every open slot no job is moving, at once (the rules of
/// crash recovery), and says what it did.
pub async fn fix(state: &AdminState) -> Result<Reply, ApiError> {
    let report = crate::migration::recovery::fix_open_slots(&state.migrations).await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "open_before": report.open_before,
            "repairs": report.notes,
            "skipped": report.skipped,
            "still_open": report.still_open,
        }),
    ))
}

/// `DELETE /nodes/{id}`: makes every other node forget an empty node (`CLUSTER FORGET`), then
/// resets that node (`CLUSTER RESET SOFT`) so that it cannot gossip its way back, like
/// `redis-cli --cluster del-node`. 409 while it owns slots, has replicas or takes part in a
/// job.
pub async fn delete(state: &AdminState, name: &str) -> Result<Reply, ApiError> {
    let map = fresh_map(state).await?;
    let seed = map
        .nodes
        .first()
        .ok_or_else(|| ApiError::unavailable("no master known"))?;
    let ctx = &state.migrations.ctx;
    let mut conns = Conns::new(ctx.settings.clone());
    let (_, lines) = ctx
        .node_view(&mut conns, &seed.addr)
        .await
        .map_err(|e| ApiError::unavailable(format!("{}: {e}", seed.addr)))?;
    let addr = crate::cluster::topology::normalize_addr(name);
    let candidates: Vec<&NodeLine> = lines
        .iter()
        .filter(|l| l.id == name || l.addr == addr || (name.len() >= 8 && l.id.starts_with(name)))
        .collect();
    let node = match candidates.as_slice() {
        [one] => (*one).clone(),
        [] => {
            return Err(ApiError::not_found(format!(
                "no node {name:?} in this cluster (see GET /cluster)"
            )))
        }
        _ => {
            return Err(ApiError::bad_request(format!(
                "{name:?} names several nodes; give the whole id"
            )))
        }
    };
    if node.slot_count() > 0 {
        return Err(ApiError::conflict(format!(
            "{} still owns {} slots; drain it first (POST /nodes/{}/drain)",
            node.addr,
            node.slot_count(),
            node.id
        )));
    }
    let replicas: Vec<&str> = lines
        .iter()
        .filter(|l| l.master_id.as_deref() == Some(node.id.as_str()))
        .map(|l| l.addr.as_str())
        .collect();
    if !replicas.is_empty() {
        return Err(ApiError::conflict(format!(
            "{} has replicas ({}); delete or re-attach them first",
            node.addr,
            replicas.join(", ")
        )));
    }
    if let Some(job) = state.migrations.job_using(&node.id) {
        return Err(ApiError::conflict(format!(
            "{} takes part in job {job}, which is not finished",
            node.addr
        )));
    }
    let mut forgotten_by = Vec::new();
    let mut errors = Vec::new();
    for other in lines.iter().filter(|l| l.id != node.id) {
        let reply = ctx
            .call(
                &mut conns,
                &other.addr,
                &[b"CLUSTER", b"FORGET", node.id.as_bytes()],
                ctx.call_timeout,
            )
            .await;
        match reply {
            Ok(Ok(_)) => forgotten_by.push(other.addr.clone()),
            Ok(Err(e)) => errors.push(format!("{}: CLUSTER FORGET: {e}", other.addr)),
            Err(e) => errors.push(format!("{}: {e}", other.addr)),
        }
    }
    let reset = ctx
        .call(
            &mut conns,
            &node.addr,
            &[b"CLUSTER", b"RESET", b"SOFT"],
            ctx.call_timeout,
        )
        .await;
    let reset_ok = matches!(reset, Ok(Ok(_)));
    match reset {
        Ok(Err(e)) => errors.push(format!("{}: CLUSTER RESET SOFT: {e}", node.addr)),
        Err(e) => errors.push(format!("{}: {e}", node.addr)),
        Ok(Ok(_)) => {}
    }
    let _ = state.topology.refresh(RefreshCause::Admin).await;
    let message = if errors.is_empty() {
        format!(
            "{} left the cluster: forgotten by {} nodes and reset; it may be shut down",
            node.addr,
            forgotten_by.len()
        )
    } else {
        format!(
            "{} was forgotten by {} nodes, with errors: {}",
            node.addr,
            forgotten_by.len(),
            errors.join("; ")
        )
    };
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_GATEWAY
    };
    Ok(json(
        status,
        &serde_json::json!({
            "id": node.id,
            "addr": node.addr,
            "forgotten_by": forgotten_by,
            "reset": reset_ok,
            "errors": errors,
            "message": message,
        }),
    ))
}

/// Keys each master holds (`DBSIZE`), by address; `None` for a master that did not answer.
pub async fn key_counts(state: &AdminState, addrs: &[String]) -> Vec<Option<i64>> {
    let ctx = &state.migrations.ctx;
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
    state: &AdminState,
    addrs: &[String],
) -> (Vec<Vec<String>>, Vec<serde_json::Value>) {
    let views = views(state, addrs).await;
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
