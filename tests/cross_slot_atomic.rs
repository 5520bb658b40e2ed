//! Atomicity of commands and transactions across slots of one master, and correctness while
//! one of their slots is moved by the proxy itself.

mod common;
use common::{Cluster, TestProxy, Wire};
use slotproxy::cluster::key_slot;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Two keys in different slots of the master on `port`.
fn two_keys(cluster: &Cluster, port: u16, prefix: &str) -> (String, String) {
    let a = cluster.key_on(port, &format!("{prefix}a"));
    let mut n = 0;
    loop {
        let b = cluster.key_on(port, &format!("{prefix}b{n}"));
        if key_slot(b.as_bytes()) != key_slot(a.as_bytes()) {
            return (a, b);
        }
        n += 1;
    }
}

fn int(reply: &[u8]) -> i64 {
    String::from_utf8_lossy(reply)
        .trim()
        .trim_start_matches(':')
        .parse()
        .unwrap_or(-1)
}

/// `MULTI GET a GET b EXEC` as two integers.
fn read_pair(wire: &mut Wire, a: &str, b: &str) -> (i64, i64) {
    wire.call(&["MULTI"]);
    wire.call(&["GET", a]);
    wire.call(&["GET", b]);
    let reply = String::from_utf8_lossy(&wire.call(&["EXEC"])).into_owned();
    let values: Vec<i64> = reply
        .split("\r\n")
        .filter(|l| !l.starts_with('*') && !l.starts_with('$') && !l.is_empty())
        .map(|l| l.parse().unwrap_or(-1))
        .collect();
    assert_eq!(values.len(), 2, "{reply}");
    (values[0], values[1])
}

/// Transfers between two counters in different slots never show half done to a reader's
/// transaction, and SMOVE between two sets never loses or doubles a member.
#[test]
fn transfers_between_slots_of_one_master_are_never_seen_half_done() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    let (a, b) = two_keys(&cluster, cluster.nodes[0].port, "acct");
    let (s1, s2) = two_keys(&cluster, cluster.nodes[0].port, "set");
    let addr = proxy.addr.to_string();
    let mut setup = Wire::connect(&addr, false);
    setup.call(&["SET", &a, "1000"]);
    setup.call(&["SET", &b, "0"]);
    let members: Vec<String> = (0..50).map(|i| i.to_string()).collect();
    let mut sadd = vec!["SADD".to_string(), s1.clone()];
    sadd.extend(members.iter().cloned());
    setup.call(&sadd);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (addr, a, b, s1, s2) = (addr.clone(), a.clone(), b.clone(), s1.clone(), s2.clone());
        std::thread::spawn(move || {
            let mut wire = Wire::connect(&addr, false);
            for i in 0..400 {
                wire.call(&["MULTI"]);
                wire.call(&["DECRBY", &a, "1"]);
                wire.call(&["INCRBY", &b, "1"]);
                let exec = wire.call(&["EXEC"]);
                assert!(
                    exec.starts_with(b"*2\r\n:"),
                    "{}",
                    String::from_utf8_lossy(&exec)
                );
                let (from, to) = if i % 2 == 0 { (&s1, &s2) } else { (&s2, &s1) };
                let member = (i % 50).to_string();
                wire.call(&["SMOVE", from, to, &member]);
            }
        })
    };
    let reader = {
        let (addr, a, b, s1, s2, stop) = (
            addr.clone(),
            a.clone(),
            b.clone(),
            s1.clone(),
            s2.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || {
            let mut wire = Wire::connect(&addr, false);
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) {
                let (x, y) = read_pair(&mut wire, &a, &b);
                assert_eq!(x + y, 1000, "a transfer seen half done: {x} + {y}");
                let inter = wire.call(&["SINTERCARD", "2", &s1, &s2]);
                assert_eq!(inter, b":0\r\n", "a member in both sets");
                wire.call(&["MULTI"]);
                wire.call(&["SCARD", &s1]);
                wire.call(&["SCARD", &s2]);
                let cards = String::from_utf8_lossy(&wire.call(&["EXEC"])).into_owned();
                let total: i64 = cards
                    .split("\r\n")
                    .filter_map(|l| l.strip_prefix(':'))
                    .map(|n| n.parse::<i64>().unwrap_or(-1))
                    .sum();
                assert_eq!(total, 50, "{cards}");
                reads += 1;
            }
            reads
        })
    };
    writer.join().expect("writer");
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().expect("reader");
    assert!(reads > 10, "{reads}");
    let (x, y) = read_pair(&mut setup, &a, &b);
    assert_eq!((x, y), (600, 400));
    let total = int(&setup.call(&["SCARD", &s1])) + int(&setup.call(&["SCARD", &s2]));
    assert_eq!(total, 50);
}

/// The proxy moves the slot of one of the keys while clients run transactions and commands
/// across that slot and another: every transfer lands exactly once, nothing is lost, and no
/// client sees an error.
#[test]
fn transactions_across_a_slot_being_moved_lose_nothing() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start_with(&cluster, |c| {
        c.migration.max_keys_per_second = 200;
        c.migration.batch_keys = 10;
    });
    let source = &cluster.nodes[0];
    let target = &cluster.nodes[1];
    let (a, b) = two_keys(&cluster, source.port, "mv");
    let slot = key_slot(a.as_bytes());
    let addr = proxy.addr.to_string();
    let mut setup = Wire::connect(&addr, false);
    setup.call(&["SET", &a, "100000"]);
    setup.call(&["SET", &b, "0"]);
    // Neighbours of `a` in its slot, so that the slot takes a while to move.
    let neighbours = common::keys_for_slots_named("nb", slot..=slot, 300);
    let mut con = proxy.conn();
    common::write_keys(&mut con, &neighbours);
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let (addr, a, b) = (addr.clone(), a.clone(), b.clone());
            std::thread::spawn(move || {
                let mut wire = Wire::connect(&addr, w == 1);
                let mut errors = Vec::new();
                for _ in 0..300 {
                    wire.call(&["MULTI"]);
                    wire.call(&["DECR", &a]);
                    wire.call(&["INCR", &b]);
                    let exec = wire.call(&["EXEC"]);
                    if !exec.starts_with(b"*2\r\n:") {
                        errors.push(String::from_utf8_lossy(&exec).into_owned());
                    }
                    let copy = wire.call(&["COPY", &a, &format!("{b}:copy"), "REPLACE"]);
                    if copy.starts_with(b"-") {
                        errors.push(String::from_utf8_lossy(&copy).into_owned());
                    }
                }
                errors
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let id = proxy.start_migration(&slot.to_string(), source, target);
    let job = proxy.wait_completed(&id, &cluster);
    for worker in workers {
        let errors = worker.join().expect("worker");
        assert!(errors.is_empty(), "{errors:?}");
    }
    assert_eq!(cluster.owner_of(slot).port, target.port, "{job}");
    let (x, y) = read_pair(&mut setup, &a, &b);
    assert_eq!((x, y), (100000 - 600, 600));
    common::check_keys(&mut con, &neighbours);
}
