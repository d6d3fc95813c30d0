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
