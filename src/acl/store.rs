//! The proxy's users, swapped atomically, and the check of a call against a user.

use super::selector::{Call, Denial};
use super::user::User;
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Every user, by name (sorted as Redis lists them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    pub log: super::log::AclLog,
    /// The version of the users shared through the cluster last installed here (0: none).
    shared_version: AtomicU64,
}

impl Acl {
    /// The ACL with `users` (which must include `default`).
    pub fn new(users: Users) -> Acl {
        Acl {
            users: ArcSwap::from_pointee(users),
            generation: AtomicU64::new(1),
            change: Mutex::new(()),
            log: super::log::AclLog::default(),
            shared_version: AtomicU64::new(0),
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

    /// The version of the shared users installed here (0: none yet).
    pub fn shared_version(&self) -> u64 {
        self.shared_version.load(Ordering::Acquire)
    }

    /// Records the shared version now installed.
    pub fn set_shared_version(&self, version: u64) {
        self.shared_version.store(version, Ordering::Release);
    }

    /// Replaces every user (users shared by another proxy, `ACL LOAD`).
    pub fn replace(&self, users: Users) {
        let _one_at_a_time = self.change.lock();
        self.users.store(Arc::new(users));
        self.generation.fetch_add(1, Ordering::Release);
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
