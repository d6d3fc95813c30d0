//! Files anyone may fetch: published output of public jobs, the example's tarball.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use maud::html;
use serde_json::json;

use crate::server::app::published::{self, Listed};
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

/// Whether `/public/` serves job `name`'s published data: a public job's, or a deleted job's
/// whose published data was kept (under its tombstone). Private jobs are never served.
async fn served(s: &AppState, name: &str) -> bool {
    match s.db.job(name).await {
        Ok(Some(j)) => j.spec.output_visibility == telejob_core::job::Visibility::Public,
        Ok(None) => matches!(s.db.tombstone(name).await, Ok(Some(t)) if t.free_after.is_none()),
        Err(_) => false,
    }
}

/// Whether the client asked for JSON (`Accept: application/json`) rather than a page.
fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"))
}

/// A listing as JSON or as a page.
fn answer_listing(json: bool, title: &str, rows: &[Listed]) -> Response {
    if json {
        return Json(rows).into_response();
    }
    let body = html! {
        h1 { (title) }
        @if rows.is_empty() { p { "Nothing published here yet." } }
        @else {
            table {
                tr { th { "file" } th { "size" } th { "modified (UTC)" } th { "sha256" } }
                @for r in rows {
                    tr {
                        td { a href=(r.href.as_deref().unwrap_or("")) { (r.name) } }
                        td { (r.size) }
                        td { (r.modified.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default()) }
                        td { code { (r.sha256.as_deref().unwrap_or("")) } }
                    }
                }
            }
        }
    };
    Html(super::pages::layout(title, None, None, body).into_string()).into_response()
}

/// `/public/`: the jobs whose published data anyone may read (public jobs, and deleted jobs
/// whose data was kept), as a page or JSON.
pub(super) async fn public_index(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let mut names: Vec<String> = match s.db.jobs().await {
        Ok(jobs) => jobs
            .into_iter()
            .filter(|j| j.spec.output_visibility == telejob_core::job::Visibility::Public)
            .map(|j| j.spec.name)
            .collect(),
        Err(_) => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
    };
    if let Ok(tombs) = s.db.tombstones().await {
        names.extend(
            tombs
                .into_iter()
                .filter(|t| t.free_after.is_none())
                .map(|t| t.name),
        );
    }
    names.sort();
    let data = |n: &str| format!("/public/{n}/data/");
    if wants_json(&headers) {
        let jobs: Vec<_> = names
            .iter()
            .map(|n| json!({"job": n, "data": data(n)}))
            .collect();
        return Json(jobs).into_response();
    }
    let body = html! {
        h1 { "Published data" }
        @if names.is_empty() { p { "No job has published data yet." } }
        ul { @for n in &names { li { a href=(data(n)) { (n) } } } }
    };
    Html(super::pages::layout("Published data", None, None, body).into_string()).into_response()
}

/// Published output of public jobs: anyone may read it (it is public by definition). A path
/// ending in `/` (or the job's own name) lists what is below it; `<job>/latest/manifest.json`
/// is the newest complete set.
pub(super) async fn public_file(
    State(s): State<AppState>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut parts = path.splitn(3, '/');
    let (Some(job), kind) = (parts.next(), parts.next().unwrap_or("")) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if job.is_empty() || !served(&s, job).await {
        return StatusCode::NOT_FOUND.into_response();
    }
    let json = wants_json(&headers);
    // `<job>`, `<job>/`, `<job>/data`, `<job>/data/…/`: a listing.
    if kind.is_empty() || path == format!("{job}/data") || (kind == "data" && path.ends_with('/')) {
        let prefix = if path.ends_with('/') && kind == "data" {
            path.clone()
        } else {
            format!("{job}/data/")
        };
        if telejob_core::store::validate_key(prefix.trim_end_matches('/')).is_err() {
            return StatusCode::NOT_FOUND.into_response();
        }
        return match published::listing(s.stores.public.as_ref(), job, &prefix).await {
            Some(rows) => answer_listing(json, &format!("/public/{prefix}"), &rows),
            None => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        };
    }
    let key = if path == format!("{job}/latest/manifest.json") {
        match published::latest_manifest(s.stores.public.as_ref(), job).await {
            Some(k) => k,
            None => return StatusCode::NOT_FOUND.into_response(),
        }
    } else {
        // Only <job>/data/…, <job>/index.json and <job>/runs/<id>/manifest.json.
        let ok_kind = kind == "data"
            || path == published::index_key(job)
            || (kind == "runs" && path.ends_with("/manifest.json"));
        if !ok_kind || telejob_core::store::validate_key(&path).is_err() {
            return StatusCode::NOT_FOUND.into_response();
        }
        path
    };
    match s.stores.public.get(&key).await {
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
