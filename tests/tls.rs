//! TLS with certificates made by the test. Clients and the proxy: redis-cli over TLS, client
//! certificates required when `tls.client_ca_file` is set, a plain client on the TLS port
//! refused, unreadable certificate files reported by field and path. The proxy and the nodes:
//! a cluster serving only verified TLS clients, and nodes whose certificate another CA signed
//! refused.

mod common;
use common::certs::Certs;
use common::{Cluster, TestProxy};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

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

/// A proxy that talks TLS to the nodes' TLS ports, verifying them against `ca`.
fn proxy_to_tls_nodes(cluster: &Cluster, certs: &Certs, ca: &Certs) -> slotproxy::config::Config {
    let mut config = slotproxy::config::Config::default();
    config.cluster.seeds = cluster
        .nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.tls_port.expect("TLS port")))
        .collect();
    config.cluster.tls = true;
    config.cluster.tls_ca_file = ca.text("ca.pem");
    config.cluster.tls_cert_file = certs.text("client.pem");
    config.cluster.tls_key_file = certs.text("client.key");
    config
}

#[test]
fn the_proxy_talks_tls_to_nodes_that_require_client_certificates() {
    let certs = Certs::make();
    let cluster = Cluster::start_tls(3, &certs);
    let tls = proxy_to_tls_nodes(&cluster, &certs, &certs);
    let proxy = TestProxy::start_with(&cluster, |c| {
        c.cluster.seeds = tls.cluster.seeds.clone();
        c.cluster = tls.cluster.clone();
    });
    let mut con = proxy.conn();
    con.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let keys: Vec<String> = (0..300).map(|i| format!("tls:{i}")).collect();
    common::write_keys(&mut con, &keys);
    common::check_keys(&mut con, &keys);
    // The map names the nodes' TLS ports, and a slot move (MIGRATE between TLS nodes) works.
    let (_, map) = proxy.admin_json("/cluster");
    let tls_port = cluster.nodes[0].tls_port.expect("tls port").to_string();
    assert!(map.to_string().contains(&tls_port), "{map}");
    let (source, target) = (cluster.owner_of(0), &cluster.nodes[1]);
    let id = proxy.start_migration("0-99", source, target);
    proxy.wait_completed(&id, &cluster);
    common::check_keys(&mut con, &keys);
}

#[test]
fn a_node_certificate_from_another_ca_is_refused() {
    let certs = Certs::make();
    let other_ca = Certs::make();
    let cluster = Cluster::start_tls(3, &certs);
    let config = proxy_to_tls_nodes(&cluster, &certs, &other_ca);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut config = config;
        config.proxy.listen = "127.0.0.1:0".into();
        config.admin.listen = "127.0.0.1:0".into();
        let dir = tempfile::tempdir().expect("tempdir");
        config.migration.data_dir = dir.path().to_path_buf();
        let proxy = slotproxy::start(config).await.expect("proxy starts");
        assert!(
            !proxy.wait_ready(Duration::from_secs(3)).await,
            "loaded a slot map from nodes it cannot verify"
        );
        let mut con = tokio::net::TcpStream::connect(proxy.client_addr)
            .await
            .expect("connect");
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        con.write_all(b"GET k\r\n").await.expect("write");
        let mut reply = vec![0u8; 256];
        let n = con.read(&mut reply).await.expect("read");
        let reply = String::from_utf8_lossy(&reply[..n]).to_string();
        assert!(
            reply.starts_with("-ERR slotproxy: not connected to the cluster yet"),
            "{reply}"
        );
        proxy.shutdown().await;
    });
}
