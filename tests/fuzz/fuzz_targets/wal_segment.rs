//! Fuzz target: WAL record and segment decoding, and recovery over
//! arbitrary segment files (`src/wal/record.rs`, `segment.rs`,
//! `recovery.rs`). Recovery must never panic or loop, whatever the bytes.
//!
//! The input becomes up to four segment files in a fresh directory under
//! `/dev/shm` (memory), and the real start-up code runs on them:
//! `inspect`, `recover`, `replay` (each payload decoded as a shard batch
//! and as catalog entries, as start-up does), then `recover` again.
//!
//! Invariants checked:
//! - `record::decode` at every offset never panics or reads past the end,
//!   and a record it accepts re-encodes to the same bytes;
//! - `inspect` says "clean" exactly when `recover` (without the skip flag)
//!   succeeds, or (with it) skips nothing;
//! - after a successful `recover`, `replay` returns as many records as the
//!   report counted, and a second `recover` finds nothing left to repair;
//! - no I/O error (the files are ours, on tmpfs).
//!
//! Input: byte 0 holds flags: bit 0 `skip_corrupt`; bit 1 "fix up
//! checksums" (the segment header gets the magic, version, the name's
//! generation and index and a valid CRC, and each record found by walking
//! the lengths gets a valid CRC, so that the rules after the checksums are
//! reached); bit 2 segments in a shard directory `0/` instead of the root;
//! bits 3-4 how file names number the segments; bit 5 keep the header's
//! generation and index as they are when fixing up. The rest is split at
//! each `SEG!` into the segments' bytes.

#![no_main]

use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use ringest::batch::BatchReader;
use ringest::catalog::{decode_entries, Catalog};
use ringest::shard::RecordTimes;
use ringest::store::{ShardStore, StoreLimits};
use ringest::wal::record::{
    decode, encode_into, record_bytes, Decoded, RECORD_HEADER_BYTES, RECORD_MAGIC,
};
use ringest::wal::segment::{
    segment_file_name, SegmentHeader, SEGMENT_HEADER_BYTES, SEGMENT_MAGIC, SEGMENT_VERSION,
};
use ringest::wal::{inspect_with, recover, replay, RecordRef};

const SEGMENTS_MAX: usize = 4;
const SEPARATOR: &[u8] = b"SEG!";

fn work_dir() -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    base.join(format!("ringest-fuzz-wal-{}", std::process::id()))
}

fn split_segments(mut rest: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while out.len() + 1 < SEGMENTS_MAX {
        match find(rest, SEPARATOR) {
            Some(at) => {
                out.push(rest[..at].to_vec());
                rest = &rest[at + SEPARATOR.len()..];
            }
            None => break,
        }
    }
    out.push(rest.to_vec());
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn crc_of_header(bytes: &[u8]) -> u32 {
    // Same coverage as `segment.rs`: [0, 12) ++ [16, 64).
    let mut covered = bytes[0..12].to_vec();
    covered.extend_from_slice(&bytes[16..SEGMENT_HEADER_BYTES]);
    crc32c(&covered)
}

/// CRC-32C (Castagnoli), bitwise: slow and obviously independent of the
/// `crc32c` crate the WAL uses.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Makes the header and the records reachable by lengths verify.
fn fix_up(bytes: &mut [u8], generation: u64, index: u64, keep_names: bool) {
    if bytes.len() < SEGMENT_HEADER_BYTES {
        return;
    }
    bytes[0..8].copy_from_slice(&SEGMENT_MAGIC);
    bytes[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    if !keep_names {
        bytes[16..24].copy_from_slice(&generation.to_le_bytes());
        bytes[24..32].copy_from_slice(&index.to_le_bytes());
    }
    let crc = crc_of_header(bytes);
    bytes[12..16].copy_from_slice(&crc.to_le_bytes());
    let mut pos = SEGMENT_HEADER_BYTES;
    while pos + RECORD_HEADER_BYTES <= bytes.len() && bytes[pos..pos + 4] == RECORD_MAGIC {
        let length = u32::from_le_bytes(bytes[pos + 8..pos + 12].try_into().unwrap()) as usize;
        let end = pos + RECORD_HEADER_BYTES + length;
        if end > bytes.len() {
            break;
        }
        let mut covered = bytes[pos + 4..pos + 12].to_vec();
        covered.extend_from_slice(&bytes[pos + 16..end]);
        let crc = crc32c(&covered);
        bytes[pos + 12..pos + 16].copy_from_slice(&crc.to_le_bytes());
        pos = end;
    }
}

/// Pure decoding: every offset, and the header.
fn decode_everywhere(bytes: &[u8]) {
    let _ = SegmentHeader::decode(bytes);
    for at in 0..bytes.len() {
        if let Decoded::Record(record) = decode(&bytes[at..]) {
            let size = record.encoded_bytes();
            assert!(at + size <= bytes.len(), "record inside the bytes");
            let mut again = vec![0u8; record_bytes(record.payload.len())];
            encode_into(&mut again, record.kind, record.sequence, record.payload);
            assert_eq!(again, &bytes[at..at + size], "re-encodes to the same bytes");
        }
    }
}

/// What start-up does with a replayed record's payload: a shard batch
/// (validated, then applied to a store) or catalog entries.
fn decode_payload(
    record: RecordRef<'_>,
    times: &mut RecordTimes,
    catalog: &mut Catalog,
    store: &mut ShardStore,
) {
    // Packed records (kind 4) are unpacked here against their segment's
    // dictionary, as replay does.
    let _ = times.time_range(record);
    if let Ok(batch) = BatchReader::new(record.payload) {
        let rows = batch.rows().count();
        assert_eq!(
            rows,
            batch.row_count() as usize,
            "row count of a valid batch"
        );
        for row in batch.rows() {
            assert_eq!(row.tags().count(), row.tag_count());
            assert_eq!(row.fields().count(), row.field_count());
        }
        if store.has_room(record.payload.len()) {
            store.apply(&batch);
        }
    }
    if let Some(entries) = decode_entries(record.payload) {
        for entry in &entries {
            catalog.apply(entry);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let skip_corrupt = flags & 1 != 0;
    let fix = flags & 2 != 0;
    let in_shard_dir = flags & 4 != 0;
    let naming = (flags >> 3) & 3;
    let keep_names = flags & 0x20 != 0;

    let root = work_dir();
    let _ = std::fs::remove_dir_all(&root);
    let dir = if in_shard_dir {
        root.join("0")
    } else {
        root.clone()
    };
    std::fs::create_dir_all(&dir).expect("work directory");

    for (i, mut bytes) in split_segments(rest).into_iter().enumerate() {
        let i = i as u64;
        let (generation, index) = match naming {
            0 => (1, i),
            1 => (1 + i, 0),
            2 => (1, 2 * i),
            _ => (1 + i / 2, i % 2),
        };
        if fix {
            fix_up(&mut bytes, generation, index, keep_names);
        }
        decode_everywhere(&bytes);
        std::fs::write(dir.join(segment_file_name(generation, index)), &bytes)
            .expect("write segment");
    }

    let mut listing = Vec::new();
    // Framing only: a payload that does not decode makes inspect unclean
    // but not recover (replay refuses it later), so payload errors are
    // left out of this comparison.
    let mut times = RecordTimes::default();
    let clean = inspect_with(&root, &mut listing, |r| {
        Ok(times.time_range(r).unwrap_or(None))
    })
    .expect("inspect: no I/O error");
    let result = recover(&root, skip_corrupt);
    let report = match result {
        Ok(report) => report,
        Err(ringest::wal::RecoveryError::Corrupt(corruption)) => {
            assert!(!skip_corrupt, "skip_corrupt yet refused: {corruption}");
            assert!(!clean, "inspect said clean, recover refused: {corruption}");
            let _ = std::fs::remove_dir_all(&root);
            return;
        }
        Err(error) => panic!("recover: {error}"),
    };
    let skipped = report.dirs.iter().any(|d| !d.skipped.is_empty());
    assert_eq!(
        clean,
        !skipped,
        "inspect clean = {clean}, recover skipped = {skipped}:\n{}",
        String::from_utf8_lossy(&listing)
    );
    let mut catalog = Catalog::default();
    let mut store = ShardStore::new(StoreLimits {
        memory_bytes_max: 1 << 20,
        chunk_rows: 4,
    });
    let mut times = RecordTimes::default();
    let stats = replay(&root, |record| {
        decode_payload(record, &mut times, &mut catalog, &mut store)
    })
    .expect("replay after recover");
    assert_eq!(
        stats.records,
        report.records(),
        "replay reads what recover counted"
    );

    if !skipped {
        let again = recover(&root, false).expect("recover is a fixpoint");
        assert_eq!(again.records(), report.records());
        for dir in &again.dirs {
            assert!(dir.truncated.is_none(), "nothing left to cut: {dir:?}");
            assert!(dir.removed.is_empty(), "nothing left to remove: {dir:?}");
        }
    }
    let _ = std::fs::remove_dir_all(&root);
});
