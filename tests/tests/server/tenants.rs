//! Jobs as tenants: deleted data, isolation between users' runs, resource limits.

use super::*;

#[tokio::test]
async fn a_deleted_jobs_data_never_passes_to_a_new_owner_of_its_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let srv = serve(&data, &[]);
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
    assert!(
        !telejob_e2e::files_below(&private).is_empty(),
        "code, status and log"
    );

    // Deleted with its published data kept: everything private goes, the name stays alice's.
    assert_eq!(alice.call("DELETE", "/api/jobs/shared", None).await.0, 204);
    assert!(
        public.join("data/alice.csv").exists(),
        "published data kept"
    );
    assert_eq!(
        telejob_e2e::files_below(&private).len(),
        0,
        "code, logs and status deleted"
    );
    let (s, v) = bob.post_json("/api/jobs", &json!({"name": "shared"})).await;
    assert_eq!((s, v["field"].as_str()), (409, Some("name")), "{v}");
    // Kept data stays served, as the deleted job's, under its tombstone.
    let (s, _, body) = bob.call("GET", "/public/shared/data/alice.csv", None).await;
    assert_eq!((s, body.as_slice()), (200, &b"alice\n"[..]));
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
    assert_eq!(
        telejob_e2e::files_below(&public).len(),
        0,
        "released names carry no data"
    );
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
    assert_eq!(
        telejob_e2e::files_below(&public).len() + telejob_e2e::files_below(&private).len(),
        0
    );
    assert_eq!(admin.get("/api/tombstones").await.1, json!([]));
    assert_eq!(
        alice
            .post_json("/api/jobs", &json!({"name": "shared"}))
            .await
            .0,
        201
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_purge_during_a_publish_leaves_nothing_for_the_next_owner_of_the_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let srv = serve(&data, &[]);
    let admin = srv.admin();
    let (alice, bob) = (admin.user("alice").await, admin.user("bob").await);
    alice
        .create_with_script(
            json!({"name": "big"}),
            "mkdir -p output && cd output && seq 1 20000 | xargs touch",
        )
        .await;
    let run = alice.start_run("big").await;
    // Wait until its 20,000 files are being published.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, r) = alice.get(&format!("/api/runs/{run}")).await;
        if r["state"] == "publishing" {
            break;
        }
        assert!(
            r["state"] == "pending" || r["state"] == "fetching" || r["state"] == "running",
            "the run ended before its publish could be caught: {r}"
        );
        assert!(Instant::now() < deadline, "never publishing: {r}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let public = data.join("public/big");
    let (s, _, body) = alice
        .call("DELETE", "/api/jobs/big?public_data=purge", None)
        .await;
    assert_eq!(s, 204, "{}", String::from_utf8_lossy(&body));
    let left = telejob_e2e::files_below(&public);
    assert!(
        left.is_empty(),
        "{} files under the purged prefix",
        left.len()
    );
    // The name is free; its new owner finds nothing of the old job, then or later.
    bob.create_with_script(
        json!({"name": "big"}),
        "mkdir -p output; echo bob > output/bob.csv",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let left = telejob_e2e::files_below(&public);
    assert!(left.is_empty(), "{} files landed after the 204", left.len());
    let (s, _, _) = bob.call("GET", "/public/big/data/1", None).await;
    assert_eq!(s, 404);
    let (s, runs) = bob.get("/api/jobs/big/runs").await;
    assert_eq!(
        (s, runs),
        (200, json!([])),
        "no run of the old job is the new one's"
    );
}

/// Whether this host gives runs namespaces (telejob as root); required in CI.
/// A server for tenant tests, where this host isolates runs: its directory, data directory,
/// process and admin client.
fn isolated_server() -> Option<(tempfile::TempDir, std::path::PathBuf, Server, Api)> {
    if !tenants_isolated() {
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let srv = serve(&data, &[]);
    let admin = srv.admin();
    Some((dir, data, srv, admin))
}

fn tenants_isolated() -> bool {
    // The same probe telejob uses for its own runs (root, and namespaces the kernel allows).
    let root = telejob_core::agent::sandbox::namespaces_available();
    if !root {
        assert!(
            std::env::var_os("TELEJOB_REQUIRE_NAMESPACES").is_none(),
            "TELEJOB_REQUIRE_NAMESPACES is set but the tests do not run as root"
        );
        eprintln!("skipping: runs are only isolated from each other when telejob runs as root");
    }
    root
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
    let Some((_dir, data, srv, admin)) = isolated_server() else {
        return;
    };
    let (alice, bob) = (admin.user("alice").await, admin.user("bob").await);
    const SECRET: &str = "hunter2-victims-secret";
    // Alice's job holds a secret in its environment and its workspace while it runs.
    let victim = "#!/bin/bash\nmkdir -p output\necho \"$VICTIM_TOKEN\" > private.txt\necho victim > output/result.txt\necho \"token=$VICTIM_TOKEN\"\nsleep 6\n";
    alice
        .create_with_script(json!({"name": "victim", "secrets": {"VICTIM_TOKEN": SECRET}, "env": {"PLAIN": "visible"}}), victim)
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
    let v = alice.start_run("victim").await;
    // Start the thief once the victim runs.
    let deadline = Instant::now() + Duration::from_secs(30);
    while alice.get(&format!("/api/runs/{v}")).await.1["state"] != "running" {
        assert!(Instant::now() < deadline, "the victim never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = bob.start_run("thief").await;
    let (vr, tr) = (alice.wait_run(&v).await, bob.wait_run(&t).await);
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
    // A machine of its own (a built image, TELEJOB_IMAGES_DIR): root inside, a UID block of its
    // own outside (tests/tests/machine.rs checks the block); else a run UID of its own.
    let own = if std::env::var_os("TELEJOB_IMAGES_DIR").is_some() {
        "uid=0(root)"
    } else {
        "uid=18790"
    };
    assert!(
        loot.contains(own),
        "the thief ran as {own}, its own:\n{loot}"
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
    let (http, session) = srv.sign_in(&alice.token.clone().expect("token")).await;
    for page in [
        "/jobs/victim".to_string(),
        "/jobs/victim/edit".to_string(),
        format!("/runs/{v}"),
    ] {
        let html = telejob_e2e::page(&http, &format!("{}{page}", srv.base), &session).await;
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
    let Some((_dir, _data, _srv, admin)) = isolated_server() else {
        return;
    };
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
            // Measured and killed ("workspace over"), or, on a machine's own file system of
            // that size, refused with ENOSPC ("workspace full").
            "set -e; for i in $(seq 60); do head -c 1000000 /dev/zero > /tmp/f$i; done; sleep 20",
            "20 MiB (limits.disk)",
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
            .create_runnable(json!({"name": name, "command": cmd, "limits": limits}))
            .await;
        started.push((*name, admin.start_run(name).await));
    }
    admin
        .create_runnable(
            json!({"name": "good", "command": "mkdir -p output && echo fine > output/ok.txt"}),
        )
        .await;
    let good = admin.start_run("good").await;
    for (name, id) in started {
        let run = admin.wait_run(&id).await;
        let want = jobs.iter().find(|j| j.0 == name).expect("job").3;
        assert_eq!(run["state"], "failed", "{name}: {run}");
        assert!(
            run["error"].as_str().is_some_and(|e| e.contains(want)),
            "{name}: {run}"
        );
    }
    assert_eq!(admin.wait_run(&good).await["state"], "succeeded");
}

fn limit_controllers_here() -> (bool, bool) {
    // The same probe telejob uses for its own runs.
    let telejob_core::agent::sandbox::LimitControllers {
        memory: m,
        processes: p,
        ..
    } = telejob_core::agent::sandbox::limit_controllers();
    if !(m && p) {
        assert!(
            std::env::var_os("TELEJOB_REQUIRE_LIMITS").is_none(),
            "TELEJOB_REQUIRE_LIMITS is set but memory or pids controllers are missing"
        );
    }
    (m, p)
}

/// `/healthz` latencies (and the roles it answered) while run `id` goes on, then the run.
async fn health_during(api: &Api, srv: &Server, id: &str) -> (Vec<Duration>, Vec<Value>, Value) {
    let (mut lat, mut roles) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let t = Instant::now();
        let h = srv.health().await.expect("healthz answers");
        lat.push(t.elapsed());
        roles.push(h["role"].clone());
        let (_, run) = api.get(&format!("/api/runs/{id}")).await;
        let s = run["state"].as_str().unwrap_or("");
        if !matches!(s, "pending" | "fetching" | "running" | "publishing") {
            return (lat, roles, run);
        }
        assert!(Instant::now() < deadline, "the run never ended: {run}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

fn command_time(run: &Value) -> Duration {
    let t = |p: &str| {
        run["phases"][p]
            .as_str()
            .and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok())
            .unwrap_or_else(|| panic!("{p} of {run}"))
    };
    (t("finished") - t("run_started"))
        .to_std()
        .expect("ordered")
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_shaped_to_stall_the_masker_cost_no_more_than_output_without_secrets() {
    // A short lease: a stalled renewal would show within the run.
    let (_dir, srv) = configured("lease_seconds = 2\n");
    let api = srv.admin();
    // Three secrets of 64 KiB sharing a 65,535-byte prefix, and ~10 MB of output (under the log cap) repeating the
    // prefix with a wrong last byte: a naive masker compares ~64 KiB per secret per byte.
    let prefix = "p".repeat(65_535);
    let secrets =
        json!({"S1": format!("{prefix}1"), "S2": format!("{prefix}2"), "S3": format!("{prefix}3")});
    let script = "mkdir -p output; echo done > output/x; p=$(head -c 65535 /dev/zero | tr '\\0' p); for i in $(seq 150); do printf '%sx\\n' \"$p\"; done";
    let mut measured = Vec::new();
    for (name, secrets) in [("plain", json!({})), ("shaped", secrets)] {
        let (s, v) = api
            .post_json("/api/jobs", &json!({"name": name, "secrets": secrets}))
            .await;
        assert_eq!(s, 201, "{v}");
        let (s, v) = api
            .put_code(name, telejob_e2e::tarball(&[("run.sh", script, 0o755)]))
            .await;
        assert_eq!(s, 200, "{v}");
        let id = api.start_run(name).await;
        let (lat, roles, run) = health_during(&api, &srv, &id).await;
        assert_eq!(run["state"], "succeeded", "{run}");
        assert!(
            roles.iter().all(|r| r == "leader"),
            "the server stepped down during the run: {roles:?}"
        );
        measured.push((command_time(&run), p99(lat)));
    }
    let [(plain_t, plain_h), (shaped_t, shaped_h)] = measured[..] else {
        unreachable!()
    };
    // Within 2× of the same run without secrets (plus a little for timer noise at ms scale).
    let slack = Duration::from_millis(250);
    assert!(
        shaped_t <= plain_t * 2 + slack,
        "with secrets the run took {shaped_t:?}, without {plain_t:?}"
    );
    assert!(
        shaped_h <= plain_h * 2 + Duration::from_millis(50),
        "/healthz p99 {shaped_h:?} with secrets, {plain_h:?} without"
    );
}
