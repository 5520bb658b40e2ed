//! Real Redis tools against the proxy: redis-benchmark and redis-cli (including --pipe).

mod common;
use common::{Cluster, TestProxy};
use std::io::Write;
use std::process::{Command, Stdio};

fn tool(name: &str) -> Command {
    let found = Command::new(name)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{name} not found: install it with `apt-get install -y redis-tools`"
    );
    Command::new(name)
}

#[test]
fn redis_benchmark_runs_without_errors_and_its_data_reads_back() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    let port = proxy.addr.port().to_string();
    let out = tool("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "set,get,incr,lpush,mset",
            "-r",
            "100000",
        ])
        .args(["-P", "16", "-n", "20000", "-c", "20", "-q"])
        .output()
        .expect("run redis-benchmark");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for test in ["SET", "GET", "INCR", "LPUSH", "MSET"] {
        assert!(stdout.contains(test), "no {test} result:\n{stdout}");
    }
    assert!(
        !stdout.to_lowercase().contains("error") && !stderr.to_lowercase().contains("error"),
        "{stdout}\n{stderr}"
    );

    // What it wrote is there, read through the proxy.
    let mut con = proxy.conn();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("key:*")
        .query(&mut con)
        .expect("KEYS");
    assert!(keys.len() > 1000, "only {} keys", keys.len());
    // redis-benchmark writes 3-byte values (-d 3) of its own making.
    let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
        .arg(&keys[..500])
        .query(&mut con)
        .expect("MGET");
    assert!(
        values.iter().all(|v| v.as_ref().map(Vec::len) == Some(3)),
        "benchmark values read back"
    );
    let list_len: i64 = redis::cmd("LLEN")
        .arg("mylist")
        .query(&mut con)
        .expect("LLEN");
    assert_eq!(list_len, 20000);
    let counters: Vec<String> = redis::cmd("KEYS")
        .arg("counter:*")
        .query(&mut con)
        .expect("KEYS");
    let total: i64 = counters
        .iter()
        .map(|k| {
            redis::cmd("GET")
                .arg(k)
                .query::<i64>(&mut con)
                .expect("GET counter")
        })
        .sum();
    assert_eq!(total, 20000, "every INCR counted once");
}

#[test]
fn redis_cli_interactive_commands_and_pipe_mode() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    let port = proxy.addr.port().to_string();
    let cli = |args: &[&str]| {
        let out = tool("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(cli(&["SET", "foo", "bar"]), "OK");
    assert_eq!(cli(&["GET", "foo"]), "bar");
    assert_eq!(cli(&["MSET", "a", "1", "b", "2", "c", "3"]), "OK");
    assert_eq!(cli(&["MGET", "a", "b", "c"]), "1\n2\n3");
    assert_eq!(cli(&["DEL", "a", "b", "c"]), "3");
    assert_eq!(cli(&["PING"]), "PONG");

    let mut input = String::new();
    for i in 0..10_000 {
        input.push_str(&format!(
            "*3\r\n$3\r\nSET\r\n${}\r\nmass:{i}\r\n$1\r\nv\r\n",
            format!("mass:{i}").len()
        ));
    }
    let mut child = tool("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port, "--pipe"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("redis-cli --pipe");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("feed");
    let out = child.wait_with_output().expect("wait");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("errors: 0, replies: 10000"), "{text}");
    assert_eq!(cli(&["DBSIZE"]), "10001");
}
