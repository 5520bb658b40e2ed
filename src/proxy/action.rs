//! The vocabulary every command handler of the proxy speaks: what to do with a command's
//! reply ([`Action`]), how to send one command to its slot's owner ([`send`]), and the one
//! slot a command's keys share ([`common_slot`]).
//!
//! `dispatch` decides which handler serves a command; the handlers (`transaction`,
//! `admin_cmd`, …) answer with an [`Action`] built from these helpers, so none of them needs
//! `dispatch` back.

use super::replies::Reply;
use super::Shared;
use crate::cluster::key_slot;
use crate::cluster::router::{Call, Retry, Started, Target};
use crate::protocol::reply;
use crate::upstream::Lane;
use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt};
use std::future::Future;
use std::sync::Arc;

/// What the routing decided for a command.
pub enum Action {
    /// Queue this reply.
    Reply(Reply),
    /// Send this reply after all earlier ones, then close the connection.
    ReplyAndClose(Bytes),
    /// Run this alone: after every earlier reply was sent, and before any later command
    /// starts (it uses the client's pinned connection, or blocks). Dropped if the client
    /// leaves meanwhile.
    Exclusive(BoxFuture<'static, Bytes>),
}

impl Action {
    /// A reply known now.
    pub fn now(reply: Bytes) -> Action {
        Action::Reply(Reply::Ready(reply))
    }

    /// A reply that takes more than one node round trip.
    pub fn later(reply: impl Future<Output = Bytes> + Send + 'static) -> Action {
        Action::Reply(Reply::Future(reply.boxed()))
    }
}

/// The slot all keys share (`None` without keys), or the CROSSSLOT error.
pub fn common_slot<'a>(keys: impl Iterator<Item = &'a Bytes>) -> Result<Option<u16>, Bytes> {
    let mut slot = None;
    for key in keys {
        let s = key_slot(key);
        match slot {
            None => slot = Some(s),
            Some(existing) if existing != s => return Err(reply::crossslot()),
            Some(_) => {}
        }
    }
    Ok(slot)
}

/// Sends one command to the slot's owner (`None`: any master). The reply waits in the
/// session's queue as the node's reply channel; only a redirect or an error allocates a
/// future.
pub fn send(
    shared: &Arc<Shared>,
    lane: Lane,
    target: Option<Target>,
    payload: Bytes,
    write: bool,
) -> Action {
    let call = Call {
        lane,
        target: target.unwrap_or(Target::AnyMaster),
        payload,
        retry: Retry::single(write),
    };
    match shared.router.start(call) {
        Started::Sent(flight) => Action::Reply(Reply::Node(flight)),
        Started::NoNode(call) => Action::Reply(Reply::Future(shared.router.finish_unsent(call))),
    }
}
