//! Faults in the middle of a slot move that the proxy performs itself.

mod common;
use common::{check_keys, keys_for_slots, write_keys, Cluster, TestProxy};
use std::time::Duration;

/// Keys in `slots` that a node holds, by its own count.
fn keys_held(node: &common::Node, slots: std::ops::RangeInclusive<u16>) -> i64 {
    slots
        .map(|slot| -> i64 { node.cmd(&["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]) })
        .sum()
}

/// The target stops (SIGSTOP) for longer than the MIGRATE timeout while batches are in
/// flight: MIGRATE fails with IOERR, possibly after the target got the keys; the proxy sends
/// the batch again with REPLACE once the target is back. Every key survives, exactly one copy
/// exists, and a DEL through the proxy leaves nothing behind on either node.
#[test]
fn a_target_stalled_mid_batch_is_retried_with_replace_and_leaves_no_stale_copy() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start_with(&cluster, |c| {
        c.migration.migrate_timeout_ms = 300;
        c.migration.batch_keys = 50;
        c.migration.max_keys_per_second = 1000;
        c.migration.parallel_slots = 2;
    });
    let mut con = proxy.conn();
    let keys = keys_for_slots(0..=39, 50);
    write_keys(&mut con, &keys);
    let (source, target) = (cluster.owner_of(0), &cluster.nodes[1]);
    let id = proxy.start_migration("0-39", source, target);

    // Stop the target mid-job for longer than the MIGRATE timeout but shorter than the
    // cluster's node timeout (2 s), so the cluster itself does not fail it over.
    std::thread::sleep(Duration::from_millis(400));
    target.signal("STOP");
    std::thread::sleep(Duration::from_millis(1200));
    target.signal("CONT");

    let job = proxy.wait_completed(&id, &cluster);
    let ioerrs = proxy.metric("slotproxy_migration_errors_total{kind=\"ioerr\"}");
    assert!(ioerrs >= 1.0, "the stall never hit a MIGRATE: {job}");
    check_keys(&mut con, &keys);
    assert_eq!(keys_held(source, 0..=39), 0, "keys left on the source");
    assert_eq!(
        keys_held(target, 0..=39),
        keys.len() as i64,
        "copies on the target"
    );

    // DEL through the proxy really deletes: nothing reappears on either node.
    for chunk in keys.chunks(500) {
        let deleted: usize = redis::cmd("DEL").arg(chunk).query(&mut con).expect("DEL");
        assert_eq!(deleted, chunk.len());
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(keys_held(source, 0..=39) + keys_held(target, 0..=39), 0);
    let left: Vec<Option<String>> = redis::cmd("MGET")
        .arg(&keys[..100])
        .query(&mut con)
        .expect("MGET");
    assert!(left.iter().all(Option::is_none));
    println!(
        "target stalled 1.2 s mid-job: {ioerrs} IOERR batches re-sent with REPLACE; job done in {}s",
        job["running_seconds"]
    );
}
