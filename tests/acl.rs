//! ACL users at the proxy, compared with a standalone redis-server given the same ACL
//! commands: the same `+OK` / `-NOPERM` / `-WRONGPASS` replies, the same `ACL GETUSER`,
//! `ACL LIST` and `ACL DRYRUN` answers, the same `ACL LOG` entries.

mod common;
use common::{connect, Cluster, Standalone, TestProxy};
use redis::Value;
use std::collections::HashMap;

/// How a reply is compared.
#[derive(Clone, Copy, PartialEq)]
enum Cmp {
    /// Exactly.
    Same,
    /// As a list whose order is the server's hash order (`ACL CAT string`): sorted.
    Sorted,
    /// `ACL GETUSER` / `ACL LIST`: single-command rules come in the server's hash order, so
    /// the words of each string are sorted.
    Rules,
    /// `ACL LOG`: every field but the age and the client's details.
    Log,
}

/// (connection, command, comparison). Connection "admin" is the default user.
const SCRIPT: &[(&str, &str, Cmp)] = &[
    ("admin", "ACL WHOAMI", Cmp::Same),
    ("admin", "ACL USERS", Cmp::Same),
    ("admin", "ACL LIST", Cmp::Rules),
    ("admin", "ACL SETUSER newuser", Cmp::Same),
    ("admin", "ACL GETUSER newuser", Cmp::Rules),
    ("admin", "ACL LIST", Cmp::Rules),
    // Keys, read/write patterns, channels, single commands.
    (
        "admin",
        "ACL SETUSER alice on >pw1 ~obj:* %R~ro:* %W~wo:* &chan:* +get +set +publish +acl|whoami",
        Cmp::Same,
    ),
    ("admin", "ACL GETUSER alice", Cmp::Rules),
    ("alice", "AUTH alice wrong", Cmp::Same),
    ("alice", "AUTH alice pw1", Cmp::Same),
    ("alice", "ACL WHOAMI", Cmp::Same),
    ("alice", "GET obj:1", Cmp::Same),
    ("alice", "SET obj:1 v", Cmp::Same),
    ("alice", "GET obj:1", Cmp::Same),
    ("alice", "GET other", Cmp::Same),
    ("alice", "GET ro:1", Cmp::Same),
    ("alice", "SET ro:1 v", Cmp::Same),
    ("alice", "SET wo:1 v", Cmp::Same),
    ("alice", "GET wo:1", Cmp::Same),
    ("alice", "PUBLISH chan:1 hi", Cmp::Same),
    ("alice", "PUBLISH other hi", Cmp::Same),
    ("alice", "PING", Cmp::Same),
    ("alice", "ACL USERS", Cmp::Same),
    ("alice", "MULTI", Cmp::Same),
    ("alice", "GET obj:1", Cmp::Same),
    ("alice", "PING", Cmp::Same),
    ("alice", "EXEC", Cmp::Same),
    ("admin", "ACL DRYRUN alice GET other", Cmp::Same),
    ("admin", "ACL DRYRUN alice SET obj:2 v", Cmp::Same),
    ("admin", "ACL DRYRUN alice PING", Cmp::Same),
    ("admin", "ACL DRYRUN alice PUBLISH nope x", Cmp::Same),
    ("admin", "ACL DRYRUN nobody GET x", Cmp::Same),
    ("admin", "ACL DRYRUN alice NOSUCH x", Cmp::Same),
    ("admin", "ACL DRYRUN alice GET", Cmp::Same),
    // Keys found by Redis' own key finders (MIGRATE, SORT), and calls whose specs overrun.
    (
        "admin",
        "ACL SETUSER kp on nopass +@all %R~read* %W~write* %RW~rw*",
        Cmp::Same,
    ),
    ("admin", "ACL DRYRUN kp MIGRATE h 1 read 0 500", Cmp::Same),
    ("admin", "ACL DRYRUN kp MIGRATE h 1 rw 0 500", Cmp::Same),
    ("admin", "ACL DRYRUN kp SORT read STORE write", Cmp::Same),
    ("admin", "ACL DRYRUN kp SORT read STORE read", Cmp::Same),
    ("admin", "ACL DRYRUN kp SORT write BY x STORE write", Cmp::Same),
    ("admin", "ACL DRYRUN kp EVAL x 1 read", Cmp::Same),
    ("admin", "ACL DRYRUN kp EVAL x 3 rw read", Cmp::Same),
    ("admin", "ACL DRYRUN kp ZUNIONSTORE read 1 rw", Cmp::Same),
    // Passwords: removal, hashes.
    ("admin", "ACL SETUSER alice <pw1 >pw2", Cmp::Same),
    ("alice", "AUTH alice pw1", Cmp::Same),
    ("alice", "AUTH alice pw2", Cmp::Same),
    ("admin", "ACL SETUSER alice <nope", Cmp::Same),
    (
        "admin",
        "ACL SETUSER eve on #2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881",
        Cmp::Same,
    ),
    ("eve", "AUTH eve x", Cmp::Same),
    ("admin", "ACL SETUSER eve #nothex", Cmp::Same),
    (
        "admin",
        "ACL SETUSER eve !2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881",
        Cmp::Same,
    ),
    ("admin", "ACL GETUSER eve", Cmp::Rules),
    // Categories, subcommands, first arguments.
    (
        "admin",
        "ACL SETUSER bob on nopass -@all +@string ~*",
        Cmp::Same,
    ),
    ("admin", "ACL GETUSER bob", Cmp::Rules),
    ("bob", "AUTH bob anything", Cmp::Same),
    ("bob", "SET a b", Cmp::Same),
    ("bob", "INCR n", Cmp::Same),
    ("bob", "LPUSH l x", Cmp::Same),
    ("admin", "ACL SETUSER bob +@all -@string", Cmp::Same),
    ("admin", "ACL GETUSER bob", Cmp::Rules),
    ("bob", "SET a b", Cmp::Same),
    ("bob", "LPUSH l x", Cmp::Same),
    (
        "admin",
        "ACL SETUSER carol on nopass allkeys allchannels +@all -client|kill",
        Cmp::Same,
    ),
    ("admin", "ACL GETUSER carol", Cmp::Rules),
    ("carol", "AUTH carol x", Cmp::Same),
    ("carol", "CLIENT GETNAME", Cmp::Same),
    ("carol", "CLIENT KILL ID 999999", Cmp::Same),
    ("admin", "ACL SETUSER carol -@all +select|0 +acl", Cmp::Same),
    ("admin", "ACL GETUSER carol", Cmp::Rules),
    ("carol", "SELECT 0", Cmp::Same),
    ("carol", "SELECT 1", Cmp::Same),
    ("carol", "GET a", Cmp::Same),
    // Selectors.
    (
        "admin",
        "ACL SETUSER dave on nopass ~a* +get (~b* +set)",
        Cmp::Same,
    ),
    ("admin", "ACL GETUSER dave", Cmp::Rules),
    ("admin", "ACL LIST", Cmp::Rules),
    ("dave", "AUTH dave x", Cmp::Same),
    ("dave", "GET a1", Cmp::Same),
    ("dave", "SET b1 v", Cmp::Same),
    ("dave", "GET b1", Cmp::Same),
    ("dave", "SET a1 v", Cmp::Same),
    ("admin", "ACL SETUSER dave clearselectors", Cmp::Same),
    ("dave", "SET b1 v", Cmp::Same),
    // Bad rules: Redis' errors, and nothing applied.
    ("admin", "ACL SETUSER x +nosuchcommand", Cmp::Same),
    ("admin", "ACL SETUSER x +@nosuchcategory", Cmp::Same),
    ("admin", "ACL SETUSER x allkeys ~a", Cmp::Same),
    ("admin", "ACL SETUSER x allchannels &a", Cmp::Same),
    ("admin", "ACL SETUSER x +config|get|appendonly", Cmp::Same),
    ("admin", "ACL SETUSER x +get|a|b", Cmp::Same),
    ("admin", "ACL SETUSER x bogus", Cmp::Same),
    ("admin", "ACL SETUSER x (~a +get", Cmp::Same),
    ("admin", "ACL GETUSER x", Cmp::Same),
    ("admin", "ACL DELUSER default", Cmp::Same),
    ("admin", "ACL CAT", Cmp::Same),
    ("admin", "ACL CAT string", Cmp::Sorted),
    ("admin", "ACL CAT nosuch", Cmp::Same),
    ("admin", "ACL CAT a b", Cmp::Same),
    ("admin", "ACL GENPASS 0", Cmp::Same),
    ("admin", "ACL NOSUCH", Cmp::Same),
    // The remaining rule kinds.
    (
        "admin",
        "ACL SETUSER frank on >a >b %RW~rw:* ~x allchannels allcommands skip-sanitize-payload",
        Cmp::Same,
    ),
    ("admin", "ACL GETUSER frank", Cmp::Rules),
    ("frank", "AUTH frank b", Cmp::Same),
    ("frank", "SET rw:1 v", Cmp::Same),
    ("frank", "SET y v", Cmp::Same),
    (
        "admin",
        "ACL SETUSER frank resetpass resetkeys resetchannels nocommands sanitize-payload",
        Cmp::Same,
    ),
    ("admin", "ACL GETUSER frank", Cmp::Rules),
    ("admin", "ACL LIST", Cmp::Rules),
    ("frank", "SET rw:1 v", Cmp::Same),
    ("eve", "AUTH frank b", Cmp::Same),
    ("admin", "ACL SETUSER frank nopass allcommands", Cmp::Same),
    ("frank", "PUBLISH c x", Cmp::Same),
    ("frank", "GET rw:1", Cmp::Same),
    // EXEC checks the queued commands again: what was revoked since queueing gets Redis'
    // -NOPERM in its place, the rest runs (one slot, and keys in several slots).
    (
        "admin",
        "ACL SETUSER tx on nopass ~t* ~{t}* &* +@all",
        Cmp::Same,
    ),
    ("tx", "AUTH tx x", Cmp::Same),
    ("tx", "MULTI", Cmp::Same),
    ("tx", "SET {t}a 1", Cmp::Same),
    ("tx", "GET {t}a", Cmp::Same),
    ("tx", "INCR {t}b", Cmp::Same),
    ("admin", "ACL SETUSER tx -set", Cmp::Same),
    ("tx", "EXEC", Cmp::Same),
    ("tx", "MULTI", Cmp::Same),
    ("tx", "INCR t1", Cmp::Same),
    ("tx", "GET t2", Cmp::Same),
    ("tx", "INCR t3", Cmp::Same),
    ("admin", "ACL SETUSER tx resetkeys ~t1 ~t2", Cmp::Same),
    ("tx", "EXEC", Cmp::Same),
    ("tx", "MULTI", Cmp::Same),
    ("tx", "GET t2", Cmp::Same),
    ("admin", "ACL SETUSER tx -get", Cmp::Same),
    ("tx", "EXEC", Cmp::Same),
    ("tx", "GET t1", Cmp::Same),
    ("admin", "ACL SETUSER tx +get", Cmp::Same),
    ("tx", "GET t1", Cmp::Same),
    // Disabled users cannot log in; reset.
    ("admin", "ACL SETUSER bob off", Cmp::Same),
    ("eve", "AUTH bob x", Cmp::Same),
    ("admin", "ACL SETUSER bob reset", Cmp::Same),
    ("admin", "ACL GETUSER bob", Cmp::Rules),
    ("admin", "ACL LOG", Cmp::Log),
    ("admin", "ACL LOG 2", Cmp::Log),
    ("admin", "ACL LOG RESET", Cmp::Same),
    ("admin", "ACL LOG", Cmp::Same),
    ("admin", "ACL DELUSER bob nobody", Cmp::Same),
    ("admin", "ACL USERS", Cmp::Same),
    // Scripts run with the user's rights: the node checks each redis.call (Redis' own
    // errors), and redis.acl_check_cmd answers for the user (the scripting unit's test).
    (
        "admin",
        "ACL SETUSER sc on >p ~x* &news +@scripting +set +get +publish +multi +exec",
        Cmp::Same,
    ),
    ("sc", "AUTH sc p", Cmp::Same),
    ("sc", "EVAL\treturn redis.acl_check_cmd('set','xx',1)\t1\txx", Cmp::Same),
    ("sc", "EVAL\treturn redis.acl_check_cmd('hset','xx','f',1)\t1\txx", Cmp::Same),
    ("sc", "EVAL\treturn redis.acl_check_cmd('set','yy',1)\t0", Cmp::Same),
    ("sc", "EVAL\treturn redis.acl_check_cmd('invalid-cmd','arg')\t0", Cmp::Same),
    ("sc", "EVAL\treturn redis.call('SET',KEYS[1],'v')\t1\txx", Cmp::Same),
    ("sc", "EVAL\treturn redis.call('GET',KEYS[1])\t1\txx", Cmp::Same),
    ("sc", "EVAL\treturn redis.call('HSET',KEYS[1],'f','v')\t1\txh", Cmp::Same),
    ("sc", "EVAL\treturn redis.call('SET','yy','v')\t0", Cmp::Same),
    ("sc", "EVAL\treturn redis.pcall('SET','yy','v')['err'] ~= nil\t0", Cmp::Same),
    ("sc", "EVAL\treturn redis.call('PUBLISH','other','m')\t0", Cmp::Same),
    ("sc", "EVAL\treturn redis.call('PUBLISH','news','m')\t0", Cmp::Same),
    ("sc", "EVAL\treturn redis.call('GET',KEYS[1])\t1\tyy", Cmp::Same),
    ("sc", "SCRIPT\tLOAD\treturn redis.call('GET',KEYS[1])", Cmp::Same),
    ("sc", "EVALSHA\t620cd258c2c9c88c9d10db67812ccf663d96bdc6\t1\txx", Cmp::Same),
    (
        "admin",
        "FUNCTION\tLOAD\tREPLACE\t#!lua name=acllib\nredis.register_function('aclf', function(keys, args) return redis.acl_check_cmd(args[1], keys[1], 'v') end)\nredis.register_function('setf', function(keys, args) return redis.call('SET', keys[1], 'f') end)",
        Cmp::Same,
    ),
    ("sc", "FCALL\taclf\t1\txx\tset", Cmp::Same),
    ("sc", "FCALL\taclf\t1\txx\thset", Cmp::Same),
    ("sc", "FCALL\tsetf\t1\txx", Cmp::Same),
    ("sc", "FCALL\tsetf\t1\tyy", Cmp::Same),
    ("admin", "ACL SETUSER sc -set", Cmp::Same),
    ("sc", "FCALL\tsetf\t1\txx", Cmp::Same),
    ("sc", "EVAL\treturn redis.call('SET',KEYS[1],'w')\t1\txx", Cmp::Same),
    ("sc", "MULTI", Cmp::Same),
    ("sc", "EVAL\treturn redis.call('GET',KEYS[1])\t1\txx", Cmp::Same),
    ("admin", "ACL SETUSER sc -get", Cmp::Same),
    ("sc", "EXEC", Cmp::Same),
    // Denials inside scripts are in ACL LOG, context lua, as the user's.
    ("admin", "ACL LOG", Cmp::Log),
    ("admin", "ACL LOG 3", Cmp::Log),
    ("admin", "ACL LOG RESET", Cmp::Same),
    ("admin", "ACL LOG", Cmp::Same),
    ("sc", "EVAL\treturn redis.call('INCR','xx')\t0", Cmp::Same),
    ("admin", "ACL LOG", Cmp::Log),
];

/// Runs one step: its words are separated by spaces, or by tabs when it has any (scripts).
fn run(con: &mut redis::Connection, line: &str) -> Result<Value, String> {
    let separator = if line.contains('\t') { '\t' } else { ' ' };
    let words: Vec<&str> = line.split(separator).collect();
    let mut cmd = redis::cmd(words[0]);
    for w in &words[1..] {
        cmd.arg(*w);
    }
    cmd.query::<Value>(con).map_err(|e| e.to_string())
}

fn text(value: &Value) -> String {
    match value {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

fn sorted_words(value: &Value) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.iter().map(sorted_words).collect()),
        Value::BulkString(_) => {
            let mut words: Vec<String> = text(value).split(' ').map(String::from).collect();
            words.sort();
            Value::BulkString(words.join(" ").into_bytes())
        }
        other => other.clone(),
    }
}

fn normalize(reply: Result<Value, String>, cmp: Cmp) -> Result<Value, String> {
    let value = reply?;
    Ok(match cmp {
        Cmp::Same => value,
        Cmp::Rules => sorted_words(&value),
        Cmp::Sorted => match value {
            Value::Array(mut items) => {
                items.sort_by_key(text);
                Value::Array(items)
            }
            other => other,
        },
        Cmp::Log => match value {
            Value::Array(entries) => Value::Array(
                entries
                    .into_iter()
                    .map(|entry| match entry {
                        Value::Array(fields) => Value::Array(
                            fields
                                .chunks(2)
                                .filter(|f| {
                                    !matches!(text(&f[0]).as_str(), "age-seconds" | "client-info")
                                })
                                .flat_map(|f| f.to_vec())
                                .collect(),
                        ),
                        other => other,
                    })
                    .collect(),
            ),
            other => other,
        },
    })
}

#[test]
fn acl_commands_and_checks_answer_as_a_standalone_redis_does() {
    let reference = Standalone::start();
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    let direct_addr = reference.node.addr();
    let proxy_addr = proxy.addr.to_string();
    let mut direct: HashMap<&str, redis::Connection> = HashMap::new();
    let mut proxied: HashMap<&str, redis::Connection> = HashMap::new();
    for (i, &(who, line, cmp)) in SCRIPT.iter().enumerate() {
        let d = direct.entry(who).or_insert_with(|| connect(&direct_addr));
        let want = normalize(run(d, line), cmp);
        let p = proxied.entry(who).or_insert_with(|| connect(&proxy_addr));
        let got = normalize(run(p, line), cmp);
        assert_eq!(
            got, want,
            "step {i}: {who}> {line}: the proxy differs from Redis"
        );
    }
}

#[test]
fn a_deleted_user_is_disconnected_and_denials_reach_no_node() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    let mut admin = proxy.conn();
    let ok: String = redis::cmd("ACL")
        .arg(&["SETUSER", "temp", "on", ">pw", "~*", "+get", "+eval"])
        .query(&mut admin)
        .expect("setuser");
    assert_eq!(ok, "OK");
    let mut temp = proxy.conn();
    let _: String = redis::cmd("AUTH")
        .arg(&["temp", "pw"])
        .query(&mut temp)
        .expect("auth");
    // A denied write never reaches a node: the key stays absent.
    let denied = redis::cmd("SET")
        .arg(&["k", "v"])
        .query::<String>(&mut temp);
    assert!(
        format!("{denied:?}").to_lowercase().contains("noperm"),
        "{denied:?}"
    );
    // Nor through a script: it runs on a node user with temp's rights, and the node says no.
    let script = redis::cmd("EVAL")
        .arg(&["return redis.call('SET', KEYS[1], 'v')", "1", "k"])
        .query::<String>(&mut temp);
    let text = format!("{script:?}");
    assert!(
        text.contains("The user executing the script can't run this command"),
        "{text}"
    );
    let value: Option<String> = redis::cmd("GET").arg("k").query(&mut admin).expect("get");
    assert_eq!(value, None);
    // Its `~*` covers every key but the proxies' own: no script reaches the shared users.
    let own = redis::cmd("EVAL")
        .arg(&["return redis.call('GET', 'slotproxy:acl')", "0"])
        .query::<Option<String>>(&mut temp);
    let text = format!("{own:?}");
    assert!(
        text.contains("can't access at least one of the keys"),
        "{text}"
    );
    let read: Option<String> = redis::cmd("EVAL")
        .arg(&["return redis.call('GET', KEYS[1])", "1", "k"])
        .query(&mut temp)
        .expect("a script within temp's rights runs");
    assert_eq!(read, None);
    // In a transaction with WATCH (run on the client's pinned connection): refused.
    let _: String = redis::cmd("ACL")
        .arg(&["SETUSER", "temp", "+watch", "+multi", "+exec"])
        .query(&mut admin)
        .expect("setuser");
    let _: String = redis::cmd("WATCH")
        .arg("k")
        .query(&mut temp)
        .expect("watch");
    let _: String = redis::cmd("MULTI").query(&mut temp).expect("multi");
    let queued = redis::cmd("EVAL")
        .arg(&["return 1", "1", "k"])
        .query::<String>(&mut temp);
    let text = format!("{queued:?}");
    assert!(text.contains("inside a transaction with WATCH"), "{text}");
    let aborted = redis::cmd("EXEC").query::<Value>(&mut temp);
    let aborted = format!("{aborted:?}").to_lowercase();
    assert!(aborted.contains("execabort"), "{aborted}");
    // A pattern that matches the proxies' keys cannot be narrowed: its scripts are refused.
    let _: String = redis::cmd("ACL")
        .arg(&["SETUSER", "near", "on", "nopass", "~slot*", "+eval"])
        .query(&mut admin)
        .expect("setuser");
    let mut near = proxy.conn();
    let _: String = redis::cmd("AUTH")
        .arg(&["near", "x"])
        .query(&mut near)
        .expect("auth");
    let refused = redis::cmd("EVAL")
        .arg(&["return 1", "0"])
        .query::<i64>(&mut near);
    let text = format!("{refused:?}");
    assert!(
        text.contains("key pattern '~slot*' matches the proxies' own keys"),
        "{text}"
    );
    let allowed: String = redis::cmd("EVAL")
        .arg(&["return redis.call('SET', KEYS[1], 'v')", "1", "k"])
        .query(&mut admin)
        .expect("the default user runs scripts");
    assert_eq!(allowed, "OK");
    let (_, metrics) = common::http_get(proxy.admin, "/metrics");
    assert!(
        metrics.contains("slotproxy_acl_denials_total{reason=\"command\"} 3"),
        "{metrics}"
    );
    let deleted: i64 = redis::cmd("ACL")
        .arg(&["DELUSER", "temp"])
        .query(&mut admin)
        .expect("deluser");
    assert_eq!(deleted, 1);
    common::wait_until(
        std::time::Duration::from_secs(5),
        "temp's connection to close",
        || {
            redis::cmd("GET")
                .arg("k")
                .query::<Option<String>>(&mut temp)
                .is_err()
        },
    );
}

fn acl(con: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<Value> {
    redis::cmd("ACL").arg(args).query(con)
}

fn logs_in(addr: &str, user: &str, password: &str) -> bool {
    let mut con = connect(addr);
    redis::cmd("AUTH")
        .arg(&[user, password])
        .query::<String>(&mut con)
        .is_ok()
}

#[test]
fn one_set_of_users_for_every_proxy_kept_in_the_cluster() {
    use std::time::Duration;
    let cluster = Cluster::start(3, 0);
    let a = TestProxy::start(&cluster);
    let b = TestProxy::start(&cluster);
    let (a_addr, b_addr) = (a.addr.to_string(), b.addr.to_string());
    acl(
        &mut a.conn(),
        &["SETUSER", "fleet", "on", ">pw", "~*", "+@all"],
    )
    .expect("setuser");
    common::wait_until(
        Duration::from_secs(3),
        "the user made on A to log in on B",
        || logs_in(&b_addr, "fleet", "pw"),
    );

    // Deleted through B: its connections on both proxies close.
    let mut on_a = connect(&a_addr);
    let mut on_b = connect(&b_addr);
    for con in [&mut on_a, &mut on_b] {
        let _: String = redis::cmd("AUTH")
            .arg(&["fleet", "pw"])
            .query(con)
            .expect("auth");
    }
    let deleted = acl(&mut b.conn(), &["DELUSER", "fleet"]).expect("deluser");
    assert_eq!(deleted, Value::Int(1));
    common::wait_until(
        Duration::from_secs(3),
        "fleet's connections to close",
        || {
            let a_closed = redis::cmd("PING").query::<String>(&mut on_a).is_err();
            let b_closed = redis::cmd("PING").query::<String>(&mut on_b).is_err();
            a_closed && b_closed
        },
    );
    assert!(!logs_in(&a_addr, "fleet", "pw"));

    // A restricted user's scripts run with its rights through both proxies (the same node
    // user), and the new rules count as soon as both proxies see them.
    acl(
        &mut a.conn(),
        &[
            "SETUSER", "scripter", "on", ">pw", "~{s}a*", "+eval", "+set",
        ],
    )
    .expect("setuser");
    let set_through = |addr: &str, key: &str| {
        let mut con = connect(addr);
        redis::cmd("AUTH")
            .arg(&["scripter", "pw"])
            .query::<String>(&mut con)
            .map_err(|e| e.to_string())?;
        redis::cmd("EVAL")
            .arg(&["return redis.call('SET', ARGV[1], 'v')", "1", "{s}a0", key])
            .query::<String>(&mut con)
            .map_err(|e| e.to_string())
    };
    common::wait_until(Duration::from_secs(3), "scripter on B", || {
        logs_in(&b_addr, "scripter", "pw")
    });
    for addr in [&a_addr, &b_addr] {
        assert_eq!(set_through(addr, "{s}a1"), Ok("OK".to_string()));
        let denied = set_through(addr, "{s}b1").expect_err("{s}b1 is not scripter's");
        assert!(
            denied.contains("can't access at least one of the keys"),
            "{denied}"
        );
    }
    acl(&mut b.conn(), &["SETUSER", "scripter", "~{s}b*"]).expect("setuser");
    common::wait_until(Duration::from_secs(3), "the new key pattern on A", || {
        set_through(&a_addr, "{s}b1").is_ok()
    });
    // The node user of the old rules leaves the nodes.
    let node_users = |node: &common::Node| {
        let users: Vec<String> = redis::cmd("ACL")
            .arg("USERS")
            .query(&mut connect(&node.addr()))
            .expect("acl users");
        users
            .into_iter()
            .filter(|u| u.starts_with("slotproxy-script:scripter:"))
            .count()
    };
    common::wait_until(
        Duration::from_secs(15),
        "one node user for scripter",
        || cluster.nodes.iter().all(|n| node_users(n) <= 1),
    );

    // Two proxies changing one user at once: every change takes effect.
    acl(&mut a.conn(), &["SETUSER", "race", "on", "nopass", "+get"]).expect("setuser");
    let writers: Vec<_> = [a_addr.clone(), b_addr.clone()]
        .into_iter()
        .enumerate()
        .map(|(w, addr)| {
            std::thread::spawn(move || {
                let mut con = connect(&addr);
                for i in 0..15 {
                    let pattern = format!("~w{w}:{i}");
                    acl(&mut con, &["SETUSER", "race", &pattern]).expect("concurrent setuser");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("writer");
    }
    let all_there = || {
        let user = acl(&mut b.conn(), &["GETUSER", "race"]).expect("getuser");
        let keys = match user {
            Value::Array(fields) => fields
                .chunks(2)
                .find(|f| text(&f[0]) == "keys")
                .map(|f| text(&f[1]))
                .unwrap_or_default(),
            other => panic!("{other:?}"),
        };
        (0..2).all(|w| (0..15).all(|i| keys.split(' ').any(|k| k == format!("~w{w}:{i}"))))
    };
    // B shows the last change made through A once it polled (within POLL).
    common::wait_until(
        Duration::from_secs(3),
        "every concurrent change on B",
        all_there,
    );

    // FLUSHALL wipes the key; the proxies write the users back. A restart keeps them.
    let _: String = redis::cmd("FLUSHALL")
        .query(&mut a.conn())
        .expect("flushall");
    common::wait_until(
        Duration::from_secs(3),
        "the users to be written back",
        || {
            cluster
                .nodes
                .iter()
                .any(|n| n.try_cmd::<i64>(&["EXISTS", "slotproxy:acl"]) == Some(1))
        },
    );
    // Clients see an empty Redis: the key is neither listed, counted nor reachable.
    let mut client = a.conn();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut client)
        .expect("keys");
    assert!(keys.is_empty(), "{keys:?}");
    let size: i64 = redis::cmd("DBSIZE").query(&mut client).expect("dbsize");
    assert_eq!(size, 0);
    let (_, scanned): (String, Vec<String>) = redis::cmd("SCAN")
        .arg("0")
        .query(&mut client)
        .expect("scan");
    assert!(scanned.is_empty(), "{scanned:?}");
    let random: Option<String> = redis::cmd("RANDOMKEY")
        .query(&mut client)
        .expect("randomkey");
    assert_eq!(random, None);
    for command in [&["HGETALL", "slotproxy:acl"][..], &["DEL", "slotproxy:acl"]] {
        let refused = redis::cmd(command[0])
            .arg(&command[1..])
            .query::<Value>(&mut client);
        assert!(
            format!("{refused:?}").contains("proxies' own state"),
            "{refused:?}"
        );
    }
    drop(a);
    drop(b);
    let c = TestProxy::start(&cluster);
    let c_addr = c.addr.to_string();
    common::wait_until(
        Duration::from_secs(3),
        "a restarted proxy to know the users",
        || logs_in(&c_addr, "race", "x"),
    );
}

#[test]
fn a_subscriber_that_loses_its_channel_is_closed() {
    use std::io::{Read, Write};
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    let mut admin = proxy.conn();
    acl(
        &mut admin,
        &[
            "SETUSER",
            "ps",
            "on",
            ">pw",
            "resetchannels",
            "&foo:1",
            "+@all",
        ],
    )
    .expect("setuser");
    let mut sub = std::net::TcpStream::connect(proxy.addr).expect("connect");
    sub.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    sub.write_all(b"AUTH ps pw\r\nCLIENT SETNAME deathrow\r\nSUBSCRIBE foo:1\r\n")
        .expect("write");
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    while !String::from_utf8_lossy(&seen).contains("foo:1") {
        let n = sub.read(&mut buf).expect("read");
        assert!(n > 0, "closed early");
        seen.extend_from_slice(&buf[..n]);
    }
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut admin)
        .expect("list");
    assert!(list.contains("deathrow"), "{list}");
    acl(&mut admin, &["SETUSER", "ps", "resetchannels"]).expect("revoke");
    // Gone at once, as in Redis (the reply to SETUSER comes after the close).
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut admin)
        .expect("list");
    assert!(!list.contains("deathrow"), "{list}");
    let n = sub.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the subscriber's connection is closed");
}
