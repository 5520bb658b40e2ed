//! TLS, built with rustls and the `ring` provider: the acceptor for client connections
//! (`[tls]`) and the connector for node connections (`cluster.tls`).
//!
//! Both load certificates and keys from files, so they are built once at start (and by
//! `--check`), not while the configuration is parsed: `config` only checks values, this
//! module reads the files, and an unreadable or mismatched file is a [`TlsError`] naming the
//! field and the path.

use crate::config::{ClusterSection, Config, TlsSection};
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// A TLS setting that cannot be used: the config field at fault and why (the file's path and
/// the reader's error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct TlsError {
    /// Dotted config field, e.g. `tls.key_file`.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl From<(&'static str, String)> for TlsError {
    fn from((field, message): (&'static str, String)) -> TlsError {
        TlsError { field, message }
    }
}

/// Loads every TLS object the configuration asks for, so that a bad file stops the proxy at
/// start (and `--check`) instead of at the first connection.
pub fn check(config: &Config) -> Result<(), TlsError> {
    node_connector(&config.cluster)?;
    if config.tls.enabled() {
        client_acceptor(&config.tls)?;
    }
    Ok(())
}

/// How long a client may take to finish the TLS handshake before it is dropped, so that
/// half-open handshakes cannot pile up.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The acceptor for `[tls]`; the error names the field and the file at fault.
pub fn client_acceptor(config: &TlsSection) -> Result<TlsAcceptor, TlsError> {
    client_acceptor_inner(config).map_err(TlsError::from)
}

fn client_acceptor_inner(config: &TlsSection) -> Result<TlsAcceptor, (&'static str, String)> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&config.cert_file)
        .and_then(|certs| certs.collect())
        .map_err(|e| ("tls.cert_file", format!("{}: {e}", config.cert_file)))?;
    if certs.is_empty() {
        return Err((
            "tls.cert_file",
            format!("{}: no certificate in the file", config.cert_file),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&config.key_file)
        .map_err(|e| ("tls.key_file", format!("{}: {e}", config.key_file)))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ("tls", e.to_string()))?;
    let builder = match config.client_ca_file.is_empty() {
        true => builder.with_no_client_auth(),
        false => {
            let mut roots = RootCertStore::empty();
            for ca in CertificateDer::pem_file_iter(&config.client_ca_file)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    (
                        "tls.client_ca_file",
                        format!("{}: {e}", config.client_ca_file),
                    )
                })?
            {
                roots.add(ca).map_err(|e| {
                    (
                        "tls.client_ca_file",
                        format!("{}: {e}", config.client_ca_file),
                    )
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| {
                    (
                        "tls.client_ca_file",
                        format!("{}: {e}", config.client_ca_file),
                    )
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let server = builder
        .with_single_cert(certs, key)
        .map_err(|e| ("tls.key_file", format!("does not match tls.cert_file: {e}")))?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// The TLS client for node connections when `cluster.tls` is on: the nodes' certificates are
/// verified against `cluster.tls_ca_file` (always; there is no switch to turn it off), and
/// `cluster.tls_cert_file`/`tls_key_file`, when set, are presented to nodes that ask for a
/// client certificate (Redis' default `tls-auth-clients yes`). The error names the field.
pub fn node_connector(config: &ClusterSection) -> Result<Option<TlsConnector>, TlsError> {
    node_connector_inner(config).map_err(TlsError::from)
}

fn node_connector_inner(
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
