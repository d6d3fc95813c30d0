//! Several `telejob serve` replicas on one PostgreSQL (a throwaway cluster): one leader at a
//! time, failover after `kill -9` and after a network partition, no slot lost or doubled, and
//! everything a user sees shared between replicas.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use telejob_e2e::postgres::{Postgres, Proxy, postgres};
use telejob_e2e::{ServeCommand, days_ago, slot_run_ids, tarball, telejob_bin};

/// The lease the tests run with (seconds): short, so that failovers fit in a test.
const LEASE: u64 = 4;
const KEY: &str = "5ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7";

type Replica = telejob_e2e::Server;

/// `telejob serve` for replica `n`: its own data directory, the shared stores and database.
fn command(dir: &Path, n: usize, database: &str, shared: bool) -> ServeCommand {
    let cfg = dir.join(format!("replica{n}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "lease_seconds = {LEASE}\nshared_stores = {shared}\npublic_store = \"{}\"\nprivate_store = \"{}\"\n",
            dir.join("shared/public").display(),
            dir.join("shared/private").display()
        ),
    )
    .expect("config");
    ServeCommand::new(telejob_bin!(), &dir.join(format!("data{n}")))
        .config(&cfg)
        .args(["--database", database])
        .env("TELEJOB_SECRETS_KEY", KEY)
        .log_to(&dir.join(format!("replica{n}.log")))
}

struct Api {
    token: String,
}

impl Api {
    async fn call(
        &self,
        r: &Replica,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> (u16, Value) {
        let (status, v, _) = telejob_e2e::Api::at(&r.base, Some(&self.token))
            .call(method, path, body)
            .await;
        (status, v)
    }

    /// `method path` on replica `r` with JSON `v`.
    async fn call_json(&self, r: &Replica, method: &str, path: &str, v: &Value) -> (u16, Value) {
        self.call(r, method, path, Some(serde_json::to_vec(v).expect("json")))
            .await
    }

    /// Creates the job `spec` on replica `r` with `run.sh` holding `script` as its code.
    async fn create_with_script(&self, r: &Replica, spec: Value, script: &str) {
        let name = spec["name"].as_str().expect("name").to_string();
        let (s, v) = self.call_json(r, "POST", "/api/jobs", &spec).await;
        assert_eq!(s, 201, "{v}");
        let code = tarball(&[("run.sh", script, 0o755)]);
        let (s, v) = self
            .call(r, "PUT", &format!("/api/jobs/{name}/code"), Some(code))
            .await;
        assert_eq!(s, 200, "{v}");
    }

    /// Creates a job that runs every minute, with its code.
    async fn minutely(&self, r: &Replica, name: &str) {
        let spec = json!({"name": name, "command": "./run.sh", "output_dir": "out",
            "schedule": {"frequency": "cron", "cron": "* * * * *"}, "timeout_minutes": 1});
        self.create_with_script(r, spec, "mkdir -p out && date > out/at.txt")
            .await;
    }

    /// Creates the job `name` (`./run.sh`, output in `out`) with `script` on replica `r`, and
    /// starts a run of it there: the run's id.
    async fn start_script(&self, r: &Replica, name: &str, script: &str) -> String {
        let spec = json!({"name": name, "command": "./run.sh", "output_dir": "out"});
        self.create_with_script(r, spec, script).await;
        let (s, v) = self
            .call_json(r, "POST", &format!("/api/jobs/{name}/runs"), &json!({}))
            .await;
        assert_eq!(s, 202, "{v}");
        v["run_id"].as_str().expect("run id").to_string()
    }
}

async fn run_state(api: &Api, r: &Replica, id: &str) -> Value {
    api.call(r, "GET", &format!("/api/runs/{id}"), None).await.1["state"].clone()
}

/// Two replicas on database `url` sharing their stores, and the admin's client: with the
/// directory that keeps them.
fn two_replicas(url: &str) -> (tempfile::TempDir, Replica, Replica, Api) {
    let tmp = tempfile::tempdir().expect("tmp");
    let a = command(tmp.path(), 0, url, true).start();
    let b = command(tmp.path(), 1, url, true).start();
    let api = admin(tmp.path());
    (tmp, a, b, api)
}

/// [`two_replicas`], the first one the leader (asserted).
async fn leader_and_follower(url: &str) -> (tempfile::TempDir, Replica, Replica, Api) {
    let (tmp, a, b, api) = two_replicas(url);
    assert!(a.is_leader().await && !b.is_leader().await);
    (tmp, a, b, api)
}

fn admin(dir: &Path) -> Api {
    Api {
        token: std::fs::read_to_string(dir.join("data0/admin.token"))
            .expect("the first replica's admin token")
            .trim()
            .to_string(),
    }
}

/// The replica that leads, waiting up to `within` for exactly one to say so.
async fn leader(replicas: &[&Replica], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let mut leaders = Vec::new();
        for (i, r) in replicas.iter().enumerate() {
            if r.is_leader().await {
                leaders.push(i);
            }
        }
        assert!(leaders.len() <= 1, "two leaders at once: {leaders:?}");
        if let [i] = leaders[..] {
            return i;
        }
        assert!(Instant::now() < deadline, "no leader within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sleeps until `second` past the next minute (or this one, if still ahead).
async fn until_second(second: u32) {
    use chrono::Timelike;
    let now = chrono::Utc::now();
    let target = now
        .with_second(second)
        .expect("second")
        .with_nanosecond(0)
        .expect("ns");
    let target = if target > now {
        target
    } else {
        target + chrono::Duration::minutes(1)
    };
    tokio::time::sleep((target - now).to_std().expect("ahead")).await;
}

/// (job, slot key, attempt, state, epoch) of every scheduled row.
fn slot_rows(pg: &Postgres, db: &str) -> Vec<(String, String, i64, String, i64)> {
    pg.psql_in(
        db,
        "SELECT job, slot_key, attempt, state, epoch FROM runs WHERE trigger IN ('scheduled', 'retry') ORDER BY job, slot_key",
    )
    .lines()
    .map(|l| {
        let f: Vec<&str> = l.split('|').collect();
        (
            f[0].to_string(),
            f[1].to_string(),
            f[2].parse().expect("attempt"),
            f[3].to_string(),
            f[4].parse().expect("epoch"),
        )
    })
    .collect()
}

fn db_name(url: &str) -> String {
    url.rsplit('/').next().expect("name").to_string()
}

/// Every minute from `from` to `to` (inclusive) has exactly one first-attempt row per job.
fn assert_every_slot_once(
    pg: &Postgres,
    db: &str,
    jobs: &[&str],
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) {
    let rows = slot_rows(pg, db);
    let mut t = from;
    while t <= to {
        let key = format!(
            "slot:{}",
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        for job in jobs {
            let n = rows
                .iter()
                .filter(|r| r.0 == *job && r.1 == key && r.2 == 0)
                .count();
            assert_eq!(n, 1, "{job} {key}: {n} rows; all rows: {rows:#?}");
        }
        t += chrono::Duration::minutes(1);
    }
}

fn minute_of(t: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    use chrono::{DurationRound, TimeDelta};
    t.duration_trunc(TimeDelta::minutes(1)).expect("minute")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_keep_one_schedule_through_kill_9s_of_the_leader() {
    let Some(pg) = postgres() else { return };
    let url = pg.new_database();
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let mut replicas = vec![command(dir, 0, &url, true).start()];
    replicas.push(command(dir, 1, &url, true).start());
    replicas.push(command(dir, 2, &url, true).start());
    let api = admin(dir);
    let all: Vec<&Replica> = replicas.iter().collect();
    let first = leader(&all, Duration::from_secs(10)).await;
    // Jobs made on followers reach the leader's scheduler.
    let follower = (first + 1) % 3;
    api.minutely(&replicas[follower], "alpha").await;
    api.minutely(&replicas[(first + 2) % 3], "beta").await;
    // Every replica shows the same job at once (no cache to go stale), and its next run.
    for r in &replicas {
        let (s, v) = api.call(r, "GET", "/api/jobs/alpha", None).await;
        assert_eq!(s, 200, "{v}");
        assert!(
            v["next_run"].as_str().is_some_and(|t| t.ends_with(":00Z")),
            "{v}"
        );
    }
    let start = minute_of(chrono::Utc::now()) + chrono::Duration::minutes(1);
    let mut leaders = vec![first];
    let mut alive: Vec<usize> = vec![0, 1, 2];
    // Kill the leader three times: a second before a minute (its slot falls in the gap and is
    // handled by the new leader's missed policy), just after one, and once more before one.
    for second in [59, 1, 58] {
        until_second(second).await;
        let l = *leaders.last().expect("leader");
        replicas[l].kill_now();
        let killed = Instant::now();
        alive.retain(|i| *i != l);
        let rest: Vec<&Replica> = alive.iter().map(|i| &replicas[*i]).collect();
        let next = alive[leader(&rest, Duration::from_secs(LEASE * 2)).await];
        let took = killed.elapsed();
        assert!(
            took <= Duration::from_millis(LEASE * 1100 + 1500),
            "takeover took {took:?} with a {LEASE} s lease"
        );
        leaders.push(next);
        // Bring a replica back so that three stay up.
        let n = replicas.len();
        replicas.push(command(dir, n, &url, true).start());
        alive.push(n);
    }
    // Let the last slot be fired and recorded.
    until_second(15).await;
    let end = minute_of(chrono::Utc::now());
    assert!(end > start, "the window holds slots");
    assert_every_slot_once(pg, &db_name(&url), &["alpha", "beta"], start, end);
    let rows = slot_rows(pg, &db_name(&url));
    let epochs: std::collections::BTreeSet<i64> = rows.iter().map(|r| r.4).collect();
    assert!(
        epochs.len() >= 2,
        "slots were inserted by several leaders: {rows:#?}"
    );
    // A run the killed leader had in flight is interrupted, not left running for ever.
    let stuck = pg.psql_in(
        &db_name(&url),
        "SELECT count(*) FROM runs WHERE state IN ('pending', 'fetching', 'running', 'publishing') AND scheduled_for < to_char(now() - interval '1 minute', 'YYYY-MM-DD\"T\"HH24:MI:SS')",
    );
    assert_eq!(stuck, "0", "runs left in flight: {rows:#?}");
    // Metrics and health on the last leader.
    let l = &replicas[*leaders.last().expect("leader")];
    let h = l.health().await.expect("health");
    assert_eq!(h["lease_holder"], h["replica"], "{h}");
    let (_, _, m) = telejob_e2e::Api::at(&l.base, None)
        .call("GET", "/metrics", None)
        .await;
    let m = String::from_utf8_lossy(&m);
    assert!(m.contains("telejob_leader 1"), "{m}");
    assert!(m.contains("telejob_lease_takeovers_total 1"), "{m}");
    assert!(m.contains("telejob_lease_renewals_total"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_stops_firing_before_its_lease_expires() {
    let Some(pg) = postgres() else { return };
    let url = pg.new_database();
    let name = db_name(&url);
    let proxy = Proxy::start(pg.port());
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    // Replica 0 reaches the database through the proxy; replica 1 directly.
    let cut_off = command(dir, 0, &pg.url_via(proxy.port(), &name), true).start();
    assert!(leader(&[&cut_off], Duration::from_secs(10)).await == 0);
    let other = command(dir, 1, &url, true).start();
    let api = admin(dir);
    api.minutely(&other, "gamma").await;
    // Cut just before a minute: the old leader would fire the slot if it did not stop.
    until_second(56).await;
    proxy.set_cut(true);
    let cut = Instant::now();
    let (mut stepped_down, mut took_over) = (None, None);
    while stepped_down.is_none() || took_over.is_none() {
        assert!(
            cut.elapsed() < Duration::from_secs(LEASE * 3),
            "no failover"
        );
        if stepped_down.is_none() && !cut_off.is_leader().await {
            stepped_down = Some(cut.elapsed());
        }
        if took_over.is_none() && other.is_leader().await {
            took_over = Some(cut.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (down, up) = (stepped_down.expect("down"), took_over.expect("up"));
    assert!(
        down < up,
        "the cut-off leader stopped at {down:?}, the other took over at {up:?}"
    );
    assert!(
        down < Duration::from_secs(LEASE),
        "stopped only after {down:?}"
    );
    until_second(20).await;
    // Heal: the old leader stays a follower while the new one renews.
    proxy.set_cut(false);
    tokio::time::sleep(Duration::from_secs(LEASE)).await;
    assert!(!cut_off.is_leader().await);
    assert!(other.is_leader().await);
    let rows = slot_rows(pg, &name);
    let lease_epoch: i64 = pg
        .psql_in(&name, "SELECT epoch FROM leases")
        .parse()
        .expect("epoch");
    let after_cut = minute_of(chrono::Utc::now());
    let key = format!(
        "slot:{}",
        after_cut.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let slot: Vec<_> = rows.iter().filter(|r| r.1 == key && r.2 == 0).collect();
    assert_eq!(slot.len(), 1, "{rows:#?}");
    assert_eq!(
        slot[0].4, lease_epoch,
        "the slot after the cut was fired by the new leader: {rows:#?}"
    );
}

#[tokio::test]
async fn replicas_share_sessions_and_refuse_unshared_stores_and_other_keys() {
    let Some(pg) = postgres() else { return };
    let url = pg.new_database();
    let (tmp, a, b, api) = two_replicas(&url);
    let dir = tmp.path();
    // An edit on A is what the next read on B returns, at once: no cache to go stale.
    api.minutely(&a, "delta").await;
    for n in 0..5 {
        let spec = json!({"name": "delta", "command": format!("./run.sh {n}"), "output_dir": "out",
            "schedule": {"frequency": "cron", "cron": "* * * * *"}});
        let (st, v) = api.call_json(&a, "PUT", "/api/jobs/delta", &spec).await;
        assert_eq!(st, 200, "{v}");
        let (_, v) = api.call(&b, "GET", "/api/jobs/delta", None).await;
        assert_eq!(v["command"], format!("./run.sh {n}"), "{v}");
        let (_, v) = api
            .call(
                &b,
                "POST",
                if n % 2 == 0 {
                    "/api/jobs/delta/pause"
                } else {
                    "/api/jobs/delta/resume"
                },
                None,
            )
            .await;
        assert_eq!(v["paused"], n % 2 == 0, "{v}");
        let (_, v) = api.call(&a, "GET", "/api/jobs/delta", None).await;
        assert_eq!(v["paused"], n % 2 == 0, "{v}");
    }
    // Run now and cancel, asked of the follower, are done by the leader.
    assert!(a.is_leader().await && !b.is_leader().await);
    let spec = json!({"name": "sleeper", "command": "sleep 300.4242", "output_dir": "out",
        "schedule": {"frequency": "daily", "time_of_day": "06:00"}});
    let (st, v) = api.call_json(&b, "POST", "/api/jobs", &spec).await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = api
        .call(
            &b,
            "PUT",
            "/api/jobs/sleeper/code",
            Some(tarball(&[("run.sh", "true", 0o755)])),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = api.call(&b, "POST", "/api/jobs/sleeper/runs", None).await;
    assert_eq!(st, 202, "{v}");
    let id = v["run_id"].as_str().expect("id").to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while run_state(&api, &b, &id).await != "running" {
        assert!(
            Instant::now() < deadline,
            "the run asked of the follower never ran"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (st, v) = api
        .call(&b, "POST", &format!("/api/runs/{id}/cancel"), None)
        .await;
    assert_eq!(st, 202, "{v}");
    while run_state(&api, &a, &id).await != "cancelled" {
        assert!(
            Instant::now() < deadline,
            "the cancel asked of the follower did nothing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A backfill asked of the follower: the leader records both slots at once, runs one at a
    // time, and a cancel of the queued one (asked of the follower too) ends it before it starts.
    let body = json!({"from": days_ago(3), "to": days_ago(2)});
    let (st, v) = api
        .call_json(&b, "POST", "/api/jobs/sleeper/backfill", &body)
        .await;
    assert_eq!(st, 202, "{v}");
    let ids = slot_run_ids(&v);
    assert_eq!(ids.len(), 2, "{v}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while run_state(&api, &b, &ids[0]).await != "running" {
        assert!(Instant::now() < deadline, "the backfill never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        run_state(&api, &b, &ids[1]).await,
        "pending",
        "one at a time"
    );
    for id in ids.iter().rev() {
        let (st, v) = api
            .call(&b, "POST", &format!("/api/runs/{id}/cancel"), None)
            .await;
        assert_eq!(st, 202, "{v}");
    }
    for id in &ids {
        while run_state(&api, &a, id).await != "cancelled" {
            assert!(
                Instant::now() < deadline,
                "the backfill run {id} was not cancelled"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let token = api.token;
    // Sign in on A; the session cookie works on B.
    let (http, cookie) = telejob_e2e::dashboard_sign_in(&a.base, &token).await;
    let page = http
        .get(format!("{}/", b.base))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("dashboard");
    assert_eq!(page.status().as_u16(), 200);
    let text = page.text().await.expect("text");
    assert!(
        text.contains("admin"),
        "not signed in on the other replica: {text}"
    );
    // A replica with directories of its own, or another secrets key, is refused in one line.
    let out = command(dir, 7, &url, false).output();
    assert!(!out.status.success());
    let err = std::fs::read_to_string(dir.join("replica7.log")).expect("log");
    assert!(err.contains("shared_stores"), "{err}");
    let out = command(dir, 8, &url, true)
        .env("TELEJOB_SECRETS_KEY", "0".repeat(64))
        .output();
    assert!(!out.status.success());
    let err = std::fs::read_to_string(dir.join("replica8.log")).expect("log");
    assert!(err.contains("TELEJOB_SECRETS_KEY"), "{err}");
}

/// An existing SQLite installation moves to PostgreSQL with `telejob db copy`: a replica on the
/// copy knows its users, tokens and jobs; `token create --database` writes to the shared one.
#[tokio::test]
async fn db_copy_moves_an_installation_and_token_create_takes_database() {
    let Some(pg) = postgres() else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    // A single server on SQLite, with a job.
    let sqlite_data = dir.join("data0");
    let sqlite = format!("sqlite:{}", sqlite_data.join("telejob.db").display());
    let one = command(dir, 0, &sqlite, true).start();
    let api = admin(dir);
    api.minutely(&one, "moved").await;
    drop(one);
    // Copy it into an empty PostgreSQL database.
    let url = pg.new_database();
    let out = Command::new(telejob_bin!())
        .args(["db", "copy", "--from", &sqlite, "--to", &url])
        .output()
        .expect("db copy");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    for table in ["users: 1", "tokens: 1", "jobs: 1", "code_versions: 1"] {
        assert!(stdout.lines().any(|l| l == table), "{table}: {stdout}");
    }
    // Copying again is refused: the target is not empty.
    let again = Command::new(telejob_bin!())
        .args(["db", "copy", "--from", &sqlite, "--to", &url])
        .output()
        .expect("db copy");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("empty database"));
    // A replica on the copy: the old admin token works, and the job is there with its code.
    let moved = command(dir, 1, &url, true).start();
    let (s, v) = api.call(&moved, "GET", "/api/jobs/moved", None).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["code_sha256"].is_string(), "{v}");
    // A token made on the host for the shared database works on the replica.
    let out = telejob_core::testing::output_of(
        Command::new(telejob_bin!())
            .args(["token", "create", "--user", "bob", "--database", &url])
            .arg("--data-dir")
            .arg(dir.join("nowhere")),
        "token create",
    );
    let bob = Api {
        token: String::from_utf8_lossy(&out.stdout).trim().to_string(),
    };
    let (s, v) = bob.call(&moved, "GET", "/api/jobs", None).await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_asked_of_a_follower_during_a_publish_leaves_nothing_behind() {
    let Some(pg) = postgres() else { return };
    let url = pg.new_database();
    let (tmp, a, b, api) = leader_and_follower(&url).await;
    let dir = tmp.path();
    let id = api
        .start_script(
            &a,
            "big",
            "mkdir -p out && cd out && seq 1 20000 | xargs touch",
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while run_state(&api, &a, &id).await != "publishing" {
        assert!(Instant::now() < deadline, "never publishing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Asked of the follower: the leader stops the run, the fence stops its publish.
    let (s, v) = api
        .call(&b, "DELETE", "/api/jobs/big?public_data=purge", None)
        .await;
    assert_eq!(s, 204, "{v}");
    let public = dir.join("shared/public/big");
    assert!(telejob_e2e::files_below(&public).is_empty());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let left = telejob_e2e::files_below(&public);
    assert!(left.is_empty(), "{} files landed after the 204", left.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_streams_the_log_of_a_run_on_the_leader_as_it_prints() {
    let Some(pg) = postgres() else { return };
    let url = pg.new_database();
    let (_tmp, a, b, api) = leader_and_follower(&url).await;
    let id = api
        .start_script(
            &a,
            "talks",
            "echo first; sleep 5; echo second; mkdir -p out; echo 1 > out/x",
        )
        .await;
    // Followed through the replica that does not run it.
    let mut r = reqwest::Client::new()
        .get(format!("{}/api/runs/{id}/log?follow=true", b.base))
        .bearer_auth(&api.token)
        .send()
        .await
        .expect("follow");
    assert_eq!(r.status().as_u16(), 200);
    let mut seen = String::new();
    while !seen.contains("first") {
        let part = tokio::time::timeout(Duration::from_secs(30), r.chunk())
            .await
            .expect("a part within 30 s")
            .expect("chunk")
            .expect("the stream goes on while the run prints");
        seen.push_str(&String::from_utf8_lossy(&part));
    }
    assert_eq!(run_state(&api, &b, &id).await, "running", "{seen}");
    while let Some(part) = r.chunk().await.expect("chunk") {
        seen.push_str(&String::from_utf8_lossy(&part));
    }
    assert!(seen.contains("second"), "to the end: {seen}");
    assert_eq!(run_state(&api, &b, &id).await, "succeeded");
}
