//! The words every part of the migration wing shares: the masters a move talks to, why a move
//! stopped, what it reports while it runs, and what a big key costs to move.
//!
//! The cost model: `MIGRATE` blocks both nodes while it serialises, sends and restores a key
//! (measured with redis-server 7.0.15 on this project's 2-core VM: a 100 MB string 538 ms, a
//! 1M-field hash 1,078 ms). The estimate is `bytes × 5 ms/MiB + elements × 0.8 µs`, scaled
//! by what this proxy has seen: after each big key the measured time corrects the scale.

use parking_lot::Mutex;
use serde::Serialize;
use std::time::Duration;

/// Milliseconds per MiB of `MEMORY USAGE` (a string's serialisation cost).
const MS_PER_MIB: f64 = 5.0;
/// Microseconds per element of a hash, list, set, sorted set or stream.
const US_PER_ELEMENT: f64 = 0.8;

/// A master taking part in a move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Cluster id.
    pub id: String,
    /// `host:port`.
    pub addr: String,
}

/// Why a slot move stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoveError {
    /// A node is unreachable, busy, out of memory…: the slot stays open and the move can be
    /// run again later.
    Retry(String),
    /// The move makes no sense (a node answers something no retry changes).
    Fatal(String),
    /// The cluster changed under the move: a failover made the source or the target a
    /// replica, or another node owns the slot now. The job stops and the slot is repaired.
    Changed(String),
    /// A key would block its nodes longer than the bound allows: the job pauses.
    TooBig {
        /// What the operator reads: the key, its size, the estimate and the bound.
        message: String,
        /// Whether the slot is open (MIGRATING/IMPORTING) at that point.
        slot_open: bool,
    },
}

/// What a slot move reports while it runs.
#[derive(Debug, Clone)]
pub enum MoveEvent {
    /// A batch of keys landed on the target: how many, and their `MEMORY USAGE` on the
    /// source.
    Keys {
        /// Keys in the batch.
        keys: u64,
        /// Their measured size.
        bytes: u64,
    },
    /// A big key was moved alone (its measured block time filled in).
    BigKey(KeyCost),
}

impl std::fmt::Display for MoveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MoveError::Retry(m) | MoveError::Fatal(m) | MoveError::Changed(m) => f.write_str(m),
            MoveError::TooBig { message, .. } => f.write_str(message),
        }
    }
}

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

/// Error replies that mean the node is not (or no longer) the master the move talks to.
pub fn means_changed(text: &str) -> bool {
    text.starts_with("MOVED")
        || text.starts_with("ASK ")
        || text.contains("only with masters")
        || text.contains("I'm not the owner")
        || text.contains("not the owner of hash slot")
        || text.contains("I'm not a master")
}

/// Error replies that go away by themselves are retried later; the rest are fatal.
pub fn classify(text: &str, addr: &str, args: &[&[u8]]) -> MoveError {
    let what = args
        .iter()
        .take(3)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let message = format!("{addr}: {what}: {text}");
    if means_changed(text) {
        return MoveError::Changed(message);
    }
    let transient = [
        "OOM",
        "READONLY",
        "LOADING",
        "CLUSTERDOWN",
        "TRYAGAIN",
        "MASTERDOWN",
        "BUSY",
        "MISCONF",
        "IOERR",
        // A node whose gossip has not caught up with a failover yet.
        "Target node is not a master",
    ];
    if transient
        .iter()
        .any(|t| text.starts_with(t) || text.contains(&format!(" {t}")))
    {
        MoveError::Retry(message)
    } else {
        MoveError::Fatal(message)
    }
}

/// Every master of a snapshot as an endpoint.
pub fn masters(snapshot: &crate::cluster::Snapshot) -> Vec<Endpoint> {
    snapshot
        .map
        .nodes
        .iter()
        .map(|n| Endpoint {
            id: n.id.clone(),
            addr: n.addr.clone(),
        })
        .collect()
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
