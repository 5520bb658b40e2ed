//! A client's own connection to one node, for what cannot share a multiplexed connection:
//! the keys it WATCHes (watches live in the node's connection state) and commands that block
//! (a blocked command would hold up every client queued behind it).
//!
//! The connection is opened on first use and follows the slot to whichever node owns it;
//! it closes with the client session, which releases whatever the node held for it.

use crate::cluster::router::Router;
use crate::error::UpstreamError;
use crate::protocol::{reply, scan};
use crate::upstream::control::ControlConn;
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use std::time::Duration;

/// The client's pinned connection, shared between the session and the reply futures that use
/// it one at a time (the session runs them exclusively, in request order).
pub type SharedPinned = Arc<tokio::sync::Mutex<Pinned>>;

/// One lazily opened connection, re-aimed when the slot it serves moves.
#[derive(Debug, Default)]
pub struct Pinned {
    conn: Option<ControlConn>,
}

const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";

impl Pinned {
    /// The node the connection is aimed at, if any.
    pub fn addr(&self) -> Option<&str> {
        self.conn.as_ref().map(ControlConn::addr)
    }

    /// Whether the connection speaks RESP3.
    pub fn resp3(&self) -> bool {
        self.conn.as_ref().is_some_and(ControlConn::resp3)
    }

    /// How often the connection was (re)opened; WATCH state survives only while this stays.
    pub fn connects(&self) -> u64 {
        self.conn.as_ref().map_or(0, ControlConn::connects)
    }

    /// Sends `payload` (producing `frames` replies) to `addr`, re-aiming the connection there
    /// (and to the client's protocol) first if needed; `asking` sends `ASKING` before it.
    pub async fn call(
        &mut self,
        router: &Router,
        to: (&str, bool),
        payload: &[u8],
        frames: usize,
        asking: bool,
        timeout: Duration,
    ) -> Result<Vec<Bytes>, UpstreamError> {
        let (addr, resp3) = to;
        let aimed = self.conn.as_ref().map(|c| (c.addr(), c.resp3()));
        if aimed != Some((addr, resp3)) {
            let settings = router.topology.settings().clone();
            self.conn = Some(ControlConn::with_protocol(addr, settings, resp3));
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(UpstreamError::Connect {
                addr: addr.into(),
                cause: crate::error::Cause::Closed("no connection"),
            });
        };
        if !asking {
            return conn.call_raw(payload, frames, timeout).await;
        }
        let mut both = BytesMut::with_capacity(ASKING.len() + payload.len());
        both.extend_from_slice(ASKING);
        both.extend_from_slice(payload);
        let mut replies = conn.call_raw(&both, frames + 1, timeout).await?;
        replies.remove(0);
        Ok(replies)
    }

    /// Drops the connection, and with it anything the node kept for it.
    pub fn close(&mut self) {
        self.conn = None;
    }
}

/// What one command on the pinned connection came to.
pub enum Outcome {
    /// The node's reply, for the client.
    Reply(Bytes),
    /// The slot left the node the connection was aimed at (`MOVED`): the map was told.
    Moved,
}

/// Sends one command about `slot` on the pinned connection to the slot's owner, following
/// `ASK` and waiting out `TRYAGAIN`/`CLUSTERDOWN` like [`Router::send`]; a `MOVED` is
/// returned as [`Outcome::Moved`] so that the caller decides (re-issue, or give up a watch).
///
/// `payload` makes the command afresh for each attempt (a blocking command's timeout
/// shrinks); `timeout` is the wait for one attempt's reply.
pub async fn call_for_slot(
    router: &Router,
    pinned: &mut Pinned,
    (slot, resp3): (Option<u16>, bool),
    mut payload: impl FnMut() -> (Bytes, Duration),
) -> Outcome {
    let mut ask: Option<String> = None;
    let mut retries = 0u32;
    loop {
        let addr = match (&ask, router.owner_addr(slot)) {
            (Some(addr), _) => addr.clone(),
            (None, Some(addr)) => addr,
            (None, None) => {
                if retries >= router.max_retries() {
                    return Outcome::Reply(reply::error("CLUSTERDOWN Hash slot not served"));
                }
                router.topology.request_refresh();
                tokio::time::sleep(router.backoff(retries)).await;
                retries += 1;
                continue;
            }
        };
        let (command, timeout) = payload();
        let result = pinned
            .call(router, (&addr, resp3), &command, 1, ask.is_some(), timeout)
            .await;
        ask = None;
        let raw = match result.map(|mut r| r.pop()) {
            Ok(Some(raw)) => raw,
            Ok(None) => return Outcome::Reply(reply::error("ERR slotproxy: no reply")),
            Err(error @ UpstreamError::Connect { .. }) if retries < router.max_retries() => {
                tracing::debug!(%error, "pinned connection: retrying");
                router.topology.request_refresh();
                tokio::time::sleep(router.backoff(retries)).await;
                retries += 1;
                continue;
            }
            Err(error) => return Outcome::Reply(error.to_reply()),
        };
        match scan::classify(&raw) {
            scan::Redirect::None if !raw.starts_with(b"-UNBLOCKED") => return Outcome::Reply(raw),
            scan::Redirect::Moved(moved_slot, to) => {
                router.metrics.redirects.with_label_values(&["moved"]).inc();
                router.topology.note_moved(moved_slot, to);
                return Outcome::Moved;
            }
            scan::Redirect::Ask(to) => {
                router.metrics.redirects.with_label_values(&["ask"]).inc();
                if retries >= router.max_retries() {
                    return Outcome::Reply(raw);
                }
                retries += 1;
                ask = Some(to.to_string());
            }
            _ => {
                // TRYAGAIN, CLUSTERDOWN, or UNBLOCKED (the cluster went down while blocked).
                if retries >= router.max_retries() {
                    return Outcome::Reply(raw);
                }
                router.topology.request_refresh();
                tokio::time::sleep(router.backoff(retries)).await;
                retries += 1;
            }
        }
    }
}
