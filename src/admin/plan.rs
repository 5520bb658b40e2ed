//! A plan of slot moves, shown (`dry_run`: the moves, the keys they take, an estimated time)
//! or started as a job. `POST /migrations`, `POST /rebalance` and `POST /nodes/{id}/drain`
//! all end here.

use super::http::{json, Reply};
use super::state::AdminState;
use crate::cluster::SlotMap;
use crate::migration::context::Conns;
use crate::migration::job::{JobKind, SlotMove};
use crate::migration::planner::Transfer;
use crate::migration::{ranges, Error};
use crate::protocol::scan;
use hyper::StatusCode;

/// Shows the plan (dry run) or starts it as a job (202).
pub async fn start_plan(
    state: &AdminState,
    map: &SlotMap,
    kind: JobKind,
    transfers: Vec<Transfer>,
    dry_run: bool,
) -> Result<Reply, Error> {
    let moves: Vec<SlotMove> = transfers
        .iter()
        .flat_map(|t| {
            t.slots.iter().map(|&slot| SlotMove {
                slot,
                from: t.from.clone(),
                to: t.to.clone(),
            })
        })
        .collect();
    state.migrations.check_conflicts(&moves)?;
    if !dry_run {
        let job = state.migrations.submit(kind, moves).await?;
        return Ok(json(StatusCode::ACCEPTED, &job.to_json()));
    }
    let addr = |id: &str| {
        map.nodes
            .iter()
            .find(|n| n.id == id)
            .map(|n| n.addr.clone())
            .unwrap_or_default()
    };
    let keys = estimate_keys(state, map, &transfers).await;
    let slots = moves.len();
    let (seconds, basis) = estimate_seconds(state, slots, keys);
    let listed: Vec<_> = transfers
        .iter()
        .map(|t| {
            serde_json::json!({
                "from": { "id": t.from, "addr": addr(&t.from) },
                "to": { "id": t.to, "addr": addr(&t.to) },
                "slots": ranges::format(&t.slots),
                "count": t.slots.len(),
            })
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "dry_run": true,
            "kind": kind,
            "moves": listed,
            "slots_to_move": slots,
            "estimated_keys": keys,
            "estimated_seconds": seconds,
            "estimate_basis": basis,
        }),
    ))
}

/// Keys to move, estimated from each source's `DBSIZE` and the share of its slots that go.
async fn estimate_keys(state: &AdminState, map: &SlotMap, transfers: &[Transfer]) -> u64 {
    let ctx = &state.migrations.ctx;
    let mut conns = Conns::new(ctx.settings.clone());
    let mut total = 0.0;
    for (i, node) in map.nodes.iter().enumerate() {
        let leaving: usize = transfers
            .iter()
            .filter(|t| t.from == node.id)
            .map(|t| t.slots.len())
            .sum();
        let owned = map.slots_of(i).len();
        if leaving == 0 || owned == 0 {
            continue;
        }
        if let Ok(Ok(raw)) = ctx
            .call(&mut conns, &node.addr, &[b"DBSIZE"], ctx.call_timeout)
            .await
        {
            let keys = scan::integer(&raw).unwrap_or(0).max(0) as f64;
            total += keys * leaving as f64 / owned as f64;
        }
    }
    total.round() as u64
}

/// Seconds for `slots` slots and `keys` keys, from the rate of earlier jobs when there is one.
fn estimate_seconds(state: &AdminState, slots: usize, keys: u64) -> (f64, &'static str) {
    // Defaults measured on a 2-core machine with the default settings (see README).
    let (per_slot, per_key, basis) = match state.migrations.observed_rate() {
        Some(rate) if rate.slots_per_second > 0.0 && rate.keys_per_second > 0.0 => {
            // Split the observed time between the fixed per-slot cost and the per-key cost.
            (
                0.5 / rate.slots_per_second,
                0.5 / rate.keys_per_second,
                "observed",
            )
        }
        _ => (
            1.0 / DEFAULT_SLOTS_PER_SECOND,
            1.0 / DEFAULT_KEYS_PER_SECOND,
            "default",
        ),
    };
    let seconds = slots as f64 * per_slot + keys as f64 * per_key;
    ((seconds * 10.0).round() / 10.0, basis)
}

const DEFAULT_SLOTS_PER_SECOND: f64 = 400.0;
const DEFAULT_KEYS_PER_SECOND: f64 = 40_000.0;
