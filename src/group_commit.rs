//! The running WAL of one shard: [`Wal::append`] copies a record into the
//! open group; one committer task per `Wal` writes everything appended while
//! the previous sync was in flight and covers it with ONE `fdatasync`; then
//! it wakes the waiters of that batch ([`Wal::synced`]).
//!
//! Invariants:
//! - At most one batch (writes + one `fdatasync`) is in flight per `Wal`.
//! - `synced_sequence` only grows, and only after `fdatasync` returned `Ok`
//!   for a batch containing every record up to it. Nothing is acknowledged
//!   before that.
//! - After any failed write or sync the `Wal` is unhealthy forever: the
//!   failed batch's waiters get [`WalError::Failed`] (or `NoSpace`),
//!   everything appended later [`WalError::Unhealthy`]; nothing more is
//!   written.
//! - A record is given a sequence in a new segment only once that
//!   segment's file exists (created, preallocated, name synced). Making it
//!   is the one step that needs new disk space, so a full disk refuses
//!   appends ([`WalError::NoSegment`]) before any sequence is assigned,
//!   the log stays healthy, and a background task retries the creation
//!   every `segment_retry` until it succeeds.
//! - Bytes awaiting sync never exceed `pending_bytes_max`; segment files never
//!   exceed `wal_bytes_max` in total.
//! - A group's buffer holds: the carried-over bytes of the partial block the
//!   previous group ended in (or the segment header), then records, then
//!   zeros up to the block end when sealed. It is written at its
//!   block-aligned file offset; the next group rewrites the partial block.
//! - The common path has no timer and no copy besides the one into the group
//!   buffer. `batch_delay > 0` (off by default) adds one timer per batch.
//!
//! Everything is single-threaded (`Rc`, `RefCell`); no borrow is held across
//! an `.await`.
//!
//! Time: sync latency is measured through `crate::clock`, the clock seam.

use std::cell::RefCell;
use std::collections::{BTreeSet, VecDeque};
use std::future::poll_fn;
use std::path::PathBuf;
use std::rc::Rc;
use std::task::{Poll, Waker};

use hdrhistogram::Histogram;

use crate::wal::record::{encode_into, record_bytes, Sequence};
use crate::wal::segment::{
    create_segment, create_spare, write_header, SegmentHeader, SEGMENT_HEADER_BYTES,
};
use crate::wal::storage::{GlommioStorage, Storage, WAL_BLOCK_BYTES};
use crate::wal::{Cause, IoStep, WalError, WalOpenError, WalOptions};

const BLOCK: usize = WAL_BLOCK_BYTES;

fn align_down(v: usize) -> usize {
    v / BLOCK * BLOCK
}
fn align_up(v: usize) -> usize {
    v.div_ceil(BLOCK) * BLOCK
}

/// Counters and histograms of one `Wal`. `stats()` clones the histograms:
/// call it for metrics export, not per request.
#[derive(Clone, Debug)]
pub struct WalStats {
    /// Records appended (accepted by `append`).
    pub records: u64,
    /// Record bytes (header + payload) appended.
    pub record_bytes: u64,
    /// Record bytes covered by a completed sync.
    pub synced_bytes: u64,
    /// Completed `fdatasync` calls of batches.
    pub syncs: u64,
    /// Completed batch writes.
    pub writes: u64,
    pub segments_created: u64,
    /// Bytes appended but not yet synced.
    pub pending_bytes: u64,
    /// Total size of segment files in the directory (incl. preallocation).
    pub wal_bytes: u64,
    /// Last sequence handed out by `append` (0: none).
    pub appended_sequence: u64,
    /// Every record up to this sequence is durable.
    pub synced_sequence: u64,
    pub last_sync_latency_us: u64,
    /// Write + fdatasync time of each batch, µs (1 µs .. 60 s, 3 digits).
    pub sync_latency_us: Histogram<u64>,
    /// Records per batch.
    pub records_per_sync: Histogram<u64>,
    /// Failed attempts to make a segment's file ahead (disk full, most often).
    pub segment_failures: u64,
}

struct Group<B> {
    buffer: B,
    /// Segment this group goes into; `Some` header when the committer must
    /// create that segment before writing this group.
    segment_index: u64,
    new_segment: Option<SegmentHeader>,
    /// Block-aligned file offset of `buffer[0]`.
    file_pos: u64,
    /// Meaningful bytes in `buffer`: carried-over prefix + records.
    fill: usize,
    /// Record bytes (not the carried prefix) in this group.
    record_bytes: usize,
    records: u64,
    last_sequence: u64,
}

/// How the failure is reported to each waiter.
#[derive(Clone, Copy)]
struct Failure {
    cause: Cause,
    /// Records `<= failed_up_to` (and above `synced_sequence`) were in the
    /// batch that failed; later ones were never attempted.
    failed_up_to: u64,
}

struct State<S: Storage> {
    options: WalOptions,
    storage: Rc<S>,
    open: Group<S::Buffer>,
    sealed: VecDeque<Group<S::Buffer>>,
    next_sequence: u64,
    synced_sequence: u64,
    /// Last sequence of the batch in flight (== synced_sequence when idle).
    in_flight_last: u64,
    failure: Option<Failure>,
    closing: bool,
    committer_done: bool,
    committer_waker: Option<Waker>,
    /// Waiters whose record is in the batch in flight.
    in_flight_waiters: Vec<Waker>,
    /// Waiters whose record is not yet taken by the committer.
    open_waiters: Vec<Waker>,
    close_waiters: Vec<Waker>,
    pending_bytes: usize,
    wal_bytes: u64,
    buffer_capacity: usize,
    stats: WalStats,
    /// This run's segments not yet released, oldest first: (index, first
    /// sequence). The last one is the segment appends go to.
    segments: VecDeque<(u64, u64)>,
    /// The file of the segment after the one appends go to.
    next: NextSegment<S::File>,
    /// The task making `next` (kept so that the committer can wait for it
    /// at close).
    next_task: Option<glommio::Task<()>>,
    /// Files of new segments that appends laid records out for and the
    /// committer has not started yet: (index, file), oldest first.
    claimed: VecDeque<(u64, S::File)>,
    /// Appends that wait for the next segment's file take turns in arrival
    /// order ([`Wal::append_ready`]): tickets `turn_now..turn_next` are
    /// waiting; only `turn_now` may append, and while any wait, `append`
    /// refuses (so a later append never overtakes an earlier one).
    turn_now: u64,
    turn_next: u64,
    /// Tickets whose waiter went away before its turn.
    turns_abandoned: BTreeSet<u64>,
    /// Waiting for `next` to leave `Preparing` or for their turn.
    segment_waiters: Vec<Waker>,
}

/// The file of the segment after the open one: what an append that does
/// not fit the open segment needs before it may take a sequence.
enum NextSegment<F> {
    /// Not being made: spares are off, or the budget had no room when the
    /// previous one was claimed. The append that needs it starts it.
    Idle,
    /// Being made by `next_task`.
    Preparing,
    /// Made: created, preallocated, its name synced; no header yet.
    Ready { index: u64, file: F },
    /// The last attempt failed (disk full, most often); `next_task` tries
    /// again every `segment_retry`.
    Failed(Cause),
}

impl<S: Storage> State<S> {
    fn new_group(&self, segment_index: u64, file_pos: u64) -> Group<S::Buffer> {
        Group {
            buffer: self.storage.alloc_buffer(self.buffer_capacity),
            segment_index,
            new_segment: None,
            file_pos,
            fill: 0,
            record_bytes: 0,
            records: 0,
            last_sequence: 0,
        }
    }

    /// A group that starts segment `index` with the header as its prefix.
    fn new_segment_group(&self, index: u64) -> Group<S::Buffer> {
        let header = SegmentHeader {
            generation: self.options.generation,
            index,
            first_sequence: self.next_sequence,
            segment_bytes: self.options.segment_bytes,
        };
        let mut group = self.new_group(index, 0);
        header.encode_into(&mut S::buffer_bytes_mut(&mut group.buffer)[..SEGMENT_HEADER_BYTES]);
        group.fill = SEGMENT_HEADER_BYTES;
        group.new_segment = Some(header);
        group
    }

    /// Seals the open group (zero-pads it to the block end, trims it) and
    /// opens `next`; if `next` continues the same segment, the partial last
    /// block is carried over.
    fn seal_open(&mut self, next: Option<Group<S::Buffer>>) {
        let mut next = match next {
            Some(group) => group,
            None => {
                let open = &self.open;
                let carried_from = align_down(open.fill);
                let mut group =
                    self.new_group(open.segment_index, open.file_pos + carried_from as u64);
                let carried = open.fill - carried_from;
                S::buffer_bytes_mut(&mut group.buffer)[..carried]
                    .copy_from_slice(&S::buffer_bytes(&open.buffer)[carried_from..open.fill]);
                group.fill = carried;
                group
            }
        };
        std::mem::swap(&mut self.open, &mut next);
        let mut sealed = next;
        let end = align_up(sealed.fill);
        S::buffer_bytes_mut(&mut sealed.buffer)[sealed.fill..end].fill(0);
        S::buffer_trim(&mut sealed.buffer, end);
        self.sealed.push_back(sealed);
    }

    /// One more segment fits `wal_bytes_max`.
    fn next_fits(&self) -> bool {
        self.wal_bytes + self.options.segment_bytes <= self.options.wal_bytes_max
    }

    fn wake_segment_waiters(&mut self) {
        for waker in self.segment_waiters.drain(..) {
            waker.wake();
        }
    }

    fn wake_committer(&mut self) {
        if let Some(waker) = self.committer_waker.take() {
            waker.wake();
        }
    }

    fn error_for(&self, sequence: u64, failure: Failure) -> WalError {
        if failure.cause.is_no_space() {
            WalError::NoSpace(failure.cause)
        } else if sequence <= failure.failed_up_to {
            WalError::Failed(failure.cause)
        } else {
            WalError::Unhealthy(failure.cause)
        }
    }

    fn fail(&mut self, cause: Cause) {
        self.failure = Some(Failure {
            cause,
            failed_up_to: self.in_flight_last,
        });
        tracing::error!(dir = %self.options.dir.display(), %cause, "WAL unhealthy; nothing more will be acknowledged");
        for waker in self
            .in_flight_waiters
            .drain(..)
            .chain(self.open_waiters.drain(..))
        {
            waker.wake();
        }
    }
}

struct Shared<S: Storage> {
    state: RefCell<State<S>>,
}

/// Dropping the last `Wal` clone asks the committer to finish and exit.
struct Owner<S: Storage> {
    shared: Rc<Shared<S>>,
}

impl<S: Storage> Drop for Owner<S> {
    fn drop(&mut self) {
        let mut state = self.shared.state.borrow_mut();
        state.closing = true;
        state.wake_committer();
    }
}

/// The WAL of one shard. Cheap to clone (an `Rc`).
/// A record whose kind and bytes may depend on the segment it lands in:
/// a packed sub-batch refers to definitions earlier in its own segment
/// ([`crate::packed`]). The log asks for the record as it would be in the
/// open segment, and again for the next segment if placing it there
/// starts that one; it ends every attempt with [`Payload::settle`].
/// Everything happens synchronously on the log's thread, so no other
/// record is placed between the ask and the settle.
pub trait Payload {
    /// The most bytes [`Payload::record_for`] returns, for any segment.
    fn bytes_max(&self) -> usize;
    /// Kind and bytes of the record if it lands in segment `segment` (an
    /// index within this log's generation; indices only grow).
    fn record_for(&mut self, segment: u64) -> (u8, &[u8]);
    /// The attempt ended; `placed`: the last [`Payload::record_for`]
    /// went into the log with a sequence. Also called when the attempt
    /// ended before asking.
    fn settle(&mut self, placed: bool);
}

/// A record that is the same in every segment.
struct Plain<'a> {
    kind: u8,
    payload: &'a [u8],
}

impl Payload for Plain<'_> {
    fn bytes_max(&self) -> usize {
        self.payload.len()
    }

    fn record_for(&mut self, _segment: u64) -> (u8, &[u8]) {
        (self.kind, self.payload)
    }

    fn settle(&mut self, _placed: bool) {}
}

pub struct Wal<S: Storage = GlommioStorage> {
    owner: Rc<Owner<S>>,
}

impl<S: Storage> Clone for Wal<S> {
    fn clone(&self) -> Self {
        Wal {
            owner: Rc::clone(&self.owner),
        }
    }
}

impl Wal<GlommioStorage> {
    /// Opens a new segment `<generation>-0000000000.wal` in `options.dir`
    /// (real files) and starts the committer. Must run on a glommio executor.
    pub async fn open(options: WalOptions) -> Result<Wal, WalOpenError> {
        Wal::open_with(options, GlommioStorage::new()).await
    }
}

impl<S: Storage> Wal<S> {
    /// [`Wal::open`] through any storage (the test seam).
    pub async fn open_with(options: WalOptions, storage: S) -> Result<Wal<S>, WalOpenError> {
        options.validate().map_err(WalOpenError::Options)?;
        let storage = Rc::new(storage);
        let io = |step: IoStep| {
            move |error: std::io::Error| WalOpenError::Io {
                cause: Cause::new(step, &error),
                error,
            }
        };
        storage
            .create_dir_all(&options.dir)
            .await
            .map_err(io(IoStep::CreateDir))?;
        let existing = storage
            .segment_bytes_in(&options.dir)
            .await
            .map_err(io(IoStep::CreateDir))?;
        let wal_bytes = existing + options.segment_bytes;
        if wal_bytes > options.wal_bytes_max {
            return Err(WalOpenError::BudgetFull {
                wal_bytes: existing,
                wal_bytes_max: options.wal_bytes_max,
            });
        }
        let header = SegmentHeader {
            generation: options.generation,
            index: 0,
            first_sequence: 1,
            segment_bytes: options.segment_bytes,
        };
        let file = create_segment(&*storage, &options.dir, &header)
            .await
            .map_err(io(IoStep::CreateSegment))?;
        storage
            .sync_data(&file)
            .await
            .map_err(io(IoStep::SyncSegmentHeader))?;
        storage
            .sync_dir(&options.dir)
            .await
            .map_err(io(IoStep::SyncDir))?;

        let buffer_capacity = align_up(options.batch_bytes_max) + 2 * BLOCK;
        let histogram = |high: u64| {
            Histogram::new_with_bounds(1, high, 3).expect("constant histogram bounds are valid")
        };
        let mut open = Group {
            buffer: storage.alloc_buffer(buffer_capacity),
            segment_index: 0,
            new_segment: None,
            file_pos: 0,
            fill: SEGMENT_HEADER_BYTES,
            record_bytes: 0,
            records: 0,
            last_sequence: 0,
        };
        header.encode_into(&mut S::buffer_bytes_mut(&mut open.buffer)[..SEGMENT_HEADER_BYTES]);
        let batch_delay = options.batch_delay;
        let dir = options.dir.clone();
        let state = State {
            options,
            storage: Rc::clone(&storage),
            open,
            sealed: VecDeque::new(),
            next_sequence: 1,
            synced_sequence: 0,
            in_flight_last: 0,
            failure: None,
            closing: false,
            committer_done: false,
            committer_waker: None,
            in_flight_waiters: Vec::new(),
            open_waiters: Vec::new(),
            close_waiters: Vec::new(),
            pending_bytes: 0,
            wal_bytes,
            buffer_capacity,
            segments: VecDeque::from([(0, 1)]),
            next: NextSegment::Idle,
            next_task: None,
            claimed: VecDeque::new(),
            turn_now: 0,
            turn_next: 0,
            turns_abandoned: BTreeSet::new(),
            segment_waiters: Vec::new(),
            stats: WalStats {
                records: 0,
                record_bytes: 0,
                synced_bytes: 0,
                syncs: 0,
                writes: 0,
                segments_created: 1,
                pending_bytes: 0,
                wal_bytes,
                appended_sequence: 0,
                synced_sequence: 0,
                last_sync_latency_us: 0,
                sync_latency_us: histogram(60_000_000),
                records_per_sync: histogram(1 << 24),
                segment_failures: 0,
            },
        };
        let shared = Rc::new(Shared {
            state: RefCell::new(state),
        });
        let start = {
            let mut state = shared.state.borrow_mut();
            (state.options.spare_segment && state.next_fits()).then(|| begin_next(&mut state))
        };
        if let Some(index) = start {
            spawn_next(&shared, index);
        }
        let committer = Committer {
            shared: Rc::clone(&shared),
            storage,
            dir,
            file: Some(file),
            segment_index: 0,
            batch_delay,
        };
        glommio::spawn_local(committer.run()).detach();
        Ok(Wal {
            owner: Rc::new(Owner { shared }),
        })
    }

    fn state(&self) -> &RefCell<State<S>> {
        &self.owner.shared.state
    }

    /// Copies one record into the open group and returns its sequence. Never
    /// blocks. Errors: `Full`/`BudgetFull` at a bound (retry later),
    /// `TooLarge`, `SegmentPending` while the next segment's file is being
    /// made or earlier appends wait for it ([`Wal::append_ready`] waits
    /// instead), `NoSegment` when it cannot be made (disk full; retried in
    /// the background), `NoSpace`/`Unhealthy` once unhealthy, `Closed`.
    pub fn append(&self, kind: u8, payload: &[u8]) -> Result<Sequence, WalError> {
        self.append_turn(&mut Plain { kind, payload }, false)
    }

    /// [`Wal::append`] of a record whose bytes depend on the segment it
    /// lands in ([`Payload`]).
    pub fn append_payload(&self, payload: &mut dyn Payload) -> Result<Sequence, WalError> {
        self.append_turn(payload, false)
    }

    /// [`Wal::append`]; `has_turn`: the caller holds the current ticket of
    /// the waiting appends. Every attempt ends with [`Payload::settle`].
    fn append_turn(&self, payload: &mut dyn Payload, has_turn: bool) -> Result<Sequence, WalError> {
        let mut start = None;
        let appended = self.append_locked(payload, has_turn, &mut start);
        payload.settle(appended.is_ok());
        if let Some(index) = start {
            spawn_next(&self.owner.shared, index);
        }
        appended
    }

    /// [`Wal::append`] under the state borrow; sets `start` to the index
    /// of a next segment whose making the caller must spawn.
    fn append_locked(
        &self,
        payload: &mut dyn Payload,
        has_turn: bool,
        start: &mut Option<u64>,
    ) -> Result<Sequence, WalError> {
        let mut state = self.state().borrow_mut();
        if let Some(failure) = state.failure {
            return Err(state.error_for(u64::MAX, failure));
        }
        if state.closing {
            return Err(WalError::Closed);
        }
        if !has_turn && state.turn_now != state.turn_next {
            // Earlier appends wait for the next segment: queue behind them.
            return Err(WalError::SegmentPending);
        }
        // Bounds are checked against the largest form the record can take
        // in any segment, so that packing it again for a new segment (below)
        // cannot pass them.
        let payload_bytes_max = state.options.payload_bytes_max();
        let largest = payload.bytes_max();
        if largest > payload_bytes_max {
            return Err(WalError::TooLarge {
                payload_bytes: largest,
                payload_bytes_max,
            });
        }
        if state.pending_bytes + record_bytes(largest) > state.options.pending_bytes_max {
            return Err(WalError::Full {
                pending_bytes: state.pending_bytes,
                pending_bytes_max: state.options.pending_bytes_max,
            });
        }
        let open = &state.open;
        let mut segment = open.segment_index;
        let bytes = record_bytes(payload.record_for(segment).1.len());
        debug_assert!(
            bytes <= record_bytes(largest),
            "invariant: Payload::bytes_max"
        );
        let segment_end = open.file_pos + (open.fill + bytes) as u64;
        if segment_end > state.options.segment_bytes {
            // The record goes into a new segment, whose file must exist first.
            if !state.next_fits() {
                return Err(WalError::BudgetFull {
                    wal_bytes: state.wal_bytes,
                    wal_bytes_max: state.options.wal_bytes_max,
                });
            }
            let index = state.open.segment_index + 1;
            let file = match std::mem::replace(&mut state.next, NextSegment::Idle) {
                NextSegment::Ready { index: made, file } => {
                    assert_eq!(
                        made, index,
                        "invariant: the next file is the next segment's"
                    );
                    file
                }
                NextSegment::Idle => {
                    *start = Some(begin_next(&mut state));
                    return Err(WalError::SegmentPending);
                }
                NextSegment::Preparing => {
                    state.next = NextSegment::Preparing;
                    return Err(WalError::SegmentPending);
                }
                NextSegment::Failed(cause) => {
                    state.next = NextSegment::Failed(cause);
                    return Err(WalError::NoSegment(cause));
                }
            };
            state.claimed.push_back((index, file));
            segment = index;
            state.wal_bytes += state.options.segment_bytes;
            state.stats.wal_bytes = state.wal_bytes;
            let first_sequence = state.next_sequence;
            state.segments.push_back((index, first_sequence));
            let next = state.new_segment_group(index);
            if state.open.records == 0 {
                // Nothing appended into the current group: retarget it (its
                // carried bytes are already written by the previous group).
                state.open = next;
            } else {
                state.seal_open(Some(next));
            }
            if state.options.spare_segment && state.next_fits() {
                *start = Some(begin_next(&mut state));
            }
        } else if open.record_bytes + bytes > state.options.batch_bytes_max {
            state.seal_open(None);
        }
        // The record as it is in the segment it lands in (the same bytes as
        // measured above unless a new segment was started).
        let (kind, payload) = payload.record_for(segment);
        let bytes = record_bytes(payload.len());
        let sequence = state.next_sequence;
        state.next_sequence += 1;
        let open = &mut state.open;
        // A record packed for another segment would refer to definitions
        // that are not in its file: never place it.
        assert_eq!(
            open.segment_index, segment,
            "invariant: a record lands in the segment it was made for"
        );
        let at = open.fill;
        encode_into(
            &mut S::buffer_bytes_mut(&mut open.buffer)[at..at + bytes],
            kind,
            Sequence(sequence),
            payload,
        );
        open.fill += bytes;
        open.record_bytes += bytes;
        open.records += 1;
        open.last_sequence = sequence;
        state.pending_bytes += bytes;
        state.stats.records += 1;
        state.stats.record_bytes += bytes as u64;
        state.stats.appended_sequence = sequence;
        state.wake_committer();
        Ok(Sequence(sequence))
    }

    /// [`Wal::append`], waiting (not refusing) while the next segment's file
    /// is still being made (the ordinary case when a segment fills before
    /// its successor is ready, and always with spares off). Waiting appends
    /// take sequences in the order they arrived, before any later append.
    pub async fn append_ready(&self, kind: u8, payload: &[u8]) -> Result<Sequence, WalError> {
        self.append_ready_payload(&mut Plain { kind, payload })
            .await
    }

    /// [`Wal::append_ready`] of a [`Payload`].
    pub async fn append_ready_payload(
        &self,
        payload: &mut dyn Payload,
    ) -> Result<Sequence, WalError> {
        match self.append_turn(payload, false) {
            Err(WalError::SegmentPending) => {}
            other => return other,
        }
        let ticket = {
            let mut state = self.state().borrow_mut();
            let ticket = state.turn_next;
            state.turn_next += 1;
            ticket
        };
        let _turn = Turn {
            wal: self,
            ticket: Some(ticket),
        };
        loop {
            self.turn_ready(ticket).await?;
            match self.append_turn(payload, true) {
                // The file was claimed and the next one is not made yet:
                // still our turn.
                Err(WalError::SegmentPending) => continue,
                other => return other,
            }
        }
    }

    /// Resolves when ticket `ticket` may append: it is the current turn and
    /// the next segment's file is not being made. `NoSegment` if making it
    /// failed; the log's error once it failed or closed.
    async fn turn_ready(&self, ticket: u64) -> Result<(), WalError> {
        poll_fn(|cx| {
            let mut state = self.state().borrow_mut();
            if let Some(failure) = state.failure {
                return Poll::Ready(Err(state.error_for(u64::MAX, failure)));
            }
            if state.closing {
                return Poll::Ready(Err(WalError::Closed));
            }
            let preparing = matches!(state.next, NextSegment::Preparing);
            if state.turn_now == ticket && !preparing {
                return Poll::Ready(match state.next {
                    NextSegment::Failed(cause) => Err(WalError::NoSegment(cause)),
                    _ => Ok(()),
                });
            }
            if !state
                .segment_waiters
                .iter()
                .any(|w| w.will_wake(cx.waker()))
            {
                state.segment_waiters.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    /// [`WalStats::segment_failures`], without cloning the histograms.
    pub fn segment_failures(&self) -> u64 {
        self.state().borrow().stats.segment_failures
    }

    /// Why the next segment's file cannot be made, while it cannot (the
    /// log is healthy, but refuses appends once the open segment is full).
    pub fn next_segment_failure(&self) -> Option<Cause> {
        match self.state().borrow().next {
            NextSegment::Failed(cause) => Some(cause),
            _ => None,
        }
    }

    /// Resolves once the `fdatasync` covering `sequence` returned `Ok`, or
    /// with the error of its batch (or of the log) otherwise.
    pub async fn synced(&self, sequence: Sequence) -> Result<(), WalError> {
        let sequence = sequence.0;
        poll_fn(|cx| {
            let mut state = self.state().borrow_mut();
            assert!(
                sequence < state.next_sequence,
                "invariant: synced() is called with a sequence append() returned"
            );
            if sequence <= state.synced_sequence {
                return Poll::Ready(Ok(()));
            }
            if let Some(failure) = state.failure {
                return Poll::Ready(Err(state.error_for(sequence, failure)));
            }
            let waiters = if sequence <= state.in_flight_last {
                &mut state.in_flight_waiters
            } else {
                &mut state.open_waiters
            };
            // A re-poll without a wake-up must not grow the list.
            if !waiters.last().is_some_and(|w| w.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    /// Releases the segments of this run whose records all have sequence
    /// `<= sequence` (persisted elsewhere) and are synced: they no longer
    /// count against `wal_bytes_max`, and the caller deletes the returned
    /// files. The segment appends go to is never released.
    pub fn release_through(&self, sequence: Sequence) -> Vec<PathBuf> {
        let mut state = self.state().borrow_mut();
        let through = sequence.0.min(state.synced_sequence);
        let mut released = Vec::new();
        while state.segments.len() >= 2 && state.segments[1].1 - 1 <= through {
            let (index, _) = state.segments.pop_front().expect("len >= 2");
            released.push(
                state
                    .options
                    .dir
                    .join(crate::wal::segment::segment_file_name(
                        state.options.generation,
                        index,
                    )),
            );
            state.wal_bytes -= state.options.segment_bytes;
        }
        state.stats.wal_bytes = state.wal_bytes;
        released
    }

    /// Segment files of earlier runs in this directory were deleted (their
    /// records are persisted): they no longer count against
    /// `wal_bytes_max`.
    pub fn forget_bytes(&self, bytes: u64) {
        let mut state = self.state().borrow_mut();
        state.wal_bytes = state.wal_bytes.saturating_sub(bytes);
        state.stats.wal_bytes = state.wal_bytes;
    }

    /// Record bytes appended so far in this run (`WalStats::record_bytes`,
    /// without cloning the histograms).
    pub fn appended_bytes(&self) -> u64 {
        self.state().borrow().stats.record_bytes
    }

    /// This log's directory and generation.
    pub fn location(&self) -> (PathBuf, u64) {
        let state = self.state().borrow();
        (state.options.dir.clone(), state.options.generation)
    }

    /// Every record up to this sequence is durable.
    pub fn synced_through(&self) -> Sequence {
        Sequence(self.state().borrow().synced_sequence)
    }

    /// `Ok` while healthy; after any failed write or sync, the error every
    /// later append gets (naming the cause).
    pub fn health(&self) -> Result<(), WalError> {
        let state = self.state().borrow();
        match state.failure {
            Some(failure) => Err(state.error_for(u64::MAX, failure)),
            None => Ok(()),
        }
    }

    pub fn stats(&self) -> WalStats {
        let state = self.state().borrow();
        let mut stats = state.stats.clone();
        stats.pending_bytes = state.pending_bytes as u64;
        stats.synced_sequence = state.synced_sequence;
        stats
    }

    /// Graceful shutdown: refuses new appends, writes and syncs what is
    /// pending, waits for the committer to exit (and close the file).
    pub async fn close(&self) {
        {
            let mut state = self.state().borrow_mut();
            state.closing = true;
            state.wake_committer();
        }
        poll_fn(|cx| {
            let mut state = self.state().borrow_mut();
            if state.committer_done {
                Poll::Ready(())
            } else {
                state.close_waiters.push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// A waiting append's ticket ([`Wal::append_ready`]): when it is done
/// (appended, refused or dropped), the next ticket's turn comes.
struct Turn<'w, S: Storage> {
    wal: &'w Wal<S>,
    ticket: Option<u64>,
}

impl<S: Storage> Drop for Turn<'_, S> {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket else {
            return;
        };
        let mut state = self.wal.state().borrow_mut();
        if state.turn_now == ticket {
            state.turn_now += 1;
            loop {
                let now = state.turn_now;
                if !state.turns_abandoned.remove(&now) {
                    break;
                }
                state.turn_now += 1;
            }
        } else {
            // Gone before its turn: skipped when its turn comes.
            state.turns_abandoned.insert(ticket);
        }
        state.wake_segment_waiters();
    }
}

/// The one task per `Wal` that writes and syncs. Owns the open file.
struct Committer<S: Storage> {
    shared: Rc<Shared<S>>,
    storage: Rc<S>,
    dir: PathBuf,
    file: Option<S::File>,
    segment_index: u64,
    batch_delay: std::time::Duration,
}

/// Result of one batch: Ok, or the failing step and error.
type BatchResult = Result<(), (IoStep, std::io::Error)>;

/// A spare segment file, or the step of its creation that failed.
type SpareResult<F> = Result<F, (IoStep, std::io::Error)>;

/// What a spare is made of.
#[derive(Clone)]
struct SpareSpec {
    dir: PathBuf,
    generation: u64,
    segment_bytes: u64,
    prezero: bool,
}

impl SpareSpec {
    /// The file of segment `index` of this run.
    fn path(&self, index: u64) -> PathBuf {
        self.dir.join(crate::wal::segment::segment_file_name(
            self.generation,
            index,
        ))
    }

    fn of(options: &WalOptions) -> SpareSpec {
        SpareSpec {
            dir: options.dir.clone(),
            generation: options.generation,
            segment_bytes: options.segment_bytes,
            prezero: options.prezero_spare,
        }
    }
}

/// Bytes per write while pre-zeroing a spare (one write in flight).
const PREZERO_CHUNK_BYTES: usize = 1 << 20;

/// Marks the file of the segment after the open one as being made and
/// returns its index (`state.next` must be `Idle`). The caller then calls
/// [`spawn_next`] once it no longer borrows the state: glommio may poll a
/// new task inside `spawn_local`.
fn begin_next<S: Storage>(state: &mut State<S>) -> u64 {
    assert!(
        matches!(state.next, NextSegment::Idle),
        "invariant: one next segment at a time"
    );
    state.next = NextSegment::Preparing;
    state.open.segment_index + 1
}

/// Makes segment `index`'s file in the background ([`begin_next`]).
fn spawn_next<S: Storage>(shared: &Rc<Shared<S>>, index: u64) {
    let task = glommio::spawn_local(prepare_next(Rc::clone(shared), index));
    shared.state.borrow_mut().next_task = Some(task);
}

/// Makes segment `index`'s file; after a failure (disk full, most often)
/// tries again every `segment_retry` until it succeeds or the log closes
/// or fails. Appends that need the file meanwhile are refused with
/// `NoSegment` (they never took a sequence), so nothing waits on the disk
/// being freed and the log stays healthy.
async fn prepare_next<S: Storage>(shared: Rc<Shared<S>>, index: u64) {
    let (storage, spec, retry) = {
        let state = shared.state.borrow();
        (
            Rc::clone(&state.storage),
            SpareSpec::of(&state.options),
            state.options.segment_retry,
        )
    };
    let mut failures = 0u64;
    loop {
        if failures > 0 {
            // What a failed attempt could not remove would make every
            // retry fail (the file is created exclusively).
            let path = spec.path(index);
            if let Err(error) = storage.remove_file(&path).await {
                if error.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(file = %path.display(), %error, "removing a failed attempt's WAL segment");
                }
            }
        }
        let made = make_spare(Rc::clone(&storage), spec.clone(), index).await;
        {
            let mut state = shared.state.borrow_mut();
            match made {
                Ok(file) => {
                    if failures > 0 {
                        tracing::info!(dir = %spec.dir.display(), failures, "made the next WAL segment after failed attempts; writes are accepted again");
                    }
                    state.next = NextSegment::Ready { index, file };
                    state.wake_segment_waiters();
                    return;
                }
                Err((step, error)) => {
                    let cause = Cause::new(step, &error);
                    if failures == 0 {
                        tracing::error!(dir = %spec.dir.display(), %cause, ?retry, "cannot make the next WAL segment; once the open one is full, writes are refused with 503 until it is made (retrying)");
                    }
                    failures += 1;
                    state.stats.segment_failures += 1;
                    state.next = NextSegment::Failed(cause);
                    state.wake_segment_waiters();
                }
            }
        }
        glommio::timer::sleep(retry).await;
        let state = shared.state.borrow();
        if state.closing || state.failure.is_some() {
            return;
        }
    }
}

/// Creates segment `index`'s file ahead of use: create + `fallocate`
/// (+ with `prezero`, write its zeros and `fdatasync`), then the directory
/// `fsync` that makes its name durable. Its header is written (and synced)
/// only when the committer starts using it. On failure the file is closed
/// and removed (so that the next attempt can create it again).
async fn make_spare<S: Storage>(
    storage: Rc<S>,
    spec: SpareSpec,
    index: u64,
) -> SpareResult<S::File> {
    let path = spec.path(index);
    let file = create_spare(
        &*storage,
        &spec.dir,
        spec.generation,
        index,
        spec.segment_bytes,
    )
    .await
    .map_err(|e| (IoStep::CreateSegment, e))?;
    let prepared = async {
        if spec.prezero {
            let mut pos = 0u64;
            while pos < spec.segment_bytes {
                let len = (spec.segment_bytes - pos).min(PREZERO_CHUNK_BYTES as u64) as usize;
                let mut zeros = storage.alloc_buffer(len);
                S::buffer_bytes_mut(&mut zeros).fill(0);
                storage
                    .write_at(&file, zeros, pos)
                    .await
                    .map_err(|e| (IoStep::CreateSegment, e))?;
                pos += len as u64;
            }
            storage
                .sync_data(&file)
                .await
                .map_err(|e| (IoStep::SyncSegmentHeader, e))?;
        }
        storage
            .sync_dir(&spec.dir)
            .await
            .map_err(|e| (IoStep::SyncDir, e))
    };
    if let Err(error) = prepared.await {
        discard_file(&*storage, file, &path).await;
        return Err(error);
    }
    Ok(file)
}

/// Closes and removes a segment file that never held a header (a spare no
/// longer wanted, or one whose preparation failed). A file left behind is
/// removed by the next start's recovery.
async fn discard_file<S: Storage>(storage: &S, file: S::File, path: &std::path::Path) {
    if let Err(error) = storage.close(file).await {
        tracing::warn!(file = %path.display(), %error, "closing an unused WAL segment failed");
    }
    if let Err(error) = storage.remove_file(path).await {
        tracing::warn!(file = %path.display(), %error, "removing an unused WAL segment failed; the next start removes it");
    }
}

impl<S: Storage> Committer<S> {
    async fn run(mut self) {
        let mut round: Vec<Group<S::Buffer>> = Vec::new();
        loop {
            let has_work = poll_fn(|cx| {
                let mut state = self.shared.state.borrow_mut();
                if !state.sealed.is_empty() || state.open.records > 0 {
                    Poll::Ready(true)
                } else if state.closing || state.failure.is_some() {
                    Poll::Ready(false)
                } else {
                    state.committer_waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
            .await;
            if !has_work {
                break;
            }
            if !self.batch_delay.is_zero() {
                glommio::timer::sleep(self.batch_delay).await;
            }
            let (records, bytes) = {
                let mut state = self.shared.state.borrow_mut();
                if state.open.records > 0 {
                    state.seal_open(None);
                }
                round.extend(state.sealed.drain(..));
                let last = round.last().map_or(0, |g| g.last_sequence);
                assert!(
                    last > state.in_flight_last,
                    "invariant: a round has records"
                );
                state.in_flight_last = last;
                let State {
                    in_flight_waiters,
                    open_waiters,
                    ..
                } = &mut *state;
                assert!(
                    in_flight_waiters.is_empty(),
                    "invariant: one batch in flight"
                );
                std::mem::swap(in_flight_waiters, open_waiters);
                let records: u64 = round.iter().map(|g| g.records).sum();
                let bytes: usize = round.iter().map(|g| g.record_bytes).sum();
                (records, bytes)
            };
            let started = crate::clock::monotonic();
            let writes = round.len() as u64;
            let result = self.write_round(&mut round).await;
            let latency_us = crate::clock::elapsed_us(started);
            let mut state = self.shared.state.borrow_mut();
            match result {
                Ok(()) => {
                    state.synced_sequence = state.in_flight_last;
                    state.pending_bytes -= bytes;
                    let stats = &mut state.stats;
                    stats.syncs += 1;
                    stats.writes += writes;
                    stats.synced_bytes += bytes as u64;
                    stats.last_sync_latency_us = latency_us;
                    stats.sync_latency_us.saturating_record(latency_us.max(1));
                    stats.records_per_sync.saturating_record(records.max(1));
                    for waker in state.in_flight_waiters.drain(..) {
                        waker.wake();
                    }
                }
                Err((step, error)) => {
                    state.fail(Cause::new(step, &error));
                    break;
                }
            }
        }
        round.clear();
        if let Some(file) = self.file.take() {
            if let Err(error) = self.storage.close(file).await {
                tracing::warn!(dir = %self.dir.display(), %error, "closing WAL segment failed");
            }
        }
        self.discard_spare().await;
        let mut state = self.shared.state.borrow_mut();
        state.committer_done = true;
        for waker in state.close_waiters.drain(..) {
            waker.wake();
        }
    }

    /// Writes every group of the round (creating segments as needed), then
    /// one `fdatasync` of the current segment.
    async fn write_round(&mut self, round: &mut Vec<Group<S::Buffer>>) -> BatchResult {
        for group in round.drain(..) {
            if let Some(header) = group.new_segment {
                self.start_segment(&header).await?;
            }
            assert_eq!(
                group.segment_index, self.segment_index,
                "invariant: a group is written into the segment it was laid out for"
            );
            let file = self.file.as_ref().expect("invariant: a segment is open");
            self.storage
                .write_at(file, group.buffer, group.file_pos)
                .await
                .map_err(|e| (IoStep::Write, e))?;
        }
        let file = self.file.as_ref().expect("invariant: a segment is open");
        self.storage
            .sync_data(file)
            .await
            .map_err(|e| (IoStep::Sync, e))
    }

    /// Syncs the current segment (its last groups were written this round),
    /// then starts the next: takes the file `append` claimed for it (made
    /// ahead, its name synced), writes its header and syncs it. The spare's name was made durable when it was
    /// created, so nothing written into it can lose its directory entry.
    async fn start_segment(&mut self, header: &SegmentHeader) -> BatchResult {
        assert_eq!(
            header.index,
            self.segment_index + 1,
            "invariant: segments in order"
        );
        if let Some(file) = self.file.take() {
            self.storage
                .sync_data(&file)
                .await
                .map_err(|e| (IoStep::Sync, e))?;
            if let Err(error) = self.storage.close(file).await {
                tracing::warn!(dir = %self.dir.display(), %error, "closing WAL segment failed");
            }
        }
        let (index, file) = self
            .shared
            .state
            .borrow_mut()
            .claimed
            .pop_front()
            .expect("invariant: append claimed the new segment's file");
        assert_eq!(index, header.index, "invariant: claimed in order");
        write_header(&*self.storage, &file, header)
            .await
            .map_err(|e| (IoStep::CreateSegment, e))?;
        self.storage
            .sync_data(&file)
            .await
            .map_err(|e| (IoStep::SyncSegmentHeader, e))?;
        self.file = Some(file);
        self.segment_index = header.index;
        self.shared.state.borrow_mut().stats.segments_created += 1;
        Ok(())
    }

    /// At close (or after a failure): waits for the next segment's
    /// preparation to stop, then removes every file made ahead and never
    /// started (the spare, and files claimed for groups never written).
    /// After a crash, recovery removes them: they never held a header.
    async fn discard_spare(&mut self) {
        let task = self.shared.state.borrow_mut().next_task.take();
        if let Some(task) = task {
            task.await;
        }
        let mut files = Vec::new();
        {
            let mut state = self.shared.state.borrow_mut();
            if let NextSegment::Ready { index, file } =
                std::mem::replace(&mut state.next, NextSegment::Idle)
            {
                files.push((index, file));
            }
            files.extend(state.claimed.drain(..));
            state.wake_segment_waiters();
        }
        let spec = SpareSpec::of(&self.shared.state.borrow().options);
        for (index, file) in files {
            discard_file(&*self.storage, file, &spec.path(index)).await;
        }
    }
}
