//! Blocking commands (BLPOP and friends, XREAD … BLOCK) and WAIT.
//!
//! A blocking command runs on the client's own pinned connection, so it never holds up the
//! shared connections. When its slot moves while it waits, Redis answers it `MOVED` (nothing
//! was popped); the proxy then re-issues it on the new owner with what is left of the
//! client's timeout, so an element arrives exactly once and the client never sees the move.
//!
//! WAIT must count the replicas that acknowledged the client's own writes. Those went over
//! the client's lane of the shared connection to the node of its last write, so WAIT is asked
//! there. Asked with the client's timeout, it would block every client sharing the lane; the
//! proxy therefore polls with `WAIT n 1` (at most 1 ms, and Redis answers as soon as the
//! replicas acknowledged) until enough replicas acknowledged or the timeout passed.

use super::clients::ClientHandle;
use super::pinned::{call_for_slot, Outcome, SharedPinned};
use crate::cluster::router::{Router, Target};
use crate::protocol::command::Timeout;
use crate::protocol::request::encode_command;
use crate::protocol::{parse_i64, reply, scan};
use crate::upstream::Lane;
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the timeout is, and how long it is.
struct Deadline {
    /// Argument index of the timeout.
    index: usize,
    /// Seconds (`false`: milliseconds).
    seconds: bool,
    /// `None`: wait forever (timeout 0).
    at: Option<Instant>,
}

/// A blocking command, ready to run.
pub struct BlockingCall {
    /// The client's arguments.
    pub args: Vec<Bytes>,
    /// The slot of its keys.
    pub slot: u16,
    /// Where its timeout is.
    pub timeout: Timeout,
    /// The client speaks RESP3.
    pub resp3: bool,
    /// The client, for CLIENT UNBLOCK.
    pub handle: Arc<ClientHandle>,
}

/// Runs a blocking command on the client's pinned connection, re-issuing it after slot moves;
/// CLIENT UNBLOCK from another client ends it early.
pub async fn run(router: Arc<Router>, pinned: SharedPinned, call: BlockingCall) -> Bytes {
    let handle = call.handle.clone();
    handle.set_blocked(true);
    let woken = tokio::select! {
        reply = wait_for_data(&router, &pinned, &call) => Err(reply),
        _ = handle.unblock.notified() => Ok(()),
    };
    let reply = match woken {
        Err(reply) => reply,
        Ok(()) => {
            // Close the connection the abandoned command waits on, so that the node does not
            // pop an element for it that nobody would read.
            pinned.lock().await.close();
            match handle.unblocked_with_error() {
                true => reply::error("UNBLOCKED client unblocked via CLIENT UNBLOCK"),
                false => timed_out(&call),
            }
        }
    };
    handle.set_blocked(false);
    reply
}

/// What the command answers when its timeout passes with no data.
fn timed_out(call: &BlockingCall) -> Bytes {
    let single_value = call.args.first().is_some_and(|n| {
        n.eq_ignore_ascii_case(b"blmove") || n.eq_ignore_ascii_case(b"brpoplpush")
    });
    match single_value {
        true => reply::null_for(call.resp3),
        false => reply::null_array_for(call.resp3),
    }
}

async fn wait_for_data(router: &Arc<Router>, pinned: &SharedPinned, call: &BlockingCall) -> Bytes {
    // A timeout that is not a number is sent as it is: the node words the error.
    let deadline = deadline(&call.args, call.timeout).unwrap_or_default();
    let mut pinned = pinned.lock().await;
    let margin = router.request_timeout();
    let mut moves = 0u32;
    loop {
        let outcome = call_for_slot(router, &mut pinned, (Some(call.slot), call.resp3), || {
            command_with_remaining(&call.args, deadline.as_ref(), margin)
        })
        .await;
        match outcome {
            Outcome::Reply(reply) => return reply,
            Outcome::Moved if moves < router.max_retries() => {
                // The first re-issue goes at once; a slot still handing over (the map not yet
                // caught up) gets the router's growing pause, as other redirects do.
                if moves > 0 {
                    tokio::time::sleep(router.backoff(moves - 1)).await;
                }
                moves += 1;
                tracing::debug!(slot = call.slot, "blocked command's slot moved; re-issuing");
            }
            Outcome::Moved => {
                return reply::error("ERR slotproxy: the key's slot kept moving; try again")
            }
        }
    }
}

/// Reads the client's timeout; `Err` when it is not a number (the node will say so).
fn deadline(args: &[Bytes], kind: Timeout) -> Result<Option<Deadline>, ()> {
    let (index, seconds) = match kind {
        Timeout::LastSeconds => (args.len() - 1, true),
        Timeout::FirstSeconds => (1, true),
        Timeout::BlockMillis => {
            let Some(i) = args.iter().position(|a| a.eq_ignore_ascii_case(b"block")) else {
                return Err(());
            };
            (i + 1, false)
        }
    };
    let text = std::str::from_utf8(args.get(index).ok_or(())?).map_err(|_| ())?;
    let value: f64 = text.parse().map_err(|_| ())?;
    if !value.is_finite() || value < 0.0 {
        return Err(());
    }
    let wait = if seconds {
        Duration::from_secs_f64(value.min(1e9))
    } else {
        Duration::from_millis(value.min(1e12) as u64)
    };
    let at = (!wait.is_zero()).then(|| Instant::now() + wait);
    Ok(Some(Deadline { index, seconds, at }))
}

/// The command with its timeout cut to what is left, and how long to wait for its reply.
fn command_with_remaining(
    args: &[Bytes],
    deadline: Option<&Deadline>,
    margin: Duration,
) -> (Bytes, Duration) {
    // Waiting "forever" still needs a bound for the timer; a century will do.
    const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    let Some(deadline) = deadline else {
        return (encode_command(args), margin);
    };
    let Some(at) = deadline.at else {
        return (encode_command(args), FOREVER);
    };
    // Never 0, which would mean "forever" to the node.
    let left = at
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    let text = if deadline.seconds {
        format!("{:.3}", left.as_secs_f64())
    } else {
        left.as_millis().to_string()
    };
    let mut args = args.to_vec();
    args[deadline.index] = Bytes::from(text);
    (encode_command(&args), left + margin)
}

/// WAIT numreplicas timeout, polled on the lane that carried the client's writes.
pub async fn wait(
    router: Arc<Router>,
    lane: Lane,
    last_write: Option<u16>,
    args: Vec<Bytes>,
) -> Bytes {
    let (Some(wanted), Some(timeout_ms)) = (parse_i64(&args[1]), parse_i64(&args[2])) else {
        return reply::error("ERR value is not an integer or out of range");
    };
    if timeout_ms < 0 {
        return reply::error("ERR timeout is negative");
    }
    let deadline =
        (timeout_ms > 0).then(|| Instant::now() + Duration::from_millis(timeout_ms as u64));
    let target = last_write.map(Target::Slot).unwrap_or(Target::AnyMaster);
    let poll = encode_command(&[&b"WAIT"[..], &args[1], b"1"]);
    loop {
        let raw = router.send(lane, target, poll.clone(), false).await;
        let Some(acked) = scan::integer(&raw) else {
            return raw;
        };
        if acked >= wanted || deadline.is_some_and(|d| Instant::now() >= d) {
            return raw;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
