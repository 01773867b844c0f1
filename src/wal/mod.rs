//! Write-ahead log: one per shard (`<data-dir>/wal/<shard>/`) plus one for the
//! catalog (`<data-dir>/catalog/`). Payloads are opaque bytes with a one-byte
//! caller-chosen `kind`. A payload may depend on the segment it lands in
//! ([`Payload`]: a shard's packed sub-batches refer to definitions earlier
//! in their segment, [`crate::packed`]); the log asks for it once it knows
//! the segment, and [`RecordRef::segment`] tells readers which one a record
//! was in.
//!
//! Ownership: [`record`] is the byte format, [`segment`] one file's name,
//! header and creation, [`storage`] the I/O seam, [`crate::group_commit`] the
//! running log ([`Wal`]: append, one `fdatasync` per batch, wake waiters),
//! [`recovery`] everything that happens before the shards start (verify,
//! truncate a torn tail, replay, inspect).
//!
//! # Durability argument
//!
//! **Promise.** When [`Wal::synced`] returns `Ok` for sequence `s`, every
//! record with sequence `<= s` of this `Wal` is on stable storage and
//! [`recover`] + [`replay`] will return it, byte for byte, after `kill -9`
//! or power loss.
//!
//! **Record** (little-endian, [`record`]):
//!
//! ```text
//! offset size field
//!      0    4 magic     "RWR1"
//!      4    1 version   1
//!      5    1 kind      caller's
//!      6    2 reserved  0
//!      8    4 length    payload bytes (<= 64 MiB and <= batch_bytes_max - 24)
//!     12    4 crc32c    over [4, 12) ++ [16, 24 + length)  (Castagnoli, crc32c crate)
//!     16    8 sequence  1, 2, 3, ... per (generation, directory), no gaps
//!     24    n payload
//! ```
//!
//! Records are packed back to back with no padding, starting at byte 64 of a
//! segment. The checksum covers every field except the magic and itself, and
//! the sequence must be exactly the previous one plus one, so a stale,
//! misplaced or partially written record is never accepted.
//!
//! **Segment.** File `<generation:020>-<index:010>.wal` (sorting names sorts
//! by generation then index, which is replay order inside a directory). The
//! first 64 bytes are a header ([`segment`]: magic "RWALSEG1", version,
//! crc32c, generation, index, first sequence, preallocated size). The
//! generation is a durable counter bumped once per process start
//! ([`next_generation`]), so a run never appends to a file an earlier run
//! wrote: every run starts new segments, and only the newest segment of each
//! directory (the last one that may hold records; a spare after it never
//! did) can ever have been in the middle of a write.
//!
//! **Writing.** Appends are copied once into the open group's buffer (memory
//! the device can DMA from). The committer writes whole 4096-byte blocks with
//! O_DIRECT at block-aligned offsets: a batch starts at the block holding the
//! end of the previous batch and rewrites that partial block with the same
//! leading bytes plus the new records; bytes after the last record up to the
//! block end are zero. One batch = one or more writes of at most
//! `batch_bytes_max` (+ two blocks of alignment) followed by ONE `fdatasync`;
//! at most one batch is in flight per `Wal`.
//!
//! **What each sync guarantees** (we rely on Linux semantics):
//! - `fdatasync(segment)` returned `Ok`: every byte written to the file before
//!   the call, and the file size, are on stable storage. Only then are the
//!   waiters of the batch woken with `Ok`.
//! - New segment, prepared ahead: from the moment segment k is claimed, a background
//!   task creates the file of segment k+1 (O_EXCL), `fallocate`s the full
//!   `segment_bytes` (size set, space reads as zeros) and `fsync`s the
//!   directory; this "spare" has no header yet, so every byte of it is
//!   zero. At rotation the committer `fdatasync`s the previous segment (its
//!   last writes may be part of the same batch), then writes the spare's
//!   header block and `fdatasync`s it, and only then writes records into
//!   it. So no acknowledged record lives in a file whose name could
//!   vanish, a segment followed by one with a header always ends cleanly,
//!   and a rotation waits for one small write + sync instead of create +
//!   `fallocate` + header + sync + directory `fsync` (at half load: p50
//!   0.52 ms, was 0.85-2.8 ms inline; `bench/RESULTS.md`). The spare takes
//!   `segment_bytes` of disk while running, and is made only if the
//!   segment it becomes fits `wal_bytes_max`. Segment 0 of a run is created inline at
//!   open. A clean close removes the unused spare; after a crash recovery
//!   does.
//! - **A full disk is backpressure, not a failure.** Making the next
//!   segment's file is the only step that needs new disk space (records go
//!   into preallocated space; ext4 keeps reserved clusters for converting
//!   unwritten extents). An append whose record does not fit the open
//!   segment takes a sequence only once that file exists
//!   ([`Wal::append_ready`] waits while it is being made). If making it
//!   failed (ENOSPC, or any other error: nothing was written into it), the
//!   append is refused with [`WalError::NoSegment`] before any sequence is
//!   assigned, so the sequence run stays gap-free and nothing is in doubt;
//!   the log stays healthy; the file is removed and made again every
//!   `segment_retry` (1 s) in the background; appends succeed again as
//!   soon as it is made. Appends that wait for the file take sequences in
//!   arrival order, before any later append. Over HTTP: 503 with
//!   `Retry-After: 1` and "no space left on the WAL device" (another
//!   cause: 503 naming it), `/health` fails naming the cause while the
//!   file cannot be made (`ringest_wal_segment_failing`), reads go on;
//!   `tests/disk_full.rs` fills a real loop-mounted ext4 under load and
//!   frees it again.
//! - A failed write or sync (EIO, ENOSPC, short write) fails every waiter of
//!   that batch and marks the `Wal` unhealthy forever: after a failed
//!   `fdatasync` the kernel may have dropped the dirty state, and retrying can
//!   report success for data that is gone ("fsyncgate"), so we never build on
//!   it. Records appended but not yet written are failed too. Over HTTP the
//!   failed batch's requests get 500 (503 for ENOSPC) and every later write
//!   503 until a restart; `tests/server_faults.rs` checks this on the real
//!   binary, failing real I/O through [`FaultPlan`] armed by the test-only
//!   `RINGEST_TEST_FAULTS` variable ([`crate::server`]).
//!
//! **Preallocation, why.** `fallocate` at creation (a) moves ENOSPC to segment
//! creation, before any record of the batch is written, (b) makes the file
//! size final so each `fdatasync` need not log a size change, and (c) keeps
//! extents contiguous. Unwritten preallocated space reads as zeros, which is
//! what recovery sees after the last record.
//!
//! **Pre-zeroed segments (`wal.prezero_segments`, off by default).** The first write into
//! `fallocate`d space turns unwritten extents into written ones, and the
//! `fdatasync` then also commits that metadata. Into a file whose zeros were
//! written (and synced) beforehand, the same O_DIRECT write + `fdatasync`
//! took p50 0.16 ms / p99 0.33-0.44 ms instead of 0.30 / 0.46 ms (16 KiB)
//! and p50 0.26-0.30 / p99 0.50 ms instead of 0.43 / 0.68-1.35 ms (256 KiB)
//! on /work, idle machine, 400 samples each (2026-12-01). Writing the
//! zeros costs a second pass of disk bandwidth, so it happens off the
//! commit path: with the option on, the spare (below) is zero-filled in
//! 1 MiB writes and synced while it is prepared.
//!
//! **O_DIRECT or buffered: measured.** On /work (ext4 on virtio disk `vda`),
//! 1000 × (write + fdatasync) into a preallocated file
//! (`cargo test --release --test wal_sync_timing -- --ignored --nocapture`),
//! machine otherwise quiet (load < 2):
//!
//! | write | DmaFile p50 / p99 / p999 µs | BufferedFile p50 / p99 / p999 µs |
//! |---|---|---|
//! | 64 KiB | 375 / 528 / 928 | 400 / 577 / 1702 |
//! | 4 KiB | 240 / 355 / 606 | 257 / 361 / 575 |
//! | 1000 B | 169 / 369 / 438 | 184 / 334 / 498 |
//!
//! The same command with several other builds and tests hitting the same
//! disk (load ≈ 10) gave p50 0.4-4 ms and p99 8-30 ms for both, with no
//! consistent winner: under that contention the device queue dominates.
//!
//! `DmaFile` is a little faster when the disk is ours (no page-cache copy,
//! no writeback), and its write errors are reported by the write itself
//! rather than surfacing later from writeback, so we use it. The cost is
//! block alignment, handled above.
//!
//! **What a crash can leave**, per directory, and what [`recover`] does:
//!
//! | state found | cause | recovery |
//! |---|---|---|
//! | after the last valid record: zeros to EOF | normal; preallocated space | newest segment truncated to the valid end (reclaims space), nothing logged as lost |
//! | newest segment: partial record / bad checksum / garbage, nothing valid after it | crash during a batch write (torn tail); never acknowledged | truncate at the first invalid byte; warn with file, offset, bytes dropped |
//! | segments after the last one that may hold records: header invalid, rest zero | an unused spare (crash while running), or a crash while creating or starting a segment; nothing was written into them | files removed, directory synced, logged; the segment before them is the newest for every rule above |
//! | invalid record followed by a valid record (or by more bytes than the bounded search for one may checksum: a pathological pattern of record headers), a damaged header on a segment holding data, any damage in an older segment, a missing segment / sequence gap | media or software corruption of possibly acknowledged data | start-up stops with file + offset, unless `skip_corrupt`: then it is logged and reported, the file is left untouched (evidence), and replay stops reading that segment at the damage (so the flag is needed at every start until the file is dealt with) |
//!
//! Why "valid record after damage" is not treated as a torn tail: a torn
//! tail is a prefix of one batch that never completed, so nothing verifiable
//! follows it in our crash model (writes of a batch are issued in order,
//! each after the previous one completed). A valid record after damage means
//! bytes that were once durable are now wrong; dropping them silently could
//! drop acknowledged data, so recovery refuses to guess.
//!
//! Recovery runs once before any shard starts and uses plain blocking
//! `std::fs` (no executor yet); [`replay`] is read-only and runs after it.
//! Replay order is (generation, shard directory, sequence): within one
//! generation a series lives on exactly one shard, so this order preserves
//! "later write wins" even when the shard count changed between runs.
//!
//! **What we assume of the disk.** `fdatasync`/`fsync` return only after the
//! data is durable (a drive that acknowledges cache flushes it did not do
//! defeats any WAL). A sector write interrupted by power loss leaves each
//! byte of that sector either old or new (bytes equal in both stay intact);
//! the rewritten partial block holds acknowledged bytes unchanged, so they
//! survive. Data read back is either what was written or fails the checksum
//! (CRC32C detects all 1-3 bit errors and bursts up to 32 bits). A synced
//! directory entry stays.
//!
//! **Bounds.** `pending_bytes_max` bounds bytes appended but not yet synced
//! ([`WalError::Full`]); `wal_bytes_max` bounds the total size of segment
//! files ([`WalError::BudgetFull`]): reaching it is backpressure, never
//! deletion.

pub mod record;
pub mod recovery;
pub mod segment;
pub mod storage;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::group_commit::{Payload, Wal, WalStats};
pub use record::Sequence;
pub use recovery::{
    inspect, inspect_with, next_generation, recover, replay, replay_before, Corruption,
    CorruptionKind, DirReport, RecordRef, RecoveryError, RecoveryReport, ReplayStats,
};
pub use storage::{Fault, FaultPlan, GlommioStorage, MemStorage, Storage};

use record::{RECORD_HEADER_BYTES, RECORD_PAYLOAD_BYTES_MAX};
use storage::WAL_BLOCK_BYTES;

/// Configuration of one [`Wal`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// Directory of this log's segments (`<data-dir>/wal/<shard>/`).
    pub dir: PathBuf,
    /// This run's generation, from [`next_generation`].
    pub generation: u64,
    /// Preallocated size of each segment; multiple of 4096.
    pub segment_bytes: u64,
    /// Max record bytes one group (one write) carries; also the largest record.
    pub batch_bytes_max: usize,
    /// Bound on bytes appended but not yet synced → [`WalError::Full`].
    pub pending_bytes_max: usize,
    /// Bound on the total size of segment files in `dir` → [`WalError::BudgetFull`].
    pub wal_bytes_max: u64,
    /// Wait this long after a sync before starting the next (0: no wait, no timer).
    pub batch_delay: Duration,
    /// Create the next segment file ahead, in the background, so that a
    /// rotation does not wait for create + `fallocate` + directory `fsync`
    /// (one spare file of `segment_bytes` on disk while running).
    pub spare_segment: bool,
    /// Also write (and `fdatasync`) the spare's zeros while preparing it.
    pub prezero_spare: bool,
    /// After a failed attempt to make the next segment's file (disk full),
    /// try again this long later.
    pub segment_retry: Duration,
}

impl WalOptions {
    /// Defaults for everything but the directory and generation.
    pub fn new(dir: PathBuf, generation: u64) -> WalOptions {
        WalOptions {
            dir,
            generation,
            segment_bytes: 64 << 20,
            batch_bytes_max: 1 << 20,
            pending_bytes_max: 16 << 20,
            wal_bytes_max: 64 << 30,
            batch_delay: Duration::ZERO,
            spare_segment: true,
            prezero_spare: false,
            segment_retry: Duration::from_secs(1),
        }
    }

    /// Checks the relations between the knobs.
    pub fn validate(&self) -> Result<(), WalOptionsError> {
        let block = WAL_BLOCK_BYTES as u64;
        if self.segment_bytes % block != 0 || self.segment_bytes < 2 * block {
            return Err(WalOptionsError::SegmentBytes);
        }
        if self.batch_bytes_max < RECORD_HEADER_BYTES + 1
            || self.batch_bytes_max as u64 > self.segment_bytes - block
            || self.batch_bytes_max > RECORD_HEADER_BYTES + RECORD_PAYLOAD_BYTES_MAX
        {
            return Err(WalOptionsError::BatchBytes);
        }
        if self.pending_bytes_max < self.batch_bytes_max {
            return Err(WalOptionsError::PendingBytes);
        }
        if self.wal_bytes_max < self.segment_bytes {
            return Err(WalOptionsError::WalBytes);
        }
        Ok(())
    }

    /// Largest payload one `append` accepts.
    pub fn payload_bytes_max(&self) -> usize {
        self.batch_bytes_max - RECORD_HEADER_BYTES
    }
}

/// Which relation between [`WalOptions`] knobs does not hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalOptionsError {
    /// `segment_bytes` must be a multiple of 4096 and at least 8192.
    SegmentBytes,
    /// `batch_bytes_max` must hold one record and fit a segment after its header block.
    BatchBytes,
    /// `pending_bytes_max` must be at least `batch_bytes_max`.
    PendingBytes,
    /// `wal_bytes_max` must hold at least one segment.
    WalBytes,
}

/// The I/O step that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoStep {
    CreateDir,
    CreateSegment,
    SyncSegmentHeader,
    SyncDir,
    Write,
    Sync,
}

/// Why a [`Wal`] became unhealthy: the step and the OS error code (if any).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cause {
    pub step: IoStep,
    pub errno: Option<i32>,
}

impl Cause {
    pub(crate) fn new(step: IoStep, error: &std::io::Error) -> Cause {
        Cause {
            step,
            errno: error.raw_os_error(),
        }
    }

    /// ENOSPC or EDQUOT: the disk (or quota) is full.
    pub fn is_no_space(&self) -> bool {
        matches!(self.errno, Some(libc::ENOSPC) | Some(libc::EDQUOT))
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.errno {
            Some(errno) => write!(
                f,
                "{:?} failed: {}",
                self.step,
                std::io::Error::from_raw_os_error(errno)
            ),
            None => write!(f, "{:?} failed", self.step),
        }
    }
}

/// Errors of the running log. One variant per cause; the integrator maps
/// them to statuses in one `match`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalError {
    /// Bytes awaiting sync would exceed `pending_bytes_max` (backpressure).
    Full {
        pending_bytes: usize,
        pending_bytes_max: usize,
    },
    /// A new segment would exceed `wal_bytes_max` (backpressure).
    BudgetFull { wal_bytes: u64, wal_bytes_max: u64 },
    /// The record is larger than `batch_bytes_max` allows.
    TooLarge {
        payload_bytes: usize,
        payload_bytes_max: usize,
    },
    /// The record needs a new segment whose file is still being made
    /// ([`Wal::append_ready`] waits for it instead).
    SegmentPending,
    /// The record needs a new segment whose file could not be made (disk
    /// full, most often). Nothing was appended and the log stays healthy:
    /// the file is retried in the background, and appends succeed again
    /// once it is made. 503 with `Retry-After`.
    NoSegment(Cause),
    /// The disk is full (ENOSPC/EDQUOT) in this record's batch or earlier.
    /// The log is unhealthy; what was acknowledged stays readable.
    NoSpace(Cause),
    /// This record's batch failed to write or sync (500): its fate on disk
    /// is unknown. The log is unhealthy.
    Failed(Cause),
    /// The log failed earlier; this record was never attempted (503).
    Unhealthy(Cause),
    /// `close` was called.
    Closed,
}

impl fmt::Display for WalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalError::Full {
                pending_bytes,
                pending_bytes_max,
            } => write!(
                f,
                "WAL full: {pending_bytes} bytes awaiting sync (max {pending_bytes_max})"
            ),
            WalError::BudgetFull {
                wal_bytes,
                wal_bytes_max,
            } => write!(
                f,
                "WAL size budget reached: {wal_bytes} bytes (max {wal_bytes_max})"
            ),
            WalError::TooLarge {
                payload_bytes,
                payload_bytes_max,
            } => write!(
                f,
                "WAL record of {payload_bytes} bytes exceeds {payload_bytes_max}"
            ),
            WalError::SegmentPending => write!(f, "the next WAL segment is still being made"),
            WalError::NoSegment(cause) => {
                write!(f, "cannot make the next WAL segment (retrying): {cause}")
            }
            WalError::NoSpace(cause) => write!(f, "WAL out of disk space: {cause}"),
            WalError::Failed(cause) => write!(f, "WAL batch failed: {cause}"),
            WalError::Unhealthy(cause) => write!(f, "WAL unhealthy after: {cause}"),
            WalError::Closed => write!(f, "WAL closed"),
        }
    }
}

impl std::error::Error for WalError {}

/// Error of [`Wal::open`].
#[derive(Debug)]
pub enum WalOpenError {
    Options(WalOptionsError),
    /// The first segment would exceed `wal_bytes_max`.
    BudgetFull {
        wal_bytes: u64,
        wal_bytes_max: u64,
    },
    Io {
        cause: Cause,
        error: std::io::Error,
    },
}

impl fmt::Display for WalOpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalOpenError::Options(e) => write!(f, "invalid WAL options: {e:?}"),
            WalOpenError::BudgetFull {
                wal_bytes,
                wal_bytes_max,
            } => write!(
                f,
                "WAL size budget reached at start: {wal_bytes} bytes (max {wal_bytes_max})"
            ),
            WalOpenError::Io { cause, error } => write!(f, "{cause}: {error}"),
        }
    }
}

impl std::error::Error for WalOpenError {}
