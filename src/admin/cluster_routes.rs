//! `GET /cluster`, `GET /cluster/check`, `POST /cluster/fix`: the cluster as a whole.

use super::http::{json, Reply};
use super::lookup::fresh_map;
use super::state::AdminState;
use crate::migration::{inspect, ranges, Error};
use hyper::StatusCode;

/// `GET /cluster`: masters with their slot ranges (read from the cluster now), the proxy's
/// map epoch, the lease holder, recovery notes.
pub async fn cluster(state: &AdminState) -> Result<Reply, Error> {
    let Some(snapshot) = state.topology.snapshot() else {
        return Err(Error::Unavailable("no slot map loaded yet".into()));
    };
    let fresh = fresh_map(state).await?;
    let map = &fresh;
    let addrs: Vec<String> = map.nodes.iter().map(|n| n.addr.clone()).collect();
    let keys = inspect::key_counts(&state.migrations.ctx, &addrs).await;
    let (replicas, open_slots) = inspect::topology_details(&state.migrations.ctx, &addrs).await;
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

/// `GET /cluster/check`: like `redis-cli --cluster check` (see [`inspect::check`]).
pub async fn check(state: &AdminState) -> Result<Reply, Error> {
    let map = fresh_map(state).await?;
    let report = inspect::check(&state.migrations.ctx, &map).await;
    Ok(json(StatusCode::OK, &report))
}

/// `POST /cluster/fix`: repairs every open slot no job is moving, at once (the rules of
/// crash recovery), and says what it did.
pub async fn fix(state: &AdminState) -> Result<Reply, Error> {
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
