//! Soak: a long run of unique points with the server watched over time.
//!
//! Owns the sampler of a soak run (issue 14's acceptance run): while
//! `load::run` sends (open loop at a fixed rate, or closed loop), every
//! interval one row records what the load saw in that interval (points
//! acknowledged, answers by class, ack latency p50/p99 from `load::Live`)
//! and what the server holds at that moment: its resident set (`VmRSS`),
//! its open file descriptors, and the bytes under its data directory by
//! kind (`wal/`, `parquet/`, `catalog/`, the rest), both apparent (file
//! lengths) and allocated (`st_blocks × 512`, what preallocated WAL
//! segments really take). Rows go to the CSV as they are taken, so a run
//! cut short keeps what it measured.
//!
//! The sampler only reads `/proc` and walks the directory; files vanishing
//! under the walk (a WAL segment truncated behind a Parquet file) are
//! skipped, not errors.

use crate::load::{self, Live, LoadOutcome, LoadPlan};
use crate::report;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes under a data directory, by top-level entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bytes {
    pub wal: u64,
    pub parquet: u64,
    pub catalog: u64,
    /// Everything else (`LOCK`, files a later version adds).
    pub other: u64,
}

impl Bytes {
    pub fn total(&self) -> u64 {
        self.wal + self.parquet + self.catalog + self.other
    }
}

/// Apparent (file length) and allocated (`st_blocks × 512`) bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    pub apparent: Bytes,
    pub allocated: Bytes,
}

/// Walks `data_dir` and sums regular files by kind; a missing directory is
/// zero. Symbolic links are not followed.
pub fn disk_usage(data_dir: &Path) -> DiskUsage {
    let mut usage = DiskUsage::default();
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return usage;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let (apparent, allocated) = tree_bytes(&entry.path());
        let (a, b) = match name.to_str() {
            Some("wal") => (&mut usage.apparent.wal, &mut usage.allocated.wal),
            Some("parquet") => (&mut usage.apparent.parquet, &mut usage.allocated.parquet),
            Some("catalog") => (&mut usage.apparent.catalog, &mut usage.allocated.catalog),
            _ => (&mut usage.apparent.other, &mut usage.allocated.other),
        };
        *a += apparent;
        *b += allocated;
    }
    usage
}

/// (apparent, allocated) bytes of a file or of every file below a directory.
fn tree_bytes(path: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return (0, 0); // Removed while we walked.
    };
    if meta.is_file() {
        return (meta.len(), meta.blocks() * 512);
    }
    if !meta.is_dir() {
        return (0, 0);
    }
    let mut sum = (0, 0);
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            let (a, b) = tree_bytes(&entry.path());
            sum.0 += a;
            sum.1 += b;
        }
    }
    sum
}

/// The pid written into `<data_dir>/LOCK` by the server holding it.
pub fn lock_holder_pid(data_dir: &Path) -> Result<u32, String> {
    let path = data_dir.join("LOCK");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    text.trim()
        .parse()
        .map_err(|_| format!("{} holds no pid: {:?}", path.display(), text.trim()))
}

/// Current resident set of `pid` (`VmRSS` in `/proc/PID/status`), KiB; 0 when gone.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Open file descriptors of `pid` (entries of `/proc/PID/fd`); 0 when gone.
pub fn fd_count(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| entries.count() as u64)
        .unwrap_or(0)
}

/// One row of the soak CSV.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Seconds since the load started, at the end of the interval.
    pub elapsed_s: f64,
    pub interval_s: f64,
    /// Points acknowledged in the interval, and since the start.
    pub points_acked: u64,
    pub points_acked_total: u64,
    pub answers_2xx: u64,
    pub answers_429: u64,
    pub answers_503: u64,
    /// Any other status, or no answer (connect error, timeout).
    pub answers_other: u64,
    /// Ack latency in the interval (open loop: from the intended send time).
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub rss_kib: u64,
    pub fds: u64,
    pub disk: DiskUsage,
}

impl Sample {
    pub fn points_per_s(&self) -> f64 {
        if self.interval_s > 0.0 {
            self.points_acked as f64 / self.interval_s
        } else {
            0.0
        }
    }
}

pub const CSV_HEADER: &str = "elapsed_s,interval_s,points_acked,points_acked_total,points_per_s,\
answers_2xx,answers_429,answers_503,answers_other,p50_ms,p99_ms,rss_kib,fds,\
wal_bytes,parquet_bytes,catalog_bytes,other_bytes,total_bytes,\
wal_alloc_bytes,parquet_alloc_bytes,catalog_alloc_bytes,other_alloc_bytes,total_alloc_bytes";

pub fn csv_row(s: &Sample) -> String {
    let (a, b) = (&s.disk.apparent, &s.disk.allocated);
    format!(
        "{:.3},{:.3},{},{},{:.0},{},{},{},{},{:.3},{:.3},{},{},{},{},{},{},{},{},{},{},{},{}",
        s.elapsed_s,
        s.interval_s,
        s.points_acked,
        s.points_acked_total,
        s.points_per_s(),
        s.answers_2xx,
        s.answers_429,
        s.answers_503,
        s.answers_other,
        s.p50_ms,
        s.p99_ms,
        s.rss_kib,
        s.fds,
        a.wal,
        a.parquet,
        a.catalog,
        a.other,
        a.total(),
        b.wal,
        b.parquet,
        b.catalog,
        b.other,
        b.total()
    )
}

/// What the sampler watches besides the load.
pub struct Watch {
    pub data_dir: PathBuf,
    pub server_pid: u32,
    pub interval: Duration,
}

/// The running totals of the previous sample, to turn counters into
/// per-interval figures.
#[derive(Default)]
struct Totals {
    at: Option<Instant>,
    points_acked: u64,
    answers: [u64; 4],
}

/// One sample: what `live` counted since `previous`, and the server now.
fn take(live: &Live, watch: &Watch, start: Instant, previous: &mut Totals) -> Sample {
    let now = Instant::now();
    let points_acked_total = live.points_acked.load(Ordering::Relaxed);
    let answers = [
        live.answers_2xx.load(Ordering::Relaxed),
        live.answers_429.load(Ordering::Relaxed),
        live.answers_503.load(Ordering::Relaxed),
        live.answers_other.load(Ordering::Relaxed),
    ];
    let latency = live.take_latency_us();
    let ms = |q: f64| {
        if latency.is_empty() {
            0.0
        } else {
            latency.value_at_quantile(q) as f64 / 1000.0
        }
    };
    let interval = |i: usize| answers[i] - previous.answers[i];
    let sample = Sample {
        elapsed_s: now.duration_since(start).as_secs_f64(),
        interval_s: previous
            .at
            .map_or(0.0, |at| now.duration_since(at).as_secs_f64()),
        points_acked: points_acked_total - previous.points_acked,
        points_acked_total,
        answers_2xx: interval(0),
        answers_429: interval(1),
        answers_503: interval(2),
        answers_other: interval(3),
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        rss_kib: rss_kib(watch.server_pid),
        fds: fd_count(watch.server_pid),
        disk: disk_usage(&watch.data_dir),
    };
    *previous = Totals {
        at: Some(now),
        points_acked: points_acked_total,
        answers,
    };
    sample
}

/// Runs the load of `plan` (whose `live` must be set) and samples every
/// `watch.interval`, plus once before the load starts and once for the last
/// partial interval. Each row is appended to `csv` as it is taken.
pub fn run(
    plan: &LoadPlan,
    watch: &Watch,
    csv: &mut std::fs::File,
) -> std::io::Result<(LoadOutcome, Vec<Sample>)> {
    let live: Arc<Live> = plan.live.clone().expect("soak plan has live counters");
    let mut samples: Vec<Sample> = Vec::new();
    let mut keep = |sample: Sample, csv: &mut std::fs::File| -> std::io::Result<()> {
        writeln!(csv, "{}", csv_row(&sample))?;
        csv.flush()?;
        samples.push(sample);
        Ok(())
    };
    writeln!(csv, "{CSV_HEADER}")?;
    let start = Instant::now();
    let mut previous = Totals::default();
    keep(take(&live, watch, start, &mut previous), csv)?;
    let done = AtomicBool::new(false);
    let (outcome, sampled) = std::thread::scope(|scope| {
        let load = scope.spawn(|| {
            let outcome = load::run(plan);
            done.store(true, Ordering::Release);
            outcome
        });
        let mut result = Ok(());
        let mut next = start + watch.interval;
        loop {
            let finished = done.load(Ordering::Acquire);
            if finished || Instant::now() >= next {
                let sample = take(&live, watch, start, &mut previous);
                next += watch.interval;
                if result.is_ok() {
                    result = keep(sample, csv);
                }
                if finished {
                    break;
                }
            }
            // Nothing to wait on but time (the load runs on its own threads);
            // short steps so the end of the load is noticed at once.
            std::thread::sleep(
                next.saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(50)),
            );
        }
        (load.join().expect("load thread panicked"), result)
    });
    sampled?;
    Ok((outcome, samples))
}

/// Resident-set flatness: the mean over the reference window (minutes 5–10
/// of a 30-minute run, i.e. 1/6..1/3 of the run) against every sample of
/// the last window (the last 10 minutes, 2/3..1 of the run).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Flatness {
    pub reference_from_s: f64,
    pub reference_to_s: f64,
    pub reference_kib: f64,
    pub last_from_s: f64,
    /// Lowest and highest sample of the last window, relative to the reference.
    pub low_ratio: f64,
    pub high_ratio: f64,
}

impl Flatness {
    /// Within ±`tolerance` (0.10 for issue 14).
    pub fn flat(&self, tolerance: f64) -> bool {
        self.low_ratio >= 1.0 - tolerance && self.high_ratio <= 1.0 + tolerance
    }
}

/// `None` when either window holds no sample with a resident set.
pub fn flatness(samples: &[Sample], duration_s: f64) -> Option<Flatness> {
    let (ref_from, ref_to, last_from) =
        (duration_s / 6.0, duration_s / 3.0, duration_s * 2.0 / 3.0);
    let in_window = |from: f64, to: f64| {
        samples
            .iter()
            .filter(move |s| s.rss_kib > 0 && s.elapsed_s >= from && s.elapsed_s <= to)
            .map(|s| s.rss_kib as f64)
    };
    let reference: Vec<f64> = in_window(ref_from, ref_to).collect();
    let last: Vec<f64> = in_window(last_from, f64::INFINITY).collect();
    if reference.is_empty() || last.is_empty() {
        return None;
    }
    let reference_kib = reference.iter().sum::<f64>() / reference.len() as f64;
    let low = last.iter().cloned().fold(f64::INFINITY, f64::min);
    let high = last.iter().cloned().fold(0.0, f64::max);
    Some(Flatness {
        reference_from_s: ref_from,
        reference_to_s: ref_to,
        reference_kib,
        last_from_s: last_from,
        low_ratio: low / reference_kib,
        high_ratio: high / reference_kib,
    })
}

/// Whether a sample covers (about) a whole interval: the last one of a run
/// is usually a sliver, whose rate says nothing.
fn whole_interval(sample: &Sample, interval_s: f64) -> bool {
    sample.interval_s >= interval_s / 2.0
}

/// The summary lines printed at the end (and pasted into the results `.md`).
pub fn summary(
    samples: &[Sample],
    duration_s: f64,
    interval_s: f64,
    fields_per_line: u64,
) -> String {
    let mut out = String::new();
    let sum = |f: fn(&Sample) -> u64| samples.iter().map(f).sum::<u64>();
    let acked = samples.last().map_or(0, |s| s.points_acked_total);
    let elapsed = samples.last().map_or(0.0, |s| s.elapsed_s).max(1e-9);
    let (r429, r503, other) = (
        sum(|s| s.answers_429),
        sum(|s| s.answers_503),
        sum(|s| s.answers_other),
    );
    let _ = writeln!(
        out,
        "soak: {acked} points acknowledged in {elapsed:.1} s ({:.0} points/s, {:.0} values/s), {} requests answered 2xx; refusals {} (429: {r429}, 503: {r503}); other answers or none: {other}",
        acked as f64 / elapsed,
        acked as f64 * fields_per_line as f64 / elapsed,
        sum(|s| s.answers_2xx),
        r429 + r503
    );
    let rates: Vec<f64> = samples
        .iter()
        .filter(|s| whole_interval(s, interval_s))
        .map(Sample::points_per_s)
        .collect();
    if !rates.is_empty() {
        let _ = writeln!(
            out,
            "throughput per whole interval: min {:.0}, max {:.0} points/s; ack p99 per interval: max {:.1} ms",
            rates.iter().cloned().fold(f64::INFINITY, f64::min),
            rates.iter().cloned().fold(0.0, f64::max),
            samples.iter().map(|s| s.p99_ms).fold(0.0, f64::max)
        );
    }
    let mib = |kib: f64| kib / 1024.0;
    let rss: Vec<u64> = samples.iter().map(|s| s.rss_kib).collect();
    let _ = writeln!(
        out,
        "rss: start {:.1} MiB, end {:.1} MiB, max {:.1} MiB; fds: start {}, end {}, max {}",
        mib(rss.first().copied().unwrap_or(0) as f64),
        mib(rss.last().copied().unwrap_or(0) as f64),
        mib(rss.iter().copied().max().unwrap_or(0) as f64),
        samples.first().map_or(0, |s| s.fds),
        samples.last().map_or(0, |s| s.fds),
        samples.iter().map(|s| s.fds).max().unwrap_or(0)
    );
    match flatness(samples, duration_s) {
        Some(f) => {
            let _ = writeln!(
                out,
                "rss flatness: reference {:.1} MiB (mean of {:.0}–{:.0} s), last window from {:.0} s spans {:+.1} % .. {:+.1} %: {}",
                mib(f.reference_kib),
                f.reference_from_s,
                f.reference_to_s,
                f.last_from_s,
                (f.low_ratio - 1.0) * 100.0,
                (f.high_ratio - 1.0) * 100.0,
                if f.flat(0.10) { "flat (within ±10 %)" } else { "NOT flat (beyond ±10 %)" }
            );
        }
        None => {
            let _ = writeln!(out, "rss flatness: n/a (no samples in a window)");
        }
    }
    let wal_max = samples
        .iter()
        .map(|s| s.disk.apparent.wal)
        .max()
        .unwrap_or(0);
    let wal_alloc_max = samples
        .iter()
        .map(|s| s.disk.allocated.wal)
        .max()
        .unwrap_or(0);
    let end = samples.last().map(|s| s.disk).unwrap_or_default();
    let per_point = |bytes: u64| {
        if acked > 0 {
            format!("{:.1}", bytes as f64 / acked as f64)
        } else {
            "n/a".to_string()
        }
    };
    let _ = writeln!(
        out,
        "disk: WAL max {} bytes ({} allocated); at the end WAL {}, parquet {}, catalog {}, other {}, total {} bytes ({} allocated)",
        wal_max,
        wal_alloc_max,
        end.apparent.wal,
        end.apparent.parquet,
        end.apparent.catalog,
        end.apparent.other,
        end.apparent.total(),
        end.allocated.total()
    );
    let _ = writeln!(
        out,
        "bytes per acknowledged point at the end: WAL {} ({} allocated), parquet {}, total {}",
        per_point(end.apparent.wal),
        per_point(end.allocated.wal),
        per_point(end.apparent.parquet),
        per_point(end.allocated.total())
    );
    out
}

/// One line of a panel: name and (x, y) points.
type Line = (&'static str, Vec<(f64, f64)>);

/// Three panels over time: throughput, resident set, disk by kind.
pub fn svg(samples: &[Sample], interval_s: f64, title: &str) -> String {
    let minutes = samples.last().map_or(0.0, |s| s.elapsed_s) >= 120.0;
    let (x_unit, x_scale) = if minutes { ("min", 60.0) } else { ("s", 1.0) };
    let x = |s: &Sample| s.elapsed_s / x_scale;
    // Rates only from whole intervals; levels from every sample.
    let series = |f: &dyn Fn(&Sample) -> f64, rate: bool| -> Vec<(f64, f64)> {
        samples
            .iter()
            .filter(|s| !rate || whole_interval(s, interval_s))
            .map(|s| (x(s), f(s)))
            .collect()
    };
    let mib = 1024.0 * 1024.0;
    let panels: [(&str, Vec<Line>); 3] = [
        (
            "acknowledged points/s, refusals/s",
            vec![
                ("points/s", series(&|s| s.points_per_s(), true)),
                (
                    "429+503 per s",
                    series(
                        &|s| (s.answers_429 + s.answers_503) as f64 / s.interval_s.max(1e-9),
                        true,
                    ),
                ),
            ],
        ),
        (
            "server resident set, MiB",
            vec![("VmRSS", series(&|s| s.rss_kib as f64 / 1024.0, false))],
        ),
        (
            "data directory, MiB (apparent)",
            vec![
                ("wal", series(&|s| s.disk.apparent.wal as f64 / mib, false)),
                (
                    "parquet",
                    series(&|s| s.disk.apparent.parquet as f64 / mib, false),
                ),
                (
                    "catalog",
                    series(&|s| s.disk.apparent.catalog as f64 / mib, false),
                ),
                (
                    "total",
                    series(&|s| s.disk.apparent.total() as f64 / mib, false),
                ),
                (
                    "total allocated",
                    series(&|s| s.disk.allocated.total() as f64 / mib, false),
                ),
            ],
        ),
    ];
    let x_max = samples.last().map_or(1.0, x).max(1e-9);
    let (left, right, panel_h, gap, top) = (80.0, 170.0, 180.0, 60.0, 40.0);
    let plot_w = 720.0;
    let width = left + plot_w + right;
    let height = top + 3.0 * (panel_h + gap) + 10.0;
    let mut out = report::svg_open(width, height, title);
    for (index, (name, lines)) in panels.iter().enumerate() {
        let y0 = top + index as f64 * (panel_h + gap) + 20.0;
        let highest = lines
            .iter()
            .flat_map(|(_, points)| points.iter().map(|p| p.1))
            .fold(0.0, f64::max);
        let step = nice_step(highest / 4.0);
        let y_max = step * 4.0;
        let _ = writeln!(
            out,
            r##"<text x="{left}" y="{:.1}" font-size="12">{}</text>"##,
            y0 - 6.0,
            report::xml_escape(name)
        );
        for tick in 0..=4 {
            // Rounded to the step's precision: no 0.30000000000000004 labels.
            let value = (tick as f64 * step / (step / 100.0)).round() * (step / 100.0);
            let y = y0 + panel_h - panel_h * tick as f64 / 4.0;
            let _ = writeln!(
                out,
                r##"<line x1="{left}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end" font-size="11">{}</text>"##,
                left + plot_w,
                left - 6.0,
                y + 4.0,
                report::format_value(value)
            );
        }
        for tick in 0..=5 {
            let value = x_max * tick as f64 / 5.0;
            let px = left + plot_w * tick as f64 / 5.0;
            let _ = writeln!(
                out,
                r##"<text x="{px:.1}" y="{:.1}" text-anchor="middle" font-size="11">{:.1} {x_unit}</text>"##,
                y0 + panel_h + 15.0,
                value
            );
        }
        for (line_index, (_, points)) in lines.iter().enumerate() {
            let path: Vec<String> = points
                .iter()
                .map(|(px, py)| {
                    format!(
                        "{:.1},{:.1}",
                        left + px / x_max * plot_w,
                        y0 + panel_h - py / y_max * panel_h
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                r##"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"##,
                report::COLORS[line_index % report::COLORS.len()],
                path.join(" ")
            );
        }
        let names: Vec<String> = lines.iter().map(|(n, _)| n.to_string()).collect();
        report::legend(&mut out, &names, left + plot_w + 15.0, y0);
    }
    out.push_str("</svg>\n");
    out
}

/// The smallest of 1, 2, 2.5, 5 × 10^k at least `raw` (a tick step); 1 for nothing.
fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&step| step >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * magnitude)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(elapsed_s: f64, rss_kib: u64) -> Sample {
        Sample {
            elapsed_s,
            interval_s: 10.0,
            rss_kib,
            ..Sample::default()
        }
    }

    /// Goal: flatness compares the last third against minutes 5–10 of 30.
    /// Method: a 30-minute run sampled each minute; memory grows until
    /// minute 10 and then stays within 5 % (flat), then one sample 20 %
    /// higher at the end (not flat).
    #[test]
    fn flatness_uses_the_proportional_windows() {
        let mut samples: Vec<Sample> = (0..=30)
            .map(|m| {
                sample(
                    m as f64 * 60.0,
                    if m < 5 { 100 } else { 1000 + (m % 2) * 50 },
                )
            })
            .collect();
        let f = flatness(&samples, 1800.0).expect("both windows sampled");
        assert_eq!(
            (f.reference_from_s, f.reference_to_s, f.last_from_s),
            (300.0, 600.0, 1200.0)
        );
        assert!(f.flat(0.10), "{f:?}");
        samples.last_mut().unwrap().rss_kib = 1250;
        assert!(!flatness(&samples, 1800.0).unwrap().flat(0.10));
    }

    /// Goal: disk usage is split by top-level directory, apparent and allocated.
    /// Method: a temporary tree with wal/, parquet/, catalog/ and a loose
    /// file of known lengths; a missing directory is zero.
    #[test]
    fn disk_usage_splits_by_kind() {
        let dir = std::env::temp_dir().join(format!("ringest-soak-disk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (path, len) in [
            ("wal/0/a", 1000),
            ("wal/1/b", 24),
            ("parquet/t/x.parquet", 300),
            ("catalog/c", 7),
            ("LOCK", 6),
        ] {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, vec![1u8; len]).unwrap();
        }
        let usage = disk_usage(&dir);
        assert_eq!(
            usage.apparent,
            Bytes {
                wal: 1024,
                parquet: 300,
                catalog: 7,
                other: 6
            }
        );
        assert!(usage.allocated.wal >= 4096, "{usage:?}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(disk_usage(&dir), DiskUsage::default());
    }
}
