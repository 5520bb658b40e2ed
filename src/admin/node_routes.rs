//! `POST /nodes`, `DELETE /nodes/{id}`, `POST /nodes/{id}/drain`: masters joining and
//! leaving, as `redis-cli --cluster add-node|del-node` and a drain.

use super::http::{json, Reply};
use super::lookup::{fresh_map, plan_nodes, planning_map, resolve_node};
use super::plan::start_plan;
use super::state::AdminState;
use crate::migration::job::JobKind;
use crate::migration::planner::{self, PlanRequest};
use crate::migration::{membership, Error};
use hyper::StatusCode;
use serde::Deserialize;

/// Body of `POST /nodes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddNode {
    /// `host:port` of an empty, cluster-enabled redis-server.
    pub addr: String,
}

/// `POST /nodes`: `CLUSTER MEET` a new empty master and wait until everyone knows it (201).
pub async fn add(state: &AdminState, body: AddNode) -> Result<Reply, Error> {
    let map = fresh_map(state).await?;
    let joined = membership::add_node(&state.migrations.ctx, &map, &body.addr).await?;
    Ok(json(
        StatusCode::CREATED,
        &serde_json::json!({ "id": joined.id, "addr": joined.addr }),
    ))
}

/// `DELETE /nodes/{id}`: the node is forgotten by every other and reset (200); 502 with the
/// same body when some node could not be told.
pub async fn delete(state: &AdminState, name: &str) -> Result<Reply, Error> {
    let map = fresh_map(state).await?;
    let removed = membership::remove_node(&state.migrations, &map, name).await?;
    let status = match removed.errors.is_empty() {
        true => StatusCode::OK,
        false => StatusCode::BAD_GATEWAY,
    };
    Ok(json(
        status,
        &serde_json::json!({
            "id": removed.id,
            "addr": removed.addr,
            "forgotten_by": removed.forgotten_by,
            "reset": removed.reset,
            "errors": removed.errors,
            "message": removed.message,
        }),
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
pub async fn drain(state: &AdminState, name: &str, body: Drain) -> Result<Reply, Error> {
    let map = planning_map(state).await?;
    let (index, node) = resolve_node(&map, name)?;
    if map.slots_of(index).is_empty() {
        return Err(Error::Conflict(format!(
            "{} owns no slots; nothing to drain",
            node.addr
        )));
    }
    let mut request = PlanRequest {
        threshold: 0.0,
        ..PlanRequest::default()
    };
    request.weights.insert(node.id.clone(), 0.0);
    let transfers =
        planner::plan(&plan_nodes(&map), &request).map_err(|e| Error::BadRequest(e.to_string()))?;
    start_plan(state, &map, JobKind::Drain, transfers, body.dry_run).await
}
