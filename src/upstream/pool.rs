//! The connections to one node.

use super::budget::ReplyBudgets;
use super::connection::{supervise, Job, ReplyResult};
use super::identity::PROXY;
use super::{Lane, Settings};
use crate::error::{Cause, UpstreamError};
use crate::metrics::Metrics;
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// The connection of each (identity, RESP3) in use.
type IdentityLanes = HashMap<(u32, bool), mpsc::UnboundedSender<Job>>;

/// A fixed set of multiplexed connections to one node.
///
/// A client always uses the same connection (its *lane*) so that its pipelined commands to a
/// node are executed in the order it sent them.
#[derive(Debug)]
pub struct NodePool {
    addr: Arc<str>,
    lanes: Vec<mpsc::UnboundedSender<Job>>,
    /// The RESP3 connections, opened when the first RESP3 client needs one.
    resp3_lanes: std::sync::OnceLock<Vec<mpsc::UnboundedSender<Job>>>,
    /// One connection per (identity, RESP3) in use, opened by its first request (see
    /// [`super::identity`]), and the count of forgotten identities when last pruned.
    identity_lanes: Mutex<(IdentityLanes, u64)>,
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
    /// This node's `slotproxy_upstream_requests_total` series, resolved once.
    requests: prometheus::IntCounter,
}

impl NodePool {
    /// Starts the connection tasks for `addr`; they stop when the pool is dropped.
    pub fn spawn(addr: &str, settings: Arc<Settings>, metrics: Arc<Metrics>) -> Arc<NodePool> {
        let addr: Arc<str> = addr.into();
        let lanes = spawn_lanes(&addr, &settings, &metrics, false);
        metrics.init_node(&addr);
        let requests = metrics.upstream_requests.with_label_values(&[&addr]);
        Arc::new(NodePool {
            addr,
            lanes,
            resp3_lanes: std::sync::OnceLock::new(),
            identity_lanes: Default::default(),
            settings,
            metrics,
            requests,
        })
    }

    /// The node's `host:port`.
    pub fn addr(&self) -> &Arc<str> {
        &self.addr
    }

    /// Queues a request on the client's lane; the reply arrives on the returned receiver.
    pub fn send(&self, lane: Lane, payload: Bytes, asking: bool) -> ReplyRx {
        self.send_frames(lane, payload, asking, 1)
    }

    /// Like [`NodePool::send`] for a payload of several commands that must reach the node
    /// back to back (`MULTI … EXEC`); the reply is their `frames` replies, concatenated.
    pub fn send_frames(&self, lane: Lane, payload: Bytes, asking: bool, frames: usize) -> ReplyRx {
        self.requests.inc();
        let (reply, rx) = oneshot::channel();
        let rx = ReplyRx {
            rx,
            client: lane.client,
            budgets: self.settings.budgets.clone(),
        };
        let job = Job {
            payload,
            asking,
            frames,
            reply,
            client: lane.client,
        };
        let sent = match lane.identity {
            PROXY => {
                let lanes = match lane.resp3 {
                    false => &self.lanes,
                    true => self.resp3_lanes.get_or_init(|| {
                        spawn_lanes(&self.addr, &self.settings, &self.metrics, true)
                    }),
                };
                lanes[lane.index % lanes.len()].send(job)
            }
            identity => match self.identity_lane(identity, lane.resp3) {
                Some(tx) => tx.send(job),
                None => {
                    let _ = job.reply.send(Err(UpstreamError::Connect {
                        addr: self.addr.clone(),
                        cause: Cause::Closed("the client's node user was replaced"),
                    }));
                    return rx;
                }
            },
        };
        if let Err(mpsc::error::SendError(job)) = sent {
            let _ = job.reply.send(Err(UpstreamError::Connect {
                addr: self.addr.clone(),
                cause: Cause::Closed("connection task stopped"),
            }));
        }
        rx
    }

    /// The connection of `identity`, opened if needed; `None` once it is forgotten. Pruning
    /// the forgotten identities' connections here keeps it off the hot path.
    fn identity_lane(&self, identity: u32, resp3: bool) -> Option<mpsc::UnboundedSender<Job>> {
        let identities = &self.settings.identities;
        let mut guard = self.identity_lanes.lock();
        let (lanes, pruned_at) = &mut *guard;
        let forgotten = identities.forgotten();
        if *pruned_at != forgotten {
            *pruned_at = forgotten;
            lanes.retain(|(id, _), _| identities.get(*id).is_some());
        }
        if let Some(tx) = lanes.get(&(identity, resp3)) {
            return Some(tx.clone());
        }
        let user = identities.get(identity)?;
        let settings = Arc::new(Settings {
            connections_per_node: 1,
            switch_to: Some(user),
            ..(*self.settings).clone()
        });
        let tx = spawn_lanes(&self.addr, &settings, &self.metrics, resp3)
            .pop()
            .expect("one lane");
        lanes.insert((identity, resp3), tx.clone());
        Some(tx)
    }

    /// Sends a request and waits for its reply (at most `cluster.request_timeout_ms`).
    pub async fn request(&self, lane: Lane, payload: Bytes, asking: bool) -> ReplyResult {
        let rx = self.send(lane, payload, asking);
        wait(&self.addr, rx).await
    }
}

/// Starts `connections_per_node` connection tasks to `addr`.
fn spawn_lanes(
    addr: &Arc<str>,
    settings: &Arc<Settings>,
    metrics: &Arc<Metrics>,
    resp3: bool,
) -> Vec<mpsc::UnboundedSender<Job>> {
    (0..settings.connections_per_node.max(1))
        .map(|_| {
            let (tx, rx) = mpsc::unbounded_channel();
            let task = supervise(addr.clone(), settings.clone(), metrics.clone(), rx, resp3);
            tokio::spawn(task);
            tx
        })
        .collect()
}

/// Where one request's reply arrives. The node connection charged the reply's bytes to the
/// client ([`super::budget`]); taking it from here (or dropping it unread) releases them.
#[derive(Debug)]
pub struct ReplyRx {
    rx: oneshot::Receiver<ReplyResult>,
    client: u32,
    budgets: Arc<ReplyBudgets>,
}

impl std::future::Future for ReplyRx {
    type Output = Result<ReplyResult, oneshot::error::RecvError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let polled = std::pin::Pin::new(&mut self.rx).poll(cx);
        if let std::task::Poll::Ready(Ok(Ok(reply))) = &polled {
            self.budgets.release(self.client, reply.len());
        }
        polled
    }
}

impl Drop for ReplyRx {
    fn drop(&mut self) {
        if let Ok(Ok(reply)) = self.rx.try_recv() {
            self.budgets.release(self.client, reply.len());
        }
    }
}

/// Waits for a reply from `addr`. No timer here: the connection answers a request that
/// waited longer than `cluster.request_timeout_ms` with [`UpstreamError::Timeout`] itself.
pub async fn wait(addr: &Arc<str>, rx: ReplyRx) -> ReplyResult {
    rx.await.unwrap_or_else(|_| Err(lost(addr)))
}

/// The error for a reply channel whose connection task ended without answering.
pub fn lost(addr: &Arc<str>) -> UpstreamError {
    UpstreamError::Lost {
        addr: addr.clone(),
        cause: Cause::Closed("connection task ended"),
        maybe_executed: true,
    }
}
