//! `XREAD` and `XREADGROUP` over streams of several slots.
//!
//! Redis reads each stream of the call on its own (`COUNT` counts per stream, each stream's
//! entries come with its name), so the call is split into one read per stream, each routed
//! to its stream's owner, and the answers are joined in the client's order, the empty ones
//! left out, as one Redis joins them. `XREADGROUP` first checks that every stream has the
//! group, so that a missing group fails the whole call before any stream is read, as in
//! Redis. With `BLOCK`, the reads are tried again (5 ms, then up to 100 ms apart) until one
//! returns entries or the block time passes; `$` means the last entry when the call came.

use super::blocking::poll_until;
use super::run::Engine;
use crate::cluster::key_slot;
use crate::cluster::router::Target;
use crate::protocol::request::encode_command;
use crate::protocol::{reply, scan};
use crate::proxy::action::Action;
use crate::proxy::clients::ClientHandle;
use crate::upstream::Lane;
use bytes::{Bytes, BytesMut};
use futures_util::future::{join_all, FutureExt};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A read over several streams, taken apart.
#[derive(Debug, Clone)]
struct Read {
    /// Everything before the first stream name (`XREAD COUNT 2 STREAMS`), `BLOCK` removed.
    prefix: Vec<Bytes>,
    /// (stream, id) pairs.
    streams: Vec<(Bytes, Bytes)>,
    /// `BLOCK ms` (`Some(None)`: forever).
    block: Option<Option<Duration>>,
    /// `XREADGROUP`'s group, which must exist on every stream.
    group: Option<Bytes>,
    /// `XREADGROUP` writes (it moves entries to the pending list).
    write: bool,
}

impl Read {
    fn parse(args: &[Bytes], positions: &[usize]) -> Result<Read, Bytes> {
        let (Some(&first), n) = (positions.first(), positions.len()) else {
            return Err(reply::error("ERR syntax error"));
        };
        let ids = first + n;
        if args.len() != ids + n {
            return Err(reply::error(
                "ERR Unbalanced 'xread' list of streams: for each stream key an ID or '$' must be specified.",
            ));
        }
        let mut prefix = Vec::with_capacity(first);
        let mut block = None;
        let mut group = None;
        let mut i = 0;
        while i < first {
            let arg = &args[i];
            if i > 0 && arg.eq_ignore_ascii_case(b"block") && i + 1 < first {
                let ms = crate::protocol::parse_i64(&args[i + 1])
                    .ok_or_else(|| reply::error("ERR timeout is not an integer or out of range"))?;
                if ms < 0 {
                    return Err(reply::error("ERR timeout is negative"));
                }
                block = Some((ms > 0).then(|| Duration::from_millis(ms as u64)));
                i += 2;
                continue;
            }
            if i > 0 && arg.eq_ignore_ascii_case(b"group") && i + 1 < first {
                group = Some(args[i + 1].clone());
            }
            prefix.push(arg.clone());
            i += 1;
        }
        let streams = (0..n)
            .map(|k| (args[first + k].clone(), args[ids + k].clone()))
            .collect();
        let write = args[0].eq_ignore_ascii_case(b"xreadgroup");
        Ok(Read {
            prefix,
            streams,
            block,
            group,
            write,
        })
    }

    fn one(&self, stream: &(Bytes, Bytes)) -> Bytes {
        let mut args = self.prefix.clone();
        args.push(stream.0.clone());
        args.push(stream.1.clone());
        encode_command(&args)
    }
}

/// The action for `XREAD`/`XREADGROUP` (`args`, keys at `positions`) across slots.
pub fn action(
    engine: &Engine,
    lane: Lane,
    handle: Arc<ClientHandle>,
    args: &[Bytes],
    positions: &[usize],
) -> Action {
    let read = match Read::parse(args, positions) {
        Ok(read) => read,
        Err(error) => return Action::now(error),
    };
    let engine = engine.clone();
    engine.metrics.count_cross_slot("split");
    if read.block.is_none() {
        return Action::Exclusive(async move { read_once(&engine, lane, &read).await }.boxed());
    }
    Action::Exclusive(
        async move {
            handle.set_blocked(true);
            let reply = tokio::select! {
                reply = block(&engine, lane, read) => reply,
                _ = handle.unblock.notified() => match handle.unblocked_with_error() {
                    true => reply::error("UNBLOCKED client unblocked via CLIENT UNBLOCK"),
                    false => reply::null_array_for(lane.resp3),
                },
            };
            handle.set_blocked(false);
            reply
        }
        .boxed(),
    )
}

async fn block(engine: &Engine, lane: Lane, mut read: Read) -> Bytes {
    let deadline = read.block.flatten().map(|wait| Instant::now() + wait);
    resolve_last_ids(engine, lane, &mut read).await;
    let read = &read;
    poll_until(deadline, lane.resp3, || read_once(engine, lane, read)).await
}

/// `$` becomes each stream's last ID now (`0-0` for a stream that does not exist yet), so
/// that later tries return only what arrived after the call.
async fn resolve_last_ids(engine: &Engine, lane: Lane, read: &mut Read) {
    let control = Lane {
        resp3: false,
        identity: crate::upstream::identity::PROXY,
        ..lane
    };
    for (stream, id) in read.streams.iter_mut() {
        if &id[..] != b"$" {
            continue;
        }
        let payload = encode_command(&[&b"XINFO"[..], b"STREAM", stream]);
        let info = engine
            .router
            .send(control, Target::Slot(key_slot(stream)), payload, false)
            .await;
        let fields = scan::array_elements(&info).unwrap_or_default();
        let last = fields
            .chunks(2)
            .find(|pair| scan::string(&pair[0]) == Some(b"last-generated-id"))
            .and_then(|pair| {
                pair.get(1)
                    .and_then(|v| scan::string(v))
                    .map(Bytes::copy_from_slice)
            });
        *id = last.unwrap_or_else(|| Bytes::from_static(b"0-0"));
    }
}

/// Every stream read once, joined in order.
async fn read_once(engine: &Engine, lane: Lane, read: &Read) -> Bytes {
    if let Some(group) = &read.group {
        if let Some(error) = missing_group(engine, lane, read, group).await {
            return error;
        }
    }
    let replies = join_all(read.streams.iter().map(|stream| {
        let target = Target::Slot(key_slot(&stream.0));
        engine
            .router
            .send(lane, target, read.one(stream), read.write)
    }))
    .await;
    let mut parts = Vec::new();
    for reply in &replies {
        if scan::is_error(reply) {
            return reply.clone();
        }
        if reply::is_null(reply) {
            continue;
        }
        // `*1 [name, entries]` (RESP2) or `%1 name entries` (RESP3): keep what follows the
        // one-element header.
        let Some(header) = reply.iter().position(|&b| b == b'\n') else {
            continue;
        };
        parts.push(reply.slice(header + 1..));
    }
    if parts.is_empty() {
        return reply::null_array_for(lane.resp3);
    }
    let mut out = BytesMut::new();
    let kind = if lane.resp3 { '%' } else { '*' };
    out.extend_from_slice(format!("{kind}{}\r\n", parts.len()).as_bytes());
    for part in parts {
        out.extend_from_slice(&part);
    }
    out.freeze()
}

/// For `XREADGROUP`: the error of the first stream without the group (the one stream's own
/// `XREADGROUP` words it, and reads nothing as it fails).
async fn missing_group(engine: &Engine, lane: Lane, read: &Read, group: &Bytes) -> Option<Bytes> {
    let control = Lane {
        resp3: false,
        identity: crate::upstream::identity::PROXY,
        ..lane
    };
    let checks = join_all(read.streams.iter().map(|(stream, _)| {
        let payload = encode_command(&[&b"XINFO"[..], b"GROUPS", stream]);
        engine
            .router
            .send(control, Target::Slot(key_slot(stream)), payload, false)
    }))
    .await;
    for (stream, check) in read.streams.iter().zip(checks) {
        let has_group = scan::array_elements(&check).is_some_and(|groups| {
            groups.iter().any(|g| {
                let fields = scan::array_elements(g).unwrap_or_default();
                fields.chunks(2).any(|pair| {
                    scan::string(&pair[0]) == Some(b"name")
                        && pair.get(1).and_then(|v| scan::string(v)) == Some(&group[..])
                })
            })
        });
        if !has_group {
            let target = Target::Slot(key_slot(&stream.0));
            return Some(
                engine
                    .router
                    .send(lane, target, read.one(stream), true)
                    .await,
            );
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::request::words as args;

    #[test]
    fn a_read_is_taken_apart_per_stream() {
        let a = args("XREADGROUP GROUP g c COUNT 2 BLOCK 100 STREAMS s1 s2 > 0");
        let read = Read::parse(&a, &[9, 10]).unwrap();
        assert_eq!(read.block, Some(Some(Duration::from_millis(100))));
        assert_eq!(read.group.as_deref(), Some(&b"g"[..]));
        assert!(read.write);
        assert_eq!(
            &read.one(&read.streams[1])[..],
            &encode_command(&[
                "XREADGROUP",
                "GROUP",
                "g",
                "c",
                "COUNT",
                "2",
                "STREAMS",
                "s2",
                "0"
            ])[..]
        );
        assert!(Read::parse(&args("XREAD STREAMS a b 0"), &[2, 3]).is_err());
    }
}
