//! Typed errors of the data path: who is at fault, and may the command be retried?
//!
//! A client error (bad command) is answered and forgotten; an upstream error is retried when
//! it is safe, that is when the command certainly did not run or cannot change data.

use crate::protocol::reply;
use bytes::Bytes;
use std::sync::Arc;

/// A failure talking to one cluster node.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be made; the command was not sent.
    #[error("cannot connect to node {addr}: {reason}")]
    Connect {
        /// Node address.
        addr: Arc<str>,
        /// Why connecting failed.
        reason: String,
    },
    /// The connection broke after the command was handed to it.
    #[error("connection to node {addr} lost: {reason}")]
    Lost {
        /// Node address.
        addr: Arc<str>,
        /// Why the connection ended.
        reason: String,
        /// The command was written (or may have been) before the connection broke.
        maybe_executed: bool,
    },
    /// The node did not answer in time; the command may still run.
    #[error("node {addr} did not reply within {ms} ms")]
    Timeout {
        /// Node address.
        addr: Arc<str>,
        /// The configured timeout.
        ms: u64,
    },
}

impl UpstreamError {
    /// True when the command may have reached the node, so a write must not be retried.
    pub fn may_have_run(&self) -> bool {
        match self {
            UpstreamError::Connect { .. } => false,
            UpstreamError::Lost { maybe_executed, .. } => *maybe_executed,
            UpstreamError::Timeout { .. } => true,
        }
    }

    /// True when the request must not be sent again: after a timeout (the node may still
    /// run it, so even a read could answer twice), or a write that may have run.
    pub fn forbids_resend(&self, write: bool) -> bool {
        matches!(self, UpstreamError::Timeout { .. }) || (write && self.may_have_run())
    }

    /// The error as a client sees it.
    pub fn to_reply(&self) -> Bytes {
        reply::error(&format!("ERR slotproxy: {self}"))
    }
}
