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
    preamble: &str,
    cap: u64,
    events: Option<EventSink>,
    stop: tokio_util::sync::CancellationToken,
    mut masker: Masker,
) -> std::io::Result<LogStats> {
    // Telejob's own: the job cannot read it by path.
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .await?;
    if !preamble.is_empty() {
        file.write_all(preamble.as_bytes()).await?;
        if let Some(ev) = &events {
            ev.emit(RunEvent::Output(bytes::Bytes::copy_from_slice(
                preamble.as_bytes(),
            )));
        }
    }
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
        let masked = masker.push(&buf[..n]);
        let chunk = &masked[..];
        let n = chunk.len();
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
    // What the masker held back waiting for a possible secret is plain text after all.
    let rest = masker.finish();
    if !rest.is_empty() {
        let room = cap.saturating_sub(stats.produced).min(rest.len() as u64) as usize;
        file.write_all(&rest[..room]).await?;
        tail.extend(&rest[room..]);
        stats.produced += rest.len() as u64;
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

/// Replaces each occurrence of a secret value by `***` in a stream, also when the value spans two
/// chunks: it holds back the last bytes of a chunk that could start a value.
#[derive(Debug, Default)]
pub struct Masker {
    secrets: Vec<Vec<u8>>,
    pending: Vec<u8>,
}

impl Masker {
    /// Masks `secrets` (empty values are ignored).
    pub fn new(mut secrets: Vec<Vec<u8>>) -> Self {
        secrets.retain(|s| !s.is_empty());
        // Longest first, so a value containing another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Self {
            secrets,
            pending: Vec::new(),
        }
    }

    /// The masked text of `chunk` that can be written now.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.secrets.is_empty() {
            return chunk.to_vec();
        }
        self.pending.extend_from_slice(chunk);
        let (out, consumed) = self.mask(false);
        self.pending.drain(..consumed);
        out
    }

    /// The rest, at the end of the stream.
    pub fn finish(&mut self) -> Vec<u8> {
        let (out, _) = self.mask(true);
        self.pending.clear();
        out
    }

    /// Masks `pending`; unless `all`, stops where a value could still begin.
    fn mask(&self, all: bool) -> (Vec<u8>, usize) {
        let p = &self.pending;
        let mut out = Vec::with_capacity(p.len());
        let mut i = 0;
        'scan: while i < p.len() {
            for s in &self.secrets {
                if p[i..].starts_with(s) {
                    out.extend_from_slice(b"***");
                    i += s.len();
                    continue 'scan;
                }
                if !all && s.starts_with(&p[i..]) {
                    // Could be a value cut by the chunk boundary: wait for more.
                    return (out, i);
                }
            }
            out.push(p[i]);
            i += 1;
        }
        (out, i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(secrets: &[&str], chunks: &[&str]) -> String {
        let mut m = Masker::new(secrets.iter().map(|s| s.as_bytes().to_vec()).collect());
        let mut out = Vec::new();
        for c in chunks {
            out.extend(m.push(c.as_bytes()));
        }
        out.extend(m.finish());
        String::from_utf8(out).expect("must work")
    }

    #[test]
    fn secrets_are_masked_even_across_chunks() {
        assert_eq!(masked(&["hunter2"], &["pw=hunter2!"]), "pw=***!");
        assert_eq!(
            masked(&["hunter2"], &["pw=hun", "ter2 and hunter2"]),
            "pw=*** and ***"
        );
        assert_eq!(masked(&["hunter2"], &["pw=h", "u", "n", "ter2"]), "pw=***");
        // A prefix that never completes is plain text after all.
        assert_eq!(masked(&["hunter2"], &["hunt", "ing"]), "hunting");
        assert_eq!(masked(&["hunter2"], &["ends with hunt"]), "ends with hunt");
        // The longer of two overlapping values wins.
        assert_eq!(masked(&["abcd", "abcdef"], &["xabcdefx"]), "x***x");
        assert_eq!(masked(&[], &["plain"]), "plain");
    }
}
