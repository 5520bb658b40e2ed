//! Sending one command to the right node and hiding cluster redirects from the client.
//!
//! `MOVED` → retry on the named node and have the slot map refreshed; `ASK` → `ASKING` plus
//! the command on the named node, map untouched; `TRYAGAIN`/`CLUSTERDOWN` → bounded retries
//! with exponential backoff. A lost connection is retried only when the command certainly
//! did not run, or cannot change data.

use crate::cluster::Topology;
use crate::config::ClusterSection;
use crate::error::UpstreamError;
use crate::metrics::Metrics;
use crate::protocol::request::encode_command;
use crate::protocol::{command::parse_getkeys_reply, reply, scan};
use crate::upstream::connection::ReplyResult;
use crate::upstream::pool::NodePool;
use crate::upstream::Lane;
use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt};
use std::sync::Arc;
use std::time::Duration;

/// Routing and retry policy, shared by all sessions.
#[derive(Debug)]
pub struct Router {
    /// The cluster view.
    pub topology: Arc<Topology>,
    /// Where redirects and errors are counted.
    pub metrics: Arc<Metrics>,
    timeout: Duration,
    max_redirects: u32,
    max_retries: u32,
    backoff: Duration,
    max_backoff: Duration,
}

/// Where a command goes.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// The owner of a slot.
    Slot(u16),
    /// Any master (keyless commands).
    AnyMaster,
}

/// One command for one target, with what is needed to resend it.
#[derive(Debug)]
pub struct Call {
    /// The client's connection lane.
    pub lane: Lane,
    /// Where it goes.
    pub target: Target,
    /// The encoded command.
    pub payload: Bytes,
    /// How to retry it.
    pub retry: Retry,
}

/// A call queued on a node connection, its reply not yet looked at.
#[derive(Debug)]
pub struct InFlight {
    /// Where the connection delivers the reply.
    pub rx: crate::upstream::pool::ReplyRx,
    /// The node it went to.
    pub pool: Arc<NodePool>,
    /// The call, for a redirect or retry.
    pub call: Call,
}

/// What [`Router::start`] did with a call.
#[derive(Debug)]
pub enum Started {
    /// Queued on the owner's connection.
    Sent(InFlight),
    /// No node serves the target yet; [`Router::send_call`]'s retries will wait for one.
    NoNode(Call),
}

/// Retry rules for one call.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// The command may change data: never resent once it may have run.
    pub write: bool,
    /// Return `TRYAGAIN` at once instead of waiting it out: the caller will split the
    /// multi-key command into single-key commands, which a migrating slot always serves.
    pub tryagain_is_final: bool,
    /// Replies the payload produces: 1 for a command, more for a `MULTI … EXEC` block, whose
    /// outcome is its first redirect (Redis then discarded the whole block) or else EXEC's
    /// reply.
    pub frames: usize,
}

impl Retry {
    /// The rules for one plain command: retried unless it is a write that may have run.
    pub fn single(write: bool) -> Retry {
        Retry {
            write,
            tryagain_is_final: false,
            frames: 1,
        }
    }
}

impl Router {
    /// A router with the `[cluster]` retry settings.
    pub fn new(topology: Arc<Topology>, metrics: Arc<Metrics>, config: &ClusterSection) -> Router {
        Router {
            topology,
            metrics,
            timeout: config.request_timeout(),
            max_redirects: config.max_redirects,
            max_retries: config.max_retries,
            backoff: Duration::from_millis(config.retry_backoff_ms),
            max_backoff: Duration::from_millis(config.retry_max_backoff_ms),
        }
    }

    fn resolve(&self, target: Target, lane: Lane) -> Option<Arc<NodePool>> {
        let current = self.topology.current();
        let snapshot = current.as_ref()?;
        match target {
            Target::Slot(slot) => snapshot.owner(slot).cloned(),
            Target::AnyMaster => snapshot.any_master(lane).cloned(),
        }
    }

    /// The address of the node serving `slot` (any master for `None`), from the current map.
    pub fn owner_addr(&self, slot: Option<u16>) -> Option<String> {
        let target = slot.map(Target::Slot).unwrap_or(Target::AnyMaster);
        self.resolve(target, Lane::default())
            .map(|pool| pool.addr().to_string())
    }

    /// How many times a failed call is retried (`cluster.max_retries`).
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// The wait for one node reply (`cluster.request_timeout_ms`).
    pub fn request_timeout(&self) -> Duration {
        self.timeout
    }

    /// The pause before retry number `attempt` (exponential, capped).
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.backoff
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_backoff)
    }

    /// Sends `payload` to `target` and returns the reply the client should see.
    pub async fn send(&self, lane: Lane, target: Target, payload: Bytes, write: bool) -> Bytes {
        self.send_call(lane, target, payload, Retry::single(write))
            .await
    }

    /// Like [`Router::send`], with the retry rules spelled out.
    pub async fn send_call(
        &self,
        lane: Lane,
        target: Target,
        payload: Bytes,
        retry: Retry,
    ) -> Bytes {
        let call = Call {
            lane,
            target,
            payload,
            retry,
        };
        match self.start(call) {
            Started::Sent(flight) => {
                let result = crate::upstream::pool::wait(flight.pool.addr(), flight.rx).await;
                self.drive(flight.call, Some(flight.pool), Some(result))
                    .await
            }
            Started::NoNode(call) => self.drive(call, None, None).await,
        }
    }

    /// Queues `call` on its node's connection now, without waiting: the first half of
    /// [`Router::send_call`]. The session keeps the [`InFlight`] in its reply queue and
    /// hands the reply to [`Router::settle`]; no future is allocated unless the reply is a
    /// redirect or an error.
    pub fn start(&self, call: Call) -> Started {
        if let Target::Slot(slot) = call.target {
            self.metrics.slot_stats.record(slot);
        }
        match self.resolve(call.target, call.lane) {
            Some(pool) => {
                let rx =
                    pool.send_frames(call.lane, call.payload.clone(), false, call.retry.frames);
                Started::Sent(InFlight { rx, pool, call })
            }
            None => Started::NoNode(call),
        }
    }

    /// Finishes a call that [`Router::start`] could not send (no node known).
    pub fn finish_unsent(self: &Arc<Self>, call: Call) -> BoxFuture<'static, Bytes> {
        let router = self.clone();
        async move { router.drive(call, None, None).await }.boxed()
    }

    /// The client's reply for a started call whose node answered `result`: at once when it
    /// is final (`Ok`), else the future that follows the redirect or retries (`Err`).
    pub fn settle(
        self: &Arc<Self>,
        flight: InFlight,
        result: ReplyResult,
    ) -> Result<Bytes, BoxFuture<'static, Bytes>> {
        match result {
            Ok(reply)
                if flight.call.retry.frames == 1
                    && scan::classify(&reply) == scan::Redirect::None =>
            {
                Ok(reply)
            }
            result => {
                let router = self.clone();
                Err(async move {
                    router
                        .drive(flight.call, Some(flight.pool), Some(result))
                        .await
                }
                .boxed())
            }
        }
    }

    /// Follows a call to its final reply: sends it (unless `first` already holds the node's
    /// reply), follows redirects and retries within the limits.
    async fn drive(
        &self,
        call: Call,
        mut node: Option<Arc<NodePool>>,
        mut first: Option<ReplyResult>,
    ) -> Bytes {
        let Call {
            lane,
            target,
            payload,
            retry,
        } = call;
        let mut asking = false;
        let (mut redirects, mut retries) = (0u32, 0u32);
        loop {
            let next = match node.take() {
                None => Next::Wait(Wait::Unreachable, None),
                Some(pool) => {
                    let result = match first.take() {
                        Some(result) => result,
                        None => {
                            let rx = pool.send_frames(lane, payload.clone(), asking, retry.frames);
                            crate::upstream::pool::wait(pool.addr(), rx).await
                        }
                    };
                    self.judge(result, &retry)
                }
            };
            match next {
                Next::Done(reply) => return reply,
                Next::Follow(hop, reply) => {
                    self.metrics
                        .redirects
                        .with_label_values(&[hop.label()])
                        .inc();
                    redirects += 1;
                    if redirects > self.max_redirects {
                        self.exhausted("redirects");
                        return too_many(&reply);
                    }
                    if let Hop::Moved(slot, addr) = &hop {
                        self.topology.note_moved(*slot, addr);
                    }
                    node = Some(self.topology.pool_for(hop.addr()));
                    asking = matches!(hop, Hop::Ask(_));
                }
                Next::Wait(wait, reply) => {
                    if let Some(label) = wait.redirect_label() {
                        self.metrics.redirects.with_label_values(&[label]).inc();
                    }
                    if wait == Wait::TryAgain && retry.tryagain_is_final {
                        return reply.unwrap_or_default();
                    }
                    if retries >= self.max_retries {
                        self.exhausted(wait.exhausted_label());
                        return reply.unwrap_or_else(|| match target {
                            Target::Slot(_) => reply::error("CLUSTERDOWN Hash slot not served"),
                            Target::AnyMaster => reply::error("ERR slotproxy: no master is known"),
                        });
                    }
                    if wait.needs_refresh() {
                        self.topology.request_refresh();
                    }
                    tokio::time::sleep(self.backoff(retries)).await;
                    retries += 1;
                    // A fresh start after the pause: an ASK then TRYAGAIN cycle of a slot in
                    // mid-migration is bounded by the retries, not the redirect limit.
                    if wait.redirect_label().is_some() {
                        redirects = 0;
                    }
                    node = self.resolve(target, lane);
                    asking = false;
                }
            }
        }
    }

    /// What to do with one node reply (or failure) of a call.
    fn judge(&self, result: ReplyResult, retry: &Retry) -> Next {
        let reply = match result {
            Ok(reply) if retry.frames > 1 => block_outcome(reply),
            Ok(reply) => reply,
            Err(error) => {
                self.count_error(&error);
                if error.forbids_resend(retry.write) {
                    return Next::Done(error.to_reply());
                }
                return Next::Wait(Wait::Failed, Some(error.to_reply()));
            }
        };
        let hop = match scan::classify(&reply) {
            scan::Redirect::None => None,
            scan::Redirect::Moved(slot, addr) => Some(Hop::Moved(slot, addr.to_string())),
            scan::Redirect::Ask(addr) => Some(Hop::Ask(addr.to_string())),
            scan::Redirect::TryAgain => return Next::Wait(Wait::TryAgain, Some(reply)),
            scan::Redirect::ClusterDown => return Next::Wait(Wait::ClusterDown, Some(reply)),
        };
        match hop {
            None => Next::Done(reply),
            Some(hop) => Next::Follow(hop, reply),
        }
    }

    fn exhausted(&self, kind: &str) {
        self.metrics
            .retries_exhausted
            .with_label_values(&[kind])
            .inc();
    }

    /// Sends `payload` to one specific node, without redirect handling (fan-out).
    pub async fn send_to_node(&self, pool: &NodePool, lane: Lane, payload: Bytes) -> Bytes {
        match pool.request(lane, payload, false).await {
            Ok(reply) => reply,
            Err(error) => {
                self.count_error(&error);
                error.to_reply()
            }
        }
    }

    /// Asks the cluster where the keys of `args` are (`COMMAND GETKEYS`), for commands whose
    /// key specs are incomplete. `Ok(empty)` means the call has no keys.
    pub async fn cluster_getkeys(&self, lane: Lane, args: &[Bytes]) -> Result<Vec<Bytes>, Bytes> {
        let mut query: Vec<&[u8]> = vec![b"COMMAND", b"GETKEYS"];
        query.extend(args.iter().map(|a| a.as_ref()));
        let raw = self
            .send(lane, Target::AnyMaster, encode_command(&query), false)
            .await;
        match parse_getkeys_reply(&raw) {
            Some(keys) => Ok(keys),
            None if raw.starts_with(b"-ERR The command has no key arguments") => Ok(Vec::new()),
            None => Err(raw),
        }
    }

    /// Counts a failed node request in `slotproxy_upstream_errors_total`.
    pub fn count_error(&self, error: &UpstreamError) {
        let (addr, kind) = match error {
            UpstreamError::Connect { addr, .. } => (addr, "connect"),
            UpstreamError::Lost { addr, .. } => (addr, "connection_lost"),
            UpstreamError::Timeout { addr, .. } => (addr, "timeout"),
        };
        self.metrics
            .upstream_errors
            .with_label_values(&[addr, kind])
            .inc();
    }
}

/// What [`Router::drive`] does next with a call.
enum Next {
    /// This is the client's reply.
    Done(Bytes),
    /// Send the call to another node at once (the redirect reply, for the error when there
    /// were too many).
    Follow(Hop, Bytes),
    /// Pause, then send it again to the slot's owner; the reply to give when the retries are
    /// used up (`None`: no node answered).
    Wait(Wait, Option<Bytes>),
}

/// A redirect to another node.
enum Hop {
    /// `MOVED`: the slot lives there now (the map is told).
    Moved(u16, String),
    /// `ASK`: this one command goes there, behind `ASKING`.
    Ask(String),
}

impl Hop {
    fn addr(&self) -> &str {
        match self {
            Hop::Moved(_, addr) | Hop::Ask(addr) => addr,
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Hop::Moved(..) => "moved",
            Hop::Ask(_) => "ask",
        }
    }
}

/// Why a call waits before it is sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// No node serves the target (yet).
    Unreachable,
    /// The node could not be reached or the connection broke (and resending is safe).
    Failed,
    /// `TRYAGAIN`: a multi-key command met a slot in mid-migration.
    TryAgain,
    /// `CLUSTERDOWN`: the cluster cannot serve the slot right now.
    ClusterDown,
}

impl Wait {
    /// The `slotproxy_redirects_total` kind, for the waits that are cluster redirects.
    fn redirect_label(self) -> Option<&'static str> {
        match self {
            Wait::TryAgain => Some("tryagain"),
            Wait::ClusterDown => Some("clusterdown"),
            Wait::Unreachable | Wait::Failed => None,
        }
    }

    /// The `slotproxy_retries_exhausted_total` kind.
    fn exhausted_label(self) -> &'static str {
        match self {
            Wait::Unreachable | Wait::Failed => "unreachable",
            Wait::TryAgain => "tryagain",
            Wait::ClusterDown => "clusterdown",
        }
    }

    /// Whether the slot map should be reloaded before the next try.
    fn needs_refresh(self) -> bool {
        !matches!(self, Wait::TryAgain)
    }
}

/// The one reply that decides a `MULTI … EXEC` block's fate: the first queued reply that is a
/// redirect (Redis discards the whole block then), else EXEC's own reply (the last frame).
fn block_outcome(replies: Bytes) -> Bytes {
    let mut rest = replies.clone();
    let mut last = Bytes::new();
    while let Ok(Some(len)) = scan::frame_len(&rest) {
        let frame = rest.split_to(len);
        if scan::classify(&frame) != scan::Redirect::None {
            return frame;
        }
        last = frame;
    }
    last
}

fn too_many(last: &[u8]) -> Bytes {
    let last = String::from_utf8_lossy(last);
    reply::error(&format!(
        "ERR slotproxy: too many cluster redirects (last: {})",
        last.trim().trim_start_matches('-')
    ))
}
