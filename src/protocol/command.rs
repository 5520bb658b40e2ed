//! The command table: for every command, where its keys are, whether it writes, and how the
//! proxy routes it.
//!
//! Key positions, arity and flags come from the cluster's own `COMMAND` reply, so the table
//! always matches the servers behind the proxy. Routing policy is what the proxy adds (see
//! [`super::policy`]).

pub use super::policy::{
    admin_mode_refusal, Admin, Join, Local, Policy, PubSubCommand, Refusal, Timeout, TxnCommand,
};

use super::acl_catalog::{categories_of, command_id, Catalog, CatalogEntry};
use super::getkeys;
use super::keyspec::{self, BeginSearch, KeyPositions, KeySpec, LegacyKeys};
use super::policy::override_for;
use bytes::Bytes;
use redis_protocol::resp2::types::{BytesFrame, Resp2Frame};
use std::collections::HashMap;
use std::sync::Arc;

/// One command (or subcommand) as the cluster describes it, plus the proxy's policy.
#[derive(Debug)]
pub struct CommandInfo {
    /// Lowercase name; subcommands as `parent|sub`.
    pub name: String,
    /// Redis arity: exact count if positive, minimum count if negative (name included).
    pub arity: i64,
    /// The command may modify data; never retried after it may have run.
    pub write: bool,
    /// Key positions are given by arguments (the legacy triple is incomplete).
    pub movable_keys: bool,
    /// Redis 7 key specs.
    pub specs: Vec<KeySpec>,
    /// Legacy (first, last, step).
    pub legacy: LegacyKeys,
    /// Subcommands by lowercase name.
    pub subcommands: HashMap<Box<[u8]>, Arc<CommandInfo>>,
    /// What the proxy does with it.
    pub policy: Policy,
    /// Its bit in ACL command bitmaps (see [`super::acl_catalog::command_id`]).
    pub acl_id: Option<u16>,
    /// This command's `slotproxy_commands_total{result="ok"}` series, resolved on first use:
    /// the per-command hot path then skips the label hashing (see `Metrics::observe_command`).
    pub ok_count: std::sync::OnceLock<prometheus::IntCounter>,
}

impl CommandInfo {
    /// Whether `argc` arguments (name included) satisfy the arity.
    pub fn arity_ok(&self, argc: usize) -> bool {
        let argc = argc as i64;
        if self.arity >= 0 {
            argc == self.arity
        } else {
            argc >= -self.arity
        }
    }

    /// The keys of this call with the access ACL checks require of each; where the specs
    /// cannot tell, the legacy key range, each key read and written.
    pub fn acl_keys(&self, args: &[Bytes]) -> keyspec::AclKeys {
        if self
            .specs
            .iter()
            .any(|s| s.incomplete || s.begin == BeginSearch::Unknown)
        {
            if let Some(keys) = getkeys::incomplete_spec_keys(args) {
                return keys;
            }
        }
        keyspec::acl_keys(&self.specs, self.legacy, self.movable_keys, args).unwrap_or_else(|| {
            let all = keyspec::KEY_READ | keyspec::KEY_WRITE;
            keyspec::acl_keys(&[], self.legacy, false, args)
                .unwrap_or_default()
                .into_iter()
                .map(|(p, _)| (p, all))
                .collect()
        })
    }

    /// Where the keys of this call are.
    pub fn key_positions(&self, args: &[Bytes]) -> KeyPositions {
        keyspec::key_positions(&self.specs, self.legacy, self.movable_keys, args)
    }

    /// The kind of service, in one word: routed, split, fan-out, pinned, local or refused (for
    /// `docs/commands.md`).
    pub fn status(&self) -> &'static str {
        let info = self;
        if let Some((status, _)) = client_subcommand(info) {
            return status;
        }
        match &info.policy {
            Policy::Keyed => "routed",
            Policy::Split(_) => "split",
            Policy::AllMasters(_) | Policy::Scan => "fan-out",
            Policy::Transaction(_) | Policy::Blocking(_) | Policy::Wait | Policy::PubSub(_) => {
                "pinned"
            }
            Policy::Local(_) => "local",
            Policy::Admin(Admin::ConfigGet) => "routed",
            Policy::Refused(Refusal::AdminMode) | Policy::Admin(_) => "admin mode",
            Policy::Refused(_) => "refused",
        }
    }

    /// How the proxy serves a command with this policy, in a few words (for
    /// `docs/commands.md`).
    pub fn describe(&self) -> String {
        let info = self;
        if let Some((_, detail)) = client_subcommand(info) {
            return detail.into();
        }
        match &info.policy {
            Policy::Keyed if info.name == "xread" || info.name == "xreadgroup" => {
                "routed by key (with BLOCK: pinned, re-issued after a slot move); streams of several slots: each read on its owner, joined".into()
            }
            Policy::Keyed
                if matches!(
                    info.name.as_str(),
                    "publish" | "pubsub|channels" | "pubsub|numsub" | "pubsub|numpat"
                ) =>
            {
                "the node where the proxy's subscribers are (owner of slot 0)".into()
            }
            Policy::Keyed
                if info.specs.is_empty() && info.legacy.first == 0 && !info.movable_keys =>
            {
                "any master (keyless)".into()
            }
            Policy::Keyed if matches!(info.name.as_str(), "fcall" | "fcall_ro") => {
                "routed by key; keys in several slots: -CROSSSLOT (a function cannot be wrapped)"
                    .into()
            }
            Policy::Keyed if info.name.starts_with("eval") => {
                "routed by key; keys in several slots of one master: atomically there, on several masters: refused".into()
            }
            Policy::Keyed if info.multi_key() => {
                "routed by key; keys in several slots: as one Redis (atomic on one master, per master across masters)".into()
            }
            Policy::Keyed => "routed by key".into(),
            Policy::Split(join) => format!("split by slot, joined ({join:?})"),
            Policy::AllMasters(join) => format!("every master, joined ({join:?})"),
            Policy::Local(_) => "answered by the proxy".into(),
            Policy::Scan => "every master, one cursor".into(),
            Policy::Refused(Refusal::ClusterAdmin) => {
                "refused: topology belongs to the proxy".into()
            }
            Policy::Refused(Refusal::NodeAdmin) => "refused: administers single nodes".into(),
            Policy::Refused(Refusal::MultiDb) => "refused: only database 0 exists".into(),
            Policy::Refused(Refusal::AdminMode) => "refused without `[compat] admin_commands`".into(),
            Policy::Admin(admin) => format!(
                "with `[compat] admin_commands`: {}; refused otherwise",
                match admin {
                    Admin::ConfigGet => return "any master; with `[compat] admin_commands`, every master is asked and a disagreement is counted and logged".into(),
                    Admin::ConfigAllNodes => "every node, masters and replicas; +OK only when all succeed",
                    Admin::Debug => "by key (OBJECT, DIGEST-VALUE, SDSLEN, LISTPACK, QUICKLIST, ZIPLIST), every master (SET-ACTIVE-EXPIRE, SLEEP, JMAP, …); RELOAD, RESTART, CRASH-AND-RECOVER, SEGFAULT, PANIC, ASSERT, OOM, POPULATE, SET-DISABLE-DENY-SCRIPTS, CHANGE-REPL-ID refused",
                    Admin::SlowlogGet => "every master, merged newest first, each entry with its node's address",
                    Admin::SlowlogLen => "every master, summed",
                    Admin::AllMasters => "every master",
                    Admin::PerNode => "every master, one labelled reply per node",
                    Admin::Merged => "every master, one list, each entry with its node's address",
                }
            ),
            Policy::Refused(Refusal::NotYetSupported) => "not supported yet".into(),
            Policy::Transaction(TxnCommand::Multi | TxnCommand::Exec) => {
                "transaction: queued by the proxy, run as one block on the keys' node; keys in several slots: one script per master".into()
            }
            Policy::Transaction(_) => "transaction: pinned connection for WATCH (one per master)".into(),
            Policy::Blocking(_) if info.multi_key() => {
                "pinned connection, re-issued with the remaining timeout after a slot move; keys in several slots: polled".into()
            }
            Policy::Blocking(_) => {
                "pinned connection, re-issued with the remaining timeout after a slot move".into()
            }
            Policy::Wait => "node of the client's last write (polled)".into(),
            Policy::PubSub(PubSubCommand::SSubscribe | PubSubCommand::SUnsubscribe) => {
                "subscribed on the slot's owner (channels of several slots: each on its own), again after a slot move".into()
            }
            Policy::PubSub(_) => "subscribed on one node (the cluster bus carries all)".into(),
        }
    }

    /// The command may name keys of several slots (more than one key spec, a key range, or
    /// keys found from its arguments), so it may need the cross-slot path.
    pub fn multi_key(&self) -> bool {
        self.specs.len() > 1 || self.movable_keys || self.legacy.last != self.legacy.first
    }

    /// Blocking variants of otherwise plain commands (`XREAD … BLOCK ms`).
    pub fn blocks(&self, args: &[Bytes]) -> bool {
        matches!(self.name.as_str(), "xread" | "xreadgroup")
            && args.iter().any(|a| a.eq_ignore_ascii_case(b"block"))
    }
}

/// CLIENT subcommands share one local handler; some of them are refused (see
/// `proxy::client_cmd`).
fn client_subcommand(info: &CommandInfo) -> Option<(&'static str, &'static str)> {
    let sub = info.name.strip_prefix("client|")?;
    Some(match sub {
        "tracking" | "caching" | "getredir" | "trackinginfo" | "no-evict" => (
            "refused",
            "refused: node connections are shared, so per-client node state cannot exist",
        ),
        "pause" | "unpause" => ("refused", "refused: administers single nodes"),
        "list" | "kill" | "info" => ("local", "answered by the proxy, for the proxy's clients"),
        "unblock" => (
            "local",
            "answered by the proxy: ends a proxy client's blocking command",
        ),
        _ => ("local", "answered by the proxy"),
    })
}

/// Why a `COMMAND` reply makes no command table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandTableError {
    /// Not RESP.
    #[error("cannot decode COMMAND reply: {0}")]
    Undecodable(String),
    /// Cut short.
    #[error("incomplete COMMAND reply")]
    Incomplete,
    /// Something other than a list of commands.
    #[error("COMMAND replied {0}")]
    NotAList(String),
    /// A list without commands.
    #[error("COMMAND returned no commands")]
    Empty,
}

/// The result of looking a call up.
pub enum Lookup<'a> {
    /// A known command whose arity matches.
    Found(&'a Arc<CommandInfo>),
    /// Not a command of this cluster.
    Unknown,
    /// A container command called with a subcommand it does not have.
    UnknownSubcommand(&'a CommandInfo),
    /// Arity mismatch.
    WrongArity(&'a CommandInfo),
}

/// All commands of the cluster, immutable once built.
#[derive(Debug, Default)]
pub struct CommandTable {
    commands: HashMap<Box<[u8]>, Arc<CommandInfo>>,
    /// The same commands as ACL rules see them, in reply order.
    catalog: Catalog,
}

impl CommandTable {
    /// Every command and subcommand, sorted by name (for the compatibility document).
    pub fn all(&self) -> Vec<Arc<CommandInfo>> {
        let mut all: Vec<Arc<CommandInfo>> = Vec::new();
        for info in self.commands.values() {
            all.push(info.clone());
            all.extend(info.subcommands.values().cloned());
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Builds the table from a raw `COMMAND` reply.
    pub fn from_command_reply(raw: &Bytes) -> Result<CommandTable, CommandTableError> {
        let (frame, _) = redis_protocol::resp2::decode::decode_bytes(raw)
            .map_err(|e| CommandTableError::Undecodable(format!("{e:?}")))?
            .ok_or(CommandTableError::Incomplete)?;
        let BytesFrame::Array(entries) = frame else {
            return Err(CommandTableError::NotAList(format!("{:?}", frame.as_str())));
        };
        let mut commands = HashMap::new();
        let mut catalog = Catalog::default();
        for entry in &entries {
            if let Some(info) = parse_entry(entry, None) {
                let parent = catalog.add_command(catalog_entry(entry, &info));
                if let BytesFrame::Array(fields) = entry {
                    if let Some(BytesFrame::Array(subs)) = fields.get(9) {
                        for sub in subs {
                            if let Some(name) = entry_name(sub) {
                                let short = name.rsplit('|').next().unwrap_or(&name);
                                if let Some(sub_info) = info.subcommands.get(short.as_bytes()) {
                                    catalog.add_subcommand(parent, catalog_entry(sub, sub_info));
                                }
                            }
                        }
                    }
                }
                commands.insert(info.name.as_bytes().into(), Arc::new(info));
            }
        }
        if commands.is_empty() {
            return Err(CommandTableError::Empty);
        }
        Ok(CommandTable { commands, catalog })
    }

    /// The commands as ACL rules see them.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Number of top-level commands.
    pub fn len(&self) -> usize {
        self.commands.len()
    }

    /// True before a table was loaded.
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// Finds the command (and subcommand) for a call and checks its arity.
    pub fn lookup(&self, args: &[Bytes]) -> Lookup<'_> {
        let Some(name) = args.first() else {
            return Lookup::Unknown;
        };
        let Some(info) = lowercase_lookup(&self.commands, name) else {
            return Lookup::Unknown;
        };
        if !info.subcommands.is_empty() && args.len() >= 2 {
            return match lowercase_lookup(&info.subcommands, &args[1]) {
                Some(sub) if sub.arity_ok(args.len()) => Lookup::Found(sub),
                Some(sub) => Lookup::WrongArity(sub),
                None => Lookup::UnknownSubcommand(info),
            };
        }
        if info.arity_ok(args.len()) {
            Lookup::Found(info)
        } else {
            Lookup::WrongArity(info)
        }
    }
}

fn lowercase_lookup<'a>(
    map: &'a HashMap<Box<[u8]>, Arc<CommandInfo>>,
    name: &[u8],
) -> Option<&'a Arc<CommandInfo>> {
    let mut buf = [0u8; 64];
    let lower = buf.get_mut(..name.len())?;
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    map.get(&*lower)
}

fn entry_name(entry: &BytesFrame) -> Option<String> {
    match entry {
        BytesFrame::Array(fields) => Some(fields.first()?.as_str()?.to_lowercase()),
        _ => None,
    }
}

/// The ACL view of one `COMMAND` entry: its categories (field 6) and flags.
fn catalog_entry(entry: &BytesFrame, info: &CommandInfo) -> CatalogEntry {
    let strings = |i: usize| -> Vec<String> {
        match entry {
            BytesFrame::Array(fields) => match fields.get(i) {
                Some(BytesFrame::Array(items)) => items
                    .iter()
                    .filter_map(|f| f.as_str())
                    .map(str::to_lowercase)
                    .collect(),
                _ => Vec::new(),
            },
            _ => Vec::new(),
        }
    };
    let flags = strings(2);
    CatalogEntry {
        name: info.name.clone(),
        id: info.acl_id,
        categories: categories_of(strings(6).iter().map(String::as_str)),
        parent: None,
        subcommands: Vec::new(),
        no_auth: flags.iter().any(|f| f == "no_auth"),
        module: flags.iter().any(|f| f == "module"),
    }
}

/// Reads one `COMMAND` entry: name, arity, flags, first, last, step, acl, tips, specs, subs.
fn parse_entry(entry: &BytesFrame, parent: Option<(&str, Policy)>) -> Option<CommandInfo> {
    let BytesFrame::Array(fields) = entry else {
        return None;
    };
    let name = fields.first()?.as_str()?.to_lowercase();
    let int = |i: usize| match fields.get(i) {
        Some(BytesFrame::Integer(n)) => *n,
        _ => 0,
    };
    let flags: Vec<String> = match fields.get(2) {
        Some(BytesFrame::Array(f)) => f
            .iter()
            .filter_map(|f| f.as_str())
            .map(str::to_lowercase)
            .collect(),
        _ => Vec::new(),
    };
    let specs = fields.get(8).map(keyspec::parse_specs).unwrap_or_default();
    let policy = override_for(&name)
        .or(parent.map(|(_, p)| p))
        .unwrap_or(Policy::Keyed);
    let mut info = CommandInfo {
        arity: int(1),
        write: flags.iter().any(|f| f == "write"),
        movable_keys: flags.iter().any(|f| f == "movablekeys"),
        specs,
        legacy: LegacyKeys {
            first: int(3),
            last: int(4),
            step: int(5),
        },
        subcommands: HashMap::new(),
        policy,
        acl_id: command_id(&name),
        name,
        ok_count: Default::default(),
    };
    if let Some(BytesFrame::Array(subs)) = fields.get(9) {
        for sub in subs {
            if let Some(sub) = parse_entry(sub, Some((&info.name, info.policy))) {
                let short = sub.name.rsplit('|').next().unwrap_or(&sub.name).to_string();
                info.subcommands
                    .insert(short.as_bytes().into(), Arc::new(sub));
            }
        }
    }
    Some(info)
}

/// Reads a `COMMAND GETKEYS` reply into the keys it lists.
pub fn parse_getkeys_reply(raw: &Bytes) -> Option<Vec<Bytes>> {
    let elements = super::scan::array_elements(raw)?;
    elements
        .iter()
        .map(|e| super::scan::string(e).map(Bytes::copy_from_slice))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::request::words as args;

    fn entry(
        name: &str,
        arity: i64,
        flags: &[&str],
        first: i64,
        last: i64,
        step: i64,
    ) -> BytesFrame {
        BytesFrame::Array(vec![
            BytesFrame::BulkString(Bytes::copy_from_slice(name.as_bytes())),
            BytesFrame::Integer(arity),
            BytesFrame::Array(
                flags
                    .iter()
                    .map(|f| BytesFrame::SimpleString(Bytes::copy_from_slice(f.as_bytes())))
                    .collect(),
            ),
            BytesFrame::Integer(first),
            BytesFrame::Integer(last),
            BytesFrame::Integer(step),
        ])
    }

    fn table() -> CommandTable {
        let mut config = match entry("config", -2, &[], 0, 0, 0) {
            BytesFrame::Array(v) => v,
            _ => unreachable!(),
        };
        config.extend([
            BytesFrame::Array(vec![]),
            BytesFrame::Array(vec![]),
            BytesFrame::Array(vec![]),
            BytesFrame::Array(vec![
                entry("config|get", -3, &[], 0, 0, 0),
                entry("config|set", -4, &[], 0, 0, 0),
            ]),
        ]);
        let reply = BytesFrame::Array(vec![
            entry("get", 2, &["readonly"], 1, 1, 1),
            entry("mset", -3, &["write"], 1, -1, 2),
            BytesFrame::Array(config),
        ]);
        CommandTable::from_command_reply(&crate::protocol::reply::encode(&reply)).unwrap()
    }

    #[test]
    fn lookup_case_insensitive_with_arity() {
        let t = table();
        assert!(matches!(t.lookup(&args("GeT k")), Lookup::Found(i) if i.name == "get"));
        assert!(matches!(t.lookup(&args("GET")), Lookup::WrongArity(_)));
        assert!(matches!(t.lookup(&args("NOPE x")), Lookup::Unknown));
        match t.lookup(&args("MSET a 1 b 2")) {
            Lookup::Found(i) => {
                assert!(i.write);
                assert_eq!(i.policy, Policy::Split(Join::AllOk));
                assert_eq!(
                    i.key_positions(&args("MSET a 1 b 2")),
                    KeyPositions::Known(vec![1, 3])
                );
            }
            _ => panic!("mset"),
        }
    }

    #[test]
    fn subcommand_policies() {
        let t = table();
        assert!(
            matches!(t.lookup(&args("CONFIG GET x")), Lookup::Found(i) if i.policy == Policy::Admin(Admin::ConfigGet))
        );
        assert!(matches!(
            t.lookup(&args("config set a b")),
            Lookup::Found(i) if i.policy == Policy::Admin(Admin::ConfigAllNodes)
        ));
        assert!(matches!(
            t.lookup(&args("CONFIG nope")),
            Lookup::UnknownSubcommand(_)
        ));
    }
}
