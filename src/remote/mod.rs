//! Object storage (issue 16): a copy of this appliance's Parquet files and
//! of its persisted catalog in an S3, GCS or Azure bucket (or a mounted
//! directory), under a prefix of its own, so that many appliances share one
//! bucket and any engine reads it.
//!
//! The local `parquet/` directory stays what it is (the files queries read,
//! the catalog start-up trusts); this module adds one step after it:
//!
//! ```text
//! snapshot → local Parquet + _catalog.json (fsynced) → upload → node manifest → WAL released
//! ```
//!
//! # Layout in the bucket
//!
//! ```text
//! <prefix>/node=<node_id>/_catalog.json                                       the node manifest
//! <prefix>/node=<node_id>/db=<db>/table=<table>/date=<YYYY-MM-DD>/<name>.parquet   as on disk
//! ```
//!
//! `<prefix>` is the path of `object_store.url` (`s3://bucket/prefix`;
//! empty for `s3://bucket`). Below `node=<node_id>/` every name is the
//! local one (`crate::persist`'s layout, same escaping), so the bucket is
//! Hive-partitioned by node, database, table and day:
//! `read_parquet('s3://bucket/prefix/*/db=telegraf/table=cpu/*/*.parquet',
//! hive_partitioning = true, union_by_name = true)` reads one table of all
//! nodes. `node_id` must be a plain name (letters, digits, `_`, `-`, `.`).
//!
//! # The node manifest (`node=<node_id>/_catalog.json`)
//!
//! Byte for byte the local persisted catalog ([`crate::persist::manifest`],
//! its JSON schema there) as of some version: every Parquet file of the
//! node with its database, table, row count, byte size and time range, the
//! databases with their retention and columns, and the WAL positions. Its
//! `node` object (`{"id": "<node_id>", "token": "<32 hex digits>"}`) names
//! the node and the data directory that writes under it: the token is drawn
//! when a data directory first runs with an object store, and a start-up
//! that finds another token under its `node_id` refuses (two appliances
//! given one `node_id` would otherwise delete each other's files).
//!
//! A reader that wants exactly the current files of a node reads its
//! manifest; a glob over the bucket sees the same files except for a few
//! seconds after a compaction (the merged file is uploaded, then the
//! manifest, then the inputs deleted — in between both are listed).
//!
//! # The upload protocol ([`uploader`], one thread, off every shard)
//!
//! The catalog owner publishes each manifest it writes, with a version
//! number one higher than the last ([`Remote::publish`]). The uploader
//! takes the latest published manifest `M` (version `V`) and:
//! 1. uploads every file `M` names that the bucket does not hold (a single
//!    PUT, or a multipart upload in `part_bytes` parts for larger files;
//!    an object appears whole or not at all);
//! 2. PUTs `M` as the node manifest;
//! 3. marks `V` confirmed ([`Remote::confirmed`]);
//! 4. deletes the objects under its node prefix that `M` does not name
//!    (compacted, expired or dropped files).
//!
//! Before step 1 uploads anything, the round PUTs the upload journal
//! (`node=<node_id>/_uploading.json`: the token and the paths it is about
//! to upload). Step 4 deletes only objects this data directory wrote: those
//! its previous node manifest or its journal named (same token), or that
//! it uploaded since start. Any other object under the prefix (left by a
//! data directory that had this `node_id` before, whose manifest was
//! removed by hand) is left alone and logged.
//!
//! A failure anywhere restarts the round from the newest manifest after a
//! backoff (1 s doubling to 30 s); a file gone from the local disk meanwhile
//! (compacted, expired) is not an error, the newer manifest no longer
//! names it. At start the uploader lists its node prefix, so what is there
//! is never uploaded twice and what is left over (a crash between 1 and 4)
//! is deleted by the first round.
//!
//! # Local copies (`object_store.local_bytes_max`)
//!
//! After each confirmed round, if the Parquet files on the local disk take
//! more than `local_bytes_max` bytes (0: no limit), the uploader deletes the
//! local copies of the files with the oldest rows among those the bucket
//! holds, until they fit; a file not yet uploaded is never deleted. Every
//! read of a file by a query or a compaction goes through
//! [`crate::persist::source::Source`]: a file missing locally is fetched
//! from the bucket into `<name>.<thread>.fetch.tmp`, opened, and renamed
//! into place (the open handle survives a later deletion), so it counts
//! against the budget again until the next round evicts it. Files are
//! immutable, so a local copy is always the bucket's bytes. Start-up does
//! not treat a named file that is only in the bucket as missing.
//!
//! # Durability argument
//!
//! **Promise** (issue 16): a WAL segment is deleted only after the Parquet
//! files its records fed, and a node manifest naming them, are in the
//! bucket. Each snapshot's commit answers the version of the manifest that
//! holds it; the shard releases rows from memory at once (the local files
//! hold them) but keeps the WAL segments until that version is confirmed
//! ([`crate::persister`]). While the bucket is unreachable ingest goes on,
//! the WAL grows until `wal.wal_bytes_max` refuses writes with 503, and
//! when the bucket returns one round uploads the backlog.
//!
//! | crash | in the bucket | at the next start |
//! |---|---|---|
//! | during an upload | nothing, or an unfinished multipart upload (invisible; abort it with a bucket lifecycle rule) | the file is uploaded again |
//! | files uploaded, manifest not | objects the node manifest does not name (the journal does) | kept if the local catalog names them, else deleted by the first round |
//! | manifest uploaded, WAL not released | everything | the segments are replayed as persisted (skipped) and deleted once the first round confirms |
//! | objects of removed files not yet deleted | objects the manifest does not name | deleted by the first round |
//!
//! # Credentials
//!
//! Never in the profile, the command line or the logs: the environment
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//! `AWS_REGION`, …; `GOOGLE_SERVICE_ACCOUNT`; `AZURE_STORAGE_ACCOUNT_NAME`,
//! `AZURE_STORAGE_ACCOUNT_KEY`, …), or the instance's metadata service and
//! web identity when the environment holds none. Start-up lists the node
//! prefix and reads its manifest: a refusal (403, 401, no such bucket) stops
//! the start with the store's answer; an unreachable store does not (ingest
//! needs only the local disk; uploads start when it answers).

pub mod uploader;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::path::Path as StorePath;
use object_store::ObjectStore;

use crate::config::ObjectStoreConfig;
use crate::persist::manifest::Manifest;

/// The version of the manifest found at start (each rewrite adds one).
pub const FIRST_VERSION: u64 = 1;

/// The node manifest's object name, below `node=<node_id>/`.
pub const NODE_MANIFEST: &str = "_catalog.json";
/// The upload journal's object name, below `node=<node_id>/`.
pub const UPLOAD_JOURNAL: &str = "_uploading.json";

/// The upload journal: the files a round is about to upload, written
/// before them, so that the objects a data directory wrote are always
/// known (its manifest names the rest): only those are ever deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Journal {
    /// The data directory's token (the manifest's `node.token`).
    pub token: String,
    /// Manifest paths.
    pub files: Vec<String>,
}

/// Where this node writes in the bucket.
#[derive(Clone, Debug)]
pub struct Target {
    /// `s3://bucket/prefix` as configured (no credentials in it).
    pub url: String,
    /// `<prefix>/node=<node_id>`.
    pub node_prefix: StorePath,
    pub node_id: String,
}

impl Target {
    /// The object of a file named `relative` (a manifest path: plain names
    /// joined by `/`, checked when the manifest was loaded or written).
    pub fn object(&self, relative: &str) -> Result<StorePath, object_store::path::Error> {
        StorePath::parse(format!("{}/{relative}", self.node_prefix))
    }

    /// A file's manifest path from its object, if it is under the node
    /// prefix.
    pub fn relative(&self, object: &StorePath) -> Option<String> {
        let rest = object
            .as_ref()
            .strip_prefix(self.node_prefix.as_ref())?
            .strip_prefix('/')?;
        (!rest.is_empty()).then(|| rest.to_string())
    }
}

/// Why the object store cannot be used.
#[derive(Debug)]
pub enum RemoteError {
    /// `object_store.url` or `node_id` is not usable.
    Config(String),
    /// The store answered, and refused (credentials, permissions, bucket).
    Refused { url: String, detail: String },
    /// The bucket holds another data directory's files under this node id.
    NodeTaken {
        url: String,
        node_id: String,
        found: String,
    },
    /// A node manifest in the bucket that does not parse.
    Manifest { url: String, detail: String },
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoteError::Config(detail) => write!(f, "object_store: {detail}"),
            RemoteError::Refused { url, detail } => write!(
                f,
                "object store {url} refused access: {detail}. Credentials come from the \
                 environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN for \
                 S3) or the instance's metadata service; check them, the bucket's name and the \
                 policy (ringest needs List, Get, Put and Delete under its prefix)"
            ),
            RemoteError::NodeTaken {
                url,
                node_id,
                found,
            } => write!(
                f,
                "object store {url}: node_id {node_id:?} already holds the files of another data \
                 directory (its manifest's token: {found}; this data directory's differs). \
                 Give this appliance its own object_store.node_id (a lost node's files stay \
                 readable under its old one: systemd/scale-out/README.md)"
            ),
            RemoteError::Manifest { url, detail } => write!(
                f,
                "object store {url}: the node manifest does not parse ({detail})"
            ),
        }
    }
}

impl std::error::Error for RemoteError {}

/// A configured store: the client and where this node writes.
pub struct Configured {
    pub store: Arc<dyn ObjectStore>,
    pub target: Target,
}

/// The hostname, for the default `node_id`.
fn hostname() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes a
    // NUL-terminated name into it (truncated if longer).
    let rc = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buffer.iter().position(|b| *b == 0).unwrap_or(buffer.len());
    String::from_utf8_lossy(&buffer[..end]).into_owned()
}

/// A node id is one plain path segment.
pub fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Builds the client from `config` (credentials from the environment).
/// `None` when no `url` is configured.
pub fn configure(config: &ObjectStoreConfig) -> Result<Option<Configured>, RemoteError> {
    let Some(url) = config.url.as_deref().filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    let node_id = match config.node_id.as_deref() {
        Some(id) => id.to_string(),
        None => hostname(),
    };
    if !valid_node_id(&node_id) {
        return Err(RemoteError::Config(format!(
            "node_id {node_id:?} is not a plain name (letters, digits, '_', '-', '.'; at most \
             128); set object_store.node_id"
        )));
    }
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| RemoteError::Config(format!("url {url:?} has no scheme (s3://…)")))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let client = object_store::ClientOptions::new()
        .with_allow_http(config.allow_http)
        .with_timeout(Duration::from_millis(config.request_timeout_ms))
        .with_connect_timeout(Duration::from_millis(config.request_timeout_ms.min(5_000)));
    // The uploader retries whole rounds itself; the client's own retries
    // only smooth over a single dropped request.
    let retry = object_store::RetryConfig {
        max_retries: 2,
        retry_timeout: Duration::from_millis(config.request_timeout_ms),
        ..Default::default()
    };
    let built: Result<Arc<dyn ObjectStore>, object_store::Error> = match scheme {
        "s3" | "s3a" => {
            let mut builder = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_client_options(client)
                .with_retry(retry);
            if let Some(endpoint) = &config.endpoint {
                builder = builder.with_endpoint(endpoint);
            }
            if let Some(region) = &config.region {
                builder = builder.with_region(region);
            }
            builder.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
        }
        "gs" => object_store::gcp::GoogleCloudStorageBuilder::from_env()
            .with_bucket_name(bucket)
            .with_client_options(client)
            .with_retry(retry)
            .build()
            .map(|s| Arc::new(s) as Arc<dyn ObjectStore>),
        "az" | "azure" | "abfs" | "abfss" => object_store::azure::MicrosoftAzureBuilder::from_env()
            .with_container_name(bucket)
            .with_client_options(client)
            .with_retry(retry)
            .build()
            .map(|s| Arc::new(s) as Arc<dyn ObjectStore>),
        "file" => {
            // file:///mnt/share/prefix: a mounted directory (NFS, tests).
            let root = format!("/{prefix}");
            // Start-up, before any executor runs.
            #[allow(clippy::disallowed_methods)]
            std::fs::create_dir_all(&root).map_err(|error| {
                RemoteError::Config(format!("url {url:?}: cannot create {root}: {error}"))
            })?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(&root)
                .map(|s| Arc::new(s) as Arc<dyn ObjectStore>);
            let store = store.map_err(|e| RemoteError::Config(format!("url {url:?}: {e}")))?;
            return Ok(Some(Configured {
                store,
                target: target(url, "", node_id)?,
            }));
        }
        other => {
            return Err(RemoteError::Config(format!(
                "url {url:?}: scheme {other:?} is not one of s3, gs, az, file"
            )))
        }
    };
    let store = built.map_err(|e| RemoteError::Config(format!("url {url:?}: {e}")))?;
    Ok(Some(Configured {
        store,
        target: target(url, prefix, node_id)?,
    }))
}

/// `<prefix>/node=<node_id>`, checked.
fn target(url: &str, prefix: &str, node_id: String) -> Result<Target, RemoteError> {
    let prefix = prefix.trim_matches('/');
    let joined = if prefix.is_empty() {
        format!("node={node_id}")
    } else {
        format!("{prefix}/node={node_id}")
    };
    let node_prefix = StorePath::parse(&joined)
        .map_err(|e| RemoteError::Config(format!("url {url:?}: prefix {prefix:?}: {e}")))?;
    Ok(Target {
        url: url.to_string(),
        node_prefix,
        node_id,
    })
}

/// A manifest the catalog owner wrote, as published to the uploader.
pub struct Published {
    pub version: u64,
    pub manifest: Manifest,
}

/// What the bucket holds under the node prefix, as last seen.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    /// Manifest path → object size.
    pub objects: HashMap<String, u64>,
    /// The node manifest, if there is one.
    pub manifest: Option<Manifest>,
    /// The upload journal, if there is one.
    pub journal: Option<Journal>,
}

impl Listing {
    /// The objects (manifest paths) this data directory wrote, as far as
    /// the bucket and the local catalog `local` tell: its node manifest's
    /// files and its upload journal's (both with `token`), and the files
    /// `local` names.
    pub fn written_by<'a>(
        &'a self,
        token: &str,
        local: &'a Manifest,
    ) -> std::collections::HashSet<&'a str> {
        let manifest = self
            .manifest
            .iter()
            .filter(|m| m.node.as_ref().is_some_and(|n| n.token == token))
            .flat_map(|m| m.files.iter().map(|f| f.path.as_str()));
        let journal = self
            .journal
            .iter()
            .filter(|j| j.token == token)
            .flat_map(|j| j.files.iter().map(String::as_str));
        manifest
            .chain(journal)
            .chain(local.files.iter().map(|f| f.path.as_str()))
            .collect()
    }
}

/// Shared by the shards (publish, confirmed) and the uploader thread.
pub struct Remote {
    pub target: Target,
    store: Arc<dyn ObjectStore>,
    /// The object store runtime's (its one worker thread drives the
    /// connections; blocking threads wait on fetches through it).
    handle: tokio::runtime::Handle,
    latest: Mutex<Option<Arc<Published>>>,
    wake: tokio::sync::Notify,
    confirmed: AtomicU64,
    stopping: AtomicBool,
    pub status: Status,
}

/// Counters and gauges for `/metrics` (`ringest_object_store_*`).
#[derive(Default)]
pub struct Status {
    /// 1 while the last request to the store succeeded.
    pub up: AtomicU64,
    pub files_uploaded: AtomicU64,
    pub bytes_uploaded: AtomicU64,
    pub objects_deleted: AtomicU64,
    pub manifests_uploaded: AtomicU64,
    pub failures: AtomicU64,
    /// Files the latest manifest names that are not in the bucket yet.
    pub files_pending: AtomicU64,
    /// Published manifest version minus confirmed version.
    pub versions_behind: AtomicU64,
    /// Local copies deleted to keep within `local_bytes_max`, and files
    /// fetched back for a query or a compaction.
    pub files_evicted: AtomicU64,
    pub files_fetched: AtomicU64,
    /// Bytes of Parquet files on the local disk (after the last round).
    pub local_bytes: AtomicU64,
}

impl Remote {
    pub fn new(
        target: Target,
        store: Arc<dyn ObjectStore>,
        handle: tokio::runtime::Handle,
    ) -> Remote {
        Remote {
            target,
            store,
            handle,
            latest: Mutex::new(None),
            wake: tokio::sync::Notify::new(),
            confirmed: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            status: Status::default(),
        }
    }

    /// The catalog owner wrote `manifest` as `version` (higher than every
    /// earlier one): the uploader takes it next (only the newest counts).
    pub fn publish(&self, version: u64, manifest: Manifest) {
        let published = Arc::new(Published { version, manifest });
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(published);
        self.status
            .versions_behind
            .store(version.saturating_sub(self.confirmed()), Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// The newest published manifest.
    pub fn latest(&self) -> Option<Arc<Published>> {
        self.latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every manifest version up to this one is in the bucket (with every
    /// file it names).
    pub fn confirmed(&self) -> u64 {
        self.confirmed.load(Ordering::Acquire)
    }

    fn confirm(&self, version: u64) {
        self.confirmed.fetch_max(version, Ordering::AcqRel);
        let latest = self.latest().map_or(0, |p| p.version);
        self.status
            .versions_behind
            .store(latest.saturating_sub(version), Ordering::Relaxed);
    }

    /// Asks the uploader to finish: one more round, then it returns.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// `ringest_object_store_*` in Prometheus text.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let s = &self.status;
        let node = &self.target.node_id;
        let families: [(&str, &str, &AtomicU64); 11] = [
            ("ringest_object_store_up", "1 while the last request to the object store succeeded.", &s.up),
            ("ringest_object_store_files_uploaded_total", "Parquet files uploaded.", &s.files_uploaded),
            ("ringest_object_store_bytes_uploaded_total", "Bytes of Parquet files uploaded.", &s.bytes_uploaded),
            ("ringest_object_store_manifests_uploaded_total", "Node manifests uploaded (each confirms a catalog version).", &s.manifests_uploaded),
            ("ringest_object_store_objects_deleted_total", "Objects deleted (compacted, expired or dropped files).", &s.objects_deleted),
            ("ringest_object_store_failures_total", "Upload rounds that failed (retried with backoff).", &s.failures),
            ("ringest_object_store_files_pending", "Files the newest catalog names that are not in the object store yet.", &s.files_pending),
            (
                "ringest_object_store_local_bytes",
                "Bytes of Parquet files on the local disk (object_store.local_bytes_max bounds it).",
                &s.local_bytes,
            ),
            (
                "ringest_object_store_files_evicted_total",
                "Local copies of uploaded files deleted to keep the disk within object_store.local_bytes_max.",
                &s.files_evicted,
            ),
            (
                "ringest_object_store_files_fetched_total",
                "Files fetched back from the object store for a query or a compaction.",
                &s.files_fetched,
            ),
            ("ringest_object_store_versions_behind", "Catalog versions written locally and not yet confirmed in the object store (WAL segments wait for them).", &s.versions_behind),
        ];
        for (name, help, value) in families {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            let _ = writeln!(
                out,
                "{name}{{node=\"{node}\"}} {}",
                value.load(Ordering::Relaxed)
            );
        }
    }
}

/// The runtime `object_store`'s HTTP client runs on: one worker thread of
/// its own (`ringest-objstore`), never a shard's.
pub fn runtime() -> Result<tokio::runtime::Runtime, RemoteError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(2)
        .thread_name("ringest-objstore")
        .enable_all()
        .build()
        .map_err(|e| RemoteError::Config(format!("cannot start the object store's runtime: {e}")))
}

impl crate::persist::source::Fetch for Remote {
    /// Downloads into `<to>.<thread>.fetch.tmp` (removed at start if a
    /// crash leaves it), opens it, then renames it to `to`: the handle
    /// stays valid whatever happens to the name. Not synced: a copy of
    /// what the bucket holds.
    fn fetch(&self, relative: &str, to: &std::path::Path) -> std::io::Result<std::fs::File> {
        use std::io::Write;
        let location = self
            .target
            .object(relative)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let store = self.store.clone();
        let bytes = self
            .handle
            .block_on(async move { store.get(&location).await?.bytes().await })
            .map_err(|e| {
                std::io::Error::other(format!(
                    "not on the local disk, and fetching it from {} failed: {e}",
                    self.target.url
                ))
            })?;
        let thread: String = format!("{:?}", std::thread::current().id())
            .chars()
            .filter(char::is_ascii_digit)
            .collect();
        let tmp = to.with_extension(format!(
            "parquet.{thread}.fetch{}",
            crate::persist::layout::TMP_SUFFIX
        ));
        // A blocking thread (scan or compaction): std::fs is the right tool.
        #[allow(clippy::disallowed_methods)]
        let file = (|| {
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            drop(file);
            let file = std::fs::File::open(&tmp)?;
            std::fs::rename(&tmp, to)?;
            Ok(file)
        })();
        match &file {
            Ok(_) => {
                self.status.files_fetched.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                #[allow(clippy::disallowed_methods)]
                let _ = std::fs::remove_file(&tmp);
            }
        }
        file
    }
}

/// Start-up check (main thread, before the shards): lists the node prefix
/// and reads the node manifest. A refusal is an error; an unreachable
/// store is `Ok(None)` after a warning (the uploader lists again later).
pub fn probe(
    runtime: &tokio::runtime::Runtime,
    configured: &Configured,
    token: &str,
    local: &Manifest,
) -> Result<Option<Listing>, RemoteError> {
    let listed = runtime.block_on(uploader::list(&*configured.store, &configured.target));
    match listed {
        Ok(listing) => {
            check_owner(&configured.target, &listing, token, local)?;
            Ok(Some(listing))
        }
        Err(error) if refused(&error) => Err(RemoteError::Refused {
            url: configured.target.url.clone(),
            detail: error.to_string(),
        }),
        Err(uploader::ListError::Manifest(detail)) => Err(RemoteError::Manifest {
            url: configured.target.url.clone(),
            detail,
        }),
        Err(error) => {
            tracing::warn!(
                url = %configured.target.url,
                %error,
                "object store unreachable at start; ingest goes on, uploads begin when it answers"
            );
            Ok(None)
        }
    }
}

/// The node prefix belongs to this data directory: its manifest has this
/// data directory's token, or there is none and every object there is one
/// this data directory's upload journal or its local catalog (`local`)
/// names (file names repeat between data directories, so writing next to
/// another's files would overwrite them).
pub fn check_owner(
    target: &Target,
    listing: &Listing,
    token: &str,
    local: &Manifest,
) -> Result<(), RemoteError> {
    let Some(found) = &listing.manifest else {
        let known = listing.written_by(token, local);
        let unknown = listing
            .objects
            .keys()
            .filter(|p| !known.contains(p.as_str()))
            .count();
        if unknown > 0 {
            return Err(RemoteError::NodeTaken {
                url: target.url.clone(),
                node_id: target.node_id.clone(),
                found: format!(
                    "no manifest, but {unknown} files this data directory did not write"
                ),
            });
        }
        return Ok(());
    };
    match &found.node {
        Some(node) if node.token == token => Ok(()),
        Some(node) => Err(RemoteError::NodeTaken {
            url: target.url.clone(),
            node_id: target.node_id.clone(),
            found: node.token.clone(),
        }),
        None => Err(RemoteError::NodeTaken {
            url: target.url.clone(),
            node_id: target.node_id.clone(),
            found: "absent".to_string(),
        }),
    }
}

/// The store answered and said no (as opposed to: did not answer).
fn refused(error: &uploader::ListError) -> bool {
    matches!(
        error,
        uploader::ListError::Store(
            object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
                | object_store::Error::NotFound { .. }
        )
    ) || {
        // Other 4xx answers (no such bucket on a list, 400 for a wrong
        // region, …) come as Generic errors whose text carries the status
        // (the client's error type with the status is not public).
        let text = error.to_string();
        text.contains("status code: 4") || text.contains("Client error with status 4")
    }
}

/// A fresh random token (32 hex digits) for a data directory's node.
pub fn new_token() -> String {
    let mut bytes = [0u8; 16];
    // SAFETY: the buffer is valid for its length.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        // No entropy source: the time and pid still differ between machines
        // in practice.
        let seed = crate::clock::now_ns() as u128 ^ ((std::process::id() as u128) << 64);
        bytes = seed.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str, node_id: &str) -> ObjectStoreConfig {
        ObjectStoreConfig {
            url: Some(url.to_string()),
            node_id: Some(node_id.to_string()),
            region: Some("us-east-1".to_string()),
            ..ObjectStoreConfig::default()
        }
    }

    /// Goal: the bucket layout is `<prefix>/node=<id>/<local path>`, local
    /// names (escapes included) unchanged, and only objects under the node
    /// prefix map back to manifest paths. Method: configure from URLs.
    #[test]
    fn objects_sit_under_the_prefix_and_the_node() {
        let configured = configure(&config("s3://bucket/fleet/eu/", "ingest-1"))
            .expect("valid")
            .expect("configured");
        let target = configured.target;
        assert_eq!(target.node_prefix.as_ref(), "fleet/eu/node=ingest-1");
        let path = "db=my%2Fdb/table=cpu/date=2026-12-04/1-2-s000.parquet";
        let object = target.object(path).expect("valid path");
        assert_eq!(
            object.as_ref(),
            "fleet/eu/node=ingest-1/db=my%2Fdb/table=cpu/date=2026-12-04/1-2-s000.parquet"
        );
        assert_eq!(target.relative(&object).as_deref(), Some(path));
        let other = StorePath::from("fleet/eu/node=ingest-10/x.parquet");
        assert_eq!(target.relative(&other), None, "another node's object");
        let bare = configure(&config("s3://bucket", "n"))
            .expect("valid")
            .expect("configured");
        assert_eq!(bare.target.node_prefix.as_ref(), "node=n");
    }

    /// Goal: unusable settings are refused with the reason, before anything
    /// is uploaded. Method: bad schemes and node ids.
    #[test]
    fn unusable_urls_and_node_ids_are_refused() {
        for (url, node, needle) in [
            ("bucket/prefix", "n", "no scheme"),
            ("ftp://bucket", "n", "not one of s3, gs, az, file"),
            ("s3://bucket", "a/b", "not a plain name"),
            ("s3://bucket", "..", "not a plain name"),
            ("s3://bucket", "", "not a plain name"),
        ] {
            let error = configure(&config(url, node)).err().expect("refused");
            assert!(error.to_string().contains(needle), "{url} {node}: {error}");
        }
        assert!(configure(&ObjectStoreConfig::default())
            .expect("no url is fine")
            .is_none());
    }
}
