//! The command table as ACL rules see it: every command and subcommand with a stable id, its
//! ACL categories and flags, in the order the cluster's `COMMAND` reply lists them.
//!
//! Rules such as `+@string` or `-config|set` are resolved against this catalog, so the
//! categories always match the servers behind the proxy; nothing is hand-kept. Ids are given
//! by name for the life of the process (as Redis' `ACLGetCommandID` does), so a user's
//! command bitmap stays valid when the table is rebuilt from another node's reply.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::OnceLock;

/// Redis 7.0's ACL categories, in Redis' order (which `ACL CAT` and `ACL GETUSER` follow).
pub const CATEGORIES: [&str; 21] = [
    "keyspace",
    "read",
    "write",
    "set",
    "sortedset",
    "list",
    "hash",
    "string",
    "bitmap",
    "hyperloglog",
    "geo",
    "stream",
    "pubsub",
    "admin",
    "fast",
    "slow",
    "blocking",
    "dangerous",
    "connection",
    "transaction",
    "scripting",
];

/// Bits in a command bitmap; the last one is never a command's id: `+@all` sets it to mean
/// "commands added later too" (Redis' trick, kept so `ACL GETUSER` reads the same).
pub const COMMAND_BITS: usize = 1024;
/// The bit that only `+@all` / `allcommands` sets.
pub const FUTURE_COMMANDS_BIT: u16 = (COMMAND_BITS - 1) as u16;

/// The bit of category `name` (case-insensitive) in [`CatalogEntry::categories`].
pub fn category_bit(name: &str) -> Option<u32> {
    CATEGORIES
        .iter()
        .position(|c| c.eq_ignore_ascii_case(name))
        .map(|i| 1 << i)
}

/// Reads a `COMMAND` entry's category list (`@read`, `@string` …) into category bits.
pub fn categories_of<'a>(names: impl Iterator<Item = &'a str>) -> u32 {
    names
        .filter_map(|n| category_bit(n.trim_start_matches('@')))
        .fold(0, |acc, bit| acc | bit)
}

/// The process-wide id of a command's full name (`get`, `config|set`); `None` once the
/// bitmap is full (such a command is only reachable through `+@all`).
pub fn command_id(full_name: &str) -> Option<u16> {
    static IDS: OnceLock<Mutex<HashMap<String, u16>>> = OnceLock::new();
    let mut ids = IDS.get_or_init(Default::default).lock();
    if let Some(&id) = ids.get(full_name) {
        return Some(id);
    }
    let next = ids.len();
    if next >= usize::from(FUTURE_COMMANDS_BIT) {
        return None;
    }
    let id = next as u16;
    ids.insert(full_name.to_string(), id);
    Some(id)
}

/// One command or subcommand.
#[derive(Debug, Clone)]
pub struct CatalogEntry {
    /// Full lowercase name (`config|set`).
    pub name: String,
    /// Its bit in command bitmaps (`None`: beyond the bitmap, see [`command_id`]).
    pub id: Option<u16>,
    /// Category bits ([`category_bit`]).
    pub categories: u32,
    /// Index of the container command, for a subcommand.
    pub parent: Option<usize>,
    /// Indexes of its subcommands, in reply order.
    pub subcommands: Vec<usize>,
    /// Flagged `no_auth` (AUTH, HELLO …): every user may run it.
    pub no_auth: bool,
    /// A module's command: categories never select it (as in Redis).
    pub module: bool,
}

/// Every command and subcommand of the cluster, for ACL rules.
#[derive(Debug, Default)]
pub struct Catalog {
    /// Top-level commands first in reply order, each followed later by nothing: subcommands
    /// are listed after all top-level commands and reached through `subcommands`.
    entries: Vec<CatalogEntry>,
    /// Top-level entries in reply order.
    top: Vec<usize>,
    by_name: HashMap<String, usize>,
}

impl Catalog {
    /// Adds a top-level command; returns its index for [`Catalog::add_subcommand`].
    pub fn add_command(&mut self, entry: CatalogEntry) -> usize {
        let index = self.push(entry);
        self.top.push(index);
        index
    }

    /// Adds a subcommand of `parent`.
    pub fn add_subcommand(&mut self, parent: usize, mut entry: CatalogEntry) -> usize {
        entry.parent = Some(parent);
        let index = self.push(entry);
        self.entries[parent].subcommands.push(index);
        index
    }

    fn push(&mut self, entry: CatalogEntry) -> usize {
        let index = self.entries.len();
        self.by_name.insert(entry.name.clone(), index);
        self.entries.push(entry);
        index
    }

    /// The entry named `name` (`get`, `CONFIG|SET`; case-insensitive).
    pub fn find(&self, name: &str) -> Option<&CatalogEntry> {
        self.by_name
            .get(&name.to_ascii_lowercase())
            .map(|&i| &self.entries[i])
    }

    /// The entry named exactly `name` (already lowercase, as the command table has it): the
    /// per-command lookup, without the copy [`Catalog::find`] makes.
    pub fn find_exact(&self, name: &str) -> Option<&CatalogEntry> {
        self.by_name.get(name).map(|&i| &self.entries[i])
    }

    /// The entry at `index`.
    pub fn entry(&self, index: usize) -> &CatalogEntry {
        &self.entries[index]
    }

    /// Subcommands of `entry`.
    pub fn subcommands<'a>(
        &'a self,
        entry: &'a CatalogEntry,
    ) -> impl Iterator<Item = &'a CatalogEntry> + 'a {
        entry.subcommands.iter().map(|&i| &self.entries[i])
    }

    /// Top-level commands in the order the cluster listed them.
    pub fn commands(&self) -> impl Iterator<Item = &CatalogEntry> + '_ {
        self.top.iter().map(|&i| &self.entries[i])
    }

    /// Every command, each followed by its subcommands (depth first), in reply order: the
    /// order Redis walks its command table in.
    pub fn walk(&self) -> Vec<&CatalogEntry> {
        let mut out = Vec::with_capacity(self.entries.len());
        for command in self.commands() {
            out.push(command);
            out.extend(self.subcommands(command));
        }
        out
    }

    /// True before any command was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_by_name_and_ids_by_name() {
        assert_eq!(category_bit("keyspace"), Some(1));
        assert_eq!(category_bit("STRING"), Some(1 << 7));
        assert_eq!(category_bit("nope"), None);
        assert_eq!(
            categories_of(["@read", "@fast", "@bogus"].into_iter()),
            2 | 1 << 14
        );
        let a = command_id("acl-catalog-test-a");
        assert_eq!(
            command_id("acl-catalog-test-a"),
            a,
            "the same name keeps its id"
        );
        assert_ne!(command_id("acl-catalog-test-b"), a);
    }

    #[test]
    fn walk_lists_subcommands_after_their_command() {
        let entry = |name: &str| CatalogEntry {
            name: name.into(),
            id: command_id(name),
            categories: 0,
            parent: None,
            subcommands: Vec::new(),
            no_auth: false,
            module: false,
        };
        let mut catalog = Catalog::default();
        let config = catalog.add_command(entry("config"));
        catalog.add_command(entry("get"));
        catalog.add_subcommand(config, entry("config|get"));
        let names: Vec<&str> = catalog.walk().iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["config", "config|get", "get"]);
        assert_eq!(
            catalog.find("CONFIG|GET").map(|e| e.parent),
            Some(Some(config))
        );
    }
}
