//! `POST /call`: one command on every master, replica or node, answers per node, like
//! `redis-cli --cluster call`.

use super::http::{json, Reply};
use super::lookup::fresh_map;
use super::state::AdminState;
use crate::migration::context::Conns;
use crate::migration::Error;
use crate::protocol::scan;
use bytes::Bytes;
use hyper::StatusCode;
use serde::Deserialize;

/// Which nodes `POST /call` reaches.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Nodes {
    /// Every master (the default).
    #[default]
    Masters,
    /// Every replica.
    Replicas,
    /// Every node.
    All,
}

/// Body of `POST /call`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Call {
    /// The command and its arguments.
    pub command: Vec<String>,
    /// Where it runs.
    #[serde(default)]
    pub nodes: Nodes,
}

/// Commands that would fight the proxy's own management of the cluster.
fn refused(command: &[String]) -> Option<String> {
    let name = command.first()?.to_uppercase();
    let sub = command.get(1).map(|s| s.to_uppercase()).unwrap_or_default();
    let cluster_change = [
        "SETSLOT",
        "ADDSLOTS",
        "ADDSLOTSRANGE",
        "DELSLOTS",
        "DELSLOTSRANGE",
        "FLUSHSLOTS",
        "FORGET",
        "MEET",
        "RESET",
        "REPLICATE",
        "FAILOVER",
        "SET-CONFIG-EPOCH",
        "BUMPEPOCH",
    ];
    match name.as_str() {
        "CLUSTER" if cluster_change.contains(&sub.as_str()) => Some(format!(
            "CLUSTER {sub} changes slot ownership or membership, which the proxy manages: use its routes (/migrations, /rebalance, /nodes)"
        )),
        "MIGRATE" => Some("MIGRATE moves keys behind the proxy's back: use POST /migrations".into()),
        "SHUTDOWN" => Some("SHUTDOWN stops nodes: stop them with their own tools".into()),
        _ => None,
    }
}

/// A RESP reply as JSON: strings, numbers, arrays, `null`, and `{"error": …}`.
pub fn to_json(raw: &Bytes) -> serde_json::Value {
    use serde_json::Value;
    if crate::protocol::reply::is_null(raw) {
        return Value::Null;
    }
    match raw.first() {
        Some(b':') => scan::integer(raw).map_or(Value::Null, Value::from),
        Some(b'-') => serde_json::json!({ "error": crate::upstream::control::error_text(raw) }),
        Some(b'*') => Value::Array(
            scan::array_elements(raw)
                .unwrap_or_default()
                .iter()
                .map(to_json)
                .collect(),
        ),
        _ => scan::string(raw)
            .map(|s| Value::String(String::from_utf8_lossy(s).into_owned()))
            .unwrap_or(Value::Null),
    }
}

/// `POST /call`.
pub async fn call(state: &AdminState, body: Call) -> Result<Reply, Error> {
    if body.command.is_empty() {
        return Err(Error::BadRequest(
            "command: give the command and its arguments".into(),
        ));
    }
    if let Some(why) = refused(&body.command) {
        return Err(Error::BadRequest(format!("command: {why}")));
    }
    let map = fresh_map(state).await?;
    let ctx = &state.migrations.ctx;
    let mut conns = Conns::new(ctx.settings.clone());
    let masters: Vec<String> = map.nodes.iter().map(|n| n.addr.clone()).collect();
    let mut targets: Vec<(String, &'static str)> = Vec::new();
    if body.nodes != Nodes::Replicas {
        targets.extend(masters.iter().map(|a| (a.clone(), "master")));
    }
    if body.nodes != Nodes::Masters {
        let first = masters
            .first()
            .ok_or_else(|| Error::Unavailable("no master known".into()))?;
        let (_, lines) = ctx
            .node_view(&mut conns, first)
            .await
            .map_err(|e| Error::Unavailable(format!("{first}: {e}")))?;
        targets.extend(
            lines
                .iter()
                .filter(|l| !l.is_master() && !l.is_unhealthy())
                .map(|l| (l.addr.clone(), "replica")),
        );
    }
    let args: Vec<&[u8]> = body.command.iter().map(|a| a.as_bytes()).collect();
    let mut answers = Vec::new();
    for (addr, role) in &targets {
        let reply = ctx.call(&mut conns, addr, &args, ctx.call_timeout).await;
        answers.push(match reply {
            Ok(Ok(raw)) => {
                serde_json::json!({ "addr": addr, "role": role, "reply": to_json(&raw) })
            }
            Ok(Err(text)) => serde_json::json!({ "addr": addr, "role": role, "error": text }),
            Err(e) => serde_json::json!({ "addr": addr, "role": role, "error": e.to_string() }),
        });
    }
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "command": body.command, "nodes": answers }),
    ))
}
