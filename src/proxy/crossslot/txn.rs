//! `MULTI … EXEC` whose keys (queued commands and watched keys) are in several slots.
//!
//! - All keys on one master, no `WATCH`: the queued commands run in one `exec.lua` call there,
//!   in order, each with Redis' own reply (an error in one does not stop the others), as one
//!   atomic step; the script's array is EXEC's reply.
//! - With `WATCH` on that master: `MULTI`, the script, `EXEC` on the client's own connection,
//!   where the watches live, so a touched key makes EXEC answer nil as in Redis. A slot that
//!   moved meanwhile counts as touched.
//! - Across masters, `compat.cross_node = "split"`, no `WATCH`: the commands are taken in
//!   order; consecutive commands of single masters form a step in which each master runs its
//!   own commands as one script (in parallel), and a command that itself spans masters is a
//!   step of its own (the cross-node steps of [`super::run`]). Each master's part is atomic;
//!   the replies are put together in the client's order. With `WATCH`: [`super::watched`].
//!
//! Blocking commands run as their non-blocking forms, as Redis runs them inside MULTI.

use super::blocking::NonBlocking;
use super::plan::{Op, Plan};
use super::run::{fix_nulls, one_node_call, placement, Engine, Placement};
use super::scripts::{must_retry, EXEC};
use crate::config::CrossNode;
use crate::protocol::{reply, scan};
use crate::proxy::action::Action;
use crate::proxy::pinned::Pinned;
use crate::upstream::Lane;
use bytes::{Bytes, BytesMut};
use futures_util::future::{join_all, FutureExt};
use std::collections::BTreeMap;

/// Redis' reply to EXEC after a queue-time error.
pub const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";

/// A queued command as the transaction's script runs it: a blocking command as its
/// non-blocking form, `XREAD`/`XREADGROUP` without `BLOCK`.
pub fn op_of(name: &str, args: Vec<Bytes>, positions: Vec<usize>) -> Op {
    if let Some(call) = NonBlocking::of(name, &args) {
        return call.op();
    }
    if matches!(name, "xread" | "xreadgroup") {
        let block = args
            .iter()
            .take(positions.first().copied().unwrap_or(0))
            .position(|a| a.eq_ignore_ascii_case(b"block"));
        if let Some(at) = block.filter(|&at| at > 0 && at + 1 < args.len()) {
            let mut args = args;
            args.drain(at..at + 2);
            let positions = positions
                .into_iter()
                .map(|p| if p > at { p - 2 } else { p })
                .collect();
            return Op::new(name, args, positions);
        }
    }
    Op::new(name, args, positions)
}

/// EXEC without `WATCH` of `ops` whose keys are in several slots.
pub fn exec(engine: &Engine, lane: Lane, ops: Vec<Op>) -> Action {
    let plan = Plan::new(ops);
    let engine = engine.clone();
    match placement(&engine.router, &plan) {
        Placement::OneNode(_) | Placement::Unserved => {
            Action::later(async move { engine.execute(lane, &plan, false).await })
        }
        Placement::Nodes if engine.settings.cross_node == CrossNode::Refuse => {
            engine.metrics.count_cross_slot("refused");
            Action::now(reply::error(EXECABORT))
        }
        Placement::Nodes => Action::Exclusive(
            async move {
                match replies_in_steps(&engine, lane, plan).await {
                    Ok(replies) => array_of(replies),
                    Err(error) => error,
                }
            }
            .boxed(),
        ),
    }
}

/// The replies of a transaction across masters, run step by step (see the module doc), or
/// the error that stopped it before anything ran.
pub async fn replies_in_steps(
    engine: &Engine,
    lane: Lane,
    plan: Plan,
) -> Result<Vec<Bytes>, Bytes> {
    let Some(snapshot) = engine.router.topology.snapshot() else {
        return Err(reply::error("CLUSTERDOWN Hash slot not served"));
    };
    let map = &snapshot.map;
    let mut results: Vec<Bytes> = vec![Bytes::new(); plan.ops.len()];
    // Steps: (node → the indices of its commands) or one command across masters.
    let mut steps: Vec<BTreeMap<Option<usize>, Vec<usize>>> = vec![BTreeMap::new()];
    let mut last_node = None;
    for (index, op) in plan.ops.iter().enumerate() {
        let mut nodes: Vec<Option<usize>> = op
            .positions
            .iter()
            .filter_map(|&p| op.args.get(p))
            .map(|k| map.owner(crate::cluster::key_slot(k)))
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        let node = match nodes.as_slice() {
            [] => last_node,
            [one] => *one,
            _ => {
                steps.push(BTreeMap::from([(None, vec![index])]));
                steps.push(BTreeMap::new());
                continue;
            }
        };
        last_node = node;
        if let Some(step) = steps.last_mut() {
            step.entry(node).or_default().push(index);
        }
    }
    for step in steps.into_iter().filter(|s| !s.is_empty()) {
        let runs = step.values().map(|indices| {
            let ops: Vec<Op> = indices.iter().map(|&i| plan.ops[i].clone()).collect();
            let part = Plan::new(ops);
            async move { (indices, engine.execute(lane, &part, false).await) }
        });
        for (indices, reply) in join_all(runs).await {
            let elements = match scan::is_error(&reply) {
                true => None,
                false => scan::array_elements(&reply).filter(|e| e.len() == indices.len()),
            };
            for (n, &index) in indices.iter().enumerate() {
                results[index] = match &elements {
                    Some(elements) => elements[n].clone(),
                    None => reply.clone(),
                };
            }
        }
    }
    Ok(results)
}

/// EXEC's array of `results`.
pub fn array_of(results: Vec<Bytes>) -> Bytes {
    let mut out = BytesMut::new();
    out.extend_from_slice(format!("*{}\r\n", results.len()).as_bytes());
    for result in results {
        out.extend_from_slice(&result);
    }
    out.freeze()
}

/// EXEC with `WATCH` on the pinned connection to `addr`, whose node owns every key of
/// `plan`: `MULTI`, the script, `EXEC`. Nil when a watched key was touched (or a key's
/// slot is on the move: moving keys touches them).
pub async fn exec_watched(
    engine: &Engine,
    pinned: &mut Pinned,
    addr: &str,
    resp3: bool,
    plan: &Plan,
) -> Bytes {
    let router = &engine.router;
    if !matches!(placement(router, plan), Placement::OneNode(_))
        || router
            .owner_addr(plan.keys.first().map(|k| k.slot))
            .as_deref()
            != Some(addr)
    {
        return reply::null_array_for(resp3);
    }
    let Some((_, argv)) = one_node_call(router, &engine.settings, plan, resp3, false) else {
        return reply::null_array_for(resp3);
    };
    let mut block = BytesMut::new();
    block.extend_from_slice(b"*1\r\n$5\r\nMULTI\r\n");
    block.extend_from_slice(&EXEC.call(&argv, true));
    block.extend_from_slice(b"*1\r\n$4\r\nEXEC\r\n");
    let result = pinned
        .call(
            router,
            (addr, resp3),
            &block,
            3,
            false,
            router.request_timeout(),
        )
        .await;
    let replies = match result {
        Ok(replies) => replies,
        Err(error) => return error.to_reply(),
    };
    let Some(exec) = replies.last() else {
        return reply::null_array_for(resp3);
    };
    if reply::is_null(exec) || scan::is_error(exec) {
        return match scan::is_error(exec) {
            true => exec.clone(),
            false => reply::null_array_for(resp3),
        };
    }
    let inner = scan::array_elements(exec)
        .and_then(|e| e.into_iter().next())
        .unwrap_or_default();
    if must_retry(&inner) {
        router.topology.request_refresh();
        return reply::null_array_for(resp3);
    }
    engine.metrics.count_cross_slot("same_node");
    fix_nulls(inner, plan, false, resp3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::request::words as args;

    #[test]
    fn queued_commands_lose_their_blocking() {
        let op = op_of(
            "xread",
            args("XREAD COUNT 2 BLOCK 10 STREAMS a b 0 0"),
            vec![6, 7],
        );
        assert_eq!(op.args, args("XREAD COUNT 2 STREAMS a b 0 0"));
        assert_eq!(op.positions, [4, 5]);
        let op = op_of("blpop", args("BLPOP a b 0"), vec![1, 2]);
        assert_eq!(op.args, args("LMPOP 2 a b LEFT"));
        let op = op_of("get", args("GET a"), vec![1]);
        assert_eq!(op.args, args("GET a"));
    }
}
