//! I/O helpers shared by client and node connections.

use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Writes `out` and flushes it: a no-op for TCP, but rustls may hold back the last record of a
/// TLS stream until it is flushed.
pub async fn write_out<W: AsyncWrite + Unpin>(writer: &mut W, out: &[u8]) -> std::io::Result<()> {
    writer.write_all(out).await?;
    writer.flush().await
}
