//! The dashboard's workers page: "Launch a Worker" and "My workers".

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};

use super::pages::layout;
use super::session::{Browser, check_post};
use super::{job_error, page, stale_form};
use crate::server::app::jobs::JobError;
use crate::server::app::state::AppState;
use crate::server::app::workers::{LaunchRequest, WorkerView};

/// `GET /workers`.
pub async fn page_get(State(s): State<AppState>, b: Browser) -> Response {
    render(&s, &b, StatusCode::OK, &HashMap::new(), None).await
}

async fn render(
    s: &AppState,
    b: &Browser,
    code: StatusCode,
    values: &HashMap<String, String>,
    error: Option<(String, String)>,
) -> Response {
    let workers = match s.workers.list(&s.db, &b.session.user).await {
        Ok(w) => w,
        Err(e) => return job_error(b, e),
    };
    let views: Vec<WorkerView> = workers.iter().map(WorkerView::from).collect();
    let types: Vec<String> = match &s.workers.backend {
        Some(b) => b.machine_types().choices(),
        None => Vec::new(),
    };
    let max_hours = s.workers.policy.max_lifetime.as_secs() / 3600;
    let csrf = &b.session.csrf;
    let get = |k: &str| values.get(k).map(String::as_str).unwrap_or("");
    let err = |field: &str| -> Markup {
        html! { @if let Some((f, m)) = &error { @if f == field { p.error id={ "error-" (field) } { (m) } } } }
    };
    let body = html! {
        h1 { "Analysis workers" }
        p.help { "A worker is a fresh machine like a scheduled run's, with your SSH key for the user " code { (telejob_core::worker::LOGIN_USER) } " (who may use sudo). It is destroyed at the end of its lifetime, whatever happens. Without EC2, run " code { "telejob worker shell --code <TARBALL|DIR>" } " on your machine instead." }
        @if types.is_empty() {
            p.error #no-ec2 { "This server runs jobs on its own host: workers need EC2 (compute = \"ec2\")." }
        } @else {
            form.card #launch-form method="post" action="/workers" {
                h2 { "Launch a Worker" }
                input type="hidden" name="csrf" value=(csrf);
                label for="name" { "Name (optional)" }
                input #name name="name" value=(get("name")) placeholder="dev-box";
                (err("name"))
                label for="ssh_key" { "SSH public key (paste it, or choose the .pub file)" }
                textarea #ssh_key name="ssh_key" rows="3" placeholder="ssh-ed25519 AAAA… you@host" { (get("ssh_key")) }
                input #ssh_key_file type="file" accept=".pub,text/plain";
                (err("ssh_key"))
                label for="lifetime" { "Lifetime (at most " (max_hours) " hours)" }
                input #lifetime name="lifetime" value=(if get("lifetime").is_empty() { "4h" } else { get("lifetime") });
                (err("lifetime"))
                label for="instance_type" { "Instance type" }
                select #instance_type name="instance_type" {
                    @for t in &types { option value=(t) selected[get("instance_type") == t.as_str()] { (t) } }
                }
                (err("instance_type"))
                (err("workers"))
                (err("compute"))
                p { button #launch type="submit" { "Launch" } }
            }
        }
        h2 { "My workers" }
        @if views.is_empty() {
            p #no-workers { "No workers." }
        } @else {
            table #workers {
                tr { th { "Worker" } th { "State" } th { "Address" } th { "ssh" } th { "Time left" } th {} }
                @for w in &views {
                    tr.worker data-name=(w.name) {
                        td { (w.name) @if w.owner != b.session.user.name { " (" (w.owner) ")" } }
                        td.state { (w.state) }
                        td { (w.address.as_deref().unwrap_or("—")) }
                        td { @if let Some(ssh) = &w.ssh { input.ssh readonly value=(ssh) size="28"; } @else { "—" } }
                        td { @if w.state == "ended" { (w.end_reason.as_deref().unwrap_or("ended")) } @else { (left(w.seconds_left)) } }
                        td {
                            @if w.state != "ended" {
                                form.inline method="post" action={ "/workers/" (w.name) "/extend" } {
                                    input type="hidden" name="csrf" value=(csrf);
                                    select name="by" { option value="1h" { "+1 h" } option value="2h" selected { "+2 h" } option value="4h" { "+4 h" } }
                                    button.extend type="submit" { "Extend" }
                                }
                                " "
                                form.inline method="post" action={ "/workers/" (w.name) "/terminate" } data-confirm="End this worker now? Whatever is on it is lost." {
                                    input type="hidden" name="csrf" value=(csrf);
                                    button.terminate type="submit" { "Terminate" }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    (
        code,
        page(layout(
            "Workers",
            Some(&b.session.user.name),
            Some(csrf),
            body,
        )),
    )
        .into_response()
}

fn left(secs: i64) -> String {
    if secs >= 3600 {
        format!("{} h {} min", secs / 3600, (secs % 3600) / 60)
    } else {
        format!("{} min", (secs.max(0) + 59) / 60)
    }
}

/// `POST /workers`: launch.
pub async fn launch(
    State(s): State<AppState>,
    b: Browser,
    headers: HeaderMap,
    axum::Form(f): axum::Form<HashMap<String, String>>,
) -> Response {
    let get = |k: &str| f.get(k).cloned().unwrap_or_default();
    if !check_post(&headers, &b.session, &get("csrf")) {
        return stale_form(&b);
    }
    let opt = |k: &str| Some(get(k)).filter(|v| !v.trim().is_empty());
    let req = LaunchRequest {
        name: opt("name").map(|n| n.trim().to_string()),
        ssh_key: get("ssh_key"),
        lifetime: opt("lifetime"),
        instance_type: opt("instance_type"),
        notify: None,
    };
    match s.workers.launch(&s.db, &b.session.user, &req).await {
        Ok(_) => Redirect::to("/workers").into_response(),
        Err(JobError::Invalid(e)) => {
            let field = e.field_errors().first().map_or("name", |f| f.0).to_string();
            // Never echo a key back: a pasted private key must not be shown again.
            let mut kept = f.clone();
            kept.remove("ssh_key");
            render(
                &s,
                &b,
                StatusCode::UNPROCESSABLE_ENTITY,
                &kept,
                Some((field, e.to_string())),
            )
            .await
        }
        Err(e) => job_error(&b, e),
    }
}

/// `POST /workers/{name}/{action}`: extend or terminate.
pub async fn action(
    State(s): State<AppState>,
    b: Browser,
    headers: HeaderMap,
    Path((name, action)): Path<(String, String)>,
    axum::Form(f): axum::Form<HashMap<String, String>>,
) -> Response {
    let get = |k: &str| f.get(k).cloned().unwrap_or_default();
    if !check_post(&headers, &b.session, &get("csrf")) {
        return stale_form(&b);
    }
    let user = &b.session.user;
    let r = match action.as_str() {
        "extend" => s
            .workers
            .extend(&s.db, user, &name, &get("by"))
            .await
            .map(|_| ()),
        "terminate" => s
            .workers
            .terminate(&s.db, &*s.notifier, user, &name)
            .await
            .map(|_| ()),
        _ => Err(JobError::NotFound),
    };
    match r {
        Ok(()) => Redirect::to("/workers").into_response(),
        Err(JobError::Invalid(e)) => {
            let field = e.field_errors().first().map_or("name", |f| f.0).to_string();
            render(
                &s,
                &b,
                StatusCode::UNPROCESSABLE_ENTITY,
                &HashMap::new(),
                Some((field, e.to_string())),
            )
            .await
        }
        Err(e) => job_error(&b, e),
    }
}
