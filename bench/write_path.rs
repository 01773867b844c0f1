//! The CPU stages of the write path on one thread, per line: parse →
//! route and encode sub-batches → WAL record (pack, copy + CRC32C) → store
//! apply; and the WAL bytes per line against the line's own bytes.
//!
//! The server spends its CPU here (plus the kernel's socket and I/O work),
//! so this is where a change to any stage shows, free of the disk and of
//! scheduling noise: per-thread CPU time, best of several rounds, and under
//! `valgrind --tool=callgrind` an instruction count that does not move with
//! the machine's load.
//!
//! `cargo bench --bench write_path` (argv has `--bench`): full size, prints
//! ns per line for each stage. Without `--bench` (as run by `cargo test
//! --all-targets`) it runs at tiny size and asserts that every line reaches
//! the store exactly once, so the benchmark cannot rot.
//!
//! Not included: the catalog check (one comparison per line for a repeated
//! shape, see `ingest::KnownShape`), HTTP framing, and the syscalls.

// Benchmark binary, not shard code: wall-clock timing is what it is made of
// (clippy.toml bans it in shard code).
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::Duration;

use ringest::batch::{BatchEncoder, EncodedBatch};
use ringest::line_protocol::{Lines, ParseOptions, Point, Precision};
use ringest::packed::Packer;
use ringest::route;
use ringest::store::{RowsRequest, ScanRequest, ScanResponse, ShardStore, StoreLimits, TagFilter};
use ringest::wal::record::{encode_into, record_bytes};
use ringest::wal::Sequence;

#[path = "corpus.rs"]
mod corpus;
use corpus::{iot, thread_cpu_time, tsbs_cpu};

const SHARDS: usize = 2;
/// Lines per request, as the comparison harness sends them.
const LINES_PER_REQUEST: usize = 1000;

/// Stage 1+2: parse every line and encode it into its shard's sub-batch.
fn parse_and_encode(requests: &[&str]) -> Vec<EncodedBatch> {
    let mut batches = Vec::new();
    let mut point = Point::default();
    for text in requests {
        let mut per_shard: Vec<BatchEncoder> = (0..SHARDS)
            .map(|_| BatchEncoder::with_capacity("bench", text.len() / 2 * 3 / SHARDS))
            .collect();
        let mut lines = Lines::new(text, ParseOptions::new(Precision::Nanoseconds, 0));
        while let Some(result) = lines.next_into(&mut point) {
            result.expect("the corpus is valid line protocol");
            per_shard[route::owner(point.series_hash, SHARDS)].push(&point);
        }
        batches.extend(
            per_shard
                .iter_mut()
                .filter(|e| !e.is_empty())
                .map(|e| e.take("bench")),
        );
    }
    batches
}

/// Stage 3: each sub-batch is packed against its shard's segment
/// dictionary (as the owning shard does, [`ringest::packed`]) and becomes
/// one WAL record in a group buffer. Returns the record bytes written.
fn wal_records(batches: &[EncodedBatch], buffer: &mut Vec<u8>) -> u64 {
    let mut packers: Vec<Packer> = (0..SHARDS).map(|_| Packer::new()).collect();
    let mut written = 0u64;
    for (sequence, batch) in batches.iter().enumerate() {
        // Sub-batches alternate between the shards' encoders per request.
        let packer = &mut packers[sequence % SHARDS];
        let (kind, payload) = match packer.pack(0, &batch.reader(), batch.len()) {
            Some(packed) => (ringest::shard::RECORD_PACKED, packed),
            None => (ringest::shard::RECORD_BATCH, batch.as_bytes()),
        };
        let bytes = record_bytes(payload.len());
        buffer.clear();
        buffer.resize(bytes, 0);
        encode_into(buffer, kind, Sequence(sequence as u64 + 1), payload);
        packer.settle(true);
        written += bytes as u64;
    }
    written
}

/// Stage 4: every sub-batch enters a fresh store (one per round).
fn apply(batches: &[EncodedBatch]) -> ShardStore {
    let mut store = ShardStore::new(StoreLimits {
        memory_bytes_max: usize::MAX,
        chunk_rows: 65_536,
    });
    for batch in batches {
        store.apply(&batch.reader());
    }
    store
}

fn stored_rows(store: &ShardStore, measurement: &str) -> usize {
    let request = ScanRequest::Rows(RowsRequest {
        database: "bench".into(),
        measurements: vec![measurement.into()],
        tag_filter: TagFilter::All,
        time_min_ns: i64::MIN,
        time_max_ns: i64::MAX,
        fields: Vec::new(),
        condition_fields: Vec::new(),
        row_limit: usize::MAX / 8,
        deadline: ringest::store::Deadline::NONE,
    });
    match store.scan(&request) {
        Ok(ScanResponse::Rows(series)) => series.iter().map(|s| s.times.len()).sum(),
        other => panic!("scan failed: {other:?}"),
    }
}

/// Best per-thread CPU time of `rounds` runs of `stage`.
fn best_cpu<T>(rounds: usize, mut stage: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..rounds {
        let start = thread_cpu_time();
        let out = black_box(stage());
        best = best.min(thread_cpu_time() - start);
        last = Some(out);
    }
    (best, last.expect("at least one round"))
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (target_bytes, rounds) = if full { (32 << 20, 5) } else { (64 << 10, 1) };
    println!(
        "write_path bench: {} size, {} KiB per corpus, {SHARDS} shards, \
         {LINES_PER_REQUEST}-line requests, best of {rounds} (per-thread CPU time)",
        if full { "full" } else { "tiny" },
        target_bytes >> 10
    );
    println!(
        "{:<9} {:>8} {:>12} {:>10} {:>10} {:>10} {:>10} {:>14}",
        "corpus", "lines", "parse+enc", "wal rec", "apply", "total", "lines/s", "WAL B/line"
    );
    for (name, measurement, body) in [
        ("tsbs-cpu", "cpu", tsbs_cpu(target_bytes)),
        ("iot", "sensor", iot(target_bytes)),
    ] {
        let all: Vec<&str> = body.split_inclusive('\n').collect();
        let line_count = all.len();
        let requests: Vec<String> = all.chunks(LINES_PER_REQUEST).map(|c| c.concat()).collect();
        let requests: Vec<&str> = requests.iter().map(String::as_str).collect();

        let (encode_time, batches) = best_cpu(rounds, || parse_and_encode(&requests));
        let mut buffer = Vec::new();
        let (wal_time, wal_bytes) = best_cpu(rounds, || wal_records(&batches, &mut buffer));
        let (apply_time, store) = best_cpu(rounds, || apply(&batches));
        assert_eq!(
            stored_rows(&store, measurement),
            line_count,
            "{name}: every line reaches the store exactly once"
        );
        let per_line = |d: Duration| d.as_nanos() as f64 / line_count as f64;
        let total = encode_time + wal_time + apply_time;
        let line_bytes = body.len() as f64 / line_count as f64;
        let wal_per_line = wal_bytes as f64 / line_count as f64;
        println!(
            "{name:<9} {line_count:>8} {:>9.0} ns {:>7.0} ns {:>7.0} ns {:>7.0} ns {:>10.0} {:>6.1} ({:.3}x)",
            per_line(encode_time),
            per_line(wal_time),
            per_line(apply_time),
            per_line(total),
            line_count as f64 / total.as_secs_f64().max(1e-9),
            wal_per_line,
            wal_per_line / line_bytes,
        );
    }
}
