//! The client side: accept connections, run one session per client, turn each command into
//! a reply future (local, single node, split or fan-out), and write replies in request order.

pub mod acl_cmd;
pub mod acl_log;
pub mod acl_sync;
pub mod acl_users;
pub mod action;
pub mod admin_cmd;
pub mod auth;
pub mod blocking;
pub mod client_cmd;
pub mod client_state;
pub mod clients;
pub mod crossslot;
pub mod dispatch;
pub mod exec_recheck;
pub mod fanout;
pub mod fanout_batch;
pub mod idle;
pub mod info_merge;
pub mod listener;
pub mod local;
pub mod monitor;
pub mod pinned;
pub mod pubsub;
pub mod replies;
pub mod reserved;

pub mod scan;
pub mod script_users;
pub mod scripts;
pub mod session;
pub mod stop;
pub mod transaction;
pub mod watch;

use crate::cluster::router::Router;
use crate::metrics::Metrics;
use crate::protocol::request::Limits;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

/// State shared by every client session.
#[derive(Debug)]
pub struct Shared {
    /// Routing and redirect handling.
    pub router: Arc<Router>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Request decoding limits.
    pub limits: Limits,
    /// Commands in flight per client before the proxy stops reading from it.
    pub max_pipeline: usize,
    /// Most concurrent clients.
    pub max_clients: usize,
    /// When the proxy started (INFO uptime).
    pub started: Instant,
    /// Source of CLIENT ID values.
    pub next_client_id: AtomicU64,
    /// The client port (INFO tcp_port).
    pub listen_port: u16,
    /// Script bodies seen, to heal NOSCRIPT on nodes that never saw a script.
    pub scripts: scripts::ScriptCache,
    /// The clients' users and permissions (`[auth]`, `ACL SETUSER`).
    pub acl: Arc<crate::acl::Acl>,
    /// `[auth]` as configured: its users are put into the shared set at every start.
    pub auth: crate::config::AuthSection,
    /// Bytes of Pub/Sub messages queued for one client before it is disconnected.
    pub pubsub_output_limit: usize,
    /// `[compat] admin_commands`: node administration allowed through the proxy.
    pub admin_commands: bool,
    /// How long a client may stay silent before it is closed (`proxy.idle_timeout_secs`).
    pub idle_timeout: Option<std::time::Duration>,
    /// Connected clients, for CLIENT LIST and CLIENT KILL.
    pub clients: clients::Registry,
    /// INFO's `run_id`: random, new at every start, as in Redis.
    pub run_id: String,
    /// The MONITOR feed.
    pub monitors: monitor::Monitors,
    /// Commands, transactions and scripts across slots.
    pub crossslot: crossslot::run::Engine,
    /// The node users restricted users' scripts run as.
    pub script_users: Arc<script_users::ScriptUsers>,
}
