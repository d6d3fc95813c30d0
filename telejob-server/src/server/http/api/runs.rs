//! `/api/runs…` and a job's run list.

use axum::Json;
use axum::extract::State;

use super::body::ApiPath as Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use telejob_core::run::Run;

use super::body::ApiQuery;
use super::caller::Caller;
use super::error::{ApiError, ApiResult};
use crate::server::app::jobs;
use crate::server::app::state::AppState;
use crate::server::db::{JobRow, User};

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    limit: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct RunView {
    #[serde(flatten)]
    run: Run,
    trigger: String,
    /// Set once the run passed its job's usual duration by the margin.
    #[serde(skip_serializing_if = "Option::is_none")]
    late: Option<crate::server::db::LateMark>,
    /// A recorded run waiting for a run slot: its place in the queue (on the leader, which
    /// holds the queue; `GET /api/runs/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    queue: Option<telejob_core::scheduler::QueuePosition>,
}

/// `GET /api/jobs/{name}/runs`.
pub async fn list(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Vec<RunView>>> {
    jobs::visible(&s, &caller, &name).await?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_field("limit", "use 1 to 1000"));
    }
    let runs = s.db.runs_of(&name, limit).await?;
    let mut late = s.db.late_marks(&name).await?;
    Ok(Json(
        runs.into_iter()
            .map(|(run, trigger)| RunView {
                late: late.remove(run.id.as_str()),
                run,
                trigger,
                queue: None,
            })
            .collect(),
    ))
}

#[derive(Debug, Deserialize)]
pub struct WaitQuery {
    /// Seconds to wait for the run to finish (long poll), at most 300.
    wait: Option<u64>,
}

async fn run_and_job(s: &AppState, caller: &User, id: &str) -> ApiResult<(Run, String, JobRow)> {
    let (run, trigger) =
        s.db.run(id)
            .await?
            .ok_or_else(|| ApiError::not_found("run"))?;
    let job = jobs::visible(s, caller, run.job.as_str())
        .await
        .map_err(|_| ApiError::not_found("run"))?;
    Ok((run, trigger, job))
}

/// `GET /api/runs/{id}`.
pub async fn show(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<WaitQuery>,
) -> ApiResult<Json<RunView>> {
    let wait = q.wait.unwrap_or(0);
    if wait > 300 {
        return Err(ApiError::bad_field("wait", "wait at most 300 seconds"));
    }
    let (mut run, mut trigger, _) = run_and_job(&s, &caller, &id).await?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(wait);
    // Long poll: re-read until the run ends or the deadline passes.
    while !run.state.is_terminal() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        (run, trigger) =
            s.db.run(&id)
                .await?
                .ok_or_else(|| ApiError::not_found("run"))?;
    }
    let late = s.db.late_mark(&id).await?;
    let queue = jobs::queue_position(&s, &run);
    Ok(Json(RunView {
        run,
        trigger,
        late,
        queue,
    }))
}

#[derive(Debug, Deserialize)]
pub struct LogQuery {
    /// Stream the log as the run prints, ending with the run.
    follow: Option<bool>,
}

/// `GET /api/runs/{id}/log[?follow=true]`: the log so far (a run in flight has one a few
/// seconds behind), or followed until the run ends.
pub async fn log(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> ApiResult<Response> {
    let (run, _, job) = run_and_job(&s, &caller, &id).await?;
    if !job.can_manage(&caller) {
        return Err(ApiError::forbidden(
            "only the job's owner and maintainers may read its logs",
        ));
    }
    crate::server::http::log_response(&s, run, q.follow == Some(true), 0)
        .await?
        .ok_or_else(|| ApiError::not_found("log (the run has not printed yet)"))
}

/// `POST /api/runs/{id}/cancel`.
pub async fn cancel(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    jobs::cancel_run(&s, &caller, &id)
        .await
        .map_err(|e| match e {
            jobs::JobError::NotFound => ApiError::not_found("run"),
            jobs::JobError::Forbidden => {
                ApiError::forbidden("only the job's owner and maintainers may cancel its runs")
            }
            e => e.into(),
        })?;
    Ok(StatusCode::ACCEPTED)
}

/// `POST /api/runs/{id}/replay`: a new run of exactly what run `id` ran.
pub async fn replay(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let new = jobs::replay(&s, &caller, &id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"run_id": new, "replay_of": id})),
    )
        .into_response())
}
