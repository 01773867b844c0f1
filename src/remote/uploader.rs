//! The uploader: one thread with its own small async runtime (the one
//! `object_store`'s HTTP client needs), never a shard's. It copies each
//! manifest the catalog owner publishes, with the files it names, to the
//! bucket; the protocol and its durability argument are in
//! [`crate::remote`].

// The uploader's own thread: blocking file reads are fine here.
#![allow(clippy::disallowed_methods)]

use std::collections::HashSet;
use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::StreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, PutPayload, WriteMultipart};

use super::{Journal, Listing, Published, Remote, Target, NODE_MANIFEST, UPLOAD_JOURNAL};
use crate::persist::manifest;

/// First wait after a failed round; doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Parts of a multipart upload in flight at once.
const PARTS_IN_FLIGHT: usize = 2;

/// Why listing the node prefix failed.
#[derive(Debug)]
pub enum ListError {
    Store(object_store::Error),
    /// The node manifest is there but does not parse.
    Manifest(String),
}

impl fmt::Display for ListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListError::Store(error) => write!(f, "{error}"),
            ListError::Manifest(detail) => write!(f, "node manifest: {detail}"),
        }
    }
}

/// What the bucket holds under the node prefix: every object (by manifest
/// path) and the node manifest.
pub async fn list(store: &dyn ObjectStore, target: &Target) -> Result<Listing, ListError> {
    let mut listing = Listing::default();
    let mut objects = store.list(Some(&target.node_prefix));
    while let Some(meta) = objects.next().await {
        let meta = meta.map_err(ListError::Store)?;
        let Some(relative) = target.relative(&meta.location) else {
            continue;
        };
        if relative != NODE_MANIFEST && relative != UPLOAD_JOURNAL {
            listing.objects.insert(relative, meta.size);
        }
    }
    let location = target
        .object(UPLOAD_JOURNAL)
        .map_err(|e| ListError::Manifest(e.to_string()))?;
    match store.get(&location).await {
        Ok(found) => {
            let bytes = found.bytes().await.map_err(ListError::Store)?;
            // A journal that does not parse names nothing this node may
            // delete: ignored (the manifest still does).
            listing.journal = serde_json::from_slice(&bytes).ok();
        }
        Err(object_store::Error::NotFound { .. }) => {}
        Err(error) => return Err(ListError::Store(error)),
    }
    let location = target
        .object(NODE_MANIFEST)
        .map_err(|e| ListError::Manifest(e.to_string()))?;
    match store.get(&location).await {
        Ok(found) => {
            let bytes = found.bytes().await.map_err(ListError::Store)?;
            let parsed = manifest::parse(Path::new(location.as_ref()), &bytes)
                .map_err(|e| ListError::Manifest(e.to_string()))?;
            listing.manifest = Some(parsed);
        }
        Err(object_store::Error::NotFound { .. }) => {}
        Err(error) => return Err(ListError::Store(error)),
    }
    Ok(listing)
}

/// Why a round did not complete.
#[derive(Debug)]
enum RoundError {
    Store(String),
    /// A file the manifest names is not on the local disk.
    LocalMissing(String),
    Local(String),
    /// The bucket holds another data directory's node manifest.
    NodeTaken(String),
}

impl fmt::Display for RoundError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoundError::Store(detail) => write!(f, "object store: {detail}"),
            RoundError::LocalMissing(path) => {
                write!(f, "{path}: named by the persisted catalog, missing on disk")
            }
            RoundError::Local(detail) => write!(f, "reading a local file: {detail}"),
            RoundError::NodeTaken(detail) => write!(f, "{detail}"),
        }
    }
}

/// What the uploader needs besides the shared [`Remote`].
pub struct Uploader {
    pub remote: Arc<Remote>,
    /// `<data_dir>/parquet`: manifest paths are relative to it.
    pub parquet_root: PathBuf,
    /// Files larger than this go up as a multipart upload in parts of it.
    pub part_bytes: usize,
    /// This data directory's token ([`crate::remote`]'s node manifest).
    pub token: String,
    /// What start-up listed (`None`: the store did not answer).
    pub listing: Option<Listing>,
    /// After [`Remote::stop`], the last round gets this long.
    pub grace: Duration,
    /// The objects this data directory wrote (manifest paths): the only
    /// ones step 4 deletes. Filled from the first listing.
    pub owned: HashSet<String>,
    /// Keep at most this many bytes of Parquet files on the local disk:
    /// past it, the local copies of the oldest files already in the bucket
    /// are deleted (0: keep every file).
    pub local_bytes_max: u64,
}

/// Starts the uploader on the object store's runtime; the task ends
/// after [`Remote::stop`].
pub fn start(runtime: &tokio::runtime::Runtime, uploader: Uploader) -> tokio::task::JoinHandle<()> {
    runtime.spawn(uploader.run())
}

impl Uploader {
    async fn run(mut self) {
        if let Some(listing) = self.listing.take() {
            self.own(&listing);
            self.listing = Some(listing);
        }
        let remote = self.remote.clone();
        let mut backoff = BACKOFF_MIN;
        let mut failing = false;
        loop {
            let stopping = remote.stopping();
            let latest = remote.latest();
            let due = latest
                .as_ref()
                .filter(|p| p.version > remote.confirmed())
                .cloned();
            let Some(published) = due else {
                if stopping {
                    return;
                }
                remote.wake.notified().await;
                continue;
            };
            let result = if stopping {
                match tokio::time::timeout(self.grace, self.round(&published)).await {
                    Ok(result) => result,
                    Err(_) => Err(RoundError::Store(format!(
                        "not finished within the shutdown grace of {:?}",
                        self.grace
                    ))),
                }
            } else {
                self.round(&published).await
            };
            match result {
                Ok(()) => {
                    remote.status.up.store(1, Ordering::Relaxed);
                    if failing {
                        tracing::info!(
                            version = published.version,
                            "object store reachable again; upload backlog drained"
                        );
                    }
                    failing = false;
                    backoff = BACKOFF_MIN;
                }
                Err(error) => {
                    remote.status.up.store(0, Ordering::Relaxed);
                    remote.status.failures.fetch_add(1, Ordering::Relaxed);
                    if stopping {
                        tracing::warn!(%error, "last upload before shutdown failed; the next start uploads the rest (the WAL keeps its records meanwhile)");
                        return;
                    }
                    tracing::warn!(%error, retry_in = ?backoff, "upload to the object store failed; WAL segments are kept until it succeeds");
                    failing = true;
                    // Woken early only by a stop; a newer manifest waits
                    // for the backoff.
                    let _ = tokio::time::timeout(backoff, async {
                        while !remote.stopping() {
                            remote.wake.notified().await;
                        }
                    })
                    .await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Steps 1-4 of the protocol for `published`.
    async fn round(&mut self, published: &Published) -> Result<(), RoundError> {
        let target = self.remote.target.clone();
        let store = self.remote.store.clone();
        if self.listing.is_none() {
            let listing = list(&*store, &target)
                .await
                .map_err(|e| RoundError::Store(e.to_string()))?;
            let latest = self.remote.latest();
            let empty = manifest::Manifest::default();
            let local = latest.as_ref().map_or(&empty, |p| &p.manifest);
            super::check_owner(&target, &listing, &self.token, local).map_err(|error| {
                RoundError::NodeTaken(format!("{error}; nothing is uploaded until then"))
            })?;
            self.own(&listing);
            self.listing = Some(listing);
        }
        let manifest = &published.manifest;
        // 1. The files the bucket lacks.
        let missing: Vec<(String, u64)> = {
            let objects = &self.listing.as_ref().expect("listed above").objects;
            manifest
                .files
                .iter()
                .filter(|f| objects.get(&f.path) != Some(&f.bytes))
                .map(|f| (f.path.clone(), f.bytes))
                .collect()
        };
        let status = &self.remote.status;
        status
            .files_pending
            .store(missing.len() as u64, Ordering::Relaxed);
        if !missing.is_empty() {
            let journal = Journal {
                token: self.token.clone(),
                files: missing.iter().map(|(path, _)| path.clone()).collect(),
            };
            let location = target
                .object(UPLOAD_JOURNAL)
                .map_err(|e| RoundError::Local(e.to_string()))?;
            let bytes =
                serde_json::to_vec(&journal).map_err(|e| RoundError::Local(e.to_string()))?;
            store
                .put(&location, PutPayload::from(bytes))
                .await
                .map_err(|e| RoundError::Store(e.to_string()))?;
            self.owned.extend(journal.files);
        }
        for (path, _) in &missing {
            let location = target
                .object(path)
                .map_err(|e| RoundError::Local(format!("{path}: {e}")))?;
            let local = self.parquet_root.join(path);
            let bytes = match upload_file(&*store, &local, &location, self.part_bytes).await {
                Ok(bytes) => bytes,
                Err(RoundError::LocalMissing(_))
                    if self
                        .remote
                        .latest()
                        .is_some_and(|l| l.version > published.version) =>
                {
                    // Compacted or expired since: the newer manifest does
                    // not name it; start over with that one.
                    return Ok(());
                }
                Err(error) => return Err(error),
            };
            let listing = self.listing.as_mut().expect("listed above");
            listing.objects.insert(path.clone(), bytes);
            status.files_uploaded.fetch_add(1, Ordering::Relaxed);
            status.bytes_uploaded.fetch_add(bytes, Ordering::Relaxed);
            status.files_pending.fetch_sub(1, Ordering::Relaxed);
        }
        // 2. The node manifest.
        let location = target
            .object(NODE_MANIFEST)
            .map_err(|e| RoundError::Local(e.to_string()))?;
        let bytes = manifest::to_bytes(manifest).map_err(|e| RoundError::Local(e.to_string()))?;
        store
            .put(&location, PutPayload::from(bytes))
            .await
            .map_err(|e| RoundError::Store(e.to_string()))?;
        status.manifests_uploaded.fetch_add(1, Ordering::Relaxed);
        // 3. Confirmed: the shards may release the WAL behind it.
        self.remote.confirm(published.version);
        tracing::debug!(
            version = published.version,
            uploaded = missing.len(),
            "object store holds the persisted catalog"
        );
        // 4. Objects it wrote and no longer names.
        let named: HashSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
        let listing = self.listing.as_mut().expect("listed above");
        let stale: Vec<String> = listing
            .objects
            .keys()
            .filter(|p| !named.contains(p.as_str()) && self.owned.contains(p.as_str()))
            .cloned()
            .collect();
        for path in stale {
            let location = target
                .object(&path)
                .map_err(|e| RoundError::Local(format!("{path}: {e}")))?;
            match store.delete(&location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(RoundError::Store(error.to_string())),
            }
            listing.objects.remove(&path);
            self.owned.remove(&path);
            status.objects_deleted.fetch_add(1, Ordering::Relaxed);
        }
        // 5. The local disk within its budget.
        self.evict(manifest);
        Ok(())
    }

    /// Takes the objects the first listing shows this data directory wrote
    /// (its manifest's and journal's, same token, and those its local
    /// catalog names); logs the others.
    fn own(&mut self, listing: &Listing) {
        let latest = self.remote.latest();
        let empty = manifest::Manifest::default();
        let local = latest.as_ref().map_or(&empty, |p| &p.manifest);
        self.owned.extend(
            listing
                .written_by(&self.token, local)
                .into_iter()
                .map(str::to_string),
        );
        let foreign = listing
            .objects
            .keys()
            .filter(|p| !self.owned.contains(p.as_str()))
            .count();
        if foreign > 0 {
            tracing::warn!(
                objects = foreign,
                prefix = %self.remote.target.node_prefix,
                "objects under this node's prefix were not written by this data directory \
                 (an earlier data directory with this node_id?); they are left alone"
            );
        }
    }

    /// Deletes the local copies of the files with the oldest rows that the
    /// bucket holds until the local Parquet bytes fit `local_bytes_max`
    /// (queries and compactions fetch them back: [`crate::persist::source`]).
    /// Files not yet uploaded are never deleted.
    fn evict(&self, manifest: &manifest::Manifest) {
        let mut local: Vec<(&manifest::FileEntry, u64)> = manifest
            .files
            .iter()
            .filter_map(|f| {
                let meta = std::fs::metadata(self.parquet_root.join(&f.path)).ok()?;
                Some((f, meta.len()))
            })
            .collect();
        let mut total: u64 = local.iter().map(|(_, bytes)| bytes).sum();
        let status = &self.remote.status;
        if self.local_bytes_max > 0 && total > self.local_bytes_max {
            let uploaded = &self.listing.as_ref().expect("listed").objects;
            local.retain(|(f, _)| uploaded.get(&f.path) == Some(&f.bytes));
            local.sort_by_key(|(f, _)| (f.time_max_ns, f.age()));
            for (file, bytes) in local {
                if total <= self.local_bytes_max {
                    break;
                }
                match std::fs::remove_file(self.parquet_root.join(&file.path)) {
                    Ok(()) => {
                        total -= bytes;
                        status.files_evicted.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) if error.kind() == io::ErrorKind::NotFound => total -= bytes,
                    Err(error) => {
                        tracing::warn!(path = %file.path, %error, "deleting a local copy failed");
                        break;
                    }
                }
            }
        }
        status.local_bytes.store(total, Ordering::Relaxed);
    }
}

/// Uploads the local file at `local` as `location`: one PUT, or a
/// multipart upload in `part_bytes` parts (at most [`PARTS_IN_FLIGHT`]
/// buffered). Either way the object appears whole or not at all. Returns
/// its size.
async fn upload_file(
    store: &dyn ObjectStore,
    local: &Path,
    location: &StorePath,
    part_bytes: usize,
) -> Result<u64, RoundError> {
    let local_error = |error: io::Error| {
        if error.kind() == io::ErrorKind::NotFound {
            RoundError::LocalMissing(local.display().to_string())
        } else {
            RoundError::Local(format!("{}: {error}", local.display()))
        }
    };
    let mut file = std::fs::File::open(local).map_err(local_error)?;
    let size = file.metadata().map_err(local_error)?.len();
    if size <= part_bytes as u64 {
        let mut bytes = Vec::with_capacity(size as usize);
        file.read_to_end(&mut bytes).map_err(local_error)?;
        let size = bytes.len() as u64;
        store
            .put(location, PutPayload::from(bytes))
            .await
            .map_err(|e| RoundError::Store(e.to_string()))?;
        return Ok(size);
    }
    let upload = store
        .put_multipart(location)
        .await
        .map_err(|e| RoundError::Store(e.to_string()))?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, part_bytes);
    let mut buffer = vec![0u8; part_bytes];
    let mut sent = 0u64;
    let failed = loop {
        let n = match read_full(&mut file, &mut buffer) {
            Ok(n) => n,
            Err(error) => break Some(local_error(error)),
        };
        if n == 0 {
            break None;
        }
        if let Err(error) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
            break Some(RoundError::Store(error.to_string()));
        }
        writer.write(&buffer[..n]);
        sent += n as u64;
    };
    if let Some(error) = failed {
        let _ = writer.abort().await;
        return Err(error);
    }
    writer
        .finish()
        .await
        .map_err(|e| RoundError::Store(e.to_string()))?;
    Ok(sent)
}

/// Fills `buffer` unless the file ends first; the bytes read.
fn read_full(file: &mut std::fs::File, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: a file larger than `part_bytes` goes up as a multipart upload
    /// whose object is byte-identical to the file (parts in order, the last
    /// one short), a smaller one as one PUT, and a file missing on disk is
    /// told apart from a store error. Method: a real directory-backed store
    /// (`object_store`'s local file system) and real files.
    #[test]
    fn large_files_go_up_in_parts_and_arrive_whole() {
        let dir = std::env::temp_dir().join(format!("ringest-upload-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bucket")).expect("bucket dir");
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir.join("bucket"))
            .expect("local store");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        // 5 parts of 64 KiB and a short sixth; bytes that differ per offset.
        let large: Vec<u8> = (0..5 * 65536 + 1234u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let small = b"a small file".to_vec();
        for (name, bytes) in [("large.parquet", &large), ("small.parquet", &small)] {
            let local = dir.join(name);
            std::fs::write(&local, bytes).expect("write local file");
            let location = StorePath::from(format!("node=n/{name}"));
            let sent = runtime
                .block_on(upload_file(&store, &local, &location, 65536))
                .expect("upload");
            assert_eq!(sent, bytes.len() as u64, "{name}");
            let stored = runtime
                .block_on(async { store.get(&location).await?.bytes().await })
                .expect("read back");
            assert!(stored.as_ref() == bytes.as_slice(), "{name} differs");
        }
        let missing = runtime.block_on(upload_file(
            &store,
            &dir.join("gone.parquet"),
            &StorePath::from("node=n/gone.parquet"),
            65536,
        ));
        assert!(
            matches!(missing, Err(RoundError::LocalMissing(_))),
            "{missing:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
