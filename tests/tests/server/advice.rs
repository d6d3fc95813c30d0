//! Save-time warnings and running-late alerts.

use super::*;

/// The message of the first warning of a save's answer `v`.
fn first_warning(v: &Value) -> &str {
    v["warnings"][0]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no warning in {v}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn saving_a_job_returns_warnings_that_never_block() {
    let (_dir, _srv, api) = fresh();
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
    assert!(first_warning(&v).contains("more than 24"), "{v}");
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
        let (s, v) = api.put_json("/api/jobs/plain", &body).await;
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
        let (s, v) = api.put_code("plain", tarball(&files)).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(fields(&v), ["command"], "{v}");
        assert!(first_warning(&v).contains(words), "{v}");
    }
    let (s, v) = api
        .put_code("plain", tarball(&[("pkg/run.sh", "true", 0o755)]))
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
    let (_dir, srv) = configured(
        "late_factor = 1.5\nlate_margin_seconds = 1\nlate_check_seconds = 1\n\
         [notify]\nallow_private_targets = true   # the test's webhook is on loopback\n",
    );
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
    api.create_with_script(
        spec("0.1"),
        "sleep \"$DELAY\"; [ -z \"$FAIL\" ] || exit 1; mkdir -p output; echo ok > output/x",
    )
    .await;
    // Four successes are not a history: a slow run then is not late.
    for _ in 0..4 {
        assert_eq!(api.run_to_end("steady").await["state"], "succeeded");
    }
    let (s, v) = api.put_json("/api/jobs/steady", &spec("3")).await;
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
    let (s, v) = api.put_json("/api/jobs/steady", &spec("0.1")).await;
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
    let (s, v) = api.put_json("/api/jobs/steady", &spec("5")).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = api.post_json("/api/jobs/steady/runs", &json!({})).await;
    assert_eq!(s, 202, "{v}");
    let slow_id = v["run_id"].as_str().expect("id").to_string();
    // While it runs late, the job list says so.
    let (http, cookie) = telejob_e2e::dashboard_sign_in(&srv.base, &srv.token).await;
    let deadline = Instant::now() + Duration::from_secs(4);
    loop {
        let list = telejob_e2e::page(&http, &format!("{}/", srv.base), &cookie).await;
        if list.contains("running late") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the job list never said late: {list}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let slow = api.wait_run(&slow_id).await;
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
    let url = format!("{}/runs/{}", srv.base, slow["id"].as_str().expect("id"));
    let page = telejob_e2e::page(&http, &url, &cookie).await;
    assert!(
        page.contains("id=\"late\"") && page.contains("more than usual"),
        "{page}"
    );
}

#[tokio::test]
async fn warnings_that_predict_failure_stay_on_the_job_page_and_the_list() {
    let (_dir, srv, api) = fresh();
    let (s, v) = api.post_json("/api/jobs", &json!({"name": "bare"})).await;
    assert_eq!(s, 201, "{v}");
    api.create_with_code(
        json!({"name": "typo", "command": "./analyse.sh"}),
        &[("analyze.sh", "mkdir -p output", 0o755)],
    )
    .await;
    let (_, typo) = api.get("/api/jobs/typo").await;
    assert_eq!(typo["code_warnings"][0]["field"], "command", "{typo}");
    let (http, cookie) = telejob_e2e::dashboard_sign_in(&srv.base, &srv.token).await;
    let list = telejob_e2e::page(&http, &format!("{}/", srv.base), &cookie).await;
    assert!(
        list.contains(">no code<") && list.contains(">script missing<"),
        "{list}"
    );
    let page = telejob_e2e::page(&http, &format!("{}/jobs/typo", srv.base), &cookie).await;
    assert!(
        page.contains("id=\"badges\"") && page.contains("./analyse.sh is not in the uploaded code"),
        "long after the save: {page}"
    );
    // Fixing the command clears it: the stored code is checked again.
    let (s, v, _) = api
        .call(
            "PATCH",
            "/api/jobs/typo",
            Some(json!({"command": "./analyze.sh"}).to_string().into_bytes()),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (_, fixed) = api.get("/api/jobs/typo").await;
    assert_eq!(fixed["code_warnings"], json!([]), "{fixed}");
    let page = telejob_e2e::page(&http, &format!("{}/jobs/typo", srv.base), &cookie).await;
    assert!(!page.contains("id=\"badges\""), "{page}");
    // A new version without the script draws the badge; making the old one current again
    // checks that one, and clears it.
    let first = fixed["code_sha256"].as_str().expect("sha").to_string();
    let (s, _) = api
        .put_code("typo", tarball(&[("other.sh", "true", 0o755)]))
        .await;
    assert_eq!(s, 200);
    let (_, broken) = api.get("/api/jobs/typo").await;
    assert_eq!(broken["code_warnings"][0]["field"], "command", "{broken}");
    let csrf = csrf_of(&page);
    let r = http
        .post(format!("{}/jobs/typo/use-code", srv.base))
        .header("Cookie", cookie.clone())
        .header("Origin", srv.base.clone())
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}&sha256={first}"))
        .send()
        .await
        .expect("make current");
    assert!(
        r.status().is_redirection() || r.status().is_success(),
        "{}",
        r.status()
    );
    let (_, rolled) = api.get("/api/jobs/typo").await;
    assert_eq!(rolled["code_sha256"], first.as_str());
    assert_eq!(rolled["code_warnings"], json!([]), "{rolled}");
}
