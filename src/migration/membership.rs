//! Changing who is in the cluster, as `redis-cli --cluster add-node|del-node` does: a new
//! empty master joins ([`add_node`]), an empty node leaves ([`remove_node`]).

use super::context::{Conns, MoveContext};
use super::error::Error;
use super::service::Migrations;
use crate::cluster::nodes::{self, NodeLine};
use crate::cluster::topology::{normalize_addr, RefreshCause};
use crate::cluster::SlotMap;
use crate::config::split_host_port;
use crate::protocol::scan;
use std::time::{Duration, Instant};

/// A node that joined: its cluster id and `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// Cluster id.
    pub id: String,
    /// `host:port`.
    pub addr: String,
}

/// `CLUSTER MEET`s the empty cluster-enabled server at `addr` (through a master of
/// `snapshot`, the map read just now) at its own bus port, and waits until every master and
/// the new node know each other.
pub async fn add_node(ctx: &MoveContext, snapshot: &SlotMap, addr: &str) -> Result<Joined, Error> {
    let (host, port) =
        split_host_port(addr).map_err(|e| Error::BadRequest(format!("addr: {e}")))?;
    let addr = normalize_addr(addr);
    if snapshot.nodes.iter().any(|n| n.addr == addr) {
        return Err(Error::Conflict(format!(
            "{addr} is already a master of this cluster"
        )));
    }
    let mut conns = Conns::new(ctx.settings.clone());
    let call = |reply: Result<Result<bytes::Bytes, String>, _>| match reply {
        Ok(Ok(raw)) => Ok(raw),
        Ok(Err(text)) => Err(Error::BadRequest(format!("{addr}: {text}"))),
        Err(e) => Err(Error::BadRequest(format!("cannot reach {addr}: {e}"))),
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
        return Err(Error::BadRequest(format!(
            "{addr} holds keys; only an empty node can join"
        )));
    }
    let ip = tokio::net::lookup_host((host, port))
        .await
        .ok()
        .and_then(|mut a| a.next())
        .map(|a| a.ip().to_string())
        .ok_or_else(|| Error::BadRequest(format!("cannot resolve {host}")))?;
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
        .ok_or_else(|| Error::Unavailable("no master known".into()))?;
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
            return Err(Error::TimedOut(format!(
                "{addr} was met but not every node knows it after 20 s; check cluster bus ports"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = ctx.topology.refresh(RefreshCause::Admin).await;
    Ok(Joined { id, addr })
}

/// A node that left (or was partly told to): who forgot it, whether it was reset, and the
/// nodes that could not be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    /// Cluster id.
    pub id: String,
    /// `host:port`.
    pub addr: String,
    /// Nodes that ran `CLUSTER FORGET`.
    pub forgotten_by: Vec<String>,
    /// `CLUSTER RESET SOFT` succeeded on the node.
    pub reset: bool,
    /// What failed, node by node (empty when everything worked).
    pub errors: Vec<String>,
    /// One sentence for the operator.
    pub message: String,
}

/// Makes every other node forget an empty node (`CLUSTER FORGET`), then resets that node
/// (`CLUSTER RESET SOFT`) so that it cannot gossip its way back, like `redis-cli --cluster
/// del-node`. A conflict while it owns slots, has replicas or takes part in a job of
/// `migrations`.
pub async fn remove_node(
    migrations: &Migrations,
    map: &SlotMap,
    name: &str,
) -> Result<Removed, Error> {
    let ctx = &migrations.ctx;
    let seed = map
        .nodes
        .first()
        .ok_or_else(|| Error::Unavailable("no master known".into()))?;
    let mut conns = Conns::new(ctx.settings.clone());
    let (_, lines) = ctx
        .node_view(&mut conns, &seed.addr)
        .await
        .map_err(|e| Error::Unavailable(format!("{}: {e}", seed.addr)))?;
    let addr = normalize_addr(name);
    let candidates: Vec<&NodeLine> = lines
        .iter()
        .filter(|l| l.id == name || l.addr == addr || (name.len() >= 8 && l.id.starts_with(name)))
        .collect();
    let node = match candidates.as_slice() {
        [one] => (*one).clone(),
        [] => {
            return Err(Error::NotFound(format!(
                "no node {name:?} in this cluster (see GET /cluster)"
            )))
        }
        _ => {
            return Err(Error::BadRequest(format!(
                "{name:?} names several nodes; give the whole id"
            )))
        }
    };
    if node.slot_count() > 0 {
        return Err(Error::Conflict(format!(
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
        return Err(Error::Conflict(format!(
            "{} has replicas ({}); delete or re-attach them first",
            node.addr,
            replicas.join(", ")
        )));
    }
    if let Some(job) = migrations.job_using(&node.id) {
        return Err(Error::Conflict(format!(
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
    let _ = ctx.topology.refresh(RefreshCause::Admin).await;
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
    Ok(Removed {
        id: node.id,
        addr: node.addr,
        forgotten_by,
        reset: reset_ok,
        errors,
        message,
    })
}
