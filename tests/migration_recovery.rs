//! Crash safety of migrations: a proxy killed mid-slot finishes its job after a restart, a
//! slot left open by hand is repaired at start, and only the lease holder migrates.

mod common;
use common::{check_keys, keys_for_slots, write_keys, Cluster, ProxyProcess, TestProxy};
use std::time::{Duration, Instant};

#[test]
fn proxy_killed_mid_slot_finishes_the_job_after_restart() {
    let cluster = Cluster::start(3, 0);
    let mut proxy = ProxyProcess::launch(
        &cluster,
        "",
        "max_keys_per_second = 300\nbatch_keys = 5\nparallel_slots = 2\nlease_ttl_ms = 3000",
    );
    let admin = proxy.admin;
    let mut con = common::connect(&proxy.client.to_string());
    let keys = keys_for_slots(0..=59, 30);
    write_keys(&mut con, &keys);
    let (source, target) = (&cluster.nodes[0], &cluster.nodes[2]);
    let body = format!(
        r#"{{"slots":"0-59","from":"{}","to":"{}"}}"#,
        source.id, target.id
    );
    let (status, job) = common::http_request(admin, "POST", "/migrations", &body, None);
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().expect("id").to_string();
    common::wait_until(Duration::from_secs(30), "some slots to move", || {
        let (_, job) = common::http_request(admin, "GET", &format!("/migrations/{id}"), "", None);
        job["slots_done"].as_u64().unwrap_or(0) >= 8
    });
    proxy.kill();
    let open_after_kill = cluster.open_slots();
    eprintln!("open slots right after SIGKILL: {open_after_kill:?}");

    proxy.start_again();
    let done = common::wait_job(proxy.admin, &id, Duration::from_secs(60));
    assert_eq!(done["state"], "completed", "{done}");
    assert!(
        cluster.open_slots().is_empty(),
        "{:?}",
        cluster.open_slots()
    );
    let mut con = common::connect(&proxy.client.to_string());
    check_keys(&mut con, &keys);
    for slot in [0u16, 30, 59] {
        let here: i64 = target.cmd(&["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]);
        assert_eq!(here, 30, "slot {slot} on the target");
    }
    assert_eq!(
        cluster.total_keys(),
        keys.len() as i64,
        "no key lost or duplicated"
    );
    let (clean, text) = cluster.redis_cli_check();
    assert!(clean, "{text}");
}

#[test]
fn slots_left_open_by_hand_are_repaired_at_start() {
    let cluster = Cluster::start(3, 0);
    let (slot, keys) = common::keys_in_one_slot("byhand", 40);
    let source = cluster.owner_of(slot);
    let target = cluster.other_than(source);
    {
        let mut direct = source.conn();
        for k in &keys {
            redis::cmd("SET")
                .arg(k)
                .arg(format!("val-{k}"))
                .query::<()>(&mut direct)
                .expect("SET");
        }
    }
    cluster.begin_migration(slot, source, target);
    cluster.migrate_keys(source, target, &keys[..15]);
    // A second slot with only an IMPORTING marker, as an interrupted redis-cli leaves it.
    let (lonely, _) = common::keys_in_one_slot("lonely", 1);
    let lonely_owner = cluster.owner_of(lonely);
    let importer = cluster.other_than(lonely_owner);
    let _: () = importer.cmd(&[
        "CLUSTER",
        "SETSLOT",
        &lonely.to_string(),
        "IMPORTING",
        &lonely_owner.id,
    ]);
    assert_eq!(cluster.open_slots().len(), 3);

    let proxy = TestProxy::start_with(&cluster, |c| c.migration.repair_grace_ms = 1000);
    common::wait_until(
        Duration::from_secs(30),
        "recovery to close the open slots",
        || cluster.open_slots().is_empty(),
    );
    let mut con = proxy.conn();
    check_keys(&mut con, &keys);
    let on_target: i64 = target.cmd(&["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]);
    assert_eq!(on_target, 40, "the interrupted move was finished forward");
    let (_, view) = proxy.admin_json("/cluster");
    let repairs = view["repairs"].to_string();
    assert!(
        repairs.contains(&format!("slot {slot}: finished the interrupted move")),
        "{repairs}"
    );
    assert!(
        repairs.contains(&format!("slot {lonely}: closed IMPORTING")),
        "{repairs}"
    );
    let (clean, text) = cluster.redis_cli_check();
    assert!(clean, "{text}");
}

#[test]
fn only_the_lease_holder_migrates_and_the_other_proxy_keeps_serving() {
    let cluster = Cluster::start(3, 0);
    let slow = |c: &mut slotproxy::config::Config| {
        c.migration.max_keys_per_second = 300;
        c.migration.batch_keys = 10;
    };
    let first = TestProxy::start_with(&cluster, slow);
    let second = TestProxy::start_with(&cluster, slow);
    let mut con = first.conn();
    let keys = keys_for_slots(0..=29, 30);
    write_keys(&mut con, &keys);
    let (a, b, c) = (&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]);
    let (status, job) = first.admin_post(
        "/migrations",
        &format!(
            r#"{{"slots":"0-29","from":"{}","to":"{}"}}"#,
            a.addr(),
            b.addr()
        ),
    );
    assert_eq!(status, 202, "{job}");
    let (_, view) = first.admin_json("/cluster");
    let holder = view["migration_lease_holder"]
        .as_str()
        .expect("first holds the lease")
        .to_string();

    let other_slots = format!(
        r#"{{"slots":"6000-6010","from":"{}","to":"{}"}}"#,
        b.addr(),
        c.addr()
    );
    let (status, refused) = second.admin_post("/migrations", &other_slots);
    assert_eq!(status, 409, "{refused}");
    let message = refused["error"].as_str().unwrap_or("");
    assert!(
        message.contains("another proxy holds the migration lease") && message.contains(&holder),
        "{message}"
    );
    // The second proxy serves clients all along, also keys in moving slots.
    let mut second_con = second.conn();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(1) {
        check_keys(&mut second_con, &keys[..100]);
    }
    let done = first.wait_job(job["id"].as_str().expect("id"), Duration::from_secs(60));
    assert_eq!(done["state"], "completed", "{done}");
    check_keys(&mut second_con, &keys);
    // The lease is released at the end: now the second proxy may migrate.
    let (status, job) = second.admin_post("/migrations", &other_slots);
    assert_eq!(status, 202, "{job}");
    let done = second.wait_job(job["id"].as_str().expect("id"), Duration::from_secs(60));
    assert_eq!(done["state"], "completed", "{done}");
    assert!(cluster.open_slots().is_empty());
}

/// A repair that hands keys back (a slot importing on a non-owner that holds some of its
/// keys, the owner no longer migrating) works on a cluster whose nodes require a password:
/// the hand-back's `MIGRATE` logs in to the owner like every other `MIGRATE`.
#[test]
fn a_hand_back_repair_works_when_the_nodes_require_a_password() {
    let cluster = Cluster::start_with(
        3,
        0,
        common::cluster::ClusterOptions {
            password: Some("n0de-pw"),
            ..Default::default()
        },
    );
    let proxy = TestProxy::start_with(&cluster, |c| c.cluster.password = "n0de-pw".into());
    let (slot, keys) = common::keys_in_one_slot("handback", 10);
    let mut con = proxy.conn();
    write_keys(&mut con, &keys);
    let owner = cluster.owner_of(slot);
    let holder = cluster.other_than(owner);
    cluster.begin_migration(slot, owner, holder);
    cluster.migrate_keys(owner, holder, &keys[..4]);
    // The owner forgets the move; the holder still imports and has 4 of the keys.
    let _: () = owner.cmd(&["CLUSTER", "SETSLOT", &slot.to_string(), "STABLE"]);

    let (status, report) = proxy.admin_post("/cluster/fix", "");
    assert_eq!(status, 200, "{report}");
    let repairs = report["repairs"].to_string();
    assert!(
        repairs.contains(&format!(
            "closed IMPORTING on {}: 4 keys handed back to {}",
            holder.addr(),
            owner.addr()
        )),
        "{report}"
    );
    assert_eq!(report["still_open"], serde_json::json!([]), "{report}");
    assert!(
        cluster.open_slots().is_empty(),
        "{:?}",
        cluster.open_slots()
    );
    let held: i64 = owner.cmd(&["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]);
    assert_eq!(held, 10);
    check_keys(&mut con, &keys);
}
