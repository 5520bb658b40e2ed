//! What the proxy does with each command: the routing policy it adds to the cluster's own
//! `COMMAND` table. [`override_for`] names every command that is not simply "send to the
//! node owning its keys".

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
    /// ACL: the proxy's own users
    Acl,
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

/// Policy overrides by command name (`parent|sub` for subcommands).
pub fn override_for(name: &str) -> Option<Policy> {
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
        "acl" => Local(self::Local::Acl),
        "command" | "config|help" | "slowlog|help" | "latency|help" | "memory|help" => Keyed,
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
        // Each node knows only the subscriptions made on it. Channels and patterns meet on
        // one node (the one PUBLISH goes to; keyspace notifications are mirrored on the other
        // masters), shard channels live on their slot's owner.
        "pubsub|channels" | "pubsub|numsub" | "pubsub|numpat" => Keyed,
        "pubsub|shardchannels" => AllMasters(Union),
        "pubsub|shardnumsub" => AllMasters(SumPairs),
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
        "module" => Refused(Refusal::NodeAdmin),
        // Each master persists its own data set.
        "bgsave" | "save" | "bgrewriteaof" => Admin(self::Admin::AllMasters),
        "swapdb" | "move" => Refused(Refusal::MultiDb),
        _ => return None,
    })
}
