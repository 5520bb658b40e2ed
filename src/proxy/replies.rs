//! A session's replies in the making, kept in request order.
//!
//! Most commands go to one node and get a plain reply. They are kept as the node's reply
//! channel ([`Reply::Node`]): nothing is allocated and nothing polled until the command
//! reaches the head of the queue, and only the head's channel holds the session's waker.
//! Everything else (split and fan-out commands, redirects, retries, local commands that ask
//! the cluster) is a boxed future that runs in the background set until its reply is due.
//! (This replaced a `FuturesOrdered` of boxed futures: two boxes and a task per command.)

use crate::cluster::router::{InFlight, Router};
use crate::metrics::{CommandGroup, Metrics};
use crate::protocol::command::CommandInfo;
use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// How a command's reply will come.
pub enum Reply {
    /// Known now.
    Ready(Bytes),
    /// Sent to one node; the reply arrives on the channel.
    Node(InFlight),
    /// Anything that takes more work than one node round trip.
    Future(BoxFuture<'static, Bytes>),
}

/// What the metrics need to know about a command when its reply is written.
pub struct Observed {
    /// The command, when the cluster knows it.
    pub command: Option<Arc<CommandInfo>>,
    /// Its latency group.
    pub group: CommandGroup,
    /// When it was read.
    pub started: Instant,
    /// CLIENT REPLY OFF/SKIP: the reply is dropped, not written.
    pub silent: bool,
    /// Even so, a reply that is not an error is written: the command's confirmations are
    /// pushes (`SUBSCRIBE` …), which Redis sends under `CLIENT REPLY OFF` too.
    pub pushes: bool,
}

/// Where an entry's reply stands.
enum Stage {
    Ready(Bytes),
    Node(InFlight),
    /// Running in the background set, which will fill the entry in.
    Background,
}

struct Entry {
    stage: Stage,
    observed: Option<Observed>,
}

/// A boxed reply future tagged with its entry's sequence number.
struct Tagged {
    seq: u64,
    reply: BoxFuture<'static, Bytes>,
}

impl Future for Tagged {
    type Output = (u64, Bytes);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<(u64, Bytes)> {
        let seq = self.seq;
        self.reply.as_mut().poll(cx).map(|reply| (seq, reply))
    }
}

/// The replies a session still owes its client, in request order.
pub struct ReplyQueue {
    entries: VecDeque<Entry>,
    /// The sequence number of `entries[0]`.
    first_seq: u64,
    background: FuturesUnordered<Tagged>,
    router: Arc<Router>,
    metrics: Arc<Metrics>,
}

impl ReplyQueue {
    /// An empty queue; redirects are followed with `router`, replies counted in `metrics`.
    pub fn new(router: Arc<Router>, metrics: Arc<Metrics>) -> ReplyQueue {
        ReplyQueue {
            entries: VecDeque::new(),
            first_seq: 0,
            background: FuturesUnordered::new(),
            router,
            metrics,
        }
    }

    /// Replies still owed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether every reply was handed out.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Queues the next reply; `observed` is counted when it is handed out.
    ///
    /// A future is polled once right here, so that the requests it sends reach their nodes
    /// before those of commands queued after it (pipelined commands to one node must run in
    /// order). That first poll uses a no-op waker; the next [`ReplyQueue::poll_drain`],
    /// which always comes before the session sleeps, polls it with the real one.
    pub fn push(&mut self, reply: Reply, observed: Option<Observed>) {
        let seq = self.first_seq + self.entries.len() as u64;
        let stage = match reply {
            Reply::Ready(bytes) => Stage::Ready(bytes),
            Reply::Node(flight) => Stage::Node(flight),
            Reply::Future(mut reply) => {
                let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
                match reply.as_mut().poll(&mut cx) {
                    Poll::Ready(bytes) => Stage::Ready(bytes),
                    Poll::Pending => {
                        self.background.push(Tagged { seq, reply });
                        Stage::Background
                    }
                }
            }
        };
        self.entries.push_back(Entry { stage, observed });
    }

    /// Appends every reply that is due and ready, in order, to `out`. `Ready` once at least
    /// one was appended (or dropped, for CLIENT REPLY OFF); `Pending` registers the waker.
    pub fn poll_drain(&mut self, cx: &mut Context<'_>, out: &mut BytesMut) -> Poll<()> {
        let mut now = None;
        let mut handed_out = false;
        loop {
            while let Poll::Ready(Some((seq, reply))) = self.background.poll_next_unpin(cx) {
                let index = seq.wrapping_sub(self.first_seq) as usize;
                if let Some(entry) = self.entries.get_mut(index) {
                    entry.stage = Stage::Ready(reply);
                }
            }
            let Some(head) = self.entries.front_mut() else {
                break;
            };
            if let Stage::Node(flight) = &mut head.stage {
                let Poll::Ready(result) = Pin::new(&mut flight.rx).poll(cx) else {
                    break;
                };
                let Stage::Node(flight) = std::mem::replace(&mut head.stage, Stage::Background)
                else {
                    break;
                };
                let result =
                    result.unwrap_or_else(|_| Err(crate::upstream::pool::lost(flight.pool.addr())));
                match self.router.settle(flight, result) {
                    Ok(reply) => head.stage = Stage::Ready(reply),
                    Err(follow_up) => {
                        let seq = self.first_seq;
                        self.background.push(Tagged {
                            seq,
                            reply: follow_up,
                        });
                        continue;
                    }
                }
            }
            if !matches!(head.stage, Stage::Ready(_)) {
                break;
            }
            let Some(Entry {
                stage: Stage::Ready(reply),
                observed,
            }) = self.entries.pop_front()
            else {
                break;
            };
            self.first_seq += 1;
            handed_out = true;
            let silent = match observed {
                Some(o) => {
                    let now = *now.get_or_insert_with(Instant::now);
                    let elapsed = now.saturating_duration_since(o.started);
                    self.metrics
                        .observe_command(o.command.as_deref(), o.group, &reply, elapsed);
                    o.silent && (!o.pushes || reply.starts_with(b"-"))
                }
                None => false,
            };
            if !silent {
                out.extend_from_slice(&reply);
            }
        }
        match handed_out {
            true => Poll::Ready(()),
            false => Poll::Pending,
        }
    }
}
