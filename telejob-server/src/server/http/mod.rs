//! The HTTP layer: the JSON API ([`api`]), the dashboard ([`ui`]) and the listener with its
//! timeouts ([`listen`]). Handlers are thin adapters over [`crate::server::app`].

pub mod api;
pub mod listen;
pub mod ui;

use axum::response::{IntoResponse, Response};

use super::app::state::AppState;

/// Run `run`'s log as plain text: followed from byte `from` until the run ends, or as stored now
/// (`None`: it has printed nothing yet). The API and the dashboard answer with it.
///
/// # Errors
///
/// The private store failed.
pub(crate) async fn log_response(
    s: &AppState,
    run: telejob_core::run::Run,
    follow: bool,
    from: usize,
) -> telejob_core::Result<Option<Response>> {
    use axum::http::header;
    let text = [
        (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    if follow {
        let stream = super::app::logs::follow(s.clone(), run, from);
        return Ok(Some(
            (text, axum::body::Body::from_stream(stream)).into_response(),
        ));
    }
    match s.stores.private.get(&super::app::logs::key(&run)).await {
        Ok(body) => Ok(Some((text, body).into_response())),
        Err(telejob_core::Error::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The whole application: API and dashboard over `state`.
pub fn router(state: AppState) -> axum::Router {
    api::router(state.clone()).merge(ui::router(state))
}
