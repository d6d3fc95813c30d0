//! The backfill page: a job's missed and failed slots over a date range, with "Run these".

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{Duration, Utc};
use maud::{Markup, html};
use telejob_core::scheduler::backfill::{BackfillRequest, SlotStatus, parse_date};

use super::pages::layout;
use super::session::{Browser, check_post};
use super::{job_error, page, stale_form};
use crate::server::app::jobs::{self, Backfill, JobError};
use crate::server::app::state::AppState;

/// `GET /jobs/{name}/backfill?from=…&to=…`: the slots of the range (default: the last 7 days)
/// and what each would do.
pub async fn page_get(
    State(s): State<AppState>,
    b: Browser,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let job = match jobs::visible(&s, &b.session.user, &name).await {
        Ok(j) => j,
        Err(e) => return job_error(&b, e),
    };
    let schedule = job.spec.schedule.compile().ok();
    let tz = schedule.as_ref().map_or(chrono_tz::UTC, |c| c.timezone());
    let today = Utc::now().with_timezone(&tz).date_naive();
    // The last week by default; today only for a schedule too frequent for a week's list.
    let frequent = schedule.as_ref().is_some_and(|c| {
        c.iter_after(Utc::now() - Duration::days(7))
            .take(701)
            .count()
            > 700
    });
    let default_from = if frequent {
        today
    } else {
        today - Duration::days(6)
    };
    let from = q
        .get("from")
        .cloned()
        .unwrap_or_else(|| default_from.to_string());
    let to = q.get("to").cloned().unwrap_or_else(|| today.to_string());
    let plan = plan(&from, &to).map_err(JobError::Invalid);
    let plan = match plan {
        Ok(req) => jobs::backfill(&s, &b.session.user, &name, &req, true).await,
        Err(e) => Err(e),
    };
    let can_manage = job.can_manage(&b.session.user);
    render(&b, StatusCode::OK, &name, &from, &to, can_manage, plan)
}

fn plan(from: &str, to: &str) -> telejob_core::Result<BackfillRequest> {
    Ok(BackfillRequest::new(
        parse_date("from", from)?,
        parse_date("to", to)?,
    ))
}

/// `POST /jobs/{name}/backfill`: runs the ticked slots (a ticked slot that succeeded runs again
/// as a new attempt).
pub async fn run(
    State(s): State<AppState>,
    b: Browser,
    headers: HeaderMap,
    Path(name): Path<String>,
    axum::Form(f): axum::Form<HashMap<String, String>>,
) -> Response {
    let field = |k: &str| f.get(k).cloned().unwrap_or_default();
    if !check_post(&headers, &b.session, &field("csrf")) {
        return stale_form(&b);
    }
    let (from, to) = (field("from"), field("to"));
    let invalid = |e: telejob_core::Error| {
        render(
            &b,
            StatusCode::UNPROCESSABLE_ENTITY,
            &name,
            &from,
            &to,
            true,
            Err(JobError::Invalid(e)),
        )
    };
    let mut chosen = Vec::new();
    for k in f.keys().filter_map(|k| k.strip_prefix("slot.")) {
        match chrono::DateTime::parse_from_rfc3339(k) {
            Ok(t) => chosen.push(t.with_timezone(&Utc)),
            Err(_) => {
                return invalid(telejob_core::Error::invalid(
                    "slots",
                    format!("{k:?} is not an instant"),
                ));
            }
        }
    }
    let r = match plan(&from, &to) {
        Ok(mut req) if !chosen.is_empty() => {
            req.force = true; // a ticked slot runs, whatever its status
            req.slots = Some(chosen);
            jobs::backfill(&s, &b.session.user, &name, &req, false).await
        }
        Ok(_) => Err(JobError::Invalid(telejob_core::Error::invalid(
            "slots",
            "no slot is ticked: tick the slots to run",
        ))),
        Err(e) => Err(JobError::Invalid(e)),
    };
    match r {
        Ok(_) => Redirect::to(&format!("/jobs/{name}#runs")).into_response(),
        Err(JobError::Invalid(e)) => invalid(e),
        Err(e) => job_error(&b, e),
    }
}

fn render(
    b: &Browser,
    code: StatusCode,
    name: &str,
    from: &str,
    to: &str,
    can_manage: bool,
    plan: Result<Backfill, JobError>,
) -> Response {
    let plan = match plan {
        Err(JobError::Invalid(e)) => Err(e.to_string()),
        Err(e) => return job_error(b, e),
        Ok(p) => Ok(p),
    };
    let code = if plan.is_err() && code == StatusCode::OK {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        code
    };
    let csrf = &b.session.csrf;
    let body = html! {
        h1 { "Backfill " a href={ "/jobs/" (name) } { (name) } }
        p.help { "Run past slots again, each with its own scheduled-for time, oldest first. Slots that never ran and slots whose last attempt failed are ticked; a ticked slot that succeeded runs again as a new attempt." }
        form.card method="get" action={ "/jobs/" (name) "/backfill" } {
            label for="from" { "From (first day, in the job's time zone)" }
            input #from name="from" type="date" value=(from);
            label for="to" { "To (last day, included)" }
            input #to name="to" type="date" value=(to);
            button #show-slots type="submit" { "Show slots" }
        }
        @match &plan {
            Err(e) => p.error #backfill-error { (e) },
            Ok(p) => (slots(name, csrf, from, to, can_manage, p)),
        }
    };
    (
        code,
        page(layout(
            &format!("Backfill {name}"),
            Some(&b.session.user.name),
            Some(csrf),
            body,
        )),
    )
        .into_response()
}

fn slots(name: &str, csrf: &str, from: &str, to: &str, can_manage: bool, p: &Backfill) -> Markup {
    html! {
        form method="post" action={ "/jobs/" (name) "/backfill" } {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="from" value=(from);
            input type="hidden" name="to" value=(to);
            p { (p.slots.len()) " slots in " (p.timezone) "; " (p.runs()) " missed or failed; at most " (p.concurrency) " run at a time." }
            table #backfill-slots {
                tr { th { "Run" } th { "Slot" } th { "Status" } th { "Next attempt" } th { "Note" } }
                @for s in &p.slots {
                    @let key = s.plan.slot.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                    @let status = match s.plan.status {
                        SlotStatus::Missed => "missed",
                        SlotStatus::Failed => "failed",
                        SlotStatus::Succeeded => "succeeded",
                        SlotStatus::Running => "running",
                    };
                    tr.slot data-slot=(key) {
                        td { input type="checkbox" name={ "slot." (key) } checked[s.plan.runs()] disabled[s.plan.status == SlotStatus::Running || !can_manage]; }
                        td { (s.plan.slot.format("%Y-%m-%d %H:%M UTC")) }
                        td class={ "state-" (status) } { (status) }
                        td { (s.plan.attempt) }
                        td { (s.plan.skip.as_deref().unwrap_or("")) }
                    }
                }
            }
            @if can_manage && !p.slots.is_empty() {
                p { button #run-these type="submit" { "Run these" } }
            }
        }
    }
}
