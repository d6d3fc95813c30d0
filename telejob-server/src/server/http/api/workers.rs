//! `/api/workers…` and `/api/me`: thin adapters over [`crate::server::app::workers`].

use axum::Json;
use axum::extract::State;

use super::body::ApiPath as Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use telejob_core::policy::NotifySpec;

use super::body::{JsonBody, parse_json};
use super::caller::Caller;
use super::error::{ApiError, ApiResult};
use crate::server::app::errors::JobError;
use crate::server::app::state::AppState;
use crate::server::app::workers::{LaunchRequest, WorkerView};

/// A worker's 404 says "worker".
fn not_found(e: JobError) -> ApiError {
    match e {
        JobError::NotFound => ApiError::not_found("worker"),
        e => e.into(),
    }
}

/// The worker an operation answered as the API shows it, or its error (404 for a worker the
/// caller cannot see).
fn shown(w: Result<crate::server::db::WorkerRow, JobError>) -> ApiResult<Json<WorkerView>> {
    Ok(Json(WorkerView::from(&w.map_err(not_found)?)))
}

/// `POST /api/workers`: 201 with the worker (usually `pending`, its address comes once it runs).
pub async fn launch(
    State(s): State<AppState>,
    Caller(caller): Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let req: LaunchRequest = parse_json(&body)?;
    let w = s.workers.launch(&s.db, &caller, &req).await?;
    Ok((StatusCode::CREATED, Json(WorkerView::from(&w))).into_response())
}

/// `GET /api/workers`: yours (admins: everyone's), live ones and those ended in the last day.
pub async fn list(
    State(s): State<AppState>,
    Caller(caller): Caller,
) -> ApiResult<Json<Vec<WorkerView>>> {
    let all = s.workers.list(&s.db, &caller).await?;
    Ok(Json(all.iter().map(WorkerView::from).collect()))
}

/// `GET /api/workers/{name}`.
pub async fn show(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<WorkerView>> {
    shown(s.workers.visible(&s.db, &caller, &name).await)
}

/// The body of `POST /api/workers/{name}/extend`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtendBody {
    /// How much later, such as `2h`.
    by: String,
}

/// `POST /api/workers/{name}/extend`.
pub async fn extend(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<WorkerView>> {
    s.workers
        .visible(&s.db, &caller, &name)
        .await
        .map_err(not_found)?;
    let b: ExtendBody = parse_json(&body)?;
    shown(s.workers.extend(&s.db, &caller, &name, &b.by).await)
}

/// `DELETE /api/workers/{name}`: ends it now.
pub async fn terminate(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<WorkerView>> {
    shown(
        s.workers
            .terminate(&s.db, &*s.notifier, &caller, &name)
            .await,
    )
}

/// A user as `/api/me` shows them.
fn profile(u: &crate::server::db::User, notify: &NotifySpec) -> Json<serde_json::Value> {
    Json(json!({"name": u.name, "admin": u.is_admin, "notify": notify}))
}

/// `GET /api/me`: who you are and your notification defaults.
pub async fn me(
    State(s): State<AppState>,
    Caller(caller): Caller,
) -> ApiResult<Json<serde_json::Value>> {
    let notify = s.db.user_notify(&caller.name).await?;
    Ok(profile(&caller, &notify))
}

/// The body of `PUT /api/me`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileBody {
    /// Where notifications about your workers go unless a launch says otherwise.
    notify: NotifySpec,
}

/// `PUT /api/me`: sets your notification defaults.
pub async fn set_me(
    State(s): State<AppState>,
    Caller(caller): Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<serde_json::Value>> {
    let b: ProfileBody = parse_json(&body)?;
    b.notify
        .validate()
        .map_err(crate::server::app::jobs::JobError::from)?;
    s.db.set_user_notify(&caller.name, &b.notify).await?;
    Ok(profile(&caller, &b.notify))
}
