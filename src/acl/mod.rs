//! Access control at the proxy: Redis 7.0's ACL users, rules and checks, enforced for the
//! proxy's clients before anything reaches a node.
//!
//! Rules are Redis' own language (`ACL SETUSER`), resolved against the cluster's command
//! table ([`crate::protocol::acl_catalog`]), so categories and key access come from the
//! servers. The users live in an atomically swapped set ([`Users`]); a session keeps its
//! user and looks again only when the set's generation changed, so the per-command cost of
//! an unrestricted user is one atomic load.

pub mod describe;
pub mod glob;
pub mod log;
pub mod selector;
pub mod user;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use selector::{Call, Denial};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
pub use user::User;

/// Why a rule was not applied; the texts are Redis'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// `+foo`, `-@bar`: no such command or category.
    #[error("Unknown command or category name in ACL")]
    UnknownCommand,
    /// Not a rule, or a pattern with spaces.
    #[error("Syntax error")]
    Syntax,
    /// A key pattern after `allkeys`.
    #[error("Adding a pattern after the * pattern (or the 'allkeys' flag) is not valid and does not have any effect. Try 'resetkeys' to start with an empty list of patterns")]
    KeyAfterAll,
    /// A channel pattern after `allchannels`.
    #[error("Adding a pattern after the * pattern (or the 'allchannels' flag) is not valid and does not have any effect. Try 'resetchannels' to start with an empty list of channels")]
    ChannelAfterAll,
    /// `<pass` / `!hash` of a password the user does not have.
    #[error("The password you are trying to remove from the user does not exist")]
    NoSuchPassword,
    /// `#hash` / `!hash` that is not 64 lowercase hex digits.
    #[error("The password hash must be exactly 64 characters and contain only lowercase hexadecimal characters")]
    BadHash,
    /// `+config|get|x`.
    #[error("Allowing first-arg of a subcommand is not supported")]
    FirstArgOfSubcommand,
}

/// Every user, by name (sorted as Redis lists them).
#[derive(Debug, Clone, Default)]
pub struct Users {
    /// Users by name.
    pub by_name: BTreeMap<String, Arc<User>>,
}

/// The proxy's users and its ACL log.
#[derive(Debug)]
pub struct Acl {
    users: ArcSwap<Users>,
    /// Bumped by every change, so sessions know to look their user up again.
    generation: AtomicU64,
    /// Changes are made one at a time (read, change, swap).
    change: Mutex<()>,
    /// `ACL LOG`
    pub log: log::AclLog,
}

impl Acl {
    /// The ACL with `users` (which must include `default`).
    pub fn new(users: Users) -> Acl {
        Acl {
            users: ArcSwap::from_pointee(users),
            generation: AtomicU64::new(1),
            change: Mutex::new(()),
            log: log::AclLog::default(),
        }
    }

    /// The users now.
    pub fn users(&self) -> Arc<Users> {
        self.users.load_full()
    }

    /// The user named `name`, if it exists.
    pub fn user(&self, name: &str) -> Option<Arc<User>> {
        self.users.load().by_name.get(name).cloned()
    }

    /// Changes the users with `change`, all or nothing; returns what `change` returned.
    pub fn modify<T, E>(&self, change: impl FnOnce(&mut Users) -> Result<T, E>) -> Result<T, E> {
        let _one_at_a_time = self.change.lock();
        let mut next = Users::clone(&self.users.load());
        let result = change(&mut next)?;
        self.users.store(Arc::new(next));
        self.generation.fetch_add(1, Ordering::Release);
        Ok(result)
    }

    /// Changes with every modification; compare to know a cached user may be stale.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether `user` may log in with `password`.
    pub fn authenticate(&self, user: &str, password: &[u8]) -> Option<Arc<User>> {
        self.user(user).filter(|u| u.accepts(password))
    }
}

/// Checks a call of `user`; the unrestricted user skips building the call. `None` from
/// `call`: a command the catalog does not know, which only `+@all` allows.
pub fn check<'a>(user: &User, call: impl FnOnce() -> Option<Call<'a>>) -> Result<(), Denial> {
    if user.unrestricted() {
        return Ok(());
    }
    match call() {
        Some(call) => user.check(&call),
        None => match user.selectors.iter().any(|s| s.all_commands) {
            true => Ok(()),
            false => Err(Denial::Command),
        },
    }
}

/// Redis' `-NOPERM` reply text for a denial of `command`.
pub fn noperm(denial: Denial, command: &str) -> String {
    match denial {
        Denial::Command => {
            format!("NOPERM this user has no permissions to run the '{command}' command")
        }
        Denial::Key(_) => {
            "NOPERM this user has no permissions to access one of the keys used as arguments".into()
        }
        Denial::Channel(_) => {
            "NOPERM this user has no permissions to access one of the channels used as arguments"
                .into()
        }
    }
}
