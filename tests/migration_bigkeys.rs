//! Big keys in a slot being moved: a 100 MB string and a 1M-field hash move alone with a
//! timeout fitted to them while other traffic flows, the job reports their block times, and
//! a key over the block-time bound pauses the job instead of risking a failover.

mod common;
use common::{Cluster, Node, TestProxy};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Fills `key` on `node` with a hash of `fields` fields, by a script run on the node.
fn big_hash(node: &Node, key: &str, fields: u64) {
    let _: () = redis::cmd("EVAL")
        .arg("for i = 1, tonumber(ARGV[1]) do redis.call('HSET', KEYS[1], 'field:' .. i, i) end")
        .arg(1)
        .arg(key)
        .arg(fields)
        .query(&mut node.conn())
        .expect("build the hash");
}

/// A client reading one key in a loop until stopped; returns (reads, errors, slowest).
fn reader(
    addr: std::net::SocketAddr,
    key: String,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(u64, u64, Duration)> {
    std::thread::spawn(move || {
        let mut con = common::connect(&addr.to_string());
        let (mut reads, mut errors, mut slowest) = (0u64, 0u64, Duration::ZERO);
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            match redis::cmd("GET")
                .arg(&key)
                .query::<Option<String>>(&mut con)
            {
                Ok(Some(_)) => reads += 1,
                _ => errors += 1,
            }
            slowest = slowest.max(started.elapsed());
            std::thread::sleep(Duration::from_millis(2));
        }
        (reads, errors, slowest)
    })
}

#[test]
fn big_keys_move_alone_with_their_block_time_reported_while_traffic_flows() {
    let cluster = Cluster::start(3, 0);
    // Longer than the 1M-field hash blocks its nodes even on a slow machine.
    for node in &cluster.nodes {
        let _: () = node.cmd(&["CONFIG", "SET", "cluster-node-timeout", "8000"]);
    }
    let proxy = TestProxy::start_with(&cluster, |c| c.migration.max_key_block_ms = 5000);
    let (slot, small) = common::keys_in_one_slot("bk", 50);
    let source = cluster.owner_of(slot);
    let target = cluster.other_than(source);
    let bystander = cluster
        .nodes
        .iter()
        .find(|n| n.port != source.port && n.port != target.port)
        .expect("a third master");
    let mut con = proxy.conn();
    common::write_keys(&mut con, &small);
    let _: () = source.cmd(&["SETRANGE", "{bk}:string", "104857599", "x"]);
    big_hash(source, "{bk}:hash", 1_000_000);

    let elsewhere = cluster.key_on(bystander.port, "elsewhere");
    let on_source = cluster.key_on(source.port, "near");
    for key in [&elsewhere, &on_source] {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg("v")
            .query(&mut con)
            .expect("SET");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let far = reader(proxy.addr, elsewhere, stop.clone());
    let near = reader(proxy.addr, on_source, stop.clone());
    std::thread::sleep(Duration::from_millis(300));

    let id = proxy.start_migration(&slot.to_string(), source, target);
    let job = proxy.wait_job(&id, Duration::from_secs(120));
    stop.store(true, Ordering::Relaxed);
    let (far_reads, far_errors, far_slowest) = far.join().expect("reader");
    let (near_reads, near_errors, near_slowest) = near.join().expect("reader");
    assert_eq!(job["state"], "completed", "{job}");
    assert!(
        cluster.open_slots().is_empty(),
        "{:?}",
        cluster.open_slots()
    );

    let big = job["big_keys"].as_array().expect("big_keys");
    assert_eq!(big.len(), 2, "{job}");
    for (key, kind) in [("{bk}:string", "string"), ("{bk}:hash", "hash")] {
        let entry = big
            .iter()
            .find(|b| b["key"] == key)
            .unwrap_or_else(|| panic!("{key} not reported: {job}"));
        assert_eq!(entry["kind"], kind);
        assert!(entry["block_ms"].as_u64().unwrap_or(0) > 0, "{entry}");
        eprintln!(
            "{key}: {kind}, {} bytes, {} elements: estimated {} ms, blocked {} ms",
            entry["bytes"], entry["elements"], entry["estimated_ms"], entry["block_ms"]
        );
    }
    assert_eq!(
        proxy.metric("slotproxy_migration_big_key_block_seconds_count"),
        2.0
    );
    let sized: u64 = big.iter().filter_map(|b| b["bytes"].as_u64()).sum();
    assert!(job["bytes_moved"].as_u64().unwrap_or(0) > sized, "{job}");
    assert!(proxy.metric("slotproxy_migration_bytes_migrated_total") > sized as f64);
    let length: i64 = target.cmd(&["HLEN", "{bk}:hash"]);
    assert_eq!(length, 1_000_000);
    let bytes: i64 = target.cmd(&["STRLEN", "{bk}:string"]);
    assert_eq!(bytes, 104_857_600);
    common::check_keys(&mut con, &small);
    assert_eq!(far_errors + near_errors, 0, "readers saw errors");
    assert!(
        far_slowest < Duration::from_millis(500),
        "a node not taking part waited {far_slowest:?}"
    );
    eprintln!(
        "during the move: a key on the third master read {far_reads} times, slowest {} ms; a key \
         on the source read {near_reads} times, slowest {} ms (the source blocked in MIGRATE)",
        far_slowest.as_millis(),
        near_slowest.as_millis()
    );
}

#[test]
fn a_key_over_the_block_bound_pauses_the_job_with_nothing_open() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start_with(&cluster, |c| c.migration.max_key_block_ms = 150);
    let (big_slot, _) = common::keys_in_one_slot("heavy", 1);
    let source = cluster.owner_of(big_slot);
    // A slot of small keys on the same master, moved first.
    let (small_slot, small) = (0..)
        .map(|i| common::keys_in_one_slot(&format!("fine{i}"), 20))
        .find(|(slot, _)| *slot != big_slot && cluster.owner_of(*slot).port == source.port)
        .expect("a slot on the source");
    let target = cluster.other_than(source);
    let mut con = proxy.conn();
    common::write_keys(&mut con, &small);
    big_hash(source, "{heavy}:hash", 400_000);

    let body = format!(
        r#"{{"slots":"{small_slot},{big_slot}","from":"{}","to":"{}"}}"#,
        source.id, target.id
    );
    let (status, job) = proxy.admin_post("/migrations", &body);
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().expect("id").to_string();
    let job = proxy.wait_job(&id, Duration::from_secs(60));
    eprintln!("paused job: {}", job["reason"]);
    assert_eq!(job["state"], "paused", "{job}");
    let reason = job["reason"].as_str().unwrap_or("");
    for part in [
        "{heavy}:hash",
        "400000 elements",
        "150 ms bound",
        "max_key_block_ms",
    ] {
        assert!(reason.contains(part), "{part:?} missing from: {reason}");
    }
    assert_eq!(job["slots_done"], 1, "{job}");
    assert!(
        cluster.open_slots().is_empty(),
        "{:?}",
        cluster.open_slots()
    );
    let still: i64 = source.cmd(&["HLEN", "{heavy}:hash"]);
    assert_eq!(still, 400_000, "the big key did not move");
    assert_eq!(
        proxy.metric("slotproxy_migration_errors_total{kind=\"too_big\"}"),
        1.0
    );
    common::check_keys(&mut con, &small);

    // The operator deletes the key; resumed, the job finishes.
    let _: i64 = redis::cmd("UNLINK")
        .arg("{heavy}:hash")
        .query(&mut con)
        .expect("UNLINK");
    let (status, resumed) = proxy.admin_post(&format!("/migrations/{id}/resume"), "");
    assert_eq!(status, 200, "{resumed}");
    proxy.wait_completed(&id, &cluster);
}
