//! Packed sub-batches: the WAL's form of a sub-batch, with each series key
//! and each field layout written once per WAL segment and referred to by
//! number afterwards.
//!
//! A sub-batch ([`crate::batch`]) is what crosses cores and enters the
//! store; each of its rows carries its table, every tag and every field
//! name (478 bytes per TSBS cpu point, 1.4× its line of line protocol).
//! Written to the WAL as is, that repetition is most of what the disk,
//! the DMA buffers and the checksum pay for. So the owning shard packs
//! each sub-batch as the log places it ([`Packer`], through
//! [`crate::wal::Payload`]), and replay unpacks it back into a sub-batch
//! ([`Unpacker`]). Nothing else reads this form.
//!
//! # Layout (WAL record kind [`crate::shard::RECORD_PACKED`])
//!
//! Integers are little-endian; `varint` is unsigned LEB128 (at most 10
//! bytes, value < 2^64); `zigzag` maps a signed value `v` to the varint of
//! `(v << 1) ^ (v >> 63)`.
//!
//! ```text
//! packed  := format:u8 (= 1)  database:vstr  row_count:varint  row*
//! row     := series_ref:varint [series]  layout_ref:varint [layout]
//!            time:zigzag  value*                 -- one value per field of the layout, in its order
//! series  := table:vstr  series_hash:u64  tag_count:u16  tags_len:u32  tags[tags_len]
//! layout  := field_count:u16  (name:vstr  kind:u8)*
//! value   := f64 (kind 0) | zigzag (kind 1, integer) | varint (kind 2, unsigned)
//!          | vstr (kind 3, string) | u8 0 or 1 (kind 4, boolean)
//! vstr    := len:varint  utf8[len]
//! ```
//!
//! - `tags` are the sub-batch's own tag bytes, verbatim: `(key:str
//!   value:str)*` sorted by key, `str := len:u32 utf8[len]`
//!   ([`crate::batch`]); kinds are the sub-batch's field kinds.
//! - `time` is the row's timestamp minus the previous row's in the same
//!   record (wrapping), the first row's minus 0.
//! - **References.** The series and the layouts each form a numbered
//!   list, the *dictionary*, that belongs to one segment file: it is empty
//!   before the segment's first record and grows record by record in
//!   sequence order. With `n` entries so far, a reference `r` means: `0`,
//!   a definition follows that gets no number (the dictionary is full);
//!   `1..=n`, entry `r - 1`; `n + 1`, a definition follows and becomes
//!   entry `n`. Anything larger is damage. A series entry also belongs to
//!   the database of the record that defined it; a reference to it from a
//!   record of another database is damage.
//! - **Bounds.** A dictionary holds at most [`SERIES_MAX`] series,
//!   [`LAYOUTS_MAX`] layouts and [`DICTIONARY_BYTES_MAX`] bytes of keys;
//!   past them the packer writes unnumbered definitions, and the unpacker
//!   refuses to number more, so both sides stay bounded whatever a file
//!   holds.
//!
//! # Why it is safe (the WAL's durability argument, [`crate::wal`], still holds)
//!
//! - A record's meaning depends on the earlier records of its segment, so
//!   a reader reads each segment from its first record: replay does
//!   (records whose rows are already persisted are still read for their
//!   definitions), and `ringest wal inspect` does.
//! - The packer's dictionary is exactly the definitions of the packed
//!   records the log placed in its open segment: a record is packed for
//!   the segment the log is about to place it in ([`crate::wal::Payload`]:
//!   packed again, from an empty dictionary, if placing it starts a new
//!   segment), and definitions it added stay only if the log placed it
//!   ([`Packer`]'s `settle`); placing is synchronous on the shard's
//!   thread, so no other record is packed in between. A log that failed
//!   takes no more records (it is unhealthy until restart), so no record
//!   can follow one that did not reach the disk.
//! - Truncation behind persistence deletes whole segments, each of which
//!   defines everything its records use.
//! - A torn tail only cuts records off the end: no kept record refers to
//!   a lost one. Damage inside a segment stops replay of that segment at
//!   the damage (as before: `wal.skip_corrupt`); a record whose checksum
//!   holds but which does not unpack makes the unpacker refuse the rest of
//!   its segment too (the dictionary lacks what it defined).
//! - A record unpacks to at most [`UNPACKED_BYTES_MAX`] bytes, or is
//!   refused: a crafted record cannot make a reader allocate or work
//!   without bound by referring to a long name from many rows.
//! - A record that packs larger than the sub-batch (possible only for odd
//!   rows: large integers, one-row records of new series) is written as
//!   the plain sub-batch instead (record kind [`crate::shard::RECORD_BATCH`]),
//!   which does not touch the dictionary.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use crate::batch::{
    BatchReader, UncheckedBatch, KIND_BOOLEAN, KIND_FLOAT, KIND_INTEGER, KIND_STRING, KIND_UINTEGER,
};

/// The one packed format this code writes and reads (first byte).
pub const PACKED_FORMAT: u8 = 1;
/// Numbered series per segment dictionary.
pub const SERIES_MAX: usize = 1 << 20;
/// Numbered layouts per segment dictionary.
pub const LAYOUTS_MAX: usize = 1 << 16;
/// Bytes of keys (tables, tags, field names) per segment dictionary.
pub const DICTIONARY_BYTES_MAX: usize = 64 << 20;
/// Most bytes one record unpacks to: a packed record is written only when
/// smaller than its plain sub-batch, which is at most a WAL record's
/// payload ([`crate::wal::record::RECORD_PAYLOAD_BYTES_MAX`]).
pub const UNPACKED_BYTES_MAX: usize = crate::wal::record::RECORD_PAYLOAD_BYTES_MAX;

const NONE: u32 = u32::MAX;

/// Hasher of keys that already are hashes (series hashes, mixed layout
/// checksums).
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type KeyMap = HashMap<u64, u32, BuildHasherDefault<KeyHasher>>;

/// A layout's map key: its bytes' checksum, spread over 64 bits.
fn layout_key(bytes: &[u8]) -> u64 {
    u64::from(crc32c::crc32c(bytes)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_zigzag(out: &mut Vec<u8>, value: i64) {
    put_varint(out, ((value << 1) ^ (value >> 63)) as u64);
}

fn put_vstr(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Reads a batch-encoded `len:u32 bytes[len]` at `*at` of bytes known to
/// be a valid sub-batch part.
fn batch_str<'a>(bytes: &'a [u8], at: &mut usize) -> &'a [u8] {
    let len = u32::from_le_bytes(bytes[*at..*at + 4].try_into().expect("4 bytes")) as usize;
    let text = &bytes[*at + 4..*at + 4 + len];
    *at += 4 + len;
    text
}

fn range(start: usize, end: usize) -> (u32, u32) {
    (start as u32, end as u32)
}

fn slice(arena: &[u8], (start, end): (u32, u32)) -> &[u8] {
    &arena[start as usize..end as usize]
}

// ---------------------------------------------------------------------------
// Packing

#[derive(Clone, Copy, Debug)]
struct PackedSeries {
    hash: u64,
    database: u32,
    table: (u32, u32),
    tags: (u32, u32),
    /// The layout this series used last (a hint: checked before use).
    layout: u32,
    /// The previous entry with the same hash, or [`NONE`].
    next: u32,
}

#[derive(Clone, Copy, Debug)]
struct PackedLayout {
    key: u64,
    /// `(name:str kind:u8)*` as in a sub-batch's field pairs, values left out.
    names: (u32, u32),
    next: u32,
}

/// Lengths of the dictionary at the last placed record.
#[derive(Clone, Copy, Debug, Default)]
struct Mark {
    series: usize,
    layouts: usize,
    databases: usize,
    arena: usize,
}

/// The packing side of one shard's WAL: the dictionary of its open
/// segment and the buffer of the record being placed.
#[derive(Debug)]
pub struct Packer {
    segment: Option<u64>,
    series: Vec<PackedSeries>,
    series_by_hash: KeyMap,
    layouts: Vec<PackedLayout>,
    layouts_by_key: KeyMap,
    databases: Vec<Box<str>>,
    arena: Vec<u8>,
    /// What the placed records defined.
    placed: Mark,
    /// The segment `out` was packed for in the current attempt, if any.
    packed_for: Option<u64>,
    /// `out` holds a packed record (false: the sub-batch is written plain).
    packed: bool,
    out: Vec<u8>,
    names: Vec<u8>,
    values: Vec<u8>,
    /// [`DICTIONARY_BYTES_MAX`] (smaller in tests).
    bytes_max: usize,
}

/// Packer statistics, for tests and `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PackerStats {
    pub series: usize,
    pub layouts: usize,
    pub dictionary_bytes: usize,
}

impl Default for Packer {
    fn default() -> Packer {
        Packer {
            segment: None,
            series: Vec::new(),
            series_by_hash: KeyMap::default(),
            layouts: Vec::new(),
            layouts_by_key: KeyMap::default(),
            databases: Vec::new(),
            arena: Vec::new(),
            placed: Mark::default(),
            packed_for: None,
            packed: false,
            out: Vec::new(),
            names: Vec::new(),
            values: Vec::new(),
            bytes_max: DICTIONARY_BYTES_MAX,
        }
    }
}

impl Packer {
    pub fn new() -> Packer {
        Packer::default()
    }

    pub fn stats(&self) -> PackerStats {
        PackerStats {
            series: self.series.len(),
            layouts: self.layouts.len(),
            dictionary_bytes: self.arena.len(),
        }
    }

    /// The record for `batch` if the log places it in `segment`: `Some`
    /// packed bytes, or `None` when the plain sub-batch is smaller (write
    /// that instead). Packing again for the same segment in the same
    /// attempt returns the same bytes. Must be followed by
    /// [`Packer::settle`] before anything else is packed.
    pub fn pack(
        &mut self,
        segment: u64,
        batch: &BatchReader<'_>,
        plain_bytes: usize,
    ) -> Option<&[u8]> {
        if self.packed_for != Some(segment) {
            if self.packed_for.is_some() {
                // Packed for the segment the log then closed: that record
                // now starts the next segment.
                self.forget_unplaced();
            }
            if self.segment != Some(segment) {
                // No packed record was placed in `segment` yet (every one
                // is packed for its segment first): its dictionary is empty.
                self.clear(segment);
            }
            self.pack_rows(batch);
            self.packed = self.out.len() < plain_bytes;
            if !self.packed {
                self.forget_unplaced();
            }
            self.packed_for = Some(segment);
        }
        self.packed.then_some(&self.out[..])
    }

    /// Ends an attempt: `placed` says whether the log placed the record
    /// [`Packer::pack`] made. The definitions of a record not placed are
    /// forgotten. Without a preceding `pack`, nothing happens.
    pub fn settle(&mut self, placed: bool) {
        if self.packed_for.take().is_none() {
            return;
        }
        if placed && self.packed {
            self.placed = self.mark();
        } else {
            self.forget_unplaced();
        }
    }

    fn mark(&self) -> Mark {
        Mark {
            series: self.series.len(),
            layouts: self.layouts.len(),
            databases: self.databases.len(),
            arena: self.arena.len(),
        }
    }

    fn clear(&mut self, segment: u64) {
        self.segment = Some(segment);
        self.series.clear();
        self.series_by_hash.clear();
        self.layouts.clear();
        self.layouts_by_key.clear();
        self.databases.clear();
        self.arena.clear();
        self.placed = Mark::default();
    }

    /// Drops every entry added since the last placed record.
    fn forget_unplaced(&mut self) {
        let mark = self.placed;
        while self.series.len() > mark.series {
            let entry = self.series.pop().expect("longer than the mark");
            if entry.next == NONE {
                self.series_by_hash.remove(&entry.hash);
            } else {
                self.series_by_hash.insert(entry.hash, entry.next);
            }
        }
        while self.layouts.len() > mark.layouts {
            let entry = self.layouts.pop().expect("longer than the mark");
            if entry.next == NONE {
                self.layouts_by_key.remove(&entry.key);
            } else {
                self.layouts_by_key.insert(entry.key, entry.next);
            }
        }
        self.databases.truncate(mark.databases);
        self.arena.truncate(mark.arena);
    }

    fn has_room(&self, bytes: usize) -> bool {
        self.arena.len() + bytes <= self.bytes_max
    }

    /// Packs every row into `out`.
    fn pack_rows(&mut self, batch: &BatchReader<'_>) {
        let database = match self.databases.iter().position(|d| **d == *batch.database()) {
            Some(index) => index as u32,
            None => {
                self.databases.push(batch.database().into());
                (self.databases.len() - 1) as u32
            }
        };
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        out.push(PACKED_FORMAT);
        put_vstr(&mut out, batch.database().as_bytes());
        put_varint(&mut out, u64::from(batch.row_count()));
        let mut previous = 0i64;
        for row in batch.rows() {
            let series = self.series_ref(&mut out, database, &row);
            self.split_fields(row.field_count(), row.fields_encoded());
            self.layout_ref(&mut out, series);
            put_zigzag(&mut out, row.time_ns.wrapping_sub(previous));
            previous = row.time_ns;
            out.extend_from_slice(&self.values);
        }
        self.out = out;
    }

    /// Writes the series reference of `row` (and its definition, if new);
    /// returns its entry number, or [`NONE`] when unnumbered.
    fn series_ref(&mut self, out: &mut Vec<u8>, database: u32, row: &crate::batch::Row<'_>) -> u32 {
        let table = row.table.as_bytes();
        let tags = row.tags_encoded();
        let mut at = self
            .series_by_hash
            .get(&row.series_hash)
            .copied()
            .unwrap_or(NONE);
        while at != NONE {
            let entry = &self.series[at as usize];
            if entry.database == database
                && slice(&self.arena, entry.tags) == tags
                && slice(&self.arena, entry.table) == table
            {
                put_varint(out, u64::from(at) + 1);
                return at;
            }
            at = entry.next;
        }
        let numbered = self.series.len() < SERIES_MAX && self.has_room(table.len() + tags.len());
        let id = if numbered {
            let start = self.arena.len();
            self.arena.extend_from_slice(table);
            let middle = self.arena.len();
            self.arena.extend_from_slice(tags);
            let id = self.series.len() as u32;
            let next = self
                .series_by_hash
                .insert(row.series_hash, id)
                .unwrap_or(NONE);
            self.series.push(PackedSeries {
                hash: row.series_hash,
                database,
                table: range(start, middle),
                tags: range(middle, self.arena.len()),
                layout: NONE,
                next,
            });
            put_varint(out, u64::from(id) + 1);
            id
        } else {
            put_varint(out, 0);
            NONE
        };
        put_vstr(out, table);
        out.extend_from_slice(&row.series_hash.to_le_bytes());
        out.extend_from_slice(&(row.tag_count() as u16).to_le_bytes());
        out.extend_from_slice(&(tags.len() as u32).to_le_bytes());
        out.extend_from_slice(tags);
        id
    }

    /// Splits a row's encoded field pairs into `names` (the layout: field
    /// count, then `(name:str kind:u8)*`) and `values` (packed values).
    fn split_fields(&mut self, field_count: usize, fields: &[u8]) {
        self.names.clear();
        self.values.clear();
        self.names
            .extend_from_slice(&(field_count as u16).to_le_bytes());
        let mut at = 0;
        while at < fields.len() {
            let name_start = at;
            batch_str(fields, &mut at);
            let kind = fields[at];
            at += 1;
            self.names.extend_from_slice(&fields[name_start..at]);
            match kind {
                KIND_FLOAT => {
                    self.values.extend_from_slice(&fields[at..at + 8]);
                    at += 8;
                }
                KIND_INTEGER | KIND_UINTEGER => {
                    let raw = u64::from_le_bytes(fields[at..at + 8].try_into().expect("8 bytes"));
                    if kind == KIND_INTEGER {
                        put_zigzag(&mut self.values, raw as i64);
                    } else {
                        put_varint(&mut self.values, raw);
                    }
                    at += 8;
                }
                KIND_STRING => {
                    let text = batch_str(fields, &mut at);
                    put_vstr(&mut self.values, text);
                }
                _ => {
                    debug_assert_eq!(kind, KIND_BOOLEAN, "invariant: a valid sub-batch");
                    self.values.push(fields[at]);
                    at += 1;
                }
            }
        }
    }

    /// Writes the reference of the layout in `names` (and its definition,
    /// if new) for a row of series entry `series`.
    fn layout_ref(&mut self, out: &mut Vec<u8>, series: u32) {
        let hint = match self.series.get(series as usize) {
            Some(entry) => entry.layout,
            None => NONE,
        };
        if let Some(layout) = self.layouts.get(hint as usize) {
            if slice(&self.arena, layout.names) == &self.names[..] {
                put_varint(out, u64::from(hint) + 1);
                return;
            }
        }
        let key = layout_key(&self.names);
        let mut at = self.layouts_by_key.get(&key).copied().unwrap_or(NONE);
        while at != NONE {
            let layout = &self.layouts[at as usize];
            if slice(&self.arena, layout.names) == &self.names[..] {
                break;
            }
            at = layout.next;
        }
        if at != NONE {
            put_varint(out, u64::from(at) + 1);
        } else {
            if self.layouts.len() < LAYOUTS_MAX && self.has_room(self.names.len()) {
                let start = self.arena.len();
                self.arena.extend_from_slice(&self.names);
                at = self.layouts.len() as u32;
                let next = self.layouts_by_key.insert(key, at).unwrap_or(NONE);
                self.layouts.push(PackedLayout {
                    key,
                    names: range(start, self.arena.len()),
                    next,
                });
                put_varint(out, u64::from(at) + 1);
            } else {
                put_varint(out, 0);
            }
            // The definition: field count, then each name as a vstr.
            out.extend_from_slice(&self.names[..2]);
            let mut pos = 2;
            while pos < self.names.len() {
                let name = batch_str(&self.names, &mut pos);
                put_vstr(out, name);
                out.push(self.names[pos]);
                pos += 1;
            }
        }
        if let Some(entry) = self.series.get_mut(series as usize) {
            entry.layout = at;
        }
    }
}

// ---------------------------------------------------------------------------
// Unpacking

/// Why a packed record could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedError {
    /// Byte offset in the payload.
    pub offset: usize,
    pub what: &'static str,
}

impl fmt::Display for PackedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "packed record damaged at byte {}: {}",
            self.offset, self.what
        )
    }
}

impl std::error::Error for PackedError {}

#[derive(Clone, Copy, Debug)]
struct UnpackedSeries {
    database: u32,
    hash: u64,
    tag_count: u16,
    /// Ranges of the arena (a numbered entry) or of the record's payload
    /// (an unnumbered definition, used by its row only).
    table: (u32, u32),
    tags: (u32, u32),
    in_payload: bool,
}

#[derive(Clone, Copy, Debug)]
struct UnpackedLayout {
    field_count: u16,
    /// Bytes of the field names as sub-batch strings.
    names_bytes: u32,
    /// Range of `fields`.
    fields: (u32, u32),
}

#[derive(Clone, Copy, Debug)]
struct UnpackedField {
    /// The name as a sub-batch `str` (u32 length + bytes) in the arena.
    name: (u32, u32),
    kind: u8,
}

/// The reading side: the dictionary of the segment being read. One per
/// reader; [`Unpacker::unpack`] is given every packed record of a segment
/// in sequence order, from the first. A record that does not decode
/// leaves the dictionary short of its definitions, so every later record
/// of its segment is refused too (replay of that segment stops there, as
/// for any damage; with `wal.skip_corrupt` each is logged and skipped).
#[derive(Debug)]
pub struct Unpacker {
    segment: Option<(u64, String, u64)>,
    /// A record of this segment did not decode: the rest is refused.
    poisoned: bool,
    /// Most bytes one record may unpack to ([`UNPACKED_BYTES_MAX`]).
    bytes_max: usize,
    series: Vec<UnpackedSeries>,
    layouts: Vec<UnpackedLayout>,
    fields: Vec<UnpackedField>,
    databases: Vec<Box<str>>,
    arena: Vec<u8>,
    row_fields: Vec<u8>,
}

/// What one packed record held.
#[derive(Debug)]
pub struct Unpacked {
    /// Rows in the record.
    pub rows: u32,
    /// The kept rows as sub-batch bytes (for [`BatchReader::new`]), `None`
    /// when no row was kept.
    pub kept: Option<Vec<u8>>,
    /// The smallest and largest timestamp of all rows (`None`: no rows).
    pub time_range: Option<(i64, i64)>,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn fail<T>(&self, what: &'static str) -> Result<T, PackedError> {
        Err(PackedError {
            offset: self.at,
            what,
        })
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], PackedError> {
        match self
            .at
            .checked_add(len)
            .filter(|end| *end <= self.bytes.len())
        {
            Some(end) => {
                let taken = &self.bytes[self.at..end];
                self.at = end;
                Ok(taken)
            }
            None => self.fail("truncated"),
        }
    }

    fn u8(&mut self) -> Result<u8, PackedError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, PackedError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    fn u32(&mut self) -> Result<u32, PackedError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, PackedError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn varint(&mut self) -> Result<u64, PackedError> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let byte = self.u8()?;
            if shift == 63 && byte > 1 {
                return self.fail("varint past 64 bits");
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(value);
            }
        }
        self.fail("varint longer than 10 bytes")
    }

    fn zigzag(&mut self) -> Result<i64, PackedError> {
        let raw = self.varint()?;
        Ok((raw >> 1) as i64 ^ -((raw & 1) as i64))
    }

    fn vstr(&mut self) -> Result<&'a [u8], PackedError> {
        let len = self.varint()?;
        let len = usize::try_from(len).or_else(|_| self.fail("length past the address space"))?;
        let at = self.at;
        let bytes = self.take(len)?;
        if std::str::from_utf8(bytes).is_err() {
            return Err(PackedError {
                offset: at,
                what: "string is not UTF-8",
            });
        }
        Ok(bytes)
    }
}

/// Checks that `tags` are `count` pairs of batch-encoded UTF-8 strings
/// filling it exactly.
fn valid_tags(tags: &[u8], count: u16) -> bool {
    let mut at = 0usize;
    for _ in 0..u32::from(count) * 2 {
        let Some(len) = tags.get(at..at + 4) else {
            return false;
        };
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        let Some(text) = tags.get(at + 4..).and_then(|rest| rest.get(..len)) else {
            return false;
        };
        if std::str::from_utf8(text).is_err() {
            return false;
        }
        at += 4 + len;
    }
    at == tags.len()
}

impl Default for Unpacker {
    fn default() -> Unpacker {
        Unpacker {
            segment: None,
            poisoned: false,
            bytes_max: UNPACKED_BYTES_MAX,
            series: Vec::new(),
            layouts: Vec::new(),
            fields: Vec::new(),
            databases: Vec::new(),
            arena: Vec::new(),
            row_fields: Vec::new(),
        }
    }
}

impl Unpacker {
    pub fn new() -> Unpacker {
        Unpacker::default()
    }

    /// Reads one packed record of segment `segment` (generation,
    /// directory, index); a record of another segment than the previous
    /// call's starts an empty dictionary. Rows whose series hash passes
    /// `keep` are returned as sub-batch bytes.
    pub fn unpack(
        &mut self,
        segment: (u64, &str, u64),
        payload: &[u8],
        keep: impl Fn(u64) -> bool,
    ) -> Result<Unpacked, PackedError> {
        let same = matches!(&self.segment, Some((g, d, i)) if *g == segment.0 && d == segment.1 && *i == segment.2);
        if !same {
            self.series.clear();
            self.layouts.clear();
            self.fields.clear();
            self.databases.clear();
            self.arena.clear();
            self.segment = Some((segment.0, segment.1.to_string(), segment.2));
            self.poisoned = false;
        }
        if self.poisoned {
            // The dictionary lacks what the damaged record defined: nothing
            // after it in this segment can be read with certainty.
            return Err(PackedError {
                offset: 0,
                what: "an earlier record of this segment did not decode",
            });
        }
        let unpacked = self.unpack_record(payload, keep);
        self.poisoned = unpacked.is_err();
        unpacked
    }

    fn unpack_record(
        &mut self,
        payload: &[u8],
        keep: impl Fn(u64) -> bool,
    ) -> Result<Unpacked, PackedError> {
        let mut reader = Reader {
            bytes: payload,
            at: 0,
        };
        if reader.u8()? != PACKED_FORMAT {
            return reader.fail("unknown packed format");
        }
        let database_bytes = reader.vstr()?;
        let database = std::str::from_utf8(database_bytes).expect("vstr checked UTF-8");
        let database_index = match self.databases.iter().position(|d| **d == *database) {
            Some(index) => index as u32,
            None => {
                self.databases.push(database.into());
                (self.databases.len() - 1) as u32
            }
        };
        let row_count = reader.varint()?;
        let row_count = u32::try_from(row_count).or_else(|_| reader.fail("row count past u32"))?;
        let mut kept = UncheckedBatch::new(database);
        let mut unpacked_bytes = 0usize;
        let mut time = 0i64;
        let mut time_range: Option<(i64, i64)> = None;
        for _ in 0..row_count {
            let series = self.series_ref(&mut reader, database_index)?;
            // An unnumbered layout (the last definition of a row) leaves
            // the arena and the field list again after its row.
            let (arena_before, fields_before) = (self.arena.len(), self.fields.len());
            let (layout, numbered_layout) = self.layout_ref(&mut reader)?;
            time = time.wrapping_add(reader.zigzag()?);
            time_range = Some(match time_range {
                None => (time, time),
                Some((low, high)) => (low.min(time), high.max(time)),
            });
            // The row's size as a sub-batch row: every record this build
            // wrote unpacks to at most its plain sub-batch, which is below
            // `bytes_max`; a record that would unpack to more (a long name
            // referred to by many rows) is damage, refused before it costs
            // memory or time.
            let (start, end) = layout.fields;
            let (series_bytes, names_bytes) = (
                (series.table.1 - series.table.0 + series.tags.1 - series.tags.0) as usize,
                layout.names_bytes as usize,
            );
            // Exactly the sub-batch row: its fixed fields, table, tags and
            // names here; each value's kind byte and value below.
            unpacked_bytes += 32 + series_bytes + names_bytes;
            if unpacked_bytes > self.bytes_max {
                return reader.fail("unpacks past the largest sub-batch");
            }
            let keeping = keep(series.hash);
            self.row_fields.clear();
            for field in &self.fields[start as usize..end as usize] {
                if keeping {
                    self.row_fields
                        .extend_from_slice(slice(&self.arena, field.name));
                    self.row_fields.push(field.kind);
                }
                unpacked_bytes += match field.kind {
                    KIND_STRING | KIND_BOOLEAN => 1,
                    _ => 9,
                };
                match field.kind {
                    KIND_FLOAT => {
                        let value = reader.take(8)?;
                        if keeping {
                            self.row_fields.extend_from_slice(value);
                        }
                    }
                    KIND_INTEGER => {
                        let value = reader.zigzag()?;
                        if keeping {
                            self.row_fields.extend_from_slice(&value.to_le_bytes());
                        }
                    }
                    KIND_UINTEGER => {
                        let value = reader.varint()?;
                        if keeping {
                            self.row_fields.extend_from_slice(&value.to_le_bytes());
                        }
                    }
                    KIND_STRING => {
                        let text = reader.vstr()?;
                        unpacked_bytes += 4 + text.len();
                        if unpacked_bytes > self.bytes_max {
                            return reader.fail("unpacks past the largest sub-batch");
                        }
                        if keeping {
                            self.row_fields
                                .extend_from_slice(&(text.len() as u32).to_le_bytes());
                            self.row_fields.extend_from_slice(text);
                        }
                    }
                    _ => {
                        let value = reader.u8()?;
                        unpacked_bytes += 1;
                        if value > 1 {
                            return reader.fail("boolean is neither 0 nor 1");
                        }
                        if keeping {
                            self.row_fields.push(value);
                        }
                    }
                }
            }
            if keeping {
                let keys = if series.in_payload {
                    payload
                } else {
                    &self.arena
                };
                let table = std::str::from_utf8(slice(keys, series.table))
                    .expect("table checked UTF-8 when defined");
                kept.push(
                    table,
                    series.hash,
                    time,
                    series.tag_count,
                    slice(keys, series.tags),
                    layout.field_count,
                    &self.row_fields,
                );
            }
            if !numbered_layout {
                self.arena.truncate(arena_before);
                self.fields.truncate(fields_before);
            }
        }
        if reader.at != payload.len() {
            return reader.fail("bytes after the last row");
        }
        Ok(Unpacked {
            rows: row_count,
            kept: (kept.row_count() > 0).then(|| kept.finish()),
            time_range,
        })
    }

    fn series_ref(
        &mut self,
        reader: &mut Reader<'_>,
        database: u32,
    ) -> Result<UnpackedSeries, PackedError> {
        let at = reader.at;
        let reference = reader.varint()?;
        let n = self.series.len() as u64;
        if (1..=n).contains(&reference) {
            let entry = self.series[(reference - 1) as usize];
            if entry.database != database {
                return Err(PackedError {
                    offset: at,
                    what: "series defined in another database",
                });
            }
            return Ok(entry);
        }
        if reference > n + 1 {
            return reader.fail("series reference past the dictionary");
        }
        let numbered = reference == n + 1;
        if numbered && self.series.len() >= SERIES_MAX {
            return reader.fail("series dictionary past its bound");
        }
        let table = reader.vstr()?;
        let table_end = reader.at;
        let hash = reader.u64()?;
        let tag_count = reader.u16()?;
        let tags_len = reader.u32()? as usize;
        let tags_at = reader.at;
        let tags = reader.take(tags_len)?;
        if !valid_tags(tags, tag_count) {
            return Err(PackedError {
                offset: tags_at,
                what: "tags are not their count of UTF-8 pairs",
            });
        }
        if !numbered {
            return Ok(UnpackedSeries {
                database,
                hash,
                tag_count,
                table: range(table_end - table.len(), table_end),
                tags: range(tags_at, tags_at + tags.len()),
                in_payload: true,
            });
        }
        if self.arena.len() + table.len() + tags.len() > DICTIONARY_BYTES_MAX {
            return reader.fail("dictionary bytes past their bound");
        }
        let start = self.arena.len();
        self.arena.extend_from_slice(table);
        let middle = self.arena.len();
        self.arena.extend_from_slice(tags);
        let entry = UnpackedSeries {
            database,
            hash,
            tag_count,
            table: range(start, middle),
            tags: range(middle, self.arena.len()),
            in_payload: false,
        };
        self.series.push(entry);
        Ok(entry)
    }

    /// The row's layout, and whether it is numbered (kept).
    fn layout_ref(
        &mut self,
        reader: &mut Reader<'_>,
    ) -> Result<(UnpackedLayout, bool), PackedError> {
        let reference = reader.varint()?;
        let n = self.layouts.len() as u64;
        if (1..=n).contains(&reference) {
            return Ok((self.layouts[(reference - 1) as usize], true));
        }
        if reference > n + 1 {
            return reader.fail("layout reference past the dictionary");
        }
        let numbered = reference == n + 1;
        if numbered && self.layouts.len() >= LAYOUTS_MAX {
            return reader.fail("layout dictionary past its bound");
        }
        let field_count = reader.u16()?;
        let first = self.fields.len();
        for _ in 0..field_count {
            let name = reader.vstr()?;
            let kind = reader.u8()?;
            if kind > KIND_BOOLEAN {
                return reader.fail("unknown field kind");
            }
            if numbered && self.arena.len() + 4 + name.len() > DICTIONARY_BYTES_MAX {
                return reader.fail("dictionary bytes past their bound");
            }
            let start = self.arena.len();
            self.arena
                .extend_from_slice(&(name.len() as u32).to_le_bytes());
            self.arena.extend_from_slice(name);
            self.fields.push(UnpackedField {
                name: range(start, self.arena.len()),
                kind,
            });
        }
        let names_bytes = self.fields[first..]
            .iter()
            .map(|f| f.name.1 - f.name.0)
            .sum();
        let layout = UnpackedLayout {
            field_count,
            names_bytes,
            fields: range(first, self.fields.len()),
        };
        if numbered {
            self.layouts.push(layout);
        }
        Ok((layout, numbered))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{BatchEncoder, EncodedBatch};
    use crate::line_protocol::{Lines, ParseOptions, Point, Precision};

    /// A sub-batch of `database` from line-protocol text.
    fn batch(database: &str, text: &str) -> EncodedBatch {
        let mut lines = Lines::new(text, ParseOptions::new(Precision::Nanoseconds, 0));
        let mut encoder = BatchEncoder::new(database);
        let mut point = Point::default();
        while let Some(parsed) = lines.next_into(&mut point) {
            parsed.expect("test line parses");
            encoder.push(&point);
        }
        encoder.take(database)
    }

    /// Every row of a sub-batch as comparable text.
    fn rows_of(bytes: &[u8]) -> Vec<String> {
        let reader = BatchReader::new(bytes).expect("valid sub-batch");
        reader
            .rows()
            .map(|row| {
                format!(
                    "{} {} {:x} {} {:?} {:?}",
                    reader.database(),
                    row.table,
                    row.series_hash,
                    row.time_ns,
                    row.tags().collect::<Vec<_>>(),
                    row.fields().collect::<Vec<_>>()
                )
            })
            .collect()
    }

    /// Packs `batch` as placed in `segment`: the record's kind-4 bytes, or
    /// `None` when it is written plain.
    fn place(packer: &mut Packer, segment: u64, batch: &EncodedBatch) -> Option<Vec<u8>> {
        let packed = packer
            .pack(segment, &batch.reader(), batch.len())
            .map(<[u8]>::to_vec);
        packer.settle(true);
        packed
    }

    const MIXED: [(&str, &str); 4] = [
        (
            "db",
            "cpu,host=a,region=eu usage=0.5,n=3i,u=7u,s=\"x y\",ok=true 1000\n\
             cpu,host=b,region=eu usage=1.5,n=-3i,u=0u,s=\"\",ok=false 990\n\
             mem free=9223372036854775807i,used=-9223372036854775808i -5\n\
             cpu,host=a,region=eu usage=2.5 1001",
        ),
        (
            "other",
            "cpu,host=a,region=eu usage=0.5 2000\n\
             cpu,host=a,region=eu usage=0.75,n=1i 2001",
        ),
        (
            "db",
            "cpu,host=a,region=eu usage=3.5,n=4i,u=8u,s=\"é\",ok=true 1002\n\
             cpu,host=c usage=1 1003\n\
             cpu,host=b,region=eu usage=1.5,n=-3i,u=0u,s=\"\",ok=false 1004",
        ),
        (
            "db",
            "cpu,host=a,region=eu usage=4.5,n=5i,u=9u,s=\"z\",ok=true 1005",
        ),
    ];

    /// Goal: records packed one after another in a segment unpack, in the
    /// same order, to exactly the rows they were made from (every field
    /// kind, extreme integers, negative times, two databases sharing a
    /// series key, layouts changing within a series).
    /// Method: pack the records of [`MIXED`] into segment 7, unpack them in
    /// order with a fresh unpacker, compare every row; the later records,
    /// which only refer to earlier definitions, must be smaller than their
    /// sub-batches.
    #[test]
    fn records_of_a_segment_unpack_to_their_rows() {
        let mut packer = Packer::new();
        let mut unpacker = Unpacker::new();
        for (i, (database, text)) in MIXED.iter().enumerate() {
            let batch = batch(database, text);
            let packed = place(&mut packer, 7, &batch).expect("packs smaller");
            let unpacked = unpacker
                .unpack((1, "0", 7), &packed, |_| true)
                .expect("unpacks");
            let kept = unpacked.kept.expect("rows kept");
            assert_eq!(rows_of(&kept), rows_of(batch.as_bytes()), "record {i}");
            if i == 3 {
                assert!(
                    packed.len() * 4 < batch.len(),
                    "{} vs {}",
                    packed.len(),
                    batch.len()
                );
            }
        }
    }

    /// Goal: a record the log did not place leaves no definition behind,
    /// so the next record (which the log places) defines what it uses.
    /// Method: pack record A, settle(false); pack record B with the same
    /// series; unpack B alone, first in its segment.
    #[test]
    fn definitions_of_a_record_not_placed_are_forgotten() {
        let mut packer = Packer::new();
        let first = batch("db", "cpu,host=a v=1 1");
        packer.pack(3, &first.reader(), first.len());
        packer.settle(false);
        let second = batch("db", "cpu,host=a v=2 2");
        let packed = place(&mut packer, 3, &second).expect("packs");
        let unpacked = Unpacker::new()
            .unpack((1, "0", 3), &packed, |_| true)
            .expect("B defines its series itself");
        assert_eq!(rows_of(&unpacked.kept.unwrap()), rows_of(second.as_bytes()));
    }

    /// Goal: a record that starts a new segment is packed again from an
    /// empty dictionary, and the dictionary of the new segment is the one
    /// kept.
    /// Method: place A in segment 1; in one attempt ask for B in segment 1
    /// and then in segment 2 (what the log does when B starts segment 2);
    /// unpack B then C (same series) as the first records of segment 2.
    #[test]
    fn a_record_that_starts_a_segment_defines_everything_again() {
        let mut packer = Packer::new();
        let series = "cpu,host=a,region=eu v=1,w=2i";
        place(&mut packer, 1, &batch("db", &format!("{series} 1"))).expect("packs");
        let b = batch("db", &format!("{series} 2\n{series} 3"));
        let in_old = packer.pack(1, &b.reader(), b.len()).expect("packs").len();
        let in_new = packer
            .pack(2, &b.reader(), b.len())
            .expect("packs")
            .to_vec();
        packer.settle(true);
        assert!(
            in_new.len() > in_old,
            "the new segment's record carries its definitions"
        );
        let c = batch("db", &format!("{series} 4"));
        let packed_c = place(&mut packer, 2, &c).expect("packs");
        let mut unpacker = Unpacker::new();
        // The unpacker read segment 1 before: a new segment starts empty.
        unpacker
            .unpack(
                (1, "0", 1),
                &place(&mut Packer::new(), 1, &c).unwrap(),
                |_| true,
            )
            .unwrap();
        for (record, source) in [(&in_new, &b), (&packed_c, &c)] {
            let unpacked = unpacker
                .unpack((1, "0", 2), record, |_| true)
                .expect("unpacks");
            assert_eq!(rows_of(&unpacked.kept.unwrap()), rows_of(source.as_bytes()));
        }
    }

    /// Goal: once the dictionary is full, rows still pack (unnumbered
    /// definitions) and unpack; numbered entries keep working.
    /// Method: a packer whose dictionary holds a 70-byte budget; pack
    /// three records of 5 series (the second with a new layout, which no
    /// longer fits); unpack them all in order.
    #[test]
    fn a_full_dictionary_writes_definitions_inline() {
        let mut packer = Packer::new();
        packer.bytes_max = 70;
        let mut unpacker = Unpacker::new();
        for round in 0..3 {
            // Round 1 brings a layout when the dictionary is already full.
            let extra = if round == 1 { ",x=1u" } else { "" };
            let text: String = (0..5)
                .map(|h| {
                    format!(
                        "cpu,host=h{h} v={round}.5,n={h}i{extra} {}\n",
                        round * 10 + h
                    )
                })
                .collect();
            let source = batch("db", &text);
            let record = match place(&mut packer, 0, &source) {
                Some(packed) => packed,
                None => continue,
            };
            let unpacked = unpacker
                .unpack((1, "0", 0), &record, |_| true)
                .expect("unpacks");
            assert_eq!(rows_of(&unpacked.kept.unwrap()), rows_of(source.as_bytes()));
        }
        assert!(packer.stats().dictionary_bytes <= 70);
        assert!(packer.stats().series < 5, "{:?}", packer.stats());
    }

    /// Goal: only the rows `keep` accepts are returned, the time range
    /// covers all rows, and a record keeping nothing returns no batch.
    #[test]
    fn unpack_keeps_what_keep_accepts() {
        let source = batch(
            "db",
            "cpu,host=a v=1 5\ncpu,host=b v=2 -3\ncpu,host=a v=3 9",
        );
        let record = place(&mut Packer::new(), 0, &source).unwrap();
        let hash_a = source.reader().rows().next().unwrap().series_hash;
        let unpacked = Unpacker::new()
            .unpack((1, "0", 0), &record, |h| h == hash_a)
            .unwrap();
        assert_eq!(unpacked.rows, 3);
        assert_eq!(unpacked.time_range, Some((-3, 9)));
        assert_eq!(rows_of(&unpacked.kept.unwrap()).len(), 2);
        let none = Unpacker::new()
            .unpack((1, "0", 0), &record, |_| false)
            .unwrap();
        assert!(none.kept.is_none());
    }

    /// Goal: damaged or foreign bytes are refused with an error, never a
    /// panic or a wrong row: every prefix, every single-byte change of a
    /// record, a reference to a series another database defined.
    #[test]
    fn damage_is_refused() {
        let mut packer = Packer::new();
        let first = place(
            &mut packer,
            0,
            &batch("db", "cpu,host=a s=\"t\",b=true,v=1 1"),
        )
        .unwrap();
        let other = batch("other", "cpu,host=a s=\"t\",b=true,v=2 2");
        // Packed by hand as if the dictionary were shared across databases.
        let mut foreign = vec![PACKED_FORMAT];
        put_vstr(&mut foreign, b"other");
        put_varint(&mut foreign, 1);
        put_varint(&mut foreign, 1); // series entry 0 (defined by "db")
        put_varint(&mut foreign, 1); // layout entry 0
        put_zigzag(&mut foreign, 2);
        put_vstr(&mut foreign, b"t");
        foreign.push(1);
        foreign.extend_from_slice(&2f64.to_le_bytes());
        let mut unpacker = Unpacker::new();
        unpacker.unpack((1, "0", 0), &first, |_| true).unwrap();
        let error = unpacker
            .unpack((1, "0", 0), &foreign, |_| true)
            .unwrap_err();
        assert_eq!(error.what, "series defined in another database");
        assert!(place(&mut packer, 0, &other).is_some());

        for cut in 0..first.len() {
            assert!(
                Unpacker::new()
                    .unpack((1, "0", 0), &first[..cut], |_| true)
                    .is_err(),
                "prefix {cut} accepted"
            );
        }
        for at in 0..first.len() {
            for delta in [1u8, 0x80, 0xff] {
                let mut damaged = first.clone();
                damaged[at] = damaged[at].wrapping_add(delta);
                // Either refused, or (a value byte changed) rows that are
                // still a valid sub-batch.
                if let Ok(unpacked) = Unpacker::new().unpack((1, "0", 0), &damaged, |_| true) {
                    if let Some(kept) = unpacked.kept {
                        BatchReader::new(&kept).expect("what unpacks is a valid sub-batch");
                    }
                }
            }
        }
    }

    /// Goal: after a record that does not unpack, the rest of its segment
    /// is refused (the dictionary lacks what it defined), and a new segment
    /// reads again.
    /// Method: A defines a series, B (damaged) would define another, C
    /// refers to A's; C is refused in that segment, read in the next.
    #[test]
    fn a_record_that_does_not_unpack_stops_its_segment() {
        let mut packer = Packer::new();
        let a = place(&mut packer, 0, &batch("db", "cpu,host=a v=1 1")).unwrap();
        let b = place(&mut packer, 0, &batch("db", "cpu,host=b v=2 2")).unwrap();
        let c = place(&mut packer, 0, &batch("db", "cpu,host=a v=3 3")).unwrap();
        let mut unpacker = Unpacker::new();
        unpacker.unpack((1, "0", 0), &a, |_| true).unwrap();
        unpacker
            .unpack((1, "0", 0), &b[..b.len() - 1], |_| true)
            .unwrap_err();
        let refused = unpacker.unpack((1, "0", 0), &c, |_| true).unwrap_err();
        assert_eq!(
            refused.what,
            "an earlier record of this segment did not decode"
        );
        let mut fresh = Packer::new();
        let c_alone = place(&mut fresh, 1, &batch("db", "cpu,host=a v=3 3")).unwrap();
        unpacker
            .unpack((1, "0", 1), &c_alone, |_| true)
            .expect("a new segment reads");
    }

    /// Goal: a record that would unpack to more than the largest sub-batch
    /// (one long field name referred to by many rows) is refused before it
    /// costs that much memory, with rows kept or not.
    /// Method: one layout with a 1000-byte name, 1000 rows referring to it
    /// (about 1 MB unpacked from about 6 KB); an unpacker bounded at 100 KB.
    #[test]
    fn unpacking_is_bounded() {
        let name = "n".repeat(1000);
        let text: String = (0..1000)
            .map(|t| format!("cpu,host=a {name}=1i {t}\n"))
            .collect();
        let record = place(&mut Packer::new(), 0, &batch("db", &text)).unwrap();
        assert!(record.len() < 10_000, "{}", record.len());
        for keep in [true, false] {
            let mut unpacker = Unpacker::new();
            unpacker.bytes_max = 100_000;
            let error = unpacker.unpack((1, "0", 0), &record, |_| keep).unwrap_err();
            assert_eq!(error.what, "unpacks past the largest sub-batch");
        }
        let whole = Unpacker::new()
            .unpack((1, "0", 0), &record, |_| true)
            .unwrap();
        assert_eq!(
            whole.kept.unwrap().len(),
            batch("db", &text).len(),
            "unpacked = plain bytes"
        );
    }

    /// Goal: the packed form of a TSBS cpu row whose series was defined
    /// earlier in the segment is small: at most 1/10 of its line.
    /// Method: 100 hosts × 10 timestamps of TSBS-shaped lines (10 tags,
    /// 10 integer fields), one record per timestamp; compare the bytes of
    /// the last 9 records with their lines.
    #[test]
    fn repeated_series_pack_to_a_tenth_of_their_lines() {
        let mut packer = Packer::new();
        let (mut line_bytes, mut packed_bytes) = (0, 0);
        for t in 0..10 {
            let text: String = (0..100)
                .map(|h| {
                    format!(
                        "cpu,hostname=host_{h},region=eu-west-1,datacenter=eu-west-1a,rack=4,os=Ubuntu16.04LTS,arch=x64,team=NYC,service=7,service_version=1,service_environment=test usage_user=58i,usage_system=2i,usage_idle=24i,usage_nice=61i,usage_iowait=22i,usage_irq=63i,usage_softirq=6i,usage_steal=44i,usage_guest=80i,usage_guest_nice=38i {}\n",
                        1_451_606_400_000_000_000i64 + t * 10_000_000_000
                    )
                })
                .collect();
            let record = place(&mut packer, 0, &batch("benchmark", &text)).unwrap();
            if t > 0 {
                line_bytes += text.len();
                packed_bytes += record.len();
            }
        }
        assert!(
            packed_bytes * 10 <= line_bytes,
            "{packed_bytes} packed for {line_bytes} of lines"
        );
    }
}
