//! Slots moved behind the proxy's back: clients never see MOVED, ASK or TRYAGAIN.

mod common;
use common::{keys_in_one_slot, Cluster, TestProxy};

fn set(con: &mut redis::Connection, key: &str, value: &str) {
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query::<()>(con)
        .unwrap_or_else(|e| panic!("SET {key}: {e}"));
}

fn get(con: &mut redis::Connection, key: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(key)
        .query(con)
        .unwrap_or_else(|e| panic!("GET {key}: {e}"))
}

#[test]
fn moved_is_hidden_when_a_slot_moved() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    let mut con = proxy.conn();
    let (slot, keys) = keys_in_one_slot("moving", 50);
    for k in &keys {
        set(&mut con, k, &format!("v-{k}"));
    }
    let source = cluster.owner_of(slot);
    let target = cluster.other_than(source);
    cluster.begin_migration(slot, source, target);
    cluster.finish_migration(slot, source, target);

    // The proxy's map still names the old owner: every command below meets MOVED first.
    for k in &keys {
        assert_eq!(get(&mut con, k), Some(format!("v-{k}")));
    }
    // Only the first GET met MOVED: the proxy patched its map from it at once.
    assert_eq!(
        proxy.metric("slotproxy_redirects_total{kind=\"moved\"}"),
        1.0
    );
    set(&mut con, "{moving}:new", "fresh");
    assert_eq!(get(&mut con, "{moving}:new"), Some("fresh".into()));
    let values: Vec<String> = redis::cmd("MGET").arg(&keys).query(&mut con).expect("MGET");
    assert_eq!(values.len(), keys.len());
    assert!(proxy.metric("slotproxy_redirects_total{kind=\"moved\"}") >= 1.0);
    // The data really is on the new owner now.
    let on_target: i64 = target.cmd(&["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]);
    assert_eq!(on_target, 51);
    // And the proxy refreshed its map: a fresh read is answered without a redirect.
    common::wait_until(std::time::Duration::from_secs(5), "the map refresh", || {
        proxy.metric("slotproxy_slot_map_epoch") >= 2.0
    });
    let before = proxy.metric("slotproxy_redirects_total{kind=\"moved\"}");
    assert_eq!(get(&mut con, &keys[0]), Some(format!("v-{}", keys[0])));
    assert_eq!(
        proxy.metric("slotproxy_redirects_total{kind=\"moved\"}"),
        before
    );
}

#[test]
fn ask_is_hidden_while_a_slot_is_half_migrated() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    let mut con = proxy.conn();
    let (slot, keys) = keys_in_one_slot("asking", 40);
    for k in &keys {
        set(&mut con, k, &format!("v-{k}"));
    }
    let source = cluster.owner_of(slot);
    let target = cluster.other_than(source);
    cluster.begin_migration(slot, source, target);
    let (moved, stayed) = keys.split_at(20);
    cluster.migrate_keys(source, target, moved);

    // Moved keys are answered through ASK, the others by the source.
    for k in &keys {
        assert_eq!(get(&mut con, k), Some(format!("v-{k}")), "{k}");
    }
    // New keys go to the importing node (the source answers ASK for missing keys).
    for i in 0..5 {
        set(&mut con, &format!("{{asking}}:new:{i}"), "n");
    }
    let on_source: i64 = source.cmd(&["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]);
    assert_eq!(
        on_source,
        stayed.len() as i64,
        "new keys must not land on the source"
    );
    // A multi-key read across moved and unmoved keys of the slot (TRYAGAIN on the nodes).
    let mut all: Vec<String> = keys.clone();
    all.extend((0..5).map(|i| format!("{{asking}}:new:{i}")));
    all.push("elsewhere".into());
    let values: Vec<Option<String>> = redis::cmd("MGET")
        .arg(&all)
        .query(&mut con)
        .expect("MGET across both");
    for (k, v) in all.iter().zip(&values) {
        let want = if k.contains(":new:") {
            Some("n".to_string())
        } else if k == "elsewhere" {
            None
        } else {
            Some(format!("v-{k}"))
        };
        assert_eq!(v, &want, "{k}");
    }
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&all)
        .query(&mut con)
        .expect("EXISTS across both");
    assert_eq!(exists, 45);
    let deleted: i64 = redis::cmd("DEL")
        .arg(&moved[..2])
        .arg(&stayed[..2])
        .query(&mut con)
        .expect("DEL across both");
    assert_eq!(deleted, 4);
    assert!(proxy.metric("slotproxy_redirects_total{kind=\"ask\"}") >= 1.0);

    cluster.finish_migration(slot, source, target);
    for k in &keys[2..20] {
        assert_eq!(get(&mut con, k), Some(format!("v-{k}")));
    }
    assert_eq!(get(&mut con, &moved[0]), None);
    assert_eq!(get(&mut con, &stayed[0]), None);
}
