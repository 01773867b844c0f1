//! Power loss through the storage seam, and torn / corrupt tails on real
//! files: after recovery every acknowledged record is intact, nothing
//! unacknowledged is invented, and damage outside a torn tail stops start-up
//! with file and offset.

// Tests are not shard code: std::fs and std::time are fine here (clippy.toml
// bans them on the server's executors).
#![allow(clippy::disallowed_methods)]

mod common;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use common::TempDir;
use glommio::{LocalExecutorBuilder, Placement};
use ringest::wal::record::{decode, Decoded};
use ringest::wal::recovery::CorruptionKind;
use ringest::wal::segment::{parse_segment_file_name, segment_file_name, SEGMENT_HEADER_BYTES};
use ringest::wal::{self, MemStorage, RecoveryError, Wal, WalOptions};

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

#[derive(Clone, Copy, Debug)]
enum Crash {
    PowerLoss,
    Torn(usize),
    Kill,
}

/// (sequence, payload) of acknowledged records.
type Acked = Vec<(u64, Vec<u8>)>;

fn small_options(dir: &Path, generation: u64) -> WalOptions {
    let mut options = WalOptions::new(dir.to_path_buf(), generation);
    options.segment_bytes = 16 << 10;
    options.batch_bytes_max = 4 << 10;
    options.pending_bytes_max = 64 << 10;
    options
}

fn payload(writer: u32, n: u32) -> Vec<u8> {
    let mut out = format!("w{writer} n{n} ").into_bytes();
    out.resize(
        40 + ((writer * 31 + n * 17) % 200) as usize,
        b'a' + (n % 26) as u8,
    );
    out
}

/// Replays `root` into sequence → payload (single directory "0").
fn replayed(root: &Path) -> BTreeMap<u64, Vec<u8>> {
    let mut out = BTreeMap::new();
    wal::replay(root, |r| {
        assert!(
            out.insert(r.sequence.0, r.payload.to_vec()).is_none(),
            "duplicate sequence"
        );
    })
    .expect("replay");
    out
}

/// Goal: power loss at any moment loses nothing acknowledged.
/// Method: 16 concurrent writers on a MemStorage WAL with 16 KiB segments
/// (so rotation and segment creation fall inside the crash windows); after
/// `cut` acknowledgements drop everything not covered by a completed sync
/// (and files whose directory entry was not synced), write the image to a
/// real directory, recover, replay; every acknowledged record must be there
/// with its payload, and sequences must be 1..=n without gaps.
/// Modes: clean power loss, torn power loss keeping a prefix of the
/// unsynced bytes, and a process kill (unsynced writes kept).
#[test]
fn power_loss_keeps_every_acknowledged_record() {
    let modes = [
        Crash::PowerLoss,
        Crash::Torn(1),
        Crash::Torn(100),
        Crash::Torn(5000),
        Crash::Kill,
    ];
    for (cut, mode) in [0usize, 1, 3, 17, 64, 150, 333, 600]
        .into_iter()
        .flat_map(|cut| modes.into_iter().map(move |mode| (cut, mode)))
    {
        let root = TempDir::new("wal-power");
        let image_root = root.path.clone();
        let acked = run_async(move || async move {
            let storage = MemStorage::new();
            let prefix = PathBuf::from("/mem");
            let wal = Wal::open_with(small_options(&prefix.join("0"), 1), storage.clone())
                .await
                .expect("open");
            let acked: Rc<RefCell<Acked>> = Rc::default();
            let mut tasks = Vec::new();
            for writer in 0..16u32 {
                let wal = wal.clone();
                let acked = Rc::clone(&acked);
                tasks.push(glommio::spawn_local(async move {
                    for n in 0..40u32 {
                        let bytes = payload(writer, n);
                        let seq = wal.append_ready(0, &bytes).await.expect("append");
                        wal.synced(seq).await.expect("synced");
                        acked.borrow_mut().push((seq.0, bytes));
                    }
                }));
            }
            while acked.borrow().len() < cut {
                futures_lite::future::yield_now().await;
            }
            // Crash now: nothing runs between these two calls.
            match mode {
                Crash::PowerLoss => storage.power_loss(),
                Crash::Torn(keep_bytes) => storage.power_loss_torn(keep_bytes),
                Crash::Kill => {}
            }
            storage.write_image(&prefix, &image_root).expect("image");
            let acked = acked.borrow().clone();
            drop(tasks);
            acked
        });
        wal::recover(&root.path, false).unwrap_or_else(|e| panic!("cut {cut} {mode:?}: {e}"));
        let replayed = replayed(&root.path);
        for (seq, bytes) in &acked {
            assert_eq!(
                replayed.get(seq),
                Some(bytes),
                "cut {cut} {mode:?}: acknowledged seq {seq} lost"
            );
        }
        let sequences: Vec<u64> = replayed.keys().copied().collect();
        assert_eq!(
            sequences,
            (1..=sequences.len() as u64).collect::<Vec<_>>(),
            "cut {cut} {mode:?}"
        );
        // Recovery is idempotent: a second run finds nothing to repair.
        let again = wal::recover(&root.path, false).expect("second recover");
        assert!(again
            .dirs
            .iter()
            .all(|d| d.truncated.is_none() && d.removed.is_empty()));
    }
}

/// Writes `records` records into a fresh real WAL `root/0` with 16 KiB
/// segments and returns (newest segment path, start and end offsets of its
/// last record, all payloads by sequence).
fn real_wal(root: &Path, records: u32) -> (PathBuf, usize, usize, BTreeMap<u64, Vec<u8>>) {
    let dir = root.join("0");
    let dir2 = dir.clone();
    let written = run_async(move || async move {
        let wal = Wal::open(small_options(&dir2, 1)).await.expect("open");
        let mut written = BTreeMap::new();
        let mut last = None;
        for n in 0..records {
            let bytes = payload(0, n);
            let seq = wal.append_ready(3, &bytes).await.expect("append");
            written.insert(seq.0, bytes);
            last = Some(seq);
        }
        wal.synced(last.expect("records")).await.expect("synced");
        wal.close().await;
        written
    });
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .collect();
    segments.sort();
    let newest = segments.pop().expect("a segment");
    let bytes = std::fs::read(&newest).expect("read");
    let (mut pos, mut last_start) = (SEGMENT_HEADER_BYTES, SEGMENT_HEADER_BYTES);
    while let Decoded::Record(record) = decode(&bytes[pos..]) {
        last_start = pos;
        pos += record.encoded_bytes();
    }
    (newest, last_start, pos, written)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// Goal: a torn tail cut at every byte offset of the last record recovers
/// cleanly: the last record is dropped (it was never acknowledged in this
/// scenario), everything before it is intact, whether the tail is missing,
/// zeroed, or garbage.
/// Method: real WAL with two+ segments; for each offset in the last record
/// and each of three damages (truncate / zero / 0xFF from the offset to the
/// record end), recover a copy and replay it.
#[test]
fn torn_tail_at_every_byte_of_last_record() {
    let original = TempDir::new("wal-torn-src");
    let (newest, start, end, written) = real_wal(&original.path, 120);
    assert!(newest
        .file_name()
        .expect("name")
        .to_string_lossy()
        .ends_with("0000000001.wal"));
    let relative = newest
        .strip_prefix(&original.path)
        .expect("relative")
        .to_path_buf();
    let last_seq = *written.keys().last().expect("records");
    let mut expected = written.clone();
    expected.remove(&last_seq);
    for cut in start..end {
        for damage in ["truncate", "zero", "garbage"] {
            let copy = TempDir::new("wal-torn");
            copy_dir(&original.path, &copy.path);
            let file = copy.path.join(&relative);
            let mut bytes = std::fs::read(&file).expect("read");
            match damage {
                "truncate" => bytes.truncate(cut),
                "zero" => bytes[cut..end].fill(0),
                _ => bytes[cut..end].fill(0xFF),
            }
            std::fs::write(&file, &bytes).expect("write");
            let report = wal::recover(&copy.path, false)
                .unwrap_or_else(|e| panic!("{damage} at {cut}: {e}"));
            let truncated = report.dirs[0].truncated.as_ref();
            if !(damage == "truncate" && cut == start) {
                assert_eq!(
                    truncated.map(|t| t.offset),
                    Some(start as u64),
                    "{damage} at {cut}"
                );
            }
            assert_eq!(replayed(&copy.path), expected, "{damage} at {cut}");
            assert_eq!(std::fs::metadata(&file).expect("meta").len(), start as u64);
        }
    }
}

/// Goal: damage inside an earlier (not newest) segment stops recovery with
/// that file and the offset of the damaged record, unless skip_corrupt; with
/// skip, replay returns the records before the damage and all later
/// segments.
/// Method: truncate the first segment in the middle of its last record.
#[test]
fn cut_in_earlier_segment_stops_recovery_unless_skipped() {
    let root = TempDir::new("wal-earlier");
    let (newest, _, _, written) = real_wal(&root.path, 120);
    let first = newest.with_file_name("00000000000000000001-0000000000.wal");
    let bytes = std::fs::read(&first).expect("read");
    let mut pos = SEGMENT_HEADER_BYTES;
    let mut starts = Vec::new();
    while let Decoded::Record(record) = decode(&bytes[pos..]) {
        starts.push(pos);
        pos += record.encoded_bytes();
    }
    let last_start = *starts.last().expect("records in first segment");
    let cut = last_start + 10;
    let mut damaged = bytes.clone();
    damaged[cut..].fill(0);
    damaged[cut] = 1; // something non-zero after the damage
    std::fs::write(&first, &damaged).expect("write");

    match wal::recover(&root.path, false) {
        Err(RecoveryError::Corrupt(c)) => {
            assert_eq!(c.path, first);
            assert_eq!(c.offset, last_start as u64);
            assert!(matches!(c.kind, CorruptionKind::Record(_)), "{:?}", c.kind);
            let message = RecoveryError::Corrupt(c).to_string();
            assert!(
                message.contains("0000000000.wal") && message.contains(&last_start.to_string())
            );
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    let mut inspect_out = Vec::new();
    assert!(!wal::inspect(&root.path, &mut inspect_out).expect("inspect"));

    let report = wal::recover(&root.path, true).expect("skip");
    assert_eq!(report.dirs[0].skipped.len(), 1);
    let replayed = replayed(&root.path);
    let lost_seq = starts.len() as u64; // the damaged record's sequence
    let mut expected = written;
    expected.remove(&lost_seq);
    assert_eq!(replayed, expected);
}

/// Goal: damage followed by a valid record in the newest segment is not
/// mistaken for a torn tail (it may hide acknowledged data).
/// Method: flip a payload byte of a middle record of the newest segment.
#[test]
fn damage_before_valid_record_in_newest_segment_is_corruption() {
    let root = TempDir::new("wal-mid");
    let (newest, start, _, _) = real_wal(&root.path, 120);
    let mut bytes = std::fs::read(&newest).expect("read");
    bytes[SEGMENT_HEADER_BYTES + 30] ^= 0x40;
    std::fs::write(&newest, &bytes).expect("write");
    match wal::recover(&root.path, false) {
        Err(RecoveryError::Corrupt(c)) => {
            assert_eq!(c.path, newest);
            assert_eq!(c.offset, SEGMENT_HEADER_BYTES as u64);
            assert!(matches!(
                c.kind,
                CorruptionKind::DamageBeforeValidRecord { .. }
            ));
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    assert!(start > SEGMENT_HEADER_BYTES);
}

/// Goal: a newest segment whose creation never finished (file exists, no
/// header) is removed and the earlier data replays.
/// Method: add an all-zero file named as the next segment.
#[test]
fn unfinished_newest_segment_is_removed() {
    let root = TempDir::new("wal-unfinished");
    let (newest, _, _, written) = real_wal(&root.path, 40);
    let bogus = newest.with_file_name("00000000000000000001-0000000009.wal");
    std::fs::write(&bogus, vec![0u8; 8192]).expect("write");
    let report = wal::recover(&root.path, false).expect("recover");
    assert_eq!(report.dirs[0].removed, vec![bogus.clone()]);
    assert!(!bogus.exists());
    assert_eq!(replayed(&root.path), written);
}

/// Goal: what a crash can leave since a segment's file is claimed before
/// the committer writes its header: two headerless files after the newest
/// segment (the claimed one, never started, and the next one made ahead),
/// and a third that is empty (an attempt interrupted right after create);
/// all are removed and everything acknowledged replays.
/// Method: a real WAL; a zero-filled file for each of the next two indexes
/// and an empty one for the third.
#[test]
fn several_unstarted_segments_after_the_newest_are_removed() {
    let root = TempDir::new("wal-unstarted");
    let (newest, _, _, written) = real_wal(&root.path, 40);
    let claimed = next_segment(&newest);
    let ahead = next_segment(&claimed);
    let interrupted = next_segment(&ahead);
    std::fs::write(&claimed, vec![0u8; 16 << 10]).expect("write claimed");
    std::fs::write(&ahead, vec![0u8; 16 << 10]).expect("write ahead");
    std::fs::write(&interrupted, b"").expect("write interrupted");
    let report = wal::recover(&root.path, false).expect("recover");
    let mut removed = report.dirs[0].removed.clone();
    removed.sort();
    assert_eq!(
        removed,
        vec![claimed.clone(), ahead.clone(), interrupted.clone()]
    );
    assert!(!claimed.exists() && !ahead.exists() && !interrupted.exists());
    assert_eq!(replayed(&root.path), written);
}

/// The path segment `newest` would be followed by.
fn next_segment(newest: &Path) -> PathBuf {
    let name = newest.file_name().and_then(|n| n.to_str()).expect("name");
    let (generation, index) = parse_segment_file_name(name).expect("segment name");
    newest.with_file_name(segment_file_name(generation, index + 1))
}

/// Goal: a spare prepared ahead (all zeros, no header) does not take the
/// newest segment's place: the segment before it may still have a torn
/// tail, which is truncated as never acknowledged; the spare is removed;
/// everything acknowledged replays.
/// Method: a real WAL; garbage after its last record (a torn batch write)
/// and an all-zero file named as the next segment.
#[test]
fn torn_tail_before_a_spare_is_truncated() {
    let root = TempDir::new("wal-spare-torn");
    let (newest, _, end, written) = real_wal(&root.path, 40);
    let mut bytes = std::fs::read(&newest).expect("read");
    bytes[end..end + 100].fill(0xEE);
    std::fs::write(&newest, &bytes).expect("write");
    let spare = next_segment(&newest);
    std::fs::write(&spare, vec![0u8; 16 << 10]).expect("write spare");
    let report = wal::recover(&root.path, false).expect("recover");
    let dir = &report.dirs[0];
    assert_eq!(dir.removed, vec![spare.clone()]);
    let cut = dir.truncated.as_ref().expect("a truncation");
    assert!(cut.torn, "{cut:?}");
    assert_eq!((cut.path.clone(), cut.offset), (newest.clone(), end as u64));
    assert!(!spare.exists());
    assert_eq!(replayed(&root.path), written);
}

/// Goal: a spare after the newest segment does not weaken corruption
/// detection: damage followed by a valid record there still stops start-up.
/// Method: flip a byte of the second-to-last record, add an all-zero spare.
#[test]
fn damage_before_a_spare_is_still_corruption() {
    let root = TempDir::new("wal-spare-corrupt");
    let (newest, last_start, _, _) = real_wal(&root.path, 40);
    let mut bytes = std::fs::read(&newest).expect("read");
    assert!(
        last_start > SEGMENT_HEADER_BYTES,
        "need two records in the segment"
    );
    bytes[last_start - 1] ^= 0x5A;
    std::fs::write(&newest, &bytes).expect("write");
    std::fs::write(next_segment(&newest), vec![0u8; 16 << 10]).expect("write spare");
    match wal::recover(&root.path, false) {
        Err(RecoveryError::Corrupt(c)) => {
            assert_eq!(c.path, newest);
            assert!(matches!(
                c.kind,
                CorruptionKind::DamageBeforeValidRecord { .. }
            ));
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

/// Goal: `inspect` (behind `ringest wal verify`) reports a torn tail but does
/// not call it corruption, and reports mid-log damage as corruption.
/// Method: garbage after the last record → true + "TORN TAIL"; then damage
/// an earlier segment → false + "CORRUPT".
#[test]
fn inspect_tells_torn_tail_from_corruption() {
    let root = TempDir::new("wal-inspect");
    let (newest, _, end, _) = real_wal(&root.path, 120);
    let mut bytes = std::fs::read(&newest).expect("read");
    bytes[end..end + 10].fill(0xEE);
    std::fs::write(&newest, &bytes).expect("write");
    let mut out = Vec::new();
    assert!(wal::inspect(&root.path, &mut out).expect("inspect"));
    let text = String::from_utf8(out).expect("utf8");
    assert!(
        text.contains("TORN TAIL") && text.contains("verify: ok"),
        "{text}"
    );

    let first = newest.with_file_name("00000000000000000001-0000000000.wal");
    let mut bytes = std::fs::read(&first).expect("read");
    bytes[SEGMENT_HEADER_BYTES + 5] ^= 1;
    std::fs::write(&first, &bytes).expect("write");
    let mut out = Vec::new();
    assert!(!wal::inspect(&root.path, &mut out).expect("inspect"));
    let text = String::from_utf8(out).expect("utf8");
    assert!(
        text.contains("CORRUPT at offset 64") && text.contains("verify: CORRUPT"),
        "{text}"
    );
}
