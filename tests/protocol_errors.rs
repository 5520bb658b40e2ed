//! Malformed input gets Redis' own `-ERR Protocol error: …` and a closed connection; other
//! clients never notice.

mod common;
use common::{raw_exchange, Cluster, TestProxy};
use std::time::Duration;

fn exchange(proxy: &TestProxy, input: &[u8]) -> String {
    String::from_utf8_lossy(&raw_exchange(proxy.addr, input, Duration::from_secs(5))).into_owned()
}

#[test]
fn malformed_frames_get_a_precise_error_and_close() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start_with(&cluster, |c| c.proxy.max_bulk_bytes = 1024);
    let mut bystander = proxy.conn();
    let _: () = redis::cmd("SET")
        .arg("safe")
        .arg("1")
        .query(&mut bystander)
        .expect("SET");

    // Earlier replies still arrive, then the error, then the proxy closes the connection.
    let out = exchange(
        &proxy,
        b"*1\r\n$4\r\nPING\r\n*1\r\n+BAD\r\n*1\r\n$4\r\nPING\r\n",
    );
    assert_eq!(
        out,
        "+PONG\r\n-ERR Protocol error: expected '$', got '+'\r\n"
    );

    let out = exchange(&proxy, b"*2\r\n$3\r\nGET\r\n$2000\r\n");
    assert_eq!(
        out, "-ERR Protocol error: invalid bulk length\r\n",
        "bulk over proxy.max_bulk_bytes"
    );
    let out = exchange(&proxy, b"*2\r\n$3\r\nGET\r\n$99999999999999\r\n");
    assert_eq!(out, "-ERR Protocol error: invalid bulk length\r\n");
    let out = exchange(&proxy, b"*2\r\n$3\r\nGET\r\n$-7\r\n");
    assert_eq!(out, "-ERR Protocol error: invalid bulk length\r\n");
    let out = exchange(&proxy, b"*99999999999\r\n");
    assert_eq!(out, "-ERR Protocol error: invalid multibulk length\r\n");
    let out = exchange(&proxy, b"*abc\r\n");
    assert_eq!(out, "-ERR Protocol error: invalid multibulk length\r\n");
    let out = exchange(&proxy, &vec![b'a'; 70 * 1024]);
    assert_eq!(out, "-ERR Protocol error: too big inline request\r\n");
    let out = exchange(&proxy, b"SET k \"unterminated\r\n");
    assert_eq!(out, "-ERR Protocol error: unbalanced quotes in request\r\n");

    let value: String = redis::cmd("GET")
        .arg("safe")
        .query(&mut bystander)
        .expect("bystander still served");
    assert_eq!(value, "1");
    assert!(proxy.metric("slotproxy_client_protocol_errors_total") >= 8.0);
}

#[test]
fn a_huge_declared_array_costs_only_what_is_sent() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    // Announce a million arguments but send two, then hang up: nothing is allocated up front,
    // and the proxy simply drops the half-sent request.
    let out = exchange(&proxy, b"*1000000\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    assert_eq!(out, "");
    let mut con = proxy.conn();
    let pong: String = redis::cmd("PING").query(&mut con).expect("PING");
    assert_eq!(pong, "PONG");
}

#[test]
fn inline_commands_and_unknown_commands() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    let out = exchange(
        &proxy,
        b"SET greeting \"hello world\"\r\nGET greeting\r\nFOO bar\r\nPING\r\nQUIT\r\n",
    );
    assert_eq!(
        out,
        "+OK\r\n$11\r\nhello world\r\n-ERR unknown command 'FOO', with args beginning with: 'bar' \r\n+PONG\r\n+OK\r\n"
    );
}
