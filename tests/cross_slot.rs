//! Commands, transactions and scripts with keys in several hash slots, compared byte for
//! byte with one standalone redis-server running the same sequence: the replies (RESP2 and
//! RESP3) and the data left behind (values and TTLs), with the keys in different slots of one
//! master and on different masters.

mod common;
use common::{Cluster, Standalone, TestProxy, Wire};
use slotproxy::cluster::key_slot;
use std::collections::BTreeSet;
use std::time::Duration;

/// Five keys in five different slots, all owned by the master on `port`.
fn keys_on(cluster: &Cluster, port: u16, prefix: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut slots = BTreeSet::new();
    let mut n = 0;
    while keys.len() < 5 {
        let key = cluster.key_on(port, &format!("{prefix}{n}"));
        n += 1;
        if slots.insert(key_slot(key.as_bytes())) && !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

/// Five keys spread over the masters (A, B, C on three different ones).
fn keys_across(cluster: &Cluster, prefix: &str) -> Vec<String> {
    let ports: Vec<u16> = cluster.nodes.iter().take(3).map(|n| n.port).collect();
    (0..5)
        .map(|i| cluster.key_on(ports[i % 3], &format!("{prefix}{i}")))
        .collect()
}

/// A command with `A`…`E` standing for the keys; `~` stands for a space inside an argument.
fn expand(line: &str, keys: &[String]) -> Vec<String> {
    line.split(' ')
        .map(|word| match word {
            "A" | "B" | "C" | "D" | "E" => keys[(word.as_bytes()[0] - b'A') as usize].clone(),
            other => other.replace('~', " "),
        })
        .collect()
}

/// The data under `key`, the same way for both servers (sets sorted; PTTL in whole seconds).
fn state(wire: &mut Wire, key: &str) -> String {
    let kind = String::from_utf8_lossy(&wire.call(&["TYPE", key])).into_owned();
    let value = match kind.trim() {
        "+string" => wire.call(&["GET", key]),
        "+list" => wire.call(&["LRANGE", key, "0", "-1"]),
        "+set" => {
            let members = wire.call(&["SMEMBERS", key]);
            let text = String::from_utf8_lossy(&members).into_owned();
            let mut lines: Vec<&str> = text.lines().skip(1).collect();
            lines.sort_unstable();
            lines.join("|").into_bytes()
        }
        "+zset" => wire.call(&["ZRANGE", key, "0", "-1", "WITHSCORES"]),
        "+hash" => wire.call(&["HGETALL", key]),
        "+stream" => wire.call(&["XRANGE", key, "-", "+"]),
        _ => Vec::new(),
    };
    let pttl = String::from_utf8_lossy(&wire.call(&["PTTL", key]))
        .trim()
        .trim_start_matches(':')
        .parse::<i64>()
        .unwrap_or(-3);
    let ttl = match pttl {
        n if n < 0 => n.to_string(),
        n => format!("~{}s", (n + 500) / 1000),
    };
    format!(
        "{} {} ttl={ttl}",
        kind.trim(),
        String::from_utf8_lossy(&value)
    )
}

/// Runs `script` (with `keys`) through the proxy and on the reference server, in `resp3` or
/// not, and asserts every reply and the final data are the same.
fn compare(
    proxy: &TestProxy,
    reference: &Standalone,
    keys: &[String],
    script: &[&str],
    resp3: bool,
) {
    let mut ours = Wire::connect(&proxy.addr.to_string(), resp3);
    let mut theirs = Wire::connect(&reference.node.addr(), resp3);
    ours.call(&["FLUSHALL"]);
    theirs.call(&["FLUSHALL"]);
    for line in script {
        let args = expand(line, keys);
        let (a, b) = (ours.call(&args), theirs.call(&args));
        assert_eq!(
            String::from_utf8_lossy(&a),
            String::from_utf8_lossy(&b),
            "reply to {args:?} (resp3: {resp3}, keys {keys:?})"
        );
    }
    for key in keys {
        assert_eq!(
            state(&mut ours, key),
            state(&mut theirs, key),
            "data of {key} after {script:?} (resp3: {resp3})"
        );
    }
    let leftovers = ours.call(&["KEYS", "*slotproxy:tmp*"]);
    assert_eq!(leftovers, b"*0\r\n", "temporary keys left behind");
}

const SETS: &[&str] = &[
    "SADD A 1 2 3",
    "SADD B 3 4",
    "SADD C 9",
    "SINTER A B",
    "SUNION A B C",
    "SDIFF A B",
    "SINTERSTORE D A B",
    "SUNIONSTORE D A B C",
    "SDIFFSTORE E A B",
    "SINTERCARD 2 A B",
    "SINTERCARD 3 A B C LIMIT 1",
    "SMOVE A B 1",
    "SMOVE A B 99",
    "SMOVE C E 9",
    "SINTER A D",
    "SUNIONSTORE D D A",
    "SET C str",
    "SINTER A C",
    "SMOVE C A 1",
    "SINTERSTORE A nosuch-but-same B",
];

const SORTED_SETS: &[&str] = &[
    "ZADD A 1 a 2 b 3 x",
    "ZADD B 3 b 4 c",
    "ZUNION 2 A B WITHSCORES",
    "ZINTER 2 A B WEIGHTS 1 2 WITHSCORES",
    "ZDIFF 2 A B WITHSCORES",
    "ZUNIONSTORE D 2 A B AGGREGATE MAX",
    "ZINTERSTORE E 2 A B",
    "ZDIFFSTORE C 2 A B",
    "ZINTERCARD 2 A B",
    "ZRANGESTORE E A 0 1",
    "ZMPOP 2 nosuch A MIN COUNT 2",
    "BZMPOP 1 2 C B MAX",
    "BZPOPMIN C B 1",
    "BZPOPMAX E A 1",
    "ZUNIONSTORE D 0 A",
    "SET C str",
    "ZUNION 2 A C",
];

const LISTS: &[&str] = &[
    "RPUSH A 1 2 3 4",
    "LMOVE A B LEFT RIGHT",
    "RPOPLPUSH A B",
    "BLMOVE A B RIGHT LEFT 1",
    "BRPOPLPUSH A C 1",
    "LMPOP 2 D A LEFT COUNT 5",
    "BLMPOP 1 2 D B RIGHT",
    "BLPOP D B C 1",
    "BRPOP D C 1",
    "LMOVE A B LEFT LEFT",
    "LMPOP 2 A D LEFT",
    "SET D str",
    "LMOVE B D LEFT LEFT",
    "BLPOP D B 1",
];

const KEYS: &[&str] = &[
    "SET A v1 EX 100",
    "RENAME A B",
    "TTL B",
    "RENAMENX B C",
    "SET A w",
    "RENAMENX A C",
    "RENAME nosuch-A E",
    "COPY C D",
    "COPY C D",
    "COPY A D REPLACE",
    "MSETNX A 1 E 2",
    "MSETNX E 1 nosuch-E 2",
    "MSET A 1 B 2 C 3",
    "MGET A B C D E",
    "EXISTS A B C D E",
    "TOUCH A E",
    "DEL A B",
    "UNLINK C D E",
    "SET A x PX 60000",
    "RPUSH B l",
    "RENAME A B",
    "TTL B",
];

const STRINGS_AND_MORE: &[&str] = &[
    "PFADD A a b c",
    "PFADD B c d",
    "PFCOUNT A B",
    "PFMERGE C A B",
    "PFCOUNT C",
    "SET D abc",
    "SET E ABC",
    "BITOP AND A D E",
    "BITOP OR B D E A",
    "BITOP XOR C D E",
    "BITOP NOT C D",
    "SET A ohmytext",
    "SET B mynewtext",
    "LCS A B",
    "LCS A B LEN",
    "LCS A B IDX MINMATCHLEN 2 WITHMATCHLEN",
    "DEL C",
    "RPUSH C 3 1 2",
    "SORT C STORE D",
    "SORT C DESC LIMIT 0 2 STORE E",
    "GEOADD A 13.361389 38.115556 Palermo 15.087269 37.502669 Catania",
    "GEOSEARCHSTORE B A FROMLONLAT 15 37 BYRADIUS 200 km ASC",
    "GEOSEARCHSTORE C A FROMMEMBER Palermo BYBOX 400 400 km ASC COUNT 1 STOREDIST",
    "GEORADIUS A 15 37 200 km STORE D",
    "GEORADIUSBYMEMBER A Palermo 200 km STOREDIST E",
];

const STREAMS: &[&str] = &[
    "XADD A 1-1 f v",
    "XADD B 1-1 g w",
    "XADD B 2-1 h x",
    "XREAD STREAMS A B 0 0",
    "XREAD COUNT 1 STREAMS B A 0-0 1-1",
    "XREAD STREAMS A B $ $",
    "XGROUP CREATE A g 0",
    "XREADGROUP GROUP g c STREAMS A B > >",
    "XGROUP CREATE B g 0",
    "XREADGROUP GROUP g c COUNT 1 STREAMS A B > >",
    "XREADGROUP GROUP g c STREAMS A B 0 0",
    "XREAD BLOCK 100 STREAMS A B $ $",
    "SET C str",
    "XREAD STREAMS A C 0 0",
];

const TRANSACTIONS: &[&str] = &[
    "MULTI",
    "SET A 1",
    "INCR A",
    "LPUSH A x",
    "SADD B 7",
    "GET C",
    "MGET A C nosuch",
    "SUNIONSTORE D B E",
    "HSET E f v",
    "EXPIRE B 100",
    "BLPOP C D 1",
    "EXEC",
    "MULTI",
    "EXEC",
    "MULTI",
    "RPUSH C x",
    "BLMOVE C D LEFT RIGHT 0",
    "RENAME D E",
    "EXEC",
    "MULTI",
    "SET A 1",
    "NOSUCHCOMMAND",
    "EXEC",
    "GET A",
];

/// Scripts: only where every key is on one master.
const SCRIPTS: &[&str] = &[
    "EVAL return~{KEYS[1],KEYS[2],redis.call('INCR',KEYS[1]),redis.call('SET',KEYS[2],ARGV[1])} 2 A B val",
    "EVAL return~redis.call('GET',KEYS[2])..ARGV[1]..ARGV[2] 2 A B x y",
    "SCRIPT LOAD return~redis.call('SADD',KEYS[1],ARGV[1])+redis.call('SADD',KEYS[2],ARGV[1])",
    "EVALSHA 91a8ad8f28bb5ccb542bf7d87fb834a7aa0cfb0e 2 C D m",
    "EVAL_RO return~redis.call('SCARD',KEYS[1])+redis.call('SCARD',KEYS[2]) 2 C D",
    "EVALSHA_RO 91a8ad8f28bb5ccb542bf7d87fb834a7aa0cfb0e 2 C D m",
    "EVAL #!lua~flags=no-writes\nreturn~redis.call('GET',KEYS[1]) 2 A B",
    "EVAL return~redis.call('GETX',KEYS[1]) 2 A B",
    "EVAL return~redis.pcall('LPUSH',KEYS[1],'x') 2 B A",
    "EVALSHA ffffffffffffffffffffffffffffffffffffffff 2 A B",
];

fn setup() -> (Cluster, Standalone, TestProxy) {
    let cluster = Cluster::start(3, 0);
    let reference = Standalone::start();
    let proxy = TestProxy::start(&cluster);
    (cluster, reference, proxy)
}

fn every_protocol(proxy: &TestProxy, reference: &Standalone, keys: &[String], script: &[&str]) {
    compare(proxy, reference, keys, script, false);
    compare(proxy, reference, keys, script, true);
}

#[test]
fn keys_in_several_slots_of_one_master_behave_as_on_one_redis() {
    let (cluster, reference, proxy) = setup();
    let keys = keys_on(&cluster, cluster.nodes[1].port, "one");
    for script in [
        SETS,
        SORTED_SETS,
        LISTS,
        KEYS,
        STRINGS_AND_MORE,
        STREAMS,
        TRANSACTIONS,
        SCRIPTS,
    ] {
        every_protocol(&proxy, &reference, &keys, script);
    }
    let same_node = proxy.metric("slotproxy_cross_slot_total{mode=\"same_node\"}");
    assert!(same_node > 100.0, "{same_node}");
}

#[test]
fn keys_on_several_masters_behave_as_on_one_redis() {
    let (cluster, reference, proxy) = setup();
    let keys = keys_across(&cluster, "many");
    for script in [
        SETS,
        SORTED_SETS,
        LISTS,
        KEYS,
        STRINGS_AND_MORE,
        STREAMS,
        TRANSACTIONS,
    ] {
        every_protocol(&proxy, &reference, &keys, script);
    }
    let split = proxy.metric("slotproxy_cross_slot_total{mode=\"split\"}");
    assert!(split > 50.0, "{split}");
}

#[test]
fn scripts_and_watched_commands_spanning_masters_are_refused_whole() {
    let (cluster, _reference, proxy) = setup();
    let keys = keys_across(&cluster, "refused");
    let mut wire = Wire::connect(&proxy.addr.to_string(), false);
    let error = wire.call(&[
        "EVAL",
        "return redis.call('SET', KEYS[1], 'x')",
        "2",
        &keys[0],
        &keys[1],
    ]);
    let error = String::from_utf8_lossy(&error).into_owned();
    assert!(
        error.starts_with("-ERR slotproxy: the keys of this script live on different masters"),
        "{error}"
    );
    assert_eq!(wire.call(&["EXISTS", &keys[0]]), b":0\r\n");
    wire.call(&["SADD", &keys[2], "m"]);
    assert_eq!(wire.call(&["WATCH", &keys[0]]), b"+OK\r\n");
    assert_eq!(wire.call(&["MULTI"]), b"+OK\r\n");
    assert_eq!(wire.call(&["SET", &keys[0], "v"]), b"+QUEUED\r\n");
    assert_eq!(
        wire.call(&["SUNIONSTORE", &keys[1], &keys[2]]),
        b"+QUEUED\r\n"
    );
    let refused = String::from_utf8_lossy(&wire.call(&["EXEC"])).into_owned();
    assert!(
        refused.starts_with(
            "-EXECABORT slotproxy: this transaction WATCHes keys and has a command whose keys are on more than one master"
        ),
        "{refused}"
    );
    assert_eq!(wire.call(&["EXISTS", &keys[0], &keys[1]]), b":0\r\n");
    // FCALL over keys in several slots (of one master: keys 0 and 3), alone and in MULTI.
    let library = "#!lua name=xs\nredis.register_function('setget', function(keys, args) redis.call('SET', keys[1], 'f'); return redis.call('GET', keys[2]) end)";
    assert_eq!(wire.call(&["FUNCTION", "LOAD", library]), b"$2\r\nxs\r\n");
    let fcall = String::from_utf8_lossy(&wire.call(&["FCALL", "setget", "2", &keys[0], &keys[3]]))
        .into_owned();
    assert!(
        fcall.starts_with("-CROSSSLOT Keys in request don't hash to the same slot (slotproxy: a function cannot run over keys in several slots"),
        "{fcall}"
    );
    assert_eq!(wire.call(&["MULTI"]), b"+OK\r\n");
    assert_eq!(wire.call(&["SET", &keys[3], "v"]), b"+QUEUED\r\n");
    assert_eq!(
        wire.call(&["FCALL", "setget", "1", &keys[0], &keys[0]]),
        b"+QUEUED\r\n"
    );
    let exec = String::from_utf8_lossy(&wire.call(&["EXEC"])).into_owned();
    assert!(
        exec.starts_with("-EXECABORT slotproxy: FCALL cannot be part of a transaction whose keys are in several slots"),
        "{exec}"
    );
    assert_eq!(wire.call(&["EXISTS", &keys[0], &keys[3]]), b":0\r\n");
    assert_eq!(wire.call(&["FUNCTION", "DELETE", "xs"]), b"+OK\r\n");
}

/// A watched transaction that writes on several masters (a job queue's "save the job, push
/// its id, add it to a registry" under a WATCH): it commits everywhere when the watched keys
/// are untouched, and runs nothing anywhere when one was touched, wherever it lives.
#[test]
fn watched_writes_on_several_masters_run_all_or_nothing_on_a_touch() {
    let (cluster, _reference, proxy) = setup();
    let keys = keys_across(&cluster, "ww");
    let addr = proxy.addr.to_string();
    for resp3 in [false, true] {
        let mut wire = Wire::connect(&addr, resp3);
        let mut other = Wire::connect(&addr, false);
        let nil: &[u8] = if resp3 { b"_\r\n" } else { b"*-1\r\n" };
        // Watches on one master, then on two; writes on all three masters.
        for watched in [vec![&keys[0]], vec![&keys[0], &keys[1]]] {
            let begin = |wire: &mut Wire, value: &str| {
                for key in &watched {
                    assert_eq!(wire.call(&["WATCH", key]), b"+OK\r\n");
                }
                assert_eq!(wire.call(&["MULTI"]), b"+OK\r\n");
                for key in &keys[..3] {
                    assert_eq!(wire.call(&["RPUSH", key, value]), b"+QUEUED\r\n");
                }
                assert_eq!(wire.call(&["PING"]), b"+QUEUED\r\n");
            };
            begin(&mut wire, "a");
            let committed = b"*4\r\n:1\r\n:1\r\n:1\r\n+PONG\r\n";
            assert_eq!(wire.call(&["EXEC"]), committed, "watching {watched:?}");
            for touched in &watched {
                begin(&mut wire, "b");
                other.call(&["SET", touched, "x"]);
                assert_eq!(wire.call(&["EXEC"]), nil, "after a touch of {touched}");
                for key in &keys[..3] {
                    let left = wire.call(&["LRANGE", key, "0", "-1"]);
                    assert!(
                        left == b"*1\r\n$1\r\na\r\n" || left.starts_with(b"-WRONGTYPE"),
                        "{key}: {}",
                        String::from_utf8_lossy(&left)
                    );
                }
                other.call(&["DEL", touched]);
                other.call(&["RPUSH", touched, "a"]);
            }
            wire.call(&["FLUSHALL"]);
        }
        // Commands that are the sum of their keys run as a part per master.
        for touch in [false, true] {
            assert_eq!(wire.call(&["WATCH", &keys[0]]), b"+OK\r\n");
            assert_eq!(wire.call(&["MULTI"]), b"+OK\r\n");
            let mset = ["MSET", &keys[0], "1", &keys[1], "2", &keys[2], "3"];
            assert_eq!(wire.call(&mset), b"+QUEUED\r\n");
            let exists = ["EXISTS", &keys[0], &keys[1], &keys[2], &keys[1]];
            assert_eq!(wire.call(&exists), b"+QUEUED\r\n");
            let del = ["DEL", &keys[0], &keys[1], &keys[2], &keys[3]];
            assert_eq!(wire.call(&del), b"+QUEUED\r\n");
            if touch {
                other.call(&["SET", &keys[0], "x"]);
                assert_eq!(wire.call(&["EXEC"]), nil);
                assert_eq!(wire.call(&["EXISTS", &keys[1], &keys[2]]), b":0\r\n");
            } else {
                assert_eq!(wire.call(&["EXEC"]), b"*3\r\n+OK\r\n:4\r\n:3\r\n");
            }
        }
        wire.call(&["FLUSHALL"]);
    }
}

/// The optimistic-locking pattern with keys on several masters: watch, read, write on one
/// master. EXEC commits when nothing watched changed, answers nil when a watched key on any
/// master was touched, and runs nothing then.
#[test]
fn watch_on_several_masters_with_writes_on_one() {
    let (cluster, _reference, proxy) = setup();
    let keys = keys_across(&cluster, "w");
    let addr = proxy.addr.to_string();
    for resp3 in [false, true] {
        let mut wire = Wire::connect(&addr, resp3);
        let mut other = Wire::connect(&addr, false);
        wire.call(&["SET", &keys[0], "1"]);
        wire.call(&["SET", &keys[1], "2"]);
        let begin = |wire: &mut Wire, value: &str| {
            assert_eq!(wire.call(&["WATCH", &keys[0], &keys[1]]), b"+OK\r\n");
            assert_eq!(wire.call(&["WATCH", &keys[2]]), b"+OK\r\n");
            wire.call(&["GET", &keys[0]]);
            assert_eq!(wire.call(&["MULTI"]), b"+OK\r\n");
            assert_eq!(wire.call(&["SET", &keys[2], value]), b"+QUEUED\r\n");
        };
        begin(&mut wire, "first");
        assert_eq!(wire.call(&["EXEC"]), b"*1\r\n+OK\r\n");
        let nil: &[u8] = if resp3 { b"_\r\n" } else { b"*-1\r\n" };
        let touches = [
            vec!["SET", keys[0].as_str(), "x"],
            vec!["INCR", keys[1].as_str()],
            vec!["SET", keys[2].as_str(), "y"],
        ];
        for (n, touch) in touches.iter().enumerate() {
            let value = format!("v{n}");
            begin(&mut wire, &value);
            other.call(touch);
            assert_eq!(wire.call(&["EXEC"]), nil, "after {touch:?}");
            let now = wire.call(&["GET", &keys[2]]);
            assert_ne!(now, format!("$2\r\n{value}\r\n").into_bytes());
        }
        // An empty transaction over watches on several masters.
        assert_eq!(wire.call(&["WATCH", &keys[0], &keys[1]]), b"+OK\r\n");
        assert_eq!(wire.call(&["MULTI"]), b"+OK\r\n");
        assert_eq!(wire.call(&["EXEC"]), b"*0\r\n");
        wire.call(&["FLUSHALL"]);
    }
}

#[test]
fn refuse_mode_keeps_crossslot_across_masters_but_serves_one_master() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start_with(&cluster, |c| {
        c.compat.cross_node = slotproxy::config::CrossNode::Refuse;
    });
    let across = keys_across(&cluster, "r");
    let one = keys_on(&cluster, cluster.nodes[0].port, "o");
    let mut wire = Wire::connect(&proxy.addr.to_string(), false);
    let crossslot = b"-CROSSSLOT Keys in request don't hash to the same slot\r\n".to_vec();
    assert_eq!(
        wire.call(&["SUNIONSTORE", &across[0], &across[1]]),
        crossslot
    );
    assert_eq!(wire.call(&["RENAME", &across[0], &across[1]]), crossslot);
    assert_eq!(
        wire.call(&["BLPOP", &across[0], &across[1], "0"]),
        crossslot
    );
    assert_eq!(wire.call(&["MULTI"]), b"+OK\r\n");
    assert_eq!(wire.call(&["SET", &across[0], "1"]), b"+QUEUED\r\n");
    assert_eq!(wire.call(&["SET", &across[1], "1"]), crossslot);
    assert_eq!(
        wire.call(&["EXEC"]),
        b"-EXECABORT Transaction discarded because of previous errors.\r\n"
    );
    assert_eq!(wire.call(&["SADD", &one[0], "1"]), b":1\r\n");
    assert_eq!(
        wire.call(&["SUNIONSTORE", &one[1], &one[0], &one[2]]),
        b":1\r\n"
    );
    assert_eq!(wire.call(&["MULTI"]), b"+OK\r\n");
    assert_eq!(wire.call(&["INCR", &one[3]]), b"+QUEUED\r\n");
    assert_eq!(wire.call(&["INCR", &one[4]]), b"+QUEUED\r\n");
    assert_eq!(wire.call(&["EXEC"]), b"*2\r\n:1\r\n:1\r\n");
    assert!(proxy.metric("slotproxy_cross_slot_total{mode=\"refused\"}") >= 3.0);
}

#[test]
fn a_key_over_the_copy_bound_gets_an_error_and_nothing_changes() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start_with(&cluster, |c| c.compat.max_copy_bytes = 1000);
    for keys in [
        keys_on(&cluster, cluster.nodes[2].port, "big"),
        keys_across(&cluster, "bigx"),
    ] {
        let mut wire = Wire::connect(&proxy.addr.to_string(), false);
        // Not compressible: DUMP compresses repeated bytes.
        let mut x = 12345u64;
        let big: String = (0..5000)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                char::from(b'a' + ((x >> 33) % 26) as u8)
            })
            .collect();
        wire.call(&["SET", &keys[0], &big]);
        wire.call(&["SET", &keys[1], "small"]);
        let reply =
            String::from_utf8_lossy(&wire.call(&["RENAME", &keys[1], &keys[0]])).into_owned();
        assert!(
            reply.contains("over compat.max_copy_bytes (1000)"),
            "{reply}"
        );
        assert_eq!(wire.call(&["STRLEN", &keys[0]]), b":5000\r\n");
        assert_eq!(wire.call(&["GET", &keys[1]]), b"$5\r\nsmall\r\n");
    }
}

#[test]
fn blocking_pops_across_slots_wake_in_key_order_and_time_out() {
    let (cluster, _reference, proxy) = setup();
    for keys in [
        keys_on(&cluster, cluster.nodes[0].port, "bw"),
        keys_across(&cluster, "bx"),
    ] {
        let addr = proxy.addr.to_string();
        let waiter = {
            let (addr, keys) = (addr.clone(), keys.clone());
            std::thread::spawn(move || {
                let mut wire = Wire::connect(&addr, false);
                let started = std::time::Instant::now();
                let reply = wire.call(&["BLPOP", &keys[0], &keys[1], &keys[2], "5"]);
                (reply, started.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        let mut wire = Wire::connect(&addr, false);
        // Both arrive before the waiter's next try: the first key in its order wins.
        wire.call(&["MULTI"]);
        wire.call(&["RPUSH", &keys[2], "later"]);
        wire.call(&["RPUSH", &keys[1], "first"]);
        wire.call(&["EXEC"]);
        let (reply, waited) = waiter.join().expect("waiter");
        let expected = format!("*2\r\n${}\r\n{}\r\n$5\r\nfirst\r\n", keys[1].len(), keys[1]);
        assert_eq!(String::from_utf8_lossy(&reply), expected);
        assert!(waited < Duration::from_secs(2), "{waited:?}");
        assert_eq!(wire.call(&["LLEN", &keys[2]]), b":1\r\n");
        let started = std::time::Instant::now();
        assert_eq!(wire.call(&["BRPOP", &keys[3], &keys[4], "0.3"]), b"*-1\r\n");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(290) && waited < Duration::from_secs(2),
            "{waited:?}"
        );
        // A move between slots blocks until its source has something.
        let mover = {
            let (addr, keys) = (addr.clone(), keys.clone());
            std::thread::spawn(move || {
                Wire::connect(&addr, true)
                    .call(&["BLMOVE", &keys[3], &keys[4], "LEFT", "RIGHT", "0"])
            })
        };
        std::thread::sleep(Duration::from_millis(200));
        wire.call(&["LPUSH", &keys[3], "moved"]);
        assert_eq!(mover.join().expect("mover"), b"$5\r\nmoved\r\n");
        assert_eq!(
            wire.call(&["LRANGE", &keys[4], "0", "-1"]),
            b"*1\r\n$5\r\nmoved\r\n"
        );
        wire.call(&["FLUSHALL"]);
    }
}

#[test]
fn every_multi_key_command_of_the_table_is_covered() {
    let (cluster, _reference, proxy) = setup();
    let _ = &cluster;
    let tested: BTreeSet<String> = [
        SETS,
        SORTED_SETS,
        LISTS,
        KEYS,
        STRINGS_AND_MORE,
        STREAMS,
        TRANSACTIONS,
        SCRIPTS,
    ]
    .iter()
    .flat_map(|s| s.iter())
    .map(|line| line.split(' ').next().unwrap_or("").to_lowercase())
    .collect();
    // Multi-key commands these tests do not run, and why.
    let elsewhere = [
        ("migrate", "refused: topology belongs to the proxy"),
        ("ssubscribe", "shard channels, not keys: tests/pubsub.rs"),
        ("sunsubscribe", "shard channels, not keys: tests/pubsub.rs"),
        (
            "fcall",
            "functions: declared keys must share a slot (README)",
        ),
        (
            "fcall_ro",
            "functions: declared keys must share a slot (README)",
        ),
        ("sort_ro", "routed like SORT; BY/GET patterns are not keys"),
        ("georadius_ro", "read-only: one key"),
        ("georadiusbymember_ro", "read-only: one key"),
        ("watch", "tests/transactions.rs and the WATCH tests here"),
        ("object", "one key"),
        ("memory", "one key"),
    ];
    let mut con = proxy.conn();
    let table: redis::Value = redis::cmd("COMMAND").query(&mut con).expect("COMMAND");
    let redis::Value::Array(entries) = table else {
        panic!("COMMAND: {table:?}")
    };
    let mut missing = Vec::new();
    for entry in entries {
        let redis::Value::Array(fields) = entry else {
            continue;
        };
        let name = match fields.first() {
            Some(redis::Value::BulkString(n)) => String::from_utf8_lossy(n).to_lowercase(),
            _ => continue,
        };
        let int = |i: usize| match fields.get(i) {
            Some(redis::Value::Int(n)) => *n,
            _ => 0,
        };
        let movable = format!("{:?}", fields.get(2)).contains("movablekeys");
        let (first, last) = (int(3), int(4));
        let multi = movable || (first > 0 && (last < 0 || last > first));
        if multi && !tested.contains(&name) && !elsewhere.iter().any(|(n, _)| *n == name) {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "multi-key commands not compared: {missing:?}"
    );
}
