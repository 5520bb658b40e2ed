//! `/metrics` and `/slots/stats` after real traffic and a migration, checked by `promtool`,
//! and scraped by a real Prometheus server.

mod common;
use common::{keys_for_slots, write_keys, Cluster, TestProxy};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Sum of every sample of `family` whose line contains all of `labels`.
fn sum(scrape: &str, family: &str, labels: &[&str]) -> f64 {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(family) && l[family.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

fn promtool_check_metrics(scrape: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect(
            "promtool (Debian package prometheus) must be installed: apt-get install -y prometheus",
        );
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(scrape.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn metrics_follow_traffic_redirects_and_a_migration() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    let mut con = proxy.conn();
    for i in 0..100 {
        let _: () = redis::cmd("SET")
            .arg(format!("m:{i}"))
            .arg(i)
            .query(&mut con)
            .expect("SET");
        let _: Option<String> = redis::cmd("GET")
            .arg(format!("m:{i}"))
            .query(&mut con)
            .expect("GET");
    }
    for _ in 0..50 {
        let _: i64 = redis::cmd("INCR").arg("hot").query(&mut con).expect("INCR");
    }
    let _: () = redis::cmd("MSET")
        .arg("a")
        .arg(1)
        .arg("b")
        .arg(2)
        .query(&mut con)
        .expect("MSET");
    let _: i64 = redis::cmd("DBSIZE").query(&mut con).expect("DBSIZE");
    let _: String = redis::cmd("PING").query(&mut con).expect("PING");
    let _: (i64,) = redis::pipe()
        .atomic()
        .incr("hot", 1)
        .query(&mut con)
        .expect("MULTI/EXEC");
    let _: i64 = redis::cmd("LPUSH")
        .arg("list")
        .arg(1)
        .query(&mut con)
        .expect("LPUSH");
    assert!(redis::cmd("GET")
        .arg("list")
        .query::<Option<String>>(&mut con)
        .is_err());
    assert!(redis::cmd("NOSUCHCOMMAND").query::<()>(&mut con).is_err());

    // A slot moved behind the proxy's back: one hidden MOVED.
    let (slot, keys) = common::keys_in_one_slot("metrics", 5);
    for k in &keys {
        let _: () = redis::cmd("SET")
            .arg(k)
            .arg(1)
            .query(&mut con)
            .expect("SET");
    }
    let source = cluster.owner_of(slot);
    let target = cluster.other_than(source);
    cluster.begin_migration(slot, source, target);
    cluster.finish_migration(slot, source, target);
    let _: Option<String> = redis::cmd("GET")
        .arg(&keys[0])
        .query(&mut con)
        .expect("GET");

    // A migration by the proxy.
    let moving = keys_for_slots(100..=109, 5);
    write_keys(&mut con, &moving);
    let body = format!(
        r#"{{"slots":"100-109","from":"{}","to":"{}"}}"#,
        cluster.nodes[0].addr(),
        cluster.nodes[1].addr()
    );
    let (status, job) = proxy.admin_post("/migrations", &body);
    assert_eq!(status, 202, "{job}");
    let done = proxy.wait_job(job["id"].as_str().expect("id"), Duration::from_secs(60));
    assert_eq!(done["state"], "completed", "{done}");

    let (status, scrape) = proxy.admin_get("/metrics");
    assert_eq!(status, 200);
    let (ok, lint) = promtool_check_metrics(&scrape);
    assert!(ok, "promtool check metrics: {lint}");

    let get = |family: &str, labels: &[&str]| sum(&scrape, family, labels);
    assert!(
        get(
            "slotproxy_commands_total",
            &[r#"command="set""#, r#"result="ok""#]
        ) >= 105.0
    );
    assert_eq!(
        get("slotproxy_commands_total", &[r#"command="incr""#]),
        50.0
    );
    assert_eq!(
        get(
            "slotproxy_commands_total",
            &[r#"command="get""#, r#"result="wrongtype""#]
        ),
        1.0
    );
    assert!(
        get(
            "slotproxy_commands_total",
            &[r#"command="other""#, r#"result="err""#]
        ) >= 1.0
    );
    for group in [
        "read",
        "write",
        "multi_key",
        "fan_out",
        "local",
        "rejected",
        "pinned",
    ] {
        let label = format!(r#"group="{group}""#);
        assert!(
            get("slotproxy_command_duration_seconds_count", &[&label]) >= 1.0,
            "{group}"
        );
    }
    assert!(get("slotproxy_client_received_bytes_total", &[]) > 1000.0);
    assert!(get("slotproxy_client_sent_bytes_total", &[]) > 500.0);
    assert_eq!(get("slotproxy_client_connections", &[]), 1.0);
    for node in cluster.seeds() {
        let label = format!(r#"node="{node}""#);
        assert!(
            get("slotproxy_upstream_connections", &[&label]) >= 1.0,
            "{node}"
        );
        assert!(
            get("slotproxy_upstream_requests_total", &[&label]) >= 1.0,
            "{node}"
        );
    }
    assert!(get("slotproxy_redirects_total", &[r#"kind="moved""#]) >= 1.0);
    assert_eq!(get("slotproxy_slots", &[]), 16384.0);
    assert_eq!(get("slotproxy_migration_slots_migrated_total", &[]), 10.0);
    assert_eq!(get("slotproxy_migration_keys_migrated_total", &[]), 50.0);
    assert_eq!(
        get("slotproxy_migration_jobs", &[r#"state="completed""#]),
        1.0
    );
    assert_eq!(get("slotproxy_migration_slots_remaining", &[]), 0.0);
    assert_eq!(get("slotproxy_migration_lease_held", &[]), 0.0);
    assert!(get("process_resident_memory_bytes", &[]) > 0.0);

    // The hottest slot is the one of `hot`, with its owner and key count.
    let (status, stats) = proxy.admin_json("/slots/stats?top=3");
    assert_eq!(status, 200, "{stats}");
    let hottest = &stats["slots"][0];
    assert_eq!(
        hottest["slot"],
        slotproxy::cluster::key_slot(b"hot"),
        "{stats}"
    );
    assert!(hottest["ops_total"].as_u64().unwrap_or(0) >= 50, "{stats}");
    assert_eq!(hottest["keys"], 1, "{stats}");
    assert!(
        hottest["owner"]
            .as_str()
            .unwrap_or("")
            .starts_with("127.0.0.1:"),
        "{stats}"
    );
    assert_eq!(stats["slots"].as_array().map(|a| a.len()), Some(3));
    let (status, _) = proxy.admin_json("/slots/stats?top=0");
    assert_eq!(status, 400);
}

/// A Prometheus server on a free loopback port, stopped on drop.
struct PrometheusServer {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PrometheusServer {
    fn start(target: std::net::SocketAddr) -> PrometheusServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let alerts = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus/alerts.yml");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {alerts}\n\
                 scrape_configs:\n  - job_name: slotproxy\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .expect("write prometheus.yml");
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", common::free_port())
            .parse()
            .expect("addr");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package prometheus) must be installed: apt-get install -y prometheus");
        PrometheusServer {
            child,
            addr,
            _dir: dir,
        }
    }

    /// The value of an instant query's first sample, if any.
    fn query(&self, promql: &str) -> Option<f64> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        std::net::TcpStream::connect(self.addr).ok()?;
        let (status, body) = common::http_get(self.addr, &format!("/api/v1/query?query={encoded}"));
        if status != 200 {
            return None;
        }
        let json: serde_json::Value = serde_json::from_str(&body).ok()?;
        json["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

#[test]
fn a_real_prometheus_scrapes_the_proxy_and_loads_the_alert_rules() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    let mut con = proxy.conn();
    for i in 0..20 {
        let _: () = redis::cmd("SET")
            .arg(format!("p:{i}"))
            .arg(i)
            .query(&mut con)
            .expect("SET");
    }
    let prometheus = PrometheusServer::start(proxy.admin);
    common::wait_until(
        Duration::from_secs(60),
        "Prometheus to scrape slotproxy",
        || {
            prometheus.query(r#"up{job="slotproxy"}"#) == Some(1.0)
                && prometheus
                    .query(r#"sum(slotproxy_commands_total{command="set"})"#)
                    .is_some_and(|v| v >= 20.0)
        },
    );
    let (status, body) = common::http_get(prometheus.addr, "/api/v1/rules");
    assert_eq!(status, 200);
    assert!(
        body.contains("SlotproxyMigrationStalled") && body.contains("SlotproxyDown"),
        "{body}"
    );
    assert!(
        !body.contains(r#""health":"err""#),
        "a rule failed to evaluate: {body}"
    );
}
