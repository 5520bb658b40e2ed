//! Sending the per-slot parts of a split command: one request per node, not per slot.
//!
//! A 10-key MSET over three masters becomes ten one-slot MSETs; sent one by one they cost ten
//! round trips through the router, ten reply channels and ten queue entries on the node
//! connections. Here the parts bound for one node go as one pipelined request whose replies
//! come back together. A part whose reply is a redirect (`MOVED`, `ASK`, `TRYAGAIN`,
//! `CLUSTERDOWN`: the node did not run it) or whose node could not be reached is then sent on
//! its own through the router, which follows redirects and retries as for any command.

use super::fanout::Parts;
use super::router::Router;
use crate::protocol::scan;
use crate::upstream::pool::{wait, NodePool};
use crate::upstream::Lane;
use bytes::Bytes;
use futures_util::future::join_all;
use std::sync::Arc;

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
