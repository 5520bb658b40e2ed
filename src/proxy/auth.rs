//! Client authentication at the proxy: `AUTH [user] password` and `HELLO … AUTH user pass`
//! against `[auth]`. Until a client has authenticated it may only send AUTH, HELLO, QUIT and
//! RESET (everything else: `-NOAUTH`), and its requests are held to Redis's pre-auth limits
//! (at most 10 arguments, bulk strings of at most 16 KiB), so an unauthenticated stranger
//! cannot make the proxy buffer much.

use crate::config::AuthSection;
use crate::protocol::reply;
use bytes::Bytes;
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

/// Checks `user` (None: `default`) and `password` against the configuration.
pub fn check(config: &AuthSection, user: Option<&[u8]>, password: &[u8]) -> bool {
    match user {
        None | Some(b"default") => {
            // Without a requirepass the default user takes any password, as in Redis.
            config.requirepass.is_empty() || same(password, config.requirepass.as_bytes())
        }
        Some(name) => config
            .users
            .iter()
            .any(|u| u.name.as_bytes() == name && same(password, u.password.as_bytes())),
    }
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

/// `AUTH [user] password`: the reply, and what the attempt came to.
pub fn auth(config: &AuthSection, args: &[Bytes]) -> (Bytes, AuthOutcome) {
    let (user, password) = match args.len() {
        2 => (None, &args[1]),
        3 => (Some(&args[1][..]), &args[2]),
        _ => return (reply::error("ERR syntax error"), AuthOutcome::NotTried),
    };
    if !config.required() && user.is_none() {
        return (
            reply::error(
                "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
            ),
            AuthOutcome::NotTried,
        );
    }
    if check(config, user, password) {
        let user = String::from_utf8_lossy(user.unwrap_or(b"default")).into_owned();
        (reply::ok(), AuthOutcome::LoggedIn(user))
    } else {
        (reply::error(WRONGPASS), AuthOutcome::WrongPassword)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuthUser;

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

    #[test]
    fn users_and_default() {
        let config = AuthSection {
            requirepass: "pw".into(),
            users: vec![AuthUser {
                name: "app".into(),
                password: "apppw".into(),
            }],
        };
        let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        let logged_in = |user: &str| AuthOutcome::LoggedIn(user.into());
        assert_eq!(auth(&config, &[b("AUTH"), b("pw")]).1, logged_in("default"));
        assert_eq!(
            auth(&config, &[b("AUTH"), b("default"), b("pw")]).1,
            logged_in("default")
        );
        assert_eq!(
            auth(&config, &[b("AUTH"), b("app"), b("apppw")]).1,
            logged_in("app")
        );
        let (reply, outcome) = auth(&config, &[b("AUTH"), b("app"), b("pw")]);
        assert_eq!(outcome, AuthOutcome::WrongPassword);
        assert!(reply.starts_with(b"-WRONGPASS"));
        assert_eq!(
            auth(&config, &[b("AUTH"), b("nobody"), b("apppw")]).1,
            AuthOutcome::WrongPassword
        );
        assert!(allowed_before_auth("hello") && !allowed_before_auth("get"));
    }
}
