//! A plain request/reply connection to one node for control work: slot-map loads, and the
//! `CLUSTER SETSLOT` / `GETKEYSINSLOT` / `MIGRATE` calls of a slot migration.
//!
//! Control calls are few and some block the node for a while (`MIGRATE`), so they never
//! share the multiplexed data-path connections: a slow `MIGRATE` must not queue clients'
//! replies behind it on the proxy side. A broken or timed-out connection is dropped and
//! reopened on the next call, so a late reply can never be taken for the answer to a later
//! request.

use super::stream::NodeStream;
use super::Settings;
use crate::error::{Cause, UpstreamError};
use crate::protocol::{request::encode_command, scan::ReplyScanner};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// A lazily (re)connected control connection to one node.
#[derive(Debug)]
pub struct ControlConn {
    addr: Arc<str>,
    settings: Arc<Settings>,
    stream: Option<NodeStream>,
    buf: BytesMut,
    connects: u64,
    /// A call is between its write and its last reply; seen at the start of a call, it means
    /// the previous call was cancelled and its reply may still arrive, so the stream is
    /// replaced.
    busy: bool,
    resp3: bool,
}

impl ControlConn {
    /// A connection to `addr`; nothing is opened until the first call.
    pub fn new(addr: &str, settings: Arc<Settings>) -> ControlConn {
        ControlConn {
            addr: addr.into(),
            settings,
            stream: None,
            buf: BytesMut::new(),
            connects: 0,
            busy: false,
            resp3: false,
        }
    }

    /// Like [`ControlConn::new`], speaking RESP3 when `resp3` (for a RESP3 client's own
    /// connection, whose replies go to it unchanged).
    pub fn with_protocol(addr: &str, settings: Arc<Settings>, resp3: bool) -> ControlConn {
        ControlConn {
            resp3,
            ..ControlConn::new(addr, settings)
        }
    }

    /// Whether the connection speaks RESP3.
    pub fn resp3(&self) -> bool {
        self.resp3
    }

    /// The node's `host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends one command and returns its raw reply (error replies included, as `Ok`).
    pub async fn call<A: AsRef<[u8]>>(
        &mut self,
        args: &[A],
        timeout: Duration,
    ) -> Result<Bytes, UpstreamError> {
        let mut replies = self.call_raw(&encode_command(args), 1, timeout).await?;
        replies.pop().ok_or_else(|| UpstreamError::Lost {
            addr: self.addr.clone(),
            cause: Cause::Closed("no reply"),
            maybe_executed: true,
        })
    }

    /// Writes `payload` (one or more encoded commands) and returns its `frames` replies.
    pub async fn call_raw(
        &mut self,
        payload: &[u8],
        frames: usize,
        timeout: Duration,
    ) -> Result<Vec<Bytes>, UpstreamError> {
        let result = tokio::time::timeout(timeout, self.exchange(payload, frames)).await;
        let result = result.unwrap_or_else(|_| {
            Err(UpstreamError::Timeout {
                addr: self.addr.clone(),
                ms: timeout.as_millis() as u64,
            })
        });
        if result.is_err() {
            // The stream may still carry the reply we gave up on.
            self.stream = None;
            self.buf.clear();
        }
        result
    }

    /// How many times a connection was opened; a change means node-side connection state
    /// (`WATCH`) was lost in between.
    pub fn connects(&self) -> u64 {
        self.connects
    }

    async fn exchange(
        &mut self,
        payload: &[u8],
        frames: usize,
    ) -> Result<Vec<Bytes>, UpstreamError> {
        if self.busy {
            self.stream = None;
            self.buf.clear();
            self.busy = false;
        }
        if self.stream.is_none() {
            let stream =
                super::connection::connect_with(&self.addr, &self.settings, self.resp3).await?;
            self.stream = Some(stream);
            self.connects += 1;
        }
        let addr = self.addr.clone();
        let lost = |cause: Cause| UpstreamError::Lost {
            addr: addr.clone(),
            cause,
            maybe_executed: true,
        };
        let Some(stream) = self.stream.as_mut() else {
            return Err(lost(Cause::Closed("not connected")));
        };
        self.busy = true;
        crate::io::write_out(stream, payload)
            .await
            .map_err(|e| lost(Cause::io("write failed", e)))?;
        let mut replies = Vec::with_capacity(frames);
        let mut scanner = ReplyScanner::default();
        while replies.len() < frames {
            if let Some(len) = scanner
                .scan(&self.buf)
                .map_err(|e| lost(Cause::Refused(format!("bad reply: {e}"))))?
            {
                replies.push(self.buf.split_to(len).freeze());
                scanner = ReplyScanner::default();
                continue;
            }
            if stream
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| lost(Cause::io("read failed", e)))?
                == 0
            {
                return Err(lost(Cause::Closed("closed by node")));
            }
        }
        self.busy = false;
        Ok(replies)
    }
}

/// The text of an error reply (`-ERR x` → `ERR x`), or `None` for any other reply.
pub fn error_text(raw: &[u8]) -> Option<String> {
    if raw.first() != Some(&b'-') {
        return None;
    }
    let end = crate::protocol::find_crlf(raw).unwrap_or(raw.len());
    Some(String::from_utf8_lossy(&raw[1..end]).into_owned())
}
