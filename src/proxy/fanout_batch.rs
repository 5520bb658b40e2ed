//! The per-slot parts of a split command, and sending them: one request per node, not per
//! slot.
//!
//! A 10-key MSET over three masters becomes ten one-slot MSETs; sent one by one they cost ten
//! round trips through the router, ten reply channels and ten queue entries on the node
//! connections. Here the parts bound for one node go as one pipelined request whose replies
//! come back together. A part whose reply is a redirect (`MOVED`, `ASK`, `TRYAGAIN`,
//! `CLUSTERDOWN`: the node did not run it) or whose node could not be reached is then sent on
//! its own through the router, which follows redirects and retries as for any command.

use crate::cluster::key_slot;
use crate::cluster::router::Router;
use crate::protocol::request::{push_bulk, push_header};
use crate::protocol::scan;
use crate::upstream::pool::{wait, NodePool};
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
pub(crate) fn key_args(args: &[Bytes], pos: usize, span: usize) -> &[Bytes] {
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

/// Sends every part, one request per node (`nodes` are the slot map's pools, indexed like
/// `Part::node`), and returns each part's reply in order: `Some` when final, `None` when the
/// part must go through the router on its own (which then counts it in the slot statistics).
pub(super) async fn send_grouped(
    router: &Router,
    lane: Lane,
    write: bool,
    parts: &Parts,
    nodes: &[Arc<NodePool>],
) -> Vec<Option<Bytes>> {
    let list = &parts.list;
    let mut replies: Vec<Option<Bytes>> = vec![None; list.len()];
    // Runs of parts with the same owner: `split_by_slot` put them next to each other.
    let runs = list
        .chunk_by(|a, b| a.node == b.node)
        .scan(0, |first, run| {
            let range = *first..*first + run.len();
            *first = range.end;
            Some(range)
        })
        .filter_map(|range| Some((nodes.get(list[range.start].node)?, range)));
    let sent = runs.map(|(pool, range)| {
        let payload = parts
            .encoded
            .slice(list[range.start].at.start..list[range.end - 1].at.end);
        // Queued now, before the first await: the parts keep their place in the pipeline.
        let rx = pool.send_frames(lane, payload, false, range.len());
        async move { (range, wait(pool.addr(), rx).await) }
    });
    for (range, result) in join_all(sent).await {
        match result {
            Ok(mut frames) => {
                for i in range {
                    let len = match scan::frame_len(&frames) {
                        Ok(Some(len)) => len,
                        _ => break,
                    };
                    let frame = frames.split_to(len);
                    if scan::classify(&frame) == scan::Redirect::None {
                        router.metrics.slot_stats.record(list[i].slot);
                        replies[i] = Some(frame);
                    }
                }
            }
            Err(error) => {
                router.count_error(&error);
                // Anything that may be resent is, part by part (with retries).
                if error.forbids_resend(write) {
                    for i in range {
                        router.metrics.slot_stats.record(list[i].slot);
                        replies[i] = Some(error.to_reply());
                    }
                }
            }
        }
    }
    replies
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::request::encode_command;
    use crate::protocol::request::words as args;

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
}
