//! `tj-fleet TELEJOB [JOBS] [MINUTES] [--spread] [--coded K] [--only sqlite|postgres]
//! [--takeover]`: a burst of JOBS jobs through the real server (`telejob serve`, its scheduler
//! and database), on SQLite and on PostgreSQL (a throwaway cluster). Prints one JSON line per
//! measurement.
//!
//! - `fire_lateness`: for each first-attempt row of MINUTES consecutive minutes, when the row
//!   was inserted − the slot; p50, p99 and max, and the slots **lost** (expected, not recorded)
//!   and **doubled** (two rows of one job and slot). Jobs fire every minute, all at :00 (the
//!   noon case: every job at one instant), or with `--spread` each at its own minute of the
//!   hour (JOBS / 60 per minute: telejob schedules by the minute, so this is how a fleet
//!   spreads; the coded jobs below still fire every minute).
//! - `command_start`: the first K jobs (`--coded`, default 10) have real code (`./run.sh`, a
//!   shell script that exits 0, run as a host process); when each of their commands started −
//!   the slot. The others have no code, so their runs end at once ("no code yet") and what is
//!   measured for them is the scheduler and the database.
//! - `api_during_burst`: `GET /api/jobs/{name}` and `/healthz`, one after the other, from 2 s
//!   before each measured minute to 8 s after it: p50, p99 and max.
//! - `api_throughput`: `GET /api/jobs/{name}` under `wrk -t2 -c32 -d5s` (when `wrk` is on PATH),
//!   after the burst.
//! - `takeover` (`--takeover`, PostgreSQL): a second replica's time to lead after the leader is
//!   killed (`kill -9`) and after it is frozen (`SIGSTOP`: the lease must expire).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use sqlx::Row;

use telejob_e2e::{Api, ServeCommand, Server};

#[derive(Debug, Clone)]
struct Opts {
    jobs: usize,
    minutes: i64,
    spread: bool,
    coded: usize,
    only: Option<String>,
    takeover: bool,
}

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

/// The next instant `second` past a minute.
fn next_second(second: u32) -> chrono::DateTime<chrono::Utc> {
    use chrono::Timelike;
    let now = chrono::Utc::now();
    let t = now
        .with_second(second)
        .and_then(|t| t.with_nanosecond(0))
        .expect("time");
    if t > now {
        t
    } else {
        t + chrono::Duration::minutes(1)
    }
}

async fn sleep_until(t: chrono::DateTime<chrono::Utc>) {
    if let Ok(d) = (t - chrono::Utc::now()).to_std() {
        tokio::time::sleep(d).await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// p50, p99 and max of `v` (seconds) in milliseconds, as JSON fields.
fn spread_ms(mut v: Vec<f64>) -> serde_json::Value {
    v.sort_by(f64::total_cmp);
    serde_json::json!({"n": v.len(), "p50_ms": percentile(&v, 0.5) * 1e3,
        "p99_ms": percentile(&v, 0.99) * 1e3, "max_ms": v.last().copied().unwrap_or(f64::NAN) * 1e3})
}

fn job_name(i: usize) -> String {
    format!("fleet-{i:06}")
}

/// The minute of the hour job `i` fires at with `--spread`.
fn minute_of(i: usize) -> u32 {
    (i % 60) as u32
}

async fn create_jobs(api: &Api, o: &Opts) {
    let made = Instant::now();
    futures::stream::iter(0..o.jobs)
        .for_each_concurrent(32, |i| async move {
            // Coded jobs fire every minute in both modes, so that each measured minute starts some.
            let cron = if o.spread && i >= o.coded {
                format!("{} * * * *", minute_of(i))
            } else {
                "* * * * *".to_string()
            };
            let mut spec = serde_json::json!({"name": job_name(i), "command": "true",
                "schedule": {"frequency": "cron", "cron": cron}});
            if i < o.coded {
                spec["command"] = "./run.sh".into();
                spec["image"] = "host".into();
                api.create_with_code(spec, &[("run.sh", "#!/bin/sh\nexit 0\n", 0o755)])
                    .await;
            } else {
                let (s, v) = api.post_json("/api/jobs", &spec).await;
                assert_eq!(s, 201, "{v}");
            }
        })
        .await;
    eprintln!("{} jobs created in {:.1?}", o.jobs, made.elapsed());
}

/// Latencies of API reads from `from` to `to`, one request after the other.
async fn probe(
    api: Api,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> Vec<f64> {
    sleep_until(from).await;
    let mut out = Vec::new();
    let mut i = 0usize;
    while chrono::Utc::now() < to {
        let path = if i.is_multiple_of(2) {
            format!("/api/jobs/{}", job_name(i % 7))
        } else {
            "/healthz".to_string()
        };
        let t = Instant::now();
        let (s, _) = api.get(&path).await;
        assert_eq!(s, 200, "GET {path} during the burst");
        out.push(t.elapsed().as_secs_f64());
        i += 1;
    }
    out
}

async fn read_pool(database: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    let url = if database.starts_with("sqlite:") {
        format!("{}?mode=ro", database.replacen("sqlite:", "sqlite://", 1))
    } else {
        database.to_string()
    };
    sqlx::AnyPool::connect(&url)
        .await
        .expect("read the database")
}

async fn fleet(bin: &Path, label: &str, database: &str, dir: &Path, o: &Opts) {
    let a = serve(bin, dir, 0, database);
    let api = a.admin();
    create_jobs(&api, o).await;
    // Whole minutes that begin after every job exists (and 2 s for the probe to start).
    let first = next_second(0);
    let first = if (first - chrono::Utc::now()).num_seconds() < 3 {
        first + chrono::Duration::minutes(1)
    } else {
        first
    };
    let end = first + chrono::Duration::minutes(o.minutes);
    let mut probes = Vec::new();
    for m in 0..o.minutes {
        let at = first + chrono::Duration::minutes(m);
        probes.push(tokio::spawn(probe(
            Api::at(&a.base, api.token.as_deref()),
            at - chrono::Duration::seconds(2),
            at + chrono::Duration::seconds(8),
        )));
    }
    let expected: i64 = (0..o.minutes)
        .map(|m| {
            use chrono::Timelike;
            let minute = (first + chrono::Duration::minutes(m)).minute();
            if o.spread {
                (0..o.jobs)
                    .filter(|i| *i < o.coded || minute_of(*i) == minute)
                    .count() as i64
            } else {
                o.jobs as i64
            }
        })
        .sum();
    // Read between bursts (every-minute jobs fire again at `end`: reading the runs table then
    // would slow the burst it measures).
    sleep_until(end + chrono::Duration::seconds(20)).await;
    let pool = read_pool(database).await;
    // As the server writes timestamps (`2026-12-03T12:00:00.000000Z`): compared as text.
    let (first_s, end_s) = (
        first.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        end.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
    );
    // Every slot of the window recorded, or 60 s passed.
    let waited = Instant::now();
    let rows = loop {
        let rows = sqlx::query(
            "SELECT job, scheduled_for, created_at, record FROM runs \
             WHERE trigger = 'scheduled' AND attempt = 0 AND scheduled_for >= $1 AND scheduled_for < $2",
        )
        .bind(&first_s)
        .bind(&end_s)
        .fetch_all(&pool)
        .await
        .expect("runs");
        if rows.len() as i64 >= expected || waited.elapsed() > Duration::from_secs(60) {
            break rows;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let parse = |s: &str| chrono::DateTime::parse_from_rfc3339(s).expect("timestamp");
    let mut late = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut doubled = 0i64;
    for r in &rows {
        let (job, slot): (String, String) = (r.get(0), r.get(1));
        if !seen.insert((job, slot.clone())) {
            doubled += 1;
        }
        late.push((parse(r.get::<String, _>(2).as_str()) - parse(&slot)).as_seconds_f64());
    }
    let recorded = seen.len() as i64;
    let mut fire = spread_ms(late);
    fire["bench"] = "fire_lateness".into();
    fire["database"] = label.into();
    fire["jobs"] = o.jobs.into();
    fire["spread"] = o.spread.into();
    fire["expected_slots"] = expected.into();
    fire["lost"] = (expected - recorded).max(0).into();
    fire["doubled"] = doubled.into();
    println!("{fire}");
    // The coded jobs' commands: started − slot, once they have ended (or 60 s more).
    let coded: Vec<String> = (0..o.coded.min(o.jobs)).map(job_name).collect();
    let waited = Instant::now();
    let starts = loop {
        let mut starts = Vec::new();
        let mut open = 0;
        for r in &rows {
            let job: String = r.get(0);
            if !coded.contains(&job) {
                continue;
            }
            let id: String =
                serde_json::from_str::<serde_json::Value>(r.get::<String, _>(3).as_str())
                    .ok()
                    .and_then(|v| v["id"].as_str().map(String::from))
                    .unwrap_or_default();
            let (_, run) = api.get(&format!("/api/runs/{id}")).await;
            match run["phases"]["run_started"].as_str() {
                Some(t) => {
                    starts.push((parse(t) - parse(r.get::<String, _>(1).as_str())).as_seconds_f64())
                }
                None => open += 1,
            }
        }
        if open == 0 || waited.elapsed() > Duration::from_secs(60) {
            break starts;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let mut cs = spread_ms(starts);
    cs["bench"] = "command_start".into();
    cs["database"] = label.into();
    cs["jobs"] = o.jobs.into();
    cs["spread"] = o.spread.into();
    cs["coded"] = coded.len().into();
    println!("{cs}");
    let mut lat = Vec::new();
    for p in probes {
        lat.extend(p.await.expect("probe"));
    }
    let mut api_p = spread_ms(lat);
    api_p["bench"] = "api_during_burst".into();
    api_p["database"] = label.into();
    api_p["jobs"] = o.jobs.into();
    api_p["spread"] = o.spread.into();
    println!("{api_p}");
    pool.close().await;
    if let Some(t) = throughput(&a, api.token.as_deref().unwrap_or_default()) {
        let mut t = t;
        t["database"] = label.into();
        t["jobs"] = o.jobs.into();
        println!("{t}");
    }
    if label == "postgres" && o.takeover {
        takeover(bin, dir, database, a, o).await;
    }
}

/// `GET /api/jobs/{name}` under wrk, if wrk is installed.
fn throughput(a: &Server, token: &str) -> Option<serde_json::Value> {
    let out = Command::new("wrk")
        .args(["-t2", "-c32", "-d5s", "--latency", "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .arg(format!("{}/api/jobs/{}", a.base, job_name(0)))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rps: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))?
        .trim()
        .parse()
        .ok()?;
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(str::trim)
        .and_then(|v| {
            let (n, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
            let n: f64 = n.parse().ok()?;
            Some(
                n * match unit {
                    "us" => 1e-3,
                    "ms" => 1.0,
                    "s" => 1e3,
                    _ => f64::NAN,
                },
            )
        });
    Some(
        serde_json::json!({"bench": "api_throughput", "path": "/api/jobs/{name}",
        "requests_per_s": rps, "p99_ms": p99}),
    )
}

/// Waits until `next` leads and prints how long it took since `t0`, when the leader was
/// ended `how`.
async fn report_takeover(http: &reqwest::Client, next: &Server, t0: Instant, how: &str, o: &Opts) {
    while role(http, next).await != "leader" {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "{}",
        serde_json::json!({"bench": "takeover", "database": "postgres", "how": how,
            "jobs": o.jobs, "seconds": t0.elapsed().as_secs_f64()})
    );
}

async fn takeover(bin: &Path, dir: &Path, database: &str, a: Server, o: &Opts) {
    let http = reqwest::Client::new();
    let mut a = a;
    let b = serve(bin, dir, 1, database);
    sleep_until(next_second(30)).await;
    let _ = a.child.kill();
    let t0 = Instant::now();
    let _ = a.child.wait();
    report_takeover(&http, &b, t0, "kill -9", o).await;
    let c = serve(bin, dir, 2, database);
    sleep_until(next_second(30)).await;
    let pid = b.child.id().to_string();
    let _ = Command::new("kill").args(["-STOP", &pid]).status();
    let t0 = Instant::now();
    report_takeover(&http, &c, t0, "SIGSTOP (lease expiry)", o).await;
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
}

fn opts() -> (String, Opts) {
    let usage = "usage: tj-fleet TELEJOB [JOBS] [MINUTES] [--spread] [--coded K] \
                 [--only sqlite|postgres] [--takeover]";
    let mut args = std::env::args().skip(1);
    let bin = args.next().expect(usage);
    let mut o = Opts {
        jobs: 10_000,
        minutes: 2,
        spread: false,
        coded: 10,
        only: None,
        takeover: false,
    };
    let mut positional = 0;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--spread" => o.spread = true,
            "--takeover" => o.takeover = true,
            "--coded" => o.coded = args.next().and_then(|v| v.parse().ok()).expect(usage),
            "--only" => o.only = Some(args.next().expect(usage)),
            v if positional == 0 => {
                o.jobs = v.parse().expect(usage);
                positional += 1;
            }
            v if positional == 1 => {
                o.minutes = v.parse().expect(usage);
                positional += 1;
            }
            _ => panic!("{usage}"),
        }
    }
    (bin, o)
}

#[tokio::main]
async fn main() {
    let (bin, o) = opts();
    let bin = Path::new(&bin);
    let tmp = tempfile::tempdir().expect("tempdir");
    if o.only.as_deref() != Some("postgres") {
        let sqlite = tmp.path().join("sqlite");
        std::fs::create_dir_all(&sqlite).expect("dir");
        let url = format!("sqlite:{}", sqlite.join("data0/telejob.db").display());
        fleet(bin, "sqlite", &url, &sqlite, &o).await;
    }
    if o.only.as_deref() == Some("sqlite") {
        return;
    }
    let Some(pg) = telejob_e2e::postgres::postgres() else {
        eprintln!("PostgreSQL is not installed: the postgres rows are skipped");
        return;
    };
    let pgdir = tmp.path().join("postgres");
    std::fs::create_dir_all(&pgdir).expect("dir");
    fleet(bin, "postgres", &pg.new_database(), &pgdir, &o).await;
}
