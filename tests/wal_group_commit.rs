//! Group commit, rotation and replay order on real files (glommio `DmaFile`,
//! real `fdatasync`).

// Tests are not shard code: std::fs and std::time are fine here (clippy.toml
// bans them on the server's executors).
#![allow(clippy::disallowed_methods)]

mod common;

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use common::TempDir;
use glommio::{LocalExecutorBuilder, Placement};
use ringest::wal::segment::{segment_file_name, SegmentHeader};
use ringest::wal::{self, MemStorage, Wal, WalOptions};

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

fn options(dir: &Path, generation: u64) -> WalOptions {
    let mut options = WalOptions::new(dir.to_path_buf(), generation);
    options.segment_bytes = 1 << 20;
    options.batch_bytes_max = 256 << 10;
    options.pending_bytes_max = 4 << 20;
    options
}

fn payload(writer: u32, n: u32) -> Vec<u8> {
    let mut out = format!("writer {writer} record {n} ").into_bytes();
    out.resize(100 + (n as usize % 50), b'x');
    out
}

/// Goal: with 64 concurrent appenders on one Wal, one fdatasync covers many
/// appends (syncs ≪ appends), every append is acknowledged, and replay
/// returns every acknowledged record in sequence order.
/// Method: 64 tasks × 50 (append, await synced) on real files; assert from
/// stats that syncs * 4 <= records; recover + replay and compare.
/// Also prints the fdatasync batch latency p50/p99 from the stats histogram.
#[test]
fn sixty_four_appenders_share_syncs() {
    let root = TempDir::new("wal-gc");
    let dir = root.path.join("0");
    let (stats, acked) = run_async(move || async move {
        let wal = Wal::open(options(&dir, 1)).await.expect("open");
        let acked = Rc::new(RefCell::new(Vec::new()));
        let mut tasks = Vec::new();
        for writer in 0..64u32 {
            let wal = wal.clone();
            let acked = Rc::clone(&acked);
            tasks.push(glommio::spawn_local(async move {
                for n in 0..50u32 {
                    let bytes = payload(writer, n);
                    let started = std::time::Instant::now();
                    let seq = wal.append_ready(1, &bytes).await.expect("append");
                    wal.synced(seq).await.expect("synced");
                    let ack_us = started.elapsed().as_micros() as u64;
                    acked.borrow_mut().push((seq.0, bytes, ack_us));
                }
            }));
        }
        for task in tasks {
            task.await;
        }
        let stats = wal.stats();
        wal.close().await;
        let acked = acked.borrow().clone();
        (stats, acked)
    });
    let mut ack_us: Vec<u64> = acked.iter().map(|a| a.2).collect();
    ack_us.sort_unstable();
    let at = |q: f64| ack_us[((ack_us.len() as f64 * q) as usize).min(ack_us.len() - 1)];
    println!(
        "64 appenders: ack latency (append → synced) p50 {} µs p99 {} µs p999 {} µs",
        at(0.5),
        at(0.99),
        at(0.999)
    );
    let acked: Vec<(u64, Vec<u8>)> = acked.into_iter().map(|(s, b, _)| (s, b)).collect();
    assert_eq!(stats.records, 64 * 50);
    assert_eq!(stats.synced_sequence, 64 * 50);
    assert_eq!(stats.pending_bytes, 0);
    println!(
        "64 appenders: {} records, {} syncs ({:.1} records/sync); batch write+fdatasync p50 {} µs p99 {} µs max {} µs",
        stats.records,
        stats.syncs,
        stats.records as f64 / stats.syncs as f64,
        stats.sync_latency_us.value_at_quantile(0.5),
        stats.sync_latency_us.value_at_quantile(0.99),
        stats.sync_latency_us.max()
    );
    assert!(
        stats.syncs * 4 <= stats.records,
        "group commit: {} syncs for {} records",
        stats.syncs,
        stats.records
    );

    let report = wal::recover(&root.path, false).expect("recover");
    assert_eq!(report.records(), 64 * 50);
    let mut replayed = Vec::new();
    wal::replay(&root.path, |r| {
        replayed.push((r.sequence.0, r.payload.to_vec()))
    })
    .expect("replay");
    let mut acked = acked;
    acked.sort();
    assert_eq!(
        replayed, acked,
        "replay returns every acknowledged record in order"
    );
}

/// Goal: segments rotate at `segment_bytes`, each new segment is created
/// before it is written, and replay crosses segments in order.
/// Method: 16 KiB segments, 300 records of ~200 B; check several segment
/// files exist, stats count them, replay yields sequences 1..=300.
#[test]
fn segments_rotate_at_segment_bytes() {
    let root = TempDir::new("wal-rotate");
    let dir = root.path.join("0");
    let dir2 = dir.clone();
    let stats = run_async(move || async move {
        let mut options = options(&dir2, 1);
        options.segment_bytes = 16 << 10;
        options.batch_bytes_max = 4 << 10;
        let wal = Wal::open(options).await.expect("open");
        for n in 0..300u32 {
            let seq = wal.append_ready(2, &payload(0, n)).await.expect("append");
            if n % 7 == 0 {
                wal.synced(seq).await.expect("synced");
            }
        }
        let last = wal.append_ready(2, b"last").await.expect("append");
        wal.synced(last).await.expect("synced");
        let stats = wal.stats();
        wal.close().await;
        stats
    });
    let files = std::fs::read_dir(&dir).expect("dir").count();
    assert!(
        stats.segments_created >= 3,
        "segments: {}",
        stats.segments_created
    );
    assert_eq!(files as u64, stats.segments_created);
    for entry in std::fs::read_dir(&dir).expect("dir") {
        let len = entry.expect("entry").metadata().expect("meta").len();
        assert!(len <= 16 << 10, "segment larger than segment_bytes: {len}");
    }
    wal::recover(&root.path, false).expect("recover");
    let mut sequences = Vec::new();
    wal::replay(&root.path, |r| sequences.push(r.sequence.0)).expect("replay");
    assert_eq!(sequences, (1..=301).collect::<Vec<u64>>());
}

/// Appends and syncs records until the log has started `segments`
/// segments; returns how many it appended.
async fn append_until_segments(wal: &Wal<MemStorage>, segments: u64) -> u32 {
    let mut n = 0;
    while wal.stats().segments_created < segments {
        let seq = wal.append_ready(2, &payload(0, n)).await.expect("append");
        wal.synced(seq).await.expect("synced");
        n += 1;
        assert!(n < 1000, "never rotated");
    }
    n
}

/// Yields to the executor until `path` exists in `storage` (the spare is
/// made by a background task; this waits for that event, not for a time).
async fn until_exists(storage: &MemStorage, path: &Path) {
    for _ in 0..10_000 {
        if storage.paths().iter().any(|p| p == path) {
            return;
        }
        futures_lite::future::yield_now().await;
    }
    panic!("{} never appeared", path.display());
}

/// Goal: the next segment's file is prepared before it is needed, so a
/// rotation only writes and syncs a header: while segment k is in use, the
/// file of segment k+1 already exists at full size, all zeros (no header);
/// at rotation that file gets the header and the records; an unused spare
/// is removed at close.
/// Method: MemStorage, 16 KiB segments; wait for the spare of segment 1,
/// fill segment 0 until the log rotates, check segment 1's header and the
/// spare of segment 2; close; check segment 2's file is gone.
#[test]
fn next_segment_is_prepared_ahead() {
    run_async(|| async {
        let storage = MemStorage::new();
        let dir = Path::new("/mem/0");
        let mut options = options(dir, 7);
        options.segment_bytes = 16 << 10;
        options.batch_bytes_max = 4 << 10;
        let wal = Wal::open_with(options, storage.clone())
            .await
            .expect("open");
        let segment = |index| dir.join(segment_file_name(7, index));
        until_exists(&storage, &segment(1)).await;
        let spare = storage.contents(&segment(1)).expect("spare");
        assert_eq!(spare.len(), 16 << 10, "spare is preallocated in full");
        assert!(spare.iter().all(|&b| b == 0), "spare has no header yet");
        append_until_segments(&wal, 2).await;
        let started = storage.contents(&segment(1)).expect("segment 1");
        let header = SegmentHeader::decode(&started).expect("segment 1 has its header");
        assert_eq!((header.generation, header.index), (7, 1));
        until_exists(&storage, &segment(2)).await;
        wal.close().await;
        assert!(
            !storage.paths().contains(&segment(2)),
            "unused spare removed at close: {:?}",
            storage.paths()
        );
        let expected: Vec<_> = [segment(0), segment(1)].into();
        assert_eq!(storage.paths(), expected);
    });
}

/// Goal: replay order is (generation, shard dir numerically, sequence),
/// across runs with different shard counts.
/// Method: generation 1 writes shards 0,1; generation 2 writes shards
/// 0,1,2,10 (10 sorts after 2); replay and compare with that order.
#[test]
fn replay_order_across_generations_and_shards() {
    let root = TempDir::new("wal-order");
    let wal_root = root.path.clone();
    let mut expected = Vec::new();
    for (generation, shards) in [(1u64, vec![0u32, 1]), (2, vec![10, 2, 0, 1])] {
        let g = wal::next_generation(&wal_root).expect("generation");
        assert_eq!(g, generation);
        for &shard in &shards {
            for n in 1..=3u64 {
                expected.push((generation, shard, n));
            }
        }
        let run_root = wal_root.clone();
        run_async(move || async move {
            for shard in shards {
                let wal = Wal::open(options(&run_root.join(shard.to_string()), generation))
                    .await
                    .expect("open");
                let mut last = None;
                for n in 1..=3u64 {
                    let text = format!("g{generation} s{shard} n{n}");
                    last = Some(wal.append_ready(0, text.as_bytes()).await.expect("append"));
                }
                wal.synced(last.expect("appended")).await.expect("synced");
                wal.close().await;
            }
        });
        wal::recover(&wal_root, false).expect("recover");
    }
    expected.sort_by_key(|&(g, s, n)| (g, s, n));
    let mut seen = Vec::new();
    wal::replay(&root.path, |r| {
        let text = std::str::from_utf8(r.payload).expect("utf8");
        let shard = r.shard.expect("numeric dir");
        assert_eq!(
            text,
            format!("g{} s{} n{}", r.generation, shard, r.sequence.0)
        );
        seen.push((r.generation, shard, r.sequence.0));
    })
    .expect("replay");
    assert_eq!(seen, expected);
    let mut out = Vec::new();
    let clean = wal::inspect_with(&root.path, &mut out, |record| {
        let len = record.payload.len() as i64;
        Ok(Some((len, len)))
    })
    .expect("inspect");
    let text = String::from_utf8(out).expect("utf8");
    assert!(clean, "{text}");
    assert!(text.contains("verify: ok"), "{text}");
    assert!(
        text.contains("seq 1..=3")
            && text.contains(
                "time 1970-01-01T00:00:00.000000008Z..=1970-01-01T00:00:00.000000008Z (8..=8 ns)"
            ),
        "{text}"
    );
    assert!(
        text.contains("(9..=9 ns)"),
        "shard 10 payloads are 9 bytes: {text}"
    );
}

/// Goal: batch_delay > 0 still acknowledges everything (the timer path works).
/// Method: 1 ms delay, 8 appenders, all synced.
#[test]
fn batch_delay_path_acknowledges() {
    let root = TempDir::new("wal-delay");
    let dir = root.path.join("0");
    let records = run_async(move || async move {
        let mut options = options(&dir, 1);
        options.batch_delay = Duration::from_millis(1);
        let wal = Wal::open(options).await.expect("open");
        let mut tasks = Vec::new();
        for writer in 0..8u32 {
            let wal = wal.clone();
            tasks.push(glommio::spawn_local(async move {
                for n in 0..5u32 {
                    let seq = wal
                        .append_ready(0, &payload(writer, n))
                        .await
                        .expect("append");
                    wal.synced(seq).await.expect("synced");
                }
            }));
        }
        for task in tasks {
            task.await;
        }
        let records = wal.stats().synced_sequence;
        wal.close().await;
        records
    });
    assert_eq!(records, 40);
}

/// Goal: with `prezero_spare`, each spare's zeros are written and synced
/// while it is prepared (so that the syncs of its records commit no
/// unwritten-extent conversion), and nothing else changes.
/// Method: MemStorage, the same appends with and without it, through two
/// rotations and a close (which waits for the last spare); the storage
/// call counts differ by one zero write (16 KiB segments, 1 MiB chunks)
/// and one sync per spare prepared (three: segments 1, 2 and 3).
#[test]
fn prezeroed_spares_are_written_and_synced_ahead() {
    let calls = |prezero: bool| {
        run_async(move || async move {
            let storage = MemStorage::new();
            let dir = Path::new("/mem/0");
            let mut options = options(dir, 3);
            options.segment_bytes = 16 << 10;
            options.batch_bytes_max = 4 << 10;
            options.prezero_spare = prezero;
            let wal = Wal::open_with(options, storage.clone())
                .await
                .expect("open");
            let n = append_until_segments(&wal, 3).await;
            wal.close().await;
            (n, storage.calls())
        })
    };
    let (appends_plain, (writes_plain, syncs_plain)) = calls(false);
    let (appends_zeroed, (writes_zeroed, syncs_zeroed)) = calls(true);
    assert_eq!(appends_plain, appends_zeroed, "same layout either way");
    assert_eq!(writes_zeroed - writes_plain, 3, "one zero write per spare");
    assert_eq!(syncs_zeroed - syncs_plain, 3, "one sync per spare");
}

/// Goal: appends that wait for the next segment's file keep their arrival
/// order: a later append that would still fit the open segment does not
/// overtake an earlier one waiting for the new segment (a request's
/// sub-batches for one shard are appended in line order, so that the later
/// of two writes of a point wins, in memory and after replay).
/// Method: real files with spares off (every new segment is made when
/// first needed, by real I/O); fill segment 0 until a 3000-byte record no
/// longer fits, then start an append of that record and, behind it, of a
/// 100-byte record that fits; the big one must get the smaller sequence,
/// and replay must return them in that order.
#[test]
fn waiting_appends_keep_their_order() {
    let root = TempDir::new("wal-turns");
    let dir = root.path.join("0");
    let dir2 = dir.clone();
    let (big, small) = run_async(move || async move {
        let mut options = options(&dir2, 1);
        options.segment_bytes = 16 << 10;
        options.batch_bytes_max = 4 << 10;
        options.pending_bytes_max = 8 << 10;
        options.spare_segment = false;
        let wal = Rc::new(Wal::open(options).await.expect("open"));
        let filler = vec![1u8; 3000];
        // 16 KiB segments: after five 3024-byte records (+ header block)
        // a sixth does not fit, a 124-byte one still does.
        for _ in 0..5 {
            let seq = wal.append_ready(1, &filler).await.expect("append");
            wal.synced(seq).await.expect("synced");
        }
        assert!(matches!(
            wal.append(1, &filler),
            Err(wal::WalError::SegmentPending)
        ));
        let first = {
            let wal = wal.clone();
            glommio::spawn_local(async move { wal.append_ready(2, &[2u8; 3000]).await })
        };
        let second = {
            let wal = wal.clone();
            glommio::spawn_local(async move { wal.append_ready(3, &[3u8; 100]).await })
        };
        let big = first.await.expect("big append");
        let small = second.await.expect("small append");
        wal.synced(big.max(small)).await.expect("synced");
        wal.close().await;
        (big.0, small.0)
    });
    assert!(
        big < small,
        "the waiting append kept its place: {big} < {small}"
    );
    wal::recover(&root.path, false).expect("recover");
    let mut kinds = Vec::new();
    wal::replay(&root.path, |r| kinds.push(r.kind)).expect("replay");
    assert_eq!(kinds[kinds.len() - 2..], [2, 3]);
}
