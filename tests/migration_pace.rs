//! The latency guard against a real cluster: a job reports its pace, and when the clients'
//! p99 through the proxy rises over `migration.max_client_p99_ratio` × its p99 before the
//! job, the job backs off (fewer workers, then pauses), and picks up again once they are
//! fast again, moving every key.

mod common;
use common::{check_keys, keys_for_slots, write_keys, Cluster, TestProxy};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A Lua loop of some tens of milliseconds: a client command the proxy measures as slow.
const BUSY_SCRIPT: &str = "local i = 0 while i < 3000000 do i = i + 1 end return i";

#[test]
fn slow_clients_make_the_job_back_off_and_it_says_why() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start_with(&cluster, |c| {
        c.migration.max_keys_per_second = 1500;
        c.migration.parallel_slots = 2;
    });
    let mut con = proxy.conn();
    // 6,000 keys over 600 slots: the writes are the fast commands of the baseline, and the
    // job takes about 4 s at the keys/s cap.
    let keys = keys_for_slots(0..=599, 10);
    write_keys(&mut con, &keys);
    std::thread::sleep(Duration::from_millis(1200));
    let id = proxy.start_migration("0-599", &cluster.nodes[0], &cluster.nodes[1]);
    let (_, job) = proxy.admin_json(&format!("/migrations/{id}"));
    let pace = &job["pace"];
    let baseline = pace["baseline_p99_ms"].as_f64().expect("a baseline");
    assert!(baseline > 0.0 && baseline < 50.0, "{pace}");
    assert_eq!(pace["max_client_p99_ratio"], 2.0, "{pace}");
    let target = pace["target_p99_ms"].as_f64().expect("a target");
    // Both are rounded to 0.01 ms on their own: 4.096 shows as 4.1, its double 8.192 as 8.19.
    assert!(target >= baseline * 2.0 - 0.011, "{pace}");

    // A steady client of plain GETs, all along.
    let steady_stop = Arc::new(AtomicBool::new(false));
    let steady = {
        let stop = steady_stop.clone();
        let mut steady = proxy.conn();
        let keys: Vec<String> = keys.iter().take(50).cloned().collect();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            for key in keys.iter().cycle() {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    return;
                }
                let _: redis::RedisResult<Option<String>> =
                    redis::cmd("GET").arg(key).query(&mut steady);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    // Now a client runs slow scripts through the proxy: the clients' p99 goes far over.
    let stop = Arc::new(AtomicBool::new(false));
    let slow_client = {
        let stop = stop.clone();
        let mut slow = proxy.conn();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let _: redis::RedisResult<i64> = redis::cmd("EVAL")
                    .arg(BUSY_SCRIPT)
                    .arg(1)
                    .arg("{slow}")
                    .query(&mut slow);
            }
        })
    };
    let mut backed_off = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let (_, job) = proxy.admin_json(&format!("/migrations/{id}"));
        let pace = &job["pace"];
        let why = pace["why"].as_str().unwrap_or("");
        if backed_off.is_none() && why.contains("backing off") {
            assert_eq!(pace["workers"], 1, "{pace}");
            assert!(
                pace["client_p99_ms"].as_f64().unwrap_or(0.0) > target,
                "{pace}"
            );
            backed_off = Some(pace.clone());
        }
        // Once the job pauses between batches, the slow client stops: the pace comes back.
        if pace["delay_ms"].as_u64().unwrap_or(0) > 0 {
            stop.store(true, Ordering::Relaxed);
        }
        if job["state"] != "running" && job["state"] != "pending" {
            break job;
        }
        assert!(Instant::now() < deadline, "the job did not end: {job}");
        std::thread::sleep(Duration::from_millis(50));
    };
    stop.store(true, Ordering::Relaxed);
    slow_client.join().expect("slow client");
    steady_stop.store(true, Ordering::Relaxed);
    steady.join().expect("steady client");
    let backed_off = backed_off.unwrap_or_else(|| panic!("the job never backed off: {done}"));
    eprintln!("backed off: {backed_off}; done: {}", done["pace"]);
    assert_eq!(done["state"], "completed", "{done}");
    assert!(
        done["pace"]["why"]
            .as_str()
            .unwrap_or("")
            .contains("within the target"),
        "{done}"
    );
    assert_eq!(done["keys_moved"], 6000, "{done}");
    assert!(cluster.open_slots().is_empty());
    check_keys(&mut con, &keys);
}

#[test]
fn with_the_guard_off_the_job_says_so() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start_with(&cluster, |c| c.migration.max_client_p99_ratio = 0.0);
    let mut con = proxy.conn();
    let keys = keys_for_slots(0..=9, 5);
    write_keys(&mut con, &keys);
    let id = proxy.start_migration("0-9", &cluster.nodes[0], &cluster.nodes[1]);
    let done = proxy.wait_completed(&id, &cluster);
    let pace = &done["pace"];
    assert!(pace["target_p99_ms"].is_null(), "{pace}");
    assert!(
        pace["why"].as_str().unwrap_or("").contains("guard is off"),
        "{pace}"
    );
    assert_eq!(pace["workers"], pace["max_workers"], "{pace}");
    check_keys(&mut con, &keys);
}
