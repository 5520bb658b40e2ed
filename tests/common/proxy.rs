//! slotproxy under test: in-process ([`TestProxy`]) or the real binary ([`ProxyProcess`]).

use super::cluster::Cluster;
use super::connect;
use super::net::{http_get, http_request};
use super::node::{free_port, Node};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
