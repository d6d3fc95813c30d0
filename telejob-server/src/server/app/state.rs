//! What every request handler shares.

use std::sync::Arc;

use telejob_core::agent::pipeline::RunStores;
use telejob_core::job::ValidationLimits;

use crate::server::app::metrics::Metrics;
use crate::server::app::sessions::Sessions;
use crate::server::app::tokens::Tokens;
use crate::server::db::Db;

/// Shared by every handler of the API and the dashboard.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The database.
    pub db: Db,
    /// Token checks.
    pub tokens: Tokens,
    /// This replica's part in scheduling (the scheduler itself while it leads).
    pub cluster: std::sync::Arc<crate::server::app::cluster::Cluster>,
    /// Where code, logs and output live.
    pub stores: RunStores,
    /// Validation bounds.
    pub limits: ValidationLimits,
    /// Largest code upload.
    pub max_code_bytes: u64,
    /// Where code uploads are received and checked, bounded.
    pub uploads: Arc<crate::server::app::uploads::Uploads>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Dashboard sessions.
    pub sessions: Sessions,
    /// Rejected dashboard forms, for the page after their redirect.
    pub drafts: Arc<crate::server::app::sessions::Drafts>,
    /// Save-time warnings and running-late thresholds.
    pub advisor: Arc<crate::server::app::advice::Advisor>,
    /// Analysis workers.
    pub workers: Arc<crate::server::app::workers::Workers>,
    /// Per-owner caps.
    pub quotas: Arc<crate::server::app::quotas::Quotas>,
    /// Notifications (runs' and workers').
    pub notifier: Arc<dyn telejob_core::scheduler::notify::Notifier>,
}
