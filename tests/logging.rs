//! Structured logs: JSON lines, every migration step tagged with its job and slot, and no
//! credential anywhere in the output.

mod common;
use common::{free_port, keys_for_slots, write_keys, Cluster};
use std::process::{Command, Stdio};
use std::time::Duration;

const PASSWORD: &str = "pw-never-in-logs-7731";

#[test]
fn json_logs_tag_migration_steps_and_never_show_credentials() {
    let cluster = Cluster::start(3, 0);
    for node in &cluster.nodes {
        let secret = format!(">{PASSWORD}");
        let _: () = node.cmd(&[
            "ACL", "SETUSER", "proxy", "on", &secret, "~*", "&*", "+@all",
        ]);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (client, admin) = (free_port(), free_port());
    let seeds: Vec<String> = cluster.seeds().iter().map(|s| format!("{s:?}")).collect();
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "[proxy]\nlisten = \"127.0.0.1:{client}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\ntoken = \"tok-also-secret\"\n\
             [cluster]\nseeds = [{}]\nusername = \"proxy\"\npassword = \"{PASSWORD}\"\n\
             [migration]\ndata_dir = {:?}\n[log]\nlevel = \"slotproxy=debug,info\"\nformat = \"json\"\n",
            seeds.join(", "),
            dir.path().join("data").display().to_string()
        ),
    )
    .expect("config");
    let log_path = dir.path().join("proxy.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_slotproxy"))
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log file"))
        .spawn()
        .expect("start slotproxy");
    let admin_addr: std::net::SocketAddr = format!("127.0.0.1:{admin}").parse().expect("addr");
    common::wait_until(Duration::from_secs(20), "the proxy to be ready", || {
        std::net::TcpStream::connect(admin_addr).is_ok()
            && common::http_get(admin_addr, "/readyz").0 == 200
    });
    let mut con = common::connect(&format!("127.0.0.1:{client}"));
    write_keys(&mut con, &keys_for_slots(0..=2, 3));
    let body = format!(
        r#"{{"slots":"0-2","from":"{}","to":"{}"}}"#,
        cluster.nodes[0].addr(),
        cluster.nodes[1].addr()
    );
    let (status, job) = common::http_request(
        admin_addr,
        "POST",
        "/migrations",
        &body,
        Some("tok-also-secret"),
    );
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().expect("id").to_string();
    let done = common::wait_job(admin_addr, &id, Duration::from_secs(30));
    assert_eq!(done["state"], "completed", "{done}");
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();

    let log = std::fs::read_to_string(&log_path).expect("read log");
    assert!(
        !log.contains(PASSWORD),
        "the node password appears in the log"
    );
    assert!(
        !log.contains("tok-also-secret"),
        "the admin token appears in the log"
    );
    assert!(
        log.contains("<redacted>"),
        "the configuration line is logged, redacted"
    );
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for step in ["step 1", "step 2", "step 3", "step 4", "step 5", "step 6"] {
        let tagged = lines.iter().any(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(step))
                && l["span"]["job"] == id.as_str()
                // Slot by slot each line names its slot; in a batch, the batch's slots.
                && ((l["span"]["name"] == "slot_move" && l["span"]["slot"].is_number())
                    || (l["span"]["name"] == "batch_move" && l["span"]["slots"] == "0-2"))
        });
        assert!(
            tagged,
            "no JSON line for {step} tagged with job {id} and its slots"
        );
    }
}
