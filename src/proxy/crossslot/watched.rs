//! EXEC of a transaction with `WATCH` whose keys (queued or watched) are in several slots.
//!
//! Each master's watches live on a connection of the client's to it ([`crate::proxy::watch`]).
//! The transaction commits on one master C: the master of the watches when they are all on
//! one, else a watched master it writes on. EXEC then
//!
//! 1. checks every other watched master with an empty `MULTI`/`EXEC` there (nil when a watched
//!    key changed), and answers nil, running nothing, if one was touched;
//! 2. runs C's commands in `MULTI`, one script, `EXEC` on C's watching connection, so Redis
//!    checks C's watches atomically with C's writes; nil there means nothing ran anywhere;
//! 3. only then runs the other masters' commands, each master's as one atomic step, as a
//!    transaction across masters without `WATCH` runs them ([`super::txn`]).
//!
//! When the watches are on one master, EXEC is nil exactly when Redis would make it nil: no
//! write happens anywhere unless that master committed with its watches intact. A write to a
//! key watched on another master in the one round trip between step 1 and step 2 is not seen:
//! the transaction then counts as having run just before that write. Writes on other masters
//! (step 3) come after C's, so another client may see C's part before theirs, as for any
//! transaction across masters. A command whose keys span masters but that is the sum of its
//! keys (`DEL`, `UNLINK`, `TOUCH`, `EXISTS`, `MSET`) runs as one part per master, its reply
//! put together as Redis gives it. Any other command whose own keys span masters cannot be
//! ordered after C's commit: EXEC refuses the whole transaction then, running nothing.

use super::plan::{Op, Plan};
use super::run::Engine;
use super::txn::{self as cross_txn};
use crate::protocol::{reply, scan};
use crate::proxy::action::Action;
use crate::proxy::watch::{untouched, unwatch, unwatch_all, Watcher};
use crate::upstream::Lane;
use bytes::Bytes;
use futures_util::future::{join_all, FutureExt};

/// Where each queued command runs: the master of all its keys, `None` for a command without
/// keys, or `Err` when its keys are on several masters.
fn masters_of(engine: &Engine, ops: &[Op]) -> Vec<Result<Option<String>, ()>> {
    ops.iter()
        .map(|op| {
            let mut masters: Vec<String> = op
                .positions
                .iter()
                .filter_map(|&p| op.args.get(p))
                .filter_map(|k| engine.router.owner_addr(Some(crate::cluster::key_slot(k))))
                .collect();
            masters.sort();
            masters.dedup();
            match masters.len() {
                0 => Ok(None),
                1 => Ok(masters.pop()),
                _ => Err(()),
            }
        })
        .collect()
}

/// How the per-master parts of a divided command make its reply.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Merge {
    /// The sum of the parts' integers (`DEL`, `UNLINK`, `TOUCH`, `EXISTS`).
    Sum,
    /// `+OK` (`MSET`).
    Ok,
}

/// The commands that are the sum of their keys: how their parts merge, and how many
/// arguments each key brings (itself, and for `MSET` its value).
fn divisible(op: &Op) -> Option<(Merge, usize)> {
    let name = op.args.first()?;
    match name.to_ascii_lowercase().as_slice() {
        b"del" | b"unlink" | b"touch" | b"exists" => Some((Merge::Sum, 1)),
        b"mset" => Some((Merge::Ok, 2)),
        _ => None,
    }
}

/// Queued commands after dividing those whose keys span masters and that are the sum of
/// their keys (see [`divisible`]): the commands to run, and for each the index of the client's
/// command it is (a part of).
struct Divided {
    ops: Vec<Op>,
    origin: Vec<usize>,
    merges: Vec<Option<Merge>>,
}

fn divide(engine: &Engine, ops: Vec<Op>) -> Divided {
    let homes = masters_of(engine, &ops);
    let mut divided = Divided {
        ops: Vec::with_capacity(ops.len()),
        origin: Vec::with_capacity(ops.len()),
        merges: vec![None; ops.len()],
    };
    for (index, (op, home)) in ops.into_iter().zip(homes).enumerate() {
        let Some((merge, stride)) = divisible(&op).filter(|_| home.is_err()) else {
            divided.ops.push(op);
            divided.origin.push(index);
            continue;
        };
        let mut parts: Vec<(Option<String>, Vec<Bytes>)> = Vec::new();
        for &position in &op.positions {
            let Some(key) = op.args.get(position) else {
                continue;
            };
            let master = engine
                .router
                .owner_addr(Some(crate::cluster::key_slot(key)));
            let end = (position + stride).min(op.args.len());
            let part = match parts.iter_mut().find(|(m, _)| *m == master) {
                Some((_, args)) => args,
                None => {
                    parts.push((master, vec![op.args[0].clone()]));
                    &mut parts.last_mut().expect("just pushed").1
                }
            };
            part.extend(op.args[position..end].iter().cloned());
        }
        divided.merges[index] = Some(merge);
        let name = String::from_utf8_lossy(&op.args[0]).to_ascii_lowercase();
        for (_, args) in parts {
            let positions = (1..args.len()).step_by(stride).collect();
            divided.ops.push(Op::new(&name, args, positions));
            divided.origin.push(index);
        }
    }
    divided
}

impl Divided {
    /// EXEC's array: the replies of the client's commands, a divided one's parts merged.
    fn merge(&self, results: Vec<Bytes>) -> Bytes {
        let mut merged: Vec<Vec<Bytes>> = vec![Vec::new(); self.merges.len()];
        for (&origin, result) in self.origin.iter().zip(results) {
            merged[origin].push(result);
        }
        let replies = merged
            .into_iter()
            .zip(&self.merges)
            .map(
                |(parts, merge)| match (merge, parts.iter().find(|p| scan::is_error(p))) {
                    (_, Some(error)) => error.clone(),
                    (Some(Merge::Sum), None) => {
                        let sum: i64 = parts.iter().filter_map(|p| scan::integer(p)).sum();
                        Bytes::from(format!(":{sum}\r\n"))
                    }
                    (Some(Merge::Ok), None) => reply::ok(),
                    (None, None) => parts.into_iter().next().unwrap_or_default(),
                },
            )
            .collect();
        cross_txn::array_of(replies)
    }
}

/// EXEC of `ops` with `watchers` (at least one) across slots (see the module doc).
pub fn exec(engine: &Engine, lane: Lane, ops: Vec<Op>, watchers: Vec<Watcher>) -> Action {
    let divided = divide(engine, ops);
    let homes = masters_of(engine, &divided.ops);
    let mut writers: Vec<String> = homes
        .iter()
        .filter_map(|h| h.clone().ok().flatten())
        .collect();
    writers.sort();
    writers.dedup();
    let spans = homes.iter().any(Result::is_err);
    let engine = engine.clone();
    if spans {
        engine.metrics.count_cross_slot("refused");
        let error = reply::error(
            "EXECABORT slotproxy: this transaction WATCHes keys and has a command whose keys are on more than one master; its commit cannot be all-or-nothing, so nothing was run",
        );
        return Action::Exclusive(
            async move {
                unwatch_all(&engine.router, &watchers).await;
                error
            }
            .boxed(),
        );
    }
    let mut watched: Vec<&str> = watchers.iter().map(|w| w.node.as_str()).collect();
    watched.sort_unstable();
    watched.dedup();
    let commit = match watched.as_slice() {
        [one] => Some(one.to_string()),
        _ => writers
            .iter()
            .find(|w| watched.contains(&w.as_str()))
            .cloned(),
    };
    Action::Exclusive(
        async move {
            match commit_on(&engine, lane, &divided.ops, homes, watchers, commit).await {
                Ok(results) => divided.merge(results),
                Err(reply) => reply,
            }
        }
        .boxed(),
    )
}

/// Steps 1–3 of the module doc, committing on `commit` (`None`: the transaction writes on
/// no watched master, so only the checks guard it): the replies of `ops`, or EXEC's whole
/// reply when nothing ran (nil, or an error).
async fn commit_on(
    engine: &Engine,
    lane: Lane,
    ops: &[Op],
    homes: Vec<Result<Option<String>, ()>>,
    watchers: Vec<Watcher>,
    commit: Option<String>,
) -> Result<Vec<Bytes>, Bytes> {
    let router = &engine.router;
    let (here, elsewhere): (Vec<Watcher>, Vec<Watcher>) = watchers
        .into_iter()
        .partition(|w| Some(&w.node) == commit.as_ref());
    let checks = join_all(elsewhere.iter().map(|w| untouched(router, w))).await;
    if checks.iter().any(|ok| !ok) {
        unwatch_all(router, &here).await;
        return Err(reply::null_array_for(lane.resp3));
    }
    // Commands of the commit master (and, when it has some, those without keys) run there,
    // the others after.
    let on_commit = |home: &Result<Option<String>, ()>| matches!(home, Ok(Some(home)) if Some(home) == commit.as_ref());
    let commit_has_keys = !here.is_empty() && homes.iter().any(on_commit);
    let (mine, rest): (Vec<usize>, Vec<usize>) = (0..ops.len()).partition(|&i| match &homes[i] {
        Ok(None) => commit_has_keys,
        home => on_commit(home),
    });
    let mut results: Vec<Bytes> = vec![Bytes::new(); ops.len()];
    if let Some(watcher) = here.into_iter().next() {
        let committed = if mine.is_empty() {
            untouched(router, &watcher).await
        } else {
            let plan = Plan::new(mine.iter().map(|&i| ops[i].clone()).collect());
            let reply = commit_watched(engine, lane, &watcher, &plan).await;
            if reply::is_null(&reply) || scan::is_error(&reply) {
                return Err(reply);
            }
            let Some(elements) = scan::array_elements(&reply).filter(|e| e.len() == mine.len())
            else {
                return Err(reply);
            };
            for (&index, element) in mine.iter().zip(elements) {
                results[index] = element;
            }
            true
        };
        if !committed {
            return Err(reply::null_array_for(lane.resp3));
        }
    }
    if !rest.is_empty() {
        let rest_ops: Vec<Op> = rest.iter().map(|&i| ops[i].clone()).collect();
        let replies = cross_txn::replies_in_steps(engine, lane, Plan::new(rest_ops)).await?;
        for (&index, reply) in rest.iter().zip(replies) {
            results[index] = reply;
        }
    }
    Ok(results)
}

/// `plan` on the commit master's watching connection (nil when a watch fired there).
async fn commit_watched(engine: &Engine, lane: Lane, watcher: &Watcher, plan: &Plan) -> Bytes {
    let router = &engine.router;
    let mut pinned = watcher.pinned.lock().await;
    let Some(addr) = pinned.addr().map(str::to_string) else {
        return reply::null_array_for(lane.resp3);
    };
    if !watcher.take_health(&pinned) {
        unwatch(router, &mut pinned, &watcher.health).await;
        return reply::null_array_for(lane.resp3);
    }
    cross_txn::exec_watched(engine, &mut pinned, &addr, lane.resp3, plan).await
}
