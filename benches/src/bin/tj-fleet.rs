//! `tj-fleet TELEJOB [JOBS] [MINUTES]`: fire lateness of JOBS every-minute jobs through the real
//! server (`telejob serve`, its scheduler and database), on SQLite and on PostgreSQL (a
//! throwaway cluster), and the takeover time of a second replica on PostgreSQL after the leader
//! is killed (`kill -9`: a dead holder on the same host) and after it is frozen (`SIGSTOP`: the
//! lease must expire, as for a leader on another host).
//!
//! Lateness of a slot = when its run row was inserted − the slot's minute, over the first-attempt
//! rows of MINUTES consecutive minutes. Jobs have no code, so each run ends at once ("no code
//! yet") and what is measured is the scheduler and the database, not process starts. Prints one
//! JSON line per measurement.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use sqlx::Row;

use telejob_e2e::{ServeCommand, Server};

fn serve(bin: &Path, dir: &Path, n: usize, database: &str) -> Server {
    let cfg = dir.join(format!("r{n}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "shared_stores = true\npublic_store = \"{0}/public\"\nprivate_store = \"{0}/private\"\nmax_concurrent_runs = 64\n",
            dir.display()
        ),
    )
    .expect("config");
    ServeCommand::new(bin, &dir.join(format!("data{n}")))
        .config(&cfg)
        .args(["--database", database])
        .env(
            "TELEJOB_SECRETS_KEY",
            "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        )
        .start()
}

async fn role(http: &reqwest::Client, s: &Server) -> String {
    let r = http
        .get(format!("{}/healthz", s.base))
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    match r {
        Ok(r) => r.json::<serde_json::Value>().await.map_or_else(
            |_| String::new(),
            |v| v["role"].as_str().unwrap_or_default().to_string(),
        ),
        Err(_) => String::new(),
    }
}

/// Sleeps until `second` past the next minute.
async fn until_second(second: u32) {
    use chrono::Timelike;
    let now = chrono::Utc::now();
    let t = now
        .with_second(second)
        .and_then(|t| t.with_nanosecond(0))
        .expect("time");
    let t = if t > now {
        t
    } else {
        t + chrono::Duration::minutes(1)
    };
    tokio::time::sleep((t - now).to_std().expect("ahead")).await;
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn fleet(bin: &Path, label: &str, database: &str, dir: &Path, jobs: usize, minutes: i64) {
    let a = serve(bin, dir, 0, database);
    let token = std::fs::read_to_string(dir.join("data0/admin.token"))
        .expect("admin token")
        .trim()
        .to_string();
    let http = reqwest::Client::new();
    let made = Instant::now();
    futures::stream::iter(0..jobs)
        .for_each_concurrent(32, |i| {
            let (http, base, token) = (&http, &a.base, &token);
            async move {
                let spec = serde_json::json!({"name": format!("fleet-{i:05}"), "command": "true",
                    "schedule": {"frequency": "cron", "cron": "* * * * *"}});
                let r = http
                    .post(format!("{base}/api/jobs"))
                    .bearer_auth(token)
                    .json(&spec)
                    .send()
                    .await
                    .expect("create");
                assert_eq!(r.status().as_u16(), 201, "{:?}", r.text().await);
            }
        })
        .await;
    eprintln!("{label}: {jobs} jobs created in {:.1?}", made.elapsed());
    // Measure whole minutes that begin after every job exists.
    until_second(0).await;
    let first = chrono::Utc::now() + chrono::Duration::seconds(1);
    tokio::time::sleep(Duration::from_secs(60 * minutes as u64 + 20)).await;
    sqlx::any::install_default_drivers();
    let url = if database.starts_with("sqlite:") {
        format!("{}?mode=ro", database.replacen("sqlite:", "sqlite://", 1))
    } else {
        database.to_string()
    };
    let pool = sqlx::AnyPool::connect(&url)
        .await
        .expect("read the database");
    let rows = sqlx::query(
        "SELECT scheduled_for, created_at FROM runs WHERE trigger = 'scheduled' AND attempt = 0",
    )
    .fetch_all(&pool)
    .await
    .expect("runs");
    let parse = |s: &str| chrono::DateTime::parse_from_rfc3339(s).expect("timestamp");
    let mut late: Vec<f64> = rows
        .iter()
        .filter_map(|r| {
            let slot = parse(r.get::<String, _>(0).as_str());
            let at = parse(r.get::<String, _>(1).as_str());
            (slot >= first && slot < first + chrono::Duration::minutes(minutes))
                .then(|| (at - slot).as_seconds_f64())
        })
        .collect();
    late.sort_by(f64::total_cmp);
    println!(
        "{}",
        serde_json::json!({"bench": "fire_lateness", "database": label, "jobs": jobs,
            "slots": late.len(), "expected_slots": jobs as i64 * minutes,
            "p50_ms": percentile(&late, 0.5) * 1e3, "p99_ms": percentile(&late, 0.99) * 1e3,
            "max_ms": late.last().copied().unwrap_or(f64::NAN) * 1e3})
    );
    pool.close().await;
    if label != "postgres" {
        return;
    }
    // Takeover: a second replica, the leader killed; a third, the new leader frozen.
    let mut a = a;
    let b = serve(bin, dir, 1, database);
    until_second(30).await;
    let _ = a.child.kill();
    let t0 = Instant::now();
    let _ = a.child.wait();
    while role(&http, &b).await != "leader" {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "{}",
        serde_json::json!({"bench": "takeover", "database": label, "how": "kill -9", "jobs": jobs,
            "seconds": t0.elapsed().as_secs_f64()})
    );
    let c = serve(bin, dir, 2, database);
    until_second(30).await;
    let pid = b.child.id().to_string();
    let _ = Command::new("kill").args(["-STOP", &pid]).status();
    let t0 = Instant::now();
    while role(&http, &c).await != "leader" {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "{}",
        serde_json::json!({"bench": "takeover", "database": label, "how": "SIGSTOP (lease expiry)",
            "jobs": jobs, "seconds": t0.elapsed().as_secs_f64()})
    );
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let bin = args
        .next()
        .expect("usage: tj-fleet TELEJOB [JOBS] [MINUTES]");
    let jobs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let minutes: i64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let bin = Path::new(&bin);
    let tmp = tempfile::tempdir().expect("tempdir");
    let sqlite = tmp.path().join("sqlite");
    std::fs::create_dir_all(&sqlite).expect("dir");
    let url = format!("sqlite:{}", sqlite.join("data0/telejob.db").display());
    fleet(bin, "sqlite", &url, &sqlite, jobs, minutes).await;
    let Some(pg) = telejob_e2e::postgres::postgres() else {
        return;
    };
    let pgdir = tmp.path().join("postgres");
    std::fs::create_dir_all(&pgdir).expect("dir");
    fleet(bin, "postgres", &pg.new_database(), &pgdir, jobs, minutes).await;
}
