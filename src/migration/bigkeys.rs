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

use super::executor::{Conns, MoveContext, MoveError};
use crate::protocol::request::encode_command;
use crate::protocol::scan;
use bytes::Bytes;
use parking_lot::Mutex;
use serde::Serialize;
use std::time::Duration;

/// Milliseconds per MiB of `MEMORY USAGE` (a string's serialisation cost).
const MS_PER_MIB: f64 = 5.0;
/// Microseconds per element of a hash, list, set, sorted set or stream.
const US_PER_ELEMENT: f64 = 0.8;
/// Slots with more keys than this are not scanned whole before they are opened (their
/// batches are still measured one by one).
const PREFLIGHT_MAX_KEYS: i64 = 10_000;

/// A big key, measured.
#[derive(Debug, Clone, Serialize)]
pub struct KeyCost {
    /// The key (lossy UTF-8).
    pub key: String,
    /// The slot it lives in.
    pub slot: u16,
    /// `TYPE`.
    pub kind: String,
    /// `MEMORY USAGE`.
    pub bytes: u64,
    /// Elements of an aggregate (0 for a string).
    pub elements: u64,
    /// Estimated block time.
    pub estimated_ms: u64,
    /// Measured block time, once moved.
    pub block_ms: Option<u64>,
}

/// The block-time model, corrected by what was measured.
#[derive(Debug)]
pub struct CostModel {
    scale: Mutex<f64>,
}

impl Default for CostModel {
    fn default() -> CostModel {
        CostModel {
            scale: Mutex::new(1.0),
        }
    }
}

impl CostModel {
    /// Estimated block time of moving a key of `bytes` with `elements`.
    pub fn estimate(&self, bytes: u64, elements: u64) -> Duration {
        let scale = *self.scale.lock();
        let ms = (bytes as f64 / 1_048_576.0 * MS_PER_MIB
            + elements as f64 * US_PER_ELEMENT / 1000.0)
            * scale;
        Duration::from_secs_f64(ms.max(0.0) / 1000.0)
    }

    /// Learns from a key that was estimated at `estimated` and took `measured`.
    pub fn learn(&self, estimated: Duration, measured: Duration) {
        if estimated < Duration::from_millis(20) {
            return; // too small to tell the model from the round trip
        }
        let ratio = measured.as_secs_f64() / estimated.as_secs_f64();
        let mut scale = self.scale.lock();
        *scale = (*scale * 0.6 + *scale * ratio * 0.4).clamp(0.25, 4.0);
    }
}

impl MoveContext {
    /// `MEMORY USAGE` of each key on `addr`, pipelined (0 for a key that is gone).
    pub async fn sizes(
        &self,
        conns: &mut Conns,
        addr: &str,
        keys: &[Bytes],
    ) -> Result<Vec<u64>, MoveError> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(1000) {
            let mut payload = Vec::new();
            for key in chunk {
                payload.extend_from_slice(&encode_command(&[b"MEMORY".as_slice(), b"USAGE", key]));
            }
            let replies = conns
                .get(addr)
                .call_raw(&payload, chunk.len(), self.call_timeout)
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
        &self,
        conns: &mut Conns,
        addr: &str,
        slot: u16,
        key: &Bytes,
        bytes: u64,
    ) -> Result<KeyCost, MoveError> {
        let kind = self
            .call(conns, addr, &[b"TYPE".as_slice(), key], self.call_timeout)
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
            Some(cmd) => self
                .call(conns, addr, &[cmd, key], self.call_timeout)
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
            estimated_ms: self.costs.estimate(bytes, elements).as_millis() as u64,
            block_ms: None,
        })
    }

    /// The longest a single key may block `addr`: `max_key_block`, and at most ¾ of the
    /// node's `cluster-node-timeout` when it says.
    pub async fn block_bound(&self, conns: &mut Conns, addr: &str) -> Duration {
        let reply = self
            .call(
                conns,
                addr,
                &[b"CONFIG", b"GET", b"cluster-node-timeout"],
                self.call_timeout,
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
            Some(ms) if ms > 0 => self.max_key_block.min(Duration::from_millis(ms * 3 / 4)),
            _ => self.max_key_block,
        }
    }

    /// The big keys among `keys` (with their sizes), each with its cost; fails with
    /// [`MoveError::TooBig`] for the first whose estimate is over the bound.
    pub async fn big_keys(
        &self,
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
            if bytes <= self.big_key_bytes {
                continue;
            }
            let cost = self.cost_of(conns, addr, slot, key, bytes).await?;
            let limit = match bound {
                Some(limit) => limit,
                None => *bound.insert(self.block_bound(conns, addr).await),
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
        &self,
        conns: &mut Conns,
        addr: &str,
        slot: u16,
    ) -> Result<(), MoveError> {
        let count = self.count_in_slot(conns, addr, slot).await?;
        if count == 0 || count > PREFLIGHT_MAX_KEYS {
            return Ok(());
        }
        let keys = self.keys_in_slot(conns, addr, slot, count as usize).await?;
        let sizes = self.sizes(conns, addr, &keys).await?;
        self.big_keys(conns, addr, slot, &keys, &sizes, false)
            .await
            .map(|_| ())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_follow_the_measured_figures_and_learn() {
        let model = CostModel::default();
        let string = model.estimate(117_440_560, 0).as_millis();
        assert!((500..620).contains(&string), "{string}");
        let hash = model.estimate(56_388_712, 1_000_000).as_millis();
        assert!((950..1200).contains(&hash), "{hash}");
        // A machine twice as fast: estimates come down, within the clamp.
        for _ in 0..20 {
            model.learn(Duration::from_millis(1000), Duration::from_millis(500));
        }
        let faster = model.estimate(117_440_560, 0).as_millis();
        assert!(faster < string * 6 / 10, "{faster}");
        model.learn(Duration::from_millis(5), Duration::from_secs(10));
        assert_eq!(model.estimate(117_440_560, 0).as_millis(), faster);
    }
}
