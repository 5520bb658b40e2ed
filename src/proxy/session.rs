//! One client connection: read commands, queue their reply futures in order, write replies.
//!
//! Replies leave in request order even when requests go to different nodes: every command
//! becomes a future in a `FuturesOrdered`, and the session writes whatever is finished at the
//! head of the queue, batching ready replies into one write. Reading pauses while
//! `max_pipeline` commands are in flight (backpressure). A protocol error is answered after
//! all earlier replies, then the connection is closed; nothing else is affected.

use super::dispatch::{dispatch, Action};
use super::local::ClientState;
use super::Shared;
use crate::protocol::reply;
use crate::protocol::request::{DecodeError, RequestDecoder};
use bytes::{Bytes, BytesMut};
use futures_util::future::{self, BoxFuture, FutureExt};
use futures_util::stream::{FuturesOrdered, StreamExt};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

/// Runs a client session until the client leaves, breaks the protocol, or shutdown drains it.
pub async fn run(
    stream: TcpStream,
    shared: Arc<Shared>,
    client: ClientState,
    shutdown: CancellationToken,
) {
    let (read_half, mut write_half) = stream.into_split();
    let limits = |authenticated: bool| match authenticated {
        true => shared.limits,
        false => shared.limits.pre_auth(),
    };
    let mut requests =
        FramedRead::new(read_half, RequestDecoder::new(limits(client.authenticated)));
    let mut inflight: FuturesOrdered<BoxFuture<'static, Bytes>> = FuturesOrdered::new();
    let mut out = BytesMut::with_capacity(16 * 1024);
    let mut client = client;
    let lane = client.id as usize;
    let mut reading = true;
    loop {
        if !reading && inflight.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            Some(first) = inflight.next(), if !inflight.is_empty() => {
                out.extend_from_slice(&first);
                while let Some(Some(next)) = inflight.next().now_or_never() {
                    out.extend_from_slice(&next);
                }
                if write_half.write_all(&out).await.is_err() {
                    return;
                }
                shared.metrics.client_bytes_sent.inc_by(out.len() as u64);
                out.clear();
            }
            frame = requests.next(), if reading && inflight.len() < shared.max_pipeline => match frame {
                Some(Ok(request)) => {
                    shared.metrics.client_bytes_received.inc_by(request.raw.len() as u64);
                    let was_authenticated = client.authenticated;
                    let action = dispatch(&shared, &mut client, lane, request);
                    if client.authenticated != was_authenticated {
                        requests.decoder_mut().set_limits(limits(client.authenticated));
                    }
                    match action {
                        Action::Reply(reply) => inflight.push_back(reply),
                        Action::ReplyAndClose(last) => {
                            inflight.push_back(future::ready(last).boxed());
                            reading = false;
                        }
                    }
                }
                Some(Err(DecodeError::Protocol(error))) => {
                    shared.metrics.protocol_errors.inc();
                    tracing::debug!(client = %client.peer, %error, "closing client after protocol error");
                    let message = reply::error(&format!("ERR Protocol error: {error}"));
                    inflight.push_back(future::ready(message).boxed());
                    reading = false;
                }
                Some(Err(DecodeError::Io(_))) => return,
                // The client closed its side: finish what it asked for, then close.
                None => reading = false,
            },
            _ = shutdown.cancelled(), if reading => reading = false,
        }
    }
    let _ = write_half.shutdown().await;
}
