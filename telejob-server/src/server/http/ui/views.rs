//! The job list, job pages (with their actions) and run pages.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use telejob_core::run::{Run, RunId};

use super::session::{Browser, check_post};
use super::*;
use crate::server::app::jobs::{self, JobError};
use crate::server::app::logs;
use crate::server::app::state::AppState;
use crate::server::db::JobRow;

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
        let next = s.cluster.next_fire(&j).map(|t| pages::when(Some(t)));
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
    let next = s.cluster.next_fire(&j).map(|t| pages::when(Some(t)));
    let late = s.db.late_marks(&name).await.unwrap_or_default();
    let usual = s.db.usual(&name).await.unwrap_or_default();
    let warnings = s.advisor.warnings(usual, &j.spec, &s.limits);
    let secrets = s.db.secret_names(&name).await.unwrap_or_default();
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
            secrets: &secrets,
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
    /// The run to replay or cancel.
    #[serde(default)]
    run: Option<String>,
    /// The code version to make current.
    #[serde(default)]
    sha256: Option<String>,
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
        "use-code" => {
            jobs::use_code_version(&s, user, &name, f.sha256.as_deref().unwrap_or_default())
                .await
                .map(|_| format!("/jobs/{name}"))
        }
        "cancel" => jobs::cancel_run(&s, user, f.run.as_deref().unwrap_or_default())
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

/// `GET /jobs/{name}/code/{sha256}`: a code version's tarball (owners and maintainers).
pub(super) async fn code_download(
    State(s): State<AppState>,
    b: Browser,
    Path((name, sha)): Path<(String, String)>,
) -> Response {
    let job = match managed_job(&s, &b, &name).await {
        Ok(j) => j,
        Err(r) => return r,
    };
    let Ok(Some(v)) = s.db.code_version(&job.spec.name, &sha).await else {
        return not_found(&b);
    };
    let Ok(body) = s.stores.private.get(&v.key).await else {
        return not_found(&b);
    };
    // Named for what it holds (the format is told by the content, as runs tell it).
    let ext = match body.get(..4) {
        Some([0x1f, 0x8b, ..]) => "tar.gz",
        Some([0xfd, b'7', b'z', b'X']) => "tar.xz",
        Some([0x28, 0xb5, 0x2f, 0xfd]) => "tar.zst",
        Some([b'B', b'Z', b'h', _]) => "tar.bz2",
        _ => "tar",
    };
    let file = format!("{name}-{}.{ext}", &v.sha256[..12.min(v.sha256.len())]);
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}\""),
            ),
        ],
        body,
    )
        .into_response()
}

/// The run `id` and its job, if the user may see them.
async fn visible_run(s: &AppState, b: &Browser, id: &str) -> Option<(Run, String, JobRow)> {
    RunId::parse(id)?;
    let (run, trigger) = s.db.run(id).await.ok()??;
    let j = s.db.job(run.job.as_str()).await.ok()??;
    j.can_see(&b.session.user).then_some((run, trigger, j))
}

pub(super) async fn run_page(
    State(s): State<AppState>,
    b: Browser,
    Path(id): Path<String>,
) -> Response {
    let Some((run, trigger, j)) = visible_run(&s, &b, &id).await else {
        return not_found(&b);
    };
    let raw = if j.can_manage(&b.session.user) {
        Some(
            s.stores
                .private
                .get(&logs::key(&run))
                .await
                .unwrap_or_default(),
        )
    } else {
        None
    };
    let log = raw.as_ref().map(|b| {
        if b.is_empty() && !run.state.is_terminal() {
            String::new()
        } else if b.is_empty() {
            String::from("(no log)")
        } else {
            String::from_utf8_lossy(b).into_owned()
        }
    });
    let public = j.spec.output_visibility == telejob_core::job::Visibility::Public;
    let late = s.db.late_mark(&id).await.unwrap_or_default();
    page(pages::run_page(
        &b.session.user.name,
        &b.session.csrf,
        &pages::RunPage {
            run: &run,
            trigger: &trigger,
            log: log.as_deref(),
            log_bytes: raw.as_ref().map_or(0, |b| b.len()),
            public_data: public,
            manage: j.can_manage(&b.session.user),
            late: late.as_ref(),
            queue: crate::server::app::jobs::queue_position(&s, &run),
        },
    ))
}

/// `GET /runs/{id}/live`: the parts of a run's page that change while it runs, for its script.
pub(super) async fn run_live(
    State(s): State<AppState>,
    b: Browser,
    Path(id): Path<String>,
) -> Response {
    let Some((run, trigger, j)) = visible_run(&s, &b, &id).await else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let late = s.db.late_mark(&id).await.unwrap_or_default();
    let public = j.spec.output_visibility == telejob_core::job::Visibility::Public;
    axum::Json(serde_json::json!({
        "state": run.state,
        "ended": run.state.is_terminal(),
        "summary": pages::run_summary(
            &run,
            &trigger,
            late.as_ref(),
            crate::server::app::jobs::queue_position(&s, &run),
        )
        .into_string(),
        "published": pages::run_published(&run, public).into_string(),
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
pub(super) struct FollowQuery {
    #[serde(default)]
    follow: Option<bool>,
    #[serde(default)]
    from: Option<usize>,
}

/// `GET /runs/{id}/log?follow=true&from=N`: the log from byte N on, streamed until the run ends
/// (owners and maintainers).
pub(super) async fn run_log(
    State(s): State<AppState>,
    b: Browser,
    Path(id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<FollowQuery>,
) -> Response {
    let Some((run, _, j)) = visible_run(&s, &b, &id).await else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if !j.can_manage(&b.session.user) {
        return StatusCode::FORBIDDEN.into_response();
    }
    match crate::server::http::log_response(&s, run, q.follow == Some(true), q.from.unwrap_or(0))
        .await
    {
        Ok(Some(r)) => r,
        // Nothing printed yet, or the store failed: an empty log, the page's script goes on.
        Ok(None) | Err(_) => String::new().into_response(),
    }
}
