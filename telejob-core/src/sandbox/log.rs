//! The run log: stdout and stderr through one pipe, into a file with a size cap.

use std::collections::VecDeque;
use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::compute::{EventSink, RunEvent};

/// Bytes kept from the end of a log that overflowed its cap.
const TAIL_BYTES: usize = 64 * 1024;

/// What was logged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Bytes the job wrote.
    pub produced: u64,
    /// Bytes dropped between the head and the tail.
    pub omitted: u64,
}

impl LogStats {
    /// Whether the cap was hit.
    pub fn truncated(&self) -> bool {
        self.omitted > 0
    }
}

/// Copies `pipe` into `path`, keeping the first `cap` bytes and the last 64 KiB, with a visible
/// marker between them. Runs until the pipe closes or `stop` fires; it never blocks the writer (the
/// pipe is drained at full speed whatever the cap).
pub(crate) async fn capture(
    mut pipe: tokio::net::unix::pipe::Receiver,
    path: &Path,
    cap: u64,
    events: Option<EventSink>,
    stop: tokio_util::sync::CancellationToken,
) -> std::io::Result<LogStats> {
    let mut file = tokio::fs::File::create(path).await?;
    let mut stats = LogStats::default();
    let mut tail: VecDeque<u8> = VecDeque::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            r = pipe.read(&mut buf) => r?,
            () = stop.cancelled() => break,
        };
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        let room = cap.saturating_sub(stats.produced).min(n as u64) as usize;
        if room > 0 {
            file.write_all(&chunk[..room]).await?;
            if let Some(ev) = &events {
                ev.emit(RunEvent::Output(bytes::Bytes::copy_from_slice(
                    &chunk[..room],
                )));
            }
        }
        if room < n {
            tail.extend(&chunk[room..]);
            let excess = tail.len().saturating_sub(TAIL_BYTES);
            tail.drain(..excess);
            stats.omitted += excess as u64;
        }
        stats.produced += n as u64;
    }
    if !tail.is_empty() && stats.omitted > 0 {
        let marker = format!(
            "\n[telejob: log truncated: {} bytes omitted; the log keeps the first {cap} and the last {} bytes]\n",
            stats.omitted,
            tail.len()
        );
        file.write_all(marker.as_bytes()).await?;
        if let Some(ev) = &events {
            ev.emit(RunEvent::Warning(marker.trim().to_string()));
        }
    }
    let (a, b) = tail.as_slices();
    file.write_all(a).await?;
    file.write_all(b).await?;
    file.flush().await?;
    Ok(stats)
}
