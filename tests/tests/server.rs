//! `telejob serve` driven over HTTP, as clients and operators meet it.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use telejob_e2e::{processes_with, tarball, telejob_bin, webhook_sink};

struct Server {
    child: Child,
    base: String,
    token: String,
    data: PathBuf,
}

impl Server {
    fn start(data: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(telejob_bin!())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .args(extra)
            .env_remove("TELEJOB_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the address");
        let base = line
            .trim()
            .strip_prefix("telejob: listening on ")
            .expect("address line")
            .to_string();
        let token = std::fs::read_to_string(data.join("admin.token"))
            .expect("admin token")
            .trim()
            .to_string();
        Self {
            child,
            base,
            token,
            data: data.to_path_buf(),
        }
    }

    fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    fn new(s: &Server, token: Option<&str>) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: s.base.clone(),
            token: token.map(str::to_string),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> (u16, Value, Vec<u8>) {
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
        let bytes = resp.bytes().await.expect("body").to_vec();
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, v, bytes)
    }

    async fn post_json(&self, path: &str, v: &Value) -> (u16, Value) {
        let (s, v, _) = self
            .call("POST", path, Some(serde_json::to_vec(v).expect("json")))
            .await;
        (s, v)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let (s, v, _) = self.call("GET", path, None).await;
        (s, v)
    }

    async fn create_with_code(&self, spec: Value, files: &[(&str, &str, u32)]) {
        let name = spec["name"].as_str().expect("name").to_string();
        let (s, v) = self.post_json("/api/jobs", &spec).await;
        assert_eq!(s, 201, "{v}");
        let (s, v, _) = self
            .call(
                "PUT",
                &format!("/api/jobs/{name}/code"),
                Some(tarball(files)),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }

    async fn run_to_end(&self, job: &str) -> Value {
        let (s, v) = self
            .post_json(&format!("/api/jobs/{job}/runs"), &json!({}))
            .await;
        assert_eq!(s, 202, "{v}");
        let id = v["run_id"].as_str().expect("run id").to_string();
        let (s, run) = self.get(&format!("/api/runs/{id}?wait=120")).await;
        assert_eq!(s, 200);
        run
    }
}

fn token_for(data: &Path, user: &str) -> String {
    let o = Command::new(telejob_bin!())
        .args(["token", "create", "--user", user, "--data-dir"])
        .arg(data)
        .output()
        .expect("token create");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[tokio::test]
async fn bad_requests_name_the_field_and_store_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = Server::start(dir.path(), &[]);
    let api = Api::new(&srv, Some(&srv.token));
    let cases: Vec<(&[u8], u16, Option<&str>)> = vec![
        (b"{\"name\":", 400, None),
        (b"not json", 400, None),
        (b"", 400, None),
        (br#"{"name":"ok"} {"name":"again"}"#, 400, None),
        (br#"{"name":"ok"}trailing"#, 400, None),
        (br#"[{"name":"ok"}]"#, 400, None),
        (br#""ok""#, 400, None),
        (br#"{"name":"ok","tmeout":5}"#, 422, Some("tmeout")),
        (
            br#"{"name":"ok","timeout_minutes":-5}"#,
            422,
            Some("timeout_minutes"),
        ),
        (
            br#"{"name":"ok","timeout_minutes":"soon"}"#,
            422,
            Some("timeout_minutes"),
        ),
        (
            br#"{"name":"ok","timeout_minutes":0}"#,
            422,
            Some("timeout_minutes"),
        ),
        (br#"{"name":"bad\u0000name"}"#, 422, Some("name")),
        (br#"{"name":"x'; DROP TABLE jobs;--"}"#, 422, Some("name")),
        (br#"{"name":"../etc"}"#, 422, Some("name")),
        (
            br#"{"name":"ok","schedule":{"frequency":"weekly"}}"#,
            422,
            Some("schedule.day_of_week"),
        ),
        (
            br#"{"name":"ok","schedule":{"frequency":"cron","cron":"0 0 12 * * ? 2030"}}"#,
            422,
            Some("schedule.cron"),
        ),
        (
            br#"{"name":"ok","schedule":{"frequency":"monthly","day_of_month":32}}"#,
            422,
            Some("schedule.day_of_month"),
        ),
        (
            br#"{"name":"ok","output_dir":"/etc"}"#,
            422,
            Some("output_dir"),
        ),
        (
            br#"{"name":"ok","code":"http://x/y.tgz"}"#,
            422,
            Some("code"),
        ),
    ];
    for (body, want, field) in cases {
        let (s, v, _) = api.call("POST", "/api/jobs", Some(body.to_vec())).await;
        assert_eq!(s, want, "{}: {v}", String::from_utf8_lossy(body));
        if let Some(f) = field {
            assert_eq!(v["field"], f, "{}: {v}", String::from_utf8_lossy(body));
        }
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    let (_, jobs) = api.get("/api/jobs").await;
    assert_eq!(jobs, json!([]), "nothing was stored");
    // No token, a wrong token.
    for token in [None, Some("tj_wrong")] {
        let anon = Api::new(&srv, token);
        assert_eq!(anon.get("/api/jobs").await.0, 401);
        assert_eq!(
            anon.post_json("/api/jobs", &json!({"name": "anon"}))
                .await
                .0,
            401
        );
    }
    assert_eq!(Api::new(&srv, None).get("/healthz").await.0, 200);
}

#[tokio::test]
async fn fifty_concurrent_creates_of_one_name_make_one_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = Server::start(dir.path(), &[]);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let api = Api::new(&srv, Some(&srv.token));
        tasks.push(tokio::spawn(async move {
            api.post_json("/api/jobs", &json!({"name": "race"})).await.0
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.expect("join"));
    }
    assert_eq!(codes.iter().filter(|c| **c == 201).count(), 1, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 409).count(), 49, "{codes:?}");
    let (_, jobs) = Api::new(&srv, Some(&srv.token)).get("/api/jobs").await;
    assert_eq!(jobs.as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn a_run_now_publishes_and_only_owners_read_logs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = Server::start(dir.path(), &[]);
    let admin = Api::new(&srv, Some(&srv.token));
    admin
        .create_with_code(
            json!({"name": "pub", "schedule": {"frequency": "daily", "time_of_day": "03:00"}}),
            &[(
                "run.sh",
                "mkdir -p output; echo \"secret-log-line $TELEJOB_JOB\"; echo a,b > output/agg.csv",
                0o755,
            )],
        )
        .await;
    admin
        .create_with_code(
            json!({"name": "priv", "output_visibility": "private"}),
            &[("run.sh", "mkdir -p output; echo x > output/x", 0o755)],
        )
        .await;
    let run = admin.run_to_end("pub").await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["trigger"], "manual");
    assert_eq!(run["published"][0]["path"], "agg.csv");
    assert!(run["phases"]["run_started"].is_string());
    let id = run["id"].as_str().expect("id");
    let (s, _, log) = admin
        .call("GET", &format!("/api/runs/{id}/log"), None)
        .await;
    assert_eq!(s, 200);
    assert!(String::from_utf8_lossy(&log).contains("secret-log-line pub"));
    assert!(
        srv.data.join("public/pub/data/agg.csv").is_file(),
        "published under <job>/data/"
    );

    // Another user: sees the public job but may not manage it or read its logs; the private job
    // does not exist for them.
    let bob_token = token_for(&srv.data, "bob");
    let bob = Api::new(&srv, Some(&bob_token));
    assert_eq!(bob.get("/api/jobs/pub").await.0, 200);
    assert_eq!(bob.get(&format!("/api/runs/{id}")).await.0, 200);
    assert_eq!(
        bob.call("GET", &format!("/api/runs/{id}/log"), None)
            .await
            .0,
        403
    );
    assert_eq!(bob.call("DELETE", "/api/jobs/pub", None).await.0, 403);
    assert_eq!(bob.post_json("/api/jobs/pub/runs", &json!({})).await.0, 403);
    assert_eq!(
        bob.post_json("/api/jobs/pub/pause", &json!({})).await.0,
        403
    );
    assert_eq!(
        bob.call("PUT", "/api/jobs/pub", Some(br#"{"name":"pub"}"#.to_vec()))
            .await
            .0,
        403
    );
    assert_eq!(
        bob.call(
            "PUT",
            "/api/jobs/pub/code",
            Some(tarball(&[("run.sh", "true", 0o755)]))
        )
        .await
        .0,
        403
    );
    assert_eq!(bob.get("/api/jobs/priv").await.0, 404);
    assert_eq!(bob.get("/api/jobs/priv/runs").await.0, 404);
    let (_, list) = bob.get("/api/jobs").await;
    let names: Vec<&str> = list
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|j| j["name"].as_str())
        .collect();
    assert_eq!(names, vec!["pub"]);
    assert_eq!(
        bob.post_json("/api/tokens", &json!({"user": "mallory", "admin": true}))
            .await
            .0,
        403
    );
    // Bob's own job is his to manage.
    bob.create_with_code(
        json!({"name": "bobs"}),
        &[("run.sh", "mkdir output", 0o755)],
    )
    .await;
    assert_eq!(
        bob.post_json("/api/jobs/bobs/pause", &json!({})).await.0,
        200
    );
    // Admins can make tokens over the API.
    let (s, t) = admin
        .post_json("/api/tokens", &json!({"user": "carol"}))
        .await;
    assert_eq!(s, 201);
    let carol = Api::new(&srv, t["token"].as_str());
    assert_eq!(carol.get("/api/jobs").await.0, 200);
}

#[tokio::test]
async fn code_uploads_are_checked_and_capped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("telejob.toml");
    std::fs::write(&cfg, "max_code_bytes = 4096\n").expect("config");
    let data = dir.path().join("data");
    let srv = Server::start(&data, &["--config", cfg.to_str().expect("utf8")]);
    let api = Api::new(&srv, Some(&srv.token));
    assert_eq!(
        api.post_json("/api/jobs", &json!({"name": "up"})).await.0,
        201
    );
    let (s, v, _) = api
        .call(
            "PUT",
            "/api/jobs/up/code",
            Some(b"<html>not a tarball</html>".to_vec()),
        )
        .await;
    assert_eq!((s, v["field"].as_str()), (422, Some("code")), "{v}");
    let big: String = (0..20_000)
        .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
        .collect();
    let (s, _, _) = api
        .call("PUT", "/api/jobs/up/code", Some(big.into_bytes()))
        .await;
    assert_eq!(s, 413);
    let (s, v, _) = api
        .call(
            "PUT",
            "/api/jobs/up/code",
            Some(tarball(&[("run.sh", "true", 0o755)])),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (_, job) = api.get("/api/jobs/up").await;
    assert_eq!(job["code_versions"].as_array().map(Vec::len), Some(1));
    assert_eq!(job["code_sha256"], v["sha256"]);
    // A job without code cannot run.
    assert_eq!(
        api.post_json("/api/jobs", &json!({"name": "nocode"}))
            .await
            .0,
        201
    );
    assert_eq!(
        api.post_json("/api/jobs/nocode/runs", &json!({})).await.0,
        422
    );
}

#[tokio::test]
async fn after_kill_9_runs_in_flight_are_interrupted_killed_and_schedules_rearmed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = Server::start(dir.path(), &[]);
    let api = Api::new(&srv, Some(&srv.token));
    api.create_with_code(
        json!({"name": "victim", "command": "sleep 600.9191", "schedule": {"frequency": "daily", "time_of_day": "06:00"}}),
        &[("run.sh", "true", 0o755)],
    )
    .await;
    let (_, v) = api.post_json("/api/jobs/victim/runs", &json!({})).await;
    let id = v["run_id"].as_str().expect("id").to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.get(&format!("/api/runs/{id}")).await.1["state"] != "running" {
        assert!(Instant::now() < deadline, "the run never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!processes_with("600.9191").is_empty());
    let data = srv.data.clone();
    srv.kill9();
    // The run's supervisor sees telejob die and takes the run with it, well before a restart.
    let killed = Instant::now();
    while !processes_with("600.9191").is_empty() {
        assert!(
            killed.elapsed() < Duration::from_secs(2),
            "the run outlived the server by 2 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let workspaces =
        |data: &Path| -> usize { std::fs::read_dir(data.join("runs")).map_or(0, |d| d.count()) };
    assert_eq!(
        workspaces(&data),
        1,
        "the interrupted run's workspace is still there"
    );
    let srv = Server::start(&data, &[]);
    assert_eq!(
        workspaces(&data),
        0,
        "the restart removes the interrupted workspace"
    );
    let api = Api::new(&srv, Some(&srv.token));
    let (_, run) = api.get(&format!("/api/runs/{id}")).await;
    assert_eq!(run["state"], "interrupted", "{run}");
    assert_eq!(
        processes_with("600.9191"),
        Vec::<i32>::new(),
        "the orphaned job still runs"
    );
    let (_, job) = api.get("/api/jobs/victim").await;
    assert!(
        job["next_run"]
            .as_str()
            .is_some_and(|t| t.ends_with("T06:00:00Z")),
        "{job}"
    );
    // SIGTERM stops the server gracefully.
    let pid = srv.child.id();
    // SAFETY: not needed — use the kill command.
    let st = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    let mut srv = srv;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = srv.child.try_wait().expect("wait") {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "no graceful exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn failures_are_sent_to_the_webhook_once_and_a_dead_webhook_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = Server::start(dir.path(), &[]);
    let api = Api::new(&srv, Some(&srv.token));
    let (url, rx) = webhook_sink();
    api.create_with_code(
        json!({"name": "hooked", "notify": {"webhook": url}}),
        &[("run.sh", "exit 3", 0o755)],
    )
    .await;
    let run = api.run_to_end("hooked").await;
    assert_eq!(run["state"], "failed");
    let body = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the webhook is called");
    let ev: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(ev["event"], "failed");
    assert_eq!(ev["job"], "hooked");
    assert_eq!(ev["run"]["id"], run["id"]);
    assert!(
        rx.recv_timeout(Duration::from_secs(2)).is_err(),
        "sent once"
    );
    // A webhook that is down: the run's outcome is the run's own.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!("http://{}/hook", closed.local_addr().expect("addr"));
    drop(closed);
    api.create_with_code(
        json!({"name": "deadhook", "notify": {"webhook": dead}}),
        &[("run.sh", "mkdir output; echo 1 > output/x", 0o755)],
    )
    .await;
    assert_eq!(api.run_to_end("deadhook").await["state"], "succeeded");
    api.create_with_code(
        json!({"name": "deadhook2", "notify": {"webhook": "http://127.0.0.1:9/x"}}),
        &[("run.sh", "exit 1", 0o755)],
    )
    .await;
    assert_eq!(api.run_to_end("deadhook2").await["state"], "failed");
    assert_eq!(api.get("/healthz").await.0, 200);
}

#[tokio::test]
async fn a_scheduled_run_happens_on_its_minute() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = Server::start(dir.path(), &[]);
    let api = Api::new(&srv, Some(&srv.token));
    api.create_with_code(
        json!({"name": "minutely", "schedule": {"frequency": "cron", "cron": "* * * * *"}}),
        &[(
            "run.sh",
            "mkdir -p output; echo \"$TELEJOB_SCHEDULED_FOR\" > output/slot.txt",
            0o755,
        )],
    )
    .await;
    let (_, job) = api.get("/api/jobs/minutely").await;
    let next = job["next_run"].as_str().expect("armed").to_string();
    let (s, preview) = api.get("/api/jobs/minutely/schedule?next=3").await;
    assert_eq!(s, 200);
    assert_eq!(preview["next"][0], next);
    let deadline = Instant::now() + Duration::from_secs(90);
    let run = loop {
        let (_, runs) = api.get("/api/jobs/minutely/runs").await;
        if let Some(r) = runs
            .as_array()
            .and_then(|a| a.iter().find(|r| r["state"] == "succeeded"))
        {
            break r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no scheduled run within 90 s: {runs}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(run["trigger"], "scheduled");
    assert_eq!(run["scheduled_for"], next);
    let slot =
        std::fs::read_to_string(srv.data.join("public/minutely/data/slot.txt")).expect("published");
    assert_eq!(slot.trim(), next, "TELEJOB_SCHEDULED_FOR is the slot");
    let (_, metrics, text) = api.call("GET", "/metrics", None).await;
    let _ = metrics;
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains("telejob_fire_lateness_seconds_count 1"),
        "{text}"
    );
    assert!(
        text.contains("telejob_runs{state=\"succeeded\"} 1"),
        "{text}"
    );

    // kill -9 and restart within the same minute: the slot that ran does not run again.
    let data = srv.data.clone();
    srv.kill9();
    let srv = Server::start(&data, &[]);
    let api = Api::new(&srv, Some(&srv.token));
    let (_, job) = api.get("/api/jobs/minutely").await;
    assert!(
        job["next_run"].as_str().is_some_and(|t| t > next.as_str()),
        "re-armed after the slot: {job}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, runs) = api.get("/api/jobs/minutely/runs").await;
    let for_slot = runs
        .as_array()
        .expect("runs")
        .iter()
        .filter(|r| r["scheduled_for"] == next.as_str())
        .count();
    assert_eq!(for_slot, 1, "the slot ran once: {runs}");
}

#[tokio::test]
async fn the_cli_verbs_drive_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = Server::start(&dir.path().join("data"), &[]);
    let code = dir.path().join("c.tgz");
    std::fs::write(
        &code,
        tarball(&[(
            "run.sh",
            "mkdir output; echo hi; echo 1 > output/one.csv",
            0o755,
        )]),
    )
    .expect("write");
    let cli = |args: &[&str]| {
        Command::new(telejob_bin!())
            .args(args)
            .env("TELEJOB_SERVER", &srv.base)
            .env("TELEJOB_TOKEN", &srv.token)
            .output()
            .expect("telejob")
    };
    let o = cli(&[
        "jobs",
        "create",
        "--name",
        "viacli",
        "--code",
        code.to_str().expect("utf8"),
        "--frequency",
        "weekly",
        "--day-of-week",
        "monday",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("weekly on monday at 12:00 UTC"));
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("warning:"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Warnings print on stderr and do not stop the creation: a daily 06:00 job whose command
    // is not in the code.
    let o = cli(&[
        "jobs",
        "create",
        "--name",
        "warned",
        "--code",
        code.to_str().expect("utf8"),
        "--command",
        "./missing.sh",
        "--at",
        "06:00",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("warning: command: ./missing.sh is not in the uploaded code")
            && err.contains("warning: schedule.time_of_day:"),
        "{err}"
    );
    // Backfill from the command line: the plan, then the runs, waited for.
    let day = |n: i64| {
        (chrono::Utc::now() - chrono::Duration::days(n))
            .format("%Y-%m-%d")
            .to_string()
    };
    let (from, to) = (day(15), day(1));
    let o = cli(&[
        "jobs",
        "backfill",
        "viacli",
        "--from",
        &from,
        "--to",
        &to,
        "--dry-run",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let plan = String::from_utf8_lossy(&o.stdout).to_string();
    let mondays = plan
        .lines()
        .filter(|l| l.contains("missed") && l.contains("would run"))
        .count();
    assert!((2..=3).contains(&mondays), "{plan}");
    let o = cli(&[
        "jobs", "backfill", "viacli", "--from", &from, "--to", &to, "--wait",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        out.lines().filter(|l| l.contains(" run ")).count(),
        mondays,
        "{out}"
    );
    let o = cli(&["jobs", "backfill", "viacli", "--from", &to, "--to", &from]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "a reversed range is the user's mistake"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("to"));
    let o = cli(&["jobs", "run-now", "viacli", "--wait"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let o = cli(&["runs", "log", &id]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "hi");
    let o = cli(&["runs", "list", "viacli"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("succeeded"));
    let o = cli(&[
        "jobs",
        "create",
        "--name",
        "viacli",
        "--code",
        code.to_str().expect("utf8"),
    ]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "a taken name is the user's mistake"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("exists already"));
    assert!(cli(&["jobs", "pause", "viacli"]).status.success());
    assert!(cli(&["jobs", "delete", "viacli"]).status.success());
    let o = cli(&["jobs", "show", "viacli"]);
    assert_eq!(o.status.code(), Some(2));
}

/// A minimal SMTP server that accepts one message and hands over its DATA.
fn smtp_sink() -> (u16, std::sync::mpsc::Receiver<String>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut w = s.try_clone().expect("clone");
            let mut r = BufReader::new(s);
            let _ = w.write_all(b"220 sink ESMTP\r\n");
            let mut data = String::new();
            let mut in_data = false;
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                if in_data {
                    if line == ".\r\n" {
                        in_data = false;
                        let _ = w.write_all(b"250 queued\r\n");
                        let _ = tx.send(std::mem::take(&mut data));
                    } else {
                        data.push_str(&line);
                    }
                } else {
                    let cmd = line.to_ascii_uppercase();
                    let reply: &[u8] = if cmd.starts_with("EHLO") || cmd.starts_with("HELO") {
                        b"250 sink\r\n"
                    } else if cmd.starts_with("DATA") {
                        in_data = true;
                        b"354 go on\r\n"
                    } else if cmd.starts_with("QUIT") {
                        let _ = w.write_all(b"221 bye\r\n");
                        break;
                    } else {
                        b"250 ok\r\n"
                    };
                    let _ = w.write_all(reply);
                }
                line.clear();
            }
        }
    });
    (port, rx)
}

#[tokio::test]
async fn failures_are_emailed_through_the_configured_relay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, rx) = smtp_sink();
    let cfg = dir.path().join("telejob.toml");
    std::fs::write(&cfg, format!("[smtp]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\nfrom = \"telejob@example.com\"\n")).expect("config");
    let srv = Server::start(
        &dir.path().join("data"),
        &["--config", cfg.to_str().expect("utf8")],
    );
    let api = Api::new(&srv, Some(&srv.token));
    api.create_with_code(
        json!({"name": "mailed", "notify": {"email": ["ops@example.com"]}}),
        &[("run.sh", "exit 4", 0o755)],
    )
    .await;
    assert_eq!(api.run_to_end("mailed").await["state"], "failed");
    let mail = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("an email is sent");
    assert!(mail.contains("ops@example.com"), "{mail}");
    assert!(mail.contains("[telejob] mailed: Failed"), "{mail}");
    assert!(mail.contains("Job: mailed"), "{mail}");
}

#[tokio::test]
async fn the_dashboard_refuses_cross_site_posts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = Server::start(dir.path(), &[]);
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
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("csrf field")
        .to_string();
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
async fn json_bodies_need_their_content_type_and_uploads_their_length() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("telejob.toml");
    std::fs::write(&cfg, "max_code_bytes = 4096\n").expect("config");
    let srv = Server::start(
        &dir.path().join("data"),
        &["--config", cfg.to_str().expect("utf8")],
    );
    let http = reqwest::Client::new();
    let post = |ct: Option<&'static str>| {
        let mut r = http
            .post(format!("{}/api/jobs", srv.base))
            .bearer_auth(&srv.token)
            .body(r#"{"name":"typed"}"#);
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        r.send()
    };
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let r = post(ct).await.expect("post");
        assert_eq!(r.status().as_u16(), 415, "{ct:?}");
    }
    let r = post(Some("application/json; charset=utf-8"))
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 201);
    // Body-less POSTs need no content type.
    let r = http
        .post(format!("{}/api/jobs/typed/pause", srv.base))
        .bearer_auth(&srv.token)
        .send()
        .await
        .expect("pause");
    assert_eq!(r.status().as_u16(), 200);

    // A declared length over the limit is refused before the body is sent.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = srv.base.trim_start_matches("http://").to_string();
    let mut tcp = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let head = format!(
        "PUT /api/jobs/typed/code HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Length: 1000000000\r\nExpect: 100-continue\r\n\r\n",
        srv.token
    );
    tcp.write_all(head.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
        .await
        .expect("an answer without the body")
        .expect("read");
    let reply = String::from_utf8_lossy(&buf[..n]);
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
}

/// A gzip tarball with `run.sh` and a file entry named `name` as is (tar's own builder refuses
/// `..`, as it should).
fn traversal_tarball(name: &str) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o755);
    b.append_data(&mut h, "run.sh", &b"true"[..])
        .expect("run.sh");
    let mut h = tar::Header::new_gnu();
    h.as_gnu_mut().expect("gnu").name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_size(1);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    b.append(&h, &b"x"[..]).expect("entry");
    b.into_inner().expect("tar").finish().expect("gzip")
}

#[tokio::test]
async fn an_unsafe_upload_is_refused_naming_the_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = Server::start(dir.path(), &[]);
    let api = Api::new(&srv, Some(&srv.token));
    assert_eq!(
        api.post_json("/api/jobs", &json!({"name": "evil"})).await.0,
        201
    );
    let (s, v, _) = api
        .call(
            "PUT",
            "/api/jobs/evil/code",
            Some(traversal_tarball("a/../../escape")),
        )
        .await;
    assert_eq!((s, v["field"].as_str()), (422, Some("code")), "{v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("a/../../escape")),
        "{v}"
    );
    let (_, job) = api.get("/api/jobs/evil").await;
    assert_eq!(job["code_versions"], json!([]), "nothing was stored");
}

#[tokio::test]
async fn the_dashboard_runs_no_inline_script() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = Server::start(dir.path(), &[]);
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

/// Regular files below `dir` (none when it does not exist).
fn files_below(dir: &Path) -> usize {
    let mut n = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(e.path());
            } else {
                n += 1;
            }
        }
    }
    n
}

#[tokio::test]
async fn a_deleted_jobs_data_never_passes_to_a_new_owner_of_its_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let srv = Server::start(&data, &[]);
    let admin = Api::new(&srv, Some(&srv.token));
    let user = |name: &'static str| {
        let admin = &admin;
        let srv = &srv;
        async move {
            let (s, t) = admin.post_json("/api/tokens", &json!({"user": name})).await;
            assert_eq!(s, 201, "{t}");
            Api::new(srv, t["token"].as_str())
        }
    };
    let (alice, bob) = (user("alice").await, user("bob").await);
    let script =
        |who: &str| format!("#!/bin/bash\nmkdir -p output\necho {who} > output/{who}.csv\n");
    alice
        .create_with_code(
            json!({"name": "shared"}),
            &[("run.sh", &script("alice"), 0o755)],
        )
        .await;
    assert_eq!(alice.run_to_end("shared").await["state"], "succeeded");
    let (public, private) = (data.join("public/shared"), data.join("private/shared"));
    assert!(public.join("data/alice.csv").exists());
    assert!(files_below(&private) > 0, "code, status and log");

    // Deleted with its published data kept: everything private goes, the name stays alice's.
    assert_eq!(alice.call("DELETE", "/api/jobs/shared", None).await.0, 204);
    assert!(
        public.join("data/alice.csv").exists(),
        "published data kept"
    );
    assert_eq!(files_below(&private), 0, "code, logs and status deleted");
    let (s, v) = bob.post_json("/api/jobs", &json!({"name": "shared"})).await;
    assert_eq!((s, v["field"].as_str()), (409, Some("name")), "{v}");
    let (s, _, _) = bob.call("GET", "/public/shared/data/alice.csv", None).await;
    assert_eq!(s, 404, "a deleted job's data is not served as anyone's");
    let (_, mine) = alice.get("/api/tombstones").await;
    assert_eq!(mine[0]["owner"], "alice", "{mine}");
    assert_eq!(bob.get("/api/tombstones").await.1, json!([]));
    assert_eq!(
        bob.call("DELETE", "/api/tombstones/shared", None).await.0,
        403
    );

    // An admin releases the name: the kept data is purged first.
    assert_eq!(
        admin.call("DELETE", "/api/tombstones/shared", None).await.0,
        204
    );
    assert_eq!(files_below(&public), 0, "released names carry no data");
    bob.create_with_code(
        json!({"name": "shared"}),
        &[("run.sh", &script("bob"), 0o755)],
    )
    .await;
    let (s, _, _) = bob.call("GET", "/public/shared/data/alice.csv", None).await;
    assert_eq!(s, 404);
    assert_eq!(bob.run_to_end("shared").await["state"], "succeeded");
    let (s, _, body) = bob.call("GET", "/public/shared/data/bob.csv", None).await;
    assert_eq!((s, body.as_slice()), (200, &b"bob\n"[..]));

    // Deleted with its published data: nothing stays, and the name is free.
    assert_eq!(
        bob.call("DELETE", "/api/jobs/shared?public_data=purge", None)
            .await
            .0,
        204
    );
    assert_eq!(files_below(&public) + files_below(&private), 0);
    assert_eq!(admin.get("/api/tombstones").await.1, json!([]));
    assert_eq!(
        alice
            .post_json("/api/jobs", &json!({"name": "shared"}))
            .await
            .0,
        201
    );
}

/// Signs in to the dashboard with `token`: a client that follows no redirects, and the session
/// cookie (`name=value`).
async fn sign_in(srv: &Server, token: &str) -> (reqwest::Client, String) {
    telejob_e2e::dashboard_sign_in(&srv.base, token).await
}

/// Whether this host gives runs namespaces (telejob as root); required in CI.
fn tenants_isolated() -> bool {
    // The same probe telejob uses for its own runs (root, and namespaces the kernel allows).
    let root = telejob_core::sandbox::supervise::namespaces_available();
    if !root {
        assert!(
            std::env::var_os("TELEJOB_REQUIRE_NAMESPACES").is_none(),
            "TELEJOB_REQUIRE_NAMESPACES is set but the tests do not run as root"
        );
        eprintln!("skipping: runs are only isolated from each other when telejob runs as root");
    }
    root
}

async fn user(admin: &Api, srv: &Server, name: &str) -> Api {
    let (s, t) = admin.post_json("/api/tokens", &json!({"user": name})).await;
    assert_eq!(s, 201, "{t}");
    Api::new(srv, t["token"].as_str())
}

async fn start_run(api: &Api, job: &str) -> String {
    let (s, v) = api
        .post_json(&format!("/api/jobs/{job}/runs"), &json!({}))
        .await;
    assert_eq!(s, 202, "{v}");
    v["run_id"].as_str().expect("run id").to_string()
}

async fn wait_run(api: &Api, id: &str) -> Value {
    let (s, run) = api.get(&format!("/api/runs/{id}?wait=120")).await;
    assert_eq!(s, 200, "{run}");
    run
}

fn text_below(dir: &Path) -> String {
    let mut all = String::new();
    for e in walkdir::WalkDir::new(dir).into_iter().flatten() {
        if e.file_type().is_file() {
            all.push_str(&String::from_utf8_lossy(
                &std::fs::read(e.path()).unwrap_or_default(),
            ));
        }
    }
    all
}

#[tokio::test]
async fn two_tenants_running_at_once_cannot_reach_each_other() {
    if !tenants_isolated() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let srv = Server::start(&data, &[]);
    let admin = Api::new(&srv, Some(&srv.token));
    let (alice, bob) = (
        user(&admin, &srv, "alice").await,
        user(&admin, &srv, "bob").await,
    );
    const SECRET: &str = "hunter2-victims-secret";
    // Alice's job holds a secret in its environment and its workspace while it runs.
    let victim = "#!/bin/bash\nmkdir -p output\necho \"$VICTIM_TOKEN\" > private.txt\necho victim > output/result.txt\necho \"token=$VICTIM_TOKEN\"\nsleep 6\n";
    alice
        .create_with_code(
            json!({"name": "victim", "secrets": {"VICTIM_TOKEN": SECRET}, "env": {"PLAIN": "visible"}}),
            &[("run.sh", victim, 0o755)],
        )
        .await;
    // Bob's job looks everywhere it can think of, and tries to write into alice's output.
    let thief = format!(
        r#"#!/bin/bash
mkdir -p output
{{
  id
  for p in /proc/[0-9]*; do echo "== $p"; tr '\0' '\n' < $p/environ; ls -la $p/cwd/ ; cat $p/cwd/private.txt; done
  ls -la /run/telejob /run/telejob/work/.. {data}/runs {data} 2>&1
  find / -xdev -name private.txt 2>/dev/null
  cat {data}/secrets.key {data}/telejob.db 2>&1 | head -c 100000
  ipcs 2>&1
  echo planted > /tmp/thief-was-here
  for d in {data}/runs/*/work/code/output; do echo stolen > $d/planted.txt; done
}} > output/loot.txt 2>&1
true
"#,
        data = data.display()
    );
    bob.create_with_code(json!({"name": "thief"}), &[("run.sh", &thief, 0o755)])
        .await;
    let v = start_run(&alice, "victim").await;
    // Start the thief once the victim runs.
    let deadline = Instant::now() + Duration::from_secs(30);
    while alice.get(&format!("/api/runs/{v}")).await.1["state"] != "running" {
        assert!(Instant::now() < deadline, "the victim never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = start_run(&bob, "thief").await;
    let (vr, tr) = (wait_run(&alice, &v).await, wait_run(&bob, &t).await);
    assert_eq!(vr["state"], "succeeded", "{vr}");
    assert_eq!(tr["state"], "succeeded", "{tr}");
    let loot = std::fs::read_to_string(data.join("public/thief/data/loot.txt")).expect("loot");
    assert!(
        !loot.contains(SECRET),
        "the thief found the secret:\n{loot}"
    );
    assert!(
        !loot.contains("PLAIN=visible"),
        "the thief read the victim's environment:\n{loot}"
    );
    assert!(
        loot.contains("uid=18790"),
        "the thief ran as a UID of its own:\n{loot}"
    );
    // Alice published exactly what her job wrote.
    let published: Vec<String> = std::fs::read_dir(data.join("public/victim/data"))
        .expect("published")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(published, vec!["result.txt".to_string()]);
    // Nothing the thief left in /tmp survived its run (nor was it ever in the host's /tmp).
    assert!(!Path::new("/tmp/thief-was-here").exists());
    // The secret is in no API response, no log, no page, and not in the database file.
    let (_, job) = alice.get("/api/jobs/victim").await;
    assert!(!job.to_string().contains(SECRET), "{job}");
    assert_eq!(job["secrets"][0]["name"], "VICTIM_TOKEN", "{job}");
    let (_, _, log) = alice.call("GET", &format!("/api/runs/{v}/log"), None).await;
    let log = String::from_utf8_lossy(&log);
    assert!(log.contains("token=***"), "{log}");
    assert!(!log.contains(SECRET), "{log}");
    for f in ["telejob.db", "telejob.db-wal"] {
        let bytes = std::fs::read(data.join(f)).unwrap_or_default();
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "{f} holds the secret"
        );
    }
    assert!(!text_below(&data.join("private")).contains(SECRET));
    // Nor in a dashboard page: the edit form names the secret, and that is all.
    let (http, session) = sign_in(&srv, &alice.token.clone().expect("token")).await;
    for page in [
        "/jobs/victim".to_string(),
        "/jobs/victim/edit".to_string(),
        format!("/runs/{v}"),
    ] {
        let html = http
            .get(format!("{}{page}", srv.base))
            .header("Cookie", &session)
            .send()
            .await
            .expect("page")
            .text()
            .await
            .expect("html");
        assert!(html.contains("victim"), "{page}: {html}");
        assert!(!html.contains(SECRET), "{page} shows the secret");
        if page.ends_with("/edit") {
            assert!(html.contains("VICTIM_TOKEN (set "), "{html}");
        }
    }
    // No workspace is left behind.
    let left: Vec<_> = std::fs::read_dir(data.join("runs"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn runs_over_their_limits_fail_with_the_reason_beside_a_good_run() {
    if !tenants_isolated() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let srv = Server::start(&data, &[]);
    let admin = Api::new(&srv, Some(&srv.token));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let jobs = [
        (
            "hog",
            json!({"memory": "64MiB"}),
            "a=$(head -c 400000000 /dev/zero | tr '\\0' a)",
            "out of memory: limit 64 MiB",
        ),
        (
            "bomb",
            json!({"processes": 20}),
            "for i in $(seq 100); do sleep 30 & done; wait",
            "too many processes: limit 20",
        ),
        (
            "filler",
            json!({"disk": "20MiB"}),
            "for i in $(seq 60); do head -c 1000000 /dev/zero > /tmp/f$i; done; sleep 20",
            "workspace over 20 MiB",
        ),
        (
            "offline",
            json!({"network": "off"}),
            &*format!("exec 3<>/dev/tcp/127.0.0.1/{port}"),
            "exited with status 1",
        ),
    ];
    let (memory, pids) = limit_controllers_here();
    let mut started = Vec::new();
    for (name, limits, cmd, _) in &jobs {
        if (*name == "hog" && !memory) || (*name == "bomb" && !pids) {
            continue;
        }
        admin
            .create_with_code(
                json!({"name": name, "command": cmd, "limits": limits}),
                &[("run.sh", "true", 0o755)],
            )
            .await;
        started.push((*name, start_run(&admin, name).await));
    }
    admin
        .create_with_code(
            json!({"name": "good", "command": "mkdir -p output && echo fine > output/ok.txt"}),
            &[("run.sh", "true", 0o755)],
        )
        .await;
    let good = start_run(&admin, "good").await;
    for (name, id) in started {
        let run = wait_run(&admin, &id).await;
        let want = jobs.iter().find(|j| j.0 == name).expect("job").3;
        assert_eq!(run["state"], "failed", "{name}: {run}");
        assert!(
            run["error"].as_str().is_some_and(|e| e.contains(want)),
            "{name}: {run}"
        );
    }
    assert_eq!(wait_run(&admin, &good).await["state"], "succeeded");
}

fn limit_controllers_here() -> (bool, bool) {
    // The same probe telejob uses for its own runs.
    let (m, p, _) = telejob_core::sandbox::cgroup::LimitGroups::support();
    if !(m && p) {
        assert!(
            std::env::var_os("TELEJOB_REQUIRE_LIMITS").is_none(),
            "TELEJOB_REQUIRE_LIMITS is set but memory or pids controllers are missing"
        );
    }
    (m, p)
}

#[tokio::test]
async fn slow_clients_are_cut_off_by_the_read_timeouts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("telejob.toml");
    std::fs::write(
        &cfg,
        "header_read_timeout_seconds = 1\nbody_read_timeout_seconds = 1\n",
    )
    .expect("config");
    let srv = Server::start(
        &dir.path().join("data"),
        &["--config", cfg.to_str().expect("utf-8")],
    );
    let addr = srv.base.trim_start_matches("http://").to_string();
    // Ends within `within`: the server closed the connection (after an error response, or not).
    let ends_within = |mut c: std::net::TcpStream, within: Duration| {
        c.set_read_timeout(Some(within)).expect("timeout");
        let mut buf = Vec::new();
        match c.read_to_end(&mut buf) {
            Ok(_) => String::from_utf8_lossy(&buf).into_owned(),
            Err(e) => panic!("the connection was still open after {within:?}: {e}"),
        }
    };
    // Headers that never end.
    let mut c = std::net::TcpStream::connect(&addr).expect("connect");
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    let started = Instant::now();
    ends_within(c, Duration::from_secs(5));
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed too early"
    );
    // A body that stalls.
    let mut c = std::net::TcpStream::connect(&addr).expect("connect");
    let head = format!(
        "POST /api/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\"",
        srv.token
    );
    c.write_all(head.as_bytes()).expect("write");
    let reply = ends_within(c, Duration::from_secs(5));
    assert!(!reply.starts_with("HTTP/1.1 201"), "{reply}");
    // The server still serves others, and made no job.
    let api = Api::new(&srv, Some(&srv.token));
    let (s, jobs) = api.get("/api/jobs").await;
    assert_eq!((s, jobs), (200, json!([])));
}

#[tokio::test]
async fn a_restart_does_not_sign_people_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = Server::start(dir.path(), &[]);
    let (http, session) = sign_in(&srv, &srv.token).await;
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
    let srv = Server::start(&data, &[]);
    assert_eq!(page(srv.base.clone()).await, 200, "still signed in");
    // Only a hash of the session id is stored.
    let db = std::fs::read(data.join("telejob.db")).unwrap_or_default();
    let wal = std::fs::read(data.join("telejob.db-wal")).unwrap_or_default();
    for bytes in [db, wal] {
        assert!(!bytes.windows(id.len()).any(|w| w == id.as_bytes()));
    }
}

#[tokio::test]
async fn a_replay_reruns_a_run_exactly_and_says_when_it_cannot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = Server::start(dir.path(), &[]);
    let api = Api::new(&srv, Some(&srv.token));
    let spec = |greeting: &str| {
        json!({"name": "replayed", "command": "./run.sh", "output_dir": "output",
            "env": {"GREETING": greeting},
            "schedule": {"frequency": "daily", "time_of_day": "06:00"}})
    };
    api.create_with_code(
        spec("one"),
        &[(
            "run.sh",
            "mkdir -p output && echo \"$TELEJOB_SCHEDULED_FOR $GREETING v1\" > output/day.txt",
            0o755,
        )],
    )
    .await;
    let first = api.run_to_end("replayed").await;
    assert_eq!(first["state"], "succeeded", "{first}");
    let id = first["id"].as_str().expect("id").to_string();
    // The job moves on: new environment, new code.
    let (s, v, _) = api
        .call(
            "PUT",
            "/api/jobs/replayed",
            Some(serde_json::to_vec(&spec("two")).expect("json")),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v, _) = api
        .call(
            "PUT",
            "/api/jobs/replayed/code",
            Some(tarball(&[(
                "run.sh",
                "mkdir -p output && echo v2 > output/day.txt",
                0o755,
            )])),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    // The replay runs what the first run ran: same code, command, environment and slot.
    let (s, v) = api
        .post_json(&format!("/api/runs/{id}/replay"), &json!({}))
        .await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["replay_of"], id.as_str());
    let again = wait_run(&api, v["run_id"].as_str().expect("new id")).await;
    assert_eq!(again["state"], "succeeded", "{again}");
    assert_eq!(again["trigger"], "replay");
    assert_eq!(again["replay_of"], id.as_str());
    for field in ["code_sha256", "scheduled_for"] {
        assert_eq!(again[field], first[field], "{field}");
    }
    assert_eq!(
        again["provenance"]["spec_sha256"], first["provenance"]["spec_sha256"],
        "{again}"
    );
    let shas = |r: &Value| -> Vec<Value> {
        r["published"]
            .as_array()
            .expect("published")
            .iter()
            .map(|f| f["sha256"].clone())
            .collect()
    };
    assert_eq!(shas(&again), shas(&first), "the same bytes were published");
    let published =
        std::fs::read_to_string(srv.data.join("public/replayed/data/day.txt")).expect("data");
    assert!(published.ends_with(" one v1\n"), "{published}");
    // Another user may not replay it.
    let bob = user(&api, &srv, "bob").await;
    let (s, _) = bob
        .post_json(&format!("/api/runs/{id}/replay"), &json!({}))
        .await;
    assert_eq!(s, 403, "a public job: seen, not managed");
    // Without its code version, a run cannot be replayed, and the reason is given.
    let sha = first["code_sha256"].as_str().expect("sha");
    std::fs::remove_file(srv.data.join(format!("private/replayed/code/{sha}.tar"))).expect("rm");
    let (s, v) = api
        .post_json(&format!("/api/runs/{id}/replay"), &json!({}))
        .await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["field"], "run", "{v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("has been deleted")),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backfill_runs_a_weeks_gap_in_order_with_its_own_dates_and_skips_what_succeeded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = Server::start(dir.path(), &[]);
    let api = Api::new(&srv, Some(&srv.token));
    api.create_with_code(
        json!({"name": "gap", "command": "./run.sh", "output_dir": "output",
            "schedule": {"frequency": "daily", "time_of_day": "06:00"}}),
        &[(
            "run.sh",
            "mkdir -p output && d=\"${TELEJOB_SCHEDULED_FOR%%T*}\" && echo \"$d\" > \"output/$d.txt\"",
            0o755,
        )],
    )
    .await;
    let day = |n: i64| {
        (chrono::Utc::now() - chrono::Duration::days(n))
            .format("%Y-%m-%d")
            .to_string()
    };
    let backfill = |from: String, to: String, extra: Value| {
        let mut body = json!({"from": from, "to": to});
        for (k, v) in extra.as_object().expect("object") {
            body[k] = v.clone();
        }
        body
    };
    let ids = |v: &Value| -> Vec<String> {
        v["slots"]
            .as_array()
            .expect("slots")
            .iter()
            .filter_map(|s| s["run_id"].as_str().map(str::to_string))
            .collect()
    };
    // One day of the gap ran already, and succeeded.
    let (s, v) = api
        .post_json(
            "/api/jobs/gap/backfill",
            &backfill(day(6), day(6), json!({})),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    let first = ids(&v);
    assert_eq!(first.len(), 1, "{v}");
    assert_eq!(wait_run(&api, &first[0]).await["state"], "succeeded");
    // A dry run says what the week would do, and runs nothing.
    let (s, plan) = api
        .post_json(
            "/api/jobs/gap/backfill",
            &backfill(day(9), day(3), json!({"dry_run": true})),
        )
        .await;
    assert_eq!(s, 200, "{plan}");
    let statuses: Vec<&str> = plan["slots"]
        .as_array()
        .expect("slots")
        .iter()
        .map(|s| s["status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        statuses,
        [
            "missed",
            "missed",
            "missed",
            "succeeded",
            "missed",
            "missed",
            "missed"
        ]
    );
    assert!(ids(&plan).is_empty(), "a dry run starts nothing");
    // The week: 7 slots, the succeeded one skipped, the others run oldest first.
    let (s, v) = api
        .post_json(
            "/api/jobs/gap/backfill",
            &backfill(day(9), day(3), json!({})),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    let week = ids(&v);
    assert_eq!(week.len(), 6, "{v}");
    let skipped = &v["slots"][3];
    assert!(
        skipped["skip"]
            .as_str()
            .is_some_and(|w| w.contains("succeeded")),
        "{v}"
    );
    let mut runs = Vec::new();
    for id in &week {
        let r = wait_run(&api, id).await;
        assert_eq!(r["state"], "succeeded", "{r}");
        assert_eq!(r["trigger"], "backfill", "{r}");
        runs.push(r);
    }
    let slots: Vec<String> = runs
        .iter()
        .map(|r| r["scheduled_for"].as_str().expect("slot")[..10].to_string())
        .collect();
    assert_eq!(slots, [day(9), day(8), day(7), day(5), day(4), day(3)]);
    // Oldest first, one at a time (backfill_concurrency 1): each began after the previous ended.
    for w in runs.windows(2) {
        let ended = w[0]["phases"]["finished"].as_str().expect("finished");
        let began = w[1]["phases"]["fetch_started"].as_str().expect("started");
        assert!(began >= ended, "{ended} then {began}");
    }
    for n in [9, 8, 7, 6, 5, 4, 3] {
        let f = srv.data.join(format!("public/gap/data/{}.txt", day(n)));
        assert_eq!(
            std::fs::read_to_string(&f).expect("published").trim(),
            day(n)
        );
    }
    // Nothing is left to do; --only failed finds nothing, --force runs the day again as its
    // next attempt (not a second first attempt).
    let (s, v) = api
        .post_json(
            "/api/jobs/gap/backfill",
            &backfill(day(9), day(3), json!({"only": "failed"})),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    assert!(ids(&v).is_empty(), "{v}");
    let (s, v) = api
        .post_json(
            "/api/jobs/gap/backfill",
            &backfill(day(6), day(6), json!({"force": true})),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["slots"][0]["attempt"], 1, "{v}");
    let again = wait_run(&api, &ids(&v)[0]).await;
    assert_eq!(again["state"], "succeeded", "{again}");
    // Bad input names the field; another user may not backfill.
    for (body, field) in [
        (backfill("2026-13-01".into(), day(3), json!({})), "from"),
        (backfill(day(3), day(9), json!({})), "to"),
        (backfill(day(400), day(3), json!({})), "to"),
        (backfill(day(9), day(3), json!({"only": "late"})), "only"),
    ] {
        let (s, v) = api.post_json("/api/jobs/gap/backfill", &body).await;
        assert_eq!(s, 422, "{v}");
        assert_eq!(v["field"], field, "{v}");
    }
    let bob = user(&api, &srv, "bob").await;
    let (s, _) = bob
        .post_json(
            "/api/jobs/gap/backfill",
            &backfill(day(9), day(3), json!({})),
        )
        .await;
    assert_eq!(s, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn saving_a_job_returns_warnings_that_never_block() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = Server::start(dir.path(), &[]);
    let api = Api::new(&srv, Some(&srv.token));
    let fields = |v: &Value| -> Vec<String> {
        v["warnings"]
            .as_array()
            .unwrap_or_else(|| panic!("warnings in {v}"))
            .iter()
            .map(|w| w["field"].as_str().expect("field").to_string())
            .collect()
    };
    // The example job: every minute. Exactly the rate warning.
    let (s, v) = api
        .post_json(
            "/api/jobs",
            &json!({"name": "example", "schedule": {"frequency": "cron", "cron": "* * * * *"}, "timeout_minutes": 5}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(fields(&v), ["schedule.cron"], "{v}");
    assert!(
        v["warnings"][0]["message"]
            .as_str()
            .expect("message")
            .contains("more than 24")
    );
    // The form's defaults: none.
    let (s, v) = api.post_json("/api/jobs", &json!({"name": "plain"})).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(fields(&v), Vec::<String>::new());
    // Each warning for a case built for it, on create and on edit.
    for (spec, field, words) in [
        (json!({"output_dir": "."}), "output_dir", "code root"),
        (
            json!({"schedule": {"frequency": "daily", "time_of_day": "06:00"}}),
            "schedule.time_of_day",
            "before noon",
        ),
        (
            json!({"schedule": {"frequency": "monthly", "day_of_month": 31}}),
            "schedule.day_of_month",
            "Feb",
        ),
        (
            json!({"schedule": {"frequency": "daily", "time_of_day": "02:30", "timezone": "America/New_York"}}),
            "schedule.time_of_day",
            "does not exist",
        ),
        (
            json!({"schedule": {"frequency": "daily", "time_of_day": "01:30", "timezone": "America/New_York"}}),
            "schedule.time_of_day",
            "twice",
        ),
    ] {
        let mut body = spec.clone();
        body["name"] = json!("plain");
        let (s, v, _) = api
            .call(
                "PUT",
                "/api/jobs/plain",
                Some(serde_json::to_vec(&body).expect("json")),
            )
            .await;
        assert_eq!(s, 200, "saved despite the warning: {v}");
        let hit = v["warnings"].as_array().expect("warnings").iter().any(|w| {
            w["field"] == field && w["message"].as_str().is_some_and(|m| m.contains(words))
        });
        assert!(hit, "{field} / {words}: {v}");
    }
    // The script check comes with the upload's answer.
    for (files, words) in [
        (
            vec![("start.sh", "true", 0o755)],
            "not in the uploaded code",
        ),
        (vec![("run.sh", "true", 0o644)], "not executable"),
    ] {
        let (s, v, _) = api
            .call("PUT", "/api/jobs/plain/code", Some(tarball(&files)))
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(fields(&v), ["command"], "{v}");
        assert!(
            v["warnings"][0]["message"]
                .as_str()
                .expect("m")
                .contains(words),
            "{v}"
        );
    }
    let (s, v, _) = api
        .call(
            "PUT",
            "/api/jobs/plain/code",
            Some(tarball(&[("pkg/run.sh", "true", 0o755)])),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        fields(&v),
        Vec::<String>::new(),
        "a top folder is the code root: {v}"
    );
    // An instance type on a server that runs jobs locally is an error, not a warning.
    let (s, v) = api
        .post_json(
            "/api/jobs",
            &json!({"name": "typed", "instance_type": "t3.large"}),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["field"], "instance_type", "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_run_is_marked_late_once_and_a_fast_one_never() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("telejob.toml");
    std::fs::write(
        &cfg,
        "late_factor = 1.5\nlate_margin_seconds = 1\nlate_check_seconds = 1\n",
    )
    .expect("config");
    let srv = Server::start(dir.path(), &["--config", cfg.to_str().expect("utf8")]);
    let api = Api::new(&srv, Some(&srv.token));
    let (url, rx) = webhook_sink();
    let spec = |delay: &str| {
        let mut env = json!({"DELAY": delay});
        if delay == "3" {
            env["FAIL"] = json!("1"); // slow, and failed: not part of the history
        }
        json!({"name": "steady", "env": env, "notify": {"webhook": url},
            "schedule": {"frequency": "daily", "time_of_day": "12:00"}})
    };
    api.create_with_code(
        spec("0.1"),
        &[(
            "run.sh",
            "sleep \"$DELAY\"; [ -z \"$FAIL\" ] || exit 1; mkdir -p output; echo ok > output/x",
            0o755,
        )],
    )
    .await;
    // Four successes are not a history: a slow run then is not late.
    for _ in 0..4 {
        assert_eq!(api.run_to_end("steady").await["state"], "succeeded");
    }
    let (s, v, _) = api
        .call(
            "PUT",
            "/api/jobs/steady",
            Some(serde_json::to_vec(&spec("3")).expect("json")),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let early = api.run_to_end("steady").await;
    assert_eq!(early["state"], "failed", "{early}");
    assert!(
        early.get("late").is_none(),
        "no alert under five successes: {early}"
    );
    let failed: Value =
        serde_json::from_str(&rx.recv_timeout(Duration::from_secs(10)).expect("failed"))
            .expect("json");
    assert_eq!(
        failed["event"], "failed",
        "only the failure is notified: {failed}"
    );
    // Now five or more successes of ~0.1 s: late after max(1.5 × p95, p95 + 1 s) ≈ 1.1 s.
    let (s, v, _) = api
        .call(
            "PUT",
            "/api/jobs/steady",
            Some(serde_json::to_vec(&spec("0.1")).expect("json")),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    for _ in 0..2 {
        let fast = api.run_to_end("steady").await;
        assert!(fast.get("late").is_none(), "{fast}");
    }
    let recovered: Value =
        serde_json::from_str(&rx.recv_timeout(Duration::from_secs(10)).expect("recovered"))
            .expect("json");
    assert_eq!(recovered["event"], "recovered", "{recovered}");
    assert!(
        rx.recv_timeout(Duration::from_millis(1500)).is_err(),
        "no alert for fast runs"
    );
    let (s, v, _) = api
        .call(
            "PUT",
            "/api/jobs/steady",
            Some(serde_json::to_vec(&spec("5")).expect("json")),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = api.post_json("/api/jobs/steady/runs", &json!({})).await;
    assert_eq!(s, 202, "{v}");
    let slow_id = v["run_id"].as_str().expect("id").to_string();
    // While it runs late, the job list says so.
    let (http, cookie) = telejob_e2e::dashboard_sign_in(&srv.base, &srv.token).await;
    let deadline = Instant::now() + Duration::from_secs(4);
    loop {
        let list = http
            .get(format!("{}/", srv.base))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("job list")
            .text()
            .await
            .expect("text");
        if list.contains("running late") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the job list never said late: {list}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let slow = wait_run(&api, &slow_id).await;
    assert_eq!(slow["state"], "succeeded", "late is not killed: {slow}");
    let mark = &slow["late"];
    assert!(mark["p95_ms"].as_u64().is_some_and(|p| p < 1000), "{slow}");
    assert!(
        mark["after_ms"]
            .as_u64()
            .is_some_and(|a| (1000..2000).contains(&a)),
        "{slow}"
    );
    let body = rx.recv_timeout(Duration::from_secs(10)).expect("the alert");
    let ev: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(ev["event"], "running_late", "{ev}");
    assert_eq!(ev["run"]["id"], slow["id"], "{ev}");
    assert!(
        rx.recv_timeout(Duration::from_secs(3)).is_err(),
        "sent once"
    );
    let (_, _, text) = api.call("GET", "/metrics", None).await;
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("telejob_runs_late_total 1"), "{text}");
    // The run page says how late it finished.
    let page = http
        .get(format!(
            "{}/runs/{}",
            srv.base,
            slow["id"].as_str().expect("id")
        ))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("run page")
        .text()
        .await
        .expect("text");
    assert!(
        page.contains("id=\"late\"") && page.contains("more than usual"),
        "{page}"
    );
}

#[tokio::test]
async fn a_local_server_has_no_ec2_workers_and_keeps_a_profile() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = Server::start(dir.path(), &[]);
    let api = Api::new(&srv, Some(&srv.token));
    let key =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti me@host";
    let (s, v) = api
        .post_json("/api/workers", &json!({"ssh_key": key}))
        .await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["field"], "compute", "{v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("telejob worker shell")),
        "{v}"
    );
    let (s, v) = api.get("/api/workers").await;
    assert_eq!((s, v), (200, json!([])));
    let (s, v) = api.get("/api/workers/none").await;
    assert_eq!(s, 404, "{v}");
    // The profile: notification defaults for what is not a job's.
    let (s, v) = api.get("/api/me").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["name"], "admin");
    let body =
        json!({"notify": {"webhook": "https://hooks.example.com/me", "email": ["me@example.com"]}});
    let (s, v, _) = api
        .call(
            "PUT",
            "/api/me",
            Some(serde_json::to_vec(&body).expect("json")),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (_, v) = api.get("/api/me").await;
    assert_eq!(v["notify"], body["notify"], "{v}");
    let bad = json!({"notify": {"webhook": "not a url"}});
    let (s, v, _) = api
        .call(
            "PUT",
            "/api/me",
            Some(serde_json::to_vec(&bad).expect("json")),
        )
        .await;
    assert_eq!(s, 422, "{v}");
}
