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
    #[error("cannot connect to node {addr}: {cause}")]
    Connect {
        /// Node address.
        addr: Arc<str>,
        /// Why connecting failed.
        #[source]
        cause: Cause,
    },
    /// The connection broke after the command was handed to it.
    #[error("connection to node {addr} lost: {cause}")]
    Lost {
        /// Node address.
        addr: Arc<str>,
        /// Why the connection ended.
        #[source]
        cause: Cause,
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

/// Why a node connection could not be made or ended, with the error beneath when there is
/// one (an I/O error of the socket or of TLS).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Cause {
    /// A socket or TLS operation failed.
    #[error("{}{source}", context.map(|c| format!("{c}: ")).unwrap_or_default())]
    Io {
        /// What was being done (`read failed`, `TLS handshake failed`), if it helps.
        context: Option<&'static str>,
        /// The error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// A step of opening the connection took too long.
    #[error("{0} timed out")]
    TimedOut(&'static str),
    /// The node answered a setup command (`AUTH`, `HELLO 3`) with an error, or with bytes
    /// that are not RESP.
    #[error("{0}")]
    Refused(String),
    /// The connection cannot be made as configured (an address or TLS setting).
    #[error("{0}")]
    Config(String),
    /// The connection ended without an error of its own.
    #[error("{0}")]
    Closed(&'static str),
}

impl Cause {
    /// An I/O error, with what was being done.
    pub fn io(context: &'static str, error: std::io::Error) -> Cause {
        Cause::Io {
            context: Some(context),
            source: Arc::new(error),
        }
    }

    /// An I/O error that speaks for itself (`Connection refused`).
    pub fn bare_io(error: std::io::Error) -> Cause {
        Cause::Io {
            context: None,
            source: Arc::new(error),
        }
    }
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
