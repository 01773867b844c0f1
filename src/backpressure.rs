//! Per-shard admission: bounded connections, bounded request bytes in
//! memory, bounded sub-batches from other shards. Every check answers at
//! once — admit (a permit that gives the capacity back when dropped) or
//! refuse (the caller answers 429/503 with `Retry-After`). Nothing here
//! sleeps or queues.
//!
//! `Retry-After` comes from the observed drain rate: the bytes that would
//! have to complete before the request fits, divided by the bytes completed
//! per second recently, rounded up, between 1 and 30 seconds.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use crate::clock;

/// Which bound refused a write (here, in the WAL, the store or the
/// cross-shard queue). One variant per bound; [`Overload::label`] is its
/// `cause` label on `ringest_refusals_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overload {
    /// WAL bytes appended but not yet synced reached `wal.pending_bytes_max`.
    WalPendingBytes = 0,
    /// The WAL's size on disk reached `wal.wal_bytes_max`.
    WalBudget = 1,
    /// The shard's store reached `store.memory_bytes_max`.
    StoreMemory = 2,
    /// Request bodies held in memory reached
    /// `backpressure.inflight_request_bytes_max`.
    RequestBytesInFlight = 3,
    /// Sub-batches from other shards reached
    /// `backpressure.queued_sub_batches_max`.
    QueuedSubBatches = 4,
    /// The channel to another shard was full (`backpressure.channel_capacity`).
    CrossShardQueue = 5,
    /// The next WAL segment's file was still being made after waiting for
    /// it (appends racing for new segments faster than they are made).
    WalSegment = 6,
}

impl Overload {
    /// Every variant, in discriminant order (`ALL[o as usize] == o`).
    pub const ALL: [Overload; 7] = [
        Overload::WalPendingBytes,
        Overload::WalBudget,
        Overload::StoreMemory,
        Overload::RequestBytesInFlight,
        Overload::QueuedSubBatches,
        Overload::CrossShardQueue,
        Overload::WalSegment,
    ];

    /// The Prometheus label value.
    pub fn label(self) -> &'static str {
        match self {
            Overload::WalPendingBytes => "wal_pending_bytes",
            Overload::WalBudget => "wal_budget",
            Overload::StoreMemory => "store_memory",
            Overload::RequestBytesInFlight => "request_bytes_in_flight",
            Overload::QueuedSubBatches => "queued_sub_batches",
            Overload::CrossShardQueue => "cross_shard_queue",
            Overload::WalSegment => "wal_segment",
        }
    }
}

assert_all_in_discriminant_order!(Overload);

/// The words used in error bodies (`server overloaded (…), retry later`).
impl std::fmt::Display for Overload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Overload::WalPendingBytes => "WAL bytes awaiting sync",
            Overload::WalBudget => "WAL size budget",
            Overload::StoreMemory => "store memory budget",
            Overload::RequestBytesInFlight => "request bytes in flight",
            Overload::QueuedSubBatches => "queued sub-batches",
            Overload::CrossShardQueue => "cross-shard queue full",
            Overload::WalSegment => "next WAL segment not ready",
        })
    }
}

/// Why admission refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    pub cause: Overload,
    pub retry_after_s: u32,
}

/// One shard's bounds and their current use.
#[derive(Debug)]
pub struct Admission {
    connections: Cell<usize>,
    connections_max: usize,
    request_bytes: Cell<usize>,
    request_bytes_max: usize,
    sub_batches: Cell<usize>,
    sub_batches_max: usize,
    drain: DrainRate,
}

/// Bytes completed per second, estimated over windows of at least 100 ms.
#[derive(Debug)]
struct DrainRate {
    window_start: Cell<Option<Instant>>,
    window_bytes: Cell<u64>,
    bytes_per_s: Cell<f64>,
}

impl DrainRate {
    fn record(&self, bytes: usize) {
        let now = clock::monotonic();
        let start = match self.window_start.get() {
            Some(start) => start,
            None => {
                self.window_start.set(Some(now));
                now
            }
        };
        self.window_bytes
            .set(self.window_bytes.get() + bytes as u64);
        let elapsed = now.saturating_duration_since(start).as_secs_f64();
        if elapsed >= 0.1 {
            let rate = self.window_bytes.get() as f64 / elapsed;
            let previous = self.bytes_per_s.get();
            // Smooth: half the new window, half the history.
            self.bytes_per_s.set(if previous == 0.0 {
                rate
            } else {
                (previous + rate) / 2.0
            });
            self.window_start.set(Some(now));
            self.window_bytes.set(0);
        }
    }

    fn seconds_for(&self, bytes: usize) -> u32 {
        let rate = self.bytes_per_s.get();
        if rate <= 0.0 {
            return 1;
        }
        ((bytes as f64 / rate).ceil() as u32).clamp(1, 30)
    }
}

impl Admission {
    pub fn new(
        connections_max: usize,
        request_bytes_max: usize,
        sub_batches_max: usize,
    ) -> Rc<Admission> {
        Rc::new(Admission {
            connections: Cell::new(0),
            connections_max,
            request_bytes: Cell::new(0),
            request_bytes_max,
            sub_batches: Cell::new(0),
            sub_batches_max,
            drain: DrainRate {
                window_start: Cell::new(None),
                window_bytes: Cell::new(0),
                bytes_per_s: Cell::new(0.0),
            },
        })
    }

    pub fn connections(&self) -> usize {
        self.connections.get()
    }

    pub fn request_bytes(&self) -> usize {
        self.request_bytes.get()
    }

    pub fn sub_batches(&self) -> usize {
        self.sub_batches.get()
    }

    pub fn admit_connection(self: &Rc<Self>) -> Option<ConnectionPermit> {
        if self.connections.get() >= self.connections_max {
            return None;
        }
        self.connections.set(self.connections.get() + 1);
        Some(ConnectionPermit {
            admission: self.clone(),
        })
    }

    /// Reserves `bytes` of request memory (a body about to be read).
    pub fn admit_bytes(self: &Rc<Self>, bytes: usize) -> Result<BytesPermit, Refused> {
        let mut permit = BytesPermit {
            admission: self.clone(),
            bytes: 0,
        };
        permit.grow(bytes)?;
        Ok(permit)
    }

    pub fn admit_sub_batch(self: &Rc<Self>) -> Result<SubBatchPermit, Refused> {
        if self.sub_batches.get() >= self.sub_batches_max {
            return Err(Refused {
                cause: Overload::QueuedSubBatches,
                retry_after_s: 1,
            });
        }
        self.sub_batches.set(self.sub_batches.get() + 1);
        Ok(SubBatchPermit {
            admission: self.clone(),
        })
    }

    /// A refusal for `cause` when `bytes` more are wanted.
    pub fn refusal(&self, cause: Overload, bytes: usize) -> Refused {
        Refused {
            cause,
            retry_after_s: self.drain.seconds_for(bytes.max(self.request_bytes.get())),
        }
    }

    /// Records work completed (for the drain rate).
    pub fn completed(&self, bytes: usize) {
        self.drain.record(bytes);
    }
}

/// Holds one connection slot.
#[derive(Debug)]
pub struct ConnectionPermit {
    admission: Rc<Admission>,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let count = self.admission.connections.get();
        assert!(count > 0, "connection count underflow");
        self.admission.connections.set(count - 1);
    }
}

/// Holds request bytes; grows as a chunked body arrives.
#[derive(Debug)]
pub struct BytesPermit {
    admission: Rc<Admission>,
    bytes: usize,
}

impl BytesPermit {
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Reserves `additional` more bytes or refuses without changing anything.
    pub fn grow(&mut self, additional: usize) -> Result<(), Refused> {
        let admission = &self.admission;
        let used = admission.request_bytes.get();
        if used.saturating_add(additional) > admission.request_bytes_max {
            return Err(admission.refusal(Overload::RequestBytesInFlight, additional));
        }
        admission.request_bytes.set(used + additional);
        self.bytes += additional;
        Ok(())
    }

    /// [`BytesPermit::grow`], except that a request alone in the budget
    /// always gets the bytes: it was admitted, and one request's working
    /// set is bounded by `http.body_bytes_max` (times the encoding factor),
    /// so refusing it would refuse it forever.
    pub fn grow_unless_alone(&mut self, additional: usize) -> Result<(), Refused> {
        let admission = &self.admission;
        let used = admission.request_bytes.get();
        if used == self.bytes {
            admission.request_bytes.set(used + additional);
            self.bytes += additional;
            return Ok(());
        }
        self.grow(additional)
    }
}

impl Drop for BytesPermit {
    fn drop(&mut self) {
        let used = self.admission.request_bytes.get();
        assert!(used >= self.bytes, "request byte accounting underflow");
        self.admission.request_bytes.set(used - self.bytes);
        self.admission.completed(self.bytes);
    }
}

/// Holds one queued sub-batch slot.
#[derive(Debug)]
pub struct SubBatchPermit {
    admission: Rc<Admission>,
}

impl Drop for SubBatchPermit {
    fn drop(&mut self) {
        let count = self.admission.sub_batches.get();
        assert!(count > 0, "sub-batch count underflow");
        self.admission.sub_batches.set(count - 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: every bound refuses at its limit and gives capacity back when
    /// the permit drops. Method: fill each bound, overflow it, release.
    #[test]
    fn bounds_refuse_and_release() {
        let admission = Admission::new(1, 100, 1);
        let connection = admission.admit_connection().expect("first connection");
        assert!(admission.admit_connection().is_none());
        drop(connection);
        assert!(admission.admit_connection().is_some());

        let mut body = admission.admit_bytes(60).expect("60 of 100");
        assert!(admission.admit_bytes(50).is_err());
        assert!(body.grow(50).is_err(), "growth past the bound is refused");
        assert_eq!(body.bytes(), 60, "a refused growth changes nothing");
        body.grow(40).expect("exactly to the bound");
        assert_eq!(admission.request_bytes(), 100);
        drop(body);
        assert_eq!(admission.request_bytes(), 0);

        let batch = admission.admit_sub_batch().expect("one");
        assert_eq!(
            admission.admit_sub_batch().unwrap_err().cause,
            Overload::QueuedSubBatches
        );
        assert_eq!(
            admission.admit_bytes(101).unwrap_err().cause,
            Overload::RequestBytesInFlight
        );
        drop(batch);
        assert_eq!(admission.sub_batches(), 0);
    }

    /// Goal: Retry-After is an integer between 1 and 30 seconds.
    /// Method: no history gives 1; a huge backlog is capped at 30.
    #[test]
    fn retry_after_is_bounded() {
        let admission = Admission::new(1, 100, 1);
        assert_eq!(admission.refusal(Overload::WalBudget, 10).retry_after_s, 1);
        admission.drain.bytes_per_s.set(1.0);
        assert_eq!(
            admission
                .refusal(Overload::WalBudget, 1_000_000)
                .retry_after_s,
            30
        );
    }

    /// Goal: `Overload::ALL` lists every variant once, at its discriminant,
    /// and labels are distinct snake_case (metric arrays are indexed by
    /// `as usize`). Method: check each position and label.
    #[test]
    fn overload_all_is_indexed_and_labelled() {
        let mut labels = std::collections::HashSet::new();
        for (index, overload) in Overload::ALL.iter().enumerate() {
            assert_eq!(*overload as usize, index, "{overload:?}");
            let label = overload.label();
            assert!(
                label.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{label}"
            );
            assert!(labels.insert(label), "label {label} twice");
        }
    }
}
