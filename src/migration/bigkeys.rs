//! Big keys in a slot being moved: measured before they go, moved alone with a longer
//! timeout, and refused when moving one would block its nodes for too long.
//!
//! `MIGRATE` serialises a key, sends it and waits for the target's `RESTORE`, blocking both
//! nodes the whole time (measured with redis-server 7.0.15 on this project's 2-core VM: a
//! 100 MB string 538 ms, a 1M-field hash 1,078 ms). A node blocked near
//! `cluster-node-timeout` gets failed over by its replica. So every batch is sized with
//! `MEMORY USAGE` first; keys over `migration.big_key_bytes` leave alone, after an estimate of
//! their block time, and a key whose estimate exceeds the bound (`migration.max_key_block_ms`,
//! at most ¾ of the source's `cluster-node-timeout`) pauses the job instead.
//!
//! The estimate is `bytes × 5 ms/MiB + elements × 0.8 µs` (the figures above), scaled by
//! what this proxy has seen: after each big key the measured time corrects the scale.

use super::context::{Conns, MoveContext};
use super::types::{KeyCost, MoveError};
use crate::protocol::request::encode_command;
use crate::protocol::scan;
use bytes::Bytes;
use std::time::Duration;

/// Slots with more keys than this are not scanned whole before they are opened (their
/// batches are still measured one by one).
const PREFLIGHT_MAX_KEYS: i64 = 10_000;

/// `MEMORY USAGE`s per write: a node runs a client's whole write before it serves anyone
/// else, and 1,000 of them held the source for milliseconds (requests sent in that step
/// were slow a quarter of the time, with ~61 keys per slot).
const SIZES_PER_WRITE: usize = 100;

/// `MEMORY USAGE` of each key on `addr`, pipelined (0 for a key that is gone).
pub async fn sizes(
    ctx: &MoveContext,
    conns: &mut Conns,
    addr: &str,
    keys: &[Bytes],
) -> Result<Vec<u64>, MoveError> {
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(SIZES_PER_WRITE) {
        let mut payload = Vec::new();
        for key in chunk {
            payload.extend_from_slice(&encode_command(&[b"MEMORY".as_slice(), b"USAGE", key]));
        }
        let replies = conns
            .get(addr)
            .call_raw(&payload, chunk.len(), ctx.call_timeout)
            .await
            .map_err(|e| MoveError::Retry(e.to_string()))?;
        out.extend(
            replies
                .iter()
                .map(|r| scan::integer(r).unwrap_or(0).max(0) as u64),
        );
    }
    Ok(out)
}

/// Type, elements and estimated block time of a key known to be big.
pub async fn cost_of(
    ctx: &MoveContext,
    conns: &mut Conns,
    addr: &str,
    slot: u16,
    key: &Bytes,
    bytes: u64,
) -> Result<KeyCost, MoveError> {
    let kind = ctx
        .call(conns, addr, &[b"TYPE".as_slice(), key], ctx.call_timeout)
        .await?
        .ok()
        .and_then(|r| scan::string(&r).map(|s| String::from_utf8_lossy(s).into_owned()))
        .unwrap_or_default();
    let length: Option<&[u8]> = match kind.as_str() {
        "hash" => Some(b"HLEN"),
        "list" => Some(b"LLEN"),
        "set" => Some(b"SCARD"),
        "zset" => Some(b"ZCARD"),
        "stream" => Some(b"XLEN"),
        _ => None,
    };
    let elements = match length {
        Some(cmd) => ctx
            .call(conns, addr, &[cmd, key], ctx.call_timeout)
            .await?
            .ok()
            .and_then(|r| scan::integer(&r))
            .unwrap_or(0)
            .max(0) as u64,
        None => 0,
    };
    Ok(KeyCost {
        key: String::from_utf8_lossy(key).into_owned(),
        slot,
        kind,
        bytes,
        elements,
        estimated_ms: ctx.costs.estimate(bytes, elements).as_millis() as u64,
        block_ms: None,
    })
}

/// The longest a single key may block `addr`: `max_key_block`, and at most ¾ of the
/// node's `cluster-node-timeout` when it says.
pub async fn block_bound(ctx: &MoveContext, conns: &mut Conns, addr: &str) -> Duration {
    let reply = ctx
        .call(
            conns,
            addr,
            &[b"CONFIG", b"GET", b"cluster-node-timeout"],
            ctx.call_timeout,
        )
        .await;
    let node_timeout = match reply {
        Ok(Ok(raw)) => scan::array_elements(&raw)
            .and_then(|parts| parts.get(1).cloned())
            .and_then(|v| scan::string(&v).map(|s| String::from_utf8_lossy(s).into_owned()))
            .and_then(|v| v.parse::<u64>().ok()),
        _ => None,
    };
    match node_timeout {
        Some(ms) if ms > 0 => ctx.max_key_block.min(Duration::from_millis(ms * 3 / 4)),
        _ => ctx.max_key_block,
    }
}

/// The big keys among `keys` (with their sizes), each with its cost; fails with
/// [`MoveError::TooBig`] for the first whose estimate is over the bound.
pub async fn big_keys(
    ctx: &MoveContext,
    conns: &mut Conns,
    addr: &str,
    slot: u16,
    keys: &[Bytes],
    sizes: &[u64],
    slot_open: bool,
) -> Result<Vec<(usize, KeyCost)>, MoveError> {
    let mut big = Vec::new();
    let mut bound = None;
    for (i, (key, &bytes)) in keys.iter().zip(sizes).enumerate() {
        if bytes <= ctx.big_key_bytes {
            continue;
        }
        let cost = cost_of(ctx, conns, addr, slot, key, bytes).await?;
        let limit = match bound {
            Some(limit) => limit,
            None => *bound.insert(block_bound(ctx, conns, addr).await),
        };
        if Duration::from_millis(cost.estimated_ms) > limit {
            return Err(MoveError::TooBig {
                message: too_big_message(&cost, addr, limit, slot_open),
                slot_open,
            });
        }
        big.push((i, cost));
    }
    Ok(big)
}

/// Before a slot is opened: when it holds a key that may not be moved, say so now, so the
/// job pauses with nothing open.
pub async fn preflight_big_keys(
    ctx: &MoveContext,
    conns: &mut Conns,
    addr: &str,
    slot: u16,
) -> Result<(), MoveError> {
    let count = ctx.count_in_slot(conns, addr, slot).await?;
    if count == 0 || count > PREFLIGHT_MAX_KEYS {
        return Ok(());
    }
    let keys = ctx.keys_in_slot(conns, addr, slot, count as usize).await?;
    let sizes = sizes(ctx, conns, addr, &keys).await?;
    big_keys(ctx, conns, addr, slot, &keys, &sizes, false)
        .await
        .map(|_| ())
}

fn too_big_message(cost: &KeyCost, addr: &str, bound: Duration, slot_open: bool) -> String {
    let size = match cost.elements {
        0 => format!("{:.1} MB", cost.bytes as f64 / 1e6),
        n => format!("{n} elements, {:.1} MB", cost.bytes as f64 / 1e6),
    };
    let state = match slot_open {
        false => "the slot was not opened",
        true => "the slot stays open (clients are served as usual)",
    };
    format!(
        "slot {}: key {:?} ({}, {size}) would block {addr} and the target for about {} ms, \
         over the {} ms bound (migration.max_key_block_ms, at most 3/4 of cluster-node-timeout); \
         the job is paused and {state}. Shrink or delete the key, or raise the bound, then resume",
        cost.slot,
        cost.key,
        cost.kind,
        cost.estimated_ms,
        bound.as_millis()
    )
}
