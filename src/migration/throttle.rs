//! A shared cap on keys migrated per second, so a rebalance leaves the nodes room for
//! client traffic.

use parking_lot::Mutex;
use std::time::{Duration, Instant};

/// Paces callers so that, together, they take at most `rate` keys per second.
#[derive(Debug)]
pub struct Throttle {
    rate: u64,
    next_free: Mutex<Instant>,
}

impl Throttle {
    /// A throttle for `rate` keys/s; 0 means no cap.
    pub fn new(rate: u64) -> Throttle {
        Throttle {
            rate,
            next_free: Mutex::new(Instant::now()),
        }
    }

    /// The cap in keys/s (0: none).
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Waits until `keys` more keys may be moved.
    pub async fn take(&self, keys: usize) {
        if self.rate == 0 || keys == 0 {
            return;
        }
        let cost = Duration::from_secs_f64(keys as f64 / self.rate as f64);
        let start = {
            let mut next = self.next_free.lock();
            // Idle time does not bank up into a burst bigger than one second's worth.
            let now = Instant::now();
            let floor = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
            let start = (*next).max(floor);
            *next = start + cost;
            start
        };
        tokio::time::sleep_until(start.into()).await;
    }
}
