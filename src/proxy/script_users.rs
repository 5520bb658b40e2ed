//! Scripts run with their user's rights: a script checks each `redis.call` against the node
//! user of the connection it runs on, so a restricted proxy user's scripts (`EVAL`,
//! `EVALSHA`, `FCALL` and their `_RO` forms) run on a node user with the same rules (see
//! [`crate::acl::node_user`]), on its own connection to the node (see
//! [`crate::upstream::identity`]). The node then denies what the proxy would deny, with
//! Redis' own errors, inside the script too; `redis.acl_check_cmd` answers for the user.
//!
//! The node user is named after the proxy user and a digest of its rules
//! (`slotproxy-script:<user>:<digest>`), so every proxy of the fleet makes the same one, and
//! changed rules make a new one. Its password is derived from the proxy's own node
//! credentials, which clients never see; only its SHA-256 reaches the node. Each connection
//! creates the node user (`ACL SETUSER`, with the proxy's rights) right before logging in
//! as it, so a node added or restarted later has it when first needed. Unrestricted users'
//! scripts run with the proxy's rights, as before, since nothing is denied to them anyway.

use crate::acl::User;
use crate::protocol::acl_catalog::Catalog;
use crate::protocol::command::CommandInfo;
use crate::protocol::request::encode_command;
use crate::protocol::reserved::RESERVED_KEYS;
use crate::upstream::identity::{Identities, NodeUser, PROXY};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

/// Commands that run a script or function on a node.
const SCRIPT_RUNNERS: &[&str] = &[
    "eval",
    "eval_ro",
    "evalsha",
    "evalsha_ro",
    "fcall",
    "fcall_ro",
];

/// The prefix of the node users scripts run as (`slotproxy-script:<user>:<digest>`).
pub const NODE_USER_PREFIX: &str = "slotproxy-script:";

/// Whether `info` runs a script on a node.
pub fn runs_script(info: &CommandInfo) -> bool {
    SCRIPT_RUNNERS.contains(&info.name.as_str())
}

/// The node users made for the proxy users' scripts, by proxy user.
#[derive(Debug, Default)]
pub struct ScriptUsers {
    by_user: Mutex<HashMap<String, Made>>,
    /// Node users replaced or deleted since last taken, to be removed from the nodes.
    stale: Mutex<Vec<String>>,
}

#[derive(Debug)]
struct Made {
    /// The definition it was made from.
    user: Arc<User>,
    /// The node user's name and identity, or the key pattern that prevents one.
    outcome: Result<(String, u32), String>,
}

impl ScriptUsers {
    /// The identity `user`'s scripts run as ([`PROXY`] for an unrestricted user), or the
    /// key pattern that prevents a node user with its rights.
    pub fn identity(
        &self,
        identities: &Identities,
        node_password: &str,
        user: &Arc<User>,
        catalog: &Catalog,
    ) -> Result<u32, String> {
        if user.unrestricted() || user.selectors.iter().any(|s| s.unrestricted()) {
            return Ok(PROXY);
        }
        let mut by_user = self.by_user.lock();
        if let Some(made) = by_user.get(&user.name) {
            if Arc::ptr_eq(&made.user, user) {
                return made.outcome.clone().map(|(_, id)| id);
            }
        }
        let outcome = match crate::acl::node_user::rules(user, catalog, &RESERVED_KEYS) {
            Err(pattern) => Err(pattern),
            Ok(rules) => {
                let name = node_user_name(&user.name, &rules);
                let kept = by_user.get(&user.name).and_then(|m| match &m.outcome {
                    Ok((made, id)) if *made == name => Some(*id),
                    _ => None,
                });
                let id = kept.unwrap_or_else(|| {
                    identities.register(node_user(name.clone(), rules, node_password))
                });
                Ok((name, id))
            }
        };
        let made = Made {
            user: user.clone(),
            outcome: outcome.clone(),
        };
        if let Some(old) = by_user.insert(user.name.clone(), made) {
            if let Ok((old_name, old_id)) = old.outcome {
                if outcome.as_ref().map_or(true, |(_, id)| *id != old_id) {
                    identities.forget(old_id);
                    self.stale.lock().push(old_name);
                }
            }
        }
        outcome.map(|(_, id)| id)
    }

    /// Forgets a deleted user's node user: its connections close.
    pub fn forget(&self, identities: &Identities, user: &str) {
        if let Some(Made {
            outcome: Ok((name, id)),
            ..
        }) = self.by_user.lock().remove(user)
        {
            identities.forget(id);
            self.stale.lock().push(name);
        }
    }

    /// Forgets the node users of users changed or deleted in `users` (a newer set from the
    /// cluster), so that no connection keeps an outdated one alive.
    pub fn retain_current(&self, identities: &Identities, users: &crate::acl::Users) {
        let mut by_user = self.by_user.lock();
        let outdated: Vec<String> = by_user
            .iter()
            .filter(|(name, made)| users.by_name.get(*name).map_or(true, |u| **u != *made.user))
            .map(|(name, _)| name.clone())
            .collect();
        for name in outdated {
            if let Some(Made {
                outcome: Ok((node_user, id)),
                ..
            }) = by_user.remove(&name)
            {
                identities.forget(id);
                self.stale.lock().push(node_user);
            }
        }
    }

    /// Whether `node_user` is one a user's scripts run as now (a user whose rules went back
    /// to earlier ones has its earlier node user again).
    pub fn in_use(&self, node_user: &str) -> bool {
        self.by_user
            .lock()
            .values()
            .any(|m| matches!(&m.outcome, Ok((name, _)) if name == node_user))
    }

    /// The node users no longer used, since last asked.
    pub fn take_stale(&self) -> Vec<String> {
        std::mem::take(&mut *self.stale.lock())
    }
}

/// `slotproxy-script:<user>:<digest of the rules>`.
fn node_user_name(user: &str, rules: &[String]) -> String {
    let digest = Sha256::digest(rules.join("\n").as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{NODE_USER_PREFIX}{user}:{hex}")
}

/// The node user `name` with `rules`, its password derived from the proxy's node password.
fn node_user(name: String, rules: Vec<String>, node_password: &str) -> NodeUser {
    let seed = format!("slotproxy script user\n{node_password}\n{name}");
    let password = crate::acl::user::hash_password(seed.as_bytes());
    let hash = format!("#{}", crate::acl::user::hash_password(password.as_bytes()));
    let mut args: Vec<&str> = vec!["ACL", "SETUSER", &name];
    args.extend(rules.iter().map(String::as_str));
    args.push(&hash);
    NodeUser::new(encode_command(&args), name.clone(), password)
}

/// `-NOPERM` for a script the user may not run through the proxy: its key pattern `pattern`
/// matches the proxies' own keys, which a script must not reach.
pub fn unreachable_keys(command: &str, pattern: &str) -> String {
    format!(
        "NOPERM this user has no permissions to run the '{command}' command through slotproxy: its key pattern '{pattern}' matches the proxies' own keys ({}), which no script may touch; use patterns that do not match them, or '~*'",
        RESERVED_KEYS.join(", ")
    )
}

/// `-NOPERM` for a restricted user's script in a transaction with WATCH: that transaction
/// runs on the client's own connection, with the proxy's rights.
pub fn watched(command: &str) -> String {
    format!("NOPERM this user has no permissions to run the '{command}' command through slotproxy inside a transaction with WATCH (it would run with the proxy's rights); run it without WATCH, or as a user allowed every command, key and channel")
}
