//! What every request handler shares.

use std::sync::Arc;

use telejob_core::job::ValidationLimits;
use telejob_core::pipeline::RunStores;

use super::db::Db;
use super::metrics::Metrics;
use super::sessions::Sessions;
use super::tokens::Tokens;

/// Shared by every handler of the API and the dashboard.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The database.
    pub db: Db,
    /// Token checks.
    pub tokens: Tokens,
    /// This replica's part in scheduling (the scheduler itself while it leads).
    pub cluster: std::sync::Arc<super::cluster::Cluster>,
    /// Where code, logs and output live.
    pub stores: RunStores,
    /// Validation bounds.
    pub limits: ValidationLimits,
    /// Largest code upload.
    pub max_code_bytes: u64,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Dashboard sessions.
    pub sessions: Sessions,
    /// Save-time warnings and running-late thresholds.
    pub advisor: Arc<super::advice::Advisor>,
    /// Analysis workers.
    pub workers: Arc<super::workers::Workers>,
    /// Notifications (runs' and workers').
    pub notifier: Arc<dyn telejob_core::scheduler::notify::Notifier>,
}
