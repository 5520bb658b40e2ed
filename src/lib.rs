//! slotproxy: a transparent resharding proxy for Redis Cluster.
//!
//! Cluster-unaware clients connect to slotproxy as if it were one Redis server; it routes
//! every command to the master owning its keys' hash slot.
//!
//! ```text
//!  client ──RESP──▶ proxy::listener ─▶ proxy::session (one task per client)
//!                                        │ protocol::request decodes, with limits
//!                                        │ proxy::dispatch looks up protocol::command
//!                                        ▼
//!                      local reply │ proxy::action::send (one slot) │ proxy::fanout (split)
//!                                        │
//!                      cluster::router: owner from the cluster::Topology snapshot (ArcSwap),
//!                                        │ hides MOVED / ASK / TRYAGAIN / CLUSTERDOWN
//!                                        ▼
//!                      upstream::pool ─▶ connection (pipelined, shared by many clients)
//!                                        │ replies framed by protocol::scan, raw bytes
//!                                        ▼
//!                      session writes replies in request order
//! ```
//!
//! Beside the data path, on the same floor (`cluster`, `upstream`, `protocol`): `migration`
//! moves slots and touches the data path only through the slot map and the router, and
//! `admin` serves the HTTP API over it. `tests/layering.rs` keeps the layers and checks that
//! no two files import each other in a circle.
//!
//! [`start`] binds the listeners and spawns everything; `main` and the integration tests both
//! use it.

#![warn(missing_docs)]
// No unsafe code: every byte from clients and nodes is handled by safe Rust (see README,
// Reliability).
#![forbid(unsafe_code)]

pub mod acl;
pub mod admin;
pub mod cluster;
pub mod config;
pub mod ctl;
pub mod error;
pub mod failpoint;
pub mod fuzzing;
pub mod io;
pub mod metrics;
pub mod migration;
pub mod protocol;
pub mod proxy;
pub mod tls;
pub mod upstream;

use config::Config;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A running proxy.
pub struct Proxy {
    /// Where clients connect (the real port when the config said port 0).
    pub client_addr: SocketAddr,
    /// Where the admin HTTP listener is.
    pub admin_addr: SocketAddr,
    /// Where TLS clients connect, when `[tls]` is configured.
    pub tls_addr: Option<SocketAddr>,
    /// The cluster view.
    pub topology: Arc<cluster::Topology>,
    shutdown: CancellationToken,
    sessions: TaskTracker,
    grace: Duration,
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The TLS listen address is not an address.
    #[error("TLS: tls.listen: {0}")]
    TlsListen(String),
    /// The TLS certificate, key or CA could not be loaded.
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    /// The migration journal directory is unusable.
    #[error("migration.data_dir: {0}")]
    DataDir(#[from] migration::journal::JournalError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Which listener.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Binds the client and admin listeners and starts every task. The slot map loads in the
/// background; until it does, clients get a clear error and `/readyz` answers 503.
pub async fn start(config: Config) -> Result<Proxy, StartError> {
    let bind = |addr: SocketAddr, what: &'static str| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, what, source })
    };
    let client_listener = bind(config.listen_addr(), "client listener").await?;
    let admin_listener = bind(config.admin_addr(), "admin listener").await?;
    let local = |l: &TcpListener, fallback: SocketAddr| l.local_addr().unwrap_or(fallback);
    let client_addr = local(&client_listener, config.listen_addr());
    let admin_addr = local(&admin_listener, config.admin_addr());
    let tls = match config.tls_addr() {
        None => None,
        Some(addr) => {
            let addr = addr.map_err(StartError::TlsListen)?;
            let acceptor = tls::client_acceptor(&config.tls)?;
            let listener = bind(addr, "TLS client listener").await?;
            Some((local(&listener, addr), listener, acceptor))
        }
    };
    let tls_addr = tls.as_ref().map(|(addr, _, _)| *addr);

    let metrics = Arc::new(metrics::Metrics::new());
    let mut settings = upstream::Settings::from_config(&config.cluster);
    // One slot per client the listeners may hold (the plain and the TLS one share the cap).
    settings.budgets = Arc::new(upstream::budget::ReplyBudgets::new(
        config.proxy.max_clients + 1,
        config.proxy.client_output_limit_bytes,
    ));
    let settings = Arc::new(settings);
    let topology = cluster::Topology::new(&config.cluster, settings.clone(), metrics.clone());
    let settings_for_migrations = settings;
    let router = Arc::new(cluster::router::Router::new(
        topology.clone(),
        metrics.clone(),
        &config.cluster,
    ));
    let router_for_lease = router.clone();
    let crossslot = proxy::crossslot::run::Engine {
        router: router.clone(),
        metrics: metrics.clone(),
        settings: Arc::new(proxy::crossslot::run::Settings {
            cross_node: config.compat.cross_node,
            max_copy_bytes: config.compat.max_copy_bytes,
            token: format!("{:08x}", rand::random::<u32>()),
        }),
    };
    let shared = Arc::new(proxy::Shared {
        crossslot,
        script_users: Default::default(),
        router,
        metrics: metrics.clone(),
        limits: protocol::request::Limits::from_config(&config.proxy),
        max_pipeline: config.proxy.max_pipeline,
        max_clients: config.proxy.max_clients,
        started: Instant::now(),
        next_client_id: AtomicU64::new(1),
        listen_port: client_addr.port(),
        scripts: proxy::scripts::ScriptCache::default(),
        acl: Arc::new(acl::Acl::new(proxy::acl_users::users_from_config(
            &config.auth,
        ))),
        auth: config.auth.clone(),
        pubsub_output_limit: config.proxy.pubsub_output_limit_bytes,
        admin_commands: config.compat.admin_commands,
        idle_timeout: (config.proxy.idle_timeout_secs > 0)
            .then(|| Duration::from_secs(config.proxy.idle_timeout_secs)),
        clients: Default::default(),
        run_id: (0..40)
            .map(|_| char::from(b"0123456789abcdef"[rand::random::<usize>() % 16]))
            .collect(),
        monitors: Default::default(),
    });

    let shutdown = CancellationToken::new();
    let sessions = TaskTracker::new();
    tokio::spawn(topology.clone().run_refresher(shutdown.clone()));
    tokio::spawn(proxy::acl_sync::run(shared.clone(), shutdown.clone()));
    if let Some((_, listener, acceptor)) = tls {
        tokio::spawn(proxy::listener::run(
            listener,
            Some(acceptor),
            shared.clone(),
            shutdown.clone(),
            sessions.clone(),
        ));
    }
    tokio::spawn(proxy::listener::run(
        client_listener,
        None,
        shared,
        shutdown.clone(),
        sessions.clone(),
    ));
    let migrations = start_migrations(
        &config,
        admin_addr,
        router_for_lease,
        settings_for_migrations,
    )?;
    tokio::spawn(migration::recovery::recover(migrations.clone()));
    tokio::spawn(sample_slot_stats(metrics.clone(), shutdown.clone()));
    let admin_state = admin::AdminState {
        topology: topology.clone(),
        metrics,
        migrations: migrations.clone(),
        token: config.admin.token.as_str().into(),
    };
    tokio::spawn(admin::run(admin_listener, admin_state, shutdown.clone()));
    tracing::info!(%client_addr, %admin_addr, ?tls_addr, "slotproxy listening");
    Ok(Proxy {
        client_addr,
        admin_addr,
        tls_addr,
        topology,
        shutdown,
        sessions,
        grace: Duration::from_millis(config.proxy.shutdown_grace_ms),
    })
}

/// Moves the per-slot rate window forward until `shutdown`.
async fn sample_slot_stats(metrics: Arc<metrics::Metrics>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(metrics::slot_stats::SAMPLE_EVERY);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => metrics.slot_stats.rotate(),
        }
    }
}

/// Builds the migration service: journal, lease, throttle, per-slot settings.
fn start_migrations(
    config: &Config,
    admin_addr: SocketAddr,
    router: Arc<cluster::router::Router>,
    settings: Arc<upstream::Settings>,
) -> Result<Arc<migration::service::Migrations>, StartError> {
    let topology = router.topology.clone();
    let metrics = router.metrics.clone();
    let m = &config.migration;
    let journal = migration::journal::Journal::open(&m.data_dir)?;
    let holder = migration::journal::holder_id(&m.data_dir, &admin_addr.to_string())?;
    let lease = Arc::new(migration::lease::Lease::new(
        router,
        holder,
        Duration::from_millis(m.lease_ttl_ms),
    ));
    let ctx = Arc::new(migration::context::MoveContext {
        settings,
        topology,
        batch_keys: m.batch_keys,
        batch_slots: m.batch_slots,
        migrate_timeout: Duration::from_millis(m.migrate_timeout_ms),
        call_timeout: config.cluster.request_timeout().max(Duration::from_secs(1)),
        throttle: Arc::new(migration::throttle::Throttle::new(m.max_keys_per_second)),
        metrics,
        big_key_bytes: m.big_key_bytes,
        max_key_block: Duration::from_millis(m.max_key_block_ms),
        costs: Default::default(),
    });
    let jobs = migration::service::JobSettings {
        parallel_slots: m.parallel_slots,
        history_len: m.history,
        repair_grace: Duration::from_millis(m.repair_grace_ms),
        max_client_p99_ratio: m.max_client_p99_ratio,
    };
    Ok(migration::service::Migrations::new(
        ctx, lease, journal, jobs,
    ))
}

impl Proxy {
    /// Stops accepting, lets sessions finish their in-flight replies for at most the grace
    /// period, and returns whether every session finished in time.
    pub async fn shutdown(self) -> bool {
        self.shutdown.cancel();
        self.sessions.close();
        tokio::time::timeout(self.grace, self.sessions.wait())
            .await
            .is_ok()
    }

    /// Waits until the first slot map is loaded, at most `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.topology.snapshot().is_some() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}
