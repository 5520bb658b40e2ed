//! `EVAL`, `EVALSHA` (and their `_RO` forms) whose declared keys are in several slots of one
//! master: run there atomically, with the script's own result.
//!
//! A node refuses a call whose declared keys are in two slots, but a script may touch keys
//! of several slots of its node when it has no shebang (Redis' compatibility mode) or the
//! `allow-cross-slot-keys` flag. So the proxy calls a variant of the client's script with no
//! declared keys: the same body, with the flag added to its shebang if it has one, and a
//! prologue on its first line that rebuilds `KEYS` and `ARGV` as locals from the call's
//! arguments (line numbers in error messages stay the same) and checks first that every key
//! is served by this node (else nothing runs, and the call is tried again after a pause, as
//! for a slot in migration; a user whose rules deny that check skips it, and the node's
//! own key check still refuses a key it does not serve). Errors name the client's script's
//! SHA, not the variant's. A restricted user's script runs on its node user's connection
//! (the lane says which); loading the variant is the proxy's work, done with its rights.
//!
//! Keys on several masters: a script runs on one node, so the call is refused with an error
//! naming them, and nothing runs. `EVALSHA` of a script the proxy never saw answers
//! `NOSCRIPT` (client libraries then send the body with `EVAL`).

use super::run::Engine;
use crate::cluster::key_slot;
use crate::cluster::router::{Retry, Target};
use crate::protocol::reply;
use crate::protocol::request::{push_bulk, push_header};
use crate::proxy::action::Action;
use crate::proxy::scripts::ScriptCache;
use crate::upstream::Lane;
use bytes::{Bytes, BytesMut};

/// Rebuilds `KEYS`/`ARGV` from `ARGV` = numkeys, keys…, args…, after checking the keys.
const PROLOGUE: &str = "local KEYS, ARGV = (function(a) local n = tonumber(a[1]) local k, v = {}, {} for i = 1, n do k[i] = a[i + 1] end for i = n + 2, #a do v[#v + 1] = a[i] end for i = 1, n do local t = redis.pcall('TYPE', k[i]) if type(t) == 'table' and t.err and not string.find(t.err, 'The user executing the script', 1, true) then error({err = 'SLOTPROXY-RETRY ' .. t.err}) end end return k, v end)(ARGV); ";
const FLAG: &str = "allow-cross-slot-keys";

/// The variant of `body` that takes its keys in `ARGV`.
pub fn wrap(body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(body.len() + PROLOGUE.len() + FLAG.len() + 8);
    match body.strip_prefix(b"#!") {
        None => {
            out.extend_from_slice(PROLOGUE.as_bytes());
            out.extend_from_slice(body);
        }
        Some(_) => {
            let end = body.iter().position(|&b| b == b'\n').unwrap_or(body.len());
            let shebang = String::from_utf8_lossy(&body[..end]);
            let shebang = match shebang.split_once("flags=") {
                Some((_, flags)) if flags.split([',', ' ']).any(|f| f == FLAG) => {
                    shebang.to_string()
                }
                Some((head, flags)) if flags.is_empty() || flags.starts_with(' ') => {
                    format!("{head}flags={FLAG}{flags}")
                }
                Some((head, flags)) => format!("{head}flags={FLAG},{flags}"),
                None => format!("{} flags={FLAG}", shebang.trim_end()),
            };
            out.extend_from_slice(shebang.as_bytes());
            out.extend_from_slice(b"\n");
            out.extend_from_slice(PROLOGUE.as_bytes());
            out.extend_from_slice(body.get(end + 1..).unwrap_or_default());
        }
    }
    out.freeze()
}

fn sha1(body: &[u8]) -> String {
    sha1_smol::Sha1::from(body).digest().to_string()
}

/// The action for a script call (`args`, declared keys at `positions`) across slots.
pub fn action(
    engine: &Engine,
    cache: &ScriptCache,
    lane: Lane,
    name: &str,
    args: &[Bytes],
    positions: &[usize],
) -> Action {
    let by_sha = name.starts_with("evalsha");
    let read_only = name.ends_with("_ro");
    let body = match by_sha {
        false => args.get(1).cloned(),
        true => args.get(1).and_then(|sha| cache.body(sha)),
    };
    let Some(body) = body else {
        return Action::now(reply::error(
            "NOSCRIPT No matching script. Please use EVAL.",
        ));
    };
    let first = positions.first().copied().unwrap_or(3);
    let keys: Vec<Bytes> = positions.iter().map(|&p| args[p].clone()).collect();
    let mut argv = vec![Bytes::from(keys.len().to_string())];
    argv.extend(keys.iter().cloned());
    argv.extend(args.iter().skip(first + keys.len()).cloned());
    let engine = engine.clone();
    Action::later(async move {
        let wrapped = wrap(&body);
        let (user_sha, wrapped_sha) = (sha1(&body), sha1(&wrapped));
        let call = || {
            let verb: &[u8] = match read_only {
                false => b"EVALSHA",
                true => b"EVALSHA_RO",
            };
            let script = wrapped_sha.as_bytes();
            let mut out = BytesMut::new();
            push_header(&mut out, b'*', 3 + argv.len());
            push_bulk(&mut out, verb);
            push_bulk(&mut out, script);
            push_bulk(&mut out, b"0");
            for arg in &argv {
                push_bulk(&mut out, arg);
            }
            out.freeze()
        };
        let router = &engine.router;
        let mut reply = Bytes::new();
        for attempt in 0..=router.max_retries() {
            if attempt > 0 {
                router.topology.request_refresh();
                tokio::time::sleep(router.backoff(attempt - 1)).await;
            }
            let Some(snapshot) = router.topology.snapshot() else {
                continue;
            };
            let mut owners: Vec<Option<usize>> = keys
                .iter()
                .map(|k| snapshot.map.owner(key_slot(k)))
                .collect();
            owners.dedup();
            if owners.len() > 1 {
                let nodes: Vec<&str> = owners
                    .iter()
                    .flatten()
                    .filter_map(|&i| snapshot.map.nodes.get(i).map(|n| n.addr.as_str()))
                    .collect();
                return reply::error(&format!(
                    "ERR slotproxy: the keys of this script live on different masters ({}); a script runs on one node, so nothing was run",
                    nodes.join(", ")
                ));
            }
            let target = Target::Slot(key_slot(&keys[0]));
            let write = Retry::single(!read_only);
            reply = router.send_call(lane, target, call(), write).await;
            if reply.starts_with(b"-NOSCRIPT") {
                let own = Lane {
                    identity: crate::upstream::identity::PROXY,
                    ..lane
                };
                let load =
                    crate::protocol::request::encode_command(&[&b"SCRIPT"[..], b"LOAD", &wrapped]);
                let _ = router
                    .send_call(own, target, load, Retry::single(false))
                    .await;
                reply = router.send_call(lane, target, call(), write).await;
            }
            if !super::scripts::must_retry(&reply) {
                engine.metrics.count_cross_slot("same_node");
                return rename_sha(reply, &wrapped_sha, &user_sha);
            }
        }
        reply
    })
}

/// An error that names the variant's SHA names the client's script instead.
fn rename_sha(reply: Bytes, wrapped: &str, user: &str) -> Bytes {
    if !reply.starts_with(b"-") {
        return reply;
    }
    let text = String::from_utf8_lossy(&reply);
    match text.contains(wrapped) {
        true => Bytes::from(text.replace(wrapped, user)),
        false => reply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    #[test]
    fn the_variant_keeps_line_numbers_and_gains_the_flag() {
        assert_eq!(text(&wrap(b"return 1")), format!("{PROLOGUE}return 1"));
        assert_eq!(
            text(&wrap(b"#!lua flags=no-writes\nreturn 1\nreturn 2")),
            format!("#!lua flags=allow-cross-slot-keys,no-writes\n{PROLOGUE}return 1\nreturn 2")
        );
        assert_eq!(
            text(&wrap(b"#!lua\nreturn 1")),
            format!("#!lua flags=allow-cross-slot-keys\n{PROLOGUE}return 1")
        );
        assert_eq!(
            text(&wrap(b"#!lua flags=allow-cross-slot-keys\nx")),
            format!("#!lua flags=allow-cross-slot-keys\n{PROLOGUE}x")
        );
        assert_eq!(
            text(&wrap(b"#!lua name=x flags=\nx")),
            format!("#!lua name=x flags=allow-cross-slot-keys\n{PROLOGUE}x")
        );
    }
}
