//! The dashboard's side of sessions: the HttpOnly, SameSite=Strict cookie, the signed-in
//! browser extractor, and the Origin and CSRF checks on every state-changing request.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::uri::{Authority, Uri};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};

use crate::server::app::sessions::{IDLE, Session};
use crate::server::app::state::AppState;

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
            .await
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

/// Whether the request's Origin (or Referer) is this server: the same scheme (`http`, or
/// `https` behind a TLS proxy that says so in `X-Forwarded-Proto`), host and port (default ports
/// made explicit). Requests without either header (old clients, command-line tools) pass;
/// browsers always send Origin on POST.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let Some(origin) = text(header::ORIGIN).or_else(|| text(header::REFERER)) else {
        return true;
    };
    let scheme = match text(header::HeaderName::from_static("x-forwarded-proto")) {
        Some(p) if p.trim().eq_ignore_ascii_case("https") => "https",
        _ => "http",
    };
    let Some(host) = text(header::HOST).and_then(|h| h.parse::<Authority>().ok()) else {
        return false;
    };
    let Ok(theirs) = origin.parse::<Uri>() else {
        return false;
    };
    let port = |scheme: &str, explicit: Option<u16>| {
        explicit.or(match scheme {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        })
    };
    match (theirs.scheme_str(), theirs.host()) {
        (Some(s), Some(h)) => {
            s.eq_ignore_ascii_case(scheme)
                && h.eq_ignore_ascii_case(host.host())
                && port(s, theirs.port_u16()) == port(scheme, host.port_u16())
        }
        _ => false,
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(host: &str, origin: Option<&str>, proto: Option<&str>) -> bool {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().expect("host"));
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().expect("origin"));
        }
        if let Some(p) = proto {
            h.insert("x-forwarded-proto", p.parse().expect("proto"));
        }
        same_origin(&h)
    }

    #[test]
    fn origins_match_on_scheme_host_and_port() {
        // (host, Origin, X-Forwarded-Proto, accepted, why)
        for (host, origin, proto, ok, why) in [
            (
                "127.0.0.1:8080",
                Some("http://127.0.0.1:8080"),
                None,
                true,
                "same",
            ),
            (
                "Example.com",
                Some("http://example.com:80"),
                None,
                true,
                "case, port",
            ),
            (
                "example.com",
                Some("https://example.com"),
                Some("https"),
                true,
                "proxy",
            ),
            (
                "example.com",
                None,
                None,
                true,
                "no Origin: the CSRF token decides",
            ),
            (
                "127.0.0.1:8080",
                Some("http://127.0.0.1:9090"),
                None,
                false,
                "port",
            ),
            (
                "example.com",
                Some("https://example.com"),
                None,
                false,
                "scheme",
            ),
            (
                "example.com",
                Some("http://example.com"),
                Some("https"),
                false,
                "scheme",
            ),
            (
                "example.com",
                Some("http://evil.example"),
                None,
                false,
                "host",
            ),
            (
                "example.com",
                Some("http://example.com.evil"),
                None,
                false,
                "host",
            ),
            ("example.com", Some("null"), None, false, "opaque origin"),
        ] {
            assert_eq!(check(host, origin, proto), ok, "{why}: {host} {origin:?}");
        }
    }
}
