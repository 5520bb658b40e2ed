//! MULTI/EXEC/DISCARD/WATCH/UNWATCH through the proxy, including while the transaction's slot
//! is being migrated.

mod common;
use common::{query as cmd, Cluster, TestProxy};
use redis::Value;
use std::time::Duration;

fn try_cmd(con: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<Value> {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(con)
}

fn error_of(con: &mut redis::Connection, args: &[&str]) -> String {
    match try_cmd(con, args) {
        Err(e) => format!("{e:?} {e}").to_uppercase(),
        Ok(v) => panic!("{args:?} should fail, got {v:?}"),
    }
}

#[test]
fn multi_exec_runs_atomically_and_queue_errors_abort() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    let mut con = proxy.conn();

    // The redis crate's atomic pipeline: MULTI, the commands, EXEC.
    let (counter, list): (i64, Vec<String>) = redis::pipe()
        .atomic()
        .set("{acct}:n", 10)
        .ignore()
        .incr("{acct}:n", 5)
        .rpush("{acct}:log", "deposit")
        .ignore()
        .lrange("{acct}:log", 0, -1)
        .query(&mut con)
        .expect("atomic pipeline");
    assert_eq!((counter, list), (15, vec!["deposit".to_string()]));

    // Command by command, with Redis's exact replies.
    assert_eq!(cmd::<String>(&mut con, &["MULTI"]), "OK");
    assert!(error_of(&mut con, &["MULTI"]).contains("MULTI CALLS CAN NOT BE NESTED"));
    assert_eq!(cmd::<String>(&mut con, &["SET", "{t}a", "1"]), "QUEUED");
    assert_eq!(cmd::<String>(&mut con, &["PING"]), "QUEUED");
    assert_eq!(cmd::<String>(&mut con, &["INCR", "{t}a"]), "QUEUED");
    let replies: Value = cmd(&mut con, &["EXEC"]);
    assert_eq!(
        replies,
        Value::Array(vec![
            Value::Okay,
            Value::SimpleString("PONG".into()),
            Value::Int(2)
        ])
    );

    // Keys in two slots (here on two masters): both applied, replies in order
    // (tests/cross_slot.rs goes through every case).
    assert_eq!(cmd::<String>(&mut con, &["MULTI"]), "OK");
    assert_eq!(cmd::<String>(&mut con, &["SET", "x:one", "1"]), "QUEUED");
    assert_eq!(cmd::<String>(&mut con, &["SET", "x:two", "2"]), "QUEUED");
    assert_eq!(
        cmd::<Value>(&mut con, &["EXEC"]),
        Value::Array(vec![Value::Okay, Value::Okay])
    );
    assert_eq!(
        cmd::<Option<String>>(&mut con, &["GET", "x:one"]).as_deref(),
        Some("1")
    );

    // Unknown command and wrong arity inside MULTI abort too; fan-out commands are refused.
    assert_eq!(cmd::<String>(&mut con, &["MULTI"]), "OK");
    assert!(error_of(&mut con, &["NOSUCHCOMMAND"]).contains("UNKNOWN COMMAND"));
    assert!(error_of(&mut con, &["EXEC"]).contains("EXECABORT"));
    assert_eq!(cmd::<String>(&mut con, &["MULTI"]), "OK");
    assert!(error_of(&mut con, &["GET"]).contains("WRONG NUMBER OF ARGUMENTS"));
    assert!(error_of(&mut con, &["EXEC"]).contains("EXECABORT"));
    assert_eq!(cmd::<String>(&mut con, &["MULTI"]), "OK");
    assert!(error_of(&mut con, &["DBSIZE"]).contains("CANNOT BE PART OF A TRANSACTION"));
    assert!(error_of(&mut con, &["EXEC"]).contains("EXECABORT"));

    // DISCARD drops the queue; EXEC and DISCARD outside MULTI are errors.
    assert_eq!(cmd::<String>(&mut con, &["MULTI"]), "OK");
    assert_eq!(cmd::<String>(&mut con, &["SET", "{t}a", "99"]), "QUEUED");
    assert_eq!(cmd::<String>(&mut con, &["DISCARD"]), "OK");
    assert_eq!(cmd::<String>(&mut con, &["GET", "{t}a"]), "2");
    assert!(error_of(&mut con, &["EXEC"]).contains("EXEC WITHOUT MULTI"));
    assert!(error_of(&mut con, &["DISCARD"]).contains("DISCARD WITHOUT MULTI"));
    // An empty transaction, and a runtime error inside one (reported in EXEC's array).
    assert_eq!(cmd::<String>(&mut con, &["MULTI"]), "OK");
    assert_eq!(cmd::<Value>(&mut con, &["EXEC"]), Value::Array(vec![]));
    assert_eq!(cmd::<String>(&mut con, &["MULTI"]), "OK");
    assert_eq!(cmd::<String>(&mut con, &["LPUSH", "{t}a", "x"]), "QUEUED");
    assert_eq!(cmd::<String>(&mut con, &["INCR", "{t}a"]), "QUEUED");
    let mixed = format!("{:?}", try_cmd(&mut con, &["EXEC"]));
    assert!(mixed.contains("WRONGTYPE"), "{mixed}");
    assert_eq!(cmd::<String>(&mut con, &["GET", "{t}a"]), "3");
}

#[test]
fn watch_aborts_when_another_client_touches_the_key() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    let mut con = proxy.conn();
    let mut other = proxy.conn();
    let _: () = cmd(&mut con, &["SET", "w:balance", "100"]);

    // Untouched: EXEC runs.
    assert_eq!(cmd::<String>(&mut con, &["WATCH", "w:balance"]), "OK");
    let balance: i64 = cmd(&mut con, &["GET", "w:balance"]);
    assert_eq!(cmd::<String>(&mut con, &["MULTI"]), "OK");
    let _: String = cmd(&mut con, &["SET", "w:balance", &(balance - 10).to_string()]);
    assert_eq!(
        cmd::<Value>(&mut con, &["EXEC"]),
        Value::Array(vec![Value::Okay])
    );

    // Touched by another client between WATCH and EXEC: EXEC answers nil, nothing applied.
    assert_eq!(cmd::<String>(&mut con, &["WATCH", "w:balance"]), "OK");
    let _: () = cmd(&mut other, &["SET", "w:balance", "500"]);
    assert_eq!(cmd::<String>(&mut con, &["MULTI"]), "OK");
    let _: String = cmd(&mut con, &["SET", "w:balance", "0"]);
    assert_eq!(cmd::<Value>(&mut con, &["EXEC"]), Value::Nil);
    assert_eq!(cmd::<String>(&mut con, &["GET", "w:balance"]), "500");

    // UNWATCH forgets the watch: a later touch does not abort.
    assert_eq!(cmd::<String>(&mut con, &["WATCH", "w:balance"]), "OK");
    assert_eq!(cmd::<String>(&mut con, &["UNWATCH"]), "OK");
    let _: () = cmd(&mut other, &["SET", "w:balance", "600"]);
    assert_eq!(cmd::<String>(&mut con, &["MULTI"]), "OK");
    let _: String = cmd(&mut con, &["INCR", "w:balance"]);
    assert_eq!(
        cmd::<Value>(&mut con, &["EXEC"]),
        Value::Array(vec![Value::Int(601)])
    );

    // Watched keys on one master, writes on another: the watch is checked, then the commit
    // runs (tests/cross_slot.rs has the refusals and the touched cases).
    let watched_port = cluster.owner_of(slotproxy::cluster::key_slot(b"{w}a")).port;
    let elsewhere = cluster.key_on(
        cluster
            .other_than(cluster.owner_of(slotproxy::cluster::key_slot(b"{w}a")))
            .port,
        "elsewhere",
    );
    assert_ne!(
        cluster
            .owner_of(slotproxy::cluster::key_slot(elsewhere.as_bytes()))
            .port,
        watched_port
    );
    assert_eq!(cmd::<String>(&mut con, &["WATCH", "{w}a"]), "OK");
    assert_eq!(cmd::<String>(&mut con, &["MULTI"]), "OK");
    assert!(error_of(&mut con, &["WATCH", "{w}a"]).contains("WATCH INSIDE MULTI"));
    assert_eq!(cmd::<String>(&mut con, &["SET", &elsewhere, "1"]), "QUEUED");
    assert_eq!(
        cmd::<Value>(&mut con, &["EXEC"]),
        Value::Array(vec![Value::Okay])
    );
    assert_eq!(
        cmd::<Option<String>>(&mut con, &["GET", &elsewhere]).as_deref(),
        Some("1")
    );

    // The redis crate's optimistic-locking helper, with a competing writer in the loop.
    let mut attempts = 0;
    let (new,): (i64,) = redis::transaction(&mut con, &["w:counter"], |c, pipe| {
        attempts += 1;
        let current: Option<i64> = redis::cmd("GET").arg("w:counter").query(c)?;
        if attempts == 1 {
            let _: () = redis::cmd("SET")
                .arg("w:counter")
                .arg(1000)
                .query(&mut other)?;
        }
        pipe.set("w:counter", current.unwrap_or(0) + 1)
            .ignore()
            .get("w:counter")
            .query(c)
    })
    .expect("transaction");
    assert_eq!((new, attempts), (1001, 2));
}

#[test]
fn transactions_survive_a_migration_of_their_slot() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    let mut con = proxy.conn();
    let (slot, keys) = common::keys_in_one_slot("txmove", 2);
    let (a, b) = (keys[0].as_str(), keys[1].as_str());
    let _: () = cmd(&mut con, &["MSET", a, "1", b, "1"]);
    let source = cluster.owner_of(slot);
    let target = cluster.other_than(source);
    cluster.begin_migration(slot, source, target);

    // All keys already moved: the source answers ASK; the block is replayed on the target.
    cluster.migrate_keys(source, target, &keys);
    let (x, y): (i64, i64) = redis::pipe()
        .atomic()
        .incr(a, 1)
        .incr(b, 1)
        .query(&mut con)
        .expect("transaction during the migration");
    assert_eq!((x, y), (2, 2));

    // A new key in the migrating slot together with a moved one: TRYAGAIN until the slot
    // settles. Finish the migration meanwhile; the transaction then runs once, on the target.
    let (c, d) = {
        let (_, more) = common::keys_in_one_slot("txmove", 3);
        (more[2].clone(), a.to_string())
    };
    let finisher = {
        let (source_addr, target_addr) = (source.addr(), target.addr());
        let nodes: Vec<String> = cluster.nodes.iter().map(|n| n.addr()).collect();
        let target_id = target.id.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let s = slot.to_string();
            for addr in [&target_addr, &source_addr] {
                let mut n = common::connect(addr);
                let _: () = redis::cmd("CLUSTER")
                    .arg(&["SETSLOT", s.as_str(), "NODE", target_id.as_str()][..])
                    .query(&mut n)
                    .expect("SETSLOT");
            }
            for addr in nodes
                .iter()
                .filter(|a| **a != source_addr && **a != target_addr)
            {
                let mut n = common::connect(addr);
                let _: () = redis::cmd("CLUSTER")
                    .arg(&["SETSLOT", s.as_str(), "NODE", target_id.as_str()][..])
                    .query(&mut n)
                    .expect("SETSLOT");
            }
        })
    };
    let (set, incr): (String, i64) = redis::pipe()
        .atomic()
        .set(&c, "new")
        .incr(&d, 1)
        .query(&mut con)
        .expect("transaction while the slot settles");
    assert_eq!((set.as_str(), incr), ("OK", 3));
    finisher.join().expect("finisher");

    // After the move the old owner answers MOVED; the client still only sees the result.
    let (x,): (i64,) = redis::pipe()
        .atomic()
        .incr(a, 1)
        .query(&mut con)
        .expect("transaction after the move");
    assert_eq!(x, 4);
    let on_target: i64 = target.cmd(&["EXISTS", a, b, &c]);
    assert_eq!(on_target, 3);
}

#[test]
fn a_watch_across_a_slot_move_aborts_once_then_succeeds() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    let mut con = proxy.conn();
    let (slot, keys) = common::keys_in_one_slot("wmove", 1);
    let key = keys[0].as_str();
    let _: () = cmd(&mut con, &["SET", key, "1"]);
    assert_eq!(cmd::<String>(&mut con, &["WATCH", key]), "OK");
    let source = cluster.owner_of(slot);
    let target = cluster.other_than(source);
    cluster.begin_migration(slot, source, target);
    cluster.finish_migration(slot, source, target);
    assert_eq!(cmd::<String>(&mut con, &["MULTI"]), "OK");
    let _: String = cmd(&mut con, &["INCR", key]);
    // The move touched the watched key: EXEC fails like after any touch; nothing applied.
    assert_eq!(cmd::<Value>(&mut con, &["EXEC"]), Value::Nil);
    assert_eq!(cmd::<String>(&mut con, &["GET", key]), "1");
    // The client's retry runs on the new owner.
    assert_eq!(cmd::<String>(&mut con, &["WATCH", key]), "OK");
    assert_eq!(cmd::<String>(&mut con, &["MULTI"]), "OK");
    let _: String = cmd(&mut con, &["INCR", key]);
    assert_eq!(
        cmd::<Value>(&mut con, &["EXEC"]),
        Value::Array(vec![Value::Int(2)])
    );
    let there: String = target.cmd(&["GET", key]);
    assert_eq!(there, "2");
}
