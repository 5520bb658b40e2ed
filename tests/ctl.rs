//! `slotproxy ctl` end to end: the real binary against a proxy in front of a real cluster,
//! with stdin and stdout not terminals (line output, no prompts) unless a test makes a pty.

mod common;
use common::{Cluster, TestProxy};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

/// What one `slotproxy ctl …` run printed.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn ctl_with(admin: &str, token: Option<&str>, args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_slotproxy"));
    command
        .arg("ctl")
        .arg("--admin")
        .arg(admin)
        .args(args)
        .env_remove("SLOTPROXY_ADMIN_TOKEN")
        .stdin(Stdio::null());
    if let Some(token) = token {
        command.env("SLOTPROXY_ADMIN_TOKEN", token);
    }
    let out = command.output().expect("run slotproxy ctl");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ctl(admin: SocketAddr, args: &[&str]) -> Run {
    ctl_with(&format!("http://{admin}"), None, args)
}

/// A proxy migrating at most `rate` keys/s, one slot at a time, with `per_slot` keys written
/// in each of `slots`.
fn slow_proxy(
    cluster: &Cluster,
    rate: u64,
    slots: std::ops::RangeInclusive<u16>,
    per_slot: usize,
) -> TestProxy {
    let proxy = TestProxy::start_with(cluster, |c| {
        c.migration.max_keys_per_second = rate;
        c.migration.parallel_slots = 1;
    });
    common::write_keys(&mut proxy.conn(), &common::keys_for_slots(slots, per_slot));
    proxy
}

fn slot_counts(admin: SocketAddr) -> Vec<(String, u64)> {
    let run = ctl(admin, &["status", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let status: serde_json::Value = serde_json::from_str(&run.stdout).expect("status JSON");
    status["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                n["addr"].as_str().unwrap_or("").to_string(),
                n["slot_count"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[test]
fn add_node_rebalance_to_even_and_check_before_and_after() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    let mut con = proxy.conn();
    let keys: Vec<String> = (0..2000).map(|i| format!("user:{i}")).collect();
    common::write_keys(&mut con, &keys);

    let before = ctl(proxy.admin, &["check"]);
    assert_eq!(before.code, 0, "{before:?}");
    assert!(
        before.stdout.contains("[OK] All 16384 slots covered."),
        "{before:?}"
    );
    assert!(before.stdout.contains("[OK] No open slots."), "{before:?}");

    let spare = cluster.spawn_loose_node();
    let added = ctl(proxy.admin, &["add-node", &spare.addr()]);
    assert_eq!(added.code, 0, "{added:?}");
    assert!(
        added.stdout.contains("joined as an empty master"),
        "{added:?}"
    );
    let status = ctl(proxy.admin, &["status"]);
    assert!(status.stdout.contains(&spare.addr()), "{status:?}");
    assert!(
        status
            .stdout
            .starts_with("cluster: 16384/16384 slots covered"),
        "{status:?}"
    );

    let dry = ctl(
        proxy.admin,
        &["rebalance", "--use-empty-masters", "--dry-run"],
    );
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(dry.stdout.contains("4096 slots, about"), "{dry:?}");
    assert_eq!(
        slot_counts(proxy.admin)
            .iter()
            .filter(|(_, n)| *n == 0)
            .count(),
        1
    );

    let run = ctl(proxy.admin, &["rebalance", "--use-empty-masters"]);
    assert_eq!(run.code, 0, "{run:?}");
    // Line-based, parseable output: the plan, the start, progress lines, the end.
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].starts_with("FROM"), "{run:?}");
    let started = lines
        .iter()
        .find_map(|l| {
            l.strip_prefix("job ")
                .and_then(|l| l.strip_suffix(" started"))
        })
        .expect("a 'job … started' line");
    let last = lines.last().expect("a last line");
    assert!(
        last.starts_with(&format!("job {started} completed: 4096/4096 slots")),
        "{run:?}"
    );
    for line in lines.iter().filter(|l| l.contains(" running: ")) {
        assert!(
            line.contains(" slots, ") && line.contains(" keys/s"),
            "{line}"
        );
    }
    assert!(
        !run.stdout.contains('\r'),
        "no progress bar when stdout is not a terminal"
    );
    for (addr, count) in slot_counts(proxy.admin) {
        assert_eq!(count, 4096, "{addr}");
    }
    let after = ctl(proxy.admin, &["check"]);
    assert_eq!(after.code, 0, "{after:?}");
    common::check_keys(&mut con, &keys);
}

#[test]
fn reshard_an_explicit_range_and_a_count_of_slots() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    let (a, b, c) = (&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]);
    let dry = ctl(
        proxy.admin,
        &[
            "reshard",
            "--from",
            &a.addr(),
            "--to",
            &b.id,
            "--slots",
            "0-99",
            "--dry-run",
        ],
    );
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(dry.stdout.contains("0-99"), "{dry:?}");
    assert_eq!(cluster.owner_of(0).port, a.port, "a dry run moves nothing");

    let run = ctl(
        proxy.admin,
        &[
            "reshard",
            "--from",
            &a.addr(),
            "--to",
            &b.id[..10],
            "--slots",
            "0-99",
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("completed: 100/100 slots"), "{run:?}");
    assert_eq!(cluster.owner_of(0).port, b.port);
    assert_eq!(cluster.owner_of(99).port, b.port);
    assert_eq!(cluster.owner_of(100).port, a.port);

    // A plain number is a count, taken from the source's lowest slots.
    let run = ctl(
        proxy.admin,
        &[
            "reshard",
            "--from",
            &b.addr(),
            "--to",
            &c.addr(),
            "--slots",
            "10",
            "--yes",
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("completed: 10/10 slots"), "{run:?}");
    assert_eq!(cluster.owner_of(9).port, c.port);
    assert_eq!(cluster.owner_of(10).port, b.port);
}

#[test]
fn drain_then_del_node_leaves_the_node_free_to_shut_down() {
    let cluster = Cluster::start(3, 1);
    let proxy = TestProxy::start(&cluster);
    let spare = &cluster.nodes[3];
    let mut con = proxy.conn();
    let keys = common::keys_for_slots(0..=49, 5);
    common::write_keys(&mut con, &keys);
    let run = ctl(
        proxy.admin,
        &[
            "reshard",
            "--from",
            &cluster.nodes[0].addr(),
            "--to",
            &spare.addr(),
            "--slots",
            "0-49",
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");

    // The API refuses to forget a node that still owns slots.
    let (status, refused) = common::http_request(
        proxy.admin,
        "DELETE",
        &format!("/nodes/{}", spare.id),
        "",
        None,
    );
    assert_eq!(status, 409, "{refused}");
    assert!(refused["error"]
        .as_str()
        .unwrap_or("")
        .contains("drain it first"));

    let run = ctl(proxy.admin, &["del-node", &spare.addr()]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("completed: 50/50 slots"), "{run:?}");
    assert!(run.stdout.contains("it may be shut down"), "{run:?}");
    common::wait_until(Duration::from_secs(10), "the others to forget it", || {
        cluster.nodes[..3].iter().all(|n| {
            let info: String = n.cmd(&["CLUSTER", "INFO"]);
            info.contains("cluster_known_nodes:3")
        })
    });
    let own: String = spare.cmd(&["CLUSTER", "INFO"]);
    assert!(
        own.contains("cluster_known_nodes:1"),
        "the node was reset: {own}"
    );
    common::check_keys(&mut con, &keys);
    let check = ctl(proxy.admin, &["check"]);
    assert_eq!(check.code, 0, "{check:?}");
}

#[test]
fn check_finds_an_open_slot_and_fix_repairs_it() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    let (slot, keys) = common::keys_in_one_slot("fixme", 10);
    let mut con = proxy.conn();
    common::write_keys(&mut con, &keys);
    let source = cluster.owner_of(slot);
    let target = cluster.other_than(source);
    cluster.begin_migration(slot, source, target);
    cluster.migrate_keys(source, target, &keys[..4]);

    let check = ctl(proxy.admin, &["check"]);
    assert_eq!(check.code, 1, "{check:?}");
    assert!(
        check.stdout.contains(&format!(
            "[WARNING] slot {slot} is migrating on {}",
            source.addr()
        )),
        "{check:?}"
    );
    assert!(check.stdout.contains(&format!(
        "[WARNING] slot {slot} is importing on {}",
        target.addr()
    )));
    let fix = ctl(proxy.admin, &["fix"]);
    assert_eq!(fix.code, 0, "{fix:?}");
    assert!(
        fix.stdout.contains(&format!(
            "repaired: slot {slot}: finished the interrupted move"
        )),
        "{fix:?}"
    );
    assert!(fix.stdout.contains("no open slot left"), "{fix:?}");
    let check = ctl(proxy.admin, &["check"]);
    assert_eq!(check.code, 0, "{check:?}");
    common::check_keys(&mut con, &keys);
}

#[test]
fn jobs_pause_resume_and_cancel() {
    let cluster = Cluster::start(3, 0);
    let proxy = slow_proxy(&cluster, 200, 0..=39, 20);
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let run = ctl(
        proxy.admin,
        &[
            "reshard",
            "--from",
            &a.addr(),
            "--to",
            &b.addr(),
            "--slots",
            "0-39",
            "--no-watch",
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let id = run
        .stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("job ")
                .and_then(|l| l.strip_suffix(" started"))
        })
        .expect("job id")
        .to_string();
    // Ctrl-C on a watch that is not on a terminal detaches: the job goes on.
    let watcher = Command::new(env!("CARGO_BIN_EXE_slotproxy"))
        .args([
            "ctl",
            "--admin",
            &format!("http://{}", proxy.admin),
            "watch",
            &id,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start ctl watch");
    std::thread::sleep(Duration::from_millis(1500));
    let status = Command::new("kill")
        .args(["-INT", &watcher.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(status.success());
    let out = watcher.wait_with_output().expect("watch ends");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("detached; job {id} goes on")),
        "{text}"
    );
    assert!(text.contains(&format!("job {id} running: ")), "{text}");
    let (_, job) = proxy.admin_json(&format!("/migrations/{id}"));
    assert_eq!(job["state"], "running", "{job}");

    let paused = ctl(proxy.admin, &["pause", &id]);
    assert_eq!(paused.code, 0, "{paused:?}");
    let job = proxy.wait_job(&id, Duration::from_secs(30));
    assert_eq!(job["state"], "paused", "{job}");
    let jobs = ctl(proxy.admin, &["jobs"]);
    assert!(jobs.stdout.starts_with("JOB"), "{jobs:?}");
    assert!(
        jobs.stdout.contains(&id) && jobs.stdout.contains("paused"),
        "{jobs:?}"
    );

    let resumed = ctl(proxy.admin, &["resume", &id, "--no-watch"]);
    assert_eq!(resumed.code, 0, "{resumed:?}");
    let cancelled = ctl(proxy.admin, &["cancel", &id]);
    assert_eq!(cancelled.code, 0, "{cancelled:?}");
    // `watch` follows it to its end and says how it ended (not completed: exit 1).
    let watched = ctl(proxy.admin, &["watch", &id]);
    assert!(
        watched.stdout.contains(&format!("job {id} cancelled")),
        "{watched:?}"
    );
    assert_eq!(watched.code, 1, "{watched:?}");
    assert!(
        cluster.open_slots().is_empty(),
        "{:?}",
        cluster.open_slots()
    );
}

#[test]
fn errors_are_one_clear_line_with_a_non_zero_exit() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start_with(&cluster, |c| c.admin.token = "s3cret".into());
    let admin = format!("http://{}", proxy.admin);

    let denied = ctl_with(&admin, Some("wrong"), &["rebalance", "--dry-run"]);
    assert_eq!(denied.code, 2, "{denied:?}");
    assert_eq!(denied.stderr.lines().count(), 1, "{denied:?}");
    assert!(
        denied.stderr.contains("401 Unauthorized")
            && denied.stderr.contains("Authorization: Bearer"),
        "{denied:?}"
    );
    assert!(
        !denied.stderr.contains("wrong"),
        "the token is never printed"
    );
    let allowed = ctl_with(&admin, Some("s3cret"), &["rebalance", "--dry-run"]);
    assert_eq!(allowed.code, 0, "{allowed:?}");
    // Reading needs no token.
    assert_eq!(ctl_with(&admin, None, &["status"]).code, 0);

    let bad = ctl_with(
        &admin,
        Some("s3cret"),
        &[
            "reshard",
            "--from",
            "nosuchnode",
            "--to",
            "127.0.0.1:1",
            "--slots",
            "5",
        ],
    );
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(bad.stderr.starts_with("slotproxy ctl: POST "), "{bad:?}");
    assert!(
        bad.stderr
            .contains("400 Bad Request: unknown node \"nosuchnode\""),
        "{bad:?}"
    );

    let port = common::free_port();
    let gone = ctl_with(&format!("http://127.0.0.1:{port}"), None, &["status"]);
    assert_eq!(gone.code, 2, "{gone:?}");
    assert!(
        gone.stderr.contains(&format!(
            "cannot reach the admin API at http://127.0.0.1:{port}"
        )),
        "{gone:?}"
    );
    let https = ctl_with("https://127.0.0.1:9180", None, &["status"]);
    assert_eq!(https.code, 2, "{https:?}");
    assert!(https.stderr.contains("plain http"), "{https:?}");
}

#[test]
fn on_a_terminal_watch_draws_a_progress_bar() {
    let cluster = Cluster::start(3, 0);
    let proxy = slow_proxy(&cluster, 300, 0..=19, 30);
    let command = format!(
        "{} ctl --admin http://{} reshard --from {} --to {} --slots 0-19 --yes",
        env!("CARGO_BIN_EXE_slotproxy"),
        proxy.admin,
        cluster.nodes[0].addr(),
        cluster.nodes[1].addr()
    );
    // `script` runs the command on a pseudo-terminal and copies what it printed.
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("run script (util-linux)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("/20 slots"), "a bar counting slots: {text}");
    assert!(text.contains("=>") || text.contains("=="), "a bar: {text}");
    assert!(text.contains("completed: 20/20 slots"), "{text}");
}
