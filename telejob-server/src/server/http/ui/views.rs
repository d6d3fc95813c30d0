//! The job list, job pages (with their actions) and run pages.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use telejob_core::run::RunId;

use super::session::{Browser, check_post};
use super::*;
use crate::server::app::jobs::{self, JobError};
use crate::server::app::state::AppState;

pub(super) async fn index(State(s): State<AppState>, b: Browser) -> Response {
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

#[derive(Debug, Deserialize)]
pub(super) struct JobQuery {
    created: Option<String>,
}

pub(super) async fn job_page(
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
pub(super) struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    purge_public: Option<String>,
    /// The run to replay.
    #[serde(default)]
    run: Option<String>,
}

pub(super) async fn job_action(
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

pub(super) async fn run_page(
    State(s): State<AppState>,
    b: Browser,
    Path(id): Path<String>,
) -> Response {
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
