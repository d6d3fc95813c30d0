//! The one test harness for `telejob serve`: start a server on a free port with its own data
//! directory ([`ServeCommand`]), talk to its API ([`Api`]), sign in to its dashboard, stop it.
//! The server, replica, browser and AWS tests and the `tj-fleet` bench all start servers through
//! it.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// How to start one `telejob serve`: `--listen 127.0.0.1:0 --data-dir DATA`, plus what the test
/// adds. The server's log goes nowhere unless [`ServeCommand::log_to`] says where.
#[derive(Debug)]
pub struct ServeCommand {
    cmd: Command,
    data: PathBuf,
}

impl ServeCommand {
    /// `bin serve` with data in `data`.
    pub fn new(bin: &Path, data: &Path) -> Self {
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .env_remove("TELEJOB_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        crate::no_first_use_image_build(&mut cmd);
        Self {
            cmd,
            data: data.to_path_buf(),
        }
    }

    /// One more argument.
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.cmd.arg(a);
        self
    }

    /// More arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    /// `--config FILE`.
    pub fn config(self, file: &Path) -> Self {
        self.arg("--config").arg(file)
    }

    /// An environment variable of the server.
    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Self {
        self.cmd.env(k, v);
        self
    }

    /// Environment variables of the server.
    pub fn envs<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.cmd.envs(vars);
        self
    }

    /// Appends the server's standard error to `file`.
    pub fn log_to(mut self, file: &Path) -> Self {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
            .expect("the server's log file");
        self.cmd.stderr(f);
        self
    }

    /// Runs it to its end (for a start that must be refused): its exit status and output.
    ///
    /// # Panics
    ///
    /// When the binary cannot be started at all.
    pub fn output(mut self) -> std::process::Output {
        self.cmd.output().expect("run telejob serve")
    }

    /// Starts it and waits for the line with its address.
    ///
    /// # Panics
    ///
    /// When it cannot be started or exits before listening (its first line says why).
    pub fn start(self) -> Server {
        self.try_start()
            .unwrap_or_else(|line| panic!("the server did not start: {line:?}"))
    }

    /// Starts it; `Err` with what it printed instead of its address when it does not listen.
    ///
    /// # Panics
    ///
    /// When the binary cannot be started at all.
    pub fn try_start(mut self) -> Result<Server, String> {
        let mut child = self.cmd.spawn().expect("start telejob serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the address");
        let Some(base) = line.trim().strip_prefix("telejob: listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(line);
        };
        let token = std::fs::read_to_string(self.data.join("admin.token"))
            .map(|t| t.trim().to_string())
            .unwrap_or_default();
        Ok(Server {
            child,
            base: base.to_string(),
            token,
            data: self.data,
        })
    }
}

/// A running `telejob serve`, killed when dropped.
#[derive(Debug)]
pub struct Server {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The admin's token (empty when the data directory has none, as with PostgreSQL
    /// replicas after the first).
    pub token: String,
    /// The data directory.
    pub data: PathBuf,
}

impl Server {
    /// `bin serve` on `data` with `extra` arguments.
    pub fn start(bin: &Path, data: &Path, extra: &[&str]) -> Self {
        ServeCommand::new(bin, data).args(extra).start()
    }

    /// Kills it (`kill -9`) and waits for it.
    pub fn kill9(mut self) {
        self.kill_now();
    }

    /// Kills it (`kill -9`) and waits for it, keeping the handle.
    pub fn kill_now(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// An API client with `token` (`None`: anonymous).
    pub fn api(&self, token: Option<&str>) -> Api {
        Api::at(&self.base, token)
    }

    /// An API client with the admin's token.
    pub fn admin(&self) -> Api {
        self.api(Some(&self.token))
    }

    /// `GET /healthz`, within 2 s.
    pub async fn health(&self) -> Option<Value> {
        let r = reqwest::Client::new()
            .get(format!("{}/healthz", self.base))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    /// Whether it runs the scheduler now.
    pub async fn is_leader(&self) -> bool {
        self.health().await.is_some_and(|h| h["role"] == "leader")
    }

    /// Signs in to its dashboard with `token`.
    pub async fn sign_in(&self, token: &str) -> (reqwest::Client, String) {
        crate::dashboard_sign_in(&self.base, token).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill_now();
    }
}

/// A client of a server's JSON API.
#[derive(Debug, Clone)]
pub struct Api {
    /// The HTTP client.
    pub http: reqwest::Client,
    /// The server's base URL.
    pub base: String,
    /// The bearer token, if any.
    pub token: Option<String>,
}

impl Api {
    /// A client of the server at `base` with `token`.
    pub fn new(server: &Server, token: Option<&str>) -> Self {
        server.api(token)
    }

    /// A client of `base` with `token`.
    pub fn at(base: &str, token: Option<&str>) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.to_string(),
            token: token.map(str::to_string),
        }
    }

    /// `method path` with `body` (JSON, or a tarball for `…/code`): status, JSON (or null) and
    /// the raw body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> (u16, Value, Vec<u8>) {
        let (status, _, bytes) = self.call_with_headers(method, path, body).await;
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, v, bytes)
    }

    /// As [`Api::call`], answering the status, the response headers and the raw body.
    pub async fn call_with_headers(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
        let mut r = self.http.request(
            method.parse().expect("method"),
            format!("{}{path}", self.base),
        );
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            // Code uploads are tarballs; every other body here is JSON.
            if !path.ends_with("/code") {
                r = r.header("content-type", "application/json");
            }
            r = r.body(b);
        }
        let resp = r.send().await.expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body").to_vec();
        (status, headers, bytes)
    }

    /// `POST path` with JSON `v`.
    pub async fn post_json(&self, path: &str, v: &Value) -> (u16, Value) {
        let (s, v, _) = self
            .call("POST", path, Some(serde_json::to_vec(v).expect("json")))
            .await;
        (s, v)
    }

    /// `PUT path` with JSON `v`.
    pub async fn put_json(&self, path: &str, v: &Value) -> (u16, Value) {
        let (s, v, _) = self
            .call("PUT", path, Some(serde_json::to_vec(v).expect("json")))
            .await;
        (s, v)
    }

    /// `PUT /api/jobs/{job}/code` with a tarball.
    pub async fn put_code(&self, job: &str, tarball: Vec<u8>) -> (u16, Value) {
        let (s, v, _) = self
            .call("PUT", &format!("/api/jobs/{job}/code"), Some(tarball))
            .await;
        (s, v)
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let (s, v, _) = self.call("GET", path, None).await;
        (s, v)
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let (s, v, _) = self.call("DELETE", path, None).await;
        (s, v)
    }

    /// Creates the job `spec` (without code).
    ///
    /// # Panics
    ///
    /// When it is refused.
    pub async fn create(&self, spec: Value) {
        let (s, v) = self.post_json("/api/jobs", &spec).await;
        assert_eq!(s, 201, "{v}");
    }

    /// Creates the job `spec` and uploads a tarball of `files` as its code.
    ///
    /// # Panics
    ///
    /// When either is refused.
    pub async fn create_with_code(&self, spec: Value, files: &[(&str, &str, u32)]) {
        let name = spec["name"].as_str().expect("name").to_string();
        self.create(spec).await;
        let (s, v) = self.put_code(&name, crate::tarball(files)).await;
        assert_eq!(s, 200, "{v}");
    }

    /// Creates the job `spec` with `run.sh` holding `script` as its code.
    ///
    /// # Panics
    ///
    /// When either is refused.
    pub async fn create_with_script(&self, spec: Value, script: &str) {
        self.create_with_code(spec, &[("run.sh", script, 0o755)])
            .await;
    }

    /// Creates the job `spec` with code whose `run.sh` does nothing, for a `command` of its
    /// own to run.
    ///
    /// # Panics
    ///
    /// When it is refused.
    pub async fn create_runnable(&self, spec: Value) {
        self.create_with_script(spec, "true").await;
    }

    /// `POST /api/jobs/{job}/backfill` with `body`.
    pub async fn backfill(&self, job: &str, body: &Value) -> (u16, Value) {
        self.post_json(&format!("/api/jobs/{job}/backfill"), body)
            .await
    }

    /// Starts a run of `job` now; its id.
    pub async fn start_run(&self, job: &str) -> String {
        let (s, v) = self
            .post_json(&format!("/api/jobs/{job}/runs"), &serde_json::json!({}))
            .await;
        assert_eq!(s, 202, "{v}");
        v["run_id"].as_str().expect("run id").to_string()
    }

    /// Run `id` once it has ended (within 120 s).
    pub async fn wait_run(&self, id: &str) -> Value {
        let (s, run) = self.get(&format!("/api/runs/{id}?wait=120")).await;
        assert_eq!(s, 200, "{run}");
        run
    }

    /// Runs `job` now and returns the run once it has ended.
    pub async fn run_to_end(&self, job: &str) -> Value {
        let id = self.start_run(job).await;
        self.wait_run(&id).await
    }

    /// A client with a new token for user `name` (made through this admin client).
    pub async fn user(&self, name: &str) -> Api {
        let (s, t) = self
            .post_json("/api/tokens", &serde_json::json!({"user": name}))
            .await;
        assert_eq!(s, 201, "{t}");
        Api::at(&self.base, t["token"].as_str())
    }
}

/// The text of the dashboard page at `url`, fetched by `http` with the session `cookie`.
///
/// # Panics
///
/// When it cannot be fetched.
pub async fn page(http: &reqwest::Client, url: &str, cookie: &str) -> String {
    http.get(url)
        .header("cookie", cookie)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// `bin token create --user USER --data-dir DATA`: the new token.
///
/// # Panics
///
/// When it fails.
pub fn token_for(bin: &Path, data: &Path, user: &str) -> String {
    let o = Command::new(bin)
        .args(["token", "create", "--user", user, "--data-dir"])
        .arg(data)
        .output()
        .expect("telejob token create");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}
