//! One shard: the state a core owns (WAL, store, catalog replica, gunzip
//! buffer, admission bounds, metrics) and the work other cores ask of it.
//!
//! Everything here is single-threaded (`Rc`, `Cell`, `RefCell`); no borrow
//! is held across an `.await`. Other cores reach a shard only through
//! [`crate::route::Message`]s, handled by [`Shard::handle`].
//!
//! # Acknowledge only what is synced, apply in log order
//!
//! A sub-batch is appended to the WAL and queued for the store with its
//! sequence number. When the sync covering sequence `s` returns, the waiter
//! applies every queued sub-batch up to `s`, in sequence order, before it
//! answers. So the store sees writes in exactly the order the WAL will
//! replay them ("later write wins" agrees live and after a restart), and a
//! point is queryable before its 204 is sent.

use std::cell::{Cell, RefCell};
use std::collections::{HashSet, VecDeque};
use std::rc::Rc;
use std::time::Instant;

use futures_channel::oneshot;
use glommio::TaskQueueHandle;

use crate::auth::Authorizer;
use crate::backpressure::{Admission, Overload};
use crate::batch::{self, BatchEncoder, BatchReader, EncodedBatch, Kept};
use crate::catalog::{self, Catalog, Decision, Entry, Proposal};
use crate::config::Config;
use crate::gzip::Gunzip;
use crate::line_protocol::SeriesKeys;
use crate::metrics::{Gauges, ShardMetrics, Snapshot};
use crate::packed::{Packer, Unpacker};
use crate::persist::cache::FileCache;
use crate::persist::manifest::{self, Commit, CommitOutcome, FileEntry, Manifest, WalState};
use crate::persist::parquet::LoadRequest;
use crate::persist::source::Source;
use crate::retention::{self, Period};
use crate::route::{self, Message, Peers, RemoteError, CATALOG_OWNER};
use crate::store::{
    aggregate, AggregateRequest, Deadline, Persisted, ScanError, ScanRequest, ScanResponse,
    ShardStore,
};
use crate::wal::{self, Sequence, Wal, WalError};

/// Scans restarted because snapshots kept completing under them, before
/// the query is refused as busy.
const SCAN_ATTEMPTS: usize = 8;

/// WAL record kinds. Kind 1 was batch format 1 (rows without
/// `tags_len`/`fields_len`, see [`crate::batch`]); no release wrote it, and
/// replay refuses it (and every unknown kind) instead of dropping it.
/// Kind 3 is a plain sub-batch: all a shard's WAL held before packing, and
/// still written when packing would not make a record smaller. Kind 4 is
/// a packed sub-batch ([`crate::packed`]).
pub const RECORD_BATCH: u8 = 3;
pub const RECORD_CATALOG: u8 = 2;
pub const RECORD_PACKED: u8 = 4;

/// A sub-batch as a WAL record: packed against the dictionary of the
/// segment the log places it in ([`wal::Payload`]). The packer is borrowed
/// only during an attempt (from the log's first ask to its settle, with no
/// await between), never across the waits of [`Wal::append_ready_payload`].
struct PackedRecord<'a> {
    packer: &'a RefCell<Packer>,
    held: Option<std::cell::RefMut<'a, Packer>>,
    batch: &'a EncodedBatch,
}

impl wal::Payload for PackedRecord<'_> {
    fn bytes_max(&self) -> usize {
        self.batch.len()
    }

    fn record_for(&mut self, segment: u64) -> (u8, &[u8]) {
        let packer = self.held.get_or_insert_with(|| self.packer.borrow_mut());
        match packer.pack(segment, &self.batch.reader(), self.batch.len()) {
            Some(packed) => (RECORD_PACKED, packed),
            None => (RECORD_BATCH, self.batch.as_bytes()),
        }
    }

    fn settle(&mut self, placed: bool) {
        if let Some(mut packer) = self.held.take() {
            packer.settle(placed);
        }
    }
}

/// How often each shard drops its expired in-memory rows (and forgets its
/// expired files), and how often the catalog owner's persister deletes
/// expired Parquet files.
pub const EXPIRY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The authoritative catalog and its log, and the persisted catalog
/// (manifest), on the owner shard only.
pub struct CatalogOwner {
    pub catalog: RefCell<Catalog>,
    pub wal: Wal,
    pub manifest: RefCell<Manifest>,
    /// One manifest rewrite at a time.
    pub manifest_lock: glommio::sync::Semaphore,
    /// Shards whose last snapshot before shutdown was recorded.
    pub final_commits: Cell<usize>,
    /// The version of the manifest last written (the one found at start
    /// is 1); published with it to the object store's uploader.
    pub version: Cell<u64>,
}

pub struct Shard {
    pub id: usize,
    pub count: usize,
    pub config: Rc<Config>,
    pub wal: Wal,
    pub store: RefCell<ShardStore>,
    /// This shard's replica of the catalog.
    pub catalog: RefCell<Catalog>,
    pub owner: Option<CatalogOwner>,
    pub gunzip: RefCell<Gunzip>,
    pub admission: Rc<Admission>,
    pub metrics: ShardMetrics,
    pub peers: Peers,
    pub authorizer: Authorizer,
    /// Synced-or-syncing sub-batches not yet applied to the store.
    apply_queue: RefCell<VecDeque<(Sequence, EncodedBatch)>>,
    /// The dictionary of the WAL's open segment ([`crate::packed`]).
    packer: RefCell<Packer>,
    /// Series keys of the lines this shard parsed ([`SeriesKeys`]).
    pub series_keys: RefCell<SeriesKeys>,
    /// The dictionary of the WAL segment being replayed (at start only).
    unpacker: RefCell<Unpacker>,
    /// The last WAL sequence applied to the store: the live store holds
    /// exactly the records up to it (and what was replayed at start).
    applied: Cell<u64>,
    /// This shard's Parquet files (oldest snapshot first), as the manifest
    /// names them.
    pub files: RefCell<Vec<FileEntry>>,
    /// Bumped whenever `files` changes (a snapshot completed: its rows
    /// moved from memory to files), so a scan that awaited can tell.
    pub files_version: Cell<u64>,
    /// `<data_dir>/parquet`.
    pub parquet_root: std::path::PathBuf,
    /// Opens the files of scans and compactions: `parquet_root`, and the
    /// object store behind it ([`Source`]).
    pub files_source: Source,
    /// Decoded Parquet files kept for the next scans (`query.file_cache_bytes`).
    pub file_cache: FileCache,
    /// This run's WAL generation.
    pub generation: u64,
    /// Persistence state of this shard (see `crate::persister`).
    pub persisting: PersistState,
    /// The object store's shared state, when one is configured
    /// ([`crate::remote`]).
    pub remote: Option<std::sync::Arc<crate::remote::Remote>>,
    /// Why this shard stopped acknowledging, if it did.
    unhealthy: RefCell<Option<String>>,
    pub started_ns: i64,
    pub started: Instant,
    request_counter: Cell<u64>,
    /// Lower-priority queue for queries, so they never stall ingest.
    pub query_queue: TaskQueueHandle,
    /// Set on SIGTERM/SIGINT (the only cross-thread state: a control flag).
    pub shutdown: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// What a shard is built from.
pub struct ShardParts {
    pub id: usize,
    pub count: usize,
    pub config: Rc<Config>,
    pub wal: Wal,
    pub store: ShardStore,
    pub catalog: Catalog,
    pub owner: Option<CatalogOwner>,
    pub peers: Peers,
    pub query_queue: TaskQueueHandle,
    pub shutdown: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub files: Vec<FileEntry>,
    pub generation: u64,
    pub remote: Option<std::sync::Arc<crate::remote::Remote>>,
}

/// Where a shard's persistence stands.
pub struct PersistState {
    /// One snapshot at a time (the loop and the one at shutdown).
    pub lock: glommio::sync::Semaphore,
    /// Everything replayed at start is persisted.
    pub replay_persisted: Cell<bool>,
    /// Snapshots attempted (names the files of a retry apart).
    pub attempts: Cell<u32>,
    /// WAL segments of earlier runs may remain in this shard's directory.
    pub old_segments: Cell<bool>,
    pub snapshots: Cell<u64>,
    /// Catalog owner: Parquet files deleted because all their rows expired.
    pub files_expired: Cell<u64>,
    /// Compactions done and the files they merged away.
    pub compactions: Cell<u64>,
    pub files_compacted: Cell<u64>,
    /// The WAL sequence of this run persisted through.
    pub through: Cell<u64>,
    pub failures: Cell<u64>,
    pub rows: Cell<u64>,
    pub last_duration_us: Cell<u64>,
    pub last_started: Cell<Instant>,
    /// [`Wal::appended_bytes`] when the last snapshot began: what a crash
    /// now would replay is at least the WAL appended since.
    pub wal_bytes_at_start: Cell<u64>,
    /// With an object store: persisted WAL positions whose segments wait
    /// until the manifest version recording them is in the bucket (oldest
    /// first; [`crate::persister`]).
    pub wal_waiting: RefCell<VecDeque<WalRelease>>,
}

/// Segments that may go once manifest `version` is confirmed: this run's
/// through `through`, and earlier runs' when the floor passed them.
#[derive(Clone, Copy, Debug)]
pub struct WalRelease {
    pub version: u64,
    pub through: Sequence,
    pub floor_generation: u64,
}

impl Shard {
    pub fn new(parts: ShardParts) -> Rc<Shard> {
        let config = parts.config;
        let parquet_root = config
            .server
            .data_dir
            .join(crate::persist::layout::PARQUET_DIR);
        Rc::new(Shard {
            id: parts.id,
            count: parts.count,
            wal: parts.wal,
            store: RefCell::new(parts.store),
            catalog: RefCell::new(parts.catalog),
            owner: parts.owner,
            gunzip: RefCell::new(Gunzip::new(config.http.body_bytes_max)),
            admission: Admission::new(
                config.http.connections_per_shard_max,
                inflight_bytes_per_shard(&config, parts.count),
                config.backpressure.queued_sub_batches_max,
            ),
            metrics: ShardMetrics::new(),
            peers: parts.peers,
            authorizer: Authorizer::new(&config.auth),
            apply_queue: RefCell::new(VecDeque::new()),
            packer: RefCell::new(Packer::new()),
            series_keys: RefCell::new(SeriesKeys::new()),
            unpacker: RefCell::new(Unpacker::new()),
            applied: Cell::new(0),
            files: RefCell::new(parts.files),
            files_version: Cell::new(0),
            parquet_root: parquet_root.clone(),
            files_source: Source::new(
                parquet_root.clone(),
                parts
                    .remote
                    .clone()
                    .map(|remote| remote as std::sync::Arc<dyn crate::persist::source::Fetch>),
            ),
            file_cache: FileCache::new(config.query.file_cache_bytes),
            generation: parts.generation,
            persisting: PersistState {
                lock: glommio::sync::Semaphore::new(1),
                replay_persisted: Cell::new(false),
                attempts: Cell::new(0),
                old_segments: Cell::new(true),
                snapshots: Cell::new(0),
                files_expired: Cell::new(0),
                compactions: Cell::new(0),
                files_compacted: Cell::new(0),
                through: Cell::new(0),
                failures: Cell::new(0),
                rows: Cell::new(0),
                last_duration_us: Cell::new(0),
                last_started: Cell::new(crate::clock::monotonic()),
                wal_bytes_at_start: Cell::new(0),
                wal_waiting: RefCell::new(VecDeque::new()),
            },
            remote: parts.remote,
            unhealthy: RefCell::new(None),
            started_ns: crate::clock::now_ns(),
            started: crate::clock::monotonic(),
            request_counter: Cell::new(0),
            query_queue: parts.query_queue,
            shutdown: parts.shutdown,
            config,
        })
    }

    pub fn shutting_down(&self) -> bool {
        self.shutdown.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A request id unique in this process: shard, counter, start time.
    pub fn request_id(&self) -> String {
        let n = self.request_counter.get().wrapping_add(1);
        self.request_counter.set(n);
        let t = self.started_ns as u64;
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            (t >> 32) as u32,
            (t >> 16) as u16,
            self.id as u16,
            (n >> 48) as u16,
            n & 0xffff_ffff_ffff
        )
    }

    /// `Err(cause)` once the shard stopped acknowledging writes.
    pub fn health(&self) -> Result<(), String> {
        if let Some(cause) = self.unhealthy.borrow().as_ref() {
            return Err(cause.clone());
        }
        self.wal
            .health()
            .map_err(|e| format!("WAL of shard {}: {e}", self.id))
    }

    /// Why this shard's WAL (or the catalog's, on the owner) cannot make
    /// its next segment, while it cannot.
    fn segment_failure(&self) -> Option<String> {
        let catalog = self.owner.as_ref().map(|o| ("the catalog WAL", &o.wal));
        std::iter::once(("the WAL", &self.wal))
            .chain(catalog)
            .find_map(|(log, wal)| {
                let cause = wal.next_segment_failure()?;
                Some(format!(
                    "{log} of shard {} cannot make its next segment ({cause}); writes are refused with 503 once the open segment is full, and resume by themselves when it can be made",
                    self.id
                ))
            })
    }

    fn mark_unhealthy(&self, cause: String) {
        let mut unhealthy = self.unhealthy.borrow_mut();
        if unhealthy.is_none() {
            tracing::error!(shard = self.id, %cause, "shard unhealthy: acknowledging no more writes");
            *unhealthy = Some(cause);
        }
    }

    /// Writes one sub-batch owned by this shard: WAL append, sync, apply.
    pub async fn write_local(&self, payload: EncodedBatch) -> Result<(), RemoteError> {
        if let Err(cause) = self.health() {
            return Err(RemoteError::Unhealthy { cause });
        }
        if !self.store.borrow().has_room(payload.len()) {
            return Err(RemoteError::Overloaded {
                cause: Overload::StoreMemory,
            });
        }
        let appended = {
            let mut record = PackedRecord {
                packer: &self.packer,
                held: None,
                batch: &payload,
            };
            self.wal.append_ready_payload(&mut record).await
        };
        let sequence = appended.map_err(remote_error)?;
        self.apply_queue.borrow_mut().push_back((sequence, payload));
        if let Err(error) = self.wal.synced(sequence).await {
            // Sub-batches of earlier, successful syncs may still be queued
            // (their waiters have not run yet): they are acknowledged, so
            // they enter the store; the rest never will.
            self.apply_through(self.wal.synced_through());
            self.apply_queue.borrow_mut().clear();
            return Err(self.failed_batch(format!("WAL of shard {}", self.id), error));
        }
        self.apply_through(sequence);
        Ok(())
    }

    /// A log's batch failed: the shard acknowledges nothing more. Disk full
    /// stays a 503 (`NoSpace`), whichever log hit it.
    fn failed_batch(&self, log: String, error: WalError) -> RemoteError {
        let cause = format!("{log}: {error}");
        self.mark_unhealthy(cause.clone());
        match error {
            WalError::NoSpace(_) => RemoteError::NoSpace,
            WalError::Failed(_) => RemoteError::Failed { cause },
            other => remote_error(other),
        }
    }

    /// Applies every queued sub-batch with sequence ≤ `sequence`, in order.
    fn apply_through(&self, sequence: Sequence) {
        loop {
            let next = {
                let mut queue = self.apply_queue.borrow_mut();
                match queue.front() {
                    Some((s, _)) if *s <= sequence => queue.pop_front(),
                    _ => None,
                }
            };
            let Some((applied, payload)) = next else {
                break;
            };
            self.applied.set(applied.0);
            let reader = payload.reader();
            self.store.borrow_mut().apply(&reader);
            ShardMetrics::add(&self.metrics.sub_batches_applied, 1);
            ShardMetrics::add(&self.metrics.points_accepted, u64::from(reader.row_count()));
        }
    }

    /// Replays one WAL record at start: keeps the rows this shard owns.
    /// A record that is not a batch this build reads (unknown kind, or a
    /// batch that does not decode although its checksum holds) may hold
    /// acknowledged points: it stops start-up, unless `wal.skip_corrupt`
    /// says to log it and go on.
    /// Rows a later run's first snapshot already persisted
    /// ([`WalState::row_persisted`]) are skipped.
    ///
    /// Every shard reads every WAL directory (a record's rows belong to
    /// the shards of the run that wrote it); a record this shard keeps no
    /// row of is skipped after a look at its series hashes alone
    /// ([`batch::kept_rows`]), without the full validation: the shard that
    /// keeps its rows validates it (so damage still stops start-up there),
    /// and with an unchanged shard count each record is validated once,
    /// not once per shard (it was most of the replay's time: issue 14's
    /// restart measurements, `bench/RESULTS.md`).
    /// A packed record ([`RECORD_PACKED`]) is read whole by every shard
    /// (even when `persisted`: all records that keep no row), for the
    /// definitions later records of its segment use; only the rows this
    /// shard keeps become a sub-batch.
    pub fn replay_record(
        &self,
        record: &wal::RecordRef<'_>,
        persisted_record: bool,
        persisted: &WalState,
    ) -> Result<(), String> {
        let generation = record.generation;
        let by_row = persisted.has_runs_after(generation);
        let owned = |hash| {
            !persisted_record
                && route::owner(hash, self.count) == self.id
                && !(by_row && persisted.row_persisted(generation, hash))
        };
        if record.kind == RECORD_PACKED {
            let segment = (generation, record.dir, record.segment);
            let unpacked = self
                .unpacker
                .borrow_mut()
                .unpack(segment, record.payload, owned);
            return match unpacked {
                Ok(unpacked) => match unpacked.kept {
                    Some(bytes) => self.replay_batch(&bytes, Some(Kept::All), owned),
                    None => Ok(()),
                },
                Err(error) => self.replay_refused(error.to_string()),
            };
        }
        if persisted_record {
            return Ok(());
        }
        let kept = match record.kind {
            RECORD_BATCH => batch::kept_rows(record.payload, owned).ok(),
            _ => None,
        };
        if kept == Some(Kept::None) {
            return Ok(());
        }
        match record.kind {
            RECORD_BATCH => self.replay_batch(record.payload, kept, owned),
            other => self.replay_refused(format!(
                "record kind {other} is not one this build reads (batch kinds {RECORD_BATCH} and {RECORD_PACKED})"
            )),
        }
    }

    /// Replay is over: the last segment's dictionary (up to
    /// [`crate::packed::DICTIONARY_BYTES_MAX`]) is freed.
    pub fn replay_done(&self) {
        *self.unpacker.borrow_mut() = Unpacker::new();
    }

    /// A replayed record that does not decode: stops start-up, unless
    /// `wal.skip_corrupt`.
    fn replay_refused(&self, error: String) -> Result<(), String> {
        if self.config.wal.skip_corrupt {
            tracing::error!(shard = self.id, %error, "WAL record skipped (wal.skip_corrupt)");
            return Ok(());
        }
        Err(error)
    }

    /// Applies the rows of a replayed sub-batch that pass `owned`.
    fn replay_batch(
        &self,
        payload: &[u8],
        kept: Option<Kept>,
        owned: impl Fn(u64) -> bool,
    ) -> Result<(), String> {
        let reader = match BatchReader::new(payload) {
            Ok(reader) => reader,
            Err(error) => return self.replay_refused(error.to_string()),
        };
        if kept == Some(Kept::All) || reader.rows().all(|row| owned(row.series_hash)) {
            self.store.borrow_mut().apply(&reader);
            return Ok(());
        }
        let mut encoder = BatchEncoder::new(reader.database());
        for row in reader.rows().filter(|row| owned(row.series_hash)) {
            encoder.push_row(&row);
        }
        if !encoder.is_empty() {
            let mine = encoder.take(reader.database());
            let reader = mine.reader();
            self.store.borrow_mut().apply(&reader);
        }
        Ok(())
    }

    /// Asks the catalog owner to decide `proposals` (locally on the owner).
    pub async fn propose(
        self: &Rc<Self>,
        proposals: Vec<Proposal>,
    ) -> Result<Vec<Decision>, RemoteError> {
        let decisions = if self.id == CATALOG_OWNER {
            self.decide(&proposals).await?
        } else {
            let (reply, answer) = oneshot::channel();
            self.peers.try_send(
                CATALOG_OWNER,
                Message::Propose {
                    proposals: proposals.clone(),
                    reply,
                },
            )?;
            route::reply(answer).await?
        };
        let mut replica = self.catalog.borrow_mut();
        for (proposal, decision) in proposals.iter().zip(&decisions) {
            replica.learn(proposal, *decision);
        }
        Ok(decisions)
    }

    /// Owner side: decide, log the new entries, wait for their sync.
    async fn decide(&self, proposals: &[Proposal]) -> Result<Vec<Decision>, RemoteError> {
        let owner = self
            .owner
            .as_ref()
            .expect("decide runs on the catalog owner");
        let mut entries = Vec::new();
        let decisions: Vec<Decision> = {
            let mut catalog = owner.catalog.borrow_mut();
            proposals
                .iter()
                .map(|proposal| {
                    let (decision, entry) = catalog.decide(proposal, &self.config.schema);
                    entries.extend(entry);
                    decision
                })
                .collect()
        };
        if !entries.is_empty() {
            self.log_catalog(&entries).await?;
        }
        {
            let mut replica = self.catalog.borrow_mut();
            entries.iter().for_each(|entry| replica.apply(entry));
        }
        // Every shard learns a new database and its retention before the
        // write (or statement) that created or changed them is
        // acknowledged: `SHOW DATABASES` on any shard lists it, and every
        // shard's write path refuses expired points by the same period.
        for entry in entries
            .iter()
            .filter(|e| matches!(e, Entry::CreateDatabase(_) | Entry::SetRetention { .. }))
        {
            self.broadcast(entry).await?;
        }
        Ok(decisions)
    }

    /// Sends `entry` to every other shard and waits until each applied it.
    async fn broadcast(&self, entry: &Entry) -> Result<(), RemoteError> {
        let mut answers = Vec::new();
        for peer in (0..self.count).filter(|p| *p != self.id) {
            let (reply, answer) = oneshot::channel();
            self.peers.try_send(
                peer,
                Message::Broadcast {
                    entry: entry.clone(),
                    reply,
                },
            )?;
            answers.push(answer);
        }
        for answer in answers {
            route::reply(answer).await?;
        }
        Ok(())
    }

    async fn log_catalog(&self, entries: &[Entry]) -> Result<(), RemoteError> {
        let owner = self.owner.as_ref().expect("catalog log lives on the owner");
        let payload = catalog::encode_entries(entries);
        let sequence = owner
            .wal
            .append_ready(RECORD_CATALOG, &payload)
            .await
            .map_err(remote_error)?;
        owner
            .wal
            .synced(sequence)
            .await
            .map_err(|error| self.failed_batch("catalog WAL".to_string(), error))
    }

    /// Drops a database everywhere: logged by the owner, then applied by
    /// every shard (catalog replica and store).
    pub async fn drop_database(self: &Rc<Self>, name: &str) -> Result<(), RemoteError> {
        if self.id != CATALOG_OWNER {
            let (reply, answer) = oneshot::channel();
            self.peers.try_send(
                CATALOG_OWNER,
                Message::Broadcast {
                    entry: Entry::DropDatabase(name.to_string()),
                    reply,
                },
            )?;
            return route::reply(answer).await;
        }
        let entry = Entry::DropDatabase(name.to_string());
        self.log_catalog(std::slice::from_ref(&entry)).await?;
        if let Some(owner) = &self.owner {
            owner.catalog.borrow_mut().apply(&entry);
        }
        self.apply_broadcast(&entry);
        self.broadcast(&entry).await?;
        // Its Parquet files leave the manifest, then the disk.
        let removed: Vec<String> = match &self.owner {
            Some(owner) => owner
                .manifest
                .borrow()
                .files_of(name)
                .map(|f| f.path.clone())
                .collect(),
            None => Vec::new(),
        };
        if !removed.is_empty() {
            self.record_persisted(Commit {
                shard: self.id as u32,
                shard_count: self.count as u32,
                generation: self.generation,
                removed,
                ..Commit::default()
            })
            .await?;
        }
        Ok(())
    }

    fn apply_broadcast(&self, entry: &Entry) {
        self.catalog.borrow_mut().apply(entry);
        if let Entry::DropDatabase(name) = entry {
            self.store.borrow_mut().drop_database(name);
            let dropped: Vec<String> = self
                .files
                .borrow()
                .iter()
                .filter(|f| f.database == *name)
                .map(|f| f.path.clone())
                .collect();
            self.forget_files(&dropped);
        }
    }

    /// Scans this shard's rows: its Parquet files (loaded on a blocking
    /// thread, only the files, row groups and columns the request needs)
    /// and its memory, as one store.
    ///
    /// Files are read while the shard goes on; if the files changed
    /// meanwhile (a snapshot completed: its rows left memory for files this
    /// scan did not read; or expired files were forgotten, and may be gone
    /// from disk before this scan opened them), the scan starts over, so it
    /// never misses rows in transit nor fails on a file deleted under it.
    pub async fn scan_local(&self, request: &ScanRequest) -> Result<ScanResponse, ScanError> {
        if let ScanRequest::Aggregate(aggregate) = request {
            return self
                .aggregate_local(request, aggregate)
                .await
                .map(ScanResponse::Aggregates);
        }
        for _ in 0..SCAN_ATTEMPTS {
            let version = self.files_version.get();
            let loads = self.files_to_load(request)?;
            if loads.is_empty() {
                return self
                    .store
                    .borrow()
                    .scan_with(request, &Persisted::default());
            }
            // Every file decoded already (a dashboard's refresh): no
            // reader thread; the scan itself runs here either way.
            let loaded = match cached_files(&loads, &self.file_cache) {
                Some(persisted) => Ok(persisted),
                None => {
                    let source = self.files_source.clone();
                    let cache = self.file_cache.clone();
                    let deadline = request.deadline();
                    crate::blocking::run_for_query(move || {
                        load_files(&source, loads, &cache, deadline)
                    })
                    .await
                    .map_err(|error| ScanError::PersistedFile {
                        path: root_display(&self.parquet_root),
                        error: format!("cannot start a reader thread: {error}"),
                    })?
                }
            };
            if self.files_version.get() == version {
                return self.store.borrow().scan_with(request, &loaded?);
            }
        }
        Err(ScanError::Busy)
    }

    /// Aggregates this shard's rows without holding them: the files are
    /// read and folded one at a time on a blocking thread (an aggregate
    /// over a hundred million persisted rows needs the memory of one file),
    /// then the memory, under the same restart rule as [`Self::scan_local`].
    /// A series found out of time order is held in the next attempt
    /// ([`aggregate::Finished::Again`]).
    async fn aggregate_local(
        &self,
        request: &ScanRequest,
        aggregate: &AggregateRequest,
    ) -> Result<Vec<aggregate::GroupAggregates>, ScanError> {
        let mut held = aggregate::HeldSeries::default();
        for _ in 0..SCAN_ATTEMPTS {
            let version = self.files_version.get();
            let loads = self.files_to_load(request)?;
            let mut aggregator = aggregate::Aggregator::new(aggregate.clone(), held.clone());
            if !loads.is_empty() {
                let source = self.files_source.clone();
                let cache = self.file_cache.clone();
                let deadline = aggregate.deadline;
                let fed = crate::blocking::run_for_query(move || -> Result<_, ScanError> {
                    for load in loads {
                        deadline.check()?;
                        aggregator.feed(&*load.read(&source, &cache)?)?;
                    }
                    Ok(aggregator)
                })
                .await
                .map_err(|error| ScanError::PersistedFile {
                    path: root_display(&self.parquet_root),
                    error: format!("cannot start a reader thread: {error}"),
                })?;
                // A file may have gone (expired, compacted) while it was
                // read: start over when the list changed.
                if self.files_version.get() != version {
                    continue;
                }
                aggregator = fed?;
            }
            if self.files_version.get() != version {
                continue;
            }
            self.store.borrow().feed_memory(&mut aggregator)?;
            match aggregator.finish()? {
                aggregate::Finished::Done(groups) => return Ok(groups),
                aggregate::Finished::Again(series) => held.extend(series),
            }
        }
        Err(ScanError::Busy)
    }

    /// The files a request reads, oldest first, with what to read of each.
    fn files_to_load(&self, request: &ScanRequest) -> Result<Vec<FileLoad>, ScanError> {
        let files = self.files.borrow();
        match request {
            ScanRequest::Rows(rows) => {
                let wanted: Vec<String> = rows
                    .fields
                    .iter()
                    .chain(&rows.condition_fields)
                    .cloned()
                    .collect();
                let load = LoadRequest {
                    fields: Some(wanted),
                    time_min_ns: rows.time_min_ns,
                    time_max_ns: rows.time_max_ns,
                    owner: None,
                };
                let chosen: Vec<&FileEntry> = files
                    .iter()
                    .filter(|f| {
                        f.database == rows.database
                            && rows.measurements.contains(&f.table)
                            && f.time_max_ns >= rows.time_min_ns
                            && f.time_min_ns <= rows.time_max_ns
                    })
                    .collect();
                // The same bound the memory scan applies to candidates,
                // before anything is read.
                let candidates: u64 = chosen.iter().map(|f| f.rows).sum();
                if candidates > rows.row_limit.saturating_mul(4).max(1024) as u64 {
                    return Err(ScanError::TooManyRows {
                        limit: rows.row_limit,
                    });
                }
                Ok(chosen
                    .into_iter()
                    .map(|f| self.load_for(f, &load))
                    .collect())
            }
            ScanRequest::Aggregate(aggregate) => {
                // No bound on rows: they are folded, not held.
                let load = LoadRequest {
                    fields: Some(aggregate.fields.clone()),
                    time_min_ns: aggregate.time_min_ns,
                    time_max_ns: aggregate.time_max_ns,
                    owner: None,
                };
                Ok(files
                    .iter()
                    .filter(|f| {
                        f.database == aggregate.database
                            && f.table == aggregate.measurement
                            && f.time_max_ns >= aggregate.time_min_ns
                            && f.time_min_ns <= aggregate.time_max_ns
                    })
                    .map(|f| self.load_for(f, &load))
                    .collect())
            }
            ScanRequest::Schema(schema) => {
                let load = LoadRequest {
                    fields: Some(Vec::new()),
                    time_min_ns: schema.time_min_ns,
                    time_max_ns: i64::MAX,
                    owner: None,
                };
                Ok(files
                    .iter()
                    .filter(|f| {
                        f.database == schema.database
                            && schema.measurements.matches(&f.table)
                            && f.time_max_ns >= schema.time_min_ns
                    })
                    .map(|f| self.load_for(f, &load))
                    .collect())
            }
        }
    }

    /// What to read of `file`: a file written under another shard count
    /// holds series other shards own now; only this shard's are kept.
    /// Row groups outside the time range are left out (rare: a file is
    /// sorted by series, so its row groups span its time range).
    fn load_for(&self, file: &FileEntry, load: &LoadRequest) -> FileLoad {
        let mut request = load.clone();
        if file.shard_count as usize != self.count {
            request.owner = Some((self.id, self.count));
        }
        FileLoad {
            table: file.table.clone(),
            path: file.path.clone(),
            request,
        }
    }

    /// Records a snapshot in the manifest: through the owner's lock, the
    /// new manifest written atomically on a blocking thread, then the
    /// files it no longer names deleted. Runs on the catalog owner.
    pub async fn record_persisted(&self, mut commit: Commit) -> Result<CommitOutcome, RemoteError> {
        let owner = self
            .owner
            .as_ref()
            .expect("the manifest lives on the catalog owner");
        let _permit = owner
            .manifest_lock
            .acquire_permit(1)
            .await
            .map_err(|_| RemoteError::Gone)?;
        // Files of a database dropped while they were written are not
        // recorded, only deleted.
        let mut delete: Vec<String> = {
            let catalog = owner.catalog.borrow();
            let (kept, dropped): (Vec<FileEntry>, Vec<FileEntry>) = commit
                .added
                .drain(..)
                .partition(|f| catalog.database(&f.database).is_some());
            commit.added = kept;
            dropped.into_iter().map(|f| f.path).collect()
        };
        if commit.compaction {
            // The inputs must all still be named (one may have expired
            // meanwhile); the compacting shard unlinks them itself, after
            // its scans moved to the merged file.
            let manifest = owner.manifest.borrow();
            let named: HashSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
            if let Some(gone) = commit.removed.iter().find(|p| !named.contains(p.as_str())) {
                return Err(RemoteError::Failed {
                    cause: format!("compaction input {gone} is no longer in the catalog"),
                });
            }
        } else {
            delete.extend(commit.removed.iter().cloned());
        }
        let outcome = self.store_manifest(owner, &commit, delete).await?;
        if commit.before_shutdown && commit.shard as usize != self.id {
            owner.final_commits.set(owner.final_commits.get() + 1);
        }
        Ok(outcome)
    }

    /// Applies `commit` to a copy of the manifest, writes it atomically on
    /// a blocking thread, then deletes `delete` (files it no longer names)
    /// there; only then does the copy become the owner's manifest. The
    /// caller holds `manifest_lock`.
    async fn store_manifest(
        &self,
        owner: &CatalogOwner,
        commit: &Commit,
        delete: Vec<String>,
    ) -> Result<CommitOutcome, RemoteError> {
        let mut next = owner.manifest.borrow().clone();
        let outcome = next.apply(commit);
        next.databases = manifest::databases_of(&owner.catalog.borrow());
        next.written_ns = crate::clock::now_ns();
        let root = self.parquet_root.clone();
        let stored = next.clone();
        let result = crate::blocking::run(move || {
            manifest::store(&root, &stored)?;
            // The manifest no longer names them: a file left behind is an
            // orphan, removed at the next start, never a failed commit.
            if let Err(error) = manifest::remove_files(&root, &delete) {
                tracing::warn!(%error, "removing Parquet files the catalog no longer names failed");
            }
            Ok(())
        })
        .await
        .and_then(|stored: std::io::Result<()>| stored);
        let result = match result {
            Ok(()) => Ok(()),
            Err(error) => {
                // A failure after the rename (the directory's fsync) may
                // leave the new catalog on disk, or not after a power loss:
                // the old one is written back, so that the disk says what
                // memory says; if that fails too, the commit's files may be
                // named on disk and must stay. (Still under the manifest
                // lock: no other rewrite comes in between.)
                let root = self.parquet_root.clone();
                let previous = owner.manifest.borrow().clone();
                let restored = crate::blocking::run(move || manifest::store(&root, &previous))
                    .await
                    .is_ok_and(|stored| stored.is_ok());
                Err((error, restored))
            }
        };
        match result {
            Ok(()) => {
                let version = owner.version.get() + 1;
                owner.version.set(version);
                if let Some(remote) = &self.remote {
                    remote.publish(version, next.clone());
                }
                *owner.manifest.borrow_mut() = next;
                Ok(CommitOutcome { version, ..outcome })
            }
            Err((error, restored)) => {
                let cause = format!(
                    "writing the persisted catalog {}: {error}",
                    self.parquet_root.display()
                );
                tracing::error!(%cause, restored, "persisted catalog not rewritten; it names what it named before");
                Err(RemoteError::CatalogNotWritten {
                    cause,
                    may_name_files: !restored,
                })
            }
        }
    }

    /// Catalog owner, step 1 of deleting expired files (the order is in
    /// [`crate::persister`]): the manifest stops naming every file, of any
    /// shard, whose rows all expired at `now_ns` (the manifest is the one
    /// list of them all, files of earlier shard counts included), in one
    /// atomic rewrite; the files stay on disk. Their paths (none: nothing
    /// rewritten).
    pub async fn record_expired(&self, now_ns: i64) -> Result<Vec<String>, RemoteError> {
        let owner = self
            .owner
            .as_ref()
            .expect("the manifest lives on the catalog owner");
        let _permit = owner
            .manifest_lock
            .acquire_permit(1)
            .await
            .map_err(|_| RemoteError::Gone)?;
        let expired: Vec<String> = {
            let catalog = owner.catalog.borrow();
            let manifest = owner.manifest.borrow();
            manifest::expired_files(&manifest.files, cutoffs_at(&catalog, now_ns))
                .map(|f| f.path.clone())
                .collect()
        };
        if expired.is_empty() {
            return Ok(expired);
        }
        let commit = Commit {
            shard: self.id as u32,
            shard_count: self.count as u32,
            generation: self.generation,
            removed: expired.clone(),
            compaction: false,
            ..Commit::default()
        };
        self.store_manifest(owner, &commit, Vec::new()).await?;
        Ok(expired)
    }

    /// Catalog owner, step 2 of deleting expired files: every shard stops
    /// reading `paths` (this one at once, the others by message, each
    /// answering once done).
    pub async fn forget_everywhere(&self, paths: &[String]) -> Result<(), RemoteError> {
        let mut answers = Vec::new();
        for peer in (0..self.count).filter(|p| *p != self.id) {
            let (reply, answer) = oneshot::channel();
            self.peers.try_send(
                peer,
                Message::ForgetFiles {
                    paths: paths.to_vec(),
                    reply,
                },
            )?;
            answers.push(answer);
        }
        self.forget_files(paths);
        for answer in answers {
            route::reply(answer).await?;
        }
        Ok(())
    }

    /// Drops `paths` from this shard's files: scans no longer read them,
    /// and a scan reading files meanwhile starts over (`files_version`).
    pub fn forget_files(&self, paths: &[String]) {
        let paths: std::collections::BTreeSet<&str> = paths.iter().map(String::as_str).collect();
        let mut files = self.files.borrow_mut();
        let before = files.len();
        files.retain(|f| !paths.contains(f.path.as_str()));
        if files.len() != before {
            self.files_version.set(self.files_version.get() + 1);
        }
        let paths: Vec<String> = paths.into_iter().map(str::to_string).collect();
        self.file_cache.forget(&paths);
    }

    /// Drops the files whose rows all expired at `now_ns` from this
    /// shard's files (the catalog owner deletes them; see
    /// [`crate::persister`]). Usually the owner's message did it already;
    /// this also catches a file recorded by this shard's snapshot just as
    /// the owner expired it (the snapshot adds its files after the owner's
    /// answer, which may come after the owner's message).
    pub fn forget_expired_files(&self, now_ns: i64) {
        let expired: Vec<String> = {
            let catalog = self.catalog.borrow();
            let files = self.files.borrow();
            manifest::expired_files(&files, cutoffs_at(&catalog, now_ns))
                .map(|f| f.path.clone())
                .collect()
        };
        if !expired.is_empty() {
            self.forget_files(&expired);
        }
    }

    /// [`Shard::record_persisted`] from any shard.
    pub async fn commit_persisted(
        self: &Rc<Self>,
        commit: Commit,
    ) -> Result<CommitOutcome, RemoteError> {
        if self.id == CATALOG_OWNER {
            return self.record_persisted(commit).await;
        }
        let (reply, answer) = oneshot::channel();
        self.peers
            .try_send(CATALOG_OWNER, Message::Persist { commit, reply })?;
        route::reply(answer).await
    }

    /// The last WAL sequence applied to the store.
    pub fn applied(&self) -> Sequence {
        Sequence(self.applied.get())
    }

    /// Drops this shard's in-memory rows that expired at `now_ns`, for
    /// every database with a finite retention; the number of rows dropped.
    pub fn expire(&self, now_ns: i64) -> usize {
        let cutoffs: Vec<(String, i64)> = self
            .catalog
            .borrow()
            .databases
            .iter()
            .filter_map(|(name, db)| {
                Some((name.clone(), retention::cutoff_ns(db.retention, now_ns)?))
            })
            .collect();
        let mut store = self.store.borrow_mut();
        cutoffs
            .iter()
            .map(|(database, cutoff)| store.expire(database, *cutoff))
            .sum()
    }

    /// The expiry task: every [`EXPIRY_INTERVAL`], [`Shard::expire`] and
    /// [`Shard::forget_expired_files`] as of now, until shutdown. Runs on
    /// the query queue, below ingest. (Expired files are deleted by the
    /// catalog owner's persister, [`crate::persister`].)
    pub async fn run_expiry(self: Rc<Self>) {
        while !self.shutting_down() {
            glommio::timer::sleep(EXPIRY_INTERVAL).await;
            let now_ns = crate::clock::now_ns();
            let expired = self.expire(now_ns);
            ShardMetrics::add(&self.metrics.rows_expired, expired as u64);
            self.forget_expired_files(now_ns);
        }
    }

    /// Scans every shard's store (this one directly, the others by message).
    pub async fn scan_all(
        self: &Rc<Self>,
        request: ScanRequest,
    ) -> Result<Vec<ScanResponse>, String> {
        let mut answers = Vec::with_capacity(self.count);
        for peer in (0..self.count).filter(|p| *p != self.id) {
            let (reply, answer) = oneshot::channel();
            self.peers
                .try_send(
                    peer,
                    Message::Scan {
                        request: request.clone(),
                        reply,
                    },
                )
                .map_err(|e| format!("shard {peer}: {e:?}"))?;
            answers.push(answer);
        }
        let mut responses = Vec::with_capacity(self.count);
        responses.push(self.scan_local(&request).await.map_err(|e| e.to_string())?);
        for answer in answers {
            match answer.await {
                Ok(Ok(response)) => responses.push(response),
                Ok(Err(error)) => return Err(error.to_string()),
                Err(_) => return Err("a shard went away during the query".to_string()),
            }
        }
        Ok(responses)
    }

    /// Handles a message from another shard, each in its own task.
    pub fn handle(self: &Rc<Self>, message: Message) {
        let shard = self.clone();
        match message {
            Message::Write { payload, reply } => {
                let permit = match shard.admission.admit_sub_batch() {
                    Ok(permit) => permit,
                    Err(refused) => {
                        let _ = reply.send(Err(RemoteError::Overloaded {
                            cause: refused.cause,
                        }));
                        return;
                    }
                };
                glommio::spawn_local(async move {
                    let result = shard.write_local(payload).await;
                    drop(permit);
                    let _ = reply.send(result);
                })
                .detach();
            }
            Message::Propose { proposals, reply } => {
                glommio::spawn_local(async move {
                    let _ = reply.send(shard.decide(&proposals).await);
                })
                .detach();
            }
            Message::Broadcast { entry, reply } => {
                if shard.id == CATALOG_OWNER && matches!(entry, Entry::DropDatabase(_)) {
                    // A drop requested by another shard: run it from here.
                    glommio::spawn_local(async move {
                        let name = match &entry {
                            Entry::DropDatabase(name) => name.clone(),
                            _ => String::new(),
                        };
                        let _ = reply.send(shard.drop_database(&name).await);
                    })
                    .detach();
                } else {
                    shard.apply_broadcast(&entry);
                    let _ = reply.send(Ok(()));
                }
            }
            Message::Metrics { reply } => {
                let _ = reply.send(shard.snapshot());
            }
            Message::Persist { commit, reply } => {
                glommio::spawn_local(async move {
                    let _ = reply.send(shard.record_persisted(commit).await);
                })
                .detach();
            }
            Message::ForgetFiles { paths, reply } => {
                shard.forget_files(&paths);
                let _ = reply.send(Ok(()));
            }
            Message::Scan { request, reply } => {
                let queue = shard.query_queue;
                let task = glommio::spawn_local_into(
                    async move {
                        let _ = reply.send(shard.scan_local(&request).await);
                    },
                    queue,
                );
                if let Ok(task) = task {
                    task.detach();
                }
            }
        }
    }

    /// Every shard's metrics, this one first.
    pub async fn snapshots(self: &Rc<Self>) -> Vec<Snapshot> {
        let mut answers = Vec::new();
        for peer in (0..self.count).filter(|p| *p != self.id) {
            let (reply, answer) = oneshot::channel();
            if self
                .peers
                .try_send(peer, Message::Metrics { reply })
                .is_ok()
            {
                answers.push(answer);
            }
        }
        let mut snapshots = vec![self.snapshot()];
        for answer in answers {
            if let Ok(snapshot) = answer.await {
                snapshots.push(snapshot);
            }
        }
        snapshots.sort_by_key(|s| s.shard);
        snapshots
    }

    pub fn snapshot(&self) -> Snapshot {
        let stats = self.wal.stats();
        let cache = self.file_cache.stats();
        let files = self.files.borrow();
        // Files another shard count wrote are listed by every shard: each
        // counts them once, by the shard that wrote them.
        let own = files
            .iter()
            .filter(|f| f.shard as usize % self.count == self.id);
        self.metrics.snapshot(
            self.id,
            Gauges {
                connections: self.admission.connections() as u64,
                request_bytes_in_flight: self.admission.request_bytes() as u64,
                sub_batches_queued: self.admission.sub_batches() as u64,
                store_bytes: self.store.borrow().memory_bytes() as u64,
                wal_records: stats.records,
                wal_bytes: stats.record_bytes,
                wal_sync_p50_us: stats.sync_latency_us.value_at_quantile(0.5),
                wal_sync_p99_us: stats.sync_latency_us.value_at_quantile(0.99),
                wal_records_per_sync: stats.records_per_sync.mean(),
                wal_syncs: stats.syncs,
                wal_disk_bytes: stats.wal_bytes,
                persisted_sequence: self.persisting.through.get(),
                persist_files: own.clone().count() as u64,
                persist_file_bytes: own.clone().map(|f| f.bytes).sum(),
                persist_file_rows: own.map(|f| f.rows).sum(),
                persist_snapshots: self.persisting.snapshots.get(),
                persist_files_expired: self.persisting.files_expired.get(),
                persist_compactions: self.persisting.compactions.get(),
                persist_files_compacted: self.persisting.files_compacted.get(),
                file_cache_bytes: cache.0 as u64,
                file_cache_hits: cache.1,
                file_cache_misses: cache.2,
                persist_failures: self.persisting.failures.get(),
                persist_rows: self.persisting.rows.get(),
                wal_pending_bytes: stats.pending_bytes,
                healthy: self.health().is_ok(),
                unhealthy_cause: self.health().err(),
                wal_segment_failures: stats.segment_failures
                    + self.owner.as_ref().map_or(0, |o| o.wal.segment_failures()),
                wal_segment_failing: self.segment_failure(),
            },
        )
    }
}

/// What a WAL refusal means to the shard that asked.
/// Each shard's part of `backpressure.inflight_request_bytes_max`, which
/// bounds the whole process: an equal share, but never less than one
/// maximum-size body (`http.body_bytes_max`), which every shard must admit.
fn inflight_bytes_per_shard(config: &Config, shards: usize) -> usize {
    (config.backpressure.inflight_request_bytes_max / shards.max(1)).max(config.http.body_bytes_max)
}

fn remote_error(error: WalError) -> RemoteError {
    match error {
        WalError::Full { .. } => RemoteError::Overloaded {
            cause: Overload::WalPendingBytes,
        },
        WalError::BudgetFull { .. } => RemoteError::Overloaded {
            cause: Overload::WalBudget,
        },
        WalError::TooLarge {
            payload_bytes,
            payload_bytes_max,
        } => RemoteError::TooLarge {
            payload_bytes,
            payload_bytes_max,
        },
        WalError::SegmentPending => RemoteError::Overloaded {
            cause: Overload::WalSegment,
        },
        // Not unhealthy: the segment is retried, writes resume by themselves.
        WalError::NoSegment(cause) if cause.is_no_space() => RemoteError::NoSpace,
        WalError::NoSegment(cause) => RemoteError::Unhealthy {
            cause: WalError::NoSegment(cause).to_string(),
        },
        WalError::NoSpace(_) => RemoteError::NoSpace,
        WalError::Failed(cause) => RemoteError::Failed {
            cause: cause.to_string(),
        },
        WalError::Unhealthy(cause) => RemoteError::Unhealthy {
            cause: cause.to_string(),
        },
        WalError::Closed => RemoteError::Gone,
    }
}

/// The (min, max) row timestamp of WAL records, for `ringest wal
/// inspect` / `verify` ([`wal::inspect_with`]), given every record of a
/// segment in order: sub-batch records (plain and packed) have a range,
/// catalog records none; a sub-batch that does not decode, or a kind this
/// build does not read, is an error (start-up would stop at it).
#[derive(Debug, Default)]
pub struct RecordTimes {
    unpacker: Unpacker,
}

impl RecordTimes {
    pub fn time_range(&mut self, record: wal::RecordRef<'_>) -> Result<Option<(i64, i64)>, String> {
        let span = |range: Option<(i64, i64)>, t: i64| {
            Some(match range {
                None => (t, t),
                Some((low, high)) => (low.min(t), high.max(t)),
            })
        };
        match record.kind {
            RECORD_BATCH => {
                let reader = BatchReader::new(record.payload).map_err(|e| e.to_string())?;
                Ok(reader
                    .rows()
                    .fold(None, |range, row| span(range, row.time_ns)))
            }
            RECORD_PACKED => {
                let segment = (record.generation, record.dir, record.segment);
                let unpacked = self
                    .unpacker
                    .unpack(segment, record.payload, |_| false)
                    .map_err(|e| e.to_string())?;
                Ok(unpacked.time_range)
            }
            RECORD_CATALOG => Ok(None),
            other => Err(format!("record kind {other} is not one this build reads")),
        }
    }
}

/// Rebuilds the authoritative catalog from the catalog WAL (at start).
pub fn recover_catalog(
    catalog_dir: &std::path::Path,
    skip_corrupt: bool,
) -> Result<Catalog, String> {
    wal::recover(catalog_dir, skip_corrupt).map_err(|e| e.to_string())?;
    let mut catalog = Catalog::default();
    let mut damaged = None;
    wal::replay(catalog_dir, |record| {
        if record.kind != RECORD_CATALOG {
            return;
        }
        match catalog::decode_entries(record.payload) {
            Some(entries) => entries.iter().for_each(|e| catalog.apply(e)),
            None => damaged = Some("undecodable catalog record"),
        }
    })
    .map_err(|e| e.to_string())?;
    if let Some(what) = damaged {
        return Err(format!("{}: {what}", catalog_dir.display()));
    }
    Ok(catalog)
}

/// The query engine's view of the shards: fan-out scans, the catalog, and
/// the caller's read permissions.
pub struct QueryService {
    pub shard: Rc<Shard>,
    pub secret: Option<Vec<u8>>,
    /// When the query's scans must stop (`[query] time_limit_ms` after it
    /// began).
    pub deadline: Deadline,
}

/// Raises a scan's lower time bound to its database's retention cutoff at
/// `now_ns`, so that no query returns an expired point (row scans) nor
/// lists a measurement or series whose points all expired (schema scans),
/// whether or not the expiry task has dropped them yet. The one place
/// queries meet retention.
pub fn clamp_to_retention(request: &mut ScanRequest, catalog: &Catalog, now_ns: i64) {
    let (database, time_min_ns) = match request {
        ScanRequest::Rows(rows) => (&rows.database, &mut rows.time_min_ns),
        ScanRequest::Schema(schema) => (&schema.database, &mut schema.time_min_ns),
        ScanRequest::Aggregate(aggregate) => (&aggregate.database, &mut aggregate.time_min_ns),
    };
    let cutoff = catalog
        .retention(database)
        .and_then(|period| retention::cutoff_ns(period, now_ns));
    if let Some(cutoff) = cutoff {
        *time_min_ns = (*time_min_ns).max(cutoff);
    }
}

/// Each database's retention cutoff at `now_ns` ([`retention::cutoff_ns`];
/// `None`: kept forever, or not a database of `catalog`).
fn cutoffs_at(catalog: &Catalog, now_ns: i64) -> impl Fn(&str) -> Option<i64> + '_ {
    move |database| {
        catalog
            .retention(database)
            .and_then(|period| retention::cutoff_ns(period, now_ns))
    }
}

impl crate::query::QueryBackend for QueryService {
    fn scan(
        &self,
        mut request: ScanRequest,
    ) -> impl std::future::Future<Output = Result<Vec<ScanResponse>, String>> {
        clamp_to_retention(
            &mut request,
            &self.shard.catalog.borrow(),
            crate::clock::now_ns(),
        );
        request.set_deadline(self.deadline);
        self.shard.scan_all(request)
    }

    fn databases(&self) -> Vec<String> {
        self.shard.catalog.borrow().database_names()
    }

    fn retention(&self, database: &str) -> Option<Period> {
        self.shard.catalog.borrow().retention(database)
    }

    fn create_database(
        &self,
        name: &str,
        retention: Option<Period>,
    ) -> impl std::future::Future<Output = Result<(), String>> {
        let shard = self.shard.clone();
        let name = name.to_string();
        async move {
            catalog::validate_database_name(&name)
                .map_err(|e| format!("invalid database name: {e}"))?;
            let proposal = Proposal::Database {
                name: name.clone(),
                create: true,
                retention: retention.unwrap_or(shard.config.retention.default_period),
            };
            let decisions = shard
                .propose(vec![proposal])
                .await
                .map_err(|e| format!("{e:?}"))?;
            match decisions.first() {
                Some(Decision::Accepted) => {}
                Some(Decision::LimitReached(limit)) => return Err(limit.to_string()),
                other => return Err(format!("database not created: {other:?}")),
            }
            // InfluxDB: an existing database with another duration than the
            // one asked for is a conflict, not a change.
            let existing = shard.catalog.borrow().retention(&name);
            match (retention, existing) {
                (Some(asked), Some(existing)) if asked != existing => {
                    Err("retention policy conflicts with an existing policy".to_string())
                }
                _ => Ok(()),
            }
        }
    }

    fn set_retention(
        &self,
        database: &str,
        period: Period,
    ) -> impl std::future::Future<Output = Result<(), String>> {
        let shard = self.shard.clone();
        let database = database.to_string();
        async move {
            let proposal = Proposal::Retention {
                database: database.clone(),
                period,
            };
            let decisions = shard
                .propose(vec![proposal])
                .await
                .map_err(|e| format!("{e:?}"))?;
            match decisions.first() {
                Some(Decision::Accepted) => Ok(()),
                Some(Decision::NoDatabase) => Err(format!("database not found: {database}")),
                other => Err(format!("retention policy not changed: {other:?}")),
            }
        }
    }

    fn drop_database(&self, name: &str) -> impl std::future::Future<Output = Result<(), String>> {
        let shard = self.shard.clone();
        let name = name.to_string();
        async move {
            shard
                .drop_database(&name)
                .await
                .map_err(|e| format!("{e:?}"))
        }
    }

    fn may_read(&self, database: &str) -> bool {
        self.shard
            .authorizer
            .check(self.secret.as_deref(), crate::auth::Access::Read, database)
            .is_ok()
    }
}

/// One file a scan reads, and what of it.
struct FileLoad {
    table: String,
    path: String,
    request: LoadRequest,
}

impl FileLoad {
    /// Reads it (blocking thread), through the shard's file cache.
    fn read(
        &self,
        source: &Source,
        cache: &FileCache,
    ) -> Result<std::sync::Arc<crate::store::Table>, ScanError> {
        cache
            .load(source, &self.path, &self.request)
            .map_err(|error| ScanError::PersistedFile {
                path: self.path.clone(),
                error: error.to_string(),
            })
    }
}

/// Reads the files of one scan (blocking thread): per table, oldest first.
fn load_files(
    source: &Source,
    loads: Vec<FileLoad>,
    cache: &FileCache,
    deadline: Deadline,
) -> Result<Persisted, ScanError> {
    let mut persisted = Persisted::default();
    for load in loads {
        deadline.check()?;
        let table = load.read(source, cache)?;
        persisted.tables.entry(load.table).or_default().push(table);
    }
    Ok(persisted)
}

/// The tables of a scan's files when the cache holds every one of them.
fn cached_files(loads: &[FileLoad], cache: &FileCache) -> Option<Persisted> {
    let mut persisted = Persisted::default();
    for load in loads {
        let table = cache.cached(&load.path, &load.request)?;
        persisted
            .tables
            .entry(load.table.clone())
            .or_default()
            .push(table);
    }
    Some(persisted)
}

fn root_display(root: &std::path::Path) -> String {
    root.display().to_string()
}
