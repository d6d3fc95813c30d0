//! Fetching code over HTTP(S) for the pipeline.

use std::path::Path;

use async_trait::async_trait;
use futures::StreamExt;
use telejob_core::agent::fetch::UrlFetcher;
use telejob_core::{Error, Result};
use tokio::io::AsyncWriteExt;

/// Downloads `http://` and `https://` URLs with reqwest (rustls).
#[derive(Debug, Clone)]
pub struct HttpFetcher {
    client: reqwest::Client,
}

impl HttpFetcher {
    /// A fetcher with a 30 s connect timeout.
    pub fn new() -> Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(30))
            .user_agent(concat!("telejob/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Fetch {
                source_name: "http".into(),
                reason: format!("cannot build an HTTP client: {e}"),
                retryable: false,
                source: None,
            })?;
        Ok(Self { client })
    }
}

#[async_trait]
impl UrlFetcher for HttpFetcher {
    fn handles(&self, url: &str) -> bool {
        url.starts_with("http://") || url.starts_with("https://")
    }

    async fn fetch(&self, url: &str, dest: &Path, max_bytes: u64) -> Result<u64> {
        let fail = |reason: String, retryable: bool, source: Option<reqwest::Error>| Error::Fetch {
            source_name: url.into(),
            reason,
            retryable,
            source: source.map(Into::into),
        };
        let resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| fail(format!("request failed: {e}"), true, Some(e)))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(fail(
                format!("HTTP {status}"),
                status.is_server_error() || status.as_u16() == 429,
                None,
            ));
        }
        if resp.content_length().is_some_and(|n| n > max_bytes) {
            return Err(fail(
                format!("larger than the {max_bytes}-byte limit"),
                false,
                None,
            ));
        }
        let mut file = tokio::fs::File::create(dest)
            .await
            .map_err(|e| Error::io(dest, e))?;
        let mut total = 0u64;
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk =
                chunk.map_err(|e| fail(format!("download interrupted: {e}"), true, Some(e)))?;
            total += chunk.len() as u64;
            if total > max_bytes {
                return Err(fail(
                    format!("larger than the {max_bytes}-byte limit"),
                    false,
                    None,
                ));
            }
            file.write_all(&chunk)
                .await
                .map_err(|e| Error::io(dest, e))?;
        }
        file.flush().await.map_err(|e| Error::io(dest, e))?;
        Ok(total)
    }
}
