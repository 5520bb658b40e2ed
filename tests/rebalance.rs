//! A live 3 → 4 master rebalance driven by the proxy while clients keep working through it.

mod common;
use common::{Cluster, TestProxy};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const STRINGS: usize = 16_000;
const EACH_TYPE: usize = 1_000;
const LONG_TTL: usize = 500;
const SHORT_TTL: usize = 300;

fn preload(con: &mut redis::Connection) {
    let mut pipe = redis::pipe();
    for i in 0..STRINGS {
        pipe.cmd("SET")
            .arg(format!("k:{i}"))
            .arg(format!("v{i}"))
            .ignore();
        if i % 1000 == 999 {
            pipe.query::<()>(con).expect("preload strings");
            pipe = redis::pipe();
        }
    }
    for i in 0..EACH_TYPE {
        pipe.cmd("HSET")
            .arg(format!("h:{i}"))
            .arg("a")
            .arg(i)
            .arg("b")
            .arg("x")
            .ignore();
        pipe.cmd("RPUSH")
            .arg(format!("l:{i}"))
            .arg(1)
            .arg(2)
            .arg(i)
            .ignore();
        pipe.cmd("SADD")
            .arg(format!("s:{i}"))
            .arg("m1")
            .arg(i)
            .ignore();
        pipe.cmd("ZADD")
            .arg(format!("z:{i}"))
            .arg(1)
            .arg("one")
            .arg(i)
            .arg("mine")
            .ignore();
    }
    for i in 0..LONG_TTL {
        pipe.cmd("SET")
            .arg(format!("ttl:{i}"))
            .arg(i)
            .arg("EX")
            .arg(600)
            .ignore();
    }
    for i in 0..SHORT_TTL {
        pipe.cmd("SET")
            .arg(format!("short:{i}"))
            .arg(i)
            .arg("PX")
            .arg(1500)
            .ignore();
    }
    pipe.query::<()>(con).expect("preload the rest");
}

/// What one client thread saw.
#[derive(Default)]
struct ClientReport {
    errors: Vec<String>,
    incrs: Vec<(String, i64)>,
    writes: Vec<(String, String)>,
    latencies_before: Vec<Duration>,
    latencies_during: Vec<Duration>,
}

fn client_loop(
    addr: String,
    id: usize,
    stop: Arc<AtomicBool>,
    migrating: Arc<AtomicBool>,
) -> ClientReport {
    let mut con = common::connect(&addr);
    let mut report = ClientReport::default();
    let mut counts = std::collections::BTreeMap::<String, i64>::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let counter = format!("counter:{id}:{}", n % 64);
        let key = format!("w:{id}:{n}");
        let value = format!("value-{n}");
        let started = Instant::now();
        let incr: redis::RedisResult<i64> = redis::cmd("INCR").arg(&counter).query(&mut con);
        let set: redis::RedisResult<()> = redis::cmd("SET").arg(&key).arg(&value).query(&mut con);
        let get: redis::RedisResult<Option<String>> = redis::cmd("GET").arg(&key).query(&mut con);
        let elapsed = started.elapsed() / 3;
        // A multi-key write and read inside one slot, which may be the slot in flight.
        let tag = format!("{{pair:{id}:{}}}", n % 512);
        let pair = [format!("{tag}:a"), format!("{tag}:b")];
        let mset: redis::RedisResult<()> = redis::cmd("MSET")
            .arg(&pair[0])
            .arg(&value)
            .arg(&pair[1])
            .arg(&value)
            .query(&mut con);
        match mset {
            Ok(()) => {
                let both: redis::RedisResult<Vec<Option<String>>> =
                    redis::cmd("MGET").arg(&pair).query(&mut con);
                match both {
                    Ok(v) if v.iter().all(|x| x.as_deref() == Some(value.as_str())) => {}
                    other => report.errors.push(format!("MGET {tag}: {other:?}")),
                }
            }
            Err(e) => report.errors.push(format!("MSET {tag}: {e}")),
        }
        if migrating.load(Ordering::Relaxed) {
            report.latencies_during.push(elapsed);
        } else {
            report.latencies_before.push(elapsed);
        }
        match incr {
            Ok(_) => *counts.entry(counter).or_default() += 1,
            Err(e) => report.errors.push(format!("INCR {counter}: {e}")),
        }
        match set {
            Ok(()) => report.writes.push((key.clone(), value.clone())),
            Err(e) => report.errors.push(format!("SET {key}: {e}")),
        }
        match get {
            Ok(Some(v)) if v == value => {}
            other => report.errors.push(format!("GET {key}: {other:?}")),
        }
    }
    report.incrs = counts.into_iter().collect();
    report
}

fn p99(mut samples: Vec<Duration>) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort();
    samples[(samples.len() * 99 / 100).min(samples.len() - 1)]
}

#[test]
fn rebalance_three_to_four_masters_under_live_traffic() {
    let cluster = Cluster::start(3, 1);
    let proxy = TestProxy::start(&cluster);
    let mut con = proxy.conn();
    preload(&mut con);
    let loaded = Instant::now();

    let stop = Arc::new(AtomicBool::new(false));
    let migrating = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|id| {
            let (addr, stop, migrating) = (proxy.addr.to_string(), stop.clone(), migrating.clone());
            std::thread::spawn(move || client_loop(addr, id, stop, migrating))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));

    let (status, plan) =
        proxy.admin_post("/rebalance", r#"{"use_empty_masters":true,"dry_run":true}"#);
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["slots_to_move"], 4096, "{plan}");
    migrating.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let (status, job) = proxy.admin_post("/rebalance", r#"{"use_empty_masters":true}"#);
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().expect("job id").to_string();
    let done = proxy.wait_job(&id, Duration::from_secs(300));
    let wall = started.elapsed();
    migrating.store(false, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let reports: Vec<ClientReport> = clients
        .into_iter()
        .map(|c| c.join().expect("client"))
        .collect();
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["slots_done"], 4096);

    // No client saw an error.
    let errors: Vec<&String> = reports.iter().flat_map(|r| r.errors.iter()).collect();
    assert!(
        errors.is_empty(),
        "{} client errors, first: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    // Every acknowledged INCR and write is there.
    for report in &reports {
        for (counter, count) in &report.incrs {
            let value: i64 = redis::cmd("GET")
                .arg(counter)
                .query(&mut con)
                .expect("GET counter");
            assert_eq!(value, *count, "{counter}");
        }
        for chunk in report.writes.chunks(500) {
            let keys: Vec<&String> = chunk.iter().map(|(k, _)| k).collect();
            let values: Vec<Option<String>> =
                redis::cmd("MGET").arg(&keys).query(&mut con).expect("MGET");
            for ((key, want), got) in chunk.iter().zip(values) {
                assert_eq!(got.as_deref(), Some(want.as_str()), "{key}");
            }
        }
    }
    // The preloaded data of every type is intact.
    for i in (0..STRINGS).step_by(7) {
        let v: Option<String> = redis::cmd("GET")
            .arg(format!("k:{i}"))
            .query(&mut con)
            .expect("GET");
        assert_eq!(v, Some(format!("v{i}")));
    }
    let strings: Vec<Option<String>> = redis::cmd("MGET")
        .arg((0..STRINGS).map(|i| format!("k:{i}")).collect::<Vec<_>>())
        .query(&mut con)
        .expect("MGET all");
    assert!(strings
        .iter()
        .enumerate()
        .all(|(i, v)| v.as_deref() == Some(&format!("v{i}"))));
    for i in 0..EACH_TYPE {
        let a: String = redis::cmd("HGET")
            .arg(format!("h:{i}"))
            .arg("a")
            .query(&mut con)
            .expect("HGET");
        assert_eq!(a, i.to_string());
        let l: Vec<String> = redis::cmd("LRANGE")
            .arg(format!("l:{i}"))
            .arg(0)
            .arg(-1)
            .query(&mut con)
            .expect("LRANGE");
        assert_eq!(l, vec!["1".to_string(), "2".into(), i.to_string()]);
        let s: i64 = redis::cmd("SCARD")
            .arg(format!("s:{i}"))
            .query(&mut con)
            .expect("SCARD");
        assert_eq!(s, if i.to_string() == "m1" { 1 } else { 2 });
        let z: Option<f64> = redis::cmd("ZSCORE")
            .arg(format!("z:{i}"))
            .arg("mine")
            .query(&mut con)
            .expect("ZSCORE");
        assert_eq!(z, Some(i as f64));
    }
    // TTLs survived the move; expired keys stayed expired.
    let lowest = 600 - loaded.elapsed().as_secs() as i64 - 2;
    for i in 0..LONG_TTL {
        let ttl: i64 = redis::cmd("TTL")
            .arg(format!("ttl:{i}"))
            .query(&mut con)
            .expect("TTL");
        assert!(
            (lowest..=600).contains(&ttl),
            "ttl:{i} has TTL {ttl}, expected at least {lowest}"
        );
    }
    let short: i64 = redis::cmd("EXISTS")
        .arg(
            (0..SHORT_TTL)
                .map(|i| format!("short:{i}"))
                .collect::<Vec<_>>(),
        )
        .query(&mut con)
        .expect("EXISTS");
    assert_eq!(short, 0, "expired keys came back");

    // Four even masters, no slot open, redis-cli agrees.
    assert!(
        cluster.open_slots().is_empty(),
        "{:?}",
        cluster.open_slots()
    );
    let counts = cluster.slot_counts();
    for c in &counts {
        assert!((4014..=4178).contains(c), "uneven: {counts:?}");
    }
    let (clean, text) = cluster.redis_cli_check();
    assert!(clean, "{text}");

    let before: Vec<Duration> = reports
        .iter()
        .flat_map(|r| r.latencies_before.clone())
        .collect();
    let during: Vec<Duration> = reports
        .iter()
        .flat_map(|r| r.latencies_during.clone())
        .collect();
    let ops: usize = reports.iter().map(|r| r.writes.len() * 5).sum();
    let keys_moved = done["keys_moved"].as_u64().unwrap_or(0);
    eprintln!(
        "rebalance: 4096 slots, {keys_moved} keys moved in {:.1} s ({:.0} keys/s); {} client ops, 0 errors; client p99 before {:?}, during {:?}",
        wall.as_secs_f64(),
        keys_moved as f64 / wall.as_secs_f64(),
        ops,
        p99(before),
        p99(during),
    );
}
