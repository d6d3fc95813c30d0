//! Run records on their way to the store, written by group commit: a caller waits until its
//! record is saved, and the records that pile up while one batch is written go to the store
//! together in the next [`SchedulerStore::update_runs`]. One run at a time costs what
//! [`SchedulerStore::update_run`] costs; ten thousand runs of a burst changing state at once
//! cost a few transactions instead of ten thousand.

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::persist::SchedulerStore;
use crate::error::{Error, Result};
use crate::run::Run;

/// Records in one call to the store at most.
const BATCH: usize = 2_000;

type Waiter = oneshot::Sender<Result<()>>;

/// The group-commit writer of run records.
#[derive(Debug)]
pub(super) struct RunWriter {
    store: Arc<dyn SchedulerStore>,
    pending: Mutex<Vec<(Run, Waiter)>>,
    /// Held by the caller writing a batch; the others wait their turn here.
    writing: tokio::sync::Mutex<()>,
}

impl RunWriter {
    pub(super) fn new(store: Arc<dyn SchedulerStore>) -> Self {
        Self {
            store,
            pending: Mutex::new(Vec::new()),
            writing: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Run, Waiter)>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Saves `run`'s latest record; returns when it is saved (or could not be).
    pub(super) async fn save(&self, run: &Run) -> Result<()> {
        let (tx, mut rx) = oneshot::channel();
        self.lock().push((run.clone(), tx));
        loop {
            let turn = self.writing.lock().await;
            // Written by an earlier writer while this one waited for its turn.
            if let Ok(r) = rx.try_recv() {
                return r;
            }
            let batch: Vec<(Run, Waiter)> = {
                let mut p = self.lock();
                let n = p.len().min(BATCH);
                p.drain(..n).collect()
            };
            self.write(batch).await;
            drop(turn);
            if let Ok(r) = rx.try_recv() {
                return r;
            }
            // Still queued behind a full batch: take the next turn.
        }
    }

    /// Writes a batch: in one call, or one by one when that call fails, so that each waiter
    /// learns about its own record.
    async fn write(&self, batch: Vec<(Run, Waiter)>) {
        if batch.is_empty() {
            return;
        }
        // The latest record of each run (a run's own updates come in order).
        let mut latest: Vec<Run> = Vec::with_capacity(batch.len());
        let mut at = std::collections::HashMap::with_capacity(batch.len());
        for (run, _) in &batch {
            match at.get(&run.id) {
                Some(&i) => latest[i] = run.clone(),
                None => {
                    at.insert(run.id.clone(), latest.len());
                    latest.push(run.clone());
                }
            }
        }
        let r = if latest.len() == 1 {
            self.store.update_run(&latest[0]).await
        } else {
            self.store.update_runs(&latest).await
        };
        match r {
            Ok(()) => {
                for (_, w) in batch {
                    let _ = w.send(Ok(()));
                }
            }
            Err(e) if latest.len() == 1 => {
                let msg = e.to_string();
                for (_, w) in batch {
                    let _ = w.send(Err(Error::persistence("runs", msg.clone(), true)));
                }
            }
            Err(_) => {
                let mut results = std::collections::HashMap::with_capacity(latest.len());
                for run in &latest {
                    let r = self.store.update_run(run).await.map_err(|e| e.to_string());
                    results.insert(run.id.clone(), r);
                }
                for (run, w) in batch {
                    let r = match results.get(&run.id) {
                        Some(Err(m)) => Err(Error::persistence("runs", m.clone(), true)),
                        _ => Ok(()),
                    };
                    let _ = w.send(r);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::persist::{MemorySchedulerStore, RunRow, Trigger};
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A memory store that counts calls and can fail batches.
    #[derive(Debug, Default)]
    struct Counting {
        mem: MemorySchedulerStore,
        singles: AtomicUsize,
        batches: AtomicUsize,
        fail_batches: bool,
    }

    #[async_trait]
    impl SchedulerStore for Counting {
        async fn load_jobs(&self) -> Result<Vec<crate::scheduler::persist::JobState>> {
            self.mem.load_jobs().await
        }
        async fn insert_run(&self, row: &RunRow) -> Result<bool> {
            self.mem.insert_run(row).await
        }
        async fn update_run(&self, run: &Run) -> Result<()> {
            self.singles.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            self.mem.update_run(run).await
        }
        async fn update_runs(&self, runs: &[Run]) -> Result<()> {
            self.batches.fetch_add(1, Ordering::SeqCst);
            if self.fail_batches {
                return Err(Error::persistence("runs", "batch refused", true));
            }
            for r in runs {
                self.mem.update_run(r).await?;
            }
            Ok(())
        }
        async fn set_cursor(
            &self,
            _: &crate::job::JobName,
            _: chrono::DateTime<chrono::Utc>,
        ) -> Result<()> {
            Ok(())
        }
        async fn set_expired(&self, _: &crate::job::JobName) -> Result<()> {
            Ok(())
        }
    }

    async fn runs(store: &Counting, n: usize) -> Vec<Run> {
        let job = crate::job::JobName::new("writer").expect("name");
        let mut out = Vec::new();
        for i in 0..n {
            let req = crate::run::RunRequest::new(job.clone(), "store:c", "true");
            let row = RunRow {
                run: Run::pending(&req),
                slot_key: format!("manual:{i}"),
                trigger: Trigger::Manual,
                attempt: 0,
            };
            assert!(store.mem.insert_run(&row).await.expect("insert"));
            out.push(row.run);
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_saved_at_once_go_to_the_store_in_few_batches() {
        let store = Arc::new(Counting::default());
        let writer = Arc::new(RunWriter::new(store.clone()));
        let mut all = runs(&store, 500).await;
        for r in &mut all {
            r.state = crate::run::RunState::Failed;
        }
        let saves = all.iter().map(|r| {
            let (w, r) = (writer.clone(), r.clone());
            tokio::spawn(async move { w.save(&r).await })
        });
        for s in futures::future::join_all(saves).await {
            s.expect("task").expect("saved");
        }
        for r in &all {
            assert_eq!(
                store.mem.run(&r.id).map(|r| r.state),
                Some(crate::run::RunState::Failed),
                "every record is saved"
            );
        }
        let calls = store.singles.load(Ordering::SeqCst) + store.batches.load(Ordering::SeqCst);
        assert!(
            calls < 100,
            "500 records saved at once took {calls} store calls; they should share batches"
        );
    }

    #[tokio::test]
    async fn a_failed_batch_is_saved_one_by_one_and_each_caller_hears_its_own_answer() {
        let store = Arc::new(Counting {
            fail_batches: true,
            ..Counting::default()
        });
        let writer = Arc::new(RunWriter::new(store.clone()));
        let mut all = runs(&store, 3).await;
        // Not in the store: its update fails.
        let stranger = Run::pending(&crate::run::RunRequest::new(
            crate::job::JobName::new("writer").expect("name"),
            "store:c",
            "true",
        ));
        all.push(stranger.clone());
        for r in &mut all {
            r.state = crate::run::RunState::Succeeded;
        }
        // One batch of all four, as the writer would take them from its queue.
        let (batch, answers): (Vec<(Run, Waiter)>, Vec<_>) = all
            .iter()
            .map(|r| {
                let (tx, rx) = oneshot::channel();
                ((r.clone(), tx), (r.id.clone(), rx))
            })
            .unzip();
        writer.write(batch).await;
        assert_eq!(store.batches.load(Ordering::SeqCst), 1, "one batch tried");
        for (id, rx) in answers {
            let r = rx.await.expect("answered");
            if id == stranger.id {
                assert!(r.is_err(), "the record the store refuses is an error");
            } else {
                r.expect("the others are saved");
                assert_eq!(
                    store.mem.run(&id).map(|r| r.state),
                    Some(crate::run::RunState::Succeeded)
                );
            }
        }
    }
}
