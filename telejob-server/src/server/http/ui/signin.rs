//! Signing in with a token and out.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::session::{Browser, check_post};
use super::*;
use crate::server::app::state::AppState;

pub(super) async fn login_page() -> Response {
    page(pages::login(None))
}

#[derive(Debug, Deserialize)]
pub(super) struct LoginForm {
    token: String,
}

pub(super) async fn login(
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
pub(super) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub(super) async fn logout(
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
