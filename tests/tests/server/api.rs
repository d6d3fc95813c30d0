//! The API's contract as clients meet it: bad input, races, content types, timeouts.

use super::*;

#[tokio::test]
async fn bad_requests_name_the_field_and_store_nothing() {
    let (_dir, srv, api) = fresh();
    let cases: Vec<(&[u8], u16, Option<&str>)> = vec![
        (b"{\"name\":", 400, Some("body")),
        (b"not json", 400, Some("body")),
        (b"", 400, Some("body")),
        (br#"{"name":"ok"} {"name":"again"}"#, 400, Some("body")),
        (br#"{"name":"ok"}trailing"#, 400, Some("body")),
        (br#"[{"name":"ok"}]"#, 400, Some("body")),
        (br#""ok""#, 400, Some("body")),
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
    let srv = serve(dir.path(), &[]);
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
async fn json_bodies_need_their_content_type_and_uploads_their_length() {
    let (_dir, srv) = configured("max_code_bytes = 4096\n");
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
    let (s, v, _) = srv
        .admin()
        .call("POST", "/api/jobs/typed/pause", None)
        .await;
    assert_eq!(s, 200, "{v}");

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

#[tokio::test]
async fn slow_clients_are_cut_off_by_the_read_timeouts() {
    let (_dir, srv) =
        configured("header_read_timeout_seconds = 1\nbody_read_timeout_seconds = 1\n");
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
async fn a_local_server_has_no_ec2_workers_and_keeps_a_profile() {
    let (_dir, _srv, api) = fresh();
    let key =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti me@host";
    let (s, v) = api
        .post_json("/api/workers", &json!({"ssh_key": key}))
        .await;
    assert_refused((s, &v), 422, Some("compute"), "telejob worker shell");
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
    let (s, v) = api.put_json("/api/me", &body).await;
    assert_eq!(s, 200, "{v}");
    let (_, v) = api.get("/api/me").await;
    assert_eq!(v["notify"], body["notify"], "{v}");
    let bad = json!({"notify": {"webhook": "not a url"}});
    let (s, v) = api.put_json("/api/me", &bad).await;
    assert_eq!(s, 422, "{v}");
}

#[tokio::test]
async fn sizes_past_16_eib_and_keys_given_twice_are_refused_naming_them() {
    let (_dir, _srv, api) = fresh();
    for (limits, field) in [
        (
            json!({"memory": "99999999999999999999GiB"}),
            "limits.memory",
        ),
        (json!({"disk": "16EiB"}), "limits.disk"),
    ] {
        let (status, body) = api
            .post_json("/api/jobs", &json!({"name": "huge", "limits": limits}))
            .await;
        assert_eq!(status, 422, "{body}");
        let text = body.to_string();
        assert!(
            text.contains(field) && text.contains("larger than 16 EiB"),
            "{text}"
        );
    }
    let (status, body, _) = api
        .call(
            "POST",
            "/api/jobs",
            Some(br#"{"name": "twice", "env": {"A": "1", "A": "2"}}"#.to_vec()),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("given twice"), "{body}");
    assert_eq!(body["field"], "env.A", "{body}");
    assert_eq!(api.get("/api/jobs/twice").await.0, 404, "nothing was saved");
    assert_eq!(api.get("/api/jobs/huge").await.0, 404, "nothing was saved");
}

#[tokio::test]
async fn concurrent_bomb_uploads_are_refused_within_the_servers_own_bounded_scratch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("telejob.toml");
    std::fs::write(&cfg, "max_upload_unpacked_bytes = 16777216\n").expect("config");
    // Nothing of an upload may land in the system temp directory.
    let tmp = dir.path().join("system-tmp");
    std::fs::create_dir(&tmp).expect("tmp");
    let data = dir.path().join("data");
    let srv = telejob_e2e::ServeCommand::new(telejob_bin!(), &data)
        .config(&cfg)
        .env("TMPDIR", &tmp)
        .start();
    let api = Api::new(&srv, Some(&srv.token));
    assert_eq!(
        api.post_json("/api/jobs", &json!({"name": "bombed"}))
            .await
            .0,
        201
    );
    // 40 MiB of one byte: a few dozen KiB compressed.
    let bomb = tarball(&[
        ("run.sh", "true\n", 0o755),
        ("blob.txt", &"a".repeat(40 << 20), 0o644),
    ]);
    assert!(bomb.len() < 1 << 20, "{}", bomb.len());
    let (a, b, c, d) = tokio::join!(
        api.put_code("bombed", bomb.clone()),
        api.put_code("bombed", bomb.clone()),
        api.put_code("bombed", bomb.clone()),
        api.put_code("bombed", bomb.clone()),
    );
    for (status, body) in [a, b, c, d] {
        assert_eq!(status, 422, "{body}");
        let text = body.to_string();
        assert!(
            text.contains("blob.txt") && text.contains("max_total_bytes"),
            "{text}"
        );
    }
    let left = |d: &Path| std::fs::read_dir(d).map_or(0, |r| r.count());
    assert_eq!(left(&tmp), 0, "nothing in the system temp directory");
    assert_eq!(left(&data.join("uploads")), 0, "the scratch is cleaned up");
}

#[tokio::test]
async fn patch_merges_put_replaces_and_says_what_it_reset_and_get_round_trips() {
    let (_dir, _srv, api) = fresh();
    let (s, v) = api
        .post_json(
            "/api/jobs",
            &json!({"name": "tuned", "schedule": {"frequency": "cron", "cron": "0 * * * *"},
                "env": {"A": "1"}, "limits": {"memory": "1GiB"}, "timeout_minutes": 30,
                "secrets": {"TOKEN": "s3cr3t-value"}}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    // PATCH changes what it names and keeps the rest, secrets included.
    let (s, v, _) = api
        .call(
            "PATCH",
            "/api/jobs/tuned",
            Some(br#"{"env": {"B": "2"}, "timeout_minutes": 45}"#.to_vec()),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["env"], json!({"A": "1", "B": "2"}), "merged: {v}");
    assert_eq!(v["timeout_minutes"], 45);
    assert_eq!(v["schedule"]["cron"], "0 * * * *", "{v}");
    assert_eq!(v["limits"]["memory"], "1GiB", "{v}");
    assert_eq!(v["secrets"].as_array().map(Vec::len), Some(1), "{v}");
    // GET's answer sent back with PUT is a no-op: no warning, nothing changed.
    let (_, got) = api.get("/api/jobs/tuned").await;
    let (s, v) = api.put_json("/api/jobs/tuned", &got).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["warnings"], json!([]), "{v}");
    assert_eq!(v["env"], got["env"]);
    assert_eq!(v["secrets"].as_array().map(Vec::len), Some(1), "{v}");
    // A partial PUT replaces, and its warnings name each setting it reset.
    let (s, v) = api
        .put_json(
            "/api/jobs/tuned",
            &json!({"name": "tuned", "timeout_minutes": 45}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let reset: Vec<&str> = v["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .filter(|w| w["message"].as_str().is_some_and(|m| m.contains("reset")))
        .filter_map(|w| w["field"].as_str())
        .collect();
    for field in ["env", "limits", "schedule"] {
        assert!(reset.contains(&field), "{field} not named: {v}");
    }
}
