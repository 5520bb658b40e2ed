//! Commands the proxy answers itself, as one standalone Redis would.

use super::auth::AuthOutcome;
use super::client_state::ClientState;
use super::Shared;
use crate::cluster::{key_slot, Snapshot};
use crate::protocol::request::encode_command;
use crate::protocol::{reply, scan};
use crate::upstream::Lane;
use bytes::Bytes;
use std::fmt::Write;
use std::sync::Arc;

/// PING [message]
pub fn ping(args: &[Bytes]) -> Bytes {
    if args.len() > 2 {
        return reply::error("ERR wrong number of arguments for 'ping' command");
    }
    match args.get(1) {
        Some(message) => reply::bulk(message.clone()),
        None => reply::simple("PONG"),
    }
}

/// SELECT index: only database 0 exists in a cluster.
pub fn select(args: &[Bytes]) -> Bytes {
    match crate::protocol::parse_i64(&args[1]) {
        Some(0) => reply::ok(),
        Some(_) => reply::error("ERR SELECT is not allowed in cluster mode"),
        None => reply::error("ERR value is not an integer or out of range"),
    }
}

/// CLUSTER KEYSLOT key, computed locally.
pub fn keyslot(args: &[Bytes]) -> Bytes {
    reply::integer(i64::from(key_slot(&args[2])))
}

/// HELLO [protover [AUTH user pass] [SETNAME name]]: the reply, and what its `AUTH` came to
/// (applied to the client by the caller; the protocol and name are applied here).
pub fn hello(
    args: &[Bytes],
    client: &mut ClientState,
    snapshot: &Snapshot,
    shared: &super::Shared,
) -> (Bytes, AuthOutcome) {
    let mut i = 1;
    let mut resp3 = client.resp3;
    let mut outcome = AuthOutcome::NotTried;
    let fail = |reply: Bytes| (reply, AuthOutcome::NotTried);
    if let Some(version) = args.get(1) {
        match crate::protocol::parse_i64(version) {
            Some(2) => resp3 = false,
            Some(3) => resp3 = true,
            Some(_) => return fail(reply::error("NOPROTO unsupported protocol version")),
            None => {
                return fail(reply::error(
                    "ERR Protocol version is not an integer or out of range",
                ))
            }
        }
        i = 2;
    }
    while i < args.len() {
        let option = args[i].to_ascii_lowercase();
        match (option.as_slice(), args.len() - i - 1) {
            (b"auth", n) if n >= 2 => {
                let user = String::from_utf8_lossy(&args[i + 1]).into_owned();
                let (reply, attempt) =
                    super::acl_users::login(shared, client, &args[0], user, &args[i + 2]);
                if attempt == AuthOutcome::WrongPassword {
                    return (reply, attempt);
                }
                outcome = attempt;
                i += 3;
            }
            (b"setname", n) if n >= 1 => {
                if let Err(e) = set_name(client, &args[i + 1]) {
                    // An AUTH before it has already logged the client in, as in Redis.
                    return (e, outcome);
                }
                i += 2;
            }
            _ => {
                let error = reply::error(&format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(&args[i])
                ));
                return (error, outcome);
            }
        }
    }
    if !client.authenticated && !matches!(outcome, AuthOutcome::LoggedIn(_)) {
        return fail(reply::error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
        ));
    }
    client.resp3 = resp3;
    client.handle.set_resp3(resp3);
    let text = |s: &str| reply::bulk(Bytes::copy_from_slice(s.as_bytes()));
    let reply = reply::map_of_raw(
        &[
            (text("server"), text("redis")),
            (text("version"), text(&snapshot.server_version)),
            (text("proto"), reply::integer(if resp3 { 3 } else { 2 })),
            (text("id"), reply::integer(client.id as i64)),
            (text("mode"), text("standalone")),
            (text("role"), text("master")),
            (text("modules"), reply::array_of_raw(&[])),
        ],
        resp3,
    );
    (reply, outcome)
}

/// CLIENT SETNAME rules: no spaces or special characters; empty clears the name.
pub fn set_name(client: &ClientState, name: &Bytes) -> Result<(), Bytes> {
    if name.iter().any(|&b| b <= b' ' || b > b'~') {
        return Err(reply::error(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    client
        .handle
        .set_name((!name.is_empty()).then(|| name.clone()));
    Ok(())
}

/// INFO [section …]: the proxy's own sections plus cluster-wide sums.
pub async fn info(
    shared: Arc<Shared>,
    snapshot: Arc<Snapshot>,
    lane: Lane,
    sections: Vec<String>,
) -> Bytes {
    let wanted = |name: &str| {
        sections.is_empty()
            || sections.iter().any(|s| {
                s == name
                    || s == "all"
                    || s == "everything"
                    || (s == "default" && name != "commandstats")
            })
    };
    let mut out = String::new();
    if wanted("server") {
        let uptime = shared.started.elapsed().as_secs();
        let _ = write!(
            out,
            "# Server\r\nredis_version:{}\r\nredis_git_sha1:00000000\r\nredis_git_dirty:0\r\nredis_mode:standalone\r\nslotproxy_version:{}\r\nos:{} {}\r\narch_bits:{}\r\nprocess_id:{}\r\nrun_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{uptime}\r\nuptime_in_days:{}\r\n\r\n",
            snapshot.server_version,
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::env::consts::ARCH,
            usize::BITS,
            std::process::id(),
            shared.run_id,
            shared.listen_port,
            uptime / 86400,
        );
    }
    if wanted("clients") {
        let _ = write!(
            out,
            "# Clients\r\nconnected_clients:{}\r\nblocked_clients:{}\r\n\r\n",
            shared.metrics.client_connections.get(),
            shared.clients.blocked_count()
        );
    }
    let from_nodes: Vec<&str> = ["memory", "keyspace", "persistence", "stats"]
        .into_iter()
        .filter(|s| wanted(s))
        .collect();
    let node_infos = if !from_nodes.is_empty() {
        let mut args = vec!["INFO"];
        args.extend(&from_nodes);
        let replies = info_of_masters(&shared, &snapshot, lane, &args).await;
        replies
            .iter()
            .filter_map(|r| scan::string(r).map(|s| String::from_utf8_lossy(s).into_owned()))
            .collect::<Vec<_>>()
    } else {
        Vec::new()
    };
    if wanted("memory") {
        let used: u64 = node_infos
            .iter()
            .filter_map(|i| field(i, "used_memory")?.parse::<u64>().ok())
            .sum();
        let _ = write!(
            out,
            "# Memory\r\n{}used_memory_human:{:.2}M\r\n\r\n",
            super::info_merge::merge_section(&node_infos, "memory", &[]),
            used as f64 / 1048576.0
        );
    }
    if wanted("persistence") {
        let _ = write!(
            out,
            "# Persistence\r\n{}\r\n",
            super::info_merge::merge_section(&node_infos, "persistence", &[])
        );
    }
    if wanted("stats") {
        let metrics = &shared.metrics;
        let processed: u64 = crate::metrics::CommandGroup::ALL
            .iter()
            .map(|g| {
                metrics
                    .command_duration
                    .with_label_values(&[g.label()])
                    .get_sample_count()
            })
            .sum();
        let _ = write!(
            out,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{processed}\r\nrejected_connections:{}\r\ntotal_net_input_bytes:{}\r\ntotal_net_output_bytes:{}\r\n{}\r\n",
            metrics.client_connections_accepted.get(),
            metrics.client_connections_rejected.get(),
            metrics.client_bytes_received.get(),
            metrics.client_bytes_sent.get(),
            // The rest as one node holding all the data would count it.
            super::info_merge::merge_section(&node_infos, "stats", &PROXY_STATS),
        );
    }
    if wanted("replication") {
        // The proxy is one master to its clients; the nodes' replicas are the cluster's own.
        let _ = write!(
            out,
            "# Replication\r\nrole:master\r\nconnected_slaves:0\r\n\r\n"
        );
    }
    if wanted("cluster") {
        let _ = write!(out, "# Cluster\r\ncluster_enabled:0\r\n\r\n");
    }
    if wanted("proxy") {
        let _ = write!(
            out,
            "# Proxy\r\nslot_map_epoch:{}\r\nmasters:{}\r\nslots_covered:{}\r\n\r\n",
            snapshot.epoch,
            snapshot.map.nodes.len(),
            snapshot.map.covered()
        );
    }
    if wanted("keyspace") {
        let (mut keys, mut expires) = (0u64, 0u64);
        for info in &node_infos {
            if let Some(db0) = field(info, "db0") {
                for part in db0.split(',') {
                    match part.split_once('=') {
                        Some(("keys", n)) => keys += n.parse::<u64>().unwrap_or(0),
                        Some(("expires", n)) => expires += n.parse::<u64>().unwrap_or(0),
                        _ => {}
                    }
                }
            }
        }
        out.push_str("# Keyspace\r\n");
        if keys > 0 {
            let _ = write!(out, "db0:keys={keys},expires={expires},avg_ttl=0\r\n");
        }
    }
    if shared.admin_commands {
        out.push_str(&per_node_sections(&shared, &snapshot, lane, &sections).await);
    }
    reply::verbatim(&out, lane.resp3)
}

/// Stats the proxy counts itself, for its own clients (the nodes' count the proxy's work).
const PROXY_STATS: [&str; 5] = [
    "total_connections_received",
    "total_commands_processed",
    "rejected_connections",
    "total_net_input_bytes",
    "total_net_output_bytes",
];

/// `args` (an INFO command) sent to every master; the replies in master order.
async fn info_of_masters(
    shared: &Shared,
    snapshot: &Snapshot,
    lane: Lane,
    args: &[&str],
) -> Vec<Bytes> {
    let payload = encode_command(args);
    futures_util::future::join_all(
        snapshot
            .masters()
            .iter()
            .map(|p| shared.router.send_to_node(p, lane, payload.clone())),
    )
    .await
}

/// INFO sections that describe one node and make no sense summed.
const NODE_SECTIONS: &[&str] = &[
    "memory",
    "persistence",
    "cpu",
    "commandstats",
    "errorstats",
    "latencystats",
];

/// With `[compat] admin_commands`: the node sections asked for by name (or with `all` /
/// `everything`), once per master, each heading followed by the master's address.
async fn per_node_sections(
    shared: &Shared,
    snapshot: &Snapshot,
    lane: Lane,
    sections: &[String],
) -> String {
    let named: Vec<&str> = NODE_SECTIONS
        .iter()
        .copied()
        .filter(|n| {
            sections
                .iter()
                .any(|s| s == n || s == "all" || s == "everything")
        })
        .collect();
    if named.is_empty() {
        return String::new();
    }
    let mut args = vec!["INFO"];
    args.extend(named.iter().copied());
    let replies = info_of_masters(shared, snapshot, lane, &args).await;
    let mut out = String::new();
    for (pool, raw) in snapshot.masters().iter().zip(replies) {
        let text = scan::string(&raw)
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .unwrap_or_default();
        let text = text.strip_prefix("txt:").unwrap_or(&text);
        for line in text.split("\r\n") {
            match line.strip_prefix("# ") {
                Some(heading) => {
                    let _ = write!(out, "\r\n# {heading} {}\r\n", pool.addr());
                }
                None if !line.is_empty() => {
                    out.push_str(line);
                    out.push_str("\r\n");
                }
                None => {}
            }
        }
    }
    out
}

fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}
