//! The proxy's ACL users meet its sessions: logging in, the per-command check, and the
//! disconnection of a deleted user's clients.

use super::auth::AuthOutcome;
use super::client_state::ClientState;
use super::Shared;
use crate::acl::log::{Context, Entry, Reason};
use crate::acl::selector::{channels_of, Call, Denial};
use crate::acl::{Acl, User, Users};
use crate::config::AuthSection;
use crate::protocol::acl_catalog::Catalog;
use crate::protocol::command::CommandInfo;
use crate::protocol::reply;
use crate::upstream::Lane;
use bytes::Bytes;
use std::sync::Arc;

/// The users `[auth]` describes: `default` (with `requirepass` as its password, else
/// `nopass`) and each `[[auth.users]]` entry with full rights.
pub fn users_from_config(auth: &AuthSection) -> Users {
    let none = Catalog::default();
    let mut users = Users::default();
    let mut default = User::default_user(&none);
    if !auth.requirepass.is_empty() {
        let rules = [
            b"resetpass".to_vec(),
            [b">", auth.requirepass.as_bytes()].concat(),
        ];
        for rule in rules {
            let _ = default.apply(&rule, &none);
        }
    }
    users.by_name.insert("default".into(), Arc::new(default));
    for entry in &auth.users {
        let mut user = User::new(&entry.name);
        let password = [b">", entry.password.as_bytes()].concat();
        for rule in [&b"on"[..], &password, b"+@all", b"~*", b"&*"] {
            let _ = user.apply(rule, &none);
        }
        users.by_name.insert(entry.name.clone(), Arc::new(user));
    }
    users
}

/// The users the configuration defines, read against the cluster's commands: the ACL file's
/// (`auth.aclfile`, every rule must apply) or else `[auth]`'s.
pub fn configured_users(auth: &AuthSection, catalog: &Catalog) -> Result<Users, String> {
    if auth.aclfile.is_empty() {
        return Ok(users_from_config(auth));
    }
    let text = std::fs::read_to_string(&auth.aclfile)
        .map_err(|e| format!("Error loading ACLs, opening file '{}': {e}", auth.aclfile))?;
    let strict = crate::acl::file::Strictness::Strict;
    let mut users = crate::acl::file::parse(&text, &auth.aclfile, catalog, strict)?;
    // A file without `default`: Redis' default user, with `requirepass` if one is set.
    if !users.by_name.contains_key("default") {
        let configured = users_from_config(&AuthSection {
            requirepass: auth.requirepass.clone(),
            ..Default::default()
        });
        users.by_name.extend(configured.by_name);
    }
    Ok(users)
}

/// Whether a new connection must log in: the `default` user has a password or is off.
pub fn login_required(acl: &Acl) -> bool {
    acl.user("default")
        .map_or(true, |u| !(u.nopass && u.enabled))
}

/// The `default` user, which every connection starts as.
pub fn default_user(acl: &Acl) -> Arc<User> {
    acl.user("default")
        .unwrap_or_else(|| Arc::new(User::default_user(&Catalog::default())))
}

/// Picks up changes to the client's user since its last command.
pub fn refresh(acl: &Acl, client: &mut ClientState) {
    let generation = acl.generation();
    if client.acl_generation != generation {
        client.acl_generation = generation;
        if let Some(user) = acl.user(&client.user.name) {
            client.user = user;
        }
    }
}

/// Checks a command of `client`: `None` when allowed, else the `-NOPERM` reply (logged in
/// `ACL LOG` and counted).
pub fn denied(
    shared: &Shared,
    client: &ClientState,
    info: &CommandInfo,
    args: &[Bytes],
    catalog: &Catalog,
) -> Option<Bytes> {
    let denial = match permission(client, info, args, catalog) {
        Ok(()) => return script_denied(shared, client, info, catalog),
        Err(denial) => denial,
    };
    record(shared, client, info, args, denial);
    Some(reply::error(&crate::acl::noperm(denial, &info.name)))
}

/// EXEC's second look at a queued command, with the user's rules as they are now: `None`
/// when it may still run, else the `-NOPERM` that takes its place in EXEC's reply, in
/// Redis' words (`execCommand`), logged and counted as at queue time.
pub fn revoked_since_queued(
    shared: &Shared,
    client: &ClientState,
    info: &CommandInfo,
    args: &[Bytes],
    catalog: &Catalog,
) -> Option<Bytes> {
    let denial = permission(client, info, args, catalog).err()?;
    record(shared, client, info, args, denial);
    let reason = match denial {
        Denial::Command => "no permission to execute the command or subcommand",
        Denial::Key(_) => "no permission to touch the specified keys",
        Denial::Channel(_) => "no permission to access one of the channels used as arguments",
    };
    Some(reply::error(&format!(
        "NOPERM ACLs rules changed between the moment the transaction was accumulated and the EXEC call. This command is no longer allowed for the following reason: {reason}"
    )))
}

/// The user's rules applied to one command.
fn permission(
    client: &ClientState,
    info: &CommandInfo,
    args: &[Bytes],
    catalog: &Catalog,
) -> Result<(), Denial> {
    crate::acl::check(&client.user, || {
        Some(Call {
            command: catalog.find_exact(&info.name)?,
            args,
            keys: info.acl_keys(args),
            channels: channels_of(&info.name, args.len()),
        })
    })
}

/// A denial into `ACL LOG` and the metric.
fn record(
    shared: &Shared,
    client: &ClientState,
    info: &CommandInfo,
    args: &[Bytes],
    denial: Denial,
) {
    let reason = Reason::from(denial);
    shared
        .metrics
        .acl_denials
        .with_label_values(&[reason.as_str()])
        .inc();
    let object = match denial {
        Denial::Command => info.name.clone(),
        Denial::Key(at) | Denial::Channel(at) => String::from_utf8_lossy(&args[at]).into_owned(),
    };
    let context = match client.txn.in_multi() {
        true => Context::Multi,
        false => Context::Toplevel,
    };
    log(
        shared,
        client,
        reason,
        context,
        object,
        client.user.name.clone(),
    );
}

/// A restricted user's script runs on a node user with its rights (see
/// [`super::script_users`]); refused, with `-NOPERM` saying why, when there can be none.
fn script_denied(
    shared: &Shared,
    client: &ClientState,
    info: &CommandInfo,
    catalog: &Catalog,
) -> Option<Bytes> {
    // The default user's path: one flag test, no name comparisons.
    if client.user.unrestricted() || !super::script_users::runs_script(info) {
        return None;
    }
    let text = script_refusal(shared, client, info, catalog)?;
    shared
        .metrics
        .acl_denials
        .with_label_values(&[Reason::Command.as_str()])
        .inc();
    let context = match client.txn.in_multi() {
        true => Context::Multi,
        false => Context::Toplevel,
    };
    let user = client.user.name.clone();
    log(
        shared,
        client,
        Reason::Command,
        context,
        info.name.clone(),
        user,
    );
    Some(reply::error(&text))
}

/// The lane a command of `client` goes on: for a restricted user's script, the one of its
/// node user (`Err`: the key pattern that prevents one).
pub fn lane_for(
    shared: &Shared,
    client: &ClientState,
    info: &CommandInfo,
    lane: Lane,
    catalog: &Catalog,
) -> Result<Lane, String> {
    if client.user.unrestricted() || !super::script_users::runs_script(info) {
        return Ok(lane);
    }
    let settings = shared.router.topology.settings();
    let identity = shared.script_users.identity(
        &settings.identities,
        &settings.password,
        &client.user,
        catalog,
    );
    remove_stale_node_users(shared);
    Ok(Lane {
        identity: identity?,
        ..lane
    })
}

/// After a newer set of users was installed: the node users of changed users are dropped.
pub fn forget_outdated_node_users(shared: &Shared) {
    let identities = &shared.router.topology.settings().identities;
    shared
        .script_users
        .retain_current(identities, &shared.acl.users());
    remove_stale_node_users(shared);
}

/// Removes the node users of replaced or deleted users from the masters, after a pause in
/// which every proxy of the fleet has seen the change (one still using such a node user
/// would get it back at its next connection, and the next sweep removes it again).
fn remove_stale_node_users(shared: &Shared) {
    let stale = shared.script_users.take_stale();
    if stale.is_empty() {
        return;
    }
    let (router, script_users) = (shared.router.clone(), shared.script_users.clone());
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        let stale: Vec<String> = stale
            .into_iter()
            .filter(|name| !script_users.in_use(name))
            .collect();
        let Some(snapshot) = router.topology.snapshot() else {
            return;
        };
        if stale.is_empty() {
            return;
        }
        let mut args = vec!["ACL", "DELUSER"];
        args.extend(stale.iter().map(String::as_str));
        let payload = crate::protocol::request::encode_command(&args);
        for pool in snapshot.masters() {
            let _ = router
                .send_to_node(pool, Lane::default(), payload.clone())
                .await;
        }
    });
}

/// Why a script of `client` cannot run with its user's rights, if it cannot.
pub fn script_refusal(
    shared: &Shared,
    client: &ClientState,
    info: &CommandInfo,
    catalog: &Catalog,
) -> Option<String> {
    use super::script_users::{unreachable_keys, watched};
    match lane_for(shared, client, info, client.lane(), catalog) {
        Err(pattern) => Some(unreachable_keys(&info.name, &pattern)),
        Ok(lane) if lane.identity != crate::upstream::identity::PROXY && client.txn.watching() => {
            Some(watched(&info.name))
        }
        Ok(_) => None,
    }
}

fn log(
    shared: &Shared,
    client: &ClientState,
    reason: Reason,
    context: Context,
    object: String,
    username: String,
) {
    shared.acl.log.add(Entry {
        count: 1,
        reason,
        context,
        object,
        username,
        at_ms: 0,
        client_info: client.handle.line().trim_end().to_string(),
    });
}

/// `AUTH [user] password`: the reply, and what the attempt came to.
pub fn auth(shared: &Shared, client: &ClientState, args: &[Bytes]) -> (Bytes, AuthOutcome) {
    let (user, password) = match args.len() {
        2 => ("default".to_string(), &args[1]),
        3 => (String::from_utf8_lossy(&args[1]).into_owned(), &args[2]),
        _ => return (reply::error("ERR syntax error"), AuthOutcome::NotTried),
    };
    if args.len() == 2 && default_user(&shared.acl).nopass {
        return (
            reply::error(
                "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
            ),
            AuthOutcome::NotTried,
        );
    }
    login(shared, client, &args[0], user, password)
}

/// Checks credentials (AUTH, HELLO … AUTH); a failure is logged in `ACL LOG`.
pub fn login(
    shared: &Shared,
    client: &ClientState,
    command: &[u8],
    user: String,
    password: &[u8],
) -> (Bytes, AuthOutcome) {
    match shared.acl.authenticate(&user, password) {
        Some(_) => (reply::ok(), AuthOutcome::LoggedIn(user)),
        None => {
            let object = String::from_utf8_lossy(command).into_owned();
            log(
                shared,
                client,
                Reason::Auth,
                Context::Toplevel,
                object,
                user,
            );
            (
                reply::error(super::auth::WRONGPASS),
                AuthOutcome::WrongPassword,
            )
        }
    }
}

/// Closes the subscribers whose user may no longer listen to one of their channels (Redis'
/// `ACLKillPubsubClientsIfNeeded`); called as changed users are installed.
pub fn close_revoked_subscribers(shared: &Shared) {
    let users = shared.acl.users();
    for client in shared.clients.all() {
        let names = client.subscribed_to();
        if names.is_empty() {
            continue;
        }
        let keeps = users
            .by_name
            .get(&client.user())
            .is_some_and(|user| may_keep(user, &names));
        if !keeps {
            tracing::debug!(client = %client.peer, "closing a subscriber whose user lost a channel");
            client.kill.cancel();
        }
    }
}

/// Whether `user` may still listen to every one of `subscriptions` (name, is a pattern).
pub fn may_keep(user: &User, subscriptions: &[(Bytes, bool)]) -> bool {
    subscriptions.iter().all(|(name, pattern)| {
        user.selectors.iter().any(|s| {
            s.all_channels
                || s.channels.iter().any(|allowed| match pattern {
                    true => allowed == name,
                    false => crate::acl::glob::matches(allowed, name),
                })
        })
    })
}

/// Closes the connections of a deleted user (as Redis does).
pub fn disconnect(shared: &Shared, user: &str) {
    let identities = &shared.router.topology.settings().identities;
    shared.script_users.forget(identities, user);
    remove_stale_node_users(shared);
    let filter = super::clients::KillFilter {
        user: Some(user.to_string()),
        ..Default::default()
    };
    shared.clients.kill(&filter, 0);
}
