//! Blocking commands and WAIT through the proxy: woken by other clients, timeouts honoured,
//! re-issued when the key's slot moves, released when the client leaves.

mod common;
use common::{query as cmd, Cluster, TestProxy};
use redis::Value;
use std::io::Write;
use std::time::{Duration, Instant};

/// Sum of `blocked_clients` over the cluster's nodes.
fn blocked_on_nodes(cluster: &Cluster) -> i64 {
    cluster
        .nodes
        .iter()
        .map(|n| {
            let info: String = n.cmd(&["INFO", "clients"]);
            info.lines()
                .find_map(|l| l.strip_prefix("blocked_clients:"))
                .and_then(|v| v.trim().parse::<i64>().ok())
                .unwrap_or(0)
        })
        .sum()
}

#[test]
fn blocking_pops_wake_time_out_and_do_not_hold_up_others() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);

    // BLPOP woken by an LPUSH from another client.
    let waiter = {
        let mut con = proxy.conn();
        std::thread::spawn(move || {
            let started = Instant::now();
            let got: (String, String) = cmd(&mut con, &["BLPOP", "jobs", "10"]);
            (got, started.elapsed())
        })
    };
    let mut con = proxy.conn();
    common::wait_until(Duration::from_secs(5), "BLPOP to block", || {
        blocked_on_nodes(&cluster) == 1
    });
    // While one client blocks, other clients' commands flow.
    for i in 0..100 {
        let _: () = cmd(&mut con, &["SET", &format!("free:{i}"), "x"]);
    }
    let _: i64 = cmd(&mut con, &["LPUSH", "jobs", "job-1"]);
    let (got, waited) = waiter.join().expect("waiter");
    assert_eq!(got, ("jobs".to_string(), "job-1".to_string()));
    assert!(waited < Duration::from_secs(5), "woken late: {waited:?}");
    assert_eq!(cmd::<i64>(&mut con, &["LLEN", "jobs"]), 0);

    // The client's timeout is honoured: nil after about a second.
    let started = Instant::now();
    let none: Value = cmd(&mut con, &["BLPOP", "empty", "1"]);
    let waited = started.elapsed();
    assert_eq!(none, Value::Nil);
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    // Fractional timeouts, and the other blocking commands.
    let none: Value = cmd(&mut con, &["BRPOP", "empty", "0.2"]);
    assert_eq!(none, Value::Nil);
    let _: i64 = cmd(&mut con, &["RPUSH", "{q}src", "a", "b"]);
    let moved: String = cmd(
        &mut con,
        &["BLMOVE", "{q}src", "{q}dst", "LEFT", "RIGHT", "1"],
    );
    assert_eq!(moved, "a");
    let moved: String = cmd(&mut con, &["BRPOPLPUSH", "{q}src", "{q}dst", "1"]);
    assert_eq!(moved, "b");
    let _: i64 = cmd(&mut con, &["ZADD", "{q}z", "1", "one", "2", "two"]);
    let min: (String, String, String) = cmd(&mut con, &["BZPOPMIN", "{q}z", "1"]);
    assert_eq!(min.1, "one");
    let mpop: (String, Vec<String>) = cmd(&mut con, &["BLMPOP", "1", "1", "{q}dst", "LEFT"]);
    assert_eq!(mpop, ("{q}dst".to_string(), vec!["b".to_string()]));
    let zmpop: Value = cmd(&mut con, &["BZMPOP", "1", "1", "{q}z", "MAX"]);
    assert!(format!("{zmpop:?}").contains("two"), "{zmpop:?}");
    // Keys in different slots wait too (tests/cross_slot.rs wakes them).
    let cross: Value = cmd(&mut con, &["BLPOP", "a", "b", "0.1"]);
    assert_eq!(cross, Value::Nil);

    // XREAD BLOCK woken by XADD.
    let reader = {
        let mut con = proxy.conn();
        std::thread::spawn(move || {
            let v: Value = cmd(
                &mut con,
                &["XREAD", "BLOCK", "10000", "STREAMS", "events", "$"],
            );
            v
        })
    };
    common::wait_until(Duration::from_secs(5), "XREAD to block", || {
        blocked_on_nodes(&cluster) == 1
    });
    let _: String = cmd(&mut con, &["XADD", "events", "*", "kind", "signup"]);
    let got = reader.join().expect("reader");
    assert!(format!("{got:?}").contains("signup"), "{got:?}");
    let none: Value = cmd(
        &mut con,
        &["XREAD", "BLOCK", "100", "STREAMS", "events", "$"],
    );
    assert_eq!(none, Value::Nil);
}

#[test]
fn client_unblock_ends_a_wait_as_a_timeout_or_an_error() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    let mut admin = proxy.conn();
    for (mode, expect_error) in [("TIMEOUT", false), ("ERROR", true)] {
        let mut waiter_con = proxy.conn();
        let id: i64 = cmd(&mut waiter_con, &["CLIENT", "ID"]);
        let waiter = std::thread::spawn(move || {
            let got = redis::cmd("BLPOP")
                .arg("never")
                .arg(0)
                .query::<Option<(String, String)>>(&mut waiter_con);
            (got, waiter_con)
        });
        common::wait_until(Duration::from_secs(5), "BLPOP to block", || {
            blocked_on_nodes(&cluster) == 1
        });
        // INFO counts the proxy's own blocked clients, as one Redis counts its own.
        let info: String = cmd(&mut admin, &["INFO", "clients"]);
        assert!(info.contains("blocked_clients:1\r\n"), "{info}");
        let woken: i64 = cmd(&mut admin, &["CLIENT", "UNBLOCK", &id.to_string(), mode]);
        assert_eq!(woken, 1);
        let (got, waiter_con) = waiter.join().expect("waiter");
        // The node's wait ended with the proxy's, while the client stays connected.
        common::wait_until(Duration::from_secs(5), "the node to unblock", || {
            blocked_on_nodes(&cluster) == 0
        });
        drop(waiter_con);
        let info: String = cmd(&mut admin, &["INFO", "clients"]);
        assert!(info.contains("blocked_clients:0\r\n"), "{info}");
        match expect_error {
            false => assert_eq!(got.expect("nil reply"), None),
            true => assert!(format!("{got:?}").contains("UNBLOCKED"), "{got:?}"),
        }
    }
    let none: i64 = cmd(&mut admin, &["CLIENT", "UNBLOCK", "999999"]);
    assert_eq!(none, 0);
}

#[test]
fn a_client_that_leaves_releases_its_blocked_command() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    let mut raw = std::net::TcpStream::connect(proxy.addr).expect("connect");
    raw.write_all(b"*3\r\n$5\r\nBLPOP\r\n$7\r\nnothing\r\n$1\r\n0\r\n")
        .expect("send");
    common::wait_until(Duration::from_secs(5), "BLPOP to block", || {
        blocked_on_nodes(&cluster) == 1
    });
    drop(raw);
    common::wait_until(Duration::from_secs(5), "the node to unblock", || {
        blocked_on_nodes(&cluster) == 0
    });
    // Nothing was popped on behalf of the departed client.
    let mut con = proxy.conn();
    let _: i64 = cmd(&mut con, &["LPUSH", "nothing", "kept"]);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(cmd::<i64>(&mut con, &["LLEN", "nothing"]), 1);
}

#[test]
fn blpop_follows_its_key_across_a_slot_migration() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    let (slot, keys) = common::keys_in_one_slot("moving-queue", 2);
    let queue = keys[0].clone();
    let waiter = {
        let mut con = proxy.conn();
        let queue = queue.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let got: Value = cmd(&mut con, &["BLPOP", &queue, "20"]);
            (got, started.elapsed())
        })
    };
    common::wait_until(Duration::from_secs(5), "BLPOP to block", || {
        blocked_on_nodes(&cluster) == 1
    });
    let mut con = proxy.conn();
    // Another key of the slot has data, so the migration really moves something.
    let _: () = cmd(&mut con, &["SET", &keys[1], "payload"]);
    let source = cluster.owner_of(slot);
    let target = cluster.other_than(source);
    let (status, job) = proxy.admin_post(
        "/migrations",
        &format!(
            r#"{{"slots":"{slot}","from":"{}","to":"{}"}}"#,
            source.addr(),
            target.id
        ),
    );
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().expect("job id").to_string();
    let done = proxy.wait_job(&id, Duration::from_secs(30));
    assert_eq!(done["state"], "completed", "{done}");
    // Redis answers the blocked command MOVED within its cron; the proxy re-issues it on the
    // new owner, where it blocks again.
    common::wait_until(
        Duration::from_secs(10),
        "BLPOP to block on the new owner",
        || {
            let info: String = target.cmd(&["INFO", "clients"]);
            info.contains("blocked_clients:1")
        },
    );
    let _: i64 = cmd(&mut con, &["RPUSH", &queue, "exactly-once"]);
    let (got, waited) = waiter.join().expect("waiter");
    assert_eq!(
        got,
        Value::Array(vec![
            Value::BulkString(queue.clone().into_bytes()),
            Value::BulkString(b"exactly-once".to_vec())
        ])
    );
    assert!(waited < Duration::from_secs(20), "{waited:?}");
    assert_eq!(cmd::<i64>(&mut con, &["LLEN", &queue]), 0);
    let on_target: i64 = target.cmd(&["EXISTS", &keys[1]]);
    assert_eq!(on_target, 1);
}

#[test]
fn wait_counts_the_replicas_of_the_last_write() {
    let cluster = Cluster::start(1, 1);
    let master = &cluster.nodes[0];
    let replica = &cluster.nodes[1];
    let _: () = replica.cmd(&["CLUSTER", "REPLICATE", &master.id]);
    common::wait_until(Duration::from_secs(20), "the replica to sync", || {
        let info: String = master.cmd(&["INFO", "replication"]);
        info.contains("connected_slaves:1") && info.contains("state=online")
    });
    let proxy = TestProxy::start(&cluster);
    let mut con = proxy.conn();
    let _: () = cmd(&mut con, &["SET", "durable", "yes"]);
    let acked: i64 = cmd(&mut con, &["WAIT", "1", "5000"]);
    assert_eq!(acked, 1);
    // More replicas than exist: the timeout is honoured and the real count returned.
    let started = Instant::now();
    let acked: i64 = cmd(&mut con, &["WAIT", "2", "300"]);
    let waited = started.elapsed();
    assert_eq!(acked, 1);
    assert!(
        waited >= Duration::from_millis(280) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    let mut on_replica = replica.conn();
    let _: () = cmd(&mut on_replica, &["READONLY"]);
    assert_eq!(cmd::<String>(&mut on_replica, &["GET", "durable"]), "yes");
}
