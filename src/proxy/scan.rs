//! `SCAN` over every master with one cursor.
//!
//! The proxy's cursor packs the node's own cursor and *where* that node is: `node_cursor << 14
//! | start_slot`, where `start_slot` is the lowest slot the node owns. Masters are visited in
//! order of their lowest slot. Naming the node by a slot rather than by its position in a
//! list means a topology change (a node added or removed) never makes the iteration jump
//! over a whole node: the cursor still finds the node that owns that slot now, and the
//! masters after it are the ones whose lowest slot is higher. Redis's node cursors stay far
//! below 2^50, so the packing cannot overflow.

use crate::cluster::router::Router;
use crate::cluster::Snapshot;
use crate::protocol::request::encode_command;
use crate::protocol::{reply, scan as frames};
use crate::upstream::Lane;
use bytes::Bytes;
use std::sync::Arc;

const SLOT_BITS: u32 = 14;
const SLOT_MASK: u64 = (1 << SLOT_BITS) - 1;

/// Masters with slots, as (lowest slot, index into the snapshot's pools), ascending.
fn masters_by_lowest_slot(snapshot: &Snapshot) -> Vec<(u16, usize)> {
    let mut lowest: Vec<Option<u16>> = vec![None; snapshot.map.nodes.len()];
    for slot in 0..crate::cluster::SLOT_COUNT as u16 {
        if let Some(i) = snapshot.map.owner(slot) {
            if lowest[i].is_none() {
                lowest[i] = Some(slot);
            }
        }
    }
    let mut order: Vec<(u16, usize)> = lowest
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.map(|s| (s, i)))
        .collect();
    order.sort_unstable();
    order
}

/// Answers `SCAN cursor [MATCH p] [COUNT n] [TYPE t]` (`args[0]` is `SCAN`). A page holds
/// what one node returned, topped up from the following nodes while it has fewer than COUNT
/// keys.
pub async fn scan(
    router: Arc<Router>,
    snapshot: Arc<Snapshot>,
    lane: Lane,
    args: Vec<Bytes>,
) -> Bytes {
    let Some(cursor) = std::str::from_utf8(&args[1])
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
    else {
        return reply::error("ERR invalid cursor");
    };
    let order = masters_by_lowest_slot(&snapshot);
    let Some(&(first_slot, _)) = order.first() else {
        return reply::error("ERR slotproxy: no master owns slots");
    };
    let (mut node_cursor, mut start_slot) = (cursor >> SLOT_BITS, (cursor & SLOT_MASK) as u16);
    if cursor == 0 {
        start_slot = first_slot;
    }
    // The node that owns `start_slot` now (after a topology change, maybe another one).
    let mut node = match snapshot.map.owner(start_slot) {
        Some(i) => i,
        None => {
            return reply::array_of_raw(&[
                reply::bulk(Bytes::from_static(b"0")),
                reply::array_of_raw(&[]),
            ])
        }
    };
    // COUNT is a hint for the page size (default 10, as in Redis).
    let count = args[2..]
        .chunks(2)
        .find(|pair| pair[0].eq_ignore_ascii_case(b"count"))
        .and_then(|pair| pair.get(1))
        .and_then(|n| crate::protocol::parse_i64(n))
        .map_or(10, |n| n.max(1) as usize);
    let mut keys: Vec<Bytes> = Vec::new();
    loop {
        let Some(pool) = snapshot.pools.get(node) else {
            return reply::error("ERR slotproxy: no master is known");
        };
        let mut command: Vec<&[u8]> = vec![b"SCAN"];
        let node_cursor_text = node_cursor.to_string();
        command.push(node_cursor_text.as_bytes());
        command.extend(args[2..].iter().map(|a| a.as_ref()));
        let raw = router
            .send_to_node(pool, lane, encode_command(&command))
            .await;
        if frames::is_error(&raw) {
            return raw;
        }
        let Some(parts) = frames::array_elements(&raw).filter(|p| p.len() == 2) else {
            return reply::error("ERR slotproxy: unexpected SCAN reply from a node");
        };
        let next = frames::string(&parts[0])
            .and_then(|c| std::str::from_utf8(c).ok())
            .and_then(|c| c.parse::<u64>().ok());
        let (Some(next), Some(found)) = (next, frames::array_elements(&parts[1])) else {
            return reply::error("ERR slotproxy: unexpected SCAN reply from a node");
        };
        // The proxies' own keys are not the client's (see `super::reserved`).
        keys.extend(
            found
                .into_iter()
                .filter(|k| !frames::string(k).is_some_and(crate::protocol::reserved::is_reserved)),
        );
        if next != 0 {
            let cursor = (next << SLOT_BITS) | u64::from(start_slot);
            return reply_with(cursor, &keys);
        }
        // This node is done: go on with the master whose lowest slot comes next.
        match order.iter().find(|(s, _)| *s > start_slot) {
            Some(&(slot, index)) => {
                if keys.len() >= count {
                    return reply_with(u64::from(slot), &keys);
                }
                // A page not yet full goes on with the next node, as a single Redis returns a
                // small keyspace in one call.
                start_slot = slot;
                node = index;
                node_cursor = 0;
            }
            None => return reply_with(0, &keys),
        }
    }
}

fn reply_with(cursor: u64, keys: &[Bytes]) -> Bytes {
    reply::array_of_raw(&[
        reply::bulk(Bytes::from(cursor.to_string())),
        reply::array_of_raw(keys),
    ])
}
