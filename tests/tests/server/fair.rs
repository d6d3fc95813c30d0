//! Fair shares: one owner's flood of backfill and "run now" does not starve another owner.

use super::*;

/// A run's phase time, parsed.
fn at(run: &Value, phase: &str) -> chrono::DateTime<chrono::Utc> {
    run["phases"][phase]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{phase} of {run}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flooders_backfill_and_run_now_do_not_starve_another_owner() {
    let (_dir, srv) = configured(
        "max_concurrent_runs = 2\n\
         [quotas]\nmax_backfill_pending = 40\nmax_queued = 8\nrun_now_per_minute = 4\n",
    );
    let admin = Api::new(&srv, Some(&srv.token));
    let (alice, bob) = (admin.user("alice").await, admin.user("bob").await);
    let script = "sleep 1; mkdir -p output; echo x > output/x";
    alice
        .create_with_script(
            json!({"name": "flood", "backfill_concurrency": 16,
                "schedule": {"frequency": "cron", "cron": "0 * * * *"}}),
            script,
        )
        .await;
    bob.create_with_script(json!({"name": "mine"}), script)
        .await;

    // A day of hourly slots: 24 runs pending, two of them running.
    let (s, v) = alice
        .backfill("flood", &json!({"from": days_ago(3), "to": days_ago(3)}))
        .await;
    assert_eq!(s, 202, "{v}");
    // A second day would hold more than the cap: refused naming the field, nothing recorded.
    let (s, v) = alice
        .backfill("flood", &json!({"from": days_ago(5), "to": days_ago(4)}))
        .await;
    assert_refused((s, &v), 422, Some("to"), "max_backfill_pending");
    // Run now past the rate: 429 with Retry-After.
    let mut refused = None;
    for _ in 0..6 {
        let (s, h, b) = alice
            .call_with_headers("POST", "/api/jobs/flood/runs", Some(b"{}".to_vec()))
            .await;
        if s == 429 {
            refused = Some((h, b));
            break;
        }
        assert_eq!(s, 202, "{}", String::from_utf8_lossy(&b));
    }
    let (headers, body) = refused.expect("the fifth run now within a minute is refused");
    let retry: u64 = headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(
        String::from_utf8_lossy(&body).contains("run_now_per_minute"),
        "{}",
        String::from_utf8_lossy(&body)
    );

    // Bob's run now, behind some 26 runs of alice's: the next slot but one is his.
    let mine = bob.start_run("mine").await;
    // While it waits, its record says where: next or next but one (the owners take turns),
    // not behind the whole flood.
    let mut queue = None;
    for _ in 0..50 {
        let (s, r) = bob.get(&format!("/api/runs/{mine}")).await;
        assert_eq!(s, 200, "{r}");
        if r["state"] != "pending" {
            break;
        }
        if r["queue"].is_object() {
            queue = Some(r["queue"].clone());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let q = queue.expect("bob's run waits behind alice's: its record shows its place");
    assert!(matches!(q["position"].as_u64(), Some(1 | 2)), "{q}");
    assert!(q["waiting"].as_u64() >= Some(2), "{q}");
    let mine = bob.wait_run(&mine).await;
    assert_eq!(mine["state"], "succeeded", "{mine}");
    let (queued, started) = (at(&mine, "created_at"), at(&mine, "fetch_started"));
    let (s, runs) = alice.get("/api/jobs/flood/runs?limit=100").await;
    assert_eq!(s, 200, "{runs}");
    let runs = runs.as_array().expect("runs");
    let before_his_turn: Vec<&Value> = runs
        .iter()
        .filter(|r| {
            r["phases"]["fetch_started"].as_str().is_some_and(|_| {
                at(r, "fetch_started") > queued && at(r, "fetch_started") < started
            })
        })
        .collect();
    assert!(
        before_his_turn.len() <= 1,
        "alice's runs that started while bob's waited: {before_his_turn:?}"
    );
    let waiting = runs
        .iter()
        .filter(|r| {
            r["state"] == "pending"
                || r["phases"]["fetch_started"]
                    .as_str()
                    .is_some_and(|_| at(r, "fetch_started") > started)
        })
        .count();
    assert!(
        waiting >= 10,
        "bob's run went ahead of most of alice's ({waiting} started after it)"
    );
}
