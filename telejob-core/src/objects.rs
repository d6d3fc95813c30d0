//! The one adapter from [`object_store`] to [`Store`]: error mapping, metadata, the streaming
//! put, list-then-filter. `LocalStore` and `S3Store` are this adapter over `LocalFileSystem` and
//! `AmazonS3` (wrapped in object_store's own `PrefixStore` and `LimitStore`). Feature
//! `object-store`.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, Attributes, ObjectStore, ObjectStoreExt, PutMultipartOptions, PutPayload,
    WriteMultipart,
};
use tokio::io::AsyncReadExt;

use crate::error::{Error, Result};
use crate::store::{ByteReader, ObjectMeta, PutOptions, Store, StoreCapabilities, validate_key};

/// How an [`ObjectStoreAdapter`] behaves where object stores differ.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AdapterOptions {
    /// What `locate` puts before a key: a directory with a trailing `/`, or `s3://bucket/prefix/`.
    pub location_base: String,
    /// Objects larger than this go up as multipart uploads of parts this size.
    pub part_size: usize,
    /// Parts of one upload in flight at once.
    pub parts_in_flight: usize,
    /// Whether the store keeps a content type with each object (S3 does; local files do not, and
    /// the type is inferred when they are served).
    pub keeps_content_type: bool,
    /// What a "not found" from a write or a listing means for this store (a missing bucket),
    /// said as the fix; `None` where it cannot happen.
    pub missing_container: Option<&'static str>,
    /// Whether errors the client did not classify (after its own retries) are worth a later
    /// attempt: true for network stores, false for the local filesystem.
    pub unknown_errors_retryable: bool,
}

impl AdapterOptions {
    /// Options for a store whose keys are shown as `location_base` + key: 8 MiB parts, four in
    /// flight, no content types, every unclassified error permanent.
    pub fn new(location_base: impl Into<String>) -> Self {
        Self {
            location_base: location_base.into(),
            part_size: 8 << 20,
            parts_in_flight: 4,
            keeps_content_type: false,
            missing_container: None,
            unknown_errors_retryable: false,
        }
    }
}

/// A [`Store`] over any `Arc<dyn ObjectStore>`.
#[derive(Clone)]
pub struct ObjectStoreAdapter {
    inner: Arc<dyn ObjectStore>,
    options: AdapterOptions,
}

impl fmt::Debug for ObjectStoreAdapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectStoreAdapter")
            .field("inner", &self.inner.to_string())
            .field("options", &self.options)
            .finish()
    }
}

impl ObjectStoreAdapter {
    /// The adapter over `inner`.
    pub fn new(inner: Arc<dyn ObjectStore>, options: AdapterOptions) -> Self {
        Self { inner, options }
    }

    /// The object store underneath.
    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    fn path(key: &str) -> Result<ObjectPath> {
        validate_key(key)?;
        ObjectPath::parse(key).map_err(|e| Error::Store {
            op: "key",
            key: key.into(),
            reason: e.to_string(),
            retryable: false,
            source: Some(e.into()),
        })
    }

    fn map_err(&self, op: &'static str, key: &str, e: object_store::Error) -> Error {
        match e {
            object_store::Error::NotFound { .. }
                if matches!(op, "put" | "list") && self.options.missing_container.is_some() =>
            {
                Error::Store {
                    op,
                    key: key.into(),
                    reason: self.options.missing_container.unwrap_or_default().into(),
                    retryable: false,
                    source: Some(e.into()),
                }
            }
            object_store::Error::NotFound { .. } => Error::NotFound(key.into()),
            other => {
                // The client has retried what it considers transient; a refused request stays
                // refused.
                let refused = matches!(
                    other,
                    object_store::Error::PermissionDenied { .. }
                        | object_store::Error::Unauthenticated { .. }
                        | object_store::Error::InvalidPath { .. }
                        | object_store::Error::NotSupported { .. }
                        | object_store::Error::NotImplemented { .. }
                );
                Error::Store {
                    op,
                    key: key.into(),
                    reason: other.to_string().replace('\n', " "),
                    retryable: !refused && self.options.unknown_errors_retryable,
                    source: Some(other.into()),
                }
            }
        }
    }

    async fn open(&self, key: &str) -> Result<object_store::GetResult> {
        let p = Self::path(key)?;
        self.inner
            .get(&p)
            .await
            .map_err(|e| self.map_err("get", key, e))
    }

    fn read_failed(key: &str, e: std::io::Error) -> Error {
        Error::Store {
            op: "put",
            key: key.into(),
            reason: format!("reading the upload failed: {e}"),
            retryable: false,
            source: Some(e.into()),
        }
    }

    fn attributes(&self, opts: &PutOptions) -> Attributes {
        let mut a = Attributes::new();
        if self.options.keeps_content_type
            && let Some(ct) = &opts.content_type
        {
            a.insert(Attribute::ContentType, ct.clone().into());
        }
        a
    }

    fn meta(m: object_store::ObjectMeta) -> ObjectMeta {
        ObjectMeta {
            key: m.location.to_string(),
            size: m.size,
            last_modified: Some(m.last_modified),
        }
    }

    async fn put_one(
        &self,
        key: &str,
        p: &ObjectPath,
        data: Bytes,
        opts: &PutOptions,
    ) -> Result<()> {
        let o = object_store::PutOptions {
            attributes: self.attributes(opts),
            ..Default::default()
        };
        self.inner
            .put_opts(p, PutPayload::from(data), o)
            .await
            .map_err(|e| self.map_err("put", key, e))?;
        Ok(())
    }

    /// A multipart upload of `first` and the rest of `reader`; aborted on any failure, so no
    /// parts are left behind.
    async fn put_parts(
        &self,
        key: &str,
        p: &ObjectPath,
        first: Bytes,
        reader: &mut ByteReader,
        opts: &PutOptions,
    ) -> Result<u64> {
        let o = PutMultipartOptions {
            attributes: self.attributes(opts),
            ..Default::default()
        };
        let upload = self
            .inner
            .put_multipart_opts(p, o)
            .await
            .map_err(|e| self.map_err("put", key, e))?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, self.options.part_size);
        let mut total = first.len() as u64;
        w.put(first);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match reader.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = w.abort().await;
                    return Err(Self::read_failed(key, e));
                }
            };
            if n == 0 {
                break;
            }
            total += n as u64;
            if let Err(e) = w.wait_for_capacity(self.options.parts_in_flight).await {
                let _ = w.abort().await;
                return Err(self.map_err("put", key, e));
            }
            w.write(&buf[..n]);
        }
        // `finish` aborts the upload itself when a part or the completion fails.
        w.finish().await.map_err(|e| self.map_err("put", key, e))?;
        Ok(total)
    }
}

#[async_trait]
impl Store for ObjectStoreAdapter {
    fn capabilities(&self) -> StoreCapabilities {
        // object_store's puts are atomic (local files are renamed into place; S3 PUTs are
        // whole), and uploads stream in parts.
        StoreCapabilities::new(true, true)
    }

    fn locate(&self, key: &str) -> String {
        format!("{}{key}", self.options.location_base)
    }

    async fn put(&self, key: &str, data: Bytes, opts: PutOptions) -> Result<()> {
        let p = Self::path(key)?;
        if data.len() > self.options.part_size {
            let mut empty: ByteReader = Box::new(tokio::io::empty());
            self.put_parts(key, &p, data, &mut empty, &opts).await?;
            return Ok(());
        }
        self.put_one(key, &p, data, &opts).await
    }

    async fn put_stream(&self, key: &str, mut reader: ByteReader, opts: PutOptions) -> Result<u64> {
        let p = Self::path(key)?;
        // Read up to one part: a small object goes up in a single request, a large one in parts.
        let mut head = BytesMut::with_capacity(self.options.part_size.min(1 << 20));
        loop {
            if head.len() > self.options.part_size {
                return self
                    .put_parts(key, &p, head.freeze(), &mut reader, &opts)
                    .await;
            }
            head.reserve(64 << 10);
            match reader.read_buf(&mut head).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(Self::read_failed(key, e)),
            }
        }
        let n = head.len() as u64;
        self.put_one(key, &p, head.freeze(), &opts).await?;
        Ok(n)
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let r = self.open(key).await?;
        r.bytes().await.map_err(|e| self.map_err("get", key, e))
    }

    async fn get_stream(&self, key: &str) -> Result<ByteReader> {
        let r = self.open(key).await?;
        let stream = r.into_stream().map_err(std::io::Error::other);
        Ok(Box::new(tokio_util::io::StreamReader::new(stream)))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let p = Self::path(key)?;
        match self.inner.head(&p).await {
            Ok(m) => Ok(Some(Self::meta(m))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.map_err("head", key, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        // object_store lists whole path segments: list the enclosing "directory", then filter.
        let dir = prefix.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let dir_path = if dir.is_empty() {
            None
        } else {
            Some(ObjectPath::parse(dir).map_err(|e| self.map_err("list", prefix, e.into()))?)
        };
        let listed: Vec<object_store::ObjectMeta> =
            match self.inner.list(dir_path.as_ref()).try_collect().await {
                Ok(v) => v,
                // A directory that does not exist holds nothing (local stores).
                Err(object_store::Error::NotFound { .. })
                    if self.options.missing_container.is_none() =>
                {
                    Vec::new()
                }
                Err(e) => return Err(self.map_err("list", prefix, e)),
            };
        let mut out: Vec<ObjectMeta> = listed
            .into_iter()
            .filter(|m| m.location.as_ref().starts_with(prefix))
            .map(Self::meta)
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let p = Self::path(key)?;
        match self.inner.delete(&p).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.map_err("delete", key, e)),
        }
    }
}
