//! A connection to a node: plain TCP, or TLS over TCP when `cluster.tls` is on.
//!
//! An enum rather than a boxed trait object: the plain path, by far the common one, keeps
//! static dispatch and splits into owned halves without a lock; only TLS streams are split
//! with `tokio::io::split`.

use crate::config::ClusterSection;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

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

/// The TLS client for node connections when `cluster.tls` is on: the nodes' certificates are
/// verified against `cluster.tls_ca_file` (always; there is no switch to turn it off), and
/// `cluster.tls_cert_file`/`tls_key_file`, when set, are presented to nodes that ask for a
/// client certificate (Redis' default `tls-auth-clients yes`). The error names the field.
pub fn tls_connector(
    config: &ClusterSection,
) -> Result<Option<TlsConnector>, (&'static str, String)> {
    if !config.tls {
        return Ok(None);
    }
    if config.tls_ca_file.is_empty() {
        return Err((
            "cluster.tls_ca_file",
            "required when cluster.tls is on".into(),
        ));
    }
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(&config.tls_ca_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| file_error("cluster.tls_ca_file", &config.tls_ca_file, e))?
    {
        roots.add(ca).map_err(|e| {
            (
                "cluster.tls_ca_file",
                format!("{}: {e}", config.tls_ca_file),
            )
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ("cluster.tls", e.to_string()))?
        .with_root_certificates(roots);
    let client = match (
        config.tls_cert_file.is_empty(),
        config.tls_key_file.is_empty(),
    ) {
        (true, true) => builder.with_no_client_auth(),
        (false, false) => {
            let certs = CertificateDer::pem_file_iter(&config.tls_cert_file)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| file_error("cluster.tls_cert_file", &config.tls_cert_file, e))?;
            let key = PrivateKeyDer::from_pem_file(&config.tls_key_file)
                .map_err(|e| file_error("cluster.tls_key_file", &config.tls_key_file, e))?;
            builder.with_client_auth_cert(certs, key).map_err(|e| {
                (
                    "cluster.tls_key_file",
                    format!("does not match cluster.tls_cert_file: {e}"),
                )
            })?
        }
        (true, false) => {
            return Err((
                "cluster.tls_cert_file",
                "required with cluster.tls_key_file".into(),
            ))
        }
        (false, true) => {
            return Err((
                "cluster.tls_key_file",
                "required with cluster.tls_cert_file".into(),
            ))
        }
    };
    Ok(Some(TlsConnector::from(Arc::new(client))))
}

/// A PEM file that could not be read, as a config error naming the field and the path.
fn file_error(
    field: &'static str,
    path: &str,
    error: rustls::pki_types::pem::Error,
) -> (&'static str, String) {
    (field, format!("{path}: {error}"))
}

/// The name a node's certificate must carry: its IP address, or its host name.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string())
        .map_err(|e| format!("`{host}` cannot be checked against a certificate: {e}"))
}
