//! Browser sessions: a random id in an HttpOnly, SameSite=Strict cookie, a CSRF token per
//! session, and an Origin check on every state-changing request.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};

use crate::server::api::AppState;
use crate::server::db::User;

/// The session cookie's name.
pub const COOKIE: &str = "telejob_session";
/// Sessions end after this long without use.
const IDLE: Duration = Duration::from_secs(12 * 3600);

/// A signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who.
    pub user: User,
    /// The CSRF token every form of this session carries.
    pub csrf: String,
    last_used: Instant,
}

/// Sessions by id, in memory (a restart signs everyone out).
#[derive(Debug, Clone, Default)]
pub struct Sessions(Arc<RwLock<HashMap<String, Session>>>);

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

impl Sessions {
    /// Starts a session for `user`; returns its id.
    pub fn start(&self, user: User) -> String {
        let id = random_hex(32);
        let mut g = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.retain(|_, s| s.last_used.elapsed() < IDLE);
        g.insert(
            id.clone(),
            Session {
                user,
                csrf: random_hex(32),
                last_used: Instant::now(),
            },
        );
        id
    }

    /// Ends a session.
    pub fn end(&self, id: &str) {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
    }

    fn get(&self, id: &str) -> Option<Session> {
        let mut g = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let s = g.get_mut(id)?;
        if s.last_used.elapsed() >= IDLE {
            g.remove(id);
            return None;
        }
        s.last_used = Instant::now();
        Some(s.clone())
    }
}

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
