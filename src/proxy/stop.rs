//! The two reasons a session stops early, watched at almost no cost per command.
//!
//! A session loop's `select!` polls every branch on every pass. Two `cancelled()` futures
//! there (shutdown, and CLIENT KILL or a subscriber's overflow) cost about 9% of the proxy's
//! user-space instructions per command at pipeline 1 (callgrind): each poll goes through the
//! token's notify state. Here they sit in a `FuturesUnordered`, which polls a future only
//! after that future's own waker fired, so a pass where neither token was cancelled costs a
//! couple of atomic operations.

use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use tokio_util::sync::CancellationToken;

/// Why a session must stop early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The proxy shuts down: stop reading, finish what is in flight.
    Shutdown,
    /// The client was killed (CLIENT KILL, or a subscriber too far behind): leave now.
    Killed,
}

/// A session's watch on its shutdown and kill tokens.
pub struct StopSignals(FuturesUnordered<BoxFuture<'static, Stop>>);

impl StopSignals {
    /// Watches `shutdown` and `kill` (the session's own tokens, so that a cancellation wakes
    /// only the sessions it concerns).
    pub fn new(shutdown: CancellationToken, kill: CancellationToken) -> StopSignals {
        let signals = FuturesUnordered::new();
        signals.push(shutdown.cancelled_owned().map(|()| Stop::Shutdown).boxed());
        signals.push(kill.cancelled_owned().map(|()| Stop::Killed).boxed());
        StopSignals(signals)
    }

    /// The next reason to stop; each is reported once, and after both, never again.
    pub async fn next(&mut self) -> Stop {
        match self.0.next().await {
            Some(stop) => stop,
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn each_reason_is_reported_once_then_nothing() {
        let (shutdown, kill) = (CancellationToken::new(), CancellationToken::new());
        let mut signals = StopSignals::new(shutdown.clone(), kill.clone());
        let quiet = tokio::time::timeout(Duration::from_millis(20), signals.next()).await;
        assert!(quiet.is_err(), "nothing was cancelled yet");
        kill.cancel();
        assert_eq!(signals.next().await, Stop::Killed);
        shutdown.cancel();
        assert_eq!(signals.next().await, Stop::Shutdown);
        let after = tokio::time::timeout(Duration::from_millis(20), signals.next()).await;
        assert!(after.is_err(), "both were reported already");
    }
}
