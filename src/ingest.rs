//! The write path, one stage after another:
//!
//! ```text
//! prepare: parameters (400) → credentials (401/403) → encoding (415)   [from the head]
//! write:   gunzip (400/413) → UTF-8 (400) → line protocol → schema → route
//!          → unknown schema? ask the catalog owner (durable before 204)
//!          → every involved shard: WAL append → fdatasync → store → reply
//!          → 204, or 400 naming the rejected lines (the others are written)
//! ```
//!
//! Each stage lives in its own module; this file only calls them in order
//! and turns their outcomes into a [`Refusal`] or success.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use futures_channel::oneshot;

use crate::auth::{self, Access, AuthError};
use crate::backpressure::BytesPermit;
use crate::batch::{BatchEncoder, EncodedBatch};
use crate::catalog::{self, Catalog, ColumnKind, Decision, FieldType, Limit, Proposal};
use crate::clock;
use crate::http::form;
use crate::http::response::{Dialect, Refusal};
use crate::line_protocol::{LineError, Lines, ParseOptions, Point, Precision};
use crate::metrics::ShardMetrics;
use crate::retention::{self, Period};
use crate::route::{self, Message, RemoteError};
use crate::shard::Shard;

/// A write request whose head has been accepted.
#[derive(Clone, Debug)]
pub struct WriteRequest {
    pub dialect: Dialect,
    pub database: String,
    pub precision: Precision,
    pub gzip: bool,
}

/// The database a write to `db` with retention policy `rp` goes to: the
/// database itself for its one policy (`rp` empty, `''`, `autogen` or
/// `default`, any case), a refusal naming `rp` for any other.
fn database_for(db: &str, rp: &str) -> Result<String, Refusal> {
    let lower = rp.to_ascii_lowercase();
    match lower.as_str() {
        "" | "autogen" | "default" | "''" => Ok(db.to_string()),
        _ => Err(Refusal::RetentionPolicyNotFound { rp: rp.to_string() }),
    }
}

/// Checks everything that can be checked from the head, in the documented
/// order: parameters, credentials, content encoding.
pub fn prepare(
    shard: &Shard,
    dialect: Dialect,
    query: &str,
    authorization: Option<&[u8]>,
    content_encoding: Option<&[u8]>,
) -> Result<WriteRequest, Refusal> {
    let database = match dialect {
        Dialect::V2 => {
            let bucket = form::get(query, "bucket").unwrap_or_default();
            if bucket.is_empty() {
                return Err(Refusal::MissingBucket);
            }
            // The v1↔v2 mapping: bucket `db/rp` is database `db`, policy `rp`.
            match bucket.split_once('/') {
                Some((db, rp)) => database_for(db, rp)?,
                None => bucket.into_owned(),
            }
        }
        _ => {
            let db = form::get(query, "db").unwrap_or_default();
            if db.is_empty() {
                return Err(Refusal::MissingDatabase);
            }
            database_for(&db, &form::get(query, "rp").unwrap_or_default())?
        }
    };
    catalog::validate_database_name(&database).map_err(|e| Refusal::BadDatabaseName {
        name: database.clone(),
        detail: e.to_string(),
    })?;
    let precision = match form::get(query, "precision") {
        None => Precision::Nanoseconds,
        Some(value) => {
            let parsed = match dialect {
                Dialect::V2 => Precision::from_v2(&value),
                _ => Precision::from_v1(&value),
            };
            parsed.ok_or_else(|| Refusal::BadPrecision {
                value: value.into_owned(),
                dialect,
            })?
        }
    };
    let p = match dialect {
        Dialect::V2 => None,
        _ => form::get(query, "p"),
    };
    let secret = auth::extract(authorization, p);
    shard
        .authorizer
        .check(secret.as_deref(), Access::Write, &database)
        .map_err(|e| match e {
            AuthError::Missing | AuthError::Unknown => Refusal::Unauthorized,
            AuthError::Forbidden => Refusal::Forbidden {
                database: database.clone(),
            },
        })?;
    let gzip = match content_encoding.map(<[u8]>::trim_ascii) {
        None | Some(b"") => false,
        Some(value) if value.eq_ignore_ascii_case(b"identity") => false,
        Some(value)
            if value.eq_ignore_ascii_case(b"gzip") || value.eq_ignore_ascii_case(b"x-gzip") =>
        {
            true
        }
        Some(value) => {
            return Err(Refusal::UnsupportedEncoding {
                encoding: String::from_utf8_lossy(value).into_owned(),
            })
        }
    };
    Ok(WriteRequest {
        dialect,
        database,
        precision,
        gzip,
    })
}

/// Why a line was rejected: the `reason` label of
/// `ringest_lines_rejected_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// The line protocol parser refused it (syntax, or a per-line bound of
    /// `line_protocol.*`, which the parser checks).
    Parse = 0,
    /// A column exists with another kind: a field's type, or a tag name
    /// written as a field (or the reverse). Also a column the catalog
    /// did not create for another reason (its database dropped meanwhile).
    SchemaConflict = 1,
    /// A catalog limit (`schema.tables_per_database_max`,
    /// `schema.columns_per_table_max`) forbids a new table or column.
    Limit = 2,
    /// The point is older than its database's retention keeps
    /// ([`crate::retention::cutoff_ns`]).
    Retention = 3,
}

impl RejectReason {
    /// Every reason, in discriminant order (`ALL[r as usize] == r`).
    pub const ALL: [RejectReason; 4] = [
        RejectReason::Parse,
        RejectReason::SchemaConflict,
        RejectReason::Limit,
        RejectReason::Retention,
    ];

    /// The Prometheus label value.
    pub fn label(self) -> &'static str {
        match self {
            RejectReason::Parse => "parse",
            RejectReason::SchemaConflict => "schema_conflict",
            RejectReason::Limit => "limit",
            RejectReason::Retention => "retention",
        }
    }
}

assert_all_in_discriminant_order!(RejectReason);

/// One rejected line, with its message in both dialects' wording.
struct Rejected {
    line_number: u32,
    reason: RejectReason,
    /// `line N: reason`.
    message: String,
    /// InfluxDB 1.x wording (`unable to parse '…': reason`).
    v1_message: String,
}

/// What the synchronous stages produced: sub-batches per shard, rows
/// waiting for catalog decisions, and rejected lines.
struct Routed {
    per_shard: Vec<BatchEncoder>,
    /// Sub-batches that reached `payload_bytes_target`, with their shard.
    sealed: Vec<(usize, EncodedBatch)>,
    /// A sub-batch is sealed at this size, so that each fits one WAL record.
    payload_bytes_target: usize,
    pending: BatchEncoder,
    pending_lines: Vec<u32>,
    proposals: Vec<Proposal>,
    rejected: Vec<Rejected>,
    lines_accepted: usize,
}

impl Routed {
    /// Encodes an accepted line into the sub-batch of its owning shard.
    fn accept(&mut self, point: &Point<'_>, database: &str) {
        let target = route::owner(point.series_hash, self.per_shard.len());
        self.per_shard[target].push(point);
        self.seal_if_full(target, database);
        self.lines_accepted += 1;
    }

    fn seal_if_full(&mut self, target: usize, database: &str) {
        if self.per_shard[target].len_bytes() >= self.payload_bytes_target {
            let payload = self.per_shard[target].take(database);
            self.sealed.push((target, payload));
        }
    }

    /// Every non-empty sub-batch, in the order its rows were routed.
    fn into_payloads(mut self, database: &str) -> Vec<(usize, EncodedBatch)> {
        let mut payloads = std::mem::take(&mut self.sealed);
        for (target, encoder) in self.per_shard.iter_mut().enumerate() {
            if !encoder.is_empty() {
                payloads.push((target, encoder.take(database)));
            }
        }
        payloads
    }
}

/// Writes the body of an accepted head. `Ok` means durable, applied, 204.
///
/// `permit` holds the request's bytes in the shard's in-flight budget (the
/// body so far); the encoded sub-batches, about 1.5 times the text and
/// alive until every shard has synced them, are added to it before any is
/// dispatched, so a storm of large writes is refused instead of holding
/// several copies of each body uncounted.
pub async fn write(
    shard: &Rc<Shard>,
    request: &WriteRequest,
    body: &[u8],
    permit: Option<&mut BytesPermit>,
) -> Result<(), Refusal> {
    ShardMetrics::add(&shard.metrics.wire_bytes, body.len() as u64);
    let now_ns = clock::now_ns();
    let mut routed = {
        let mut gunzip = shard.gunzip.borrow_mut();
        let text: &[u8] = if request.gzip {
            gunzip.decompress(body).map_err(|e| match e {
                crate::gzip::GzipError::TooLarge { limit } => Refusal::BodyTooLarge { limit },
                other => Refusal::Gzip {
                    detail: other.to_string(),
                },
            })?
        } else {
            body
        };
        ShardMetrics::add(&shard.metrics.decompressed_bytes, text.len() as u64);
        let text = std::str::from_utf8(text).map_err(|e| Refusal::NotUtf8 {
            offset: e.valid_up_to(),
        })?;
        let catalog = shard.catalog.borrow();
        route_lines(shard, request, text, now_ns, &catalog)
    };
    if !routed.proposals.is_empty() {
        resolve_schema(shard, request, &mut routed, now_ns).await?;
    }
    for rejected in &routed.rejected {
        shard.metrics.line_rejected(rejected.reason);
    }
    if !routed.rejected.is_empty() && !shard.config.line_protocol.accept_partial {
        routed.lines_accepted = 0;
        return Err(lines_refusal(shard, &routed.rejected, 0));
    }
    let rejected = std::mem::take(&mut routed.rejected);
    let accepted = routed.lines_accepted;
    let payloads = routed.into_payloads(&request.database);
    if let Some(permit) = permit {
        let encoded: usize = payloads.iter().map(|(_, p)| p.len()).sum();
        permit
            .grow_unless_alone(encoded)
            .map_err(|refused| Refusal::Overloaded {
                retry_after_s: refused.retry_after_s,
                cause: refused.cause,
            })?;
    }
    dispatch(shard, payloads, body.len()).await?;
    if rejected.is_empty() {
        Ok(())
    } else {
        Err(lines_refusal(shard, &rejected, accepted))
    }
}

/// Parses every line, checks it against the catalog replica, and encodes it
/// for its shard — or for the catalog owner's decision, or as rejected.
fn route_lines(
    shard: &Shard,
    request: &WriteRequest,
    text: &str,
    now_ns: i64,
    catalog: &Catalog,
) -> Routed {
    let config = &shard.config.line_protocol;
    let options = ParseOptions {
        precision: request.precision,
        default_time_ns: request.precision.truncate(now_ns),
        name_bytes_max: config.name_bytes_max,
        string_bytes_max: config.string_bytes_max,
        tags_per_line_max: config.tags_per_line_max,
        fields_per_line_max: config.fields_per_line_max,
    };
    let database = &request.database;
    let payload_bytes_target = shard.config.wal.batch_bytes_max / 2;
    // Encoded rows take about 1.5 times their text (length prefixes, fixed
    // width values): sized once, the sub-batches rarely grow.
    let capacity = (text.len() / 2 * 3 / shard.count).min(payload_bytes_target) + 4096;
    let mut routed = Routed {
        sealed: Vec::new(),
        payload_bytes_target,
        per_shard: (0..shard.count)
            .map(|_| BatchEncoder::with_capacity(database, capacity))
            .collect(),
        pending: BatchEncoder::new(database),
        pending_lines: Vec::new(),
        proposals: Vec::new(),
        rejected: Vec::new(),
        lines_accepted: 0,
    };
    let known_database = catalog.database(database);
    if known_database.is_none() {
        routed.proposals.push(Proposal::Database {
            name: database.clone(),
            create: shard.config.schema.auto_create_databases,
            retention: shard.config.retention.default_period,
        });
    }
    // A database not known yet: its rows wait for the owner, and
    // `resolve_schema` checks them against the retention it learns.
    let expiry = known_database.and_then(|db| {
        let cutoff = retention::cutoff_ns(db.retention, now_ns)?;
        Some((cutoff, db.retention))
    });
    // Columns proposed by earlier lines of this request: within a batch,
    // the first line wins (the owner decides for the first proposal).
    let mut proposed: HashMap<String, HashSet<String>> = HashMap::new();
    let mut known_shape = KnownShape::default();
    let mut keys = shard.series_keys.borrow_mut();
    let mut lines = Lines::with_keys(text, options, &mut keys);
    let mut point = Point::default();
    while let Some(result) = lines.next_into(&mut point) {
        if let Err(error) = result {
            routed.rejected.push(parse_rejection(&error));
            continue;
        }
        if let Some((cutoff, period)) = expiry {
            if point.timestamp_ns < cutoff {
                routed.rejected.push(retention_rejection(
                    point.line_number,
                    point.timestamp_ns,
                    database,
                    period,
                    cutoff,
                ));
                continue;
            }
        }
        if known_shape.matches(&point) {
            routed.accept(&point, database);
            continue;
        }
        let table = known_database.and_then(|db| db.tables.get(point.measurement.as_ref()));
        let mut needs_owner = false;
        let mut conflict = None;
        for (key, wanted) in KnownShape::columns(&point) {
            match table.and_then(|t| t.columns.get(key)) {
                Some(existing) if *existing == wanted => {}
                Some(existing) => {
                    conflict = Some(conflict_message(&point.measurement, key, wanted, *existing));
                    break;
                }
                None => {
                    // Proposed by an earlier line of this request: the
                    // owner's decision (which that line asked for) settles
                    // this line too, conflict or not, as it would on a
                    // shard whose replica already knew the column.
                    let in_request = proposed
                        .get(point.measurement.as_ref())
                        .is_some_and(|t| t.contains(key));
                    if !in_request {
                        proposed
                            .entry(point.measurement.to_string())
                            .or_default()
                            .insert(key.to_string());
                        routed.proposals.push(Proposal::Column {
                            database: database.clone(),
                            table: point.measurement.to_string(),
                            column: key.to_string(),
                            kind: wanted,
                        });
                    }
                    needs_owner = true;
                }
            }
        }
        if let Some(message) = conflict {
            routed.rejected.push(schema_rejection(
                point.line_number,
                RejectReason::SchemaConflict,
                message,
            ));
        } else if needs_owner {
            routed.pending.push(&point);
            routed.pending_lines.push(point.line_number);
        } else {
            known_shape.remember(&point);
            routed.accept(&point, database);
        }
    }
    routed
}

/// The shape (measurement, tag keys, field keys and types) of the last line
/// whose every column the catalog replica already held. The replica is
/// borrowed for the whole request, so a line of the same shape needs no
/// lookups: most bodies repeat a few shapes line after line.
#[derive(Default)]
struct KnownShape {
    measurement: String,
    columns: Vec<(String, ColumnKind)>,
}

impl KnownShape {
    fn columns<'p>(point: &'p Point<'_>) -> impl Iterator<Item = (&'p str, ColumnKind)> {
        let tags = point
            .tags
            .iter()
            .map(|(key, _)| (key.as_ref(), ColumnKind::Tag));
        let fields = point
            .fields
            .iter()
            .map(|(key, value)| (key.as_ref(), ColumnKind::Field(FieldType::of(value))));
        tags.chain(fields)
    }

    fn matches(&self, point: &Point<'_>) -> bool {
        !self.columns.is_empty()
            && self.measurement == point.measurement.as_ref()
            && self.columns.len() == point.tags.len() + point.fields.len()
            && Self::columns(point).zip(&self.columns).all(
                |((key, kind), (known_key, known_kind))| key == known_key && kind == *known_kind,
            )
    }

    fn remember(&mut self, point: &Point<'_>) {
        self.measurement.clear();
        self.measurement.push_str(&point.measurement);
        self.columns.clear();
        self.columns
            .extend(Self::columns(point).map(|(key, kind)| (key.to_string(), kind)));
    }
}

fn kind_words(kind: ColumnKind) -> String {
    match kind {
        ColumnKind::Tag => "a tag".to_string(),
        ColumnKind::Field(t) => format!("a field of type {}", t.name()),
    }
}

fn conflict_message(table: &str, column: &str, wanted: ColumnKind, existing: ColumnKind) -> String {
    match (wanted, existing) {
        (ColumnKind::Field(new), ColumnKind::Field(old)) => format!(
            "field type conflict: input field \"{column}\" on measurement \"{table}\" is type {}, already exists as type {}",
            new.name(),
            old.name()
        ),
        _ => format!(
            "column type conflict: \"{column}\" on measurement \"{table}\" is written as {}, already exists as {}",
            kind_words(wanted),
            kind_words(existing)
        ),
    }
}

fn schema_rejection(line_number: u32, reason: RejectReason, message: String) -> Rejected {
    Rejected {
        line_number,
        reason,
        v1_message: message.clone(),
        message: format!("line {line_number}: {message}"),
    }
}

/// A point older than its database keeps. The v1 wording is InfluxDB
/// 1.x's (`points beyond retention policy`, which Telegraf recognises),
/// naming the period; identical v1 messages are listed once.
fn retention_rejection(
    line_number: u32,
    time_ns: i64,
    database: &str,
    period: Period,
    cutoff_ns: i64,
) -> Rejected {
    Rejected {
        line_number,
        reason: RejectReason::Retention,
        v1_message: format!(
            "points beyond retention policy (database \"{database}\" keeps {period})"
        ),
        message: format!(
            "line {line_number}: point time {} is beyond the retention period of database \"{database}\" ({period}): the oldest time it accepts now is {}",
            clock::rfc3339_nanos(time_ns),
            clock::rfc3339_nanos(cutoff_ns)
        ),
    }
}

fn parse_rejection(error: &LineError) -> Rejected {
    Rejected {
        line_number: error.line_number,
        reason: RejectReason::Parse,
        v1_message: format!("unable to parse '{}': {}", error.excerpt, error.kind),
        message: format!(
            "line {}: {} (column {})",
            error.line_number, error.kind, error.column
        ),
    }
}

/// Asks the catalog owner about every new entry, then moves the rows that
/// waited for it to their shards (or rejects them, naming the conflict).
async fn resolve_schema(
    shard: &Rc<Shard>,
    request: &WriteRequest,
    routed: &mut Routed,
    now_ns: i64,
) -> Result<(), Refusal> {
    let proposals = std::mem::take(&mut routed.proposals);
    let decisions = shard
        .propose(proposals.clone())
        .await
        .map_err(|e| remote_refusal(shard, e, 0))?;
    let mut limits: HashMap<(&str, &str), Limit> = HashMap::new();
    for (proposal, decision) in proposals.iter().zip(&decisions) {
        match (proposal, decision) {
            (Proposal::Database { name, .. }, Decision::NoDatabase) => {
                return Err(Refusal::DatabaseNotFound { name: name.clone() })
            }
            (Proposal::Database { .. }, Decision::LimitReached(limit)) => {
                return Err(Refusal::BadParameter {
                    name: "db",
                    value: limit.to_string(),
                })
            }
            (Proposal::Column { table, column, .. }, Decision::LimitReached(limit)) => {
                limits.insert((table.as_str(), column.as_str()), *limit);
            }
            _ => {}
        }
    }
    let pending = routed.pending.take(&request.database);
    let reader = pending.reader();
    let catalog = shard.catalog.borrow();
    let expiry = catalog.retention(&request.database).and_then(|period| {
        let cutoff = retention::cutoff_ns(period, now_ns)?;
        Some((cutoff, period))
    });
    let pending_lines = std::mem::take(&mut routed.pending_lines);
    for (row, line_number) in reader.rows().zip(pending_lines.iter().copied()) {
        if let Some((cutoff, period)) = expiry {
            if row.time_ns < cutoff {
                routed.rejected.push(retention_rejection(
                    line_number,
                    row.time_ns,
                    &request.database,
                    period,
                    cutoff,
                ));
                continue;
            }
        }
        let columns = row.tags().map(|(key, _)| (key, ColumnKind::Tag)).chain(
            row.fields()
                .map(|(key, value)| (key, ColumnKind::Field(FieldType::of(&value)))),
        );
        let mut problem = None;
        for (key, wanted) in columns {
            match catalog.column(&request.database, row.table, key) {
                Some(existing) if existing == wanted => {}
                Some(existing) => {
                    problem = Some((
                        RejectReason::SchemaConflict,
                        conflict_message(row.table, key, wanted, existing),
                    ));
                    break;
                }
                None => {
                    problem = Some(match limits.get(&(row.table, key)) {
                        Some(limit) => (RejectReason::Limit, limit.to_string()),
                        None => (
                            RejectReason::SchemaConflict,
                            format!("column \"{key}\" was not created"),
                        ),
                    });
                    break;
                }
            }
        }
        match problem {
            None => {
                let target = route::owner(row.series_hash, shard.count);
                routed.per_shard[target].push_row(&row);
                routed.seal_if_full(target, &request.database);
                routed.lines_accepted += 1;
            }
            Some((reason, message)) => {
                routed
                    .rejected
                    .push(schema_rejection(line_number, reason, message))
            }
        }
    }
    routed.rejected.sort_by_key(|r| r.line_number);
    Ok(())
}

/// Sends every sub-batch to its shard and waits for all of them. Local
/// ones run as tasks too, so that several share one group commit; each
/// shard appends in the order sent, so later lines stay later.
async fn dispatch(
    shard: &Rc<Shard>,
    payloads: Vec<(usize, EncodedBatch)>,
    body_bytes: usize,
) -> Result<(), Refusal> {
    let mut local = Vec::new();
    let mut answers = Vec::new();
    let mut first_error = None;
    for (target, payload) in payloads {
        if target == shard.id {
            let shard = shard.clone();
            local.push(glommio::spawn_local(async move {
                shard.write_local(payload).await
            }));
            continue;
        }
        let (reply, answer) = oneshot::channel();
        match shard
            .peers
            .try_send(target, Message::Write { payload, reply })
        {
            Ok(()) => answers.push(answer),
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    for task in local {
        if let Err(error) = task.await {
            first_error.get_or_insert(error);
        }
    }
    for answer in answers {
        if let Err(error) = route::reply(answer).await {
            first_error.get_or_insert(error);
        }
    }
    match first_error {
        None => Ok(()),
        Some(error) => Err(remote_refusal(shard, error, body_bytes)),
    }
}

fn remote_refusal(shard: &Shard, error: RemoteError, bytes: usize) -> Refusal {
    match error {
        RemoteError::Overloaded { cause } => Refusal::Overloaded {
            retry_after_s: shard.admission.refusal(cause, bytes).retry_after_s,
            cause,
        },
        RemoteError::TooLarge {
            payload_bytes_max, ..
        } => Refusal::BodyTooLarge {
            limit: payload_bytes_max,
        },
        RemoteError::NoSpace => Refusal::NoSpace,
        RemoteError::Failed { cause } | RemoteError::CatalogNotWritten { cause, .. } => {
            Refusal::Internal { cause }
        }
        RemoteError::Unhealthy { cause } => Refusal::Unhealthy { cause },
        RemoteError::Gone => Refusal::ShuttingDown,
    }
}

fn lines_refusal(shard: &Shard, rejected: &[Rejected], accepted: usize) -> Refusal {
    let limit = shard.config.line_protocol.errors_reported_max;
    let listed: Vec<&str> = rejected
        .iter()
        .take(limit)
        .map(|r| r.message.as_str())
        .collect();
    let more = rejected.len().saturating_sub(limit);
    let mut message = if accepted > 0 {
        String::from("partial write has occurred, errors encountered on line(s): ")
    } else {
        String::from("no data written, errors encountered on line(s): ")
    };
    message.push_str(&listed.join("\n"));
    if more > 0 {
        message.push_str(&format!("\n… and {more} more"));
    }
    let mut v1_listed: Vec<&str> = Vec::new();
    for r in rejected.iter().take(limit) {
        if !v1_listed.contains(&r.v1_message.as_str()) {
            v1_listed.push(&r.v1_message);
        }
    }
    let v1_error = format!(
        "{}{} dropped={}",
        if accepted > 0 { "partial write: " } else { "" },
        v1_listed.join("\n"),
        rejected.len()
    );
    Refusal::Lines {
        first_line: rejected.first().map_or(0, |r| r.line_number),
        message,
        v1_error,
    }
}
