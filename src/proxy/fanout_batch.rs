//! Sending the per-slot parts of a split command: one request per node, not per slot.
//!
//! A 10-key MSET over three masters becomes ten one-slot MSETs; sent one by one they cost ten
//! round trips through the router, ten reply channels and ten queue entries on the node
//! connections. Here the parts bound for one node go as one pipelined request whose replies
//! come back together. A part whose reply is a redirect (`MOVED`, `ASK`, `TRYAGAIN`,
//! `CLUSTERDOWN`: the node did not run it) or whose node could not be reached is then sent on
//! its own through the router, which follows redirects and retries as for any command.

use super::fanout::Part;
use super::router::Router;
use crate::protocol::scan;
use crate::upstream::pool::{wait, NodePool};
use crate::upstream::Lane;
use bytes::{Bytes, BytesMut};
use futures_util::future::join_all;
use std::sync::Arc;

/// Sends every part, grouped by the node that owns its slot, and returns each part's reply
/// in order: `Some` when final, `None` when the part must go through the router on its own
/// (which then counts it in the slot statistics).
pub(super) async fn send_grouped(
    router: &Router,
    lane: Lane,
    write: bool,
    parts: &[Part],
) -> Vec<Option<Bytes>> {
    let mut replies: Vec<Option<Bytes>> = vec![None; parts.len()];
    let groups = group_by_node(router, parts);
    let sent = groups.into_iter().map(|(pool, indices)| {
        let size = indices.iter().map(|&i| parts[i].payload.len()).sum();
        let mut payload = BytesMut::with_capacity(size);
        for &i in &indices {
            payload.extend_from_slice(&parts[i].payload);
        }
        // Queued now, before the first await: the parts keep their place in the pipeline.
        let rx = pool.send_frames(lane, payload.freeze(), false, indices.len());
        async move { (indices, wait(pool.addr(), rx).await) }
    });
    for (indices, result) in join_all(sent).await {
        match result {
            Ok(mut frames) => {
                for i in indices {
                    let len = match scan::frame_len(&frames) {
                        Ok(Some(len)) => len,
                        _ => break,
                    };
                    let frame = frames.split_to(len);
                    if scan::classify(&frame) == scan::Redirect::None {
                        router.metrics.slot_stats.record(parts[i].slot);
                        replies[i] = Some(frame);
                    }
                }
            }
            Err(error) => {
                router.count_error(&error);
                // Anything that may be resent is, part by part (with retries).
                if error.forbids_resend(write) {
                    for i in indices {
                        router.metrics.slot_stats.record(parts[i].slot);
                        replies[i] = Some(error.to_reply());
                    }
                }
            }
        }
    }
    replies
}

/// The parts' indices by owning node, from the current slot map; parts whose slot has no
/// known owner are left out (they go through the router, which waits for one).
fn group_by_node(router: &Router, parts: &[Part]) -> Vec<(Arc<NodePool>, Vec<usize>)> {
    let mut groups: Vec<(Arc<NodePool>, Vec<usize>)> = Vec::new();
    let current = router.topology.current();
    let Some(snapshot) = current.as_ref() else {
        return groups;
    };
    for (i, part) in parts.iter().enumerate() {
        let Some(pool) = snapshot.owner(part.slot) else {
            continue;
        };
        match groups.iter_mut().find(|(p, _)| Arc::ptr_eq(p, pool)) {
            Some((_, indices)) => indices.push(i),
            None => groups.push((pool.clone(), vec![i])),
        }
    }
    groups
}
