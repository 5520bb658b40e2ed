//! A throw-away connection for one control query (`CLUSTER SHARDS`, `COMMAND`).
//!
//! Control queries for the slot map are rare and must work before any pool exists (bootstrap
//! from seeds), so they use their own connection instead of the multiplexed data path.

use super::control::ControlConn;
use super::Settings;
use crate::error::UpstreamError;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// Sends `args` to `addr` and returns the raw reply.
pub async fn query(
    addr: &str,
    args: &[&str],
    settings: &Arc<Settings>,
    timeout: Duration,
) -> Result<Bytes, UpstreamError> {
    ControlConn::new(addr, settings.clone())
        .call(args, timeout)
        .await
}
