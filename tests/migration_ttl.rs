//! Keys with TTLs in slots the proxy is moving: keys that expire during the move stay gone,
//! and the others keep their TTLs (MIGRATE carries them) within a small tolerance.

mod common;
use common::{keys_for_slots, query, Cluster, TestProxy};
use std::time::{Duration, Instant};

#[test]
fn expiring_keys_stay_expired_and_ttls_survive_a_slot_move() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start_with(&cluster, |c| {
        c.migration.max_keys_per_second = 400;
        c.migration.batch_keys = 10;
    });
    let mut con = proxy.conn();
    let keys = keys_for_slots(0..=49, 20);
    // A quarter expires within 1.5 s (while the 1,000 keys move at 400 keys/s), a quarter
    // lives for a minute, a quarter for an hour, a quarter has no TTL.
    let written = Instant::now();
    let mut pipe = redis::pipe();
    for (i, key) in keys.iter().enumerate() {
        let set = pipe.cmd("SET").arg(key).arg("v");
        match i % 4 {
            0 => set.arg("PX").arg(1500),
            1 => set.arg("PX").arg(60_000),
            2 => set.arg("EX").arg(3600),
            _ => set,
        }
        .ignore();
    }
    pipe.query::<()>(&mut con).expect("write keys");

    let (source, target) = (cluster.owner_of(0), &cluster.nodes[1]);
    let id = proxy.start_migration("0-49", source, target);
    let job = proxy.wait_completed(&id, &cluster);
    let moved_in = written.elapsed();
    assert!(
        moved_in > Duration::from_millis(1500),
        "the move ({moved_in:?}) must outlast the short TTLs"
    );

    let elapsed_ms = written.elapsed().as_millis() as i64;
    let mut worst_drift = 0;
    for (i, key) in keys.iter().enumerate() {
        let ttl: i64 = query(&mut con, &["PTTL", key]);
        match i % 4 {
            0 => assert_eq!(ttl, -2, "{key} expired before or during the move came back"),
            1 => {
                assert!(
                    ttl <= 60_000 - elapsed_ms + 100 && ttl > 60_000 - elapsed_ms - 2000,
                    "{key}: PTTL {ttl} after {elapsed_ms} ms"
                );
                worst_drift = worst_drift.max((60_000 - elapsed_ms - ttl).abs());
            }
            2 => assert!(ttl > 3_590_000 - elapsed_ms, "{key}: PTTL {ttl}"),
            _ => assert_eq!(ttl, -1, "{key} got a TTL"),
        }
    }
    // Every live key is on the target, and nothing else: the PTTLs above went to the target,
    // which deletes an expired key it is asked about, so none is left uncounted.
    let on_target: i64 = (0..=49)
        .map(|slot: u16| -> i64 { target.cmd(&["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]) })
        .sum();
    assert_eq!(on_target, 750, "keys on the target");
    println!(
        "1,000 keys with TTLs: job done in {moved_in:?}, {} keys moved, {on_target} on the \
         target, TTLs off by at most {worst_drift} ms",
        job["keys_moved"]
    );
}
