//! The [`SchedulerStore`] checks: exactly-once slot rows, the cursor that moves with a slot's
//! first row, run updates, cursors and expiry as `load_jobs` reads them back.

use async_trait::async_trait;

use super::fixtures::at;
use crate::job::{JobName, JobSpec};
use crate::run::{Run, RunId, RunRequest, RunState};
use crate::scheduler::persist::{JobState, RunRow, SchedulerStore, Trigger};

/// What the checks need of a [`SchedulerStore`] beyond the trait: a way to add a job (as its
/// owner would, through the store's own API) and to read a run back.
#[async_trait]
pub trait SchedulerStoreFixture: Send + Sync {
    /// The store under test.
    fn store(&self) -> &dyn SchedulerStore;
    /// Adds `job` (its spec, owner, paused flag and cursor).
    async fn add_job(&self, job: JobState);
    /// The latest record of run `id`, if the store has it.
    async fn run(&self, id: &RunId) -> Option<Run>;
}

/// The scheduler store checks, by name, in the order [`scheduler_store_conformance`] runs them.
pub const SCHEDULER_STORE_CHECKS: &[&str] = &[
    "jobs_load",
    "slot_once",
    "slot_once_concurrently",
    "cursor_moves_with_the_first_attempt",
    "update_run",
    "cursor_and_expiry",
    "batch_once",
    "batch_of_a_burst",
    "update_runs",
];

/// Runs every scheduler store check against `fx`, each on jobs of its own; returns the names
/// of the checks run.
pub async fn scheduler_store_conformance(fx: &dyn SchedulerStoreFixture) -> Vec<&'static str> {
    scheduler_store_jobs_load(fx).await;
    scheduler_store_slot_once(fx).await;
    scheduler_store_slot_once_concurrently(fx).await;
    scheduler_store_cursor_moves_with_the_first_attempt(fx).await;
    scheduler_store_update_run(fx).await;
    scheduler_store_cursor_and_expiry(fx).await;
    scheduler_store_batch_once(fx).await;
    scheduler_store_batch_of_a_burst(fx).await;
    scheduler_store_update_runs(fx).await;
    SCHEDULER_STORE_CHECKS.to_vec()
}

/// A job name no other check uses.
fn fresh_job(check: &str) -> String {
    let id = RunId::new().to_string().replace('-', "");
    format!("{check}-{}", &id[id.len() - 10..])
}

/// Adds a job named for `check`, daily, due from `cursor`; returns its name.
async fn job(fx: &dyn SchedulerStoreFixture, check: &str, cursor: &str) -> JobName {
    let name = fresh_job(check);
    let mut state = JobState::new(JobSpec::new(name.clone()), "conformance");
    state.cursor = at(cursor);
    fx.add_job(state).await;
    JobName::new(name).expect("a valid job name")
}

/// Two new jobs of `check` with the cursor 2014-03-08T00:00:00Z, and the store.
async fn two_jobs<'f>(
    fx: &'f dyn SchedulerStoreFixture,
    check: &str,
) -> (JobName, JobName, &'f dyn SchedulerStore) {
    let a = job(fx, check, "2014-03-08T00:00:00Z").await;
    let b = job(fx, check, "2014-03-08T00:00:00Z").await;
    (a, b, fx.store())
}

/// The row of `slot`'s attempt `attempt` of `job`.
fn slot_row(job: &JobName, slot: &str, attempt: u32, trigger: Trigger) -> RunRow {
    let req = RunRequest::new(job.clone(), "store:code", "true").with_scheduled_for(at(slot));
    RunRow {
        run: Run::pending(&req),
        slot_key: RunRow::slot_key(at(slot), attempt),
        trigger,
        attempt,
    }
}

async fn cursor_of(fx: &dyn SchedulerStoreFixture, job: &JobName) -> JobState {
    fx.store()
        .load_jobs()
        .await
        .expect("load_jobs")
        .into_iter()
        .find(|j| j.spec.name == job.as_str())
        .unwrap_or_else(|| panic!("load_jobs does not return job {job}"))
}

/// `load_jobs` returns an added job with its spec, owner and cursor.
pub async fn scheduler_store_jobs_load(fx: &dyn SchedulerStoreFixture) {
    let job = job(fx, "load", "2014-03-08T00:00:00Z").await;
    let loaded = cursor_of(fx, &job).await;
    assert_eq!(loaded.owner, "conformance", "jobs_load: the owner");
    assert_eq!(
        loaded.cursor,
        at("2014-03-08T00:00:00Z"),
        "jobs_load: the cursor"
    );
    assert!(
        !loaded.paused && !loaded.expired,
        "jobs_load: a new job is armed"
    );
}

/// A slot key is inserted once: a second insert answers `false` and stores nothing, while the
/// same key of another job and another key of the same job are free.
pub async fn scheduler_store_slot_once(fx: &dyn SchedulerStoreFixture) {
    let (a, b, store) = two_jobs(fx, "once").await;
    let slot = "2014-03-08T12:00:00Z";
    let again = slot_row(&a, slot, 0, Trigger::Scheduled);
    for (row, recorded, what) in [
        (
            slot_row(&a, slot, 0, Trigger::Scheduled),
            true,
            "a new slot is recorded",
        ),
        (
            again.clone(),
            false,
            "a second row for the same slot is refused",
        ),
        (
            slot_row(&b, slot, 0, Trigger::Scheduled),
            true,
            "another job's same slot is its own",
        ),
        (
            slot_row(&a, slot, 1, Trigger::Retry),
            true,
            "the slot's next attempt has a key of its own",
        ),
    ] {
        let inserted = store.insert_run(&row).await.expect("insert");
        assert_eq!(inserted, recorded, "slot_once: {what}");
    }
    assert!(
        fx.run(&again.run.id).await.is_none(),
        "slot_once: the refused row is not stored"
    );
}

/// Sixteen inserts of one slot at once: exactly one is recorded.
pub async fn scheduler_store_slot_once_concurrently(fx: &dyn SchedulerStoreFixture) {
    let job = job(fx, "race", "2014-03-08T00:00:00Z").await;
    let rows: Vec<RunRow> = (0..16)
        .map(|_| slot_row(&job, "2014-03-08T12:00:00Z", 0, Trigger::Scheduled))
        .collect();
    let store = fx.store();
    let results = futures::future::join_all(rows.iter().map(|r| store.insert_run(r))).await;
    let recorded = results
        .into_iter()
        .map(|r| r.expect("insert"))
        .filter(|ok| *ok)
        .count();
    assert_eq!(
        recorded, 1,
        "slot_once_concurrently: one of 16 racing inserts of a slot is recorded"
    );
}

/// A slot's first attempt moves the job's cursor up to the slot with its row; retries, manual
/// runs and earlier slots leave it alone, and it never moves back.
pub async fn scheduler_store_cursor_moves_with_the_first_attempt(fx: &dyn SchedulerStoreFixture) {
    let job = job(fx, "cursor", "2014-03-08T00:00:00Z").await;
    let store = fx.store();
    let slot = "2014-03-08T06:00:00Z";
    assert!(
        store
            .insert_run(&slot_row(&job, slot, 0, Trigger::Scheduled))
            .await
            .expect("insert")
    );
    let moved = at(slot);
    assert_eq!(
        cursor_of(fx, &job).await.cursor,
        moved,
        "cursor_moves_with_the_first_attempt: the first attempt moves the cursor"
    );
    let retry = slot_row(&job, "2014-03-08T09:00:00Z", 1, Trigger::Retry);
    let mut manual = slot_row(&job, "2014-03-08T10:00:00Z", 0, Trigger::Manual);
    manual.slot_key = format!("manual:{}", manual.run.id);
    let earlier = slot_row(&job, "2014-03-08T03:00:00Z", 0, Trigger::Scheduled);
    for r in [&retry, &manual, &earlier] {
        assert!(store.insert_run(r).await.expect("insert"));
    }
    assert_eq!(
        cursor_of(fx, &job).await.cursor,
        moved,
        "cursor_moves_with_the_first_attempt: retries, manual runs and earlier slots leave the cursor"
    );
}

/// `update_run` saves a run's latest record.
pub async fn scheduler_store_update_run(fx: &dyn SchedulerStoreFixture) {
    let job = job(fx, "update", "2014-03-08T00:00:00Z").await;
    let store = fx.store();
    let row = slot_row(&job, "2014-03-08T12:00:00Z", 0, Trigger::Scheduled);
    assert!(store.insert_run(&row).await.expect("insert"));
    let mut run = row.run.clone();
    run.state = RunState::Failed;
    run.exit_code = Some(3);
    run.error = Some("the command exited with status 3".into());
    store.update_run(&run).await.expect("update_run");
    let back = fx
        .run(&run.id)
        .await
        .expect("update_run: the run is stored");
    assert_eq!(
        (back.state, back.exit_code, back.error),
        (run.state, run.exit_code, run.error),
        "update_run: the latest record is what is read back"
    );
}

/// `set_cursor` and `set_expired` are what `load_jobs` reads back.
pub async fn scheduler_store_cursor_and_expiry(fx: &dyn SchedulerStoreFixture) {
    let job = job(fx, "expiry", "2014-03-08T00:00:00Z").await;
    let store = fx.store();
    store
        .set_cursor(&job, at("2014-03-09T12:00:00Z"))
        .await
        .expect("set_cursor");
    assert_eq!(
        cursor_of(fx, &job).await.cursor,
        at("2014-03-09T12:00:00Z"),
        "cursor_and_expiry: set_cursor is read back"
    );
    store.set_expired(&job).await.expect("set_expired");
    assert!(
        cursor_of(fx, &job).await.expired,
        "cursor_and_expiry: set_expired is read back"
    );
}

/// `insert_runs` answers each row as `insert_run` would: a new slot is stored, a slot stored
/// before and the same slot twice in one batch are refused and not stored, another job's slot
/// and a slot's retry are their own; each job's cursor moves to its latest first attempt.
pub async fn scheduler_store_batch_once(fx: &dyn SchedulerStoreFixture) {
    let (a, b, store) = two_jobs(fx, "batch").await;
    let before = slot_row(&a, "2014-03-08T06:00:00Z", 0, Trigger::Scheduled);
    assert!(store.insert_run(&before).await.expect("insert"));
    let rows = vec![
        slot_row(&a, "2014-03-08T12:00:00Z", 0, Trigger::Scheduled),
        slot_row(&a, "2014-03-08T06:00:00Z", 0, Trigger::Scheduled),
        slot_row(&b, "2014-03-08T12:00:00Z", 0, Trigger::Scheduled),
        slot_row(&a, "2014-03-08T12:00:00Z", 0, Trigger::Scheduled),
        slot_row(&a, "2014-03-08T06:00:00Z", 1, Trigger::Retry),
    ];
    let answers: Vec<bool> = store
        .insert_runs(&rows)
        .await
        .into_iter()
        .map(|r| r.expect("insert_runs"))
        .collect();
    assert_eq!(
        answers,
        [true, false, true, false, true],
        "batch_once: new, stored before, another job's, twice in the batch, a retry"
    );
    for (row, stored) in rows.iter().zip(&answers) {
        assert_eq!(
            fx.run(&row.run.id).await.is_some(),
            *stored,
            "batch_once: a row is stored exactly when its answer says so ({})",
            row.slot_key
        );
    }
    for j in [&a, &b] {
        assert_eq!(
            cursor_of(fx, j).await.cursor,
            at("2014-03-08T12:00:00Z"),
            "batch_once: the cursor moves with the batch's first attempts"
        );
    }
}

/// A burst bigger than any one statement: 1,200 slots of three jobs (a catch-up of 400 hours
/// each) are all stored once, and each cursor ends at its job's latest slot.
pub async fn scheduler_store_batch_of_a_burst(fx: &dyn SchedulerStoreFixture) {
    let jobs = [
        job(fx, "burst", "2014-03-01T00:00:00Z").await,
        job(fx, "burst", "2014-03-01T00:00:00Z").await,
        job(fx, "burst", "2014-03-01T00:00:00Z").await,
    ];
    let start = at("2014-03-01T01:00:00Z");
    let slot = |h: i64| {
        (start + chrono::Duration::hours(h)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let rows: Vec<RunRow> = (0..400)
        .flat_map(|h| {
            jobs.iter()
                .map(move |j| slot_row(j, &slot(h), 0, Trigger::Scheduled))
        })
        .collect();
    let answers = fx.store().insert_runs(&rows).await;
    assert_eq!(
        answers.len(),
        rows.len(),
        "batch_of_a_burst: one answer per row"
    );
    assert!(
        answers.into_iter().all(|r| r.expect("insert_runs")),
        "batch_of_a_burst: every new slot is stored"
    );
    for row in rows.iter().step_by(37) {
        assert!(
            fx.run(&row.run.id).await.is_some(),
            "batch_of_a_burst: {} of {} is stored",
            row.slot_key,
            row.run.job
        );
    }
    for j in &jobs {
        assert_eq!(
            cursor_of(fx, j).await.cursor,
            at(&slot(399)),
            "batch_of_a_burst: the cursor ends at the latest slot"
        );
    }
    let again = fx.store().insert_runs(&rows[..10]).await;
    assert!(
        again.into_iter().all(|r| !r.expect("insert_runs again")),
        "batch_of_a_burst: the burst again stores nothing"
    );
}

/// `update_runs` saves each run's latest record.
pub async fn scheduler_store_update_runs(fx: &dyn SchedulerStoreFixture) {
    let job = job(fx, "updates", "2014-03-08T00:00:00Z").await;
    let store = fx.store();
    let mut runs = Vec::new();
    for h in ["2014-03-08T10:00:00Z", "2014-03-08T11:00:00Z"] {
        let row = slot_row(&job, h, 0, Trigger::Scheduled);
        assert!(store.insert_run(&row).await.expect("insert"));
        runs.push(row.run);
    }
    runs[0].state = RunState::Succeeded;
    runs[1].state = RunState::TimedOut;
    runs[1].error = Some("timed out after 1 minute".into());
    store.update_runs(&runs).await.expect("update_runs");
    for run in &runs {
        let back = fx
            .run(&run.id)
            .await
            .expect("update_runs: the run is stored");
        assert_eq!(
            (back.state, back.error),
            (run.state, run.error.clone()),
            "update_runs: the latest record is what is read back"
        );
    }
}
