//! `ringest-bench query` and `query-report`: the dashboard query benchmark
//! (issue 19 item 5).
//!
//! Owns the fixed query set (`QUERIES`), its timing, the digest of each
//! answer that lets two systems' answers be compared, and the side-by-side
//! report of several runs (one per system or state) from one CSV.
//!
//! A run, against one server:
//! 1. optionally loads `--load-points` unique cpu points with the `load`
//!    code (`--series` hosts, one point per host every `--step-ms`, the last
//!    one a step before now, so the `now() - 2h` and `now() - 1h` panels
//!    cover data), and checks that every request was acknowledged;
//! 2. optionally waits until ringest holds no row only in memory
//!    (`--wait-persisted`), and/or until the server's CPU goes quiet
//!    (`--settle`);
//! 3. for each query: counts the points in its scanned range (untimed, see
//!    `Scanned`), runs it once to warm up, then `--repeat` times timed
//!    (wall time from sending the request to the last byte of the answer,
//!    one keep-alive connection), reading the server's CPU time from
//!    `/proc/PID/stat` before and after the timed runs when its pid is given;
//! 4. prints a Markdown table, and appends one CSV row per query.
//!
//! The answers are digested, not kept: series, rows, non-null values, the
//! sum of the numbers, and an order-independent hash of the strings (series
//! names, tags, string cells) — the time column left out, so the same data
//! loaded at another moment digests the same where the query does not
//! depend on `now()`.
//!
//! Limits: answers up to `ANSWER_BYTES_MAX`; `--repeat` up to `REPEAT_MAX`;
//! the waits are bounded (`--wait-timeout`).

use crate::client::{self, HttpConnection, Target};
use crate::{load, workload};
use simd_json::prelude::*;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Largest query answer read (the point lookup over 10 M points of 100
/// hosts is ~2.5 MB; this leaves room for far larger loads).
const ANSWER_BYTES_MAX: usize = 1 << 30;
const REPEAT_MAX: u32 = 1000;
/// `--settle`: the server counts as quiet below this share of one core...
const SETTLE_CPU_SHARE: f64 = 0.05;
/// ... over a window this long.
const SETTLE_WINDOW: Duration = Duration::from_secs(5);

/// Which points a query must consider: what "rows scanned" counts.
#[derive(Debug, Clone, Copy)]
pub enum Scanned {
    /// The points `SELECT count(usage_user) FROM cpu <clause>` counts, asked
    /// of the server itself right before the timed runs: every stored point
    /// that the query's time range and tag condition select, whether or not
    /// the server's index lets it skip the others.
    Where(&'static str),
    /// A metadata query: the tag values it returns (one per series here,
    /// `hostname` being unique per series) are the index entries it reads.
    TagValues,
}

/// One query of the fixed set.
#[derive(Debug, Clone, Copy)]
pub struct QuerySpec {
    /// Short name used in the CSV and the tables.
    pub id: &'static str,
    pub text: &'static str,
    pub scanned: Scanned,
    /// The answer depends on when it is asked (`now()`): two systems loaded
    /// at different moments can only agree on its shape (series and rows).
    pub now_relative: bool,
}

/// The fixed dashboard query set (issue 19 item 5).
pub const QUERIES: [QuerySpec; 6] = [
    QuerySpec {
        id: "count",
        text: "SELECT count(usage_user) FROM cpu",
        scanned: Scanned::Where(""),
        now_relative: false,
    },
    QuerySpec {
        id: "mean_1s_2h",
        text: "SELECT mean(usage_user) FROM cpu WHERE time >= now() - 2h GROUP BY time(1s)",
        scanned: Scanned::Where("WHERE time >= now() - 2h"),
        now_relative: true,
    },
    QuerySpec {
        id: "last_by_host",
        text: "SELECT last(usage_user) FROM cpu GROUP BY hostname",
        scanned: Scanned::Where(""),
        now_relative: false,
    },
    QuerySpec {
        id: "mean_10s_1h_by_host",
        text:
            "SELECT mean(usage_user) FROM cpu WHERE time >= now() - 1h GROUP BY time(10s), hostname",
        scanned: Scanned::Where("WHERE time >= now() - 1h"),
        now_relative: true,
    },
    QuerySpec {
        id: "tag_values",
        text: "SHOW TAG VALUES FROM cpu WITH KEY = \"hostname\"",
        scanned: Scanned::TagValues,
        now_relative: false,
    },
    QuerySpec {
        id: "host_lookup",
        text: "SELECT usage_user FROM cpu WHERE hostname = 'host_1'",
        scanned: Scanned::Where("WHERE hostname = 'host_1'"),
        now_relative: false,
    },
];

fn spec(id: &str) -> Option<&'static QuerySpec> {
    QUERIES.iter().find(|q| q.id == id)
}

/// Arguments of `ringest-bench query`.
#[derive(clap::Args)]
pub struct QueryArgs {
    /// `http://host:port` of the server under test.
    #[arg(long)]
    pub url: String,
    #[arg(long, default_value = "bench")]
    pub db: String,
    /// Sent as `Authorization: Token <token>`.
    #[arg(long)]
    pub token: Option<String>,
    /// Send `CREATE DATABASE` first (InfluxDB 1.x needs it).
    #[arg(long)]
    pub create_db: bool,
    /// Unique cpu points to load before the queries (rounded up to whole
    /// requests); 0 = query what is there.
    #[arg(long, default_value_t = 10_000_000)]
    pub load_points: u64,
    /// Hosts (series) of the load.
    #[arg(long, default_value_t = 100)]
    pub series: u64,
    /// Time between two points of one host, milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub step_ms: u64,
    /// First timestamp of the load, ns since 1970 (default: now − points ÷
    /// series × step, whole second, so the last point is one step before now).
    #[arg(long)]
    pub start_ns: Option<u64>,
    /// Lines (points) per load request.
    #[arg(long, default_value_t = 1000)]
    pub lines: u64,
    /// Load connections.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Timed runs of each query (after one warm-up run).
    #[arg(long, default_value_t = 5)]
    pub repeat: u32,
    /// Run only these queries (comma-separated ids; default: the whole set).
    #[arg(long, value_delimiter = ',')]
    pub queries: Vec<String>,
    /// Cores the server may use, dividing rows scanned/s (default: this
    /// machine's, the server being on it).
    #[arg(long)]
    pub cores: Option<usize>,
    /// Process id of the server: its CPU time (utime + stime in
    /// /proc/PID/stat) is read before and after each query's timed runs.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Before the queries, wait until ringest's `/metrics` shows no row only
    /// in memory (`ringest_store_bytes` summed over shards is 0): every row
    /// is in Parquet.
    #[arg(long)]
    pub wait_persisted: bool,
    /// Before the queries, wait until the server (--server-pid) used less
    /// than 5 % of one core over 5 s (background work such as compactions
    /// done).
    #[arg(long)]
    pub settle: bool,
    /// Seconds each of those waits may take at most (then the run goes on
    /// and says so).
    #[arg(long, default_value_t = 300.0)]
    pub wait_timeout: f64,
    /// Seconds to wait for each answer (load requests and queries).
    #[arg(long, default_value_t = 300.0)]
    pub timeout: f64,
    /// System (and state) name in the tables and the CSV.
    #[arg(long, default_value = "target")]
    pub label: String,
    /// Append one row per query to this CSV file.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// After the queries: load this many seconds alone, then as long again
    /// while the six panels refresh (`dashboard.rs`); 0: not done.
    #[arg(long, default_value_t = 0.0)]
    pub dashboard_seconds: f64,
    /// Seconds between two refreshes of the panels.
    #[arg(long, default_value_t = 5.0)]
    pub dashboard_every: f64,
}

/// What an answer holds, without its time column.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Digest {
    pub bytes: u64,
    pub series: u64,
    pub rows: u64,
    /// Non-null numbers outside the time column.
    pub values: u64,
    /// Their sum.
    pub sum: f64,
    /// Sum (wrapping) of the FNV-1a hashes of every series name, tag pair
    /// and string cell outside the time column: independent of order.
    pub strings: u64,
    /// The error the server reported inside a 2xx answer, or the status.
    pub error: Option<String>,
}

impl Digest {
    /// Digests a `/query` answer body (it is parsed in place).
    pub fn of(status: u16, body: &mut [u8]) -> Digest {
        let mut digest = Digest {
            bytes: body.len() as u64,
            ..Digest::default()
        };
        if !(200..300).contains(&status) {
            let text = String::from_utf8_lossy(body);
            digest.error = Some(format!(
                "{status}: {}",
                text.chars().take(200).collect::<String>()
            ));
            return digest;
        }
        let value = match simd_json::to_borrowed_value(body) {
            Ok(v) => v,
            Err(_) => {
                digest.error = Some("answer is not JSON".to_string());
                return digest;
            }
        };
        let results = value.get("results").and_then(|r| r.as_array());
        for result in results.into_iter().flatten() {
            if let Some(error) = result.get("error").and_then(|e| e.as_str()) {
                digest.error = Some(error.to_string());
            }
            let series = result.get("series").and_then(|s| s.as_array());
            for one in series.into_iter().flatten() {
                digest.add_series(one);
            }
        }
        digest
    }

    fn add_series(&mut self, series: &simd_json::BorrowedValue) {
        self.series += 1;
        if let Some(name) = series.get("name").and_then(|n| n.as_str()) {
            self.strings = self.strings.wrapping_add(fnv(&[b"name", name.as_bytes()]));
        }
        if let Some(tags) = series.get("tags").and_then(|t| t.as_object()) {
            for (key, value) in tags.iter() {
                let value = value.as_str().unwrap_or("");
                self.strings =
                    self.strings
                        .wrapping_add(fnv(&[b"tag", key.as_bytes(), value.as_bytes()]));
            }
        }
        let time_column = series
            .get("columns")
            .and_then(|c| c.as_array())
            .and_then(|c| c.iter().position(|name| name.as_str() == Some("time")));
        let rows = series.get("values").and_then(|v| v.as_array());
        for row in rows.into_iter().flatten() {
            self.rows += 1;
            let cells = row.as_array().map(|r| r.as_slice()).unwrap_or(&[]);
            for (index, cell) in cells.iter().enumerate() {
                if Some(index) == time_column {
                    continue;
                }
                if let Some(number) = cell.cast_f64() {
                    self.values += 1;
                    self.sum += number;
                } else if let Some(text) = cell.as_str() {
                    self.strings = self.strings.wrapping_add(fnv(&[b"cell", text.as_bytes()]));
                } else if let Some(flag) = cell.as_bool() {
                    self.values += 1;
                    self.sum += f64::from(u8::from(flag));
                }
            }
        }
    }

    /// The one number of a single-value answer (a count), if it is one.
    pub fn single_number(&self) -> Option<u64> {
        (self.error.is_none() && self.series == 1 && self.rows == 1 && self.values == 1)
            .then_some(self.sum as u64)
    }
}

/// FNV-1a over the parts, each followed by a 0 byte.
fn fnv(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &byte in part.iter().chain(std::iter::once(&0u8)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// Whether two answers to `spec` agree: exactly (numbers to 1e-9 relative),
/// or, for a query that depends on `now()`, in shape (series and rows).
pub fn agreement(spec: &QuerySpec, a: &Digest, b: &Digest) -> Agreement {
    if a.error.is_some() || b.error.is_some() {
        return Agreement::Error;
    }
    let shape = a.series == b.series && a.rows == b.rows;
    if spec.now_relative {
        return if shape {
            Agreement::Shape
        } else {
            Agreement::Differs
        };
    }
    let scale = a.sum.abs().max(b.sum.abs()).max(1.0);
    let same = shape
        && a.values == b.values
        && a.strings == b.strings
        && (a.sum - b.sum).abs() <= 1e-9 * scale;
    if same {
        Agreement::Same
    } else {
        Agreement::Differs
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agreement {
    Same,
    /// Same series and rows; the values move with `now()`.
    Shape,
    Differs,
    Error,
}

impl Agreement {
    pub fn word(self) -> &'static str {
        match self {
            Agreement::Same => "same answer",
            Agreement::Shape => "same shape (values move with now())",
            Agreement::Differs => "DIFFERENT",
            Agreement::Error => "error",
        }
    }
}

/// The outcome of one query's runs on one system: one CSV row.
#[derive(Debug, Clone, Default)]
pub struct QueryRecord {
    pub system: String,
    pub query: String,
    pub unix_s: u64,
    pub repeat: u32,
    pub min_ms: f64,
    pub median_ms: f64,
    pub max_ms: f64,
    pub digest: Digest,
    pub points_in_range: u64,
    pub cores: u64,
    /// points_in_range / median seconds / cores.
    pub rows_per_s_per_core: f64,
    /// Server CPU seconds per timed run; negative when not measured.
    pub server_cpu_s: f64,
    /// points_in_range / server_cpu_s (0 when not measured or zero).
    pub rows_per_cpu_s: f64,
}

const COLUMNS: &str = "system,query,unix_s,repeat,min_ms,median_ms,max_ms,answer_bytes,series,rows,values,sum,strings_hash,points_in_range,cores,rows_per_s_per_core,server_cpu_s_per_run,rows_per_cpu_s,error";

impl QueryRecord {
    fn to_row(&self) -> String {
        let d = &self.digest;
        format!(
            "{},{},{},{},{:.3},{:.3},{:.3},{},{},{},{},{},{:016x},{},{},{:.0},{:.4},{:.0},{}",
            clean(&self.system),
            self.query,
            self.unix_s,
            self.repeat,
            self.min_ms,
            self.median_ms,
            self.max_ms,
            d.bytes,
            d.series,
            d.rows,
            d.values,
            d.sum,
            d.strings,
            self.points_in_range,
            self.cores,
            self.rows_per_s_per_core,
            self.server_cpu_s,
            self.rows_per_cpu_s,
            d.error.as_deref().map(clean).unwrap_or_default()
        )
    }

    fn from_row(line: &str) -> Option<QueryRecord> {
        let cells: Vec<&str> = line.split(',').collect();
        if cells.len() != COLUMNS.split(',').count() {
            return None;
        }
        let number = |i: usize| cells[i].parse::<f64>().ok();
        let count = |i: usize| cells[i].parse::<u64>().ok();
        Some(QueryRecord {
            system: cells[0].to_string(),
            query: cells[1].to_string(),
            unix_s: count(2)?,
            repeat: cells[3].parse().ok()?,
            min_ms: number(4)?,
            median_ms: number(5)?,
            max_ms: number(6)?,
            digest: Digest {
                bytes: count(7)?,
                series: count(8)?,
                rows: count(9)?,
                values: count(10)?,
                sum: number(11)?,
                strings: u64::from_str_radix(cells[12], 16).ok()?,
                error: (!cells[18].is_empty()).then(|| cells[18].to_string()),
            },
            points_in_range: count(13)?,
            cores: count(14)?,
            rows_per_s_per_core: number(15)?,
            server_cpu_s: number(16)?,
            rows_per_cpu_s: number(17)?,
        })
    }
}

/// Commas and line ends would break the CSV.
fn clean(text: &str) -> String {
    text.replace([',', '\n', '\r'], ";")
}

pub fn append_csv(path: &Path, records: &[QueryRecord]) -> std::io::Result<()> {
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
    for record in records {
        writeln!(file, "{}", record.to_row())?;
    }
    Ok(())
}

pub fn read_csv(path: &Path) -> std::io::Result<Vec<QueryRecord>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .skip(1)
        .filter_map(QueryRecord::from_row)
        .collect())
}

/// Why a run could not be done (exit 1).
#[derive(Debug)]
pub enum QueryError {
    Arguments(&'static str),
    Target(client::ClientError),
    CreateDatabase(String),
    Workload(workload::WorkloadError),
    Bodies(String),
    /// Some load requests were not acknowledged.
    LoadIncomplete {
        acked: u64,
        sent: u64,
        example: String,
    },
    /// The server's CPU time could not be read.
    ServerCpu(std::io::Error),
    Csv(std::io::Error),
}

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueryError::Arguments(message) => write!(f, "{message}"),
            QueryError::Target(e) => write!(f, "--url: {e}"),
            QueryError::CreateDatabase(message) => write!(f, "CREATE DATABASE: {message}"),
            QueryError::Workload(e) => write!(f, "load: {e}"),
            QueryError::Bodies(message) => write!(f, "load: {message}"),
            QueryError::LoadIncomplete {
                acked,
                sent,
                example,
            } => write!(
                f,
                "load: only {acked} of {sent} requests were acknowledged (first error: {example}); the answers would not be comparable"
            ),
            QueryError::ServerCpu(e) => write!(f, "cannot read the server's CPU time: {e}"),
            QueryError::Csv(e) => write!(f, "cannot append to the CSV: {e}"),
        }
    }
}

/// A finished run: its records, and whether the load check found the count
/// short of (or beyond) the points loaded.
pub struct QueryOutcome {
    pub records: Vec<QueryRecord>,
    pub count_mismatch: bool,
}

/// `ringest-bench query`: load, wait, run the set, print, append the CSV.
pub fn run(args: &QueryArgs) -> Result<QueryOutcome, QueryError> {
    if args.repeat == 0 || args.repeat > REPEAT_MAX {
        return Err(QueryError::Arguments("--repeat must be between 1 and 1000"));
    }
    if args.connections == 0 || args.connections > 4096 {
        return Err(QueryError::Arguments(
            "--connections must be between 1 and 4096",
        ));
    }
    if args.step_ms == 0 || args.label.contains(',') {
        return Err(QueryError::Arguments(
            "--step-ms must be positive and --label must not contain a comma",
        ));
    }
    let positive = |x: f64| x.is_finite() && x > 0.0;
    if !(args.dashboard_seconds == 0.0 || positive(args.dashboard_seconds))
        || !positive(args.dashboard_every)
    {
        return Err(QueryError::Arguments(
            "--dashboard-seconds must be 0 or positive, --dashboard-every positive",
        ));
    }
    if !positive(args.timeout) || !positive(args.wait_timeout) {
        return Err(QueryError::Arguments(
            "--timeout and --wait-timeout must be positive",
        ));
    }
    if args.settle && args.server_pid.is_none() {
        return Err(QueryError::Arguments("--settle needs --server-pid"));
    }
    let mut selected: Vec<&'static QuerySpec> = Vec::new();
    for id in &args.queries {
        match spec(id) {
            Some(s) => selected.push(s),
            None => return Err(QueryError::Arguments("--queries: unknown query id")),
        }
    }
    if selected.is_empty() {
        selected = QUERIES.iter().collect();
    }
    let target = Target::parse(&args.url).map_err(QueryError::Target)?;
    let timeout = Duration::from_secs_f64(args.timeout);
    let authorization = crate::authorization_header(args.token.as_deref());
    let cores = args.cores.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }) as u64;
    if args.create_db {
        crate::create_database(&target, &args.db, &authorization, timeout)
            .map_err(QueryError::CreateDatabase)?;
    }
    let loaded = if args.load_points > 0 {
        Some(load_points(args, &target, &authorization)?)
    } else {
        None
    };
    let wait_limit = Duration::from_secs_f64(args.wait_timeout);
    if args.wait_persisted {
        wait_persisted(&target, &authorization, wait_limit);
    }
    if let (true, Some(pid)) = (args.settle, args.server_pid) {
        settle(pid, wait_limit).map_err(QueryError::ServerCpu)?;
    }

    if let Some(bytes) = store_bytes(&target, &authorization) {
        println!(
            "server: {:.1} MiB of rows only in memory (ringest_store_bytes) as the queries start",
            bytes as f64 / 1_048_576.0
        );
    }
    let mut session = Session::new(&target, &authorization, &args.db, timeout);
    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut records = Vec::new();
    for spec in selected {
        let record = measure(&mut session, spec, args, cores, now_s)?;
        records.push(record);
    }
    print!("{}", table(&args.label, &records));
    let mut count_mismatch = false;
    if let (Some(points), Some(count)) = (
        loaded,
        records
            .iter()
            .find(|r| r.query == "count")
            .and_then(|r| r.digest.single_number()),
    ) {
        if args.load_points > 0 && count != points {
            count_mismatch = true;
            println!("load check: count(usage_user) = {count}, but {points} points were loaded and acknowledged: MISMATCH");
        } else {
            println!(
                "load check: count(usage_user) = {count} = the points loaded and acknowledged"
            );
        }
    }
    if let Some(csv) = &args.csv {
        append_csv(csv, &records).map_err(QueryError::Csv)?;
    }
    if args.dashboard_seconds > 0.0 {
        crate::dashboard::run(args, &target, &authorization)?;
    }
    Ok(QueryOutcome {
        records,
        count_mismatch,
    })
}

/// Loads the points; returns how many were acknowledged (all of them).
fn load_points(args: &QueryArgs, target: &Target, authorization: &str) -> Result<u64, QueryError> {
    let blocks = args.load_points.div_ceil(args.lines);
    let points = blocks * args.lines;
    let step_ns = args.step_ms * 1_000_000;
    let steps = points.div_ceil(args.series);
    let start_ns = match args.start_ns {
        Some(start) => start,
        None => {
            let now_s = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            (now_s * 1_000_000_000).saturating_sub(steps.saturating_mul(step_ns))
        }
    };
    let plan = cpu_load_plan(
        args,
        target,
        authorization,
        (start_ns, step_ns),
        blocks,
        None,
    )?;
    let span_s = (steps.saturating_sub(1) * step_ns) as f64 / 1e9;
    println!(
        "ringest-bench query: loading {points} cpu points into {} ({} hosts, one point per host every {} ms: {:.2} h of data from {} ns), {} lines/request, {} connections",
        args.url, args.series, args.step_ms, span_s / 3600.0, start_ns, args.lines, args.connections
    );
    let outcome = load::run(&plan);
    let acked = outcome.acked_blocks.len() as u64;
    let elapsed_s = outcome.elapsed.as_secs_f64().max(1e-9);
    let mut answers: Vec<String> = outcome
        .status_counts
        .iter()
        .map(|(s, n)| format!("{s}:{n}"))
        .collect();
    answers.extend(outcome.error_counts.iter().map(|(e, n)| format!("{e}:{n}")));
    println!(
        "load: {} points acknowledged in {elapsed_s:.1} s ({:.0} points/s), answers {}",
        acked * args.lines,
        (acked * args.lines) as f64 / elapsed_s,
        answers.join(", ")
    );
    if acked != blocks {
        return Err(QueryError::LoadIncomplete {
            acked,
            sent: blocks,
            example: outcome.error_example.unwrap_or_else(|| answers.join(", ")),
        });
    }
    Ok(points)
}

/// A closed-loop load of unique cpu points over `args.connections` v1
/// connections: `args.series` hosts, one point per host every `step.1` ns
/// from `step.0`: `blocks` requests exactly (an error if their timestamps
/// would outgrow their fixed width) without `duration`; with it, for that
/// long and at most `blocks` requests (fewer if the timestamps would).
pub fn cpu_load_plan(
    args: &QueryArgs,
    target: &Target,
    authorization: &str,
    (start_ns, step_ns): (u64, u64),
    blocks: u64,
    duration: Option<Duration>,
) -> Result<load::LoadPlan, QueryError> {
    let mut workload = workload::Workload::new(
        workload::WorkloadKind::Cpu,
        args.series,
        args.lines,
        start_ns,
    )
    .map_err(QueryError::Workload)?;
    workload.step_ns = step_ns;
    if duration.is_none() {
        workload
            .check_blocks(blocks)
            .map_err(QueryError::Workload)?;
    }
    let mut blocks_max = blocks;
    let bodies = crate::plain_bodies(&workload, args.connections, &mut blocks_max)
        .map_err(QueryError::Bodies)?;
    Ok(load::LoadPlan {
        target: target.clone(),
        workload,
        bodies,
        head_prefix: crate::write_head_prefix(
            target,
            crate::Endpoint::V1,
            &args.db,
            "",
            authorization,
            false,
        ),
        connections: args.connections,
        blocks_max,
        duration,
        rate_points_per_s: None,
        timeout: Duration::from_secs_f64(args.timeout),
        live: None,
    })
}

/// ringest's `ringest_store_bytes` summed over shards: bytes of rows not yet
/// persisted. `None` when `/metrics` does not answer it (another server).
fn store_bytes(target: &Target, authorization: &str) -> Option<u64> {
    metric(target, authorization, "ringest_store_bytes")
}

/// Metric `name` of ringest's `/metrics`, summed over its samples; `None`
/// when `/metrics` does not answer it (another server).
pub fn metric(target: &Target, authorization: &str, name: &str) -> Option<u64> {
    let (status, body) = client::get_with_headers(
        target,
        "/metrics",
        authorization,
        Duration::from_secs(10),
        64 << 20,
    )
    .ok()?;
    if !(200..300).contains(&status) {
        return None;
    }
    metric_sum(&String::from_utf8_lossy(&body), name)
}

/// Polls `/metrics` until `ringest_store_bytes` sums to 0, at most `limit`.
fn wait_persisted(target: &Target, authorization: &str, limit: Duration) {
    let started = Instant::now();
    loop {
        let bytes = store_bytes(target, authorization);
        match bytes {
            Some(0) => {
                println!(
                    "persisted: no row only in memory (ringest_store_bytes 0) after {:.1} s",
                    started.elapsed().as_secs_f64()
                );
                return;
            }
            _ if started.elapsed() >= limit => {
                println!(
                    "persisted: NOT REACHED within {:.0} s (ringest_store_bytes {}); measuring anyway",
                    limit.as_secs_f64(),
                    match bytes {
                        Some(b) => b.to_string(),
                        None => "unreadable".to_string(),
                    }
                );
                return;
            }
            // Persistence runs on the server's schedule: nothing to wait on but time.
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// The sum over every sample of metric `name` (`name{…} v` or `name v`);
/// `None` when there is none.
pub fn metric_sum(text: &str, name: &str) -> Option<u64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        if let Some(value) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            *found.get_or_insert(0) += value as u64;
        }
    }
    found
}

/// Waits until `pid` used less than `SETTLE_CPU_SHARE` of one core over
/// `SETTLE_WINDOW`, at most `limit`.
fn settle(pid: u32, limit: Duration) -> std::io::Result<()> {
    let started = Instant::now();
    loop {
        let before = server_cpu_s(pid)?;
        std::thread::sleep(SETTLE_WINDOW);
        let used = server_cpu_s(pid)? - before;
        let share = used / SETTLE_WINDOW.as_secs_f64();
        if share < SETTLE_CPU_SHARE {
            println!(
                "settled: the server used {:.1} % of a core over the last {} s, {:.0} s after the wait began",
                share * 100.0,
                SETTLE_WINDOW.as_secs(),
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if started.elapsed() >= limit {
            println!(
                "settled: NOT within {:.0} s (still {:.0} % of a core); measuring anyway",
                limit.as_secs_f64(),
                share * 100.0
            );
            return Ok(());
        }
    }
}

/// CPU seconds (user + system) `pid` has used so far, from /proc/PID/stat.
pub fn server_cpu_s(pid: u32) -> std::io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces: count fields after its ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| std::io::Error::other("no ')' in /proc/PID/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let ticks = |i: usize| -> std::io::Result<f64> {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| std::io::Error::other("short /proc/PID/stat"))
    };
    // SAFETY: sysconf reads a constant of the system; no memory is passed.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    Ok((ticks(11)? + ticks(12)?) / hz)
}

/// One keep-alive connection that queries go over (reopened when broken).
pub struct Session<'a> {
    target: &'a Target,
    connection: Option<HttpConnection>,
    /// The request head after the request line.
    head_prefix: String,
    db: &'a str,
    timeout: Duration,
}

impl<'a> Session<'a> {
    pub fn new(
        target: &'a Target,
        authorization: &str,
        db: &'a str,
        timeout: Duration,
    ) -> Session<'a> {
        Session {
            target,
            connection: None,
            head_prefix: format!(
                "Host: {}\r\nUser-Agent: ringest-bench\r\n{authorization}\r\n",
                target.authority
            ),
            db,
            timeout,
        }
    }

    /// Sends one statement; the answer's status and body (moved out).
    pub fn query(&mut self, statement: &str) -> (u16, Vec<u8>) {
        let head = format!(
            "GET /query?db={}&epoch=ms&q={} HTTP/1.1\r\n{}",
            client::encode(self.db),
            client::encode(statement),
            self.head_prefix
        );
        if self.connection.as_ref().is_none_or(|c| c.broken) {
            match HttpConnection::connect(self.target, self.timeout, ANSWER_BYTES_MAX) {
                Ok(c) => self.connection = Some(c),
                Err(e) => return (0, format!("connect: {e}").into_bytes()),
            }
        }
        let Some(connection) = self.connection.as_mut() else {
            return (0, b"no connection".to_vec());
        };
        match connection.exchange(head.as_bytes(), b"") {
            Ok(status) => (status, connection.body().to_vec()),
            Err(e) => (0, e.to_string().into_bytes()),
        }
    }
}

fn measure(
    session: &mut Session,
    spec: &QuerySpec,
    args: &QueryArgs,
    cores: u64,
    now_s: u64,
) -> Result<QueryRecord, QueryError> {
    // Points in the scanned range, counted by the server itself (untimed).
    let mut points_in_range = match spec.scanned {
        Scanned::Where(clause) => {
            let statement = format!("SELECT count(usage_user) FROM cpu {clause}");
            let (status, mut body) = session.query(statement.trim_end());
            let digest = Digest::of(status, &mut body);
            // No series: nothing in the range.
            digest.single_number().unwrap_or(0)
        }
        Scanned::TagValues => 0,
    };
    // Warm-up.
    let (status, mut body) = session.query(spec.text);
    let mut digest = Digest::of(status, &mut body);
    let cpu_before = args.server_pid.map(server_cpu_s).transpose();
    let cpu_before = cpu_before.map_err(QueryError::ServerCpu)?;
    let mut times_ms = Vec::with_capacity(args.repeat as usize);
    for _ in 0..args.repeat {
        let started = Instant::now();
        let (status, mut body) = session.query(spec.text);
        times_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        let this = Digest::of(status, &mut body);
        // Keep the first error seen, else the last answer.
        if digest.error.is_none() {
            digest = this;
        }
    }
    let cpu_after = args.server_pid.map(server_cpu_s).transpose();
    let cpu_after = cpu_after.map_err(QueryError::ServerCpu)?;
    if let Scanned::TagValues = spec.scanned {
        points_in_range = digest.rows;
    }
    times_ms.sort_by(|a, b| a.total_cmp(b));
    let median_ms = median(&times_ms);
    let server_cpu_s = match (cpu_before, cpu_after) {
        (Some(before), Some(after)) => (after - before) / f64::from(args.repeat),
        _ => -1.0,
    };
    let rows_per_cpu_s = if server_cpu_s > 0.0 {
        points_in_range as f64 / server_cpu_s
    } else {
        0.0
    };
    Ok(QueryRecord {
        system: args.label.clone(),
        query: spec.id.to_string(),
        unix_s: now_s,
        repeat: args.repeat,
        min_ms: times_ms[0],
        median_ms,
        max_ms: times_ms[times_ms.len() - 1],
        digest,
        points_in_range,
        cores,
        rows_per_s_per_core: points_in_range as f64 / (median_ms / 1000.0).max(1e-9) / cores as f64,
        server_cpu_s,
        rows_per_cpu_s,
    })
}

/// Median of sorted values.
fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Rows per second with a unit prefix: `81.3 M`.
fn rate(value: f64) -> String {
    if value <= 0.0 || !value.is_finite() {
        return "–".to_string();
    }
    let (scaled, unit) = if value >= 1e9 {
        (value / 1e9, " G")
    } else if value >= 1e6 {
        (value / 1e6, " M")
    } else if value >= 1e3 {
        (value / 1e3, " k")
    } else {
        (value, "")
    };
    // Three significant digits: the figures are noisier than that.
    let digits = if scaled >= 100.0 {
        0
    } else if scaled >= 10.0 {
        1
    } else {
        2
    };
    format!("{scaled:.digits$}{unit}")
}

/// A ratio in a few digits; small ones as `1/N×`.
fn ratio_text(ratio: f64) -> String {
    if !ratio.is_finite() || ratio <= 0.0 {
        "–".to_string()
    } else if ratio < 0.1 {
        format!("1/{:.0}×", 1.0 / ratio)
    } else if ratio < 10.0 {
        format!("{ratio:.2}×")
    } else {
        format!("{ratio:.1}×")
    }
}

fn milliseconds(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

fn cpu(value: f64) -> String {
    if value < 0.0 {
        "n/a".to_string()
    } else {
        format!("{value:.3}")
    }
}

/// The answer in a few words: series, rows, values and their sum.
fn answer(d: &Digest) -> String {
    match &d.error {
        Some(e) => format!("ERROR {}", e.chars().take(80).collect::<String>()),
        None => format!(
            "{} series, {} rows, {} values, sum {}, {} bytes",
            d.series,
            d.rows,
            d.values,
            if d.sum.fract() == 0.0 && d.sum.abs() < 1e15 {
                format!("{:.0}", d.sum)
            } else {
                format!("{:.6e}", d.sum)
            },
            d.bytes
        ),
    }
}

/// One run's Markdown table.
pub fn table(label: &str, records: &[QueryRecord]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\n{label}:\n");
    let _ = writeln!(out, "| query | min ms | median ms | max ms | points in range | rows scanned/s per core | server CPU s/run | rows/CPU-s | answer |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for r in records {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.query,
            milliseconds(r.min_ms),
            milliseconds(r.median_ms),
            milliseconds(r.max_ms),
            r.points_in_range,
            rate(r.rows_per_s_per_core),
            cpu(r.server_cpu_s),
            rate(r.rows_per_cpu_s),
            answer(&r.digest)
        );
    }
    out
}

/// `ringest-bench query-report`: the runs of one CSV side by side.
/// `ratios` are (other, baseline) pairs whose median times are divided
/// (default: every system not named ringest* by every one that is);
/// answers are compared with `reference`'s (default: the first ringest*
/// system, else the first).
pub fn report(
    records: &[QueryRecord],
    ratios: &[(String, String)],
    reference: Option<&str>,
) -> String {
    let mut systems: Vec<&str> = Vec::new();
    for r in records {
        if !systems.contains(&r.system.as_str()) {
            systems.push(&r.system);
        }
    }
    let ours = |s: &str| s.starts_with("ringest");
    let pairs: Vec<(&str, &str)> = if ratios.is_empty() {
        let mut pairs = Vec::new();
        for other in systems.iter().filter(|s| !ours(s)) {
            for baseline in systems.iter().filter(|s| ours(s)) {
                pairs.push((*other, *baseline));
            }
        }
        pairs
    } else {
        ratios
            .iter()
            .map(|(o, b)| (o.as_str(), b.as_str()))
            .collect()
    };
    let reference = reference
        .or_else(|| systems.iter().copied().find(|s| ours(s)))
        .or_else(|| systems.first().copied());
    // The last record of each (system, query).
    let find = |system: &str, query: &str| -> Option<&QueryRecord> {
        records
            .iter()
            .rev()
            .find(|r| r.system == system && r.query == query)
    };
    let mut out = String::new();
    let _ = writeln!(out, "Median wall time of each query, rows scanned/s per core, and in brackets the server's CPU seconds per run.\n");
    let mut header = String::from("| query |");
    let mut rule = String::from("|---|");
    for system in &systems {
        let _ = write!(header, " {system} |");
        rule.push_str("---|");
    }
    let _ = writeln!(out, "{header}\n{rule}");
    for spec in QUERIES.iter() {
        if systems.iter().all(|s| find(s, spec.id).is_none()) {
            continue;
        }
        let mut line = format!("| {} |", spec.id);
        for system in &systems {
            match find(system, spec.id) {
                Some(r) if r.digest.error.is_none() => {
                    let _ = write!(
                        line,
                        " {} ms · {}/s/core ({} s) |",
                        milliseconds(r.median_ms),
                        rate(r.rows_per_s_per_core),
                        cpu(r.server_cpu_s)
                    );
                }
                Some(_) => line.push_str(" error |"),
                None => line.push_str(" – |"),
            }
        }
        let _ = writeln!(out, "{line}");
    }
    if !pairs.is_empty() {
        let _ = writeln!(out, "\nRatios: the first system's median wall time ÷ the second's, and in brackets the same for server CPU seconds per run (above 1: the second is faster; below 0.1 written 1/N×: the second is N times slower). CPU n/a: a server used less than its clock tick (10 ms) over the runs.\n");
        let mut header = String::from("| query |");
        let mut rule = String::from("|---|");
        for (other, baseline) in &pairs {
            let _ = write!(header, " {other} ÷ {baseline} |");
            rule.push_str("---|");
        }
        let _ = writeln!(out, "{header}\n{rule}");
        for spec in QUERIES.iter() {
            let mut line = format!("| {} |", spec.id);
            for (other, baseline) in &pairs {
                let ratio = match (find(other, spec.id), find(baseline, spec.id)) {
                    (Some(o), Some(b))
                        if o.digest.error.is_none()
                            && b.digest.error.is_none()
                            && b.median_ms > 0.0 =>
                    {
                        let cpu = if o.server_cpu_s > 0.0 && b.server_cpu_s > 0.0 {
                            format!(" ({})", ratio_text(o.server_cpu_s / b.server_cpu_s))
                        } else {
                            " (CPU n/a)".to_string()
                        };
                        format!("{}{cpu}", ratio_text(o.median_ms / b.median_ms))
                    }
                    _ => "–".to_string(),
                };
                let _ = write!(line, " {ratio} |");
            }
            let _ = writeln!(out, "{line}");
        }
    }
    let _ = writeln!(
        out,
        "\nAnswers (time column left out), and whether each agrees with {}'s:\n",
        reference.unwrap_or("–")
    );
    let _ = writeln!(
        out,
        "| query | system | points in range | answer | agrees |\n|---|---|---|---|---|"
    );
    for spec in QUERIES.iter() {
        let expected = reference.and_then(|system| find(system, spec.id));
        for system in &systems {
            let Some(r) = find(system, spec.id) else {
                continue;
            };
            let agrees = match expected {
                Some(expected) if expected.system != r.system => {
                    agreement(spec, &expected.digest, &r.digest).word()
                }
                Some(_) => "(reference)",
                None => "–",
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                spec.id,
                system,
                r.points_in_range,
                answer(&r.digest),
                agrees
            );
        }
    }
    let _ = writeln!(out, "\nQueries:\n");
    for spec in QUERIES.iter() {
        let _ = writeln!(out, "- `{}`: `{}`", spec.id, spec.text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: the digest sees series, rows, values and strings but not the
    /// time column, so answers loaded at different moments compare equal.
    /// Method: two answers differing only in their times digest the same;
    /// changing a value or a tag changes the digest.
    #[test]
    fn digest_ignores_time_only() {
        let answer = |time: &str, tag: &str, value: &str| {
            format!(
                r#"{{"results":[{{"statement_id":0,"series":[{{"name":"cpu","tags":{{"hostname":"{tag}"}},"columns":["time","last"],"values":[[{time},{value}],[{time},null]]}}]}}]}}"#
            )
        };
        let digest = |text: String| Digest::of(200, &mut text.into_bytes());
        let a = digest(answer("1000", "host_1", "42"));
        assert_eq!((a.series, a.rows, a.values, a.sum), (1, 2, 1, 42.0));
        assert_eq!(
            a,
            Digest {
                bytes: a.bytes,
                ..digest(answer("2000", "host_1", "42"))
            }
        );
        assert_ne!(a.strings, digest(answer("1000", "host_2", "42")).strings);
        assert_ne!(a.sum, digest(answer("1000", "host_1", "43")).sum);
        let error = digest(r#"{"results":[{"statement_id":0,"error":"boom"}]}"#.to_string());
        assert_eq!(error.error.as_deref(), Some("boom"));
        assert_eq!(
            Digest::of(500, &mut b"x".to_vec()).error.as_deref(),
            Some("500: x")
        );
    }

    /// Goal: a record survives the CSV round trip (the report reads what a
    /// run wrote), errors included.
    /// Method: write a record with every field set, parse the row back.
    #[test]
    fn csv_round_trip() {
        let record = QueryRecord {
            system: "ringest-fresh".to_string(),
            query: "count".to_string(),
            unix_s: 5,
            repeat: 3,
            min_ms: 1.5,
            median_ms: 2.25,
            max_ms: 3.0,
            digest: Digest {
                bytes: 10,
                series: 1,
                rows: 2,
                values: 3,
                sum: 4.5,
                strings: 0xdead_beef,
                error: Some("bad, worse".to_string()),
            },
            points_in_range: 100,
            cores: 2,
            rows_per_s_per_core: 7.0,
            server_cpu_s: 0.5,
            rows_per_cpu_s: 200.0,
        };
        let back = QueryRecord::from_row(&record.to_row()).expect("row parses");
        assert_eq!(back.digest.error.as_deref(), Some("bad; worse"));
        assert_eq!(
            (back.median_ms, back.digest.strings, back.points_in_range),
            (2.25, 0xdead_beef, 100)
        );
        assert_eq!(
            back.to_row(),
            record.to_row().replace("bad, worse", "bad; worse")
        );
    }

    /// Goal: `now()`-relative answers are compared by shape only, the
    /// others exactly.
    #[test]
    fn agreement_by_kind() {
        let a = Digest {
            series: 1,
            rows: 2,
            values: 2,
            sum: 10.0,
            ..Digest::default()
        };
        let moved = Digest {
            sum: 11.0,
            ..a.clone()
        };
        assert_eq!(agreement(&QUERIES[0], &a, &moved), Agreement::Differs);
        assert_eq!(agreement(&QUERIES[0], &a, &a.clone()), Agreement::Same);
        assert_eq!(agreement(&QUERIES[1], &a, &moved), Agreement::Shape);
        let fewer = Digest {
            rows: 1,
            ..a.clone()
        };
        assert_eq!(agreement(&QUERIES[1], &a, &fewer), Agreement::Differs);
    }

    #[test]
    fn metric_sum_adds_shards() {
        let text = "# HELP x\nringest_store_bytes{shard=\"0\"} 5\nringest_store_bytes{shard=\"1\"} 7\nringest_store_bytes_max 9\n";
        assert_eq!(metric_sum(text, "ringest_store_bytes"), Some(12));
        assert_eq!(metric_sum(text, "missing"), None);
    }
}
