//! Statement evaluation on the coordinating shard: plan the scans, merge
//! the shards' answers, group, aggregate, fill, order, limit, format.
//!
//! Every shard returns raw rows of the series it owns (already filtered by
//! time range and, where the WHERE clause allows, by tags), or — for the
//! aggregates it can fold while scanning (`pushdown`) — one partial
//! aggregate per group and time bucket; everything that needs all series at
//! once happens here. Results are built as
//! [`OutSeries`] and written by [`write_response`] in InfluxDB's JSON shape.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::retention::{go_duration, Period, PeriodError};
use crate::store::{
    Bucket, Deadline, FieldType, MeasurementFilter, RowsRequest, ScanRequest, ScanResponse,
    SchemaRequest, SeriesRows, TagFilter, Value,
};

use super::ast::*;
use super::json;
use super::parser::parse_query;
use super::{time as qtime, SERIES_MAX};
use super::{QueryBackend, QueryOutput, QueryParams, CHUNK_SIZE_DEFAULT};

/// Output groups evaluated between two yields to the executor.
const GROUPS_PER_YIELD: usize = 64;

/// InfluxDB's unbounded time range.
const TIME_MIN_NS: i64 = i64::MIN + 2;
const TIME_MAX_NS: i64 = i64::MAX - 1;

/// Why one statement failed (HTTP 200, `results[i].error`).
#[derive(Clone, Debug, PartialEq)]
pub enum StatementError {
    DatabaseRequired,
    DatabaseNotFound(String),
    NotAuthorized(String),
    NotExecuted,
    RetentionPolicyNotFound(String),
    /// `NAME rp` of `CREATE DATABASE … WITH` other than `autogen`: ringest
    /// keeps one policy per database.
    RetentionPolicyNotSupported(String),
    /// A `DURATION` outside what a retention period may be.
    RetentionPeriod(PeriodError),
    /// A finite `DURATION` shorter than the `SHARD DURATION` given with it.
    IncompatibleDurations,
    GroupByRequiresAggregate,
    MixedAggregates,
    UndefinedFunction(String),
    WrongArguments(String),
    InvalidTime(String),
    UnsupportedTimeZone(String),
    TooManyBuckets {
        buckets: usize,
        limit: usize,
    },
    UnsupportedIterator {
        function: String,
        iterator: &'static str,
    },
    Backend(String),
}

impl fmt::Display for StatementError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatementError::DatabaseRequired => f.write_str("database name required"),
            StatementError::DatabaseNotFound(db) => write!(f, "database not found: {db}"),
            StatementError::NotAuthorized(db) => {
                write!(
                    f,
                    "not authorized to execute statement, requires READ on {db}"
                )
            }
            StatementError::NotExecuted => f.write_str("not executed"),
            StatementError::RetentionPolicyNotFound(rp) => {
                write!(f, "retention policy not found: {rp}")
            }
            StatementError::RetentionPolicyNotSupported(rp) => write!(
                f,
                "retention policy {rp:?} cannot be created: ringest keeps one retention policy per database, \"autogen\""
            ),
            StatementError::RetentionPeriod(error) => write!(f, "{error}"),
            StatementError::IncompatibleDurations => {
                f.write_str("retention policy duration must be greater than the shard duration")
            }
            StatementError::GroupByRequiresAggregate => {
                f.write_str("GROUP BY requires at least one aggregate function")
            }
            StatementError::MixedAggregates => {
                f.write_str("mixing aggregate and non-aggregate queries is not supported")
            }
            StatementError::UndefinedFunction(name) => write!(f, "undefined function {name}()"),
            StatementError::WrongArguments(text) => f.write_str(text),
            StatementError::InvalidTime(text) => write!(f, "invalid time expression: {text}"),
            StatementError::UnsupportedTimeZone(zone) => {
                write!(f, "unable to find time zone {zone}")
            }
            StatementError::TooManyBuckets { buckets, limit } => {
                write!(f, "max-select-buckets limit exceeded: ({buckets}/{limit})")
            }
            StatementError::UnsupportedIterator { function, iterator } => {
                write!(f, "unsupported {function} iterator type: *query.{iterator}")
            }
            StatementError::Backend(text) => f.write_str(text),
        }
    }
}

/// One output cell.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Null,
    Time(i64),
    /// A time printed in a `tz()` zone.
    ZonedTime(i64, std::rc::Rc<qtime::Zone>),
    Value(Value),
}

/// One output series.
#[derive(Clone, Debug, PartialEq)]
pub struct OutSeries {
    pub name: Option<String>,
    pub tags: Vec<(String, String)>,
    pub columns: Vec<String>,
    pub values: Vec<Vec<Cell>>,
}

type StatementResult = Result<Vec<OutSeries>, StatementError>;

pub async fn execute(params: &QueryParams, backend: &impl QueryBackend) -> QueryOutput {
    if params.q.trim().is_empty() {
        return error_output(400, "missing required parameter \"q\"", params.pretty);
    }
    let statements = match parse_query(&params.q) {
        Ok(statements) => statements,
        Err(error) => {
            return error_output(400, &format!("error parsing query: {error}"), params.pretty)
        }
    };
    let mut results: Vec<(StatementResult, bool)> = Vec::with_capacity(statements.len());
    let count = statements.len();
    // One bucket budget for the whole request: per statement, a query of
    // many statements could hold statements × BUCKETS_MAX rows (45 in a
    // 3.6 KB query took 42 s and over 2 GB).
    let mut budget = BucketBudget {
        used: 0,
        max: params.limits.buckets_max,
    };
    for (index, statement) in statements.iter().enumerate() {
        let result = run_statement(statement, params, backend, &mut budget).await;
        if let Err(StatementError::NotAuthorized(db)) = &result {
            return error_output(
                403,
                &format!("error authorizing query: not authorized to execute statement, requires READ on {db}"),
                params.pretty,
            );
        }
        let chunkable = matches!(statement, Statement::Select(_));
        let failed = result.is_err();
        results.push((result, chunkable));
        if failed {
            // InfluxDB 1.x stops at the first error and then sends "not
            // executed" under the *failed* statement's id when more
            // statements follow; the buffered answer keeps the last result
            // of an id, so the error text is replaced and nothing follows.
            if index + 1 < count {
                results.push((Err(StatementError::NotExecuted), false));
            }
            break;
        }
    }
    QueryOutput {
        status: 200,
        body: write_response(&results, params),
    }
}

fn error_output(status: u16, message: &str, pretty: bool) -> QueryOutput {
    let mut body = Vec::new();
    body.extend_from_slice(b"{\"error\":");
    json::write_str(&mut body, message);
    body.push(b'}');
    if pretty {
        body = json::indent(&body);
    }
    body.push(b'\n');
    QueryOutput { status, body }
}

// ---------------------------------------------------------------- output

fn epoch_divisor(epoch: Option<&str>) -> Option<i64> {
    Some(match epoch? {
        "ns" | "n" => 1,
        "u" | "us" | "µ" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => 1,
    })
}

fn write_cell(out: &mut Vec<u8>, cell: &Cell, divisor: Option<i64>) {
    match cell {
        Cell::Null => out.extend_from_slice(b"null"),
        Cell::ZonedTime(ns, zone) => match divisor {
            Some(d) => json::write_i64(out, ns / d),
            None => {
                out.push(b'"');
                qtime::write_rfc3339_nano_in(out, *ns, zone);
                out.push(b'"');
            }
        },
        Cell::Time(ns) => match divisor {
            Some(d) => json::write_i64(out, ns / d),
            None => {
                out.push(b'"');
                qtime::write_rfc3339_nano(out, *ns);
                out.push(b'"');
            }
        },
        Cell::Value(Value::Float(v)) => json::write_f64(out, *v),
        Cell::Value(Value::Integer(v)) => json::write_i64(out, *v),
        Cell::Value(Value::Unsigned(v)) => json::write_u64(out, *v),
        Cell::Value(Value::String(v)) => json::write_str(out, v),
        Cell::Value(Value::Boolean(v)) => {
            out.extend_from_slice(if *v { b"true" } else { b"false" })
        }
    }
}

fn write_series(
    out: &mut Vec<u8>,
    series: &OutSeries,
    rows: &[Vec<Cell>],
    partial: bool,
    divisor: Option<i64>,
) {
    out.push(b'{');
    let mut first = true;
    if let Some(name) = &series.name {
        out.extend_from_slice(b"\"name\":");
        json::write_str(out, name);
        first = false;
    }
    if !series.tags.is_empty() {
        if !first {
            out.push(b',');
        }
        out.extend_from_slice(b"\"tags\":{");
        for (i, (k, v)) in series.tags.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json::write_str(out, k);
            out.push(b':');
            json::write_str(out, v);
        }
        out.push(b'}');
        first = false;
    }
    if !first {
        out.push(b',');
    }
    out.extend_from_slice(b"\"columns\":[");
    for (i, c) in series.columns.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json::write_str(out, c);
    }
    out.push(b']');
    if !rows.is_empty() {
        out.extend_from_slice(b",\"values\":[");
        for (i, row) in rows.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'[');
            for (j, cell) in row.iter().enumerate() {
                if j > 0 {
                    out.push(b',');
                }
                write_cell(out, cell, divisor);
            }
            out.push(b']');
        }
        out.push(b']');
    }
    if partial {
        out.extend_from_slice(b",\"partial\":true");
    }
    out.push(b'}');
}

/// One `{"statement_id":…}` object.
fn write_result(
    out: &mut Vec<u8>,
    id: usize,
    series: &[(&OutSeries, &[Vec<Cell>], bool)],
    error: Option<&StatementError>,
    partial: bool,
    divisor: Option<i64>,
) {
    out.extend_from_slice(b"{\"statement_id\":");
    json::write_i64(out, id as i64);
    if !series.is_empty() {
        out.extend_from_slice(b",\"series\":[");
        for (i, (s, rows, p)) in series.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_series(out, s, rows, *p, divisor);
        }
        out.push(b']');
    }
    if partial {
        out.extend_from_slice(b",\"partial\":true");
    }
    if let Some(error) = error {
        out.extend_from_slice(b",\"error\":");
        json::write_str(out, &error.to_string());
    }
    out.push(b'}');
}

fn finish_doc(out: &mut Vec<u8>, doc: Vec<u8>, pretty: bool) {
    if pretty {
        out.extend_from_slice(&json::indent(&doc));
    } else {
        out.extend_from_slice(&doc);
    }
    out.push(b'\n');
}

/// The response body for all statements: one document, or with
/// `chunked` one document per chunk of rows (newline-separated).
pub fn write_response(results: &[(StatementResult, bool)], params: &QueryParams) -> Vec<u8> {
    let divisor = epoch_divisor(params.epoch.as_deref());
    // Statement ids: a "not executed" entry repeats the failed statement's id.
    let mut ids = Vec::with_capacity(results.len());
    for (i, (result, _)) in results.iter().enumerate() {
        let repeat = i > 0 && matches!(result, Err(StatementError::NotExecuted));
        ids.push(if repeat { ids[i - 1] } else { i });
    }
    let mut out = Vec::new();
    if !params.chunked {
        let mut doc = Vec::new();
        doc.extend_from_slice(b"{\"results\":[");
        let mut first = true;
        for (i, (result, _)) in results.iter().enumerate() {
            // A later result with the same id replaces this one.
            if ids.get(i + 1) == Some(&ids[i]) {
                continue;
            }
            if !first {
                doc.push(b',');
            }
            first = false;
            match result {
                Ok(series) => {
                    let parts: Vec<(&OutSeries, &[Vec<Cell>], bool)> = series
                        .iter()
                        .map(|s| (s, s.values.as_slice(), false))
                        .collect();
                    write_result(&mut doc, ids[i], &parts, None, false, divisor);
                }
                Err(error) => write_result(&mut doc, ids[i], &[], Some(error), false, divisor),
            }
        }
        doc.extend_from_slice(b"]}");
        finish_doc(&mut out, doc, params.pretty);
        return out;
    }
    let chunk_size = params
        .chunk_size
        .filter(|n| *n > 0)
        .unwrap_or(CHUNK_SIZE_DEFAULT);
    for (i, (result, chunkable)) in results.iter().enumerate() {
        let id = ids[i];
        match result {
            Err(error) => {
                let mut doc = b"{\"results\":[".to_vec();
                write_result(&mut doc, id, &[], Some(error), false, divisor);
                doc.extend_from_slice(b"]}");
                finish_doc(&mut out, doc, params.pretty);
            }
            Ok(series) if series.is_empty() => {
                let mut doc = b"{\"results\":[".to_vec();
                write_result(&mut doc, id, &[], None, false, divisor);
                doc.extend_from_slice(b"]}");
                finish_doc(&mut out, doc, params.pretty);
            }
            Ok(series) if !chunkable => {
                // Meta statements answer in one document.
                let parts: Vec<(&OutSeries, &[Vec<Cell>], bool)> = series
                    .iter()
                    .map(|s| (s, s.values.as_slice(), false))
                    .collect();
                let mut doc = b"{\"results\":[".to_vec();
                write_result(&mut doc, id, &parts, None, false, divisor);
                doc.extend_from_slice(b"]}");
                finish_doc(&mut out, doc, params.pretty);
            }
            Ok(series) => {
                // Pieces: (series, rows, series continues).
                let mut pieces: Vec<(&OutSeries, &[Vec<Cell>], bool)> = Vec::new();
                for s in series {
                    if s.values.is_empty() {
                        pieces.push((s, &[], false));
                    }
                    let chunks: Vec<&[Vec<Cell>]> = s.values.chunks(chunk_size).collect();
                    let last = chunks.len().saturating_sub(1);
                    for (i, rows) in chunks.into_iter().enumerate() {
                        pieces.push((s, rows, i < last));
                    }
                }
                let count = pieces.len();
                for (i, piece) in pieces.into_iter().enumerate() {
                    let mut doc = b"{\"results\":[".to_vec();
                    write_result(&mut doc, id, &[piece], None, i + 1 < count, divisor);
                    doc.extend_from_slice(b"]}");
                    finish_doc(&mut out, doc, params.pretty);
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------- statements

/// `budget`: time buckets the request produced so far (all its statements
/// share [`super::Limits::buckets_max`]).
async fn run_statement(
    statement: &Statement,
    params: &QueryParams,
    backend: &impl QueryBackend,
    budget: &mut BucketBudget,
) -> StatementResult {
    match statement {
        Statement::ShowDatabases => {
            let values = backend
                .databases()
                .into_iter()
                .filter(|db| backend.may_read(db))
                .map(|db| vec![Cell::Value(Value::String(db))])
                .collect();
            Ok(vec![OutSeries {
                name: Some("databases".into()),
                tags: Vec::new(),
                columns: vec!["name".into()],
                values,
            }])
        }
        Statement::CreateDatabase { name, retention } => {
            let period = match retention {
                Some(clauses) => {
                    if let Some(rp) = clauses.name.as_ref().filter(|rp| *rp != "autogen") {
                        return Err(StatementError::RetentionPolicyNotSupported(rp.clone()));
                    }
                    retention_period(clauses, None)?
                }
                None => None,
            };
            backend
                .create_database(name, period)
                .await
                .map(|_| Vec::new())
                .map_err(StatementError::Backend)
        }
        Statement::AlterRetentionPolicy {
            policy,
            database,
            clauses,
        } => {
            let Some(existing) = backend.retention(database) else {
                return Err(StatementError::DatabaseNotFound(database.clone()));
            };
            if policy != "autogen" {
                return Err(StatementError::RetentionPolicyNotFound(policy.clone()));
            }
            match retention_period(clauses, Some(existing))? {
                Some(period) => backend
                    .set_retention(database, period)
                    .await
                    .map(|_| Vec::new())
                    .map_err(StatementError::Backend),
                None => Ok(Vec::new()),
            }
        }
        Statement::DropDatabase { name } => backend
            .drop_database(name)
            .await
            .map(|_| Vec::new())
            .map_err(StatementError::Backend),
        Statement::ShowRetentionPolicies { on } => {
            let db = database(on.as_ref(), params, backend)?;
            let period = backend
                .retention(&db)
                .ok_or_else(|| StatementError::DatabaseNotFound(db.clone()))?;
            Ok(vec![OutSeries {
                name: None,
                tags: Vec::new(),
                columns: [
                    "name",
                    "duration",
                    "shardGroupDuration",
                    "replicaN",
                    "default",
                ]
                .iter()
                .map(|c| c.to_string())
                .collect(),
                // ringest has no shard groups or replicas: the shard group
                // duration is the one InfluxDB would derive, replicaN 1.
                values: vec![vec![
                    Cell::Value(Value::String("autogen".into())),
                    Cell::Value(Value::String(period.to_string())),
                    Cell::Value(Value::String(go_duration(period.shard_group_ns()))),
                    Cell::Value(Value::Integer(1)),
                    Cell::Value(Value::Boolean(true)),
                ]],
            }])
        }
        Statement::ShowMeasurements {
            on,
            with,
            condition,
            limit,
            offset,
        } => {
            let Some(db) = show_database(on.as_ref(), params, backend)? else {
                return Ok(Vec::new());
            };
            let filter = match with {
                None => MeasurementFilter::All,
                Some(MeasurementName::Name(n)) => MeasurementFilter::Names(vec![n.clone()]),
                Some(MeasurementName::Regex(r)) => MeasurementFilter::Regex(r.clone()),
            };
            let schema =
                fetch_schema(backend, &db, filter, condition.as_ref(), SeriesWanted::None).await?;
            let values: Vec<Vec<Cell>> = limit_offset(schema.into_keys(), *limit, *offset)
                .map(|name| vec![Cell::Value(Value::String(name))])
                .collect();
            if values.is_empty() {
                return Ok(Vec::new());
            }
            Ok(vec![OutSeries {
                name: Some("measurements".into()),
                tags: Vec::new(),
                columns: vec!["name".into()],
                values,
            }])
        }
        Statement::ShowTagKeys {
            on,
            from,
            condition,
            limit,
            offset,
        } => {
            let Some(db) = show_database(on.as_ref(), params, backend)? else {
                return Ok(Vec::new());
            };
            let schema = fetch_schema(
                backend,
                &db,
                source_filter(from),
                condition.as_ref(),
                SeriesWanted::None,
            )
            .await?;
            let mut out = Vec::new();
            for (name, m) in schema {
                if !source_matches(from, &name) || m.tag_keys.is_empty() {
                    continue;
                }
                let values: Vec<Vec<Cell>> = limit_offset(m.tag_keys.into_iter(), *limit, *offset)
                    .map(|k| vec![Cell::Value(Value::String(k))])
                    .collect();
                if values.is_empty() {
                    continue;
                }
                out.push(OutSeries {
                    name: Some(name),
                    tags: Vec::new(),
                    columns: vec!["tagKey".into()],
                    values,
                });
            }
            Ok(out)
        }
        Statement::ShowTagValues {
            on,
            from,
            key,
            condition,
            limit,
            offset,
        } => {
            let Some(db) = show_database(on.as_ref(), params, backend)? else {
                return Ok(Vec::new());
            };
            // Series need carry only the keys asked for, when named.
            let keys = match key {
                KeyMatch::Eq(want) => Some(vec![want.clone()]),
                KeyMatch::In(keys) => Some(keys.clone()),
                _ => None,
            };
            let series = SeriesWanted::Keys(keys);
            let schema = fetch_schema(
                backend,
                &db,
                source_filter(from),
                condition.as_ref(),
                series,
            )
            .await?;
            let mut out = Vec::new();
            for (name, m) in schema {
                if !source_matches(from, &name) {
                    continue;
                }
                let mut pairs: BTreeSet<(String, String)> = BTreeSet::new();
                for series in &m.series {
                    for (k, v) in series {
                        let wanted = match key {
                            KeyMatch::Eq(want) => k == want,
                            KeyMatch::NotEq(want) => k != want,
                            KeyMatch::In(keys) => keys.contains(k),
                            KeyMatch::Regex(re) => re.is_match(k),
                            KeyMatch::NotRegex(re) => !re.is_match(k),
                        };
                        if wanted {
                            pairs.insert((k.clone(), v.clone()));
                        }
                    }
                }
                let values: Vec<Vec<Cell>> = limit_offset(pairs.into_iter(), *limit, *offset)
                    .map(|(k, v)| {
                        vec![Cell::Value(Value::String(k)), Cell::Value(Value::String(v))]
                    })
                    .collect();
                if values.is_empty() {
                    continue;
                }
                out.push(OutSeries {
                    name: Some(name),
                    tags: Vec::new(),
                    columns: vec!["key".into(), "value".into()],
                    values,
                });
            }
            Ok(out)
        }
        Statement::ShowFieldKeys {
            on,
            from,
            limit,
            offset,
        } => {
            let Some(db) = show_database(on.as_ref(), params, backend)? else {
                return Ok(Vec::new());
            };
            let schema =
                fetch_schema(backend, &db, source_filter(from), None, SeriesWanted::None).await?;
            let mut out = Vec::new();
            for (name, m) in schema {
                if !source_matches(from, &name) || m.fields.is_empty() {
                    continue;
                }
                let values: Vec<Vec<Cell>> = limit_offset(m.fields.into_iter(), *limit, *offset)
                    .map(|(k, t)| {
                        vec![
                            Cell::Value(Value::String(k)),
                            Cell::Value(Value::String(t.name().into())),
                        ]
                    })
                    .collect();
                if values.is_empty() {
                    continue;
                }
                out.push(OutSeries {
                    name: Some(name),
                    tags: Vec::new(),
                    columns: vec!["fieldKey".into(), "fieldType".into()],
                    values,
                });
            }
            Ok(out)
        }
        Statement::ShowSeries {
            on,
            from,
            condition,
            limit,
            offset,
        } => {
            let Some(db) = show_database(on.as_ref(), params, backend)? else {
                return Ok(Vec::new());
            };
            let schema = fetch_schema(
                backend,
                &db,
                source_filter(from),
                condition.as_ref(),
                SeriesWanted::Keys(None),
            )
            .await?;
            let mut keys = Vec::new();
            for (name, m) in schema {
                if !source_matches(from, &name) {
                    continue;
                }
                for series in &m.series {
                    keys.push(series_key(&name, series));
                }
            }
            keys.sort();
            let values: Vec<Vec<Cell>> = limit_offset(keys.into_iter(), *limit, *offset)
                .map(|k| vec![Cell::Value(Value::String(k))])
                .collect();
            if values.is_empty() {
                return Ok(Vec::new());
            }
            Ok(vec![OutSeries {
                name: None,
                tags: Vec::new(),
                columns: vec!["key".into()],
                values,
            }])
        }
        Statement::Select(select) => run_select(select, params, backend, budget).await,
    }
}

fn limit_offset<T>(
    items: impl Iterator<Item = T>,
    limit: usize,
    offset: usize,
) -> impl Iterator<Item = T> {
    items
        .skip(offset)
        .take(if limit == 0 { usize::MAX } else { limit })
}

/// `cpu,host=a` with line-protocol escaping.
fn series_key(name: &str, tags: &[(String, String)]) -> String {
    let escape = |text: &str, measurement: bool| -> String {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            if c == ',' || c == ' ' || (!measurement && c == '=') {
                out.push('\\');
            }
            out.push(c);
        }
        out
    };
    let mut key = escape(name, true);
    for (k, v) in tags {
        key.push(',');
        key.push_str(&escape(k, false));
        key.push('=');
        key.push_str(&escape(v, false));
    }
    key
}

/// Like [`database`], but an unknown database is `None` (InfluxDB answers
/// meta queries on it with no series rather than an error).
/// The period a statement's retention clauses set (`None`: `DURATION` not
/// given). `REPLICATION` is accepted and ignored (one node), `SHARD
/// DURATION` is checked against the duration as InfluxDB does and not
/// kept (no shard groups); `existing` is the period an ALTER changes.
fn retention_period(
    clauses: &RetentionClauses,
    existing: Option<Period>,
) -> Result<Option<Period>, StatementError> {
    let period = clauses
        .duration_ns
        .map(Period::from_ns)
        .transpose()
        .map_err(StatementError::RetentionPeriod)?;
    if let (Some(shard_ns), Some(effective)) = (clauses.shard_duration_ns, period.or(existing)) {
        if !effective.is_forever() && effective.as_ns() < shard_ns {
            return Err(StatementError::IncompatibleDurations);
        }
    }
    Ok(period)
}

fn show_database(
    on: Option<&String>,
    params: &QueryParams,
    backend: &impl QueryBackend,
) -> Result<Option<String>, StatementError> {
    match database(on, params, backend) {
        Ok(db) => Ok(Some(db)),
        Err(StatementError::DatabaseNotFound(_)) => Ok(None),
        Err(error) => Err(error),
    }
}

fn database(
    on: Option<&String>,
    params: &QueryParams,
    backend: &impl QueryBackend,
) -> Result<String, StatementError> {
    let db = on
        .cloned()
        .or_else(|| params.db.clone().filter(|d| !d.is_empty()))
        .ok_or(StatementError::DatabaseRequired)?;
    if !backend.may_read(&db) {
        return Err(StatementError::NotAuthorized(db));
    }
    if !backend.databases().contains(&db) {
        return Err(StatementError::DatabaseNotFound(db));
    }
    Ok(db)
}

fn source_filter(sources: &[Source]) -> MeasurementFilter {
    if sources.is_empty() {
        return MeasurementFilter::All;
    }
    let mut names = Vec::new();
    for source in sources {
        match &source.measurement {
            MeasurementName::Name(n) => names.push(n.clone()),
            MeasurementName::Regex(r) if sources.len() == 1 => {
                return MeasurementFilter::Regex(r.clone())
            }
            MeasurementName::Regex(_) => return MeasurementFilter::All,
        }
    }
    MeasurementFilter::Names(names)
}

fn source_matches(sources: &[Source], name: &str) -> bool {
    sources.is_empty()
        || sources.iter().any(|s| match &s.measurement {
            MeasurementName::Name(n) => n == name,
            MeasurementName::Regex(r) => r.is_match(name),
        })
}

/// Merged schema of one measurement over all shards.
#[derive(Debug, Default)]
struct Schema {
    tag_keys: BTreeSet<String>,
    fields: BTreeMap<String, FieldType>,
    series: BTreeSet<Vec<(String, String)>>,
}

/// Which series a schema fetch brings.
enum SeriesWanted {
    None,
    /// With only these tag keys (`None`: all of them).
    Keys(Option<Vec<String>>),
}

async fn fetch_schema(
    backend: &impl QueryBackend,
    db: &str,
    measurements: MeasurementFilter,
    condition: Option<&Expr>,
    series: SeriesWanted,
) -> Result<BTreeMap<String, Schema>, StatementError> {
    let (include_series, series_keys) = match series {
        SeriesWanted::None => (false, None),
        SeriesWanted::Keys(keys) => (true, keys),
    };
    // Tag predicates only; an identifier is read as a tag here.
    let tag_filter = condition
        .and_then(|c| to_tag_filter(c, &|_| true))
        .unwrap_or(TagFilter::All);
    let request = ScanRequest::Schema(SchemaRequest {
        database: db.to_string(),
        measurements,
        tag_filter,
        include_series,
        series_keys,
        series_limit: SERIES_MAX,
        // Raised to the retention cutoff by the backend (`clamp_to_retention`).
        time_min_ns: i64::MIN,
        // Set by the backend (`[query] time_limit_ms`).
        deadline: Deadline::NONE,
    });
    let responses = backend
        .scan(request)
        .await
        .map_err(StatementError::Backend)?;
    let mut merged: BTreeMap<String, Schema> = BTreeMap::new();
    for response in responses {
        let ScanResponse::Schema(list) = response else {
            continue;
        };
        for m in list {
            let entry = merged.entry(m.name).or_default();
            entry.tag_keys.extend(m.tag_keys);
            for (k, t) in m.fields {
                entry.fields.entry(k).or_insert(t);
            }
            entry.series.extend(m.series);
        }
    }
    Ok(merged)
}

/// A superset filter over tags for `expr` (`None` = no restriction).
fn to_tag_filter(expr: &Expr, is_tag: &dyn Fn(&str) -> bool) -> Option<TagFilter> {
    match expr {
        Expr::Paren(inner) => to_tag_filter(inner, is_tag),
        Expr::Binary { op, lhs, rhs } => match op {
            BinaryOp::And => match (to_tag_filter(lhs, is_tag), to_tag_filter(rhs, is_tag)) {
                (Some(a), Some(b)) => Some(TagFilter::And(Box::new(a), Box::new(b))),
                (a, b) => a.or(b),
            },
            BinaryOp::Or => {
                let a = to_tag_filter(lhs, is_tag)?;
                let b = to_tag_filter(rhs, is_tag)?;
                Some(TagFilter::Or(Box::new(a), Box::new(b)))
            }
            _ => {
                let Expr::VarRef { name, kind } = lhs.as_ref() else {
                    return None;
                };
                if *kind == Some(RefKind::Field)
                    || name.eq_ignore_ascii_case("time")
                    || (kind.is_none() && !is_tag(name))
                {
                    return None;
                }
                let key = name.clone();
                match (op, rhs.as_ref()) {
                    (BinaryOp::Eq, Expr::String(v)) => Some(TagFilter::Eq {
                        key,
                        value: v.clone(),
                    }),
                    (BinaryOp::NotEq, Expr::String(v)) => Some(TagFilter::NotEq {
                        key,
                        value: v.clone(),
                    }),
                    (BinaryOp::Match, Expr::Regex(r)) => Some(TagFilter::Match {
                        key,
                        regex: r.clone(),
                    }),
                    (BinaryOp::NotMatch, Expr::Regex(r)) => Some(TagFilter::NotMatch {
                        key,
                        regex: r.clone(),
                    }),
                    _ => None,
                }
            }
        },
        _ => None,
    }
}

// ---------------------------------------------------------------- time range

fn time_value(expr: &Expr, now: i64) -> Result<i64, StatementError> {
    match expr {
        Expr::Integer(n) => Ok(*n),
        Expr::Duration(d) => Ok(*d),
        Expr::Number(f) => Ok(*f as i64),
        Expr::String(s) => {
            qtime::parse_time(s).ok_or_else(|| StatementError::InvalidTime(s.clone()))
        }
        Expr::Call { name, args } if name == "now" && args.is_empty() => Ok(now),
        Expr::Paren(inner) => time_value(inner, now),
        Expr::Binary { op, lhs, rhs } if matches!(op, BinaryOp::Add | BinaryOp::Sub) => {
            let a = time_value(lhs, now)?;
            let b = time_value(rhs, now)?;
            Ok(if *op == BinaryOp::Add {
                a.saturating_add(b)
            } else {
                a.saturating_sub(b)
            })
        }
        _ => Err(StatementError::InvalidTime("unsupported".into())),
    }
}

fn is_time_ref(expr: &Expr) -> bool {
    matches!(expr, Expr::VarRef { name, .. } if name.eq_ignore_ascii_case("time"))
}

/// Takes the time comparisons out of the top-level ANDs of `expr`.
fn split_time(
    expr: &Expr,
    now: i64,
    min: &mut i64,
    max: &mut i64,
) -> Result<Option<Expr>, StatementError> {
    match expr {
        Expr::Paren(inner) => split_time(inner, now, min, max),
        Expr::Binary {
            op: BinaryOp::And,
            lhs,
            rhs,
        } => {
            let a = split_time(lhs, now, min, max)?;
            let b = split_time(rhs, now, min, max)?;
            Ok(match (a, b) {
                (Some(a), Some(b)) => Some(Expr::Binary {
                    op: BinaryOp::And,
                    lhs: Box::new(a),
                    rhs: Box::new(b),
                }),
                (a, b) => a.or(b),
            })
        }
        Expr::Binary { op, lhs, rhs }
            if op.is_comparison() && (is_time_ref(lhs) || is_time_ref(rhs)) =>
        {
            let (op, value) = if is_time_ref(lhs) {
                (*op, time_value(rhs, now)?)
            } else {
                let flipped = match op {
                    BinaryOp::Lt => BinaryOp::Gt,
                    BinaryOp::LtEq => BinaryOp::GtEq,
                    BinaryOp::Gt => BinaryOp::Lt,
                    BinaryOp::GtEq => BinaryOp::LtEq,
                    other => *other,
                };
                (flipped, time_value(lhs, now)?)
            };
            match op {
                BinaryOp::Gt => *min = (*min).max(value.saturating_add(1)),
                BinaryOp::GtEq => *min = (*min).max(value),
                BinaryOp::Lt => *max = (*max).min(value.saturating_sub(1)),
                BinaryOp::LtEq => *max = (*max).min(value),
                BinaryOp::Eq => {
                    *min = (*min).max(value);
                    *max = (*max).min(value);
                }
                _ => {
                    return Err(StatementError::InvalidTime(
                        "invalid time comparison operator".into(),
                    ))
                }
            }
            Ok(None)
        }
        other => Ok(Some(other.clone())),
    }
}

// ---------------------------------------------------------------- row evaluation

/// The row an expression is evaluated against.
struct RowContext<'a> {
    time: i64,
    tags: &'a [(String, String)],
    tag_keys: &'a BTreeSet<String>,
    /// (field name, value) of this row; a handful of columns, so a linear
    /// scan beats hashing.
    fields: &'a [(&'a str, Option<&'a Value>)],
}

impl RowContext<'_> {
    /// `None`: not a column of this scan; `Some(None)`: a null field.
    fn field(&self, name: &str) -> Option<Option<&Value>> {
        self.fields
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }
}

fn lookup_tag<'a>(tags: &'a [(String, String)], key: &str) -> &'a str {
    tags.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

fn eval_row(expr: &Expr, ctx: &RowContext<'_>) -> Option<Value> {
    match expr {
        Expr::VarRef { name, kind } => {
            let as_tag = || Some(Value::String(lookup_tag(ctx.tags, name).to_string()));
            match kind {
                Some(RefKind::Tag) => as_tag(),
                Some(RefKind::Field) => ctx.field(name).flatten().cloned(),
                None => {
                    if let Some(value) = ctx.field(name) {
                        value.cloned()
                    } else if ctx.tag_keys.contains(name) {
                        as_tag()
                    } else if name.eq_ignore_ascii_case("time") {
                        Some(Value::Integer(ctx.time))
                    } else {
                        None
                    }
                }
            }
        }
        Expr::Integer(n) => Some(Value::Integer(*n)),
        Expr::Number(f) => Some(Value::Float(*f)),
        Expr::String(s) => Some(Value::String(s.clone())),
        Expr::Boolean(b) => Some(Value::Boolean(*b)),
        Expr::Duration(d) => Some(Value::Integer(*d)),
        Expr::Paren(inner) => eval_row(inner, ctx),
        Expr::Binary { op, lhs, rhs } => match op {
            BinaryOp::And => Some(Value::Boolean(eval_bool(lhs, ctx) && eval_bool(rhs, ctx))),
            BinaryOp::Or => Some(Value::Boolean(eval_bool(lhs, ctx) || eval_bool(rhs, ctx))),
            BinaryOp::Match | BinaryOp::NotMatch => {
                let Expr::Regex(re) = rhs.as_ref() else {
                    return Some(Value::Boolean(false));
                };
                match eval_row(lhs, ctx) {
                    Some(Value::String(s)) => {
                        Some(Value::Boolean(re.is_match(&s) == (*op == BinaryOp::Match)))
                    }
                    _ => Some(Value::Boolean(false)),
                }
            }
            op if op.is_comparison() => {
                let a = eval_row(lhs, ctx);
                let b = eval_row(rhs, ctx);
                Some(Value::Boolean(match (a, b) {
                    (Some(a), Some(b)) => compare(*op, &a, &b),
                    _ => false,
                }))
            }
            op => arithmetic(*op, eval_row(lhs, ctx)?, eval_row(rhs, ctx)?),
        },
        Expr::Call { name, args } if name == "now" && args.is_empty() => None,
        _ => None,
    }
}

fn eval_bool(expr: &Expr, ctx: &RowContext<'_>) -> bool {
    matches!(eval_row(expr, ctx), Some(Value::Boolean(true)))
}

fn as_f64(value: &Value) -> Option<f64> {
    match value {
        Value::Float(f) => Some(*f),
        Value::Integer(i) => Some(*i as f64),
        Value::Unsigned(u) => Some(*u as f64),
        _ => None,
    }
}

fn compare(op: BinaryOp, a: &Value, b: &Value) -> bool {
    use std::cmp::Ordering;
    let ordering: Option<Ordering> = match (a, b) {
        (Value::Integer(x), Value::Integer(y)) => Some(x.cmp(y)),
        (Value::Unsigned(x), Value::Unsigned(y)) => Some(x.cmp(y)),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Boolean(x), Value::Boolean(y)) => {
            return match op {
                BinaryOp::Eq => x == y,
                BinaryOp::NotEq => x != y,
                _ => false,
            }
        }
        _ => match (as_f64(a), as_f64(b)) {
            (Some(x), Some(y)) => x.partial_cmp(&y),
            _ => None,
        },
    };
    let Some(ordering) = ordering else {
        return false;
    };
    match op {
        BinaryOp::Eq => ordering == Ordering::Equal,
        BinaryOp::NotEq => ordering != Ordering::Equal,
        BinaryOp::Lt => ordering == Ordering::Less,
        BinaryOp::LtEq => ordering != Ordering::Greater,
        BinaryOp::Gt => ordering == Ordering::Greater,
        BinaryOp::GtEq => ordering != Ordering::Less,
        _ => false,
    }
}

fn arithmetic(op: BinaryOp, a: Value, b: Value) -> Option<Value> {
    match (&a, &b) {
        (Value::Integer(x), Value::Integer(y)) => Some(match op {
            BinaryOp::Add => Value::Integer(x.wrapping_add(*y)),
            BinaryOp::Sub => Value::Integer(x.wrapping_sub(*y)),
            BinaryOp::Mul => Value::Integer(x.wrapping_mul(*y)),
            BinaryOp::Div => {
                if *y == 0 {
                    Value::Float(0.0)
                } else {
                    Value::Float(*x as f64 / *y as f64)
                }
            }
            BinaryOp::Mod => {
                if *y == 0 {
                    Value::Integer(0)
                } else {
                    Value::Integer(x.wrapping_rem(*y))
                }
            }
            _ => return None,
        }),
        _ => {
            let x = as_f64(&a)?;
            let y = as_f64(&b)?;
            Some(Value::Float(match op {
                BinaryOp::Add => x + y,
                BinaryOp::Sub => x - y,
                BinaryOp::Mul => x * y,
                BinaryOp::Div => {
                    if y == 0.0 {
                        0.0
                    } else {
                        x / y
                    }
                }
                BinaryOp::Mod => x % y,
                _ => return None,
            }))
        }
    }
}

// ---------------------------------------------------------------- select

const AGGREGATES: &[&str] = &[
    "count",
    "mean",
    "sum",
    "min",
    "max",
    "first",
    "last",
    "median",
    "spread",
    "stddev",
    "percentile",
    "distinct",
    "mode",
];
const SELECTORS: &[&str] = &["min", "max", "first", "last", "percentile"];
const TRANSFORMS: &[&str] = &[
    "derivative",
    "non_negative_derivative",
    "difference",
    "non_negative_difference",
    "cumulative_sum",
    "moving_average",
];
/// Aggregates that read only numeric fields when expanded from `*`.
const NUMERIC_ONLY: &[&str] = &[
    "mean",
    "sum",
    "min",
    "max",
    "median",
    "spread",
    "stddev",
    "percentile",
];

fn contains_call(expr: &Expr) -> bool {
    match expr {
        Expr::Call { name, .. } => name != "now",
        Expr::Binary { lhs, rhs, .. } => contains_call(lhs) || contains_call(rhs),
        Expr::Paren(inner) => contains_call(inner),
        _ => false,
    }
}

fn contains_raw_ref(expr: &Expr) -> bool {
    match expr {
        Expr::VarRef { .. } | Expr::Wildcard => true,
        Expr::Binary { lhs, rhs, .. } => contains_raw_ref(lhs) || contains_raw_ref(rhs),
        Expr::Paren(inner) => contains_raw_ref(inner),
        _ => false,
    }
}

/// InfluxDB's column name of a field expression.
fn expr_name(expr: &Expr) -> String {
    fn walk(expr: &Expr, names: &mut Vec<String>) {
        match expr {
            Expr::VarRef { name, .. } => names.push(name.clone()),
            Expr::Call { name, .. } => names.push(name.clone()),
            Expr::Binary { lhs, rhs, .. } => {
                walk(lhs, names);
                walk(rhs, names);
            }
            Expr::Paren(inner) => walk(inner, names),
            _ => {}
        }
    }
    match expr {
        Expr::VarRef { name, .. } => name.clone(),
        Expr::Call { name, .. } => name.clone(),
        Expr::Paren(inner) => expr_name(inner),
        _ => {
            let mut names = Vec::new();
            walk(expr, &mut names);
            names.join("_")
        }
    }
}

/// Appends `_1`, `_2`, … to repeated column names, like InfluxDB.
fn dedup_columns(names: Vec<String>) -> Vec<String> {
    let mut seen: BTreeSet<String> = BTreeSet::new();
    seen.insert("time".into());
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let mut candidate = name.clone();
        let mut n = 1;
        while seen.contains(&candidate) {
            candidate = format!("{name}_{n}");
            n += 1;
        }
        seen.insert(candidate.clone());
        out.push(candidate);
    }
    out
}

/// Output column of one measurement after `*` expansion.
struct Column {
    name: String,
    expr: Expr,
}

fn is_numeric(t: FieldType) -> bool {
    matches!(
        t,
        FieldType::Float | FieldType::Integer | FieldType::Unsigned
    )
}

/// Expands `*` (raw) and `fn(*)` / `fn(/re/)` (aggregates) for one measurement.
fn expand_fields(select: &Select, schema: &Schema, group_keys: &BTreeSet<String>) -> Vec<Column> {
    let mut names = Vec::new();
    let mut exprs = Vec::new();
    for field in &select.fields {
        match &field.expr {
            Expr::Wildcard => {
                let mut all: Vec<(String, Option<RefKind>)> = schema
                    .tag_keys
                    .iter()
                    .filter(|k| !group_keys.contains(*k))
                    .map(|k| (k.clone(), Some(RefKind::Tag)))
                    .chain(
                        schema
                            .fields
                            .keys()
                            .map(|k| (k.clone(), Some(RefKind::Field))),
                    )
                    .collect();
                all.sort_by(|a, b| a.0.cmp(&b.0));
                for (name, kind) in all {
                    names.push(name.clone());
                    exprs.push(Expr::VarRef { name, kind });
                }
            }
            Expr::Call { name, args }
                if matches!(args.first(), Some(Expr::Wildcard | Expr::Regex(_))) =>
            {
                let numeric = NUMERIC_ONLY.contains(&name.as_str());
                for (field_name, t) in &schema.fields {
                    if numeric && !is_numeric(*t) {
                        continue;
                    }
                    if let Some(Expr::Regex(re)) = args.first() {
                        if !re.is_match(field_name) {
                            continue;
                        }
                    }
                    let mut new_args = args.clone();
                    new_args[0] = Expr::VarRef {
                        name: field_name.clone(),
                        kind: Some(RefKind::Field),
                    };
                    names.push(format!(
                        "{}_{}",
                        field.alias.clone().unwrap_or_else(|| name.clone()),
                        field_name
                    ));
                    exprs.push(Expr::Call {
                        name: name.clone(),
                        args: new_args,
                    });
                }
            }
            expr => {
                names.push(field.alias.clone().unwrap_or_else(|| expr_name(expr)));
                exprs.push(expr.clone());
            }
        }
    }
    dedup_columns(names)
        .into_iter()
        .zip(exprs)
        .map(|(name, expr)| Column { name, expr })
        .collect()
}

/// InfluxDB refuses numeric aggregates over string and boolean fields with
/// the Go iterator type in the message.
fn check_argument_types(expr: &Expr, schema: &Schema) -> Result<(), StatementError> {
    match expr {
        Expr::Call { name, args } => {
            if let Some(Expr::VarRef { name: field, .. }) = args.first() {
                let numeric_only = matches!(
                    name.as_str(),
                    "mean" | "sum" | "median" | "stddev" | "spread"
                );
                let no_strings = matches!(name.as_str(), "min" | "max" | "percentile");
                let iterator = match schema.fields.get(field) {
                    Some(FieldType::String) if numeric_only || no_strings => {
                        Some("stringInterruptIterator")
                    }
                    Some(FieldType::Boolean) if numeric_only => Some("booleanInterruptIterator"),
                    _ => None,
                };
                if let Some(iterator) = iterator {
                    return Err(StatementError::UnsupportedIterator {
                        function: name.clone(),
                        iterator,
                    });
                }
            }
            args.iter()
                .try_for_each(|a| check_argument_types(a, schema))
        }
        Expr::Binary { lhs, rhs, .. } => {
            check_argument_types(lhs, schema)?;
            check_argument_types(rhs, schema)
        }
        Expr::Paren(inner) => check_argument_types(inner, schema),
        _ => Ok(()),
    }
}

/// Field names referenced by `expr` (not tags).
fn collect_fields(expr: &Expr, schema: &Schema, out: &mut Vec<String>) {
    match expr {
        Expr::VarRef { name, kind } => {
            let is_field = match kind {
                Some(RefKind::Field) => true,
                Some(RefKind::Tag) => false,
                None => {
                    schema.fields.contains_key(name)
                        || (!schema.tag_keys.contains(name) && !name.eq_ignore_ascii_case("time"))
                }
            };
            if is_field && !out.contains(name) {
                out.push(name.clone());
            }
        }
        Expr::Call { args, .. } => {
            if let Some(first) = args.first() {
                collect_fields(first, schema, out);
            }
        }
        Expr::Binary { lhs, rhs, .. } => {
            collect_fields(lhs, schema, out);
            collect_fields(rhs, schema, out);
        }
        Expr::Paren(inner) => collect_fields(inner, schema, out),
        _ => {}
    }
}

fn validate_calls(expr: &Expr, inside_transform: bool) -> Result<(), StatementError> {
    match expr {
        Expr::Call { name, args } => {
            if TRANSFORMS.contains(&name.as_str()) {
                if inside_transform {
                    return Err(StatementError::UndefinedFunction(name.clone()));
                }
                let ok = match name.as_str() {
                    "moving_average" => args.len() == 2,
                    "derivative" | "non_negative_derivative" => {
                        args.len() == 1 || (args.len() == 2 && matches!(args[1], Expr::Duration(_)))
                    }
                    _ => args.len() == 1,
                };
                if !ok {
                    return Err(StatementError::WrongArguments(format!(
                        "invalid number of arguments for {name}, expected 1, got {}",
                        args.len()
                    )));
                }
                return validate_calls(&args[0], true);
            }
            if !AGGREGATES.contains(&name.as_str()) {
                return Err(StatementError::UndefinedFunction(name.clone()));
            }
            let expected = if name == "percentile" { 2 } else { 1 };
            if args.len() != expected {
                return Err(StatementError::WrongArguments(format!(
                    "invalid number of arguments for {name}, expected {expected}, got {}",
                    args.len()
                )));
            }
            if !matches!(
                args[0],
                Expr::VarRef { .. } | Expr::Wildcard | Expr::Regex(_)
            ) {
                return Err(StatementError::WrongArguments(format!(
                    "expected field argument in {name}()"
                )));
            }
            if name == "percentile" && !matches!(args[1], Expr::Integer(_) | Expr::Number(_)) {
                return Err(StatementError::WrongArguments(
                    "expected float argument in percentile()".into(),
                ));
            }
            Ok(())
        }
        Expr::Binary { lhs, rhs, .. } => {
            validate_calls(lhs, inside_transform)?;
            validate_calls(rhs, inside_transform)
        }
        Expr::Paren(inner) => validate_calls(inner, inside_transform),
        _ => Ok(()),
    }
}

/// The rows of one output group before formatting.
struct Group {
    key: Vec<(String, String)>,
    series: Vec<SeriesRows>,
}

async fn run_select(
    select: &Select,
    params: &QueryParams,
    backend: &impl QueryBackend,
    budget: &mut BucketBudget,
) -> StatementResult {
    let zone = match &select.timezone {
        Some(name) => qtime::Zone::load(name)
            .ok_or_else(|| StatementError::UnsupportedTimeZone(name.clone()))?,
        None => qtime::Zone::utc(),
    };
    let zone = std::rc::Rc::new(zone);
    let explicit_db = select.sources.iter().find_map(|s| s.database.clone());
    let db = database(explicit_db.as_ref(), params, backend)?;
    // One retention policy exists: autogen.
    let policies = select
        .sources
        .iter()
        .filter_map(|s| s.retention_policy.as_ref())
        .chain(params.rp.as_ref().filter(|rp| !rp.is_empty()));
    for rp in policies {
        if rp != "autogen" {
            return Err(StatementError::RetentionPolicyNotFound(rp.clone()));
        }
    }
    for field in &select.fields {
        validate_calls(&field.expr, false)?;
    }
    let has_calls = select.fields.iter().any(|f| contains_call(&f.expr));
    let has_raw = select.fields.iter().any(|f| contains_raw_ref(&f.expr));
    if has_calls && has_raw {
        return Err(StatementError::MixedAggregates);
    }
    if !has_calls && select.group_time.is_some() {
        return Err(StatementError::GroupByRequiresAggregate);
    }
    let mut time_min = TIME_MIN_NS;
    let mut time_max = TIME_MAX_NS;
    let rest = match &select.condition {
        Some(c) => split_time(c, params.now_ns, &mut time_min, &mut time_max)?,
        None => None,
    };
    if select.group_time.is_some() && time_max == TIME_MAX_NS {
        time_max = params.now_ns;
    }
    let schema_all = fetch_schema(
        backend,
        &db,
        source_filter(&select.sources),
        None,
        SeriesWanted::None,
    )
    .await?;
    let mut out: Vec<OutSeries> = Vec::new();
    for (measurement, schema) in &schema_all {
        if !source_matches(&select.sources, measurement) {
            continue;
        }
        let group_keys: BTreeSet<String> = match &select.group_tags {
            GroupTags::All => schema.tag_keys.clone(),
            GroupTags::Keys(keys) => keys.iter().cloned().collect(),
        };
        let columns = expand_fields(select, schema, &group_keys);
        if columns.is_empty() {
            continue;
        }
        let mut fields = Vec::new();
        for column in &columns {
            collect_fields(&column.expr, schema, &mut fields);
            check_argument_types(&column.expr, schema)?;
        }
        // Only tags (or unknown names) selected: InfluxDB answers no data.
        if fields.is_empty() {
            continue;
        }
        let mut condition_fields = Vec::new();
        if let Some(rest) = &rest {
            collect_fields(rest, schema, &mut condition_fields);
            condition_fields.retain(|f| !fields.contains(f));
        }
        let tag_filter = rest
            .as_ref()
            .and_then(|c| {
                to_tag_filter(c, &|k| {
                    schema.tag_keys.contains(k) && !schema.fields.contains_key(k)
                })
            })
            .unwrap_or(TagFilter::All);
        let show_tags = !group_keys.is_empty();
        let time_range = (time_min, time_max);
        if let Some(request) = pushdown::request(
            select,
            &zone,
            &columns,
            schema,
            rest.as_ref(),
            pushdown::Target {
                database: &db,
                measurement,
                tag_filter: &tag_filter,
                group_keys: &group_keys,
                time_min_ns: time_min.saturating_sub(lookback_ns(select)),
                time_max_ns: time_max,
                fields: &fields,
                limits: params.limits,
            },
        ) {
            let responses = backend
                .scan(ScanRequest::Aggregate(request))
                .await
                .map_err(StatementError::Backend)?;
            for (index, (key, group)) in pushdown::merge(responses).into_iter().enumerate() {
                if index % GROUPS_PER_YIELD == GROUPS_PER_YIELD - 1 {
                    futures_lite::future::yield_now().await;
                }
                let input = GroupInput::Buckets {
                    fields: &fields,
                    buckets: &group,
                };
                let rows = aggregate_group(select, &zone, &columns, input, time_range, budget)?;
                let key = if show_tags { key } else { Vec::new() };
                emit_group(select, &zone, measurement, &columns, key, rows, &mut out);
            }
            continue;
        }
        let request = ScanRequest::Rows(RowsRequest {
            database: db.clone(),
            measurements: vec![measurement.clone()],
            tag_filter,
            time_min_ns: time_min.saturating_sub(lookback_ns(select)),
            time_max_ns: time_max,
            fields: fields.clone(),
            condition_fields: condition_fields.clone(),
            row_limit: params.limits.rows_max,
            deadline: Deadline::NONE,
        });
        let responses = backend
            .scan(request)
            .await
            .map_err(StatementError::Backend)?;
        let mut series: Vec<SeriesRows> = Vec::new();
        for response in responses {
            if let ScanResponse::Rows(rows) = response {
                series.extend(rows);
            }
        }
        // Group series by the GROUP BY tag values.
        let mut groups: BTreeMap<Vec<(String, String)>, Vec<SeriesRows>> = BTreeMap::new();
        for s in series {
            let key: Vec<(String, String)> = group_keys
                .iter()
                .map(|k| (k.clone(), lookup_tag(&s.tags, k).to_string()))
                .collect();
            groups.entry(key).or_default().push(s);
        }
        let column_names: Vec<String> = fields.iter().chain(&condition_fields).cloned().collect();
        let groups: Vec<Group> = groups
            .into_iter()
            .map(|(key, mut series)| {
                series.sort_by_cached_key(|s| series_key(measurement, &s.tags));
                Group { key, series }
            })
            .collect();
        for (index, group) in groups.into_iter().enumerate() {
            // Let ingest run between groups: queries never hold the shard's
            // executor for long (the integrator runs them in a low-priority
            // task queue; this is where they give way).
            if index % GROUPS_PER_YIELD == GROUPS_PER_YIELD - 1 {
                futures_lite::future::yield_now().await;
            }
            let rows = if has_calls {
                let input = GroupInput::Rows {
                    group: &group,
                    column_names: &column_names,
                    tag_keys: &schema.tag_keys,
                    condition: rest.as_ref(),
                };
                aggregate_group(select, &zone, &columns, input, time_range, budget)?
            } else {
                raw_group(
                    &columns,
                    &group,
                    &column_names,
                    &schema.tag_keys,
                    rest.as_ref(),
                )
            };
            let key = if show_tags { group.key } else { Vec::new() };
            emit_group(select, &zone, measurement, &columns, key, rows, &mut out);
        }
    }
    Ok(limit_offset(out.into_iter(), select.slimit, select.soffset).collect())
}

/// Orders, limits and zones one group's rows and appends them as a series.
fn emit_group(
    select: &Select,
    zone: &std::rc::Rc<qtime::Zone>,
    measurement: &str,
    columns: &[Column],
    tags: Vec<(String, String)>,
    mut rows: Vec<Vec<Cell>>,
    out: &mut Vec<OutSeries>,
) {
    if select.descending {
        rows.reverse();
    }
    let mut rows: Vec<Vec<Cell>> =
        limit_offset(rows.into_iter(), select.limit, select.offset).collect();
    if !zone.is_utc() {
        for row in &mut rows {
            if let Some(Cell::Time(t)) = row.first() {
                row[0] = Cell::ZonedTime(*t, zone.clone());
            }
        }
    }
    if rows.is_empty() {
        return;
    }
    out.push(OutSeries {
        name: Some(measurement.to_string()),
        tags,
        columns: std::iter::once("time".to_string())
            .chain(columns.iter().map(|c| c.name.clone()))
            .collect(),
        values: rows,
    });
}

/// The order in which InfluxDB 1.x's sorted merge emits the rows of several
/// series (given in series-key order): a Go `container/heap` ordered by time
/// only, so rows with equal times come out in heap order, not key order.
fn go_merge_order(series: &[SeriesRows], aux: &[AuxRef]) -> Vec<(usize, usize)> {
    // Go's sortedMergeHeap.Less: time, then the selected values in name
    // order while both are strings; the first non-string pair ends it.
    let text = |(s, r): (usize, usize), aux: &AuxRef| -> Option<&str> {
        match aux {
            AuxRef::Tag(key) => Some(lookup_tag(&series[s].tags, key)),
            AuxRef::Field(c) => match series[s].columns[*c][r].as_ref() {
                Some(Value::String(v)) => Some(v.as_str()),
                _ => None,
            },
        }
    };
    let less = |heap: &[(usize, usize)], i: usize, j: usize| -> bool {
        let (a, b) = (heap[i], heap[j]);
        let (ta, tb) = (series[a.0].times[a.1], series[b.0].times[b.1]);
        if ta != tb {
            return ta < tb;
        }
        for aux in aux {
            match (text(a, aux), text(b, aux)) {
                (Some(x), Some(y)) if x == y => continue,
                (Some(x), Some(y)) => return x < y,
                _ => return false,
            }
        }
        false
    };
    go_heap_order(series, &less)
}

/// A value the merge compares on equal times: a tag, or a field column.
#[derive(Clone, Debug)]
enum AuxRef {
    Tag(String),
    Field(usize),
}

/// Heap order of (series, row) items: `less(heap, i, j)`.
type HeapLess<'a> = dyn Fn(&[(usize, usize)], usize, usize) -> bool + 'a;

/// Pops every row through a Go `container/heap` with `less`.
fn go_heap_order(series: &[SeriesRows], less: &HeapLess<'_>) -> Vec<(usize, usize)> {
    fn down(less: &HeapLess<'_>, heap: &mut [(usize, usize)], i0: usize, n: usize) {
        let mut i = i0;
        loop {
            let j1 = 2 * i + 1;
            if j1 >= n {
                break;
            }
            let mut j = j1;
            let j2 = j1 + 1;
            if j2 < n && less(heap, j2, j1) {
                j = j2;
            }
            if !less(heap, j, i) {
                break;
            }
            heap.swap(i, j);
            i = j;
        }
    }
    fn up(less: &HeapLess<'_>, heap: &mut [(usize, usize)], mut j: usize) {
        while j > 0 {
            let i = (j - 1) / 2;
            if !less(heap, j, i) {
                break;
            }
            heap.swap(i, j);
            j = i;
        }
    }
    let total: usize = series.iter().map(|s| s.times.len()).sum();
    let mut out = Vec::with_capacity(total);
    let mut heap: Vec<(usize, usize)> = (0..series.len())
        .filter(|s| !series[*s].times.is_empty())
        .map(|s| (s, 0))
        .collect();
    let n = heap.len();
    for i in (0..n / 2).rev() {
        down(less, &mut heap, i, n);
    }
    while !heap.is_empty() {
        let last = heap.len() - 1;
        heap.swap(0, last);
        down(less, &mut heap, 0, last);
        let Some((s, r)) = heap.pop() else { break };
        out.push((s, r));
        if r + 1 < series[s].times.len() {
            heap.push((s, r + 1));
            let last = heap.len() - 1;
            up(less, &mut heap, last);
        }
    }
    out
}

/// Iterates the rows of a group in time order (ties: series order),
/// passing the WHERE condition.
fn for_each_row(
    group: &Group,
    column_names: &[String],
    tag_keys: &BTreeSet<String>,
    condition: Option<&Expr>,
    aux: &[AuxRef],
    mut visit: impl FnMut(i64, &RowContext<'_>),
) {
    let order = go_merge_order(&group.series, aux);
    let mut fields: Vec<(&str, Option<&Value>)> = Vec::with_capacity(column_names.len());
    for (s, r) in order {
        let series = &group.series[s];
        let time = series.times[r];
        fields.clear();
        for (c, name) in column_names.iter().enumerate() {
            fields.push((name.as_str(), series.columns[c][r].as_ref()));
        }
        let ctx = RowContext {
            time,
            tags: &series.tags,
            tag_keys,
            fields: &fields,
        };
        if let Some(condition) = condition {
            if !eval_bool(condition, &ctx) {
                continue;
            }
        }
        visit(time, &ctx);
    }
}

fn raw_group(
    columns: &[Column],
    group: &Group,
    column_names: &[String],
    tag_keys: &BTreeSet<String>,
    condition: Option<&Expr>,
) -> Vec<Vec<Cell>> {
    let mut rows = Vec::new();
    // Selected names in name order, for InfluxDB's tie order.
    let mut names: Vec<(String, Option<RefKind>)> = Vec::new();
    for column in columns {
        collect_refs(&column.expr, &mut names);
    }
    names.sort_by(|a, b| a.0.cmp(&b.0));
    names.dedup_by(|a, b| a.0 == b.0);
    let aux: Vec<AuxRef> = names
        .into_iter()
        .filter_map(|(name, kind)| {
            let field = column_names.iter().position(|c| *c == name);
            match (kind, field) {
                (Some(RefKind::Tag), _) | (None, None) if tag_keys.contains(&name) => {
                    Some(AuxRef::Tag(name))
                }
                (Some(RefKind::Tag), _) => None,
                (_, Some(c)) => Some(AuxRef::Field(c)),
                _ => None,
            }
        })
        .collect();
    for_each_row(
        group,
        column_names,
        tag_keys,
        condition,
        &aux,
        |time, ctx| {
            let mut row = Vec::with_capacity(columns.len() + 1);
            row.push(Cell::Time(time));
            let mut any_field = false;
            for column in columns {
                let tag = is_tag_expr(&column.expr, ctx);
                // A tag the row's series lacks is null in a selected column
                // (InfluxDB 1.x); WHERE still compares it as "".
                let value = if tag && tag_absent(&column.expr, ctx) {
                    None
                } else {
                    eval_row(&column.expr, ctx)
                };
                if value.is_some() && !tag {
                    any_field = true;
                }
                row.push(value.map_or(Cell::Null, Cell::Value));
            }
            if any_field {
                rows.push(row);
            }
        },
    );
    rows
}

/// Every reference in `expr` with its cast.
fn collect_refs(expr: &Expr, out: &mut Vec<(String, Option<RefKind>)>) {
    match expr {
        Expr::VarRef { name, kind } => out.push((name.clone(), *kind)),
        Expr::Binary { lhs, rhs, .. } => {
            collect_refs(lhs, out);
            collect_refs(rhs, out);
        }
        Expr::Paren(inner) => collect_refs(inner, out),
        _ => {}
    }
}

/// Whether `expr` names a tag the row's series does not have.
fn tag_absent(expr: &Expr, ctx: &RowContext<'_>) -> bool {
    match expr {
        Expr::VarRef { name, .. } => !ctx.tags.iter().any(|(k, _)| k == name),
        _ => false,
    }
}

fn is_tag_expr(expr: &Expr, ctx: &RowContext<'_>) -> bool {
    match expr {
        Expr::VarRef {
            kind: Some(RefKind::Tag),
            ..
        } => true,
        Expr::VarRef { name, kind: None } => {
            ctx.field(name).is_none() && ctx.tag_keys.contains(name)
        }
        _ => false,
    }
}

// ---------------------------------------------------------------- aggregates

/// An aggregate over one field, computed per bucket.
#[derive(Clone, Debug, PartialEq)]
struct BaseCall {
    function: String,
    field: String,
    /// percentile's N.
    argument: f64,
}

/// A transformation over a base call.
#[derive(Clone, Debug)]
struct TransformCall {
    function: String,
    base: usize,
    /// derivative unit (ns) or moving_average N.
    argument: i64,
}

enum Plan {
    Base(usize),
    Transform(usize),
    Literal(Value),
    Binary(BinaryOp, Box<Plan>, Box<Plan>),
    Null,
}

fn plan_expr(
    expr: &Expr,
    group_interval: Option<i64>,
    bases: &mut Vec<BaseCall>,
    transforms: &mut Vec<TransformCall>,
) -> Plan {
    match expr {
        Expr::Call { name, args } if TRANSFORMS.contains(&name.as_str()) => {
            let Plan::Base(base) = plan_expr(&args[0], group_interval, bases, transforms) else {
                return Plan::Null;
            };
            let argument = match (name.as_str(), args.get(1)) {
                ("moving_average", Some(Expr::Integer(n))) => *n,
                ("moving_average", _) => 1,
                (_, Some(Expr::Duration(d))) => *d,
                // Default unit: the GROUP BY interval, else one second.
                _ => group_interval.unwrap_or(1_000_000_000),
            };
            transforms.push(TransformCall {
                function: name.clone(),
                base,
                argument,
            });
            Plan::Transform(transforms.len() - 1)
        }
        Expr::Call { name, args } => {
            let field = match args.first() {
                Some(Expr::VarRef { name, .. }) => name.clone(),
                _ => return Plan::Null,
            };
            let argument = match args.get(1) {
                Some(Expr::Integer(n)) => *n as f64,
                Some(Expr::Number(f)) => *f,
                _ => 0.0,
            };
            let call = BaseCall {
                function: name.clone(),
                field,
                argument,
            };
            let index = bases.iter().position(|b| *b == call).unwrap_or_else(|| {
                bases.push(call);
                bases.len() - 1
            });
            Plan::Base(index)
        }
        // A bare field inside a transformation without GROUP BY time.
        Expr::VarRef { name, .. } => {
            let call = BaseCall {
                function: "raw".into(),
                field: name.clone(),
                argument: 0.0,
            };
            let index = bases.iter().position(|b| *b == call).unwrap_or_else(|| {
                bases.push(call);
                bases.len() - 1
            });
            Plan::Base(index)
        }
        Expr::Integer(n) => Plan::Literal(Value::Integer(*n)),
        Expr::Number(f) => Plan::Literal(Value::Float(*f)),
        Expr::Paren(inner) => plan_expr(inner, group_interval, bases, transforms),
        Expr::Binary { op, lhs, rhs } => Plan::Binary(
            *op,
            Box::new(plan_expr(lhs, group_interval, bases, transforms)),
            Box::new(plan_expr(rhs, group_interval, bases, transforms)),
        ),
        _ => Plan::Null,
    }
}

/// Every value a base call produced in one bucket (several for distinct).
type BucketValues = Vec<(Value, i64)>;

/// `a > b` for numbers of the same type; false otherwise.
fn numeric_greater(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => x > y,
        (Value::Integer(x), Value::Integer(y)) => x > y,
        (Value::Unsigned(x), Value::Unsigned(y)) => x > y,
        _ => false,
    }
}

/// One base call's result in one bucket: value and the selected point's time.
type Slot = Option<(Value, i64)>;

fn compute_base(call: &BaseCall, points: &[(i64, Value)]) -> Vec<(Value, i64)> {
    if points.is_empty() {
        return Vec::new();
    }
    let numbers = || {
        points
            .iter()
            .filter_map(|(t, v)| as_f64(v).map(|f| (*t, f)))
    };
    let one = |v: Value, t: i64| vec![(v, t)];
    match call.function.as_str() {
        "count" => one(Value::Integer(points.len() as i64), points[0].0),
        // On equal times InfluxDB keeps the larger number (Go's
        // FloatFirstReduce / FloatLastReduce).
        "first" => {
            let t0 = points[0].0;
            let best = points
                .iter()
                .take_while(|(t, _)| *t == t0)
                .fold(&points[0], |best, p| {
                    if numeric_greater(&p.1, &best.1) {
                        p
                    } else {
                        best
                    }
                });
            one(best.1.clone(), best.0)
        }
        "last" => {
            let tn = points[points.len() - 1].0;
            let best = points
                .iter()
                .filter(|(t, _)| *t == tn)
                .fold(None::<&(i64, Value)>, |best, p| match best {
                    Some(b) if !numeric_greater(&p.1, &b.1) => Some(b),
                    _ => Some(p),
                })
                .unwrap_or(&points[points.len() - 1]);
            one(best.1.clone(), best.0)
        }
        "raw" => {
            let (t, v) = &points[points.len() - 1];
            one(v.clone(), *t)
        }
        "mean" => {
            let (n, sum) = numbers().fold((0usize, 0.0), |(n, s), (_, f)| (n + 1, s + f));
            if n == 0 {
                return Vec::new();
            }
            one(Value::Float(sum / n as f64), points[0].0)
        }
        "sum" => match &points[0].1 {
            Value::Integer(_) => one(
                Value::Integer(points.iter().fold(0i64, |s, (_, v)| match v {
                    Value::Integer(i) => s.wrapping_add(*i),
                    _ => s,
                })),
                points[0].0,
            ),
            Value::Unsigned(_) => one(
                Value::Unsigned(points.iter().fold(0u64, |s, (_, v)| match v {
                    Value::Unsigned(u) => s.wrapping_add(*u),
                    _ => s,
                })),
                points[0].0,
            ),
            _ => one(Value::Float(numbers().map(|(_, f)| f).sum()), points[0].0),
        },
        "min" | "max" => {
            let want_max = call.function == "max";
            let mut best: Option<&(i64, Value)> = None;
            for point in points {
                let Some(x) = as_f64(&point.1) else { continue };
                let better = match best {
                    None => true,
                    Some((_, b)) => {
                        let (better, exact) = match (&point.1, b) {
                            (Value::Integer(p), Value::Integer(q)) => {
                                (if want_max { p > q } else { p < q }, true)
                            }
                            (Value::Unsigned(p), Value::Unsigned(q)) => {
                                (if want_max { p > q } else { p < q }, true)
                            }
                            _ => (false, false),
                        };
                        if exact {
                            better
                        } else {
                            let y = as_f64(b).unwrap_or(f64::NAN);
                            if want_max {
                                x > y
                            } else {
                                x < y
                            }
                        }
                    }
                };
                if better {
                    best = Some(point);
                }
            }
            best.map(|(t, v)| one(v.clone(), *t)).unwrap_or_default()
        }
        "median" => {
            let mut values: Vec<f64> = numbers().map(|(_, f)| f).collect();
            if values.is_empty() {
                return Vec::new();
            }
            values.sort_by(|a, b| a.total_cmp(b));
            let n = values.len();
            let median = if n % 2 == 1 {
                values[n / 2]
            } else {
                values[n / 2 - 1] + (values[n / 2] - values[n / 2 - 1]) / 2.0
            };
            one(Value::Float(median), points[0].0)
        }
        "spread" => {
            if points.iter().all(|(_, v)| matches!(v, Value::Integer(_))) {
                let ints = points.iter().filter_map(|(_, v)| match v {
                    Value::Integer(i) => Some(*i),
                    _ => None,
                });
                let min = ints.clone().min().unwrap_or(0);
                let max = ints.max().unwrap_or(0);
                return one(Value::Integer(max.wrapping_sub(min)), points[0].0);
            }
            let values: Vec<f64> = numbers().map(|(_, f)| f).collect();
            if values.is_empty() {
                return Vec::new();
            }
            let min = values.iter().copied().fold(f64::INFINITY, f64::min);
            let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            one(Value::Float(max - min), points[0].0)
        }
        "stddev" => {
            let values: Vec<f64> = numbers().map(|(_, f)| f).collect();
            if values.len() < 2 {
                return Vec::new();
            }
            // Go's reducer: running mean, then the sum of squares.
            let mut mean = 0.0;
            for (k, v) in values.iter().enumerate() {
                mean += (v - mean) / (k + 1) as f64;
            }
            let variance: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
            one(
                Value::Float((variance / (values.len() - 1) as f64).sqrt()),
                points[0].0,
            )
        }
        "percentile" => {
            let mut sorted: Vec<&(i64, Value)> =
                points.iter().filter(|(_, v)| as_f64(v).is_some()).collect();
            // Go's unstable sort: ties land where InfluxDB's land.
            super::gosort::go_sort(&mut sorted, &|a: &&(i64, Value), b: &&(i64, Value)| {
                as_f64(&a.1).unwrap_or(0.0) < as_f64(&b.1).unwrap_or(0.0)
            });
            let index = (sorted.len() as f64 * call.argument / 100.0 + 0.5).floor() as i64 - 1;
            if index < 0 || index as usize >= sorted.len() {
                return Vec::new();
            }
            let (t, v) = sorted[index as usize];
            one(v.clone(), *t)
        }
        "mode" => {
            let mut counts: Vec<(&Value, usize, i64)> = Vec::new();
            for (t, v) in points {
                match counts.iter_mut().find(|(value, _, _)| *value == v) {
                    Some(entry) => entry.1 += 1,
                    None => counts.push((v, 1, *t)),
                }
            }
            let best = counts
                .iter()
                .max_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)));
            best.map(|(v, _, _)| one((*v).clone(), points[0].0))
                .unwrap_or_default()
        }
        "distinct" => {
            let mut values: Vec<Value> = Vec::new();
            for (_, v) in points {
                if !values.contains(v) {
                    values.push(v.clone());
                }
            }
            values.sort_by(|a, b| match (as_f64(a), as_f64(b)) {
                (Some(x), Some(y)) => x.total_cmp(&y),
                _ => format!("{a:?}").cmp(&format!("{b:?}")),
            });
            values.into_iter().map(|v| (v, points[0].0)).collect()
        }
        _ => Vec::new(),
    }
}

fn fill_slots(slots: &mut [Slot], had_points: &[bool], fill: &Fill, is_count: bool, times: &[i64]) {
    match fill {
        Fill::Null | Fill::None => {
            if is_count && *fill == Fill::Null {
                for (slot, had) in slots.iter_mut().zip(had_points) {
                    if !had {
                        *slot = Some((Value::Integer(0), 0));
                    }
                }
            }
        }
        Fill::Integer(n) => {
            for (slot, had) in slots.iter_mut().zip(had_points) {
                if !had {
                    *slot = Some((Value::Integer(*n), 0));
                }
            }
        }
        Fill::Number(f) => {
            // An integer aggregate casts the fill value like Go's int64(f).
            let integer = is_count
                || slots
                    .iter()
                    .any(|s| matches!(s, Some((Value::Integer(_), _))));
            for (slot, had) in slots.iter_mut().zip(had_points) {
                if !had {
                    let value = if integer {
                        Value::Integer(*f as i64)
                    } else {
                        Value::Float(*f)
                    };
                    *slot = Some((value, 0));
                }
            }
        }
        Fill::Previous => {
            let mut previous: Option<Value> = None;
            for (slot, had) in slots.iter_mut().zip(had_points) {
                if !had {
                    *slot = previous.clone().map(|v| (v, 0));
                } else if let Some((v, _)) = slot {
                    previous = Some(v.clone());
                }
            }
        }
        Fill::Linear => {
            // Go: m = (next - prev) / (tn - tp), x = t - tp, all times in
            // interval units (integer division), value = m * x + prev.
            let interval = times.get(1).map_or(1, |t| t - times[0]).max(1);
            let known: Vec<usize> = (0..slots.len())
                .filter(|i| had_points[*i] && slots[*i].is_some())
                .collect();
            for pair in known.windows(2) {
                let (a, b) = (pair[0], pair[1]);
                if b - a < 2 {
                    continue;
                }
                let (Some((va, _)), Some((vb, _))) = (slots[a].clone(), slots[b].clone()) else {
                    continue;
                };
                let (xa, xb) = (times[a] / interval, times[b] / interval);
                for i in a + 1..b {
                    let x = (times[i] / interval - xa) as f64;
                    let value = match (&va, &vb) {
                        (Value::Integer(ya), Value::Integer(yb)) => {
                            let m = (yb - ya) as f64 / (xb - xa) as f64;
                            Value::Integer((m * x + *ya as f64) as i64)
                        }
                        _ => {
                            let (Some(ya), Some(yb)) = (as_f64(&va), as_f64(&vb)) else {
                                continue;
                            };
                            let m = (yb - ya) / (xb - xa) as f64;
                            Value::Float(m * x + ya)
                        }
                    };
                    slots[i] = Some((value, 0));
                }
            }
        }
    }
}

fn compute_transform(call: &TransformCall, slots: &[Slot], times: &[i64]) -> Vec<Option<Value>> {
    let mut out = vec![None; slots.len()];
    let mut previous: Option<(i64, Value)> = None;
    let mut running: Option<Value> = None;
    let mut window: std::collections::VecDeque<f64> = std::collections::VecDeque::new();
    let mut moving_sum = 0.0f64;
    for (i, slot) in slots.iter().enumerate() {
        let Some((value, _)) = slot else { continue };
        let time = times[i];
        match call.function.as_str() {
            "derivative" | "non_negative_derivative" => {
                if let Some((pt, pv)) = &previous {
                    if let (Some(a), Some(b)) = (as_f64(pv), as_f64(value)) {
                        let elapsed = (time - pt) as f64 / call.argument as f64;
                        if elapsed != 0.0 {
                            let d = (b - a) / elapsed;
                            if call.function == "derivative" || d >= 0.0 {
                                out[i] = Some(Value::Float(d));
                            }
                        }
                    }
                }
                previous = Some((time, value.clone()));
            }
            "difference" | "non_negative_difference" => {
                if let Some((_, pv)) = &previous {
                    let d = arithmetic(BinaryOp::Sub, value.clone(), pv.clone());
                    let negative = d.as_ref().and_then(as_f64).is_some_and(|f| f < 0.0);
                    if call.function == "difference" || !negative {
                        out[i] = d;
                    }
                }
                previous = Some((time, value.clone()));
            }
            "cumulative_sum" => {
                running = Some(match running.take() {
                    None => value.clone(),
                    Some(sum) => {
                        arithmetic(BinaryOp::Add, sum, value.clone()).unwrap_or(Value::Float(0.0))
                    }
                });
                out[i] = running.clone();
            }
            "moving_average" => {
                // Go's reducer keeps a running sum: subtract the oldest,
                // add the newest (the rounding differs from re-summing).
                if let Some(f) = as_f64(value) {
                    let n = call.argument.max(1) as usize;
                    if window.len() == n {
                        moving_sum -= window.pop_front().unwrap_or(0.0);
                    }
                    window.push_back(f);
                    moving_sum += f;
                    if window.len() == n {
                        out[i] = Some(Value::Float(moving_sum / n as f64));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Evaluates a column plan in bucket `b`: (value, present).
fn eval_plan(
    plan: &Plan,
    b: usize,
    bases: &[Vec<Slot>],
    present: &[Vec<bool>],
    transforms: &[Vec<Option<Value>>],
) -> (Option<Value>, bool) {
    match plan {
        Plan::Base(i) => (
            bases[*i][b].as_ref().map(|(v, _)| v.clone()),
            present[*i][b],
        ),
        Plan::Transform(i) => {
            let v = transforms[*i][b].clone();
            let p = v.is_some();
            (v, p)
        }
        Plan::Literal(v) => (Some(v.clone()), false),
        Plan::Null => (None, false),
        Plan::Binary(op, lhs, rhs) => {
            let (a, pa) = eval_plan(lhs, b, bases, present, transforms);
            let (c, pc) = eval_plan(rhs, b, bases, present, transforms);
            let value = match (a, c) {
                (Some(a), Some(c)) => arithmetic(*op, a, c),
                _ => None,
            };
            (value, pa || pc)
        }
    }
}

/// How far before the range start transformations read (InfluxDB widens
/// the inner aggregate's range so the first bucket has a predecessor).
fn lookback_ns(select: &Select) -> i64 {
    fn walk(expr: &Expr, interval: i64) -> i64 {
        match expr {
            Expr::Call { name, args } => match name.as_str() {
                "derivative"
                | "non_negative_derivative"
                | "difference"
                | "non_negative_difference" => interval,
                "moving_average" => match args.get(1) {
                    Some(Expr::Integer(n)) if *n > 1 => interval.saturating_mul(n - 1),
                    _ => 0,
                },
                _ => 0,
            },
            Expr::Binary { lhs, rhs, .. } => walk(lhs, interval).max(walk(rhs, interval)),
            Expr::Paren(inner) => walk(inner, interval),
            _ => 0,
        }
    }
    let Some((interval, _)) = select.group_time else {
        return 0;
    };
    select
        .fields
        .iter()
        .map(|f| walk(&f.expr, interval))
        .max()
        .unwrap_or(0)
}

#[allow(clippy::too_many_arguments)]
/// The points of each base call in a group's rows, in Go's merge order.
fn collect_points(
    group: &Group,
    column_names: &[String],
    tag_keys: &BTreeSet<String>,
    condition: Option<&Expr>,
    bases: &[BaseCall],
    points: &mut [Vec<(i64, Value)>],
) {
    let base_columns: Vec<Option<usize>> = bases
        .iter()
        .map(|b| column_names.iter().position(|c| *c == b.field))
        .collect();
    if let Some(condition) = condition {
        for_each_row(
            group,
            column_names,
            tag_keys,
            Some(condition),
            &[],
            |time, ctx| {
                for (i, column) in base_columns.iter().enumerate() {
                    if let Some(Some(value)) = column.map(|c| ctx.fields[c].1) {
                        points[i].push((time, value.clone()));
                    }
                }
            },
        );
    } else {
        // Fast path: no condition to evaluate. Rows in the order of Go's
        // sorted merge: order-sensitive reducers (stddev's running mean)
        // then round like InfluxDB's.
        let order = go_merge_order(&group.series, &[]);
        for (i, column) in base_columns.iter().enumerate() {
            let Some(c) = *column else { continue };
            for &(s, r) in &order {
                let series = &group.series[s];
                if let Some(value) = &series.columns[c][r] {
                    points[i].push((series.times[r], value.clone()));
                }
            }
        }
    }
}

/// Time buckets a statement has produced so far, and its limit.
struct BucketBudget {
    used: usize,
    max: usize,
}

/// What one output group is aggregated from.
enum GroupInput<'a> {
    /// Its series' rows, reduced here.
    Rows {
        group: &'a Group,
        column_names: &'a [String],
        tag_keys: &'a BTreeSet<String>,
        condition: Option<&'a Expr>,
    },
    /// Its buckets, aggregated by the shards ([`pushdown`]); `fields` names
    /// the aggregates of each bucket.
    Buckets {
        fields: &'a [String],
        buckets: &'a [Bucket],
    },
}

fn aggregate_group(
    select: &Select,
    zone: &qtime::Zone,
    columns: &[Column],
    input: GroupInput<'_>,
    (time_min, time_max): (i64, i64),
    buckets: &mut BucketBudget,
) -> Result<Vec<Vec<Cell>>, StatementError> {
    let mut bases: Vec<BaseCall> = Vec::new();
    let mut transforms: Vec<TransformCall> = Vec::new();
    let plans: Vec<Plan> = columns
        .iter()
        .map(|c| {
            plan_expr(
                &c.expr,
                select.group_time.map(|(i, _)| i),
                &mut bases,
                &mut transforms,
            )
        })
        .collect();
    let raw_mode = bases.iter().any(|b| b.function == "raw");
    // Points per base call, in time order.
    let mut points: Vec<Vec<(i64, Value)>> = vec![Vec::new(); bases.len()];
    // Or the shards' buckets, with the bucket field of each base call.
    let mut partial: Option<(&[Bucket], Vec<Option<usize>>)> = None;
    match input {
        GroupInput::Rows {
            group,
            column_names,
            tag_keys,
            condition,
        } => collect_points(
            group,
            column_names,
            tag_keys,
            condition,
            &bases,
            &mut points,
        ),
        GroupInput::Buckets { fields, buckets } => {
            let field_of = bases
                .iter()
                .map(|b| fields.iter().position(|f| *f == b.field))
                .collect();
            partial = Some((buckets, field_of));
        }
    }
    let has_data = |bucket: &Bucket, field_of: &[Option<usize>]| {
        field_of
            .iter()
            .flatten()
            .any(|&f| bucket.fields[f].count > 0)
    };
    let empty = match &partial {
        None => points.iter().all(Vec::is_empty),
        Some((buckets, field_of)) => !buckets.iter().any(|b| has_data(b, field_of)),
    };
    if empty {
        return Ok(Vec::new());
    }
    // Bucket times.
    // Buckets before `output_from` exist only to feed transformations.
    let mut output_from = i64::MIN;
    let times: Vec<i64> = if let Some((interval, offset)) = select.group_time {
        // InfluxDB's Window(): align in local time, then correct for an
        // offset change between the point and its bucket start.
        let start = |t: i64| {
            // Saturating: times near the ends of i64 must not overflow.
            let t = t.saturating_sub(offset);
            let local = i64::from(zone.offset_secs(t)) * 1_000_000_000;
            let mut start = t.saturating_sub(t.saturating_add(local).rem_euclid(interval));
            let start_local = i64::from(zone.offset_secs(start)) * 1_000_000_000;
            let change = local - start_local;
            if change != 0 && change.abs() < interval {
                start = start.saturating_add(change);
            }
            start.saturating_add(offset)
        };
        // Without a lower bound the buckets start at the group's first point.
        let range_min = if time_min == TIME_MIN_NS {
            match &partial {
                None => points
                    .iter()
                    .filter_map(|p| p.first().map(|(t, _)| *t))
                    .min(),
                Some((buckets, field_of)) => buckets
                    .iter()
                    .filter(|b| has_data(b, field_of))
                    .map(|b| b.start_ns)
                    .min(),
            }
            .unwrap_or(time_min)
        } else {
            output_from = start(time_min);
            time_min.saturating_sub(lookback_ns(select))
        };
        let first = start(range_min);
        let last = start(time_max);
        let count = ((i128::from(last) - i128::from(first)) / i128::from(interval) + 1)
            .clamp(0, buckets.max as i128 + 1) as usize;
        buckets.used = buckets.used.saturating_add(count);
        if buckets.used > buckets.max {
            return Err(StatementError::TooManyBuckets {
                buckets: buckets.used,
                limit: buckets.max,
            });
        }
        (0..count).map(|i| first + i as i64 * interval).collect()
    } else if raw_mode {
        let mut all: Vec<i64> = points.iter().flatten().map(|(t, _)| *t).collect();
        all.sort_unstable();
        all.dedup();
        all
    } else {
        vec![if time_min == TIME_MIN_NS { 0 } else { time_min }]
    };
    let bucket_of = |t: i64| -> Option<usize> {
        if let Some((interval, _)) = select.group_time {
            let first = *times.first()?;
            let index = (t - first).div_euclid(interval);
            (index >= 0 && (index as usize) < times.len()).then_some(index as usize)
        } else if raw_mode {
            times.binary_search(&t).ok()
        } else {
            Some(0)
        }
    };
    let n = times.len();
    let mut slots: Vec<Vec<Slot>> = vec![vec![None; n]; bases.len()];
    let mut present: Vec<Vec<bool>> = vec![vec![false; n]; bases.len()];
    let mut distinct: Option<(usize, Vec<BucketValues>)> = None;
    for (i, base) in bases.iter().enumerate() {
        let had: Vec<bool> = if let Some((buckets, field_of)) = &partial {
            let mut had = vec![false; n];
            for bucket in buckets.iter() {
                let Some(field) = field_of[i].map(|f| &bucket.fields[f]) else {
                    continue;
                };
                if let (true, Some(b)) = (field.count > 0, bucket_of(bucket.start_ns)) {
                    slots[i][b] = pushdown::slot(base, field);
                    had[b] = true;
                }
            }
            had
        } else {
            let mut per_bucket: Vec<Vec<(i64, Value)>> = vec![Vec::new(); n];
            for (t, v) in points[i].drain(..) {
                if let Some(b) = bucket_of(t) {
                    per_bucket[b].push((t, v));
                }
            }
            let mut all_values = Vec::with_capacity(n);
            for (b, bucket) in per_bucket.iter().enumerate() {
                let values = compute_base(base, bucket);
                slots[i][b] = values.first().cloned();
                all_values.push(values);
            }
            if base.function == "distinct" {
                distinct = Some((i, all_values));
            }
            per_bucket.iter().map(|p| !p.is_empty()).collect()
        };
        if select.group_time.is_some() {
            fill_slots(
                &mut slots[i],
                &had,
                &select.fill,
                base.function == "count",
                &times,
            );
            for b in 0..n {
                present[i][b] = had[b] || select.fill != Fill::None;
            }
        } else {
            present[i] = had;
        }
    }
    let transform_values: Vec<Vec<Option<Value>>> = transforms
        .iter()
        .map(|t| compute_transform(t, &slots[t.base], &times))
        .collect();
    // A selector alone without GROUP BY time carries its point's time.
    let selector_time = select.group_time.is_none()
        && !raw_mode
        && bases.len() == 1
        && transforms.is_empty()
        && SELECTORS.contains(&bases[0].function.as_str());
    let mut rows = Vec::new();
    if let Some((index, values)) = distinct {
        if columns.len() == 1 && matches!(plans[0], Plan::Base(i) if i == index) {
            for (b, bucket) in values.into_iter().enumerate() {
                for (value, _) in bucket {
                    rows.push(vec![Cell::Time(times[b]), Cell::Value(value)]);
                }
            }
            return Ok(rows);
        }
    }
    for b in 0..n {
        if times[b] < output_from {
            continue;
        }
        let mut row = Vec::with_capacity(columns.len() + 1);
        let time = if selector_time {
            slots[0][b].as_ref().map_or(times[b], |(_, t)| *t)
        } else {
            times[b]
        };
        row.push(Cell::Time(time));
        let mut any = false;
        for plan in &plans {
            let (value, p) = eval_plan(plan, b, &slots, &present, &transform_values);
            any |= p;
            row.push(value.map_or(Cell::Null, Cell::Value));
        }
        if any {
            rows.push(row);
        }
    }
    Ok(rows)
}

mod pushdown;
#[cfg(test)]
mod tests;
