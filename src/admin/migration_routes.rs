//! `POST /migrations`, `POST /rebalance`, `GET /migrations[/{id}]`,
//! `POST /migrations/{id}/pause|resume|cancel`.

use super::cluster_routes::{plan_nodes, planning_map, resolve_node};
use super::http::{json, Reply};
use super::AdminState;
use crate::cluster::SlotMap;
use crate::migration::job::{JobKind, SlotMove};
use crate::migration::planner::{self, PlanRequest, Transfer};
use crate::migration::ranges;
use crate::migration::service::ApiError;
use crate::protocol::scan;
use hyper::StatusCode;
use serde::Deserialize;
use std::collections::HashMap;

/// Slots as `"0-99,200"` or as a JSON array of numbers.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum SlotList {
    /// `"0-99,200"`.
    Text(String),
    /// `[0, 1, 2]`.
    Numbers(Vec<i64>),
}

/// Body of `POST /migrations`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateMigration {
    /// The slots to move (or give `count`).
    #[serde(default)]
    pub slots: Option<SlotList>,
    /// How many of the source's slots to move, lowest first (instead of `slots`), like
    /// `redis-cli --cluster reshard --cluster-slots N`.
    #[serde(default)]
    pub count: Option<usize>,
    /// Source master (id or host:port).
    pub from: String,
    /// Target master (id or host:port).
    pub to: String,
    /// Only validate and show the plan.
    #[serde(default)]
    pub dry_run: bool,
}

/// Body of `POST /rebalance`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rebalance {
    /// Weight per master (id or host:port); missing masters weigh 1.
    pub weights: HashMap<String, f64>,
    /// Give slots to masters that have none.
    pub use_empty_masters: bool,
    /// Percent off balance tolerated before anything moves.
    pub threshold: f64,
    /// Only show the plan.
    pub dry_run: bool,
}

impl Default for Rebalance {
    fn default() -> Self {
        Rebalance {
            weights: HashMap::new(),
            use_empty_masters: false,
            threshold: 2.0,
            dry_run: false,
        }
    }
}

/// `POST /migrations`.
pub async fn create(state: &AdminState, body: CreateMigration) -> Result<Reply, ApiError> {
    let map = planning_map(state).await?;
    let (from_index, from) = resolve_node(&map, &body.from)?;
    let slots = match (&body.slots, body.count) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give either slots or count, not both",
            ))
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "slots: no slot given (or give count)",
            ))
        }
        (None, Some(0)) => return Err(ApiError::bad_request("count: must be at least 1")),
        (None, Some(count)) => {
            let owned = map.slots_of(from_index);
            if owned.len() < count {
                return Err(ApiError::bad_request(format!(
                    "count: {} owns only {} slots",
                    from.addr,
                    owned.len()
                )));
            }
            owned[..count].to_vec()
        }
        (Some(SlotList::Text(t)), None) => {
            ranges::parse(t).map_err(|e| ApiError::bad_request(format!("slots: {e}")))?
        }
        (Some(SlotList::Numbers(n)), None) => {
            let text = n
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(",");
            ranges::parse(&text).map_err(|e| ApiError::bad_request(format!("slots: {e}")))?
        }
    };
    if slots.is_empty() {
        return Err(ApiError::bad_request("slots: no slot given"));
    }
    let (_, to) = resolve_node(&map, &body.to)?;
    if from.id == to.id {
        return Err(ApiError::bad_request("from and to name the same node"));
    }
    let not_owned: Vec<u16> = slots
        .iter()
        .copied()
        .filter(|&s| map.owner(s) != Some(from_index))
        .collect();
    if !not_owned.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{} does not own slots {}",
            from.addr,
            ranges::format(&not_owned)
        )));
    }
    let transfer = Transfer {
        from: from.id.clone(),
        to: to.id.clone(),
        slots,
    };
    start_plan(state, &map, JobKind::Migrate, vec![transfer], body.dry_run).await
}

/// `POST /rebalance`.
pub async fn rebalance(state: &AdminState, body: Rebalance) -> Result<Reply, ApiError> {
    if !(0.0..=100.0).contains(&body.threshold) {
        return Err(ApiError::bad_request(
            "threshold: must be a percentage, 0 to 100",
        ));
    }
    let map = planning_map(state).await?;
    let mut request = PlanRequest {
        use_empty_masters: body.use_empty_masters,
        threshold: body.threshold,
        ..PlanRequest::default()
    };
    for (name, weight) in &body.weights {
        if !weight.is_finite() || *weight < 0.0 {
            return Err(ApiError::bad_request(format!(
                "weights: {name}: must be a number >= 0"
            )));
        }
        let (_, node) = resolve_node(&map, name)?;
        request.weights.insert(node.id.clone(), *weight);
    }
    let transfers = planner::plan(&plan_nodes(&map), &request).map_err(ApiError::bad_request)?;
    if transfers.is_empty() {
        return Ok(json(
            StatusCode::OK,
            &serde_json::json!({
                "message": format!("the cluster is already balanced within {}%", body.threshold),
                "moves": [],
                "slots_to_move": 0,
            }),
        ));
    }
    start_plan(state, &map, JobKind::Rebalance, transfers, body.dry_run).await
}

/// Shows the plan (dry run) or starts it as a job (202).
pub async fn start_plan(
    state: &AdminState,
    map: &SlotMap,
    kind: JobKind,
    transfers: Vec<Transfer>,
    dry_run: bool,
) -> Result<Reply, ApiError> {
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
    let mut conns = crate::migration::executor::Conns::new(ctx.settings.clone());
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

/// `GET /migrations`.
pub fn list(state: &AdminState) -> Reply {
    let jobs: Vec<_> = state
        .migrations
        .jobs()
        .iter()
        .map(|j| j.to_json())
        .collect();
    json(StatusCode::OK, &serde_json::json!({ "jobs": jobs }))
}

/// `GET /migrations/{id}`.
pub fn get(state: &AdminState, id: &str) -> Result<Reply, ApiError> {
    let job = state
        .migrations
        .job(id)
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    Ok(json(StatusCode::OK, &job.to_json()))
}

/// `POST /migrations/{id}/pause|resume|cancel`.
pub async fn action(state: &AdminState, id: &str, action: &str) -> Result<Reply, ApiError> {
    let job = match action {
        "pause" => state.migrations.pause(id)?,
        "resume" => state.migrations.resume(id).await?,
        "cancel" => state.migrations.cancel(id).await?,
        other => {
            return Err(ApiError::not_found(format!(
                "no action {other:?}; use pause, resume or cancel"
            )))
        }
    };
    Ok(json(StatusCode::OK, &job.to_json()))
}
