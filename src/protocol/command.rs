//! The command table: for every command, where its keys are, whether it writes, and how the
//! proxy routes it.
//!
//! Key positions, arity and flags come from the cluster's own `COMMAND` reply, so the table
//! always matches the servers behind the proxy. Routing policy is what the proxy adds: the
//! overrides in [`policy_override`] name every command that is not simply "send to the node
//! owning its keys".

use super::keyspec::{self, KeyPositions, KeySpec, LegacyKeys};
use bytes::Bytes;
use redis_protocol::resp2::types::{BytesFrame, Resp2Frame};
use std::collections::HashMap;
use std::sync::Arc;

/// How replies of a fanned-out or split command are joined into one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    /// MGET: one element per key, in the client's key order.
    ArrayByKey,
    /// MSET, FLUSHALL: `+OK` when every part says OK, else the first error.
    AllOk,
    /// DEL, EXISTS, DBSIZE: the sum of integer replies.
    SumIntegers,
    /// KEYS: the union of array replies.
    Concat,
    /// RANDOMKEY, SCRIPT LOAD: the first non-nil reply.
    FirstNonNil,
    /// SCRIPT KILL: `+OK` when any node says OK (the one running the script), else the first
    /// error.
    AnyOk,
    /// SCRIPT EXISTS: per position, 1 only when every node answers 1.
    AllIntegersAnd,
    /// PUBSUB CHANNELS: the union of array replies, each element once.
    Union,
    /// PUBSUB NUMSUB: `[name, count, …]` pairs, counts summed per name.
    SumPairs,
    /// LASTSAVE: the smallest integer (every node has saved since then).
    MinInteger,
}

/// Commands the proxy answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// PING [message]
    Ping,
    /// ECHO message
    Echo,
    /// SELECT db (only 0 exists in a cluster)
    Select,
    /// QUIT
    Quit,
    /// HELLO [protover …]
    Hello,
    /// RESET
    Reset,
    /// CLIENT subcommands that concern this connection
    Client,
    /// INFO [section]
    Info,
    /// AUTH (no proxy password exists yet)
    Auth,
    /// CLUSTER KEYSLOT key
    KeySlot,
    /// MONITOR: the proxy's own feed of its clients' commands
    Monitor,
}

/// What the proxy does with a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Send to the master owning the keys' slot (all keys must share it); keyless: any master.
    Keyed,
    /// Split the keys by slot, send the parts, join the replies.
    Split(Join),
    /// Send to every master, join the replies.
    AllMasters(Join),
    /// Answer in the proxy.
    Local(Local),
    /// `SCAN`: every master in turn, with one cursor.
    Scan,
    /// Refuse with this reason.
    Refused(Refusal),
    /// MULTI/EXEC/DISCARD/WATCH/UNWATCH: queued by the proxy, run as one block.
    Transaction(TxnCommand),
    /// A command that blocks until data arrives: run on the client's own connection.
    Blocking(Timeout),
    /// WAIT: asked of the node the client last wrote to.
    Wait,
    /// The (un)subscribe commands: kept by the proxy, served by subscriber connections.
    PubSub(PubSubCommand),
    /// Node administration, allowed with `[compat] admin_commands`.
    Admin(Admin),
}

/// The commands that change a client's subscriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubSubCommand {
    /// SUBSCRIBE channel …
    Subscribe,
    /// PSUBSCRIBE pattern …
    PSubscribe,
    /// SSUBSCRIBE shardchannel …
    SSubscribe,
    /// UNSUBSCRIBE [channel …]
    Unsubscribe,
    /// PUNSUBSCRIBE [pattern …]
    PUnsubscribe,
    /// SUNSUBSCRIBE [shardchannel …]
    SUnsubscribe,
}

/// The transaction commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnCommand {
    /// MULTI
    Multi,
    /// EXEC
    Exec,
    /// DISCARD
    Discard,
    /// WATCH key …
    Watch,
    /// UNWATCH
    Unwatch,
}

/// Where a blocking command carries its timeout, so that a command re-issued after a slot
/// move waits only for what is left of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// The last argument, in seconds (BLPOP, BLMOVE, BZPOPMIN …).
    LastSeconds,
    /// The first argument, in seconds (BLMPOP, BZMPOP).
    FirstSeconds,
    /// The argument after `BLOCK`, in milliseconds (XREAD, XREADGROUP).
    BlockMillis,
}

/// Why a command is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// It changes cluster topology or node state; only the proxy may do that.
    ClusterAdmin,
    /// Needs a connection pinned to one node (transactions, blocking, Pub/Sub): not yet built.
    NotYetSupported,
    /// Node administration that is never allowed through the proxy (ACL, MODULE, SAVE …).
    NodeAdmin,
    /// Needs several databases; a cluster has only db 0.
    MultiDb,
    /// Node administration that `[compat] admin_commands` allows; refused without it.
    AdminMode,
}

/// Node administration the proxy runs for trusted clients (`[compat] admin_commands`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admin {
    /// CONFIG GET: any master; with admin mode, every master is asked and compared.
    ConfigGet,
    /// CONFIG SET | RESETSTAT | REWRITE: every node, masters and replicas.
    ConfigAllNodes,
    /// DEBUG: by key, on every master, or refused, by subcommand.
    Debug,
    /// SLOWLOG GET [n]: every master's entries, newest first, with the node's address.
    SlowlogGet,
    /// SLOWLOG LEN: the sum.
    SlowlogLen,
    /// SLOWLOG RESET, LATENCY RESET, MEMORY PURGE: every master.
    AllMasters,
    /// LATENCY DOCTOR | GRAPH | HISTOGRAM, MEMORY STATS | DOCTOR | MALLOC-STATS: each
    /// master's reply, labelled with its address.
    PerNode,
    /// LATENCY LATEST | HISTORY: every master's entries in one list, each with the node's
    /// address appended.
    Merged,
}

/// The error for an admin command while `[compat] admin_commands` is off.
pub fn admin_mode_refusal(upper: &str) -> String {
    format!(
        "ERR command '{upper}' is not allowed through slotproxy: it administers the nodes; set [compat] admin_commands = true to let trusted clients run it"
    )
}

impl Refusal {
    /// The error text for command `name`.
    pub fn message(self, name: &str) -> String {
        let upper = name.replace('|', " ").to_uppercase();
        match self {
            Refusal::ClusterAdmin => format!(
                "ERR command '{upper}' is not allowed through slotproxy: cluster topology is managed by the proxy (use its admin API)"
            ),
            Refusal::NotYetSupported => {
                format!("ERR command '{upper}' is not supported by this version of slotproxy")
            }
            Refusal::NodeAdmin => format!(
                "ERR command '{upper}' is not allowed through slotproxy: it administers single nodes"
            ),
            Refusal::AdminMode => admin_mode_refusal(&upper),
            Refusal::MultiDb => {
                format!("ERR command '{upper}' is not allowed in cluster mode: only database 0 exists")
            }
        }
    }
}

impl Policy {
    /// The kind of service, in one word: routed, split, fan-out, pinned, local or refused (for
    /// `docs/commands.md`).
    pub fn status(&self, info: &CommandInfo) -> &'static str {
        if let Some((status, _)) = client_subcommand(info) {
            return status;
        }
        match self {
            Policy::Keyed => "routed",
            Policy::Split(_) => "split",
            Policy::AllMasters(_) | Policy::Scan => "fan-out",
            Policy::Transaction(_) | Policy::Blocking(_) | Policy::Wait | Policy::PubSub(_) => {
                "pinned"
            }
            Policy::Local(_) => "local",
            Policy::Admin(self::Admin::ConfigGet) => "routed",
            Policy::Refused(Refusal::AdminMode) | Policy::Admin(_) => "admin mode",
            Policy::Refused(_) => "refused",
        }
    }

    /// How the proxy serves a command with this policy, in a few words (for
    /// `docs/commands.md`).
    pub fn describe(&self, info: &CommandInfo) -> String {
        if let Some((_, detail)) = client_subcommand(info) {
            return detail.into();
        }
        match self {
            Policy::Keyed if info.name == "xread" || info.name == "xreadgroup" => {
                "routed by key (with BLOCK: pinned, re-issued after a slot move)".into()
            }
            Policy::Keyed if info.name == "publish" => {
                "the node where the proxy's subscribers are (owner of slot 0)".into()
            }
            Policy::Keyed
                if info.specs.is_empty() && info.legacy.first == 0 && !info.movable_keys =>
            {
                "any master (keyless)".into()
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
                "transaction: queued by the proxy, run as one block on the keys' node".into()
            }
            Policy::Transaction(_) => "transaction: pinned connection for WATCH".into(),
            Policy::Blocking(_) => {
                "pinned connection, re-issued with the remaining timeout after a slot move".into()
            }
            Policy::Wait => "node of the client's last write (polled)".into(),
            Policy::PubSub(PubSubCommand::SSubscribe | PubSubCommand::SUnsubscribe) => {
                "subscribed on the slot's owner, again after a slot move".into()
            }
            Policy::PubSub(_) => "subscribed on one node (the cluster bus carries all)".into(),
        }
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

/// Policy overrides by command name (`parent|sub` for subcommands).
fn policy_override(name: &str) -> Option<Policy> {
    use Join::*;
    use Policy::*;
    Some(match name {
        "ping" => Local(self::Local::Ping),
        "echo" => Local(self::Local::Echo),
        "select" => Local(self::Local::Select),
        "quit" => Local(self::Local::Quit),
        "hello" => Local(self::Local::Hello),
        "reset" => Local(self::Local::Reset),
        "client" => Local(self::Local::Client),
        "info" => Local(self::Local::Info),
        "auth" => Local(self::Local::Auth),
        "cluster|keyslot" => Local(self::Local::KeySlot),
        "mget" => Split(ArrayByKey),
        "mset" => Split(AllOk),
        "del" | "unlink" | "exists" | "touch" => Split(SumIntegers),
        "dbsize" => AllMasters(SumIntegers),
        "flushall" | "flushdb" => AllMasters(AllOk),
        "keys" => AllMasters(Concat),
        "randomkey" => AllMasters(FirstNonNil),
        "command" | "acl|whoami" | "acl|cat" | "config|help" | "slowlog|help" | "latency|help"
        | "memory|help" => Keyed,
        "config|get" => Admin(self::Admin::ConfigGet),
        "scan" => Scan,
        // Scripts and functions live on every master, so any node can run them.
        "script|load" | "function|load" => AllMasters(FirstNonNil),
        "script|flush" | "function|flush" | "function|delete" | "function|restore" => {
            AllMasters(AllOk)
        }
        "script|exists" => AllMasters(AllIntegersAnd),
        "script|kill" | "function|kill" => AllMasters(AnyOk),
        "script|debug" => Refused(Refusal::NotYetSupported),
        // Each node knows only the subscriptions made on it.
        "pubsub|channels" | "pubsub|shardchannels" => AllMasters(Union),
        "pubsub|numsub" | "pubsub|shardnumsub" => AllMasters(SumPairs),
        "pubsub|numpat" => AllMasters(SumIntegers),
        "lastsave" => AllMasters(MinInteger),
        "cluster" | "migrate" | "restore-asking" | "asking" | "readonly" | "readwrite"
        | "replicaof" | "slaveof" | "failover" | "shutdown" | "sync" | "psync" | "replconf" => {
            Refused(Refusal::ClusterAdmin)
        }
        "multi" => Transaction(TxnCommand::Multi),
        "exec" => Transaction(TxnCommand::Exec),
        "discard" => Transaction(TxnCommand::Discard),
        "watch" => Transaction(TxnCommand::Watch),
        "unwatch" => Transaction(TxnCommand::Unwatch),
        "blpop" | "brpop" | "brpoplpush" | "blmove" | "bzpopmin" | "bzpopmax" => {
            Blocking(Timeout::LastSeconds)
        }
        "blmpop" | "bzmpop" => Blocking(Timeout::FirstSeconds),
        "wait" => Wait,
        "subscribe" => PubSub(PubSubCommand::Subscribe),
        "psubscribe" => PubSub(PubSubCommand::PSubscribe),
        "ssubscribe" => PubSub(PubSubCommand::SSubscribe),
        "unsubscribe" => PubSub(PubSubCommand::Unsubscribe),
        "punsubscribe" => PubSub(PubSubCommand::PUnsubscribe),
        "sunsubscribe" => PubSub(PubSubCommand::SUnsubscribe),
        "monitor" => Local(self::Local::Monitor),
        "waitaof" => Refused(Refusal::NotYetSupported),
        "config|set" | "config|resetstat" | "config|rewrite" => Admin(self::Admin::ConfigAllNodes),
        "debug" => Admin(self::Admin::Debug),
        "slowlog|get" => Admin(self::Admin::SlowlogGet),
        "slowlog|len" => Admin(self::Admin::SlowlogLen),
        "slowlog|reset" | "latency|reset" | "memory|purge" => Admin(self::Admin::AllMasters),
        "latency|latest" | "latency|history" => Admin(self::Admin::Merged),
        "latency|doctor"
        | "latency|graph"
        | "latency|histogram"
        | "memory|stats"
        | "memory|doctor"
        | "memory|malloc-stats" => Admin(self::Admin::PerNode),
        "slowlog" | "latency" | "config" => Refused(Refusal::AdminMode),
        "acl" | "module" | "bgsave" | "save" | "bgrewriteaof" => Refused(Refusal::NodeAdmin),
        "swapdb" | "move" => Refused(Refusal::MultiDb),
        _ => return None,
    })
}

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

    /// Where the keys of this call are.
    pub fn key_positions(&self, args: &[Bytes]) -> KeyPositions {
        keyspec::key_positions(&self.specs, self.legacy, self.movable_keys, args)
    }

    /// Blocking variants of otherwise plain commands (`XREAD … BLOCK ms`).
    pub fn blocks(&self, args: &[Bytes]) -> bool {
        matches!(self.name.as_str(), "xread" | "xreadgroup")
            && args.iter().any(|a| a.eq_ignore_ascii_case(b"block"))
    }
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
    pub fn from_command_reply(raw: &Bytes) -> Result<CommandTable, String> {
        let (frame, _) = redis_protocol::resp2::decode::decode_bytes(raw)
            .map_err(|e| format!("cannot decode COMMAND reply: {e:?}"))?
            .ok_or("incomplete COMMAND reply")?;
        let BytesFrame::Array(entries) = frame else {
            return Err(format!("COMMAND replied {:?}", frame.as_str()));
        };
        let mut commands = HashMap::new();
        for entry in &entries {
            if let Some(info) = parse_entry(entry, None) {
                commands.insert(info.name.as_bytes().into(), Arc::new(info));
            }
        }
        if commands.is_empty() {
            return Err("COMMAND returned no commands".into());
        }
        Ok(CommandTable { commands })
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
    let policy = policy_override(&name)
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

    fn args(s: &str) -> Vec<Bytes> {
        s.split(' ')
            .map(|p| Bytes::copy_from_slice(p.as_bytes()))
            .collect()
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
