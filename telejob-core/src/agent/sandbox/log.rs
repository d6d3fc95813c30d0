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
        // Masking is the one pass over every byte: off the runtime's worker threads, which the
        // scheduler, the lease and the API share.
        let masked = if masker.masks() {
            let (mut m, data) = (std::mem::take(&mut masker), buf[..n].to_vec());
            let (m, out) = tokio::task::spawn_blocking(move || {
                let out = m.push(&data);
                (m, out)
            })
            .await
            .map_err(std::io::Error::other)?;
            masker = m;
            out
        } else {
            buf[..n].to_vec()
        };
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
/// chunks. One Aho-Corasick automaton over all the values walks each byte once, so the cost is
/// linear in the output whatever the secrets are (no per-secret, per-byte comparison that a job
/// could make quadratic with long values sharing a prefix); overlapping occurrences become one
/// `***`. It holds back at most the longest value's length minus one byte, plus an occurrence
/// still growing.
#[derive(Debug, Default)]
pub struct Masker {
    nfa: Option<aho_corasick::nfa::contiguous::NFA>,
    /// The automaton's state after the last byte.
    state: aho_corasick::automaton::StateID,
    /// The longest value's length.
    longest: u64,
    /// Bytes not yet written out: offsets `window_start..pos` of the stream.
    window: VecDeque<u8>,
    window_start: u64,
    pos: u64,
    /// Masked intervals `[start, end)` not yet written out, disjoint and in order.
    masked: VecDeque<(u64, u64)>,
}

impl Masker {
    /// Masks `secrets` (empty values are ignored).
    pub fn new(mut secrets: Vec<Vec<u8>>) -> Self {
        use aho_corasick::automaton::Automaton;
        secrets.retain(|s| !s.is_empty());
        if secrets.is_empty() {
            return Self::default();
        }
        let nfa = aho_corasick::nfa::contiguous::NFA::builder()
            .match_kind(aho_corasick::MatchKind::Standard)
            .build(&secrets);
        // The values are bounded in size and number (`Secrets`): building cannot fail; should
        // it, mask everything rather than leak.
        let Ok(nfa) = nfa else {
            return Self {
                longest: u64::MAX,
                ..Self::default()
            };
        };
        let state = nfa
            .start_state(aho_corasick::Anchored::No)
            .unwrap_or_default();
        Self {
            longest: nfa.max_pattern_len() as u64,
            nfa: Some(nfa),
            state,
            ..Self::default()
        }
    }

    /// Whether there is anything to mask.
    pub fn masks(&self) -> bool {
        self.nfa.is_some() || self.longest == u64::MAX
    }

    /// The masked text of `chunk` that can be written now.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        use aho_corasick::automaton::Automaton;
        let Some(nfa) = &self.nfa else {
            if self.longest == u64::MAX {
                return b"***".to_vec();
            }
            return chunk.to_vec();
        };
        self.window.extend(chunk);
        for &b in chunk {
            self.state = nfa.next_state(aho_corasick::Anchored::No, self.state, b);
            self.pos += 1;
            if nfa.is_match(self.state) {
                let len = (0..nfa.match_len(self.state))
                    .map(|i| nfa.pattern_len(nfa.match_pattern(self.state, i)) as u64)
                    .max()
                    .unwrap_or(0);
                let (mut start, end) = (self.pos - len, self.pos);
                // Merge with the occurrences this one overlaps.
                while let Some(&(s, e)) = self.masked.back() {
                    if e <= start {
                        break;
                    }
                    start = start.min(s);
                    self.masked.pop_back();
                }
                self.masked.push_back((start, end));
            }
        }
        // A later occurrence ends after `pos`, so it starts at `pos + 1 - longest` or later.
        let settled = (self.pos + 1).saturating_sub(self.longest);
        self.drain(settled)
    }

    /// The rest, at the end of the stream.
    pub fn finish(&mut self) -> Vec<u8> {
        if self.nfa.is_none() {
            return Vec::new();
        }
        self.drain(self.pos)
    }

    /// Writes out the window up to offset `settled`: bytes before it cannot begin a later
    /// occurrence; a masked interval is written (as `***`) once no later occurrence can extend
    /// it, that is once it ends at or before `settled`.
    fn drain(&mut self, settled: u64) -> Vec<u8> {
        let mut out = Vec::new();
        while self.window_start < settled {
            match self.masked.front().copied() {
                Some((s, e)) if s <= self.window_start => {
                    if e > settled {
                        break;
                    }
                    out.extend_from_slice(b"***");
                    self.window.drain(..(e - self.window_start) as usize);
                    self.window_start = e;
                    self.masked.pop_front();
                }
                next => {
                    let upto = next.map_or(settled, |(s, _)| s.min(settled));
                    let n = (upto - self.window_start) as usize;
                    out.extend(self.window.drain(..n));
                    self.window_start = upto;
                }
            }
        }
        out
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
        // Overlapping occurrences are masked whole, once; touching ones each.
        assert_eq!(masked(&["abcab"], &["xabcabcabx"]), "x***x");
        assert_eq!(masked(&["ab"], &["abab"]), "******");
        assert_eq!(masked(&["b", "abc"], &["zabcz", "b"]), "z***z***");
    }

    /// The reference: every byte inside some occurrence is masked, each maximal run of
    /// overlapping occurrences as one `***`.
    fn reference(secrets: &[Vec<u8>], text: &[u8]) -> Vec<u8> {
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for s in secrets.iter().filter(|s| !s.is_empty()) {
            for i in 0..text.len() {
                if text[i..].starts_with(s) {
                    spans.push((i, i + s.len()));
                }
            }
        }
        spans.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::new();
        for (s, e) in spans {
            match merged.last_mut() {
                Some(last) if s < last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        let (mut out, mut i) = (Vec::new(), 0);
        for (s, e) in merged {
            out.extend_from_slice(&text[i..s]);
            out.extend_from_slice(b"***");
            i = e;
        }
        out.extend_from_slice(&text[i..]);
        out
    }

    proptest::proptest! {
        #[test]
        fn masking_matches_the_reference_however_the_stream_is_cut(
            secrets in proptest::collection::vec(proptest::collection::vec(0u8..3, 0..5), 0..4),
            text in proptest::collection::vec(0u8..3, 0..60),
            cuts in proptest::collection::vec(0usize..60, 0..6),
        ) {
            let mut m = Masker::new(secrets.clone());
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|&c| c <= text.len()).collect();
            cuts.sort_unstable();
            let (mut out, mut at) = (Vec::new(), 0);
            for c in cuts.into_iter().chain([text.len()]) {
                out.extend(m.push(&text[at..c]));
                at = c;
            }
            out.extend(m.finish());
            proptest::prop_assert_eq!(out, reference(&secrets, &text));
        }
    }

    #[test]
    fn long_values_sharing_a_prefix_cost_one_pass() {
        // The shape that stalled the old masker: many 64 KiB values with one 65,535-byte prefix,
        // and output repeating the prefix with another last byte. Counted, not timed: what the
        // masker holds back stays under the longest value, whatever the input.
        let prefix = vec![b'p'; 65_535];
        let secrets: Vec<Vec<u8>> = (0..14u8)
            .map(|i| [prefix.as_slice(), &[b'A' + i]].concat())
            .collect();
        let mut m = Masker::new(secrets);
        let chunk = [prefix.as_slice(), b"z"].concat();
        let mut written = 0;
        for _ in 0..64 {
            written += m.push(&chunk).len();
            assert!(m.window.len() < 65_536, "held back {}", m.window.len());
        }
        written += m.finish().len();
        assert_eq!(
            written,
            64 * chunk.len(),
            "nothing is a secret, so all of it is written"
        );
    }
}
