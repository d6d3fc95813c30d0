//! The dashboard's protections and sessions.

use super::*;

#[tokio::test]
async fn the_dashboard_refuses_cross_site_posts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = serve(dir.path(), &[]);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let login = |origin: &str| {
        http.post(format!("{}/login", srv.base))
            .header("Origin", origin)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(format!("token={}", srv.token))
            .send()
    };
    let evil = login("http://evil.example").await.expect("post");
    assert_eq!(evil.status().as_u16(), 403, "login CSRF is refused");
    assert!(evil.headers().get("set-cookie").is_none());
    let ok = login(&srv.base).await.expect("post");
    assert_eq!(ok.status().as_u16(), 303);
    let cookie = ok
        .headers()
        .get("set-cookie")
        .expect("session cookie")
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().expect("pair").to_string();
    // A state-changing form without the session's CSRF token, or from another origin, is refused.
    let post = |origin: &str, csrf: &str| {
        http.post(format!("{}/logout", srv.base))
            .header("Cookie", session.clone())
            .header("Origin", origin)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(format!("csrf={csrf}"))
            .send()
    };
    assert_eq!(
        post(&srv.base, "wrong")
            .await
            .expect("post")
            .status()
            .as_u16(),
        403
    );
    let page = http
        .get(format!("{}/jobs/new", srv.base))
        .header("Cookie", session.clone())
        .send()
        .await
        .expect("get");
    let html = page.text().await.expect("html");
    let csrf = csrf_of(&html);
    assert_eq!(
        post("http://evil.example", &csrf)
            .await
            .expect("post")
            .status()
            .as_u16(),
        403
    );
    assert_eq!(
        post(&srv.base, &csrf)
            .await
            .expect("post")
            .status()
            .as_u16(),
        303,
        "the real form works"
    );
}

#[tokio::test]
async fn the_dashboard_runs_no_inline_script() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = serve(dir.path(), &[]);
    let r = reqwest::get(format!("{}/login", srv.base))
        .await
        .expect("login page");
    let csp = r
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .expect("a CSP")
        .to_string();
    let script_src = csp
        .split(';')
        .map(str::trim)
        .find(|d| d.starts_with("script-src"))
        .expect("script-src");
    assert_eq!(script_src, "script-src 'self'", "{csp}");
    let page = r.text().await.expect("page");
    assert!(
        page.contains(r#"<script src="/ui/app.js" defer>"#),
        "{page}"
    );
    assert!(
        !page.contains("onsubmit=") && !page.contains("onclick="),
        "{page}"
    );
    let js = reqwest::get(format!("{}/ui/app.js", srv.base))
        .await
        .expect("app.js");
    assert!(
        js.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("text/javascript"))
    );
}

#[tokio::test]
async fn a_restart_does_not_sign_people_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = serve(dir.path(), &[]);
    let (http, session) = srv.sign_in(&srv.token).await;
    let id = session.split_once('=').expect("name=value").1.to_string();
    let page = |base: String| {
        let (http, session) = (http.clone(), session.clone());
        async move {
            http.get(format!("{base}/"))
                .header("Cookie", session)
                .send()
                .await
                .expect("page")
                .status()
                .as_u16()
        }
    };
    assert_eq!(page(srv.base.clone()).await, 200);
    let data = srv.data.clone();
    srv.kill9();
    let srv = serve(&data, &[]);
    assert_eq!(page(srv.base.clone()).await, 200, "still signed in");
    // Only a hash of the session id is stored.
    let db = std::fs::read(data.join("telejob.db")).unwrap_or_default();
    let wal = std::fs::read(data.join("telejob.db-wal")).unwrap_or_default();
    for bytes in [db, wal] {
        assert!(!bytes.windows(id.len()).any(|w| w == id.as_bytes()));
    }
}
