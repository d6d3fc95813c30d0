//! Where code comes from: a local tarball or directory, `file://`, a store key, or a URL handled
//! by a [`UrlFetcher`] the embedding program provides (HTTP in the `telejob` binary).

use std::fmt::Debug;
use std::io::Read;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// A code location, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeSource {
    /// A local tarball or directory (also `file://` URLs).
    Path(PathBuf),
    /// An object in the run's private store: `store:<key>`.
    Store(String),
    /// Any other URL (`http://`, `https://`, `s3://`, …), for a [`UrlFetcher`].
    Url(String),
}

impl CodeSource {
    /// Parses a code location.
    ///
    /// # Errors
    ///
    /// [`Error::Fetch`] for an empty location or a malformed `file://` URL.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::Fetch {
            source_name: s.into(),
            reason: why.into(),
            retryable: false,
            source: None,
        };
        let t = s.trim();
        if t.is_empty() {
            return Err(bad("no code given: pass a tarball, a directory or a URL"));
        }
        if let Some(rest) = t.strip_prefix("file://") {
            // file:///abs/path or file://localhost/abs/path
            let path = rest.strip_prefix("localhost").unwrap_or(rest);
            if !path.starts_with('/') {
                return Err(bad(
                    "a file:// URL needs an absolute path: file:///path/to/code.tar.gz",
                ));
            }
            return Ok(Self::Path(PathBuf::from(percent_decode(path))));
        }
        if let Some(key) = t.strip_prefix("store:") {
            return Ok(Self::Store(key.trim_start_matches('/').to_string()));
        }
        if let Some((scheme, _)) = t.split_once("://")
            && !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            return Ok(Self::Url(t.to_string()));
        }
        Ok(Self::Path(PathBuf::from(t)))
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = b
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Downloads URLs the pipeline cannot reach by itself. Object-safe.
#[async_trait]
pub trait UrlFetcher: Send + Sync + Debug + 'static {
    /// Whether this fetcher handles `url`'s scheme.
    fn handles(&self, url: &str) -> bool;

    /// Writes the object at `url` to the file `dest`; at most `max_bytes`. Returns the size.
    ///
    /// # Errors
    ///
    /// [`Error::Fetch`], retryable for network faults and server errors.
    async fn fetch(&self, url: &str, dest: &Path, max_bytes: u64) -> Result<u64>;
}

/// Makes `req`'s code reachable from another machine: a local tarball is uploaded (a directory
/// packed first) to `<job>/runs/<run>/code.tar.gz` in `store`, and the returned request points
/// at it (`store:KEY`). Code already in the store or at a URL is left as it is. For remote
/// compute backends, whose machines see the run's private store but not this host's files.
///
/// # Errors
///
/// [`Error::Fetch`] for a missing or unreadable path; the store's errors.
pub async fn stage_code(
    store: &dyn crate::store::Store,
    req: &crate::run::RunRequest,
) -> Result<crate::run::RunRequest> {
    let CodeSource::Path(path) = CodeSource::parse(&req.code)? else {
        return Ok(req.clone());
    };
    let meta = std::fs::metadata(&path).map_err(|e| Error::Fetch {
        source_name: path.display().to_string(),
        reason: format!("cannot read the code: {e}"),
        retryable: false,
        source: None,
    })?;
    let key = format!(
        "{}code.tar.gz",
        crate::run::keys::run_prefix(&req.job, &req.run_id)
    );
    let packed;
    let file = if meta.is_dir() {
        let tmp = tempfile::NamedTempFile::new().map_err(|e| Error::io(std::env::temp_dir(), e))?;
        let dir = path.clone();
        let out = tmp.reopen().map_err(|e| Error::io(tmp.path(), e))?;
        tokio::task::spawn_blocking(move || crate::agent::archive::pack_dir(&dir, out))
            .await
            .map_err(|e| Error::task("packing the code directory", e))??;
        packed = tmp;
        packed.path().to_path_buf()
    } else {
        path.clone()
    };
    let f = tokio::fs::File::open(&file)
        .await
        .map_err(|e| Error::io(&file, e))?;
    store
        .put_stream(&key, Box::new(f), crate::store::PutOptions::default())
        .await?;
    Ok(req.clone().with_code(format!("store:{key}")))
}

/// Brings the code at `source` to a local archive file inside `dir`: a file as it is, a
/// directory packed, an uploaded version from `private`, a URL through `fetcher` (at most
/// `max_bytes`).
///
/// # Errors
///
/// [`Error::Fetch`] saying what to give instead; I/O errors of `dir`.
pub async fn fetch_code(
    source: &CodeSource,
    dir: &Path,
    private: &dyn crate::store::Store,
    fetcher: Option<&dyn UrlFetcher>,
    max_bytes: u64,
) -> Result<PathBuf> {
    let name = match source {
        CodeSource::Path(p) => p.display().to_string(),
        CodeSource::Store(k) => private.locate(k),
        CodeSource::Url(u) => u.clone(),
    };
    let not_found = |reason: String| Error::Fetch {
        source_name: name.clone(),
        reason,
        retryable: false,
        source: None,
    };
    match source {
        CodeSource::Path(p) => {
            let meta = std::fs::metadata(p).map_err(|e| {
                not_found(format!("{e}; give the path of a code tarball or directory"))
            })?;
            if meta.is_dir() {
                let out = dir.join("code.tar.gz");
                let (p, out2) = (p.clone(), out.clone());
                tokio::task::spawn_blocking(move || {
                    let f = crate::agent::workspace::private_file(&out2)
                        .map_err(|e| Error::io(&out2, e))?;
                    crate::agent::archive::pack_dir(&p, std::io::BufWriter::new(f))
                })
                .await
                .map_err(|e| Error::task("packing the code directory", e))??;
                Ok(out)
            } else if meta.is_file() {
                Ok(p.clone())
            } else {
                Err(not_found("not a file or directory".into()))
            }
        }
        CodeSource::Store(key) => {
            let out = dir.join("code.archive");
            let mut reader = private.get_stream(key).await.map_err(|e| match e {
                Error::NotFound(_) => {
                    not_found("no such object in the private store; upload the code first".into())
                }
                other => other,
            })?;
            let mut f = tokio::fs::File::from_std(
                crate::agent::workspace::private_file(&out).map_err(|e| Error::io(&out, e))?,
            );
            tokio::io::copy(&mut reader, &mut f)
                .await
                .map_err(|e| Error::Fetch {
                    source_name: name.clone(),
                    reason: e.to_string(),
                    retryable: true,
                    source: None,
                })?;
            Ok(out)
        }
        CodeSource::Url(url) => {
            let fetcher = fetcher.filter(|f| f.handles(url)).ok_or_else(|| {
                not_found("this telejob cannot fetch such URLs; use a local path, file://, http(s):// or an uploaded code version".into())
            })?;
            let out = dir.join("code.archive");
            crate::agent::workspace::private_file(&out).map_err(|e| Error::io(&out, e))?;
            fetcher.fetch(url, &out, max_bytes).await?;
            Ok(out)
        }
    }
}

/// A reader that hashes what passes through it.
#[derive(Debug)]
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// The hex SHA-256 and byte count of what was read.
    pub fn finish(self) -> (String, u64) {
        (hex::encode(self.hasher.finalize()), self.bytes)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_locations() {
        for (text, want) in [
            ("dist/x.tgz", CodeSource::Path("dist/x.tgz".into())),
            ("file:///a%20b/x.tgz", CodeSource::Path("/a b/x.tgz".into())),
            (
                "store:slowsql/code/ab.tar.gz",
                CodeSource::Store("slowsql/code/ab.tar.gz".into()),
            ),
            ("https://h/x.tgz", CodeSource::Url("https://h/x.tgz".into())),
            ("s3://b/k.tgz", CodeSource::Url("s3://b/k.tgz".into())),
        ] {
            assert_eq!(CodeSource::parse(text).ok(), Some(want), "{text}");
        }
        assert!(CodeSource::parse("file://relative").is_err());
        assert!(CodeSource::parse("  ").is_err());
    }
}
