//! `proxy.idle_timeout_secs`: closing clients that stay silent, at no cost per command.
//!
//! The session records the clock read it already makes for each batch of commands; the one
//! timer is moved only when it fires, to the last activity plus the timeout. Bytes of a
//! command still arriving count as activity (as in Redis, where any read does), so a slow
//! upload is not cut; a client that sends nothing is.

use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio::time::Sleep;

/// One client's idle timer.
pub struct IdleTimer {
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    last_active: Instant,
    /// Bytes of a partial command buffered at the last check.
    buffered: usize,
}

impl IdleTimer {
    /// A timer for `timeout`, or none when idle clients are never closed.
    pub fn new(timeout: Option<Duration>) -> Option<IdleTimer> {
        let timeout = timeout?;
        let now = Instant::now();
        Some(IdleTimer {
            timeout,
            sleep: Box::pin(tokio::time::sleep_until((now + timeout).into())),
            last_active: now,
            buffered: 0,
        })
    }

    /// The client sent commands at `at`.
    pub fn active(&mut self, at: Instant) {
        self.last_active = at;
    }

    /// Waits for the timer (which may be early: ask [`IdleTimer::expired`]).
    pub async fn fired(timer: &mut Option<IdleTimer>) {
        match timer {
            Some(timer) => timer.sleep.as_mut().await,
            None => std::future::pending().await,
        }
    }

    /// After the timer fired: whether the client has been silent for the whole timeout, with
    /// `buffered` bytes of an incomplete command in its read buffer. If not, the timer is set
    /// again, for the last activity plus the timeout.
    pub fn expired(&mut self, now: Instant, buffered: usize) -> bool {
        if buffered != self.buffered {
            self.buffered = buffered;
            self.last_active = now;
        }
        let deadline = self.last_active + self.timeout;
        if now >= deadline {
            return true;
        }
        self.sleep.as_mut().reset(deadline.into());
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn expires_after_silence_and_moves_with_activity() {
        assert!(IdleTimer::new(None).is_none());
        let mut timer = IdleTimer::new(Some(Duration::from_secs(10))).expect("timer");
        let start = timer.last_active;
        let at = |s: u64| start + Duration::from_secs(s);
        timer.active(at(6));
        // The timer fired at 10 s, but the client was active at 6 s: not yet.
        assert!(!timer.expired(at(10), 0));
        // Bytes of a command arriving count as activity.
        assert!(!timer.expired(at(16), 100));
        assert!(!timer.expired(at(25), 100));
        assert!(timer.expired(at(26), 100));
    }
}
