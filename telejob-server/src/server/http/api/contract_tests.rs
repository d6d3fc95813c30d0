//! The API's contract in process: the whole application router, built as `serve` builds it
//! (SQLite in a temporary data directory), driven with `tower::ServiceExt::oneshot` — no
//! listener, no process, one request at a time.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::server::{ServeArgs, Settings, build};

/// The application and its admin token, with what keeps it alive.
pub(super) struct App {
    router: Router,
    admin: String,
    _server: crate::server::Server,
    _dir: tempfile::TempDir,
}

impl App {
    pub(super) async fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = Settings::resolve(ServeArgs {
            data_dir: Some(dir.path().join("data")),
            listen: Some("127.0.0.1:0".into()),
            config: None,
            database: None,
            example: false,
        })
        .expect("settings");
        let server = build(settings).await.expect("build");
        let admin = std::fs::read_to_string(dir.path().join("data/admin.token"))
            .expect("admin token")
            .trim()
            .to_string();
        Self {
            router: server.router(),
            admin,
            _server: server,
            _dir: dir,
        }
    }

    /// `method path` with `token` and a JSON `body`: the status and the JSON answer.
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .expect("request");
        let (status, bytes) = self.send(req).await;
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Sends `req` through the router: the status and the raw answer.
    async fn send(&self, req: Request<Body>) -> (StatusCode, Vec<u8>) {
        let resp = self.router.clone().oneshot(req).await.expect("answer");
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, bytes.to_vec())
    }

    /// `method path` as the admin with raw `body` bytes (sent as JSON): the status and the raw
    /// answer.
    pub(super) async fn admin_raw(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Vec<u8>) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.admin))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .expect("request");
        self.send(req).await
    }

    /// The data directory the server keeps its state in.
    pub(super) fn data_dir(&self) -> std::path::PathBuf {
        self._dir.path().join("data")
    }

    /// `POST /api/jobs` with `spec`, as the admin.
    async fn create(&self, spec: Value) -> (StatusCode, Value) {
        self.admin("POST", "/api/jobs", Some(spec)).await
    }

    async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call(method, path, Some(&self.admin.clone()), body)
            .await
    }
}

#[tokio::test]
async fn every_mutating_call_needs_a_token_and_reads_of_health_do_not() {
    let app = App::new().await;
    let (s, health) = app.call("GET", "/healthz", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(health["status"], "ok");
    for (method, path) in [
        ("POST", "/api/jobs"),
        ("PUT", "/api/jobs/x"),
        ("DELETE", "/api/jobs/x"),
        ("POST", "/api/jobs/x/runs"),
        ("POST", "/api/jobs/x/pause"),
        ("POST", "/api/tokens"),
        ("GET", "/api/jobs"),
    ] {
        let (s, v) = app.call(method, path, None, Some(json!({}))).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{method} {path}: {v}");
        let (s, _) = app
            .call(method, path, Some("not-a-token"), Some(json!({})))
            .await;
        assert_eq!(
            s,
            StatusCode::UNAUTHORIZED,
            "{method} {path} with a bad token"
        );
    }
}

#[tokio::test]
async fn a_job_is_created_read_and_refused_with_the_field_named() {
    let app = App::new().await;
    let (s, v) = app
        .create(json!({"name": "slowsql", "timeout_minutes": 175}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = app.admin("GET", "/api/jobs/slowsql", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["schedule_description"], "daily at 12:00 UTC");
    // The same name again, and bad fields: refused, saying what.
    let (s, v) = app.create(json!({"name": "slowsql"})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let (s, v) = app
        .create(json!({"name": "Bad Name", "timeout_minutes": 0}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let text = v.to_string();
    assert!(
        text.contains("name") && text.contains("timeout_minutes"),
        "{text}"
    );
    let (s, v) = app.admin("GET", "/api/jobs/nope", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    // A long poll past its bound is refused as api.md says, not silently shortened.
    let (s, v) = app
        .admin("GET", "/api/runs/r-anything?wait=100000", None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v.to_string().contains("wait"), "{v}");
}

#[tokio::test]
async fn another_users_job_is_not_theirs_to_change() {
    let app = App::new().await;
    let (s, _) = app.create(json!({"name": "mine"})).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, t) = app
        .admin("POST", "/api/tokens", Some(json!({"user": "mallory"})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let mallory = t["token"].as_str().expect("token").to_string();
    for (method, path, body) in [
        ("PUT", "/api/jobs/mine", Some(json!({"name": "mine"}))),
        ("POST", "/api/jobs/mine/pause", None),
        ("POST", "/api/jobs/mine/runs", None),
        ("DELETE", "/api/jobs/mine", None),
    ] {
        let (s, v) = app.call(method, path, Some(&mallory), body).await;
        assert!(
            s == StatusCode::FORBIDDEN || s == StatusCode::NOT_FOUND,
            "{method} {path} by another user: {s} {v}"
        );
    }
    let (s, v) = app.admin("GET", "/api/jobs/mine", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["paused"], false, "nothing changed: {v}");
}

#[tokio::test]
async fn the_schedule_preview_and_the_openapi_document_answer() {
    let app = App::new().await;
    let (s, doc) = app.call("GET", "/api/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(doc["paths"]["/api/jobs"].is_object(), "{doc}");
    app.admin(
        "POST",
        "/api/jobs",
        Some(
            json!({"name": "weekly", "schedule": {"frequency": "weekly", "day_of_week": "monday"}}),
        ),
    )
    .await;
    let (s, v) = app
        .admin("GET", "/api/jobs/weekly/schedule?next=3", None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let next = v["next"]
        .as_array()
        .or_else(|| v.as_array())
        .cloned()
        .unwrap_or_default();
    assert_eq!(next.len(), 3, "{v}");
}

#[tokio::test]
async fn an_email_target_on_a_server_without_smtp_is_refused_naming_it() {
    let app = App::new().await;
    let (s, v) = app
        .create(json!({"name": "mailed", "notify": {"email": ["ops@example.com"]}}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["field"], "notify.email", "{v}");
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("[smtp]")),
        "{v}"
    );
}
