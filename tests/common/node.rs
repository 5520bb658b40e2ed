//! One `redis-server` process started by the tests: a free port, a temp dir, killed on drop.

use super::certs;
use super::wait_until;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

/// Finds `redis-server`, or fails with the command that installs it.
pub fn redis_server_binary() -> String {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        found,
        "redis-server not found on PATH: install it with `apt-get install -y redis-server redis-tools` (or run .ci/run, which does)"
    );
    "redis-server".into()
}

static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// A loopback port that is free, and whose cluster bus port (+10000) is free too.
pub fn free_port() -> u16 {
    if NEXT_PORT.load(Ordering::Relaxed) == 0 {
        let base = 15000 + (std::process::id() % 300) as u16 * 50;
        let _ = NEXT_PORT.compare_exchange(0, base, Ordering::Relaxed, Ordering::Relaxed);
    }
    loop {
        let mut port = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        if port >= 30000 {
            NEXT_PORT.store(15000, Ordering::Relaxed);
            port = 15000;
        }
        let both_free = TcpListener::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok();
        if both_free {
            return port;
        }
    }
}

/// One `redis-server` process.
pub struct Node {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its cluster node id (empty for standalone servers).
    pub id: String,
    /// Its TLS port, for nodes started with TLS.
    pub tls_port: Option<u16>,
    /// Its cluster bus port.
    pub bus_port: u16,
    /// The password it requires, if any.
    pub password: Option<String>,
    pub(super) child: Child,
}

impl Node {
    /// `127.0.0.1:port`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `redis://[:password@]127.0.0.1:port/`
    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@{}/", self.addr()),
            None => format!("redis://{}/", self.addr()),
        }
    }

    /// A plain connection to this node (logged in when it requires a password).
    pub fn conn(&self) -> redis::Connection {
        let client = redis::Client::open(self.url()).expect("client");
        let con = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect {}: {e}", self.addr()));
        con.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        con
    }

    /// Sends a signal (`"STOP"`, `"CONT"`, …) to the redis-server process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {}", self.child.id());
    }

    /// True when the node answers and is a master now (`ROLE`).
    pub fn is_master(&self) -> bool {
        let role = redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
            .and_then(|mut c| redis::cmd("ROLE").query::<redis::Value>(&mut c));
        matches!(role, Ok(redis::Value::Array(ref parts))
            if matches!(parts.first(), Some(redis::Value::BulkString(r)) if r == b"master"))
    }

    /// Runs a command on this node; `None` when it does not answer (a killed node).
    pub fn try_cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> Option<T> {
        let mut con = redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
            .ok()?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut con).ok()
    }

    /// Runs a command on this node and returns its reply.
    pub fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut self.conn())
            .unwrap_or_else(|e| panic!("{:?} on {}: {e}", args, self.addr()))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How to start one server.
#[derive(Default, Clone, Copy)]
pub struct ServerOptions<'a> {
    /// `cluster-enabled yes`.
    pub cluster: bool,
    /// Also listen for TLS on a second port, require client certificates there, and run the
    /// cluster bus over TLS.
    pub tls: Option<&'a certs::Certs>,
    /// The cluster bus port (`cluster-port`); Redis' default is the port + 10000.
    pub bus_port: Option<u16>,
    /// `requirepass` (and `masterauth`, so replicas can sync); the harness logs in with it.
    pub password: Option<&'a str>,
}

/// Starts a plain server (or a cluster node with `cluster`) on `port`.
pub fn spawn_server(dir: &std::path::Path, port: u16, cluster: bool) -> Node {
    spawn_server_with(
        dir,
        port,
        ServerOptions {
            cluster,
            ..ServerOptions::default()
        },
    )
}

/// Starts a redis-server on `port` as `options` say.
pub fn spawn_server_with(dir: &std::path::Path, port: u16, options: ServerOptions<'_>) -> Node {
    let ServerOptions {
        cluster,
        tls,
        bus_port,
        password,
    } = options;
    let bin = redis_server_binary();
    let node_dir = dir.join(port.to_string());
    std::fs::create_dir_all(&node_dir).expect("node dir");
    let mut args: Vec<String> = vec![
        "--port".into(),
        port.to_string(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--dir".into(),
        node_dir.display().to_string(),
        "--save".into(),
        "".into(),
        "--appendonly".into(),
        "no".into(),
        "--enable-debug-command".into(),
        "local".into(),
        "--logfile".into(),
        node_dir.join("redis.log").display().to_string(),
    ];
    if let Some(password) = password {
        args.extend([
            "--requirepass".into(),
            password.into(),
            "--masterauth".into(),
            password.into(),
        ]);
    }
    if let Some(bus_port) = bus_port {
        args.extend(["--cluster-port".into(), bus_port.to_string()]);
    }
    let tls_port = tls.map(|_| free_port());
    if let (Some(certs), Some(tls_port)) = (tls, tls_port) {
        args.extend([
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            certs.text("server.pem"),
            "--tls-key-file".into(),
            certs.text("server.key"),
            "--tls-ca-cert-file".into(),
            certs.text("ca.pem"),
            "--tls-auth-clients".into(),
            "yes".into(),
            "--tls-cluster".into(),
            "yes".into(),
            "--tls-replication".into(),
            "yes".into(),
        ]);
    }
    if cluster {
        args.extend(
            [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            ]
            .map(String::from),
        );
    }
    let child = Command::new(bin)
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    let mut node = Node {
        port,
        id: String::new(),
        tls_port,
        bus_port: bus_port.unwrap_or(port + 10000),
        password: password.map(str::to_string),
        child,
    };
    wait_until(
        Duration::from_secs(10),
        "redis-server to answer PING",
        || {
            redis::Client::open(node.url())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok()
        },
    );
    if cluster {
        node.id = node.cmd(&["CLUSTER", "MYID"]);
    }
    node
}

/// A standalone (non-cluster) Redis, the reference a proxy must behave like.
pub struct Standalone {
    /// The server.
    pub node: Node,
    _dir: tempfile::TempDir,
}

impl Standalone {
    /// Starts one standalone redis-server.
    pub fn start() -> Standalone {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = spawn_server(dir.path(), free_port(), false);
        Standalone { node, _dir: dir }
    }
}
