//! The cluster-wide migration lease: only one proxy moves slots at a time.
//!
//! The lease is a key in the cluster itself, `slotproxy:migration-lease`, set with
//! `SET … NX PX` to this proxy's holder id and renewed at a third of its lifetime with a
//! compare-and-expire script, so it vanishes on its own when its holder dies. It goes
//! through the normal data path, so it follows its own slot if that slot is moved. Proxies
//! that do not hold it keep serving clients; they only refuse to migrate.

use crate::cluster::key_slot;
use crate::cluster::router::{Router, Target};
use crate::protocol::{request::encode_command, scan};
use crate::upstream::control::error_text;
use crate::upstream::Lane;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// The key holding the lease (hidden from clients, see `protocol::reserved`).
pub use crate::protocol::reserved::LEASE_KEY;
const RENEW: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";
const RELEASE: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";
/// Data-path lane used for lease commands (any lane works; this keeps them off lane 0).
const LANE: Lane = Lane {
    index: usize::MAX / 2,
    resp3: false,
    client: crate::upstream::budget::NO_CLIENT,
    identity: crate::upstream::identity::PROXY,
};

/// This proxy's side of the lease.
#[derive(Debug)]
pub struct Lease {
    router: Arc<Router>,
    holder: String,
    ttl: Duration,
    state: Mutex<LeaseState>,
    lost: Arc<AtomicBool>,
}

#[derive(Debug, Default)]
struct LeaseState {
    users: usize,
    renewer: Option<JoinHandle<()>>,
}

/// Why the lease could not be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseError {
    /// Another proxy holds it.
    HeldBy(String),
    /// The cluster did not answer.
    Unavailable(String),
}

impl Lease {
    /// A lease handle for `holder`; nothing is taken yet.
    pub fn new(router: Arc<Router>, holder: String, ttl: Duration) -> Lease {
        Lease {
            router,
            holder,
            ttl,
            state: Mutex::new(LeaseState::default()),
            lost: Arc::new(AtomicBool::new(false)),
        }
    }

    /// This proxy's holder id.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// True once a renewal found the lease gone or taken: running jobs must stop.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// True while at least one user holds the lease.
    pub fn is_held(&self) -> bool {
        self.lock().users > 0 && !self.is_lost()
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, LeaseState> {
        self.state.lock()
    }

    async fn call(&self, args: &[&str]) -> Result<bytes::Bytes, LeaseError> {
        let reply = self
            .router
            .send(
                LANE,
                Target::Slot(key_slot(LEASE_KEY.as_bytes())),
                encode_command(args),
                true,
            )
            .await;
        match error_text(&reply) {
            Some(text) => Err(LeaseError::Unavailable(text)),
            None => Ok(reply),
        }
    }

    /// Takes the lease (or one more use of it, when already held).
    pub async fn acquire(self: &Arc<Self>) -> Result<(), LeaseError> {
        if self.is_held() {
            self.lock().users += 1;
            return Ok(());
        }
        let ttl = self.ttl.as_millis().to_string();
        let set = self
            .call(&["SET", LEASE_KEY, &self.holder, "NX", "PX", &ttl])
            .await?;
        if scan::string(&set) != Some(b"OK") {
            // Ours from before a restart (same data dir) counts as ours.
            let renewed = self
                .call(&["EVAL", RENEW, "1", LEASE_KEY, &self.holder, &ttl])
                .await?;
            if scan::integer(&renewed) != Some(1) {
                let current = self.call(&["GET", LEASE_KEY]).await?;
                let who = scan::string(&current)
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_else(|| "another proxy (it just expired; try again)".into());
                return Err(LeaseError::HeldBy(who));
            }
        }
        let mut state = self.lock();
        state.users += 1;
        self.lost.store(false, Ordering::Relaxed);
        if state.renewer.is_none() {
            let me = self.clone();
            state.renewer = Some(tokio::spawn(async move { me.renew_loop().await }));
        }
        tracing::info!(holder = %self.holder, "migration lease taken");
        Ok(())
    }

    async fn renew_loop(self: Arc<Self>) {
        let ttl = self.ttl.as_millis().to_string();
        let mut failures = 0u32;
        loop {
            tokio::time::sleep(self.ttl / 3).await;
            match self
                .call(&["EVAL", RENEW, "1", LEASE_KEY, &self.holder, &ttl])
                .await
            {
                Ok(reply) if scan::integer(&reply) == Some(1) => failures = 0,
                Ok(_) => {
                    let now = self.call(&["GET", LEASE_KEY]).await.ok();
                    match now.as_deref().and_then(scan::string) {
                        Some(other) => tracing::error!(
                            holder = %self.holder,
                            taken_by = %String::from_utf8_lossy(other),
                            "migration lease lost to another proxy"
                        ),
                        None => tracing::error!(
                            holder = %self.holder,
                            "migration lease expired before a renewal got through (a node \
                             stalled longer than migration.lease_ttl_ms)"
                        ),
                    }
                    self.lost.store(true, Ordering::Relaxed);
                    return;
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = ?e, "cannot renew the migration lease");
                    if failures >= 2 {
                        // It may expire before the next try: stop migrating to be safe.
                        self.lost.store(true, Ordering::Relaxed);
                        return;
                    }
                }
            }
        }
    }

    /// Gives back one use; the last one deletes the key.
    pub async fn release(&self) {
        let renewer = {
            let mut state = self.lock();
            state.users = state.users.saturating_sub(1);
            if state.users > 0 {
                return;
            }
            state.renewer.take()
        };
        if let Some(task) = renewer {
            task.abort();
        }
        match self
            .call(&["EVAL", RELEASE, "1", LEASE_KEY, &self.holder])
            .await
        {
            Ok(_) => tracing::info!("migration lease released"),
            Err(e) => {
                tracing::warn!(error = ?e, "cannot release the migration lease; it expires by itself")
            }
        }
    }
}
