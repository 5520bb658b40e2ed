//! The proxy SIGKILLed at every step of a slot move, then started again: the job completes,
//! no slot stays open, no key is lost or duplicated, and clients of another proxy in front of
//! the same cluster never notice.
//!
//! Needs the failpoints build: `cargo test --features failpoints --test migration_kill`
//! (`.ci/run` does this). The proxy is started with `FAILPOINTS=<step>=1*return`, which freezes
//! its migration worker the first time it passes `<step>`; the test waits for the proxy to log
//! that, checks the cluster really is in that state, and kills it.

mod common;
use common::traffic::Traffic;
use common::{check_keys, keys_for_slots, keys_for_slots_named, write_keys, Cluster, Node};
use common::{ProxyProcess, TestProxy};
use std::time::{Duration, Instant};

const SLOTS: &str = "0-3";
const KEYS_PER_SLOT: usize = 30;

/// The markers `node` shows for `slot` in its own `CLUSTER NODES` line, and whether it claims
/// the slot.
fn view_of(node: &Node, slot: u16) -> (bool, Vec<String>) {
    let text: String = node.cmd(&["CLUSTER", "NODES"]);
    let me = text.lines().find(|l| l.contains("myself")).unwrap_or("");
    let mut owns = false;
    let mut markers = Vec::new();
    for word in me.split_whitespace().skip(8) {
        if word.starts_with('[') {
            if word.starts_with(&format!("[{slot}-")) {
                markers.push(word.to_string());
            }
            continue;
        }
        let (a, b) = word.split_once('-').unwrap_or((word, word));
        let (a, b): (u16, u16) = (a.parse().unwrap_or(1), b.parse().unwrap_or(0));
        owns |= a <= slot && slot <= b;
    }
    (owns, markers)
}

fn count_in_slot(node: &Node, slot: u16) -> i64 {
    node.cmd(&["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()])
}

/// Asserts the cluster is where a move of slot 0 from `source` to `target` frozen at `step`
/// must be.
fn assert_frozen_state(step: &str, source: &Node, target: &Node) {
    let (source_owns, source_marks) = view_of(source, 0);
    let (target_owns, target_marks) = view_of(target, 0);
    let importing = target_marks.iter().any(|m| m.contains("-<-"));
    let migrating = source_marks.iter().any(|m| m.contains("->-"));
    let state = format!(
        "source owns={source_owns} {source_marks:?} keys={}, target owns={target_owns} {target_marks:?} keys={}",
        count_in_slot(source, 0),
        count_in_slot(target, 0)
    );
    let expected = match step {
        "migration::after_importing" => importing && !migrating && source_owns,
        "migration::after_migrating" => importing && migrating && source_owns,
        "migration::mid_migrate" => {
            importing && migrating && count_in_slot(source, 0) > 0 && count_in_slot(target, 0) > 0
        }
        "migration::before_target_node" => {
            importing && migrating && !target_owns && count_in_slot(source, 0) == 0
        }
        // In a batch, after the target's CLUSTER BUMPEPOCH: no slot assigned yet.
        "migration::mid_target_node" => {
            let (owns_1, marks_1) = view_of(target, 1);
            importing
                && migrating
                && !target_owns
                && count_in_slot(source, 0) == 0
                && !owns_1
                && marks_1.iter().any(|m| m.contains("-<-"))
        }
        "migration::after_target_node" => target_owns && !importing && migrating,
        "migration::after_source_node" => target_owns && !source_owns && !migrating,
        other => panic!("unknown step {other}"),
    };
    assert!(expected, "frozen at {step}, but the cluster shows: {state}");
    eprintln!("{step}: {state}");
}

fn kill_at(step: &str) {
    let cluster = Cluster::start(3, 0);
    let (source, target) = (&cluster.nodes[0], &cluster.nodes[2]);
    // Clients use a second proxy, which keeps serving while the migrating one is dead.
    let serving = TestProxy::start(&cluster);
    let mut con = serving.conn();
    let keys = keys_for_slots(0..=3, KEYS_PER_SLOT);
    write_keys(&mut con, &keys);
    let traffic = Traffic::start(
        serving.addr,
        keys_for_slots_named("ctr", 0..=3, 2),
        keys_for_slots_named("w", 0..=3, 10),
    );

    let failpoint = format!("{step}=1*return");
    // Small MIGRATEs, so that a slot takes several (mid_migrate); between the target's two
    // NODE writes, a batch of several slots (its key budget is ten MIGRATEs).
    let settings = if step == "migration::mid_target_node" {
        "batch_keys = 100\nparallel_slots = 1\nlease_ttl_ms = 2000\nmax_keys_per_second = 500"
    } else {
        "batch_keys = 5\nparallel_slots = 1\nlease_ttl_ms = 2000\nmax_keys_per_second = 500"
    };
    let mut migrator =
        ProxyProcess::launch_with_env(&cluster, "", settings, &[("FAILPOINTS", &failpoint)]);
    let body = format!(
        r#"{{"slots":"{SLOTS}","from":"{}","to":"{}"}}"#,
        source.id, target.id
    );
    let (status, job) = common::http_request(migrator.admin, "POST", "/migrations", &body, None);
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().expect("job id").to_string();
    migrator.wait_log(&format!("failpoint=\"{step}\""), Duration::from_secs(30));
    assert_frozen_state(step, source, target);
    migrator.kill();
    let open_at_kill = cluster.open_slots();

    let restarted = Instant::now();
    migrator.start_again();
    let done = common::wait_job(migrator.admin, &id, Duration::from_secs(60));
    let recovery = restarted.elapsed();
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["slots_done"], 4, "{done}");
    assert!(
        cluster.open_slots().is_empty(),
        "{:?}",
        cluster.open_slots()
    );
    let (_, view) = common::http_request(migrator.admin, "GET", "/cluster", "", None);
    assert!(
        view["repairs"]
            .to_string()
            .contains(&format!("job {id} restored from the journal")),
        "{view}"
    );

    std::thread::sleep(Duration::from_millis(300));
    let report = traffic.stop();
    assert!(
        report.errors.is_empty(),
        "clients saw {} errors: {:?}",
        report.errors.len(),
        report.first_errors(5)
    );
    report.verify(&mut con);
    check_keys(&mut con, &keys);
    for slot in 0..=3u16 {
        assert_eq!(
            count_in_slot(source, slot),
            0,
            "slot {slot} left on the source"
        );
        let (owns, _) = view_of(target, slot);
        assert!(owns, "the target owns slot {slot}");
    }
    assert_eq!(
        cluster.total_keys(),
        (keys.len() + report.keys_created()) as i64,
        "no key lost or duplicated"
    );
    let (clean, text) = cluster.redis_cli_check();
    assert!(clean, "{text}");
    eprintln!(
        "{step}: open at kill {open_at_kill:?}; job completed {:.1} s after the restart; \
         {} client commands, 0 errors",
        recovery.as_secs_f64(),
        report.commands
    );
}

#[test]
fn killed_after_importing() {
    kill_at("migration::after_importing");
}

#[test]
fn killed_after_migrating() {
    kill_at("migration::after_migrating");
}

#[test]
fn killed_mid_migrate() {
    kill_at("migration::mid_migrate");
}

#[test]
fn killed_before_the_targets_setslot_node() {
    kill_at("migration::before_target_node");
}

#[test]
fn killed_between_the_targets_first_and_other_setslot_nodes() {
    kill_at("migration::mid_target_node");
}

#[test]
fn killed_after_the_targets_setslot_node() {
    kill_at("migration::after_target_node");
}

#[test]
fn killed_after_the_sources_setslot_node() {
    kill_at("migration::after_source_node");
}

#[test]
fn every_failpoint_has_a_test() {
    let source = include_str!("migration_kill.rs");
    for step in slotproxy::failpoint::MIGRATION_STEPS {
        assert!(
            source.contains(&format!("kill_at(\"{step}\")")),
            "{step} has no test"
        );
    }
}
