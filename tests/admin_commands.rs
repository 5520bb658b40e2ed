//! Node administration through the proxy for trusted clients (`[compat] admin_commands`),
//! checked on the nodes themselves; and the same commands refused without the option.

mod common;
use common::{Cluster, Node, TestProxy};
use std::time::Duration;

fn admin_proxy(cluster: &Cluster) -> TestProxy {
    TestProxy::start_with(cluster, |c| c.compat.admin_commands = true)
}

fn value(node: &Node, param: &str) -> String {
    let pair: Vec<String> = node.cmd(&["CONFIG", "GET", param]);
    pair.get(1).cloned().unwrap_or_default()
}

fn try_query(con: &mut redis::Connection, args: &[&str]) -> Result<redis::Value, String> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query::<redis::Value>(con).map_err(|e| e.to_string())
}

fn text(v: &redis::Value) -> String {
    match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::VerbatimString { text, .. } => text.clone(),
        redis::Value::SimpleString(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

#[test]
fn config_set_reaches_every_node_and_a_failure_names_each_node() {
    let cluster = Cluster::start_replicated(3);
    let proxy = admin_proxy(&cluster);
    let mut con = proxy.conn();
    let ok: String = common::query(
        &mut con,
        &["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"],
    );
    assert_eq!(ok, "OK");
    for node in &cluster.nodes {
        assert_eq!(
            value(node, "maxmemory-policy"),
            "allkeys-lru",
            "{}",
            node.addr()
        );
    }
    let got: Vec<String> = common::query(&mut con, &["CONFIG", "GET", "maxmemory-policy"]);
    assert_eq!(got, ["maxmemory-policy", "allkeys-lru"]);

    let err = try_query(&mut con, &["CONFIG", "SET", "maxmemory-policy", "bogus"]).unwrap_err();
    assert!(err.contains("CONFIG SET failed on 6 of 6 nodes"), "{err}");
    for node in &cluster.nodes {
        assert!(
            err.contains(&node.addr()),
            "{} missing from {err}",
            node.addr()
        );
        assert_eq!(value(node, "maxmemory-policy"), "allkeys-lru");
    }

    // A master set differently behind the proxy's back: the first master's value, counted.
    let _: () = cluster.nodes[1].cmd(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    let got: Vec<String> = common::query(&mut con, &["CONFIG", "GET", "maxmemory-policy"]);
    assert_eq!(got[0], "maxmemory-policy");
    assert_eq!(proxy.metric("slotproxy_config_disagreements_total"), 1.0);
    let ok: String = common::query(&mut con, &["CONFIG", "RESETSTAT"]);
    assert_eq!(ok, "OK");

    // Settings that would lock the proxy out of the nodes stay refused.
    for param in ["requirepass", "masterauth", "port", "cluster-announce-ip"] {
        let err =
            try_query(&mut con, &["CONFIG", "SET", "maxmemory", "0", param, "x"]).unwrap_err();
        assert!(
            err.contains(&format!("CONFIG SET {param} is not allowed")),
            "{param}: {err}"
        );
    }
    for node in &cluster.nodes {
        assert_eq!(value(node, "requirepass"), "");
    }
}

#[test]
fn debug_goes_by_key_or_to_every_master_and_the_dangerous_ones_stay_refused() {
    let cluster = Cluster::start(3, 0);
    let proxy = admin_proxy(&cluster);
    let mut con = proxy.conn();
    let _: () = common::query(&mut con, &["SET", "dbg", "hello world"]);
    let through = text(&try_query(&mut con, &["DEBUG", "OBJECT", "dbg"]).expect("DEBUG OBJECT"));
    let owner = cluster.owner_of(slotproxy::cluster::key_slot(b"dbg"));
    let direct: String = owner.cmd(&["DEBUG", "OBJECT", "dbg"]);
    let part = |s: &str, k: &str| {
        s.split_whitespace()
            .find(|w| w.starts_with(k))
            .map(str::to_string)
    };
    assert!(part(&through, "encoding:").is_some(), "{through}");
    for k in ["encoding:", "serializedlength:", "refcount:"] {
        assert_eq!(part(&through, k), part(&direct, k), "{through} vs {direct}");
    }

    // Active expiry off on every master: expired keys stay until something touches them.
    let ok: String = common::query(&mut con, &["DEBUG", "SET-ACTIVE-EXPIRE", "0"]);
    assert_eq!(ok, "OK");
    for node in &cluster.nodes {
        let key = cluster.key_on(node.port, "short");
        let _: () = node.cmd(&["SET", &key, "v", "PX", "50"]);
    }
    std::thread::sleep(Duration::from_millis(800));
    for node in &cluster.nodes {
        let size: i64 = node.cmd(&["DBSIZE"]);
        assert!(
            size >= 1,
            "{}: the expired key was removed actively",
            node.addr()
        );
    }
    let ok: String = common::query(&mut con, &["DEBUG", "SET-ACTIVE-EXPIRE", "1"]);
    assert_eq!(ok, "OK");
    common::wait_until(Duration::from_secs(5), "active expiry back on", || {
        cluster
            .nodes
            .iter()
            .all(|n| n.cmd::<i64>(&["DBSIZE"]) <= i64::from(n.port == owner.port))
    });

    for sub in [
        "RESTART",
        "SEGFAULT",
        "PANIC",
        "CRASH-AND-RECOVER",
        "POPULATE",
        "SET-DISABLE-DENY-SCRIPTS",
    ] {
        let err = try_query(&mut con, &["DEBUG", sub, "10"]).unwrap_err();
        assert!(
            err.contains(&format!("'DEBUG {sub}'"))
                && err.contains("even with [compat] admin_commands"),
            "{sub}: {err}"
        );
    }
    for node in &cluster.nodes {
        let pong: String = node.cmd(&["PING"]);
        assert_eq!(pong, "PONG");
    }
}

#[test]
fn slowlog_latency_memory_and_info_cover_every_master() {
    let cluster = Cluster::start(3, 0);
    let proxy = admin_proxy(&cluster);
    let mut con = proxy.conn();
    let _: String = common::query(&mut con, &["CONFIG", "SET", "slowlog-log-slower-than", "0"]);
    let _: String = common::query(&mut con, &["SLOWLOG", "RESET"]);
    for node in &cluster.nodes {
        let key = cluster.key_on(node.port, "slow");
        let _: () = common::query(&mut con, &["SET", &key, "v"]);
    }
    let entries: Vec<redis::Value> = common::query(&mut con, &["SLOWLOG", "GET", "100"]);
    let _: String = common::query(
        &mut con,
        &["CONFIG", "SET", "slowlog-log-slower-than", "10000"],
    );
    let mut nodes_seen = std::collections::BTreeSet::new();
    let mut last_time = i64::MAX;
    for entry in &entries {
        let redis::Value::Array(fields) = entry else {
            panic!("{entry:?}")
        };
        let redis::Value::Int(at) = fields[1] else {
            panic!("{entry:?}")
        };
        assert!(at <= last_time, "newest first");
        last_time = at;
        nodes_seen.insert(text(fields.last().expect("node")));
    }
    for node in &cluster.nodes {
        assert!(nodes_seen.contains(&node.addr()), "{nodes_seen:?}");
    }
    let len: i64 = common::query(&mut con, &["SLOWLOG", "LEN"]);
    let direct: i64 = cluster
        .nodes
        .iter()
        .map(|n| n.cmd::<i64>(&["SLOWLOG", "LEN"]))
        .sum();
    assert!(
        len >= entries.len() as i64 && len <= direct,
        "{len} vs {direct}"
    );

    let stats: Vec<redis::Value> = common::query(&mut con, &["MEMORY", "STATS"]);
    assert_eq!(stats.len(), 3);
    let doctor = text(&try_query(&mut con, &["MEMORY", "DOCTOR"]).expect("MEMORY DOCTOR"));
    let info = text(&try_query(&mut con, &["INFO", "memory"]).expect("INFO memory"));
    for node in &cluster.nodes {
        assert!(doctor.contains(&format!("# {}", node.addr())), "{doctor}");
        assert!(
            info.contains(&format!("# Memory {}", node.addr())),
            "{info}"
        );
    }
    assert!(
        info.contains("# Memory\r\nused_memory:"),
        "the proxy's sum stays: {info}"
    );
    // A latency event on every master (DEBUG SLEEP runs on each), merged into one list.
    let _: String = common::query(
        &mut con,
        &["CONFIG", "SET", "latency-monitor-threshold", "5"],
    );
    let _: String = common::query(&mut con, &["DEBUG", "SLEEP", "0.02"]);
    let latest: Vec<Vec<redis::Value>> = common::query(&mut con, &["LATENCY", "LATEST"]);
    let _: String = common::query(
        &mut con,
        &["CONFIG", "SET", "latency-monitor-threshold", "0"],
    );
    let addrs: std::collections::BTreeSet<String> = latest
        .iter()
        .map(|e| text(e.last().expect("node")))
        .collect();
    assert_eq!(addrs.len(), 3, "{latest:?}");
    assert!(
        latest.iter().all(|e| text(&e[0]) == "command"),
        "{latest:?}"
    );
    let reset: i64 = common::query(&mut con, &["LATENCY", "RESET"]);
    assert!(reset >= 0);
}

#[test]
fn without_the_option_each_admin_command_is_refused_and_changes_nothing() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    let mut con = proxy.conn();
    let _: () = common::query(&mut con, &["SET", "k", "v"]);
    let commands: &[&[&str]] = &[
        &["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"],
        &["CONFIG", "RESETSTAT"],
        &["CONFIG", "REWRITE"],
        &["DEBUG", "OBJECT", "k"],
        &["DEBUG", "SET-ACTIVE-EXPIRE", "0"],
        &["SLOWLOG", "GET"],
        &["SLOWLOG", "LEN"],
        &["SLOWLOG", "RESET"],
        &["LATENCY", "LATEST"],
        &["LATENCY", "RESET"],
        &["MEMORY", "STATS"],
        &["MEMORY", "DOCTOR"],
    ];
    for command in commands {
        let err = try_query(&mut con, command).unwrap_err();
        let name = format!("'{} {}'", command[0], command[1]);
        assert!(
            err.contains(&name) && err.contains("[compat] admin_commands = true"),
            "{command:?}: {err}"
        );
    }
    for node in &cluster.nodes {
        assert_eq!(value(node, "maxmemory-policy"), "noeviction");
    }
    // Reading the configuration stays open.
    let got: Vec<String> = common::query(&mut con, &["CONFIG", "GET", "maxmemory-policy"]);
    assert_eq!(got, ["maxmemory-policy", "noeviction"]);
    let info = text(&try_query(&mut con, &["INFO", "memory"]).expect("INFO"));
    assert!(!info.contains("# Memory 127.0.0.1"), "{info}");
}

#[test]
fn post_call_needs_the_token_and_answers_per_node() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start_with(&cluster, |c| c.admin.token = "tok".into());
    let body = r#"{"command":["CONFIG","GET","maxmemory-policy"],"nodes":"all"}"#;
    let (status, _) = common::http_request(proxy.admin, "POST", "/call", body, None);
    assert_eq!(status, 401);
    let (status, answer) = common::http_request(proxy.admin, "POST", "/call", body, Some("tok"));
    assert_eq!(status, 200, "{answer}");
    let nodes = answer["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3, "{answer}");
    for n in nodes {
        assert_eq!(n["role"], "master");
        assert_eq!(
            n["reply"],
            serde_json::json!(["maxmemory-policy", "noeviction"]),
            "{n}"
        );
    }
    let (status, refused) = common::http_request(
        proxy.admin,
        "POST",
        "/call",
        r#"{"command":["CLUSTER","SETSLOT","1","STABLE"]}"#,
        Some("tok"),
    );
    assert_eq!(status, 400, "{refused}");
    assert!(refused["error"]
        .as_str()
        .unwrap_or("")
        .contains("the proxy manages"));

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_slotproxy"))
        .args([
            "ctl",
            "--admin",
            &format!("http://{}", proxy.admin),
            "--token",
            "tok",
        ])
        .args(["call", "CONFIG", "SET", "maxmemory-policy", "allkeys-lru"])
        .output()
        .expect("ctl call");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    assert!(
        stdout.lines().all(|l| l.ends_with("(master): OK")),
        "{stdout}"
    );
    for node in &cluster.nodes {
        assert_eq!(value(node, "maxmemory-policy"), "allkeys-lru");
    }
}

#[test]
fn debug_reload_and_loadaof_keep_every_masters_keys_or_are_refused() {
    let cluster = Cluster::start(3, 0);
    let proxy = admin_proxy(&cluster);
    let mut con = proxy.conn();
    let keys: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| cluster.key_on(n.port, "reload"))
        .collect();
    for key in &keys {
        let _: i64 = common::query(&mut con, &["RPUSH", key, "a", "b", "c"]);
    }
    let check = |con: &mut redis::Connection| {
        for key in &keys {
            let items: Vec<String> = common::query(con, &["LRANGE", key, "0", "-1"]);
            assert_eq!(items, ["a", "b", "c"], "{key}");
        }
    };
    // Every master persists its own data set.
    let ok: String = common::query(&mut con, &["SAVE"]);
    assert_eq!(ok, "OK");
    let started: String = common::query(&mut con, &["BGSAVE"]);
    assert_eq!(started, "Background saving started");
    common::wait_until(Duration::from_secs(10), "the background saves", || {
        cluster.nodes.iter().all(|n| {
            let info: String = n.cmd(&["INFO", "persistence"]);
            info.contains("rdb_bgsave_in_progress:0")
        })
    });
    // Saved and loaded back on every master, as one Redis does with its own data set.
    let ok: String = common::query(&mut con, &["DEBUG", "RELOAD"]);
    assert_eq!(ok, "OK");
    check(&mut con);
    let ok: String = common::query(&mut con, &["DEBUG", "RELOAD", "NOFLUSH", "MERGE"]);
    assert_eq!(ok, "OK");
    check(&mut con);
    for (options, why) in [
        (&["NOSAVE"][..], "NOSAVE is not allowed"),
        (&["NOSAVE", "NOFLUSH", "MERGE"][..], "NOSAVE is not allowed"),
        (&["NOFLUSH"][..], "NOFLUSH without MERGE"),
    ] {
        let mut args = vec!["DEBUG", "RELOAD"];
        args.extend(options);
        let err = try_query(&mut con, &args).unwrap_err();
        assert!(err.contains(why), "{options:?}: {err}");
    }
    // LOADAOF empties a node and loads its AOF: refused until every master has a whole one.
    let err = try_query(&mut con, &["DEBUG", "LOADAOF"]).unwrap_err();
    assert!(err.contains("appendonly no"), "{err}");
    check(&mut con);
    let ok: String = common::query(&mut con, &["CONFIG", "SET", "appendonly", "yes"]);
    assert_eq!(ok, "OK");
    // Right after `appendonly yes` every master rewrites its AOF: LOADAOF waits for that.
    let _: i64 = common::query(&mut con, &["RPUSH", &keys[0], "d"]);
    let _: String = common::query(&mut con, &["RPOP", &keys[0]]);
    let ok: String = common::query(&mut con, &["DEBUG", "LOADAOF"]);
    assert_eq!(ok, "OK");
    check(&mut con);
    for node in &cluster.nodes {
        let pong: String = node.cmd(&["PING"]);
        assert_eq!(pong, "PONG");
    }
}
