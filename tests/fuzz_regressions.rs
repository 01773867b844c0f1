//! Regression tests for what the fuzz targets (`tests/fuzz/`) found: each
//! test feeds the minimised finding through the same public entry point the
//! target uses and checks the fixed behaviour, so `cargo test` keeps every
//! finding fixed without cargo-fuzz. The findings and the runs that found
//! them are listed in `tests/fuzz/README.md`.

// Tests are not shard code: std::fs is fine here.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::Path;

use common::TempDir;
use ringest::persist::manifest::{self, InvalidManifest, ManifestError};
use ringest::wal::record::{encode_into, record_bytes, Sequence};
use ringest::wal::segment::{
    segment_file_name, SegmentHeader, SegmentHeaderError, FIRST_SEQUENCE_MAX, SEGMENT_HEADER_BYTES,
};
use ringest::wal::{self, CorruptionKind, RecoveryError};

/// A segment header with a valid CRC whatever `first_sequence` says (the
/// writer refuses to encode an impossible one, so it is patched in).
fn header_with_first_sequence(generation: u64, first_sequence: u64) -> Vec<u8> {
    let mut bytes = vec![0u8; SEGMENT_HEADER_BYTES];
    SegmentHeader {
        generation,
        index: 0,
        first_sequence: 1,
        segment_bytes: 1 << 20,
    }
    .encode_into(&mut bytes);
    bytes[32..40].copy_from_slice(&first_sequence.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[0..12]), &bytes[16..64]);
    bytes[12..16].copy_from_slice(&crc.to_le_bytes());
    bytes
}

fn record(sequence: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; record_bytes(payload.len())];
    encode_into(&mut out, 3, Sequence(sequence), payload);
    out
}

fn write_segment(root: &Path, generation: u64, bytes: &[u8]) {
    std::fs::create_dir_all(root).expect("root");
    std::fs::write(root.join(segment_file_name(generation, 0)), bytes).expect("segment");
}

/// Goal: a segment header whose CRC verifies but whose `first_sequence` no
/// writer produces (0, or near `u64::MAX`) is a damaged header: recovery
/// reports it (file and offset 0) instead of overflowing on `0 - 1` or
/// `u64::MAX + 1` (a panic in debug builds; wrapped sequences in release).
/// Found by `wal_segment` (2026-12-04): a server-made segment with its
/// header's first sequence set to 0 and the CRC fixed up.
/// Method: such a header followed by a record, and alone (then it is a
/// segment that never held a record, removed like an unused spare); the
/// same at `u64::MAX` with a record of sequence `u64::MAX`.
#[test]
fn wal_header_first_sequence_outside_range_is_damage() {
    for (first, record_sequence) in [(0, 0), (u64::MAX, u64::MAX), (FIRST_SEQUENCE_MAX + 1, 1)] {
        let header = header_with_first_sequence(1, first);
        assert_eq!(
            SegmentHeader::decode(&header),
            Err(SegmentHeaderError::BadFirstSequence(first))
        );

        let dir = TempDir::new("fuzz-wal-first-sequence");
        let mut bytes = header.clone();
        bytes.extend_from_slice(&record(record_sequence, b"payload"));
        write_segment(&dir.path, 1, &bytes);
        let mut listing = Vec::new();
        assert!(!wal::inspect(&dir.path, &mut listing).expect("inspect"));
        match wal::recover(&dir.path, false) {
            Err(RecoveryError::Corrupt(corruption)) => {
                assert_eq!(corruption.offset, 0);
                assert_eq!(
                    corruption.kind,
                    CorruptionKind::SegmentHeader(SegmentHeaderError::BadFirstSequence(first))
                );
            }
            other => panic!("first_sequence {first}: {other:?}"),
        }
        let stats = wal::replay(&dir.path, |_| panic!("no record replays")).expect("replay");
        assert_eq!(stats.records, 0);

        let alone = TempDir::new("fuzz-wal-first-sequence-alone");
        write_segment(&alone.path, 1, &header);
        let report = wal::recover(&alone.path, false).expect("recover");
        assert_eq!(report.dirs[0].removed.len(), 1, "{report:?}");
    }
}

/// Goal: the largest valid `first_sequence` still reads and replays (the
/// bound refuses only what no writer produces).
/// Method: a header at `FIRST_SEQUENCE_MAX` with two records; recover,
/// replay.
#[test]
fn wal_header_first_sequence_at_the_bound_reads() {
    let dir = TempDir::new("fuzz-wal-first-sequence-max");
    let mut bytes = header_with_first_sequence(1, FIRST_SEQUENCE_MAX);
    bytes.extend_from_slice(&record(FIRST_SEQUENCE_MAX, b"a"));
    bytes.extend_from_slice(&record(FIRST_SEQUENCE_MAX + 1, b"b"));
    write_segment(&dir.path, 1, &bytes);
    let report = wal::recover(&dir.path, false).expect("recover");
    assert_eq!(report.records(), 2);
    let mut sequences = Vec::new();
    wal::replay(&dir.path, |r| sequences.push(r.sequence.0)).expect("replay");
    assert_eq!(sequences, [FIRST_SEQUENCE_MAX, FIRST_SEQUENCE_MAX + 1]);
}

/// Goal: recovery of a damaged newest segment takes time linear in its
/// size whatever follows the damage, and refuses (rather than truncates)
/// when the search for a valid record after the damage was cut short.
/// Found while fuzzing `wal_segment` (2026-12-04): after damage, every
/// position holding the record magic was checksummed over the length it
/// claims, so a segment of record headers each claiming the rest of the
/// file took quadratic time (a 1 MiB one: 16 s in the fuzz build; 64 MiB,
/// the default segment size: about 18 hours, at every start).
/// Method: a valid header, a damaged record, then 4 MiB of such record
/// headers; `recover` must answer within seconds (it took minutes before)
/// with `DamageBeforeUnsearchedBytes`, leaving the file as it was; with the
/// skip flag it starts, replaying nothing from that segment.
#[test]
#[allow(clippy::disallowed_methods)] // Instant::now: a time bound, test only
fn wal_damage_search_is_bounded() {
    let segment_bytes = 4 << 20;
    let mut bytes = header_with_first_sequence(1, 1);
    bytes.extend_from_slice(b"XXXX");
    bytes.resize(SEGMENT_HEADER_BYTES + 24, 0);
    while bytes.len() + 24 <= segment_bytes {
        let claimed = (segment_bytes - bytes.len() - 24) as u32;
        bytes.extend_from_slice(b"RWR1\x01\x03\x00\x00");
        bytes.extend_from_slice(&claimed.to_le_bytes());
        bytes.extend_from_slice(&[0; 4]);
        bytes.extend_from_slice(&5u64.to_le_bytes());
    }
    let dir = TempDir::new("fuzz-wal-search");
    write_segment(&dir.path, 1, &bytes);

    let started = std::time::Instant::now();
    let result = wal::recover(&dir.path, false);
    let elapsed = started.elapsed();
    match result {
        Err(RecoveryError::Corrupt(corruption)) => {
            assert_eq!(corruption.offset, SEGMENT_HEADER_BYTES as u64);
            assert!(
                matches!(
                    corruption.kind,
                    CorruptionKind::DamageBeforeUnsearchedBytes { searched_to }
                        if searched_to > SEGMENT_HEADER_BYTES as u64
                ),
                "{corruption}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(elapsed.as_secs() < 20, "recover took {elapsed:?}");
    let on_disk = std::fs::read(dir.path.join(segment_file_name(1, 0))).expect("segment");
    assert_eq!(on_disk, bytes, "the damaged file is left as it was");

    let report = wal::recover(&dir.path, true).expect("skip_corrupt starts");
    assert_eq!(report.dirs[0].skipped.len(), 1);
    assert_eq!(wal::replay(&dir.path, |_| {}).expect("replay").records, 0);
}

/// A persisted catalog with one file and one run, as JSON text.
fn catalog_json(file_path: &str, run_shard_count: u32) -> String {
    format!(
        r#"{{"format":"ringest-catalog","version":1,"written_ns":0,
        "databases":[{{"name":"db","retention_ns":null,"tables":[]}}],
        "files":[{{"path":{file_path:?},"database":"db","table":"cpu","shard":0,
          "shard_count":1,"generation":7,"sequence":3,"rows":1,"bytes":10,
          "time_min_ns":0,"time_max_ns":0}}],
        "wal":{{"floor_generation":7,
          "runs":[{{"generation":8,"shard_count":{run_shard_count},"persisted":[0]}}],
          "positions":[]}}}}"#
    )
}

/// Goal: a persisted catalog with a run of `shard_count` 0 is refused as
/// corrupt when read, instead of being accepted and panicking start-up
/// later (replay asks which of the run's shards owns a row:
/// `route::owner(hash, 0)` asserts "at least one shard").
/// Found by `manifest` (2026-12-04): the doc example's run with
/// `"shard_count":0`, then `WalState::row_persisted`.
/// Method: `manifest::parse` (what `manifest::load` runs on the file's
/// bytes) on that catalog, and on the same with `shard_count` 1.
#[test]
fn manifest_run_without_shards_is_corrupt() {
    let path = Path::new("_catalog.json");
    let good = catalog_json("db=db/table=cpu/date=2026-12-04/a.parquet", 1);
    let read = manifest::parse(path, good.as_bytes()).expect("valid catalog");
    assert!(read.wal.row_persisted(7, u64::MAX));
    let bad = catalog_json("db=db/table=cpu/date=2026-12-04/a.parquet", 0);
    match manifest::parse(path, bad.as_bytes()) {
        Err(error @ ManifestError::Invalid { .. }) => {
            assert!(matches!(
                &error,
                ManifestError::Invalid {
                    rule: InvalidManifest::RunWithoutShards { generation: 8 },
                    ..
                }
            ));
            let message = error.to_string();
            assert!(
                message.contains("_catalog.json") && message.contains("corrupt"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
}

/// Goal: a persisted catalog naming a file outside the Parquet directory
/// (absolute, `..`, or not a `.parquet` file) is refused as corrupt: files
/// the catalog names are opened by queries and deleted by expiry and
/// `DROP DATABASE` at `parquet/<path>`. Found while writing the `manifest`
/// target (what start-up does with what it read), not by a crash.
/// Method: `manifest::parse` on catalogs with such paths; plain relative
/// paths (what the server writes) still read.
#[test]
fn manifest_file_paths_stay_inside_the_parquet_directory() {
    let path = Path::new("_catalog.json");
    for bad in [
        "/etc/passwd.parquet",
        "../wal/0/x.parquet",
        "db=db/../../x.parquet",
        "db=db/table=cpu/a.json",
        "",
    ] {
        let result = manifest::parse(path, catalog_json(bad, 1).as_bytes());
        assert!(
            matches!(
                &result,
                Err(ManifestError::Invalid {
                    rule: InvalidManifest::FilePath { path },
                    ..
                }) if path == bad
            ),
            "{bad:?}: {result:?}"
        );
    }
    for good in [
        "a.parquet",
        "db=d%2Fx/table=t/date=2026-12-04/00000000000000000001-00000000000000000002-s000.parquet",
    ] {
        manifest::parse(path, catalog_json(good, 1).as_bytes()).expect(good);
    }
}
