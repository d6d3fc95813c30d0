//! The JSON API under `/api`, plus `/healthz`, `/metrics` and the OpenAPI document. Handlers
//! are thin: job changes go through [`crate::server::app::jobs`].

mod body;
mod caller;
mod error;
mod jobs;
mod runs;
mod tokens;
mod workers;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde_json::json;

use crate::server::app::state::AppState;

/// The routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/openapi.json", get(openapi))
        .route("/api/jobs", get(jobs::list).post(jobs::create))
        .route(
            "/api/jobs/{name}",
            get(jobs::show)
                .put(jobs::update)
                .patch(jobs::patch)
                .delete(jobs::delete),
        )
        // The upload counts its bytes against max_code_bytes itself.
        .route(
            "/api/jobs/{name}/code",
            put(jobs::upload_code).layer(DefaultBodyLimit::disable()),
        )
        .route("/api/jobs/{name}/schedule", get(jobs::preview))
        .route("/api/jobs/{name}/files", get(jobs::files))
        .route("/api/jobs/{name}/pause", post(jobs::set_paused::<true>))
        .route("/api/jobs/{name}/resume", post(jobs::set_paused::<false>))
        .route("/api/jobs/{name}/runs", get(runs::list).post(jobs::run_now))
        .route(
            "/api/jobs/{name}/backfill",
            get(jobs::backfill_plan).post(jobs::backfill),
        )
        .route("/api/runs/{id}", get(runs::show))
        .route("/api/runs/{id}/log", get(runs::log))
        .route("/api/runs/{id}/cancel", post(runs::cancel))
        .route("/api/runs/{id}/replay", post(runs::replay))
        .route("/api/tokens", post(tokens::create))
        .route("/api/workers", get(workers::list).post(workers::launch))
        .route(
            "/api/workers/{name}",
            get(workers::show).delete(workers::terminate),
        )
        .route("/api/workers/{name}/extend", post(workers::extend))
        .route("/api/me", get(workers::me).put(workers::set_me))
        .route("/api/tombstones", get(jobs::tombstones))
        .route("/api/tombstones/{name}", delete(jobs::release))
        .layer(DefaultBodyLimit::max(1 << 20))
        .with_state(state)
}

/// `GET /healthz`: up, and this replica's part in scheduling. Answers from memory, so that it
/// answers even while the database does not.
async fn healthz(State(s): State<AppState>) -> impl IntoResponse {
    Json(json!({
        "status": "ok",
        "role": s.cluster.role(),
        "replica": s.cluster.id(),
        "lease_holder": s.cluster.lease_holder(),
    }))
}

async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("../openapi.json"),
    )
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    let counts = s.db.run_counts().await.unwrap_or_default();
    let body = s.metrics.render(
        &counts,
        s.cluster.active_runs().values().map(Vec::len).sum(),
    );
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

#[cfg(test)]
mod contract_tests;
#[cfg(test)]
mod fuzz_tests;

#[cfg(test)]
mod tests {
    #[test]
    fn the_openapi_document_lists_every_route() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../openapi.json")).expect("valid JSON");
        let all = include_str!("mod.rs");
        let src = &all[..all.find("#[cfg(test)]").unwrap_or(all.len())];
        let routes: Vec<&str> = src
            .split(".route(")
            .skip(1)
            .filter_map(|r| r.trim_start().strip_prefix('"')?.split('"').next())
            .collect();
        assert!(routes.len() >= 14, "{routes:?}");
        for r in routes {
            assert!(
                doc["paths"].get(r).is_some(),
                "{r} is missing from openapi.json"
            );
        }
    }
}
