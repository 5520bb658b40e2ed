//! Running a plan: on one master, one `exec.lua` call, atomic there; across masters (with
//! `compat.cross_node = "split"`), three steps: every other master's keys are read
//! (`dump.lua`), the commands run where the first key lives on copies of them (`exec.lua`),
//! and what they changed is written back on each master (`apply.lua`), each step atomic on
//! its master but not isolated across masters.
//!
//! A key not served where the map says (a slot in migration, a map out of date) makes a
//! script answer `SLOTPROXY-RETRY` before it writes anything; the plan is then run again
//! from the start after the router's backoff, on a fresh map.

use super::plan::{Access, Call, Plan};
use super::scripts::{self, must_retry, APPLY, DUMP, EXEC};
use crate::cluster::router::Router;
use crate::config::CrossNode;
use crate::metrics::Metrics;
use crate::protocol::{reply, scan};
use crate::upstream::Lane;
use bytes::{Bytes, BytesMut};
use futures_util::future::join_all;
use std::collections::BTreeMap;
use std::sync::Arc;

/// `[compat]` settings and the proxy's temporary-key token.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `compat.cross_node`.
    pub cross_node: CrossNode,
    /// `compat.max_copy_bytes`.
    pub max_copy_bytes: usize,
    /// Part of every temporary key name, new at every start.
    pub token: String,
}

/// What one attempt came to.
enum Attempt {
    /// The client's reply.
    Done(Bytes),
    /// Not now: run again after a pause.
    Retry(Bytes),
}

/// Where a plan's keys live.
pub enum Placement {
    /// On one master (its index in the map).
    OneNode(usize),
    /// On several.
    Nodes,
    /// Some slot has no owner now.
    Unserved,
}

/// Where the keys of `plan` live in the current map.
pub fn placement(router: &Router, plan: &Plan) -> Placement {
    let Some(snapshot) = router.topology.snapshot() else {
        return Placement::Unserved;
    };
    let owners = plan.owners(&snapshot.map);
    if owners.iter().any(Option::is_none) {
        return Placement::Unserved;
    }
    let first = owners.first().copied().flatten();
    match first {
        Some(node) if owners.iter().all(|o| *o == Some(node)) => Placement::OneNode(node),
        Some(_) => Placement::Nodes,
        None => Placement::OneNode(0),
    }
}

/// Runs `plan` for a client on `lane` and returns its reply (with `single`, the one
/// command's; otherwise the array of every command's, as EXEC gives it).
pub async fn execute(
    router: &Router,
    metrics: &Metrics,
    settings: &Settings,
    lane: Lane,
    plan: &Plan,
    single: bool,
) -> Bytes {
    let mut last = Bytes::new();
    for attempt in 0..=router.max_retries() {
        if attempt > 0 {
            router.topology.request_refresh();
            tokio::time::sleep(router.backoff(attempt - 1)).await;
        }
        let outcome = match placement(router, plan) {
            Placement::Unserved => Attempt::Retry(reply::error("CLUSTERDOWN Hash slot not served")),
            Placement::OneNode(_) => {
                let outcome = one_node(router, settings, lane, plan, single).await;
                if matches!(outcome, Attempt::Done(_)) {
                    metrics.count_cross_slot("same_node");
                }
                outcome
            }
            Placement::Nodes if settings.cross_node == CrossNode::Refuse => {
                metrics.count_cross_slot("refused");
                return reply::crossslot();
            }
            Placement::Nodes => {
                let outcome = across_nodes(router, settings, lane, plan, single).await;
                if matches!(outcome, Attempt::Done(_)) {
                    metrics.count_cross_slot("split");
                }
                outcome
            }
        };
        match outcome {
            Attempt::Done(reply) => return fix_nulls(reply, plan, single, lane.resp3),
            Attempt::Retry(reply) => last = reply,
        }
    }
    if must_retry(&last) {
        let why = String::from_utf8_lossy(&last["-SLOTPROXY-RETRY ".len().min(last.len())..]);
        return reply::error(&format!(
            "TRYAGAIN slotproxy: keys of this command are in a slot being moved; nothing was run ({})",
            why.trim()
        ));
    }
    last
}

/// The home slot on `node` (see [`Plan::home`]).
fn home(plan: &Plan, owners: &[Option<usize>], node: usize) -> u16 {
    plan.home(|i| owners.get(i).copied().flatten() == Some(node))
}

/// The home slot and `exec.lua`'s ARGV for `plan` on the one node that owns its keys (by
/// the current map); `None` without a map.
pub fn one_node_call(
    router: &Router,
    settings: &Settings,
    plan: &Plan,
    resp3: bool,
    single: bool,
) -> Option<(u16, Vec<Bytes>)> {
    let snapshot = router.topology.snapshot()?;
    let owners = plan.owners(&snapshot.map);
    let node = owners.first().copied().flatten().unwrap_or(0);
    let home = home(plan, &owners, node);
    let access: Vec<Access> = plan
        .keys
        .iter()
        .enumerate()
        .map(|(i, k)| match k.slot != home && plan.needs_copy(i) {
            true => Access::Copy,
            false => Access::Direct,
        })
        .collect();
    let argv = plan.exec_argv(&Call {
        access: &access,
        home,
        resp3,
        max_copy_bytes: settings.max_copy_bytes,
        export: false,
        single,
        token: &settings.token,
    });
    Some((home, argv))
}

async fn one_node(
    router: &Router,
    settings: &Settings,
    lane: Lane,
    plan: &Plan,
    single: bool,
) -> Attempt {
    let Some((home, argv)) = one_node_call(router, settings, plan, lane.resp3, single) else {
        return Attempt::Retry(reply::error("CLUSTERDOWN Hash slot not served"));
    };
    let reply = scripts::run(router, lane, home, &EXEC, &argv).await;
    match must_retry(&reply) {
        true => Attempt::Retry(reply),
        false => Attempt::Done(reply),
    }
}

async fn across_nodes(
    router: &Router,
    settings: &Settings,
    lane: Lane,
    plan: &Plan,
    single: bool,
) -> Attempt {
    let Some(snapshot) = router.topology.snapshot() else {
        return Attempt::Retry(reply::error("CLUSTERDOWN Hash slot not served"));
    };
    let owners = plan.owners(&snapshot.map);
    let Some(exec_node) = owners.first().copied().flatten() else {
        return Attempt::Retry(reply::error("CLUSTERDOWN Hash slot not served"));
    };
    let control = Lane {
        resp3: false,
        identity: crate::upstream::identity::PROXY,
        ..lane
    };
    // 1. Every other master's keys, read at once.
    let mut remote: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (index, owner) in owners.iter().enumerate() {
        match owner {
            Some(node) if *node != exec_node => remote.entry(*node).or_default().push(index),
            _ => {}
        }
    }
    let reads = remote.values().map(|indices| {
        let mut argv = vec![Bytes::from(settings.max_copy_bytes.to_string())];
        argv.extend(indices.iter().map(|&i| plan.keys[i].name.clone()));
        let slot = plan.keys[indices[0]].slot;
        async move { scripts::run(router, control, slot, &DUMP, &argv).await }
    });
    let mut access: Vec<Access> = vec![Access::Direct; plan.keys.len()];
    for (indices, reply) in remote.values().zip(join_all(reads).await) {
        if must_retry(&reply) {
            return Attempt::Retry(reply);
        }
        if scan::is_error(&reply) {
            return Attempt::Done(reply);
        }
        let Some(pairs) = scan::array_elements(&reply) else {
            return Attempt::Done(odd("dump.lua", &reply));
        };
        for (&index, pair) in indices.iter().zip(pairs) {
            access[index] = Access::Imported(dump_of(&pair));
        }
    }
    let home = home(plan, &owners, exec_node);
    for (index, key) in plan.keys.iter().enumerate() {
        if owners[index] == Some(exec_node) && key.slot != home && plan.needs_copy(index) {
            access[index] = Access::Copy;
        }
    }
    // 2. The commands, where the first key lives.
    let argv = plan.exec_argv(&Call {
        access: &access,
        home,
        resp3: lane.resp3,
        max_copy_bytes: settings.max_copy_bytes,
        export: true,
        single,
        token: &settings.token,
    });
    let reply = scripts::run(router, lane, home, &EXEC, &argv).await;
    if must_retry(&reply) {
        return Attempt::Retry(reply);
    }
    if scan::is_error(&reply) {
        return Attempt::Done(reply);
    }
    let parts = scan::array_elements(&reply).unwrap_or_default();
    let [out, exports] = parts.as_slice() else {
        return Attempt::Done(odd("exec.lua", &reply));
    };
    let exports = scan::array_elements(exports).unwrap_or_default();
    let imported = access
        .iter()
        .enumerate()
        .filter(|(_, a)| matches!(a, Access::Imported(_)))
        .map(|(i, _)| i);
    let mut writes: Vec<(usize, Option<(Bytes, u64)>)> = Vec::new();
    for (index, export) in imported.zip(exports) {
        if scan::integer(&export) == Some(0) {
            continue; // unchanged
        }
        writes.push((index, dump_of(&export)));
    }
    // 3. What changed, written back on each master.
    if let Err(error) = apply(router, control, plan, writes).await {
        return Attempt::Done(error);
    }
    Attempt::Done(out.clone())
}

/// Writes changed keys back to their masters, each master's at once; retries while a key is
/// not served where the map says.
async fn apply(
    router: &Router,
    lane: Lane,
    plan: &Plan,
    mut writes: Vec<(usize, Option<(Bytes, u64)>)>,
) -> Result<(), Bytes> {
    let mut attempt = 0;
    while !writes.is_empty() {
        let Some(snapshot) = router.topology.snapshot() else {
            return Err(reply::error("CLUSTERDOWN Hash slot not served"));
        };
        let mut by_node: BTreeMap<Option<usize>, Vec<usize>> = BTreeMap::new();
        for (n, (index, _)) in writes.iter().enumerate() {
            by_node
                .entry(snapshot.map.owner(plan.keys[*index].slot))
                .or_default()
                .push(n);
        }
        let calls = by_node.values().map(|members| {
            let mut argv = Vec::with_capacity(members.len() * 3);
            for &n in members {
                let (index, value) = &writes[n];
                argv.push(plan.keys[*index].name.clone());
                match value {
                    Some((dump, expire)) => {
                        argv.push(dump.clone());
                        argv.push(Bytes::from(expire.to_string()));
                    }
                    None => {
                        argv.push(Bytes::new());
                        argv.push(Bytes::from_static(b"0"));
                    }
                }
            }
            let slot = plan.keys[writes[members[0]].0].slot;
            async move { scripts::run(router, lane, slot, &APPLY, &argv).await }
        });
        let replies = join_all(calls).await;
        let mut left = Vec::new();
        let mut last = Bytes::new();
        for (members, reply) in by_node.values().zip(replies) {
            if must_retry(&reply) || scan::is_error(&reply) {
                left.extend(members.iter().copied());
                last = reply;
            }
        }
        if left.is_empty() {
            return Ok(());
        }
        attempt += 1;
        if attempt > router.max_retries() {
            return Err(reply::error(&format!(
                "ERR slotproxy: the command ran, but {} of its changed keys on other masters could not be written back: {}",
                left.len(),
                String::from_utf8_lossy(&last).trim()
            )));
        }
        let keep: Vec<_> = left.into_iter().map(|n| writes[n].clone()).collect();
        writes = keep;
        router.topology.request_refresh();
        tokio::time::sleep(router.backoff(attempt - 1)).await;
    }
    Ok(())
}

/// A `{dump, expire}` pair (or a null: no key) as a script returns it.
fn dump_of(raw: &Bytes) -> Option<(Bytes, u64)> {
    let pair = scan::array_elements(raw)?;
    let dump = scan::string(pair.first()?)?;
    let expire = scan::integer(pair.get(1)?).unwrap_or(0).max(0) as u64;
    Some((Bytes::copy_from_slice(dump), expire))
}

fn odd(script: &str, reply: &[u8]) -> Bytes {
    reply::error(&format!(
        "ERR slotproxy: unexpected reply from {script}: {}",
        String::from_utf8_lossy(&reply[..reply.len().min(80)])
    ))
}

/// What a script's reply cannot say puts right, for the one reply or each of an array's:
/// RESP2's "nothing" of `BLPOP`, `LMPOP`, `XREAD` … is `*-1` (a script returns `$-1`), and
/// RESP3 sets and maps come back as arrays (see [`super::plan::Op::resp3_kind`]).
pub fn fix_nulls(reply: Bytes, plan: &Plan, single: bool, resp3: bool) -> Bytes {
    let needed = plan
        .ops
        .iter()
        .any(|op| (!resp3 && op.null_array) || (resp3 && op.resp3_kind.is_some()));
    if !needed {
        return reply;
    }
    if single {
        return match plan.ops.first() {
            Some(op) => fix_one(reply, op, resp3),
            None => reply,
        };
    }
    let Some(elements) = scan::array_elements(&reply) else {
        return reply;
    };
    let mut out = BytesMut::with_capacity(reply.len() + 8);
    out.extend_from_slice(format!("*{}\r\n", elements.len()).as_bytes());
    for (element, op) in elements.into_iter().zip(&plan.ops) {
        out.extend_from_slice(&fix_one(element, op, resp3));
    }
    out.freeze()
}

/// [`fix_nulls`] for one command's reply.
fn fix_one(reply: Bytes, op: &super::plan::Op, resp3: bool) -> Bytes {
    if !resp3 {
        return match op.null_array && &reply[..] == b"$-1\r\n" {
            true => Bytes::from_static(b"*-1\r\n"),
            false => reply,
        };
    }
    let (Some(kind), Some(b'*')) = (op.resp3_kind, reply.first()) else {
        return reply;
    };
    let Some(end) = reply.iter().position(|&b| b == b'\r') else {
        return reply;
    };
    let Some(n) = std::str::from_utf8(&reply[1..end])
        .ok()
        .and_then(|t| t.parse::<usize>().ok())
    else {
        return reply;
    };
    let n = if kind == b'%' { n / 2 } else { n };
    let mut out = BytesMut::with_capacity(reply.len());
    out.extend_from_slice(format!("{}{n}", char::from(kind)).as_bytes());
    out.extend_from_slice(&reply[end..]);
    out.freeze()
}

/// Shared handles a cross-slot future needs.
#[derive(Debug, Clone)]
pub struct Engine {
    /// Routing.
    pub router: Arc<Router>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Settings.
    pub settings: Arc<Settings>,
}

impl Engine {
    /// [`execute`] with these handles.
    pub async fn execute(&self, lane: Lane, plan: &Plan, single: bool) -> Bytes {
        execute(
            &self.router,
            &self.metrics,
            &self.settings,
            lane,
            plan,
            single,
        )
        .await
    }
}
