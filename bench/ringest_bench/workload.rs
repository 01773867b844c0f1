//! Workloads: what the load generator writes, and which point is where.
//!
//! Owns the data model of a run. Every point has a global index `p`; its
//! series is `p % series` and its timestamp is `start_ns + (p / series) *
//! step_ns`, so no two points share (series, time) and none overwrites
//! another: the number of points a server stores per series is checkable.
//! Request `b` (a "block") carries points `b * lines .. (b + 1) * lines`.
//!
//! Invariants:
//! - timestamps are 19 decimal digits (nanoseconds since 1970, between 2001
//!   and 2286), so a body can be re-stamped in place without moving bytes;
//! - the text of block `b` depends only on `b % template_count()` except for
//!   its timestamps, so plain bodies are built once (`Template`) and only the
//!   timestamps are rewritten per request; gzip bodies are compressed once per
//!   block before the run starts (`gzip_pool`), never while it runs.

use libdeflater::{CompressionLvl, Compressor};

/// Width of every timestamp in a generated line.
pub const TIMESTAMP_DIGITS: usize = 19;
const TIMESTAMP_MIN_NS: u64 = 1_000_000_000_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WorkloadKind {
    /// TSBS cpu-only: measurement `cpu`, 10 tags, 10 integer fields, ~350-byte lines.
    Cpu,
    /// InfluxDB's airSensors sample: measurement `airSensors`, tag `sensor_id`, 3 float fields.
    Iot,
}

impl WorkloadKind {
    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::Cpu => "cpu",
            WorkloadKind::Iot => "iot",
        }
    }
}

/// The shape of a run's data: which series, how many lines per request, which times.
#[derive(Debug, Clone)]
pub struct Workload {
    pub kind: WorkloadKind,
    pub series: u64,
    pub lines_per_request: u64,
    pub start_ns: u64,
    /// Time between two points of one series; 1 ms so that servers storing
    /// milliseconds (VictoriaMetrics) keep every point distinct.
    pub step_ns: u64,
}

/// One request body with its timestamps at known offsets.
#[derive(Debug, Clone)]
pub struct Template {
    pub body: Vec<u8>,
    /// Offset of the first timestamp digit of each line, in line order.
    pub timestamp_offsets: Vec<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadError {
    /// Series count or lines per request is zero.
    Empty,
    /// A timestamp of the run would not fit the fixed 19-digit width.
    TimestampOutOfRange,
    /// One request body would exceed `BODY_BYTES_MAX`.
    BodyTooLarge,
}

impl std::fmt::Display for WorkloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkloadError::Empty => write!(f, "series and lines per request must be at least 1"),
            WorkloadError::TimestampOutOfRange => {
                write!(
                    f,
                    "timestamps must stay within 19 digits of nanoseconds (2001..2286)"
                )
            }
            WorkloadError::BodyTooLarge => {
                write!(f, "one request body would exceed {} bytes", BODY_BYTES_MAX)
            }
        }
    }
}

/// Largest request body the generator builds (InfluxDB 1.x's default max-body-size is 25 MB).
pub const BODY_BYTES_MAX: u64 = 24 * 1024 * 1024;

impl Workload {
    pub fn new(
        kind: WorkloadKind,
        series: u64,
        lines_per_request: u64,
        start_ns: u64,
    ) -> Result<Workload, WorkloadError> {
        if series == 0 || lines_per_request == 0 {
            return Err(WorkloadError::Empty);
        }
        if start_ns < TIMESTAMP_MIN_NS {
            return Err(WorkloadError::TimestampOutOfRange);
        }
        let line_bytes_max = match kind {
            WorkloadKind::Cpu => 420,
            WorkloadKind::Iot => 120,
        };
        if lines_per_request.saturating_mul(line_bytes_max) > BODY_BYTES_MAX {
            return Err(WorkloadError::BodyTooLarge);
        }
        Ok(Workload {
            kind,
            series,
            lines_per_request,
            start_ns,
            step_ns: 1_000_000,
        })
    }

    pub fn measurement(&self) -> &'static str {
        match self.kind {
            WorkloadKind::Cpu => "cpu",
            WorkloadKind::Iot => "airSensors",
        }
    }

    /// The tag whose value names the series uniquely.
    pub fn series_tag(&self) -> &'static str {
        match self.kind {
            WorkloadKind::Cpu => "hostname",
            WorkloadKind::Iot => "sensor_id",
        }
    }

    /// The field counted by verification (present on every line).
    pub fn count_field(&self) -> &'static str {
        match self.kind {
            WorkloadKind::Cpu => "usage_user",
            WorkloadKind::Iot => "temperature",
        }
    }

    pub fn fields_per_line(&self) -> u64 {
        match self.kind {
            WorkloadKind::Cpu => 10,
            WorkloadKind::Iot => 3,
        }
    }

    /// Value of the series tag for series `index`.
    pub fn series_tag_value(&self, index: u64) -> String {
        match self.kind {
            WorkloadKind::Cpu => format!("host_{index}"),
            WorkloadKind::Iot => format!("TLM{index:05}"),
        }
    }

    /// Inverse of `series_tag_value`; `None` for a value this run never wrote.
    pub fn series_index(&self, tag_value: &str) -> Option<u64> {
        let digits = match self.kind {
            WorkloadKind::Cpu => tag_value.strip_prefix("host_")?,
            WorkloadKind::Iot => tag_value.strip_prefix("TLM")?,
        };
        let index: u64 = digits.parse().ok()?;
        (index < self.series && self.series_tag_value(index) == tag_value).then_some(index)
    }

    /// Distinct bodies before the pattern of series repeats: lcm(series, lines) / lines.
    pub fn template_count(&self) -> u64 {
        self.series / gcd(self.series, self.lines_per_request)
    }

    pub fn timestamp_ns(&self, point: u64) -> Option<u64> {
        let at = self
            .start_ns
            .checked_add((point / self.series).checked_mul(self.step_ns)?)?;
        (at < 10 * TIMESTAMP_MIN_NS).then_some(at)
    }

    /// Checks that every timestamp up to `blocks` requests fits the fixed width.
    pub fn check_blocks(&self, blocks: u64) -> Result<(), WorkloadError> {
        let last_point = blocks
            .checked_mul(self.lines_per_request)
            .ok_or(WorkloadError::TimestampOutOfRange)?;
        self.timestamp_ns(last_point)
            .map(|_| ())
            .ok_or(WorkloadError::TimestampOutOfRange)
    }

    /// Builds the body of every block `b` with `b % template_count() == index`,
    /// with zero timestamps (see `Template::stamp`).
    pub fn template(&self, index: u64) -> Template {
        let mut body = Vec::with_capacity((self.lines_per_request * 360) as usize);
        let mut timestamp_offsets = Vec::with_capacity(self.lines_per_request as usize);
        let first_point = index * self.lines_per_request;
        for line in 0..self.lines_per_request {
            let point = first_point + line;
            let series = point % self.series;
            let mut random = Random::new(point.wrapping_mul(0x9e37_79b9) ^ series);
            self.write_series_key(series, &mut body);
            body.push(b' ');
            self.write_fields(&mut random, &mut body);
            body.push(b' ');
            timestamp_offsets.push(body.len() as u32);
            body.extend_from_slice(&[b'0'; TIMESTAMP_DIGITS]);
            body.push(b'\n');
        }
        Template {
            body,
            timestamp_offsets,
        }
    }

    fn write_series_key(&self, series: u64, out: &mut Vec<u8>) {
        use std::io::Write;
        match self.kind {
            WorkloadKind::Cpu => {
                const REGIONS: [&str; 9] = [
                    "us-east-1",
                    "us-west-1",
                    "us-west-2",
                    "eu-west-1",
                    "eu-central-1",
                    "ap-southeast-1",
                    "ap-southeast-2",
                    "ap-northeast-1",
                    "sa-east-1",
                ];
                const OS: [&str; 3] = ["Ubuntu16.10", "Ubuntu16.04LTS", "Ubuntu15.10"];
                const ARCH: [&str; 2] = ["x86", "x64"];
                const TEAM: [&str; 4] = ["SF", "NYC", "LON", "CHI"];
                const ENVIRONMENT: [&str; 3] = ["production", "staging", "test"];
                let mut random = Random::new(series.wrapping_mul(0x2545_f491) + 7);
                let region = REGIONS[random.below(9) as usize];
                let zone = [b'a', b'b', b'c'][random.below(3) as usize] as char;
                let _ = write!(
                    out,
                    "cpu,hostname=host_{series},region={region},datacenter={region}{zone},rack={},os={},arch={},team={},service={},service_version={},service_environment={}",
                    random.below(100),
                    OS[random.below(3) as usize],
                    ARCH[random.below(2) as usize],
                    TEAM[random.below(4) as usize],
                    random.below(20),
                    random.below(2),
                    ENVIRONMENT[random.below(3) as usize],
                );
            }
            WorkloadKind::Iot => {
                let _ = write!(out, "airSensors,sensor_id=TLM{series:05}");
            }
        }
    }

    fn write_fields(&self, random: &mut Random, out: &mut Vec<u8>) {
        use std::io::Write;
        match self.kind {
            WorkloadKind::Cpu => {
                const FIELDS: [&str; 10] = [
                    "usage_user",
                    "usage_system",
                    "usage_idle",
                    "usage_nice",
                    "usage_iowait",
                    "usage_irq",
                    "usage_softirq",
                    "usage_steal",
                    "usage_guest",
                    "usage_guest_nice",
                ];
                for (i, name) in FIELDS.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    let _ = write!(out, "{name}={}i", random.below(100));
                }
            }
            WorkloadKind::Iot => {
                let _ = write!(
                    out,
                    "temperature={}.{:02},humidity={}.{:02},co={}.{:02}",
                    60 + random.below(20),
                    random.below(100),
                    30 + random.below(10),
                    random.below(100),
                    random.below(1),
                    random.below(100),
                );
            }
        }
    }

    /// Builds and gzips the body of every block in `0..blocks`, on `threads`
    /// threads. Returns (compressed bodies, total uncompressed bytes).
    pub fn gzip_pool(&self, blocks: u64, level: i32, threads: usize) -> (Vec<Vec<u8>>, u64) {
        let threads = threads.max(1) as u64;
        let mut pool: Vec<Vec<u8>> = vec![Vec::new(); blocks as usize];
        let raw_total = std::sync::atomic::AtomicU64::new(0);
        let chunk = blocks.div_ceil(threads).max(1) as usize;
        std::thread::scope(|scope| {
            for (chunk_index, bodies) in pool.chunks_mut(chunk).enumerate() {
                let raw_total = &raw_total;
                scope.spawn(move || {
                    let level = CompressionLvl::new(level).unwrap_or_default();
                    let mut compressor = Compressor::new(level);
                    let mut templates: Vec<Option<Template>> = Vec::new();
                    let mut raw = 0u64;
                    for (i, out) in bodies.iter_mut().enumerate() {
                        let block = (chunk_index * chunk + i) as u64;
                        let index = block % self.template_count();
                        if templates.len() <= index as usize {
                            templates.resize(index as usize + 1, None);
                        }
                        let template =
                            templates[index as usize].get_or_insert_with(|| self.template(index));
                        template.stamp(self, block);
                        raw += template.body.len() as u64;
                        let bound = compressor.gzip_compress_bound(template.body.len());
                        out.resize(bound, 0);
                        let used = compressor
                            .gzip_compress(&template.body, out)
                            .expect("gzip bound is enough by construction");
                        out.truncate(used);
                        out.shrink_to_fit();
                    }
                    raw_total.fetch_add(raw, std::sync::atomic::Ordering::Relaxed);
                });
            }
        });
        (pool, raw_total.into_inner())
    }
}

impl Template {
    /// Writes the timestamps of block `block` into the body, in place.
    pub fn stamp(&mut self, workload: &Workload, block: u64) {
        let first_point = block * workload.lines_per_request;
        for (line, &offset) in self.timestamp_offsets.iter().enumerate() {
            let at = workload
                .timestamp_ns(first_point + line as u64)
                .unwrap_or(0);
            let offset = offset as usize;
            write_digits(&mut self.body[offset..offset + TIMESTAMP_DIGITS], at);
        }
    }
}

/// Writes `value` as exactly `out.len()` decimal digits (zero-padded).
fn write_digits(out: &mut [u8], mut value: u64) {
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// xorshift64*: deterministic values, so a run is reproducible.
struct Random(u64);

impl Random {
    fn new(seed: u64) -> Random {
        Random(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: every point of a run is distinct and lands where the index math says.
    /// Method: stamp blocks of a small workload, reparse each line's series and time.
    #[test]
    fn blocks_cover_each_series_point_once() {
        let workload = Workload::new(WorkloadKind::Cpu, 7, 3, 1_700_000_000_000_000_000).unwrap();
        let mut seen = std::collections::HashSet::new();
        for block in 0..14 {
            let mut template = workload.template(block % workload.template_count());
            template.stamp(&workload, block);
            for line in std::str::from_utf8(&template.body).unwrap().lines() {
                let host = line
                    .split(',')
                    .nth(1)
                    .unwrap()
                    .strip_prefix("hostname=")
                    .unwrap();
                let time = line.rsplit(' ').next().unwrap();
                assert!(seen.insert((host.to_string(), time.to_string())), "{line}");
                assert!(workload.series_index(host).is_some());
            }
        }
        assert_eq!(seen.len(), 14 * 3);
    }
}
