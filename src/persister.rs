//! The persister: each shard's loop that moves its rows from memory and
//! WAL into Parquet (the protocol and its durability argument are in
//! [`crate::persist`]).
//!
//! A snapshot is due every `persist.interval_ms` while the shard holds new
//! rows, as soon as its live rows pass `persist.store_bytes_trigger` (a
//! bound on memory) or its WAL grew by `persist.wal_bytes_trigger` since
//! the last snapshot began (a bound on what a restart after a crash
//! replays: the WAL written since the last recorded snapshot, read and
//! applied before the shard is ready), once after start (to persist what
//! was replayed, so the WAL of earlier runs can go; an idle shard then
//! commits an empty snapshot once per interval until it hears the floor
//! passed its generation and deletes those segments), and at shutdown. One snapshot runs at a time per shard. The
//! freeze is synchronous on the shard; encoding and file I/O run on a
//! blocking thread, so ingest goes on meanwhile; the commit goes to the
//! catalog owner; only after it returns do rows leave memory and segments
//! leave the WAL (with an object store, segments wait further: until the
//! bucket holds the manifest version that recorded them, checked every
//! tick, [`crate::remote`]). A failed snapshot leaves its rows frozen in memory (still
//! queried, still in the WAL) and the next attempt persists them.
//!
//! # Expired files
//!
//! The catalog owner's loop also deletes the Parquet files whose rows all
//! expired (retention), for every shard, at most every
//! [`crate::shard::EXPIRY_INTERVAL`] and whether or not new data arrives,
//! so a file is gone within about a second of its newest row expiring
//! (later while the owner's own snapshot runs: the loop does one thing at
//! a time). In this order:
//! 1. the manifest stops naming them, in one atomic rewrite
//!    ([`Shard::record_expired`]);
//! 2. every shard forgets them: they leave its file list and its running
//!    scans start over ([`Shard::forget_everywhere`]);
//! 3. they are unlinked.
//!
//! A crash after 1 leaves files the manifest does not name: start-up
//! removes them as orphans (the crash table in [`crate::persist`]); their
//! rows are expired, and their WAL records were persisted long before, so
//! nothing replays them. If a shard cannot be told (its channel is full),
//! the files are left for start-up to remove, rather than deleted under a
//! scan; the shard forgets them by itself within a second (its expiry
//! task applies the same rule to its own list).
//!
//! Why the owner, for all shards, rather than each shard for its own files:
//! the manifest is on the owner and is the one list of every file,
//! including those written under an earlier shard count, which every shard
//! reads and none owns; one rewrite per pass serves every shard, where
//! per-shard expiry would rewrite the manifest once per shard (each
//! rewrite serialises the whole file list and syncs twice, behind the
//! owner's lock that snapshot commits wait on).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use glommio::TaskQueueHandle;

use crate::persist::compact;
use crate::persist::layout::SnapshotId;
use crate::persist::manifest::{Commit, FileEntry};
use crate::persist::parquet::{self, ParquetError, WrittenFile};
use crate::route;
use crate::shard::{Shard, WalRelease};
use crate::store::Frozen;

/// Test only:
/// `RINGEST_TEST_PERSIST_CRASH=files-written|manifest-written|expiry-recorded`
/// makes the process abort (no clean-up, like `kill -9`) at that step of
/// the first snapshot that holds rows (or, `expiry-recorded`, of the first
/// expiry pass that removes files from the manifest, before it deletes
/// them), so the crash tests can stop it exactly between the steps of the
/// durability argument. Logged at warn level when set; never set it in
/// production.
pub const TEST_CRASH_ENV: &str = "RINGEST_TEST_PERSIST_CRASH";

/// Where the test hook aborts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CrashAt {
    /// The snapshot's files are durable, the manifest does not name them.
    FilesWritten,
    /// The manifest names them, the rows are still in memory and the WAL.
    ManifestWritten,
    /// Expired files left the manifest, and are still on disk.
    ExpiryRecorded,
    /// A compaction's merged file is durable, the manifest does not name it.
    CompactionWritten,
    /// The manifest names the merged file; its inputs are still on disk.
    CompactionRecorded,
}

fn crash_at() -> Option<CrashAt> {
    // Read once per snapshot with rows: cheap next to writing Parquet.
    match std::env::var(TEST_CRASH_ENV).ok()?.as_str() {
        "files-written" => Some(CrashAt::FilesWritten),
        "manifest-written" => Some(CrashAt::ManifestWritten),
        "expiry-recorded" => Some(CrashAt::ExpiryRecorded),
        "compaction-written" => Some(CrashAt::CompactionWritten),
        "compaction-recorded" => Some(CrashAt::CompactionRecorded),
        _ => None,
    }
}

fn crash_here<T>(step: CrashAt, files: &[T]) {
    if !files.is_empty() && crash_at() == Some(step) {
        tracing::warn!(?step, "{TEST_CRASH_ENV}: aborting on purpose");
        std::process::abort();
    }
}

/// How often the loop looks at the triggers.
const TICK: Duration = Duration::from_millis(100);
/// Wait after a failed snapshot before the next attempt.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Wait after a failed compaction before the next.
const COMPACT_RETRY_AFTER: Duration = Duration::from_secs(10);

/// Starts the shard's persister loop on `queue` (when persistence is on).
pub fn spawn(shard: &Rc<Shard>, queue: TaskQueueHandle) {
    if !shard.config.persist.enabled {
        return;
    }
    if let Some(step) = crash_at() {
        tracing::warn!(
            ?step,
            "{TEST_CRASH_ENV} is set: the process will abort at this step"
        );
    }
    let shard = shard.clone();
    let task = glommio::spawn_local_into(run(shard), queue);
    if let Ok(task) = task {
        task.detach();
    }
}

async fn run(shard: Rc<Shard>) {
    let interval = Duration::from_millis(shard.config.persist.interval_ms);
    let mut expiry_checked = crate::clock::monotonic();
    // After a failed compaction (an unreadable input?), the next waits.
    let mut compact_after = crate::clock::monotonic();
    while !shard.shutting_down() {
        glommio::timer::sleep(TICK).await;
        if shard.shutting_down() {
            break;
        }
        if shard.id == route::CATALOG_OWNER
            && crate::clock::monotonic() - expiry_checked >= crate::shard::EXPIRY_INTERVAL
        {
            expiry_checked = crate::clock::monotonic();
            if let Err(error) = expire_files(&shard).await {
                tracing::warn!(%error, "deleting expired Parquet files failed");
            }
        }
        release_confirmed(&shard).await;
        let due = {
            let store = shard.store.borrow();
            let live = store.live_bytes();
            let waited = crate::clock::monotonic() - shard.persisting.last_started.get();
            let wal_grown = shard.wal.appended_bytes() - shard.persisting.wal_bytes_at_start.get();
            !shard.persisting.replay_persisted.get()
                || live >= shard.config.persist.store_bytes_trigger
                || (wal_grown >= shard.config.persist.wal_bytes_trigger && live > 0)
                || (waited >= interval && (live > 0 || !store.frozen().is_empty()))
                // Earlier runs' segments go once this shard hears that the
                // floor passed its generation (a commit's answer): an idle
                // shard asks with an empty snapshot, once per interval.
                || (waited >= interval && shard.persisting.old_segments.get())
        };
        if due {
            if let Err(error) = snapshot(&shard, false).await {
                tracing::warn!(shard = shard.id, %error, "snapshot failed; retrying");
                glommio::timer::sleep(RETRY_AFTER).await;
            }
        } else if crate::clock::monotonic() >= compact_after {
            if let Err(error) = compact(&shard).await {
                tracing::warn!(shard = shard.id, %error, "compaction failed; its inputs stay, retried in 10 s");
                compact_after = crate::clock::monotonic() + COMPACT_RETRY_AFTER;
            }
        }
    }
}

/// Merges one run of this shard's small files, if there is one (the rule
/// and its order: [`crate::persist`]'s compaction).
async fn compact(shard: &Rc<Shard>) -> Result<(), String> {
    let policy = compact::Policy {
        files_min: shard.config.persist.compact_files,
        rows_max: shard.config.persist.compact_rows_max,
    };
    let (shard_id, count) = (shard.id as u32, shard.count as u32);
    let Some(inputs) = compact::pick(&shard.files.borrow(), shard_id, count, policy) else {
        return Ok(());
    };
    let Some(id) = compact::merged_id(&inputs) else {
        return Ok(());
    };
    let database = inputs[0].database.clone();
    let cutoff = cutoffs(shard).get(&database).copied().flatten();
    // Step 1 (blocking thread): the merged file, durably.
    let source = shard.files_source.clone();
    let to_merge = inputs.clone();
    let added: Vec<FileEntry> =
        crate::blocking::run(move || compact::merge(&source, &to_merge, id, cutoff))
            .await
            .map_err(|error| error.to_string())
            .and_then(|merged| merged.map_err(|error| error.to_string()))
            .map_err(|error| format!("merging {} files: {error}", inputs.len()))?
            .into_iter()
            .map(|written| file_entry(&database, id, count, written))
            .collect();
    crash_here(CrashAt::CompactionWritten, &added);
    // Step 2: the manifest names it instead of the inputs.
    let removed: Vec<String> = inputs.iter().map(|f| f.path.clone()).collect();
    let commit = Commit {
        shard: shard_id,
        shard_count: count,
        generation: shard.generation,
        added: added.clone(),
        removed: removed.clone(),
        compaction: true,
        position: None,
        covers_replay: false,
        before_shutdown: false,
    };
    if let Err(error) = shard.commit_persisted(commit).await {
        remove_unrecorded(shard, &error, &added).await;
        return Err(format!("recording the merged file: {error:?}"));
    }
    crash_here(CrashAt::CompactionRecorded, &removed);
    // Step 3: scans use the merged file (running ones start over), then the
    // inputs go.
    {
        let mut files = shard.files.borrow_mut();
        files.retain(|f| !removed.contains(&f.path));
        files.extend(added);
        files.sort_by_key(FileEntry::age);
    }
    shard.files_version.set(shard.files_version.get() + 1);
    shard.file_cache.forget(&removed);
    let persisting = &shard.persisting;
    persisting.compactions.set(persisting.compactions.get() + 1);
    persisting
        .files_compacted
        .set(persisting.files_compacted.get() + removed.len() as u64);
    let root = shard.parquet_root.clone();
    let deleted =
        crate::blocking::run(move || crate::persist::manifest::remove_files(&root, &removed))
            .await
            .and_then(|deleted| deleted);
    if let Err(error) = deleted {
        tracing::warn!(shard = shard.id, %error, "removing compacted files failed; start-up removes them");
    }
    Ok(())
}

/// Persists everything the shard holds in memory now. `before_shutdown`:
/// the last one (the owner waits for every shard's).
pub async fn snapshot(shard: &Rc<Shard>, before_shutdown: bool) -> Result<(), String> {
    let _permit = shard
        .persisting
        .lock
        .acquire_permit(1)
        .await
        .map_err(|_| "persister closed".to_string())?;
    let started = crate::clock::monotonic();
    shard.persisting.last_started.set(started);
    shard
        .persisting
        .wal_bytes_at_start
        .set(shard.wal.appended_bytes());
    // Step 1 (synchronous): freeze; the frozen rows hold every record up
    // to `through` of this run, and what was replayed.
    let (frozen, through) = {
        let mut store = shard.store.borrow_mut();
        store.freeze();
        (store.frozen().to_vec(), shard.applied())
    };
    let covers_replay = !shard.persisting.replay_persisted.get();
    if frozen.is_empty()
        && !covers_replay
        && !before_shutdown
        && !shard.persisting.old_segments.get()
    {
        return Ok(());
    }
    // Step 2 (blocking thread): the files, durably.
    let first_attempt = shard.persisting.attempts.get();
    shard
        .persisting
        .attempts
        .set(first_attempt + frozen.len() as u32);
    let id = SnapshotId {
        generation: shard.generation,
        sequence: through.0,
        shard: shard.id as u32,
        attempt: first_attempt,
        compaction: 0,
    };
    let root = shard.parquet_root.clone();
    let count = shard.count;
    let cutoffs = cutoffs(shard);
    let to_write = frozen.clone();
    let added =
        crate::blocking::run(move || write_frozen(&root, id, count as u32, &to_write, &cutoffs))
            .await
            .map_err(|error| error.to_string())
            .and_then(|written| written.map_err(|error| error.to_string()))
            .map_err(|error| {
                shard
                    .persisting
                    .failures
                    .set(shard.persisting.failures.get() + 1);
                format!("writing Parquet: {error}")
            })?;
    crash_here(CrashAt::FilesWritten, &added);
    // Step 3: the manifest names them and the position.
    let rows: u64 = added.iter().map(|f| f.rows).sum();
    let commit = Commit {
        shard: shard.id as u32,
        shard_count: shard.count as u32,
        generation: shard.generation,
        added: added.clone(),
        removed: Vec::new(),
        compaction: false,
        position: Some(through.0),
        covers_replay,
        before_shutdown,
    };
    let outcome = match shard.commit_persisted(commit).await {
        Ok(outcome) => outcome,
        Err(error) => {
            shard
                .persisting
                .failures
                .set(shard.persisting.failures.get() + 1);
            remove_unrecorded(shard, &error, &added).await;
            return Err(format!("recording the snapshot: {error:?}"));
        }
    };
    crash_here(CrashAt::ManifestWritten, &added);
    // Step 4: the rows leave memory, the segments leave the WAL.
    shard.files.borrow_mut().extend(added);
    shard.files_version.set(shard.files_version.get() + 1);
    // A file the owner expired between its answer and now must not stay
    // listed (its message to forget it may have come first).
    shard.forget_expired_files(crate::clock::now_ns());
    shard.store.borrow_mut().release_frozen(&frozen);
    shard.persisting.replay_persisted.set(true);
    let release = WalRelease {
        version: outcome.version,
        through,
        floor_generation: outcome.floor_generation,
    };
    match &shard.remote {
        // The segments wait for the object store (`release_confirmed`).
        Some(_) => shard.persisting.wal_waiting.borrow_mut().push_back(release),
        None => release_wal(shard, release).await,
    }
    let persisting = &shard.persisting;
    persisting.snapshots.set(persisting.snapshots.get() + 1);
    persisting.through.set(through.0);
    persisting.rows.set(persisting.rows.get() + rows);
    persisting
        .last_duration_us
        .set(crate::clock::elapsed_us(started));
    tracing::debug!(
        shard = shard.id,
        rows,
        through = through.0,
        duration_us = persisting.last_duration_us.get(),
        "snapshot persisted"
    );
    Ok(())
}

/// After a failed commit of `files` (a snapshot's or a compaction's):
/// removes them now when the catalog on disk certainly does not name them
/// (the commit was refused before any write, or the old catalog was put
/// back), so a retry under other names does not leave them to the next
/// start (a full disk gets its space back). Otherwise (the owner gone
/// mid-commit, or a rewrite that failed after its rename and could not be
/// undone) they stay: start-up removes them if the catalog it finds does
/// not name them.
async fn remove_unrecorded(shard: &Shard, error: &route::RemoteError, files: &[FileEntry]) {
    let surely_unnamed = matches!(
        error,
        route::RemoteError::Failed { .. }
            | route::RemoteError::CatalogNotWritten {
                may_name_files: false,
                ..
            }
    );
    if !surely_unnamed {
        return;
    }
    let root = shard.parquet_root.clone();
    let paths: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
    let _ =
        crate::blocking::run(move || crate::persist::manifest::remove_files(&root, &paths)).await;
}

/// With an object store: releases the WAL behind the oldest snapshot whose
/// manifest version the bucket now holds. One snapshot's segments per tick:
/// after an outage the backlog is gigabytes of segments, and unlinking
/// them all at once stalled the disk's `fdatasync`s (measured: ack p99
/// 550 ms in the 5 s after a 60-s outage at 340 k points/s).
async fn release_confirmed(shard: &Rc<Shard>) {
    let Some(remote) = &shard.remote else { return };
    let confirmed = remote.confirmed();
    let next = {
        let mut waiting = shard.persisting.wal_waiting.borrow_mut();
        match waiting.front() {
            Some(release) if release.version <= confirmed => waiting.pop_front(),
            _ => None,
        }
    };
    if let Some(release) = next {
        release_wal(shard, release).await;
    }
}

/// Step 4's second half: the segments of this run through
/// `release.through` leave the WAL, and, once the floor passed this run's
/// generation, every segment of earlier runs.
async fn release_wal(shard: &Rc<Shard>, release: WalRelease) {
    let delete: Vec<PathBuf> = shard.wal.release_through(release.through);
    let (dir, generation) = shard.wal.location();
    let old_runs = release.floor_generation >= generation && shard.persisting.old_segments.get();
    let other_dirs = (shard.id == route::CATALOG_OWNER && old_runs)
        .then(|| shard.config.server.data_dir.join("wal"));
    let count = shard.count;
    let removed = crate::blocking::run(move || {
        remove_segments(
            &dir,
            &delete,
            old_runs.then_some(generation),
            other_dirs.as_deref(),
            count,
        )
    })
    .await
    .and_then(|removed| removed);
    match removed {
        Ok(old_bytes) => {
            shard.wal.forget_bytes(old_bytes);
            if old_runs {
                shard.persisting.old_segments.set(false);
            }
        }
        Err(error) => {
            // The records are persisted: a segment left behind is skipped at
            // replay and removed at the next snapshot or start.
            tracing::warn!(shard = shard.id, %error, "removing persisted WAL segments failed");
        }
    }
}

/// Catalog owner: deletes the Parquet files of every shard whose rows all
/// expired (the order and why the owner: the module doc); counts them.
async fn expire_files(shard: &Rc<Shard>) -> Result<(), String> {
    let expired = shard
        .record_expired(crate::clock::now_ns())
        .await
        .map_err(|error| format!("rewriting the persisted catalog: {error:?}"))?;
    if expired.is_empty() {
        return Ok(());
    }
    crash_here(CrashAt::ExpiryRecorded, &expired);
    let count = expired.len() as u64;
    let persisting = &shard.persisting;
    persisting
        .files_expired
        .set(persisting.files_expired.get() + count);
    if let Err(error) = shard.forget_everywhere(&expired).await {
        // Not deleted under a scan: orphans now, removed at the next start.
        return Err(format!(
            "{count} expired files left the persisted catalog but a shard could not be \
             told ({error:?}); they stay on disk until the next start removes them"
        ));
    }
    let root = shard.parquet_root.clone();
    crate::blocking::run(move || crate::persist::manifest::remove_files(&root, &expired))
        .await
        .and_then(|removed| removed)
        .map_err(|error| {
            format!(
                "{count} expired files left the persisted catalog; deleting them failed \
                 ({error}); the next start removes what is left"
            )
        })?;
    tracing::debug!(files = count, "expired Parquet files deleted");
    Ok(())
}

/// Per database, rows older than this are not persisted (retention).
fn cutoffs(shard: &Shard) -> BTreeMap<String, Option<i64>> {
    let now_ns = crate::clock::now_ns();
    shard
        .catalog
        .borrow()
        .databases
        .iter()
        .map(|(name, db)| {
            (
                name.clone(),
                crate::retention::cutoff_ns(db.retention, now_ns),
            )
        })
        .collect()
}

/// Step 2 of a snapshot, on a blocking thread: every table of every frozen
/// generation, oldest generation first (each its own attempt number, so
/// names never collide).
fn write_frozen(
    root: &Path,
    id: SnapshotId,
    shard_count: u32,
    frozen: &[Arc<Frozen>],
    cutoffs: &BTreeMap<String, Option<i64>>,
) -> Result<Vec<FileEntry>, ParquetError> {
    let mut files = Vec::new();
    let mut write = || -> Result<(), ParquetError> {
        for (offset, generation) in frozen.iter().enumerate() {
            let id = SnapshotId {
                attempt: id.attempt + offset as u32,
                ..id
            };
            for (database, tables) in &generation.databases {
                let cutoff = cutoffs.get(database).copied().flatten();
                for (table_name, table) in &tables.tables {
                    for written in
                        parquet::write_table(root, id, database, table_name, table, cutoff)?
                    {
                        files.push(file_entry(database, id, shard_count, written));
                    }
                }
            }
        }
        Ok(())
    };
    if let Err(error) = write() {
        // No catalog names them: removed now rather than at the next start
        // (a disk that filled up gets its space back for the retry).
        let paths: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
        let _ = crate::persist::manifest::remove_files(root, &paths);
        return Err(error);
    }
    Ok(files)
}

/// The catalog entry of a file written for `id`.
fn file_entry(database: &str, id: SnapshotId, shard_count: u32, written: WrittenFile) -> FileEntry {
    FileEntry {
        path: written.path.to_string_lossy().replace('\\', "/"),
        database: database.to_string(),
        table: written.table,
        shard: id.shard,
        shard_count,
        generation: id.generation,
        sequence: id.sequence,
        rows: written.rows,
        bytes: written.bytes,
        time_min_ns: written.time_min_ns,
        time_max_ns: written.time_max_ns,
    }
}

/// Removes persisted segments of this run (`released`), and when
/// `older_than` is set every segment of an earlier generation in `dir`
/// (and, from the catalog owner, in the WAL directories of shards that no
/// longer exist under `wal_root`). Returns the bytes of `dir`'s earlier
/// segments removed (the WAL's budget counted them).
fn remove_segments(
    dir: &Path,
    released: &[PathBuf],
    older_than: Option<u64>,
    wal_root: Option<&Path>,
    shard_count: usize,
) -> std::io::Result<u64> {
    // A blocking thread: std::fs is the right tool.
    #[allow(clippy::disallowed_methods)]
    fn remove_older(dir: &Path, generation: u64) -> std::io::Result<u64> {
        let mut bytes = 0;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some((segment_generation, _)) = name
                .to_str()
                .and_then(crate::wal::segment::parse_segment_file_name)
            else {
                continue;
            };
            if segment_generation < generation {
                bytes += entry.metadata()?.len();
                std::fs::remove_file(entry.path())?;
            }
        }
        crate::persist::parquet::sync_dir(dir)?;
        Ok(bytes)
    }
    #[allow(clippy::disallowed_methods)]
    for path in released {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
    }
    if !released.is_empty() {
        crate::persist::parquet::sync_dir(dir)?;
    }
    let Some(generation) = older_than else {
        return Ok(0);
    };
    let bytes = remove_older(dir, generation)?;
    if let Some(wal_root) = wal_root {
        #[allow(clippy::disallowed_methods)]
        for entry in std::fs::read_dir(wal_root)? {
            let entry = entry?;
            let gone = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|n| n >= shard_count);
            if gone && entry.file_type()?.is_dir() {
                remove_older(&entry.path(), generation)?;
            }
        }
    }
    Ok(bytes)
}
