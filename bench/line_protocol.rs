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

use ringest::line_protocol::{FieldValue, Lines, ParseOptions, Point, Precision};

/// Deterministic generator (xorshift64*), so every run parses the same bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn float(&mut self) -> String {
        format!("{}.{:02}", self.below(100), self.below(100))
    }
}

fn tsbs_cpu(target_bytes: usize) -> String {
    const REGIONS: [&str; 4] = ["us-east-1", "eu-west-1", "ap-southeast-2", "sa-east-1"];
    const OSES: [&str; 3] = ["Ubuntu16.10", "Ubuntu16.04LTS", "Ubuntu15.10"];
    const TEAMS: [&str; 4] = ["SF", "NYC", "LON", "CHI"];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut body = String::with_capacity(target_bytes + 512);
    let mut time: i64 = 1_451_606_400_000_000_000;
    while body.len() < target_bytes {
        let host = rng.below(4000);
        let region = REGIONS[(host % 4) as usize];
        body.push_str(&format!(
            "cpu,hostname=host_{host},region={region},datacenter={region}{az},rack={rack},\
             os={os},arch=x{arch},team={team},service={service},service_version={version},\
             service_environment=production ",
            az = ["a", "b", "c"][(host % 3) as usize],
            rack = host % 100,
            os = OSES[(host % 3) as usize],
            arch = if host % 2 == 0 { 64 } else { 86 },
            team = TEAMS[(host % 4) as usize],
            service = host % 20,
            version = host % 2,
        ));
        body.push_str(&format!(
            "usage_user={},usage_system={},usage_idle={},usage_nice={}i,usage_iowait={},\
             usage_irq={}i,usage_softirq={},usage_steal={}i,usage_guest={}i,usage_guest_nice={}i {time}\n",
            rng.float(),
            rng.float(),
            rng.float(),
            rng.below(100),
            rng.float(),
            rng.below(100),
            rng.float(),
            rng.below(100),
            rng.below(100),
            rng.below(100),
        ));
        time += 10_000_000_000;
    }
    body
}

fn iot(target_bytes: usize) -> String {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut body = String::with_capacity(target_bytes + 256);
    let mut time: i64 = 1_700_000_000_000_000_000;
    while body.len() < target_bytes {
        let device = rng.below(10_000);
        if device % 2 == 0 {
            body.push_str(&format!("sensor,id=s{device}"));
        } else {
            body.push_str(&format!("sensor,id=s{device},site=ams{}", device % 7));
        }
        body.push_str(&format!(
            " temp={},hum={}i,ok={} {time}\n",
            rng.float(),
            rng.below(100),
            if rng.below(10) == 0 { "f" } else { "t" },
        ));
        time += 1_000_000;
    }
    body
}

/// Parses `body` with ringest; returns the number of accepted lines.
fn ours(body: &str) -> usize {
    let mut lines = Lines::new(body, ParseOptions::new(Precision::Nanoseconds, 0));
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

/// CPU time consumed by the calling thread.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID
    // is supported on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
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
