//! Tests of the persistence, each run against SQLite and against PostgreSQL (a throwaway
//! cluster; skipped with a message where PostgreSQL is not installed, required in CI).

use telejob_core::job::{JobName, JobSpec};
use telejob_core::run::{Run, RunRequest, RunState};
use telejob_core::scheduler::persist::{RunRow, SchedulerStore, Trigger};

use super::conn::{Db, Location, parse_ts};
use super::{ChangeKind, Fence};

/// A fresh database of each kind this host has, with what keeps it alive.
async fn databases() -> Vec<(Db, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut out = vec![(
        Db::open(&dir.path().join("t.db")).await.expect("sqlite"),
        Some(dir),
    )];
    if let Some(pg) = telejob_e2e::postgres::postgres() {
        let url = pg.new_database();
        let at: Location = url.parse().expect("url");
        out.push((Db::connect(&at).await.expect("postgres"), None));
    }
    out
}

/// The database as the scheduler store conformance suite drives it.
struct Fixture(Db);

#[async_trait::async_trait]
impl telejob_core::testing::SchedulerStoreFixture for Fixture {
    fn store(&self) -> &dyn SchedulerStore {
        &self.0
    }
    async fn add_job(&self, job: telejob_core::scheduler::persist::JobState) {
        self.0.ensure_user(&job.owner, false).await.expect("owner");
        assert!(
            self.0
                .insert_job(&job.spec, &job.owner, job.cursor)
                .await
                .expect("insert_job")
        );
    }
    async fn run(&self, id: &telejob_core::run::RunId) -> Option<Run> {
        self.0.run(id.as_str()).await.expect("run").map(|(r, _)| r)
    }
}

#[tokio::test]
async fn both_databases_keep_the_scheduler_store_contract() {
    for (db, _keep) in databases().await {
        let ran = telejob_core::testing::scheduler_store_conformance(&Fixture(db)).await;
        assert_eq!(ran, telejob_core::testing::SCHEDULER_STORE_CHECKS);
    }
}

/// A test that runs `check(db)` on each database this host has.
macro_rules! on_both_databases {
    ($name:ident, $check:ident) => {
        #[tokio::test]
        async fn $name() {
            for (db, _keep) in databases().await {
                $check(db).await;
            }
        }
    };
}

fn row(job: &str, key: &str) -> RunRow {
    let req: RunRequest = serde_json::from_value(serde_json::json!({
        "run_id": telejob_core::run::RunId::new(), "job": job, "code": "store:x", "command": "true",
        "output_dir": "output", "timeout": 60.0, "scheduled_for": "2014-03-08T12:00:00Z"
    }))
    .expect("request");
    RunRow {
        run: Run::pending(&req),
        slot_key: key.into(),
        trigger: Trigger::Scheduled,
        attempt: 0,
    }
}

on_both_databases!(
    job_reads_follow_every_write_through_the_cache,
    reads_follow_writes
);

async fn reads_follow_writes(db: Db) {
    db.ensure_user("ann", false).await.expect("user");
    let at = |h| parse_ts("t", &format!("2014-03-08T{h:02}:00:00Z")).expect("time");
    let mut spec = JobSpec::new("j");
    assert!(db.insert_job(&spec, "ann", at(1)).await.expect("insert"));
    let job = || async { db.job("j").await.expect("read").expect("job") };
    // Each read below comes after a read that filled the cache.
    assert!(!job().await.paused);
    db.set_paused("j", true, chrono::Utc::now())
        .await
        .expect("pause");
    assert!(job().await.paused, "pause");
    spec.command = "echo two".into();
    db.update_job_spec(&spec, at(2)).await.expect("update");
    let j = job().await;
    assert_eq!((j.spec.command.as_str(), j.cursor), ("echo two", at(2)));
    let name = JobName::new("j").expect("name");
    db.set_cursor(&name, at(3)).await.expect("cursor");
    assert_eq!(job().await.cursor, at(3), "cursor");
    db.set_expired(&name).await.expect("expire");
    assert!(job().await.expired, "expired");
    assert!(db.code_versions("j").await.expect("versions").is_empty());
    db.add_code("j", "abc", "code/j/abc.tar", 10, "ann")
        .await
        .expect("code");
    assert_eq!(db.code_versions("j").await.expect("versions").len(), 1);
    assert_eq!(job().await.code_key.as_deref(), Some("code/j/abc.tar"));
    db.delete_job("j", None, None).await.expect("delete");
    assert!(db.job("j").await.expect("read").is_none(), "deleted");
    assert!(db.code_versions("j").await.expect("versions").is_empty());
    // A read that raced a write does not store what it read.
    let seen = db.cache.generation();
    db.cache.forget("j");
    db.cache.keep(seen, |c| &mut c.jobs, "j", j);
    assert!(
        db.job("j").await.expect("read").is_none(),
        "stale entry kept"
    );
}

on_both_databases!(
    a_slot_key_is_inserted_once_even_under_concurrency,
    slot_once
);

async fn slot_once(db: Db) {
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            db.insert_run(&row("j", "slot:2014-03-08T12:00:00Z")).await
        }));
    }
    let mut inserted = 0;
    for t in tasks {
        if t.await.expect("join").expect("insert") {
            inserted += 1;
        }
    }
    assert_eq!(inserted, 1);
    assert!(
        db.insert_run(&row("other", "slot:2014-03-08T12:00:00Z"))
            .await
            .expect("insert"),
        "keys are per job"
    );
    assert!(
        db.insert_run(&row("j", "manual:abc"))
            .await
            .expect("insert"),
        "manual runs have their own keys"
    );
}

on_both_databases!(in_flight_runs_become_interrupted, interrupted);

async fn interrupted(db: Db) {
    let r = row("j", "slot:a");
    db.insert_run(&r).await.expect("insert");
    let mut done = row("j", "slot:b");
    done.run.state = RunState::Succeeded;
    db.insert_run(&done).await.expect("insert");
    let in_flight = db.in_flight().await.expect("in flight");
    assert_eq!(in_flight.len(), 1);
    let (run, trigger, attempt) = in_flight.into_iter().next().expect("one");
    assert_eq!((trigger, attempt), (r.trigger, r.attempt));
    db.interrupt(run, "restart").await.expect("interrupt");
    let state = async |id: &str| db.run(id).await.expect("get").expect("exists").0.state;
    assert_eq!(state(r.run.id.as_str()).await, RunState::Interrupted);
    assert_eq!(state(done.run.id.as_str()).await, RunState::Succeeded);
}

on_both_databases!(
    a_timestamp_the_database_cannot_parse_is_an_error_not_1970,
    unparsable
);

async fn unparsable(db: Db) {
    db.ensure_user("ann", false).await.expect("user");
    let now = parse_ts("t", "2014-03-08T12:00:00Z").expect("time");
    assert!(
        db.insert_job(&JobSpec::new("j"), "ann", now)
            .await
            .expect("insert")
    );
    sqlx::query("UPDATE jobs SET cursor = 'yesterday' WHERE name = 'j'")
        .execute(&db.pool)
        .await
        .expect("corrupt");
    let e = db.job_fresh("j").await.expect_err("an unreadable cursor");
    assert!(
        matches!(e, telejob_core::Error::Persistence { op: "decode", .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("jobs.cursor"), "{e}");
}

fn scheduled(job: &str, slot: &str, attempt: u32) -> RunRow {
    let mut r = row(job, "");
    r.run.scheduled_for = parse_ts("slot", slot).expect("slot");
    r.slot_key = RunRow::slot_key(r.run.scheduled_for, attempt);
    r.trigger = if attempt == 0 {
        Trigger::Scheduled
    } else {
        Trigger::Retry
    };
    r.attempt = attempt;
    r
}

/// Ann's worker `name` (id `id`), launching at `t0` for an hour (at most a day), not yet
/// on a machine.
fn worker_row(id: &str, name: &str, t0: chrono::DateTime<chrono::Utc>) -> super::WorkerRow {
    super::WorkerRow {
        id: id.into(),
        name: name.into(),
        owner: "ann".into(),
        instance_id: None,
        instance_type: "t3.small".into(),
        ssh_key: "ssh-ed25519 AAAA".into(),
        state: "launching".into(),
        address: None,
        created_at: t0,
        deadline: t0 + chrono::Duration::hours(1),
        max_deadline: t0 + chrono::Duration::hours(24),
        ended_at: None,
        end_reason: None,
        notify: Default::default(),
        warned: false,
    }
}

/// Stores user `ann` and her job `name` (cursor 2014-03-08T00:00:00Z).
async fn with_job(db: &Db, name: &str) {
    db.ensure_user("ann", false).await.expect("user");
    let t0 = parse_ts("t", "2014-03-08T00:00:00Z").expect("time");
    let inserted = db.insert_job(&JobSpec::new(name), "ann", t0).await;
    assert!(inserted.expect("job"), "job {name} is new");
}

#[tokio::test]
async fn a_slots_first_row_and_the_cursor_move_together() {
    for (db, _keep) in databases().await {
        with_job(&db, "j").await;
        let cursor = || async { db.job_fresh("j").await.expect("read").expect("job").cursor };
        let first = scheduled("j", "2014-03-08T06:00:00Z", 0);
        assert!(db.insert_run(&first).await.expect("insert"));
        assert_eq!(
            cursor().await,
            first.run.scheduled_for,
            "the first attempt moves the cursor"
        );
        // A retry of an earlier slot, and a manual run, leave the cursor alone.
        assert!(
            db.insert_run(&scheduled("j", "2014-03-08T03:00:00Z", 1))
                .await
                .expect("retry")
        );
        let mut manual = row("j", "manual:x");
        manual.trigger = Trigger::Manual;
        assert!(db.insert_run(&manual).await.expect("manual"));
        assert_eq!(cursor().await, first.run.scheduled_for);
        // The cursor never moves back.
        assert!(
            db.insert_run(&scheduled("j", "2014-03-08T05:00:00Z", 0))
                .await
                .expect("late")
        );
        assert_eq!(cursor().await, first.run.scheduled_for);
        // A slot already recorded is not recorded again, and still counts as handled.
        assert!(
            !db.insert_run(&scheduled("j", "2014-03-08T06:00:00Z", 0))
                .await
                .expect("again")
        );
    }
}

#[tokio::test]
async fn the_lease_passes_on_expiry_and_fences_a_stale_leaders_writes() {
    for (db, _keep) in databases().await {
        with_job(&db, "j").await;
        let a = db
            .acquire_lease("a", 60_000, None)
            .await
            .expect("a")
            .expect("free lease");
        assert_eq!(
            db.acquire_lease("b", 60_000, None).await.expect("b"),
            None,
            "held"
        );
        let fa = Fence {
            holder: "a".into(),
            epoch: a,
        };
        assert!(db.renew_lease(&fa, 60_000).await.expect("renew"));
        let leader_a = db.fenced(fa.clone());
        assert!(
            leader_a
                .insert_run(&scheduled("j", "2014-03-08T01:00:00Z", 0))
                .await
                .expect("a fires")
        );
        // A holder known dead is taken over at once; otherwise only an expired lease is.
        let b = db
            .acquire_lease("b", 60_000, Some(&fa))
            .await
            .expect("b")
            .expect("the dead holder's lease");
        assert_eq!(b, a + 1, "each takeover is a new epoch");
        assert!(
            !db.renew_lease(&fa, 60_000).await.expect("renew"),
            "a lost it"
        );
        // The stale leader's slot insert, cursor move and expiry are refused and change nothing.
        let stale = scheduled("j", "2014-03-08T02:00:00Z", 0);
        let e = leader_a.insert_run(&stale).await.expect_err("fenced");
        assert!(e.to_string().contains("lease"), "{e}");
        assert!(db.run(stale.run.id.as_str()).await.expect("read").is_none());
        let name = JobName::new("j").expect("name");
        leader_a
            .set_cursor(&name, stale.run.scheduled_for + chrono::Duration::days(9))
            .await
            .expect_err("fenced");
        leader_a.set_expired(&name).await.expect_err("fenced");
        // A stale leader's batch (a burst's slots) is refused row by row, as fenced: the
        // scheduler does not retry such rows alone.
        let burst = [
            scheduled("j", "2014-03-08T03:00:00Z", 0),
            scheduled("j", "2014-03-08T04:00:00Z", 0),
        ];
        let answers = leader_a.insert_runs(&burst).await;
        assert_eq!(answers.len(), 2);
        for a in answers {
            assert!(a.expect_err("fenced").is_fenced());
        }
        for r in &burst {
            assert!(db.run(r.run.id.as_str()).await.expect("read").is_none());
        }
        let j = db.job_fresh("j").await.expect("read").expect("job");
        assert_eq!(
            j.cursor,
            parse_ts("t", "2014-03-08T01:00:00Z").expect("time")
        );
        assert!(!j.expired);
        // The new leader's insert of the same slot works, stamped with its epoch.
        let leader_b = db.fenced(Fence {
            holder: "b".into(),
            epoch: b,
        });
        assert!(leader_b.insert_run(&stale).await.expect("b fires"));
        let answers = leader_b.insert_runs(&burst).await;
        assert!(
            answers.into_iter().all(|a| a.expect("b's batch")),
            "the new leader's batch is stored"
        );
        for id in [&stale.run.id, &burst[0].run.id, &burst[1].run.id] {
            let epoch: i64 = sqlx::query_scalar("SELECT epoch FROM runs WHERE id = $1")
                .bind(id.as_str())
                .fetch_one(&db.pool)
                .await
                .expect("epoch");
            assert_eq!(epoch, b, "rows are stamped with the leader's epoch");
        }
        assert_eq!(
            db.job_fresh("j").await.expect("read").expect("job").cursor,
            parse_ts("t", "2014-03-08T04:00:00Z").expect("time"),
            "the batch moved the cursor to its latest slot"
        );
        // An expired lease is free; a released one at once.
        let fb = Fence {
            holder: "b".into(),
            epoch: b,
        };
        db.release_lease(&fb).await.expect("release");
        let c = db
            .acquire_lease("c", 1, None)
            .await
            .expect("c")
            .expect("released lease");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(
            !db.renew_lease(
                &Fence {
                    holder: "c".into(),
                    epoch: c
                },
                60_000
            )
            .await
            .expect("renew"),
            "expired"
        );
        assert_eq!(
            db.acquire_lease("d", 60_000, None).await.expect("d"),
            Some(c + 1)
        );
        assert_eq!(db.lease().await.expect("lease").holder, "d");
    }
}

#[tokio::test]
async fn the_change_feed_keeps_order_and_what_each_change_says() {
    for (db, _keep) in databases().await {
        let start = db.last_change().await.expect("last");
        db.record_change("j", &ChangeKind::Job, "a")
            .await
            .expect("job");
        db.record_change("j", &ChangeKind::RunNow("r1".into()), "b")
            .await
            .expect("run");
        db.record_change("k", &ChangeKind::Cancel("r2".into()), "b")
            .await
            .expect("cancel");
        let replay = ChangeKind::Replay {
            id: "r3".into(),
            of: "r1".into(),
        };
        db.record_change("k", &replay, "c").await.expect("replay");
        let backfill = ChangeKind::Backfill(vec![
            (
                parse_ts("slot", "2026-03-01T06:00:00Z").expect("t"),
                0,
                "r4".into(),
            ),
            (
                parse_ts("slot", "2026-03-02T06:00:00Z").expect("t"),
                2,
                "r5".into(),
            ),
        ]);
        db.record_change("k", &backfill, "c")
            .await
            .expect("backfill");
        let c = db.changes_after(start, 10).await.expect("read");
        let got: Vec<(&str, &ChangeKind, &str)> = c
            .iter()
            .map(|c| (c.job.as_str(), &c.kind, c.origin.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("j", &ChangeKind::Job, "a"),
                ("j", &ChangeKind::RunNow("r1".into()), "b"),
                ("k", &ChangeKind::Cancel("r2".into()), "b"),
                ("k", &replay, "c"),
                ("k", &backfill, "c"),
            ]
        );
        assert!(c.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(db.changes_after(c[1].seq, 10).await.expect("read").len(), 3);
        assert_eq!(db.last_change().await.expect("last"), c[4].seq);
        assert_eq!(
            db.prune_changes(chrono::Utc::now() + chrono::Duration::seconds(1))
                .await
                .expect("prune"),
            5
        );
    }
}

#[tokio::test]
async fn a_schema_newer_than_the_binary_is_refused_in_one_line() {
    for (db, keep) in databases().await {
        sqlx::query("INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time) VALUES (9999, 'from the future', CURRENT_TIMESTAMP, TRUE, $1, 0)")
            .bind(vec![0u8; 48])
            .execute(&db.pool)
            .await
            .expect("a future migration");
        let at = match &keep {
            Some(dir) => Location::Sqlite(dir.path().join("t.db")),
            None => {
                let name: String = sqlx::query_scalar("SELECT current_database()::text")
                    .fetch_one(&db.pool)
                    .await
                    .expect("name");
                let pg = telejob_e2e::postgres::postgres().expect("postgres");
                Location::Postgres(pg.url_via(pg.port(), &name))
            }
        };
        let e = Db::connect(&at).await.expect_err("refused").to_string();
        assert!(e.contains("9999") && e.contains("newer"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }
}

#[tokio::test]
async fn a_database_that_cannot_be_reached_is_named_without_its_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let at: Location = format!("postgres://ann:hunter2@127.0.0.1:{port}/telejob")
        .parse()
        .expect("url");
    let e = Db::connect(&at)
        .await
        .expect_err("nothing listens")
        .to_string();
    assert!(
        e.contains("cannot open the database at postgres://ann:***@127.0.0.1"),
        "{e}"
    );
    assert!(!e.contains("hunter2"), "{e}");
}

#[tokio::test]
async fn the_secrets_key_of_the_stored_secrets_is_required() {
    for (db, _keep) in databases().await {
        db.check_secrets_key("first").await.expect("recorded");
        db.check_secrets_key("first").await.expect("same key");
        let shared = db.backend() == super::Backend::Postgres;
        let other = db.check_secrets_key("second").await;
        assert_eq!(other.is_err(), shared, "{other:?}");
        db.check_secrets_key(if shared { "first" } else { "second" })
            .await
            .expect("the recorded key");
        let key = if shared { "first" } else { "second" };
        sqlx::query("INSERT INTO job_secrets (job, name, nonce, ciphertext, set_at) VALUES ('j', 'S', $1, $2, 't')")
            .bind(vec![1u8])
            .bind(vec![2u8])
            .execute(&db.pool)
            .await
            .expect("a sealed secret");
        let e = db
            .check_secrets_key("third")
            .await
            .expect_err("another key")
            .to_string();
        assert!(e.contains("TELEJOB_SECRETS_KEY"), "{e}");
        db.check_secrets_key(key).await.expect("the right key");
    }
}

/// Every table of the schema is copied, or deliberately not: a table a later change adds must
/// be named in one list or the other.
#[tokio::test]
async fn db_copy_moves_every_table_and_checks_the_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = Db::open(&dir.path().join("src.db")).await.expect("source");
    let mut names = src.table_names().await.expect("tables");
    names.retain(|n| !super::copy::NOT_COPIED.contains(&n.as_str()));
    let mut copied: Vec<String> = super::copy::copied_tables()
        .iter()
        .map(|s| s.to_string())
        .collect();
    names.sort();
    copied.sort();
    assert_eq!(
        names, copied,
        "a table is neither copied nor listed as not copied"
    );
    // One row in every table.
    src.ensure_user("ann", true).await.expect("user");
    src.add_token("ann", "hash", Some("label"))
        .await
        .expect("token");
    let t0 = parse_ts("t", "2014-03-08T00:00:00Z").expect("time");
    assert!(
        src.insert_job(&JobSpec::new("j"), "ann", t0)
            .await
            .expect("job")
    );
    src.add_code("j", "abc", "j/code/abc.tar", 10, "ann")
        .await
        .expect("code");
    assert!(src.insert_run(&row("j", "slot:x")).await.expect("run"));
    assert!(
        src.claim_notification("n1", "j", "failed")
            .await
            .expect("notification")
    );
    src.delete_job("gone", Some("ann"), None)
        .await
        .expect("tombstone");
    sqlx::query("INSERT INTO job_secrets (job, name, nonce, ciphertext, set_at) VALUES ('j', 'S', $1, $2, 't')")
        .bind(vec![1u8, 2, 3])
        .bind(vec![0u8, 255])
        .execute(&src.pool)
        .await
        .expect("secret");
    let now = chrono::Utc::now();
    src.insert_session(
        "idhash",
        "ann",
        "csrf",
        now,
        now - chrono::Duration::hours(1),
    )
    .await
    .expect("session");
    src.check_secrets_key("k").await.expect("setting");
    let worker = super::WorkerRow {
        instance_id: Some("i-1".into()),
        state: "running".into(),
        address: Some("10.0.0.1".into()),
        deadline: t0 + chrono::Duration::hours(4),
        ..worker_row("w1", "dev", t0)
    };
    assert_eq!(
        src.insert_worker_within(&worker, 2).await.expect("worker"),
        super::WorkerInsert::Inserted
    );
    let mut targets = vec![Location::Sqlite(dir.path().join("dst.db"))];
    if let Some(pg) = telejob_e2e::postgres::postgres() {
        targets.push(pg.new_database().parse().expect("url"));
    }
    for to in targets {
        let dst = Db::connect(&to).await.expect("target");
        let counts = src.copy_into(&dst).await.expect("copy");
        assert_eq!(counts.len(), copied.len());
        for (table, n) in &counts {
            assert_eq!(*n, 1, "{table} in {to}");
        }
        let (run, trigger) = dst
            .run(&row_id(&src).await)
            .await
            .expect("read")
            .expect("run");
        assert_eq!((run.job.as_str(), trigger.as_str()), ("j", "scheduled"));
        assert_eq!(
            dst.worker("dev").await.expect("worker"),
            Some(worker.clone())
        );
        assert_eq!(
            dst.token_user("hash")
                .await
                .expect("token")
                .map(|u| u.is_admin),
            Some(true)
        );
        let blob: Vec<u8> = sqlx::query_scalar("SELECT ciphertext FROM job_secrets")
            .fetch_one(&dst.pool)
            .await
            .expect("blob");
        assert_eq!(blob, vec![0u8, 255]);
        // Into a database that holds data already: refused, nothing written.
        let e = src
            .copy_into(&dst)
            .await
            .expect_err("not empty")
            .to_string();
        assert!(e.contains("empty database"), "{e}");
    }
}

async fn row_id(db: &Db) -> String {
    sqlx::query_scalar("SELECT id FROM runs")
        .fetch_one(&db.pool)
        .await
        .expect("id")
}

#[tokio::test]
async fn the_last_finished_run_of_each_job_says_whether_it_failed() {
    for (db, _keep) in databases().await {
        let add = |job: &str, key: &str, state: RunState| {
            let mut r = row(job, key);
            r.run.state = state;
            r
        };
        let rows = [
            add("ok-now", "a", RunState::Failed),
            add("ok-now", "b", RunState::Succeeded),
            add("bad-now", "a", RunState::Succeeded),
            add("bad-now", "b", RunState::TimedOut),
            add("bad-now", "c", RunState::Missed),
            add("never", "a", RunState::Running),
        ];
        for r in &rows {
            assert!(db.insert_run(r).await.expect("insert"));
            // Distinct creation times, in order.
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        let failed = db.jobs_last_failed().await.expect("query");
        assert_eq!(
            failed.into_iter().collect::<Vec<_>>(),
            vec!["bad-now".to_string()]
        );
        for job in ["ok-now", "bad-now", "never"] {
            assert_eq!(
                db.last_failed(job).await.expect("one"),
                job == "bad-now",
                "{job}"
            );
        }
    }
}

#[tokio::test]
async fn a_worker_insert_keeps_the_cap_and_live_names_even_when_launches_race() {
    for (db, _keep) in databases().await {
        db.ensure_user("ann", false).await.expect("user");
        let t0 = chrono::Utc::now();
        let w = |n: usize| worker_row(&format!("id{n}"), &format!("w{n}"), t0);
        // Ten launches at once, a cap of 3: exactly three recorded.
        let all = futures::future::join_all((0..10).map(|n| {
            let db = db.clone();
            let row = w(n);
            async move { db.insert_worker_within(&row, 3).await }
        }))
        .await;
        let inserted = all
            .iter()
            .filter(|r| matches!(r, Ok(super::WorkerInsert::Inserted)))
            .count();
        assert_eq!(inserted, 3, "{all:?}");
        assert!(
            all.iter().all(|r| matches!(
                r,
                Ok(super::WorkerInsert::Inserted | super::WorkerInsert::AtCap(3))
            )),
            "{all:?}"
        );
        // A name in use is refused as such; once ended, the name is free again.
        let live = db.workers().await.expect("workers");
        let taken = live.first().expect("one").clone();
        let again = super::WorkerRow {
            id: "again".into(),
            ..taken.clone()
        };
        assert_eq!(
            db.insert_worker_within(&again, 10).await.expect("insert"),
            super::WorkerInsert::NameTaken
        );
        assert!(db.end_worker(&taken.id, "test").await.expect("end"));
        assert!(
            !db.end_worker(&taken.id, "test").await.expect("end"),
            "once"
        );
        assert_eq!(
            db.insert_worker_within(&again, 10).await.expect("insert"),
            super::WorkerInsert::Inserted
        );
    }
}
