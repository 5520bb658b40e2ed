//! A connection to a node: plain TCP, or TLS over TCP when `cluster.tls` is on.
//!
//! An enum rather than a boxed trait object: the plain path, by far the common one, keeps
//! static dispatch and splits into owned halves without a lock; only TLS streams are split
//! with `tokio::io::split`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::{InvalidDnsNameError, ServerName};

/// An open connection to a node.
#[derive(Debug)]
pub enum NodeStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

/// The reading half of a [`NodeStream`].
pub enum NodeReadHalf {
    /// Plain TCP.
    Plain(OwnedReadHalf),
    /// TLS over TCP.
    Tls(ReadHalf<TlsStream<TcpStream>>),
}

/// The writing half of a [`NodeStream`].
pub enum NodeWriteHalf {
    /// Plain TCP.
    Plain(OwnedWriteHalf),
    /// TLS over TCP.
    Tls(WriteHalf<TlsStream<TcpStream>>),
}

impl NodeStream {
    /// Splits into halves that a reader and a writer task can own.
    pub fn into_split(self) -> (NodeReadHalf, NodeWriteHalf) {
        match self {
            NodeStream::Plain(stream) => {
                let (read, write) = stream.into_split();
                (NodeReadHalf::Plain(read), NodeWriteHalf::Plain(write))
            }
            NodeStream::Tls(stream) => {
                let (read, write) = tokio::io::split(*stream);
                (NodeReadHalf::Tls(read), NodeWriteHalf::Tls(write))
            }
        }
    }
}

/// Implements `AsyncRead` for an enum whose variants (`Plain`, `Tls`) all implement it.
macro_rules! forward_read {
    ($type:ty) => {
        impl AsyncRead for $type {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
                    Self::Tls(s) => Pin::new(s).poll_read(cx, buf),
                }
            }
        }
    };
}

/// Implements `AsyncWrite` for an enum whose variants (`Plain`, `Tls`) all implement it.
macro_rules! forward_write {
    ($type:ty) => {
        impl AsyncWrite for $type {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
                    Self::Tls(s) => Pin::new(s).poll_write(cx, buf),
                }
            }
            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_flush(cx),
                    Self::Tls(s) => Pin::new(s).poll_flush(cx),
                }
            }
            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
                    Self::Tls(s) => Pin::new(s).poll_shutdown(cx),
                }
            }
        }
    };
}

forward_read!(NodeStream);
forward_read!(NodeReadHalf);
forward_write!(NodeStream);
forward_write!(NodeWriteHalf);

/// The name a node's certificate must carry: its IP address, or its host name.
pub fn server_name(host: &str) -> Result<ServerName<'static>, InvalidDnsNameError> {
    ServerName::try_from(host.to_string())
}
