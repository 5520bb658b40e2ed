//! Failovers under a proxy: a cluster with one replica per master, clients writing through
//! the proxy, and a master handed over (`CLUSTER FAILOVER`) or killed (automatic failover).

mod common;
use common::traffic::Traffic;
use common::{keys_for_slots_named, Cluster, TestProxy};
use std::time::{Duration, Instant};

/// Slots of master 0 in a 3-master harness cluster.
const FIRST_MASTER_SLOTS: std::ops::RangeInclusive<u16> = 0..=5460;

fn spread_keys(prefix: &str, per_master: usize) -> Vec<String> {
    // A few slots of each master, so every shard sees traffic.
    let mut keys = keys_for_slots_named(prefix, 100..=100 + per_master as u16 / 4, 4);
    keys.extend(keys_for_slots_named(
        prefix,
        6000..=6000 + per_master as u16 / 4,
        4,
    ));
    keys.extend(keys_for_slots_named(
        prefix,
        12000..=12000 + per_master as u16 / 4,
        4,
    ));
    keys
}

/// `CLUSTER FAILOVER` on `replica` until it is a master: on a loaded machine a manual
/// failover can time out (Redis gives it 5 s) and leave the old master in charge.
fn hand_over(replica: &common::Node) -> Instant {
    for _ in 0..3 {
        let _: () = replica.cmd(&["CLUSTER", "FAILOVER"]);
        let deadline = Instant::now() + Duration::from_secs(12);
        while Instant::now() < deadline {
            if replica.is_master() {
                return Instant::now();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!(
        "{} did not take over after three CLUSTER FAILOVERs",
        replica.addr()
    );
}

fn wait_promoted(cluster: &Cluster, replica: usize, timeout: Duration) -> Instant {
    common::wait_until(timeout, "the replica to become master", || {
        cluster.nodes[replica].is_master()
    });
    Instant::now()
}

#[test]
fn a_manual_failover_is_followed_without_client_errors() {
    let cluster = Cluster::start_replicated(3);
    // A manual failover pauses writes on the old master until it is over (at most 10 s).
    let proxy = TestProxy::start_with(&cluster, |c| c.cluster.request_timeout_ms = 12_000);
    let traffic = Traffic::start(proxy.addr, spread_keys("ctr", 8), spread_keys("w", 40));
    std::thread::sleep(Duration::from_secs(1));
    let started = Instant::now();
    let promoted = hand_over(cluster.replica_of(0));
    std::thread::sleep(Duration::from_secs(2));
    let report = traffic.stop();
    assert!(
        report.errors.is_empty(),
        "clients saw {} errors: {:?}",
        report.errors.len(),
        report.first_errors(5)
    );
    report.verify(&mut proxy.conn());
    let during: Vec<Duration> = report
        .rounds
        .iter()
        .filter(|(at, _)| *at >= started && *at <= promoted + Duration::from_secs(1))
        .map(|(_, d)| *d)
        .collect();
    eprintln!(
        "manual failover: promoted after {} ms; {} commands, 0 errors; slowest round {} ms \
         (during the failover {} ms)",
        (promoted - started).as_millis(),
        report.commands,
        report.slowest().as_millis(),
        during.iter().max().copied().unwrap_or_default().as_millis()
    );
}

#[test]
fn a_killed_master_fails_over_and_only_its_slots_error_while_it_is_down() {
    let mut cluster = Cluster::start_replicated(3);
    let proxy = TestProxy::start(&cluster);
    let traffic = Traffic::start(proxy.addr, spread_keys("ctr", 8), spread_keys("w", 40));
    std::thread::sleep(Duration::from_secs(1));
    let replica = cluster
        .nodes
        .iter()
        .position(|n| n.port == cluster.replica_of(0).port)
        .expect("replica index");
    let killed = Instant::now();
    cluster.kill(0);
    let promoted = wait_promoted(&cluster, replica, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(3));
    let report = traffic.stop();

    let errors = report.error_keys();
    for (_, key) in &errors {
        let slot = slotproxy::cluster::key_slot(key.as_bytes());
        assert!(
            FIRST_MASTER_SLOTS.contains(&slot),
            "an error for {key} (slot {slot}), which the killed master did not own: {:?}",
            report.first_errors(5)
        );
    }
    let last_error = errors.last().map(|(at, _)| *at);
    if let Some(last) = last_error {
        assert!(
            last < promoted + Duration::from_secs(5),
            "errors went on {} ms after the replica took over",
            last.saturating_duration_since(promoted).as_millis()
        );
    }
    let window = match (errors.first(), last_error) {
        (Some((first, _)), Some(last)) => last.duration_since(*first),
        _ => Duration::ZERO,
    };
    eprintln!(
        "killed master: replica promoted {} ms after the kill; clients saw {} errors, \
         all for its slots, from {} ms to {} ms after the kill (window {} ms); {} commands; \
         slowest round {} ms",
        (promoted - killed).as_millis(),
        errors.len(),
        errors
            .first()
            .map(|(at, _)| at.duration_since(killed).as_millis())
            .unwrap_or(0),
        last_error
            .map(|at| at.duration_since(killed).as_millis())
            .unwrap_or(0),
        window.as_millis(),
        report.commands,
        report.slowest().as_millis()
    );
    // Everything written to the other masters is there; the failed shard may lose what
    // Redis' asynchronous replication had not shipped when the master died.
    let mut con = proxy.conn();
    for (key, value) in &report.values {
        let slot = slotproxy::cluster::key_slot(key.as_bytes());
        if let (Some(value), false) = (value, FIRST_MASTER_SLOTS.contains(&slot)) {
            let got: Option<String> = redis::cmd("GET").arg(key).query(&mut con).expect("GET");
            assert_eq!(got.as_deref(), Some(value.as_str()), "{key}");
        }
    }
    // And the proxy serves the failed shard again without a restart.
    let key = keys_for_slots_named("after", 200..=200, 1).remove(0);
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("x")
        .query(&mut con)
        .expect("SET on the promoted replica");
}

/// A slow job (about 12 s, so that a manual failover that times out once under load still
/// lands while it runs) moving slots 0-59 from master 0 to master 1 with clients writing to those
/// slots, stopped (by the caller) after its first few slots.
struct MidJob {
    proxy: TestProxy,
    con: redis::Connection,
    keys: Vec<String>,
    traffic: Traffic,
    id: String,
}

impl MidJob {
    fn start(cluster: &Cluster) -> MidJob {
        let proxy = TestProxy::start_with(cluster, |c| {
            // A manual failover pauses writes on the old master for up to 5 s (Redis'
            // CLUSTER_MF_TIMEOUT), the lease renewal among them, if the lease lives there.
            c.migration.lease_ttl_ms = 15_000;
            // The same pause holds clients' writes; Redis lifts it after at most 10 s.
            c.cluster.request_timeout_ms = 12_000;
            c.migration.max_keys_per_second = 110;
            c.migration.batch_keys = 5;
            c.migration.parallel_slots = 1;
        });
        let mut con = proxy.conn();
        let keys = common::keys_for_slots(0..=59, 20);
        common::write_keys(&mut con, &keys);
        let traffic = Traffic::start(
            proxy.addr,
            keys_for_slots_named("ctr", 0..=59, 1),
            keys_for_slots_named("w", 0..=59, 1),
        );
        let id = proxy.start_migration("0-59", &cluster.nodes[0], &cluster.nodes[1]);
        common::wait_until(Duration::from_secs(30), "a few slots to move", || {
            let (_, job) = proxy.admin_json(&format!("/migrations/{id}"));
            job["slots_done"].as_u64().unwrap_or(0) >= 3
        });
        MidJob {
            proxy,
            con,
            keys,
            traffic,
            id,
        }
    }
}

#[test]
fn a_failover_of_the_source_mid_job_stops_the_job_and_repairs_the_slot() {
    let cluster = Cluster::start_replicated(3);
    let MidJob {
        proxy,
        mut con,
        keys,
        traffic,
        id,
    } = MidJob::start(&cluster);
    let target = &cluster.nodes[1];
    let new_master = cluster.replica_of(0);
    hand_over(new_master);
    let job = proxy.wait_job(&id, Duration::from_secs(60));
    eprintln!("job after the failover: {job}");
    assert_eq!(job["state"], "failed", "{job}");
    let reason = job["reason"].as_str().unwrap_or("");
    assert!(reason.contains("failover"), "{reason}");
    common::wait_until(Duration::from_secs(20), "the slot to be repaired", || {
        cluster.open_slots().is_empty()
    });
    common::check_keys(&mut con, &keys);

    // Resumed, the job moves the rest from the new master.
    let (status, resumed) = proxy.admin_post(&format!("/migrations/{id}/resume"), "");
    assert_eq!(status, 200, "{resumed}");
    let done = proxy.wait_completed(&id, &cluster);
    eprintln!("resumed: {done}");
    let report = traffic.stop();
    assert!(
        report.errors.is_empty(),
        "clients saw {} errors: {:?}",
        report.errors.len(),
        report.first_errors(5)
    );
    // Redis 7.0 does not replicate MIGRATING markers: from the failover until the repair, the
    // new master serves the slot in flight without the keys already on the target, so writes
    // to those keys in that window fork. Every other acknowledged write must be there.
    // A batch of slots is in flight at once: the reason names them all ("slots 3-4: ...").
    let in_flight: Vec<u16> = reason
        .strip_prefix("slots ")
        .or_else(|| reason.strip_prefix("slot "))
        .and_then(|r| r.split(':').next())
        .and_then(|list| slotproxy::migration::ranges::parse(list).ok())
        .expect("the reason names the slots in flight");
    let forked = report.mismatches(&mut con);
    for (key, what) in &forked {
        let slot = slotproxy::cluster::key_slot(key.as_bytes());
        assert!(
            in_flight.contains(&slot),
            "{key}: {what}, outside the slots in flight {in_flight:?}"
        );
    }
    eprintln!(
        "source failover mid-job: {} client commands, 0 errors; {} of {} written keys of slots \
         {in_flight:?} (in flight at the failover) forked: {forked:?}",
        report.commands,
        forked.len(),
        report.values.len() + report.incrs.len()
    );
    common::check_keys(&mut con, &keys);
    for slot in 0..=59u16 {
        let here: i64 = target.cmd(&["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]);
        assert!(here >= 20, "slot {slot} has {here} keys on the target");
    }
    let (clean, text) = cluster.redis_cli_check();
    assert!(clean, "{text}");
}

#[test]
fn a_killed_target_mid_job_stops_the_job_and_hands_the_keys_back() {
    let mut cluster = Cluster::start_replicated(3);
    let MidJob {
        proxy,
        mut con,
        keys,
        traffic,
        id,
    } = MidJob::start(&cluster);
    let killed = Instant::now();
    cluster.kill(1);
    let job = proxy.wait_job(&id, Duration::from_secs(90));
    let stopped = Instant::now();
    eprintln!(
        "job {} ms after the kill: {job}",
        (stopped - killed).as_millis()
    );
    assert_eq!(job["state"], "failed", "{job}");
    let reason = job["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("no longer a master") && reason.contains("repaired"),
        "{reason}"
    );
    assert!(
        cluster.open_slots().is_empty(),
        "{:?}",
        cluster.open_slots()
    );
    common::check_keys(&mut con, &keys);
    std::thread::sleep(Duration::from_secs(1));
    let report = traffic.stop();
    let errors = report.error_keys();
    for (at, key) in &errors {
        let slot = slotproxy::cluster::key_slot(key.as_bytes());
        assert!(
            slot <= 59,
            "an error for {key} (slot {slot}) outside the moving slots"
        );
        assert!(
            *at < stopped,
            "an error for {key} after the job had stopped"
        );
    }
    eprintln!(
        "killed target: {} client errors, all for keys of the slots being moved, between {} ms \
         and {} ms after the kill; the job stopped and repaired its slot {} ms after the kill",
        errors.len(),
        errors
            .first()
            .map(|(at, _)| at.duration_since(killed).as_millis())
            .unwrap_or(0),
        errors
            .last()
            .map(|(at, _)| at.duration_since(killed).as_millis())
            .unwrap_or(0),
        (stopped - killed).as_millis()
    );
    // Resumed, the rest goes to the promoted replica of the killed target.
    let (status, resumed) = proxy.admin_post(&format!("/migrations/{id}/resume"), "");
    assert_eq!(status, 200, "{resumed}");
    let done = proxy.wait_job(&id, Duration::from_secs(60));
    assert_eq!(done["state"], "completed", "{done}");
    assert!(
        cluster.open_slots().is_empty(),
        "{:?}",
        cluster.open_slots()
    );
    common::check_keys(&mut con, &keys);
    report.verify(&mut con);
    let promoted = cluster.replica_of(1);
    for slot in 0..=59u16 {
        let here: i64 = promoted.cmd(&["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]);
        assert!(
            here >= 20,
            "slot {slot} has {here} keys on the promoted replica"
        );
    }
}
