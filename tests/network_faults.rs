//! Network faults between the proxy and one node, made on loopback with a relay the test
//! controls (`common::relay`): the node announces the relay's port, so the proxy reaches it
//! only through the relay. A blackholed node times out after `cluster.request_timeout_ms`
//! while the other nodes keep answering; a cut one fails; both recover when healed, with no
//! restart and no reply given to the wrong request.

mod common;

use common::relay::Relay;
use common::{connect, query, wait_until, Cluster, TestProxy};
use std::time::{Duration, Instant};

/// Puts node `index` behind a relay: it announces the relay's port to the cluster.
fn behind_relay(cluster: &Cluster, index: usize) -> Relay {
    let node = &cluster.nodes[index];
    let relay = Relay::start(node.addr().parse().expect("node addr"));
    let port = relay.port.to_string();
    let _: () = node.cmd(&["CONFIG", "SET", "cluster-announce-port", &port]);
    let needle = format!(":{port}@");
    wait_until(
        Duration::from_secs(20),
        "every node to see the relay",
        || {
            cluster
                .nodes
                .iter()
                .all(|n| n.cmd::<String>(&["CLUSTER", "NODES"]).contains(&needle))
        },
    );
    relay
}

/// Whether GET `key` answers "v" through `con`.
fn answers(con: &mut redis::Connection, key: &str) -> bool {
    redis::cmd("GET")
        .arg(key)
        .query::<String>(con)
        .is_ok_and(|v| v == "v")
}

/// The keys, one per node, with the last one on the node behind the relay.
fn keys(cluster: &Cluster) -> (Vec<String>, String) {
    let live = (0..2)
        .map(|i| cluster.key_on(cluster.nodes[i].port, "live"))
        .collect();
    (live, cluster.key_on(cluster.nodes[2].port, "faulty"))
}

#[test]
fn a_blackholed_node_times_out_alone_and_recovers_when_healed() {
    let cluster = Cluster::start(3, 0);
    let (live, faulty) = keys(&cluster);
    let relay = behind_relay(&cluster, 2);
    let proxy = TestProxy::start_with(&cluster, |c| c.cluster.request_timeout_ms = 2000);
    let mut con = proxy.conn();
    for key in live.iter().chain([&faulty]) {
        let _: () = query(&mut con, &["SET", key, "v"]);
    }

    relay.pause();
    let addr = proxy.addr.to_string();
    let stuck_key = faulty.clone();
    let stuck = std::thread::spawn(move || {
        let mut con = connect(&addr);
        let result = redis::cmd("GET").arg(&stuck_key).query::<String>(&mut con);
        (result, Instant::now())
    });
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    for _ in 0..200 {
        for key in &live {
            let value: String = query(&mut con, &["GET", key]);
            assert_eq!(value, "v");
        }
    }
    let live_done = Instant::now();
    let (result, stuck_done) = stuck.join().expect("stuck client");
    let error = result
        .expect_err("the blackholed node cannot answer")
        .to_string();
    assert!(error.contains("did not reply within 2000 ms"), "{error}");
    assert!(
        live_done < stuck_done,
        "400 GETs on healthy nodes ({:?}) waited for the blackholed one",
        live_done - started
    );
    println!(
        "blackhole: error after {:?}; 400 GETs on the other nodes meanwhile took {:?}",
        stuck_done - started + Duration::from_millis(100),
        live_done - started
    );
    let timeouts = format!(
        "slotproxy_upstream_errors_total{{kind=\"timeout\",node=\"127.0.0.1:{}\"}}",
        relay.port
    );
    assert_eq!(proxy.metric(&timeouts), 1.0, "{timeouts}");

    // Healed: the late reply is thrown away, and the node answers again, in order.
    relay.heal();
    let healed = Instant::now();
    wait_until(Duration::from_secs(15), "the healed node to answer", || {
        answers(&mut con, &faulty)
    });
    println!(
        "blackhole: answering again {:?} after healing",
        healed.elapsed()
    );
    let mut pipe = redis::pipe();
    for (i, key) in live.iter().chain([&faulty]).enumerate() {
        pipe.cmd("SET").arg(key).arg(i).ignore().cmd("GET").arg(key);
    }
    let values: Vec<usize> = pipe.query(&mut con).expect("pipeline after healing");
    assert_eq!(values, vec![0, 1, 2]);
}

#[test]
fn a_cut_node_fails_only_its_keys_and_the_proxy_reconnects_when_healed() {
    let cluster = Cluster::start(3, 0);
    let (live, faulty) = keys(&cluster);
    let relay = behind_relay(&cluster, 2);
    let proxy = TestProxy::start_with(&cluster, |c| {
        c.cluster.request_timeout_ms = 2000;
        c.cluster.max_retries = 2;
    });
    let mut con = proxy.conn();
    for key in live.iter().chain([&faulty]) {
        let _: () = query(&mut con, &["SET", key, "v"]);
    }

    relay.cut();
    let started = Instant::now();
    let error = redis::cmd("GET")
        .arg(&faulty)
        .query::<String>(&mut con)
        .expect_err("the cut node cannot answer")
        .to_string();
    assert!(
        error.contains(&format!("127.0.0.1:{}", relay.port)),
        "{error}"
    );
    println!("cut: error after {:?}: {error}", started.elapsed());
    for key in &live {
        let value: String = query(&mut con, &["GET", key]);
        assert_eq!(value, "v", "other nodes are unaffected");
    }

    relay.heal();
    let healed = Instant::now();
    wait_until(Duration::from_secs(15), "the proxy to reconnect", || {
        answers(&mut con, &faulty)
    });
    println!("cut: answering again {:?} after healing", healed.elapsed());
    let reconnects = format!(
        "slotproxy_upstream_reconnects_total{{node=\"127.0.0.1:{}\"}}",
        relay.port
    );
    assert!(proxy.metric(&reconnects) >= 1.0, "{reconnects}");
}
