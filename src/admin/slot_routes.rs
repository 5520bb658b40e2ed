//! `GET /slots/stats?top=N`: the hottest slots, with ops/s, owner and key count.

use super::http::{json, Reply};
use super::state::AdminState;
use crate::migration::context::Conns;
use crate::migration::Error;
use hyper::StatusCode;

/// Most slots one request may list.
const MAX_TOP: usize = 1000;

/// Parses `top` from the query string (default 20).
fn top_from_query(query: Option<&str>) -> Result<usize, Error> {
    let Some(query) = query else { return Ok(20) };
    for pair in query.split('&') {
        if let Some(value) = pair.strip_prefix("top=") {
            return value
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_TOP).contains(n))
                .ok_or_else(|| Error::BadRequest(format!("top: must be 1..={MAX_TOP}")));
        }
    }
    Ok(20)
}

/// `GET /slots/stats`.
pub async fn stats(state: &AdminState, query: Option<&str>) -> Result<Reply, Error> {
    let top = top_from_query(query)?;
    let (figures, window) = state.metrics.slot_stats.hottest(top);
    let snapshot = state.topology.snapshot();
    let ctx = &state.migrations.ctx;
    let mut conns = Conns::new(ctx.settings.clone());
    let mut slots = Vec::with_capacity(figures.len());
    for f in figures {
        let owner = snapshot
            .as_ref()
            .and_then(|s| s.map.owner(f.slot).map(|i| s.map.nodes[i].addr.clone()));
        let keys = match &owner {
            Some(addr) => ctx.count_in_slot(&mut conns, addr, f.slot).await.ok(),
            None => None,
        };
        slots.push(serde_json::json!({
            "slot": f.slot,
            "ops_total": f.ops_total,
            "ops_per_second": (f.ops_per_second * 10.0).round() / 10.0,
            "owner": owner,
            "keys": keys,
        }));
    }
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "window_seconds": (window * 10.0).round() / 10.0, "slots": slots }),
    ))
}
