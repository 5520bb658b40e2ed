//! EXEC looks at every queued command once more, with the user's rules as they are at EXEC,
//! as Redis' `execCommand` does: a command the user lost the right to since it was queued
//! (an `ACL SETUSER` through any proxy of the fleet in between) does not run, and its place
//! in EXEC's reply holds Redis' `-NOPERM ACLs rules changed …`; the others run as one
//! transaction.

use super::action::Action;
use super::client_state::ClientState;
use super::replies::Reply;
use super::Shared;
use crate::protocol::acl_catalog::Catalog;
use crate::protocol::scan::array_elements;
use crate::upstream::Lane;
use bytes::{Bytes, BytesMut};
use futures_util::future::FutureExt;
use std::sync::Arc;

/// EXEC for `client`, after the re-check.
pub fn exec(
    shared: &Arc<Shared>,
    client: &mut ClientState,
    lane: Lane,
    catalog: &Catalog,
) -> Action {
    // The default user's path: one flag test.
    if client.user.unrestricted() {
        return client.txn.exec(&shared.crossslot, lane);
    }
    let mut revoked = Vec::new();
    let mut total = 0;
    let mut lane = lane;
    for (at, (info, args)) in client.txn.queued().enumerate() {
        total += 1;
        if let Some(error) =
            super::acl_users::revoked_since_queued(shared, client, info, args, catalog)
        {
            revoked.push((at, error));
            continue;
        }
        // A script runs on the user's node user: the node then checks the whole block
        // with the user's rules, as Redis' EXEC does.
        if super::script_users::runs_script(info) {
            match super::acl_users::script_refusal(shared, client, info, catalog) {
                Some(text) => revoked.push((at, crate::protocol::reply::error(&text))),
                None => {
                    let scripted = super::acl_users::lane_for(shared, client, info, lane, catalog);
                    lane = scripted.unwrap_or(lane);
                }
            }
        }
    }
    if revoked.is_empty() {
        return client.txn.exec(&shared.crossslot, lane);
    }
    let positions: Vec<usize> = revoked.iter().map(|(at, _)| *at).collect();
    client.txn.drop_queued(&positions);
    let action = client.txn.exec(&shared.crossslot, lane);
    splice_into(shared, action, revoked, total)
}

/// The action whose EXEC reply gets `revoked` put back at their places.
fn splice_into(
    shared: &Arc<Shared>,
    action: Action,
    revoked: Vec<(usize, Bytes)>,
    total: usize,
) -> Action {
    match action {
        Action::Reply(Reply::Ready(reply)) => Action::now(splice(reply, &revoked, total)),
        Action::Reply(Reply::Future(reply)) => {
            Action::later(reply.map(move |reply| splice(reply, &revoked, total)))
        }
        Action::Reply(Reply::Node(mut flight)) => {
            let router = shared.router.clone();
            Action::later(async move {
                let result = (&mut flight.rx)
                    .await
                    .unwrap_or_else(|_| Err(crate::upstream::pool::lost(flight.pool.addr())));
                let reply = match router.settle(flight, result) {
                    Ok(reply) => reply,
                    Err(follow_up) => follow_up.await,
                };
                splice(reply, &revoked, total)
            })
        }
        Action::Exclusive(reply) => Action::Exclusive(
            reply
                .map(move |reply| splice(reply, &revoked, total))
                .boxed(),
        ),
        other @ Action::ReplyAndClose(_) => other,
    }
}

/// EXEC's array of the commands that ran, with `revoked` (position, error) put in: `total`
/// replies. Anything but an array (`-EXECABORT`, nil after a touched WATCH) stays as it is.
fn splice(reply: Bytes, revoked: &[(usize, Bytes)], total: usize) -> Bytes {
    if reply.starts_with(b"*-") {
        return reply;
    }
    let Some(ran) = array_elements(&reply) else {
        return reply;
    };
    if ran.len() + revoked.len() != total {
        return reply;
    }
    let mut ran = ran.into_iter();
    let mut revoked = revoked.iter().peekable();
    let mut out = BytesMut::with_capacity(reply.len() + 160 * revoked.len());
    out.extend_from_slice(format!("*{total}\r\n").as_bytes());
    for at in 0..total {
        match revoked.next_if(|(position, _)| *position == at) {
            Some((_, error)) => out.extend_from_slice(error),
            None => out.extend_from_slice(&ran.next().unwrap_or_default()),
        }
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_go_back_to_their_places() {
        let ran = Bytes::from_static(b"*2\r\n+OK\r\n:1\r\n");
        let revoked = vec![
            (0, Bytes::from_static(b"-NOPERM a\r\n")),
            (2, Bytes::from_static(b"-NOPERM b\r\n")),
        ];
        assert_eq!(
            splice(ran, &revoked, 4),
            Bytes::from_static(b"*4\r\n-NOPERM a\r\n+OK\r\n-NOPERM b\r\n:1\r\n")
        );
    }

    #[test]
    fn all_revoked_and_non_arrays() {
        let revoked = vec![(0, Bytes::from_static(b"-NOPERM a\r\n"))];
        assert_eq!(
            splice(Bytes::from_static(b"*0\r\n"), &revoked, 1),
            Bytes::from_static(b"*1\r\n-NOPERM a\r\n")
        );
        let nil = Bytes::from_static(b"*-1\r\n");
        assert_eq!(splice(nil.clone(), &revoked, 1), nil);
        let abort = Bytes::from_static(b"-EXECABORT x\r\n");
        assert_eq!(splice(abort.clone(), &revoked, 1), abort);
    }
}
