//! Tests of the SQLite persistence.

use telejob_core::job::{JobName, JobSpec};
use telejob_core::run::{Run, RunRequest, RunState};
use telejob_core::scheduler::persist::{RunRow, SchedulerStore, Trigger};

use super::conn::{Db, parse_ts};

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

#[tokio::test]
async fn job_reads_follow_every_write_through_the_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(&dir.path().join("t.db")).await.expect("db");
    db.ensure_user("ann", false).await.expect("user");
    let at = |h| parse_ts("t", &format!("2014-03-08T{h:02}:00:00Z")).expect("time");
    let mut spec = JobSpec::new("j");
    assert!(db.insert_job(&spec, "ann", at(1)).await.expect("insert"));
    let job = || async { db.job("j").await.expect("read").expect("job") };
    // Each read below comes after a read that filled the cache.
    assert!(!job().await.paused);
    db.set_paused("j", true).await.expect("pause");
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
    db.delete_job("j", None).await.expect("delete");
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

#[tokio::test]
async fn a_slot_key_is_inserted_once_even_under_concurrency() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(&dir.path().join("t.db")).await.expect("db");
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

#[tokio::test]
async fn in_flight_runs_become_interrupted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(&dir.path().join("t.db")).await.expect("db");
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
    let (back, _) = db
        .run(r.run.id.as_str())
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(back.state, RunState::Interrupted);
    let (other, _) = db
        .run(done.run.id.as_str())
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(other.state, RunState::Succeeded);
}

#[tokio::test]
async fn a_timestamp_the_database_cannot_parse_is_an_error_not_1970() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(&dir.path().join("t.db")).await.expect("db");
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
