//! Certificates made for the TLS tests: a CA, a server certificate for 127.0.0.1 and a
//! client certificate, written as PEM files to a temporary directory.

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use std::path::PathBuf;

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files.
pub struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    /// Makes a new CA and the certificates it signs.
    pub fn make() -> Certs {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, pem: String| {
            std::fs::write(dir.path().join(name), pem).expect("write pem")
        };
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "slotproxy test CA");
        let ca_key = KeyPair::generate().expect("ca key");
        let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
        write("ca.pem", ca_cert.pem());
        let server_key = KeyPair::generate().expect("server key");
        let server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("server params")
            .signed_by(&server_key, &ca_cert, &ca_key)
            .expect("server cert");
        write("server.pem", server.pem());
        write("server.key", server_key.serialize_pem());
        let client_key = KeyPair::generate().expect("client key");
        let mut client = CertificateParams::new(vec!["client".to_string()]).expect("client params");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client = client
            .signed_by(&client_key, &ca_cert, &ca_key)
            .expect("client cert");
        write("client.pem", client.pem());
        write("client.key", client_key.serialize_pem());
        Certs { dir }
    }

    /// The path of one of the files (`ca.pem`, `server.pem`, `server.key`, `client.pem`,
    /// `client.key`).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// [`Certs::path`] as a string.
    pub fn text(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}
