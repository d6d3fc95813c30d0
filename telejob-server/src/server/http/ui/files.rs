//! Files anyone may fetch: published output of public jobs, the example's tarball.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::server::app::state::AppState;

/// The bundled example's code tarball, to try the form with.
pub(super) async fn example_tarball() -> Response {
    match crate::server::app::example::tarball() {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "application/gzip"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"slowsql.tar.gz\"",
                ),
            ],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Published output of public jobs: anyone may read it (it is public by definition).
pub(super) async fn public_file(State(s): State<AppState>, Path(path): Path<String>) -> Response {
    // Only <job>/data/… and <job>/runs/<id>/manifest.json, of public jobs.
    let mut parts = path.splitn(3, '/');
    let (Some(job), Some(kind)) = (parts.next(), parts.next()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let ok_kind = kind == "data" || (kind == "runs" && path.ends_with("/manifest.json"));
    let public_job = matches!(s.db.job(job).await, Ok(Some(j)) if j.spec.output_visibility == telejob_core::job::Visibility::Public);
    if !ok_kind || !public_job || telejob_core::store::validate_key(&path).is_err() {
        return StatusCode::NOT_FOUND.into_response();
    }
    match s.stores.public.get(&path).await {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}
