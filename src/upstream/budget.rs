//! Per-client accounting of reply bytes the proxy holds but has not written yet: Redis'
//! `client-output-buffer-limit` for normal clients, as a hard limit.
//!
//! A client that pipelines many commands with big replies and stops reading would otherwise
//! make the proxy hold every reply: the node connections deliver them into per-request
//! channels whatever the client does. So a node connection charges each reply it hands over
//! to the client's slot here, the receiving side releases it when the session takes it, and
//! the session charges what waits in its write buffer until it is written. Past
//! `proxy.client_output_limit_bytes` the client's disconnect token is tripped at once.
//!
//! Slots are indexed by a small number each session takes at accept (Copy, so it rides in
//! [`super::Lane`]); charging is one atomic add.

use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use tokio_util::sync::CancellationToken;

/// The slot of requests that belong to no client (the lease, control work).
pub const NO_CLIENT: u32 = u32::MAX;

#[derive(Debug, Default)]
struct Slot {
    pending: AtomicI64,
    tripped: AtomicBool,
    token: Mutex<Option<CancellationToken>>,
}

/// Every client's pending reply bytes.
#[derive(Debug, Default)]
pub struct ReplyBudgets {
    limit: i64,
    slots: Box<[Slot]>,
    free: Mutex<Vec<u32>>,
}

impl ReplyBudgets {
    /// Room for `clients` sessions with `limit` bytes each; `limit` 0 turns accounting off.
    pub fn new(clients: usize, limit: usize) -> ReplyBudgets {
        let clients = if limit == 0 { 0 } else { clients };
        ReplyBudgets {
            limit: i64::try_from(limit).unwrap_or(i64::MAX),
            slots: (0..clients).map(|_| Slot::default()).collect(),
            free: Mutex::new((0..clients as u32).rev().collect()),
        }
    }

    /// Takes a slot for a new session whose disconnect switch is `token`; [`NO_CLIENT`]
    /// when accounting is off or every slot is taken.
    pub fn register(&self, token: CancellationToken) -> u32 {
        let Some(slot) = self.free.lock().pop() else {
            return NO_CLIENT;
        };
        if let Some(s) = self.slots.get(slot as usize) {
            s.pending.store(0, Ordering::Relaxed);
            s.tripped.store(false, Ordering::Relaxed);
            *s.token.lock() = Some(token);
        }
        slot
    }

    /// Gives a session's slot back.
    pub fn unregister(&self, slot: u32) {
        if let Some(s) = self.slots.get(slot as usize) {
            s.token.lock().take();
            self.free.lock().push(slot);
        }
    }

    /// Counts `bytes` more held for the client; past the limit its token is tripped.
    #[inline]
    pub fn charge(&self, slot: u32, bytes: usize) {
        let Some(s) = self.slots.get(slot as usize) else {
            return;
        };
        let now = s.pending.fetch_add(bytes as i64, Ordering::Relaxed) + bytes as i64;
        if now > self.limit && !s.tripped.swap(true, Ordering::Relaxed) {
            if let Some(token) = s.token.lock().take() {
                token.cancel();
            }
        }
    }

    /// Counts `bytes` as no longer held (written, or taken by the session).
    #[inline]
    pub fn release(&self, slot: u32, bytes: usize) {
        if let Some(s) = self.slots.get(slot as usize) {
            s.pending.fetch_sub(bytes as i64, Ordering::Relaxed);
        }
    }

    /// True once the client went over the limit.
    pub fn tripped(&self, slot: u32) -> bool {
        self.slots
            .get(slot as usize)
            .is_some_and(|s| s.tripped.load(Ordering::Relaxed))
    }

    /// Bytes held for the client right now.
    pub fn pending(&self, slot: u32) -> i64 {
        self.slots
            .get(slot as usize)
            .map_or(0, |s| s.pending.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn going_over_the_limit_trips_the_token_once() {
        let budgets = ReplyBudgets::new(2, 100);
        let token = CancellationToken::new();
        let slot = budgets.register(token.clone());
        budgets.charge(slot, 60);
        budgets.release(slot, 60);
        budgets.charge(slot, 90);
        assert!(!token.is_cancelled());
        budgets.charge(slot, 20);
        assert!(token.is_cancelled() && budgets.tripped(slot));
        budgets.unregister(slot);
        let again = budgets.register(CancellationToken::new());
        assert_eq!(again, slot);
        assert!(!budgets.tripped(again));
        assert_eq!(budgets.pending(again), 0);
    }

    #[test]
    fn off_means_no_slots() {
        let budgets = ReplyBudgets::new(10, 0);
        let slot = budgets.register(CancellationToken::new());
        assert_eq!(slot, NO_CLIENT);
        budgets.charge(slot, usize::MAX / 4);
    }
}
