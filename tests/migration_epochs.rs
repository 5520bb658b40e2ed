//! A hand-over where the source's config epoch went above the target's without the target
//! hearing of it: the proxy notices before the target's `SETSLOT NODE` and settles the epochs
//! first. Without that the target would claim the slot under the lower epoch, the source
//! would take it back, and Redis would delete the target's keys of the slot (seen: keys gone,
//! clients bouncing between the two ends with `MOVED` for good).
//!
//! Needs the failpoints build: `cargo test --features failpoints --test migration_epochs`
//! (`.ci/run` does this). The proxy sleeps for a while right before the target's
//! `SETSLOT NODE`; meanwhile the test bumps the source's epoch above the target's without the
//! target hearing of it, as happens in a cluster whose epochs are still being settled.

mod common;
use common::{check_keys, keys_in_one_slot, write_keys, Cluster, Node, ProxyProcess};
use std::time::{Duration, Instant};

fn my_epoch(node: &Node) -> u64 {
    let info: String = node.cmd(&["CLUSTER", "INFO"]);
    info.lines()
        .find_map(|l| l.trim().strip_prefix("cluster_my_epoch:"))
        .and_then(|v| v.parse().ok())
        .expect("cluster_my_epoch")
}

fn count_in_slot(node: &Node, slot: u16) -> i64 {
    node.cmd(&["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()])
}

/// Whether `node` claims `slot` in its own view.
fn claims(node: &Node, slot: u16) -> bool {
    let text: String = node.cmd(&["CLUSTER", "NODES"]);
    let me = text.lines().find(|l| l.contains("myself")).unwrap_or("");
    me.split_whitespace()
        .skip(8)
        .filter(|w| !w.starts_with('['))
        .any(|w| {
            let (a, b) = w.split_once('-').unwrap_or((w, w));
            let (a, b): (u16, u16) = (a.parse().unwrap_or(1), b.parse().unwrap_or(0));
            a <= slot && slot <= b
        })
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("not seen within {timeout:?}: {what}");
    false
}

#[test]
fn a_source_epoch_above_the_targets_is_settled_before_the_hand_over() {
    let cluster = Cluster::start(3, 0);
    // Distinct epochs first (a fresh cluster settles its collisions within a few pings), so
    // that the target is the one master that holds the greatest: its SETSLOT NODE then does
    // not bump its epoch, and a bump of the source's puts the source above it.
    assert!(
        wait_for("distinct config epochs", Duration::from_secs(20), || {
            let mut epochs: Vec<u64> = cluster.nodes.iter().map(my_epoch).collect();
            epochs.sort_unstable();
            epochs.dedup();
            epochs.len() == cluster.nodes.len()
        }),
        "the masters' config epochs never became distinct"
    );
    let target = cluster
        .nodes
        .iter()
        .max_by_key(|n| my_epoch(n))
        .expect("a master");
    let source = cluster.other_than(target);
    let (slot, keys) = (0..)
        .map(|i| keys_in_one_slot(&format!("epoch{i}"), 20))
        .find(|(slot, _)| cluster.owner_of(*slot).port == source.port)
        .expect("a slot on the source");

    let migrator = ProxyProcess::launch_with_env(
        &cluster,
        "",
        "",
        &[("FAILPOINTS", "migration::before_target_node=1*sleep(1500)")],
    );
    let mut con = common::connect(&migrator.client.to_string());
    write_keys(&mut con, &keys);
    let body = format!(
        r#"{{"slots":"{slot}","from":"{}","to":"{}"}}"#,
        source.id, target.id
    );
    let (status, job) = common::http_request(migrator.admin, "POST", "/migrations", &body, None);
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().expect("job id").to_string();

    // The keys have left the source: the proxy is at the gate or asleep before the target's
    // NODE. The source bumps its epoch above the target's and, in the same breath, sleeps, so
    // that no ping tells the target about it. Handed over now, the target would claim the
    // slot under an epoch below the source's, and the source (still claiming it) would take
    // it back when it wakes: the target would drop the keys (checked: without the proxy's
    // settling step this test fails at `check_keys` every time).
    assert!(
        wait_for("the keys on the target", Duration::from_secs(20), || {
            count_in_slot(source, slot) == 0 && count_in_slot(target, slot) == keys.len() as i64
        }),
        "the keys never reached the target"
    );
    std::thread::sleep(Duration::from_millis(100));
    let before = my_epoch(target);
    let (bumped, _): (String, String) = redis::pipe()
        .cmd("CLUSTER")
        .arg("BUMPEPOCH")
        .cmd("DEBUG")
        .arg("SLEEP")
        .arg("2")
        .query(&mut source.conn())
        .expect("BUMPEPOCH + DEBUG SLEEP");
    assert!(bumped.starts_with("BUMPED"), "{bumped}");
    assert!(
        my_epoch(source) > before,
        "the source's epoch is not above the target's"
    );

    let done = common::wait_job(migrator.admin, &id, Duration::from_secs(30));
    assert_eq!(done["state"], "completed", "{done}");
    assert!(
        claims(target, slot),
        "the target does not claim slot {slot}"
    );
    assert!(!claims(source, slot), "the source still claims slot {slot}");
    assert!(my_epoch(target) > my_epoch(source));
    check_keys(&mut con, &keys);
    cluster.wait_consistent();
    let (clean, text) = cluster.redis_cli_check();
    assert!(clean, "{text}");
    eprintln!(
        "settled: target epoch {} above the source's {}; all keys read back",
        my_epoch(target),
        my_epoch(source)
    );
}
