//! Per-slot operation counts, for `GET /slots/stats`.
//!
//! 16384 series are too many for Prometheus, but the proxy sees every command, so it keeps
//! one counter per slot (a relaxed atomic add per routed command) and serves the hottest
//! slots as JSON. A sampler copies the counters every [`SAMPLE_EVERY`] so rates cover the
//! last full window.

use crate::cluster::SLOT_COUNT;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often the rate window moves.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// Operations per slot since start, and the previous sample for rates.
#[derive(Debug)]
pub struct SlotStats {
    ops: Box<[AtomicU64]>,
    sample: Mutex<(Instant, Vec<u64>)>,
}

/// One slot's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotFigures {
    /// The slot.
    pub slot: u16,
    /// Commands routed to it since start.
    pub ops_total: u64,
    /// Commands per second over the last window.
    pub ops_per_second: f64,
}

impl Default for SlotStats {
    fn default() -> Self {
        SlotStats {
            ops: (0..SLOT_COUNT).map(|_| AtomicU64::new(0)).collect(),
            sample: Mutex::new((Instant::now(), vec![0; SLOT_COUNT])),
        }
    }
}

impl SlotStats {
    /// Counts one command routed to `slot`.
    #[inline]
    pub fn record(&self, slot: u16) {
        if let Some(counter) = self.ops.get(slot as usize) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn current(&self) -> Vec<u64> {
        self.ops.iter().map(|c| c.load(Ordering::Relaxed)).collect()
    }

    /// Starts a new rate window (called every [`SAMPLE_EVERY`]).
    pub fn rotate(&self) {
        let now = self.current();
        let mut sample = self.sample.lock();
        *sample = (Instant::now(), now);
    }

    /// The `top` slots by rate (then by total), and the window length in seconds.
    pub fn hottest(&self, top: usize) -> (Vec<SlotFigures>, f64) {
        let now = self.current();
        let (since, before) = {
            let sample = self.sample.lock();
            (sample.0, sample.1.clone())
        };
        let window = since.elapsed().as_secs_f64().max(0.001);
        let mut figures: Vec<SlotFigures> = now
            .iter()
            .zip(&before)
            .enumerate()
            .filter(|(_, (&total, _))| total > 0)
            .map(|(slot, (&total, &old))| SlotFigures {
                slot: slot as u16,
                ops_total: total,
                ops_per_second: (total - old.min(total)) as f64 / window,
            })
            .collect();
        figures.sort_by(|a, b| {
            b.ops_per_second
                .total_cmp(&a.ops_per_second)
                .then(b.ops_total.cmp(&a.ops_total))
                .then(a.slot.cmp(&b.slot))
        });
        figures.truncate(top);
        (figures, window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hottest_first() {
        let stats = SlotStats::default();
        for _ in 0..5 {
            stats.record(7);
        }
        stats.record(9);
        let (top, _) = stats.hottest(1);
        assert_eq!(top.len(), 1);
        assert_eq!((top[0].slot, top[0].ops_total), (7, 5));
        stats.rotate();
        stats.record(9);
        let (top, _) = stats.hottest(2);
        assert_eq!(top[0].slot, 9, "rates count only the current window");
    }
}
