//! The `MIGRATE` step of a batch ([`super::batch`]): each slot's listed keys, slot after
//! slot, in short `MIGRATE`s ([`super::chunks`]).

use super::chunks;
use super::context::{Conns, MoveContext};
use super::types::{classify, Endpoint, MoveError, MoveEvent};
use crate::protocol::scan;
use bytes::Bytes;

/// A slot of a batch, with what was seen of it before it was opened.
#[derive(Debug)]
pub struct Planned {
    /// The slot.
    pub slot: u16,
    /// Its keys as listed before opening (at most `batch_keys`), all small.
    pub keys: Vec<Bytes>,
    /// `MEMORY USAGE` of each of those keys.
    pub sizes: Vec<u64>,
    /// `MEMORY USAGE` of those keys together.
    pub bytes: u64,
}

/// Where one slot of a batch is.
#[derive(Debug)]
pub(super) struct Progress {
    /// Already owned by the target (an earlier run got as far as `NODE` there).
    pub owned: bool,
    /// Must be drained (and re-sent with `REPLACE`) by the one-slot drain.
    pub replace: bool,
    /// Keys moved.
    pub keys: u64,
    /// Why the slot is not done, if it is not.
    pub failed: Option<MoveError>,
}

/// The error of one slot's step, classified (named as `CLUSTER <what> <slot>`).
pub(super) fn step_error(text: &str, addr: &str, what: &str, slot: u16) -> MoveError {
    let label = format!("{what} {slot}");
    classify(text, addr, &[b"CLUSTER", label.as_bytes()])
}

/// One `MIGRATE` per slot with keys, one at a time: each blocks the source until the target
/// has restored its keys, and Redis runs a client's whole pipelined write before it serves
/// anyone else, so several `MIGRATE`s in one write hold the source's clients for a round
/// trip to the target each. Measured at a source node (`rebalance-compare.sh`,
/// `STEADY_NODE=1`, 100,000 keys): a steady client's p99 0.3 → 2.0 ms with writes of about
/// 100 keys (some 16 `MIGRATE`s), → 1.1–1.4 ms with 4, → 0.7 ms with one, for the same
/// wall time. (One `MIGRATE` cannot carry keys of several slots: the node answers
/// `CROSSSLOT`.)
pub(super) async fn migrate_listed(
    ctx: &MoveContext,
    conns: &mut Conns,
    batch: &[Planned],
    open: &[usize],
    (from, to): (&Endpoint, &Endpoint),
    state: &mut [Progress],
    on_event: &mut (dyn FnMut(MoveEvent) + Send),
) -> Result<(), MoveError> {
    for &i in open.iter().filter(|&&i| !batch[i].keys.is_empty()) {
        migrate_one(ctx, conns, &batch[i], (from, to), &mut state[i], on_event).await?;
    }
    Ok(())
}

/// The listed keys of one slot of the batch, in `MIGRATE`s of a few keys each (see
/// [`super::chunks`]), paced by the keys/s cap.
async fn migrate_one(
    ctx: &MoveContext,
    conns: &mut Conns,
    planned: &Planned,
    (from, to): (&Endpoint, &Endpoint),
    state: &mut Progress,
    on_event: &mut (dyn FnMut(MoveEvent) + Send),
) -> Result<(), MoveError> {
    // One size per listed key, as `plan` makes them (else: sized as nothing).
    let sizes = match planned.sizes.len() == planned.keys.len() {
        true => planned.sizes.clone(),
        false => vec![0; planned.keys.len()],
    };
    for chunk in chunks::split(&sizes) {
        let bytes = sizes[chunk.clone()].iter().sum();
        let keys = (&planned.keys[chunk], bytes);
        if !migrate_chunk(ctx, conns, planned.slot, keys, (from, to), state, on_event).await? {
            break;
        }
    }
    Ok(())
}

/// One `MIGRATE` of some keys of `slot` (with their bytes); `false` when the slot's other
/// chunks need not be sent (it failed, or is drained again with `REPLACE`).
async fn migrate_chunk(
    ctx: &MoveContext,
    conns: &mut Conns,
    slot: u16,
    (keys, bytes): (&[Bytes], u64),
    (from, to): (&Endpoint, &Endpoint),
    state: &mut Progress,
    on_event: &mut (dyn FnMut(MoveEvent) + Send),
) -> Result<bool, MoveError> {
    let command = ctx.migrate_command(&to.addr, keys, false, ctx.migrate_timeout)?;
    ctx.throttle.take(keys.len()).await;
    let timeout = ctx.migrate_timeout + ctx.call_timeout;
    let mut replies = ctx.pipeline(conns, &from.addr, &[command], timeout).await?;
    let reply = replies
        .pop()
        .ok_or_else(|| MoveError::Retry(format!("{}: no reply to MIGRATE", from.addr)))?;
    match reply {
        // NOKEY: none of the keys is there any more (expired or deleted since listed).
        Ok(raw) if scan::string(&raw) == Some(b"NOKEY") => {}
        Ok(_) => {
            let keys = keys.len() as u64;
            state.keys += keys;
            ctx.metrics.migration_keys.inc_by(keys);
            ctx.metrics.migration_bytes.inc_by(bytes);
            on_event(MoveEvent::Keys { keys, bytes });
        }
        Err(text) if text.contains("BUSYKEY") || text.contains("IOERR") => {
            let label = if text.contains("BUSYKEY") {
                "busykey"
            } else {
                "ioerr"
            };
            ctx.metrics
                .migration_errors
                .with_label_values(&[label])
                .inc();
            tracing::info!(slot, error = %text, "MIGRATE in a batch: the slot is drained again with REPLACE");
            state.replace = true;
            return Ok(false);
        }
        Err(text) => match step_error(&text, &from.addr, "MIGRATE", slot) {
            e @ MoveError::Changed(_) => return Err(e),
            e => {
                state.failed = Some(e);
                return Ok(false);
            }
        },
    }
    Ok(true)
}
