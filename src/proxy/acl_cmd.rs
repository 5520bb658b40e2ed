//! The `ACL` command, answered by the proxy from its own users (see [`crate::acl`]).

use super::action::Action;
use super::client_state::ClientState;
use super::Shared;
use crate::acl::selector::{channels_of, Call, Denial, Selector};
use crate::acl::user::{merge_selector_args, valid_name};
use crate::acl::{describe, User};
use crate::protocol::acl_catalog::{category_bit, Catalog, CATEGORIES};
use crate::protocol::command::{CommandTable, Lookup};
use crate::protocol::reply;
use bytes::Bytes;
use std::sync::Arc;

fn text(s: &str) -> Bytes {
    reply::bulk(Bytes::copy_from_slice(s.as_bytes()))
}

/// Answers `ACL <subcommand> …`; changes are stored in the cluster first (see
/// [`super::acl_sync`]), so their reply comes later.
pub fn acl(
    shared: &Arc<Shared>,
    client: &ClientState,
    args: &[Bytes],
    table: &CommandTable,
) -> Action {
    let sub = String::from_utf8_lossy(&args[1]).to_ascii_lowercase();
    match (sub.as_str(), args.len()) {
        ("setuser", n) if n >= 3 => setuser(shared, args),
        ("log", 2 | 3) => super::acl_log::log(shared, args, client.resp3),
        ("deluser", n) if n >= 3 => deluser(shared, args),
        ("load", 2) | ("save", 2) if !shared.auth.aclfile.is_empty() => {
            let shared = shared.clone();
            match sub.as_str() {
                "load" => Action::later(async move { load(&shared).await }),
                _ => Action::now(save(&shared, table.catalog())),
            }
        }
        _ => Action::now(read_only(shared, client, args, table, &sub)),
    }
}

/// The subcommands that change nothing.
fn read_only(
    shared: &Shared,
    client: &ClientState,
    args: &[Bytes],
    table: &CommandTable,
    sub: &str,
) -> Bytes {
    let catalog = table.catalog();
    let resp3 = client.resp3;
    match (sub, args.len()) {
        ("getuser", 3) => match shared.acl.user(&String::from_utf8_lossy(&args[2])) {
            Some(user) => getuser(&user, catalog, resp3),
            None => reply::null_for(resp3),
        },
        ("list", 2) | ("users", 2) => {
            let users = shared.acl.users();
            let lines: Vec<Bytes> = users
                .by_name
                .values()
                .map(|u| match sub {
                    "users" => text(&u.name),
                    _ => text(&format!("user {} {}", u.name, describe::user(u, catalog))),
                })
                .collect();
            reply::array_of_raw(&lines)
        }
        ("whoami", 2) => text(&client.user.name),
        ("load", 2) | ("save", 2) => reply::error(
            "ERR This Redis instance is not configured to use an ACL file. You may want to specify users via the ACL SETUSER command and then issue a CONFIG REWRITE (assuming you have a Redis configuration file set) in order to store users in the Redis configuration.",
        ),
        ("cat", 2) => {
            let names: Vec<Bytes> = CATEGORIES.iter().map(|c| text(c)).collect();
            reply::array_of_raw(&names)
        }
        ("cat", 3) => {
            let name = String::from_utf8_lossy(&args[2]);
            let Some(bit) = category_bit(&name) else {
                let shown: String = name.chars().take(128).collect();
                return reply::error(&format!("ERR Unknown category '{shown}'"));
            };
            let names: Vec<Bytes> = catalog
                .walk()
                .into_iter()
                .filter(|e| !e.module && e.categories & bit != 0)
                .map(|e| text(&e.name))
                .collect();
            reply::array_of_raw(&names)
        }
        ("genpass", 2 | 3) => genpass(args),
        ("dryrun", n) if n >= 4 => dryrun(shared, args, table),
        ("help", 2) => help(),
        _ => reply::error(&format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try ACL HELP.",
            String::from_utf8_lossy(&args[1]).chars().take(128).collect::<String>()
        )),
    }
}

/// `ACL LOAD`: the ACL file replaces every user (all or nothing); as in Redis, every
/// connection of a user other than `default` is closed.
async fn load(shared: &Shared) -> Bytes {
    let Some(snapshot) = shared.router.topology.current().as_ref().cloned() else {
        return reply::error("ERR slotproxy: not connected to the cluster yet");
    };
    let loaded = match super::acl_users::configured_users(&shared.auth, snapshot.commands.catalog())
    {
        Ok(users) => users,
        Err(errors) => return reply::error(&format!("ERR {errors}")),
    };
    let before: Vec<String> = shared.acl.users().by_name.keys().cloned().collect();
    let changed = super::acl_sync::change(shared, |users, _| {
        *users = loaded.clone();
        Ok(())
    })
    .await;
    if let Err(error) = changed {
        return error;
    }
    for name in before.iter().filter(|n| *n != "default") {
        super::acl_users::disconnect(shared, name);
    }
    reply::ok()
}

/// `ACL SAVE`: every user to the ACL file, replaced at once (written aside, then renamed).
fn save(shared: &Shared, catalog: &Catalog) -> Bytes {
    let path = std::path::Path::new(&shared.auth.aclfile);
    let text = crate::acl::file::to_text(&shared.acl.users(), catalog);
    let aside = path.with_extension(format!("tmp-{}", std::process::id()));
    let written = std::fs::write(&aside, text).and_then(|()| std::fs::rename(&aside, path));
    match written {
        Ok(()) => reply::ok(),
        Err(error) => {
            let _ = std::fs::remove_file(&aside);
            tracing::warn!(file = %path.display(), %error, "ACL SAVE failed");
            reply::error("ERR There was an error trying to save the ACLs. Please check the server logs for more information")
        }
    }
}

fn setuser(shared: &Arc<Shared>, args: &[Bytes]) -> Action {
    let name = String::from_utf8_lossy(&args[2]).into_owned();
    if !valid_name(&args[2]) {
        return Action::now(reply::error(
            "ERR Usernames can't contain spaces or null characters",
        ));
    }
    let rules: Vec<&[u8]> = args[3..].iter().map(|a| a.as_ref()).collect();
    let merged = match merge_selector_args(&rules) {
        Ok(merged) => merged,
        Err(at) => {
            return Action::now(reply::error(&format!(
                "ERR Unmatched parenthesis in acl selector starting at '{}'.",
                String::from_utf8_lossy(rules[at])
            )))
        }
    };
    let shared = shared.clone();
    Action::later(async move {
        let changed = super::acl_sync::change(&shared, |users, catalog| {
            let mut user = users
                .by_name
                .get(&name)
                .map(|u| User::clone(u))
                .unwrap_or_else(|| User::new(&name));
            for rule in &merged {
                if let Err(error) = user.apply(rule, catalog) {
                    return Err(reply::error(&format!(
                        "ERR Error in ACL SETUSER modifier '{}': {error}",
                        String::from_utf8_lossy(rule)
                    )));
                }
            }
            users.by_name.insert(name.clone(), Arc::new(user));
            Ok(())
        })
        .await;
        match changed {
            Ok(()) => reply::ok(),
            Err(error) => error,
        }
    })
}

/// Deletes users; their connections are closed as the change is installed (here and, as
/// they see it, on the other proxies).
fn deluser(shared: &Arc<Shared>, args: &[Bytes]) -> Action {
    let names: Vec<String> = args[2..]
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if names.iter().any(|n| n == "default") {
        return Action::now(reply::error("ERR The 'default' user cannot be removed"));
    }
    let shared = shared.clone();
    Action::later(async move {
        let deleted = super::acl_sync::change(&shared, |users, _| {
            Ok(names
                .iter()
                .filter(|n| users.by_name.remove(*n).is_some())
                .count())
        })
        .await;
        match deleted {
            Ok(count) => reply::integer(count as i64),
            Err(error) => error,
        }
    })
}

/// `ACL GETUSER`'s fields of one selector.
fn selector_fields(selector: &Selector, catalog: &Catalog) -> Vec<(Bytes, Bytes)> {
    vec![
        (
            text("commands"),
            text(&describe::command_rules(selector, catalog)),
        ),
        (text("keys"), text(&describe::keys(selector))),
        (text("channels"), text(&describe::channels(selector))),
    ]
}

fn getuser(user: &User, catalog: &Catalog, resp3: bool) -> Bytes {
    let flags: Vec<Bytes> = describe::flags(user).into_iter().map(text).collect();
    let flags = match resp3 {
        true => set_of_raw(&flags),
        false => reply::array_of_raw(&flags),
    };
    let passwords: Vec<Bytes> = user.passwords.iter().map(|p| text(p)).collect();
    let mut fields = vec![
        (text("flags"), flags),
        (text("passwords"), reply::array_of_raw(&passwords)),
    ];
    fields.extend(selector_fields(user.root(), catalog));
    let selectors: Vec<Bytes> = user.selectors[1..]
        .iter()
        .map(|s| reply::map_of_raw(&selector_fields(s, catalog), resp3))
        .collect();
    fields.push((text("selectors"), reply::array_of_raw(&selectors)));
    reply::map_of_raw(&fields, resp3)
}

fn set_of_raw(elements: &[Bytes]) -> Bytes {
    let mut out = format!("~{}\r\n", elements.len()).into_bytes();
    for e in elements {
        out.extend_from_slice(e);
    }
    Bytes::from(out)
}

fn genpass(args: &[Bytes]) -> Bytes {
    const MAX_BITS: i64 = 4096;
    let bits = match args.get(2) {
        None => 256,
        Some(arg) => match crate::protocol::parse_i64(arg) {
            Some(bits) => bits,
            None => return reply::error("ERR value is not an integer or out of range"),
        },
    };
    if bits <= 0 || bits > MAX_BITS {
        return reply::error(&format!("ERR ACL GENPASS argument must be the number of bits for the output password, a positive number up to {MAX_BITS}"));
    }
    let chars = ((bits + 3) / 4) as usize;
    let password: String = (0..chars)
        .map(|_| char::from(b"0123456789abcdef"[rand::random::<usize>() % 16]))
        .collect();
    text(&password)
}

fn dryrun(shared: &Shared, args: &[Bytes], table: &CommandTable) -> Bytes {
    let name = String::from_utf8_lossy(&args[2]);
    let Some(user) = shared.acl.user(&name) else {
        return reply::error(&format!("ERR User '{name}' not found"));
    };
    let call_args = &args[3..];
    let info = match table.lookup(call_args) {
        Lookup::Found(info) => info,
        Lookup::WrongArity(info) => {
            return reply::error(&format!(
                "ERR wrong number of arguments for '{}' command",
                info.name
            ))
        }
        Lookup::Unknown | Lookup::UnknownSubcommand(_) => {
            return reply::error(&format!(
                "ERR Command '{}' not found",
                String::from_utf8_lossy(&call_args[0])
            ))
        }
    };
    let catalog = table.catalog();
    let checked = crate::acl::check(&user, || {
        Some(Call {
            command: catalog.find_exact(&info.name)?,
            args: call_args,
            keys: info.acl_keys(call_args),
            channels: channels_of(&info.name, call_args.len()),
        })
    });
    let shown = |at: usize| String::from_utf8_lossy(&call_args[at]).into_owned();
    match checked {
        Ok(()) => reply::ok(),
        Err(Denial::Command) => text(&format!(
            "This user has no permissions to run the '{}' command",
            info.name
        )),
        Err(Denial::Key(at)) => text(&format!(
            "This user has no permissions to access the '{}' key",
            shown(at)
        )),
        Err(Denial::Channel(at)) => text(&format!(
            "This user has no permissions to access the '{}' channel",
            shown(at)
        )),
    }
}

fn help() -> Bytes {
    const LINES: &[&str] = &[
        "ACL <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "CAT [<category>]",
        "    List all commands that belong to <category>, or all command categories",
        "    when no category is specified.",
        "DELUSER <username> [<username> ...]",
        "    Delete a list of users.",
        "DRYRUN <username> <command> [<arg> ...]",
        "    Returns whether the user can execute the given command without executing the command.",
        "GETUSER <username>",
        "    Get the user's details.",
        "GENPASS [<bits>]",
        "    Generate a secure 256-bit user password. The optional `bits` argument can",
        "    be used to specify a different size.",
        "LIST",
        "    Show users details in config file format.",
        "LOAD",
        "    Reload users from the ACL file.",
        "LOG [<count> | RESET]",
        "    Show the ACL log entries.",
        "SAVE",
        "    Save the current config to the ACL file.",
        "SETUSER <username> <attribute> [<attribute> ...]",
        "    Create or modify a user with the specified attributes.",
        "USERS",
        "    List all the registered usernames.",
        "WHOAMI",
        "    Return the current connection username.",
        "HELP",
        "    Print this help.",
    ];
    let lines: Vec<Bytes> = LINES.iter().map(|l| reply::simple(l)).collect();
    reply::array_of_raw(&lines)
}
