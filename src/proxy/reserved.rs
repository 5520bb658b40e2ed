//! The proxies' own keys ([`crate::protocol::reserved`]) kept out of clients' sight: commands
//! naming them are refused, and KEYS, SCAN, RANDOMKEY and DBSIZE answer as if they did not
//! exist.

use super::action::Action;
use super::fanout;
use crate::cluster::key_slot;
use crate::cluster::router::{Router, Target};
use crate::cluster::Snapshot;
use crate::protocol::command::CommandInfo;
use crate::protocol::command::Join;
use crate::protocol::keyspec::KeyPositions;
use crate::protocol::request::encode_command;
use crate::protocol::reserved::{is_reserved, RESERVED_KEYS};
use crate::protocol::{reply, scan};
use crate::upstream::Lane;
use bytes::Bytes;
use std::future::Future;
use std::sync::Arc;

/// A command every master answers (KEYS, DBSIZE, RANDOMKEY …), with the proxies' keys left
/// out of the answer.
pub fn all_masters(
    router: Arc<Router>,
    snapshot: Arc<Snapshot>,
    lane: Lane,
    raw: Bytes,
    (join, info): (Join, &CommandInfo),
) -> Action {
    let asker = router.clone();
    let all = move || fanout::all_masters(asker.clone(), snapshot.clone(), lane, raw.clone(), join);
    match info.name.as_str() {
        "keys" => Action::later(async move { without_reserved(all().await) }),
        "dbsize" => Action::later(async move { dbsize(all(), &router, lane).await }),
        "randomkey" => Action::later(randomkey(all)),
        _ => Action::later(all()),
    }
}

/// The refusal of a command naming a reserved key, or `None`. Cheap when no argument has a
/// reserved name (the usual case: one length comparison per argument).
pub fn refusal(info: &CommandInfo, args: &[Bytes]) -> Option<Bytes> {
    let named = args.iter().skip(1).find(|a| is_reserved(a))?;
    let is_key = match info.key_positions(args) {
        KeyPositions::Known(positions) => positions.iter().any(|&p| is_reserved(&args[p])),
        // Keys only the cluster could tell: refuse, to be safe.
        KeyPositions::AskCluster => true,
    };
    is_key.then(|| {
        reply::error(&format!(
            "ERR slotproxy: the key '{}' holds the proxies' own state and cannot be used by clients",
            String::from_utf8_lossy(named)
        ))
    })
}

/// KEYS: the reply without reserved keys.
pub fn without_reserved(raw: Bytes) -> Bytes {
    match scan::array_elements(&raw) {
        Some(elements)
            if elements
                .iter()
                .any(|e| scan::string(e).is_some_and(is_reserved)) =>
        {
            let kept: Vec<Bytes> = elements
                .into_iter()
                .filter(|e| !scan::string(e).is_some_and(is_reserved))
                .collect();
            reply::array_of_raw(&kept)
        }
        _ => raw,
    }
}

/// How many reserved keys exist now (for DBSIZE).
pub async fn count(router: &Router, lane: Lane) -> i64 {
    let mut present = 0;
    for key in RESERVED_KEYS {
        let target = Target::Slot(key_slot(key.as_bytes()));
        let reply = router
            .send(lane, target, encode_command(&["EXISTS", key]), false)
            .await;
        present += scan::integer(&reply).unwrap_or(0);
    }
    present
}

/// DBSIZE without the reserved keys.
pub async fn dbsize(total: impl Future<Output = Bytes>, router: &Router, lane: Lane) -> Bytes {
    let total = total.await;
    match scan::integer(&total) {
        Some(n) => reply::integer((n - count(router, lane).await).max(0)),
        None => total,
    }
}

/// RANDOMKEY that never names a reserved key: asked again a few times, then nil.
pub async fn randomkey<F, Fut>(mut ask: F) -> Bytes
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Bytes>,
{
    for _ in 0..8 {
        let reply = ask().await;
        if !scan::string(&reply).is_some_and(is_reserved) {
            return reply;
        }
    }
    reply::null()
}
