//! The HTTP layer: the JSON API ([`api`]), the dashboard ([`ui`]) and the listener with its
//! timeouts ([`listen`]). Handlers are thin adapters over [`crate::server::app`].

pub mod api;
pub mod listen;
pub mod ui;

use super::app::state::AppState;

/// The whole application: API and dashboard over `state`.
pub fn router(state: AppState) -> axum::Router {
    api::router(state.clone()).merge(ui::router(state))
}
