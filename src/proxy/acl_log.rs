//! `ACL LOG [count|RESET]`: the proxy's own entries (what it denied its clients, failed
//! logins) merged with what the nodes denied inside restricted users' scripts.
//!
//! A script runs on a node user made for its proxy user (see [`super::script_users`]), so a
//! `redis.call` the user may not make is denied and logged by the node, with context `lua`.
//! `ACL LOG` asks every master for its entries, keeps those of the proxies' node users,
//! names them after the proxy user and merges them with the proxy's own, newest first, as
//! one Redis' log would show them. Node entries older than this proxy's last `ACL LOG RESET`
//! are left out (the nodes' logs are not cleared: they hold other users' entries too).

use super::script_users::NODE_USER_PREFIX;
use super::Shared;
use crate::acl::log::{now_ms, Context, Entry, Reason};
use crate::protocol::reply;
use crate::protocol::request::encode_command;
use crate::protocol::scan::{array_elements, integer, string};
use crate::upstream::Lane;
use bytes::Bytes;
use futures_util::future::join_all;
use std::sync::Arc;

/// `ACL LOG …`
pub fn log(shared: &Arc<Shared>, args: &[Bytes], resp3: bool) -> super::action::Action {
    use super::action::Action;
    let mut count = 10usize;
    if let Some(arg) = args.get(2) {
        if arg.eq_ignore_ascii_case(b"reset") {
            shared.acl.log.reset();
            return Action::now(reply::ok());
        }
        match crate::protocol::parse_i64(arg) {
            Some(n) => count = n.max(0) as usize,
            None => {
                return Action::now(reply::error("ERR value is not an integer or out of range"))
            }
        }
    }
    let own = shared.acl.log.newest(shared.acl.log.max());
    let shared = shared.clone();
    Action::later(async move {
        let mut entries = own;
        let from_nodes = node_entries(&shared).await;
        let since = shared.acl.log.reset_at_ms();
        entries.extend(from_nodes.into_iter().filter(|e| e.at_ms >= since));
        entries.sort_by_key(|e| std::cmp::Reverse(e.at_ms));
        entries.truncate(shared.acl.log.max());
        render(entries, count, resp3)
    })
}

/// Every master's entries of the proxies' node users.
async fn node_entries(shared: &Shared) -> Vec<Entry> {
    let Some(snapshot) = shared.router.topology.snapshot() else {
        return Vec::new();
    };
    let payload = encode_command(&["ACL", "LOG"]);
    let asked = now_ms();
    let replies = join_all(snapshot.masters().iter().map(|pool| {
        shared
            .router
            .send_to_node(pool, Lane::default(), payload.clone())
    }))
    .await;
    // The nodes' ages count from when they answered: halfway, give or take half a round trip.
    let now = asked + now_ms().saturating_sub(asked) / 2;
    let mut entries: Vec<Entry> = replies
        .iter()
        .flat_map(|raw| array_elements(raw).unwrap_or_default())
        .filter_map(|entry| node_entry(&entry, now))
        .collect();
    entries.sort_by_key(|e| std::cmp::Reverse(e.at_ms));
    group(entries)
}

/// The same denial on several nodes within a minute is one entry, as on one Redis.
fn group(entries: Vec<Entry>) -> Vec<Entry> {
    let mut kept: Vec<Entry> = Vec::with_capacity(entries.len());
    for entry in entries {
        let similar = kept.iter_mut().find(|k| {
            k.reason == entry.reason
                && k.context == entry.context
                && k.object == entry.object
                && k.username == entry.username
                && k.at_ms.abs_diff(entry.at_ms) <= 60_000
        });
        match similar {
            Some(k) => k.count += entry.count,
            None => kept.push(entry),
        }
    }
    kept
}

/// One node entry of a node user, as the proxy user's.
fn node_entry(raw: &Bytes, now: u64) -> Option<Entry> {
    let fields = array_elements(raw)?;
    let mut entry = Entry {
        count: 1,
        reason: Reason::Command,
        context: Context::Lua,
        object: String::new(),
        username: String::new(),
        at_ms: now,
        client_info: String::new(),
    };
    let mut ours = false;
    for pair in fields.chunks(2) {
        let [name, value] = pair else { continue };
        let text = || string(value).map(|v| String::from_utf8_lossy(v).into_owned());
        match string(name)? {
            b"count" => entry.count = integer(value).unwrap_or(1).max(1) as u64,
            b"reason" => {
                entry.reason = match text()?.as_str() {
                    "command" => Reason::Command,
                    "key" => Reason::Key,
                    "channel" => Reason::Channel,
                    _ => return None,
                }
            }
            b"context" => {
                entry.context = match text()?.as_str() {
                    "lua" => Context::Lua,
                    "multi" => Context::Multi,
                    _ => Context::Toplevel,
                }
            }
            b"object" => entry.object = text()?,
            b"username" => {
                let name = text()?;
                let (user, _digest) = name.strip_prefix(NODE_USER_PREFIX)?.rsplit_once(':')?;
                entry.username = user.to_string();
                ours = true;
            }
            b"age-seconds" => {
                let age: f64 = text()?.parse().ok()?;
                entry.at_ms = now.saturating_sub((age * 1000.0) as u64);
            }
            b"client-info" => entry.client_info = text()?,
            _ => {}
        }
    }
    ours.then_some(entry)
}

/// The newest `count` of `entries` (newest first), with Redis' fields.
fn render(entries: Vec<Entry>, count: usize, resp3: bool) -> Bytes {
    let text = |s: &str| reply::bulk(Bytes::copy_from_slice(s.as_bytes()));
    let now = now_ms();
    let entries: Vec<Bytes> = entries
        .iter()
        .take(count)
        .map(|e| {
            let age = now.saturating_sub(e.at_ms) as f64 / 1000.0;
            let age = match resp3 {
                true => Bytes::from(format!(",{age}\r\n")),
                false => text(&age.to_string()),
            };
            reply::map_of_raw(
                &[
                    (text("count"), reply::integer(e.count as i64)),
                    (text("reason"), text(e.reason.as_str())),
                    (text("context"), text(e.context.as_str())),
                    (text("object"), text(&e.object)),
                    (text("username"), text(&e.username)),
                    (text("age-seconds"), age),
                    (text("client-info"), text(&e.client_info)),
                ],
                resp3,
            )
        })
        .collect();
    reply::array_of_raw(&entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_entries_of_script_users_become_the_proxy_user_s() {
        let raw = Bytes::from_static(
            b"*14\r\n$5\r\ncount\r\n:2\r\n$6\r\nreason\r\n$7\r\ncommand\r\n$7\r\ncontext\r\n$3\r\nlua\r\n$6\r\nobject\r\n$4\r\nincr\r\n$8\r\nusername\r\n$37\r\nslotproxy-script:bob:0123456789abcdef\r\n$11\r\nage-seconds\r\n$3\r\n1.5\r\n$11\r\nclient-info\r\n$2\r\nid\r\n",
        );
        let entry = node_entry(&raw, 10_000).expect("an entry");
        assert_eq!(entry.username, "bob");
        assert_eq!(entry.count, 2);
        assert_eq!(entry.context, Context::Lua);
        assert_eq!(entry.object, "incr");
        assert_eq!(entry.at_ms, 8_500);
        let other = Bytes::from_static(
            b"*4\r\n$6\r\nreason\r\n$3\r\nkey\r\n$8\r\nusername\r\n$5\r\nalice\r\n",
        );
        assert_eq!(node_entry(&other, 0), None);
    }
}
