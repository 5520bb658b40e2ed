//! `docs/commands.md` lists every command of the cluster's own `COMMAND` reply with what the
//! proxy does with it, so no command is forgotten and the document cannot drift from the code.
//! Regenerate with `UPDATE_DOCS=1 cargo test --test command_doc`.

mod common;
use common::Cluster;
use slotproxy::protocol::command::CommandTable;

const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/commands.md");

fn render(table: &CommandTable, version: &str) -> String {
    let mut out = String::new();
    out.push_str("# Command compatibility\n\n");
    out.push_str(&format!(
        "Every command and subcommand of Redis {version} (from the cluster's own `COMMAND` reply) and what \
         slotproxy does with it. Generated and checked by `tests/command_doc.rs`; regenerate with \
         `UPDATE_DOCS=1 cargo test --test command_doc`.\n\n"
    ));
    out.push_str(
        "Status: **routed** to the node owning the keys' slot (keyless: a master), **split** by \
         slot and joined, **fan-out** to every master and joined, **pinned** (transactions, \
         blocking commands, Pub/Sub: a connection or state of the client's own), **local** \
         (answered by the proxy), **admin mode** (node administration, run across the cluster \
         only with `[compat] admin_commands = true`, refused otherwise), **refused** (with the \
         reason).\n\n",
    );
    out.push_str("| command | writes | status | how, or why not |\n|---|---|---|---|\n");
    for info in table.all() {
        let name = info.name.replace('|', " ").to_uppercase();
        let writes = if info.write { "yes" } else { "" };
        out.push_str(&format!(
            "| `{name}` | {writes} | {} | {} |\n",
            info.status(),
            info.describe()
        ));
    }
    out
}

#[test]
fn the_compatibility_document_lists_every_command() {
    let cluster = Cluster::start(1, 0);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let settings = std::sync::Arc::new(slotproxy::upstream::Settings::from_config(
        &slotproxy::config::ClusterSection::default(),
    ));
    let addr = cluster.nodes[0].addr();
    let raw = runtime
        .block_on(slotproxy::upstream::oneshot::query(
            &addr,
            &["COMMAND"],
            &settings,
            std::time::Duration::from_secs(5),
        ))
        .expect("COMMAND");
    let table = CommandTable::from_command_reply(&raw).expect("table");
    let version: String = cluster.nodes[0].cmd(&["INFO", "server"]);
    let version = version
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("?")
        .trim()
        .to_string();
    let want = render(&table, &version);
    if std::env::var("UPDATE_DOCS").is_ok() {
        std::fs::write(DOC, &want).expect("write docs/commands.md");
    }
    let have = std::fs::read_to_string(DOC).unwrap_or_default();
    assert!(
        have == want,
        "docs/commands.md is out of date; run `UPDATE_DOCS=1 cargo test --test command_doc`"
    );
    assert!(table.all().len() > 200, "{} commands", table.all().len());
}
