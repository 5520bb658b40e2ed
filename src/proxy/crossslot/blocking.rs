//! Blocking commands whose keys are in several slots: `BLPOP`, `BRPOP`, `BZPOPMIN`,
//! `BZPOPMAX`, `BLMPOP`, `BZMPOP` over keys of several slots, `BLMOVE` and `BRPOPLPUSH`
//! between two.
//!
//! No node can block on keys of two slots, so the proxy tries the non-blocking form
//! (`LMPOP`, `ZMPOP`, `LMOVE`, `RPOPLPUSH`) again and again until it gets something or the
//! client's timeout passes, waiting 5 ms after the first try and up to 100 ms between later
//! ones. On one master each try is one atomic script that takes from the first non-empty key
//! in the client's order, exactly as Redis would. Across masters each try first asks which
//! keys exist, then pops from the first of them alone (or moves, through the cross-node
//! steps); a key emptied meanwhile by another client only means another try. Either way an
//! element is taken once or not at all.

use super::plan::{Op, Plan, Shape};
use super::run::{placement, Engine, Placement};
use crate::cluster::key_slot;
use crate::cluster::router::Target;
use crate::config::CrossNode;
use crate::protocol::request::encode_command;
use crate::protocol::{reply, scan};
use crate::proxy::action::Action;
use crate::proxy::clients::ClientHandle;
use crate::upstream::Lane;
use bytes::Bytes;
use futures_util::future::{join_all, FutureExt};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The non-blocking form of a blocking command.
#[derive(Debug, Clone)]
pub struct NonBlocking {
    /// The client's command (lowercase), for its reply rules.
    name: String,
    /// `LMPOP`, `ZMPOP`, `LMOVE`, `RPOPLPUSH`.
    command: &'static [u8],
    /// The keys, in the client's order.
    keys: Vec<Bytes>,
    /// What follows the keys (`LEFT`, `COUNT 2`, …).
    tail: Vec<Bytes>,
    /// `LMPOP`/`ZMPOP` take a key count first.
    counted: bool,
    /// How the reply is reshaped to the client's command's.
    shape: Shape,
    /// The client's timeout.
    timeout: Result<Option<Duration>, &'static str>,
}

impl NonBlocking {
    /// The non-blocking form of `args` (a blocking command named `name`), or `None` for a
    /// command that is not one of the blocking list and sorted-set commands.
    pub fn of(name: &str, args: &[Bytes]) -> Option<NonBlocking> {
        let last = args.len().checked_sub(1)?;
        let part = |range: std::ops::Range<usize>| args.get(range).unwrap_or_default().to_vec();
        let side = |s: &'static [u8]| vec![Bytes::from_static(s)];
        let (command, keys, tail, counted, shape, timeout_at): (&[u8], _, _, _, _, usize) =
            match name {
                "blpop" => (
                    b"LMPOP",
                    part(1..last),
                    side(b"LEFT"),
                    true,
                    Shape::Pair,
                    last,
                ),
                "brpop" => (
                    b"LMPOP",
                    part(1..last),
                    side(b"RIGHT"),
                    true,
                    Shape::Pair,
                    last,
                ),
                "bzpopmin" => (
                    b"ZMPOP",
                    part(1..last),
                    side(b"MIN"),
                    true,
                    Shape::Triple,
                    last,
                ),
                "bzpopmax" => (
                    b"ZMPOP",
                    part(1..last),
                    side(b"MAX"),
                    true,
                    Shape::Triple,
                    last,
                ),
                "blmove" => (
                    b"LMOVE",
                    part(1..3),
                    part(3..last),
                    false,
                    Shape::Plain,
                    last,
                ),
                "brpoplpush" => (
                    b"RPOPLPUSH",
                    part(1..3),
                    Vec::new(),
                    false,
                    Shape::Plain,
                    last,
                ),
                "blmpop" | "bzmpop" => {
                    let n = crate::protocol::parse_i64(args.get(2)?)?;
                    let n = usize::try_from(n)
                        .ok()
                        .filter(|&n| n > 0 && 3 + n <= args.len())?;
                    let command: &[u8] = if name == "blmpop" { b"LMPOP" } else { b"ZMPOP" };
                    (
                        command,
                        part(3..3 + n),
                        part(3 + n..args.len()),
                        true,
                        Shape::Plain,
                        1,
                    )
                }
                _ => return None,
            };
        Some(NonBlocking {
            name: name.to_string(),
            command,
            keys,
            tail,
            counted,
            shape,
            timeout: timeout(&args[timeout_at]),
        })
    }

    /// One try over `keys` (all of them, or one chosen key).
    fn op_over(&self, keys: &[Bytes]) -> Op {
        let mut args = vec![Bytes::from_static(self.command)];
        if self.counted {
            args.push(Bytes::from(keys.len().to_string()));
        }
        let first = args.len();
        args.extend(keys.iter().cloned());
        args.extend(self.tail.iter().cloned());
        let mut op = Op::new(&self.name, args, (first..first + keys.len()).collect());
        op.shape = self.shape;
        op.rename = self.counted;
        op
    }

    /// One try over every key.
    pub fn op(&self) -> Op {
        self.op_over(&self.keys)
    }
}

/// The client's timeout in seconds (`None`: forever), or Redis' error for it.
fn timeout(raw: &[u8]) -> Result<Option<Duration>, &'static str> {
    let value: f64 = std::str::from_utf8(raw)
        .ok()
        .and_then(|t| t.parse().ok())
        .filter(|v: &f64| v.is_finite())
        .ok_or("ERR timeout is not a float or out of range")?;
    if value < 0.0 {
        return Err("ERR timeout is negative");
    }
    Ok((value > 0.0).then(|| Duration::from_secs_f64(value.min(1e9))))
}

/// The action for a blocking command across slots.
pub fn action(
    engine: &Engine,
    lane: Lane,
    handle: Arc<ClientHandle>,
    name: &str,
    args: &[Bytes],
) -> Option<Action> {
    let call = NonBlocking::of(name, args)?;
    if let Err(error) = call.timeout {
        return Some(Action::now(reply::error(error)));
    }
    let plan = Plan::new(vec![call.op()]);
    if engine.settings.cross_node == CrossNode::Refuse
        && matches!(placement(&engine.router, &plan), Placement::Nodes)
    {
        engine.metrics.count_cross_slot("refused");
        return Some(Action::now(reply::crossslot()));
    }
    let engine = engine.clone();
    Some(Action::Exclusive(
        async move {
            handle.set_blocked(true);
            let reply = tokio::select! {
                reply = wait(&engine, lane, &call) => reply,
                _ = handle.unblock.notified() => match handle.unblocked_with_error() {
                    true => reply::error("UNBLOCKED client unblocked via CLIENT UNBLOCK"),
                    false => reply::null_array_for(lane.resp3),
                },
            };
            handle.set_blocked(false);
            reply
        }
        .boxed(),
    ))
}

/// Tries until something comes or the timeout passes.
async fn wait(engine: &Engine, lane: Lane, call: &NonBlocking) -> Bytes {
    let deadline = call
        .timeout
        .ok()
        .flatten()
        .map(|wait| Instant::now() + wait);
    let plan = Plan::new(vec![call.op()]);
    poll_until(deadline, lane.resp3, || try_once(engine, lane, call, &plan)).await
}

/// Calls `attempt` until it answers something other than null or `deadline` passes (then
/// the null array): again 5 ms after the first try, the pause doubling up to 100 ms.
pub async fn poll_until<F, Fut>(deadline: Option<Instant>, resp3: bool, mut attempt: F) -> Bytes
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Bytes>,
{
    let mut pause = Duration::from_millis(5);
    loop {
        let reply = attempt().await;
        if !reply::is_null(&reply) {
            return reply;
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return reply::null_array_for(resp3);
        }
        let sleep = deadline.map_or(pause, |d| pause.min(d - now));
        tokio::time::sleep(sleep).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// One non-blocking try; a null reply means nothing was there.
async fn try_once(engine: &Engine, lane: Lane, call: &NonBlocking, plan: &Plan) -> Bytes {
    if !matches!(placement(&engine.router, plan), Placement::Nodes) {
        return engine.execute(lane, plan, true).await;
    }
    // Across masters: which keys exist, then the first of them alone (a pop), or the whole
    // move once its source exists.
    let probes = call.keys.iter().take(match call.counted {
        true => call.keys.len(),
        false => 1,
    });
    let exists = join_all(probes.map(|key| {
        let payload = encode_command(&[&b"EXISTS"[..], key]);
        engine
            .router
            .send(lane, Target::Slot(key_slot(key)), payload, false)
    }))
    .await;
    let Some(first) = exists.iter().position(|r| scan::integer(r) == Some(1)) else {
        return match exists.iter().find(|r| scan::is_error(r)) {
            Some(error) => error.clone(),
            None => reply::null_for(lane.resp3),
        };
    };
    let plan = match call.counted {
        true => Plan::new(vec![call.op_over(&call.keys[first..=first])]),
        false => plan.clone(),
    };
    engine.execute(lane, &plan, true).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::request::words as args;

    fn text(op: &Op) -> String {
        let parts: Vec<String> = op
            .args
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        parts.join(" ")
    }

    #[test]
    fn blocking_commands_become_their_non_blocking_forms() {
        let call = NonBlocking::of("blpop", &args("BLPOP a b 1.5")).unwrap();
        assert_eq!(text(&call.op()), "LMPOP 2 a b LEFT");
        assert_eq!(call.op().positions, [2, 3]);
        assert_eq!(call.timeout, Ok(Some(Duration::from_millis(1500))));
        assert_eq!(text(&call.op_over(&call.keys[1..2])), "LMPOP 1 b LEFT");
        let call = NonBlocking::of("bzpopmax", &args("BZPOPMAX a b 0")).unwrap();
        assert_eq!(text(&call.op()), "ZMPOP 2 a b MAX");
        assert_eq!(call.timeout, Ok(None));
        let call = NonBlocking::of("blmove", &args("BLMOVE a b LEFT RIGHT 0")).unwrap();
        assert_eq!(text(&call.op()), "LMOVE a b LEFT RIGHT");
        let call = NonBlocking::of("bzmpop", &args("BZMPOP 2 2 a b MIN COUNT 3")).unwrap();
        assert_eq!(text(&call.op()), "ZMPOP 2 a b MIN COUNT 3");
        let call = NonBlocking::of("brpoplpush", &args("BRPOPLPUSH a b -1")).unwrap();
        assert_eq!(call.timeout, Err("ERR timeout is negative"));
        assert!(NonBlocking::of("get", &args("GET a")).is_none());
    }
}
