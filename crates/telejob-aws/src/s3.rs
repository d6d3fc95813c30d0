//! `S3Store`: objects in an S3 bucket (AWS or any S3-compatible endpoint), through object_store.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::signer::{Method, Signer};
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
    WriteMultipart,
};
use telejob_core::store::{
    ByteReader, ObjectMeta, PutOptions, Store, StoreCapabilities, validate_key,
};
use telejob_core::{Error, Result};
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;

use crate::config::AwsOptions;
use crate::credentials::ChainCredentials;

/// Default part size of multipart uploads; smaller objects go up in one `PUT`.
pub const DEFAULT_PART_SIZE: usize = 8 << 20;
/// S3's smallest part (but the last).
const MIN_PART_SIZE: usize = 5 << 20;
/// Default number of requests in flight at once, per store.
pub const DEFAULT_MAX_CONCURRENCY: usize = 32;
/// Parts of one multipart upload in flight at once.
const PARTS_IN_FLIGHT: usize = 4;

/// Builds an [`S3Store`]. Every setting is optional but the bucket.
///
/// ```no_run
/// # async fn f() -> telejob_core::Result<()> {
/// use telejob_aws::S3StoreBuilder;
/// let store = S3StoreBuilder::from_url("s3://my-bucket/telejob/private/")?
///     .with_region("eu-west-1")
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct S3StoreBuilder {
    bucket: String,
    prefix: String,
    aws: AwsOptions,
    path_style: Option<bool>,
    max_concurrency: usize,
    part_size: usize,
    retry: RetryConfig,
    request_timeout: Duration,
}

impl S3StoreBuilder {
    /// A builder for `bucket`, keys at the bucket's root.
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            prefix: String::new(),
            aws: AwsOptions::default(),
            path_style: None,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            part_size: DEFAULT_PART_SIZE,
            retry: RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(15),
                    base: 2.0,
                },
                max_retries: 8,
                retry_timeout: Duration::from_secs(180),
            },
            request_timeout: Duration::from_secs(120),
        }
    }

    /// A builder from `s3://bucket` or `s3://bucket/prefix/`: keys go under the prefix.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidJob`] (field `store`) for anything but an `s3://` URL with a valid bucket
    /// name and a valid key prefix.
    pub fn from_url(url: &str) -> Result<Self> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            Error::invalid(
                "store",
                format!("{url} is not an s3:// URL: use s3://bucket/prefix"),
            )
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !bucket_ok {
            return Err(Error::invalid(
                "store",
                format!(
                    "{url}: {bucket:?} is not an S3 bucket name (3-63 lowercase letters, digits, \
                     '-' and '.')"
                ),
            ));
        }
        let prefix = prefix.trim_matches('/');
        if !prefix.is_empty() {
            validate_key(prefix).map_err(|e| Error::invalid("store", format!("{url}: {e}")))?;
        }
        let mut b = Self::new(bucket);
        if !prefix.is_empty() {
            b.prefix = format!("{prefix}/");
        }
        Ok(b)
    }

    /// Sets the region and endpoint (and, through the standard chain, credentials) at once.
    pub fn with_aws(mut self, aws: AwsOptions) -> Self {
        self.aws = aws;
        self
    }

    /// Sets the region (default: the standard chain — `AWS_REGION`, the profile, instance
    /// metadata — else `us-east-1`).
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.aws.region = Some(region.into());
        self
    }

    /// Talks to `endpoint` (e.g. `http://127.0.0.1:9000`) instead of AWS.
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.aws.endpoint = Some(endpoint.into());
        self
    }

    /// Path-style requests (`endpoint/bucket/key`) rather than virtual-hosted ones
    /// (`bucket.endpoint/key`). Default: path style with a custom endpoint, virtual-hosted on AWS.
    pub fn with_path_style(mut self, path_style: bool) -> Self {
        self.path_style = Some(path_style);
        self
    }

    /// At most `n` requests in flight at once (default 32).
    pub fn with_max_concurrency(mut self, n: usize) -> Self {
        self.max_concurrency = n.max(1);
        self
    }

    /// Objects larger than `bytes` (at least 5 MiB) go up as multipart uploads of that part size.
    pub fn with_part_size(mut self, bytes: usize) -> Self {
        self.part_size = bytes.max(MIN_PART_SIZE);
        self
    }

    /// Retries transient failures (5xx, throttling, connection errors) up to `max_retries` times
    /// with exponential, jittered backoff, for at most `within` in all.
    pub fn with_retries(mut self, max_retries: usize, within: Duration) -> Self {
        self.retry.max_retries = max_retries;
        self.retry.retry_timeout = within;
        self
    }

    /// Reads the region and endpoint from `AWS_REGION`/`AWS_DEFAULT_REGION` and
    /// `AWS_ENDPOINT_URL_S3`/`AWS_ENDPOINT_URL` where they are set and not set on the builder.
    pub fn from_env(mut self) -> Self {
        self.aws = self.aws.or_env("S3");
        self
    }

    /// Resolves credentials and region through the standard AWS chain and builds the store.
    /// Nothing is sent to S3 yet.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidJob`] (field `store`) when the settings are unusable.
    pub async fn build(self) -> Result<S3Store> {
        let sdk = self.aws.load().await;
        let region = sdk
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "us-east-1".into());
        let endpoint = self.aws.endpoint.clone();
        let path_style = self.path_style.unwrap_or(endpoint.is_some());
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&self.bucket)
            .with_region(&region)
            .with_virtual_hosted_style_request(!path_style)
            .with_retry(self.retry.clone())
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(self.request_timeout)
                    .with_connect_timeout(Duration::from_secs(10))
                    .with_allow_http(
                        endpoint
                            .as_deref()
                            .is_some_and(|e| e.starts_with("http://")),
                    ),
            );
        if let Some(e) = &endpoint {
            b = b.with_endpoint(e.trim_end_matches('/'));
        }
        if let Some(p) = sdk.credentials_provider() {
            b = b.with_credentials(Arc::new(ChainCredentials::new(p)));
        }
        let inner = b
            .build()
            .map_err(|e| Error::invalid("store", format!("s3://{}: {e}", self.bucket)))?;
        Ok(S3Store {
            region,
            endpoint,
            bucket: self.bucket,
            prefix: self.prefix,
            inner: Arc::new(inner),
            permits: Arc::new(Semaphore::new(self.max_concurrency)),
            part_size: self.part_size,
        })
    }
}

/// A store in an S3 bucket, under an optional key prefix: `key` lives at
/// `s3://<bucket>/<prefix><key>`.
///
/// Requests are retried with jittered exponential backoff on transient errors; at most the
/// configured number run at once; objects larger than the part size are uploaded in parts,
/// and an upload that fails is aborted so no parts are left behind. S3 `PUT`s are atomic.
#[derive(Debug, Clone)]
pub struct S3Store {
    region: String,
    endpoint: Option<String>,
    bucket: String,
    prefix: String,
    inner: Arc<AmazonS3>,
    permits: Arc<Semaphore>,
    part_size: usize,
}

fn map_err(op: &'static str, key: &str, e: object_store::Error) -> Error {
    match e {
        // A write or a listing cannot miss an object: what is missing is the bucket.
        object_store::Error::NotFound { source, .. } if matches!(op, "put" | "list") => {
            Error::Store {
                op,
                key: key.into(),
                reason: format!(
                    "the bucket does not exist or is not visible with these credentials: create                      it or fix the store URL ({})",
                    source.to_string().replace('\n', " ")
                ),
                retryable: false,
            }
        }
        object_store::Error::NotFound { .. } => Error::NotFound(key.into()),
        other => {
            // object_store has already retried what it considers transient; what is left may
            // still be worth a later attempt unless the request itself was refused.
            let retryable = !matches!(
                other,
                object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
                    | object_store::Error::InvalidPath { .. }
                    | object_store::Error::NotSupported { .. }
            );
            Error::Store {
                op,
                key: key.into(),
                reason: other.to_string().replace('\n', " "),
                retryable,
            }
        }
    }
}

impl S3Store {
    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The region requests are signed for.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The custom endpoint, if not AWS's own.
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    /// The key prefix (empty, or ending in `/`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `s3://bucket/prefix`, the URL this store was made from.
    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    fn path(&self, key: &str) -> Result<ObjectPath> {
        validate_key(key)?;
        ObjectPath::parse(format!("{}{key}", self.prefix)).map_err(|e| Error::Store {
            op: "key",
            key: key.into(),
            reason: e.to_string(),
            retryable: false,
        })
    }

    async fn permit(&self) -> tokio::sync::SemaphorePermit<'_> {
        // The semaphore is never closed.
        #[allow(clippy::expect_used)]
        self.permits.acquire().await.expect("semaphore closed")
    }

    /// A URL that lets anyone holding it `GET` the object at `key` for `expires_in`, without
    /// credentials. For handing code and requests to fresh machines.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] when no URL can be signed (no credentials).
    pub async fn presign_get(&self, key: &str, expires_in: Duration) -> Result<String> {
        let p = self.path(key)?;
        let url = self
            .inner
            .signed_url(Method::GET, &p, expires_in)
            .await
            .map_err(|e| map_err("presign", key, e))?;
        Ok(url.to_string())
    }

    fn meta(&self, m: object_store::ObjectMeta) -> ObjectMeta {
        let full = m.location.to_string();
        ObjectMeta {
            key: full.strip_prefix(&self.prefix).unwrap_or(&full).to_string(),
            size: m.size,
            last_modified: Some(m.last_modified),
        }
    }

    async fn put_multipart(
        &self,
        key: &str,
        p: &ObjectPath,
        first: Bytes,
        reader: &mut ByteReader,
    ) -> Result<u64> {
        let upload = self
            .inner
            .put_multipart(p)
            .await
            .map_err(|e| map_err("put", key, e))?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, self.part_size);
        let mut total = first.len() as u64;
        w.put(first);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match reader.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = w.abort().await;
                    return Err(Error::Store {
                        op: "put",
                        key: key.into(),
                        reason: format!("reading the upload failed: {e}"),
                        retryable: false,
                    });
                }
            };
            if n == 0 {
                break;
            }
            total += n as u64;
            if let Err(e) = w.wait_for_capacity(PARTS_IN_FLIGHT).await {
                let _ = w.abort().await;
                return Err(map_err("put", key, e));
            }
            w.write(&buf[..n]);
        }
        // `finish` aborts the upload itself when a part or the completion fails.
        w.finish().await.map_err(|e| map_err("put", key, e))?;
        Ok(total)
    }
}

#[async_trait]
impl Store for S3Store {
    fn capabilities(&self) -> StoreCapabilities {
        StoreCapabilities::new(true, true)
    }

    fn locate(&self, key: &str) -> String {
        format!("s3://{}/{}{key}", self.bucket, self.prefix)
    }

    async fn put(&self, key: &str, data: Bytes, _opts: PutOptions) -> Result<()> {
        let p = self.path(key)?;
        let _permit = self.permit().await;
        if data.len() > self.part_size {
            let mut empty: ByteReader = Box::new(tokio::io::empty());
            self.put_multipart(key, &p, data, &mut empty).await?;
            return Ok(());
        }
        self.inner
            .put(&p, PutPayload::from(data))
            .await
            .map_err(|e| map_err("put", key, e))?;
        Ok(())
    }

    async fn put_stream(
        &self,
        key: &str,
        mut reader: ByteReader,
        _opts: PutOptions,
    ) -> Result<u64> {
        let p = self.path(key)?;
        let _permit = self.permit().await;
        // Read up to one part: a small object goes up in a single PUT (one request instead of
        // three), a large one as a multipart upload.
        let mut head = BytesMut::with_capacity(self.part_size.min(1 << 20));
        loop {
            if head.len() > self.part_size {
                return self
                    .put_multipart(key, &p, head.freeze(), &mut reader)
                    .await;
            }
            head.reserve(64 << 10);
            match reader.read_buf(&mut head).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    return Err(Error::Store {
                        op: "put",
                        key: key.into(),
                        reason: format!("reading the upload failed: {e}"),
                        retryable: false,
                    });
                }
            }
        }
        let n = head.len() as u64;
        self.inner
            .put(&p, PutPayload::from(head.freeze()))
            .await
            .map_err(|e| map_err("put", key, e))?;
        Ok(n)
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let p = self.path(key)?;
        let _permit = self.permit().await;
        let r = self
            .inner
            .get(&p)
            .await
            .map_err(|e| map_err("get", key, e))?;
        r.bytes().await.map_err(|e| map_err("get", key, e))
    }

    async fn get_stream(&self, key: &str) -> Result<ByteReader> {
        let p = self.path(key)?;
        let r = {
            let _permit = self.permit().await;
            self.inner
                .get(&p)
                .await
                .map_err(|e| map_err("get", key, e))?
        };
        let stream = r.into_stream().map_err(std::io::Error::other);
        Ok(Box::new(tokio_util::io::StreamReader::new(stream)))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let p = self.path(key)?;
        let _permit = self.permit().await;
        match self.inner.head(&p).await {
            Ok(m) => Ok(Some(self.meta(m))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(map_err("head", key, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        // object_store lists whole path segments: list the enclosing "directory", then filter.
        let full = format!("{}{prefix}", self.prefix);
        let dir = full.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let dir_path = if dir.is_empty() {
            None
        } else {
            Some(ObjectPath::parse(dir).map_err(|e| map_err("list", prefix, e.into()))?)
        };
        let _permit = self.permit().await;
        let mut out: Vec<ObjectMeta> = self
            .inner
            .list(dir_path.as_ref())
            .map_err(|e| map_err("list", prefix, e))
            .filter_map(|r| {
                let full = &full;
                async move {
                    match r {
                        Ok(m) if m.location.as_ref().starts_with(full.as_str()) => {
                            Some(Ok(self.meta(m)))
                        }
                        Ok(_) => None,
                        Err(e) => Some(Err(e)),
                    }
                }
            })
            .try_collect()
            .await?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let p = self.path(key)?;
        let _permit = self.permit().await;
        match self.inner.delete(&p).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(map_err("delete", key, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let b = S3StoreBuilder::from_url("s3://my-bucket/a/b/").expect("valid");
        assert_eq!(
            (b.bucket.as_str(), b.prefix.as_str()),
            ("my-bucket", "a/b/")
        );
        let b = S3StoreBuilder::from_url("s3://my-bucket").expect("valid");
        assert_eq!((b.bucket.as_str(), b.prefix.as_str()), ("my-bucket", ""));
        for bad in [
            "my-bucket",
            "s3://",
            "s3://UPPER/x",
            "s3://b/x",
            "s3://ok-bucket/a/../b",
        ] {
            let e = S3StoreBuilder::from_url(bad).expect_err(bad).to_string();
            assert!(e.contains("store"), "{bad}: {e}");
        }
    }
}
