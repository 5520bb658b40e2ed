//! RESP3 after `HELLO 3`, byte for byte like a single Redis; the CLIENT commands that see the
//! proxy's own clients; LASTSAVE over every master.

mod common;
use common::{conversation, query as cmd, Cluster, Standalone, TestProxy};
use std::time::Duration;

/// Drops the first reply (HELLO's: its client id and server details differ by design).
fn after_hello(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes).into_owned();
    // HELLO 3's map has 7 entries; the last one is `modules`, an empty array.
    let rest = match text.find("$7\r\nmodules\r\n*0\r\n") {
        Some(i) => &text[i + "$7\r\nmodules\r\n*0\r\n".len()..],
        None => panic!("no HELLO 3 map in {text:?}"),
    };
    // A later HELLO's client id differs too.
    const ID: &str = "$2\r\nid\r\n:";
    match rest.split_once(ID) {
        Some((before, after)) => {
            let tail = after.split_once("\r\n").map_or("", |(_, t)| t);
            format!("{before}{ID}<id>\r\n{tail}")
        }
        None => rest.to_string(),
    }
}

#[test]
fn hello_3_replies_match_a_single_redis_byte_for_byte() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    let reference = Standalone::start();
    let script: &[&[&str]] = &[
        &["HELLO", "3"],
        &["SET", "k", "v"],
        &["GET", "k"],
        &["GET", "missing"],
        &["INCRBYFLOAT", "f", "1.5"],
        &["HSET", "h", "a", "1", "b", "2"],
        &["HGETALL", "h"],
        &["SADD", "s", "x"],
        &["SMEMBERS", "s"],
        &["ZADD", "z", "1.5", "m"],
        &["ZSCORE", "z", "m"],
        &["ZRANGE", "z", "0", "-1", "WITHSCORES"],
        &["MGET", "k", "missing", "h"],
        &["DEL", "missing", "nothing"],
        &["EXISTS", "k", "s"],
        &["LPOP", "missing"],
        &["TYPE", "k"],
        &["TTL", "k"],
        &["CLIENT", "GETNAME"],
        &["PING"],
        &["ECHO", "hi"],
        &["CONFIG", "GET", "maxmemory-policy"],
        &["XADD", "x", "1-1", "f", "v"],
        &["XRANGE", "x", "-", "+"],
        &["MULTI"],
        &["INCR", "{t}n"],
        &["GET", "{t}n"],
        &["EXEC"],
        &["DBSIZE"],
        &["SUBSCRIBE", "ch"],
        &["PING"],
        &["GET", "k"],
        &["UNSUBSCRIBE"],
        &["HELLO", "2"],
        &["GET", "missing"],
    ];
    let settle = Duration::from_millis(100);
    let ours = after_hello(&conversation(proxy.addr, script, settle));
    let reference_addr = reference.node.addr().parse().expect("addr");
    let theirs = after_hello(&conversation(reference_addr, script, settle));
    assert_eq!(ours, theirs);
    for part in [
        "%2\r\n",
        "~1\r\n",
        ",1.5\r\n",
        "_\r\n",
        ">3\r\n$9\r\nsubscribe",
        "*14\r\n$6\r\nserver",
    ] {
        assert!(ours.contains(part), "{part:?} missing from {ours:?}");
    }

    // The redis crate speaking RESP3 sees maps and doubles.
    let url = format!("redis://{}/?protocol=resp3", proxy.addr);
    let mut con = redis::Client::open(url)
        .expect("client")
        .get_connection()
        .expect("RESP3 connection");
    let map: redis::Value = cmd(&mut con, &["HGETALL", "h"]);
    assert!(
        matches!(map, redis::Value::Map(ref m) if m.len() == 2),
        "{map:?}"
    );
    let score: redis::Value = cmd(&mut con, &["ZSCORE", "z", "m"]);
    assert_eq!(score, redis::Value::Double(1.5));
}

#[test]
fn client_list_kill_reply_and_refusals() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    let mut me = proxy.conn();
    let mut other = proxy.conn();
    let _: () = cmd(&mut me, &["CLIENT", "SETNAME", "admin"]);
    let _: () = cmd(&mut other, &["CLIENT", "SETNAME", "worker"]);
    let _: () = cmd(&mut other, &["SET", "busy", "1"]);
    let other_id: i64 = cmd(&mut other, &["CLIENT", "ID"]);

    // CLIENT LIST shows the proxy's clients, not its node connections.
    let list: String = cmd(&mut me, &["CLIENT", "LIST"]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list}");
    let worker = lines
        .iter()
        .find(|l| l.contains("name=worker"))
        .expect("worker listed");
    assert!(worker.contains(&format!("id={other_id} ")), "{worker}");
    assert!(worker.contains("cmd=client|id"), "{worker}");
    assert!(
        list.contains("name=admin") && list.contains("cmd=client|list"),
        "{list}"
    );
    let only: String = cmd(&mut me, &["CLIENT", "LIST", "ID", &other_id.to_string()]);
    assert_eq!(only.lines().count(), 1);
    let info: String = cmd(&mut me, &["CLIENT", "INFO"]);
    assert!(
        info.contains("name=admin") && info.contains("resp=2"),
        "{info}"
    );

    // CLIENT KILL ID disconnects the other client; SKIPME keeps the caller.
    let killed: i64 = cmd(&mut me, &["CLIENT", "KILL", "ID", &other_id.to_string()]);
    assert_eq!(killed, 1);
    common::wait_until(Duration::from_secs(5), "the killed client to go", || {
        let list: String = cmd(&mut me, &["CLIENT", "LIST"]);
        !list.contains("name=worker")
    });
    assert!(redis::cmd("PING").query::<String>(&mut other).is_err());
    let none: i64 = cmd(&mut me, &["CLIENT", "KILL", "TYPE", "normal"]);
    assert_eq!(none, 0, "SKIPME yes spares the caller");
    let gone: redis::RedisResult<()> = redis::cmd("CLIENT")
        .arg(&["KILL", "127.0.0.1:1"])
        .query(&mut me);
    assert!(format!("{gone:?}").contains("No such client"), "{gone:?}");

    // Refused clearly: per-client node state cannot exist on shared connections.
    for sub in [&["NO-EVICT", "on"][..], &["TRACKING", "on"]] {
        let mut c = redis::cmd("CLIENT");
        c.arg(sub);
        let refused = format!("{:?}", c.query::<()>(&mut me));
        assert!(refused.contains("not supported by slotproxy"), "{refused}");
    }

    // CLIENT REPLY OFF/SKIP/ON, observed on the wire.
    let wire = conversation(
        proxy.addr,
        &[
            &["CLIENT", "REPLY", "OFF"],
            &["SET", "r", "1"],
            &["CLIENT", "REPLY", "ON"],
            &["CLIENT", "REPLY", "SKIP"],
            &["GET", "r"],
            &["INCR", "r"],
        ],
        Duration::from_millis(100),
    );
    assert_eq!(String::from_utf8_lossy(&wire), "+OK\r\n:2\r\n");

    // LASTSAVE: the oldest save over the masters (every node saved since then).
    let lastsave: i64 = cmd(&mut me, &["LASTSAVE"]);
    let oldest = cluster
        .nodes
        .iter()
        .map(|n| n.cmd::<i64>(&["LASTSAVE"]))
        .min()
        .expect("nodes");
    assert_eq!(lastsave, oldest);
}

#[test]
fn monitor_shows_the_commands_clients_send() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    let mut watcher = std::net::TcpStream::connect(proxy.addr).expect("connect");
    std::io::Write::write_all(&mut watcher, b"MONITOR\r\n").expect("MONITOR");
    watcher
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut ok = [0u8; 5];
    std::io::Read::read_exact(&mut watcher, &mut ok).expect("+OK");
    assert_eq!(&ok, b"+OK\r\n");
    let mut con = proxy.conn();
    // No password is configured: AUTH fails, and it must not show in the feed either way.
    let _ = redis::cmd("AUTH").arg("secret").query::<()>(&mut con);
    let _: () = cmd(&mut con, &["SET", "watched", "a \"quoted\" value"]);
    let _: Vec<Option<String>> = cmd(&mut con, &["MGET", "watched", "other"]);
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains("\"MGET\"") {
        let n = std::io::Read::read(&mut watcher, &mut buf).expect("a MONITOR line");
        assert!(n > 0, "MONITOR feed closed: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(
        seen.contains("\"SET\" \"watched\" \"a \\\"quoted\\\" value\""),
        "{seen}"
    );
    // One MGET, as the client sent it, not the per-slot parts the nodes saw.
    assert!(seen.contains("\"MGET\" \"watched\" \"other\""), "{seen}");
    assert!(!seen.contains("secret"), "credentials leaked: {seen}");
    assert!(
        seen.lines()
            .all(|l| l.starts_with('+') && l.contains(" [0 127.0.0.1:")),
        "{seen}"
    );
}
