//! SCAN over every master with one cursor; scripts and functions on every master, with
//! NOSCRIPT healed after a slot moves.

mod common;
use common::{Cluster, TestProxy};
use std::collections::BTreeSet;

fn scan_all(con: &mut redis::Connection, extra: &[&str]) -> (Vec<String>, usize) {
    let mut cursor = "0".to_string();
    let mut keys = Vec::new();
    let mut calls = 0;
    loop {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(&cursor);
        for a in extra {
            cmd.arg(*a);
        }
        let (next, page): (String, Vec<String>) = cmd.query(con).expect("SCAN");
        keys.extend(page);
        calls += 1;
        assert!(calls < 100_000, "SCAN does not end");
        if next == "0" {
            return (keys, calls);
        }
        cursor = next;
    }
}

#[test]
fn scan_visits_every_key_exactly_once() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    let mut con = proxy.conn();
    let keys: Vec<String> = (0..10_000).map(|i| format!("scan:{i}")).collect();
    common::write_keys(&mut con, &keys);
    let _: i64 = redis::cmd("RPUSH")
        .arg("a-list")
        .arg(1)
        .query(&mut con)
        .expect("RPUSH");

    let (seen, calls) = scan_all(&mut con, &["COUNT", "200"]);
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a key came back twice");
    assert_eq!(seen.len(), 10_001);
    assert!(calls > 10, "COUNT was passed on ({calls} calls)");

    let (matched, _) = scan_all(&mut con, &["MATCH", "scan:1?", "COUNT", "1000"]);
    let matched: BTreeSet<String> = matched.into_iter().collect();
    let want: BTreeSet<String> = (10..20).map(|i| format!("scan:{i}")).collect();
    assert_eq!(matched, want);
    let (lists, _) = scan_all(&mut con, &["TYPE", "list", "COUNT", "1000"]);
    assert_eq!(lists, vec!["a-list".to_string()]);

    let bad: redis::RedisResult<(String, Vec<String>)> =
        redis::cmd("SCAN").arg("nope").query(&mut con);
    assert!(bad.unwrap_err().to_string().contains("invalid cursor"));
}

#[test]
fn scripts_and_functions_run_on_every_master_and_noscript_is_healed() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    let mut con = proxy.conn();
    // SCRIPT LOAD reaches every master: EVALSHA works for keys on each of them.
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg("return redis.call('SET', KEYS[1], ARGV[1])")
        .query(&mut con)
        .expect("SCRIPT LOAD");
    for i in 0..30 {
        let _: () = redis::cmd("EVALSHA")
            .arg(&sha)
            .arg(1)
            .arg(format!("s:{i}"))
            .arg(i)
            .query(&mut con)
            .expect("EVALSHA");
    }
    let exists: Vec<i64> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(&sha)
        .arg("0000")
        .query(&mut con)
        .expect("EXISTS");
    assert_eq!(exists, vec![1, 0]);
    for node in &cluster.nodes {
        let there: Vec<i64> = node.cmd(&["SCRIPT", "EXISTS", &sha]);
        assert_eq!(there, vec![1], "node {}", node.port);
    }
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut con)
        .expect("FLUSH");
    let exists: Vec<i64> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(&sha)
        .query(&mut con)
        .expect("EXISTS");
    assert_eq!(exists, vec![0]);

    // EVAL caches the script on one node only; after the key's slot moves, EVALSHA still works.
    let body = "return redis.call('GET', KEYS[1])";
    let (slot, keys) = common::keys_in_one_slot("lua", 1);
    let _: () = redis::cmd("SET")
        .arg(&keys[0])
        .arg("v")
        .query(&mut con)
        .expect("SET");
    let got: String = redis::cmd("EVAL")
        .arg(body)
        .arg(1)
        .arg(&keys[0])
        .query(&mut con)
        .expect("EVAL");
    assert_eq!(got, "v");
    let sha = sha1_hex(body);
    let source = cluster.owner_of(slot);
    let target = cluster.other_than(source);
    let before: Vec<i64> = target.cmd(&["SCRIPT", "EXISTS", &sha]);
    assert_eq!(before, vec![0], "the target never saw the script");
    cluster.begin_migration(slot, source, target);
    cluster.finish_migration(slot, source, target);
    let got: String = redis::cmd("EVALSHA")
        .arg(&sha)
        .arg(1)
        .arg(&keys[0])
        .query(&mut con)
        .expect("EVALSHA after the move");
    assert_eq!(got, "v");
    // A script the proxy never saw still gets Redis's own NOSCRIPT.
    let unknown: redis::RedisResult<String> = redis::cmd("EVALSHA")
        .arg("ffffffffffffffffffffffffffffffffffffffff")
        .arg(0)
        .query(&mut con);
    let message = format!("{:?}", unknown.unwrap_err());
    assert!(
        message.to_uppercase().contains("NOSCRIPT") || message.contains("No matching script"),
        "{message}"
    );

    // Functions: FUNCTION LOAD on every master, FCALL on keys anywhere.
    let library = "#!lua name=proxylib\nredis.register_function('setit', function(keys, args) return redis.call('SET', keys[1], args[1]) end)";
    let name: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(library)
        .query(&mut con)
        .expect("FUNCTION LOAD");
    assert_eq!(name, "proxylib");
    for i in 0..30 {
        let _: () = redis::cmd("FCALL")
            .arg("setit")
            .arg(1)
            .arg(format!("f:{i}"))
            .arg(i)
            .query(&mut con)
            .expect("FCALL");
    }
    let _: () = redis::cmd("FUNCTION")
        .arg("DELETE")
        .arg("proxylib")
        .query(&mut con)
        .expect("FUNCTION DELETE");
    for node in &cluster.nodes {
        let libs: Vec<redis::Value> = node.cmd(&["FUNCTION", "LIST"]);
        assert!(libs.is_empty(), "node {} still has the library", node.port);
    }
}

fn sha1_hex(text: &str) -> String {
    let out = std::process::Command::new("sha1sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())?;
            child.wait_with_output()
        })
        .expect("sha1sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

/// Runs `args` on a connection of its own in a thread; its error text, once it ends.
fn run_busy(
    addr: std::net::SocketAddr,
    args: &'static [&'static str],
) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut con = common::connect(&addr.to_string());
        let mut command = redis::cmd(args[0]);
        for a in &args[1..] {
            command.arg(*a);
        }
        match command.query::<redis::Value>(&mut con) {
            Ok(v) => format!("no error: {v:?}"),
            Err(e) => e.to_string(),
        }
    })
}

#[test]
fn script_kill_and_function_kill_reach_a_node_busy_with_a_script() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    for node in &cluster.nodes {
        let _: () = node.cmd(&["CONFIG", "SET", "busy-reply-threshold", "10"]);
    }
    let mut con = proxy.conn();
    let spin = "#!lua name=spinlib\nredis.register_function{function_name='spin', callback=function() while true do end end, flags={'no-writes'}}";
    let _: String = common::query(&mut con, &["FUNCTION", "LOAD", spin]);
    let nothing: Result<String, _> = redis::cmd("SCRIPT").arg("KILL").query(&mut con);
    assert!(
        nothing
            .as_ref()
            .is_err_and(|e| e.to_string().contains("No scripts in execution")),
        "{nothing:?}"
    );

    for (busy, kill, killed) in [
        (
            &["EVAL", "while true do end", "0"][..],
            "SCRIPT",
            "killed by user",
        ),
        (&["FCALL", "spin", "0"][..], "FUNCTION", "killed by user"),
    ] {
        let runner = run_busy(proxy.addr, busy);
        std::thread::sleep(std::time::Duration::from_millis(300));
        // The script holds the node's shared connection: the kill takes a connection of its own.
        let started = std::time::Instant::now();
        let ok: String = common::query(&mut con, &[kill, "KILL"]);
        assert_eq!(ok, "OK", "{kill} KILL");
        let error = runner.join().expect("runner");
        assert!(error.contains(killed), "{busy:?}: {error}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "{kill} KILL took {:?}",
            started.elapsed()
        );
        // Every master serves again.
        for node in &cluster.nodes {
            let key = cluster.key_on(node.port, "after-kill");
            let _: () = common::query(&mut con, &["SET", &key, "v"]);
        }
    }
}
