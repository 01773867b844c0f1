//! Fault injection through the storage seam (failing write, failing sync,
//! ENOSPC) and the backpressure bounds.

mod common;

use std::path::{Path, PathBuf};

use common::TempDir;
use glommio::{LocalExecutorBuilder, Placement};
use ringest::wal::{self, IoStep, MemStorage, Wal, WalError, WalOptions};
use ringest::wal::{Fault, FaultPlan, GlommioStorage};

fn run_async<F, Fut, T>(f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
    T: Send + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(f)
        .expect("spawn executor")
        .join()
        .expect("executor")
}

fn options(dir: &Path) -> WalOptions {
    let mut options = WalOptions::new(dir.to_path_buf(), 1);
    options.segment_bytes = 16 << 10;
    options.batch_bytes_max = 4 << 10;
    options.pending_bytes_max = 8 << 10;
    options.wal_bytes_max = 1 << 20;
    options
}

fn prefix() -> PathBuf {
    PathBuf::from("/mem")
}

/// What one fault scenario observed.
struct Outcome {
    /// Results of the waiters of the batch that hit the fault.
    batch: Vec<Result<(), WalError>>,
    health: Result<(), WalError>,
    later_append: Result<u64, WalError>,
    /// Sequence acknowledged before the fault.
    acked_before: u64,
    image: TempDir,
}

/// Acknowledges one record, arms `fault`, appends 8 records as one batch
/// (all appended before the committer runs), awaits them all, then tries
/// one more append. Writes the storage image (no power loss) for recovery.
fn scenario(fault: Fault) -> Outcome {
    let image = TempDir::new("wal-fault");
    let image_root = image.path.clone();
    let (batch, health, later_append, acked_before) = run_async(move || async move {
        let storage = MemStorage::new();
        let wal = Wal::open_with(options(&prefix().join("0")), storage.clone())
            .await
            .expect("open");
        let first = wal
            .append(1, b"acknowledged before the fault")
            .expect("append");
        wal.synced(first).await.expect("baseline sync");
        let acked_before = wal.stats().synced_sequence;
        storage.inject(fault);
        let payload = vec![9u8; 100];
        let mut sequences = Vec::new();
        for _ in 0..8 {
            sequences.push(wal.append(2, &payload).expect("append"));
        }
        let mut batch = Vec::new();
        for seq in sequences {
            batch.push(wal.synced(seq).await);
        }
        let health = wal.health();
        let later_append = wal.append(3, b"after the fault").map(|s| s.0);
        storage.write_image(&prefix(), &image_root).expect("image");
        (batch, health, later_append, acked_before)
    });
    Outcome {
        batch,
        health,
        later_append,
        acked_before,
        image,
    }
}

fn assert_unhealthy_after(outcome: &Outcome, step: IoStep, no_space: bool) {
    assert!(!outcome.batch.is_empty());
    for result in &outcome.batch {
        match result {
            Err(WalError::Failed(cause)) if !no_space => assert_eq!(cause.step, step),
            Err(WalError::NoSpace(cause)) if no_space => {
                assert_eq!(cause.step, step);
                assert!(cause.is_no_space());
            }
            other => panic!("batch waiter got {other:?}"),
        }
    }
    match (&outcome.health, no_space) {
        (Err(WalError::Unhealthy(cause)), false) => assert_eq!(cause.step, step),
        (Err(WalError::NoSpace(cause)), true) => assert_eq!(cause.step, step),
        other => panic!("health: {other:?}"),
    }
    assert!(outcome.later_append.is_err(), "no append after a failure");
    // What was acknowledged before stays readable.
    wal::recover(&outcome.image.path, false).expect("recover");
    let mut sequences = Vec::new();
    wal::replay(&outcome.image.path, |r| sequences.push(r.sequence.0)).expect("replay");
    assert!(sequences.len() as u64 >= outcome.acked_before);
    assert_eq!(
        sequences[..outcome.acked_before as usize],
        (1..=outcome.acked_before).collect::<Vec<_>>()[..]
    );
}

/// Goal: a failing write fails every waiter of its batch, marks the WAL
/// unhealthy naming the write, and nothing later is accepted.
/// Method: EIO on the next write_at.
#[test]
fn failing_write_fails_the_batch_and_the_wal() {
    let outcome = scenario(Fault::FailWrite(1));
    assert_unhealthy_after(&outcome, IoStep::Write, false);
}

/// Goal: a failing fdatasync fails every waiter of its batch (no 204 after a
/// failed sync) and marks the WAL unhealthy naming the sync.
/// Method: EIO on the next sync_data.
#[test]
fn failing_sync_fails_the_batch_and_the_wal() {
    let outcome = scenario(Fault::FailSync(1));
    assert_unhealthy_after(&outcome, IoStep::Sync, false);
}

/// Goal: ENOSPC on a write reports NoSpace to the batch and afterwards, and
/// the acknowledged data stays readable.
/// Method: ENOSPC on the next write_at.
#[test]
fn enospc_on_write_reports_no_space() {
    let outcome = scenario(Fault::NoSpaceOnWrite(1));
    assert_unhealthy_after(&outcome, IoStep::Write, true);
}

/// Goal: a disk too full for the next segment refuses appends with
/// `NoSegment` *before* they take a sequence, keeps the log healthy (what
/// is acknowledged stays acknowledged, nothing is marked failed), reports
/// the cause, and resumes by itself once the disk has room: the retried
/// file is made, appends succeed, and recovery replays one gap-free run of
/// sequences holding every acknowledged record (and no refused one).
/// Method: MemStorage whose every `preallocate` fails from just after open
/// (so the spare for segment 1 fails) until `clear_faults`; fill segment 0
/// through `append_ready`; 10-ms retry.
#[test]
fn full_disk_at_rotation_refuses_before_sequencing_and_resumes() {
    let image = TempDir::new("wal-full-disk");
    let image_root = image.path.clone();
    let (acked, refused) = run_async(move || async move {
        let storage = MemStorage::new();
        let mut options = options(&prefix().join("0"));
        options.segment_retry = std::time::Duration::from_millis(10);
        let wal = Wal::open_with(options, storage.clone())
            .await
            .expect("open");
        // The spare for segment 1 was spawned by open and has not run yet.
        storage.inject(Fault::NoSpaceOnEveryPreallocate);
        let payload = vec![5u8; 3000];
        let mut acked = Vec::new();
        let cause = loop {
            match wal.append_ready(1, &payload).await {
                Ok(seq) => {
                    wal.synced(seq).await.expect("synced");
                    acked.push(seq.0);
                    assert!(acked.len() < 100, "segment 0 never filled");
                }
                Err(WalError::NoSegment(cause)) => break cause,
                Err(other) => panic!("expected NoSegment, got {other:?}"),
            }
        };
        assert_eq!(cause.step, IoStep::CreateSegment);
        assert!(cause.is_no_space(), "{cause}");
        assert!(wal.health().is_ok(), "a full disk is not a failed log");
        assert_eq!(wal.next_segment_failure(), Some(cause));
        let appended = wal.stats().appended_sequence;
        assert_eq!(
            appended,
            *acked.last().expect("acked"),
            "the refusal took no sequence"
        );
        // While the disk stays full the background retries fail and every
        // append is refused (polled until three attempts have failed).
        let mut refused = 0;
        while wal.stats().segment_failures < 3 {
            let refusal = wal.append_ready(1, &payload).await;
            assert!(
                matches!(refusal, Err(WalError::NoSegment(_))),
                "{refusal:?}"
            );
            refused += 1;
            glommio::timer::sleep(std::time::Duration::from_millis(2)).await;
        }
        storage.clear_faults();
        // Writes resume without reopening once a retry makes the file
        // (polled, as a client retrying after `Retry-After` would).
        let mut tries = 0;
        let resumed = loop {
            match wal.append_ready(2, &payload).await {
                Ok(seq) => break seq,
                Err(WalError::NoSegment(_)) => {}
                Err(other) => panic!("after the disk was freed: {other:?}"),
            }
            tries += 1;
            assert!(tries < 5000, "still refused 10 s after the disk was freed");
            glommio::timer::sleep(std::time::Duration::from_millis(2)).await;
        };
        assert_eq!(resumed.0, appended + 1, "sequences stay gap-free");
        wal.synced(resumed)
            .await
            .expect("synced after the disk was freed");
        acked.push(resumed.0);
        assert_eq!(wal.next_segment_failure(), None);
        storage.write_image(&prefix(), &image_root).expect("image");
        wal.close().await;
        (acked, refused)
    });
    assert!(refused >= 1);
    wal::recover(&image.path, false).expect("recover");
    let mut sequences = Vec::new();
    wal::replay(&image.path, |r| sequences.push(r.sequence.0)).expect("replay");
    assert_eq!(
        sequences, acked,
        "every acknowledged record, nothing refused"
    );
}

/// Goal: bytes awaiting sync are bounded: append answers Full at
/// `pending_bytes_max` without blocking, and accepts again after the sync.
/// Method: append 1000-byte records without awaiting until Full.
#[test]
fn pending_bytes_bound_gives_full() {
    run_async(|| async {
        let wal = Wal::open_with(options(&prefix().join("0")), MemStorage::new())
            .await
            .expect("open");
        let payload = vec![1u8; 1000];
        let mut last = None;
        let mut accepted = 0;
        let error = loop {
            match wal.append(0, &payload) {
                Ok(seq) => {
                    last = Some(seq);
                    accepted += 1;
                    assert!(accepted < 100, "bound never reached");
                }
                Err(e) => break e,
            }
        };
        match error {
            WalError::Full {
                pending_bytes,
                pending_bytes_max,
            } => {
                assert_eq!(pending_bytes_max, 8 << 10);
                assert!(
                    pending_bytes + 1024 > pending_bytes_max && pending_bytes <= pending_bytes_max
                );
            }
            other => panic!("expected Full, got {other:?}"),
        }
        assert_eq!(wal.stats().pending_bytes as usize, accepted * 1024);
        wal.synced(last.expect("accepted")).await.expect("synced");
        assert_eq!(wal.stats().pending_bytes, 0);
        let seq = wal
            .append(0, &payload)
            .expect("accepted again after the sync");
        wal.synced(seq).await.expect("synced");
        wal.close().await;
    });
}

/// Goal: the WAL size budget is backpressure (BudgetFull), never deletion,
/// and a record larger than a batch is refused as TooLarge.
/// Method: budget of two 16 KiB segments; append and sync until refused.
#[test]
fn wal_budget_gives_budget_full() {
    run_async(|| async {
        let storage = MemStorage::new();
        let mut options = options(&prefix().join("0"));
        options.wal_bytes_max = 32 << 10;
        let wal = Wal::open_with(options, storage.clone())
            .await
            .expect("open");
        let payload = vec![1u8; 2000];
        let mut synced = 0;
        let error = loop {
            match wal.append_ready(0, &payload).await {
                Ok(seq) => {
                    wal.synced(seq).await.expect("synced");
                    synced += 1;
                    assert!(synced < 100, "budget never reached");
                }
                Err(e) => break e,
            }
        };
        assert!(
            matches!(error, WalError::BudgetFull { wal_bytes_max, .. } if wal_bytes_max == 32 << 10),
            "{error:?}"
        );
        assert_eq!(storage.paths().len(), 2, "two segments, none deleted");
        assert!(
            wal.health().is_ok(),
            "budget is backpressure, not a failure"
        );
        match wal.append(0, &vec![0u8; 5000]) {
            Err(WalError::TooLarge {
                payload_bytes_max, ..
            }) => {
                assert_eq!(payload_bytes_max, (4 << 10) - 24)
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        wal.close().await;
        assert_eq!(wal.append(0, b"x"), Err(WalError::Closed));
    });
}

/// Goal: the fault plan also fails real-file I/O (what server-level fault
/// tests use), with the same outcome as in memory: the batch fails, the WAL
/// is unhealthy, acknowledged data stays readable on disk.
/// Method: GlommioStorage::with_faults, `fail-sync:1` parsed from text.
#[test]
fn fault_plan_on_real_files() {
    let root = TempDir::new("wal-real-fault");
    let dir = root.path.join("0");
    let (batch, later) = run_async(move || async move {
        let plan = FaultPlan::new();
        let storage = GlommioStorage::with_faults(plan.clone());
        let wal = Wal::open_with(options(&dir), storage).await.expect("open");
        let first = wal.append(0, b"before").expect("append");
        wal.synced(first).await.expect("synced");
        plan.inject("fail-sync:1".parse().expect("fault text"));
        let seq = wal.append(0, b"during").expect("append");
        let batch = wal.synced(seq).await;
        let later = wal.append(0, b"after");
        wal.close().await;
        (batch, later)
    });
    assert!(
        matches!(batch, Err(WalError::Failed(c)) if c.step == IoStep::Sync),
        "{batch:?}"
    );
    assert!(matches!(later, Err(WalError::Unhealthy(_))), "{later:?}");
    wal::recover(&root.path, false).expect("recover");
    let mut payloads = Vec::new();
    wal::replay(&root.path, |r| payloads.push(r.payload.to_vec())).expect("replay");
    assert_eq!(payloads[0], b"before");
    assert!("fail-sync:0".parse::<Fault>().is_err() && "nonsense".parse::<Fault>().is_err());
}
