//! Test harness: real `redis-server` cluster nodes on free loopback ports in temp dirs, and a
//! slotproxy started in-process on port 0. Everything is torn down on drop, also when a test
//! panics.
#![allow(dead_code)]

pub mod certs;
pub mod relay;
pub mod traffic;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

const SLOTS: u16 = 16384;

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
    child: Child,
}

impl Node {
    /// `127.0.0.1:port`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A plain connection to this node.
    pub fn conn(&self) -> redis::Connection {
        connect(&self.addr())
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
        let role = redis::Client::open(format!("redis://{}/", self.addr()))
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
            .and_then(|mut c| redis::cmd("ROLE").query::<redis::Value>(&mut c));
        matches!(role, Ok(redis::Value::Array(ref parts))
            if matches!(parts.first(), Some(redis::Value::BulkString(r)) if r == b"master"))
    }

    /// Runs a command on this node; `None` when it does not answer (a killed node).
    pub fn try_cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> Option<T> {
        let mut con = redis::Client::open(format!("redis://{}/", self.addr()))
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

fn spawn_server(dir: &std::path::Path, port: u16, cluster: bool) -> Node {
    spawn_server_with(dir, port, cluster, None)
}

/// Starts a redis-server; with `tls`, it also listens for TLS on a second port, requires
/// client certificates there, and runs the cluster bus over TLS.
fn spawn_server_with(
    dir: &std::path::Path,
    port: u16,
    cluster: bool,
    tls: Option<&certs::Certs>,
) -> Node {
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
        child,
    };
    wait_until(
        Duration::from_secs(10),
        "redis-server to answer PING",
        || {
            redis::Client::open(format!("redis://127.0.0.1:{port}/"))
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

/// A Redis Cluster of real processes.
pub struct Cluster {
    dir_path: std::path::PathBuf,
    /// Masters owning slots, then spare masters without slots, then the replicas (one per
    /// slot-owning master, in master order) when started with [`Cluster::start_replicated`].
    /// Roles change with failovers; indices do not.
    pub nodes: Vec<Node>,
    masters: usize,
    spares: usize,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// `masters` masters sharing the slots evenly, plus `spares` empty masters.
    pub fn start(masters: usize, spares: usize) -> Cluster {
        Self::start_with(masters, spares, None)
    }

    /// Like [`Cluster::start`], with every node also serving TLS (see [`Node::tls_port`]) and
    /// the cluster bus over TLS; the tests keep using the plain ports.
    pub fn start_tls(masters: usize, certs: &certs::Certs) -> Cluster {
        Self::start_with(masters, 0, Some(certs))
    }

    /// `masters` masters sharing the slots evenly, each with one replica.
    pub fn start_replicated(masters: usize) -> Cluster {
        let cluster = Self::start_with(masters, 0, None);
        let mut cluster = cluster;
        for i in 0..masters {
            let replica = spawn_server(&cluster.dir_path, free_port(), true);
            let port = replica.port.to_string();
            let _: () = cluster.nodes[0].cmd(&["CLUSTER", "MEET", "127.0.0.1", &port]);
            cluster.nodes.push(replica);
            let master_id = cluster.nodes[i].id.clone();
            let replica = cluster.nodes.last().expect("replica");
            wait_until(
                Duration::from_secs(20),
                "the replica to learn its master",
                || {
                    redis::cmd("CLUSTER")
                        .arg("REPLICATE")
                        .arg(&master_id)
                        .query::<()>(&mut replica.conn())
                        .is_ok()
                },
            );
        }
        for replica in &cluster.nodes[masters..] {
            wait_until(Duration::from_secs(30), "the replica to sync", || {
                let info: String = replica.cmd(&["INFO", "replication"]);
                info.contains("master_link_status:up")
            });
        }
        cluster.wait_consistent();
        cluster
    }

    /// The replica started for master `index` by [`Cluster::start_replicated`].
    pub fn replica_of(&self, index: usize) -> &Node {
        &self.nodes[self.masters + self.spares + index]
    }

    fn start_with(masters: usize, spares: usize, tls: Option<&certs::Certs>) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let nodes: Vec<Node> = (0..masters + spares)
            .map(|_| spawn_server_with(dir.path(), free_port(), true, tls))
            .collect();
        for (i, node) in nodes.iter().take(masters).enumerate() {
            let start = (SLOTS as usize * i / masters).to_string();
            let end = (SLOTS as usize * (i + 1) / masters - 1).to_string();
            let _: () = node.cmd(&["CLUSTER", "ADDSLOTSRANGE", &start, &end]);
        }
        for node in &nodes[1..] {
            // With TLS the cluster bus listens at the TLS port + 10000.
            let port = node.tls_port.unwrap_or(node.port).to_string();
            let _: () = nodes[0].cmd(&["CLUSTER", "MEET", "127.0.0.1", &port]);
        }
        let cluster = Cluster {
            dir_path: dir.path().to_path_buf(),
            nodes,
            masters,
            spares,
            _dir: dir,
        };
        cluster.wait_consistent();
        cluster
    }

    /// Waits until every node reports `cluster_state:ok`, knows every node, and agrees on the
    /// owner of every slot.
    pub fn wait_consistent(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let views: Vec<Option<Vec<(i64, i64, u16)>>> = self
                .nodes
                .iter()
                .map(|n| node_view(n, self.nodes.len()))
                .collect();
            if views.iter().all(|v| v.is_some()) && views.windows(2).all(|w| w[0] == w[1]) {
                return;
            }
            if Instant::now() > deadline {
                // Say why, so that a rare failure explains itself.
                let states: Vec<String> = self
                    .nodes
                    .iter()
                    .zip(&views)
                    .map(|(n, v)| {
                        let info: String = n.try_cmd(&["CLUSTER", "INFO"]).unwrap_or_default();
                        let pick = |k: &str| {
                            info.lines()
                                .find(|l| l.starts_with(k))
                                .unwrap_or("")
                                .trim()
                                .to_string()
                        };
                        let nodes: String = n.try_cmd(&["CLUSTER", "NODES"]).unwrap_or_default();
                        format!(
                            "{}: {} {} view={v:?}\n{nodes}",
                            n.port,
                            pick("cluster_state"),
                            pick("cluster_known_nodes")
                        )
                    })
                    .collect();
                panic!(
                    "timed out after 60 s waiting for the cluster to become consistent:\n{}",
                    states.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills node `index` (SIGKILL); it keeps its port and its nodes.conf for [`Cluster::restart`].
    pub fn kill(&mut self, index: usize) {
        let _ = self.nodes[index].child.kill();
        let _ = self.nodes[index].child.wait();
    }

    /// Starts node `index` again on the same port and directory (same id and slots, no data).
    pub fn restart(&mut self, index: usize) {
        let port = self.nodes[index].port;
        let node = spawn_server(&self.dir_path, port, true);
        self.nodes[index] = node;
        self.wait_consistent();
    }

    /// Seed list for the proxy.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes
            .iter()
            .take(self.masters)
            .map(|n| n.addr())
            .collect()
    }

    /// The node owning `slot`, from that node's own view.
    pub fn owner_of(&self, slot: u16) -> &Node {
        let owner_port: u16 = {
            let slots: Vec<(i64, i64, String, u16)> = slot_ranges(&self.nodes[0]);
            slots
                .iter()
                .find(|(s, e, _, _)| *s <= slot as i64 && slot as i64 <= *e)
                .map(|(_, _, _, p)| *p)
                .expect("slot is assigned")
        };
        self.nodes
            .iter()
            .find(|n| n.port == owner_port)
            .expect("owner is ours")
    }

    /// A key (`prefix:N`) in a slot the node listening on `port` owns.
    pub fn key_on(&self, port: u16, prefix: &str) -> String {
        (0..)
            .map(|i| format!("{prefix}:{i}"))
            .find(|k| {
                self.owner_of(slotproxy::cluster::key_slot(k.as_bytes()))
                    .port
                    == port
            })
            .expect("some key maps to every node")
    }

    /// Some master other than `node`.
    pub fn other_than(&self, node: &Node) -> &Node {
        self.nodes
            .iter()
            .take(self.masters)
            .find(|n| n.port != node.port)
            .expect("another master")
    }

    /// Starts moving `slot` from its owner to `target`: IMPORTING on the target, MIGRATING
    /// on the source, issued directly to the nodes behind the proxy's back.
    pub fn begin_migration(&self, slot: u16, source: &Node, target: &Node) {
        let s = slot.to_string();
        let _: () = target.cmd(&["CLUSTER", "SETSLOT", &s, "IMPORTING", &source.id]);
        let _: () = source.cmd(&["CLUSTER", "SETSLOT", &s, "MIGRATING", &target.id]);
    }

    /// MIGRATEs the given keys of a migrating slot from `source` to `target`.
    pub fn migrate_keys(&self, source: &Node, target: &Node, keys: &[String]) {
        let port = target.port.to_string();
        let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
        args.extend(keys.iter().map(|k| k.as_str()));
        let _: String = source.cmd(&args);
    }

    /// Finishes a migration: every remaining key moved, then SETSLOT NODE on target, source
    /// and everyone else.
    pub fn finish_migration(&self, slot: u16, source: &Node, target: &Node) {
        let s = slot.to_string();
        loop {
            let keys: Vec<String> = source.cmd(&["CLUSTER", "GETKEYSINSLOT", &s, "100"]);
            if keys.is_empty() {
                break;
            }
            self.migrate_keys(source, target, &keys);
        }
        let _: () = target.cmd(&["CLUSTER", "SETSLOT", &s, "NODE", &target.id]);
        let _: () = source.cmd(&["CLUSTER", "SETSLOT", &s, "NODE", &target.id]);
        for node in self
            .nodes
            .iter()
            .filter(|n| n.port != source.port && n.port != target.port)
        {
            let _: () = node.cmd(&["CLUSTER", "SETSLOT", &s, "NODE", &target.id]);
        }
        self.wait_consistent();
    }
}

fn slot_ranges(node: &Node) -> Vec<(i64, i64, String, u16)> {
    let value: redis::Value = node.cmd(&["CLUSTER", "SLOTS"]);
    let mut out = Vec::new();
    if let redis::Value::Array(ranges) = value {
        for range in ranges {
            if let redis::Value::Array(fields) = range {
                let int = |v: &redis::Value| match v {
                    redis::Value::Int(i) => *i,
                    _ => -1,
                };
                if let (Some(s), Some(e), Some(redis::Value::Array(master))) =
                    (fields.first(), fields.get(1), fields.get(2))
                {
                    let host = match master.first() {
                        Some(redis::Value::BulkString(h)) => {
                            String::from_utf8_lossy(h).into_owned()
                        }
                        _ => String::new(),
                    };
                    let port = master.get(1).map(int).unwrap_or(0) as u16;
                    out.push((int(s), int(e), host, port));
                }
            }
        }
    }
    out.sort();
    out
}

fn node_view(node: &Node, expected_nodes: usize) -> Option<Vec<(i64, i64, u16)>> {
    let info: String = redis::cmd("CLUSTER")
        .arg("INFO")
        .query(&mut node.conn())
        .ok()?;
    let ok = info.contains("cluster_state:ok")
        && info.contains(&format!("cluster_known_nodes:{expected_nodes}"));
    if !ok {
        return None;
    }
    Some(
        slot_ranges(node)
            .into_iter()
            .map(|(s, e, _, p)| (s, e, p))
            .collect(),
    )
}

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

/// A slotproxy running in this process on its own runtime.
pub struct TestProxy {
    /// Client address.
    pub addr: SocketAddr,
    /// Admin address.
    pub admin: SocketAddr,
    /// TLS client address, when the config has `[tls]`.
    pub tls: Option<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _data_dir: tempfile::TempDir,
}

impl TestProxy {
    /// Starts a proxy in front of `cluster` with default settings.
    pub fn start(cluster: &Cluster) -> TestProxy {
        Self::start_with(cluster, |_| {})
    }

    /// Starts a proxy after letting `tweak` change the config.
    pub fn start_with(
        cluster: &Cluster,
        tweak: impl FnOnce(&mut slotproxy::config::Config),
    ) -> TestProxy {
        let mut config = slotproxy::config::Config::default();
        config.proxy.listen = "127.0.0.1:0".into();
        config.admin.listen = "127.0.0.1:0".into();
        config.cluster.seeds = cluster.seeds();
        // Long enough that tests see MOVED before any periodic refresh fixes the map.
        config.cluster.refresh_interval_ms = 60_000;
        let data_dir = tempfile::tempdir().expect("tempdir");
        config.migration.data_dir = data_dir.path().to_path_buf();
        config.migration.lease_ttl_ms = 3000;
        // Tests that hold slots open by hand must not see the proxy "repair" them.
        config.migration.repair_grace_ms = 600_000;
        tweak(&mut config);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        // SLOTPROXY_TEST_LOG=debug (a tracing filter) shows the in-process proxy's log.
        if let Ok(filter) = std::env::var("SLOTPROXY_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let proxy = slotproxy::start(config).await.expect("proxy starts");
                assert!(
                    proxy.wait_ready(Duration::from_secs(20)).await,
                    "proxy loaded no slot map"
                );
                ready_tx
                    .send((proxy.client_addr, proxy.admin_addr, proxy.tls_addr))
                    .expect("report addr");
                let _ = stop_rx.await;
                proxy.shutdown().await;
            });
        });
        let (addr, admin, tls) = ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("proxy ready");
        TestProxy {
            addr,
            admin,
            tls,
            stop: Some(stop_tx),
            thread: Some(thread),
            _data_dir: data_dir,
        }
    }

    /// A new client connection to the proxy.
    pub fn conn(&self) -> redis::Connection {
        connect(&self.addr.to_string())
    }

    /// POST with a JSON body on the admin listener; returns (status, parsed body).
    pub fn admin_post(&self, path: &str, body: &str) -> (u16, serde_json::Value) {
        http_request(self.admin, "POST", path, body, None)
    }

    /// GET on the admin listener, parsed as JSON.
    pub fn admin_json(&self, path: &str) -> (u16, serde_json::Value) {
        http_request(self.admin, "GET", path, "", None)
    }

    /// Polls a job until it stops running; returns its last state.
    pub fn wait_job(&self, id: &str, timeout: Duration) -> serde_json::Value {
        wait_job(self.admin, id, timeout)
    }

    /// Waits (up to 60 s) for job `id` to end, asserts it completed and left no slot open in
    /// `cluster`, and returns it.
    pub fn wait_completed(&self, id: &str, cluster: &Cluster) -> serde_json::Value {
        let job = self.wait_job(id, Duration::from_secs(60));
        assert_eq!(job["state"], "completed", "{job}");
        assert!(
            cluster.open_slots().is_empty(),
            "{:?}",
            cluster.open_slots()
        );
        job
    }

    /// GET on the admin listener; returns (status, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path)
    }

    /// Starts a job moving `slots` (e.g. `"0-49"`) from `from` to `to`; returns its id.
    pub fn start_migration(&self, slots: &str, from: &Node, to: &Node) -> String {
        let body = format!(
            r#"{{"slots":"{slots}","from":"{}","to":"{}"}}"#,
            from.id, to.id
        );
        let (status, job) = self.admin_post("/migrations", &body);
        assert_eq!(status, 202, "{job}");
        job["id"].as_str().expect("job id").to_string()
    }

    /// The value of one metric sample line from `/metrics` (0 when absent).
    pub fn metric(&self, line_prefix: &str) -> f64 {
        let (_, body) = self.admin_get("/metrics");
        body.lines()
            .find(|l| l.starts_with(line_prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The real binary with a config file, so that it can be SIGKILLed and started again and its
/// memory read from /proc. Its log (stderr) goes to a file per start, read by [`Self::log`].
pub struct ProxyProcess {
    /// The process.
    pub child: Child,
    /// Client address.
    pub client: SocketAddr,
    /// Admin address.
    pub admin: SocketAddr,
    config: std::path::PathBuf,
    dir: tempfile::TempDir,
    starts: usize,
}

impl ProxyProcess {
    /// Starts the binary in front of `cluster` on free ports, with `proxy_lines` and
    /// `migration_lines` added to the `[proxy]` and `[migration]` sections of its config.
    pub fn launch(cluster: &Cluster, proxy_lines: &str, migration_lines: &str) -> ProxyProcess {
        Self::launch_with_env(cluster, proxy_lines, migration_lines, &[])
    }

    /// Like [`Self::launch`], with extra environment variables for this first start only
    /// (e.g. `FAILPOINTS`); [`Self::start_again`] starts without them.
    pub fn launch_with_env(
        cluster: &Cluster,
        proxy_lines: &str,
        migration_lines: &str,
        env: &[(&str, &str)],
    ) -> ProxyProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        let client: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let config = dir.path().join("proxy.toml");
        let seeds: Vec<String> = cluster.seeds().iter().map(|s| format!("{s:?}")).collect();
        std::fs::write(
            &config,
            format!(
                "[proxy]\nlisten = \"{client}\"\n{proxy_lines}\n[admin]\nlisten = \"{admin}\"\n\
                 [cluster]\nseeds = [{}]\n[migration]\ndata_dir = {:?}\n{migration_lines}\n\
                 [log]\nlevel = \"warn\"\n",
                seeds.join(", "),
                dir.path().join("data").display().to_string(),
            ),
        )
        .expect("write config");
        let log = dir.path().join("proxy-1.log");
        let child = spawn_proxy_binary(&config, &log, admin, env);
        ProxyProcess {
            child,
            client,
            admin,
            config,
            dir,
            starts: 1,
        }
    }

    fn log_path(&self) -> std::path::PathBuf {
        self.dir.path().join(format!("proxy-{}.log", self.starts))
    }

    /// What the current run has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Waits until the current run's log contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for the proxy to log {needle:?}; it logged:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Resident memory of the process, in KiB.
    pub fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("proxy status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// The value of one metric sample line from `/metrics` (0 when absent).
    pub fn metric(&self, line_prefix: &str) -> f64 {
        let (_, body) = http_get(self.admin, "/metrics");
        body.lines()
            .find(|l| l.starts_with(line_prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// Starts the binary again with the same config and addresses (after [`Self::kill`]).
    pub fn start_again(&mut self) {
        self.starts += 1;
        self.child = spawn_proxy_binary(&self.config, &self.log_path(), self.admin, &[]);
    }

    /// SIGKILL, and wait for the process to end.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the slotproxy binary with `config`, its stderr in `log`, and waits until `admin`
/// answers `/readyz`.
fn spawn_proxy_binary(
    config: &std::path::Path,
    log: &std::path::Path,
    admin: SocketAddr,
    env: &[(&str, &str)],
) -> Child {
    let log = std::fs::File::create(log).expect("proxy log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_slotproxy"))
        .arg("--config")
        .arg(config)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start slotproxy");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(TcpStream::connect(admin).is_ok() && http_get(admin, "/readyz").0 == 200) {
        if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the proxy did not get ready (config {})", config.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A minimal HTTP/1.1 GET.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_raw(addr, "GET", path, "", None)
}

/// One HTTP/1.1 request on its own connection; returns (status, body).
fn http_raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect admin");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Sends raw bytes and reads until the server closes or `timeout` passes.
pub fn raw_exchange(addr: SocketAddr, input: &[u8], timeout: Duration) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(timeout)).expect("timeout");
    stream.write_all(input).expect("write");
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    out
}

/// Sends each command of `script` in turn on a fresh connection to `addr`, reading for
/// `settle` after each; returns every byte received.
pub fn conversation(addr: SocketAddr, script: &[&[&str]], settle: Duration) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut out = Vec::new();
    let mut input = Vec::new();
    for command in script {
        input.extend_from_slice(format!("*{}\r\n", command.len()).as_bytes());
        for arg in *command {
            input.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
        }
        // One command at a time, as a client waiting for each reply would.
        stream.write_all(&input).expect("write");
        input.clear();
        let until = Instant::now() + settle;
        let mut buf = [0u8; 4096];
        while Instant::now() < until {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
    }
    out
}

/// Keys `prefix:0..n` that all hash to one slot (hash tag), and that slot.
pub fn keys_in_one_slot(tag: &str, n: usize) -> (u16, Vec<String>) {
    let slot = slotproxy::cluster::key_slot(tag.as_bytes());
    (slot, (0..n).map(|i| format!("{{{tag}}}:{i}")).collect())
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

/// A minimal HTTP/1.1 request with an optional bearer token; the body is parsed as JSON
/// (`Null` when it is not JSON).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> (u16, serde_json::Value) {
    let (status, body) = http_raw(addr, method, path, body, token);
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// Polls `GET /migrations/{id}` until the job is no longer pending/running.
pub fn wait_job(admin: SocketAddr, id: &str, timeout: Duration) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let (status, job) = http_request(admin, "GET", &format!("/migrations/{id}"), "", None);
        let state = job["state"].as_str().unwrap_or("").to_string();
        if status == 200 && !matches!(state.as_str(), "pending" | "running") {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} still {state} after {timeout:?}: {job}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl Cluster {
    /// Slots with a MIGRATING/IMPORTING marker on any node that answers (from each node's
    /// own view).
    pub fn open_slots(&self) -> Vec<String> {
        let mut open = Vec::new();
        for node in &self.nodes {
            let Some(text) = node.try_cmd::<String>(&["CLUSTER", "NODES"]) else {
                continue;
            };
            for line in text.lines().filter(|l| l.contains("myself")) {
                open.extend(
                    line.split_whitespace()
                        .filter(|w| w.starts_with('['))
                        .map(|w| format!("{}:{w}", node.port)),
                );
            }
        }
        open
    }

    /// Slots owned per node (by each node's own claim), in node order.
    pub fn slot_counts(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .map(|node| {
                let text: String = node.cmd(&["CLUSTER", "NODES"]);
                let me = text
                    .lines()
                    .find(|l| l.contains("myself"))
                    .unwrap_or("")
                    .to_string();
                me.split_whitespace()
                    .skip(8)
                    .filter(|w| !w.starts_with('['))
                    .map(|w| match w.split_once('-') {
                        Some((a, b)) => {
                            b.parse::<usize>().unwrap_or(0) - a.parse::<usize>().unwrap_or(0) + 1
                        }
                        None => 1,
                    })
                    .sum()
            })
            .collect()
    }

    /// Runs `redis-cli --cluster check` and returns (success, output).
    pub fn redis_cli_check(&self) -> (bool, String) {
        let out = Command::new("redis-cli")
            .args(["--cluster", "check", &self.nodes[0].addr()])
            .output()
            .expect("run redis-cli --cluster check");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let clean = out.status.success()
            && text.contains("[OK] All nodes agree about slots configuration.")
            && text.contains("[OK] All 16384 slots covered.")
            && !text.contains("[WARNING]")
            && !text.contains("[ERR]");
        (clean, text)
    }

    /// Total keys over all masters (DBSIZE of each; replicas hold copies).
    pub fn total_keys(&self) -> i64 {
        self.nodes
            .iter()
            .filter(|n| n.is_master())
            .map(|n| n.cmd::<i64>(&["DBSIZE"]))
            .sum()
    }
}

impl Cluster {
    /// Starts a cluster-enabled node that is not part of the cluster (for `POST /nodes`).
    pub fn spawn_loose_node(&self) -> Node {
        spawn_server(&self.dir_path, free_port(), true)
    }
}

/// Keys (no hash tags) spread over `slots`, `per_slot` in each.
pub fn keys_for_slots(slots: std::ops::RangeInclusive<u16>, per_slot: usize) -> Vec<String> {
    keys_for_slots_named("mk", slots, per_slot)
}

/// Keys `prefix:N` (no hash tags) spread over `slots`, `per_slot` in each.
pub fn keys_for_slots_named(
    prefix: &str,
    slots: std::ops::RangeInclusive<u16>,
    per_slot: usize,
) -> Vec<String> {
    let mut counts = std::collections::HashMap::<u16, usize>::new();
    let mut keys = Vec::new();
    let want = (slots.end() - slots.start() + 1) as usize * per_slot;
    let mut n = 0u64;
    while keys.len() < want && n < 50_000_000 {
        let key = format!("{prefix}:{n}");
        let slot = slotproxy::cluster::key_slot(key.as_bytes());
        if slots.contains(&slot) {
            let c = counts.entry(slot).or_default();
            if *c < per_slot {
                *c += 1;
                keys.push(key);
            }
        }
        n += 1;
    }
    keys
}

/// Writes `key → "val-" + key` for every key, pipelined.
pub fn write_keys(con: &mut redis::Connection, keys: &[String]) {
    for chunk in keys.chunks(500) {
        let mut pipe = redis::pipe();
        for k in chunk {
            pipe.cmd("SET").arg(k).arg(format!("val-{k}")).ignore();
        }
        pipe.query::<()>(con).expect("write keys");
    }
}

/// Asserts every key reads back as written by [`write_keys`].
pub fn check_keys(con: &mut redis::Connection, keys: &[String]) {
    for chunk in keys.chunks(500) {
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(chunk).query(con).expect("MGET");
        for (k, v) in chunk.iter().zip(values) {
            assert_eq!(v, Some(format!("val-{k}")), "key {k}");
        }
    }
}
