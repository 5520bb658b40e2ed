//! CLIENT subcommands, answered for the proxy's own clients.
//!
//! Per-connection settings (SETNAME, REPLY, SETINFO) apply to the client's connection to the
//! proxy. LIST, INFO and KILL see the proxy's clients. What would change node-side connection
//! state shared by many clients (TRACKING, CACHING, NO-EVICT, PAUSE …) is refused with the
//! reason.

use super::client_state::{ClientState, ReplyMode};
use super::clients::{KillFilter, Registry};
use super::local::set_name;
use crate::protocol::command::CommandInfo;
use crate::protocol::{parse_i64, reply};
use bytes::Bytes;

/// Commands whose confirmations are pushes: Redis sends them even under `CLIENT REPLY OFF`
/// or `SKIP` (its `CLIENT_PUSHING`), and a subscriber waits for them.
const CONFIRMED_BY_PUSH: &[&str] = &[
    "subscribe",
    "psubscribe",
    "ssubscribe",
    "unsubscribe",
    "punsubscribe",
    "sunsubscribe",
];

/// Applies CLIENT REPLY OFF/SKIP to one command: whether its reply is dropped, and whether
/// its confirmations (not its errors) are written anyway (see [`CONFIRMED_BY_PUSH`]).
pub fn reply_silence(client: &mut ClientState, command: Option<&CommandInfo>) -> (bool, bool) {
    if command.is_some_and(|c| c.name == "client|reply") {
        // ON answers; OFF and SKIP do not.
        return (client.reply_mode != ReplyMode::On, false);
    }
    let pushes = command.is_some_and(|c| CONFIRMED_BY_PUSH.contains(&c.name.as_str()));
    let silent = match client.reply_mode {
        ReplyMode::On => false,
        ReplyMode::Off => true,
        ReplyMode::SkipNext => {
            client.reply_mode = ReplyMode::On;
            true
        }
    };
    (silent, pushes)
}

/// Answers `CLIENT …`.
pub fn client(args: &[Bytes], client: &mut ClientState, registry: &Registry) -> Bytes {
    let sub = args[1].to_ascii_lowercase();
    match (sub.as_slice(), args.len()) {
        (b"setname", 3) => match set_name(client, &args[2]) {
            Ok(()) => reply::ok(),
            Err(e) => e,
        },
        (b"getname", 2) => client
            .handle
            .name()
            .map(reply::bulk)
            .unwrap_or_else(|| reply::null_for(client.resp3)),
        (b"id", 2) => reply::integer(client.id as i64),
        (b"setinfo", 4) => reply::ok(),
        (b"reply", 3) => match args[2].to_ascii_lowercase().as_slice() {
            b"on" => {
                client.reply_mode = ReplyMode::On;
                reply::ok()
            }
            b"off" => {
                client.reply_mode = ReplyMode::Off;
                reply::ok()
            }
            b"skip" => {
                if client.reply_mode != ReplyMode::Off {
                    client.reply_mode = ReplyMode::SkipNext;
                }
                reply::ok()
            }
            _ => reply::error("ERR syntax error"),
        },
        (b"info", 2) => reply::verbatim(&client.handle.line(), client.resp3),
        (b"help", 2) => {
            let lines = [
                "CLIENT <subcommand> [<arg> ...]. Subcommands served by slotproxy:",
                "ID, INFO, LIST [TYPE normal|pubsub] [ID id ...], GETNAME, SETNAME name,",
                "SETINFO attr value, REPLY ON|OFF|SKIP, UNBLOCK id [TIMEOUT|ERROR],",
                "KILL ip:port | KILL [ID id] [ADDR a] [LADDR a] [USER u] [TYPE t] [SKIPME yes|no]",
            ];
            let lines: Vec<Bytes> = lines.iter().map(|l| reply::simple(l)).collect();
            reply::array_of_raw(&lines)
        }
        (b"list", _) => list(args, client, registry),
        (b"kill", _) => kill(args, client, registry),
        (b"unblock", 3 | 4) => {
            let with_error = match args.get(3).map(|a| a.to_ascii_lowercase()) {
                None => false,
                Some(mode) if mode == b"timeout" => false,
                Some(mode) if mode == b"error" => true,
                Some(_) => {
                    return reply::error("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR")
                }
            };
            let Some(id) = parse_i64(&args[2]) else {
                return reply::error("ERR value is not an integer or out of range");
            };
            let woken = u64::try_from(id)
                .ok()
                .and_then(|id| registry.get(id))
                .is_some_and(|c| c.wake(with_error));
            reply::integer(i64::from(woken))
        }
        (b"no-evict", _) | (b"tracking", _) | (b"caching", _) | (b"getredir", _)
        | (b"trackinginfo", _) => reply::error(&format!(
            "ERR CLIENT {} is not supported by slotproxy: the proxy shares its node connections among clients, so per-client node state cannot be set",
            String::from_utf8_lossy(&args[1]).to_uppercase()
        )),
        (b"pause", _) | (b"unpause", _) => reply::error(&format!(
            "ERR command 'CLIENT {}' is not allowed through slotproxy: it administers single nodes",
            String::from_utf8_lossy(&args[1]).to_uppercase()
        )),
        _ => reply::error(&format!(
            "ERR CLIENT {} is not supported by slotproxy",
            String::from_utf8_lossy(&args[1]).to_uppercase()
        )),
    }
}

/// `CLIENT LIST [TYPE normal|pubsub] [ID id …]`
fn list(args: &[Bytes], client: &ClientState, registry: &Registry) -> Bytes {
    let mut ids: Option<Vec<u64>> = None;
    let mut i = 2;
    while i < args.len() {
        let option = args[i].to_ascii_lowercase();
        match option.as_slice() {
            b"id" if i + 1 < args.len() => {
                let mut wanted = Vec::new();
                for arg in &args[i + 1..] {
                    match parse_i64(arg).filter(|&id| id > 0) {
                        Some(id) => wanted.push(id as u64),
                        None => return reply::error("ERR Invalid client ID"),
                    }
                }
                ids = Some(wanted);
                i = args.len();
            }
            b"type" if i + 1 < args.len() => {
                let kind = args[i + 1].to_ascii_lowercase();
                if !matches!(
                    kind.as_slice(),
                    b"normal" | b"pubsub" | b"master" | b"replica" | b"slave"
                ) {
                    return reply::error(&format!(
                        "ERR Unknown client type '{}'",
                        String::from_utf8_lossy(&args[i + 1])
                    ));
                }
                // The proxy has no replica or master clients.
                if matches!(kind.as_slice(), b"master" | b"replica" | b"slave") {
                    ids = Some(Vec::new());
                }
                i += 2;
            }
            _ => return reply::error("ERR syntax error"),
        }
    }
    reply::verbatim(&registry.list(ids.as_deref()), client.resp3)
}

/// `CLIENT KILL ip:port` or `CLIENT KILL [ID id] [ADDR a] [LADDR a] [USER u] [TYPE t]
/// [SKIPME yes|no]`
fn kill(args: &[Bytes], client: &ClientState, registry: &Registry) -> Bytes {
    if args.len() == 3 {
        let filter = KillFilter {
            addr: Some(String::from_utf8_lossy(&args[2]).into_owned()),
            ..KillFilter::default()
        };
        return match registry.kill(&filter, client.id) {
            0 => reply::error("ERR No such client"),
            _ => reply::ok(),
        };
    }
    if args.len() < 4 || args.len() % 2 != 0 {
        return reply::error("ERR syntax error");
    }
    let mut filter = KillFilter {
        skip_me: true,
        ..KillFilter::default()
    };
    for pair in args[2..].chunks(2) {
        let value = String::from_utf8_lossy(&pair[1]).into_owned();
        match pair[0].to_ascii_lowercase().as_slice() {
            b"id" => match parse_i64(&pair[1]).filter(|&id| id > 0) {
                Some(id) => filter.id = Some(id as u64),
                None => return reply::error("ERR client-id should be greater than 0"),
            },
            b"addr" => filter.addr = Some(value),
            b"laddr" => filter.laddr = Some(value),
            b"user" => filter.user = Some(value),
            b"type" => match value.to_ascii_lowercase().as_str() {
                "normal" => filter.pubsub = Some(false),
                "pubsub" => filter.pubsub = Some(true),
                // The proxy has no replica or master clients: nothing matches.
                "master" | "replica" | "slave" => return reply::integer(0),
                _ => return reply::error(&format!("ERR Unknown client type '{value}'")),
            },
            b"skipme" => match value.to_ascii_lowercase().as_str() {
                "yes" => filter.skip_me = true,
                "no" => filter.skip_me = false,
                _ => return reply::error("ERR syntax error"),
            },
            _ => return reply::error("ERR syntax error"),
        }
    }
    reply::integer(registry.kill(&filter, client.id) as i64)
}
