//! One set of ACL users for every proxy in front of a cluster, kept in the cluster itself.
//!
//! The users live in the hash `slotproxy:acl` (fields `version` and `users`, the latter in
//! ACL file format with password hashes only). A change (`ACL SETUSER`, `DELUSER`, `LOAD`)
//! reads the latest version, applies itself to it and writes it back with a compare-and-set
//! script; when another proxy changed the users meanwhile, the write is refused and the change
//! is applied again to the newer set. So two proxies changing the same user at once both take
//! effect, one after the other, as two clients of one Redis would. Every proxy polls the
//! version every [`POLL`] and installs a newer set, closing the connections of users it no
//! longer has. The key goes through the normal data path, so it follows its slot when slots
//! move; if it is flushed, the proxies write their users back.

use super::Shared;
use crate::acl::file::{parse, to_text, Strictness};
use crate::acl::{User, Users};
use crate::cluster::key_slot;
use crate::cluster::router::Target;
use crate::protocol::acl_catalog::Catalog;
use crate::protocol::request::encode_command;
use crate::protocol::{reply, scan};
use crate::upstream::control::error_text;
use crate::upstream::Lane;
use bytes::Bytes;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The key holding the users (hidden from clients, see `protocol::reserved`).
pub use crate::protocol::reserved::ACL_KEY;
/// How often each proxy looks for changes made through the others.
pub const POLL: Duration = Duration::from_millis(500);
/// Writes refused because another proxy changed the users first, before giving up.
const MAX_ATTEMPTS: usize = 16;
const CAS: &str = "local v = redis.call('hget', KEYS[1], 'version') or '0' \
    if v ~= ARGV[1] then return 0 end \
    redis.call('hset', KEYS[1], 'version', ARGV[2], 'users', ARGV[3]) return 1";
const LANE: Lane = Lane {
    index: usize::MAX / 2 + 1,
    resp3: false,
    client: crate::upstream::budget::NO_CLIENT,
    identity: crate::upstream::identity::PROXY,
};

async fn call(shared: &Shared, args: &[&str]) -> Result<Bytes, String> {
    let target = Target::Slot(key_slot(ACL_KEY.as_bytes()));
    let reply = shared
        .router
        .send(LANE, target, encode_command(args), true)
        .await;
    match error_text(&reply) {
        Some(text) => Err(text),
        None => Ok(reply),
    }
}

/// The shared version and users text; `None` when the cluster has none.
async fn fetch(shared: &Shared) -> Result<Option<(u64, String)>, String> {
    let reply = call(shared, &["HMGET", ACL_KEY, "version", "users"]).await?;
    let fields = scan::array_elements(&reply).unwrap_or_default();
    let version = fields
        .first()
        .and_then(|f| scan::string(f))
        .and_then(|v| String::from_utf8_lossy(v).parse::<u64>().ok());
    let text = fields.get(1).and_then(|f| scan::string(f));
    Ok(match (version, text) {
        (Some(version), Some(text)) => Some((version, String::from_utf8_lossy(text).into_owned())),
        _ => None,
    })
}

fn catalog_of(shared: &Shared) -> Option<Arc<crate::cluster::Snapshot>> {
    shared.router.topology.current().as_ref().cloned()
}

/// Applies `apply` to the latest shared users and stores the result in the cluster; on
/// success the users are installed here too. An `Err` from `apply` is returned as it is
/// (nothing changes); a cluster that cannot be reached is a `-ERR` naming why.
pub async fn change<T>(
    shared: &Shared,
    apply: impl Fn(&mut Users, &Catalog) -> Result<T, Bytes>,
) -> Result<T, Bytes> {
    let unavailable = |why: String| {
        reply::error(&format!(
            "ERR slotproxy: cannot store the ACL users in the cluster ({why}); nothing changed"
        ))
    };
    for _ in 0..MAX_ATTEMPTS {
        let snapshot = catalog_of(shared)
            .ok_or_else(|| unavailable("not connected to the cluster yet".into()))?;
        let catalog = snapshot.commands.catalog();
        let local = || Users::clone(&shared.acl.users());
        let (version, current) = match fetch(shared).await.map_err(unavailable)? {
            Some((version, text)) => (version, read(&text, catalog).unwrap_or_else(local)),
            None => (0, local()),
        };
        let mut next = current.clone();
        let result = apply(&mut next, catalog)?;
        // Nothing changed: nothing to write (the key is only made once users change).
        if next == current {
            if version > 0 {
                install(shared, next, version);
            }
            return Ok(result);
        }
        let text = to_text(&next, catalog);
        let (from, to) = (version.to_string(), (version + 1).to_string());
        let stored = call(shared, &["EVAL", CAS, "1", ACL_KEY, &from, &to, &text])
            .await
            .map_err(unavailable)?;
        if scan::integer(&stored) == Some(1) {
            install(shared, next, version + 1);
            return Ok(result);
        }
    }
    Err(reply::error(
        "ERR slotproxy: the ACL users kept changing through other proxies; try again",
    ))
}

/// Reads users another proxy wrote (commands this cluster lacks are skipped); `None` (and
/// an error logged) when the text does not parse.
fn read(text: &str, catalog: &Catalog) -> Option<Users> {
    match parse(text, ACL_KEY, catalog, Strictness::SkipUnknownCommands) {
        Ok(mut users) => {
            users
                .by_name
                .entry("default".into())
                .or_insert_with(|| User::default_user(catalog).into());
            Some(users)
        }
        Err(error) => {
            tracing::error!(%error, "the shared ACL users do not parse; keeping what this proxy has");
            None
        }
    }
}

/// Writes this proxy's users back after the key vanished (FLUSHALL, a node that lost its
/// data), unless another proxy did first.
async fn write_back(shared: &Shared, catalog: &Catalog) -> Result<(), String> {
    let applied = shared.acl.shared_version();
    let text = to_text(&shared.acl.users(), catalog);
    let to = (applied + 1).to_string();
    let stored = call(shared, &["EVAL", CAS, "1", ACL_KEY, "0", &to, &text]).await?;
    if scan::integer(&stored) == Some(1) {
        shared.acl.set_shared_version(applied + 1);
        tracing::warn!("the shared ACL users were gone from the cluster (flushed?); written back");
    }
    Ok(())
}

/// Installs `users` (shared version `version`) and closes the connections of users that are
/// gone.
fn install(shared: &Shared, users: Users, version: u64) {
    shared.acl.set_shared_version(version);
    let before: BTreeSet<String> = shared.acl.users().by_name.keys().cloned().collect();
    let gone: Vec<String> = before
        .into_iter()
        .filter(|name| !users.by_name.contains_key(name))
        .collect();
    if *shared.acl.users() != users {
        shared.acl.replace(users);
    }
    for name in gone {
        super::acl_users::disconnect(shared, &name);
    }
    super::acl_users::forget_outdated_node_users(shared);
    super::acl_users::close_revoked_subscribers(shared);
}

/// Puts this proxy's configured users (`[auth]`) into the shared set, so that the
/// configuration wins at every start (as `requirepass` does on a Redis restart).
async fn publish_configured(shared: &Shared, catalog: &Catalog) -> Result<(), Bytes> {
    let configured = super::acl_users::configured_users(&shared.auth, catalog).map_err(|e| {
        tracing::error!(error = %e, "the configured ACL users cannot be read");
        reply::error(&format!("ERR {e}"))
    })?;
    change(shared, |users, _| {
        for (name, user) in &configured.by_name {
            users.by_name.insert(name.clone(), User::clone(user).into());
        }
        Ok(())
    })
    .await
}

/// Follows the shared users until shutdown.
pub async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut published = false;
    loop {
        // Quickly at first: until then an ACL file's users are not there.
        let wait = if published { POLL } else { POLL / 5 };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let Some(snapshot) = catalog_of(&shared) else {
            continue;
        };
        if !published {
            match publish_configured(&shared, snapshot.commands.catalog()).await {
                Ok(()) => published = true,
                Err(error) => {
                    tracing::debug!(error = %String::from_utf8_lossy(&error), "ACL users not shared yet");
                    continue;
                }
            }
        }
        match fetch(&shared).await {
            Ok(Some((version, text))) => {
                if version != shared.acl.shared_version() {
                    if let Some(users) = read(&text, snapshot.commands.catalog()) {
                        install(&shared, users, version);
                        tracing::info!(version, "ACL users changed through another proxy");
                    }
                }
            }
            // Flushed (FLUSHALL, DEL): write this proxy's users back.
            Ok(None) if shared.acl.shared_version() > 0 => {
                if let Err(error) = write_back(&shared, snapshot.commands.catalog()).await {
                    tracing::warn!(%error, "cannot write the ACL users back");
                }
            }
            Ok(None) => {}
            Err(error) => tracing::debug!(%error, "cannot read the shared ACL users"),
        }
    }
}
