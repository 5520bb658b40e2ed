//! The admin API's migration routes against a real cluster: explicit moves, pause, resume,
//! cancel, adding and draining a node, and precise errors for bad requests.

mod common;
use common::{check_keys, http_request, keys_for_slots, write_keys, Cluster, Node, TestProxy};
use std::time::Duration;

fn count_in_slot(node: &common::Node, slot: u16) -> i64 {
    node.cmd(&["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()])
}

fn slow_proxy(cluster: &Cluster) -> TestProxy {
    TestProxy::start_with(cluster, |c| {
        c.migration.max_keys_per_second = 400;
        c.migration.batch_keys = 10;
        c.migration.parallel_slots = 2;
    })
}

#[test]
fn explicit_migration_with_pause_resume_and_cancel() {
    let cluster = Cluster::start(3, 0);
    let proxy = slow_proxy(&cluster);
    let mut con = proxy.conn();
    let keys = keys_for_slots(0..=199, 20);
    write_keys(&mut con, &keys);
    let (source, target, other) = (&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]);

    let body = format!(
        r#"{{"slots":"0-99","from":"{}","to":"{}"}}"#,
        source.addr(),
        target.id
    );
    let (status, job) = proxy.admin_post("/migrations", &body);
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["slots_total"], 100);
    let id = job["id"].as_str().expect("id").to_string();

    // A second job over the same slots is refused, nothing started.
    let overlap = format!(
        r#"{{"slots":"50-60","from":"{}","to":"{}"}}"#,
        source.addr(),
        other.addr()
    );
    let (status, error) = proxy.admin_post("/migrations", &overlap);
    assert_eq!(status, 409, "{error}");
    assert!(
        error["error"].as_str().unwrap_or("").contains(&id),
        "{error}"
    );

    std::thread::sleep(Duration::from_millis(1500));
    let (status, paused) = proxy.admin_post(&format!("/migrations/{id}/pause"), "");
    assert_eq!(status, 200, "{paused}");
    let paused = proxy.wait_job(&id, Duration::from_secs(30));
    assert_eq!(paused["state"], "paused", "{paused}");
    let done = paused["slots_done"].as_u64().unwrap_or(0);
    assert!(done > 0 && done < 100, "{paused}");
    assert!(
        cluster.open_slots().is_empty(),
        "pause left {:?}",
        cluster.open_slots()
    );
    check_keys(&mut con, &keys);

    let (status, resumed) = proxy.admin_post(&format!("/migrations/{id}/resume"), "");
    assert_eq!(status, 200, "{resumed}");
    let finished = proxy.wait_job(&id, Duration::from_secs(60));
    assert_eq!(finished["state"], "completed", "{finished}");
    assert_eq!(finished["slots_done"], 100);
    assert_eq!(finished["keys_moved"], 2000);
    assert_eq!(count_in_slot(target, 0), 20);
    assert_eq!(count_in_slot(source, 99), 0);
    check_keys(&mut con, &keys);

    // Cancel mid-job: the slot in flight is finished, the rest stays where it was.
    let body = format!(
        r#"{{"slots":[100,101,102,103,104,105,106,107,108,109,110,111,112,113,114,115,116,117,118,119,120,121,122,123,124,125,126,127,128,129,130,131,132,133,134,135,136,137,138,139,140],"from":"{}","to":"{}"}}"#,
        source.id,
        other.addr()
    );
    let (status, job) = proxy.admin_post("/migrations", &body);
    assert_eq!(status, 202, "{job}");
    let id2 = job["id"].as_str().expect("id").to_string();
    std::thread::sleep(Duration::from_millis(800));
    let (status, _) = proxy.admin_post(&format!("/migrations/{id2}/cancel"), "");
    assert_eq!(status, 200);
    let cancelled = proxy.wait_job(&id2, Duration::from_secs(30));
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    assert!(
        cancelled["slots_done"].as_u64().unwrap_or(99) < 41,
        "{cancelled}"
    );
    assert!(
        cluster.open_slots().is_empty(),
        "cancel left {:?}",
        cluster.open_slots()
    );
    check_keys(&mut con, &keys);
    let (status, _) = proxy.admin_post(&format!("/migrations/{id2}/cancel"), "");
    assert_eq!(status, 409);
    let (status, list) = proxy.admin_json("/migrations");
    assert_eq!(status, 200);
    assert_eq!(list["jobs"].as_array().map(|a| a.len()), Some(2), "{list}");
    let (clean, text) = cluster.redis_cli_check();
    assert!(clean, "{text}");
}

#[test]
fn bad_requests_get_precise_errors_and_start_nothing() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    let (a, b) = (cluster.nodes[0].addr(), cluster.nodes[1].addr());
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("/migrations", "{not json".into(), 400, "bad JSON"),
        (
            "/migrations",
            format!(r#"{{"slots":"1","from":"{a}","to":"{b}","speed":9}}"#),
            400,
            "unknown field",
        ),
        (
            "/migrations",
            format!(r#"{{"slots":"1","from":"10.9.9.9:1","to":"{b}"}}"#),
            400,
            "unknown node",
        ),
        (
            "/migrations",
            format!(r#"{{"slots":"16384","from":"{a}","to":"{b}"}}"#),
            400,
            "out of range",
        ),
        (
            "/migrations",
            format!(r#"{{"slots":"9-3","from":"{a}","to":"{b}"}}"#),
            400,
            "backwards",
        ),
        (
            "/migrations",
            format!(r#"{{"slots":"16000","from":"{a}","to":"{b}"}}"#),
            400,
            "does not own",
        ),
        (
            "/migrations",
            format!(r#"{{"slots":"1","from":"{a}","to":"{a}"}}"#),
            400,
            "same node",
        ),
        (
            "/rebalance",
            r#"{"threshold":500}"#.into(),
            400,
            "threshold",
        ),
        (
            "/rebalance",
            r#"{"weights":{"nope":1}}"#.into(),
            400,
            "unknown node",
        ),
        (
            "/rebalance",
            r#"{"weights":{"127.0.0.1:1":-1}}"#.into(),
            400,
            "weights",
        ),
        ("/migrations/nope/pause", String::new(), 404, "no job"),
        ("/nodes", r#"{"addr":"nonsense"}"#.into(), 400, "addr"),
        (
            "/nodes",
            format!(r#"{{"addr":"{a}"}}"#),
            409,
            "already a master",
        ),
    ];
    for (path, body, want, text) in cases {
        let (status, reply) = proxy.admin_post(path, &body);
        let message = reply["error"].as_str().unwrap_or("");
        assert_eq!(status, want, "{path} {body}: {reply}");
        assert!(
            message.contains(text),
            "{path} {body}: {message:?} lacks {text:?}"
        );
    }
    let (status, _) = proxy.admin_json("/migrations/nope");
    assert_eq!(status, 404);
    let (status, jobs) = proxy.admin_json("/migrations");
    assert_eq!(
        (status, jobs["jobs"].as_array().map(|a| a.len())),
        (200, Some(0))
    );
    let (status, reply) = proxy.admin_post("/rebalance", "{}");
    assert_eq!(status, 200);
    assert!(
        reply["message"]
            .as_str()
            .unwrap_or("")
            .contains("already balanced"),
        "{reply}"
    );
    assert!(cluster.open_slots().is_empty());

    // With a token, mutating routes need it; reads do not.
    let guarded = TestProxy::start_with(&cluster, |c| c.admin.token = "s3cret".into());
    let dry = r#"{"dry_run":true,"use_empty_masters":true}"#;
    let (status, _) = http_request(guarded.admin, "POST", "/rebalance", dry, None);
    assert_eq!(status, 401);
    let (status, _) = http_request(guarded.admin, "POST", "/rebalance", dry, Some("wrong"));
    assert_eq!(status, 401);
    let (status, reply) = http_request(guarded.admin, "POST", "/rebalance", dry, Some("s3cret"));
    assert_eq!(status, 200, "{reply}");
    let (status, cluster_view) = guarded.admin_json("/cluster");
    assert_eq!(status, 200);
    assert_eq!(cluster_view["nodes"].as_array().map(|n| n.len()), Some(3));
    assert_eq!(cluster_view["covered_slots"], 16384);
}

#[test]
fn add_a_node_rebalance_onto_it_then_drain_it_under_traffic() {
    let cluster = Cluster::start(3, 0);
    let loose = cluster.spawn_loose_node();
    let proxy = TestProxy::start(&cluster);
    let mut con = proxy.conn();
    let keys: Vec<String> = (0..3000).map(|i| format!("key:{i}")).collect();
    write_keys(&mut con, &keys);

    let (status, added) = proxy.admin_post("/nodes", &format!(r#"{{"addr":"{}"}}"#, loose.addr()));
    assert_eq!(status, 201, "{added}");
    assert_eq!(added["id"], loose.id.as_str());
    let (_, view) = proxy.admin_json("/cluster");
    assert_eq!(view["nodes"].as_array().map(|n| n.len()), Some(4), "{view}");

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = {
        let (addr, stop) = (proxy.addr.to_string(), stop.clone());
        std::thread::spawn(move || {
            let mut con = common::connect(&addr);
            let mut errors = Vec::new();
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let key = format!("live:{n}");
                if let Err(e) = redis::cmd("SET").arg(&key).arg(n).query::<()>(&mut con) {
                    errors.push(format!("SET {key}: {e}"));
                }
                match redis::cmd("GET").arg(&key).query::<Option<u64>>(&mut con) {
                    Ok(Some(v)) if v == n => {}
                    other => errors.push(format!("GET {key}: {other:?}")),
                }
            }
            (n, errors)
        })
    };

    let (status, job) = proxy.admin_post("/rebalance", r#"{"use_empty_masters":true}"#);
    assert_eq!(status, 202, "{job}");
    let done = proxy.wait_job(job["id"].as_str().expect("id"), Duration::from_secs(120));
    assert_eq!(done["state"], "completed", "{done}");
    assert!(loose.cmd::<i64>(&["DBSIZE"]) > 0);

    let (status, plan) =
        proxy.admin_post(&format!("/nodes/{}/drain", loose.id), r#"{"dry_run":true}"#);
    assert_eq!(status, 200, "{plan}");
    let (_, view_now) = proxy.admin_json("/cluster");
    assert_eq!(
        plan["slots_to_move"],
        4096,
        "{plan}\n{view_now}\nloose: {}",
        loose.addr()
    );
    let (status, job) = proxy.admin_post(&format!("/nodes/{}/drain", &loose.id[..12]), "");
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["kind"], "drain");
    let done = proxy.wait_job(job["id"].as_str().expect("id"), Duration::from_secs(120));
    assert_eq!(done["state"], "completed", "{done}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ops, errors) = client.join().expect("client");
    assert!(ops > 0);
    assert!(
        errors.is_empty(),
        "client errors: {:?}",
        &errors[..errors.len().min(5)]
    );

    // The drained node holds nothing and can be removed.
    assert_eq!(loose.cmd::<i64>(&["DBSIZE"]), 0);
    let (_, view) = proxy.admin_json("/cluster");
    // Redis 7 may turn a master that lost its last slot into a replica: then it is no longer
    // listed among the masters at all.
    let drained = view["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["id"] == loose.id.as_str()))
        .cloned();
    if let Some(drained) = drained {
        assert_eq!(drained["slot_count"], 0, "{view}");
    }
    let owned: u64 = view["nodes"]
        .as_array()
        .map(|nodes| nodes.iter().filter_map(|n| n["slot_count"].as_u64()).sum())
        .unwrap_or(0);
    assert_eq!(owned, 16384, "{view}");
    check_keys(&mut con, &keys);
    assert!(cluster.open_slots().is_empty());
}

#[test]
fn migration_works_when_the_nodes_require_auth() {
    let cluster = Cluster::start(3, 0);
    // The default user may not RESTORE, so MIGRATE must log in as `migrator` (AUTH2).
    // `migrator` may not CLUSTER BUMPEPOCH: a batch's first slot then bumps the epoch.
    for node in &cluster.nodes {
        let _: () = node.cmd(&[
            "ACL",
            "SETUSER",
            "migrator",
            "on",
            ">s3cret",
            "~*",
            "&*",
            "+@all",
            "-cluster|bumpepoch",
        ]);
        let _: () = node.cmd(&["ACL", "SETUSER", "default", "-restore", "-restore-asking"]);
    }
    let (source, target) = (&cluster.nodes[0], &cluster.nodes[1]);
    let keys = keys_for_slots(0..=19, 10);
    {
        let mut direct = source.conn();
        write_keys(&mut direct, &keys);
    }
    let port = target.port.to_string();
    let plain: redis::RedisResult<String> = redis::cmd("MIGRATE")
        .arg("127.0.0.1")
        .arg(&port)
        .arg(&keys[0])
        .arg(0)
        .arg(2000)
        .query(&mut source.conn());
    assert!(
        plain.is_err(),
        "MIGRATE without AUTH must fail here: {plain:?}"
    );

    // The source's epoch above the target's: without BUMPEPOCH the proxy must wait until the
    // target knows it, so that the target's own SETSLOT NODE bumps past it.
    let epoch = |node: &Node| -> u64 {
        let info: String = node.cmd(&["CLUSTER", "INFO"]);
        info.lines()
            .find_map(|l| l.trim().strip_prefix("cluster_my_epoch:"))
            .and_then(|v| v.parse().ok())
            .expect("cluster_my_epoch")
    };
    common::wait_until(
        Duration::from_secs(10),
        "the source's epoch above the target's",
        || {
            // STILL while the source holds the greatest epoch it knows of (a tie resolves itself).
            let _: String = source.cmd(&["CLUSTER", "BUMPEPOCH"]);
            epoch(source) > epoch(target)
        },
    );

    let proxy = TestProxy::start_with(&cluster, |c| {
        c.cluster.username = "migrator".into();
        c.cluster.password = "s3cret".into();
    });
    let body = format!(
        r#"{{"slots":"0-19","from":"{}","to":"{}"}}"#,
        source.addr(),
        target.addr()
    );
    let (status, job) = proxy.admin_post("/migrations", &body);
    assert_eq!(status, 202, "{job}");
    let done = proxy.wait_job(job["id"].as_str().expect("id"), Duration::from_secs(60));
    assert_eq!(done["state"], "completed", "{done}");
    let mut con = proxy.conn();
    check_keys(&mut con, &keys);
    assert_eq!(count_in_slot(target, 7), 10);
    assert_eq!(done["keys_moved"], 200, "{done}");
    assert!(cluster.open_slots().is_empty());
    assert!(epoch(target) > epoch(source));
}

/// A node whose cluster bus is not at its port + 10000 (`cluster-port`) joins through
/// `POST /nodes`: the proxy reads the node's own bus port and passes it to `CLUSTER MEET`.
#[test]
fn a_node_with_its_own_bus_port_joins() {
    let cluster = Cluster::start_with(
        3,
        0,
        common::cluster::ClusterOptions {
            own_bus_ports: true,
            ..Default::default()
        },
    );
    let loose = cluster.spawn_loose_node();
    assert_ne!(loose.bus_port, loose.port + 10000);
    let proxy = TestProxy::start(&cluster);
    let (status, added) = proxy.admin_post("/nodes", &format!(r#"{{"addr":"{}"}}"#, loose.addr()));
    assert_eq!(status, 201, "{added}");
    assert_eq!(added["id"], loose.id.as_str());
    let nodes: String = cluster.nodes[0].cmd(&["CLUSTER", "NODES"]);
    let expected = format!("{}@{}", loose.addr(), loose.bus_port);
    assert!(nodes.contains(&expected), "{expected} not in\n{nodes}");
    let (_, view) = proxy.admin_json("/cluster");
    assert_eq!(view["nodes"].as_array().map(|n| n.len()), Some(4), "{view}");
}
