//! A throw-away connection for one control query (`CLUSTER SHARDS`, `COMMAND`).
//!
//! Control queries are rare and must work before any pool exists (bootstrap from seeds), so
//! they use their own connection instead of the multiplexed data path.

use super::Settings;
use crate::error::UpstreamError;
use crate::protocol::{request::encode_command, scan::ReplyScanner};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `args` to `addr` and returns the raw reply.
pub async fn query(
    addr: &str,
    args: &[&str],
    settings: &Settings,
    timeout: Duration,
) -> Result<Bytes, UpstreamError> {
    let node: Arc<str> = addr.into();
    let lost = |reason: String| UpstreamError::Lost {
        addr: node.clone(),
        reason,
        maybe_executed: true,
    };
    let mut stream = super::connection::connect(&node, settings).await?;
    let work = async {
        stream
            .write_all(&encode_command(args))
            .await
            .map_err(|e| lost(e.to_string()))?;
        let mut buf = BytesMut::with_capacity(16 * 1024);
        let mut scanner = ReplyScanner::default();
        loop {
            if let Some(len) = scanner.scan(&buf).map_err(|e| lost(e.to_string()))? {
                return Ok(buf.split_to(len).freeze());
            }
            if stream
                .read_buf(&mut buf)
                .await
                .map_err(|e| lost(e.to_string()))?
                == 0
            {
                return Err(lost("closed by node".into()));
            }
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| {
            Err(UpstreamError::Timeout {
                addr: node.clone(),
                ms: timeout.as_millis() as u64,
            })
        })
}
