//! Configuration: a TOML file (`--config FILE`) with command-line overrides.
//!
//! Every section rejects unknown keys so a typo is an error, not a silently ignored setting.
//! [`Config::load`] reports problems as a [`ConfigError`] that names the file, the line and the
//! field, and `main` turns it into exit code 64 (`EX_USAGE`).

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The hard ceiling Redis itself places on one bulk string (`proto-max-bulk-len`).
pub const MAX_BULK_BYTES_CEILING: usize = 512 * 1024 * 1024;
/// The ceiling for one inline command or RESP header line.
pub const MAX_INLINE_BYTES_CEILING: usize = 64 * 1024;

/// The whole configuration, one struct per TOML table.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The client-facing RESP listener and its limits.
    pub proxy: ProxySection,
    /// The HTTP admin and metrics listener.
    pub admin: AdminSection,
    /// How to reach and talk to the Redis Cluster behind the proxy.
    pub cluster: ClusterSection,
    /// `[migration]`
    pub migration: MigrationSection,
    /// `[auth]`
    pub auth: AuthSection,
    /// Logging.
    pub log: LogSection,
    /// `[tls]`
    pub tls: TlsSection,
    /// `[compat]`
    pub compat: CompatSection,
}

/// `[compat]`: what the proxy lets clients do beyond what is safe for every client.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CompatSection {
    /// Let clients run node administration through the proxy: `CONFIG SET|RESETSTAT|REWRITE`
    /// on every node, `DEBUG` (by key, or on every master; the crashing subcommands stay
    /// refused), `SLOWLOG`, `LATENCY`, `MEMORY STATS|DOCTOR|…` and per-node `INFO`
    /// sections. Off by default: any client could then reconfigure every node.
    pub admin_commands: bool,
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
            .finish()
    }
}

impl AuthSection {
    /// True when clients must authenticate before anything else.
    pub fn required(&self) -> bool {
        !self.requirepass.is_empty() || !self.users.is_empty()
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
    /// Slots moved at the same time (from different sources where possible).
    pub parallel_slots: usize,
    /// Cap on keys migrated per second over all running jobs; 0: no cap.
    pub max_keys_per_second: u64,
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
            max_keys_per_second: 0,
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

/// Environment variable that overrides `admin.token`, so the secret need not sit in a file
/// (a Kubernetes Secret or a systemd credential can provide it).
pub const ADMIN_TOKEN_ENV: &str = "SLOTPROXY_ADMIN_TOKEN";

/// A configuration problem, worded for the operator who has to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read config file: {source}")]
    Read {
        /// The file named by `--config`.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// TOML syntax error, unknown key or a value of the wrong type.
    #[error("{path}:{line}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// What is wrong, naming the field.
        message: String,
    },
    /// A value that parses but makes no sense.
    #[error("{location}: field `{field}`: {message}")]
    Invalid {
        /// `file:line` where the field is set, or `command line`/`defaults`.
        location: String,
        /// Dotted field name, e.g. `proxy.listen`.
        field: String,
        /// What is wrong and what is allowed.
        message: String,
    },
}

/// Overrides from the command line; they win over the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--listen`
    pub listen: Option<String>,
    /// `--admin-listen`
    pub admin_listen: Option<String>,
    /// `--seeds` (comma separated)
    pub seeds: Option<String>,
}

impl Config {
    /// Reads, parses, applies overrides and validates.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let (mut config, source) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                (Self::parse(&text, path)?, Some((path, text)))
            }
            None => (Config::default(), None),
        };
        let mut from_cli = Vec::new();
        if let Ok(token) = std::env::var(ADMIN_TOKEN_ENV) {
            if !token.is_empty() {
                config.admin.token = token;
                from_cli.push("admin.token");
            }
        }
        if let Some(listen) = &overrides.listen {
            config.proxy.listen = listen.clone();
            from_cli.push("proxy.listen");
        }
        if let Some(listen) = &overrides.admin_listen {
            config.admin.listen = listen.clone();
            from_cli.push("admin.listen");
        }
        if let Some(seeds) = &overrides.seeds {
            config.cluster.seeds = seeds
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            from_cli.push("cluster.seeds");
        }
        config.validate().map_err(|(field, message)| {
            let location = if from_cli.contains(&field) {
                "command line or environment".to_string()
            } else {
                match &source {
                    Some((path, text)) => match field_line(text, field) {
                        Some(line) => format!("{}:{line}", path.display()),
                        None => format!("{} (default value)", path.display()),
                    },
                    None => "defaults".to_string(),
                }
            };
            ConfigError::Invalid {
                location,
                field: field.to_string(),
                message,
            }
        })?;
        Ok(config)
    }

    /// Parses TOML text; errors carry the line and the offending key.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|span| {
                    let end = span.start.min(text.len());
                    text.as_bytes()[..end]
                        .iter()
                        .filter(|&&b| b == b'\n')
                        .count()
                        + 1
                })
                .unwrap_or(1);
            let message = e.message().trim();
            let message = match field_at_line(text, line) {
                Some(field) => format!("field `{field}`: {message}"),
                None => message.to_string(),
            };
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                message,
            }
        })
    }

    /// Checks values that parse but cannot work; returns the field and the reason.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        parse_addr(&self.proxy.listen).map_err(|m| ("proxy.listen", m))?;
        parse_addr(&self.admin.listen).map_err(|m| ("admin.listen", m))?;
        crate::upstream::stream::tls_connector(&self.cluster)?;
        if self.tls.enabled() {
            parse_addr(&self.tls.listen).map_err(|m| ("tls.listen", m))?;
            for (field, value) in [
                ("tls.cert_file", &self.tls.cert_file),
                ("tls.key_file", &self.tls.key_file),
            ] {
                if value.is_empty() {
                    return Err((field, "required when tls.listen is set".into()));
                }
            }
            crate::proxy::tls::acceptor(&self.tls)?;
        }
        if self.cluster.seeds.is_empty() {
            return Err((
                "cluster.seeds",
                "at least one seed node (host:port) is required".into(),
            ));
        }
        for seed in &self.cluster.seeds {
            split_host_port(seed).map_err(|m| ("cluster.seeds", m))?;
        }
        let p = &self.proxy;
        if p.max_bulk_bytes == 0 || p.max_bulk_bytes > MAX_BULK_BYTES_CEILING {
            return Err((
                "proxy.max_bulk_bytes",
                format!("must be 1..={MAX_BULK_BYTES_CEILING}"),
            ));
        }
        if p.max_inline_bytes < 64 || p.max_inline_bytes > MAX_INLINE_BYTES_CEILING {
            return Err((
                "proxy.max_inline_bytes",
                format!("must be 64..={MAX_INLINE_BYTES_CEILING}"),
            ));
        }
        if p.max_request_bytes < p.max_inline_bytes {
            return Err((
                "proxy.max_request_bytes",
                "must be at least proxy.max_inline_bytes".into(),
            ));
        }
        if !self.admin.token.is_empty() && self.admin.token.chars().any(|c| c.is_whitespace()) {
            return Err(("admin.token", "must not contain whitespace".into()));
        }
        let admin_ip = parse_addr(&self.admin.listen).map(|a| a.ip());
        if self.admin.token.is_empty() && admin_ip.is_ok_and(|ip| !ip.is_loopback()) {
            return Err((
                "admin.token",
                "a token is required when admin.listen is not a loopback address".into(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for user in &self.auth.users {
            if user.name.is_empty() || user.name.contains(char::is_whitespace) {
                return Err((
                    "auth.users",
                    format!("user name {:?} must be one word", user.name),
                ));
            }
            if user.name == "default" {
                return Err((
                    "auth.users",
                    "the default user's password is auth.requirepass".into(),
                ));
            }
            if user.password.is_empty() {
                return Err((
                    "auth.users",
                    format!("user {:?} needs a password", user.name),
                ));
            }
            if !names.insert(user.name.as_str()) {
                return Err((
                    "auth.users",
                    format!("user {:?} is listed twice", user.name),
                ));
            }
        }
        let m = &self.migration;
        if m.batch_keys == 0 || m.batch_keys > 10_000 {
            return Err(("migration.batch_keys", "must be 1..=10000".into()));
        }
        if m.parallel_slots == 0 || m.parallel_slots > 64 {
            return Err(("migration.parallel_slots", "must be 1..=64".into()));
        }
        if m.lease_ttl_ms < 1000 {
            return Err(("migration.lease_ttl_ms", "must be at least 1000".into()));
        }
        if m.migrate_timeout_ms == 0 {
            return Err((
                "migration.migrate_timeout_ms",
                "must be greater than 0".into(),
            ));
        }
        if m.data_dir.as_os_str().is_empty() {
            return Err(("migration.data_dir", "must name a directory".into()));
        }
        if m.big_key_bytes == 0 {
            return Err(("migration.big_key_bytes", "must be greater than 0".into()));
        }
        if m.max_key_block_ms == 0 {
            return Err((
                "migration.max_key_block_ms",
                "must be greater than 0".into(),
            ));
        }
        let positive: [(&'static str, u64); 8] = [
            ("proxy.max_clients", p.max_clients as u64),
            (
                "proxy.pubsub_output_limit_bytes",
                p.pubsub_output_limit_bytes as u64,
            ),
            ("proxy.max_pipeline", p.max_pipeline as u64),
            ("proxy.max_args", p.max_args as u64),
            (
                "cluster.connections_per_node",
                self.cluster.connections_per_node as u64,
            ),
            (
                "cluster.connect_timeout_ms",
                self.cluster.connect_timeout_ms,
            ),
            (
                "cluster.request_timeout_ms",
                self.cluster.request_timeout_ms,
            ),
            (
                "cluster.refresh_interval_ms",
                self.cluster.refresh_interval_ms,
            ),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err((field, "must be greater than 0".into()));
            }
        }
        if self.cluster.connections_per_node > 64 {
            return Err(("cluster.connections_per_node", "must be 1..=64".into()));
        }
        if self.cluster.retry_max_backoff_ms < self.cluster.retry_backoff_ms {
            return Err((
                "cluster.retry_max_backoff_ms",
                "must be at least cluster.retry_backoff_ms".into(),
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| ("log.level", format!("not a valid filter: {e}")))?;
        Ok(())
    }

    /// The validated client listen address.
    pub fn listen_addr(&self) -> SocketAddr {
        parse_addr(&self.proxy.listen).unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 6380)))
    }

    /// The validated admin listen address.
    pub fn admin_addr(&self) -> SocketAddr {
        parse_addr(&self.admin.listen).unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 9180)))
    }

    /// The TLS listen address, when `[tls]` is configured (an unparsable one is an error).
    pub fn tls_addr(&self) -> Option<Result<SocketAddr, String>> {
        self.tls.enabled().then(|| parse_addr(&self.tls.listen))
    }
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .map_err(|_| format!("`{s}` is not an IP:port address (e.g. 127.0.0.1:6380 or [::1]:6380)"))
}

/// Splits `host:port` (IPv6 as `[::1]:7000` or `::1:7000`); the port must be a number.
pub fn split_host_port(s: &str) -> Result<(&str, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("`{s}` is not host:port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("`{s}`: port `{port}` is not a number 0-65535"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("`{s}`: host is empty"));
    }
    Ok((host, port))
}

/// The dotted `section.key` set on 1-based `line`, if that line sets one.
fn field_at_line(text: &str, line: usize) -> Option<String> {
    let mut section = String::new();
    for (index, current) in text.lines().enumerate() {
        let current = current.trim();
        if let Some(name) = current.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
        }
        if index + 1 == line {
            let key = current.split_once('=')?.0.trim();
            return Some(if section.is_empty() {
                key.to_string()
            } else {
                format!("{section}.{key}")
            });
        }
    }
    None
}

/// Finds the 1-based line where `section.key` is set in TOML text.
fn field_line(text: &str, field: &str) -> Option<usize> {
    let (section, key) = field.split_once('.')?;
    let mut current = String::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.trim().to_string();
        } else if current == section {
            if let Some((k, _)) = line.split_once('=') {
                if k.trim() == key {
                    return Some(index + 1);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).expect("write");
        Config::load(Some(&path), &Overrides::default())
    }

    #[test]
    fn unknown_key_names_field_and_line() {
        let err = load_text("[proxy]\nlisten = \"127.0.0.1:1\"\nlistn = 3\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(":3:"), "{msg}");
        assert!(msg.contains("listn"), "{msg}");
    }

    #[test]
    fn bad_value_names_field_and_line() {
        let err =
            load_text("[cluster]\nseeds = [\"a:1\"]\n\n[proxy]\nlisten = \"nope\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("c.toml:5"), "{msg}");
        assert!(msg.contains("proxy.listen"), "{msg}");
    }

    #[test]
    fn oversized_bulk_limit_rejected() {
        let err = load_text("[proxy]\nmax_bulk_bytes = 999999999999\n").unwrap_err();
        assert!(err.to_string().contains("proxy.max_bulk_bytes"), "{err}");
    }

    #[test]
    fn defaults_are_valid() {
        let c = load_text("").expect("empty file is valid");
        assert_eq!(c.listen_addr().port(), 6380);
        assert_eq!(c.admin_addr().port(), 9180);
    }

    #[test]
    fn host_port_split() {
        assert_eq!(split_host_port("127.0.0.1:7000"), Ok(("127.0.0.1", 7000)));
        assert_eq!(split_host_port("[::1]:7000"), Ok(("::1", 7000)));
        assert_eq!(split_host_port("::1:7000"), Ok(("::1", 7000)));
        assert!(split_host_port("x").is_err());
    }
}
