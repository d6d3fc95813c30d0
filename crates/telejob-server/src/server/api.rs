//! The JSON API under `/api`, plus `/healthz`, `/metrics` and the OpenAPI document.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::Utc;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use telejob_core::job::{JobName, JobSpec, ValidationLimits};
use telejob_core::pipeline::RunStores;
use telejob_core::run::{Run, RunId};
use telejob_core::scheduler::Scheduler;
use telejob_core::store::PutOptions;
use tokio::io::AsyncWriteExt;

use super::auth::{Caller, Tokens};
use super::db::{Db, JobRow, User};
use super::metrics::Metrics;

/// Shared by every handler.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The database.
    pub db: Db,
    /// Token checks.
    pub tokens: Tokens,
    /// The scheduler.
    pub scheduler: Scheduler,
    /// Where code, logs and output live.
    pub stores: RunStores,
    /// Validation bounds.
    pub limits: ValidationLimits,
    /// Largest code upload.
    pub max_code_bytes: u64,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Dashboard sessions.
    pub sessions: super::ui::session::Sessions,
}

/// An API error: a status, one line, the offending field, and every field problem.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    field: Option<String>,
    errors: Vec<(String, String)>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            field: None,
            errors: Vec::new(),
        }
    }
    /// 401.
    pub fn unauthorized(m: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, m)
    }
    fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("no such {what}"))
    }
    fn forbidden(m: &str) -> Self {
        Self::new(StatusCode::FORBIDDEN, m)
    }
    fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, m)
    }
    fn invalid(field: &str, m: impl Into<String>) -> Self {
        let m = m.into();
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: format!("{field}: {m}"),
            field: Some(field.to_string()),
            errors: vec![(field.to_string(), m)],
        }
    }
    fn from_validation(e: &telejob_core::Error) -> Self {
        let errors: Vec<(String, String)> = e
            .field_errors()
            .into_iter()
            .map(|(f, r)| (f.to_string(), r.to_string()))
            .collect();
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: e.to_string(),
            field: errors.first().map(|(f, _)| f.clone()),
            errors,
        }
    }
}

impl From<telejob_core::Error> for ApiError {
    fn from(e: telejob_core::Error) -> Self {
        match &e {
            telejob_core::Error::InvalidJob { .. } | telejob_core::Error::InvalidJobs(_) => {
                Self::from_validation(&e)
            }
            telejob_core::Error::NotFound(what) => {
                Self::new(StatusCode::NOT_FOUND, format!("not found: {what}"))
            }
            _ => {
                tracing::error!(error = %e, "request failed");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        match e.downcast::<telejob_core::Error>() {
            Ok(core) => core.into(),
            Err(e) => Self::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let errors: Vec<_> = self
            .errors
            .iter()
            .map(|(f, m)| json!({"field": f, "message": m}))
            .collect();
        let body = json!({"error": self.message, "field": self.field, "errors": errors});
        (self.status, Json(body)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The routes.
pub fn router(state: AppState) -> Router {
    let code_limit = usize::try_from(state.max_code_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(1);
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/metrics", get(metrics))
        .route("/api/openapi.json", get(openapi))
        .route("/api/jobs", get(list_jobs).post(create_job))
        .route(
            "/api/jobs/{name}",
            get(show_job).put(update_job).delete(delete_job),
        )
        .route(
            "/api/jobs/{name}/code",
            put(upload_code).layer(DefaultBodyLimit::max(code_limit)),
        )
        .route("/api/jobs/{name}/schedule", get(preview))
        .route("/api/jobs/{name}/pause", post(pause))
        .route("/api/jobs/{name}/resume", post(resume))
        .route("/api/jobs/{name}/runs", get(list_runs).post(run_now))
        .route("/api/runs/{id}", get(show_run))
        .route("/api/runs/{id}/log", get(run_log))
        .route("/api/runs/{id}/cancel", post(cancel_run))
        .route("/api/tokens", post(create_token))
        .layer(DefaultBodyLimit::max(1 << 20))
        .with_state(state)
}

async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    let counts = s.db.run_counts().await.unwrap_or_default();
    let body = s.metrics.render(
        &counts,
        s.scheduler.active_runs().values().map(Vec::len).sum(),
    );
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

/// Parses a JSON body into `T`, naming the field of a type error.
fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "the request body is empty: send a JSON object",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Syntax
            | serde_json::error::Category::Eof
            | serde_json::error::Category::Io => {
                ApiError::bad_request(format!("malformed JSON: {inner}"))
            }
            serde_json::error::Category::Data => {
                let field = if path == "." {
                    "body".to_string()
                } else {
                    path
                };
                ApiError::invalid(&field, inner.to_string())
            }
        }
    })
}

/// A job as the API shows it.
#[derive(Debug, Serialize)]
struct JobView {
    #[serde(flatten)]
    spec: JobSpec,
    owner: String,
    paused: bool,
    expired: bool,
    schedule_description: String,
    cron_line: String,
    next_run: Option<String>,
    code_sha256: Option<String>,
    created_at: String,
    updated_at: String,
}

fn view(s: &AppState, j: &JobRow) -> JobView {
    let compiled = j.spec.schedule.compile().ok();
    let name = JobName::new(j.spec.name.clone()).ok();
    JobView {
        spec: j.spec.clone(),
        owner: j.owner.clone(),
        paused: j.paused,
        expired: j.expired,
        schedule_description: compiled.as_ref().map(|c| c.describe()).unwrap_or_default(),
        cron_line: compiled.as_ref().map(|c| c.cron_line()).unwrap_or_default(),
        next_run: name
            .and_then(|n| s.scheduler.next_fire(&n))
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        code_sha256: j
            .code_key
            .as_ref()
            .and_then(|k| k.rsplit('/').next())
            .map(|f| f.trim_end_matches(".tar").to_string()),
        created_at: super::db::ts(j.created_at),
        updated_at: super::db::ts(j.updated_at),
    }
}

/// A job the caller may see, or 404.
async fn visible_job(s: &AppState, caller: &User, name: &str) -> ApiResult<JobRow> {
    match s.db.job(name).await? {
        Some(j) if j.can_see(caller) => Ok(j),
        _ => Err(ApiError::not_found("job")),
    }
}

/// A job the caller may manage: 404 if invisible, 403 if only visible.
async fn managed_job(s: &AppState, caller: &User, name: &str) -> ApiResult<JobRow> {
    let j = visible_job(s, caller, name).await?;
    if j.can_manage(caller) {
        Ok(j)
    } else {
        Err(ApiError::forbidden(
            "only the job's owner and maintainers may do this",
        ))
    }
}

async fn list_jobs(
    State(s): State<AppState>,
    Caller(caller): Caller,
) -> ApiResult<Json<Vec<JobView>>> {
    let jobs = s.db.jobs().await?;
    Ok(Json(
        jobs.iter()
            .filter(|j| j.can_see(&caller))
            .map(|j| view(&s, j))
            .collect(),
    ))
}

async fn create_job(
    State(s): State<AppState>,
    Caller(caller): Caller,
    body: Bytes,
) -> ApiResult<Response> {
    let spec: JobSpec = parse_json(&body)?;
    if spec.code.is_some() {
        return Err(ApiError::invalid(
            "code",
            "upload the code with PUT /api/jobs/{name}/code instead",
        ));
    }
    spec.validate(&s.limits)
        .map_err(|e| ApiError::from_validation(&e))?;
    let now = Utc::now();
    if !s.db.insert_job(&spec, &caller.name, now).await? {
        return Err(ApiError {
            field: Some("name".into()),
            ..ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "a job named {:?} exists already; choose another name",
                    spec.name
                ),
            )
        });
    }
    let row =
        s.db.job_fresh(&spec.name)
            .await?
            .ok_or_else(|| ApiError::not_found("job"))?;
    s.scheduler.upsert(row.state(false)).await?;
    Ok((StatusCode::CREATED, Json(view(&s, &row))).into_response())
}

async fn show_job(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let j = visible_job(&s, &caller, &name).await?;
    let mut v = serde_json::to_value(view(&s, &j)).unwrap_or_default();
    v["code_versions"] = serde_json::to_value(s.db.code_versions(&name).await?).unwrap_or_default();
    Ok(Json(v))
}

async fn update_job(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<JobView>> {
    let old = managed_job(&s, &caller, &name).await?;
    let spec: JobSpec = parse_json(&body)?;
    if spec.name != name {
        return Err(ApiError::invalid(
            "name",
            "a job cannot be renamed; create a new job instead",
        ));
    }
    if spec.code.is_some() {
        return Err(ApiError::invalid(
            "code",
            "upload the code with PUT /api/jobs/{name}/code instead",
        ));
    }
    spec.validate(&s.limits)
        .map_err(|e| ApiError::from_validation(&e))?;
    // Slots before the edit are not made up under the new schedule.
    let cursor = old.cursor.max(Utc::now());
    s.db.update_job_spec(&spec, cursor).await?;
    let row =
        s.db.job_fresh(&name)
            .await?
            .ok_or_else(|| ApiError::not_found("job"))?;
    s.scheduler
        .upsert(row.state(s.db.last_failed(&name).await?))
        .await?;
    Ok(Json(view(&s, &row)))
}

async fn delete_job(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    managed_job(&s, &caller, &name).await?;
    super::jobs::delete(&s, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn upload_code(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    let job = managed_job(&s, &caller, &name).await?;
    // Stream to a temporary file, hashing and counting.
    let tmp = tempfile::NamedTempFile::new()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let mut file = tokio::fs::File::from_std(
        tmp.reopen()
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
    );
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            if e.to_string().contains("length limit") {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the code is larger than {} bytes", s.max_code_bytes),
                )
            } else {
                ApiError::bad_request(format!("upload interrupted: {e}"))
            }
        })?;
        size += chunk.len() as u64;
        if size > s.max_code_bytes {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the code is larger than {} bytes; keep data out of the code tarball",
                    s.max_code_bytes
                ),
            ));
        }
        hasher.update(&chunk);
        file.write_all(&chunk)
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    }
    file.flush()
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    // It must at least be an archive telejob can open (the full check happens at unpack).
    let path = tmp.path().to_path_buf();
    let check = tokio::task::spawn_blocking(move || {
        let f = std::fs::File::open(&path)?;
        telejob_core::archive::open_tar(std::io::BufReader::new(f))
            .map(|(fmt, _)| fmt)
            .map_err(anyhow::Error::from)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if let Err(e) = check {
        return Err(ApiError::invalid("code", format!("{e:#}")));
    }
    let sha = hex::encode(hasher.finalize());
    let key = super::jobs::code_key(&name, &sha);
    let reader = tokio::fs::File::open(tmp.path())
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    s.stores
        .private
        .put_stream(&key, Box::new(reader), PutOptions::default())
        .await?;
    s.db.add_code(&name, &sha, &key, size, &caller.name).await?;
    let mut row = job;
    row.code_key = Some(key.clone());
    s.scheduler
        .upsert(row.state(s.db.last_failed(&name).await?))
        .await?;
    Ok((
        StatusCode::OK,
        Json(json!({"sha256": sha, "size": size, "key": key})),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
struct NextQuery {
    next: Option<usize>,
}

async fn preview(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    Query(q): Query<NextQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let j = visible_job(&s, &caller, &name).await?;
    let n = q.next.unwrap_or(5);
    if !(1..=1000).contains(&n) {
        return Err(ApiError::invalid("next", "use 1 to 1000"));
    }
    let sched = j.spec.schedule.compile()?;
    let from = Utc::now().max(j.spec.start_at.unwrap_or_default());
    let times: Vec<String> = sched
        .iter_after(from)
        .take_while(|t| j.spec.end_at.is_none_or(|e| *t <= e))
        .take(n)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .collect();
    Ok(Json(
        json!({"description": sched.describe(), "cron": sched.cron_line(), "next": times}),
    ))
}

async fn pause(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<JobView>> {
    set_paused(s, caller, name, true).await
}

async fn resume(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<JobView>> {
    set_paused(s, caller, name, false).await
}

async fn set_paused(
    s: AppState,
    caller: User,
    name: String,
    paused: bool,
) -> ApiResult<Json<JobView>> {
    managed_job(&s, &caller, &name).await?;
    super::jobs::set_paused(&s, &name, paused).await?;
    let row =
        s.db.job_fresh(&name)
            .await?
            .ok_or_else(|| ApiError::not_found("job"))?;
    Ok(Json(view(&s, &row)))
}

async fn run_now(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let j = managed_job(&s, &caller, &name).await?;
    if j.code_key.is_none() {
        return Err(ApiError::invalid(
            "code",
            "the job has no code yet: upload a tarball with PUT /api/jobs/{name}/code",
        ));
    }
    let id = s.scheduler.run_now(&JobName::new(name)?).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"run_id": id}))).into_response())
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    limit: Option<i64>,
}

#[derive(Debug, Serialize)]
struct RunView {
    #[serde(flatten)]
    run: Run,
    trigger: String,
}

async fn list_runs(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<RunView>>> {
    visible_job(&s, &caller, &name).await?;
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let runs = s.db.runs_of(&name, limit).await?;
    Ok(Json(
        runs.into_iter()
            .map(|(run, trigger)| RunView { run, trigger })
            .collect(),
    ))
}

#[derive(Debug, Deserialize)]
struct WaitQuery {
    /// Seconds to wait for the run to finish (long poll), at most 300.
    wait: Option<u64>,
}

async fn run_and_job(s: &AppState, caller: &User, id: &str) -> ApiResult<(Run, String, JobRow)> {
    let (run, trigger) =
        s.db.run(id)
            .await?
            .ok_or_else(|| ApiError::not_found("run"))?;
    let job = visible_job(s, caller, run.job.as_str())
        .await
        .map_err(|_| ApiError::not_found("run"))?;
    Ok((run, trigger, job))
}

async fn show_run(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
) -> ApiResult<Json<RunView>> {
    let (mut run, mut trigger, _) = run_and_job(&s, &caller, &id).await?;
    let deadline =
        tokio::time::Instant::now() + std::time::Duration::from_secs(q.wait.unwrap_or(0).min(300));
    // Long poll: re-read until the run ends or the deadline passes.
    while !run.state.is_terminal() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        (run, trigger) =
            s.db.run(&id)
                .await?
                .ok_or_else(|| ApiError::not_found("run"))?;
    }
    Ok(Json(RunView { run, trigger }))
}

async fn run_log(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (run, _, job) = run_and_job(&s, &caller, &id).await?;
    if !job.can_manage(&caller) {
        return Err(ApiError::forbidden(
            "only the job's owner and maintainers may read its logs",
        ));
    }
    let key = run
        .log_key
        .ok_or_else(|| ApiError::not_found("log (the run has not produced one yet)"))?;
    let body = s.stores.private.get(&key).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}

async fn cancel_run(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let (run, _, job) = run_and_job(&s, &caller, &id).await?;
    if !job.can_manage(&caller) {
        return Err(ApiError::forbidden(
            "only the job's owner and maintainers may cancel its runs",
        ));
    }
    if !run.state.is_terminal() {
        s.scheduler
            .cancel_run(&RunId::parse(&id).ok_or_else(|| ApiError::not_found("run"))?)
            .await?;
    }
    Ok(StatusCode::ACCEPTED)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    user: String,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    label: Option<String>,
}

async fn create_token(
    State(s): State<AppState>,
    Caller(caller): Caller,
    body: Bytes,
) -> ApiResult<Response> {
    if !caller.is_admin {
        return Err(ApiError::forbidden("only admins may create tokens"));
    }
    let req: TokenRequest = parse_json(&body)?;
    telejob_core::job::validate_user_name(&req.user)
        .map_err(|e| ApiError::invalid("user", e.to_string()))?;
    let token = s
        .tokens
        .create(&s.db, &req.user, req.admin, req.label.as_deref())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"user": req.user, "token": token})),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_openapi_document_lists_every_route() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("openapi.json")).expect("valid JSON");
        let all = include_str!("api.rs");
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
