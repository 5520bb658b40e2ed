//! The sections of the configuration file, one struct per TOML table, with their defaults.

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// The hard ceiling Redis itself places on one bulk string (`proto-max-bulk-len`).
pub const MAX_BULK_BYTES_CEILING: usize = 512 * 1024 * 1024;
/// The ceiling for one inline command or RESP header line.
pub const MAX_INLINE_BYTES_CEILING: usize = 64 * 1024;

/// `[compat]`: what the proxy lets clients do beyond what is safe for every client.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompatSection {
    /// What a command (or transaction) does whose keys live on several masters: `split`
    /// runs each master's part atomically there (not isolated across masters), `refuse`
    /// answers `-CROSSSLOT` as Redis Cluster does. Keys in several slots of one master are
    /// served atomically either way.
    pub cross_node: CrossNode,
    /// Largest serialized key (`DUMP`) a cross-slot command copies; a bigger one gets an error
    /// instead of blocking its node while it is copied.
    pub max_copy_bytes: usize,
    /// Let clients run node administration through the proxy: `CONFIG SET|RESETSTAT|REWRITE`
    /// on every node, `DEBUG` (by key, or on every master; the crashing subcommands stay
    /// refused), `SLOWLOG`, `LATENCY`, `MEMORY STATS|DOCTOR|…` and per-node `INFO`
    /// sections. Off by default: any client could then reconfigure every node.
    pub admin_commands: bool,
}

impl Default for CompatSection {
    fn default() -> Self {
        CompatSection {
            cross_node: CrossNode::Split,
            max_copy_bytes: 64 * 1024 * 1024,
            admin_commands: false,
        }
    }
}

/// `compat.cross_node`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CrossNode {
    /// Each master's part atomic there, assembled in the client's order.
    Split,
    /// `-CROSSSLOT`, as Redis Cluster answers.
    Refuse,
}

/// `[proxy]`: what clients connect to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySection {
    /// Address for client connections (RESP).
    pub listen: String,
    /// Connections beyond this are answered `-ERR max number of clients reached` and closed.
    pub max_clients: usize,
    /// Commands one client may have in flight before the proxy stops reading from it.
    pub max_pipeline: usize,
    /// Longest accepted bulk string argument, in bytes (at most 512 MiB).
    pub max_bulk_bytes: usize,
    /// Longest inline command or RESP header line, in bytes (at most 64 KiB).
    pub max_inline_bytes: usize,
    /// Most arguments in one command.
    pub max_args: usize,
    /// Largest whole request (all arguments together), in bytes.
    pub max_request_bytes: usize,
    /// Tokio worker threads; 0 means one per CPU core.
    pub worker_threads: usize,
    /// How long shutdown waits for in-flight replies before exiting anyway.
    pub shutdown_grace_ms: u64,
    /// Pub/Sub messages waiting for one slow subscriber, in bytes, before the proxy
    /// disconnects it (Redis' `client-output-buffer-limit pubsub` hard limit).
    pub pubsub_output_limit_bytes: usize,
    /// Reply bytes held for one client (received from the nodes or waiting to be written)
    /// before the proxy disconnects it (Redis' `client-output-buffer-limit normal` as a hard
    /// limit); 0: no limit.
    pub client_output_limit_bytes: usize,
    /// Close a client that sent nothing for this many seconds (Redis' `timeout`); 0: never.
    /// Subscribers, MONITOR, blocked commands and clients with replies pending are exempt.
    pub idle_timeout_secs: u64,
}

impl Default for ProxySection {
    fn default() -> Self {
        ProxySection {
            listen: "127.0.0.1:6380".into(),
            max_clients: 10_000,
            max_pipeline: 1024,
            max_bulk_bytes: MAX_BULK_BYTES_CEILING,
            max_inline_bytes: MAX_INLINE_BYTES_CEILING,
            max_args: 1024 * 1024,
            max_request_bytes: MAX_BULK_BYTES_CEILING,
            worker_threads: 0,
            shutdown_grace_ms: 5000,
            pubsub_output_limit_bytes: 32 * 1024 * 1024,
            client_output_limit_bytes: 1024 * 1024 * 1024,
            idle_timeout_secs: 0,
        }
    }
}

/// `[tls]`: a second client listener that speaks TLS (like Redis' `tls-port`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// Address for TLS client connections; empty: no TLS listener.
    pub listen: String,
    /// PEM certificate chain the proxy presents.
    pub cert_file: String,
    /// PEM private key of that certificate.
    pub key_file: String,
    /// PEM CA certificates; when set, clients must present a certificate signed by one.
    pub client_ca_file: String,
}

impl TlsSection {
    /// Whether a TLS listener is configured.
    pub fn enabled(&self) -> bool {
        !self.listen.is_empty()
    }
}

/// `[admin]`: the HTTP listener for health, readiness and metrics.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// Address of the HTTP admin and metrics listener.
    pub listen: String,
    /// Bearer token required by mutating routes (`POST …`); empty: no token. Required when
    /// `listen` is not a loopback address.
    pub token: String,
}

/// Shows `"<redacted>"` for a set secret, so a config printed in a log never leaks it.
pub fn redact(secret: &str) -> &'static str {
    if secret.is_empty() {
        ""
    } else {
        "<redacted>"
    }
}

impl std::fmt::Debug for AdminSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSection")
            .field("listen", &self.listen)
            .field("token", &redact(&self.token))
            .finish()
    }
}

impl std::fmt::Debug for ClusterSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSection")
            .field("seeds", &self.seeds)
            .field("username", &self.username)
            .field("password", &redact(&self.password))
            .field("connections_per_node", &self.connections_per_node)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .finish_non_exhaustive()
    }
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            listen: "127.0.0.1:9180".into(),
            token: String::new(),
        }
    }
}

/// `[auth]`: what clients must send with AUTH (or HELLO … AUTH) before anything else. These
/// are the proxy's own credentials; the nodes' are `cluster.username`/`cluster.password` and are
/// never taken from clients.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// Password of the `default` user (`AUTH <password>`); empty: no password.
    pub requirepass: String,
    /// Further users (`AUTH <name> <password>`).
    pub users: Vec<AuthUser>,
    /// An ACL file in Redis' format (`user <name> <rules…>` per line), read at start and by
    /// `ACL LOAD`, written by `ACL SAVE`; empty: none. Not together with `users`.
    pub aclfile: String,
}

/// One `[[auth.users]]` entry.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthUser {
    /// User name.
    pub name: String,
    /// Its password.
    pub password: String,
}

impl std::fmt::Debug for AuthSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.users.iter().map(|u| u.name.as_str()).collect();
        f.debug_struct("AuthSection")
            .field("requirepass", &redact(&self.requirepass))
            .field("users", &names)
            .field("aclfile", &self.aclfile)
            .finish()
    }
}

impl AuthSection {
    /// True when clients must authenticate before anything else.
    pub fn required(&self) -> bool {
        !self.requirepass.is_empty() || !self.users.is_empty() || !self.aclfile.is_empty()
    }
}

/// `[migration]`: how the proxy moves slots between masters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MigrationSection {
    /// Directory for the migration journal (crash recovery).
    pub data_dir: PathBuf,
    /// Keys per `MIGRATE … KEYS` batch.
    pub batch_keys: usize,
    /// Workers moving slots at the same time (from different sources where possible),
    /// each one slot or one batch at a time.
    pub parallel_slots: usize,
    /// Slots of one source and target moved together, each step pipelined for all of them
    /// in one write per node; 1 moves slot by slot.
    pub batch_slots: usize,
    /// Cap on keys migrated per second over all running jobs; 0: no cap.
    pub max_keys_per_second: u64,
    /// The clients' p99 through the proxy may rise to this many times its value before the
    /// job; the pacer runs fewer workers and pauses between batches to stay under it. 0: off.
    pub max_client_p99_ratio: f64,
    /// Timeout passed to `MIGRATE` (milliseconds of I/O inactivity between the two nodes).
    pub migrate_timeout_ms: u64,
    /// Lifetime of the migration lease in the cluster; renewed at a third of it.
    pub lease_ttl_ms: u64,
    /// Finished jobs kept for `GET /migrations`.
    pub history: usize,
    /// At start, an open slot no journal explains is repaired only if it stays unchanged
    /// this long (it may be another tool's migration in progress).
    pub repair_grace_ms: u64,
    /// Keys whose `MEMORY USAGE` is above this many bytes are moved alone, after an estimate
    /// of how long `MIGRATE` will block their nodes.
    pub big_key_bytes: u64,
    /// The longest one key may block its two nodes (ms); a key estimated above it pauses the
    /// job. Capped at 3/4 of the source's `cluster-node-timeout`.
    pub max_key_block_ms: u64,
}

impl Default for MigrationSection {
    fn default() -> Self {
        MigrationSection {
            data_dir: PathBuf::from("./data"),
            batch_keys: 100,
            parallel_slots: 4,
            batch_slots: 64,
            max_keys_per_second: 0,
            max_client_p99_ratio: 2.0,
            migrate_timeout_ms: 5000,
            lease_ttl_ms: 15_000,
            history: 100,
            repair_grace_ms: 10_000,
            big_key_bytes: 8 * 1024 * 1024,
            max_key_block_ms: 2000,
        }
    }
}

/// `[cluster]`: the Redis Cluster behind the proxy.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// Nodes to ask for the slot map at start (`host:port`); any one reachable node is enough.
    pub seeds: Vec<String>,
    /// ACL user for connections to the nodes (empty: the default user).
    pub username: String,
    /// Password for connections to the nodes (empty: no AUTH).
    pub password: String,
    /// Multiplexed connections the proxy keeps to each master.
    pub connections_per_node: usize,
    /// TCP connect timeout for node connections.
    pub connect_timeout_ms: u64,
    /// How long one command may wait for a node's reply before the client gets an error.
    pub request_timeout_ms: u64,
    /// Slot-map refresh period (a MOVED reply also triggers a refresh at once).
    pub refresh_interval_ms: u64,
    /// MOVED/ASK redirects followed for one command before giving up with an error.
    pub max_redirects: u32,
    /// Retries of one command after TRYAGAIN, CLUSTERDOWN or a lost connection.
    pub max_retries: u32,
    /// First retry delay; doubles on every retry up to `retry_max_backoff_ms`.
    pub retry_backoff_ms: u64,
    /// Ceiling for the retry delay.
    pub retry_max_backoff_ms: u64,
    /// Connect to the nodes over TLS (their `tls-port`, with `tls-cluster yes` so that the
    /// cluster announces TLS ports).
    pub tls: bool,
    /// PEM CA certificates the nodes' certificates must chain to (required with `tls`).
    pub tls_ca_file: String,
    /// PEM client certificate for nodes that require one (`tls-auth-clients yes`).
    pub tls_cert_file: String,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: String,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            seeds: vec!["127.0.0.1:7000".into()],
            username: String::new(),
            password: String::new(),
            connections_per_node: 1,
            connect_timeout_ms: 1000,
            request_timeout_ms: 5000,
            refresh_interval_ms: 10_000,
            max_redirects: 5,
            max_retries: 12,
            retry_backoff_ms: 10,
            retry_max_backoff_ms: 250,
            tls: false,
            tls_ca_file: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
        }
    }
}

impl ClusterSection {
    /// Connect timeout as a `Duration`.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
    /// Request timeout as a `Duration`.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// `[log]`: what the proxy writes to stderr.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// A tracing filter such as `info` or `slotproxy=debug,info` (`RUST_LOG` wins when set).
    pub level: String,
    /// `text` for people, `json` (one object per line) for log collectors.
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}
