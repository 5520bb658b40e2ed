//! Client authentication at the proxy: NOAUTH before AUTH, AUTH with one or two arguments,
//! HELLO … AUTH, Redis's pre-auth limits, and node credentials never taken from clients.

mod common;
use common::{raw_exchange, Cluster, TestProxy};
use std::time::Duration;

fn guarded(cluster: &Cluster) -> TestProxy {
    TestProxy::start_with(cluster, |c| {
        c.auth.requirepass = "pw".into();
        c.auth.users = vec![slotproxy::config::AuthUser {
            name: "app".into(),
            password: "apppw".into(),
        }];
    })
}

fn raw(proxy: &TestProxy, input: &[u8]) -> String {
    String::from_utf8_lossy(&raw_exchange(proxy.addr, input, Duration::from_secs(5))).into_owned()
}

#[test]
fn commands_need_auth_and_credentials_are_checked() {
    let cluster = Cluster::start(3, 0);
    let proxy = guarded(&cluster);
    assert_eq!(
        raw(&proxy, b"GET k\r\n"),
        "-NOAUTH Authentication required.\r\n"
    );
    assert_eq!(
        raw(&proxy, b"PING\r\n"),
        "-NOAUTH Authentication required.\r\n"
    );
    assert!(raw(&proxy, b"NOSUCH\r\n").starts_with("-ERR unknown command"));
    assert_eq!(
        raw(&proxy, b"AUTH wrong\r\nGET k\r\n"),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n-NOAUTH Authentication required.\r\n"
    );
    assert_eq!(
        raw(&proxy, b"AUTH pw\r\nSET k v\r\nGET k\r\n"),
        "+OK\r\n+OK\r\n$1\r\nv\r\n"
    );
    assert_eq!(
        raw(&proxy, b"AUTH default pw\r\nGET k\r\n"),
        "+OK\r\n$1\r\nv\r\n"
    );
    assert_eq!(
        raw(&proxy, b"AUTH app apppw\r\nGET k\r\n"),
        "+OK\r\n$1\r\nv\r\n"
    );
    assert!(raw(&proxy, b"AUTH app pw\r\n").starts_with("-WRONGPASS"));
    assert!(raw(&proxy, b"AUTH a b c\r\n").starts_with("-ERR syntax error"));
    // HELLO: refused without credentials, accepted with them.
    assert!(raw(&proxy, b"HELLO 2\r\n").starts_with("-NOAUTH HELLO must be called"));
    assert!(raw(&proxy, b"HELLO 2 AUTH app nope\r\n").starts_with("-WRONGPASS"));
    let hello = raw(&proxy, b"HELLO 2 AUTH app apppw\r\nGET k\r\n");
    assert!(
        hello.starts_with("*14\r\n") && hello.ends_with("$1\r\nv\r\n"),
        "{hello}"
    );
    // RESET logs the client out again.
    assert_eq!(
        raw(&proxy, b"AUTH pw\r\nRESET\r\nGET k\r\n"),
        "+OK\r\n+RESET\r\n-NOAUTH Authentication required.\r\n"
    );

    // Real clients authenticate through their URL (AUTH user pass).
    let client = redis::Client::open(format!("redis://app:apppw@{}/", proxy.addr)).expect("url");
    let mut con = client.get_connection().expect("connect with AUTH");
    let v: String = redis::cmd("GET").arg("k").query(&mut con).expect("GET");
    assert_eq!(v, "v");
    let client = redis::Client::open(format!("redis://{}/", proxy.addr)).expect("url");
    let mut con = client.get_connection().expect("connect without AUTH");
    let err = redis::cmd("GET")
        .arg("k")
        .query::<String>(&mut con)
        .unwrap_err();
    assert!(
        format!("{err:?}").contains("NOAUTH")
            || err.to_string().contains("Authentication required"),
        "{err:?}"
    );
}

#[test]
fn pre_auth_limits_apply_until_authenticated() {
    let cluster = Cluster::start(3, 0);
    let proxy = guarded(&cluster);
    let mut eleven = b"*11\r\n".to_vec();
    for _ in 0..11 {
        eleven.extend_from_slice(b"$1\r\nx\r\n");
    }
    assert_eq!(
        raw(&proxy, &eleven),
        "-ERR Protocol error: unauthenticated multibulk length\r\n"
    );
    let big = format!("*2\r\n$3\r\nGET\r\n${}\r\n", 16 * 1024 + 1);
    assert_eq!(
        raw(&proxy, big.as_bytes()),
        "-ERR Protocol error: unauthenticated bulk length\r\n"
    );
    // After AUTH, the normal limits: 12 arguments and a 20 KiB value are fine.
    let value = "x".repeat(20 * 1024);
    let mut ok = b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n".to_vec();
    ok.extend_from_slice(
        format!(
            "*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${}\r\n{value}\r\n",
            value.len()
        )
        .as_bytes(),
    );
    ok.extend_from_slice(b"*12\r\n$4\r\nMGET\r\n");
    for _ in 0..11 {
        ok.extend_from_slice(b"$3\r\nbig\r\n");
    }
    let out = raw(&proxy, &ok);
    assert!(
        out.starts_with("+OK\r\n+OK\r\n*11\r\n"),
        "{}",
        &out[..out.len().min(80)]
    );
}

#[test]
fn without_auth_config_auth_answers_like_a_passwordless_redis() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    assert!(raw(&proxy, b"AUTH x\r\n")
        .starts_with("-ERR AUTH <password> called without any password configured"));
    assert_eq!(
        raw(&proxy, b"AUTH default anything\r\nPING\r\n"),
        "+OK\r\n+PONG\r\n"
    );
}

#[test]
fn password_guessing_is_counted_and_slowed_down_per_connection() {
    let cluster = Cluster::start(3, 0);
    let proxy = guarded(&cluster);
    // Five wrong guesses pipelined on one connection, then the right password: the first
    // failure is answered at once, the others after 100, 200, 400 and 800 ms, one after the
    // other; nothing is reordered.
    let started = std::time::Instant::now();
    let replies = raw(
        &proxy,
        b"AUTH a\r\nAUTH b\r\nHELLO 2 AUTH app c\r\nAUTH d\r\nAUTH e\r\nAUTH pw\r\nGET k\r\n",
    );
    let waited = started.elapsed();
    let wrongpass = "-WRONGPASS invalid username-password pair or user is disabled.\r\n";
    assert_eq!(replies, format!("{}+OK\r\n$-1\r\n", wrongpass.repeat(5)));
    assert!(waited >= Duration::from_millis(1500), "{waited:?}");
    assert_eq!(proxy.metric("slotproxy_client_auth_failures_total "), 5.0);
    // Another connection starts afresh: its first failure is not delayed by the others.
    let started = std::time::Instant::now();
    assert_eq!(raw(&proxy, b"AUTH x\r\n"), wrongpass);
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert_eq!(proxy.metric("slotproxy_client_auth_failures_total "), 6.0);
}
