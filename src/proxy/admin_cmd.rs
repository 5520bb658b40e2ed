//! Node administration for trusted clients (`[compat] admin_commands`): `CONFIG` on every
//! node, `DEBUG` by key or on every master, `SLOWLOG`, `LATENCY` and `MEMORY` over the whole
//! cluster. Without the option each of these is refused with one error naming the option
//! (`CONFIG GET` stays open: it only reads, and tools ask for it when they connect).
//!
//! Replicas are reached only by `CONFIG SET|RESETSTAT|REWRITE`, on connections of their own
//! (the data path talks to masters only): a setting that differs on a replica would come back
//! after a failover.

use super::action::{send, Action};
use super::Shared;
use crate::cluster::nodes;
use crate::cluster::{key_slot, Snapshot};
use crate::protocol::command::{admin_mode_refusal, Admin};
use crate::protocol::{reply, scan, Request};
use crate::upstream::control::{error_text, ControlConn};
use crate::upstream::Lane;
use bytes::Bytes;
use futures_util::future::join_all;
use std::sync::Arc;
use std::time::Duration;

/// DEBUG subcommands refused even for trusted clients: they restart, crash, empty or
/// disconnect a node from its replicas, or create keys in slots the node does not own.
/// (`RELOAD` and `LOADAOF` are let through when they keep the data: [`reload_refusal`],
/// [`loadaof_refusal`].)
const DEBUG_FORBIDDEN: &[&str] = &[
    "restart",
    "crash-and-recover",
    "segfault",
    "panic",
    "assert",
    "oom",
    "set-disable-deny-scripts",
    "change-repl-id",
    "populate",
];

/// Configuration `CONFIG SET` may not change even for trusted clients: it would lock the
/// proxy (or the replicas) out of the nodes, or move them where nobody finds them.
const CONFIG_FORBIDDEN: &[&str] = &[
    "requirepass",
    "masterauth",
    "masteruser",
    "port",
    "tls-port",
    "bind",
    "bind-source-addr",
    "unixsocket",
    "protected-mode",
    "aclfile",
    "cluster-port",
    "cluster-announce-ip",
    "cluster-announce-port",
    "cluster-announce-tls-port",
    "cluster-announce-bus-port",
    "cluster-announce-hostname",
    "cluster-config-file",
    "tls-cert-file",
    "tls-key-file",
    "tls-ca-cert-file",
    "tls-ca-cert-dir",
    "tls-auth-clients",
    "tls-cluster",
    "tls-replication",
];

/// The first parameter of a `CONFIG SET` that must not be changed through the proxy.
fn forbidden_parameter(args: &[Bytes]) -> Option<String> {
    let is_set = args.get(1).is_some_and(|s| s.eq_ignore_ascii_case(b"set"));
    if !is_set {
        return None;
    }
    args.iter()
        .skip(2)
        .step_by(2)
        .map(|p| display_bytes(p).to_lowercase())
        .find(|p| CONFIG_FORBIDDEN.contains(&p.as_str()))
}

/// DEBUG subcommands about the key in their second argument.
const DEBUG_KEYED: &[&str] = &[
    "object",
    "sdslen",
    "ziplist",
    "listpack",
    "quicklist",
    "digest-value",
    "htstats-key",
];

/// Answers an admin command.
pub fn answer(
    shared: &Arc<Shared>,
    lane: Lane,
    snapshot: &Arc<Snapshot>,
    admin: Admin,
    request: Request,
) -> Action {
    let args = &request.args;
    let name = display(args);
    if admin == Admin::ConfigGet && !shared.admin_commands {
        return send(shared, lane, None, request.raw, false);
    }
    if !shared.admin_commands {
        return Action::now(reply::error(&admin_mode_refusal(&name)));
    }
    let router = shared.router.clone();
    let masters = snapshot.clone();
    let per_master = move |payload: Bytes| {
        let (router, masters) = (router.clone(), masters.clone());
        async move {
            join_all(masters.masters().iter().map(|pool| {
                let payload = payload.clone();
                let router = router.clone();
                async move {
                    let reply = router.send_to_node(pool, lane, payload).await;
                    (pool.addr().to_string(), reply)
                }
            }))
            .await
        }
    };
    match admin {
        Admin::ConfigGet => {
            let metrics = shared.metrics.clone();
            let param = args.get(2).map(|p| display_bytes(p)).unwrap_or_default();
            Action::later(async move {
                let replies = per_master(request.raw).await;
                config_get(replies, &param, &metrics)
            })
        }
        Admin::ConfigAllNodes if forbidden_parameter(args).is_some() => {
            let param = forbidden_parameter(args).unwrap_or_default();
            Action::now(reply::error(&format!(
                "ERR CONFIG SET {param} is not allowed through slotproxy, even with [compat] admin_commands: it would lock the proxy or the replicas out of the nodes, or move them; change it on the nodes themselves (and cluster.* in the proxy's config)"
            )))
        }
        Admin::ConfigAllNodes => {
            let shared = shared.clone();
            let snapshot = snapshot.clone();
            Action::later(async move {
                let reply = every_node(&shared, &snapshot, request.args.clone(), &name).await;
                if reply.starts_with(b"+OK") {
                    follow_node_settings(&shared, &request.args);
                }
                reply
            })
        }
        Admin::Debug => debug(shared, lane, request, per_master, &name),
        Admin::SlowlogGet => {
            let wanted = args
                .get(2)
                .and_then(|n| crate::protocol::parse_i64(n))
                .unwrap_or(10);
            let payload = crate::protocol::request::encode_command(&["SLOWLOG", "GET", "-1"]);
            Action::later(async move { slowlog_get(per_master(payload).await, wanted) })
        }
        Admin::SlowlogLen | Admin::AllMasters => {
            Action::later(async move { combine(&name, per_master(request.raw).await) })
        }
        Admin::PerNode => {
            let resp3 = lane.resp3;
            Action::later(async move { labelled(per_master(request.raw).await, resp3) })
        }
        Admin::Merged => Action::later(async move { merged(&name, per_master(request.raw).await) }),
    }
}

/// Settings of a node the proxy mirrors for what it answers itself: `acllog-max-len` bounds
/// its own `ACL LOG`, as on one Redis.
fn follow_node_settings(shared: &Shared, args: &[Bytes]) {
    if !args.get(1).is_some_and(|a| a.eq_ignore_ascii_case(b"set")) {
        return;
    }
    for pair in args.get(2..).unwrap_or_default().chunks(2) {
        if let [name, value] = pair {
            if name.eq_ignore_ascii_case(b"acllog-max-len") {
                if let Some(n) = crate::protocol::parse_i64(value) {
                    shared.acl.log.set_max(n.max(0) as usize);
                }
            }
        }
    }
}

/// `CONFIG SET foo` as the client wrote it, for messages.
fn display(args: &[Bytes]) -> String {
    args.iter()
        .take(2)
        .map(|a| display_bytes(a).to_uppercase())
        .collect::<Vec<_>>()
        .join(" ")
}

fn display_bytes(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn debug<F, Fut>(
    shared: &Arc<Shared>,
    lane: Lane,
    request: Request,
    per_master: F,
    name: &str,
) -> Action
where
    F: Fn(Bytes) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Vec<(String, Bytes)>> + Send,
{
    let sub = request
        .args
        .get(1)
        .map(|s| display_bytes(s).to_lowercase())
        .unwrap_or_default();
    if sub == "reload" {
        if let Some(why) = reload_refusal(&request.args) {
            return Action::now(reply::error(&format!(
                "ERR DEBUG RELOAD {why}; plain DEBUG RELOAD (and NOFLUSH MERGE) runs on every master"
            )));
        }
    }
    let check_aof = sub == "loadaof";
    if DEBUG_FORBIDDEN.contains(&sub.as_str()) {
        return Action::now(reply::error(&format!(
            "ERR command '{name}' is not allowed through slotproxy, even with [compat] admin_commands: it restarts, crashes or empties a node, or breaks the cluster"
        )));
    }
    if DEBUG_KEYED.contains(&sub.as_str()) {
        let keys = &request.args[2.min(request.args.len())..];
        let Some(first) = keys.first() else {
            return Action::now(reply::error(&format!(
                "ERR wrong number of arguments for '{name}' command"
            )));
        };
        let slot = key_slot(first);
        if keys.iter().any(|k| key_slot(k) != slot) {
            return Action::now(reply::crossslot());
        }
        return send(
            shared,
            lane,
            Some(crate::cluster::router::Target::Slot(slot)),
            request.raw,
            false,
        );
    }
    let name = name.to_string();
    let resp3 = lane.resp3;
    Action::later(async move {
        if check_aof {
            // A rewrite (as right after `appendonly yes`) is waited for, up to AOF_WAIT.
            let query = crate::protocol::request::encode_command(&["INFO", "persistence"]);
            let deadline = tokio::time::Instant::now() + AOF_WAIT;
            loop {
                match loadaof_refusal(&per_master(query.clone()).await) {
                    None => break,
                    Some((why, true)) if tokio::time::Instant::now() < deadline => {
                        tracing::debug!(%why, "DEBUG LOADAOF waits for AOF rewrites");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Some((why, _)) => return reply::error(&why),
                }
            }
        }
        let replies = per_master(request.raw).await;
        if let Some(same) = unanimous(&replies) {
            return same;
        }
        match failures(&replies) {
            Some(failed) => reply::error(&format!(
                "ERR {name} failed on {} of {} masters: {failed}",
                count_errors(&replies),
                replies.len()
            )),
            None => labelled(replies, resp3),
        }
    })
}

/// Why a `DEBUG RELOAD` with these options would lose data or stop a node, if it would.
fn reload_refusal(args: &[Bytes]) -> Option<&'static str> {
    let has = |option: &[u8]| args.iter().skip(2).any(|a| a.eq_ignore_ascii_case(option));
    if has(b"nosave") {
        return Some(
            "NOSAVE is not allowed through slotproxy: it loads the RDB file on disk as it is, \
             so writes since it was saved would be lost and keys of slots the node gave away \
             since would come back",
        );
    }
    if has(b"noflush") && !has(b"merge") {
        return Some(
            "NOFLUSH without MERGE is not allowed through slotproxy: a node holding keys stops \
             on the first key it loads twice",
        );
    }
    None
}

/// How long `DEBUG LOADAOF` waits for the masters' AOF rewrites to finish.
const AOF_WAIT: Duration = Duration::from_secs(10);

/// Why `DEBUG LOADAOF` must not run, given every master's `INFO persistence`, and whether
/// waiting helps (only rewrites are running): a node with the AOF off, or with its AOF still
/// being rewritten (as right after `appendonly yes`), empties itself and loads stale, partial
/// or no AOF files.
fn loadaof_refusal(replies: &[(String, Bytes)]) -> Option<(String, bool)> {
    let mut only_rewrites = true;
    let not_ready: Vec<String> = replies
        .iter()
        .filter_map(|(addr, reply)| {
            let text = String::from_utf8_lossy(reply);
            let field = |name: &str| {
                text.lines()
                    .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))
                    .map(str::to_string)
            };
            let why = match (
                field("aof_enabled").as_deref(),
                field("aof_rewrite_in_progress").as_deref(),
                field("aof_rewrite_scheduled").as_deref(),
            ) {
                (Some("1"), Some("0"), Some("0")) => return None,
                (Some("1"), _, _) => "AOF rewrite running",
                (Some(_), _, _) => {
                    only_rewrites = false;
                    "appendonly no"
                }
                _ => {
                    only_rewrites = false;
                    "no INFO persistence"
                }
            };
            Some(format!("{addr}: {why}"))
        })
        .collect();
    (!not_ready.is_empty()).then(|| {
        let why = format!(
            "ERR DEBUG LOADAOF through slotproxy needs appendonly yes and no AOF rewrite running \
             on every master ({}): such a node would empty itself and load stale, partial or no \
             AOF files",
            not_ready.join("; ")
        );
        (why, only_rewrites)
    })
}

/// `CONFIG GET`: every master's answer; they should agree. The first master's is returned;
/// a difference is counted and logged.
fn config_get(
    replies: Vec<(String, Bytes)>,
    param: &str,
    metrics: &crate::metrics::Metrics,
) -> Bytes {
    let Some((first_addr, first)) = replies.first().cloned() else {
        return reply::error("ERR slotproxy: no master is known");
    };
    let differ: Vec<&str> = replies
        .iter()
        .filter(|(_, r)| *r != first)
        .map(|(a, _)| a.as_str())
        .collect();
    if !differ.is_empty() {
        metrics.config_disagreements.inc();
        tracing::warn!(
            parameter = param,
            answered_from = %first_addr,
            differing = ?differ,
            "CONFIG GET: the masters do not agree; the first master's value was returned"
        );
    }
    first
}

/// The reply every master gave, when they all gave the same one (`+OK`, or the error
/// `DEBUG ERROR` was asked to produce).
fn unanimous(replies: &[(String, Bytes)]) -> Option<Bytes> {
    let (_, first) = replies.first()?;
    replies
        .iter()
        .all(|(_, r)| r == first)
        .then(|| first.clone())
}

/// Every master's array entries in one array, each entry with its node's address appended.
fn merged(name: &str, replies: Vec<(String, Bytes)>) -> Bytes {
    if let Some(failed) = failures(&replies) {
        return reply::error(&format!("ERR {name} failed: {failed}"));
    }
    let mut all = Vec::new();
    for (addr, raw) in &replies {
        for entry in scan::array_elements(raw).unwrap_or_default() {
            let mut fields = scan::array_elements(&entry).unwrap_or_default();
            fields.push(reply::bulk(Bytes::from(addr.clone())));
            all.push(reply::array_of_raw(&fields));
        }
    }
    reply::array_of_raw(&all)
}

/// The error texts of the failed replies, as `addr: error; …`, or `None` when none failed.
fn failures(replies: &[(String, Bytes)]) -> Option<String> {
    let failed: Vec<String> = replies
        .iter()
        .filter_map(|(addr, r)| error_text(r).map(|e| format!("{addr}: {e}")))
        .collect();
    (!failed.is_empty()).then(|| failed.join("; "))
}

fn count_errors(replies: &[(String, Bytes)]) -> usize {
    replies.iter().filter(|(_, r)| scan::is_error(r)).count()
}

/// Every master's reply joined: `+OK` when all say so, integers summed, one error naming the
/// failed nodes otherwise.
fn combine(name: &str, replies: Vec<(String, Bytes)>) -> Bytes {
    if let Some(same) = unanimous(&replies).filter(|r| scan::integer(r).is_none()) {
        return same;
    }
    if let Some(failed) = failures(&replies) {
        return reply::error(&format!(
            "ERR {name} failed on {} of {} masters: {failed}",
            count_errors(&replies),
            replies.len()
        ));
    }
    let integers: Option<Vec<i64>> = replies.iter().map(|(_, r)| scan::integer(r)).collect();
    match integers {
        Some(n) => reply::integer(n.iter().sum()),
        None => reply::ok(),
    }
}

/// One reply per master, labelled with its address: text replies become one text with a
/// heading per node; anything else an array of `[address, reply]` pairs.
fn labelled(replies: Vec<(String, Bytes)>, resp3: bool) -> Bytes {
    let texts: Option<Vec<String>> = replies
        .iter()
        .map(|(_, r)| {
            (matches!(r.first(), Some(b'$' | b'=')))
                .then(|| scan::string(r).map(display_bytes))
                .flatten()
        })
        .collect();
    if let Some(texts) = texts {
        let mut out = String::new();
        for ((addr, _), text) in replies.iter().zip(texts) {
            let text = text.strip_prefix("txt:").unwrap_or(&text).to_string();
            out.push_str(&format!("# {addr}\n{}\n\n", text.trim_end()));
        }
        return reply::verbatim(&out, resp3);
    }
    let pairs: Vec<Bytes> = replies
        .into_iter()
        .map(|(addr, r)| reply::array_of_raw(&[reply::bulk(Bytes::from(addr)), r]))
        .collect();
    reply::array_of_raw(&pairs)
}

/// `SLOWLOG GET n`: every master's entries, newest first, each with the node's address
/// appended; at most `wanted` (all when negative).
fn slowlog_get(replies: Vec<(String, Bytes)>, wanted: i64) -> Bytes {
    if let Some(failed) = failures(&replies) {
        return reply::error(&format!("ERR SLOWLOG GET failed: {failed}"));
    }
    let mut entries: Vec<(i64, i64, Bytes)> = Vec::new();
    for (addr, raw) in &replies {
        for entry in scan::array_elements(raw).unwrap_or_default() {
            let mut fields = scan::array_elements(&entry).unwrap_or_default();
            let id = fields.first().and_then(|f| scan::integer(f)).unwrap_or(0);
            let at = fields.get(1).and_then(|f| scan::integer(f)).unwrap_or(0);
            fields.push(reply::bulk(Bytes::from(addr.clone())));
            entries.push((at, id, reply::array_of_raw(&fields)));
        }
    }
    entries.sort_by_key(|e| std::cmp::Reverse((e.0, e.1)));
    if wanted >= 0 {
        entries.truncate(wanted as usize);
    }
    let raw: Vec<Bytes> = entries.into_iter().map(|(_, _, e)| e).collect();
    reply::array_of_raw(&raw)
}

/// `CONFIG SET|RESETSTAT|REWRITE` on every node, masters and replicas: `+OK` only when every
/// node accepted it, otherwise one error naming each node that did not, and why.
async fn every_node(shared: &Shared, snapshot: &Snapshot, args: Vec<Bytes>, name: &str) -> Bytes {
    let settings = shared.router.topology.settings().clone();
    let timeout = shared.router.request_timeout();
    let mut addrs: Vec<String> = snapshot.map.nodes.iter().map(|n| n.addr.clone()).collect();
    if let Some(first) = addrs.first().cloned() {
        let listed = ControlConn::new(&first, settings.clone())
            .call(&[b"CLUSTER".as_slice(), b"NODES"], timeout)
            .await;
        if let Ok(raw) = listed {
            let text = scan::string(&raw).map(display_bytes).unwrap_or_default();
            for line in nodes::parse(&text).unwrap_or_default() {
                if !line.is_master() && !line.is_unhealthy() && !addrs.contains(&line.addr) {
                    addrs.push(line.addr);
                }
            }
        }
    }
    let replies = join_all(addrs.iter().map(|addr| {
        let settings = settings.clone();
        let args = args.clone();
        async move {
            let reply = ControlConn::new(addr, settings).call(&args, timeout).await;
            let reply = reply.unwrap_or_else(|e| reply::error(&format!("ERR {e}")));
            (addr.clone(), reply)
        }
    }))
    .await;
    match failures(&replies) {
        None => reply::ok(),
        Some(failed) => reply::error(&format!(
            "ERR {name} failed on {} of {} nodes: {failed}",
            count_errors(&replies),
            replies.len()
        )),
    }
}

#[cfg(test)]
mod debug_tests {
    use super::{loadaof_refusal, reload_refusal};
    use bytes::Bytes;

    fn args(words: &[&str]) -> Vec<Bytes> {
        words.iter().map(|w| Bytes::from(w.to_string())).collect()
    }

    #[test]
    fn reload_keeps_the_data_or_is_refused() {
        assert!(reload_refusal(&args(&["DEBUG", "RELOAD"])).is_none());
        assert!(reload_refusal(&args(&["DEBUG", "RELOAD", "noflush", "MERGE"])).is_none());
        assert!(reload_refusal(&args(&["DEBUG", "RELOAD", "NOSAVE"])).is_some());
        assert!(
            reload_refusal(&args(&["debug", "reload", "nosave", "noflush", "merge"])).is_some()
        );
        assert!(reload_refusal(&args(&["DEBUG", "RELOAD", "NOFLUSH"])).is_some());
    }

    #[test]
    fn loadaof_needs_a_finished_aof_everywhere() {
        let info = |enabled: u8, rewriting: u8| {
            Bytes::from(format!(
                "$99\r\n# Persistence\r\naof_enabled:{enabled}\r\naof_rewrite_in_progress:{rewriting}\r\naof_rewrite_scheduled:0\r\n"
            ))
        };
        let ready = vec![
            ("a:1".to_string(), info(1, 0)),
            ("b:2".to_string(), info(1, 0)),
        ];
        assert_eq!(loadaof_refusal(&ready), None);
        let off = vec![
            ("a:1".to_string(), info(1, 0)),
            ("b:2".to_string(), info(0, 0)),
        ];
        let (why, wait) = loadaof_refusal(&off).expect("refused");
        assert!(
            why.contains("b:2: appendonly no") && !why.contains("a:1"),
            "{why}"
        );
        assert!(!wait);
        let busy = vec![("a:1".to_string(), info(1, 1))];
        let (why, wait) = loadaof_refusal(&busy).expect("refused");
        assert!(why.contains("rewrite running") && wait, "{why}");
    }
}
