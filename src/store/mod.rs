//! Per-shard columnar in-memory store (issue 6).
//!
//! Ownership: one [`ShardStore`] per shard, owned by that shard's executor
//! (single-threaded; plain fields, no locks). Rows arrive as validated
//! [`BatchReader`]s after the WAL sync (live) or from WAL replay (start-up).
//!
//! Layout: database → table (measurement) → chunks. A table keeps a series
//! dictionary (series id → sorted tag pairs), so a row stores only its
//! series id; the tag columns are dictionary-encoded through it. A chunk
//! holds a time column, a series-id column and one typed field column per
//! field name, each with a validity vector. The active chunk is mutable;
//! when it reaches `chunk_rows` rows it is sealed (immutable from then on,
//! ready to be written elsewhere by a later issue). Scans read a chunk as
//! series runs ([`runs`]); a sealed chunk keeps its runs and, per field,
//! the per-run and per-block aggregates ([`aggregate`]) once a scan made
//! them (not counted in [`ShardStore::memory_bytes`]: 4 bytes per row of
//! a chunk in arrival order, about 0.5 per row and field for the
//! aggregates).
//!
//! Invariants:
//! - inside one chunk, (series, time) is unique: a repeated (series, time)
//!   in the active chunk merges into the existing row (later value wins per
//!   field);
//! - across chunks the same (series, time) may appear several times; scans
//!   resolve it by chunk order (older first, later non-null field wins), so
//!   the answer is the same as if sealed chunks had been rewritten;
//! - every column of a chunk has exactly `times.len()` entries;
//! - a column's type is fixed by its first value; a value of another type
//!   (impossible behind the catalog) is ignored, never a panic.
//!
//! Scans ([`ShardStore::scan`]) answer owned, `Send` requests with owned
//! responses, so the coordinating shard can fan out and merge. Every scan is
//! bounded by a row (or series) limit and fails with [`ScanError`] past it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use regex::Regex;

use crate::batch::{BatchReader, Row};
use crate::line_protocol::FieldValue;
use runs::SeriesRuns;

pub use aggregate::{Bucket, FieldAggregate, GroupAggregates, NumericStats, Stats};

/// Sizes of the store, from `Config`.
#[derive(Clone, Copy, Debug)]
pub struct StoreLimits {
    /// Budget for [`ShardStore::memory_bytes`]; writes are refused
    /// ([`ShardStore::has_room`]) when an incoming payload would pass it.
    pub memory_bytes_max: usize,
    /// Rows per chunk before it is sealed.
    pub chunk_rows: usize,
}

/// The type of a field column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    Float,
    Integer,
    Unsigned,
    String,
    Boolean,
}

impl FieldType {
    /// The name InfluxDB prints in `SHOW FIELD KEYS`.
    pub fn name(self) -> &'static str {
        match self {
            FieldType::Float => "float",
            FieldType::Integer => "integer",
            FieldType::Unsigned => "unsigned",
            FieldType::String => "string",
            FieldType::Boolean => "boolean",
        }
    }
}

/// One owned field value in a scan response.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Float(f64),
    Integer(i64),
    Unsigned(u64),
    String(String),
    Boolean(bool),
}

/// Which measurements a schema request covers.
#[derive(Clone, Debug)]
pub enum MeasurementFilter {
    All,
    Names(Vec<String>),
    Regex(Regex),
}

impl MeasurementFilter {
    pub fn matches(&self, name: &str) -> bool {
        match self {
            MeasurementFilter::All => true,
            MeasurementFilter::Names(names) => names.iter().any(|n| n == name),
            MeasurementFilter::Regex(re) => re.is_match(name),
        }
    }
}

/// A predicate over a series' tags. A missing tag reads as `""`, like
/// InfluxDB.
#[derive(Clone, Debug)]
pub enum TagFilter {
    All,
    And(Box<TagFilter>, Box<TagFilter>),
    Or(Box<TagFilter>, Box<TagFilter>),
    Eq { key: String, value: String },
    NotEq { key: String, value: String },
    Match { key: String, regex: Regex },
    NotMatch { key: String, regex: Regex },
}

impl TagFilter {
    /// Does a series with these (sorted) tags pass?
    pub fn matches(&self, tags: &[(String, String)]) -> bool {
        let lookup = |key: &str| -> &str {
            tags.binary_search_by(|(k, _)| k.as_str().cmp(key))
                .map(|i| tags[i].1.as_str())
                .unwrap_or("")
        };
        match self {
            TagFilter::All => true,
            TagFilter::And(a, b) => a.matches(tags) && b.matches(tags),
            TagFilter::Or(a, b) => a.matches(tags) || b.matches(tags),
            TagFilter::Eq { key, value } => lookup(key) == value,
            TagFilter::NotEq { key, value } => lookup(key) != value,
            TagFilter::Match { key, regex } => regex.is_match(lookup(key)),
            TagFilter::NotMatch { key, regex } => !regex.is_match(lookup(key)),
        }
    }
}

/// When a scan must give up: `[query] time_limit_ms` after its query
/// began ([`ScanError::TimeLimit`]). Checked between files and between
/// chunks, so a scan stops within one chunk's work of it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Deadline {
    at: Option<std::time::Instant>,
    limit_ms: u64,
}

impl Deadline {
    /// No limit.
    pub const NONE: Deadline = Deadline {
        at: None,
        limit_ms: 0,
    };

    /// `limit_ms` after `start`; 0: no limit.
    pub fn after(start: std::time::Instant, limit_ms: u64) -> Deadline {
        Deadline {
            at: (limit_ms > 0).then(|| start + std::time::Duration::from_millis(limit_ms)),
            limit_ms,
        }
    }

    /// `Err` once the deadline passed.
    pub fn check(&self) -> Result<(), ScanError> {
        match self.at {
            Some(at) if crate::clock::monotonic() >= at => Err(ScanError::TimeLimit {
                limit_ms: self.limit_ms,
            }),
            _ => Ok(()),
        }
    }
}

/// Raw rows of matching series.
#[derive(Clone, Debug)]
pub struct RowsRequest {
    pub database: String,
    /// Exact measurement names (the coordinator resolves regexes first).
    pub measurements: Vec<String>,
    pub tag_filter: TagFilter,
    /// Inclusive bounds.
    pub time_min_ns: i64,
    pub time_max_ns: i64,
    /// Columns returned; a row is returned only when at least one of these
    /// is non-null (InfluxDB's rule for selected fields). Empty: every row.
    pub fields: Vec<String>,
    /// Further columns returned (for WHERE on fields) that do not decide
    /// whether a row exists.
    pub condition_fields: Vec<String>,
    /// More rows than this in the response → [`ScanError::TooManyRows`].
    pub row_limit: usize,
    pub deadline: Deadline,
}

/// Measurement names, tag keys, field keys and types, optionally series.
#[derive(Clone, Debug)]
pub struct SchemaRequest {
    pub database: String,
    pub measurements: MeasurementFilter,
    /// Only series passing this count (for tag keys and series); a
    /// measurement with no passing series is left out unless `All`.
    pub tag_filter: TagFilter,
    pub include_series: bool,
    /// Series carry only these tag keys (`SHOW TAG VALUES WITH KEY = …`
    /// needs no other), so series that differ only elsewhere are one;
    /// `None`: every key.
    pub series_keys: Option<Vec<String>>,
    /// More series than this in the response → [`ScanError::TooManySeries`].
    pub series_limit: usize,
    /// Rows older than this do not count: a measurement, a series, is
    /// listed only while it holds a row at or after it. The query fan-out
    /// sets it to the database's retention cutoff, so expired series are
    /// forgotten even while their rows still wait in a partly expired
    /// chunk or file (`i64::MIN`: every row counts).
    pub time_min_ns: i64,
    pub deadline: Deadline,
}

/// Aggregates of one measurement's fields per group and time bucket,
/// computed while scanning ([`aggregate`]).
#[derive(Clone, Debug)]
pub struct AggregateRequest {
    pub database: String,
    pub measurement: String,
    /// Exact: the rows of every series passing it are aggregated.
    pub tag_filter: TagFilter,
    /// Inclusive bounds.
    pub time_min_ns: i64,
    pub time_max_ns: i64,
    /// Fields aggregated ([`Bucket::fields`] follows this order).
    pub fields: Vec<String>,
    /// GROUP BY tag keys (a series without one groups under `""`).
    pub group_keys: Vec<String>,
    /// `(interval, offset)` of `GROUP BY time(…)`, UTC-aligned; `None`: one
    /// bucket, start 0.
    pub window: Option<(i64, i64)>,
    /// A `sum` or `mean` is asked: values are then added one by one in
    /// time order (a float sum rounds by the order of its additions), never
    /// taken from a run's summary.
    pub sums: bool,
    /// More (group, bucket) slots → [`ScanError::TooManyBuckets`].
    pub bucket_limit: usize,
    /// Rows of series written out of order, copied to be deduplicated;
    /// more → [`ScanError::TooManyRows`].
    pub row_limit: usize,
    pub deadline: Deadline,
}

/// A request to one shard. Owned and `Send`, so it crosses cores.
#[derive(Clone, Debug)]
pub enum ScanRequest {
    Rows(RowsRequest),
    Schema(SchemaRequest),
    Aggregate(AggregateRequest),
}

impl ScanRequest {
    pub fn database(&self) -> &str {
        match self {
            ScanRequest::Rows(rows) => &rows.database,
            ScanRequest::Schema(schema) => &schema.database,
            ScanRequest::Aggregate(aggregate) => &aggregate.database,
        }
    }

    pub fn deadline(&self) -> Deadline {
        match self {
            ScanRequest::Rows(rows) => rows.deadline,
            ScanRequest::Schema(schema) => schema.deadline,
            ScanRequest::Aggregate(aggregate) => aggregate.deadline,
        }
    }

    pub fn set_deadline(&mut self, deadline: Deadline) {
        match self {
            ScanRequest::Rows(rows) => rows.deadline = deadline,
            ScanRequest::Schema(schema) => schema.deadline = deadline,
            ScanRequest::Aggregate(aggregate) => aggregate.deadline = deadline,
        }
    }
}

/// The rows of one series, sorted by time, unique times.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesRows {
    pub measurement: String,
    /// Sorted by key.
    pub tags: Vec<(String, String)>,
    pub times: Vec<i64>,
    /// One vector per requested column (`fields` then `condition_fields`),
    /// each `times.len()` long.
    pub columns: Vec<Vec<Option<Value>>>,
}

/// What one shard knows of one measurement.
#[derive(Clone, Debug, PartialEq)]
pub struct MeasurementSchema {
    pub name: String,
    /// Sorted.
    pub tag_keys: Vec<String>,
    /// Sorted by name.
    pub fields: Vec<(String, FieldType)>,
    /// Tag sets of the passing series (only when asked), sorted.
    pub series: Vec<Vec<(String, String)>>,
}

/// A shard's answer. Owned and `Send`.
#[derive(Clone, Debug, PartialEq)]
pub enum ScanResponse {
    /// Series in (measurement, tags) order.
    Rows(Vec<SeriesRows>),
    /// Measurements in name order.
    Schema(Vec<MeasurementSchema>),
    /// Groups in key order.
    Aggregates(Vec<GroupAggregates>),
}

/// Why a scan was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanError {
    TooManyRows {
        limit: usize,
    },
    TooManySeries {
        limit: usize,
    },
    TooManyBuckets {
        limit: usize,
    },
    /// A Parquet file the query needs could not be read.
    PersistedFile {
        path: String,
        error: String,
    },
    /// Snapshots kept moving rows from memory to files during the scan.
    Busy,
    /// The query ran past `[query] time_limit_ms`.
    TimeLimit {
        limit_ms: u64,
    },
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScanError::TooManyRows { limit } => {
                write!(
                    f,
                    "query would read more than {limit} rows (max-select-point)"
                )
            }
            ScanError::TooManySeries { limit } => {
                write!(
                    f,
                    "query would read more than {limit} series (max-select-series)"
                )
            }
            ScanError::TooManyBuckets { limit } => {
                write!(
                    f,
                    "query would produce more than {limit} buckets (max-select-buckets)"
                )
            }
            ScanError::PersistedFile { path, error } => {
                write!(f, "persisted file {path} cannot be read: {error}")
            }
            ScanError::Busy => write!(f, "persistence kept moving rows during the query; retry"),
            ScanError::TimeLimit { limit_ms } => write!(
                f,
                "query-timeout limit exceeded ({limit_ms} ms, [query] time_limit_ms)"
            ),
        }
    }
}

impl std::error::Error for ScanError {}

/// The values of one field column.
#[derive(Debug)]
pub(crate) enum ColumnData {
    Float(Vec<f64>),
    Integer(Vec<i64>),
    Unsigned(Vec<u64>),
    String(Vec<String>),
    Boolean(Vec<bool>),
}

/// One typed field column with validity.
#[derive(Debug)]
pub(crate) struct Column {
    pub(crate) data: ColumnData,
    pub(crate) valid: Vec<bool>,
}

/// Estimated bytes of one value slot (value + validity).
fn slot_bytes(field_type: FieldType) -> usize {
    match field_type {
        FieldType::Float | FieldType::Integer | FieldType::Unsigned => 9,
        FieldType::String => std::mem::size_of::<String>() + 1,
        FieldType::Boolean => 2,
    }
}

impl Column {
    fn new(field_type: FieldType, rows: usize) -> Column {
        let data = match field_type {
            FieldType::Float => ColumnData::Float(vec![0.0; rows]),
            FieldType::Integer => ColumnData::Integer(vec![0; rows]),
            FieldType::Unsigned => ColumnData::Unsigned(vec![0; rows]),
            FieldType::String => ColumnData::String(vec![String::new(); rows]),
            FieldType::Boolean => ColumnData::Boolean(vec![false; rows]),
        };
        Column {
            data,
            valid: vec![false; rows],
        }
    }

    pub(crate) fn field_type(&self) -> FieldType {
        match self.data {
            ColumnData::Float(_) => FieldType::Float,
            ColumnData::Integer(_) => FieldType::Integer,
            ColumnData::Unsigned(_) => FieldType::Unsigned,
            ColumnData::String(_) => FieldType::String,
            ColumnData::Boolean(_) => FieldType::Boolean,
        }
    }

    fn push_null(&mut self) {
        match &mut self.data {
            ColumnData::Float(v) => v.push(0.0),
            ColumnData::Integer(v) => v.push(0),
            ColumnData::Unsigned(v) => v.push(0),
            ColumnData::String(v) => v.push(String::new()),
            ColumnData::Boolean(v) => v.push(false),
        }
        self.valid.push(false);
    }

    pub(crate) fn len(&self) -> usize {
        self.valid.len()
    }

    /// Sets row `row`, appending it when `row` is the column's length;
    /// returns the change in estimated bytes, or `None` (nothing changed)
    /// when the value's type does not match the column.
    fn set(&mut self, row: usize, value: &FieldValue<'_>) -> Option<isize> {
        let appending = row == self.valid.len();
        assert!(
            row <= self.valid.len(),
            "invariant: rows are appended in order"
        );
        fn put<T>(values: &mut Vec<T>, row: usize, appending: bool, value: T) {
            if appending {
                values.push(value);
            } else {
                values[row] = value;
            }
        }
        let delta = match (&mut self.data, value) {
            (ColumnData::Float(v), FieldValue::Float(x)) => {
                put(v, row, appending, *x);
                0
            }
            (ColumnData::Integer(v), FieldValue::Integer(x)) => {
                put(v, row, appending, *x);
                0
            }
            (ColumnData::Unsigned(v), FieldValue::UInteger(x)) => {
                put(v, row, appending, *x);
                0
            }
            (ColumnData::Boolean(v), FieldValue::Boolean(x)) => {
                put(v, row, appending, *x);
                0
            }
            (ColumnData::String(v), FieldValue::String(x)) => {
                let old = if appending { 0 } else { v[row].len() as isize };
                put(v, row, appending, x.to_string());
                x.len() as isize - old
            }
            _ => return None,
        };
        if appending {
            self.valid.push(true);
            Some(delta + slot_bytes(self.field_type()) as isize)
        } else {
            self.valid[row] = true;
            Some(delta)
        }
    }

    pub(crate) fn get(&self, row: usize) -> Option<Value> {
        if !self.valid[row] {
            return None;
        }
        Some(match &self.data {
            ColumnData::Float(v) => Value::Float(v[row]),
            ColumnData::Integer(v) => Value::Integer(v[row]),
            ColumnData::Unsigned(v) => Value::Unsigned(v[row]),
            ColumnData::String(v) => Value::String(v[row].clone()),
            ColumnData::Boolean(v) => Value::Boolean(v[row]),
        })
    }

    pub(crate) fn is_valid(&self, row: usize) -> bool {
        self.valid[row]
    }
}

fn field_type_of(value: &FieldValue<'_>) -> FieldType {
    match value {
        FieldValue::Float(_) => FieldType::Float,
        FieldValue::Integer(_) => FieldType::Integer,
        FieldValue::UInteger(_) => FieldType::Unsigned,
        FieldValue::String(_) => FieldType::String,
        FieldValue::Boolean(_) => FieldType::Boolean,
    }
}

/// A run of rows of one table.
#[derive(Debug, Default)]
pub(crate) struct Chunk {
    pub(crate) times: Vec<i64>,
    pub(crate) series: Vec<u32>,
    /// Field columns in the order they were created; names are unique.
    pub(crate) columns: Vec<(String, Column)>,
    pub(crate) time_min_ns: i64,
    pub(crate) time_max_ns: i64,
    /// (series, time) → row, while the chunk is active and only once
    /// `indexed`: rows that arrive in time order per series cannot repeat a
    /// (series, time) of the chunk (see `Table::series_last_ns`), so the
    /// index is built the first time one arrives out of order.
    index: HashMap<(u32, i64), u32, FastHash>,
    indexed: bool,
    /// The series runs of a sealed chunk, once a scan computed them.
    runs: OnceLock<Arc<SeriesRuns>>,
    /// Per field: each run's aggregate, once a scan computed it (sealed
    /// chunks only).
    summaries: Mutex<HashMap<String, Arc<aggregate::RunSummaries>>>,
}

impl Chunk {
    pub(crate) fn len(&self) -> usize {
        self.times.len()
    }

    pub(crate) fn column(&self, name: &str) -> Option<&Column> {
        self.columns
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, column)| column)
    }

    /// The chunk's series runs ([`runs`]). `sealed`: the chunk never
    /// changes again, so they are computed once and kept.
    pub(crate) fn runs(&self, sealed: bool) -> Arc<SeriesRuns> {
        if !sealed {
            return Arc::new(SeriesRuns::build(&self.series, &self.times));
        }
        self.runs
            .get_or_init(|| Arc::new(SeriesRuns::build(&self.series, &self.times)))
            .clone()
    }

    /// The per-run aggregates of field `name` of a sealed chunk: kept, or
    /// made by `make` and kept (two scans may both make them; one is kept).
    pub(crate) fn summaries(
        &self,
        name: &str,
        make: impl FnOnce() -> aggregate::RunSummaries,
    ) -> Arc<aggregate::RunSummaries> {
        if let Some(kept) = lock(&self.summaries).get(name) {
            return kept.clone();
        }
        let made = Arc::new(make());
        lock(&self.summaries)
            .entry(name.to_string())
            .or_insert(made)
            .clone()
    }

    /// Indexes every row; returns the bytes the index added.
    fn build_index(&mut self) -> usize {
        assert!(!self.indexed, "invariant: a chunk is indexed once");
        self.index.reserve(self.len());
        for (row, (series, time)) in self.series.iter().zip(&self.times).enumerate() {
            let previous = self.index.insert((*series, *time), row as u32);
            assert!(
                previous.is_none(),
                "invariant: (series, time) is unique in a chunk"
            );
        }
        self.indexed = true;
        self.index.len() * INDEX_ENTRY_BYTES
    }
}

/// Bytes per row outside field columns: time and series id.
const ROW_BYTES: usize = 8 + 4;
/// Bytes per (series, time) index entry.
const INDEX_ENTRY_BYTES: usize = 24;
/// Bytes per series-dictionary entry outside its strings.
const SERIES_OVERHEAD_BYTES: usize = 64;

/// Bytes of one series-dictionary entry.
fn series_bytes(tags: &[(String, String)], encoded: &[u8]) -> usize {
    SERIES_OVERHEAD_BYTES
        + encoded.len()
        + tags
            .iter()
            .map(|(k, v)| k.len() + v.len() + 48)
            .sum::<usize>()
}

/// One measurement's rows: a series dictionary and chunks.
#[derive(Debug, Default)]
pub struct Table {
    /// Series id → tags sorted by key.
    pub(crate) series: Vec<Vec<(String, String)>>,
    /// Series id → its tags as batches encode them: one comparison tells
    /// whether a row belongs to the series.
    series_encoded: Vec<Box<[u8]>>,
    /// Series id → the newest time it has in the active chunk (`i64::MIN`:
    /// none). A row newer than that cannot repeat a row of the chunk.
    series_last_ns: Vec<i64>,
    /// Series hash → the first id with that hash; further ids with the same
    /// hash (collisions) are in `colliding`.
    series_by_hash: HashMap<u64, u32, FastHash>,
    colliding: Vec<(u64, u32)>,
    pub(crate) tag_keys: BTreeSet<String>,
    pub(crate) field_types: BTreeMap<String, FieldType>,
    /// Field position in the previous row → its column in the active chunk:
    /// rows of one shape find their columns without a search.
    field_slots: Vec<u32>,
    pub(crate) sealed: Vec<Chunk>,
    pub(crate) active: Chunk,
    /// Rows were dropped (expired, or, loaded from a file, owned by another
    /// shard): a series of the dictionary may have no row left. While
    /// false, every series has at least one (a series enters the
    /// dictionary with its first row), which spares schema scans a pass
    /// over the rows.
    pub(crate) rows_dropped: bool,
}

impl Table {
    /// A read-only table of one chunk (rows loaded from a Parquet file):
    /// `series` are the chunk's series ids' tags; `rows_dropped` when the
    /// chunk lost rows of some of them (see the field).
    pub(crate) fn loaded(
        series: Vec<Vec<(String, String)>>,
        field_types: BTreeMap<String, FieldType>,
        chunk: Chunk,
        rows_dropped: bool,
    ) -> Table {
        let tag_keys = series
            .iter()
            .flat_map(|tags| tags.iter().map(|(k, _)| k.clone()))
            .collect();
        Table {
            series,
            tag_keys,
            field_types,
            sealed: vec![chunk],
            rows_dropped,
            ..Table::default()
        }
    }

    /// Sealed chunks in order, then the active one.
    pub(crate) fn chunks(&self) -> impl Iterator<Item = &Chunk> {
        self.sealed.iter().chain(std::iter::once(&self.active))
    }

    /// Estimated bytes in memory (the store's accounting).
    pub(crate) fn estimated_bytes(&self) -> usize {
        table_bytes(self)
    }

    /// A read-only table of several read-only tables' chunks, in their
    /// order (for a compaction: the oldest file first, so the newer file's
    /// rows win when written): one series dictionary, ids remapped.
    pub(crate) fn merged(tables: Vec<Table>) -> Table {
        let mut series: Vec<Vec<(String, String)>> = Vec::new();
        let mut ids: HashMap<Vec<(String, String)>, u32> = HashMap::new();
        let mut field_types = BTreeMap::new();
        let mut sealed = Vec::new();
        for table in tables {
            let map: Vec<u32> = table
                .series
                .into_iter()
                .map(|tags| {
                    let next = series.len() as u32;
                    *ids.entry(tags).or_insert_with_key(|tags| {
                        series.push(tags.clone());
                        next
                    })
                })
                .collect();
            for (name, field_type) in table.field_types {
                field_types.entry(name).or_insert(field_type);
            }
            for mut chunk in table
                .sealed
                .into_iter()
                .chain(std::iter::once(table.active))
            {
                if chunk.len() == 0 {
                    continue;
                }
                for id in &mut chunk.series {
                    *id = map[*id as usize];
                }
                sealed.push(chunk);
            }
        }
        let tag_keys = series
            .iter()
            .flat_map(|tags| tags.iter().map(|(k, _)| k.clone()))
            .collect();
        Table {
            series,
            tag_keys,
            field_types,
            sealed,
            ..Table::default()
        }
    }

    /// The id of the row's series, added to the dictionary if new.
    fn series_id(&mut self, row: &Row<'_>, added: &mut isize) -> u32 {
        let encoded = row.tags_encoded();
        if let Some(&first) = self.series_by_hash.get(&row.series_hash) {
            if *self.series_encoded[first as usize] == *encoded {
                return first;
            }
            let same = |(hash, id): &&(u64, u32)| {
                *hash == row.series_hash && *self.series_encoded[*id as usize] == *encoded
            };
            if let Some((_, id)) = self.colliding.iter().find(same) {
                return *id;
            }
        }
        let id = u32::try_from(self.series.len())
            .expect("invariant: the memory budget keeps series per table below 2^32");
        let tags: Vec<(String, String)> = row
            .tags()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        *added += series_bytes(&tags, encoded) as isize;
        for (k, _) in &tags {
            if !self.tag_keys.contains(k) {
                self.tag_keys.insert(k.clone());
            }
        }
        self.series.push(tags);
        self.series_encoded.push(encoded.into());
        self.series_last_ns.push(i64::MIN);
        match self.series_by_hash.entry(row.series_hash) {
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(id);
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                self.colliding.push((row.series_hash, id));
            }
        }
        id
    }

    /// The active chunk's row for (series, time): the existing one (merge)
    /// or a new one with every field null.
    fn row_index(&mut self, series: u32, time_ns: i64, added: &mut isize) -> usize {
        let chunk = &mut self.active;
        let last_ns = &mut self.series_last_ns[series as usize];
        if time_ns <= *last_ns {
            if !chunk.indexed {
                *added += chunk.build_index() as isize;
            }
            if let Some(row) = chunk.index.get(&(series, time_ns)) {
                return *row as usize;
            }
        } else {
            *last_ns = time_ns;
        }
        let row = chunk.len();
        if row == 0 {
            chunk.time_min_ns = time_ns;
            chunk.time_max_ns = time_ns;
        } else {
            chunk.time_min_ns = chunk.time_min_ns.min(time_ns);
            chunk.time_max_ns = chunk.time_max_ns.max(time_ns);
        }
        chunk.times.push(time_ns);
        chunk.series.push(series);
        // The columns get this row from `set_fields`: a value, or a null.
        if chunk.indexed {
            chunk.index.insert((series, time_ns), row as u32);
            *added += INDEX_ENTRY_BYTES as isize;
        }
        *added += ROW_BYTES as isize;
        row
    }

    /// Sets the row's fields in the active chunk's row `row_index` (a new
    /// row: the last one, which no column holds yet).
    fn set_fields(&mut self, row_index: usize, row: &Row<'_>, added: &mut isize) {
        let chunk = &mut self.active;
        for (position, (key, value)) in row.fields().enumerate() {
            let predicted = self.field_slots.get(position).map(|slot| *slot as usize);
            let slot = match predicted {
                Some(slot) if chunk.columns.get(slot).is_some_and(|(n, _)| n == key) => slot,
                _ => {
                    let slot = match chunk.columns.iter().position(|(n, _)| n == key) {
                        Some(slot) => slot,
                        None => {
                            let field_type = field_type_of(&value);
                            let rows = chunk.len();
                            *added += (slot_bytes(field_type) * rows + key.len() + 64) as isize;
                            chunk
                                .columns
                                .push((key.to_string(), Column::new(field_type, rows)));
                            if !self.field_types.contains_key(key) {
                                self.field_types.insert(key.to_string(), field_type);
                            }
                            chunk.columns.len() - 1
                        }
                    };
                    match self.field_slots.get_mut(position) {
                        Some(predicted) => *predicted = slot as u32,
                        None => self.field_slots.push(slot as u32),
                    }
                    slot
                }
            };
            if let Some(delta) = chunk.columns[slot].1.set(row_index, &value) {
                *added += delta;
            }
        }
        // A new row is null in every column the row did not set.
        for (_, column) in &mut chunk.columns {
            if column.len() < chunk.times.len() {
                column.push_null();
                *added += slot_bytes(column.field_type()) as isize;
            }
        }
    }

    /// Seals the active chunk: immutable from now on.
    fn seal(&mut self, added: &mut isize) {
        let mut sealed = std::mem::take(&mut self.active);
        *added -= (sealed.index.len() * INDEX_ENTRY_BYTES) as isize;
        sealed.index = HashMap::default();
        sealed.indexed = false;
        // Nothing was computed of it while it changed; said for the reader.
        debug_assert!(sealed.runs.get().is_none());
        sealed.times.shrink_to_fit();
        sealed.series.shrink_to_fit();
        self.sealed.push(sealed);
        self.series_last_ns.fill(i64::MIN);
        self.field_slots.clear();
    }
}

/// The tables of one database on one shard.
#[derive(Debug, Default)]
pub struct Database {
    pub(crate) tables: BTreeMap<String, Table>,
}

/// The store of one shard.
#[derive(Debug)]
pub struct ShardStore {
    limits: StoreLimits,
    /// The live rows: every write enters here.
    databases: BTreeMap<String, Database>,
    /// Earlier live rows handed to the persister, oldest first.
    frozen: Vec<Arc<Frozen>>,
    /// Running estimate of live and frozen rows, see
    /// [`ShardStore::memory_bytes`].
    memory_bytes: usize,
}

impl ShardStore {
    pub fn new(limits: StoreLimits) -> ShardStore {
        assert!(limits.chunk_rows > 0, "chunk_rows must be positive");
        ShardStore {
            limits,
            databases: BTreeMap::new(),
            frozen: Vec::new(),
            memory_bytes: 0,
        }
    }

    /// Estimated heap bytes held: per row its time and series id, per index
    /// entry its key and row, per value slot its width and validity byte,
    /// string bytes, and the series dictionary. Capacity slack is not
    /// counted.
    pub fn memory_bytes(&self) -> usize {
        self.memory_bytes
    }

    /// May a write of this many payload bytes enter? A payload byte costs
    /// at most about one store byte (names are dictionary-encoded), so the
    /// payload size bounds the growth.
    pub fn has_room(&self, incoming_payload_bytes: usize) -> bool {
        self.memory_bytes.saturating_add(incoming_payload_bytes) <= self.limits.memory_bytes_max
    }

    /// Adds the rows of a validated batch. Never fails.
    pub fn apply(&mut self, batch: &BatchReader<'_>) {
        let chunk_rows = self.limits.chunk_rows;
        let database = match self.databases.get_mut(batch.database()) {
            Some(database) => database,
            None => self
                .databases
                .entry(batch.database().to_string())
                .or_default(),
        };
        let mut added: isize = 0;
        for row in batch.rows() {
            let table = match database.tables.get_mut(row.table) {
                Some(table) => table,
                None => database.tables.entry(row.table.to_string()).or_default(),
            };
            let series = table.series_id(&row, &mut added);
            let row_index = table.row_index(series, row.time_ns, &mut added);
            table.set_fields(row_index, &row, &mut added);
            if table.active.len() >= chunk_rows {
                table.seal(&mut added);
            }
        }
        self.memory_bytes = (self.memory_bytes as isize + added).max(0) as usize;
    }

    pub fn drop_database(&mut self, database: &str) {
        let in_frozen = self
            .frozen
            .iter()
            .any(|f| f.databases.contains_key(database));
        if self.databases.remove(database).is_none() && !in_frozen {
            return;
        }
        // Frozen generations are shared with the persister: rebuild them
        // without the database (the tables themselves are shared, not copied).
        for frozen in &mut self.frozen {
            if frozen.databases.contains_key(database) {
                let databases: BTreeMap<String, Arc<Database>> = frozen
                    .databases
                    .iter()
                    .filter(|(name, _)| name.as_str() != database)
                    .map(|(name, db)| (name.clone(), db.clone()))
                    .collect();
                let memory_bytes = databases
                    .values()
                    .flat_map(|d| d.tables.values())
                    .map(table_bytes)
                    .sum();
                *frozen = Arc::new(Frozen {
                    databases,
                    memory_bytes,
                });
            }
        }
        let live: usize = self
            .databases
            .values()
            .flat_map(|d| d.tables.values())
            .map(table_bytes)
            .sum();
        self.memory_bytes = live + self.frozen_bytes();
    }

    /// Names of the databases that hold rows in this shard's memory.
    pub fn database_names(&self) -> Vec<String> {
        let mut names: BTreeSet<&String> = self.databases.keys().collect();
        for frozen in &self.frozen {
            names.extend(frozen.databases.keys());
        }
        names.into_iter().cloned().collect()
    }

    /// Scans the rows in memory (live and frozen), as if nothing were
    /// persisted.
    pub fn scan(&self, request: &ScanRequest) -> Result<ScanResponse, ScanError> {
        self.scan_with(request, &Persisted::default())
    }

    /// Scans `persisted` (tables loaded from this shard's Parquet files,
    /// older than anything in memory) and the rows in memory, as one store.
    pub fn scan_with(
        &self,
        request: &ScanRequest,
        persisted: &Persisted,
    ) -> Result<ScanResponse, ScanError> {
        let sources = scan::Sources::new(request.database(), persisted, self);
        match request {
            ScanRequest::Rows(rows) => scan::rows(&sources, rows).map(ScanResponse::Rows),
            ScanRequest::Schema(schema) => scan::schema(&sources, schema).map(ScanResponse::Schema),
            ScanRequest::Aggregate(request) => {
                aggregate::aggregate(&sources.tables_of(&request.measurement), request)
                    .map(ScanResponse::Aggregates)
            }
        }
    }

    /// Feeds the rows in memory (frozen generations oldest first, then
    /// live) of the request's measurement to `aggregator`, after whatever
    /// files it was fed.
    pub fn feed_memory(&self, aggregator: &mut aggregate::Aggregator) -> Result<(), ScanError> {
        let request = aggregator.request();
        let (database, measurement) = (request.database.clone(), request.measurement.clone());
        let nothing = Persisted::default();
        let sources = scan::Sources::new(&database, &nothing, self);
        for table in sources.tables_of(&measurement) {
            aggregator.feed(table)?;
        }
        Ok(())
    }

    /// Moves every live row into a new frozen generation (still scanned
    /// and counted in [`ShardStore::memory_bytes`]) and returns it for
    /// persisting; `None` when nothing is live. Writes go on into an empty
    /// live store.
    pub fn freeze(&mut self) -> Option<Arc<Frozen>> {
        if self.databases.values().all(|d| d.tables.is_empty()) {
            return None;
        }
        let databases = std::mem::take(&mut self.databases);
        let memory_bytes = self.memory_bytes - self.frozen_bytes();
        let frozen = Arc::new(Frozen {
            databases: databases
                .into_iter()
                .map(|(name, database)| (name, Arc::new(database)))
                .collect(),
            memory_bytes,
        });
        self.frozen.push(frozen.clone());
        Some(frozen)
    }

    /// The frozen generations not yet released, oldest first.
    pub fn frozen(&self) -> &[Arc<Frozen>] {
        &self.frozen
    }

    /// Forgets frozen generations once they are persisted (their rows are
    /// then read from Parquet): frees their memory.
    pub fn release_frozen(&mut self, released: &[Arc<Frozen>]) {
        let before = self.frozen_bytes();
        self.frozen
            .retain(|f| !released.iter().any(|r| Arc::ptr_eq(f, r)));
        let freed = before - self.frozen_bytes();
        self.memory_bytes = self.memory_bytes.saturating_sub(freed);
    }

    fn frozen_bytes(&self) -> usize {
        self.frozen.iter().map(|f| f.memory_bytes).sum()
    }

    /// Bytes of the live (not yet frozen) rows.
    pub fn live_bytes(&self) -> usize {
        self.memory_bytes - self.frozen_bytes()
    }
}

/// Rows frozen for persisting: immutable, shared with the persister thread
/// and still scanned by queries until released.
#[derive(Debug)]
pub struct Frozen {
    pub databases: BTreeMap<String, Arc<Database>>,
    pub memory_bytes: usize,
}

/// Tables loaded from Parquet for one scan, per (database, table), oldest
/// file first.
#[derive(Debug, Default)]
pub struct Persisted {
    pub tables: BTreeMap<String, Vec<Arc<Table>>>,
}

/// Recomputed estimate for one table (used after drops).
fn table_bytes(table: &Table) -> usize {
    let series: usize = table
        .series
        .iter()
        .zip(&table.series_encoded)
        .map(|(tags, encoded)| series_bytes(tags, encoded))
        .sum();
    let chunks: usize = table
        .sealed
        .iter()
        .chain(std::iter::once(&table.active))
        .map(chunk_bytes)
        .sum();
    series + chunks
}

/// Recomputed estimate for one chunk (a table's is its series plus its
/// chunks').
fn chunk_bytes(chunk: &Chunk) -> usize {
    let rows = chunk.len();
    let mut bytes = rows * ROW_BYTES + chunk.index.len() * INDEX_ENTRY_BYTES;
    for (key, column) in &chunk.columns {
        bytes += slot_bytes(column.field_type()) * rows + key.len() + 64;
        if let ColumnData::String(values) = &column.data {
            bytes += values.iter().map(String::len).sum::<usize>();
        }
    }
    bytes
}

/// Hasher for the store's integer keys (series hashes, (series, time)):
/// one folded multiply per word mixes every input bit into every output
/// bit, which SipHash's per-call cost buys nothing over here (the keys are
/// not chosen by an adversary who sees the table: series hashes are
/// already mixed, and a collision only costs a probe).
#[derive(Clone, Copy, Debug, Default)]
pub struct FastHasher(u64);

impl FastHasher {
    fn mix(&mut self, word: u64) {
        const K: u64 = 0x9e37_79b9_7f4a_7c15;
        let product = u128::from(self.0 ^ word) * u128::from(K);
        self.0 = (product as u64) ^ ((product >> 64) as u64);
    }
}

impl std::hash::Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
    }

    fn write_u32(&mut self, value: u32) {
        self.mix(u64::from(value));
    }

    fn write_u64(&mut self, value: u64) {
        self.mix(value);
    }

    fn write_i64(&mut self, value: i64) {
        self.mix(value as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub type FastHash = std::hash::BuildHasherDefault<FastHasher>;

pub mod aggregate;
mod runs;
mod scan;

/// A lock of a scan cache: a panic while holding it leaves a map that is
/// still whole (entries are inserted complete), so it is used on.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

mod expire;
#[cfg(test)]
mod tests;
