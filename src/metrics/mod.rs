//! Prometheus metrics: one registry, created by the application and passed to every part
//! that records something (no global registry, so tests can run several proxies in one
//! process). Metric names are constants here; units are in the names.

mod command;
pub mod latency;
pub mod slot_stats;

pub use command::{error_kind, CommandGroup};
pub use slot_stats::SlotStats;

use crate::protocol::command::CommandInfo;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// Open client connections.
pub const CLIENT_CONNECTIONS: &str = "slotproxy_client_connections";
/// Client connections accepted since start.
pub const CLIENT_CONNECTIONS_ACCEPTED: &str = "slotproxy_client_connections_accepted_total";
/// Client connections refused because `proxy.max_clients` was reached.
pub const CLIENT_CONNECTIONS_REJECTED: &str = "slotproxy_client_connections_rejected_total";
/// Clients disconnected for breaking the protocol.
pub const PROTOCOL_ERRORS: &str = "slotproxy_client_protocol_errors_total";
/// TLS client handshakes that failed or timed out.
pub const TLS_HANDSHAKE_FAILURES: &str = "slotproxy_client_tls_handshake_failures_total";
/// Clients closed after `proxy.idle_timeout_secs` of silence.
pub const IDLE_TIMEOUTS: &str = "slotproxy_client_idle_timeouts_total";
/// Failed AUTH and HELLO … AUTH attempts.
pub const AUTH_FAILURES: &str = "slotproxy_client_auth_failures_total";
/// Commands the proxy's ACL rules denied, by what was denied.
pub const ACL_DENIALS: &str = "slotproxy_acl_denials_total";
/// Subscribers disconnected for falling behind their messages.
pub const PUBSUB_OUTPUT_LIMIT: &str = "slotproxy_pubsub_output_limit_disconnects_total";
/// `CONFIG GET`s the masters answered differently (admin mode).
pub const CONFIG_DISAGREEMENTS: &str = "slotproxy_config_disagreements_total";
/// Clients disconnected because the replies held for them passed the output limit.
pub const CLIENT_OUTPUT_LIMIT: &str = "slotproxy_client_output_limit_disconnects_total";
/// Bytes read from clients.
pub const CLIENT_BYTES_RECEIVED: &str = "slotproxy_client_received_bytes_total";
/// Bytes written to clients.
pub const CLIENT_BYTES_SENT: &str = "slotproxy_client_sent_bytes_total";
/// Client commands by command name and result.
pub const COMMANDS: &str = "slotproxy_commands_total";
/// Time from a command's arrival to its reply being ready, by command group.
pub const COMMAND_DURATION: &str = "slotproxy_command_duration_seconds";
/// Redirects the proxy followed on a client's behalf, by kind.
pub const REDIRECTS: &str = "slotproxy_redirects_total";
/// Commands, transactions and scripts whose keys are in several slots, by how they were
/// served.
pub const CROSS_SLOT: &str = "slotproxy_cross_slot_total";
/// Commands given up after the redirect or retry budget, by kind.
pub const RETRIES_EXHAUSTED: &str = "slotproxy_retries_exhausted_total";
/// Open connections to nodes.
pub const UPSTREAM_CONNECTIONS: &str = "slotproxy_upstream_connections";
/// Requests sent to nodes.
pub const UPSTREAM_REQUESTS: &str = "slotproxy_upstream_requests_total";
/// Upstream failures, by node and kind.
pub const UPSTREAM_ERRORS: &str = "slotproxy_upstream_errors_total";
/// Reconnections to nodes.
pub const UPSTREAM_RECONNECTS: &str = "slotproxy_upstream_reconnects_total";
/// The slot map epoch.
pub const SLOT_MAP_EPOCH: &str = "slotproxy_slot_map_epoch";
/// Slot map refreshes, by cause.
pub const SLOT_MAP_REFRESHES: &str = "slotproxy_slot_map_refreshes_total";
/// Failed slot map refreshes.
pub const SLOT_MAP_REFRESH_ERRORS: &str = "slotproxy_slot_map_refresh_errors_total";
/// Unix time of the last successful refresh.
pub const SLOT_MAP_LAST_REFRESH: &str = "slotproxy_slot_map_last_refresh_timestamp_seconds";
/// Slots owned per master, in the proxy's map.
pub const SLOTS_PER_NODE: &str = "slotproxy_slots";
/// Migration jobs by state.
pub const MIGRATION_JOBS: &str = "slotproxy_migration_jobs";
/// Slots moved since start.
pub const MIGRATION_SLOTS: &str = "slotproxy_migration_slots_migrated_total";
/// Keys moved since start.
pub const MIGRATION_KEYS: &str = "slotproxy_migration_keys_migrated_total";
/// `MEMORY USAGE` of the keys moved since start.
pub const MIGRATION_BYTES: &str = "slotproxy_migration_bytes_migrated_total";
/// Slots the unfinished jobs still have to move.
pub const MIGRATION_SLOTS_REMAINING: &str = "slotproxy_migration_slots_remaining";
/// Slots being moved right now.
pub const MIGRATION_SLOTS_IN_FLIGHT: &str = "slotproxy_migration_slots_in_flight";
/// Keys per second over the running jobs.
pub const MIGRATION_RATE: &str = "slotproxy_migration_rate_keys_per_second";
/// Problems met while moving slots, by kind.
pub const MIGRATION_ERRORS: &str = "slotproxy_migration_errors_total";
/// How long `MIGRATE` of one big key (moved alone) blocked its two nodes.
pub const MIGRATION_BIG_KEY_BLOCK: &str = "slotproxy_migration_big_key_block_seconds";
/// 1 while this proxy holds the migration lease.
pub const MIGRATION_LEASE_HELD: &str = "slotproxy_migration_lease_held";

/// Values of the `state` label of [`MIGRATION_JOBS`].
pub const JOB_STATES: [&str; 6] = [
    "pending",
    "running",
    "paused",
    "completed",
    "failed",
    "cancelled",
];

/// Latency buckets: 50 µs to about 1 s.
const DURATION_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Every metric of the proxy.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// See [`CLIENT_CONNECTIONS`].
    pub client_connections: IntGauge,
    /// See [`CLIENT_CONNECTIONS_ACCEPTED`].
    pub client_connections_accepted: IntCounter,
    /// See [`CLIENT_CONNECTIONS_REJECTED`].
    pub client_connections_rejected: IntCounter,
    /// See [`PROTOCOL_ERRORS`].
    pub protocol_errors: IntCounter,
    /// See [`AUTH_FAILURES`].
    pub auth_failures: IntCounter,
    /// See [`IDLE_TIMEOUTS`].
    pub idle_timeouts: IntCounter,
    /// See [`ACL_DENIALS`]; label `reason`: command, key or channel.
    pub acl_denials: IntCounterVec,
    /// See [`TLS_HANDSHAKE_FAILURES`].
    pub tls_handshake_failures: IntCounter,
    /// See [`PUBSUB_OUTPUT_LIMIT`].
    pub pubsub_output_limit_disconnects: IntCounter,
    /// See [`CLIENT_OUTPUT_LIMIT`].
    pub client_output_limit_disconnects: IntCounter,
    /// See [`CONFIG_DISAGREEMENTS`].
    pub config_disagreements: IntCounter,
    /// See [`CLIENT_BYTES_RECEIVED`].
    pub client_bytes_received: IntCounter,
    /// See [`CLIENT_BYTES_SENT`].
    pub client_bytes_sent: IntCounter,
    /// See [`COMMANDS`]; labels `command` (a name the cluster knows, else `other`) and
    /// `result` (`ok` or an error kind).
    pub commands: IntCounterVec,
    /// See [`COMMAND_DURATION`]; label `group` ([`CommandGroup`]).
    pub command_duration: HistogramVec,
    /// `command_duration`'s series, indexed by `CommandGroup as usize`: resolved once, so
    /// observing a command costs no label lookup.
    durations: Vec<prometheus::Histogram>,
    /// The latency of clients' key commands (reads, writes, split multi-key commands),
    /// finely bucketed, for the migration pacer.
    pub client_latency: latency::LatencyHistogram,
    /// See [`REDIRECTS`]; label `kind`: moved, ask, tryagain, clusterdown.
    pub redirects: IntCounterVec,
    /// See [`RETRIES_EXHAUSTED`]; label `kind`: redirects, tryagain, clusterdown, unreachable.
    pub retries_exhausted: IntCounterVec,
    /// See [`CROSS_SLOT`]; label `mode`: same_node, split, refused.
    pub cross_slot: IntCounterVec,
    /// See [`UPSTREAM_CONNECTIONS`]; label `node`.
    pub upstream_connections: IntGaugeVec,
    /// See [`UPSTREAM_REQUESTS`]; label `node`.
    pub upstream_requests: IntCounterVec,
    /// See [`UPSTREAM_ERRORS`]; labels `node`, `kind`.
    pub upstream_errors: IntCounterVec,
    /// See [`UPSTREAM_RECONNECTS`]; label `node`.
    pub upstream_reconnects: IntCounterVec,
    /// See [`SLOT_MAP_EPOCH`].
    pub slot_map_epoch: IntGauge,
    /// See [`SLOT_MAP_REFRESHES`]; label `cause`.
    pub slot_map_refreshes: IntCounterVec,
    /// See [`SLOT_MAP_REFRESH_ERRORS`].
    pub slot_map_refresh_errors: IntCounter,
    /// See [`SLOT_MAP_LAST_REFRESH`].
    pub slot_map_last_refresh: Gauge,
    /// See [`SLOTS_PER_NODE`]; label `node`.
    pub slots_per_node: IntGaugeVec,
    /// See [`MIGRATION_JOBS`]; label `state`.
    pub migration_jobs: IntGaugeVec,
    /// See [`MIGRATION_SLOTS`].
    pub migration_slots: IntCounter,
    /// See [`MIGRATION_KEYS`].
    pub migration_keys: IntCounter,
    /// See [`MIGRATION_BYTES`].
    pub migration_bytes: IntCounter,
    /// See [`MIGRATION_SLOTS_REMAINING`].
    pub migration_slots_remaining: IntGauge,
    /// See [`MIGRATION_SLOTS_IN_FLIGHT`].
    pub migration_slots_in_flight: IntGauge,
    /// See [`MIGRATION_RATE`].
    pub migration_rate: Gauge,
    /// See [`MIGRATION_ERRORS`]; label `kind`: busykey, ioerr, retried, skipped, halted,
    /// changed (a failover under a move), too_big (a key over the block-time bound).
    pub migration_errors: IntCounterVec,
    /// See [`MIGRATION_BIG_KEY_BLOCK`].
    pub migration_big_key_block: prometheus::Histogram,
    /// See [`MIGRATION_LEASE_HELD`].
    pub migration_lease_held: IntGauge,
    /// Per-slot operation counts (JSON at `GET /slots/stats`, not Prometheus).
    pub slot_stats: SlotStats,
}

/// Creates a metric and registers it; names are constants, so this cannot fail in practice.
fn register<C: Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<C>,
) -> C {
    let metric = metric.expect("metric names and labels are valid constants");
    let _ = registry.register(Box::new(metric.clone()));
    metric
}

impl Metrics {
    /// Creates and registers every metric (and the process collector on Linux).
    pub fn new() -> Metrics {
        let r = Registry::new();
        let counter = |name: &str, help: &str| register(&r, IntCounter::new(name, help));
        let counters = |name: &str, help: &str, labels: &[&str]| {
            register(&r, IntCounterVec::new(Opts::new(name, help), labels))
        };
        let gauge = |name: &str, help: &str| register(&r, IntGauge::new(name, help));
        let gauges = |name: &str, help: &str, labels: &[&str]| {
            register(&r, IntGaugeVec::new(Opts::new(name, help), labels))
        };
        let mut metrics = Metrics {
            client_connections: gauge(CLIENT_CONNECTIONS, "Open client connections."),
            client_connections_accepted: counter(
                CLIENT_CONNECTIONS_ACCEPTED,
                "Client connections accepted.",
            ),
            client_connections_rejected: counter(
                CLIENT_CONNECTIONS_REJECTED,
                "Client connections refused at proxy.max_clients.",
            ),
            protocol_errors: counter(PROTOCOL_ERRORS, "Clients disconnected for protocol errors."),
            tls_handshake_failures: counter(TLS_HANDSHAKE_FAILURES, "TLS client handshakes that failed (bad or missing client certificate, wrong protocol) or timed out."),
            idle_timeouts: counter(IDLE_TIMEOUTS, "Clients closed after proxy.idle_timeout_secs without sending anything."),
            acl_denials: counters(ACL_DENIALS, "Commands denied by the proxy's ACL rules (-NOPERM); they reached no node.", &["reason"]),
            auth_failures: counter(AUTH_FAILURES, "Failed AUTH and HELLO AUTH attempts (each connection's later failures are answered more and more slowly)."),
            pubsub_output_limit_disconnects: counter(
                PUBSUB_OUTPUT_LIMIT,
                "Subscribers disconnected because their unsent messages passed proxy.pubsub_output_limit_bytes.",
            ),
            config_disagreements: counter(
                CONFIG_DISAGREEMENTS,
                "CONFIG GETs (with [compat] admin_commands) the masters answered differently; the first master's value was returned.",
            ),
            client_output_limit_disconnects: counter(
                CLIENT_OUTPUT_LIMIT,
                "Clients disconnected because the replies held for them passed proxy.client_output_limit_bytes.",
            ),
            client_bytes_received: counter(
                CLIENT_BYTES_RECEIVED,
                "Bytes of commands read from clients.",
            ),
            client_bytes_sent: counter(CLIENT_BYTES_SENT, "Bytes of replies written to clients."),
            commands: counters(
                COMMANDS,
                "Client commands by command and result (ok or error kind).",
                &["command", "result"],
            ),
            command_duration: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        COMMAND_DURATION,
                        "Time from a command's arrival to its reply, by command group.",
                    )
                    .buckets(DURATION_BUCKETS.to_vec()),
                    &["group"],
                ),
            ),
            redirects: counters(
                REDIRECTS,
                "Cluster redirects followed and hidden from clients.",
                &["kind"],
            ),
            retries_exhausted: counters(
                RETRIES_EXHAUSTED,
                "Commands answered with an error after the redirect or retry budget ran out.",
                &["kind"],
            ),
            cross_slot: counters(
                CROSS_SLOT,
                "Commands, transactions and scripts with keys in several hash slots: served on one master (same_node), per master (split) or refused.",
                &["mode"],
            ),
            upstream_connections: gauges(
                UPSTREAM_CONNECTIONS,
                "Open connections to nodes.",
                &["node"],
            ),
            upstream_requests: counters(UPSTREAM_REQUESTS, "Requests sent to nodes.", &["node"]),
            upstream_errors: counters(
                UPSTREAM_ERRORS,
                "Failures talking to nodes.",
                &["node", "kind"],
            ),
            upstream_reconnects: counters(
                UPSTREAM_RECONNECTS,
                "Reconnections to nodes.",
                &["node"],
            ),
            slot_map_epoch: gauge(
                SLOT_MAP_EPOCH,
                "Version of the current slot map (grows on every reload or patch).",
            ),
            slot_map_refreshes: counters(SLOT_MAP_REFRESHES, "Slot map refreshes.", &["cause"]),
            slot_map_refresh_errors: counter(SLOT_MAP_REFRESH_ERRORS, "Failed slot map refreshes."),
            slot_map_last_refresh: register(
                &r,
                Gauge::new(SLOT_MAP_LAST_REFRESH, "Unix time of the last good refresh."),
            ),
            slots_per_node: gauges(
                SLOTS_PER_NODE,
                "Slots owned per master in the proxy's map.",
                &["node"],
            ),
            migration_jobs: gauges(
                MIGRATION_JOBS,
                "Migration jobs by state (finished ones while kept in the history).",
                &["state"],
            ),
            migration_slots: counter(MIGRATION_SLOTS, "Slots moved by this proxy."),
            migration_keys: counter(MIGRATION_KEYS, "Keys moved by this proxy."),
            migration_bytes: counter(
                MIGRATION_BYTES,
                "MEMORY USAGE (on the source) of the keys moved by this proxy.",
            ),
            migration_slots_remaining: gauge(
                MIGRATION_SLOTS_REMAINING,
                "Slots the unfinished jobs still have to move.",
            ),
            migration_slots_in_flight: gauge(
                MIGRATION_SLOTS_IN_FLIGHT,
                "Slots being moved right now.",
            ),
            migration_rate: register(
                &r,
                Gauge::new(MIGRATION_RATE, "Keys per second moved by the running jobs."),
            ),
            migration_errors: counters(
                MIGRATION_ERRORS,
                "Problems met while moving slots, by kind.",
                &["kind"],
            ),
            migration_big_key_block: register(
                &r,
                prometheus::Histogram::with_opts(
                    HistogramOpts::new(
                        MIGRATION_BIG_KEY_BLOCK,
                        "Time MIGRATE of one big key (moved alone) blocked its two nodes.",
                    )
                    .buckets(vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
                ),
            ),
            migration_lease_held: gauge(
                MIGRATION_LEASE_HELD,
                "1 while this proxy holds the migration lease.",
            ),
            slot_stats: SlotStats::default(),
            registry: r.clone(),
            durations: Vec::new(),
            client_latency: Default::default(),
        };
        metrics.durations = CommandGroup::ALL
            .iter()
            .map(|group| metrics.command_duration.with_label_values(&[group.label()]))
            .collect();
        metrics.init_known_labels();
        #[cfg(target_os = "linux")]
        {
            let _ = metrics.registry.register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ));
        }
        metrics
    }

    /// Creates every series with a known, bounded label set at 0, so dashboards and alerts
    /// see them before the first event (Prometheus best practice).
    fn init_known_labels(&self) {
        for kind in ["moved", "ask", "tryagain", "clusterdown"] {
            self.redirects.with_label_values(&[kind]);
        }
        for kind in ["redirects", "tryagain", "clusterdown", "unreachable"] {
            self.retries_exhausted.with_label_values(&[kind]);
        }
        for mode in ["same_node", "split", "refused"] {
            self.cross_slot.with_label_values(&[mode]);
        }
        for kind in [
            "busykey", "ioerr", "retried", "skipped", "halted", "changed", "too_big",
        ] {
            self.migration_errors.with_label_values(&[kind]);
        }
        for state in JOB_STATES {
            self.migration_jobs.with_label_values(&[state]);
        }
        for cause in ["startup", "periodic", "redirect", "admin"] {
            self.slot_map_refreshes.with_label_values(&[cause]);
        }
        for group in CommandGroup::ALL {
            self.command_duration.with_label_values(&[group.label()]);
        }
    }

    /// Creates a node's series at 0 when its pool starts.
    pub fn init_node(&self, node: &str) {
        for kind in ["connect", "connection_lost", "timeout"] {
            self.upstream_errors.with_label_values(&[node, kind]);
        }
        self.upstream_reconnects.with_label_values(&[node]);
        self.upstream_connections.with_label_values(&[node]);
    }

    /// Counts one command (or transaction, or script) across slots, served as `mode`.
    pub fn count_cross_slot(&self, mode: &str) {
        self.cross_slot.with_label_values(&[mode]).inc();
    }

    /// Records a successful slot-map refresh.
    pub fn mark_refreshed(&self, unix_secs: f64) {
        self.slot_map_last_refresh.set(unix_secs);
    }

    /// Records one finished client command (`None`: a command the cluster does not know).
    pub fn observe_command(
        &self,
        command: Option<&CommandInfo>,
        group: CommandGroup,
        reply: &[u8],
        elapsed: std::time::Duration,
    ) {
        match (command, error_kind(reply)) {
            (Some(info), "ok") => info
                .ok_count
                .get_or_init(|| self.commands.with_label_values(&[&info.name, "ok"]))
                .inc(),
            (info, kind) => {
                let name = info.map(|i| i.name.as_str()).unwrap_or("other");
                self.commands.with_label_values(&[name, kind]).inc();
            }
        }
        if let Some(histogram) = self.durations.get(group as usize) {
            histogram.observe(elapsed.as_secs_f64());
        }
        // Plain key commands only: what a slot move can slow down, and nothing that waits
        // by design (blocking commands, transactions) or scans every node.
        if matches!(
            group,
            CommandGroup::Read | CommandGroup::Write | CommandGroup::MultiKey
        ) {
            self.client_latency.observe(elapsed);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
