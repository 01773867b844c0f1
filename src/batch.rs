//! The sub-batch: the points of one request that belong to one shard, in
//! one database, encoded as owned bytes.
//!
//! The same bytes are three things at once: the message that crosses cores
//! in [`crate::route`], the payload of a WAL record in [`crate::wal`], and
//! the input of [`crate::store`] both live and on replay. Nothing is ever
//! re-parsed from text after the line-protocol stage.
//!
//! # Layout (all integers little-endian)
//!
//! ```text
//! batch  := database:str  row_count:u32  row*
//! row    := table:str  series_hash:u64  time_ns:i64
//!           tag_count:u16   tags_len:u32   (key:str value:str)*          -- sorted by key
//!           field_count:u16 fields_len:u32 (key:str kind:u8 value)*
//! str    := len:u32  utf8-bytes[len]
//! value  := f64 (kind 0) | i64 (kind 1) | u64 (kind 2) | str (kind 3) | u8 0/1 (kind 4)
//! ```
//!
//! `tags_len` and `fields_len` are the byte lengths of the pairs that
//! follow, so reading a row jumps over its tags (the store compares them
//! as one block) and its fields (read once, by the store) instead of
//! walking them. This is batch format 2 (WAL record kind
//! [`crate::shard::RECORD_BATCH`]); format 1 had no lengths.
//!
//! [`BatchReader::new`] validates a whole payload (bounds, UTF-8, kinds,
//! counts) once; iteration afterwards cannot fail. A payload this process
//! encoded is an [`EncodedBatch`]: valid by construction, so the live path
//! reads it ([`EncodedBatch::reader`]) without that second pass; only bytes
//! from outside (WAL replay) go through [`BatchReader::new`]. Replay first
//! asks [`kept_rows`], which walks only the lengths and series hashes, so a
//! shard skips the records it keeps no row of without validating them
//! (every shard reads every WAL directory at start; the shard that owns a
//! record's rows validates it).

use std::fmt;

use crate::line_protocol::{FieldValue, Point};

/// Field kind bytes of the batch layout (also used by [`crate::packed`]).
pub const KIND_FLOAT: u8 = 0;
pub const KIND_INTEGER: u8 = 1;
pub const KIND_UINTEGER: u8 = 2;
pub const KIND_STRING: u8 = 3;
pub const KIND_BOOLEAN: u8 = 4;

/// Builds one sub-batch. The buffer is reused after [`BatchEncoder::take`].
#[derive(Debug)]
pub struct BatchEncoder {
    bytes: Vec<u8>,
    row_count: u32,
}

/// Offset of `row_count` once the database name is written.
fn row_count_offset(database: &str) -> usize {
    4 + database.len()
}

impl BatchEncoder {
    pub fn new(database: &str) -> BatchEncoder {
        BatchEncoder::with_capacity(database, 4096)
    }

    /// An encoder whose buffer holds `bytes` before it first grows.
    pub fn with_capacity(database: &str, bytes: usize) -> BatchEncoder {
        let mut bytes = Vec::with_capacity(bytes.max(row_count_offset(database) + 4));
        put_str(&mut bytes, database);
        bytes.extend_from_slice(&0u32.to_le_bytes());
        BatchEncoder {
            bytes,
            row_count: 0,
        }
    }

    pub fn row_count(&self) -> u32 {
        self.row_count
    }

    pub fn is_empty(&self) -> bool {
        self.row_count == 0
    }

    /// Encoded size so far.
    pub fn len_bytes(&self) -> usize {
        self.bytes.len()
    }

    pub fn push(&mut self, point: &Point<'_>) {
        let bytes = &mut self.bytes;
        put_str(bytes, &point.measurement);
        bytes.extend_from_slice(&point.series_hash.to_le_bytes());
        bytes.extend_from_slice(&point.timestamp_ns.to_le_bytes());
        let tag_count =
            u16::try_from(point.tags.len()).expect("tags per line fit u16 (config limit)");
        bytes.extend_from_slice(&tag_count.to_le_bytes());
        let tags_at = open_length(bytes);
        for (key, value) in &point.tags {
            put_str(bytes, key);
            put_str(bytes, value);
        }
        close_length(bytes, tags_at);
        let field_count =
            u16::try_from(point.fields.len()).expect("fields per line fit u16 (config limit)");
        bytes.extend_from_slice(&field_count.to_le_bytes());
        let fields_at = open_length(bytes);
        for (key, value) in &point.fields {
            put_str(bytes, key);
            match value {
                FieldValue::Float(v) => {
                    bytes.push(KIND_FLOAT);
                    bytes.extend_from_slice(&v.to_le_bytes());
                }
                FieldValue::Integer(v) => {
                    bytes.push(KIND_INTEGER);
                    bytes.extend_from_slice(&v.to_le_bytes());
                }
                FieldValue::UInteger(v) => {
                    bytes.push(KIND_UINTEGER);
                    bytes.extend_from_slice(&v.to_le_bytes());
                }
                FieldValue::String(v) => {
                    bytes.push(KIND_STRING);
                    put_str(bytes, v);
                }
                FieldValue::Boolean(v) => {
                    bytes.push(KIND_BOOLEAN);
                    bytes.push(u8::from(*v));
                }
            }
        }
        close_length(bytes, fields_at);
        self.row_count += 1;
    }

    /// Copies one row of another batch (re-routing on replay, moving a row
    /// whose schema was just confirmed).
    pub fn push_row(&mut self, row: &Row<'_>) {
        let bytes = &mut self.bytes;
        put_str(bytes, row.table);
        bytes.extend_from_slice(&row.series_hash.to_le_bytes());
        bytes.extend_from_slice(&row.time_ns.to_le_bytes());
        bytes.extend_from_slice(&row.tag_count.to_le_bytes());
        put_len(bytes, row.tags.len());
        bytes.extend_from_slice(row.tags);
        bytes.extend_from_slice(&row.field_count.to_le_bytes());
        put_len(bytes, row.fields.len());
        bytes.extend_from_slice(row.fields);
        self.row_count += 1;
    }

    /// The finished payload; the encoder starts over for `database`.
    pub fn take(&mut self, database: &str) -> EncodedBatch {
        let offset = row_count_offset(self.database_name_len_checked());
        self.bytes[offset..offset + 4].copy_from_slice(&self.row_count.to_le_bytes());
        let mut fresh = Vec::with_capacity(self.bytes.capacity());
        put_str(&mut fresh, database);
        fresh.extend_from_slice(&0u32.to_le_bytes());
        self.row_count = 0;
        EncodedBatch(std::mem::replace(&mut self.bytes, fresh))
    }

    fn database_name_len_checked(&self) -> &str {
        let len = u32::from_le_bytes(self.bytes[0..4].try_into().expect("4 bytes")) as usize;
        std::str::from_utf8(&self.bytes[4..4 + len]).expect("database name was written as str")
    }
}

/// A payload produced by [`BatchEncoder::take`]. Its bytes cannot be
/// changed after encoding, so it is always a valid batch: every string in
/// it was a `&str` when written, every count matches its rows.
#[derive(Debug)]
pub struct EncodedBatch(Vec<u8>);

impl EncodedBatch {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Reads the batch without validating it again (valid by construction;
    /// debug builds check anyway).
    pub fn reader(&self) -> BatchReader<'_> {
        debug_assert!(
            BatchReader::new(&self.0).is_ok(),
            "invariant: an EncodedBatch is valid"
        );
        let mut cursor = Cursor {
            bytes: &self.0,
            offset: 0,
            validated: true,
        };
        let database = cursor.str().expect("invariant: encoded database name");
        let row_count = cursor.u32().expect("invariant: encoded row count");
        BatchReader {
            database,
            row_count,
            rows: &self.0[cursor.offset..],
        }
    }
}

/// Batch bytes assembled from parts nobody checked (rows unpacked from a
/// WAL record, [`crate::packed`]): the result goes through
/// [`BatchReader::new`] like any payload from outside, and is never an
/// [`EncodedBatch`].
#[derive(Debug)]
pub struct UncheckedBatch {
    bytes: Vec<u8>,
    row_count: u32,
    count_at: usize,
}

impl UncheckedBatch {
    pub fn new(database: &str) -> UncheckedBatch {
        let mut bytes = Vec::with_capacity(4096);
        put_str(&mut bytes, database);
        let count_at = bytes.len();
        bytes.extend_from_slice(&0u32.to_le_bytes());
        UncheckedBatch {
            bytes,
            row_count: 0,
            count_at,
        }
    }

    pub fn row_count(&self) -> u32 {
        self.row_count
    }

    /// One row from its parts: `tags` and `fields` are the encoded pairs
    /// ([`Row::tags_encoded`], [`Row::fields_encoded`]).
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        table: &str,
        series_hash: u64,
        time_ns: i64,
        tag_count: u16,
        tags: &[u8],
        field_count: u16,
        fields: &[u8],
    ) {
        let bytes = &mut self.bytes;
        put_str(bytes, table);
        bytes.extend_from_slice(&series_hash.to_le_bytes());
        bytes.extend_from_slice(&time_ns.to_le_bytes());
        bytes.extend_from_slice(&tag_count.to_le_bytes());
        put_len(bytes, tags.len());
        bytes.extend_from_slice(tags);
        bytes.extend_from_slice(&field_count.to_le_bytes());
        put_len(bytes, fields.len());
        bytes.extend_from_slice(fields);
        self.row_count += 1;
    }

    /// The payload, for [`BatchReader::new`].
    pub fn finish(mut self) -> Vec<u8> {
        self.bytes[self.count_at..self.count_at + 4].copy_from_slice(&self.row_count.to_le_bytes());
        self.bytes
    }
}

fn put_len(bytes: &mut Vec<u8>, len: usize) {
    let len = u32::try_from(len).expect("rows are bounded far below 4 GiB");
    bytes.extend_from_slice(&len.to_le_bytes());
}

/// Reserves a u32 length; returns where its counted bytes start.
fn open_length(bytes: &mut Vec<u8>) -> usize {
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.len()
}

/// Fills the length reserved by [`open_length`] with the bytes since.
fn close_length(bytes: &mut [u8], start: usize) {
    let len = u32::try_from(bytes.len() - start).expect("rows are bounded far below 4 GiB");
    bytes[start - 4..start].copy_from_slice(&len.to_le_bytes());
}

fn put_str(bytes: &mut Vec<u8>, text: &str) {
    let len = u32::try_from(text.len()).expect("names and strings are bounded far below 4 GiB");
    bytes.extend_from_slice(&len.to_le_bytes());
    bytes.extend_from_slice(text.as_bytes());
}

/// Why a payload could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchError {
    /// A length or count points past the end of the payload.
    Truncated { offset: usize },
    /// A string is not UTF-8.
    NotUtf8 { offset: usize },
    /// A field kind byte is unknown.
    BadKind { offset: usize, kind: u8 },
    /// Bytes are left after the last row.
    TrailingBytes { offset: usize },
    /// A row's `tags_len` or `fields_len` disagrees with its pairs.
    BadLength { offset: usize },
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchError::Truncated { offset } => write!(f, "batch truncated at byte {offset}"),
            BatchError::NotUtf8 { offset } => {
                write!(f, "batch string at byte {offset} is not UTF-8")
            }
            BatchError::BadKind { offset, kind } => {
                write!(f, "batch field kind {kind} at byte {offset} is unknown")
            }
            BatchError::TrailingBytes { offset } => {
                write!(f, "batch has trailing bytes from byte {offset}")
            }
            BatchError::BadLength { offset } => {
                write!(
                    f,
                    "batch row length at byte {offset} disagrees with its pairs"
                )
            }
        }
    }
}

impl std::error::Error for BatchError {}

/// A validated payload.
#[derive(Clone, Copy, Debug)]
pub struct BatchReader<'a> {
    database: &'a str,
    row_count: u32,
    rows: &'a [u8],
}

/// Bounds-checked cursor used by validation and (after it) by iteration.
struct Cursor<'a> {
    bytes: &'a [u8],
    offset: usize,
    /// The bytes were already validated by `BatchReader::new`, or are an
    /// [`EncodedBatch`] (every string is UTF-8): iteration skips the check.
    validated: bool,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], BatchError> {
        let end = self
            .offset
            .checked_add(len)
            .filter(|end| *end <= self.bytes.len())
            .ok_or(BatchError::Truncated {
                offset: self.offset,
            })?;
        let slice = &self.bytes[self.offset..end];
        self.offset = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], BatchError> {
        let slice = self.take(N)?;
        Ok(slice.try_into().expect("take returned N bytes"))
    }

    fn u8(&mut self) -> Result<u8, BatchError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, BatchError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, BatchError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, BatchError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Jumps over a length-prefixed part (a string, or a row's pairs)
    /// without looking at it.
    fn skip_part(&mut self) -> Result<(), BatchError> {
        let len = self.u32()? as usize;
        self.take(len).map(drop)
    }

    fn str(&mut self) -> Result<&'a str, BatchError> {
        let len = self.u32()? as usize;
        let offset = self.offset;
        let bytes = self.take(len)?;
        if self.validated {
            // SAFETY: `validated` is only set on cursors over the bytes of a
            // `BatchReader` (whose `new` checked that every string at these
            // same offsets is UTF-8) or of an `EncodedBatch` (whose strings
            // were written from `&str` and cannot be changed since); the
            // bytes are borrowed immutably.
            return Ok(unsafe { std::str::from_utf8_unchecked(bytes) });
        }
        std::str::from_utf8(bytes).map_err(|_| BatchError::NotUtf8 { offset })
    }

    fn value(&mut self) -> Result<FieldValue<'a>, BatchError> {
        let offset = self.offset;
        Ok(match self.u8()? {
            KIND_FLOAT => FieldValue::Float(f64::from_bits(self.u64()?)),
            KIND_INTEGER => FieldValue::Integer(self.u64()? as i64),
            KIND_UINTEGER => FieldValue::UInteger(self.u64()?),
            KIND_STRING => FieldValue::String(self.str()?.into()),
            KIND_BOOLEAN => FieldValue::Boolean(self.u8()? != 0),
            kind => return Err(BatchError::BadKind { offset, kind }),
        })
    }

    /// The pairs of a row part: `count` pairs in `len` bytes. A validated
    /// cursor jumps over them; otherwise every pair is checked with `pair`
    /// and must end exactly at `len`.
    fn pairs(
        &mut self,
        count: u16,
        pair: fn(&mut Cursor<'a>) -> Result<(), BatchError>,
    ) -> Result<&'a [u8], BatchError> {
        let len_offset = self.offset;
        let len = self.u32()? as usize;
        if self.validated {
            return self.take(len);
        }
        let start = self.offset;
        for _ in 0..count {
            pair(self)?;
        }
        if self.offset - start != len {
            return Err(BatchError::BadLength { offset: len_offset });
        }
        Ok(&self.bytes[start..self.offset])
    }

    fn row(&mut self) -> Result<Row<'a>, BatchError> {
        let table = self.str()?;
        let series_hash = self.u64()?;
        let time_ns = self.u64()? as i64;
        let tag_count = self.u16()?;
        let tags = self.pairs(tag_count, |c| c.str().and_then(|_| c.str()).map(|_| ()))?;
        let field_count = self.u16()?;
        let fields = self.pairs(field_count, |c| c.str().and_then(|_| c.value()).map(|_| ()))?;
        Ok(Row {
            table,
            series_hash,
            time_ns,
            tag_count,
            tags,
            field_count,
            fields,
        })
    }
}

/// Which rows of a payload [`kept_rows`] keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kept {
    /// At least one row, and none kept.
    None,
    /// Some rows kept, some not.
    Some,
    /// Every row kept (also: no rows).
    All,
}

/// Which rows of `payload` pass `keep(series_hash)`, read from the layout
/// alone: lengths are bounds-checked and followed, but no string is checked
/// for UTF-8 and no value decoded, so it costs a fraction of
/// [`BatchReader::new`] (which a caller still runs before reading rows it
/// keeps). `Err` when the layout does not hold; [`BatchReader::new`] then
/// names the damage.
pub fn kept_rows(payload: &[u8], keep: impl Fn(u64) -> bool) -> Result<Kept, BatchError> {
    let mut cursor = Cursor {
        bytes: payload,
        offset: 0,
        validated: false,
    };
    cursor.skip_part()?; // database
    let row_count = cursor.u32()?;
    let (mut kept, mut dropped) = (false, false);
    for _ in 0..row_count {
        cursor.skip_part()?; // table
        let series_hash = cursor.u64()?;
        cursor.u64()?; // time
        cursor.u16()?; // tag count
        cursor.skip_part()?; // tags
        cursor.u16()?; // field count
        cursor.skip_part()?; // fields
        if keep(series_hash) {
            kept = true;
        } else {
            dropped = true;
        }
    }
    if cursor.offset != payload.len() {
        return Err(BatchError::TrailingBytes {
            offset: cursor.offset,
        });
    }
    Ok(match (kept, dropped) {
        (false, true) => Kept::None,
        (true, true) => Kept::Some,
        _ => Kept::All,
    })
}

impl<'a> BatchReader<'a> {
    pub fn new(payload: &'a [u8]) -> Result<BatchReader<'a>, BatchError> {
        let mut cursor = Cursor {
            bytes: payload,
            offset: 0,
            validated: false,
        };
        let database = cursor.str()?;
        let row_count = cursor.u32()?;
        let rows_start = cursor.offset;
        for _ in 0..row_count {
            cursor.row()?;
        }
        if cursor.offset != payload.len() {
            return Err(BatchError::TrailingBytes {
                offset: cursor.offset,
            });
        }
        Ok(BatchReader {
            database,
            row_count,
            rows: &payload[rows_start..],
        })
    }

    pub fn database(&self) -> &'a str {
        self.database
    }

    pub fn row_count(&self) -> u32 {
        self.row_count
    }

    pub fn rows(&self) -> Rows<'a> {
        Rows {
            cursor: Cursor {
                bytes: self.rows,
                offset: 0,
                validated: true,
            },
            remaining: self.row_count,
        }
    }
}

/// Rows of a validated batch.
pub struct Rows<'a> {
    cursor: Cursor<'a>,
    remaining: u32,
}

impl<'a> Iterator for Rows<'a> {
    type Item = Row<'a>;

    fn next(&mut self) -> Option<Row<'a>> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        Some(
            self.cursor
                .row()
                .expect("batch was validated by BatchReader::new"),
        )
    }
}

/// One row of a validated batch.
#[derive(Clone, Copy, Debug)]
pub struct Row<'a> {
    pub table: &'a str,
    pub series_hash: u64,
    pub time_ns: i64,
    tag_count: u16,
    tags: &'a [u8],
    field_count: u16,
    fields: &'a [u8],
}

impl<'a> Row<'a> {
    /// Tag pairs, sorted by key.
    pub fn tags(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let mut cursor = Cursor {
            bytes: self.tags,
            offset: 0,
            validated: true,
        };
        (0..self.tag_count).map(move |_| {
            let key = cursor.str().expect("validated");
            let value = cursor.str().expect("validated");
            (key, value)
        })
    }

    pub fn tag_count(&self) -> usize {
        usize::from(self.tag_count)
    }

    /// The encoded tag pairs. The encoding is canonical (sorted by key,
    /// length-prefixed), so two rows have the same tags exactly when these
    /// bytes are equal.
    pub fn tags_encoded(&self) -> &'a [u8] {
        self.tags
    }

    /// The encoded field pairs, `(key:str kind:u8 value)*` in line order
    /// (the WAL's packed form reads them without decoding values,
    /// [`crate::packed`]).
    pub fn fields_encoded(&self) -> &'a [u8] {
        self.fields
    }

    /// Field pairs in line order.
    pub fn fields(&self) -> impl Iterator<Item = (&'a str, FieldValue<'a>)> + 'a {
        let mut cursor = Cursor {
            bytes: self.fields,
            offset: 0,
            validated: true,
        };
        (0..self.field_count).map(move |_| {
            let key = cursor.str().expect("validated");
            let value = cursor.value().expect("validated");
            (key, value)
        })
    }

    pub fn field_count(&self) -> usize {
        usize::from(self.field_count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn point(
        measurement: &'static str,
        tags: &[(&'static str, &'static str)],
        time: i64,
    ) -> Point<'static> {
        Point {
            line_number: 1,
            measurement: Cow::Borrowed(measurement),
            tags: tags
                .iter()
                .map(|(k, v)| (Cow::Borrowed(*k), Cow::Borrowed(*v)))
                .collect(),
            fields: vec![
                (Cow::Borrowed("f"), FieldValue::Float(1.5)),
                (Cow::Borrowed("i"), FieldValue::Integer(-7)),
                (Cow::Borrowed("u"), FieldValue::UInteger(u64::MAX)),
                (
                    Cow::Borrowed("s"),
                    FieldValue::String(Cow::Borrowed("a \"q\"")),
                ),
                (Cow::Borrowed("b"), FieldValue::Boolean(true)),
            ],
            timestamp_ns: time,
            series_hash: 42,
        }
    }

    /// Goal: every value survives encode → decode exactly, and the encoder
    /// restarts cleanly after `take`. Method: round trip two batches.
    #[test]
    fn round_trip_keeps_every_value() {
        let mut encoder = BatchEncoder::new("db1");
        encoder.push(&point("cpu", &[("host", "a"), ("region", "eu")], -5));
        encoder.push(&point("mem", &[], i64::MAX));
        let payload = encoder.take("db2");
        let reader = BatchReader::new(payload.as_bytes()).expect("valid");
        assert_eq!(reader.database(), "db1");
        let rows: Vec<Row> = reader.rows().collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].table, "cpu");
        assert_eq!(rows[0].time_ns, -5);
        assert_eq!(rows[0].series_hash, 42);
        assert_eq!(
            rows[0].tags().collect::<Vec<_>>(),
            vec![("host", "a"), ("region", "eu")]
        );
        let fields: Vec<_> = rows[1].fields().collect();
        assert_eq!(fields[2], ("u", FieldValue::UInteger(u64::MAX)));
        assert_eq!(
            fields[3],
            ("s", FieldValue::String(Cow::Borrowed("a \"q\"")))
        );
        assert_eq!(rows[1].time_ns, i64::MAX);

        encoder.push(&point("disk", &[], 1));
        let copy_source = BatchReader::new(payload.as_bytes()).expect("valid");
        encoder.push_row(&copy_source.rows().next().expect("a row"));
        let copied = encoder.take("db2");
        let reader = BatchReader::new(copied.as_bytes()).expect("valid");
        assert_eq!(reader.database(), "db2");
        assert_eq!(reader.row_count(), 2);
        let rows: Vec<Row> = reader.rows().collect();
        assert_eq!(
            rows[1].tags().collect::<Vec<_>>(),
            vec![("host", "a"), ("region", "eu")]
        );
        assert_eq!(rows[1].fields().count(), 5);
        encoder.push(&point("disk", &[], 1));
        let second = encoder.take("db2");
        let reader = BatchReader::new(second.as_bytes()).expect("valid");
        assert_eq!(reader.database(), "db2");
        assert_eq!(reader.row_count(), 1);
    }

    /// Goal: the unvalidated reader of an encoded batch sees exactly what
    /// the validating one sees. Method: read one payload both ways.
    #[test]
    fn encoded_reader_equals_validated_reader() {
        let mut encoder = BatchEncoder::new("db");
        encoder.push(&point("cpu", &[("host", "a"), ("region", "eu")], 3));
        encoder.push(&point("mem", &[], 4));
        let payload = encoder.take("db");
        let checked = BatchReader::new(payload.as_bytes()).expect("valid");
        let trusted = payload.reader();
        assert_eq!(trusted.database(), checked.database());
        assert_eq!(trusted.row_count(), checked.row_count());
        for (a, b) in trusted.rows().zip(checked.rows()) {
            assert_eq!(
                (a.table, a.series_hash, a.time_ns),
                (b.table, b.series_hash, b.time_ns)
            );
            assert_eq!(a.tags_encoded(), b.tags_encoded());
            assert_eq!(
                a.fields().collect::<Vec<_>>(),
                b.fields().collect::<Vec<_>>()
            );
        }
        assert_eq!(trusted.rows().count(), 2);
    }

    /// Goal: `kept_rows` judges rows by series hash exactly as reading the
    /// validated rows would (none, some, all; no rows counts as all), and
    /// refuses what `BatchReader::new` refuses for its layout. Method: a
    /// batch of three hashes against several filters; every cut of it.
    #[test]
    fn kept_rows_agrees_with_the_validated_rows() {
        let mut encoder = BatchEncoder::new("db");
        for (hash, table) in [(1, "cpu"), (2, "mem"), (3, "cpu")] {
            encoder.push(&Point {
                series_hash: hash,
                ..point(table, &[("host", "a")], 5)
            });
        }
        let payload = encoder.take("db");
        let bytes = payload.as_bytes();
        let reader = BatchReader::new(bytes).expect("valid");
        let filters: [fn(u64) -> bool; 4] = [|_| false, |h| h == 2, |h| h != 2, |_| true];
        for keep in filters {
            let kept = reader.rows().filter(|r| keep(r.series_hash)).count();
            let expected = match kept {
                0 => Kept::None,
                3 => Kept::All,
                _ => Kept::Some,
            };
            assert_eq!(kept_rows(bytes, keep), Ok(expected));
        }
        let empty = BatchEncoder::new("db").take("db");
        assert_eq!(kept_rows(empty.as_bytes(), |_| false), Ok(Kept::All));
        for cut in 0..bytes.len() {
            assert!(kept_rows(&bytes[..cut], |_| true).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(kept_rows(&longer, |_| true).is_err(), "trailing byte");
    }

    /// Goal: a damaged payload is an error, never a panic. Method: cut a
    /// valid payload at every length and flip every byte.
    #[test]
    fn damaged_payload_is_an_error_not_a_panic() {
        let mut encoder = BatchEncoder::new("db");
        encoder.push(&point("cpu", &[("host", "a")], 9));
        let payload = encoder.take("db");
        for cut in 0..payload.len() {
            assert!(
                BatchReader::new(&payload.as_bytes()[..cut]).is_err(),
                "cut at {cut} accepted"
            );
        }
        for index in 0..payload.len() {
            let mut damaged = payload.as_bytes().to_vec();
            damaged[index] ^= 0xff;
            let _ = kept_rows(&damaged, |h| h % 2 == 0);
            if let Ok(reader) = BatchReader::new(&damaged) {
                for row in reader.rows() {
                    row.tags().count();
                    row.fields().count();
                }
            }
        }
    }
}
