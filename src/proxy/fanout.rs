//! Commands that touch several slots or every master: split, send in parallel, join.
//!
//! Multi-key commands are split by *slot*, not by node: Redis Cluster answers `CROSSSLOT` to a
//! multi-key command whose keys are in different slots even when one node owns them all. The
//! parts bound for one node go as one pipelined request (see [`super::fanout_batch`]).

use super::fanout_batch::send_grouped;
use super::router::{Retry, Router, Target};
use crate::cluster::{key_slot, Snapshot};
use crate::protocol::command::Join;
use crate::protocol::request::{encode_command, push_bulk, push_header};
use crate::protocol::{reply, scan};
use crate::upstream::Lane;
use bytes::{Bytes, BytesMut};
use futures_util::future::join_all;
use smallvec::{smallvec, SmallVec};
use std::ops::Range;
use std::sync::Arc;

/// One part of a split command: its slot, the node that owns it, and the client's key indices
/// in it.
pub(crate) struct Part {
    /// The slot all its keys hash to.
    pub(crate) slot: u16,
    /// The owner's index in the slot map's nodes when the parts were made; `usize::MAX` when
    /// the slot had no known owner.
    pub(crate) node: usize,
    /// Indices (among the command's keys) of the keys it carries: usually one or a few, kept
    /// inline so that a part costs no allocation of its own.
    pub(crate) keys: SmallVec<[usize; 4]>,
    /// Where its encoded one-slot command lies in [`Parts::encoded`].
    pub(crate) at: Range<usize>,
}

/// The parts of a split command, ordered by owning node, with all their one-slot commands
/// encoded back to back in one buffer: the parts bound for one node are then one contiguous
/// slice, sent as one pipelined request without a copy, and the whole split costs one buffer
/// instead of one per slot.
pub(crate) struct Parts {
    /// The parts, those of one node next to each other.
    pub(crate) list: Vec<Part>,
    /// Every part's command, in the order of `list`.
    pub(crate) encoded: Bytes,
}

impl Parts {
    /// The encoded command of part `i`.
    pub(crate) fn payload(&self, i: usize) -> Bytes {
        self.encoded.slice(self.list[i].at.clone())
    }
}

/// The arguments key `pos` carries: the key and the `span - 1` values after it.
fn key_args(args: &[Bytes], pos: usize, span: usize) -> &[Bytes] {
    &args[pos..(pos + span).min(args.len())]
}

/// Groups the keys of `args` (at `positions`, each followed by `span - 1` values) by slot, in
/// order of first appearance, orders the groups by `node_of(slot)` (stable), and encodes one
/// command per slot.
pub(crate) fn split_by_slot(
    args: &[Bytes],
    positions: &[usize],
    span: usize,
    mut node_of: impl FnMut(u16) -> usize,
) -> Parts {
    let mut list: Vec<Part> = Vec::with_capacity(positions.len());
    let mut size = 0;
    for (index, &pos) in positions.iter().enumerate() {
        let slot = key_slot(&args[pos]);
        size += key_args(args, pos, span)
            .iter()
            .map(|a| a.len() + 16)
            .sum::<usize>();
        match list.iter_mut().find(|part| part.slot == slot) {
            Some(part) => part.keys.push(index),
            None => list.push(Part {
                slot,
                node: node_of(slot),
                keys: smallvec![index],
                at: 0..0,
            }),
        }
    }
    list.sort_by_key(|part| part.node);
    let mut out = BytesMut::with_capacity(size + list.len() * (args[0].len() + 32));
    for part in &mut list {
        let start = out.len();
        let argc: usize = part
            .keys
            .iter()
            .map(|&k| key_args(args, positions[k], span).len())
            .sum();
        push_header(&mut out, b'*', 1 + argc);
        push_bulk(&mut out, &args[0]);
        for &k in &part.keys {
            for arg in key_args(args, positions[k], span) {
                push_bulk(&mut out, arg);
            }
        }
        part.at = start..out.len();
    }
    Parts {
        list,
        encoded: out.freeze(),
    }
}

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
    let replies = join_all(
        snapshot
            .masters()
            .iter()
            .map(|pool| router.send_to_node(pool, lane, payload.clone())),
    )
    .await;
    if join == Join::AnyOk {
        return match replies.iter().find(|r| &r[..] == b"+OK\r\n") {
            Some(ok) => ok.clone(),
            None => replies.first().cloned().unwrap_or_else(reply::ok),
        };
    }
    if let Some(error) = replies.iter().find(|r| scan::is_error(r)) {
        return error.clone();
    }
    join_replies(join, &replies)
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
        Join::FirstNonNil | Join::AnyOk => replies
            .iter()
            .find(|r| !reply::is_null(r))
            .cloned()
            .unwrap_or_else(reply::null),
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

    fn args(s: &str) -> Vec<Bytes> {
        s.split(' ')
            .map(|p| Bytes::copy_from_slice(p.as_bytes()))
            .collect()
    }

    #[test]
    fn splits_by_slot_keeping_order() {
        let a = args("MSET {a}1 x {b}1 y {a}2 z");
        let parts = split_by_slot(&a, &[1, 3, 5], 2, |_| 0);
        assert_eq!(parts.list.len(), 2);
        assert_eq!(parts.list[0].keys.as_slice(), [0, 2]);
        assert_eq!(
            &parts.payload(0)[..],
            &encode_command(&["MSET", "{a}1", "x", "{a}2", "z"])[..]
        );
        assert_eq!(parts.list[1].keys.as_slice(), [1]);
        assert_eq!(parts.list[1].slot, key_slot(b"b"));
        assert_eq!(
            &parts.payload(1)[..],
            &encode_command(&["MSET", "{b}1", "y"])[..]
        );
    }

    #[test]
    fn parts_of_one_node_are_contiguous() {
        let a = args("MGET {a}1 {b}1 {c}1 {a}2");
        // {a} and {c} on node 1, {b} on node 0.
        let node_of = |slot| usize::from(slot != key_slot(b"b"));
        let parts = split_by_slot(&a, &[1, 2, 3, 4], 1, node_of);
        let slots: Vec<u16> = parts.list.iter().map(|p| p.slot).collect();
        assert_eq!(slots, [key_slot(b"b"), key_slot(b"a"), key_slot(b"c")]);
        assert_eq!(parts.list[1].keys.as_slice(), [0, 3]);
        let node1 = parts
            .encoded
            .slice(parts.list[1].at.start..parts.list[2].at.end);
        let mut expected = encode_command(&["MGET", "{a}1", "{a}2"]).to_vec();
        expected.extend_from_slice(&encode_command(&["MGET", "{c}1"]));
        assert_eq!(&node1[..], &expected[..]);
    }

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
