//! Run logs: as stored at the end, and followed while the run prints (the pipeline copies a
//! growing log to the private store every few seconds, so any replica can serve it).

use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use telejob_core::run::{Run, keys};
use telejob_core::store::Store;

use super::state::AppState;

/// How often a followed log and its run are looked at.
const POLL: Duration = Duration::from_millis(500);

/// Where `run`'s log is: the key its record names, else where the pipeline ships it while the
/// run is in flight.
pub fn key(run: &Run) -> String {
    run.log_key
        .clone()
        .unwrap_or_else(|| keys::log(&run.job, &run.id))
}

/// The log of run `run` from byte `from` on as it grows: what is stored now, then each new part
/// as the run prints; the stream ends once the run has ended and its full log is sent.
pub fn follow(s: AppState, run: Run, from: usize) -> impl Stream<Item = std::io::Result<Bytes>> {
    let key = key(&run);
    let id = run.id.to_string();
    futures::stream::unfold((from, false), move |(sent, done)| {
        let (s, key, id) = (s.clone(), key.clone(), id.clone());
        async move {
            if done {
                return None;
            }
            loop {
                // The state first: once it says ended, the full log is already stored.
                let ended = match s.db.run(&id).await {
                    Ok(Some((run, _))) => run.state.is_terminal(),
                    Ok(None) => true,
                    Err(e) => {
                        return Some((Err(std::io::Error::other(e.to_string())), (sent, true)));
                    }
                };
                let grown = match s.stores.private.head(&key).await {
                    Ok(Some(meta)) => usize::try_from(meta.size).unwrap_or(usize::MAX) > sent,
                    _ => false,
                };
                if grown
                    && let Ok(log) = s.stores.private.get(&key).await
                    && log.len() > sent
                {
                    let part = log.slice(sent..);
                    return Some((Ok(part), (log.len(), ended)));
                }
                if ended {
                    return None;
                }
                tokio::time::sleep(POLL).await;
            }
        }
    })
}

/// The last `n` lines of `run`'s log, if it has one (for notifications).
pub async fn tail(store: &dyn Store, run: &Run, n: usize) -> Option<String> {
    let log = store.get(&key(run)).await.ok()?;
    let text = String::from_utf8_lossy(&log);
    let lines: Vec<&str> = text.lines().collect();
    Some(lines[lines.len().saturating_sub(n)..].join("\n"))
}
