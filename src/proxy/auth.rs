//! Client authentication at the proxy: `AUTH [user] password` and `HELLO … AUTH user pass`
//! against the proxy's ACL users (see [`super::acl_users`]). Until a client has authenticated it may only send AUTH, HELLO, QUIT and
//! RESET (everything else: `-NOAUTH`), and its requests are held to Redis's pre-auth limits
//! (at most 10 arguments, bulk strings of at most 16 KiB), so an unauthenticated stranger
//! cannot make the proxy buffer much.

use std::time::{Duration, Instant};

/// Wait before the reply to a connection's second failed attempt; it doubles with each
/// further failure.
pub const FAILURE_DELAY: Duration = Duration::from_millis(100);
/// Longest wait before a failure's reply.
pub const MAX_FAILURE_DELAY: Duration = Duration::from_secs(5);

/// Slows down password guessing on one connection: the first failure is answered at once (a
/// typo), later ones after 100 ms, 200 ms, 400 ms … up to 5 s. Replies to attempts sent in one
/// pipeline are spaced one after the other, so pipelining buys an attacker nothing.
#[derive(Debug, Default)]
pub struct AuthThrottle {
    failures: u32,
    /// When the previous failure's reply goes out.
    last_reply_at: Option<Instant>,
}

impl AuthThrottle {
    /// Records a failed attempt made at `now`; returns when its reply may be sent.
    pub fn failed(&mut self, now: Instant) -> Instant {
        self.failures = self.failures.saturating_add(1);
        let delay = match self.failures {
            1 => Duration::ZERO,
            n => FAILURE_DELAY
                .saturating_mul(1 << (n - 2).min(16))
                .min(MAX_FAILURE_DELAY),
        };
        let at = self.last_reply_at.map_or(now, |last| last.max(now)) + delay;
        self.last_reply_at = Some(at);
        at
    }

    /// Failed attempts on this connection so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// Redis's reply to a command sent before authenticating.
pub const NOAUTH: &str = "NOAUTH Authentication required.";
/// Redis's reply to bad credentials.
pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// Commands allowed before authenticating (Redis's `no-auth` flag).
pub fn allowed_before_auth(command: &str) -> bool {
    matches!(command, "auth" | "hello" | "quit" | "reset")
}

/// What an `AUTH` (or `HELLO … AUTH`) attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The client is now logged in as this user.
    LoggedIn(String),
    /// Wrong credentials: counted, and the reply is delayed ([`AuthThrottle`]).
    WrongPassword,
    /// Nothing was checked (a syntax error, no password configured, no `AUTH` in `HELLO`).
    NotTried,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_wait_longer_and_pipelined_ones_queue_up() {
        let mut throttle = AuthThrottle::default();
        let now = Instant::now();
        assert_eq!(
            throttle.failed(now),
            now,
            "a first typo is answered at once"
        );
        let ms = |d: u64| Duration::from_millis(d);
        // Sent together: each waits for the one before it.
        assert_eq!(throttle.failed(now), now + ms(100));
        assert_eq!(throttle.failed(now), now + ms(300));
        assert_eq!(throttle.failed(now), now + ms(700));
        let later = now + Duration::from_secs(60);
        for _ in 0..20 {
            throttle.failed(later);
        }
        let next = throttle.failed(later + Duration::from_secs(3600));
        assert_eq!(next, later + Duration::from_secs(3600) + MAX_FAILURE_DELAY);
        assert_eq!(throttle.failures(), 25);
    }
}
