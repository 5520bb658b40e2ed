//! Pub/Sub through the proxy: messages published on any node reach subscribers, shard
//! channels follow their slot, subscribed-mode rules and reply bytes match a single Redis,
//! and a subscriber that stops reading is cut off at the output limit.

mod common;
use common::{query as cmd, Cluster, Standalone, TestProxy};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn next_message(pubsub: &mut redis::PubSub<'_>) -> (String, String) {
    let message = pubsub.get_message().expect("a message");
    let channel = message.get_channel_name().to_string();
    let payload: String = message.get_payload().expect("payload");
    (channel, payload)
}

#[test]
fn subscribers_get_messages_published_on_any_node() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    let mut sub_con = proxy.conn();
    let mut pubsub = sub_con.as_pubsub();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    pubsub.subscribe("news").expect("SUBSCRIBE");
    pubsub.psubscribe("sport.*").expect("PSUBSCRIBE");

    // Published straight on each node: the cluster bus brings it to the proxy's subscriber.
    for (i, node) in cluster.nodes.iter().enumerate() {
        let receivers: i64 = node.cmd(&["PUBLISH", "news", &format!("from-node-{i}")]);
        let _ = receivers;
        assert_eq!(
            next_message(&mut pubsub),
            ("news".to_string(), format!("from-node-{i}"))
        );
    }
    // And through the proxy from another client.
    let mut publisher = proxy.conn();
    // PUBLISH through the proxy counts the receivers exactly, as a single Redis does.
    let receivers: i64 = cmd(&mut publisher, &["PUBLISH", "sport.tennis", "match point"]);
    assert_eq!(receivers, 1);
    assert_eq!(
        next_message(&mut pubsub),
        ("sport.tennis".to_string(), "match point".to_string())
    );
    // Introspection sums what every node knows.
    let channels: Vec<String> = cmd(&mut publisher, &["PUBSUB", "CHANNELS"]);
    assert_eq!(channels, vec!["news".to_string()]);
    let numsub: (String, i64, String, i64) =
        cmd(&mut publisher, &["PUBSUB", "NUMSUB", "news", "nobody"]);
    assert_eq!(numsub, ("news".into(), 1, "nobody".into(), 0));
    let numpat: i64 = cmd(&mut publisher, &["PUBSUB", "NUMPAT"]);
    assert_eq!(numpat, 1);

    // After UNSUBSCRIBE nothing more arrives, and the connection is a normal one again.
    pubsub.unsubscribe("news").expect("UNSUBSCRIBE");
    pubsub.punsubscribe("sport.*").expect("PUNSUBSCRIBE");
    drop(pubsub);
    let pong: String = cmd(&mut sub_con, &["PING"]);
    assert_eq!(pong, "PONG");
    let _: () = cmd(&mut sub_con, &["SET", "after", "pubsub"]);
    common::wait_until(Duration::from_secs(5), "the subscription to end", || {
        let numsub: (String, i64) = cmd(&mut publisher, &["PUBSUB", "NUMSUB", "news"]);
        numsub.1 == 0
    });
}

#[test]
fn subscribed_mode_replies_match_a_single_redis_byte_for_byte() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    let reference = Standalone::start();
    let script: &[&[&str]] = &[
        &["UNSUBSCRIBE"],
        &["SUBSCRIBE", "a", "b", "a"],
        &["PSUBSCRIBE", "p*"],
        &["PING"],
        &["PING", "hello"],
        &["GET", "x"],
        &["SSUBSCRIBE", "{s}1", "{s}2"],
        &["SUNSUBSCRIBE", "{s}1"],
        &["UNSUBSCRIBE", "a", "zzz"],
        &["UNSUBSCRIBE"],
        &["PUNSUBSCRIBE"],
        &["SUNSUBSCRIBE"],
        &["PING"],
        &["SSUBSCRIBE", "x", "y"],
    ];
    let settle = Duration::from_millis(150);
    let ours = common::conversation(proxy.addr, script, settle);
    let theirs = common::conversation(reference.node.addr().parse().expect("addr"), script, settle);
    // The last SSUBSCRIBE names channels of two slots: a cluster node would refuse it
    // (CROSSSLOT); the proxy subscribes each on its slot's owner, as one Redis takes both.
    let (ours, theirs) = (
        String::from_utf8_lossy(&ours),
        String::from_utf8_lossy(&theirs),
    );
    assert_eq!(ours, theirs);
    for part in [
        "$10\r\npsubscribe",
        "$4\r\npong",
        "Can't execute 'get'",
        "$12\r\nsunsubscribe",
    ] {
        assert!(ours.contains(part), "{part} missing from {ours}");
    }
}

/// Redis sends subscription confirmations even under `CLIENT REPLY OFF` (they are pushes),
/// and a subscriber waits for them: through the proxy they came never, and Redis' own pubsub
/// unit ("PubSub messages with CLIENT REPLY OFF") hung until its 5-minute timeout. Errors
/// stay suppressed. RESP3 and RESP2, byte for byte against a standalone redis-server.
#[test]
fn subscription_confirmations_arrive_under_client_reply_off() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    let reference = Standalone::start();
    for hello in ["3", "2"] {
        let script: &[&[&str]] = &[
            &["HELLO", hello],
            &["CLIENT", "REPLY", "OFF"],
            &["SUBSCRIBE", "channel"],
            &["PSUBSCRIBE", "ch*"],
            &["SUBSCRIBE"],
            &["CLIENT", "REPLY", "SKIP"],
            &["UNSUBSCRIBE", "channel"],
            &["PUNSUBSCRIBE", "ch*"],
            &["CLIENT", "REPLY", "ON"],
            &["PING"],
        ];
        let settle = Duration::from_millis(150);
        let strip_hello = |out: Vec<u8>| {
            let text = String::from_utf8_lossy(&out).into_owned();
            // HELLO's map differs (server, version, modules): compare what follows it.
            text.split_once("subscribe")
                .map(|(_, rest)| rest.to_string())
                .unwrap_or(text)
        };
        let ours = strip_hello(common::conversation(proxy.addr, script, settle));
        let reference_addr = reference.node.addr().parse().expect("addr");
        let theirs = strip_hello(common::conversation(reference_addr, script, settle));
        assert_eq!(ours, theirs, "HELLO {hello}");
        assert!(
            ours.contains("psubscribe") && ours.contains("punsubscribe"),
            "{ours}"
        );
    }
}

#[test]
fn shard_subscriptions_follow_their_slot() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    let channel = "{orders}:created";
    let slot = slotproxy::cluster::key_slot(channel.as_bytes());
    // The redis crate has no blocking SSUBSCRIBE: speak RESP directly.
    let mut subscriber = TcpStream::connect(proxy.addr).expect("connect");
    subscriber
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    subscriber
        .write_all(format!("SSUBSCRIBE {channel}\r\n").as_bytes())
        .expect("SSUBSCRIBE");
    let confirmation = format!("*3\r\n$10\r\nssubscribe\r\n$16\r\n{channel}\r\n:1\r\n");
    assert_eq!(
        read_exactly(&mut subscriber, confirmation.len()),
        confirmation
    );
    let smessage = |text: &str| {
        format!(
            "*3\r\n$8\r\nsmessage\r\n$16\r\n{channel}\r\n${}\r\n{text}\r\n",
            text.len()
        )
    };
    let mut publisher = proxy.conn();
    let receivers: i64 = cmd(&mut publisher, &["SPUBLISH", channel, "before"]);
    assert_eq!(receivers, 1);
    let expected = smessage("before");
    assert_eq!(read_exactly(&mut subscriber, expected.len()), expected);
    let shards: Vec<String> = cmd(&mut publisher, &["PUBSUB", "SHARDCHANNELS"]);
    assert_eq!(shards, vec![channel.to_string()]);

    let source = cluster.owner_of(slot);
    let target = cluster.other_than(source);
    cluster.begin_migration(slot, source, target);
    cluster.finish_migration(slot, source, target);
    // The old owner dropped the channel; the proxy subscribes it again on the new owner.
    common::wait_until(Duration::from_secs(10), "the re-subscription", || {
        let on_target: Vec<String> = target.cmd(&["PUBSUB", "SHARDCHANNELS"]);
        on_target == vec![channel.to_string()]
    });
    let receivers: i64 = cmd(&mut publisher, &["SPUBLISH", channel, "after"]);
    assert_eq!(receivers, 1);
    let expected = smessage("after");
    assert_eq!(read_exactly(&mut subscriber, expected.len()), expected);
    assert!(cluster.owner_of(slot).port == target.port);
}

fn read_exactly(stream: &mut TcpStream, len: usize) -> String {
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).expect("read");
    String::from_utf8_lossy(&buf).into_owned()
}

#[test]
fn a_subscriber_that_stops_reading_is_disconnected_at_the_limit() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start_with(&cluster, |c| {
        c.proxy.pubsub_output_limit_bytes = 256 * 1024;
    });
    let mut lazy = TcpStream::connect(proxy.addr).expect("connect");
    lazy.write_all(b"*2\r\n$9\r\nSUBSCRIBE\r\n$4\r\nfeed\r\n")
        .expect("subscribe");
    let mut confirm = [0u8; 64];
    let n = lazy.read(&mut confirm).expect("confirmation");
    assert!(confirm[..n].starts_with(b"*3\r\n$9\r\nsubscribe"));
    // Never read again. Publish far more than the limit plus what socket buffers hold.
    let mut publisher = proxy.conn();
    let payload = "x".repeat(64 * 1024);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut published = 0;
    while proxy.metric("slotproxy_pubsub_output_limit_disconnects_total") < 1.0 {
        assert!(
            Instant::now() < deadline,
            "not disconnected after {published} messages"
        );
        assert!(
            published < 20_000,
            "not disconnected after {published} messages"
        );
        let _: i64 = cmd(&mut publisher, &["PUBLISH", "feed", &payload]);
        published += 1;
    }
    // The subscription is gone from the cluster, and other clients carry on.
    common::wait_until(
        Duration::from_secs(5),
        "the subscriber to be dropped",
        || {
            let numsub: (String, i64) = cmd(&mut publisher, &["PUBSUB", "NUMSUB", "feed"]);
            numsub.1 == 0
        },
    );
    let pong: String = cmd(&mut publisher, &["PING"]);
    assert_eq!(pong, "PONG");
}

/// Reads messages until the plain message `end` on channel `end`, returning
/// `(pattern, channel, payload)` of each one before it.
fn messages_until_end(pubsub: &mut redis::PubSub<'_>) -> Vec<(String, String, String)> {
    let mut seen = Vec::new();
    loop {
        let message = pubsub.get_message().expect("a message");
        let channel = message.get_channel_name().to_string();
        let payload: String = message.get_payload().expect("payload");
        if channel == "end" {
            return seen;
        }
        let pattern: String = message.get_pattern().unwrap_or_default();
        seen.push((pattern, channel, payload));
    }
}

/// What a subscriber to `*` and `__keyevent@0__:set` sees of SETs of `keys`, a DEL of the
/// first and a PUBLISH, all sent through `writer` (the proxy, or one plain Redis).
fn notifications_seen(
    subscriber: &mut redis::Connection,
    writer: &mut redis::Connection,
    keys: &[String],
) -> Vec<(String, String, String)> {
    let mut pubsub = subscriber.as_pubsub();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    pubsub.psubscribe("*").expect("PSUBSCRIBE");
    pubsub.subscribe("__keyevent@0__:set").expect("SUBSCRIBE");
    pubsub.subscribe("end").expect("SUBSCRIBE");
    for key in keys {
        let _: () = cmd(writer, &["SET", key, "v"]);
    }
    let _: i64 = cmd(writer, &["DEL", &keys[0]]);
    let _: i64 = cmd(writer, &["PUBLISH", "plain", "hello"]);
    let _: i64 = cmd(writer, &["PUBLISH", "end", "end"]);
    let seen = messages_until_end(&mut pubsub);
    pubsub.punsubscribe("*").expect("PUNSUBSCRIBE");
    pubsub
        .unsubscribe("__keyevent@0__:set")
        .expect("UNSUBSCRIBE");
    pubsub.unsubscribe("end").expect("UNSUBSCRIBE");
    seen
}

#[test]
fn keyspace_notifications_of_every_master_arrive_once_as_from_one_redis() {
    let cluster = Cluster::start(3, 1);
    let proxy = TestProxy::start(&cluster);
    let standalone = Standalone::start();
    for node in &cluster.nodes {
        let _: () = node.cmd(&["CONFIG", "SET", "notify-keyspace-events", "KEA"]);
    }
    let _: () = cmd(
        &mut standalone.node.conn(),
        &["CONFIG", "SET", "notify-keyspace-events", "KEA"],
    );
    // One key on each master: each node publishes its own notifications only.
    let keys: Vec<String> = cluster
        .nodes
        .iter()
        .take(3)
        .map(|n| cluster.key_on(n.port, "note"))
        .collect();

    let direct = notifications_seen(
        &mut standalone.node.conn(),
        &mut standalone.node.conn(),
        &keys,
    );
    let through = notifications_seen(&mut proxy.conn(), &mut proxy.conn(), &keys);
    // Each key's own messages keep their order; across masters they come as they come.
    let sorted = |mut v: Vec<(String, String, String)>| {
        v.sort();
        v
    };
    // Per key: its keyspace `set`, the keyevent `set` (to the channel and to `*`); a `del`
    // twice; the plain message once.
    assert_eq!(direct.len(), 3 * 3 + 2 + 1, "{direct:?}");
    assert_eq!(sorted(through.clone()), sorted(direct), "{through:?}");
    for key in &keys {
        let channel = format!("__keyspace@0__:{key}");
        let events: Vec<&str> = through
            .iter()
            .filter(|(_, c, _)| *c == channel)
            .map(|(_, _, p)| p.as_str())
            .collect();
        let expected: &[&str] = if *key == keys[0] {
            &["set", "del"]
        } else {
            &["set"]
        };
        assert_eq!(events, expected, "{channel}");
    }
    // A slot moved to the master that had none: its notifications come too. (A migration
    // itself shows: MIGRATE makes the source publish `del` and the target `restore` for every
    // key moved, with or without the proxy.)
    let spare = &cluster.nodes[3];
    let slot = slotproxy::cluster::key_slot(keys[1].as_bytes());
    let source = cluster.owner_of(slot);
    cluster.begin_migration(slot, source, spare);
    cluster.migrate_keys(source, spare, &keys[1..2]);
    cluster.finish_migration(slot, source, spare);

    // Introspection counts each client once, as one Redis does, though the proxy listens on
    // every master for it.
    let mut sub_con = proxy.conn();
    let mut pubsub = sub_con.as_pubsub();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    pubsub.psubscribe("__keyspace@0__:*").expect("PSUBSCRIBE");
    pubsub.subscribe("__keyevent@0__:del").expect("SUBSCRIBE");
    let mut other = proxy.conn();
    let numpat: i64 = cmd(&mut other, &["PUBSUB", "NUMPAT"]);
    assert_eq!(numpat, 1);
    let numsub: (String, i64) = cmd(&mut other, &["PUBSUB", "NUMSUB", "__keyevent@0__:del"]);
    assert_eq!(numsub.1, 1);
    common::wait_until(
        Duration::from_secs(10),
        "the proxy to listen on the new owner",
        || {
            let patterns: i64 = spare.cmd(&["PUBSUB", "NUMPAT"]);
            patterns == 1
        },
    );
    let _: () = cmd(&mut other, &["SET", &keys[1], "moved"]);
    let message = pubsub
        .get_message()
        .expect("the notification from the new owner");
    assert_eq!(
        message.get_channel_name(),
        format!("__keyspace@0__:{}", keys[1])
    );
    let payload: String = message.get_payload().expect("payload");
    assert_eq!(payload, "set");
}
