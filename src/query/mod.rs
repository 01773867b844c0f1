//! InfluxQL `/query` (issue 6): text → statements → per-shard scans →
//! merged answer → JSON exactly as InfluxDB 1.x prints it.
//!
//! Ownership: this module owns parsing ([`parser`]), evaluation ([`eval`])
//! and output ([`json`], [`time`]). It never touches shard state directly:
//! every read goes through [`QueryBackend::scan`], which the integrator
//! implements as a fan-out over all shards (each runs
//! [`crate::store::ShardStore::scan`]) and tests implement over local stores.
//!
//! Invariants:
//! - a parse error is HTTP 400 `{"error":"error parsing query: …"}`; every
//!   other problem is a statement error (HTTP 200, `results[i].error`);
//! - work is bounded: rows a statement holds ([`Limits::rows_max`]),
//!   series ([`SERIES_MAX`]) and time buckets per request, over all its
//!   statements ([`Limits::buckets_max`]) give an error message, never an unbounded allocation; aggregates the
//!   shards fold while scanning ([`crate::store::aggregate`]) hold groups ×
//!   buckets, not rows, so they read any number of rows;
//! - integers are printed from `i64`/`u64`, never through `f64`.
//!
//! Matching InfluxDB 1.6.7 (checked offline against the captured golden
//! answers with `eval::tests::golden_replay`: 164 of 165 cases identical):
//! rows with equal times come out in the order of Go's heap-based sorted
//! merge (ties broken by selected string values in name order), and the
//! reducers see points in that order (`stddev` rounds the same);
//! `percentile` sorts with a copy of Go's pdqsort ([`gosort`]) so ties pick
//! the same point; `first`/`last` keep the larger number on equal times,
//! `count` fills 0 under `fill(null)`, `fill(linear)` uses Go's slope
//! formula, transformations read one bucket before the range and default
//! `derivative` to the GROUP BY interval, a failed statement followed by
//! more statements becomes "not executed", meta queries on an unknown
//! database answer no series, `tz('…')` reads the system's TZif files like
//! Go's `LoadLocation` (a blocking read of one small file per query that
//! names a zone). Known difference: `first` over a string field with equal
//! times picks another series' value than 1.6.7.

use std::future::Future;

use crate::retention::Period;
use crate::store::{ScanRequest, ScanResponse};

pub mod ast;
pub mod eval;
pub mod gosort;
pub mod json;
pub mod parser;
pub mod time;

/// Rows one statement may hold, by default (InfluxDB's `max-select-point`).
pub const ROWS_MAX: usize = 10_000_000;
/// Series one statement may read (InfluxDB's `max-select-series`).
pub const SERIES_MAX: usize = 1_000_000;
/// Time buckets one request may produce over all its statements and
/// series, by default (InfluxDB's `max-select-buckets`, which counts per
/// statement: here a query of many statements cannot multiply it).
pub const BUCKETS_MAX: usize = 1_000_000;
/// Rows per chunk of a `chunked=true` answer when `chunk_size` is absent.
pub const CHUNK_SIZE_DEFAULT: usize = 10_000;

/// The parameters of one `/query` request.
#[derive(Clone, Debug, Default)]
pub struct QueryParams {
    pub q: String,
    pub db: Option<String>,
    pub rp: Option<String>,
    /// `ns u µ ms s m h`; `None` → RFC3339 strings.
    pub epoch: Option<String>,
    pub pretty: bool,
    pub chunked: bool,
    pub chunk_size: Option<usize>,
    /// `now()` for the whole request.
    pub now_ns: i64,
    pub limits: Limits,
}

/// Bounds on one statement's work (`[query]` in the configuration).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Rows a statement may hold: the rows a raw SELECT returns, the rows
    /// an aggregate reduces on the coordinator. Aggregates the shards
    /// compute while scanning ([`eval`]'s pushdown) read any number of rows.
    pub rows_max: usize,
    /// Time buckets a request may produce over all its statements and
    /// groups.
    pub buckets_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            rows_max: ROWS_MAX,
            buckets_max: BUCKETS_MAX,
        }
    }
}

/// The answer: status and JSON body (chunked → newline-separated docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryOutput {
    pub status: u16,
    pub body: Vec<u8>,
}

/// What the evaluator needs from the server.
pub trait QueryBackend {
    /// The merged responses of every shard for one request. The server's
    /// implementation clamps a row scan's time range to the database's
    /// retention ([`crate::shard::clamp_to_retention`]).
    fn scan(&self, request: ScanRequest)
        -> impl Future<Output = Result<Vec<ScanResponse>, String>>;
    fn databases(&self) -> Vec<String>;
    /// A database's retention period; `None` if the database is unknown.
    fn retention(&self, database: &str) -> Option<Period>;
    /// Creates a database (with `retention`, or the configured default);
    /// an existing one with another `retention` asked for is an error.
    fn create_database(
        &self,
        name: &str,
        retention: Option<Period>,
    ) -> impl Future<Output = Result<(), String>>;
    /// Sets an existing database's retention period.
    fn set_retention(
        &self,
        database: &str,
        period: Period,
    ) -> impl Future<Output = Result<(), String>>;
    fn drop_database(&self, name: &str) -> impl Future<Output = Result<(), String>>;
    /// Auth: may the caller read this database?
    fn may_read(&self, database: &str) -> bool;
}

/// Answers one `/query` request.
pub async fn execute(params: &QueryParams, backend: &impl QueryBackend) -> QueryOutput {
    eval::execute(params, backend).await
}
