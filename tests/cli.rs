//! The binary as an operator runs it: config errors, --help, graceful shutdown.

mod common;
use common::{free_port, Cluster};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn slotproxy() -> Command {
    Command::new(env!("CARGO_BIN_EXE_slotproxy"))
}

fn run_with_config(text: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, text).expect("write config");
    let out = slotproxy()
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run slotproxy");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        path.display().to_string(),
    )
}

#[test]
fn unknown_key_exits_64_naming_file_line_and_field() {
    let (code, stderr, path) =
        run_with_config("[proxy]\nlisten = \"127.0.0.1:0\"\nmax_pipelin = 5\n");
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains(&format!("{path}:3")), "{stderr}");
    assert!(stderr.contains("max_pipelin"), "{stderr}");
}

#[test]
fn bad_value_exits_64_naming_file_line_and_field() {
    let (code, stderr, path) =
        run_with_config("[cluster]\nseeds = [\"127.0.0.1:7000\"]\nmax_redirects = \"five\"\n");
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains(&format!("{path}:3")) && stderr.contains("max_redirects"),
        "{stderr}"
    );

    let (code, stderr, path) = run_with_config("[admin]\nlisten = \"localhost-ish\"\n");
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains(&format!("{path}:2")) && stderr.contains("admin.listen"),
        "{stderr}"
    );

    let (code, stderr, _) = run_with_config("[cluster]\nseeds = [\"no-port\"]\n");
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("cluster.seeds"), "{stderr}");

    // An admin API reachable from the network must have a token.
    let (code, stderr, path) = run_with_config("[admin]\nlisten = \"0.0.0.0:9180\"\n");
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("admin.token") && stderr.contains(&path) && stderr.contains("loopback"),
        "{stderr}"
    );

    let (code, stderr, path) = run_with_config("[migration]\nparallel_slots = 0\n");
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains(&format!("{path}:2")) && stderr.contains("migration.parallel_slots"),
        "{stderr}"
    );
}

#[test]
fn missing_config_file_exits_64() {
    let out = slotproxy()
        .args(["--config", "/nonexistent/slotproxy.toml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/slotproxy.toml"));
}

#[test]
fn help_documents_every_flag() {
    let out = slotproxy().arg("--help").output().expect("run");
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--config", "--listen", "--admin-listen", "--seeds"] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
}

/// A Lua script that keeps a node busy for about 300 ms and then answers "done".
const SLOW_SCRIPT: &str = "local s = redis.call('TIME') local t0 = s[1] * 1000000 + s[2] \
    while true do local n = redis.call('TIME') if n[1] * 1000000 + n[2] - t0 > 300000 then break end end \
    return 'done'";

#[test]
fn sigterm_finishes_in_flight_replies_then_exits_0() {
    let cluster = Cluster::start(3, 0);
    let port = free_port();
    let admin = free_port();
    let mut child = slotproxy()
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--admin-listen")
        .arg(format!("127.0.0.1:{admin}"))
        .arg("--seeds")
        .arg(cluster.seeds().join(","))
        .stderr(Stdio::piped())
        .spawn()
        .expect("start slotproxy");
    common::wait_until(Duration::from_secs(20), "the proxy to serve", || {
        redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .and_then(|c| c.get_connection())
            .and_then(|mut c| redis::cmd("SET").arg("k").arg("v").query::<()>(&mut c))
            .is_ok()
    });
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let eval = format!(
        "*3\r\n$4\r\nEVAL\r\n${}\r\n{}\r\n$1\r\n0\r\n",
        SLOW_SCRIPT.len(),
        SLOW_SCRIPT
    );
    stream.write_all(eval.as_bytes()).expect("send EVAL");
    std::thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    assert_eq!(
        String::from_utf8_lossy(&reply),
        "$4\r\ndone\r\n",
        "in-flight reply delivered before close"
    );
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(5));
    let mut stderr = String::new();
    let _ = child
        .stderr
        .take()
        .map(|mut e| e.read_to_string(&mut stderr));
    assert!(stderr.contains("shutting down"), "{stderr}");
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "listener closed"
    );
}
