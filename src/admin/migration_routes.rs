//! `POST /migrations`, `POST /rebalance`, `GET /migrations[/{id}]`,
//! `POST /migrations/{id}/pause|resume|cancel`.

use super::http::{json, Reply};
use super::lookup::{plan_nodes, planning_map, resolve_node};
use super::plan::start_plan;
use super::state::AdminState;
use crate::migration::job::JobKind;
use crate::migration::planner::{self, PlanRequest, Transfer};
use crate::migration::{ranges, Error};
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
pub async fn create(state: &AdminState, body: CreateMigration) -> Result<Reply, Error> {
    let map = planning_map(state).await?;
    let (from_index, from) = resolve_node(&map, &body.from)?;
    let slots = match (&body.slots, body.count) {
        (Some(_), Some(_)) => {
            return Err(Error::BadRequest(
                "give either slots or count, not both".into(),
            ))
        }
        (None, None) => {
            return Err(Error::BadRequest(
                "slots: no slot given (or give count)".into(),
            ))
        }
        (None, Some(0)) => return Err(Error::BadRequest("count: must be at least 1".into())),
        (None, Some(count)) => {
            let owned = map.slots_of(from_index);
            if owned.len() < count {
                return Err(Error::BadRequest(format!(
                    "count: {} owns only {} slots",
                    from.addr,
                    owned.len()
                )));
            }
            owned[..count].to_vec()
        }
        (Some(SlotList::Text(t)), None) => {
            ranges::parse(t).map_err(|e| Error::BadRequest(format!("slots: {e}")))?
        }
        (Some(SlotList::Numbers(n)), None) => {
            let text = n
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(",");
            ranges::parse(&text).map_err(|e| Error::BadRequest(format!("slots: {e}")))?
        }
    };
    if slots.is_empty() {
        return Err(Error::BadRequest("slots: no slot given".into()));
    }
    let (_, to) = resolve_node(&map, &body.to)?;
    if from.id == to.id {
        return Err(Error::BadRequest("from and to name the same node".into()));
    }
    let not_owned: Vec<u16> = slots
        .iter()
        .copied()
        .filter(|&s| map.owner(s) != Some(from_index))
        .collect();
    if !not_owned.is_empty() {
        return Err(Error::BadRequest(format!(
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
pub async fn rebalance(state: &AdminState, body: Rebalance) -> Result<Reply, Error> {
    if !(0.0..=100.0).contains(&body.threshold) {
        return Err(Error::BadRequest(
            "threshold: must be a percentage, 0 to 100".into(),
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
            return Err(Error::BadRequest(format!(
                "weights: {name}: must be a number >= 0"
            )));
        }
        let (_, node) = resolve_node(&map, name)?;
        request.weights.insert(node.id.clone(), *weight);
    }
    let transfers =
        planner::plan(&plan_nodes(&map), &request).map_err(|e| Error::BadRequest(e.to_string()))?;
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
pub fn get(state: &AdminState, id: &str) -> Result<Reply, Error> {
    let job = state
        .migrations
        .job(id)
        .ok_or_else(|| Error::NotFound(format!("no job {id}")))?;
    Ok(json(StatusCode::OK, &job.to_json()))
}

/// `POST /migrations/{id}/pause|resume|cancel`.
pub async fn action(state: &AdminState, id: &str, action: &str) -> Result<Reply, Error> {
    let job = match action {
        "pause" => state.migrations.pause(id)?,
        "resume" => state.migrations.resume(id).await?,
        "cancel" => state.migrations.cancel(id).await?,
        other => {
            return Err(Error::NotFound(format!(
                "no action {other:?}; use pause, resume or cancel"
            )))
        }
    };
    Ok(json(StatusCode::OK, &job.to_json()))
}
