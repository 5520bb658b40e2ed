//! Making the new owner's claim stick when a slot is handed over.
//!
//! `SETSLOT NODE` on the target bumps its config epoch only when the target does not already
//! hold the greatest epoch it knows of. While two masters share an epoch (a fresh cluster
//! whose collisions Redis is still resolving, a failover) or the target has not yet heard of
//! the source's latest epoch, the target claims the slot under an epoch no greater than the
//! source's. The source, still claiming the slot until its own `SETSLOT NODE`, then wins:
//! the target gives the slot back in its own view and Redis deletes the keys it holds in it,
//! while the source and every other node, told by `SETSLOT NODE`, point at the target
//! (seen in tests on a cluster a second old: keys gone, `MOVED` ping-pong for good).
//!
//! So before the target's `SETSLOT NODE` its epoch must be above the source's, and the
//! source's must not be shared with another master (a collision Redis may resolve by bumping
//! the source): [`outrank_source`] checks that and bumps the target (`CLUSTER BUMPEPOCH`) or
//! waits for gossip until it holds. A node user without `CLUSTER BUMPEPOCH` is enough too:
//! then the target must know the source's epoch, and its own `SETSLOT NODE` bumps past it. After the source lets go, [`secure_claim`] checks again
//! (a claim under an epoch at least the source's cannot be taken back: Redis hands a slot
//! over only to a strictly greater epoch) and claims back anything lost.

use super::context::{Conns, MoveContext};
use super::types::{Endpoint, MoveError};
use crate::protocol::scan;
use std::time::Duration;

/// How long the epochs may take to settle (gossip, Redis resolving a collision) before the
/// hand-over counts as failed.
const SETTLE_LIMIT: Duration = Duration::from_secs(10);
/// The pause between two looks while the target catches up.
const SETTLE_PAUSE: Duration = Duration::from_millis(50);

/// Before the target's `SETSLOT NODE`: makes the target's epoch greater than the source's,
/// and waits until no other master shares the source's. Costs a `CLUSTER NODES` of the
/// source and a `CLUSTER INFO` of the target when the epochs are in order, as they are in a
/// settled cluster. `Err` (the slots still open, nothing handed over) when they do not settle.
pub async fn outrank_source(
    ctx: &MoveContext,
    conns: &mut Conns,
    from: &Endpoint,
    to: &Endpoint,
) -> Result<(), MoveError> {
    let started = tokio::time::Instant::now();
    let mut noted = false;
    // A node user without CLUSTER BUMPEPOCH: the target's own SETSLOT NODE bumps its epoch
    // past every epoch it knows of, so it must know the source's.
    let mut may_bump = true;
    loop {
        let (me, lines) = ctx.node_view(conns, &from.addr).await?;
        let source = me.config_epoch;
        let shared = lines
            .iter()
            .any(|l| !l.is_myself() && l.is_master() && l.config_epoch == source);
        let target = my_epoch(ctx, conns, &to.addr).await?;
        if target > source && !shared {
            if noted {
                tracing::info!(target = %to.addr, epoch = target, source_epoch = source, "epochs settled: handing the slots over");
            }
            return Ok(());
        }
        if !may_bump && !shared && target < source && knows(ctx, conns, to, from, source).await? {
            tracing::debug!(target = %to.addr, epoch = target, source_epoch = source, "the target knows the source's epoch: its SETSLOT NODE bumps past it");
            return Ok(());
        }
        if started.elapsed() > SETTLE_LIMIT {
            return Err(MoveError::Retry(format!(
                "{}: config epoch {target} not above the source's ({source}, {}{}) after {} s; \
                 the slots stay open, not handed over (SETSLOT NODE under that epoch would let \
                 the source take them back and the target drop their keys)",
                to.addr,
                from.addr,
                if shared {
                    ", shared with another master"
                } else {
                    ""
                },
                SETTLE_LIMIT.as_secs()
            )));
        }
        if target <= source && may_bump {
            match bump(ctx, conns, to).await? {
                Some(true) => {
                    // The usual case (a target that never held slots has epoch 0).
                    tracing::debug!(target = %to.addr, epoch = target, source_epoch = source, "the target's epoch bumped above the source's");
                    continue;
                }
                Some(false) => {}
                None => {
                    may_bump = false;
                    continue;
                }
            }
        }
        if !noted {
            tracing::warn!(target = %to.addr, epoch = target, source = %from.addr, source_epoch = source, shared, "the target's epoch is not above the source's: settling epochs before SETSLOT NODE");
            noted = true;
        }
        // The target has not heard of the source's epoch yet, or Redis has a collision to
        // resolve: gossip settles both.
        tokio::time::sleep(SETTLE_PAUSE).await;
    }
}

/// Whether the target's view has the source at `epoch` (or later).
async fn knows(
    ctx: &MoveContext,
    conns: &mut Conns,
    to: &Endpoint,
    from: &Endpoint,
    epoch: u64,
) -> Result<bool, MoveError> {
    let (_, lines) = ctx.node_view(conns, &to.addr).await?;
    Ok(lines
        .iter()
        .any(|l| l.id == from.id && l.config_epoch >= epoch))
}

/// `CLUSTER BUMPEPOCH` on the target: `Some(true)` when its epoch went up, `Some(false)` for
/// "STILL" (it holds the greatest it knows of), `None` when the node refused the command (a
/// node user without it).
async fn bump(
    ctx: &MoveContext,
    conns: &mut Conns,
    to: &Endpoint,
) -> Result<Option<bool>, MoveError> {
    match ctx
        .call(
            conns,
            &to.addr,
            &[b"CLUSTER", b"BUMPEPOCH"],
            ctx.call_timeout,
        )
        .await?
    {
        Ok(reply) => Ok(Some(reply.windows(6).any(|w| w == b"BUMPED"))),
        Err(text) => {
            tracing::debug!(node = %to.addr, error = %text, "CLUSTER BUMPEPOCH refused");
            Ok(None)
        }
    }
}

/// After the source's `SETSLOT NODE`: makes sure the target's claim of `slots` (already
/// handed over with `SETSLOT NODE` on the target and the source) outranks every claim the
/// source made before. Costs one `CLUSTER INFO` per end when the epochs are in order, as they
/// are in a settled cluster.
pub async fn secure_claim(
    ctx: &MoveContext,
    conns: &mut Conns,
    slots: &[u16],
    from: &Endpoint,
    to: &Endpoint,
) -> Result<(), MoveError> {
    if slots.is_empty() {
        return Ok(());
    }
    let started = tokio::time::Instant::now();
    let mut repaired = false;
    loop {
        let target = my_epoch(ctx, conns, &to.addr).await?;
        let source = my_epoch(ctx, conns, &from.addr).await?;
        if target >= source {
            if repaired {
                reclaim(ctx, conns, slots, to).await?;
                tracing::info!(target = %to.addr, epoch = target, source_epoch = source, "the target's claim now outranks the source's");
            }
            return Ok(());
        }
        if started.elapsed() > SETTLE_LIMIT {
            return Err(MoveError::Retry(format!(
                "{}: its config epoch {target} stayed below the source's ({source}, {}) for {} s \
                 after SETSLOT NODE; the slots may be claimed by no node",
                to.addr,
                from.addr,
                SETTLE_LIMIT.as_secs()
            )));
        }
        if !repaired {
            tracing::warn!(target = %to.addr, epoch = target, source = %from.addr, source_epoch = source, slots = slots.len(), "the target claimed slots under an epoch below the source's: bumping it");
        }
        repaired = true;
        let bumped = match bump(ctx, conns, to).await? {
            Some(bumped) => bumped,
            None => {
                return Err(MoveError::Retry(format!(
                    "{}: its config epoch {target} is below the source's ({source}) after \
                     SETSLOT NODE, and CLUSTER BUMPEPOCH is refused to the proxy's node user",
                    to.addr
                )))
            }
        };
        reclaim(ctx, conns, slots, to).await?;
        if !bumped {
            // The target has not heard of the source's epoch yet; gossip brings it.
            tokio::time::sleep(SETTLE_PAUSE).await;
        }
    }
}

/// `SETSLOT NODE <target>` on the target for every slot it gave back in its own view.
async fn reclaim(
    ctx: &MoveContext,
    conns: &mut Conns,
    slots: &[u16],
    to: &Endpoint,
) -> Result<(), MoveError> {
    let (me, _) = ctx.node_view(conns, &to.addr).await?;
    let lost: Vec<Vec<Vec<u8>>> = slots
        .iter()
        .filter(|&&slot| !me.owns(slot))
        .map(|slot| {
            [
                b"CLUSTER".as_slice(),
                b"SETSLOT",
                slot.to_string().as_bytes(),
                b"NODE",
                to.id.as_bytes(),
            ]
            .iter()
            .map(|a| a.to_vec())
            .collect()
        })
        .collect();
    if lost.is_empty() {
        return Ok(());
    }
    tracing::error!(target = %to.addr, slots = ?slots, "the target gave slots back to the source's older claim (Redis drops a master's keys in a slot it loses): claiming them again");
    for reply in ctx
        .pipeline(conns, &to.addr, &lost, ctx.call_timeout)
        .await?
    {
        if let Err(text) = reply {
            return Err(MoveError::Retry(format!(
                "{}: SETSLOT NODE (claiming again): {text}",
                to.addr
            )));
        }
    }
    Ok(())
}

/// `cluster_my_epoch` from the node's `CLUSTER INFO` (a replica reports its master's).
async fn my_epoch(ctx: &MoveContext, conns: &mut Conns, addr: &str) -> Result<u64, MoveError> {
    let reply = ctx
        .call(conns, addr, &[b"CLUSTER", b"INFO"], ctx.call_timeout)
        .await?
        .map_err(|e| MoveError::Retry(format!("{addr}: CLUSTER INFO: {e}")))?;
    scan::string(&reply)
        .and_then(|text| parse_my_epoch(&String::from_utf8_lossy(text)))
        .ok_or_else(|| MoveError::Retry(format!("{addr}: no cluster_my_epoch in CLUSTER INFO")))
}

fn parse_my_epoch(info: &str) -> Option<u64> {
    info.lines()
        .find_map(|line| line.trim().strip_prefix("cluster_my_epoch:"))
        .and_then(|value| value.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::parse_my_epoch;

    #[test]
    fn reads_the_nodes_own_epoch() {
        let info = "cluster_state:ok\r\ncluster_current_epoch:7\r\ncluster_my_epoch:3\r\n";
        assert_eq!(parse_my_epoch(info), Some(3));
        assert_eq!(parse_my_epoch("cluster_state:ok\r\n"), None);
    }
}
