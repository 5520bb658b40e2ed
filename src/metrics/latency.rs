//! A lock-free latency histogram of every client command, fine enough (four buckets per
//! octave from 1 µs) for the migration pacer to compare the clients' p99 during a job with
//! their p99 before it. The Prometheus histograms' buckets are too coarse for that, and
//! reading them means gathering the whole registry.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Buckets per doubling of latency.
const PER_OCTAVE: u32 = 4;
/// 1 µs up to 2^32 µs (over an hour); slower commands land in the last bucket.
const BUCKETS: usize = (32 * PER_OCTAVE) as usize;

/// Counts of client commands by latency bucket, bumped on every reply.
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; BUCKETS],
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl LatencyHistogram {
    /// Counts one command that took `elapsed`.
    pub fn observe(&self, elapsed: Duration) {
        self.buckets[bucket(elapsed)].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far; two snapshots' difference is the histogram of the time between.
    pub fn snapshot(&self) -> LatencyCounts {
        LatencyCounts {
            counts: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

/// A copy of a [`LatencyHistogram`]'s counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencyCounts {
    counts: Vec<u64>,
}

impl LatencyCounts {
    /// The commands counted in `self` but not in `earlier` (an older snapshot).
    pub fn since(&self, earlier: &LatencyCounts) -> LatencyCounts {
        LatencyCounts {
            counts: self
                .counts
                .iter()
                .enumerate()
                .map(|(i, c)| c.saturating_sub(earlier.counts.get(i).copied().unwrap_or(0)))
                .collect(),
        }
    }

    /// How many commands these counts hold.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The latency under which a share `q` (0..=1) of the commands fall: the upper bound of
    /// the bucket holding that rank (at most 19 % above the true value). `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(upper_bound(i));
            }
        }
        self.counts.len().checked_sub(1).map(upper_bound)
    }
}

/// The bucket of a latency: octave (⌊log2 µs⌋) times four, plus which quarter of the octave.
fn bucket(elapsed: Duration) -> usize {
    let us = u64::try_from(elapsed.as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    let octave = 63 - us.leading_zeros();
    // The two bits after the leading one say which quarter of [2^octave, 2^(octave+1)).
    let quarter = if octave >= 2 {
        (us >> (octave - 2)) & 3
    } else {
        (us << (2 - octave)) & 3
    };
    ((octave * PER_OCTAVE) as usize + quarter as usize).min(BUCKETS - 1)
}

/// The smallest latency above every value of bucket `i`.
fn upper_bound(i: usize) -> Duration {
    let octave = i as u32 / PER_OCTAVE;
    let quarter = i as u64 % PER_OCTAVE as u64;
    // Values of the bucket are [(4 + quarter) / 4, (5 + quarter) / 4) × 2^octave µs.
    Duration::from_nanos(((5 + quarter) * 1000) << octave >> 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_latency_falls_below_its_buckets_upper_bound_and_above_the_one_before() {
        for us in [
            1u64, 2, 3, 5, 7, 8, 100, 130, 999, 1000, 1500, 65_000, 1_000_000,
        ] {
            let d = Duration::from_micros(us);
            let i = bucket(d);
            assert!(d < upper_bound(i), "{us} µs in bucket {i}");
            if i > 0 {
                assert!(d >= upper_bound(i - 1), "{us} µs in bucket {i}");
            }
            assert!(upper_bound(i).as_secs_f64() <= d.as_secs_f64() * 1.25 + 1e-6);
        }
    }

    #[test]
    fn the_p99_of_a_window_is_that_of_the_commands_in_it() {
        let h = LatencyHistogram::default();
        for _ in 0..1000 {
            h.observe(Duration::from_micros(100));
        }
        let before = h.snapshot();
        for _ in 0..980 {
            h.observe(Duration::from_micros(100));
        }
        for _ in 0..20 {
            h.observe(Duration::from_millis(5));
        }
        let window = h.snapshot().since(&before);
        assert_eq!(window.total(), 1000);
        let p99 = window.quantile(0.99).expect("p99");
        assert!(
            p99 >= Duration::from_millis(5) && p99 < Duration::from_millis(7),
            "{p99:?}"
        );
        let p50 = window.quantile(0.5).expect("p50");
        assert!(p50 > Duration::from_micros(100) && p50 < Duration::from_micros(125));
        assert_eq!(LatencyCounts::default().quantile(0.99), None);
    }
}
