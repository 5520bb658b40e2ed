//! Prometheus metrics: one registry, created by the application and passed to every part
//! that records something (no global registry, so tests can run several proxies in one
//! process). Metric names are constants here; units are in the names.

use prometheus::{
    Encoder, Gauge, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Open client connections.
pub const CLIENT_CONNECTIONS: &str = "slotproxy_client_connections";
/// Client connections accepted since start.
pub const CLIENT_CONNECTIONS_ACCEPTED: &str = "slotproxy_client_connections_accepted_total";
/// Client connections refused because `proxy.max_clients` was reached.
pub const CLIENT_CONNECTIONS_REJECTED: &str = "slotproxy_client_connections_rejected_total";
/// Clients disconnected for breaking the protocol.
pub const PROTOCOL_ERRORS: &str = "slotproxy_client_protocol_errors_total";
/// Redirects the proxy followed on a client's behalf, by kind.
pub const REDIRECTS: &str = "slotproxy_redirects_total";
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
    /// See [`REDIRECTS`]; label `kind`: moved, ask, tryagain, clusterdown.
    pub redirects: IntCounterVec,
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
}

impl Metrics {
    /// Creates and registers every metric (and the process collector on Linux).
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let metrics = Metrics {
            client_connections: IntGauge::new(CLIENT_CONNECTIONS, "Open client connections.")
                .expect("valid metric"),
            client_connections_accepted: IntCounter::new(
                CLIENT_CONNECTIONS_ACCEPTED,
                "Client connections accepted.",
            )
            .expect("valid metric"),
            client_connections_rejected: IntCounter::new(
                CLIENT_CONNECTIONS_REJECTED,
                "Client connections refused at proxy.max_clients.",
            )
            .expect("valid metric"),
            protocol_errors: IntCounter::new(
                PROTOCOL_ERRORS,
                "Clients disconnected for protocol errors.",
            )
            .expect("valid metric"),
            redirects: IntCounterVec::new(
                Opts::new(
                    REDIRECTS,
                    "Cluster redirects followed and hidden from clients.",
                ),
                &["kind"],
            )
            .expect("valid metric"),
            upstream_errors: IntCounterVec::new(
                Opts::new(UPSTREAM_ERRORS, "Failures talking to nodes."),
                &["node", "kind"],
            )
            .expect("valid metric"),
            upstream_reconnects: IntCounterVec::new(
                Opts::new(UPSTREAM_RECONNECTS, "Reconnections to nodes."),
                &["node"],
            )
            .expect("valid metric"),
            slot_map_epoch: IntGauge::new(SLOT_MAP_EPOCH, "Epoch of the current slot map.")
                .expect("valid metric"),
            slot_map_refreshes: IntCounterVec::new(
                Opts::new(SLOT_MAP_REFRESHES, "Slot map refreshes."),
                &["cause"],
            )
            .expect("valid metric"),
            slot_map_refresh_errors: IntCounter::new(
                SLOT_MAP_REFRESH_ERRORS,
                "Failed slot map refreshes.",
            )
            .expect("valid metric"),
            slot_map_last_refresh: Gauge::new(
                SLOT_MAP_LAST_REFRESH,
                "Unix time of the last good refresh.",
            )
            .expect("valid metric"),
            registry,
        };
        metrics.register_all();
        metrics
    }

    fn register_all(&self) {
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(self.client_connections.clone()),
            Box::new(self.client_connections_accepted.clone()),
            Box::new(self.client_connections_rejected.clone()),
            Box::new(self.protocol_errors.clone()),
            Box::new(self.redirects.clone()),
            Box::new(self.upstream_errors.clone()),
            Box::new(self.upstream_reconnects.clone()),
            Box::new(self.slot_map_epoch.clone()),
            Box::new(self.slot_map_refreshes.clone()),
            Box::new(self.slot_map_refresh_errors.clone()),
            Box::new(self.slot_map_last_refresh.clone()),
        ];
        for collector in collectors {
            // Names are constants and unique; registration cannot fail.
            let _ = self.registry.register(collector);
        }
        #[cfg(target_os = "linux")]
        {
            let _ = self.registry.register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ));
        }
    }

    /// Records a successful slot-map refresh.
    pub fn mark_refreshed(&self, unix_secs: f64) {
        self.slot_map_last_refresh.set(unix_secs);
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
