//! The web dashboard, served by `telejob serve` itself: sign in, the job list, the "Schedule a
//! Job" form, job and run pages. Same validation and owner rules as the API.

mod backfill;
mod editing;
mod files;
mod form;
mod insight;
mod job_page;
mod pages;
mod run_page;
pub mod session;
mod signin;
mod views;
mod workers;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maud::Markup;

use self::session::Browser;
use crate::server::app::jobs::{self, JobError};
use crate::server::app::state::AppState;
use crate::server::db::JobRow;

/// The dashboard's routes.
pub fn router(state: AppState) -> Router {
    let code_limit = usize::try_from(state.max_code_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(64 * 1024);
    Router::new()
        .route("/", get(views::index))
        .route("/login", get(signin::login_page).post(signin::login))
        .route("/logout", post(signin::logout))
        .route("/jobs/new", get(editing::new_job))
        .route(
            "/jobs",
            post(editing::create_job).layer(DefaultBodyLimit::max(code_limit)),
        )
        .route("/jobs/{name}", get(views::job_page))
        .route(
            "/jobs/{name}/edit",
            get(editing::edit_page)
                .post(editing::save_edit)
                .layer(DefaultBodyLimit::max(code_limit)),
        )
        .route(
            "/jobs/{name}/backfill",
            get(backfill::page_get).post(backfill::run),
        )
        .route("/jobs/{name}/{action}", post(views::job_action))
        .route("/jobs/{name}/code/{sha256}", get(views::code_download))
        .route("/runs/{id}", get(views::run_page))
        .route("/runs/{id}/live", get(views::run_live))
        .route("/runs/{id}/log", get(views::run_log))
        .route("/workers", get(workers::page_get).post(workers::launch))
        .route("/workers/{name}/{action}", post(workers::action))
        .route("/ui/preview", get(editing::preview))
        .route("/ui/app.js", get(app_js))
        .route("/public/", get(files::public_index))
        .route("/public/{*path}", get(files::public_file))
        .route("/example/slowsql.tar.gz", get(files::example_tarball))
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

pub(super) fn page(m: Markup) -> Response {
    ([(header::CONTENT_SECURITY_POLICY, CSP)], m).into_response()
}

pub(super) fn forbidden(b: &Browser, text: &str) -> Response {
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

pub(super) fn stale_form(b: &Browser) -> Response {
    forbidden(
        b,
        "The form was stale or came from another site; reload the page and try again.",
    )
}

/// The page for a job operation that did not happen (other than a form's field errors).
pub(super) fn job_error(b: &Browser, e: JobError) -> Response {
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
pub(super) async fn managed_job(s: &AppState, b: &Browser, name: &str) -> Result<JobRow, Response> {
    jobs::managed(s, &b.session.user, name)
        .await
        .map_err(|e| job_error(b, e))
}

/// A job saved whose uploaded code draws a warning: said once, with the way on to its page.
pub(super) fn saved_with_warnings(
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

pub(super) fn not_found(b: &Browser) -> Response {
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
