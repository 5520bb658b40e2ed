//! TLS between clients and the proxy, with certificates made by the test: redis-cli over
//! TLS, client certificates required when `tls.client_ca_file` is set, a plain client on the
//! TLS port refused, and unreadable certificate files reported by field and path.

mod common;
use common::{Cluster, TestProxy};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files.
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn make() -> Certs {
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

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn text(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

fn tls_proxy(cluster: &Cluster, certs: &Certs, client_ca: bool) -> TestProxy {
    TestProxy::start_with(cluster, |c| {
        c.tls.listen = "127.0.0.1:0".into();
        c.tls.cert_file = certs.text("server.pem");
        c.tls.key_file = certs.text("server.key");
        if client_ca {
            c.tls.client_ca_file = certs.text("ca.pem");
        }
    })
}

/// redis-cli over TLS; returns (success, stdout + stderr).
fn redis_cli_tls(
    proxy: &TestProxy,
    certs: &Certs,
    client_cert: bool,
    args: &[&str],
) -> (bool, String) {
    let port = proxy.tls.expect("TLS listener").port().to_string();
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p", &port, "--tls", "--cacert"])
        .arg(certs.path("ca.pem"));
    if client_cert {
        cmd.arg("--cert").arg(certs.path("client.pem"));
        cmd.arg("--key").arg(certs.path("client.key"));
    }
    let out = cmd.args(args).output().expect("run redis-cli");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.success() && !text.contains("Could not connect"),
        text.trim().to_string(),
    )
}

#[test]
fn clients_speak_tls_on_the_tls_listener_and_plain_on_the_other() {
    let cluster = Cluster::start(3, 0);
    let certs = Certs::make();
    let proxy = tls_proxy(&cluster, &certs, false);
    assert_eq!(
        redis_cli_tls(&proxy, &certs, false, &["SET", "tls:k", "v"]),
        (true, "OK".into())
    );
    assert_eq!(
        redis_cli_tls(&proxy, &certs, false, &["GET", "tls:k"]),
        (true, "v".into())
    );
    // The plain listener serves the same data.
    let mut con = proxy.conn();
    let value: String = common::query(&mut con, &["GET", "tls:k"]);
    assert_eq!(value, "v");
    // A plain client on the TLS port gets nothing and is dropped; the handshake is counted.
    let reply = common::raw_exchange(proxy.tls.expect("tls"), b"PING\r\n", Duration::from_secs(5));
    assert!(!reply.starts_with(b"+PONG"), "{reply:?}");
    common::wait_until(
        Duration::from_secs(5),
        "the failed handshake to be counted",
        || proxy.metric("slotproxy_client_tls_handshake_failures_total ") == 1.0,
    );
}

#[test]
fn client_certificates_are_required_when_a_client_ca_is_configured() {
    let cluster = Cluster::start(3, 0);
    let certs = Certs::make();
    let proxy = tls_proxy(&cluster, &certs, true);
    let (ok, output) = redis_cli_tls(&proxy, &certs, false, &["PING"]);
    assert!(!ok, "PING without a client certificate answered: {output}");
    assert_eq!(
        redis_cli_tls(&proxy, &certs, true, &["PING"]),
        (true, "PONG".into())
    );
    assert!(proxy.metric("slotproxy_client_tls_handshake_failures_total ") >= 1.0);
}

#[test]
fn unreadable_tls_files_stop_the_proxy_naming_field_and_path() {
    let certs = Certs::make();
    let config = certs.path("proxy.toml");
    let missing = certs.path("nope.key");
    std::fs::write(
        &config,
        format!(
            "[cluster]\nseeds = [\"127.0.0.1:7000\"]\n[tls]\nlisten = \"127.0.0.1:0\"\ncert_file = {:?}\nkey_file = {:?}\n",
            certs.text("server.pem"),
            missing.display().to_string()
        ),
    )
    .expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_slotproxy"))
        .args(["--config"])
        .arg(&config)
        .arg("--check")
        .output()
        .expect("run slotproxy --check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("tls.key_file") && stderr.contains(&missing.display().to_string()),
        "{stderr}"
    );
    assert!(Path::new(&config).exists());
}
