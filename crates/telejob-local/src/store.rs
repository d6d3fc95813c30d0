//! `LocalStore`: objects as files under a root directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use telejob_core::store::{
    ByteReader, ObjectMeta, PutOptions, Store, StoreCapabilities, validate_key,
};
use telejob_core::{Error, Result};
use tokio::io::AsyncReadExt;

/// Part size for streamed uploads.
const PART: usize = 8 << 20;

/// A store on the local filesystem: `key` lives at `<root>/<key>`. Writes go to a temporary file
/// and are renamed into place, so readers never see half an object.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    inner: Arc<LocalFileSystem>,
}

impl LocalStore {
    /// A store rooted at `root` (created if missing).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when `root` cannot be created or resolved.
    pub fn new(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref();
        std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
        let root = std::fs::canonicalize(root).map_err(|e| Error::io(root, e))?;
        let inner = LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| Error::io(&root, std::io::Error::other(e.to_string())))?
            .with_automatic_cleanup(true);
        Ok(Self {
            root,
            inner: Arc::new(inner),
        })
    }

    /// A store from a `file:///path` URL or a plain path.
    ///
    /// # Errors
    ///
    /// As [`LocalStore::new`]; [`Error::InvalidJob`] for another URL scheme.
    pub fn from_url(url: &str) -> Result<Self> {
        match url.split_once("://") {
            Some(("file", rest)) => Self::new(rest),
            Some((scheme, _)) => Err(Error::invalid(
                "store",
                format!("{scheme}:// is not a local store; use a directory or file:///path"),
            )),
            None => Self::new(url),
        }
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(key: &str) -> Result<ObjectPath> {
        validate_key(key)?;
        ObjectPath::parse(key).map_err(|e| Error::Store {
            op: "key",
            key: key.into(),
            reason: e.to_string(),
            retryable: false,
        })
    }
}

fn map_err(op: &'static str, key: &str, e: object_store::Error) -> Error {
    match e {
        object_store::Error::NotFound { .. } => Error::NotFound(key.into()),
        other => Error::Store {
            op,
            key: key.into(),
            reason: other.to_string(),
            retryable: false,
        },
    }
}

fn meta(m: object_store::ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        key: m.location.to_string(),
        size: m.size,
        last_modified: Some(m.last_modified),
    }
}

#[async_trait]
impl Store for LocalStore {
    fn capabilities(&self) -> StoreCapabilities {
        StoreCapabilities::new(true, true)
    }

    fn locate(&self, key: &str) -> String {
        self.root.join(key).display().to_string()
    }

    async fn put(&self, key: &str, data: Bytes, _opts: PutOptions) -> Result<()> {
        let p = Self::path(key)?;
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
        let p = Self::path(key)?;
        let upload = self
            .inner
            .put_multipart(&p)
            .await
            .map_err(|e| map_err("put", key, e))?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, PART);
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
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
            if let Err(e) = w.wait_for_capacity(4).await {
                let _ = w.abort().await;
                return Err(map_err("put", key, e));
            }
            w.write(&buf[..n]);
        }
        w.finish().await.map_err(|e| map_err("put", key, e))?;
        Ok(total)
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let p = Self::path(key)?;
        let r = self
            .inner
            .get(&p)
            .await
            .map_err(|e| map_err("get", key, e))?;
        r.bytes().await.map_err(|e| map_err("get", key, e))
    }

    async fn get_stream(&self, key: &str) -> Result<ByteReader> {
        let p = Self::path(key)?;
        let r = self
            .inner
            .get(&p)
            .await
            .map_err(|e| map_err("get", key, e))?;
        let stream = r.into_stream().map_err(std::io::Error::other);
        Ok(Box::new(tokio_util::io::StreamReader::new(stream)))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let p = Self::path(key)?;
        match self.inner.head(&p).await {
            Ok(m) => Ok(Some(meta(m))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(map_err("head", key, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        // object_store lists by whole path segments; list the enclosing directory and filter.
        let dir = prefix.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let dir_path = if dir.is_empty() {
            None
        } else {
            Some(ObjectPath::parse(dir).map_err(|e| map_err("list", prefix, e.into()))?)
        };
        let mut out: Vec<ObjectMeta> = self
            .inner
            .list(dir_path.as_ref())
            .map_err(|e| map_err("list", prefix, e))
            .filter_map(|r| async move {
                match r {
                    Ok(m) if m.location.as_ref().starts_with(prefix) => Some(Ok(meta(m))),
                    Ok(_) => None,
                    Err(Error::NotFound(_)) => None,
                    Err(e) => Some(Err(e)),
                }
            })
            .try_collect()
            .await?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let p = Self::path(key)?;
        match self.inner.delete(&p).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(map_err("delete", key, e)),
        }
    }
}
