//! The look-ups the admin routes share: a master named by id, id prefix or `host:port`; the
//! slot map read fresh from the cluster, or the one every master agrees on (for plans); the
//! masters as the planner sees them.

use super::state::AdminState;
use crate::cluster::slot_map::Node;
use crate::cluster::SlotMap;
use crate::migration::planner::PlanNode;
use crate::migration::Error;
use std::time::{Duration, Instant};

/// Finds a master by id (or a unique id prefix of 8+ characters) or by `host:port`.
pub fn resolve_node<'a>(map: &'a SlotMap, name: &str) -> Result<(usize, &'a Node), Error> {
    let addr = crate::cluster::topology::normalize_addr(name);
    let nodes = &map.nodes;
    if let Some(found) = nodes
        .iter()
        .enumerate()
        .find(|(_, n)| n.id == name || n.addr == addr)
    {
        return Ok(found);
    }
    if name.len() >= 8 {
        let matches: Vec<_> = nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.id.starts_with(name))
            .collect();
        if let [one] = matches.as_slice() {
            return Ok(*one);
        }
    }
    Err(Error::BadRequest(format!(
        "unknown node {name:?}: name a master by its id or host:port (see GET /cluster)"
    )))
}

/// The cluster's slot map as the cluster reports it right now, so decisions are never made
/// on a stale or patched view. The proxy's own snapshot is asked to catch up too.
pub async fn fresh_map(state: &AdminState) -> Result<SlotMap, Error> {
    let map = state
        .topology
        .read_map()
        .await
        .map_err(|e| Error::Unavailable(format!("cannot read the slot map: {e}")))?;
    if !state.topology.snapshot().is_some_and(|s| s.map == map) {
        state.topology.request_refresh();
    }
    Ok(map)
}

/// The slot map every master agrees on, for planning moves; waits a few seconds for the
/// masters to converge (a node that just joined learns the owners over the cluster bus).
pub async fn planning_map(state: &AdminState) -> Result<SlotMap, Error> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match state.topology.read_agreed_map().await {
            Ok(map) => {
                if !state.topology.snapshot().is_some_and(|s| s.map == map) {
                    state.topology.request_refresh();
                }
                return Ok(map);
            }
            Err(e) if Instant::now() > deadline => {
                return Err(Error::Unavailable(format!(
                    "the masters do not agree on the slot map, so no plan is safe: {e}"
                )))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The masters as the planner sees them.
pub fn plan_nodes(map: &SlotMap) -> Vec<PlanNode> {
    map.nodes
        .iter()
        .enumerate()
        .map(|(i, n)| PlanNode {
            id: n.id.clone(),
            slots: map.slots_of(i),
        })
        .collect()
}
