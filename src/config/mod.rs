//! Configuration: a TOML file (`--config FILE`) with command-line overrides.
//!
//! Every section rejects unknown keys so a typo is an error, not a silently ignored setting.
//! [`Config::load`] reports problems as a [`ConfigError`] that names the file, the line and the
//! field, and `main` turns it into exit code 64 (`EX_USAGE`).

mod locate;
mod sections;

pub use sections::*;

use locate::{field_at_line, field_line};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
    /// Where the values came from, to name the line of a bad one.
    #[serde(skip)]
    origin: Origin,
}

/// The file a [`Config`] was read from and the fields the command line or environment set.
#[derive(Clone, Default)]
struct Origin {
    /// Path and text of the file.
    file: Option<(PathBuf, String)>,
    /// Fields set by `--listen`, `--admin-listen`, `--seeds` or `SLOTPROXY_ADMIN_TOKEN`.
    from_cli: Vec<&'static str>,
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The text may hold secrets: only the path is shown.
        f.debug_struct("Origin")
            .field("file", &self.file.as_ref().map(|(path, _)| path))
            .field("from_cli", &self.from_cli)
            .finish()
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
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                let mut config = Self::parse(&text, path)?;
                config.origin.file = Some((path.to_path_buf(), text));
                config
            }
            None => Config::default(),
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
        config.origin.from_cli = from_cli;
        config
            .validate()
            .map_err(|(field, message)| config.field_error(field, message))?;
        Ok(config)
    }

    /// The error for `field`, located where it was set: the file and line, the command line
    /// or environment, or the defaults. For problems found after loading, such as a TLS file
    /// that cannot be read ([`crate::tls::check`]).
    pub fn field_error(&self, field: &str, message: String) -> ConfigError {
        let location = if self.origin.from_cli.contains(&field) {
            "command line or environment".to_string()
        } else {
            match &self.origin.file {
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
        if self.cluster.tls && self.cluster.tls_ca_file.is_empty() {
            return Err((
                "cluster.tls_ca_file",
                "required when cluster.tls is on".into(),
            ));
        }
        match (
            self.cluster.tls_cert_file.is_empty(),
            self.cluster.tls_key_file.is_empty(),
        ) {
            (true, false) => {
                return Err((
                    "cluster.tls_cert_file",
                    "required with cluster.tls_key_file".into(),
                ))
            }
            (false, true) => {
                return Err((
                    "cluster.tls_key_file",
                    "required with cluster.tls_cert_file".into(),
                ))
            }
            _ => {}
        }
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
        }
        if self.cluster.seeds.is_empty() {
            return Err((
                "cluster.seeds",
                "at least one seed node (host:port) is required".into(),
            ));
        }
        for seed in &self.cluster.seeds {
            split_host_port(seed).map_err(|m| ("cluster.seeds", m.to_string()))?;
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
        if !self.auth.aclfile.is_empty() {
            if !self.auth.users.is_empty() {
                return Err((
                    "auth.aclfile",
                    "users come either from auth.users or from an ACL file, not both (as in Redis)"
                        .into(),
                ));
            }
            let text = std::fs::read_to_string(&self.auth.aclfile).map_err(|e| {
                (
                    "auth.aclfile",
                    format!("cannot read {}: {e}", self.auth.aclfile),
                )
            })?;
            // Command names are checked once the cluster's command table is known.
            let none = crate::protocol::acl_catalog::Catalog::default();
            let lenient = crate::acl::file::Strictness::SkipUnknownCommands;
            crate::acl::file::parse(&text, &self.auth.aclfile, &none, lenient)
                .map_err(|e| ("auth.aclfile", e))?;
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
        if m.batch_slots == 0 || m.batch_slots > 1024 {
            return Err(("migration.batch_slots", "must be 1..=1024".into()));
        }
        if !(m.max_client_p99_ratio == 0.0
            || (m.max_client_p99_ratio >= 1.0 && m.max_client_p99_ratio <= 1000.0))
        {
            return Err((
                "migration.max_client_p99_ratio",
                "must be 0 (off) or 1.0..=1000.0".into(),
            ));
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
        if self.compat.max_copy_bytes == 0 {
            return Err(("compat.max_copy_bytes", "must be greater than 0".into()));
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

/// Why a `host:port` is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    /// No `:port`.
    #[error("`{0}` is not host:port")]
    NoPort(String),
    /// The port is not a number 0-65535.
    #[error("`{addr}`: port `{port}` is not a number 0-65535")]
    BadPort {
        /// The whole address.
        addr: String,
        /// What stood after the last `:`.
        port: String,
    },
    /// Nothing before the `:`.
    #[error("`{0}`: host is empty")]
    NoHost(String),
}

/// Splits `host:port` (IPv6 as `[::1]:7000` or `::1:7000`); the port must be a number.
pub fn split_host_port(s: &str) -> Result<(&str, u16), AddrError> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| AddrError::NoPort(s.into()))?;
    let port: u16 = port.parse().map_err(|_| AddrError::BadPort {
        addr: s.into(),
        port: port.into(),
    })?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(AddrError::NoHost(s.into()));
    }
    Ok((host, port))
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
