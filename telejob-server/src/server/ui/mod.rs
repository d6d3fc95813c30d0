//! The web dashboard, served by `telejob serve` itself: sign in, the job list, the "Schedule a
//! Job" form, job and run pages. Same validation and owner rules as the API.

mod backfill;
mod form;
mod insight;
mod pages;
pub mod session;
mod workers;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::Utc;
use maud::Markup;
use serde::Deserialize;
use telejob_core::run::RunId;

use self::form::JobForm;
use self::session::{Browser, check_post};
use super::db::JobRow;
use super::jobs::{self, JobError, StagedCode};
use super::state::AppState;

/// The dashboard's routes.
pub fn router(state: AppState) -> Router {
    let code_limit = usize::try_from(state.max_code_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(64 * 1024);
    Router::new()
        .route("/", get(index))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/jobs/new", get(new_job))
        .route(
            "/jobs",
            post(create_job).layer(DefaultBodyLimit::max(code_limit)),
        )
        .route("/jobs/{name}", get(job_page))
        .route(
            "/jobs/{name}/edit",
            get(edit_page)
                .post(save_edit)
                .layer(DefaultBodyLimit::max(code_limit)),
        )
        .route(
            "/jobs/{name}/backfill",
            get(backfill::page_get).post(backfill::run),
        )
        .route("/jobs/{name}/{action}", post(job_action))
        .route("/runs/{id}", get(run_page))
        .route("/workers", get(workers::page_get).post(workers::launch))
        .route("/workers/{name}/{action}", post(workers::action))
        .route("/ui/preview", get(preview))
        .route("/ui/app.js", get(app_js))
        .route("/public/{*path}", get(public_file))
        .route("/example/slowsql.tar.gz", get(example_tarball))
        .with_state(state)
}

/// Scripts only from this origin (`/ui/app.js`), never inline; no framing.
const CSP: &str = "default-src 'self'; style-src 'unsafe-inline'; script-src 'self'; \
                   object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// `/ui/app.js`.
async fn app_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        pages::APP_JS,
    )
        .into_response()
}

fn page(m: Markup) -> Response {
    ([(header::CONTENT_SECURITY_POLICY, CSP)], m).into_response()
}

fn forbidden(b: &Browser, text: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        page(pages::message(
            Some(&b.session.user.name),
            Some(&b.session.csrf),
            "Not allowed",
            text,
        )),
    )
        .into_response()
}

fn stale_form(b: &Browser) -> Response {
    forbidden(
        b,
        "The form was stale or came from another site; reload the page and try again.",
    )
}

/// The page for a job operation that did not happen (other than a form's field errors).
fn job_error(b: &Browser, e: JobError) -> Response {
    match e {
        JobError::NotFound => not_found(b),
        JobError::Forbidden => forbidden(b, "Only the job's owner and maintainers may do this."),
        e => (
            StatusCode::INTERNAL_SERVER_ERROR,
            page(pages::message(
                Some(&b.session.user.name),
                Some(&b.session.csrf),
                "That did not work",
                &e.to_string(),
            )),
        )
            .into_response(),
    }
}

/// The job, if the signed-in user may manage it; otherwise the 404 (invisible) or 403 page.
async fn managed_job(s: &AppState, b: &Browser, name: &str) -> Result<JobRow, Response> {
    jobs::managed(s, &b.session.user, name)
        .await
        .map_err(|e| job_error(b, e))
}

/// A job saved whose uploaded code draws a warning: said once, with the way on to its page.
fn saved_with_warnings(
    b: &Browser,
    name: &str,
    warnings: &[telejob_core::advice::Warning],
    created: bool,
) -> Response {
    page(pages::saved_with_warnings(
        &b.session.user.name,
        &b.session.csrf,
        name,
        warnings,
        created,
    ))
}

fn not_found(b: &Browser) -> Response {
    (
        StatusCode::NOT_FOUND,
        page(pages::message(
            Some(&b.session.user.name),
            Some(&b.session.csrf),
            "Not found",
            "There is nothing here for you.",
        )),
    )
        .into_response()
}

async fn index(State(s): State<AppState>, b: Browser) -> Response {
    let mut rows = Vec::new();
    for j in s.db.jobs().await.unwrap_or_default() {
        if !j.can_see(&b.session.user) {
            continue;
        }
        let words = j
            .spec
            .schedule
            .compile()
            .map(|c| c.describe())
            .unwrap_or_default();
        let next = s
            .cluster
            .next_fire(&j)
            .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string());
        let last =
            s.db.runs_of(&j.spec.name, 1)
                .await
                .ok()
                .and_then(|v| v.into_iter().next())
                .map(|(r, _)| r);
        rows.push((j, words, next, last));
    }
    let late = s.db.jobs_running_late().await.unwrap_or_default();
    page(pages::jobs(
        &b.session.user.name,
        &b.session.csrf,
        &rows,
        &late,
    ))
}

async fn login_page() -> Response {
    page(pages::login(None))
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(
    State(s): State<AppState>,
    headers: HeaderMap,
    axum::Form(f): axum::Form<LoginForm>,
) -> Response {
    // No signing in from another site's form (login CSRF).
    if !session::same_origin(&headers) {
        return (
            StatusCode::FORBIDDEN,
            page(pages::login(Some(
                "Sign in from this page, not from another site.",
            ))),
        )
            .into_response();
    }
    match s.tokens.check(&s.db, f.token.trim()).await {
        Some(user) => match s.sessions.start(&user).await {
            Ok(id) => (
                [(header::SET_COOKIE, session::cookie(&id))],
                Redirect::to("/"),
            )
                .into_response(),
            Err(e) => {
                tracing::error!(error = %e, "sign-in refused");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    page(pages::login(Some(
                        "The server cannot start a session now; try again later.",
                    ))),
                )
                    .into_response()
            }
        },
        None => (
            StatusCode::UNAUTHORIZED,
            page(pages::login(Some("That token is not known here."))),
        )
            .into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(s): State<AppState>,
    b: Browser,
    headers: HeaderMap,
    axum::Form(f): axum::Form<CsrfForm>,
) -> Response {
    if !check_post(&headers, &b.session, &f.csrf) {
        return stale_form(&b);
    }
    s.sessions.end(&b.id).await;
    (
        [(header::SET_COOKIE, session::clear_cookie())],
        Redirect::to("/login"),
    )
        .into_response()
}

async fn new_job(b: Browser) -> Response {
    page(pages::job_form(
        &b.session.user.name,
        &b.session.csrf,
        &JobForm::defaults(),
        None,
        None,
    ))
}

/// The submitted form: its fields, the uploaded tarball (if any), its CSRF token.
async fn read_form(s: &AppState, mut mp: Multipart) -> (JobForm, Option<StagedCode>, String) {
    let mut f = JobForm::defaults();
    f.values.remove("retry_on_timeout");
    let mut code: Option<Bytes> = None;
    let mut csrf = String::new();
    loop {
        match mp.next_field().await {
            Ok(Some(field)) => {
                let name = field.name().unwrap_or_default().to_string();
                if name == "code" {
                    let has_file = field.file_name().is_some_and(|n| !n.is_empty());
                    match field.bytes().await {
                        Ok(bytes) if has_file && !bytes.is_empty() => code = Some(bytes),
                        Ok(_) => {}
                        Err(e) => {
                            let too_big = e.status() == StatusCode::PAYLOAD_TOO_LARGE;
                            f.errors.insert(
                                "code".into(),
                                if too_big {
                                    format!("the tarball is larger than {} bytes", s.max_code_bytes)
                                } else {
                                    format!("upload failed: {e}")
                                },
                            );
                        }
                    }
                } else if let Ok(text) = field.text().await {
                    if name == "csrf" {
                        csrf = text;
                    } else {
                        f.values.insert(name, text);
                    }
                }
            }
            Ok(None) => break,
            Err(e) => {
                f.errors.insert(
                    "code".into(),
                    format!("the upload did not arrive whole: {e}"),
                );
                break;
            }
        }
    }
    let staged = match code {
        Some(c) => match jobs::stage_bytes(c, s.max_code_bytes).await {
            Ok(staged) => Some(staged),
            Err(e) => {
                f.errors.insert("code".into(), code_error(e));
                None
            }
        },
        None => None,
    };
    (f, staged, csrf)
}

/// A code-field message for a failed upload.
fn code_error(e: JobError) -> String {
    match e {
        JobError::Invalid(e) => e
            .field_errors()
            .first()
            .map_or_else(|| e.to_string(), |(_, m)| (*m).to_string()),
        e => e.to_string(),
    }
}

/// Shows a failed create or edit: field errors next to their fields, others above the form.
fn form_failed(b: &Browser, f: &mut JobForm, e: JobError, editing: Option<&str>) -> Response {
    match e {
        JobError::NameTaken(_) | JobError::NameReserved(_) => {
            f.errors.insert("name".into(), e.to_string());
            form_page(b, StatusCode::CONFLICT, f, None, editing)
        }
        JobError::Invalid(e) => {
            for (field, m) in e.field_errors() {
                f.errors.insert(field.to_string(), m.to_string());
            }
            form_page(b, StatusCode::UNPROCESSABLE_ENTITY, f, None, editing)
        }
        JobError::NotFound | JobError::Forbidden => job_error(b, e),
        e => form_page(
            b,
            StatusCode::INTERNAL_SERVER_ERROR,
            f,
            Some(&e.to_string()),
            editing,
        ),
    }
}

fn form_page(
    b: &Browser,
    status: StatusCode,
    f: &JobForm,
    general: Option<&str>,
    editing: Option<&str>,
) -> Response {
    (
        status,
        page(pages::job_form(
            &b.session.user.name,
            &b.session.csrf,
            f,
            general,
            editing,
        )),
    )
        .into_response()
}

async fn create_job(
    State(s): State<AppState>,
    b: Browser,
    headers: HeaderMap,
    mp: Multipart,
) -> Response {
    let (mut f, code, csrf) = read_form(&s, mp).await;
    if !check_post(&headers, &b.session, &csrf) {
        return stale_form(&b);
    }
    let spec = f.check(&s.limits);
    let secrets = f.secret_changes();
    if code.is_none() && !f.errors.contains_key("code") {
        f.errors
            .insert("code".into(), "choose the code tarball to upload".into());
    }
    let (Some(spec), Some(code), true) = (spec, code, f.errors.is_empty()) else {
        return form_page(&b, StatusCode::UNPROCESSABLE_ENTITY, &f, None, None);
    };
    let warnings = super::advice::script_warnings(code.path(), &spec.command).await;
    match jobs::create(&s, &b.session.user, &spec, Some(code), &secrets).await {
        Ok(_) if !warnings.is_empty() => saved_with_warnings(&b, &spec.name, &warnings, true),
        Ok(_) => Redirect::to(&format!("/jobs/{}?created=1", spec.name)).into_response(),
        Err(e) => form_failed(&b, &mut f, e, None),
    }
}

async fn edit_page(State(s): State<AppState>, b: Browser, Path(name): Path<String>) -> Response {
    let j = match managed_job(&s, &b, &name).await {
        Ok(j) => j,
        Err(r) => return r,
    };
    let mut f = JobForm::from_spec(&j.spec);
    if let Ok(names) = s.db.secret_names(&name).await {
        let names: Vec<String> = names
            .into_iter()
            .map(|i| format!("{} (set {})", i.name, i.set_at.format("%Y-%m-%d %H:%M UTC")))
            .collect();
        f.values.insert("secret_names".into(), names.join(", "));
    }
    form_page(&b, StatusCode::OK, &f, None, Some(&name))
}

async fn save_edit(
    State(s): State<AppState>,
    b: Browser,
    headers: HeaderMap,
    Path(name): Path<String>,
    mp: Multipart,
) -> Response {
    let (mut f, code, csrf) = read_form(&s, mp).await;
    if !check_post(&headers, &b.session, &csrf) {
        return stale_form(&b);
    }
    if let Err(r) = managed_job(&s, &b, &name).await {
        return r;
    }
    f.values.insert("name".into(), name.clone());
    let spec = f.check(&s.limits);
    let secrets = f.secret_changes();
    let (Some(spec), true) = (spec, f.errors.is_empty()) else {
        return form_page(&b, StatusCode::UNPROCESSABLE_ENTITY, &f, None, Some(&name));
    };
    let warnings = match &code {
        Some(c) => super::advice::script_warnings(c.path(), &spec.command).await,
        None => Vec::new(),
    };
    match jobs::update(&s, &b.session.user, &name, &spec, code, &secrets).await {
        Ok(_) if !warnings.is_empty() => saved_with_warnings(&b, &name, &warnings, false),
        Ok(_) => Redirect::to(&format!("/jobs/{name}")).into_response(),
        Err(e) => form_failed(&b, &mut f, e, Some(&name)),
    }
}

#[derive(Debug, Deserialize)]
struct JobQuery {
    created: Option<String>,
}

async fn job_page(
    State(s): State<AppState>,
    b: Browser,
    Path(name): Path<String>,
    Query(q): Query<JobQuery>,
) -> Response {
    let Ok(Some(j)) = s.db.job(&name).await else {
        return not_found(&b);
    };
    if !j.can_see(&b.session.user) {
        return not_found(&b);
    }
    let versions = s.db.code_versions(&name).await.unwrap_or_default();
    let runs = s.db.runs_of(&name, 50).await.unwrap_or_default();
    let next = s
        .cluster
        .next_fire(&j)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string());
    let late = s.db.late_marks(&name).await.unwrap_or_default();
    let usual = s.db.usual(&name).await.unwrap_or_default();
    let warnings = s.advisor.warnings(usual, &j.spec, &s.limits);
    page(pages::job_page(
        &b.session.user.name,
        &b.session.csrf,
        &pages::JobPage {
            job: &j,
            can_manage: j.can_manage(&b.session.user),
            versions: &versions,
            runs: &runs,
            next: next.as_deref(),
            created: q.created.is_some(),
            warnings: &warnings,
            usual,
            late: &late,
        },
    ))
}

/// A job page's action buttons: the CSRF token, and for delete whether the published data goes
/// too.
#[derive(Debug, Deserialize)]
struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    purge_public: Option<String>,
    /// The run to replay.
    #[serde(default)]
    run: Option<String>,
}

async fn job_action(
    State(s): State<AppState>,
    b: Browser,
    headers: HeaderMap,
    Path((name, action)): Path<(String, String)>,
    axum::Form(f): axum::Form<ActionForm>,
) -> Response {
    if !check_post(&headers, &b.session, &f.csrf) {
        return stale_form(&b);
    }
    let user = &b.session.user;
    let r = match action.as_str() {
        "run" => jobs::run_now(&s, user, &name)
            .await
            .map(|id| format!("/runs/{id}")),
        "replay" => jobs::replay(&s, user, f.run.as_deref().unwrap_or_default())
            .await
            .map(|id| format!("/runs/{id}")),
        "pause" | "resume" => jobs::set_paused(&s, user, &name, action == "pause")
            .await
            .map(|_| format!("/jobs/{name}")),
        "delete" => {
            let public = if f.purge_public.is_some() {
                jobs::PublicData::Purge
            } else {
                jobs::PublicData::Keep
            };
            jobs::delete(&s, user, &name, public)
                .await
                .map(|()| "/".to_string())
        }
        _ => Err(JobError::NotFound),
    };
    match r {
        Ok(to) => Redirect::to(&to).into_response(),
        Err(e) => job_error(&b, e),
    }
}

async fn run_page(State(s): State<AppState>, b: Browser, Path(id): Path<String>) -> Response {
    if RunId::parse(&id).is_none() {
        return not_found(&b);
    }
    let Ok(Some((run, trigger))) = s.db.run(&id).await else {
        return not_found(&b);
    };
    let Ok(Some(j)) = s.db.job(run.job.as_str()).await else {
        return not_found(&b);
    };
    if !j.can_see(&b.session.user) {
        return not_found(&b);
    }
    let log = if j.can_manage(&b.session.user) {
        match &run.log_key {
            Some(k) => s
                .stores
                .private
                .get(k)
                .await
                .ok()
                .map(|b| String::from_utf8_lossy(&b).into_owned()),
            None => Some(String::from("(no log yet)")),
        }
    } else {
        None
    };
    let public = j.spec.output_visibility == telejob_core::job::Visibility::Public;
    let late = s.db.late_mark(&id).await.unwrap_or_default();
    page(pages::run_page(
        &b.session.user.name,
        &b.session.csrf,
        &pages::RunPage {
            run: &run,
            trigger: &trigger,
            log: log.as_deref(),
            public_data: public,
            manage: j.can_manage(&b.session.user),
            late: late.as_ref(),
        },
    ))
}

async fn preview(
    State(s): State<AppState>,
    b: Browser,
    Query(mut values): Query<std::collections::HashMap<String, String>>,
) -> Response {
    // The history of the job being edited, if the user manages it; a new job has none.
    let named = values.get("name").cloned().unwrap_or_default();
    let history = jobs::managed(&s, &b.session.user, &named).await.is_ok();
    if !history {
        values.insert("name".into(), "preview".into());
    }
    let mut f = JobForm {
        values,
        errors: Default::default(),
    };
    let body = match f
        .schedule()
        .map_err(|(_, m)| m)
        .and_then(|spec| spec.compile().map_err(|e| e.to_string()))
    {
        Ok(sched) => {
            let warnings = match f.check(&s.limits) {
                Some(spec) => {
                    let usual = match history {
                        true => s.db.usual(&spec.name).await.unwrap_or_default(),
                        false => None,
                    };
                    s.advisor.warnings(usual, &spec, &s.limits)
                }
                None => Vec::new(),
            };
            serde_json::json!({
                "description": sched.describe(),
                "next": sched.preview(Utc::now(), 5).iter().map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string()).collect::<Vec<_>>(),
                "warnings": warnings,
            })
        }
        Err(e) => serde_json::json!({"error": e, "warnings": []}),
    };
    axum::Json(body).into_response()
}

/// The bundled example's code tarball, to try the form with.
async fn example_tarball() -> Response {
    match crate::server::example::tarball() {
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
async fn public_file(State(s): State<AppState>, Path(path): Path<String>) -> Response {
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
