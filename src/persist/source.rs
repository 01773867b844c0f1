//! Where a shard's reads of its Parquet files come from: the local
//! `parquet/` directory, and, with an object store whose local copy of an
//! older file was deleted to keep the disk within
//! `object_store.local_bytes_max`, the bucket ([`Fetch`], implemented by
//! [`crate::remote::Remote`]). Queries and compaction open files only
//! through [`Source::open`].

// Blocking threads only (scans, compaction): std::fs is the right tool.
#![allow(clippy::disallowed_methods)]

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::parquet::ParquetError;

/// Brings a file the manifest names back to the local directory.
pub trait Fetch: Send + Sync {
    /// Downloads `relative` (a manifest path) to `to`, whole, and returns
    /// it opened (blocking; a thread that may wait on the network).
    fn fetch(&self, relative: &str, to: &Path) -> io::Result<File>;
}

/// The Parquet directory and, optionally, the bucket behind it.
#[derive(Clone)]
pub struct Source {
    root: PathBuf,
    fetch: Option<Arc<dyn Fetch>>,
}

impl Source {
    pub fn new(root: PathBuf, fetch: Option<Arc<dyn Fetch>>) -> Source {
        Source { root, fetch }
    }

    /// The local Parquet directory (where new files are written).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Opens the file `relative` names: the local copy, or (when it is not
    /// on the local disk and a bucket is configured) a fresh copy fetched
    /// from the bucket. The handle stays valid if the local copy is
    /// deleted meanwhile.
    pub fn open(&self, relative: &str) -> Result<File, ParquetError> {
        let path = self.root.join(relative);
        let error = |error: io::Error| ParquetError::Io {
            path: path.clone(),
            error,
        };
        match File::open(&path) {
            Ok(file) => Ok(file),
            Err(missing) if missing.kind() == io::ErrorKind::NotFound => match &self.fetch {
                Some(fetch) => fetch.fetch(relative, &path).map_err(error),
                None => Err(error(missing)),
            },
            Err(other) => Err(error(other)),
        }
    }
}
