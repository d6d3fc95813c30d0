//! The dashboard's side of sessions: the HttpOnly, SameSite=Strict cookie, the signed-in
//! browser extractor, and the Origin and CSRF checks on every state-changing request.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};

use crate::server::sessions::{IDLE, Session};
use crate::server::state::AppState;

/// The session cookie's name.
pub const COOKIE: &str = "telejob_session";

/// The session id from the request's cookies.
pub fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// The `Set-Cookie` value for a session.
pub fn cookie(id: &str) -> String {
    format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        IDLE.as_secs()
    )
}

/// The `Set-Cookie` value that ends a session.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// A page request from a signed-in user; others are sent to the sign-in page.
#[derive(Debug, Clone)]
pub struct Browser {
    /// The session id.
    pub id: String,
    /// The session.
    pub session: Session,
}

impl FromRequestParts<AppState> for Browser {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let id =
            session_id(&parts.headers).ok_or_else(|| Redirect::to("/login").into_response())?;
        let session = state
            .sessions
            .get(&id)
            .ok_or_else(|| Redirect::to("/login").into_response())?;
        Ok(Self { id, session })
    }
}

/// Whether a state-changing request may proceed: its Origin (or Referer) must be this host, and
/// its CSRF field must be the session's.
pub fn check_post(headers: &HeaderMap, session: &Session, csrf: &str) -> bool {
    same_origin(headers)
        && !csrf.is_empty()
        && constant_time_eq(csrf.as_bytes(), session.csrf.as_bytes())
}

/// Whether the request's Origin (or Referer) is this host. Requests without either (old clients,
/// command-line tools) pass; browsers always send Origin on POST.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let origin = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok());
    match origin {
        // Browsers send Origin on POST; a missing one (old clients) falls back to the token alone.
        Some(o) => {
            o.split_once("://")
                .map(|(_, rest)| rest.split('/').next().unwrap_or_default())
                == Some(host)
        }
        None => true,
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
