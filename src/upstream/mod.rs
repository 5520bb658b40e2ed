//! Connections to cluster nodes.
//!
//! Each master gets a [`pool::NodePool`]: a small fixed number of long-lived connections,
//! each shared by many clients. A connection's writer coalesces every queued request into one
//! `write`; its reader hands replies back in FIFO order. [`oneshot`] is the separate, simple
//! path for rare control queries (slot map, command table).

pub mod budget;
pub mod connection;
pub mod control;
pub mod identity;
pub mod oneshot;
pub mod pool;
pub mod stream;

use std::time::Duration;

/// Which of a node's shared connections carries a client's requests.
///
/// A client always takes the same one (its index modulo the pool size), so its pipelined
/// commands to a node run in the order it sent them. Clients that switched to RESP3 take the
/// node's RESP3 connections, so replies reach them exactly as a RESP3 Redis sends them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lane {
    /// The client's position among the connections.
    pub index: usize,
    /// The client speaks RESP3 (`HELLO 3`).
    pub resp3: bool,
    /// The client's account in [`budget::ReplyBudgets`], which its replies are charged to
    /// ([`budget::NO_CLIENT`] for the proxy's own requests).
    pub client: u32,
    /// The node user the request runs as ([`identity::PROXY`]: the proxy's own; else one
    /// of [`Settings::identities`], on that identity's own connection to the node).
    pub identity: u32,
}

impl Default for Lane {
    fn default() -> Lane {
        Lane {
            index: 0,
            resp3: false,
            client: budget::NO_CLIENT,
            identity: identity::PROXY,
        }
    }
}

/// How to reach nodes; shared by every pool.
#[derive(Clone)]
pub struct Settings {
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// ACL user (empty: default user).
    pub username: String,
    /// Password (empty: no AUTH).
    pub password: String,
    /// Connections per node.
    pub connections_per_node: usize,
    /// How long a request may wait for its reply (`cluster.request_timeout_ms`). Each
    /// connection enforces it with one timer for all its requests (see
    /// [`connection`]), not one timer per request.
    pub request_timeout: Duration,
    /// TLS to the nodes (`cluster.tls`): `None` when off; an error (files that became
    /// unreadable after the config was checked) makes every connection attempt fail rather
    /// than fall back to plain TCP.
    pub tls: Option<Result<tokio_rustls::TlsConnector, crate::tls::TlsError>>,
    /// Reply bytes held per client (`proxy.client_output_limit_bytes`); empty (off) until
    /// the proxy sets it up.
    pub budgets: std::sync::Arc<budget::ReplyBudgets>,
    /// The node users requests may run as (see [`identity`]).
    pub identities: std::sync::Arc<identity::Identities>,
    /// Set on the settings of one identity's connections: after logging in as the proxy,
    /// they set this user up and log in as it.
    pub switch_to: Option<std::sync::Arc<identity::NodeUser>>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("connect_timeout", &self.connect_timeout)
            .field("username", &self.username)
            .field("password", &crate::config::redact(&self.password))
            .field("connections_per_node", &self.connections_per_node)
            .field("request_timeout", &self.request_timeout)
            .field("tls", &self.tls.is_some())
            .field("switch_to", &self.switch_to)
            .finish()
    }
}

impl Settings {
    /// The `[cluster]` settings that concern connections.
    pub fn from_config(c: &crate::config::ClusterSection) -> Self {
        Settings {
            connect_timeout: c.connect_timeout(),
            username: c.username.clone(),
            password: c.password.clone(),
            connections_per_node: c.connections_per_node,
            request_timeout: c.request_timeout(),
            tls: crate::tls::node_connector(c).transpose(),
            budgets: Default::default(),
            identities: Default::default(),
            switch_to: None,
        }
    }

    /// The AUTH command to send after connecting, if any.
    pub fn auth_command(&self) -> Option<bytes::Bytes> {
        if self.password.is_empty() {
            return None;
        }
        let mut args: Vec<&str> = vec!["AUTH"];
        if !self.username.is_empty() {
            args.push(&self.username);
        }
        args.push(&self.password);
        Some(crate::protocol::request::encode_command(&args))
    }
}
