//! What a job has published, as listings show it: the files below a prefix with their sizes,
//! times and hashes (from the newest manifest), and the newest manifest itself.

use telejob_core::store::Store;

/// One published file, as the listings show it.
#[derive(Debug, serde::Serialize)]
pub struct Listed {
    /// Its path below the listed prefix.
    pub name: String,
    /// Its URL path under `/public/` (public jobs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub href: Option<String>,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, from the newest manifest that lists it.
    pub sha256: Option<String>,
    /// When it was written, when the store knows.
    pub modified: Option<chrono::DateTime<chrono::Utc>>,
}

/// The key of job `job`'s newest manifest in `store` (run ids are time-ordered), if it has one.
pub async fn latest_manifest(store: &dyn Store, job: &str) -> Option<String> {
    let runs = store.list(&format!("{job}/runs/")).await.ok()?;
    runs.into_iter()
        .map(|o| o.key)
        .filter(|k| k.ends_with("/manifest.json"))
        .max()
}

/// The files of job `job` in `store` below `prefix` (`<job>/data/…/`), with their hashes from
/// the newest manifest and their `/public/` links; `None` when the store cannot be listed.
pub async fn listing(store: &dyn Store, job: &str, prefix: &str) -> Option<Vec<Listed>> {
    let objects = store.list(prefix).await.ok()?;
    let mut hashes = std::collections::HashMap::new();
    if let Some(key) = latest_manifest(store, job).await
        && let Ok(bytes) = store.get(&key).await
        && let Ok(m) = serde_json::from_slice::<telejob_core::run::Manifest>(&bytes)
    {
        for f in m.files {
            hashes.insert(f.key, f.sha256);
        }
    }
    Some(
        objects
            .into_iter()
            .map(|o| Listed {
                name: o.key[prefix.len()..].to_string(),
                href: Some(format!("/public/{}", o.key)),
                size: o.size,
                sha256: hashes.remove(&o.key),
                modified: o.last_modified,
            })
            .collect(),
    )
}

/// The key of job `job`'s index: every file of its `data/`, for readers that cannot list the
/// store (a static page reading a bucket without `s3:ListBucket`).
pub fn index_key(job: &str) -> String {
    format!("{job}/index.json")
}

/// Writes job `job`'s index (`<job>/index.json`): each file under `<job>/data/` with its size,
/// time and SHA-256 (from the newest manifest, else from the index before).
///
/// # Errors
///
/// The store cannot be listed or written.
pub async fn write_index(store: &dyn Store, job: &str) -> telejob_core::Result<()> {
    let prefix = format!("{job}/data/");
    let mut files = listing(store, job, &prefix).await.ok_or_else(|| {
        telejob_core::Error::NotFound(format!("{prefix} (the store cannot be listed)"))
    })?;
    let key = index_key(job);
    if let Ok(before) = store.get(&key).await
        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&before)
    {
        let known: std::collections::HashMap<(String, u64), String> = v["files"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| {
                Some((
                    (f["name"].as_str()?.to_string(), f["size"].as_u64()?),
                    f["sha256"].as_str()?.to_string(),
                ))
            })
            .collect();
        for f in files.iter_mut().filter(|f| f.sha256.is_none()) {
            f.sha256 = known.get(&(f.name.clone(), f.size)).cloned();
        }
    }
    for f in &mut files {
        f.href = None;
    }
    let index = serde_json::json!({
        "job": job,
        "prefix": prefix,
        "updated_at": chrono::Utc::now(),
        "files": files,
    });
    store
        .put(
            &key,
            serde_json::to_vec_pretty(&index).unwrap_or_default().into(),
            telejob_core::store::PutOptions::default().with_content_type("application/json"),
        )
        .await
}

/// The scheduler's observer on a server: the metrics, and a public job's index written again
/// after each run that published.
#[derive(Debug)]
pub struct IndexWriter {
    /// What the metrics count.
    pub metrics: std::sync::Arc<super::metrics::Metrics>,
    /// The public store.
    pub public: std::sync::Arc<dyn Store>,
    /// Whose jobs are public.
    pub db: crate::server::db::Db,
}

impl telejob_core::scheduler::notify::SchedulerObserver for IndexWriter {
    fn fired(&self, lateness: std::time::Duration) {
        self.metrics.fired(lateness);
    }

    fn finished(&self, run: &telejob_core::run::Run) {
        self.metrics.finished(run);
        if run.published.is_empty() || run.dry_run {
            return;
        }
        let (public, db, job) = (self.public.clone(), self.db.clone(), run.job.to_string());
        tokio::spawn(async move {
            let public_job = matches!(db.job(&job).await, Ok(Some(j))
                if j.spec.output_visibility == telejob_core::job::Visibility::Public);
            if public_job && let Err(e) = write_index(public.as_ref(), &job).await {
                tracing::warn!(job, error = %e, "cannot write the job's index.json");
            }
        });
    }

    fn queued(&self, delta: i64) {
        self.metrics.queued(delta);
    }
}
