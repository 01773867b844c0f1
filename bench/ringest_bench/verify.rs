//! Verification: is every acknowledged point stored?
//!
//! Owns the read-back after a run. Expected counts per series come from the
//! acknowledged blocks (see `workload` for the point → series mapping); the
//! stored counts come from the server:
//!
//! - `influxql`: `SELECT count("<field>") FROM "<measurement>" GROUP BY *`,
//!   in time windows of at most 2 M points (summed per series)
//!   on `/query` (InfluxDB 1.x, ringest, the built-in `count` server);
//! - `victoria`: VictoriaMetrics answers no InfluxQL; it is asked
//!   `count_over_time(<measurement>_<field>{db="<db>"}[window])` on
//!   `/api/v1/query` after `/internal/force_flush`, polling until the counts
//!   are complete or `timeout` passes, because it acknowledges writes before
//!   they are queryable.
//!
//! A series is short when it stores fewer points than were acknowledged for
//! it; it is over when it stores more than were ever sent (a phantom or
//! duplicated point). Either makes the verification fail.

use crate::client::{self, ClientError, Target};
use crate::workload::Workload;
use simd_json::prelude::*;
use std::time::{Duration, Instant};

/// Largest query answer read back (one object per series).
const ANSWER_BYTES_MAX: usize = 512 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VerifyMethod {
    /// Skip verification (say so in the report).
    None,
    /// InfluxQL count per series on /query.
    Influxql,
    /// VictoriaMetrics' own query API.
    Victoria,
}

impl VerifyMethod {
    pub fn name(self) -> &'static str {
        match self {
            VerifyMethod::None => "none",
            VerifyMethod::Influxql => "influxql",
            VerifyMethod::Victoria => "victoria",
        }
    }
}

#[derive(Debug)]
pub enum VerifyError {
    /// The query request itself failed.
    Request(ClientError),
    /// The server answered the query with a non-2xx status.
    Status { status: u16, body: String },
    /// The answer was not the JSON shape expected.
    Json,
    /// The server reported an error inside a 200 answer.
    QueryFailed(String),
}

impl std::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VerifyError::Request(e) => write!(f, "query request failed: {e}"),
            VerifyError::Status { status, body } => write!(f, "query answered {status}: {body}"),
            VerifyError::Json => write!(f, "query answer is not the expected JSON"),
            VerifyError::QueryFailed(message) => write!(f, "query failed: {message}"),
        }
    }
}

/// Points per series: acknowledged (must be stored) and issued (may be stored).
pub struct Expected {
    pub acked: Vec<u64>,
    pub issued: Vec<u64>,
}

impl Expected {
    pub fn new(workload: &Workload, acked_blocks: &[u64], blocks_issued: u64) -> Expected {
        let series = workload.series as usize;
        let lines = workload.lines_per_request;
        let mut acked = vec![0u64; series];
        for &block in acked_blocks {
            let first = block * lines;
            for point in first..first + lines {
                acked[(point % workload.series) as usize] += 1;
            }
        }
        let points = blocks_issued * lines;
        let issued = (0..workload.series)
            .map(|s| points / workload.series + u64::from(s < points % workload.series))
            .collect();
        Expected { acked, issued }
    }

    pub fn acked_total(&self) -> u64 {
        self.acked.iter().sum()
    }
}

#[derive(Debug, Clone, Default)]
pub struct Verification {
    pub stored_points: u64,
    pub acked_points: u64,
    /// Acknowledged points not found, summed over short series.
    pub missing_points: u64,
    pub short_series: u64,
    /// Points beyond what was ever sent, summed over series.
    pub excess_points: u64,
    /// Series in the answer that this run never wrote.
    pub unknown_series: u64,
    pub waited: Duration,
}

impl Verification {
    pub fn passed(&self) -> bool {
        self.missing_points == 0 && self.excess_points == 0
    }
}

pub struct VerifyPlan<'a> {
    pub target: &'a Target,
    pub workload: &'a Workload,
    pub database: &'a str,
    pub token: Option<&'a str>,
    pub timeout: Duration,
    /// Points handed to connections (bounds the time range to query).
    pub points_issued: u64,
}

pub fn verify(
    method: VerifyMethod,
    plan: &VerifyPlan,
    expected: &Expected,
) -> Result<Option<Verification>, VerifyError> {
    match method {
        VerifyMethod::None => Ok(None),
        VerifyMethod::Influxql => {
            let started = Instant::now();
            let stored = influxql_counts(plan)?;
            Ok(Some(compare(expected, &stored, started.elapsed())))
        }
        VerifyMethod::Victoria => {
            let started = Instant::now();
            loop {
                let stored = victoria_counts(plan)?;
                let verification = compare(expected, &stored, started.elapsed());
                if verification.passed() || started.elapsed() >= plan.timeout {
                    return Ok(Some(verification));
                }
                // VictoriaMetrics makes data queryable on its own schedule; poll.
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

/// (series index or None when unknown, stored count)
type Stored = Vec<(Option<u64>, u64)>;

fn compare(expected: &Expected, stored: &Stored, waited: Duration) -> Verification {
    let mut per_series = vec![0u64; expected.acked.len()];
    let mut verification = Verification {
        acked_points: expected.acked_total(),
        waited,
        ..Verification::default()
    };
    for &(series, count) in stored {
        verification.stored_points += count;
        match series {
            Some(index) => per_series[index as usize] += count,
            None => {
                verification.unknown_series += 1;
                verification.excess_points += count;
            }
        }
    }
    for (index, &have) in per_series.iter().enumerate() {
        let (must, may) = (expected.acked[index], expected.issued[index]);
        if have < must {
            verification.missing_points += must - have;
            verification.short_series += 1;
        }
        verification.excess_points += have.saturating_sub(may);
    }
    verification
}

fn authorization(token: Option<&str>) -> String {
    token
        .map(|t| format!("Authorization: Token {t}\r\n"))
        .unwrap_or_default()
}

fn query(plan: &VerifyPlan, path: &str) -> Result<Vec<u8>, VerifyError> {
    let (status, body) = client::get_with_headers(
        plan.target,
        path,
        &authorization(plan.token),
        plan.timeout,
        ANSWER_BYTES_MAX,
    )
    .map_err(VerifyError::Request)?;
    if !(200..300).contains(&status) {
        let body = String::from_utf8_lossy(&body).chars().take(300).collect();
        return Err(VerifyError::Status { status, body });
    }
    Ok(body)
}

fn number(value: &simd_json::BorrowedValue) -> Option<u64> {
    value
        .as_u64()
        .or_else(|| value.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
        .or_else(|| {
            value
                .as_str()
                .and_then(|s| s.parse::<f64>().ok())
                .map(|f| f as u64)
        })
}

/// Points one count query covers at most. A server may bound the rows a
/// query reads (ringest: `query.rows_max`, 10 M by default, counted before
/// aggregation), so the count is asked for in time windows of at most this
/// many points and summed per series.
const POINTS_PER_QUERY: u64 = 2_000_000;

fn influxql_counts(plan: &VerifyPlan) -> Result<Stored, VerifyError> {
    let workload = plan.workload;
    // Point p of the run is at start_ns + (p / series) * step_ns: `steps`
    // windows of `steps_per_query` steps cover every point sent. The first
    // window is open below and the last open above, so points at any other
    // time are counted too (as excess).
    let steps = plan.points_issued.div_ceil(workload.series.max(1)) + 1;
    let steps_per_query = (POINTS_PER_QUERY / workload.series.max(1)).max(1);
    let time_at = |step: u64| workload.start_ns + step * workload.step_ns;
    let mut stored = Stored::new();
    let mut step = 0;
    while step < steps {
        let next = step + steps_per_query;
        let lower = (step > 0).then(|| format!("time >= {}", time_at(step)));
        let upper = (next < steps).then(|| format!("time < {}", time_at(next)));
        let condition = match (lower, upper) {
            (None, None) => String::new(),
            (Some(one), None) | (None, Some(one)) => format!(" WHERE {one}"),
            (Some(lower), Some(upper)) => format!(" WHERE {lower} AND {upper}"),
        };
        let statement = format!(
            "SELECT count(\"{}\") FROM \"{}\"{condition} GROUP BY *",
            workload.count_field(),
            workload.measurement()
        );
        influxql_count_query(plan, &statement, &mut stored)?;
        step = next;
    }
    Ok(stored)
}

/// Runs one `SELECT count(…) … GROUP BY *` and adds its per-series counts.
fn influxql_count_query(
    plan: &VerifyPlan,
    statement: &str,
    stored: &mut Stored,
) -> Result<(), VerifyError> {
    let workload = plan.workload;
    let path = format!(
        "/query?db={}&q={}",
        client::encode(plan.database),
        client::encode(statement)
    );
    let mut body = query(plan, &path)?;
    let value = simd_json::to_borrowed_value(&mut body).map_err(|_| VerifyError::Json)?;
    let result = value
        .get("results")
        .and_then(|r| r.as_array())
        .and_then(|r| r.first())
        .ok_or(VerifyError::Json)?;
    if let Some(error) = result.get("error").and_then(|e| e.as_str()) {
        return Err(VerifyError::QueryFailed(error.to_string()));
    }
    let Some(series) = result.get("series").and_then(|s| s.as_array()) else {
        return Ok(()); // No series in this window: nothing stored there.
    };
    for one in series {
        let tag = one
            .get("tags")
            .and_then(|t| t.get(workload.series_tag()))
            .and_then(|v| v.as_str());
        let count = one
            .get("values")
            .and_then(|v| v.as_array())
            .and_then(|rows| rows.first())
            .and_then(|row| row.as_array())
            .and_then(|row| row.get(1))
            .and_then(number)
            .ok_or(VerifyError::Json)?;
        stored.push((tag.and_then(|t| workload.series_index(t)), count));
    }
    Ok(())
}

fn victoria_counts(plan: &VerifyPlan) -> Result<Stored, VerifyError> {
    let workload = plan.workload;
    query(plan, "/internal/force_flush")?;
    // Instant query just after the last point; the window reaches the first.
    let last_ns = workload
        .timestamp_ns(plan.points_issued)
        .unwrap_or(workload.start_ns);
    let time_s = (last_ns / 1_000_000_000).max(workload.start_ns / 1_000_000_000) + 1;
    let window_s = time_s - workload.start_ns / 1_000_000_000 + 1;
    let expression = format!(
        "count_over_time({{__name__=\"{}_{}\",db=\"{}\"}}[{}s])",
        workload.measurement(),
        workload.count_field(),
        plan.database,
        window_s
    );
    let path = format!(
        "/api/v1/query?query={}&time={}&nocache=1",
        client::encode(&expression),
        time_s
    );
    let mut body = query(plan, &path)?;
    let value = simd_json::to_borrowed_value(&mut body).map_err(|_| VerifyError::Json)?;
    if value.get("status").and_then(|s| s.as_str()) != Some("success") {
        let message = value
            .get("error")
            .and_then(|e| e.as_str())
            .unwrap_or("status is not success");
        return Err(VerifyError::QueryFailed(message.to_string()));
    }
    let results = value
        .get("data")
        .and_then(|d| d.get("result"))
        .and_then(|r| r.as_array())
        .ok_or(VerifyError::Json)?;
    let mut stored = Stored::new();
    for one in results {
        let tag = one
            .get("metric")
            .and_then(|m| m.get(workload.series_tag()))
            .and_then(|v| v.as_str());
        let count = one
            .get("value")
            .and_then(|v| v.as_array())
            .and_then(|pair| pair.get(1))
            .and_then(number)
            .ok_or(VerifyError::Json)?;
        stored.push((tag.and_then(|t| workload.series_index(t)), count));
    }
    Ok(stored)
}

/// What `verify` needs to check a finished run later (after a restart):
/// the workload's shape, the database, and which blocks were acknowledged.
///
/// Text, one `key value` per line, then the acknowledged blocks as
/// inclusive ranges (`acked FIRST-LAST`), ascending; blocks are mostly
/// acknowledged in runs, so a 30-minute soak is a short file:
///
/// ```text
/// ringest-bench acked-log 1
/// workload cpu
/// series 1000
/// lines 1000
/// start_ns 1700000000000000000
/// db soak
/// blocks_issued 5230
/// acked 0-5228
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckedLog {
    pub workload: crate::workload::WorkloadKind,
    pub series: u64,
    pub lines_per_request: u64,
    pub start_ns: u64,
    pub database: String,
    /// Every block below this was handed to a connection (may be stored).
    pub blocks_issued: u64,
    /// Sorted, no duplicates.
    pub acked_blocks: Vec<u64>,
}

const ACKED_LOG_MAGIC: &str = "ringest-bench acked-log 1";

impl AckedLog {
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(out, "{ACKED_LOG_MAGIC}");
        let _ = writeln!(out, "workload {}", self.workload.name());
        let _ = writeln!(out, "series {}", self.series);
        let _ = writeln!(out, "lines {}", self.lines_per_request);
        let _ = writeln!(out, "start_ns {}", self.start_ns);
        let _ = writeln!(out, "db {}", self.database);
        let _ = writeln!(out, "blocks_issued {}", self.blocks_issued);
        let mut blocks = self.acked_blocks.iter().copied().peekable();
        while let Some(first) = blocks.next() {
            let mut last = first;
            while blocks.peek() == Some(&(last + 1)) {
                last += 1;
                blocks.next();
            }
            let _ = writeln!(out, "acked {first}-{last}");
        }
        out
    }

    pub fn parse(text: &str) -> Result<AckedLog, String> {
        let mut lines = text.lines();
        if lines.next() != Some(ACKED_LOG_MAGIC) {
            return Err(format!(
                "not an acked log (first line is not {ACKED_LOG_MAGIC:?})"
            ));
        }
        let mut fields = std::collections::BTreeMap::new();
        let mut acked_blocks = Vec::new();
        for (index, line) in lines.enumerate() {
            let bad = || format!("line {}: cannot read {line:?}", index + 2);
            let (key, value) = line.split_once(' ').ok_or_else(bad)?;
            if key == "acked" {
                let (first, last) = value.split_once('-').ok_or_else(bad)?;
                let first: u64 = first.parse().map_err(|_| bad())?;
                let last: u64 = last.parse().map_err(|_| bad())?;
                if last < first || acked_blocks.last().is_some_and(|&l| l >= first) {
                    return Err(format!("line {}: ranges must ascend", index + 2));
                }
                acked_blocks.extend(first..=last);
            } else {
                fields.insert(key, value);
            }
        }
        let field = |key: &str| {
            fields
                .get(key)
                .copied()
                .ok_or_else(|| format!("no {key} line"))
        };
        let number = |key: &str| {
            field(key)?
                .parse::<u64>()
                .map_err(|_| format!("{key} is not a number"))
        };
        let workload =
            <crate::workload::WorkloadKind as clap::ValueEnum>::from_str(field("workload")?, false)
                .map_err(|_| "unknown workload".to_string())?;
        Ok(AckedLog {
            workload,
            series: number("series")?,
            lines_per_request: number("lines")?,
            start_ns: number("start_ns")?,
            database: field("db")?.to_string(),
            blocks_issued: number("blocks_issued")?,
            acked_blocks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: an acked log reads back as written, gaps included.
    /// Method: blocks with a gap and a single block; write, parse, compare.
    #[test]
    fn acked_log_round_trips() {
        let log = AckedLog {
            workload: crate::workload::WorkloadKind::Iot,
            series: 17,
            lines_per_request: 50,
            start_ns: 1_700_000_000_000_000_000,
            database: "soak".to_string(),
            blocks_issued: 12,
            acked_blocks: vec![0, 1, 2, 5, 7, 8],
        };
        let text = log.to_text();
        assert!(text.contains("acked 0-2\nacked 5-5\nacked 7-8\n"), "{text}");
        assert_eq!(AckedLog::parse(&text), Ok(log));
    }
}
