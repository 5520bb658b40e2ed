//! Per-client accounting of reply bytes the proxy holds but has not written yet: Redis'
//! `client-output-buffer-limit` for normal clients, as a hard limit.
//!
//! A client that pipelines many commands with big replies and stops reading would otherwise
//! make the proxy hold every reply: the node connections deliver them into per-request
//! channels whatever the client does. So a node connection charges each reply it hands over
//! to the client's account here, the receiving side releases it when the session takes it, and
//! the session charges what waits in its write buffer until it is written. Past
//! `proxy.client_output_limit_bytes` the client's disconnect token is tripped at once.
//!
//! Accounts are indexed by a small number each session takes at accept (Copy, so it rides in
//! [`super::Lane`]); charging is one atomic add.

use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use tokio_util::sync::CancellationToken;

/// The account of requests that belong to no client (the lease, control work).
pub const NO_CLIENT: u32 = u32::MAX;

#[derive(Debug, Default)]
struct Account {
    pending: AtomicI64,
    tripped: AtomicBool,
    token: Mutex<Option<CancellationToken>>,
}

/// Every client's pending reply bytes.
#[derive(Debug, Default)]
pub struct ReplyBudgets {
    limit: i64,
    accounts: Box<[Account]>,
    free: Mutex<Vec<u32>>,
}

impl ReplyBudgets {
    /// Room for `clients` sessions with `limit` bytes each; `limit` 0 turns accounting off.
    pub fn new(clients: usize, limit: usize) -> ReplyBudgets {
        let clients = if limit == 0 { 0 } else { clients };
        ReplyBudgets {
            limit: i64::try_from(limit).unwrap_or(i64::MAX),
            accounts: (0..clients).map(|_| Account::default()).collect(),
            free: Mutex::new((0..clients as u32).rev().collect()),
        }
    }

    /// Takes an account for a new session whose disconnect switch is `token`; [`NO_CLIENT`]
    /// when accounting is off or every account is taken.
    pub fn register(&self, token: CancellationToken) -> u32 {
        let Some(account) = self.free.lock().pop() else {
            return NO_CLIENT;
        };
        if let Some(s) = self.accounts.get(account as usize) {
            s.pending.store(0, Ordering::Relaxed);
            s.tripped.store(false, Ordering::Relaxed);
            *s.token.lock() = Some(token);
        }
        account
    }

    /// Gives a session's account back.
    pub fn unregister(&self, account: u32) {
        if let Some(s) = self.accounts.get(account as usize) {
            s.token.lock().take();
            self.free.lock().push(account);
        }
    }

    /// Counts `bytes` more held for the client; past the limit its token is tripped.
    #[inline]
    pub fn charge(&self, account: u32, bytes: usize) {
        let Some(s) = self.accounts.get(account as usize) else {
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
    pub fn release(&self, account: u32, bytes: usize) {
        if let Some(s) = self.accounts.get(account as usize) {
            s.pending.fetch_sub(bytes as i64, Ordering::Relaxed);
        }
    }

    /// True once the client went over the limit.
    pub fn tripped(&self, account: u32) -> bool {
        self.accounts
            .get(account as usize)
            .is_some_and(|s| s.tripped.load(Ordering::Relaxed))
    }

    /// Bytes held for the client right now.
    pub fn pending(&self, account: u32) -> i64 {
        self.accounts
            .get(account as usize)
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
        let account = budgets.register(token.clone());
        budgets.charge(account, 60);
        budgets.release(account, 60);
        budgets.charge(account, 90);
        assert!(!token.is_cancelled());
        budgets.charge(account, 20);
        assert!(token.is_cancelled() && budgets.tripped(account));
        budgets.unregister(account);
        let again = budgets.register(CancellationToken::new());
        assert_eq!(again, account);
        assert!(!budgets.tripped(again));
        assert_eq!(budgets.pending(again), 0);
    }

    #[test]
    fn off_means_no_accounts() {
        let budgets = ReplyBudgets::new(10, 0);
        let account = budgets.register(CancellationToken::new());
        assert_eq!(account, NO_CLIENT);
        budgets.charge(account, usize::MAX / 4);
    }
}
