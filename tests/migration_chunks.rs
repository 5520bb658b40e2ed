//! A slot's keys leave the source in short `MIGRATE`s (at most 20 keys and 64 KiB each), so
//! the source's clients wait for one short chunk at most; every key arrives.

mod common;
use common::{connect, keys_for_slots, query, Cluster, TestProxy};

/// `cmdstat_migrate`'s `calls` on `node`.
fn migrate_calls(node: &common::Node) -> u64 {
    let info: String = query(&mut connect(&node.addr()), &["INFO", "commandstats"]);
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_migrate:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn small_and_large_values_go_in_short_migrates() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    let mut con = proxy.conn();
    // Slot 0: 50 small keys (3 MIGRATEs of at most 20); slot 1: 8 keys of 40 KB (one each,
    // two would pass 64 KiB).
    let small = keys_for_slots(0..=0, 50);
    let large = keys_for_slots(1..=1, 8);
    for key in &small {
        let _: () = query(&mut con, &["SET", key, "v"]);
    }
    let big_value = "x".repeat(40_000);
    for key in &large {
        let _: () = query(&mut con, &["SET", key, &big_value]);
    }
    let (source, target) = (cluster.owner_of(0), &cluster.nodes[1]);
    assert_eq!(cluster.owner_of(1).addr(), source.addr());
    let before = migrate_calls(source);
    let id = proxy.start_migration("0-1", source, target);
    proxy.wait_completed(&id, &cluster);
    let calls = migrate_calls(source) - before;
    assert_eq!(calls, 3 + 8, "MIGRATEs the source ran");
    for key in &small {
        let value: Option<String> = query(&mut con, &["GET", key]);
        assert_eq!(value.as_deref(), Some("v"), "{key}");
    }
    for key in &large {
        let len: i64 = query(&mut con, &["STRLEN", key]);
        assert_eq!(len, 40_000, "{key}");
    }
}
