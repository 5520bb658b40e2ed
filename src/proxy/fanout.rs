//! Commands that touch several slots or every master: split, send in parallel, join.
//!
//! Multi-key commands are split by *slot*, not by node: Redis Cluster answers `CROSSSLOT` to a
//! multi-key command whose keys are in different slots even when one node owns them all. The
//! parts bound for one node go as one pipelined request (see [`super::fanout_batch`]).

use super::fanout_batch::{key_args, send_grouped, split_by_slot, Part};
use crate::cluster::router::{Retry, Router, Target};
use crate::cluster::Snapshot;
use crate::protocol::command::Join;
use crate::protocol::request::encode_command;
use crate::protocol::{reply, scan};
use crate::upstream::Lane;
use bytes::Bytes;
use futures_util::future::join_all;
use std::sync::Arc;

/// A multi-key command to split: its arguments, where its keys are, and how many arguments
/// each key carries (2 for MSET's key and value).
pub struct SplitCommand {
    /// Command name and arguments.
    pub args: Vec<Bytes>,
    /// Argument indices of the keys.
    pub positions: Vec<usize>,
    /// Arguments per key, the key included.
    pub span: usize,
    /// The command writes.
    pub write: bool,
    /// How the per-slot replies are joined.
    pub join: Join,
}

/// Splits a multi-key command by slot and joins the replies as one Redis would have answered.
///
/// A slot in mid-migration answers `TRYAGAIN` to a multi-key command whose keys are partly
/// moved. A read part is split again into single-key commands, which the migrating slot
/// serves (through `ASK` where needed), so the client sees no error. A write part is first
/// retried whole until the slot settles (the proxy's own migration closes a slot within
/// moments), so other clients never see it half applied; only a slot stuck open longer than
/// the retry budget makes it fall back to single-key writes (each idempotent), so a stuck
/// migration never blocks writes.
pub async fn split(router: Arc<Router>, lane: Lane, command: SplitCommand) -> Bytes {
    let (parts, nodes) = {
        let current = router.topology.current();
        let snapshot = current.as_ref();
        let node_of = |slot| {
            snapshot
                .and_then(|s| s.map.owner(slot))
                .unwrap_or(usize::MAX)
        };
        let parts = split_by_slot(
            &command.args,
            &command.positions,
            command.span.max(1),
            node_of,
        );
        let nodes = snapshot.map(|s| s.pools.clone()).unwrap_or_default();
        (parts, nodes)
    };
    let mut replies = send_grouped(&router, lane, command.write, &parts, &nodes).await;
    let unsettled: Vec<usize> = (0..parts.list.len())
        .filter(|&i| replies[i].is_none())
        .collect();
    let resent = join_all(
        unsettled
            .iter()
            .map(|&i| send_part(&router, lane, &command, &parts.list[i], parts.payload(i))),
    );
    for (i, reply) in unsettled.into_iter().zip(resent.await) {
        replies[i] = Some(reply);
    }
    let replies: Vec<Bytes> = replies.into_iter().map(Option::unwrap_or_default).collect();
    if let Some(error) = replies.iter().find(|r| scan::is_error(r)) {
        return error.clone();
    }
    match command.join {
        Join::ArrayByKey => {
            let mut out = vec![reply::null(); command.positions.len()];
            for (part, raw) in parts.list.iter().zip(&replies) {
                let Some(elements) =
                    scan::array_elements(raw).filter(|e| e.len() == part.keys.len())
                else {
                    return unexpected(raw);
                };
                for (&k, element) in part.keys.iter().zip(elements) {
                    out[k] = element;
                }
            }
            reply::array_of_raw(&out)
        }
        other => join_replies(other, &replies),
    }
}

/// Sends one per-slot part; a `TRYAGAIN` (partly migrated slot) makes a read part one command
/// per key at once, and a write part only after waiting for the slot to settle.
async fn send_part(
    router: &Router,
    lane: Lane,
    command: &SplitCommand,
    part: &Part,
    payload: Bytes,
) -> Bytes {
    let target = Target::Slot(part.slot);
    let retry = Retry {
        write: command.write,
        tryagain_is_final: part.keys.len() > 1 && !command.write,
        frames: 1,
    };
    let reply = router.send_call(lane, target, payload, retry).await;
    if scan::classify(&reply) != scan::Redirect::TryAgain || part.keys.len() < 2 {
        return reply;
    }
    let args = &command.args;
    let singles = part.keys.iter().map(|&k| {
        let mut one: Vec<&[u8]> = vec![&args[0]];
        one.extend(
            key_args(args, command.positions[k], command.span.max(1))
                .iter()
                .map(|a| a.as_ref()),
        );
        router.send(lane, target, encode_command(&one), command.write)
    });
    let replies = join_all(singles).await;
    if let Some(error) = replies.iter().find(|r| scan::is_error(r)) {
        return error.clone();
    }
    match command.join {
        Join::ArrayByKey => {
            let elements: Option<Vec<Bytes>> = replies
                .iter()
                .map(|r| scan::array_elements(r).and_then(|mut e| e.pop()))
                .collect();
            match elements {
                Some(elements) => reply::array_of_raw(&elements),
                None => unexpected(&replies[0]),
            }
        }
        other => join_replies(other, &replies),
    }
}

/// Sends the same command to every master and joins the replies.
pub async fn all_masters(
    router: Arc<Router>,
    snapshot: Arc<Snapshot>,
    lane: Lane,
    payload: Bytes,
    join: Join,
) -> Bytes {
    if snapshot.masters().is_empty() {
        return reply::error("ERR slotproxy: no master is known");
    }
    if join == Join::AnyOk {
        return kill(&router, &snapshot, payload).await;
    }
    let replies = join_all(
        snapshot
            .masters()
            .iter()
            .map(|pool| router.send_to_node(pool, lane, payload.clone())),
    )
    .await;
    if let Some(error) = replies.iter().find(|r| scan::is_error(r)) {
        return error.clone();
    }
    join_replies(join, &replies)
}

/// `SCRIPT KILL` / `FUNCTION KILL` on every master, each over a connection of its own: the
/// script to stop was sent over the node's shared connection, and a node reads nothing more
/// from a connection whose script is running, so a kill queued behind it would never arrive.
/// `+OK` if some node stopped a script, else the first node's answer (`NOTBUSY`).
async fn kill(router: &Router, snapshot: &Snapshot, payload: Bytes) -> Bytes {
    let settings = router.topology.settings().clone();
    let timeout = router.request_timeout();
    let replies = join_all(snapshot.masters().iter().map(|pool| {
        let mut conn = crate::upstream::control::ControlConn::new(pool.addr(), settings.clone());
        let payload = payload.clone();
        async move {
            match conn.call_raw(&payload, 1, timeout).await {
                Ok(mut replies) => replies.pop().unwrap_or_default(),
                Err(error) => {
                    router.count_error(&error);
                    error.to_reply()
                }
            }
        }
    }))
    .await;
    match replies.iter().find(|r| &r[..] == b"+OK\r\n") {
        Some(ok) => ok.clone(),
        None => replies.first().cloned().unwrap_or_else(reply::ok),
    }
}

fn join_replies(join: Join, replies: &[Bytes]) -> Bytes {
    match join {
        Join::AllOk => match replies.iter().find(|r| &r[..] != b"+OK\r\n") {
            Some(other) => other.clone(),
            None => reply::ok(),
        },
        Join::SumIntegers => {
            let mut sum: i64 = 0;
            for raw in replies {
                match scan::integer(raw) {
                    Some(n) => sum = sum.saturating_add(n),
                    None => return unexpected(raw),
                }
            }
            reply::integer(sum)
        }
        Join::Concat | Join::ArrayByKey => {
            let mut all = Vec::new();
            for raw in replies {
                match scan::array_elements(raw) {
                    Some(elements) => all.extend(elements),
                    None => return unexpected(raw),
                }
            }
            reply::array_of_raw(&all)
        }
        Join::MinInteger => {
            let mut least: Option<i64> = None;
            for raw in replies {
                match scan::integer(raw) {
                    Some(n) => least = Some(least.map_or(n, |l| l.min(n))),
                    None => return unexpected(raw),
                }
            }
            reply::integer(least.unwrap_or(0))
        }
        Join::Union => {
            let mut seen = std::collections::BTreeSet::new();
            for raw in replies {
                match scan::array_elements(raw) {
                    Some(elements) => seen.extend(elements),
                    None => return unexpected(raw),
                }
            }
            reply::array_of_raw(&seen.into_iter().collect::<Vec<_>>())
        }
        Join::SumPairs => {
            // [name, count, name, count …] from every node, counts added per name, in the
            // order the client asked (the first node's order).
            let mut sums: Vec<(Bytes, i64)> = Vec::new();
            for raw in replies {
                let Some(elements) = scan::array_elements(raw) else {
                    return unexpected(raw);
                };
                for (i, pair) in elements.chunks(2).enumerate() {
                    let [name, count] = pair else {
                        return unexpected(raw);
                    };
                    let count = scan::integer(count).unwrap_or(0);
                    match sums.get_mut(i) {
                        Some((_, sum)) => *sum = sum.saturating_add(count),
                        None => sums.push((name.clone(), count)),
                    }
                }
            }
            let flat: Vec<Bytes> = sums
                .into_iter()
                .flat_map(|(name, sum)| [name, reply::integer(sum)])
                .collect();
            reply::array_of_raw(&flat)
        }
        // From a random master on (`RANDOMKEY` draws from every master's keys, not always
        // the first's; for `SCRIPT LOAD` every master answers the same).
        Join::FirstNonNil | Join::AnyOk => {
            let start = rand::random::<usize>() % replies.len().max(1);
            replies[start..]
                .iter()
                .chain(&replies[..start])
                .find(|r| !reply::is_null(r))
                .cloned()
                .unwrap_or_else(reply::null)
        }
        Join::AllIntegersAnd => {
            let mut all: Option<Vec<i64>> = None;
            for raw in replies {
                let Some(values) = scan::array_elements(raw).and_then(|e| {
                    e.iter()
                        .map(|v| scan::integer(v))
                        .collect::<Option<Vec<i64>>>()
                }) else {
                    return unexpected(raw);
                };
                all = Some(match all {
                    None => values,
                    Some(acc) => acc.iter().zip(&values).map(|(a, b)| (*a).min(*b)).collect(),
                });
            }
            let joined: Vec<Bytes> = all
                .unwrap_or_default()
                .into_iter()
                .map(reply::integer)
                .collect();
            reply::array_of_raw(&joined)
        }
    }
}

fn unexpected(raw: &[u8]) -> Bytes {
    reply::error(&format!(
        "ERR slotproxy: unexpected reply from node: {}",
        String::from_utf8_lossy(&raw[..raw.len().min(64)]).trim()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins() {
        let ok = [reply::ok(), reply::ok()];
        assert_eq!(&join_replies(Join::AllOk, &ok)[..], b"+OK\r\n");
        let ints = [reply::integer(2), reply::integer(3)];
        assert_eq!(&join_replies(Join::SumIntegers, &ints)[..], b":5\r\n");
        let nils = [reply::null(), reply::bulk(Bytes::from_static(b"k"))];
        assert_eq!(&join_replies(Join::FirstNonNil, &nils)[..], b"$1\r\nk\r\n");
    }
}
