//! `LocalStore`: objects as files under a root directory, through object_store's
//! `LocalFileSystem` and the shared [`ObjectStoreAdapter`].

use std::path::Path;
use std::sync::Arc;

use object_store::local::LocalFileSystem;
use telejob_core::objects::{AdapterOptions, ObjectStoreAdapter};
use telejob_core::{Error, Result};

/// Makes stores on the local filesystem: `key` lives at `<root>/<key>`. Writes go to a
/// temporary file and are renamed into place, so readers never see half an object. Files keep
/// no content type: whoever serves them infers it.
#[derive(Debug, Clone, Copy)]
pub struct LocalStore;

impl LocalStore {
    /// A store rooted at `root` (created if missing).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when `root` cannot be created or resolved.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(root: impl AsRef<Path>) -> Result<ObjectStoreAdapter> {
        let root = root.as_ref();
        std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
        let root = std::fs::canonicalize(root).map_err(|e| Error::io(root, e))?;
        let inner = LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| Error::io(&root, std::io::Error::other(e)))?
            .with_automatic_cleanup(true);
        Ok(ObjectStoreAdapter::new(
            Arc::new(inner),
            AdapterOptions::new(format!("{}/", root.display())),
        ))
    }

    /// A store from a `file:///path` URL or a plain path.
    ///
    /// # Errors
    ///
    /// As [`LocalStore::new`]; [`Error::Config`] for another URL scheme.
    pub fn from_url(url: &str) -> Result<ObjectStoreAdapter> {
        match url.split_once("://") {
            Some(("file", rest)) => Self::new(rest),
            Some((scheme, _)) => Err(Error::config(
                "store",
                format!("{scheme}:// is not a local store; use a directory or file:///path"),
            )),
            None => Self::new(url),
        }
    }
}
