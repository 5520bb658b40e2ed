//! TLS for client connections (`[tls]`): the server certificate and key, and optionally a CA
//! that client certificates must chain to. Built with rustls and the `ring` provider.

use crate::config::TlsSection;
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// How long a client may take to finish the TLS handshake before it is dropped, so that
/// half-open handshakes cannot pile up.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The acceptor for `[tls]`; the error names the field and the file at fault.
pub fn acceptor(config: &TlsSection) -> Result<TlsAcceptor, (&'static str, String)> {
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
