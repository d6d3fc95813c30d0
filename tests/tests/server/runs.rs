//! Runs: run now, scheduled runs, kill -9 recovery, replay, backfill.

use super::*;

#[tokio::test]
async fn a_run_now_publishes_and_only_owners_read_logs() {
    let (_dir, srv, admin) = fresh();
    admin
        .create_with_script(
            json!({"name": "pub", "schedule": {"frequency": "daily", "time_of_day": "03:00"}}),
            "mkdir -p output; echo \"secret-log-line $TELEJOB_JOB\"; echo a,b > output/agg.csv",
        )
        .await;
    admin
        .create_with_script(
            json!({"name": "priv", "output_visibility": "private"}),
            "mkdir -p output; echo x > output/x",
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
    assert_eq!(strings_of(&list, "name"), vec!["pub"]);
    assert_eq!(
        bob.post_json("/api/tokens", &json!({"user": "mallory", "admin": true}))
            .await
            .0,
        403
    );
    // Bob's own job is his to manage.
    bob.create_with_script(json!({"name": "bobs"}), "mkdir output")
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
async fn after_kill_9_runs_in_flight_are_interrupted_killed_and_schedules_rearmed() {
    let (_dir, srv, api) = fresh();
    api.create_with_script(json!({"name": "victim", "command": "sleep 600.9191", "schedule": {"frequency": "daily", "time_of_day": "06:00"}}), "true")
    .await;
    let (_, v) = api.post_json("/api/jobs/victim/runs", &json!({})).await;
    let id = v["run_id"].as_str().expect("id").to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.get(&format!("/api/runs/{id}")).await.1["state"] != "running" {
        assert!(Instant::now() < deadline, "the run never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // "running" is recorded as the machine is set up: the command starts a moment later.
    while processes_with("600.9191").is_empty() {
        assert!(Instant::now() < deadline, "the command never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    let srv = serve(&data, &[]);
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
async fn a_scheduled_run_happens_on_its_minute() {
    let (_dir, srv, api) = fresh();
    api.create_with_script(
        json!({"name": "minutely", "schedule": {"frequency": "cron", "cron": "* * * * *"}}),
        "mkdir -p output; echo \"$TELEJOB_SCHEDULED_FOR\" > output/slot.txt",
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
    let srv = serve(&data, &[]);
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
async fn a_replay_reruns_a_run_exactly_and_says_when_it_cannot() {
    let (_dir, srv, api) = fresh();
    let spec = |greeting: &str| {
        json!({"name": "replayed", "command": "./run.sh", "output_dir": "output",
            "env": {"GREETING": greeting},
            "schedule": {"frequency": "daily", "time_of_day": "06:00"}})
    };
    api.create_with_script(
        spec("one"),
        "mkdir -p output && echo \"$TELEJOB_SCHEDULED_FOR $GREETING v1\" > output/day.txt",
    )
    .await;
    let first = api.run_to_end("replayed").await;
    assert_eq!(first["state"], "succeeded", "{first}");
    let id = first["id"].as_str().expect("id").to_string();
    // The job moves on: new environment, new code.
    let (s, v) = api.put_json("/api/jobs/replayed", &spec("two")).await;
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
    let again = api.wait_run(v["run_id"].as_str().expect("new id")).await;
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
    let bob = api.user("bob").await;
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
    assert_refused((s, &v), 422, Some("run"), "has been deleted");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backfill_runs_a_weeks_gap_in_order_with_its_own_dates_and_skips_what_succeeded() {
    let (_dir, srv, api) = fresh();
    api.create_with_script(
        json!({"name": "gap", "command": "./run.sh", "output_dir": "output",
            "schedule": {"frequency": "daily", "time_of_day": "06:00"}}),
        "mkdir -p output && d=\"${TELEJOB_SCHEDULED_FOR%%T*}\" && echo \"$d\" > \"output/$d.txt\"",
    )
    .await;
    let backfill = |from: String, to: String, extra: Value| {
        let mut body = json!({"from": from, "to": to});
        for (k, v) in extra.as_object().expect("object") {
            body[k] = v.clone();
        }
        body
    };
    // Backfills "gap" from `from` to `to` days ago, with `extra` in the body.
    let gap = async |from: i64, to: i64, extra: Value| {
        api.backfill("gap", &backfill(days_ago(from), days_ago(to), extra))
            .await
    };
    // One day of the gap ran already, and succeeded.
    let (s, v) = gap(6, 6, json!({})).await;
    assert_eq!(s, 202, "{v}");
    let first = slot_run_ids(&v);
    assert_eq!(first.len(), 1, "{v}");
    assert_eq!(api.wait_run(&first[0]).await["state"], "succeeded");
    // A dry run says what the week would do, and runs nothing.
    let (s, plan) = gap(9, 3, json!({"dry_run": true})).await;
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
    assert!(slot_run_ids(&plan).is_empty(), "a dry run starts nothing");
    // The week: 7 slots, the succeeded one skipped, the others run oldest first.
    let (s, v) = gap(9, 3, json!({})).await;
    assert_eq!(s, 202, "{v}");
    let week = slot_run_ids(&v);
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
        let r = api.wait_run(id).await;
        assert_eq!(r["state"], "succeeded", "{r}");
        assert_eq!(r["trigger"], "backfill", "{r}");
        runs.push(r);
    }
    let slots: Vec<String> = runs
        .iter()
        .map(|r| r["scheduled_for"].as_str().expect("slot")[..10].to_string())
        .collect();
    assert_eq!(
        slots,
        [
            days_ago(9),
            days_ago(8),
            days_ago(7),
            days_ago(5),
            days_ago(4),
            days_ago(3)
        ]
    );
    // Oldest first, one at a time (backfill_concurrency 1): each began after the previous ended.
    for w in runs.windows(2) {
        let ended = w[0]["phases"]["finished"].as_str().expect("finished");
        let began = w[1]["phases"]["fetch_started"].as_str().expect("started");
        assert!(began >= ended, "{ended} then {began}");
    }
    for n in [9, 8, 7, 6, 5, 4, 3] {
        let f = srv
            .data
            .join(format!("public/gap/data/{}.txt", days_ago(n)));
        assert_eq!(
            std::fs::read_to_string(&f).expect("published").trim(),
            days_ago(n)
        );
    }
    // Nothing is left to do; --only failed finds nothing, --force runs the day again as its
    // next attempt (not a second first attempt).
    let (s, v) = gap(9, 3, json!({"only": "failed"})).await;
    assert_eq!(s, 202, "{v}");
    assert!(slot_run_ids(&v).is_empty(), "{v}");
    let (s, v) = gap(6, 6, json!({"force": true})).await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["slots"][0]["attempt"], 1, "{v}");
    let again = api.wait_run(&slot_run_ids(&v)[0]).await;
    assert_eq!(again["state"], "succeeded", "{again}");
    // Bad input names the field; another user may not backfill.
    for (body, field) in [
        (
            backfill("2026-13-01".into(), days_ago(3), json!({})),
            "from",
        ),
        (backfill(days_ago(3), days_ago(9), json!({})), "to"),
        (backfill(days_ago(400), days_ago(3), json!({})), "to"),
        (
            backfill(days_ago(9), days_ago(3), json!({"only": "late"})),
            "only",
        ),
    ] {
        let (s, v) = api.backfill("gap", &body).await;
        assert_eq!(s, 422, "{v}");
        assert_eq!(v["field"], field, "{v}");
    }
    let bob = api.user("bob").await;
    let (s, _) = bob
        .backfill("gap", &backfill(days_ago(9), days_ago(3), json!({})))
        .await;
    assert_eq!(s, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn published_data_can_be_browsed_signed_out_and_private_jobs_are_never_listed() {
    let (_dir, srv, admin) = fresh();
    let anyone = Api::new(&srv, None);
    let script = "mkdir -p output/sub; echo a,b > output/agg.csv; echo x > output/sub/x.txt";
    admin
        .create_with_script(json!({"name": "open"}), script)
        .await;
    admin
        .create_with_script(
            json!({"name": "hidden", "output_visibility": "private"}),
            script,
        )
        .await;
    let run = admin.run_to_end("open").await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(admin.run_to_end("hidden").await["state"], "succeeded");
    let json = |path: &'static str| {
        let http = reqwest::Client::new();
        let url = format!("{}{path}", srv.base);
        async move {
            let r = http
                .get(url)
                .header("accept", "application/json")
                .send()
                .await
                .expect("get");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (s, jobs) = json("/public/").await;
    assert_eq!(s, 200);
    assert_eq!(jobs, json!([{"job": "open", "data": "/public/open/data/"}]));
    let (s, files) = json("/public/open/data/").await;
    assert_eq!(s, 200, "{files}");
    assert_eq!(strings_of(&files, "name"), ["agg.csv", "sub/x.txt"]);
    assert_eq!(files[0]["size"], 4);
    assert_eq!(files[0]["sha256"], run["published"][0]["sha256"], "{files}");
    let (s, manifest) = json("/public/open/latest/manifest.json").await;
    assert_eq!(s, 200);
    assert_eq!(manifest["run_id"], run["id"]);
    // After each publish the job's prefix holds index.json, for readers that cannot list the
    // store (a static page reading an S3 bucket); a private job gets none in the public store.
    let index_at = srv.data.join("public/open/index.json");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !index_at.exists() {
        assert!(Instant::now() < deadline, "no index.json");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let index: Value =
        serde_json::from_slice(&std::fs::read(&index_at).expect("index")).expect("json");
    let indexed: Vec<(&str, &Value)> = index["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| Some((f["name"].as_str()?, &f["sha256"])))
        .collect();
    assert_eq!(
        indexed,
        [
            ("agg.csv", &run["published"][0]["sha256"]),
            ("sub/x.txt", &run["published"][1]["sha256"])
        ],
        "{index}"
    );
    assert!(!srv.data.join("public/hidden").exists());
    let (s, _) = json("/public/open/index.json").await;
    assert_eq!(s, 200, "served like the data");
    // The API lists the same, for any job the caller may see (private ones without links).
    let (s, listed) = admin.get("/api/jobs/open/files").await;
    assert_eq!(
        (s, listed[0]["name"].clone()),
        (200, json!("agg.csv")),
        "{listed}"
    );
    let (s, listed) = admin.get("/api/jobs/hidden/files").await;
    assert_eq!(s, 200, "{listed}");
    assert_eq!(listed[0]["name"], "agg.csv", "{listed}");
    assert!(listed[0].get("href").is_none(), "{listed}");
    // A page for a browser, with links to the files.
    let (s, _, page) = anyone.call("GET", "/public/open/data/", None).await;
    assert_eq!(s, 200);
    assert!(String::from_utf8_lossy(&page).contains("href=\"/public/open/data/agg.csv\""));
    for path in [
        "/public/hidden/data/",
        "/public/hidden/data/agg.csv",
        "/public/nosuch/",
    ] {
        assert_eq!(anyone.call("GET", path, None).await.0, 404, "{path}");
    }
    // Deleted with its data kept: still served, under its tombstone.
    assert_eq!(admin.call("DELETE", "/api/jobs/open", None).await.0, 204);
    let (s, body, _) = anyone.call("GET", "/public/open/data/agg.csv", None).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(json("/public/").await.1[0]["job"], "open");
}

#[tokio::test]
async fn a_weekly_roll_up_reads_the_six_days_before_it_through_telejob_public_url() {
    let (_dir, srv, api) = fresh();
    // As the original slowsql's run.sh: each day's file, and on the roll-up day the week's,
    // made of the six days before it as published, read back from its own public data.
    let script = r#"set -eu
d=$(date -u -d "$TELEJOB_SCHEDULED_FOR" +%Y%m%d)
mkdir -p output
echo "$d,$TELEJOB_RUN_ID" > "output/daily-$d.csv"
if [ "$d" = "$ROLL_UP_ON" ]; then
  for i in 6 5 4 3 2 1; do
    p=$(date -u -d "$TELEJOB_SCHEDULED_FOR - $i day" +%Y%m%d)
    curl -fsS "${TELEJOB_PUBLIC_URL}daily-$p.csv" >> week.csv
  done
  cat "output/daily-$d.csv" >> week.csv
  mv week.csv "output/weekly-$d.csv"
  touch "$TELEJOB_PUBLISHED_DIR/overwritten.csv" 2>/dev/null && exit 9 || true
fi
"#;
    let last = days_ago(1).replace('-', "");
    api.create_with_script(
        json!({"name": "rollup", "env": {"ROLL_UP_ON": last},
            "schedule": {"frequency": "daily", "time_of_day": "12:00"}}),
        script,
    )
    .await;
    let (s, v) = api
        .backfill("rollup", &json!({"from": days_ago(7), "to": days_ago(1)}))
        .await;
    assert_eq!(s, 202, "{v}");
    let ids = slot_run_ids(&v);
    assert_eq!(ids.len(), 7, "{v}");
    for id in &ids {
        let run = api.wait_run(id).await;
        assert_eq!(run["state"], "succeeded", "{run}");
    }
    let data = srv.data.join("public/rollup/data");
    let week = std::fs::read_to_string(data.join(format!("weekly-{last}.csv"))).expect("weekly");
    let expected: String = (1..=7)
        .rev()
        .map(|n| {
            let d = days_ago(n).replace('-', "");
            std::fs::read_to_string(data.join(format!("daily-{d}.csv"))).expect("daily")
        })
        .collect();
    assert_eq!(week, expected, "the week is the seven days as published");
    assert!(
        !data.join("overwritten.csv").exists(),
        "the view of past output is read-only"
    );
}
