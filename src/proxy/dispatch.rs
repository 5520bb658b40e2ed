//! From one decoded command to the future of its reply.
//!
//! Local commands are answered at once; everything else becomes a future that the session
//! queues in request order. The snapshot is looked at without taking a reference count
//! (see `Topology::current`), and cloned only by the commands that keep it.

use super::action::{common_slot, send, Action};
use super::auth::AuthOutcome;
use super::client_state::ClientState;
use super::fanout;
use super::local;
use super::pubsub;
use super::replies::{Observed, Reply};
use super::Shared;
use crate::cluster::router::Target;
use crate::cluster::{key_slot, Snapshot};
use crate::metrics::CommandGroup;
use crate::protocol::command::{CommandInfo, Local, Lookup, Policy, Timeout, TxnCommand};
use crate::protocol::keyspec::KeyPositions;
use crate::protocol::{reply, Request};
use crate::upstream::Lane;
use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt};
use std::sync::Arc;
use std::time::Instant;

fn ready(reply: Bytes) -> Action {
    Action::now(reply)
}

/// What the session does with a command, with what its metrics need.
pub enum Dispatched {
    /// Queue this reply; count it when it is written.
    Queue(Reply, Observed),
    /// Send this reply after all earlier ones, then close the connection (already counted).
    Close(Bytes),
    /// See [`Action::Exclusive`]; counted when it finishes.
    Exclusive(BoxFuture<'static, Bytes>),
}

/// Decides how to answer `request` (read at `started`), and has the answer counted in the
/// metrics.
pub fn dispatch(
    shared: &Arc<Shared>,
    client: &mut ClientState,
    request: Request,
    started: Instant,
) -> Dispatched {
    shared.monitors.publish(&client.handle.peer, &request);
    let lane = client.lane();
    let was_in_multi = client.txn.in_multi();
    let (action, command, group) = route(shared, client, lane, request, started);
    if was_in_multi || client.txn.in_multi() {
        client.handle.set_multi(client.txn.queued_len());
    }
    let (silent, pushes) = super::client_cmd::reply_silence(client, command.as_deref());
    match action {
        Action::Reply(reply) => Dispatched::Queue(
            reply,
            Observed {
                command,
                group,
                started,
                silent,
                pushes,
            },
        ),
        Action::ReplyAndClose(reply) => {
            shared
                .metrics
                .observe_command(command.as_deref(), group, &reply, started.elapsed());
            Dispatched::Close(reply)
        }
        Action::Exclusive(reply) => {
            let metrics = shared.metrics.clone();
            Dispatched::Exclusive(
                async move {
                    let reply = reply.await;
                    metrics.observe_command(command.as_deref(), group, &reply, started.elapsed());
                    match silent {
                        true => Bytes::new(),
                        false => reply,
                    }
                }
                .boxed(),
            )
        }
    }
}

/// A command refused before it ran (queued in MULTI: the transaction fails at EXEC).
fn rejected_known(
    client: &mut ClientState,
    reply: Bytes,
    info: Arc<CommandInfo>,
    in_multi: bool,
) -> (Action, Option<Arc<CommandInfo>>, CommandGroup) {
    // A refused EXEC ends the transaction, as Redis' `execCommandAbort` does.
    if info.name == "exec" {
        client.txn.reset();
        let text = String::from_utf8_lossy(&reply[1..]).trim_end().to_string();
        let reply = reply::error(&format!(
            "EXECABORT Transaction discarded because of: {text}"
        ));
        return (ready(reply), Some(info), CommandGroup::Rejected);
    }
    let reply = match in_multi {
        true => client.txn.fail(reply),
        false => reply,
    };
    (ready(reply), Some(info), CommandGroup::Rejected)
}

/// The action for `request`, the command it is (when the cluster knows it) and its group.
fn route(
    shared: &Arc<Shared>,
    client: &mut ClientState,
    lane: Lane,
    request: Request,
    started: Instant,
) -> (Action, Option<Arc<CommandInfo>>, CommandGroup) {
    let in_multi = client.txn.in_multi();
    let mut rejected = |reply: Bytes| {
        let reply = match in_multi {
            true => client.txn.fail(reply),
            false => reply,
        };
        (ready(reply), None, CommandGroup::Rejected)
    };
    let current = shared.router.topology.current();
    let Some(snapshot) = current.as_ref() else {
        return rejected(reply::error(
            "ERR slotproxy: not connected to the cluster yet (no slot map loaded)",
        ));
    };
    let info = match snapshot.commands.lookup(&request.args) {
        Lookup::Found(info) => {
            let id = Arc::as_ptr(info) as usize;
            client.handle.ran(info, id != client.last_command, started);
            client.last_command = id;
            info.clone()
        }
        Lookup::Unknown => return rejected(unknown_command(&request.args)),
        Lookup::UnknownSubcommand(parent) => {
            return rejected(reply::error(&format!(
                "ERR unknown subcommand '{}'. Try {} HELP.",
                String::from_utf8_lossy(&request.args[1]),
                parent.name.to_uppercase()
            )))
        }
        Lookup::WrongArity(info) => {
            return rejected(reply::error(&format!(
                "ERR wrong number of arguments for '{}' command",
                info.name
            )))
        }
    };
    if !client.authenticated && !super::auth::allowed_before_auth(&info.name) {
        return (
            ready(reply::error(super::auth::NOAUTH)),
            Some(info),
            CommandGroup::Rejected,
        );
    }
    super::acl_users::refresh(&shared.acl, client);
    if let Some(denied) = super::acl_users::denied(
        shared,
        client,
        &info,
        &request.args,
        snapshot.commands.catalog(),
    ) {
        return rejected_known(client, denied, info, in_multi);
    }
    if let Some(refused) = super::reserved::refusal(&info, &request.args) {
        return rejected_known(client, refused, info, in_multi);
    }
    let group = match info.policy {
        Policy::Local(_) => CommandGroup::Local,
        Policy::Refused(_) => CommandGroup::Rejected,
        Policy::Keyed if info.write => CommandGroup::Write,
        Policy::Keyed => CommandGroup::Read,
        Policy::Split(_) => CommandGroup::MultiKey,
        Policy::AllMasters(_) | Policy::Scan => CommandGroup::FanOut,
        Policy::Transaction(_) | Policy::Blocking(_) | Policy::Wait | Policy::PubSub(_) => {
            CommandGroup::Pinned
        }
        Policy::Admin(_) => CommandGroup::FanOut,
    };
    // RESP2's subscribed mode; a RESP3 client may run any command while subscribed.
    if !client.resp3 && client.pubsub.as_ref().is_some_and(|p| p.active()) {
        match info.policy {
            Policy::PubSub(_) | Policy::Local(Local::Quit | Local::Reset) => {}
            Policy::Local(Local::Ping) => {
                return (ready(pubsub::ping(&request.args)), Some(info), group)
            }
            _ => {
                let refused = pubsub::not_allowed(&info.name);
                return (ready(refused), Some(info), CommandGroup::Rejected);
            }
        }
    }
    if in_multi
        && !matches!(
            info.policy,
            Policy::Transaction(_) | Policy::Local(Local::Quit | Local::Reset)
        )
    {
        let refuse = shared.crossslot.settings.cross_node == crate::config::CrossNode::Refuse;
        let map = refuse.then_some(&snapshot.map);
        let reply = client.txn.queue(&info, &request.args, request.raw, map);
        return (ready(reply), Some(info), group);
    }
    match info.name.as_str() {
        "eval" | "eval_ro" if request.args.len() > 1 => shared.scripts.remember(&request.args[1]),
        "script|load" if request.args.len() > 2 => shared.scripts.remember(&request.args[2]),
        "script|flush" => shared.scripts.clear(),
        _ => {}
    }
    // A restricted user's script runs on its node user's connection.
    let catalog = snapshot.commands.catalog();
    let lane = match super::acl_users::lane_for(shared, client, &info, lane, catalog) {
        Ok(lane) => lane,
        Err(pattern) => {
            let text = super::script_users::unreachable_keys(&info.name, &pattern);
            return rejected_known(client, reply::error(&text), info, in_multi);
        }
    };
    let action = answer(shared, client, lane, request, &info, snapshot);
    (action, Some(info), group)
}

fn answer(
    shared: &Arc<Shared>,
    client: &mut ClientState,
    lane: Lane,
    request: Request,
    info: &Arc<CommandInfo>,
    snapshot: &Arc<Snapshot>,
) -> Action {
    match info.policy {
        Policy::Local(kind) => local_command(shared, client, lane, kind, request, snapshot),
        Policy::Refused(refusal) => ready(reply::error(&refusal.message(&info.name))),
        Policy::Admin(admin) => super::admin_cmd::answer(shared, lane, snapshot, admin, request),
        Policy::Transaction(command) => {
            let router = &shared.router;
            match command {
                TxnCommand::Multi => ready(client.txn.multi()),
                TxnCommand::Exec => {
                    let catalog = snapshot.commands.catalog();
                    super::exec_recheck::exec(shared, client, lane, catalog)
                }
                TxnCommand::Discard => client.txn.discard(router),
                TxnCommand::Watch => client.txn.watch(router, info, &request.args, lane.resp3),
                TxnCommand::Unwatch => client.txn.unwatch(router),
            }
        }
        Policy::PubSub(command) => {
            let (limit, overflow) = (shared.pubsub_output_limit, client.overflow.clone());
            let state = client
                .pubsub
                .get_or_insert_with(|| Box::new(pubsub::PubSub::new(limit, overflow)));
            let reply = state.command(&shared.router, command, &request.args, client.resp3);
            client.handle.set_subscriptions(state.counts());
            client.handle.set_subscribed_to(state.names());
            if !state.active() {
                // Out of subscribed mode: the subscriber connections close.
                client.pubsub = None;
            }
            Action::Reply(Reply::Future(reply))
        }
        Policy::Keyed if info.blocks(&request.args) => {
            blocking(shared, client, info, request, Timeout::BlockMillis)
        }
        Policy::Blocking(timeout) => blocking(shared, client, info, request, timeout),
        Policy::Wait => {
            let router = shared.router.clone();
            let last_write = client.last_write;
            Action::Exclusive(super::blocking::wait(router, lane, last_write, request.args).boxed())
        }
        // Where the proxy's subscribers are, so that the receiver count is exact.
        Policy::Keyed
            if matches!(
                info.name.as_str(),
                "publish" | "pubsub|channels" | "pubsub|numsub" | "pubsub|numpat"
            ) =>
        {
            send(
                shared,
                lane,
                Some(Target::Slot(pubsub::BUS_SLOT)),
                request.raw,
                info.write,
            )
        }
        Policy::Keyed if matches!(info.name.as_str(), "evalsha" | "evalsha_ro") => {
            evalsha(shared, lane, info, request)
        }
        Policy::Keyed => keyed(shared, client, lane, info, request),
        Policy::Scan => Action::later(super::scan::scan(
            shared.router.clone(),
            snapshot.clone(),
            lane,
            request.args,
        )),
        Policy::Split(join) => match info.key_positions(&request.args) {
            KeyPositions::Known(positions) if positions.len() <= 1 => {
                let slot = positions.first().map(|&p| key_slot(&request.args[p]));
                send_for_slot(shared, client, lane, slot, request.raw, info.write)
            }
            KeyPositions::Known(positions) => {
                if info.write {
                    client.last_write = Some(key_slot(&request.args[positions[0]]));
                }
                let command = fanout::SplitCommand {
                    args: request.args,
                    positions,
                    span: info.legacy.step.max(1) as usize,
                    write: info.write,
                    join,
                };
                Action::later(fanout::split(shared.router.clone(), lane, command))
            }
            KeyPositions::AskCluster => keyed(shared, client, lane, info, request),
        },
        Policy::AllMasters(join) => {
            let router = shared.router.clone();
            super::reserved::all_masters(router, snapshot.clone(), lane, request.raw, (join, info))
        }
    }
}

/// Routes a command whose keys must all share one slot.
fn keyed(
    shared: &Arc<Shared>,
    client: &mut ClientState,
    lane: Lane,
    info: &CommandInfo,
    request: Request,
) -> Action {
    match info.key_positions(&request.args) {
        KeyPositions::Known(positions) => {
            match common_slot(positions.iter().map(|&p| &request.args[p])) {
                Ok(slot) => send_for_slot(shared, client, lane, slot, request.raw, info.write),
                Err(_) => {
                    if info.write {
                        client.last_write = Some(key_slot(&request.args[positions[0]]));
                    }
                    super::crossslot::command(
                        shared,
                        lane,
                        client.handle.clone(),
                        info,
                        request.args,
                        positions,
                    )
                }
            }
        }
        KeyPositions::AskCluster => {
            let router = shared.router.clone();
            let write = info.write;
            let (engine, name) = (shared.crossslot.clone(), info.name.clone());
            Action::later(async move {
                let keys = match router.cluster_getkeys(lane, &request.args).await {
                    Ok(keys) => keys,
                    Err(error) => return error,
                };
                match common_slot(keys.iter()) {
                    Ok(slot) => {
                        router
                            .send(
                                lane,
                                slot.map(Target::Slot).unwrap_or(Target::AnyMaster),
                                request.raw,
                                write,
                            )
                            .await
                    }
                    Err(_) => {
                        let positions = super::crossslot::positions_of(&request.args, &keys);
                        let op = super::crossslot::plan::Op::new(&name, request.args, positions);
                        let plan = super::crossslot::plan::Plan::new(vec![op]);
                        engine.execute(lane, &plan, true).await
                    }
                }
            })
        }
    }
}

/// `EVALSHA`: routed like any keyed command, with NOSCRIPT healed (see [`super::scripts`]).
fn evalsha(shared: &Arc<Shared>, lane: Lane, info: &CommandInfo, request: Request) -> Action {
    let KeyPositions::Known(positions) = info.key_positions(&request.args) else {
        return Action::now(reply::error(
            "ERR slotproxy: EVALSHA with unreadable key arguments",
        ));
    };
    let target = match common_slot(positions.iter().map(|&p| &request.args[p])) {
        Ok(slot) => slot.map(Target::Slot).unwrap_or(Target::AnyMaster),
        Err(_) => {
            let (engine, scripts) = (&shared.crossslot, &shared.scripts);
            let name = &info.name;
            return super::crossslot::eval::action(
                engine,
                scripts,
                lane,
                name,
                &request.args,
                &positions,
            );
        }
    };
    let shared = shared.clone();
    let write = info.write;
    let sha = request.args.get(1).cloned().unwrap_or_default();
    Action::later(async move {
        super::scripts::evalsha(
            &shared.router,
            &shared.scripts,
            lane,
            target,
            (request.raw, sha),
            write,
        )
        .await
    })
}

/// A blocking command on the client's pinned connection for blocking.
fn blocking(
    shared: &Arc<Shared>,
    client: &ClientState,
    info: &CommandInfo,
    request: Request,
    timeout: Timeout,
) -> Action {
    let positions = match info.key_positions(&request.args) {
        KeyPositions::Known(positions) => positions,
        KeyPositions::AskCluster => Vec::new(),
    };
    let slot = common_slot(positions.iter().map(|&p| &request.args[p]));
    let slot = match slot {
        Ok(Some(slot)) => slot,
        Ok(None) => return keyed_fallback(shared, request, info.write),
        Err(_) => {
            let (lane, args, handle) = (client.lane(), request.args, client.handle.clone());
            return super::crossslot::command(shared, lane, handle, info, args, positions);
        }
    };
    let call = super::blocking::BlockingCall {
        args: request.args,
        slot,
        timeout,
        resp3: client.resp3,
        handle: client.handle.clone(),
    };
    let (router, pinned) = (shared.router.clone(), client.blocking.clone());
    Action::Exclusive(super::blocking::run(router, pinned, call).boxed())
}

/// A command whose keys could not be read: let any master answer (it will word the error).
fn keyed_fallback(shared: &Arc<Shared>, request: Request, write: bool) -> Action {
    send(shared, Lane::default(), None, request.raw, write)
}

/// Sends to the slot's owner (keyless: any master), remembering a write's slot for WAIT.
fn send_for_slot(
    shared: &Arc<Shared>,
    client: &mut ClientState,
    lane: Lane,
    slot: Option<u16>,
    payload: Bytes,
    write: bool,
) -> Action {
    if write && slot.is_some() {
        client.last_write = slot;
    }
    send(shared, lane, slot.map(Target::Slot), payload, write)
}

fn local_command(
    shared: &Arc<Shared>,
    client: &mut ClientState,
    lane: Lane,
    kind: Local,
    request: Request,
    snapshot: &Arc<Snapshot>,
) -> Action {
    let args = &request.args;
    match kind {
        Local::Ping => ready(local::ping(args)),
        Local::Echo => ready(reply::bulk(args[1].clone())),
        Local::Select => ready(local::select(args)),
        Local::Quit => Action::ReplyAndClose(reply::ok()),
        Local::Hello => {
            let (reply, outcome) = local::hello(args, client, snapshot, shared);
            authenticated(shared, client, reply, outcome)
        }
        Local::Reset => {
            let required = super::acl_users::login_required(&shared.acl);
            client.reset(!required, super::acl_users::default_user(&shared.acl));
            ready(reply::simple("RESET"))
        }
        Local::Client => ready(super::client_cmd::client(args, client, &shared.clients)),
        Local::Auth => {
            let (reply, outcome) = super::acl_users::auth(shared, client, args);
            authenticated(shared, client, reply, outcome)
        }
        Local::Acl => {
            let table = &snapshot.commands;
            super::acl_cmd::acl(shared, client, args, table)
        }
        Local::KeySlot => ready(local::keyslot(args)),
        Local::Monitor => {
            client.monitor = Some(shared.monitors.subscribe());
            ready(reply::ok())
        }
        Local::Info => {
            let sections = args[1..]
                .iter()
                .map(|a| String::from_utf8_lossy(a).to_lowercase())
                .collect();
            Action::later(local::info(
                shared.clone(),
                snapshot.clone(),
                lane,
                sections,
            ))
        }
    }
}

/// Applies an `AUTH` or `HELLO … AUTH` outcome to the client and answers it.
fn authenticated(
    shared: &Arc<Shared>,
    client: &mut ClientState,
    reply: Bytes,
    outcome: AuthOutcome,
) -> Action {
    match outcome {
        AuthOutcome::LoggedIn(user) => {
            client.authenticated = true;
            client.handle.set_user(&user);
            if let Some(user) = shared.acl.user(&user) {
                client.user = user;
                client.acl_generation = shared.acl.generation();
            }
            ready(reply)
        }
        AuthOutcome::WrongPassword => auth_failed(shared, client, reply),
        AuthOutcome::NotTried => ready(reply),
    }
}

/// A failed AUTH (or HELLO … AUTH): counted, and answered after the connection's growing
/// delay (see [`super::auth::AuthThrottle`]).
fn auth_failed(shared: &Arc<Shared>, client: &mut ClientState, reply: Bytes) -> Action {
    shared.metrics.auth_failures.inc();
    let now = Instant::now();
    let at = client.auth_throttle.failed(now);
    if client.auth_throttle.failures() == 10 {
        tracing::warn!(client = %client.handle.peer, "10 failed AUTH attempts on one connection");
    }
    match at > now {
        true => Action::later(async move {
            tokio::time::sleep_until(at.into()).await;
            reply
        }),
        false => ready(reply),
    }
}

/// Redis' wording for an unknown command.
fn unknown_command(args: &[Bytes]) -> Bytes {
    let name = String::from_utf8_lossy(args.first().map(|a| a.as_ref()).unwrap_or(b""));
    let mut rest = String::new();
    for arg in &args[1.min(args.len())..] {
        if rest.len() >= 128 {
            break;
        }
        rest.push_str(&format!("'{}' ", String::from_utf8_lossy(arg)));
    }
    reply::error(&format!(
        "ERR unknown command '{}', with args beginning with: {}",
        name.chars().take(128).collect::<String>(),
        rest
    ))
}
