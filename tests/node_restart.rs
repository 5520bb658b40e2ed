//! Node faults: a master that dies and comes back (errors only for its slots while it is down,
//! and the proxy reconnects by itself), and a master that stops answering for a while.

mod common;
use common::{Cluster, TestProxy};
use std::time::Duration;

#[test]
fn proxy_recovers_by_itself_when_a_master_restarts() {
    let mut cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    let mut con = proxy.conn();
    let down_port = cluster.nodes[0].port;
    let on_down = cluster.key_on(down_port, "down");
    let on_up = cluster.key_on(cluster.nodes[1].port, "up");
    for k in [&on_down, &on_up] {
        let _: () = redis::cmd("SET")
            .arg(k)
            .arg("v")
            .query(&mut con)
            .expect("SET");
    }

    cluster.kill(0);
    let err = redis::cmd("GET")
        .arg(&on_down)
        .query::<Option<String>>(&mut con)
        .expect_err("node is down");
    let message = err.to_string();
    assert!(
        message.contains(&format!("127.0.0.1:{down_port}")),
        "error names the node: {message}"
    );
    let up: String = redis::cmd("GET")
        .arg(&on_up)
        .query(&mut con)
        .expect("other nodes unaffected");
    assert_eq!(up, "v");

    cluster.restart(0);
    let rejoined = std::time::Instant::now();
    common::wait_until(
        Duration::from_secs(15),
        "the proxy to reach the restarted node",
        || {
            redis::cmd("SET")
                .arg(&on_down)
                .arg("again")
                .query::<()>(&mut con)
                .is_ok()
        },
    );
    let back: String = redis::cmd("GET")
        .arg(&on_down)
        .query(&mut con)
        .expect("GET after restart");
    assert_eq!(back, "again");
    println!(
        "a master killed and restarted: its keys failed at once with an error naming it, other \
         masters' keys were served, and its keys were served again {} ms after it rejoined",
        rejoined.elapsed().as_millis()
    );
    let reconnects =
        format!("slotproxy_upstream_reconnects_total{{node=\"127.0.0.1:{down_port}\"}}");
    assert!(proxy.metric(&reconnects) >= 1.0, "{reconnects}");
}

#[test]
fn a_stalled_node_times_out_and_later_replies_stay_matched() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start_with(&cluster, |c| c.cluster.request_timeout_ms = 300);
    let mut con = proxy.conn();
    let port = cluster.nodes[0].port;
    let stalled = cluster.key_on(port, "stalled");
    let later = cluster.key_on(port, &format!("{stalled}:later"));
    for (k, v) in [(&stalled, "first"), (&later, "second")] {
        let _: () = redis::cmd("SET")
            .arg(k)
            .arg(v)
            .query(&mut con)
            .expect("SET");
    }

    let elsewhere = cluster.key_on(cluster.nodes[1].port, "elsewhere");
    // DEBUG SLEEP blocks the node, as a long-running script or a frozen host would.
    let node = cluster.nodes[0].addr();
    let sleeper = std::thread::spawn(move || {
        let _: () = redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg("2")
            .query(&mut common::connect(&node))
            .expect("DEBUG SLEEP");
    });
    std::thread::sleep(Duration::from_millis(200));
    let started = std::time::Instant::now();
    let err = redis::cmd("GET")
        .arg(&stalled)
        .query::<Option<String>>(&mut con)
        .expect_err("the node is asleep");
    assert!(
        err.to_string()
            .contains(&format!("127.0.0.1:{port} did not reply within 300 ms")),
        "{err}"
    );
    // A command split over the stalled node and a healthy one times out as a whole.
    let err = redis::cmd("MGET")
        .arg(&elsewhere)
        .arg(&stalled)
        .query::<Vec<Option<String>>>(&mut con)
        .expect_err("part of it is on the sleeping node");
    assert!(
        err.to_string().contains("did not reply within 300 ms"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "the timeouts fired before the node woke up: {:?}",
        started.elapsed()
    );
    sleeper.join().expect("sleeper");

    // The late reply to the timed-out GET is dropped, not handed to the next caller.
    let values: Vec<String> = redis::pipe()
        .cmd("GET")
        .arg(&later)
        .cmd("GET")
        .arg(&stalled)
        .query(&mut con)
        .expect("GETs after the stall");
    assert_eq!(values, ["second", "first"]);
    let timeouts =
        format!("slotproxy_upstream_errors_total{{kind=\"timeout\",node=\"127.0.0.1:{port}\"}}");
    assert_eq!(proxy.metric(&timeouts), 2.0, "{timeouts}");
}
