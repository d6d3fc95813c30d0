//! `/api/jobs…`: thin adapters over [`crate::server::app::jobs`].

use axum::Json;
use axum::body::Body;
use axum::extract::State;

use super::body::ApiPath as Path;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::json;
use telejob_core::job::JobSpec;

use super::body::{ApiQuery, JsonBody, parse_json};
use super::caller::Caller;
use super::error::{ApiError, ApiResult};
use crate::server::app::jobs;
use crate::server::app::state::AppState;
use crate::server::db::secret_box::SecretChanges;
use crate::server::db::{JobRow, ts};

/// A job as the API shows it.
#[derive(Debug, Serialize)]
pub struct JobView {
    #[serde(flatten)]
    spec: JobSpec,
    owner: String,
    paused: bool,
    expired: bool,
    schedule_description: String,
    cron_line: String,
    next_run: Option<String>,
    code_sha256: Option<String>,
    /// What the current code says about the command: its runs will fail.
    code_warnings: Vec<telejob_core::advice::Warning>,
    created_at: String,
    updated_at: String,
}

fn view(s: &AppState, j: &JobRow) -> JobView {
    let compiled = j.spec.schedule.compile().ok();
    JobView {
        spec: j.spec.clone(),
        owner: j.owner.clone(),
        paused: j.paused,
        expired: j.expired,
        schedule_description: compiled.as_ref().map(|c| c.describe()).unwrap_or_default(),
        cron_line: compiled.as_ref().map(|c| c.cron_line()).unwrap_or_default(),
        next_run: s
            .cluster
            .next_fire(j)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        code_sha256: j
            .code_key
            .as_ref()
            .and_then(|k| k.rsplit('/').next())
            .map(|f| f.trim_end_matches(".tar").to_string()),
        code_warnings: j.code_warnings.clone(),
        created_at: ts(j.created_at),
        updated_at: ts(j.updated_at),
    }
}

/// `GET /api/jobs`.
pub async fn list(
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

/// `GET /api/jobs/{name}/files`: what the job has published (its output store's `<job>/data/`),
/// with sizes, times and hashes; links under `/public/` for public jobs.
pub async fn files(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<crate::server::app::published::Listed>>> {
    let j = jobs::visible(&s, &caller, &name).await?;
    let public = j.spec.output_visibility == telejob_core::job::Visibility::Public;
    let store = if public {
        s.stores.public.as_ref()
    } else {
        s.stores.private.as_ref()
    };
    let job = telejob_core::job::JobName::new(j.spec.name.clone())?;
    let prefix = telejob_core::run::keys::data_prefix(&job);
    let mut rows = crate::server::app::published::listing(store, &name, &prefix)
        .await
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the output store cannot be listed now; try again",
            )
        })?;
    if !public {
        for r in &mut rows {
            r.href = None;
        }
    }
    Ok(Json(rows))
}

/// `POST /api/jobs`.
pub async fn create(
    State(s): State<AppState>,
    Caller(caller): Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let (spec, secrets) = spec_and_secrets(&body)?;
    let row = jobs::create(&s, &caller, &spec, None, &secrets).await?;
    let v = saved_view(&s, &row).await?;
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

/// A job body: the spec's fields, and `secrets` (name → value, or `null` to remove one), which
/// is not part of the spec: it is stored apart, encrypted, and never shown again.
fn spec_and_secrets(body: &[u8]) -> ApiResult<(JobSpec, SecretChanges)> {
    let mut fields: serde_json::Map<String, serde_json::Value> = parse_json(body)?;
    let secrets = match fields.remove("secrets") {
        None | Some(serde_json::Value::Null) => SecretChanges::new(),
        Some(v) => serde_json::from_value(v).map_err(|e| {
            ApiError::from(jobs::JobError::Invalid(telejob_core::Error::invalid(
                "secrets",
                format!("{e}: give an object of NAME: \"value\" (or null to remove one)"),
            )))
        })?,
    };
    let rest = serde_json::to_vec(&fields).unwrap_or_default();
    Ok((parse_json(&rest)?, secrets))
}

/// The view with what only one job's page shows: its code versions and its secrets' names.
async fn full_view(s: &AppState, j: &JobRow) -> ApiResult<serde_json::Value> {
    let mut v = serde_json::to_value(view(s, j)).unwrap_or_default();
    v["code_versions"] =
        serde_json::to_value(s.db.code_versions(&j.spec.name).await?).unwrap_or_default();
    v["secrets"] = serde_json::to_value(s.db.secret_names(&j.spec.name).await?).unwrap_or_default();
    Ok(v)
}

/// The answer to a save: the full view and the spec's warnings (a history that cannot be read
/// only leaves out the warnings that need it).
async fn saved_view(s: &AppState, j: &JobRow) -> ApiResult<serde_json::Value> {
    let mut v = full_view(s, j).await?;
    let usual = s.db.usual(&j.spec.name).await.unwrap_or_default();
    v["warnings"] = json!(s.advisor.warnings(usual, &j.spec, &s.limits));
    Ok(v)
}

/// `GET /api/jobs/{name}`.
pub async fn show(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let j = jobs::visible(&s, &caller, &name).await?;
    Ok(Json(full_view(&s, &j).await?))
}

/// The job as it is (the caller must manage it: rights before the body, so that a caller who
/// may not edit learns nothing from it) and the body's settings, GET's read-only fields left out.
async fn edit(
    s: &AppState,
    caller: &crate::server::db::User,
    name: &str,
    body: &[u8],
) -> ApiResult<(JobRow, serde_json::Map<String, serde_json::Value>)> {
    let before = jobs::managed(s, caller, name).await?;
    Ok((before, jobs::without_view_fields(parse_json(body)?)))
}

/// What a replace reset: each setting of `before` that `sent` left out and `after` changed.
fn reset_warnings(before: &JobSpec, after: &JobSpec, sent: &[String]) -> Vec<serde_json::Value> {
    let (old, new) = (
        serde_json::to_value(before).unwrap_or_default(),
        serde_json::to_value(after).unwrap_or_default(),
    );
    old.as_object()
        .into_iter()
        .flatten()
        .filter(|(field, was)| !sent.contains(field) && new.get(field.as_str()) != Some(was))
        .map(|(field, was)| {
            json!({
                "field": field,
                "message": format!(
                    "not in the body, so reset to its default (it was {was}); PUT replaces the whole job, PATCH changes only what it names"
                ),
            })
        })
        .collect()
}

/// `PUT /api/jobs/{name}`.
pub async fn update(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<serde_json::Value>> {
    let (before, fields) = edit(&s, &caller, &name, &body).await?;
    let sent: Vec<String> = fields.keys().cloned().collect();
    let (spec, secrets) = spec_and_secrets(&serde_json::to_vec(&fields).unwrap_or_default())?;
    let row = jobs::update(&s, &caller, &name, &spec, None, &secrets).await?;
    let mut v = saved_view(&s, &row).await?;
    if let Some(warnings) = v["warnings"].as_array_mut() {
        warnings.extend(reset_warnings(&before.spec, &row.spec, &sent));
    }
    Ok(Json(v))
}

/// `PATCH /api/jobs/{name}`: a JSON Merge Patch (RFC 7396) over the job as it is: what the body
/// names changes (`null` removes), everything else stays. `secrets` changes only the secrets it
/// names.
pub async fn patch(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<serde_json::Value>> {
    let (before, mut changes) = edit(&s, &caller, &name, &body).await?;
    let secrets = changes.remove("secrets");
    let mut merged = serde_json::to_value(&before.spec).unwrap_or_default();
    json_patch::merge(&mut merged, &serde_json::Value::Object(changes));
    if let Some(sec) = secrets {
        merged["secrets"] = sec;
    }
    let (spec, secrets) = spec_and_secrets(&serde_json::to_vec(&merged).unwrap_or_default())?;
    if spec.name != name {
        return Err(ApiError::invalid(
            "name",
            "a job is renamed by creating the new one and deleting the old",
        ));
    }
    let row = jobs::update(&s, &caller, &name, &spec, None, &secrets).await?;
    Ok(Json(saved_view(&s, &row).await?))
}

#[derive(Debug, Deserialize)]
pub struct DeleteQuery {
    #[serde(default)]
    public_data: jobs::PublicData,
}

/// `DELETE /api/jobs/{name}?public_data=keep|purge`.
pub async fn delete(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> ApiResult<StatusCode> {
    jobs::delete(&s, &caller, &name, q.public_data).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/tombstones`: deleted jobs whose names are reserved (admins see all, others their
/// own).
pub async fn tombstones(
    State(s): State<AppState>,
    Caller(caller): Caller,
) -> ApiResult<Json<Vec<crate::server::db::Tombstone>>> {
    let all = s.db.tombstones().await?;
    Ok(Json(
        all.into_iter()
            .filter(|t| caller.is_admin || t.owner == caller.name)
            .collect(),
    ))
}

/// `DELETE /api/tombstones/{name}` (admins): purge the kept data, free the name.
pub async fn release(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    jobs::release(&s, &caller, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /api/jobs/{name}/code`: the body is the tarball. A declared length over the limit is
/// refused before a byte is read (`Expect: 100-continue` is answered 413, not 100).
pub async fn upload_code(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > s.max_code_bytes) {
        return Err(jobs::JobError::TooLarge(s.max_code_bytes).into());
    }
    jobs::managed(&s, &caller, &name).await?;
    let mut staged =
        jobs::stage_stream(body.into_data_stream(), s.max_code_bytes, &s.uploads).await?;
    // `Content-Disposition: attachment; filename="slowsql-0.3.tar.gz"` names the version.
    if let Some(name) = headers
        .get(header::CONTENT_DISPOSITION)
        .and_then(|v| v.to_str().ok())
        .and_then(upload_file_name)
    {
        staged = staged.named(&name);
    }
    let stored = jobs::upload_code(&s, &caller, &name, staged).await?;
    Ok((StatusCode::OK, Json(stored)).into_response())
}

/// The file name of a `Content-Disposition` value: `filename*` (RFC 5987: `UTF-8''` and
/// percent-encoded) over `filename` (quoted or not).
fn upload_file_name(v: &str) -> Option<String> {
    let params: Vec<(&str, &str)> = v
        .split(';')
        .filter_map(|p| p.trim().split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let extended = params.iter().find_map(|(k, v)| {
        let rest = k.eq_ignore_ascii_case("filename*").then_some(*v)?;
        let (charset, encoded) = rest.split_once("''")?;
        if !charset.eq_ignore_ascii_case("utf-8") {
            return None;
        }
        form_urlencoded::parse(format!("n={encoded}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    });
    extended.or_else(|| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("filename"))
            .map(|(_, v)| v.trim_matches('"').to_string())
    })
}

#[cfg(test)]
#[test]
fn an_uploads_file_name_is_read_from_either_parameter() {
    assert_eq!(
        upload_file_name("attachment; filename=\"nave/\"; filename*=UTF-8''na%C3%AFve%2F")
            .as_deref(),
        Some("naïve/")
    );
    assert_eq!(
        upload_file_name("attachment; filename=\"slowsql-0.3.tar.gz\"").as_deref(),
        Some("slowsql-0.3.tar.gz")
    );
    assert_eq!(upload_file_name("inline"), None);
}

#[derive(Debug, Deserialize)]
pub struct NextQuery {
    next: Option<usize>,
}

/// `GET /api/jobs/{name}/schedule?next=N`.
pub async fn preview(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<NextQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let j = jobs::visible(&s, &caller, &name).await?;
    let n = q.next.unwrap_or(5);
    if !(1..=1000).contains(&n) {
        return Err(ApiError::bad_field("next", "use 1 to 1000"));
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

/// `POST /api/jobs/{name}/pause` (`PAUSED`) and `…/resume` (not `PAUSED`).
pub async fn set_paused<const PAUSED: bool>(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<JobView>> {
    let row = jobs::set_paused(&s, &caller, &name, PAUSED).await?;
    Ok(Json(view(&s, &row)))
}

/// `POST /api/jobs/{name}/runs`: run now.
pub async fn run_now(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let id = jobs::run_now(&s, &caller, &name).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"run_id": id}))).into_response())
}

/// The body of `POST /api/jobs/{name}/backfill` (and the query of its `GET`, a dry run).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillBody {
    /// The first day, `YYYY-MM-DD` in the job's time zone.
    from: String,
    /// The last day, included.
    to: String,
    /// `missed`, `failed` or `missed,failed` (default both).
    #[serde(default)]
    only: Option<String>,
    /// Run slots that succeeded too.
    #[serde(default)]
    force: bool,
    /// Only these slots of the range.
    #[serde(default)]
    slots: Option<Vec<chrono::DateTime<Utc>>>,
    /// Plan only.
    #[serde(default)]
    dry_run: bool,
}

impl BackfillBody {
    fn request(&self) -> ApiResult<telejob_core::scheduler::backfill::BackfillRequest> {
        use telejob_core::scheduler::backfill::{BackfillRequest, parse_date};
        let invalid = |e: telejob_core::Error| ApiError::from(jobs::JobError::Invalid(e));
        let from = parse_date("from", &self.from).map_err(invalid)?;
        let to = parse_date("to", &self.to).map_err(invalid)?;
        let mut req = BackfillRequest::new(from, to);
        if let Some(only) = &self.only {
            req = req.with_only(only).map_err(invalid)?;
        }
        req.force = self.force;
        req.slots.clone_from(&self.slots);
        Ok(req)
    }
}

/// `POST /api/jobs/{name}/backfill`: runs the missed and failed slots of a date range (202), or
/// plans them (`dry_run`, 200).
pub async fn backfill(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    // Rights before the body, so that a caller who may not see the job learns nothing from it.
    jobs::visible(&s, &caller, &name).await?;
    let b: BackfillBody = parse_json(&body)?;
    let out = jobs::backfill(&s, &caller, &name, &b.request()?, b.dry_run).await?;
    let code = if b.dry_run {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((code, Json(out)).into_response())
}

/// `GET /api/jobs/{name}/backfill?from=…&to=…`: the plan of a backfill, running nothing.
pub async fn backfill_plan(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<BackfillQuery>,
) -> ApiResult<Json<jobs::Backfill>> {
    let b = BackfillBody {
        from: q.from,
        to: q.to,
        only: q.only,
        force: q.force.unwrap_or(false),
        slots: None,
        dry_run: true,
    };
    Ok(Json(
        jobs::backfill(&s, &caller, &name, &b.request()?, true).await?,
    ))
}

/// The query of `GET /api/jobs/{name}/backfill`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillQuery {
    from: String,
    to: String,
    only: Option<String>,
    force: Option<bool>,
}
