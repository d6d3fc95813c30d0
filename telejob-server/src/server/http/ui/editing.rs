//! The "Schedule a Job" form: new jobs, edits, code uploads and the live preview.

use axum::body::Bytes;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;

use super::form::JobForm;
use super::session::{Browser, check_post};
use super::*;
use crate::server::app::jobs::{self, JobError, StagedCode};
use crate::server::app::state::AppState;

pub(super) async fn new_job(
    State(s): State<AppState>,
    b: Browser,
    Query(q): Query<DraftQuery>,
) -> Response {
    let (f, general) = with_draft(&s, &b, &q, server_form(&s, JobForm::defaults()));
    page(pages::job_form(
        &b.session.user.name,
        &b.session.csrf,
        &f,
        general.as_deref(),
        None,
    ))
}

/// The images a job may name here, for the form's select.
fn image_choices(s: &AppState) -> Vec<String> {
    s.advisor.images.now().unwrap_or_default()
}

/// A form as this server fills it in: its images, instance types and default limits.
fn server_form(s: &AppState, mut f: JobForm) -> JobForm {
    f.images = image_choices(s);
    f.machine_types = s.advisor.machine_types.clone();
    f.limit_defaults = s.limits.resources.defaults;
    f
}

/// A rejected form with a file chosen: browsers do not keep the file, so say to choose it again.
fn choose_again(f: &mut JobForm, had_code: bool) {
    if had_code && !f.errors.contains_key("code") {
        f.errors.insert(
            "code".into(),
            "choose the tarball again: a browser does not keep a chosen file when the form comes back (the other fields are kept)".into(),
        );
    }
}

/// The submitted form: its fields, the uploaded tarball (if any), its CSRF token.
pub(super) async fn read_form(
    s: &AppState,
    mut mp: Multipart,
) -> (JobForm, Option<StagedCode>, String) {
    let mut f = server_form(s, JobForm::defaults());
    f.values.remove("retry_on_timeout");
    let mut code: Option<Bytes> = None;
    let mut file_name = String::new();
    let mut csrf = String::new();
    loop {
        match mp.next_field().await {
            Ok(Some(field)) => {
                let name = field.name().unwrap_or_default().to_string();
                if name == "code" {
                    let has_file = field.file_name().is_some_and(|n| !n.is_empty());
                    file_name = field.file_name().unwrap_or_default().to_string();
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
        Some(c) => match jobs::stage_bytes(c, s.max_code_bytes, &s.uploads).await {
            Ok(staged) => Some(staged.named(&file_name)),
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
pub(super) fn code_error(e: JobError) -> String {
    match e {
        JobError::Invalid(e) => e
            .field_errors()
            .first()
            .map_or_else(|| e.to_string(), |(_, m)| (*m).to_string()),
        e => e.to_string(),
    }
}

/// Shows a failed create or edit: field errors next to their fields, others above the form.
pub(super) fn form_failed(
    s: &AppState,
    b: &Browser,
    f: &mut JobForm,
    e: JobError,
    editing: Option<&str>,
) -> Response {
    match e {
        JobError::NameTaken(_) | JobError::NameReserved(_) => {
            f.errors.insert("name".into(), e.to_string());
            form_page(s, b, StatusCode::CONFLICT, f, None, editing)
        }
        JobError::Invalid(e) => {
            for (field, m) in e.field_errors() {
                f.errors.insert(field.to_string(), m.to_string());
            }
            form_page(s, b, StatusCode::UNPROCESSABLE_ENTITY, f, None, editing)
        }
        JobError::NotFound | JobError::Forbidden => job_error(b, e),
        e => form_page(
            s,
            b,
            StatusCode::INTERNAL_SERVER_ERROR,
            f,
            Some(&e.to_string()),
            editing,
        ),
    }
}

/// The form page: shown as it is (`OK`), or, for a rejected submit, kept as a draft and
/// redirected to (Post/Redirect/Get: a reload shows the errors again and posts nothing).
pub(super) fn form_page(
    s: &AppState,
    b: &Browser,
    status: StatusCode,
    f: &JobForm,
    general: Option<&str>,
    editing: Option<&str>,
) -> Response {
    if status != StatusCode::OK {
        let id = s.drafts.keep(crate::server::app::sessions::Draft::new(
            &b.id,
            f.values.clone(),
            f.errors.clone(),
            general.map(str::to_string),
        ));
        let to = editing.map_or_else(|| "/jobs/new".to_string(), |n| format!("/jobs/{n}/edit"));
        return Redirect::to(&format!("{to}?draft={id}")).into_response();
    }
    page(pages::job_form(
        &b.session.user.name,
        &b.session.csrf,
        f,
        general,
        editing,
    ))
}

/// `?draft=ID`: the rejected form to show again.
#[derive(Debug, serde::Deserialize)]
pub(super) struct DraftQuery {
    #[serde(default)]
    draft: Option<String>,
}

/// `f` with draft `q.draft` of `b`'s session over it, and the draft's general error.
fn with_draft(
    s: &AppState,
    b: &Browser,
    q: &DraftQuery,
    mut f: JobForm,
) -> (JobForm, Option<String>) {
    let Some(d) = q.draft.as_deref().and_then(|id| s.drafts.get(id, &b.id)) else {
        return (f, None);
    };
    f.values = d.values;
    f.errors = d.errors;
    (f, d.general)
}

pub(super) async fn create_job(
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
    let had_code = code.is_some();
    let (Some(spec), Some(code), true) = (spec, code, f.errors.is_empty()) else {
        choose_again(&mut f, had_code);
        return form_page(&s, &b, StatusCode::UNPROCESSABLE_ENTITY, &f, None, None);
    };
    let warnings = crate::server::app::advice::script_warnings(code.path(), &spec.command).await;
    match jobs::create(&s, &b.session.user, &spec, Some(code), &secrets).await {
        Ok(_) if !warnings.is_empty() => saved_with_warnings(&b, &spec.name, &warnings, true),
        Ok(_) => Redirect::to(&format!("/jobs/{}?created=1", spec.name)).into_response(),
        Err(e) => {
            choose_again(&mut f, true);
            form_failed(&s, &b, &mut f, e, None)
        }
    }
}

pub(super) async fn edit_page(
    State(s): State<AppState>,
    b: Browser,
    Path(name): Path<String>,
    Query(q): Query<DraftQuery>,
) -> Response {
    let j = match managed_job(&s, &b, &name).await {
        Ok(j) => j,
        Err(r) => return r,
    };
    let mut f = server_form(&s, JobForm::from_spec(&j.spec));
    if let Ok(names) = s.db.secret_names(&name).await {
        let names: Vec<String> = names
            .into_iter()
            .map(|i| format!("{} (set {})", i.name, pages::when(Some(i.set_at))))
            .collect();
        f.values.insert("secret_names".into(), names.join(", "));
    }
    let secret_names = f.get("secret_names").to_string();
    let (mut f, general) = with_draft(&s, &b, &q, f);
    f.values.insert("secret_names".into(), secret_names);
    page(pages::job_form(
        &b.session.user.name,
        &b.session.csrf,
        &f,
        general.as_deref(),
        Some(&name),
    ))
}

pub(super) async fn save_edit(
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
        choose_again(&mut f, code.is_some());
        return form_page(
            &s,
            &b,
            StatusCode::UNPROCESSABLE_ENTITY,
            &f,
            None,
            Some(&name),
        );
    };
    let had_code = code.is_some();
    let warnings = match &code {
        Some(c) => crate::server::app::advice::script_warnings(c.path(), &spec.command).await,
        None => Vec::new(),
    };
    match jobs::update(&s, &b.session.user, &name, &spec, code, &secrets).await {
        Ok(_) if !warnings.is_empty() => saved_with_warnings(&b, &name, &warnings, false),
        Ok(_) => Redirect::to(&format!("/jobs/{name}")).into_response(),
        Err(e) => {
            choose_again(&mut f, had_code);
            form_failed(&s, &b, &mut f, e, Some(&name))
        }
    }
}

pub(super) async fn preview(
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
        images: Vec::new(),
        machine_types: None,
        limit_defaults: Default::default(),
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
