//! Line-protocol parser throughput: ringest vs `influxdb-line-protocol`
//! (InfluxDB 3's parser), one thread, two corpora, same run.
//!
//! - `tsbs-cpu`: TSBS cpu-only-like lines, about 350 bytes, 10 tags,
//!   10 fields (5 float, 5 integer), nanosecond timestamps.
//! - `iot`: short lines, 1–2 tags, 3 fields (float, integer, boolean).
//!
//! `cargo bench --bench line_protocol` (argv has `--bench`): full size,
//! prints MB/s (10^6 bytes) and lines/s for both parsers. Without
//! `--bench` (as run by `cargo test --all-targets`) it runs at tiny size and
//! asserts both parsers accept every line, so the benchmark cannot rot.
//!
//! What is measured differs slightly in our disfavour: ringest also sorts
//! tags, deduplicates fields, scales timestamps and computes the series
//! hash; the crate only parses.

// Benchmark binary, not shard code: std threads, wall-clock timing, blocking
// files and sleeps are what it is made of (clippy.toml bans them in shard code).
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use ringest::line_protocol::{FieldValue, Lines, ParseOptions, Point, Precision, SeriesKeys};

#[path = "corpus.rs"]
mod corpus;
use corpus::{iot, thread_cpu_time, tsbs_cpu};

/// Parses `body` with ringest; returns the number of accepted lines.
fn ours(body: &str) -> usize {
    count(Lines::new(
        body,
        ParseOptions::new(Precision::Nanoseconds, 0),
    ))
}

thread_local! {
    /// One cache across rounds, as a shard keeps it across requests.
    static KEYS: std::cell::RefCell<SeriesKeys> = std::cell::RefCell::new(SeriesKeys::new());
}

/// Parses `body` with ringest and the series-key cache (warm after the
/// first round: the corpus repeats its series as real traffic does).
fn ours_with_keys(body: &str) -> usize {
    KEYS.with(|keys| {
        let mut keys = keys.borrow_mut();
        count(Lines::with_keys(
            body,
            ParseOptions::new(Precision::Nanoseconds, 0),
            &mut keys,
        ))
    })
}

fn count(mut lines: Lines<'_, '_>) -> usize {
    let mut point = Point::default();
    let mut accepted = 0;
    let mut checksum = 0u64;
    while let Some(result) = lines.next_into(&mut point) {
        if result.is_ok() {
            accepted += 1;
            checksum ^= point.series_hash ^ point.timestamp_ns as u64;
            if let Some((_, FieldValue::Float(f))) = point.fields.first() {
                checksum = checksum.wrapping_add(f.to_bits());
            }
        }
    }
    black_box(checksum);
    accepted
}

/// Parses `body` with `influxdb-line-protocol`; returns the accepted lines.
fn theirs(body: &str) -> usize {
    let mut accepted = 0;
    let mut checksum = 0u64;
    for line in influxdb_line_protocol::parse_lines(body).flatten() {
        accepted += 1;
        checksum ^= line.timestamp.unwrap_or(0) as u64 ^ line.field_set.len() as u64;
        if let Some((_, influxdb_line_protocol::FieldValue::F64(f))) = line.field_set.first() {
            checksum = checksum.wrapping_add(f.to_bits());
        }
    }
    black_box(checksum);
    accepted
}

struct Measured {
    /// Best wall-clock time of one round.
    best: Duration,
    /// Best on-CPU time of this thread for one round (excludes time the
    /// thread waited for a core: the machine may be shared).
    best_cpu: Duration,
    lines: usize,
}

/// Best of `rounds` runs (the least disturbed by other processes).
fn measure(body: &str, rounds: usize, parse: fn(&str) -> usize) -> Measured {
    let mut best = Duration::MAX;
    let mut best_cpu = Duration::MAX;
    let mut lines = 0;
    for _ in 0..rounds {
        let start = Instant::now();
        let start_cpu = thread_cpu_time();
        lines = parse(black_box(body));
        best_cpu = best_cpu.min(thread_cpu_time() - start_cpu);
        best = best.min(start.elapsed());
    }
    Measured {
        best,
        best_cpu,
        lines,
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (target_bytes, rounds) = if full { (64 << 20, 7) } else { (64 << 10, 1) };
    println!(
        "line_protocol bench: {} size, {} KiB per corpus, best of {rounds}",
        if full { "full" } else { "tiny" },
        target_bytes >> 10
    );
    // LP_BENCH_ONLY=ringest (or =influx) runs one parser, for profiling.
    let only = std::env::var("LP_BENCH_ONLY").unwrap_or_default();
    println!(
        "{:<9} {:<23} {:>9} {:>12} {:>9} {:>12} {:>8}",
        "corpus", "parser", "MB/s", "lines/s", "cpu MB/s", "cpu lines/s", "speedup"
    );
    for (name, body) in [
        ("tsbs-cpu", tsbs_cpu(target_bytes)),
        ("iot", iot(target_bytes)),
    ] {
        let line_count = body.lines().count();
        let mut rows: Vec<(&str, Measured)> = Vec::new();
        if only.is_empty() || only == "ringest" {
            rows.push(("ringest", measure(&body, rounds, ours)));
        }
        if only.is_empty() || only == "ringest-keys" {
            rows.push((
                "ringest + series keys",
                measure(&body, rounds, ours_with_keys),
            ));
        }
        if only.is_empty() || only == "influx" {
            rows.push(("influxdb-line-protocol", measure(&body, rounds, theirs)));
        }
        let rate = |time: Duration, lines: usize| {
            let seconds = time.as_secs_f64().max(1e-9);
            (body.len() as f64 / seconds / 1e6, lines as f64 / seconds)
        };
        let baseline_cpu = rows
            .last()
            .map(|(_, m)| m.best_cpu)
            .unwrap_or(Duration::ZERO);
        for (parser, m) in &rows {
            assert_eq!(m.lines, line_count, "{name}: {parser} accepts every line");
            let (mb, lines) = rate(m.best, m.lines);
            let (cpu_mb, cpu_lines) = rate(m.best_cpu, m.lines);
            let speedup = baseline_cpu.as_secs_f64() / m.best_cpu.as_secs_f64().max(1e-9);
            println!(
                "{name:<9} {parser:<23} {mb:>9.0} {lines:>12.0} {cpu_mb:>9.0} {cpu_lines:>12.0} {speedup:>7.2}x"
            );
        }
        println!(
            "  ({name}: {line_count} lines, {:.0} bytes/line; speedup is by CPU time)",
            body.len() as f64 / line_count as f64
        );
    }
}
