//! `GET /cluster`, `POST /nodes`, `POST /nodes/{id}/drain`.

use super::http::{json, Reply};
use super::migration_routes::start_plan;
use super::AdminState;
use crate::cluster::slot_map::Node;
use crate::cluster::topology::RefreshCause;
use crate::cluster::{nodes, SlotMap};
use crate::migration::executor::Conns;
use crate::migration::job::JobKind;
use crate::migration::planner::{self, PlanNode, PlanRequest};
use crate::migration::ranges;
use crate::migration::service::ApiError;
use crate::protocol::scan;
use hyper::StatusCode;
use serde::Deserialize;
use std::time::{Duration, Instant};

/// Finds a master by id (or a unique id prefix of 8+ characters) or by `host:port`.
pub fn resolve_node<'a>(map: &'a SlotMap, name: &str) -> Result<(usize, &'a Node), ApiError> {
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
    Err(ApiError::bad_request(format!(
        "unknown node {name:?}: name a master by its id or host:port (see GET /cluster)"
    )))
}

/// The cluster's slot map as the cluster reports it right now, so decisions are never made
/// on a stale or patched view. The proxy's own snapshot is asked to catch up too.
pub async fn fresh_map(state: &AdminState) -> Result<SlotMap, ApiError> {
    let map = state
        .topology
        .read_map()
        .await
        .map_err(|e| ApiError::unavailable(format!("cannot read the slot map: {e}")))?;
    if !state.topology.snapshot().is_some_and(|s| s.map == map) {
        state.topology.request_refresh();
    }
    Ok(map)
}

/// The slot map every master agrees on, for planning moves; waits a few seconds for the
/// masters to converge (a node that just joined learns the owners over the cluster bus).
pub async fn planning_map(state: &AdminState) -> Result<SlotMap, ApiError> {
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
                return Err(ApiError::unavailable(format!(
                    "the masters do not agree on the slot map, so no plan is safe: {e}"
                )))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// `GET /cluster`: masters with their slot ranges (read from the cluster now), the proxy's
/// map epoch, the lease holder, recovery notes.
pub async fn cluster(state: &AdminState) -> Result<Reply, ApiError> {
    let Some(snapshot) = state.topology.snapshot() else {
        return Err(ApiError::unavailable("no slot map loaded yet"));
    };
    let fresh = fresh_map(state).await?;
    let map = &fresh;
    let addrs: Vec<String> = map.nodes.iter().map(|n| n.addr.clone()).collect();
    let keys = super::node_routes::key_counts(state, &addrs).await;
    let (replicas, open_slots) = super::node_routes::topology_details(state, &addrs).await;
    let nodes: Vec<_> = map
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let slots = map.slots_of(i);
            serde_json::json!({
                "id": n.id,
                "addr": n.addr,
                "slots": ranges::format(&slots),
                "slot_count": slots.len(),
                "keys": keys.get(i).copied().flatten(),
                "replicas": replicas.get(i).cloned().unwrap_or_default(),
            })
        })
        .collect();
    let active: Vec<_> = state
        .migrations
        .jobs()
        .iter()
        .filter(|j| !j.lock().state.is_final())
        .map(|j| {
            let p = j.lock();
            serde_json::json!({
                "id": j.id, "kind": j.kind, "state": p.state,
                "slots_done": p.slots_done, "slots_total": j.slots_total,
            })
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "epoch": snapshot.epoch,
            "covered_slots": map.covered(),
            "server_version": &*snapshot.server_version,
            "nodes": nodes,
            "open_slots": open_slots,
            "active_jobs": active,
            "migration_lease_holder": state.migrations.lease.is_held().then(|| state.migrations.lease.holder()),
            "repairs": state.migrations.repairs(),
        }),
    ))
}

/// Body of `POST /nodes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddNode {
    /// `host:port` of an empty, cluster-enabled redis-server.
    pub addr: String,
}

/// `POST /nodes`: `CLUSTER MEET` a new empty master and wait until everyone knows it.
pub async fn add_node(state: &AdminState, body: AddNode) -> Result<Reply, ApiError> {
    let (host, port) = crate::config::split_host_port(&body.addr)
        .map_err(|e| ApiError::bad_request(format!("addr: {e}")))?;
    let addr = crate::cluster::topology::normalize_addr(&body.addr);
    let snapshot = fresh_map(state).await?;
    if snapshot.nodes.iter().any(|n| n.addr == addr) {
        return Err(ApiError::conflict(format!(
            "{addr} is already a master of this cluster"
        )));
    }
    let ctx = &state.migrations.ctx;
    let mut conns = Conns::new(ctx.settings.clone());
    let call = |reply: Result<Result<bytes::Bytes, String>, _>| match reply {
        Ok(Ok(raw)) => Ok(raw),
        Ok(Err(text)) => Err(ApiError::bad_request(format!("{addr}: {text}"))),
        Err(e) => Err(ApiError::bad_request(format!("cannot reach {addr}: {e}"))),
    };
    let id = call(
        ctx.call(&mut conns, &addr, &[b"CLUSTER", b"MYID"], ctx.call_timeout)
            .await,
    )?;
    let id = scan::string(&id)
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    let size = call(
        ctx.call(&mut conns, &addr, &[b"DBSIZE"], ctx.call_timeout)
            .await,
    )?;
    if scan::integer(&size) != Some(0) {
        return Err(ApiError::bad_request(format!(
            "{addr} holds keys; only an empty node can join"
        )));
    }
    let ip = tokio::net::lookup_host((host, port))
        .await
        .ok()
        .and_then(|mut a| a.next())
        .map(|a| a.ip().to_string())
        .ok_or_else(|| ApiError::bad_request(format!("cannot resolve {host}")))?;
    // The node's own bus port (`cluster-port`), from its `myself` line, as
    // `redis-cli --cluster add-node` reads it: not always the port + 10000.
    let view = call(
        ctx.call(&mut conns, &addr, &[b"CLUSTER", b"NODES"], ctx.call_timeout)
            .await,
    )?;
    let bus_port = scan::string(&view)
        .and_then(|t| nodes::parse(&String::from_utf8_lossy(t)).ok())
        .and_then(|lines| nodes::myself(&lines).and_then(|me| me.bus_port))
        .unwrap_or(port.saturating_add(10000));
    let (port_s, bus_s) = (port.to_string(), bus_port.to_string());
    let seed = snapshot
        .nodes
        .first()
        .ok_or_else(|| ApiError::unavailable("no master known"))?;
    let reply = ctx
        .call(
            &mut conns,
            &seed.addr,
            &[
                b"CLUSTER",
                b"MEET",
                ip.as_bytes(),
                port_s.as_bytes(),
                bus_s.as_bytes(),
            ],
            ctx.call_timeout,
        )
        .await;
    call(reply)?;
    // Wait until every master and the new node see each other.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut everyone: Vec<String> = snapshot.nodes.iter().map(|n| n.addr.clone()).collect();
    everyone.push(addr.clone());
    loop {
        let mut all_know = true;
        for node in &everyone {
            let known = match ctx
                .call(&mut conns, node, &[b"CLUSTER", b"NODES"], ctx.call_timeout)
                .await
            {
                Ok(Ok(raw)) => scan::string(&raw)
                    .and_then(|t| nodes::parse(&String::from_utf8_lossy(t)).ok())
                    .map(|lines| {
                        let healthy =
                            |a: &str| lines.iter().any(|l| l.addr == a && !l.is_unhealthy());
                        everyone.iter().all(|a| healthy(a))
                    })
                    .unwrap_or(false),
                _ => false,
            };
            all_know &= known;
        }
        if all_know {
            break;
        }
        if Instant::now() > deadline {
            return Err(ApiError {
                status: 504,
                message: format!("{addr} was met but not every node knows it after 20 s; check cluster bus ports"),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = state.topology.refresh(RefreshCause::Admin).await;
    Ok(json(
        StatusCode::CREATED,
        &serde_json::json!({ "id": id, "addr": addr }),
    ))
}

/// Body of `POST /nodes/{id}/drain` (may be empty).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Drain {
    /// Only show the plan.
    pub dry_run: bool,
}

/// `POST /nodes/{id}/drain`: move every slot of a master to the others (weight 0).
pub async fn drain(state: &AdminState, name: &str, body: Drain) -> Result<Reply, ApiError> {
    let map = planning_map(state).await?;
    let (index, node) = resolve_node(&map, name)?;
    if map.slots_of(index).is_empty() {
        return Err(ApiError::conflict(format!(
            "{} owns no slots; nothing to drain",
            node.addr
        )));
    }
    let mut request = PlanRequest {
        threshold: 0.0,
        ..PlanRequest::default()
    };
    request.weights.insert(node.id.clone(), 0.0);
    let transfers = planner::plan(&plan_nodes(&map), &request).map_err(ApiError::bad_request)?;
    start_plan(state, &map, JobKind::Drain, transfers, body.dry_run).await
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
