//! Notifications by webhook and email.

use super::*;

#[tokio::test]
async fn failures_are_sent_to_the_webhook_once_and_a_dead_webhook_changes_nothing() {
    // The test's webhooks are on loopback: an operator's internal hooks.
    let (_dir, srv) = configured("[notify]\nallow_private_targets = true\n");
    let api = Api::new(&srv, Some(&srv.token));
    let (url, rx) = webhook_sink();
    api.create_with_script(
        json!({"name": "hooked", "notify": {"webhook": url}}),
        "exit 3",
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
    api.create_with_script(
        json!({"name": "deadhook", "notify": {"webhook": dead}}),
        "mkdir output; echo 1 > output/x",
    )
    .await;
    assert_eq!(api.run_to_end("deadhook").await["state"], "succeeded");
    api.create_with_script(
        json!({"name": "deadhook2", "notify": {"webhook": "http://127.0.0.1:9/x"}}),
        "exit 1",
    )
    .await;
    assert_eq!(api.run_to_end("deadhook2").await["state"], "failed");
    assert_eq!(api.get("/healthz").await.0, 200);
}

#[tokio::test]
async fn a_slot_retried_once_is_told_failed_once_with_its_run_page_and_log_tail() {
    let (_dir, srv) = configured(
        "public_url = \"https://telejob.example.org/\"\n[notify]\nallow_private_targets = true\n",
    );
    let api = Api::new(&srv, Some(&srv.token));
    let (url, rx) = webhook_sink();
    let script = "for i in $(seq 1 30); do echo \"line $i\"; done; echo 'it broke' >&2; exit 3";
    api.create_with_script(
        json!({"name": "flaky", "notify": {"webhook": url}, "max_retries": 1,
            "retry_backoff_seconds": 1,
            "schedule": {"frequency": "cron", "cron": "* * * * *"}}),
        script,
    )
    .await;
    // The first slot: its attempt, then the retry; one event each, the last one `failed`.
    let mut events = Vec::new();
    while events.len() < 2 {
        let body = rx
            .recv_timeout(Duration::from_secs(90))
            .expect("the slot fires within the minute");
        events.push(serde_json::from_str::<Value>(&body).expect("json"));
    }
    // A new client: the old one's pooled connection idled past the server's timeout while this
    // thread blocked on the sink.
    let api = Api::new(&srv, Some(&srv.token));
    assert_eq!(
        api.post_json("/api/jobs/flaky/pause", &json!({})).await.0,
        200
    );
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(kinds, ["retrying", "failed"], "{events:?}");
    assert_eq!(
        events[0]["run"]["scheduled_for"],
        events[1]["run"]["scheduled_for"]
    );
    let failed = &events[1];
    let id = failed["run"]["id"].as_str().expect("run id");
    assert_eq!(
        failed["run_url"],
        format!("https://telejob.example.org/runs/{id}")
    );
    let tail = failed["log_tail"].as_str().expect("log tail");
    assert_eq!(tail.lines().count(), 20, "{tail}");
    assert!(
        tail.ends_with("it broke") && tail.contains("line 30"),
        "{tail}"
    );
    assert!(
        !tail.contains("line 10\n"),
        "only the last 20 lines: {tail}"
    );
    assert!(
        rx.recv_timeout(Duration::from_secs(3)).is_err(),
        "nothing more for that slot"
    );
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
    let (port, rx) = smtp_sink();
    let (_dir, srv) = configured(format!(
        "[smtp]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\nfrom = \"telejob@example.com\"\n"
    ));
    let api = Api::new(&srv, Some(&srv.token));
    api.create_with_script(
        json!({"name": "mailed", "notify": {"email": ["ops@example.com"]}}),
        "exit 4",
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
async fn webhooks_to_the_servers_own_networks_are_refused() {
    let (_dir, _srv, api) = fresh();
    for hook in [
        "http://127.0.0.1:8080/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/hook",
        "http://[::1]/hook",
    ] {
        let (status, body) = api
            .post_json(
                "/api/jobs",
                &json!({"name": "ssrf", "notify": {"webhook": hook}}),
            )
            .await;
        assert_eq!(status, 422, "{hook}: {body}");
        assert!(
            body.to_string().contains("notify.webhook")
                && body.to_string().contains("not on the public internet"),
            "{hook}: {body}"
        );
    }
    assert_eq!(api.get("/api/jobs/ssrf").await.0, 404, "nothing was saved");
}

#[tokio::test]
async fn a_jobs_secrets_are_bounded_in_number_and_size() {
    let (_dir, _srv, api) = fresh();
    let many: serde_json::Map<String, Value> = (0..65)
        .map(|i| (format!("S{i}"), json!("a secret value")))
        .collect();
    let big: serde_json::Map<String, Value> = (0..5)
        .map(|i| (format!("BIG{i}"), json!("p".repeat(60 * 1024))))
        .collect();
    for (secrets, want) in [(many, "at most 64"), (big, "at most 256 KiB")] {
        let (status, body) = api
            .post_json("/api/jobs", &json!({"name": "hoard", "secrets": secrets}))
            .await;
        assert_eq!(status, 422, "{body}");
        assert!(body.to_string().contains(want), "{body}");
    }
    // Four values now and two more later: the total counts what the job already holds.
    let three: serde_json::Map<String, Value> = (0..3)
        .map(|i| (format!("BIG{i}"), json!("p".repeat(60 * 1024))))
        .collect();
    let (status, body) = api
        .post_json("/api/jobs", &json!({"name": "hoard", "secrets": three}))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = api
        .put_json(
            "/api/jobs/hoard",
            &json!({"name": "hoard", "secrets": {"BIG3": "p".repeat(60 * 1024), "BIG4": "p".repeat(60 * 1024)}}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("at most 256 KiB"), "{body}");
    let (_, job) = api.get("/api/jobs/hoard").await;
    assert_eq!(job["secrets"].as_array().map(Vec::len), Some(3), "{job}");
}
