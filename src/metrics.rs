//! Per-shard counters and histograms, and their Prometheus text export.
//!
//! Recording never allocates or locks: counters are `Cell`s owned by the
//! shard, histograms are hdrhistogram instances with fixed bounds created
//! at start (values past the top are clamped). `/metrics` asks every shard
//! for a [`Snapshot`] (an owned copy that crosses cores) and renders the
//! sum with a `shard` label.
//!
//! Counters with a second label (`reason`, `cause`) are fixed arrays
//! indexed by an enum, exported with every label value (zeros included),
//! so a series exists from the first scrape.

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;

use hdrhistogram::Histogram;

use crate::http::response::RefusalCause;
use crate::ingest::RejectReason;

/// Endpoints counted separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    WriteV1 = 0,
    WriteV2 = 1,
    Query = 2,
    Ping = 3,
    Health = 4,
    Metrics = 5,
    Other = 6,
}

const ENDPOINT_NAMES: [&str; 7] = [
    "write_v1", "write_v2", "query", "ping", "health", "metrics", "other",
];
/// Statuses counted each under its own code; any other under `other` (0).
const STATUSES: [u16; 11] = [200, 204, 400, 401, 403, 404, 413, 429, 500, 503, 0];

fn status_index(status: u16) -> usize {
    STATUSES
        .iter()
        .position(|s| *s == status)
        .unwrap_or(STATUSES.len() - 1)
}

/// Highest latency recorded exactly (60 s, in µs); larger values clamp.
const LATENCY_US_MAX: u64 = 60_000_000;

fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 2).expect("static histogram bounds are valid")
}

/// One shard's metrics.
pub struct ShardMetrics {
    requests: [[Cell<u64>; STATUSES.len()]; ENDPOINT_NAMES.len()],
    pub points_accepted: Cell<u64>,
    lines_rejected: [Cell<u64>; RejectReason::ALL.len()],
    refusals: [Cell<u64>; RefusalCause::COUNT],
    pub wire_bytes: Cell<u64>,
    pub decompressed_bytes: Cell<u64>,
    pub sub_batches_applied: Cell<u64>,
    /// In-memory rows dropped by the expiry task (retention).
    pub rows_expired: Cell<u64>,
    ack_latency_us: RefCell<Histogram<u64>>,
}

impl Default for ShardMetrics {
    fn default() -> Self {
        ShardMetrics::new()
    }
}

impl ShardMetrics {
    pub fn new() -> ShardMetrics {
        ShardMetrics {
            requests: Default::default(),
            points_accepted: Cell::new(0),
            lines_rejected: Default::default(),
            refusals: Default::default(),
            wire_bytes: Cell::new(0),
            decompressed_bytes: Cell::new(0),
            sub_batches_applied: Cell::new(0),
            rows_expired: Cell::new(0),
            ack_latency_us: RefCell::new(latency_histogram()),
        }
    }

    pub fn request(&self, endpoint: Endpoint, status: u16) {
        let cell = &self.requests[endpoint as usize][status_index(status)];
        cell.set(cell.get() + 1);
    }

    pub fn add(cell: &Cell<u64>, amount: u64) {
        cell.set(cell.get().wrapping_add(amount));
    }

    /// Counts one rejected line.
    pub fn line_rejected(&self, reason: RejectReason) {
        ShardMetrics::add(&self.lines_rejected[reason as usize], 1);
    }

    /// Counts one request refused with 429/503.
    pub fn refused(&self, cause: RefusalCause) {
        ShardMetrics::add(&self.refusals[cause.index()], 1);
    }

    /// Records a write's time from head to answer.
    pub fn ack_latency(&self, micros: u64) {
        self.ack_latency_us
            .borrow_mut()
            .saturating_record(micros.clamp(1, LATENCY_US_MAX));
    }

    pub fn snapshot(&self, shard: usize, gauges: Gauges) -> Snapshot {
        let histogram = self.ack_latency_us.borrow();
        Snapshot {
            shard,
            requests: self
                .requests
                .iter()
                .map(|row| row.iter().map(Cell::get).collect())
                .collect(),
            points_accepted: self.points_accepted.get(),
            lines_rejected: self.lines_rejected.each_ref().map(Cell::get),
            refusals: self.refusals.each_ref().map(Cell::get),
            wire_bytes: self.wire_bytes.get(),
            decompressed_bytes: self.decompressed_bytes.get(),
            sub_batches_applied: self.sub_batches_applied.get(),
            rows_expired: self.rows_expired.get(),
            ack_count: histogram.len(),
            ack_sum_us: (histogram.mean() * histogram.len() as f64) as u64,
            ack_quantiles_us: [0.5, 0.9, 0.99, 0.999].map(|q| histogram.value_at_quantile(q)),
            gauges,
        }
    }
}

/// Point-in-time values a shard reports besides its counters.
#[derive(Clone, Debug, Default)]
pub struct Gauges {
    pub connections: u64,
    pub request_bytes_in_flight: u64,
    pub sub_batches_queued: u64,
    pub store_bytes: u64,
    pub wal_records: u64,
    pub wal_bytes: u64,
    pub wal_syncs: u64,
    pub wal_pending_bytes: u64,
    pub wal_sync_p50_us: u64,
    pub wal_sync_p99_us: u64,
    pub wal_records_per_sync: f64,
    /// Bytes of WAL segment files counted against `wal.wal_bytes_max`.
    pub wal_disk_bytes: u64,
    /// The WAL sequence (of this run) persisted through.
    pub persisted_sequence: u64,
    pub persist_files: u64,
    pub persist_file_bytes: u64,
    pub persist_file_rows: u64,
    pub persist_snapshots: u64,
    /// Parquet files deleted because every row in them expired (counted by
    /// the catalog owner, which deletes them for every shard).
    pub persist_files_expired: u64,
    /// Compactions done, and the small files they merged.
    pub persist_compactions: u64,
    pub persist_files_compacted: u64,
    /// Decoded Parquet files kept for queries: bytes, and loads served
    /// from it or decoded.
    pub file_cache_bytes: u64,
    pub file_cache_hits: u64,
    pub file_cache_misses: u64,
    pub persist_failures: u64,
    pub persist_rows: u64,
    pub healthy: bool,
    /// Why the shard is unhealthy, when it is.
    pub unhealthy_cause: Option<String>,
    /// Failed attempts to make a WAL segment's file ahead (its WAL and the
    /// catalog's).
    pub wal_segment_failures: u64,
    /// Why a WAL of the shard cannot make its next segment, while it
    /// cannot: healthy, but refusing writes once the open segment is full.
    pub wal_segment_failing: Option<String>,
}

/// An owned copy of one shard's metrics.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub shard: usize,
    pub requests: Vec<Vec<u64>>,
    pub points_accepted: u64,
    /// Indexed by `RejectReason as usize`.
    pub lines_rejected: [u64; RejectReason::ALL.len()],
    /// Indexed by [`RefusalCause::index`].
    pub refusals: [u64; RefusalCause::COUNT],
    pub wire_bytes: u64,
    pub decompressed_bytes: u64,
    pub sub_batches_applied: u64,
    pub rows_expired: u64,
    pub ack_count: u64,
    pub ack_sum_us: u64,
    pub ack_quantiles_us: [u64; 4],
    pub gauges: Gauges,
}

/// A named counter or gauge and how to read it from a snapshot.
type Family<T> = (&'static str, &'static str, fn(&T) -> u64);

/// One counter with a label besides `shard`: a `# HELP`/`# TYPE` header,
/// then every (label value, count) of every shard, zeros included.
fn labelled_counter(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    snapshots: &[Snapshot],
    values: impl Fn(&Snapshot) -> Vec<(&'static str, u64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for s in snapshots {
        for (value, count) in values(s) {
            let _ = writeln!(
                out,
                "{name}{{shard=\"{}\",{label}=\"{value}\"}} {count}",
                s.shard
            );
        }
    }
}

/// Prometheus text exposition (format 0.0.4) of all shards.
pub fn render(snapshots: &[Snapshot]) -> String {
    let mut out = String::with_capacity(8192);
    let _ = writeln!(out, "# HELP ringest_build_info Build information.");
    let _ = writeln!(out, "# TYPE ringest_build_info gauge");
    let _ = writeln!(
        out,
        "ringest_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(
        out,
        "# HELP ringest_http_requests_total HTTP requests by endpoint and status."
    );
    let _ = writeln!(out, "# TYPE ringest_http_requests_total counter");
    for s in snapshots {
        for (endpoint, row) in ENDPOINT_NAMES.iter().zip(&s.requests) {
            for (status, count) in STATUSES.iter().zip(row) {
                if *count > 0 {
                    let status = if *status == 0 {
                        "other".to_string()
                    } else {
                        status.to_string()
                    };
                    let _ = writeln!(
                        out,
                        "ringest_http_requests_total{{shard=\"{}\",endpoint=\"{endpoint}\",code=\"{status}\"}} {count}",
                        s.shard
                    );
                }
            }
        }
    }
    labelled_counter(
        &mut out,
        "ringest_lines_rejected_total",
        "Lines rejected, by reason (parse, schema_conflict, limit, retention).",
        "reason",
        snapshots,
        |s| {
            RejectReason::ALL
                .iter()
                .map(|r| r.label())
                .zip(s.lines_rejected)
                .collect()
        },
    );
    labelled_counter(
        &mut out,
        "ringest_refusals_total",
        "Requests refused with 429 or 503, by cause.",
        "cause",
        snapshots,
        |s| {
            RefusalCause::ALL
                .iter()
                .map(|c| c.label())
                .zip(s.refusals)
                .collect()
        },
    );
    let counters: [Family<Snapshot>; 5] = [
        (
            "ringest_points_accepted_total",
            "Points written durably.",
            |s| s.points_accepted,
        ),
        (
            "ringest_ingest_wire_bytes_total",
            "Write body bytes as received.",
            |s| s.wire_bytes,
        ),
        (
            "ringest_ingest_decompressed_bytes_total",
            "Write body bytes after gunzip.",
            |s| s.decompressed_bytes,
        ),
        (
            "ringest_sub_batches_applied_total",
            "Sub-batches synced and applied.",
            |s| s.sub_batches_applied,
        ),
        (
            "ringest_rows_expired_total",
            "In-memory rows dropped because their database's retention expired them.",
            |s| s.rows_expired,
        ),
    ];
    for (name, help, get) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for s in snapshots {
            let _ = writeln!(out, "{name}{{shard=\"{}\"}} {}", s.shard, get(s));
        }
    }
    let gauges: [Family<Gauges>; 25] = [
        ("ringest_open_connections", "Open connections.", |g| {
            g.connections
        }),
        (
            "ringest_request_bytes_in_flight",
            "Request bytes held in memory.",
            |g| g.request_bytes_in_flight,
        ),
        (
            "ringest_sub_batches_queued",
            "Sub-batches from other shards in progress.",
            |g| g.sub_batches_queued,
        ),
        ("ringest_store_bytes", "In-memory store size.", |g| {
            g.store_bytes
        }),
        ("ringest_wal_records_total", "WAL records appended.", |g| {
            g.wal_records
        }),
        ("ringest_wal_bytes_total", "WAL bytes appended.", |g| {
            g.wal_bytes
        }),
        ("ringest_wal_syncs_total", "WAL fdatasync calls.", |g| {
            g.wal_syncs
        }),
        (
            "ringest_wal_pending_bytes",
            "WAL bytes appended, not yet synced.",
            |g| g.wal_pending_bytes,
        ),
        (
            "ringest_shard_healthy",
            "1 when the shard acknowledges writes.",
            |g| u64::from(g.healthy),
        ),
        (
            "ringest_wal_segment_failing",
            "1 while a WAL cannot make its next segment file (disk full); writes resume when it can.",
            |g| u64::from(g.wal_segment_failing.is_some()),
        ),
        (
            "ringest_wal_segment_failures_total",
            "Failed attempts to make a WAL segment file ahead (retried every second).",
            |g| g.wal_segment_failures,
        ),
        (
            "ringest_wal_disk_bytes",
            "WAL segment bytes on disk (against wal.wal_bytes_max).",
            |g| g.wal_disk_bytes,
        ),
        (
            "ringest_wal_persisted_sequence",
            "This run's WAL sequence persisted to Parquet through.",
            |g| g.persisted_sequence,
        ),
        (
            "ringest_persist_files",
            "Parquet files of the shard.",
            |g| g.persist_files,
        ),
        (
            "ringest_persist_file_bytes",
            "Bytes of the shard's Parquet files.",
            |g| g.persist_file_bytes,
        ),
        (
            "ringest_persist_file_rows",
            "Rows in the shard's Parquet files.",
            |g| g.persist_file_rows,
        ),
        (
            "ringest_persist_snapshots_total",
            "Snapshots persisted.",
            |g| g.persist_snapshots,
        ),
        (
            "ringest_persist_files_expired_total",
            "Parquet files deleted because every row in them expired (by the catalog owner, shard 0).",
            |g| g.persist_files_expired,
        ),
        (
            "ringest_persist_compactions_total",
            "Runs of small Parquet files merged into one file.",
            |g| g.persist_compactions,
        ),
        (
            "ringest_persist_files_compacted_total",
            "Small Parquet files merged away by compactions.",
            |g| g.persist_files_compacted,
        ),
        (
            "ringest_query_file_cache_bytes",
            "Decoded Parquet files kept for later queries (query.file_cache_bytes).",
            |g| g.file_cache_bytes,
        ),
        (
            "ringest_query_file_cache_hits_total",
            "File reads of queries served from the decoded-file cache.",
            |g| g.file_cache_hits,
        ),
        (
            "ringest_query_file_cache_misses_total",
            "Cacheable file reads of queries that decoded the file.",
            |g| g.file_cache_misses,
        ),
        (
            "ringest_persist_failures_total",
            "Snapshots that failed (rows kept in memory and WAL, retried).",
            |g| g.persist_failures,
        ),
        (
            "ringest_persist_rows_total",
            "Rows written to Parquet.",
            |g| g.persist_rows,
        ),
    ];
    for (name, help, get) in gauges {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for s in snapshots {
            let _ = writeln!(out, "{name}{{shard=\"{}\"}} {}", s.shard, get(&s.gauges));
        }
    }
    let name = "ringest_wal_sync_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} WAL write + fdatasync time per group commit."
    );
    let _ = writeln!(out, "# TYPE {name} summary");
    for s in snapshots {
        for (q, v) in [
            ("0.5", s.gauges.wal_sync_p50_us),
            ("0.99", s.gauges.wal_sync_p99_us),
        ] {
            let _ = writeln!(
                out,
                "{name}{{shard=\"{}\",quantile=\"{q}\"}} {}",
                s.shard,
                v as f64 / 1e6
            );
        }
    }
    let name = "ringest_wal_records_per_sync";
    let _ = writeln!(
        out,
        "# HELP {name} Mean WAL records covered by one fdatasync."
    );
    let _ = writeln!(out, "# TYPE {name} gauge");
    for s in snapshots {
        let _ = writeln!(
            out,
            "{name}{{shard=\"{}\"}} {}",
            s.shard, s.gauges.wal_records_per_sync
        );
    }
    let name = "ringest_write_ack_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time from request head to write acknowledgement."
    );
    let _ = writeln!(out, "# TYPE {name} summary");
    for s in snapshots {
        for (q, v) in ["0.5", "0.9", "0.99", "0.999"]
            .iter()
            .zip(s.ack_quantiles_us)
        {
            let _ = writeln!(
                out,
                "{name}{{shard=\"{}\",quantile=\"{q}\"}} {}",
                s.shard,
                v as f64 / 1e6
            );
        }
        let _ = writeln!(
            out,
            "{name}_sum{{shard=\"{}\"}} {}",
            s.shard,
            s.ack_sum_us as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{{shard=\"{}\"}} {}", s.shard, s.ack_count);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backpressure::Overload;

    /// Goal: each rejected line and each refusal lands on its own label
    /// value, and every value of the fixed sets is exported (zeros too).
    /// Method: record known counts on one shard, render, find exact lines.
    #[test]
    fn labelled_counters_render_every_value() {
        let metrics = ShardMetrics::new();
        metrics.line_rejected(RejectReason::Limit);
        metrics.line_rejected(RejectReason::Limit);
        metrics.line_rejected(RejectReason::Parse);
        metrics.refused(RefusalCause::Overloaded(Overload::WalBudget));
        metrics.refused(RefusalCause::Connections);
        metrics.refused(RefusalCause::Connections);
        let text = render(&[metrics.snapshot(3, Gauges::default())]);
        let lines: Vec<&str> = text.lines().collect();
        for expected in [
            "ringest_lines_rejected_total{shard=\"3\",reason=\"parse\"} 1",
            "ringest_lines_rejected_total{shard=\"3\",reason=\"schema_conflict\"} 0",
            "ringest_lines_rejected_total{shard=\"3\",reason=\"limit\"} 2",
            "ringest_refusals_total{shard=\"3\",cause=\"wal_budget\"} 1",
            "ringest_refusals_total{shard=\"3\",cause=\"connections\"} 2",
            "ringest_refusals_total{shard=\"3\",cause=\"no_space\"} 0",
        ] {
            assert!(lines.contains(&expected), "missing {expected}:\n{text}");
        }
        let count = |prefix: &str| lines.iter().filter(|l| l.starts_with(prefix)).count();
        assert_eq!(
            count("ringest_lines_rejected_total{"),
            RejectReason::ALL.len()
        );
        assert_eq!(count("ringest_refusals_total{"), RefusalCause::COUNT);
    }
}
