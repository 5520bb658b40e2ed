//! One client connection: read commands, queue their reply futures in order, write replies.
//!
//! Replies leave in request order even when requests go to different nodes: every command
//! gets an entry in a [`ReplyQueue`], and the session writes whatever is finished at the
//! head of the queue, batching ready replies into one write. Reading pauses while
//! `max_pipeline` commands are in flight (backpressure). A protocol error is answered after
//! all earlier replies, then the connection is closed; nothing else is affected.

use super::client_state::ClientState;
use super::dispatch::{dispatch, Dispatched};
use super::idle::IdleTimer;
use super::monitor::Subscription;
use super::pubsub::{upstream::Event, PubSub, Wakeup};
use super::replies::{Reply, ReplyQueue};
use super::stop::{Stop, StopSignals};
use super::Shared;
use crate::protocol::reply;
use crate::protocol::request::{DecodeError, RequestDecoder};
use bytes::{Bytes, BytesMut};
use futures_util::future::{self, BoxFuture};
use futures_util::stream::StreamExt;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::FramedRead;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// The first read buffer of a client connection, in bytes.
const READ_BUFFER_START: usize = 1024;

/// A request read but not started yet.
enum Held {
    Request(crate::protocol::Request),
    ProtocolError(String),
}

/// Runs a client session until the client leaves, breaks the protocol, or shutdown drains it.
///
/// Most commands start as soon as they are read. An exclusive command (see
/// [`Dispatched::Exclusive`]) waits until every earlier reply was written, runs alone, and holds
/// back the commands read after it, which wait in `held`.
///
/// The two halves are a plain TCP connection's (split without a lock) or a TLS stream's.
pub async fn run<R, W>(
    read_half: R,
    mut write_half: W,
    shared: Arc<Shared>,
    client: ClientState,
    shutdown: CancellationToken,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let limits = |authenticated: bool| match authenticated {
        true => shared.limits,
        false => shared.limits.pre_auth(),
    };
    // Small buffers to start with: they grow with a client's pipeline, and an idle
    // connection then costs little memory (see docs/perf.md).
    let mut requests = FramedRead::with_capacity(
        read_half,
        RequestDecoder::new(limits(client.authenticated)),
        READ_BUFFER_START,
    );
    let mut inflight = ReplyQueue::new(shared.router.clone(), shared.metrics.clone());
    let mut held: VecDeque<Held> = VecDeque::new();
    let mut exclusive: Option<BoxFuture<'static, Bytes>> = None;
    let mut out = BytesMut::new();
    let mut client = client;
    let max = shared.max_pipeline;
    let (mut reading, mut closing) = (true, false);
    // The session's own tokens: `overflow` also trips on CLIENT KILL, and a child of the
    // shutdown token keeps sessions off the shared token's lock. `stops` watches both for the
    // loop; `overflow` alone also ends a write blocked on a client that stopped reading.
    let mut stops = StopSignals::new(shutdown.child_token(), client.overflow.clone());
    let overflow = client.overflow.clone().cancelled_owned();
    tokio::pin!(overflow);
    let mut idle = IdleTimer::new(shared.idle_timeout);
    let budget = client.budget;
    loop {
        // One clock read for the commands dispatched together: their latency starts here.
        let mut started = None;
        while exclusive.is_none() && !closing && inflight.len() < max {
            let Some(next) = held.pop_front() else { break };
            match next {
                Held::Request(request) => {
                    let was_authenticated = client.authenticated;
                    let now = *started.get_or_insert_with(Instant::now);
                    match dispatch(&shared, &mut client, request, now) {
                        Dispatched::Queue(reply, observed) => inflight.push(reply, Some(observed)),
                        Dispatched::Exclusive(reply) => exclusive = Some(reply),
                        Dispatched::Close(last) => {
                            inflight.push(Reply::Ready(last), None);
                            closing = true;
                        }
                    }
                    if client.authenticated != was_authenticated {
                        requests
                            .decoder_mut()
                            .set_limits(limits(client.authenticated));
                    }
                }
                Held::ProtocolError(error) => {
                    let message = reply::error(&format!("ERR Protocol error: {error}"));
                    inflight.push(Reply::Ready(message), None);
                    closing = true;
                }
            }
        }
        if let (Some(at), Some(idle)) = (started, idle.as_mut()) {
            idle.active(at);
        }
        if closing {
            held.clear();
            reading = false;
        }
        if !reading && held.is_empty() && inflight.is_empty() && exclusive.is_none() {
            break;
        }
        let run_exclusive = exclusive.is_some() && inflight.is_empty();
        // Messages go out only between replies, never inside a pipeline's answers.
        let pubsub_ready = client.pubsub.is_some() && inflight.is_empty() && exclusive.is_none();
        let monitor_ready = client.monitor.is_some() && inflight.is_empty() && exclusive.is_none();
        // Only a client that waits for nothing can be idle (Redis exempts subscribers, MONITOR
        // and blocked clients too).
        let idle_watch = idle.is_some()
            && reading
            && held.is_empty()
            && inflight.is_empty()
            && exclusive.is_none()
            && client.monitor.is_none()
            && !client.pubsub.as_ref().is_some_and(|p| p.active());
        // Before AUTH, read one command at a time: the limits change with its outcome.
        let can_read = reading && held.len() < max && (client.authenticated || held.is_empty());
        tokio::select! {
            biased;
            _ = future::poll_fn(|cx| inflight.poll_drain(cx, &mut out)), if !inflight.is_empty() => {
                if !flush(&mut write_half, &mut out, &shared, budget, overflow.as_mut()).await {
                    break;
                }
            }
            event = next_pubsub(&mut client.pubsub), if pubsub_ready => {
                if let Some(state) = client.pubsub.as_mut() {
                    if let Wakeup::Message(message) = state.handle(&shared.router, event) {
                        match client.resp3 {
                            true => out.extend_from_slice(&crate::protocol::reply::as_push(message)),
                            false => out.extend_from_slice(&message),
                        }
                        if !flush(&mut write_half, &mut out, &shared, budget, overflow.as_mut()).await {
                            break;
                        }
                    }
                }
            }
            line = next_monitor_line(&mut client.monitor), if monitor_ready => {
                if let Some(line) = line {
                    out.extend_from_slice(&line);
                    if !flush(&mut write_half, &mut out, &shared, budget, overflow.as_mut()).await {
                        break;
                    }
                }
            }
            _ = IdleTimer::fired(&mut idle), if idle_watch => {
                let buffered = requests.read_buffer().len();
                if idle.as_mut().is_some_and(|i| i.expired(Instant::now(), buffered)) {
                    shared.metrics.idle_timeouts.inc();
                    tracing::debug!(client = %client.handle.peer, "closing an idle client (proxy.idle_timeout_secs)");
                    break;
                }
            }
            stop = stops.next() => match stop {
                Stop::Killed => break,
                // A blocked command cannot finish on its own: leave it.
                Stop::Shutdown if exclusive.is_some() => return,
                Stop::Shutdown => reading = false,
            },
            reply = run_alone(&mut exclusive), if run_exclusive => {
                exclusive = None;
                out.extend_from_slice(&reply);
                if !flush(&mut write_half, &mut out, &shared, budget, overflow.as_mut()).await {
                    break;
                }
            }
            frame = requests.next(), if can_read => match frame {
                Some(Ok(request)) => {
                    shared.metrics.client_bytes_received.inc_by(request.raw.len() as u64);
                    held.push_back(Held::Request(request));
                }
                Some(Err(DecodeError::Protocol(error))) => {
                    shared.metrics.protocol_errors.inc();
                    tracing::debug!(client = %client.handle.peer, %error, "closing client after protocol error");
                    held.push_back(Held::ProtocolError(error.to_string()));
                    reading = false;
                }
                Some(Err(DecodeError::Io(_))) => return,
                // The client left while blocked: drop what it waits for, releasing the node.
                None if exclusive.is_some() => return,
                // The client closed its side: finish what it asked for, then close.
                None => reading = false,
            },
        }
    }
    let budgets = &shared.router.topology.settings().budgets;
    if budgets.tripped(client.budget) {
        shared.metrics.client_output_limit_disconnects.inc();
        tracing::warn!(client = %client.handle.peer, "disconnected a client whose unread replies passed proxy.client_output_limit_bytes");
        return;
    }
    if client.overflow.is_cancelled() && !client.handle.kill.is_cancelled() {
        shared.metrics.pubsub_output_limit_disconnects.inc();
        tracing::warn!(client = %client.handle.peer, "disconnected a subscriber that fell behind (proxy.pubsub_output_limit_bytes)");
        return;
    }
    let _ = write_half.shutdown().await;
}

/// Waits for the subscriber connections' next event, if the client subscribed.
async fn next_pubsub(pubsub: &mut Option<Box<PubSub>>) -> Option<Event> {
    match pubsub.as_mut() {
        Some(state) => state.next().await,
        None => future::pending().await,
    }
}

/// The next MONITOR line (`None` when lines were missed: the feed moved on without them).
async fn next_monitor_line(monitor: &mut Option<Subscription>) -> Option<Bytes> {
    match monitor.as_mut() {
        Some(subscription) => subscription.lines.recv().await.ok(),
        None => future::pending().await,
    }
}

/// Awaits the exclusive command, if there is one.
async fn run_alone(exclusive: &mut Option<BoxFuture<'static, Bytes>>) -> Bytes {
    match exclusive.as_mut() {
        Some(reply) => reply.await,
        None => future::pending().await,
    }
}

/// Writes `out` to the client and empties it; `false` when the client is gone.
///
/// A client that stopped reading would block the write for good; its overflow token
/// (tripped as its unsent messages or replies pile up, or by CLIENT KILL) ends the wait.
async fn flush<W: AsyncWrite + Unpin>(
    write_half: &mut W,
    out: &mut BytesMut,
    shared: &Shared,
    budget: u32,
    overflow: std::pin::Pin<&mut WaitForCancellationFutureOwned>,
) -> bool {
    // What waits here counts against proxy.client_output_limit_bytes until it is written,
    // with the replies still arriving for the client (see upstream::budget).
    let budgets = &shared.router.topology.settings().budgets;
    budgets.charge(budget, out.len());
    let written = tokio::select! {
        // The write first: it usually completes at once, and the token is then not polled.
        // (The flush does nothing on TCP; rustls may hold the last record until it.)
        biased;
        written = crate::io::write_out(write_half, out) => written.is_ok(),
        _ = overflow => false,
    };
    budgets.release(budget, out.len());
    if !written {
        return false;
    }
    shared.metrics.client_bytes_sent.inc_by(out.len() as u64);
    out.clear();
    true
}
