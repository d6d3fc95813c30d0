//! `S3Store`: objects in an S3 bucket (AWS or any S3-compatible endpoint), through object_store.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::limit::LimitStore;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::signer::{Method, Signer};
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};
use telejob_core::objects::{AdapterOptions, ObjectStoreAdapter};
use telejob_core::store::validate_key;
use telejob_core::{Error, Result};

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
    /// [`Error::Config`] (setting `store`) for anything but an `s3://` URL with a valid bucket
    /// name and a valid key prefix.
    pub fn from_url(url: &str) -> Result<Self> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            Error::config(
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
            return Err(Error::config(
                "store",
                format!(
                    "{url}: {bucket:?} is not an S3 bucket name (3-63 lowercase letters, digits, \
                     '-' and '.')"
                ),
            ));
        }
        let prefix = prefix.trim_matches('/');
        if !prefix.is_empty() {
            validate_key(prefix).map_err(|e| Error::config("store", format!("{url}: {e}")))?;
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
    /// [`Error::Config`] (setting `store`) when the settings are unusable.
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
        let s3 = Arc::new(
            b.build()
                .map_err(|e| Error::config("store", format!("s3://{}: {e}", self.bucket)))?,
        );
        // object_store's own wrappers: keys under the prefix, at most so many requests at once.
        let limited = LimitStore::new(Arc::clone(&s3), self.max_concurrency);
        let inner: Arc<dyn ObjectStore> = if self.prefix.is_empty() {
            Arc::new(limited)
        } else {
            Arc::new(PrefixStore::new(limited, self.prefix.trim_end_matches('/')))
        };
        let mut options = AdapterOptions::new(format!("s3://{}/{}", self.bucket, self.prefix));
        options.part_size = self.part_size;
        options.parts_in_flight = PARTS_IN_FLIGHT;
        options.keeps_content_type = true;
        options.missing_container = Some(
            "the bucket does not exist or is not visible with these credentials: create it or \
             fix the store URL",
        );
        options.unknown_errors_retryable = true;
        Ok(S3Store {
            adapter: ObjectStoreAdapter::new(inner, options),
            signer: s3,
            region,
            endpoint,
            bucket: self.bucket,
            prefix: self.prefix,
        })
    }
}

/// A store in an S3 bucket, under an optional key prefix: `key` lives at
/// `s3://<bucket>/<prefix><key>`. It is the shared [`ObjectStoreAdapter`] (every
/// [`Store`](telejob_core::store::Store)
/// operation, through `Deref`) plus what only S3 has: pre-signed URLs.
///
/// Requests are retried with jittered exponential backoff on transient errors; at most the
/// configured number run at once; objects larger than the part size are uploaded in parts,
/// and an upload that fails is aborted so no parts are left behind. S3 `PUT`s are atomic.
/// Objects carry the content type they were written with.
#[derive(Debug, Clone)]
pub struct S3Store {
    adapter: ObjectStoreAdapter,
    signer: Arc<AmazonS3>,
    region: String,
    endpoint: Option<String>,
    bucket: String,
    prefix: String,
}

impl std::ops::Deref for S3Store {
    type Target = ObjectStoreAdapter;

    fn deref(&self) -> &ObjectStoreAdapter {
        &self.adapter
    }
}

impl S3Store {
    /// The store as a [`Store`] to share (`Arc<dyn Store>`).
    pub fn store(&self) -> ObjectStoreAdapter {
        self.adapter.clone()
    }

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

    /// A URL that lets anyone holding it `GET` the object at `key` for `expires_in`, without
    /// credentials. For handing code and requests to fresh machines.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] when no URL can be signed (no credentials).
    pub async fn presign_get(&self, key: &str, expires_in: Duration) -> Result<String> {
        validate_key(key)?;
        let full = format!("{}{key}", self.prefix);
        let p = ObjectPath::parse(&full).map_err(|e| Error::Store {
            op: "presign",
            key: key.into(),
            reason: e.to_string(),
            retryable: false,
            source: Some(e.into()),
        })?;
        let url = self
            .signer
            .signed_url(Method::GET, &p, expires_in)
            .await
            .map_err(|e| Error::Store {
                op: "presign",
                key: key.into(),
                reason: e.to_string().replace('\n', " "),
                retryable: false,
                source: Some(e.into()),
            })?;
        Ok(url.to_string())
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
