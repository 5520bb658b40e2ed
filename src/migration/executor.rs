//! Moving one slot from a source master to a target master, the way Redis 7.0 wants it.
//!
//! 1. target `SETSLOT s IMPORTING <source>` (always first);
//! 2. source `SETSLOT s MIGRATING <target>`;
//! 3. `GETKEYSINSLOT` + `MIGRATE … KEYS` until the source is empty (`BUSYKEY` and `IOERR` are
//!    re-sent with `REPLACE` at once: while the slot is migrating the source's copy is the
//!    truth, and an `IOERR` may have left a copy on both);
//! 4. the gate `COUNTKEYSINSLOT == 0` on the source;
//! 5. `SETSLOT s NODE <target>` on the target, then the source, then every other master;
//! 6. the proxy's map is patched for the slot.
//!
//! Every step may be repeated: a move interrupted anywhere (crash, error) is finished by
//! running it again, which is what crash recovery does.

use super::bigkeys;
use super::context::{Conns, MoveContext};
use super::epochs;
use super::roles::{ensure_master, explain};
use super::types::{classify, Endpoint, MoveError, MoveEvent};
use crate::failpoint::freeze_at;
use crate::protocol::scan;
use bytes::Bytes;
use std::time::Duration;

/// Keys of one slot to MIGRATE together.
struct Batch<'a> {
    slot: u16,
    from: &'a str,
    to: &'a str,
    keys: &'a [Bytes],
    replace: bool,
    timeout: Duration,
}

/// What a MIGRATE batch came back with.
enum BatchResult {
    Moved,
    AllExpired,
    Busy,
    IoError(String),
}

/// Sends `keys` from `from` to `to` with `MIGRATE … KEYS`.
async fn migrate(
    ctx: &MoveContext,
    conns: &mut Conns,
    from: &str,
    to: &str,
    keys: &[Bytes],
    replace: bool,
    migrate_timeout: Duration,
) -> Result<BatchResult, MoveError> {
    let command = ctx.migrate_command(to, keys, replace, migrate_timeout)?;
    let args: Vec<&[u8]> = command.iter().map(Vec::as_slice).collect();
    ctx.throttle.take(keys.len()).await;
    let reply = ctx
        .call(conns, from, &args, migrate_timeout + ctx.call_timeout)
        .await?;
    match reply {
        Ok(raw) if scan::string(&raw) == Some(b"NOKEY") => Ok(BatchResult::AllExpired),
        Ok(_) => Ok(BatchResult::Moved),
        Err(text) if text.contains("BUSYKEY") => Ok(BatchResult::Busy),
        Err(text) if text.starts_with("IOERR") || text.contains("IOERR") => {
            Ok(BatchResult::IoError(text))
        }
        Err(text) => Err(classify(&text, from, &[b"MIGRATE"])),
    }
}

/// Moves every key of `slot` from `from` to `to` (the slot must already be open), and
/// returns how many keys went. Each batch is sized first: big keys go alone, with a
/// timeout fitted to them. `on_event` hears about each batch and big key as it lands.
pub async fn drain_slot(
    ctx: &MoveContext,
    conns: &mut Conns,
    slot: u16,
    (from, to): (&str, &str),
    replace_always: bool,
    on_event: &mut (dyn FnMut(MoveEvent) + Send),
) -> Result<u64, MoveError> {
    let mut moved = 0u64;
    let mut io_errors = 0u32;
    loop {
        let keys = ctx.keys_in_slot(conns, from, slot, ctx.batch_keys).await?;
        if keys.is_empty() {
            // The gate: giving the slot away while the source has keys deletes them.
            if ctx.count_in_slot(conns, from, slot).await? == 0 {
                return Ok(moved);
            }
            continue;
        }
        let sizes = bigkeys::sizes(ctx, conns, from, &keys).await?;
        let big = bigkeys::big_keys(ctx, conns, from, slot, &keys, &sizes, true).await?;
        let (mut small, mut small_sizes) = (Vec::with_capacity(keys.len()), Vec::new());
        for (i, key) in keys.iter().enumerate() {
            if !big.iter().any(|(b, _)| *b == i) {
                small.push(key.clone());
                small_sizes.push(sizes.get(i).copied().unwrap_or(0));
            }
        }
        // In short MIGRATEs, so that the source's clients wait for one chunk at most.
        for chunk in super::chunks::split(&small_sizes) {
            let bytes: u64 = small_sizes[chunk.clone()].iter().sum();
            let keys = &small[chunk];
            let batch = Batch {
                slot,
                from,
                to,
                keys,
                replace: replace_always,
                timeout: ctx.migrate_timeout,
            };
            send_batch(ctx, conns, batch, &mut io_errors).await?;
            moved += keys.len() as u64;
            ctx.metrics.migration_keys.inc_by(keys.len() as u64);
            ctx.metrics.migration_bytes.inc_by(bytes);
            on_event(MoveEvent::Keys {
                keys: keys.len() as u64,
                bytes,
            });
        }
        for (i, mut cost) in big {
            let estimate = Duration::from_millis(cost.estimated_ms);
            tracing::info!(slot, key = %cost.key, kind = %cost.kind, bytes = cost.bytes, elements = cost.elements, estimated_ms = cost.estimated_ms, "moving a big key alone");
            let batch = Batch {
                slot,
                from,
                to,
                keys: &keys[i..=i],
                replace: replace_always,
                timeout: ctx.migrate_timeout.max(estimate * 4),
            };
            let started = std::time::Instant::now();
            send_batch(ctx, conns, batch, &mut io_errors).await?;
            let took = started.elapsed();
            ctx.costs.learn(estimate, took);
            ctx.metrics
                .migration_big_key_block
                .observe(took.as_secs_f64());
            cost.block_ms = Some(took.as_millis() as u64);
            tracing::info!(slot, key = %cost.key, block_ms = took.as_millis() as u64, "big key moved");
            moved += 1;
            ctx.metrics.migration_keys.inc();
            ctx.metrics.migration_bytes.inc_by(cost.bytes);
            on_event(MoveEvent::Keys {
                keys: 1,
                bytes: cost.bytes,
            });
            on_event(MoveEvent::BigKey(cost));
        }
        freeze_at("migration::mid_migrate").await;
    }
}

/// MIGRATEs one batch until every key in it has landed: `BUSYKEY` is re-sent with
/// `REPLACE`, `IOERR` one key at a time with `REPLACE` and four times the timeout.
async fn send_batch(
    ctx: &MoveContext,
    conns: &mut Conns,
    batch: Batch<'_>,
    io_errors: &mut u32,
) -> Result<(), MoveError> {
    let Batch {
        slot,
        from,
        to,
        keys,
        mut replace,
        timeout: base,
    } = batch;
    let mut timeout = base;
    let mut part: &[Bytes] = keys;
    let mut done = 0;
    while done < keys.len() {
        match migrate(ctx, conns, from, to, part, replace, timeout).await? {
            BatchResult::Moved | BatchResult::AllExpired => {
                done += part.len();
                part = &keys[done..(done + part.len()).min(keys.len())];
            }
            BatchResult::Busy => {
                ctx.metrics
                    .migration_errors
                    .with_label_values(&["busykey"])
                    .inc();
                tracing::info!(slot, from, to, "BUSYKEY: re-sending the batch with REPLACE");
                replace = true;
            }
            BatchResult::IoError(text) => {
                ctx.metrics
                    .migration_errors
                    .with_label_values(&["ioerr"])
                    .inc();
                *io_errors += 1;
                tracing::warn!(slot, from, to, error = %text, "MIGRATE IOERR: re-sending with REPLACE, one key at a time");
                if *io_errors > 5 {
                    return Err(MoveError::Retry(format!("MIGRATE {from} → {to}: {text}")));
                }
                // The copy on the target may be partial or stale: REPLACE it at once.
                // A big key may need longer than the timeout: move keys singly, with
                // more patience, for the rest of this batch.
                timeout = base * 4;
                replace = true;
                part = &keys[done..done + 1];
                tokio::time::sleep(Duration::from_millis(100 * u64::from(*io_errors))).await;
            }
        }
    }
    Ok(())
}

/// Runs the whole protocol for one slot; returns the keys moved. An error is
/// [`MoveError::Changed`] when either end is no longer the master it was.
pub async fn move_slot(
    ctx: &MoveContext,
    conns: &mut Conns,
    slot: u16,
    from: &Endpoint,
    to: &Endpoint,
    others: &[Endpoint],
    on_event: &mut (dyn FnMut(MoveEvent) + Send),
) -> Result<u64, MoveError> {
    match move_slot_steps(ctx, conns, slot, from, to, others, on_event).await {
        Ok(keys) => Ok(keys),
        Err(e @ MoveError::TooBig { .. }) => Err(e),
        Err(e) => Err(explain(ctx, conns, e, from, to).await),
    }
}

async fn move_slot_steps(
    ctx: &MoveContext,
    conns: &mut Conns,
    slot: u16,
    from: &Endpoint,
    to: &Endpoint,
    others: &[Endpoint],
    on_event: &mut (dyn FnMut(MoveEvent) + Send),
) -> Result<u64, MoveError> {
    // A failover between two slots must not go unnoticed: both ends still masters?
    ensure_master(ctx, conns, from).await?;
    ensure_master(ctx, conns, to).await?;
    bigkeys::preflight_big_keys(ctx, conns, &from.addr, slot).await?;
    tracing::debug!(target_node = %to.addr, "step 1: SETSLOT IMPORTING on the target");
    match ctx
        .setslot(conns, &to.addr, slot, b"IMPORTING", Some(&from.id))
        .await?
    {
        Ok(_) => {}
        Err(text) if text.contains("already the owner") => {
            // An earlier run got as far as step 5 on the target: finish the hand-over.
            hand_over(ctx, conns, slot, from, to, others).await?;
            return Ok(0);
        }
        Err(text) => return Err(classify(&text, &to.addr, &[b"SETSLOT IMPORTING"])),
    }
    freeze_at("migration::after_importing").await;
    tracing::debug!(source_node = %from.addr, "step 2: SETSLOT MIGRATING on the source");
    match ctx
        .setslot(conns, &from.addr, slot, b"MIGRATING", Some(&to.id))
        .await?
    {
        Ok(_) => {}
        // "I'm not the owner" is a change (see classify): the repair closes the target.
        Err(text) => return Err(classify(&text, &from.addr, &[b"SETSLOT MIGRATING"])),
    }
    freeze_at("migration::after_migrating").await;
    tracing::debug!("step 3: MIGRATE the keys");
    let moved = drain_slot(ctx, conns, slot, (&from.addr, &to.addr), false, on_event).await?;
    tracing::debug!(keys = moved, "step 4: the source is empty");
    hand_over(ctx, conns, slot, from, to, others).await?;
    Ok(moved)
}

/// Step 5 and 6: `SETSLOT NODE` on the target, the source, then everyone else; then the
/// proxy's own map.
pub async fn hand_over(
    ctx: &MoveContext,
    conns: &mut Conns,
    slot: u16,
    from: &Endpoint,
    to: &Endpoint,
    others: &[Endpoint],
) -> Result<(), MoveError> {
    let s = slot.to_string();
    tracing::debug!("step 5: SETSLOT NODE on the target, the source, every other master");
    let args: [&[u8]; 5] = [
        b"CLUSTER",
        b"SETSLOT",
        s.as_bytes(),
        b"NODE",
        to.id.as_bytes(),
    ];
    freeze_at("migration::before_target_node").await;
    epochs::outrank_source(ctx, conns, from, to).await?;
    ctx.must(conns, &to.addr, &args).await?;
    freeze_at("migration::after_target_node").await;
    match ctx.call(conns, &from.addr, &args, ctx.call_timeout).await? {
        Ok(_) => {}
        // The source lost its last slot and turned into a replica of the target; a
        // replica of anyone else means a failover happened.
        Err(text) if text.contains("only with masters") => {
            let (me, _) = ctx.node_view(conns, &from.addr).await?;
            if me.master_id.as_deref() != Some(to.id.as_str()) {
                return Err(MoveError::Changed(format!(
                    "{}: SETSLOT NODE: {text} (a failover: it is a replica, not of the target)",
                    from.addr
                )));
            }
        }
        Err(text) => return Err(classify(&text, &from.addr, &[b"SETSLOT NODE"])),
    }
    freeze_at("migration::after_source_node").await;
    epochs::secure_claim(ctx, conns, &[slot], from, to).await?;
    for other in others.iter().filter(|o| o.id != from.id && o.id != to.id) {
        // Others also learn it through gossip; a failure here is not worth stopping for.
        match ctx.call(conns, &other.addr, &args, ctx.call_timeout).await {
            Ok(Ok(_)) => {}
            Ok(Err(text)) => {
                tracing::debug!(slot, node = %other.addr, error = %text, "SETSLOT NODE on a bystander")
            }
            Err(e) => {
                tracing::debug!(slot, node = %other.addr, error = %e, "SETSLOT NODE on a bystander")
            }
        }
    }
    ctx.topology.set_owner(slot, &to.addr);
    tracing::debug!(owner = %to.addr, "step 6: the proxy's map points at the new owner");
    Ok(())
}
