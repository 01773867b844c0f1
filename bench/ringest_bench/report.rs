//! Results: one CSV row per run, the medians table, and SVG charts.
//!
//! Owns the CSV schema (`RunRecord`, one row per run, header written when
//! the file is new) and everything derived from a CSV file: the comparison
//! table (medians over rounds, ratio against the baseline system, whether
//! each system's acknowledgement means synced), the tuning-profile table
//! (each profile of one ringest binary against the `default` profile:
//! throughput, latency at half load, peak server memory) and two
//! hand-written SVG charts (closed-loop throughput per system; latency
//! percentiles against offered load from the open-loop runs).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

/// One run, as a CSV row. Field order is the column order.
#[derive(Debug, Clone, Default)]
pub struct RunRecord {
    pub system: String,
    pub ack_synced: String,
    pub round: u32,
    pub workload: String,
    pub mode: String,
    pub endpoint: String,
    pub gzip: bool,
    pub series: u64,
    pub lines_per_request: u64,
    pub connections: u64,
    pub offered_points_per_s: f64,
    pub elapsed_s: f64,
    pub requests: u64,
    pub points_acked: u64,
    pub points_per_s: f64,
    pub wire_mb_per_s: f64,
    pub raw_mb_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// `status:count` pairs and `error:count` pairs, `;`-separated.
    pub answers: String,
    pub behind_schedule: u64,
    /// ok, missing, error, skipped
    pub verify: String,
    pub missing_points: u64,
    pub unix_s: u64,
    /// Peak resident set of the server process (VmHWM) after this run and its
    /// verification, KiB; 0 when unknown (no `--server-pid`, older files).
    pub server_vmhwm_kib: u64,
    /// Bytes ringest's WALs grew by (`ringest_wal_bytes_total`) per point
    /// acknowledged in this run; 0 when unknown (another server, older
    /// files).
    pub wal_bytes_per_point: f64,
}

const COLUMNS: &str = "system,ack_synced,round,workload,mode,endpoint,gzip,series,lines_per_request,connections,offered_points_per_s,elapsed_s,requests,points_acked,points_per_s,wire_mb_per_s,raw_mb_per_s,p50_ms,p90_ms,p99_ms,p999_ms,max_ms,answers,behind_schedule,verify,missing_points,unix_s,server_vmhwm_kib,wal_bytes_per_point";
/// Files written before `server_vmhwm_kib` existed have two columns less,
/// before `wal_bytes_per_point` one.
const COLUMNS_BEFORE_VMHWM: usize = 27;

impl RunRecord {
    fn to_row(&self) -> String {
        format!(
"{},{},{},{},{},{},{},{},{},{},{:.0},{:.3},{},{},{:.0},{:.2},{:.2},{:.3},{:.3},{:.3},{:.3},{:.3},{},{},{},{},{},{},{:.1}",
            clean(&self.system),
            clean(&self.ack_synced),
            self.round,
            clean(&self.workload),
            clean(&self.mode),
            clean(&self.endpoint),
            self.gzip,
            self.series,
            self.lines_per_request,
            self.connections,
            self.offered_points_per_s,
            self.elapsed_s,
            self.requests,
            self.points_acked,
            self.points_per_s,
            self.wire_mb_per_s,
            self.raw_mb_per_s,
            self.p50_ms,
            self.p90_ms,
            self.p99_ms,
            self.p999_ms,
            self.max_ms,
            clean(&self.answers),
            self.behind_schedule,
            clean(&self.verify),
            self.missing_points,
            self.unix_s,
            self.server_vmhwm_kib,
            self.wal_bytes_per_point,
        )
    }

    fn from_row(row: &str) -> Option<RunRecord> {
        let f: Vec<&str> = row.split(',').collect();
        let columns = COLUMNS.split(',').count();
        if !(COLUMNS_BEFORE_VMHWM..=columns).contains(&f.len()) {
            return None;
        }
        Some(RunRecord {
            system: f[0].to_string(),
            ack_synced: f[1].to_string(),
            round: f[2].parse().ok()?,
            workload: f[3].to_string(),
            mode: f[4].to_string(),
            endpoint: f[5].to_string(),
            gzip: f[6].parse().ok()?,
            series: f[7].parse().ok()?,
            lines_per_request: f[8].parse().ok()?,
            connections: f[9].parse().ok()?,
            offered_points_per_s: f[10].parse().ok()?,
            elapsed_s: f[11].parse().ok()?,
            requests: f[12].parse().ok()?,
            points_acked: f[13].parse().ok()?,
            points_per_s: f[14].parse().ok()?,
            wire_mb_per_s: f[15].parse().ok()?,
            raw_mb_per_s: f[16].parse().ok()?,
            p50_ms: f[17].parse().ok()?,
            p90_ms: f[18].parse().ok()?,
            p99_ms: f[19].parse().ok()?,
            p999_ms: f[20].parse().ok()?,
            max_ms: f[21].parse().ok()?,
            answers: f[22].to_string(),
            behind_schedule: f[23].parse().ok()?,
            verify: f[24].to_string(),
            missing_points: f[25].parse().ok()?,
            unix_s: f[26].parse().ok()?,
            server_vmhwm_kib: match f.get(27) {
                Some(v) => v.parse().ok()?,
                None => 0,
            },
            wal_bytes_per_point: match f.get(28) {
                Some(v) => v.parse().ok()?,
                None => 0.0,
            },
        })
    }

    /// The workload case a row belongs to, e.g. `cpu 1000 lines x8 gzip`.
    fn case(&self) -> String {
        format!(
            "{} {}l x{}{}{}",
            self.workload,
            self.lines_per_request,
            self.connections,
            if self.gzip { " gzip" } else { "" },
            if self.endpoint == "v2" { " v2" } else { "" }
        )
    }
}

/// Commas would break the CSV; none of our values need them.
fn clean(text: &str) -> String {
    text.replace([',', '\n', '\r'], ";")
}

pub fn append_csv(path: &Path, record: &RunRecord) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let new = !path.exists() || std::fs::metadata(path)?.len() == 0;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    if new {
        writeln!(file, "{COLUMNS}")?;
    }
    writeln!(file, "{}", record.to_row())
}

pub fn read_csv(path: &Path) -> std::io::Result<Vec<RunRecord>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .skip(1)
        .filter_map(RunRecord::from_row)
        .collect())
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// Median closed-loop points/s of `system` on plain v1 `workload` bodies
/// (of `lines` lines per request, when given); 0 when none.
pub fn closed_loop_median(
    records: &[RunRecord],
    system: &str,
    workload: &str,
    lines: Option<u64>,
) -> f64 {
    let mut rates: Vec<f64> = records
        .iter()
        .filter(|r| {
            r.mode == "closed"
                && r.system == system
                && r.workload == workload
                && lines.is_none_or(|l| r.lines_per_request == l)
                && !r.gzip
                && r.endpoint == "v1"
        })
        .map(|r| r.points_per_s)
        .collect();
    if rates.is_empty() {
        0.0
    } else {
        median(&mut rates)
    }
}

/// Field values per line (point) of a workload, to report values/s beside points/s.
fn fields_per_line(workload: &str) -> f64 {
    match workload {
        "cpu" => 10.0,
        "iot" => 3.0,
        _ => f64::NAN,
    }
}

struct Summary {
    system: String,
    fields_per_line: f64,
    ack_synced: String,
    rounds: usize,
    points_per_s: f64,
    wire_mb_per_s: f64,
    raw_mb_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    verify: String,
}

fn summarize(rows: &[&RunRecord]) -> Summary {
    let pick =
        |f: fn(&RunRecord) -> f64| median(&mut rows.iter().map(|r| f(r)).collect::<Vec<_>>());
    let mut verdicts: Vec<&str> = rows.iter().map(|r| r.verify.as_str()).collect();
    verdicts.sort_unstable();
    verdicts.dedup();
    Summary {
        system: rows[0].system.clone(),
        ack_synced: rows[0].ack_synced.clone(),
        rounds: rows.len(),
        fields_per_line: fields_per_line(&rows[0].workload),
        points_per_s: pick(|r| r.points_per_s),
        wire_mb_per_s: pick(|r| r.wire_mb_per_s),
        raw_mb_per_s: pick(|r| r.raw_mb_per_s),
        p50_ms: pick(|r| r.p50_ms),
        p99_ms: pick(|r| r.p99_ms),
        p999_ms: pick(|r| r.p999_ms),
        verify: verdicts.join("+"),
    }
}

/// The medians table (Markdown) over closed-loop rows, and open-loop rows below it.
pub fn table(records: &[RunRecord], baseline: &str) -> String {
    let mut out = String::new();
    let mut cases: BTreeMap<String, BTreeMap<String, Vec<&RunRecord>>> = BTreeMap::new();
    for record in records.iter().filter(|r| r.mode == "closed") {
        cases
            .entry(record.case())
            .or_default()
            .entry(record.system.clone())
            .or_default()
            .push(record);
    }
    let _ = writeln!(
        out,
        "Closed loop (maximum throughput), medians over rounds:\n"
    );
    let _ = writeln!(
        out,
        "| workload | system | ack means synced | rounds | points/s | values/s | {baseline} ÷ system | wire MB/s | raw MB/s | p50 ms | p99 ms | p99.9 ms | verified |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (case, systems) in &cases {
        let summaries: Vec<Summary> = systems.values().map(|rows| summarize(rows)).collect();
        let base = summaries
            .iter()
            .find(|s| s.system == baseline && s.points_per_s > 0.0)
            .map(|s| s.points_per_s);
        for s in &summaries {
            let ratio = match base {
                Some(b) if s.points_per_s > 0.0 => format!("{:.2}×", b / s.points_per_s),
                _ => "n/a".to_string(),
            };
            let _ = writeln!(
                out,
                "| {case} | {} | {} | {} | {:.0} | {:.0} | {ratio} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {} |",
                s.system,
                s.ack_synced,
                s.rounds,
                s.points_per_s,
                s.points_per_s * s.fields_per_line,
                s.wire_mb_per_s,
                s.raw_mb_per_s,
                s.p50_ms,
                s.p99_ms,
                s.p999_ms,
                s.verify
            );
        }
    }
    let open = open_loop_points(records);
    if !open.is_empty() {
        let _ = writeln!(
            out,
            "\nOpen loop (latency from intended send time), medians over rounds:\n"
        );
        let _ = writeln!(out, "| system | workload | offered points/s | achieved points/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | rounds |");
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
        for point in &open {
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
                point.system,
                point.case,
                point.offered,
                point.achieved,
                point.p50_ms,
                point.p90_ms,
                point.p99_ms,
                point.p999_ms,
                point.max_ms,
                point.rounds
            );
        }
    }
    out
}

/// Peak resident set of process `pid` so far (`VmHWM` in `/proc/PID/status`), KiB.
pub fn vmhwm_kib(pid: u32) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| std::io::Error::other("no VmHWM line"))
}

/// What one profile's runs of one load (workload, lines per request, body
/// kind) share between closed and open loop; connection counts may differ.
/// Bigger requests sort first.
type LoadKey = (String, std::cmp::Reverse<u64>, bool, String);

fn load_key(record: &RunRecord) -> LoadKey {
    (
        record.workload.clone(),
        std::cmp::Reverse(record.lines_per_request),
        record.gzip,
        record.endpoint.clone(),
    )
}

/// Median, lowest and highest of one metric over rounds.
#[derive(Clone, Copy)]
struct Spread {
    median: f64,
    low: f64,
    high: f64,
    rounds: usize,
}

fn spread(rows: &[&RunRecord], f: fn(&RunRecord) -> f64) -> Spread {
    let mut values: Vec<f64> = rows.iter().map(|r| f(r)).collect();
    let median = median(&mut values);
    Spread {
        median,
        low: values.first().copied().unwrap_or(f64::NAN),
        high: values.last().copied().unwrap_or(f64::NAN),
        rounds: values.len(),
    }
}

/// `higher`/`lower` when the two ranges over rounds do not overlap; `None`
/// when they overlap or either side has fewer than two rounds.
fn distinct(profile: Spread, baseline: Spread) -> Option<&'static str> {
    if profile.rounds < 2 || baseline.rounds < 2 {
        None
    } else if profile.low > baseline.high {
        Some("higher")
    } else if profile.high < baseline.low {
        Some("lower")
    } else {
        None
    }
}

fn ratio(value: f64, baseline: Option<f64>) -> String {
    match baseline {
        Some(b) if b > 0.0 && value > 0.0 => format!("{:.2}×", value / b),
        _ => "n/a".to_string(),
    }
}

/// Profiles of one binary, baseline first, the rest in name order.
fn ordered_profiles<'a>(profiles: impl Iterator<Item = &'a String>, baseline: &str) -> Vec<String> {
    let mut names: Vec<String> = profiles.cloned().collect();
    names.sort_by_key(|n| (n != baseline, n.clone()));
    names.dedup();
    names
}

/// The tuning-profile table: every system in `records` is one profile of the
/// same ringest binary. Per load: closed-loop points/s (median and range over
/// rounds, ratio profile ÷ `baseline`), the open-loop latency percentiles
/// (runs at a fraction of that profile's own maximum), and whether the
/// ranges over rounds separate the profile from the baseline; then the
/// servers' peak resident set per profile.
pub fn profiles_table(records: &[RunRecord], baseline: &str) -> String {
    type ByProfile<'a> = BTreeMap<String, Vec<&'a RunRecord>>;
    let mut closed: BTreeMap<LoadKey, ByProfile> = BTreeMap::new();
    let mut open: BTreeMap<LoadKey, ByProfile> = BTreeMap::new();
    for record in records {
        let side = match record.mode.as_str() {
            "closed" => &mut closed,
            "open" => &mut open,
            _ => continue,
        };
        side.entry(load_key(record))
            .or_default()
            .entry(record.system.clone())
            .or_default()
            .push(record);
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Profiles against `{baseline}`: closed-loop maximum (median and range over rounds), then \
         open-loop ack latency at the offered rate shown (a fraction of that profile's own \
         maximum; latency from the intended send time). \"distinct\" names the metrics whose \
         ranges over rounds do not overlap {baseline}'s (needs 2 rounds or more).\n"
    );
    let _ = writeln!(
        out,
        "| workload | profile | rounds | points/s (median) | range | ÷ {baseline} | closed p99 ms | offered points/s | p50 ms | p99 ms | p99.9 ms | p99 ÷ {baseline} | distinct from {baseline} | verified |"
    );
    let _ = writeln!(
        out,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let empty = ByProfile::new();
    for (key, by_profile) in &closed {
        let open_by_profile = open.get(key).unwrap_or(&empty);
        let throughput = |rows: &[&RunRecord]| spread(rows, |r| r.points_per_s);
        let p99 = |rows: &[&RunRecord]| spread(rows, |r| r.p99_ms);
        let base_closed = by_profile.get(baseline).map(|rows| throughput(rows));
        let base_open = open_by_profile.get(baseline).map(|rows| p99(rows));
        let names = ordered_profiles(by_profile.keys().chain(open_by_profile.keys()), baseline);
        for name in names {
            let closed_rows = by_profile.get(&name).map(Vec::as_slice).unwrap_or(&[]);
            let open_rows = open_by_profile.get(&name).map(Vec::as_slice).unwrap_or(&[]);
            if closed_rows.is_empty() && open_rows.is_empty() {
                continue;
            }
            let workload = format!(
                "{} {}l x{}{}{}{}",
                key.0,
                key.1 .0,
                closed_rows.first().map_or(0, |r| r.connections),
                open_rows
                    .first()
                    .map(|r| format!(" (open x{})", r.connections))
                    .unwrap_or_default(),
                if key.2 { " gzip" } else { "" },
                if key.3 == "v2" { " v2" } else { "" },
            );
            let tput = throughput(closed_rows);
            let closed_p99 = p99(closed_rows);
            let latency = p99(open_rows);
            let pick = |f: fn(&RunRecord) -> f64| spread(open_rows, f).median;
            let mut differences = Vec::new();
            let mut judged = false;
            if name != baseline {
                if let Some(base) = base_closed {
                    judged |= tput.rounds >= 2 && base.rounds >= 2;
                    if let Some(way) = distinct(tput, base) {
                        differences.push(format!("points/s {way}"));
                    }
                }
                if let Some(base) = base_open {
                    judged |= latency.rounds >= 2 && base.rounds >= 2;
                    if let Some(way) = distinct(latency, base) {
                        differences.push(format!("p99 {way}"));
                    }
                }
            }
            let distinct_text = if name == baseline {
                "—".to_string()
            } else if !differences.is_empty() {
                differences.join(", ")
            } else if judged {
                "none".to_string()
            } else {
                "n/a (1 round)".to_string()
            };
            let mut verdicts: Vec<&str> = closed_rows
                .iter()
                .chain(open_rows)
                .map(|r| r.verify.as_str())
                .collect();
            verdicts.sort_unstable();
            verdicts.dedup();
            let (offered, p50, p999) = if open_rows.is_empty() {
                (f64::NAN, f64::NAN, f64::NAN)
            } else {
                (
                    pick(|r| r.offered_points_per_s),
                    pick(|r| r.p50_ms),
                    pick(|r| r.p999_ms),
                )
            };
            let _ = writeln!(
                out,
                "| {workload} | {name} | {} | {:.0} | {:.0}–{:.0} | {} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {distinct_text} | {} |",
                tput.rounds,
                tput.median,
                tput.low,
                tput.high,
                ratio(tput.median, base_closed.map(|b| b.median)),
                closed_p99.median,
                offered,
                p50,
                latency.median,
                p999,
                ratio(latency.median, base_open.map(|b| b.median)),
                verdicts.join("+")
            );
        }
    }
    out.push_str(&peak_memory_table(records, baseline));
    out
}

/// Peak resident set per profile: for each server (one per profile, round
/// and mode) the largest VmHWM its runs saw, i.e. the one read after its
/// last run; then the median over rounds.
fn peak_memory_table(records: &[RunRecord], baseline: &str) -> String {
    // (profile, mode) → round → peak KiB
    let mut peaks: BTreeMap<(String, String), BTreeMap<u32, u64>> = BTreeMap::new();
    for record in records.iter().filter(|r| r.server_vmhwm_kib > 0) {
        let peak = peaks
            .entry((record.system.clone(), record.mode.clone()))
            .or_default()
            .entry(record.round)
            .or_default();
        *peak = (*peak).max(record.server_vmhwm_kib);
    }
    let mut out = String::new();
    if peaks.is_empty() {
        return out;
    }
    let mib = |profile: &str, mode: &str| -> Option<(f64, f64, f64)> {
        let per_round = peaks.get(&(profile.to_string(), mode.to_string()))?;
        let mut values: Vec<f64> = per_round.values().map(|k| *k as f64 / 1024.0).collect();
        let m = median(&mut values);
        Some((m, values[0], values[values.len() - 1]))
    };
    let show = |v: Option<(f64, f64, f64)>| match v {
        Some((m, lo, hi)) => format!("{m:.1} ({lo:.1}–{hi:.1})"),
        None => "n/a".to_string(),
    };
    let _ = writeln!(
        out,
        "\nPeak resident set of the server (VmHWM just before it was stopped), MiB, median (range) over rounds. \
         It includes the in-memory store of every point that server took, so a profile that ingests more \
         holds more; the open-loop server took about the same offered fraction of each profile's maximum.\n"
    );
    let _ = writeln!(
        out,
        "| profile | closed-loop server | ÷ {baseline} | open-loop server | ÷ {baseline} |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    let names = ordered_profiles(peaks.keys().map(|(p, _)| p), baseline);
    for name in names {
        let (closed, open) = (mib(&name, "closed"), mib(&name, "open"));
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} |",
            show(closed),
            ratio(
                closed.map_or(0.0, |v| v.0),
                mib(baseline, "closed").map(|v| v.0)
            ),
            show(open),
            ratio(
                open.map_or(0.0, |v| v.0),
                mib(baseline, "open").map(|v| v.0)
            ),
        );
    }
    out
}

struct OpenPoint {
    system: String,
    case: String,
    offered: f64,
    achieved: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    rounds: usize,
}

fn open_loop_points(records: &[RunRecord]) -> Vec<OpenPoint> {
    let mut groups: BTreeMap<(String, String, u64), Vec<&RunRecord>> = BTreeMap::new();
    for record in records.iter().filter(|r| r.mode == "open") {
        let key = (
            record.system.clone(),
            record.case(),
            record.offered_points_per_s as u64,
        );
        groups.entry(key).or_default().push(record);
    }
    groups
        .into_iter()
        .map(|((system, case, offered), rows)| {
            let pick = |f: fn(&RunRecord) -> f64| {
                median(&mut rows.iter().map(|r| f(r)).collect::<Vec<_>>())
            };
            OpenPoint {
                system,
                case,
                offered: offered as f64,
                achieved: pick(|r| r.points_per_s),
                p50_ms: pick(|r| r.p50_ms),
                p90_ms: pick(|r| r.p90_ms),
                p99_ms: pick(|r| r.p99_ms),
                p999_ms: pick(|r| r.p999_ms),
                max_ms: pick(|r| r.max_ms),
                rounds: rows.len(),
            }
        })
        .collect()
}

pub const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

/// Every system in the records, in one fixed order, so a system has the
/// same colour in every chart: ringest first, the ceiling last.
fn ordered_systems(records: &[RunRecord]) -> Vec<String> {
    const ORDER: [&str; 5] = [
        "ringest",
        "ringest-1shard",
        "influxdb",
        "victoria-metrics",
        "discard",
    ];
    let mut systems: Vec<String> = Vec::new();
    for record in records {
        if !systems.contains(&record.system) {
            systems.push(record.system.clone());
        }
    }
    systems.sort_by_key(|s| {
        (
            ORDER.iter().position(|o| o == s).unwrap_or(ORDER.len()),
            s.clone(),
        )
    });
    systems
}

fn log_ticks(low: f64, high: f64) -> Vec<f64> {
    let mut ticks = Vec::new();
    let mut at = 10f64.powf(low.log10().floor());
    while at <= high * 1.0001 {
        ticks.push(at);
        at *= 10.0;
    }
    ticks
}

pub fn format_value(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{}k", v / 1e3)
    } else {
        format!("{v}")
    }
}

/// Grouped bars: median closed-loop points/s per case and system (log scale).
pub fn throughput_svg(records: &[RunRecord]) -> String {
    let mut cases: BTreeMap<String, BTreeMap<String, Vec<&RunRecord>>> = BTreeMap::new();
    let systems = ordered_systems(records);
    for record in records.iter().filter(|r| r.mode == "closed") {
        cases
            .entry(record.case())
            .or_default()
            .entry(record.system.clone())
            .or_default()
            .push(record);
    }
    let values: Vec<(String, Vec<(usize, f64)>)> = cases
        .iter()
        .map(|(case, by_system)| {
            let bars = by_system
                .iter()
                .map(|(system, rows)| {
                    let index = systems.iter().position(|s| s == system).unwrap_or(0);
                    (index, summarize(rows).points_per_s)
                })
                .collect();
            (case.clone(), bars)
        })
        .collect();
    let all: Vec<f64> = values
        .iter()
        .flat_map(|(_, b)| b.iter().map(|(_, v)| *v))
        .filter(|v| *v > 0.0)
        .collect();
    let (low, high) = (
        all.iter().cloned().fold(f64::INFINITY, f64::min).min(1e4),
        all.iter().cloned().fold(1.0, f64::max),
    );
    let ticks = log_ticks(low, high);
    let (y_low, y_high) = (
        ticks[0].log10(),
        (high * 1.5).log10().max(ticks[0].log10() + 1.0),
    );
    let (left, top, plot_h) = (80.0, 40.0, 320.0);
    let group_w = (systems.len() as f64 * 28.0 + 30.0).max(120.0);
    let width = left + group_w * values.len().max(1) as f64 + 180.0;
    let height = top + plot_h + 80.0;
    let y = |v: f64| top + plot_h - (v.max(ticks[0]).log10() - y_low) / (y_high - y_low) * plot_h;
    let mut svg = svg_open(
        width,
        height,
        "Closed-loop throughput (median points/s, log scale)",
    );
    for tick in &ticks {
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end" font-size="11">{}</text>"##,
            width - 180.0,
            left - 6.0,
            y(*tick) + 4.0,
            format_value(*tick),
            y = y(*tick)
        );
    }
    for (g, (case, bars)) in values.iter().enumerate() {
        let x0 = left + g as f64 * group_w + 15.0;
        for (slot, (index, value)) in bars.iter().enumerate() {
            let x = x0 + slot as f64 * 28.0;
            let top_y = y(*value);
            let _ = writeln!(
                svg,
                r##"<rect x="{x:.1}" y="{top_y:.1}" width="24" height="{:.1}" fill="{}"><title>{}: {:.0}</title></rect>"##,
                top + plot_h - top_y,
                COLORS[index % COLORS.len()],
                systems[*index],
                value
            );
        }
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11">{}</text>"##,
            x0 + bars.len() as f64 * 14.0,
            top + plot_h + 18.0,
            xml_escape(case)
        );
    }
    legend(&mut svg, &systems, width - 170.0, top);
    svg.push_str("</svg>\n");
    svg
}

/// p50 (dashed) and p99 (solid) latency against offered load, per system (log-log).
pub fn latency_svg(records: &[RunRecord]) -> String {
    let points = open_loop_points(records);
    let systems = ordered_systems(records);
    let offered: Vec<f64> = points
        .iter()
        .map(|p| p.offered)
        .filter(|v| *v > 0.0)
        .collect();
    let latencies: Vec<f64> = points
        .iter()
        .flat_map(|p| [p.p50_ms, p.p99_ms])
        .filter(|v| *v > 0.0)
        .collect();
    let offered_min = offered
        .iter()
        .cloned()
        .fold(f64::INFINITY, f64::min)
        .min(1e4);
    let offered_max = offered.iter().cloned().fold(1e5, f64::max);
    let latency_min = latencies
        .iter()
        .cloned()
        .fold(f64::INFINITY, f64::min)
        .min(0.1);
    let latency_max = latencies.iter().cloned().fold(10.0, f64::max);
    let (x_ticks, y_ticks) = (
        log_ticks(offered_min, offered_max),
        log_ticks(latency_min, latency_max),
    );
    // Axes reach a little past the largest value so no point sits on the frame.
    let (x_low, x_high) = (x_ticks[0].log10(), offered_max.log10() + 0.15);
    let (y_low, y_high) = (y_ticks[0].log10(), latency_max.log10() + 0.15);
    let (left, top, plot_w, plot_h) = (80.0, 40.0, 560.0, 320.0);
    let (width, height) = (left + plot_w + 200.0, top + plot_h + 70.0);
    let x = |v: f64| left + (v.log10() - x_low) / (x_high - x_low) * plot_w;
    let y = |v: f64| top + plot_h - (v.max(y_ticks[0]).log10() - y_low) / (y_high - y_low) * plot_h;
    let mut svg = svg_open(
        width,
        height,
        "Ack latency vs offered load (open loop; p99 solid, p50 dashed; ms)",
    );
    for tick in &y_ticks {
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end" font-size="11">{}</text>"##,
            left + plot_w,
            left - 6.0,
            y(*tick) + 4.0,
            tick,
            yy = y(*tick)
        );
    }
    for tick in &x_ticks {
        let _ = writeln!(
            svg,
            r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{top}" y2="{}" stroke="#ddd"/><text x="{xx:.1}" y="{}" text-anchor="middle" font-size="11">{}</text>"##,
            top + plot_h,
            top + plot_h + 16.0,
            format_value(*tick),
            xx = x(*tick)
        );
    }
    let _ = writeln!(
        svg,
        r##"<text x="{}" y="{}" text-anchor="middle" font-size="12">offered points/s</text>"##,
        left + plot_w / 2.0,
        top + plot_h + 40.0
    );
    for (index, system) in systems.iter().enumerate() {
        let mine: Vec<&OpenPoint> = points
            .iter()
            .filter(|p| &p.system == system && p.offered > 0.0)
            .collect();
        for (dash, pick) in [
            ("", (|p: &OpenPoint| p.p99_ms) as fn(&OpenPoint) -> f64),
            ("6,4", |p: &OpenPoint| p.p50_ms),
        ] {
            let path: Vec<String> = mine
                .iter()
                .map(|p| format!("{:.1},{:.1}", x(p.offered), y(pick(p))))
                .collect();
            let _ = writeln!(
                svg,
                r##"<polyline points="{}" fill="none" stroke="{}" stroke-width="2" stroke-dasharray="{dash}"/>"##,
                path.join(" "),
                COLORS[index % COLORS.len()]
            );
            for p in &mine {
                let _ = writeln!(
                    svg,
                    r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"><title>{system} offered {:.0}: p50 {:.2} ms, p99 {:.2} ms</title></circle>"##,
                    x(p.offered),
                    y(pick(p)),
                    COLORS[index % COLORS.len()],
                    p.offered,
                    p.p50_ms,
                    p.p99_ms
                );
            }
        }
    }
    legend(&mut svg, &systems, left + plot_w + 20.0, top);
    svg.push_str("</svg>\n");
    svg
}

pub fn svg_open(width: f64, height: f64, title: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" font-family=\"sans-serif\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{:.0}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">{}</text>\n",
        width / 2.0,
        xml_escape(title)
    )
}

pub fn legend(svg: &mut String, systems: &[String], x: f64, y: f64) {
    for (index, system) in systems.iter().enumerate() {
        let row = y + index as f64 * 18.0;
        let _ = writeln!(
            svg,
            r##"<rect x="{x}" y="{row}" width="12" height="12" fill="{}"/><text x="{}" y="{}" font-size="12">{}</text>"##,
            COLORS[index % COLORS.len()],
            x + 18.0,
            row + 11.0,
            xml_escape(system)
        );
    }
}

pub fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: a row survives the CSV round trip (the report reads what runs write).
    /// Method: write one record, parse it back, compare the fields the table uses.
    #[test]
    fn csv_row_round_trips() {
        let record = RunRecord {
            system: "influxdb".into(),
            mode: "closed".into(),
            workload: "cpu".into(),
            points_per_s: 70000.0,
            p99_ms: 12.5,
            answers: "204:10".into(),
            verify: "ok".into(),
            ..RunRecord::default()
        };
        let back = RunRecord::from_row(&record.to_row()).unwrap();
        assert_eq!(back.system, "influxdb");
        assert_eq!(back.points_per_s, 70000.0);
        assert_eq!(back.p99_ms, 12.5);
        assert_eq!(back.case(), record.case());
        assert!(table(&[back], "ringest").contains("| influxdb |"));
    }

    /// Goal: a file written before the `server_vmhwm_kib` column still reads
    /// (the committed results of earlier runs stay reportable).
    /// Method: drop the last column (WAL bytes) of a row, then the one
    /// before (the peak); both parse, the second with 0 for the peak.
    #[test]
    fn csv_row_without_peak_memory_reads() {
        let record = RunRecord {
            system: "ringest".into(),
            server_vmhwm_kib: 4096,
            wal_bytes_per_point: 0.0,
            ..RunRecord::default()
        };
        let row = record.to_row();
        let without_wal = &row[..row.rfind(',').unwrap()];
        let old = &without_wal[..without_wal.rfind(',').unwrap()];
        assert_eq!(RunRecord::from_row(&row).unwrap().server_vmhwm_kib, 4096);
        assert_eq!(
            RunRecord::from_row(without_wal).unwrap().server_vmhwm_kib,
            4096
        );
        assert_eq!(RunRecord::from_row(old).unwrap().server_vmhwm_kib, 0);
    }

    /// Goal: the profile table puts each profile beside the baseline, says
    /// which differences the rounds support, and reports peak memory.
    /// Method: two rounds of three profiles whose closed-loop rates are
    /// clearly higher (fast), overlapping (same), and one with lower open-loop
    /// p99; check ratios, the "distinct" verdicts and the memory rows.
    #[test]
    fn profiles_table_compares_against_the_baseline() {
        let row =
            |profile: &str, round: u32, mode: &str, points_per_s: f64, p99_ms: f64| RunRecord {
                system: profile.into(),
                round,
                workload: "cpu".into(),
                mode: mode.into(),
                endpoint: "v1".into(),
                lines_per_request: 1000,
                connections: if mode == "open" { 16 } else { 8 },
                offered_points_per_s: if mode == "open" { 50.0 } else { 0.0 },
                points_per_s,
                p99_ms,
                verify: "ok".into(),
                server_vmhwm_kib: if profile == "small" { 10240 } else { 20480 },
                wal_bytes_per_point: 0.0,
                ..RunRecord::default()
            };
        let mut records = Vec::new();
        for round in [1, 2] {
            let r = round as f64;
            records.push(row("default", round, "closed", 100.0 + r, 10.0));
            records.push(row("fast", round, "closed", 200.0 + r, 10.0));
            records.push(row("small", round, "closed", 100.5 + r, 10.0));
            records.push(row("default", round, "open", 50.0, 8.0 + r));
            records.push(row("fast", round, "open", 100.0, 8.5 + r));
            records.push(row("small", round, "open", 50.0, 2.0 + r));
        }
        let text = profiles_table(&records, "default");
        let line = |profile: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("| cpu 1000l x8 (open x16) | {profile} |")))
                .unwrap_or_else(|| panic!("no row for {profile}:\n{text}"))
                .to_string()
        };
        assert!(line("default").contains("| 1.00× |"), "{text}");
        assert!(line("fast").contains("| 1.99× |"), "{text}");
        assert!(line("fast").contains("| points/s higher |"), "{text}");
        assert!(line("small").contains("| p99 lower |"), "{text}");
        assert!(line("small").ends_with("| ok |"), "{text}");
        assert!(
            text.contains("| small | 10.0 (10.0–10.0) | 0.50× |"),
            "{text}"
        );
        // One round cannot separate anything.
        let one: Vec<RunRecord> = records.into_iter().filter(|r| r.round == 1).collect();
        assert!(profiles_table(&one, "default").contains("| n/a (1 round) |"));
    }
}
