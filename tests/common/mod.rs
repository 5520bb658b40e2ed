//! Test harness: real `redis-server` cluster nodes on free loopback ports in temp dirs, and a
//! slotproxy started in-process on port 0. Everything is torn down on drop, also when a test
//! panics.
#![allow(dead_code, unused_imports)]

pub mod certs;
pub mod cluster;
pub mod keys;
pub mod net;
pub mod node;
pub mod proxy;
pub mod relay;
pub mod traffic;

pub use cluster::Cluster;
pub use keys::{check_keys, keys_for_slots, keys_for_slots_named, keys_in_one_slot, write_keys};
pub use net::{conversation, http_get, http_request, raw_exchange, Wire};
pub use node::{free_port, redis_server_binary, Node, ServerOptions, Standalone};
pub use proxy::{wait_job, ProxyProcess, TestProxy};

use std::time::{Duration, Instant};

/// Polls `check` every 50 ms until it holds, or panics naming `what`.
pub fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// A plain (non-cluster) connection.
pub fn connect(addr: &str) -> redis::Connection {
    let client = redis::Client::open(format!("redis://{addr}/")).expect("client");
    let con = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    con.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    con
}

/// Runs `args` on `con` and converts the reply; panics with the command on any error.
pub fn query<T: redis::FromRedisValue>(con: &mut redis::Connection, args: &[&str]) -> T {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(con)
        .unwrap_or_else(|e| panic!("{args:?} failed: {e}"))
}
