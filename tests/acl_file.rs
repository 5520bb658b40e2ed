//! `[auth] aclfile`: users from a file in Redis' format at start, `ACL SAVE` and `ACL LOAD`,
//! and a bad file named precisely (at start: exit 64 with file and line; at `ACL LOAD`: Redis'
//! error, nothing changed).

mod common;
use common::{connect, Cluster, TestProxy};
use std::process::Command;
use std::time::Duration;

fn auth(addr: &str, user: &str, password: &str) -> Result<String, String> {
    let mut con = connect(addr);
    redis::cmd("AUTH")
        .arg(&[user, password])
        .query::<String>(&mut con)
        .map_err(|e| e.to_string())
}

#[test]
fn users_come_from_the_acl_file_and_go_back_to_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("users.acl");
    std::fs::write(
        &file,
        "user default on nopass ~* &* +@all\nuser reader on >rpw ~* resetchannels -@all +get\n",
    )
    .expect("write acl file");
    let cluster = Cluster::start(3, 0);
    let path = file.display().to_string();
    let proxy = TestProxy::start_with(&cluster, |c| c.auth.aclfile = path.clone());
    let addr = proxy.addr.to_string();
    common::wait_until(Duration::from_secs(5), "the file's user to log in", || {
        auth(&addr, "reader", "rpw").is_ok()
    });
    let mut reader = connect(&addr);
    let _: String = redis::cmd("AUTH")
        .arg(&["reader", "rpw"])
        .query(&mut reader)
        .expect("auth");
    let denied = redis::cmd("SET")
        .arg(&["k", "v"])
        .query::<String>(&mut reader);
    assert!(
        format!("{denied:?}").to_lowercase().contains("noperm"),
        "{denied:?}"
    );

    let mut admin = proxy.conn();
    let _: String = redis::cmd("ACL")
        .arg(&["SETUSER", "writer", "on", ">wpw", "~w:*", "+set"])
        .query(&mut admin)
        .expect("setuser");
    let _: String = redis::cmd("ACL")
        .arg("SAVE")
        .query(&mut admin)
        .expect("save");
    let saved = std::fs::read_to_string(&file).expect("read saved");
    assert!(
        saved.contains("user writer on #") && saved.contains("~w:* resetchannels -@all +set"),
        "{saved}"
    );
    assert!(
        !saved.contains("wpw"),
        "no clear-text password in the file: {saved}"
    );

    // A broken file: Redis' error, and nothing changes.
    std::fs::write(&file, "user a on\nbogus line\n").expect("write");
    let err = redis::cmd("ACL")
        .arg("LOAD")
        .query::<String>(&mut admin)
        .unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "{}:2 should start with user keyword",
            file.display()
        )) && err
            .to_string()
            .contains("no change to the previously active ACL rules"),
        "{err}"
    );
    assert!(auth(&addr, "writer", "wpw").is_ok());

    // A good one replaces every user and closes the connections of the old ones.
    std::fs::write(
        &file,
        "user default on nopass ~* &* +@all\nuser fresh on >fpw ~* +@all\n",
    )
    .expect("write");
    let _: String = redis::cmd("ACL")
        .arg("LOAD")
        .query(&mut admin)
        .expect("load");
    assert!(auth(&addr, "fresh", "fpw").is_ok());
    assert!(auth(&addr, "writer", "wpw").is_err());
    common::wait_until(
        Duration::from_secs(3),
        "reader's connection to close",
        || redis::cmd("PING").query::<String>(&mut reader).is_err(),
    );
}

#[test]
fn a_bad_acl_file_stops_the_start_naming_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("users.acl");
    std::fs::write(&file, "user ok on nopass\nuser broken on ~a allkeys ~b\n").expect("write");
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        format!("[auth]\naclfile = {:?}\n", file.display().to_string()),
    )
    .expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_slotproxy"))
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run slotproxy");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("auth.aclfile")
            && stderr.contains(&format!(
                "{}:2: Adding a pattern after the * pattern",
                file.display()
            )),
        "{stderr}"
    );
}
