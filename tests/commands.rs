//! Every command group a plain client uses, through the proxy, compared with a standalone
//! Redis answering the same commands: "exactly as against a single Redis".

mod common;
use common::{Cluster, Standalone, TestProxy};
use redis::Value;

/// Commands and the keys they touch are spread over many slots on purpose.
const SCRIPT: &[&[&str]] = &[
    &["SET", "foo", "bar"],
    &["GET", "foo"],
    &["MSET", "a", "1", "b", "2", "c", "3"],
    &["MGET", "a", "b", "c", "missing"],
    &["EXISTS", "a", "b", "missing", "a"],
    &["DEL", "a", "b", "c", "missing"],
    &["MGET", "a", "b"],
    &["INCR", "n"],
    &["INCRBY", "n", "41"],
    &["SET", "t", "v"],
    &["EXPIRE", "t", "100"],
    &["TTL", "t"],
    &["PERSIST", "t"],
    &["TTL", "t"],
    &["HSET", "h", "f1", "v1", "f2", "v2"],
    &["HGETALL", "h"],
    &["HGET", "h", "f2"],
    &["LPUSH", "l", "1", "2", "3"],
    &["LRANGE", "l", "0", "-1"],
    &["RPOP", "l"],
    &["ZADD", "z", "1", "one", "2", "two"],
    &["ZRANGE", "z", "0", "-1", "WITHSCORES"],
    &["SADD", "s", "x"],
    &["SMEMBERS", "s"],
    &["SADD", "{s}2", "x", "y"],
    &["SUNIONSTORE", "{s}4", "s", "{s}2"],
    &["SCARD", "{s}4"],
    &["SINTERSTORE", "{s}3", "s", "{s}2"],
    &["PING"],
    &["PING", "hello"],
    &["ECHO", "echo me"],
    &["SELECT", "0"],
    &["DBSIZE"],
    &["TYPE", "h"],
    &["TYPE", "z"],
    &["TYPE", "missing"],
    &["UNLINK", "h", "l", "missing"],
    &["TOUCH", "z", "s", "missing"],
    &["EXISTS", "h", "l"],
    &["APPEND", "foo", "baz"],
    &["STRLEN", "foo"],
    &["GETRANGE", "foo", "0", "2"],
    &["SETNX", "foo", "x"],
    &["GETDEL", "foo"],
    &["MSET", "{u}1", "a", "{u}2", "b"],
    &["MSETNX", "{u}3", "c", "{u}4", "d"],
    &["RENAME", "{u}1", "{u}5"],
    &["MGET", "{u}1", "{u}2", "{u}3", "{u}4", "{u}5"],
    &["EVAL", "return redis.call('GET', KEYS[1])", "1", "{u}2"],
    &["EVAL", "return 7", "0"],
    &["XADD", "st", "1-1", "f", "v"],
    &["XRANGE", "st", "-", "+"],
    &["XREAD", "COUNT", "1", "STREAMS", "st", "0"],
    &["OBJECT", "ENCODING", "z"],
    &["SORT", "{u}list"],
    &["PFADD", "hll", "a", "b"],
    &["PFCOUNT", "hll"],
    &["GEOADD", "geo", "13.361389", "38.115556", "Palermo"],
    &["GEOPOS", "geo", "Palermo"],
    &["SET", "bits", "a"],
    &["BITCOUNT", "bits"],
    &["DBSIZE"],
    &["FLUSHALL"],
    &["DBSIZE"],
    &["MGET", "foo", "n"],
];

fn run(con: &mut redis::Connection, args: &[&str]) -> Result<Value, String> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query::<Value>(con).map_err(|e| e.to_string())
}

#[test]
fn commands_behave_as_on_a_single_redis() {
    let reference = Standalone::start();
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    let mut direct = reference.node.conn();
    let mut proxied = proxy.conn();
    for args in SCRIPT {
        let want = run(&mut direct, args);
        let got = run(&mut proxied, args);
        assert_eq!(
            got, want,
            "reply to {args:?} differs from a standalone Redis"
        );
    }
}

#[test]
fn keys_spread_over_all_masters_and_read_back() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    let mut con = proxy.conn();
    let keys: Vec<String> = (0..300).map(|i| format!("key:{i}")).collect();
    let mut mset = redis::cmd("MSET");
    for k in &keys {
        mset.arg(k).arg(format!("value-of-{k}"));
    }
    mset.query::<()>(&mut con).expect("MSET across all slots");
    let values: Vec<String> = redis::cmd("MGET").arg(&keys).query(&mut con).expect("MGET");
    for (k, v) in keys.iter().zip(&values) {
        assert_eq!(v, &format!("value-of-{k}"));
    }
    // Every master got some keys, and the proxy's DBSIZE is their sum.
    let per_node: Vec<i64> = cluster
        .nodes
        .iter()
        .map(|n| n.cmd::<i64>(&["DBSIZE"]))
        .collect();
    assert!(per_node.iter().all(|&n| n > 0), "{per_node:?}");
    let total: i64 = redis::cmd("DBSIZE").query(&mut con).expect("DBSIZE");
    assert_eq!(total, per_node.iter().sum::<i64>());
    assert_eq!(total, 300);
    let removed: i64 = redis::cmd("DEL").arg(&keys).query(&mut con).expect("DEL");
    assert_eq!(removed, 300);
}

#[test]
fn errors_are_precise_and_named() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    let mut con = proxy.conn();
    let err = |con: &mut redis::Connection, args: &[&str]| run(con, args).expect_err("must fail");
    assert!(err(&mut con, &["NOSUCHCMD", "x"])
        .contains("unknown command 'NOSUCHCMD', with args beginning with: 'x'"));
    assert!(err(&mut con, &["GET"]).contains("wrong number of arguments for 'get' command"));
    assert!(err(&mut con, &["SELECT", "1"]).contains("SELECT is not allowed in cluster mode"));
    for refused in [
        &["CLUSTER", "SETSLOT", "1", "STABLE"][..],
        &["CLUSTER", "ADDSLOTS", "1"],
        &["MIGRATE", "127.0.0.1", "1", "k", "0", "10"],
        &["ASKING"],
        &["DEBUG", "SLEEP", "0"],
        &["CONFIG", "SET", "maxmemory", "1"],
        &["SHUTDOWN"],
        &["REPLICAOF", "NO", "ONE"],
        &["FAILOVER"],
        &["SWAPDB", "0", "1"],
    ] {
        let message = err(&mut con, refused);
        let name = if ["CLUSTER", "CONFIG", "DEBUG"].contains(&refused[0]) {
            format!("{} {}", refused[0], refused[1])
        } else {
            refused[0].to_string()
        };
        assert!(
            message.contains(&format!("'{name}'")),
            "{refused:?}: {message}"
        );
    }
    // The connection is still fine after all those errors.
    let pong: String = redis::cmd("PING").query(&mut con).expect("PING");
    assert_eq!(pong, "PONG");
}

#[test]
fn local_commands_for_plain_clients() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    let mut con = proxy.conn();
    let _: () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("app-1")
        .query(&mut con)
        .expect("SETNAME");
    let name: String = redis::cmd("CLIENT")
        .arg("GETNAME")
        .query(&mut con)
        .expect("GETNAME");
    assert_eq!(name, "app-1");
    let hello: Value = redis::cmd("HELLO")
        .arg("2")
        .query(&mut con)
        .expect("HELLO 2");
    let text = format!("{hello:?}");
    assert!(
        text.contains("standalone") && text.contains("proto"),
        "{text}"
    );
    let _: () = redis::cmd("SET")
        .arg("k1")
        .arg("v")
        .query(&mut con)
        .expect("SET");
    let info: String = redis::cmd("INFO").query(&mut con).expect("INFO");
    assert!(info.contains("redis_version:"), "{info}");
    assert!(info.contains("cluster_enabled:0"), "{info}");
    assert!(info.contains("db0:keys=1,"), "{info}");
    // Persistence and stats read as one node holding every master's data: writes on every
    // master add up in rdb_changes_since_last_save, as one Redis counts its own.
    let changes = |con: &mut redis::Connection| -> i64 {
        let info: String = redis::cmd("INFO")
            .arg("persistence")
            .query(con)
            .expect("INFO");
        info.lines()
            .find_map(|l| l.trim().strip_prefix("rdb_changes_since_last_save:"))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no rdb_changes_since_last_save in {info}"))
    };
    let before = changes(&mut con);
    for node in &cluster.nodes {
        let key = cluster.key_on(node.port, "dirty");
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg("v")
            .query(&mut con)
            .expect("SET");
    }
    assert_eq!(changes(&mut con), before + 3);
    for node in &cluster.nodes {
        let key = cluster.key_on(node.port, "dirty");
        let _: i64 = redis::cmd("DEL").arg(&key).query(&mut con).expect("DEL");
    }
    let memory: String = redis::cmd("INFO")
        .arg("memory")
        .query(&mut con)
        .expect("INFO");
    assert!(memory.contains("mem_allocator:"), "{memory}");
    assert_eq!(memory.matches("used_memory:").count(), 1, "{memory}");
    let stats: String = redis::cmd("INFO")
        .arg("stats")
        .query(&mut con)
        .expect("INFO");
    for field in [
        "total_commands_processed:",
        "expired_keys:",
        "keyspace_hits:",
    ] {
        assert_eq!(stats.matches(field).count(), 1, "{field} in {stats}");
    }
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut con).expect("KEYS");
    assert_eq!(keys, vec!["k1".to_string()]);
    let random: String = redis::cmd("RANDOMKEY").query(&mut con).expect("RANDOMKEY");
    assert_eq!(random, "k1");
    // With keys on two masters RANDOMKEY draws from both, as one Redis draws from all keys.
    let other = cluster.key_on(
        cluster
            .other_than(cluster.owner_of(slotproxy::cluster::key_slot(b"k1")))
            .port,
        "rk",
    );
    let _: () = redis::cmd("SET")
        .arg(&other)
        .arg("v")
        .query(&mut con)
        .expect("SET");
    let drawn: std::collections::BTreeSet<String> = (0..100)
        .map(|_| redis::cmd("RANDOMKEY").query(&mut con).expect("RANDOMKEY"))
        .collect();
    assert_eq!(
        drawn,
        ["k1".to_string(), other.clone()].into_iter().collect()
    );
    let _: i64 = redis::cmd("DEL").arg(&other).query(&mut con).expect("DEL");
    let arity = redis::cmd("PING")
        .arg("x")
        .arg("y")
        .query::<String>(&mut con);
    assert!(
        format!("{arity:?}").contains("wrong number of arguments for 'ping' command"),
        "{arity:?}"
    );
    let slot: i64 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg("foo")
        .query(&mut con)
        .expect("KEYSLOT");
    assert_eq!(slot, 12182);
    let (status, _) = proxy.admin_get("/healthz");
    assert_eq!(status, 200);
    let (status, _) = proxy.admin_get("/readyz");
    assert_eq!(status, 200);
}
