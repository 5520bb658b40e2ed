//! What every admin handler reads: the cluster view, the metrics, the migration service and
//! the token that guards mutating routes.

use crate::cluster::Topology;
use crate::metrics::Metrics;
use crate::migration::service::Migrations;
use std::sync::Arc;

/// What the admin handlers read.
#[derive(Clone)]
pub struct AdminState {
    /// Cluster view, for readiness.
    pub topology: Arc<Topology>,
    /// Metrics to render.
    pub metrics: Arc<Metrics>,
    /// Slot migrations.
    pub migrations: Arc<Migrations>,
    /// Bearer token for mutating routes (empty: none).
    pub token: Arc<str>,
}
