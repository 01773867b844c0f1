//! Line protocol: request body text → borrowed points, with per-line errors.
//!
//! Owns the InfluxDB line-protocol grammar: splitting a body into lines,
//! parsing one line into a [`Point`], the per-line validation rules, the
//! [`LineError`] a rejected line produces, and the stable [`series_hash`]
//! the router shards by. It does no I/O and never panics on any input.
//!
//! # Grammar (InfluxDB 3, `influxdb_line_protocol`)
//!
//! ```text
//! line        := measurement ( "," tag_key "=" tag_value )* " "+ fields ( " "+ timestamp " "* )?
//! fields      := field_key "=" field_value ( "," field_key "=" field_value )*
//! field_value := -?digits "i" | digits "u" | float | '"' string '"' | bool
//! float       := -?digits ( "." digits )? ( [eE] [+-]? digits )?
//! bool        := t | T | true | True | TRUE | f | F | false | False | FALSE
//! timestamp   := -?digits
//! ```
//!
//! - **Names** (measurement, tag keys, tag values, field keys) end at a
//!   space, tab or newline; a measurement also at `,` and NUL, tag keys and
//!   field keys at `=`, tag values at `,`. Escapes: measurement `\,` `\ `
//!   `\\`; the others `\,` `\=` `\ ` `\\`. A backslash before any other
//!   character is kept literally together with that character. A name whose
//!   unescaped text ends in a backslash is rejected (InfluxDB 3 rule).
//!   As in InfluxDB 3, this accepts some surprising forms on purpose:
//!   `m,a,b=1 f=1` (tag key `a,b`), `m,t=a=b f=1` (tag value `a=b`),
//!   `m f=1,,g=2` (field key `,g`), measurement `a=b`.
//! - **Strings**: `\"` → `"`, `\\` → `\`, any other backslash is literal;
//!   newlines are allowed inside.
//! - **Line splitting** follows InfluxDB's `scanLine`: a `\n` ends the line
//!   unless it is escaped by `\` or inside a quoted field value (a `"` opens
//!   or closes a string only after the first space and when more `=` than
//!   `,` have been seen). Lines begin after any spaces, tabs and newlines;
//!   a line starting with `#` is a comment up to the next newline. Blank
//!   and comment lines are skipped but counted in line numbers.
//!
//! # Differences from InfluxDB 3
//!
//! This list is the ONE place the differences are recorded;
//! [`Difference`] names each one and `tests/line_protocol_differential.rs`
//! accepts a disagreement with the `influxdb-line-protocol` crate only when
//! it is explained by one of them.
//!
//! 1. [`Difference::CrLf`] — exactly one `\r` right before a line's `\n` is
//!    removed, so CRLF bodies are accepted (InfluxDB rejects every such line
//!    with "Could not parse entire line"; a long-standing complaint).
//! 2. [`Difference::SemanticChecks`] — rules InfluxDB applies after its parser
//!    are applied here, per line: duplicate tag key, tag or field named
//!    `time`, duplicate field with a different type reject the line.
//! 3. [`Difference::DuplicateFieldLastWins`] — a duplicate field of the same
//!    type keeps one entry (first position, last value); the crate returns
//!    both.
//! 4. [`Difference::TagsSorted`] — tags come out sorted by key.
//! 5. [`Difference::FloatOverflow`] — a float that rounds to infinity
//!    (`1e400`) is rejected; the crate returns `inf`.
//! 6. [`Difference::TimestampScaled`] — timestamps are scaled by the
//!    precision and must lie in ±9223372036854775806 ns after scaling (the
//!    1.x range); the crate returns the raw integer.
//! 7. [`Difference::Limits`] — name, string, tag-count and field-count
//!    limits from [`ParseOptions`]; the crate has none.
//! 8. [`Difference::TrailingFieldComma`] — a comma after the last field is
//!    always rejected. The crate accepts one when the line has exactly one
//!    field (`m f=1,` and `m f=1, 5`, a quirk of its list combinator) and
//!    rejects it otherwise (`m f=1,g=2,`).
//! 9. [`Difference::EmptyField`] — an empty field segment (`m f=1,,g=2`,
//!    `m ,f=1`) is rejected, as InfluxDB's write path does ("invalid field
//!    format"); the crate reads the extra comma as the first byte of the
//!    next field key (`,g`).
//!
//! # Speed
//!
//! Line ends are found with `memchr3` (newline, quote, backslash; only
//! lines holding a quote or backslash run the full splitter state machine),
//! names are scanned eight bytes at a time, strings with `memchr2`, and
//! floats of up to 15–16 significant digits with small exponents take an
//! exact fast path (one correctly rounded multiply or divide) before
//! falling back to `str::parse`. Measured by `bench/line_protocol.rs`.
//!
//! # Tests
//!
//! `tests/line_protocol_cases.rs` (case table, each case as first, middle
//! and last line, LF and CRLF; limits; precisions; no allocation when warm),
//! `tests/line_protocol_differential.rs` (proptest against the
//! `influxdb-line-protocol` crate; random and mutated bytes), and the fuzz
//! target: `cargo fuzz run --fuzz-dir tests/fuzz line_protocol`
//! (`RUSTC_BOOTSTRAP=1` on a stable toolchain).
//!
//! # Invariants
//!
//! - Input without escapes is never copied: every name and string in a
//!   [`Point`] is `Cow::Borrowed` unless its text contained an escape.
//! - A [`Point`]'s vectors are cleared, not dropped, between lines, so a
//!   warm parser allocates nothing per line. Errors own a short excerpt
//!   (allocation on the error path only).
//! - Every [`LineError::line_number`] is between 1 and the number of
//!   physical lines of the body.

use std::borrow::Cow;
use std::fmt;

use memchr::{memchr, memchr2, memchr3};

mod keys;
pub use keys::SeriesKeys;

/// Default longest measurement, tag key, tag value or field key (unescaped).
pub const NAME_BYTES_MAX_DEFAULT: usize = 64 * 1024;
/// Default longest string field value (unescaped).
pub const STRING_BYTES_MAX_DEFAULT: usize = 1024 * 1024;
/// Default most tags on one line.
pub const TAGS_PER_LINE_MAX_DEFAULT: usize = 250;
/// Default most fields on one line (duplicates counted).
pub const FIELDS_PER_LINE_MAX_DEFAULT: usize = 1000;
/// Earliest accepted time after scaling (the InfluxDB 1.x range).
pub const TIMESTAMP_NS_MIN: i64 = -9_223_372_036_854_775_806;
/// Latest accepted time after scaling.
pub const TIMESTAMP_NS_MAX: i64 = 9_223_372_036_854_775_806;
/// Longest excerpt of the offending line kept in a [`LineError`].
pub const EXCERPT_BYTES_MAX: usize = 64;

/// A deliberate difference from the InfluxDB 3 parser (the
/// `influxdb-line-protocol` crate). See the module docs for the list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Difference {
    /// One `\r` before `\n` is stripped.
    CrLf,
    /// Duplicate tag, `time` tag or field, conflicting duplicate field reject.
    SemanticChecks,
    /// Same-type duplicate field: one entry, last value.
    DuplicateFieldLastWins,
    /// Tags sorted by key.
    TagsSorted,
    /// Floats that overflow to infinity are rejected.
    FloatOverflow,
    /// Timestamps scaled and range-checked.
    TimestampScaled,
    /// Configured size and count limits.
    Limits,
    /// A comma after a single field is rejected.
    TrailingFieldComma,
    /// An empty field segment (`m f=1,,g=2`, `m ,f=1`) is rejected.
    EmptyField,
}

/// Timestamp unit of a write request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    Nanoseconds,
    Microseconds,
    Milliseconds,
    Seconds,
    Minutes,
    Hours,
}

impl Precision {
    /// `/write` spellings: `n ns u us µ ms s m h`.
    pub fn from_v1(text: &str) -> Option<Precision> {
        match text {
            "n" | "ns" => Some(Precision::Nanoseconds),
            "u" | "us" | "µ" => Some(Precision::Microseconds),
            "ms" => Some(Precision::Milliseconds),
            "s" => Some(Precision::Seconds),
            "m" => Some(Precision::Minutes),
            "h" => Some(Precision::Hours),
            _ => None,
        }
    }

    /// `/api/v2/write` spellings: `ns us ms s`.
    pub fn from_v2(text: &str) -> Option<Precision> {
        match text {
            "ns" => Some(Precision::Nanoseconds),
            "us" => Some(Precision::Microseconds),
            "ms" => Some(Precision::Milliseconds),
            "s" => Some(Precision::Seconds),
            _ => None,
        }
    }

    /// Nanoseconds in one unit.
    pub const fn nanos(self) -> i64 {
        match self {
            Precision::Nanoseconds => 1,
            Precision::Microseconds => 1_000,
            Precision::Milliseconds => 1_000_000,
            Precision::Seconds => 1_000_000_000,
            Precision::Minutes => 60_000_000_000,
            Precision::Hours => 3_600_000_000_000,
        }
    }

    /// `now_ns` truncated down to a multiple of this precision: the time of
    /// every point without a timestamp in one request.
    pub fn truncate(self, now_ns: i64) -> i64 {
        now_ns - now_ns.rem_euclid(self.nanos())
    }

    /// `value` units as nanoseconds, or `None` when the result lies outside
    /// [`TIMESTAMP_NS_MIN`]..=[`TIMESTAMP_NS_MAX`].
    pub fn scale(self, value: i64) -> Option<i64> {
        let ns = value.checked_mul(self.nanos())?;
        (TIMESTAMP_NS_MIN..=TIMESTAMP_NS_MAX)
            .contains(&ns)
            .then_some(ns)
    }
}

/// Per-request parser settings; limits come from `Config`.
#[derive(Clone, Debug)]
pub struct ParseOptions {
    pub precision: Precision,
    /// Time given to points without a timestamp (already truncated).
    pub default_time_ns: i64,
    pub name_bytes_max: usize,
    pub string_bytes_max: usize,
    pub tags_per_line_max: usize,
    pub fields_per_line_max: usize,
}

impl ParseOptions {
    /// Options with the default limits (`*_DEFAULT` constants).
    pub fn new(precision: Precision, default_time_ns: i64) -> ParseOptions {
        ParseOptions {
            precision,
            default_time_ns,
            name_bytes_max: NAME_BYTES_MAX_DEFAULT,
            string_bytes_max: STRING_BYTES_MAX_DEFAULT,
            tags_per_line_max: TAGS_PER_LINE_MAX_DEFAULT,
            fields_per_line_max: FIELDS_PER_LINE_MAX_DEFAULT,
        }
    }
}

/// One field value, borrowed from the body when it has no escapes.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldValue<'a> {
    Float(f64),
    Integer(i64),
    UInteger(u64),
    String(Cow<'a, str>),
    Boolean(bool),
}

impl FieldValue<'_> {
    fn same_type(&self, other: &FieldValue<'_>) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}

/// One parsed line. Reused from line to line so its vectors keep their
/// capacity: no allocation per line once warm.
#[derive(Debug, Default)]
pub struct Point<'a> {
    /// Physical 1-based line number (blank and comment lines counted).
    pub line_number: u32,
    pub measurement: Cow<'a, str>,
    /// Sorted by key, keys unique.
    pub tags: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// In first-appearance order, keys unique (a repeated key of the same
    /// type keeps the last value).
    pub fields: Vec<(Cow<'a, str>, FieldValue<'a>)>,
    /// Nanoseconds since the epoch, after scaling by the precision.
    pub timestamp_ns: i64,
    /// Stable hash of the canonical series key (measurement + sorted tags),
    /// see [`series_hash`].
    pub series_hash: u64,
}

/// Which kind of name an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    Measurement,
    TagKey,
    TagValue,
    FieldKey,
}

impl Component {
    fn as_str(self) -> &'static str {
        match self {
            Component::Measurement => "measurement",
            Component::TagKey => "tag key",
            Component::TagValue => "tag value",
            Component::FieldKey => "field key",
        }
    }
}

/// Why a line was rejected. One variant per cause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineErrorKind {
    /// The line starts with `,` (or another character a measurement cannot start with).
    MissingMeasurement,
    /// `,` not followed by a tag key.
    MissingTagKey,
    /// A tag key not followed by `=`.
    MissingTagEquals,
    /// `key=` with nothing after it.
    MissingTagValue,
    /// The line ends before the field set.
    MissingFields,
    /// A field key is empty (`m =1`, `m a=1,=2`).
    MissingFieldKey,
    /// An empty field between commas, or a field set starting with one
    /// (`m f=1,,g=2`, `m ,f=1`): InfluxDB's "invalid field format". The
    /// comma would otherwise start the next field's key.
    EmptyField,
    /// A field key not followed by `=`.
    MissingFieldEquals,
    /// `key=` followed by `,`, a space or the end of the line.
    MissingFieldValue,
    /// A byte the grammar does not allow here (tab, NUL, text after a string).
    UnexpectedCharacter { found: char },
    /// The unescaped name ends in a backslash.
    EndsWithBackslash { component: Component },
    /// A name longer than `name_bytes_max`.
    NameTooLong {
        component: Component,
        bytes: usize,
        max: usize,
    },
    /// A field value that is no number, string or boolean (`.5`, `+1`, `NaN`, `1.5i`).
    InvalidFieldValue,
    /// `Ni` outside the i64 range.
    IntegerOutOfRange,
    /// `Nu` outside the u64 range.
    UnsignedOutOfRange,
    /// A float that rounds to infinity.
    FloatOutOfRange,
    /// A string field value without its closing quote.
    UnterminatedString,
    /// A string field value longer than `string_bytes_max`.
    StringTooLong { bytes: usize, max: usize },
    /// More than `tags_per_line_max` tags.
    TooManyTags { max: usize },
    /// More than `fields_per_line_max` fields.
    TooManyFields { max: usize },
    /// The same tag key twice on one line.
    DuplicateTag { key: String },
    /// A tag named `time`.
    TimeTag,
    /// A field named `time`.
    TimeField,
    /// The same field key twice with values of different types.
    FieldTypeConflict { key: String },
    /// Spaces after the fields but no timestamp.
    MissingTimestamp,
    /// The timestamp is not `-?digits`.
    InvalidTimestamp,
    /// The timestamp as written does not fit an i64.
    TimestampOverflow,
    /// The timestamp after scaling by the precision is outside ±9223372036854775806 ns.
    TimestampOutOfRange,
    /// Text after the timestamp.
    TrailingContent,
}

impl LineErrorKind {
    /// The documented [`Difference`] under which InfluxDB 3's parser may
    /// accept a line we reject with this kind, if any. (`MissingFieldKey`
    /// is one only for the comma-after-one-field case.)
    pub fn difference(&self) -> Option<Difference> {
        match self {
            LineErrorKind::DuplicateTag { .. }
            | LineErrorKind::TimeTag
            | LineErrorKind::TimeField
            | LineErrorKind::FieldTypeConflict { .. } => Some(Difference::SemanticChecks),
            LineErrorKind::FloatOutOfRange => Some(Difference::FloatOverflow),
            LineErrorKind::TimestampOutOfRange => Some(Difference::TimestampScaled),
            LineErrorKind::NameTooLong { .. }
            | LineErrorKind::StringTooLong { .. }
            | LineErrorKind::TooManyTags { .. }
            | LineErrorKind::TooManyFields { .. } => Some(Difference::Limits),
            LineErrorKind::MissingFieldKey => Some(Difference::TrailingFieldComma),
            LineErrorKind::EmptyField => Some(Difference::EmptyField),
            _ => None,
        }
    }
}

impl fmt::Display for LineErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineErrorKind::MissingMeasurement => write!(f, "missing measurement"),
            LineErrorKind::MissingTagKey => write!(f, "missing tag key after ','"),
            LineErrorKind::MissingTagEquals => write!(f, "tag key is not followed by '='"),
            LineErrorKind::MissingTagValue => write!(f, "missing tag value"),
            LineErrorKind::MissingFields => write!(f, "missing fields"),
            LineErrorKind::MissingFieldKey => write!(f, "missing field key"),
            LineErrorKind::EmptyField => write!(f, "invalid field format (empty field)"),
            LineErrorKind::MissingFieldEquals => write!(f, "field key is not followed by '='"),
            LineErrorKind::MissingFieldValue => write!(f, "missing field value"),
            LineErrorKind::UnexpectedCharacter { found } => {
                write!(f, "unexpected character {found:?}")
            }
            LineErrorKind::EndsWithBackslash { component } => {
                write!(f, "{} ends with a backslash", component.as_str())
            }
            LineErrorKind::NameTooLong {
                component,
                bytes,
                max,
            } => write!(
                f,
                "{} is {bytes} bytes long, the limit is {max}",
                component.as_str()
            ),
            LineErrorKind::InvalidFieldValue => write!(
                f,
                "invalid field value (expected a float, Ni, Nu, \"string\" or boolean)"
            ),
            LineErrorKind::IntegerOutOfRange => write!(f, "integer field value out of i64 range"),
            LineErrorKind::UnsignedOutOfRange => {
                write!(f, "unsigned field value out of u64 range")
            }
            LineErrorKind::FloatOutOfRange => write!(f, "float field value out of range"),
            LineErrorKind::UnterminatedString => {
                write!(f, "string field value has no closing quote")
            }
            LineErrorKind::StringTooLong { bytes, max } => write!(
                f,
                "string field value is {bytes} bytes long, the limit is {max}"
            ),
            LineErrorKind::TooManyTags { max } => write!(f, "more than {max} tags"),
            LineErrorKind::TooManyFields { max } => write!(f, "more than {max} fields"),
            LineErrorKind::DuplicateTag { key } => write!(f, "duplicate tag key {key:?}"),
            LineErrorKind::TimeTag => write!(f, "invalid tag key \"time\""),
            LineErrorKind::TimeField => write!(f, "invalid field key \"time\""),
            LineErrorKind::FieldTypeConflict { key } => {
                write!(f, "field {key:?} is given twice with different types")
            }
            LineErrorKind::MissingTimestamp => {
                write!(f, "space after the fields but no timestamp")
            }
            LineErrorKind::InvalidTimestamp => {
                write!(f, "invalid timestamp (expected an integer)")
            }
            LineErrorKind::TimestampOverflow => write!(f, "timestamp does not fit 64 bits"),
            LineErrorKind::TimestampOutOfRange => write!(
                f,
                "timestamp outside {TIMESTAMP_NS_MIN}..{TIMESTAMP_NS_MAX} ns after scaling"
            ),
            LineErrorKind::TrailingContent => write!(f, "unexpected text after the timestamp"),
        }
    }
}

/// A rejected line: where, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    /// Physical 1-based line number.
    pub line_number: u32,
    /// 1-based byte column where the problem was found, counted from the
    /// start of the physical line the rejected line begins on (inside a
    /// multi-line string it keeps counting past the newline).
    pub column: u32,
    pub kind: LineErrorKind,
    /// The rejected line's first bytes (at most [`EXCERPT_BYTES_MAX`], cut
    /// at a character boundary and at the first newline).
    pub excerpt: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {} column {}: {} (line: {:?})",
            self.line_number, self.column, self.kind, self.excerpt
        )
    }
}

/// Iterator-like cursor over the lines of one body.
pub struct Lines<'a, 'k> {
    body: &'a str,
    options: ParseOptions,
    /// Byte offset where the next line starts.
    position: usize,
    /// Physical 1-based line number of `position`.
    line_number: u32,
    /// State kept from line to line (no heap unless a line is unusual).
    scratch: Scratch,
    /// Series keys parsed before, kept across bodies ([`SeriesKeys`]).
    keys: Option<&'k mut SeriesKeys>,
}

/// What one line's parse leaves for the next.
struct Scratch {
    /// Open-addressing index of field keys, used only for lines with more
    /// than [`FIELDS_LINEAR_MAX`] fields so duplicate detection stays linear.
    field_slots: Vec<u32>,
    /// The sorting permutation of the last line whose tags were not in key
    /// order. Lines of one body usually repeat one tag order, so checking
    /// that this permutation sorts the next line strictly (which also rules
    /// out duplicates) replaces sorting it.
    tag_order: TagOrder,
}

/// Lines with at most this many tags remember their sorting permutation;
/// longer tag lists are sorted in place every time.
const TAG_ORDER_MAX: usize = 32;

struct TagOrder {
    /// Number of tags the permutation is for (0: none).
    len: usize,
    /// `order[j]`: index in the line's written order of the `j`-th key in
    /// sorted order.
    order: [u8; TAG_ORDER_MAX],
}

impl<'a> Lines<'a, 'static> {
    pub fn new(body: &'a str, options: ParseOptions) -> Lines<'a, 'static> {
        Lines {
            body,
            options,
            position: 0,
            line_number: 1,
            scratch: Scratch {
                field_slots: Vec::new(),
                tag_order: TagOrder {
                    len: 0,
                    order: [0; TAG_ORDER_MAX],
                },
            },
            keys: None,
        }
    }
}

impl<'a, 'k> Lines<'a, 'k> {
    /// [`Lines::new`] that takes and leaves series keys in `keys` (the
    /// result of every line is the same with or without).
    pub fn with_keys(
        body: &'a str,
        options: ParseOptions,
        keys: &'k mut SeriesKeys,
    ) -> Lines<'a, 'k> {
        keys.limits(options.name_bytes_max, options.tags_per_line_max);
        let lines = Lines::new(body, options);
        Lines {
            body: lines.body,
            options: lines.options,
            position: lines.position,
            line_number: lines.line_number,
            scratch: lines.scratch,
            keys: Some(keys),
        }
    }

    /// Parses the next non-blank, non-comment line into `point`. `None` at the end.
    ///
    /// After `Some(Err(_))` the contents of `point` are unspecified (partly
    /// filled); the next call overwrites them.
    pub fn next_into(&mut self, point: &mut Point<'a>) -> Option<Result<(), LineError>> {
        let body = self.body;
        let bytes = body.as_bytes();
        loop {
            if self.position >= bytes.len() {
                return None;
            }
            let start = self.position;
            let split = split_line(bytes, start);
            self.position = split.next;
            let first_line_number = self.line_number;
            let terminated = split.next > split.end;
            self.line_number = self
                .line_number
                .saturating_add(split.newlines_inside)
                .saturating_add(u32::from(terminated));

            let mut end = split.end;
            if terminated && end > start && bytes[end - 1] == b'\r' {
                end -= 1;
            }
            let trim = trim_leading(bytes, start, end);
            if trim.start == end {
                continue;
            }
            let line_number = first_line_number.saturating_add(trim.newlines);
            // Cut points are the ends of the body or positions of ASCII
            // bytes, so they are char boundaries.
            let line = &body[trim.start..end];
            point.line_number = line_number;
            let keys = self.keys.as_deref_mut();
            return match parse_line(line, &self.options, point, &mut self.scratch, keys) {
                Ok(()) => Some(Ok(())),
                Err((offset, kind)) => {
                    let column = trim.start - trim.physical_start + offset + 1;
                    Some(Err(LineError {
                        line_number,
                        column: u32::try_from(column).unwrap_or(u32::MAX),
                        kind,
                        excerpt: excerpt(line),
                    }))
                }
            };
        }
    }
}

fn excerpt(line: &str) -> String {
    let mut cut = line.len().min(EXCERPT_BYTES_MAX);
    if let Some(newline) = memchr(b'\n', &line.as_bytes()[..cut]) {
        cut = newline;
    }
    while !line.is_char_boundary(cut) {
        cut -= 1;
    }
    line[..cut].trim_end_matches('\r').to_owned()
}

struct Split {
    /// End of the line's text (exclusive, before the `\n`).
    end: usize,
    /// Start of the next line.
    next: usize,
    /// Newlines inside the line (escaped or quoted).
    newlines_inside: u32,
}

/// Finds the end of the line starting at `start` (InfluxDB's `scanLine`).
fn split_line(bytes: &[u8], start: usize) -> Split {
    let rest = &bytes[start..];
    match memchr3(b'\n', b'"', b'\\', rest) {
        None => Split {
            end: bytes.len(),
            next: bytes.len(),
            newlines_inside: 0,
        },
        Some(offset) if rest[offset] == b'\n' => Split {
            end: start + offset,
            next: start + offset + 1,
            newlines_inside: 0,
        },
        Some(_) => split_line_slow(bytes, start),
    }
}

/// The full `scanLine` state machine, for lines with quotes or backslashes.
fn split_line_slow(bytes: &[u8], start: usize) -> Split {
    let mut quoted = false;
    let mut in_fields = false;
    let mut equals = 0usize;
    let mut commas = 0usize;
    let mut newlines = 0u32;
    let mut i = start;
    while i < bytes.len() {
        if quoted {
            // Only a quote, a backslash or a newline (counted) matter here.
            match memchr3(b'"', b'\\', b'\n', &bytes[i..]) {
                None => break,
                Some(offset) => i += offset,
            }
        }
        match bytes[i] {
            b'\\' => {
                if bytes.get(i + 1) == Some(&b'\n') {
                    newlines = newlines.saturating_add(1);
                }
                i += 2;
                continue;
            }
            b' ' => in_fields = true,
            b'=' if in_fields && !quoted => equals += 1,
            b',' if in_fields && !quoted => commas += 1,
            b'"' if in_fields && equals > commas => quoted = !quoted,
            b'\n' if !quoted => {
                return Split {
                    end: i,
                    next: i + 1,
                    newlines_inside: newlines,
                }
            }
            b'\n' => newlines = newlines.saturating_add(1),
            _ => {}
        }
        i += 1;
    }
    Split {
        end: bytes.len(),
        next: bytes.len(),
        newlines_inside: newlines,
    }
}

struct Trim {
    /// First byte of the line's content.
    start: usize,
    /// Newlines skipped before it.
    newlines: u32,
    /// Start of the physical line holding `start`.
    physical_start: usize,
}

/// Skips spaces, tabs, newlines and `#` comments (InfluxDB's `trim_leading`).
fn trim_leading(bytes: &[u8], start: usize, end: usize) -> Trim {
    let mut i = start;
    let mut newlines = 0u32;
    let mut physical_start = start;
    loop {
        while i < end && matches!(bytes[i], b' ' | b'\t' | b'\n') {
            if bytes[i] == b'\n' {
                newlines = newlines.saturating_add(1);
                physical_start = i + 1;
            }
            i += 1;
        }
        if i < end && bytes[i] == b'#' {
            i = match memchr(b'\n', &bytes[i..end]) {
                Some(offset) => i + offset,
                None => end,
            };
        } else {
            return Trim {
                start: i,
                newlines,
                physical_start,
            };
        }
    }
}

/// An error inside one line: byte offset in the line, and the cause.
type LineResult<T> = Result<T, (usize, LineErrorKind)>;

// Byte classes: which bytes end a name of each component. A backslash ends
// every name scan so the escape can be handled.
const STOP_MEASUREMENT: u8 = 1;
const STOP_TAG_KEY: u8 = 2;
const STOP_TAG_VALUE: u8 = 4;
const STOP_FIELD_KEY: u8 = 8;

static STOP: [u8; 256] = {
    let mut table = [0u8; 256];
    let all = STOP_MEASUREMENT | STOP_TAG_KEY | STOP_TAG_VALUE | STOP_FIELD_KEY;
    table[b' ' as usize] = all;
    table[b'\t' as usize] = all;
    table[b'\n' as usize] = all;
    table[b'\\' as usize] = all;
    table[0] = STOP_MEASUREMENT;
    table[b',' as usize] = STOP_MEASUREMENT | STOP_TAG_VALUE;
    table[b'=' as usize] = STOP_TAG_KEY | STOP_FIELD_KEY;
    table
};

impl Component {
    const fn stop_class(self) -> u8 {
        match self {
            Component::Measurement => STOP_MEASUREMENT,
            Component::TagKey => STOP_TAG_KEY,
            Component::TagValue => STOP_TAG_VALUE,
            Component::FieldKey => STOP_FIELD_KEY,
        }
    }

    /// Whether `\byte` unescapes to `byte` in this component.
    fn escapes(self, byte: u8) -> bool {
        match self {
            Component::Measurement => matches!(byte, b',' | b' ' | b'\\'),
            _ => matches!(byte, b',' | b'=' | b' ' | b'\\'),
        }
    }
}

/// Scans one name starting at `start`; returns it and where it ended.
/// An empty name is returned as such (the caller knows which error it is).
#[inline(always)]
fn scan_name<'a>(
    line: &'a str,
    start: usize,
    component: Component,
    name_bytes_max: usize,
) -> LineResult<(Cow<'a, str>, usize)> {
    let bytes = line.as_bytes();
    let i = name_end(bytes, start, component);
    if (i >= bytes.len() || bytes[i] != b'\\') && i - start <= name_bytes_max {
        debug_assert!(line.is_char_boundary(start) && line.is_char_boundary(i));
        // SAFETY: `line` is UTF-8 and both ends are char boundaries: `start`
        // is 0 or follows an ASCII separator (every caller), and `i` is the
        // end of the line or an ASCII stop byte. `&line[start..i]` checks
        // both again, which is measurable at ~40 names per line.
        let name = unsafe { std::str::from_utf8_unchecked(&bytes[start..i]) };
        return Ok((Cow::Borrowed(name), i));
    }
    scan_name_escaped(line, start, i, component, name_bytes_max)
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// High bit set in each byte of `word` that is below `limit` (<= 128).
/// Bytes above the lowest flagged one may be flagged falsely (borrows), so
/// only the lowest flag is trusted.
#[inline(always)]
fn bytes_below(word: u64, limit: u8) -> u64 {
    word.wrapping_sub(ONES * u64::from(limit)) & !word & HIGHS
}

/// High bit set in each byte of `word` equal to `byte` (lowest flag exact).
#[inline(always)]
fn bytes_equal(word: u64, byte: u8) -> u64 {
    let x = word ^ (ONES * u64::from(byte));
    x.wrapping_sub(ONES) & !x & HIGHS
}

/// First stop byte of `component` at or after `i` (or the end), eight bytes
/// at a time: every stop byte is a control byte or space (< 0x21), the
/// component's separator, or a backslash. A flagged byte that is no stop
/// (another control byte) is checked in the table and skipped.
#[inline(always)]
fn name_end(bytes: &[u8], mut i: usize, component: Component) -> usize {
    let class = component.stop_class();
    let separator = match component {
        Component::Measurement | Component::TagValue => b',',
        Component::TagKey | Component::FieldKey => b'=',
    };
    while i + 8 <= bytes.len() {
        let word = read_u64(&bytes[i..]);
        let flags =
            bytes_below(word, 0x21) | bytes_equal(word, separator) | bytes_equal(word, b'\\');
        if flags == 0 {
            i += 8;
            continue;
        }
        let at = i + (flags.trailing_zeros() / 8) as usize;
        if STOP[bytes[at] as usize] & class != 0 {
            return at;
        }
        i = at + 1;
    }
    while i < bytes.len() && STOP[bytes[i] as usize] & class == 0 {
        i += 1;
    }
    i
}

/// The rest of [`scan_name`] once a backslash (or an over-long name) is seen.
#[cold]
#[inline(never)]
fn scan_name_escaped<'a>(
    line: &'a str,
    start: usize,
    mut i: usize,
    component: Component,
    name_bytes_max: usize,
) -> LineResult<(Cow<'a, str>, usize)> {
    let bytes = line.as_bytes();
    let class = component.stop_class();
    let mut escaped = false;
    loop {
        while i < bytes.len() && STOP[bytes[i] as usize] & class == 0 {
            i += 1;
        }
        if i < bytes.len() && bytes[i] == b'\\' {
            escaped = true;
            i = (i + 2).min(bytes.len());
            continue;
        }
        break;
    }
    // `i` is the end of the line or an ASCII stop byte: a char boundary.
    let raw = &line[start..i];
    let name = if escaped {
        let unescaped = unescape_name(raw, component);
        if unescaped.ends_with('\\') {
            return Err((start, LineErrorKind::EndsWithBackslash { component }));
        }
        Cow::Owned(unescaped)
    } else {
        Cow::Borrowed(raw)
    };
    if name.len() > name_bytes_max {
        return Err((
            start,
            LineErrorKind::NameTooLong {
                component,
                bytes: name.len(),
                max: name_bytes_max,
            },
        ));
    }
    Ok((name, i))
}

fn unescape_name(raw: &str, component: Component) -> String {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut segment_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if i + 1 < bytes.len() && component.escapes(bytes[i + 1]) {
                // Drop the backslash; the escaped byte starts the next segment.
                out.push_str(&raw[segment_start..i]);
                segment_start = i + 1;
            }
            // Either way the next character is taken literally.
            i += 2;
            continue;
        }
        i += 1;
    }
    out.push_str(&raw[segment_start..]);
    out
}

/// Lines with at most this many fields detect duplicate field keys by a
/// fingerprint mask plus a linear scan; longer ones use `Scratch::field_slots`.
const FIELDS_LINEAR_MAX: usize = 32;

fn parse_line<'a>(
    line: &'a str,
    options: &ParseOptions,
    point: &mut Point<'a>,
    scratch: &mut Scratch,
    mut keys: Option<&mut SeriesKeys>,
) -> LineResult<()> {
    point.fields.clear();
    // Measurement and tags: from the series-key cache when this section
    // was parsed before, else parsed (and the series hash computed at the end).
    let section = keys.as_mut().and_then(|keys| keys.section(line));
    let cached = match (&mut keys, section) {
        (Some(keys), Some(end)) => keys.fill(line, end, point),
        _ => false,
    };
    let i = if cached {
        section.expect("filled from a section")
    } else {
        parse_key(line, options, point, scratch)?
    };
    parse_fields(line, i, options, point, scratch)?;
    if !cached {
        point.series_hash = series_hash(&point.measurement, &point.tags);
        if let (Some(keys), Some(end)) = (keys, section) {
            keys.keep(line, end, point);
        }
    }
    Ok(())
}

/// The measurement and the tags (sorted by key) of `line`; returns the
/// offset after them.
fn parse_key<'a>(
    line: &'a str,
    options: &ParseOptions,
    point: &mut Point<'a>,
    scratch: &mut Scratch,
) -> LineResult<usize> {
    let bytes = line.as_bytes();
    let n = bytes.len();
    point.tags.clear();

    // Measurement.
    let (measurement, mut i) = scan_name(line, 0, Component::Measurement, options.name_bytes_max)?;
    if i == 0 {
        return Err((0, LineErrorKind::MissingMeasurement));
    }
    point.measurement = measurement;

    // Tags, inserted in key order.
    if i < n && bytes[i] == b',' {
        loop {
            let key_start = i + 1;
            let (key, key_end) =
                scan_name(line, key_start, Component::TagKey, options.name_bytes_max)?;
            if key_end == key_start {
                return Err((key_start, LineErrorKind::MissingTagKey));
            }
            if key_end >= n || bytes[key_end] != b'=' {
                return Err((key_end, LineErrorKind::MissingTagEquals));
            }
            let value_start = key_end + 1;
            let (value, value_end) = scan_name(
                line,
                value_start,
                Component::TagValue,
                options.name_bytes_max,
            )?;
            if value_end == value_start {
                return Err((value_start, LineErrorKind::MissingTagValue));
            }
            if key == "time" {
                return Err((key_start, LineErrorKind::TimeTag));
            }
            if point.tags.len() >= options.tags_per_line_max {
                return Err((
                    key_start,
                    LineErrorKind::TooManyTags {
                        max: options.tags_per_line_max,
                    },
                ));
            }
            push_pair(&mut point.tags, key, value);
            i = value_end;
            if i < n && bytes[i] == b',' {
                continue;
            }
            break;
        }
    }

    if let Some(duplicate) = sort_tags(&mut point.tags, &mut scratch.tag_order) {
        let key = point.tags[duplicate].0.as_ref();
        return Err((
            second_tag_key_position(line, key, options.name_bytes_max),
            LineErrorKind::DuplicateTag {
                key: key.to_owned(),
            },
        ));
    }
    Ok(i)
}

/// Fields and timestamp of `line`, from offset `i` (after the tags).
fn parse_fields<'a>(
    line: &'a str,
    mut i: usize,
    options: &ParseOptions,
    point: &mut Point<'a>,
    scratch: &mut Scratch,
) -> LineResult<()> {
    let bytes = line.as_bytes();
    let n = bytes.len();

    // One or more spaces, then the fields.
    if i >= n {
        return Err((i, LineErrorKind::MissingFields));
    }
    if bytes[i] != b' ' {
        return Err((i, unexpected(line, i)));
    }
    while i < n && bytes[i] == b' ' {
        i += 1;
    }
    if i >= n {
        return Err((i, LineErrorKind::MissingFields));
    }

    let mut field_count = 0usize;
    let mut fingerprints = 0u128;
    loop {
        let key_start = i;
        // One compare per field, not per byte: a field key may hold a
        // comma, so only here is an empty segment told from a key.
        if key_start < n && bytes[key_start] == b',' {
            return Err((key_start, LineErrorKind::EmptyField));
        }
        let (key, key_end) =
            scan_name(line, key_start, Component::FieldKey, options.name_bytes_max)?;
        if key_end == key_start {
            return Err((key_start, LineErrorKind::MissingFieldKey));
        }
        if key_end >= n || bytes[key_end] != b'=' {
            return Err((key_end, LineErrorKind::MissingFieldEquals));
        }
        let (value, value_end) = parse_value(line, key_end + 1, options)?;
        if key == "time" {
            return Err((key_start, LineErrorKind::TimeField));
        }
        field_count += 1;
        if field_count > options.fields_per_line_max {
            return Err((
                key_start,
                LineErrorKind::TooManyFields {
                    max: options.fields_per_line_max,
                },
            ));
        }
        add_field(
            &mut point.fields,
            key,
            value,
            &mut fingerprints,
            &mut scratch.field_slots,
            options.fields_per_line_max,
        )
        .map_err(|kind| (key_start, kind))?;
        i = value_end;
        if i < n && bytes[i] == b',' {
            i += 1;
            continue;
        }
        break;
    }

    // Optional timestamp.
    let scaled = if i >= n {
        options.default_time_ns
    } else {
        if bytes[i] != b' ' {
            return Err((i, unexpected(line, i)));
        }
        let space = i;
        while i < n && bytes[i] == b' ' {
            i += 1;
        }
        if i >= n {
            return Err((space, LineErrorKind::MissingTimestamp));
        }
        let timestamp_start = i;
        let (raw, end) = parse_timestamp(bytes, i).map_err(|kind| (timestamp_start, kind))?;
        i = end;
        while i < n && bytes[i] == b' ' {
            i += 1;
        }
        if i < n {
            return Err((i, LineErrorKind::TrailingContent));
        }
        options
            .precision
            .scale(raw)
            .ok_or((timestamp_start, LineErrorKind::TimestampOutOfRange))?
    };
    point.timestamp_ns = scaled;
    Ok(())
}

/// Byte order of two keys, deciding on the first byte inline when it can
/// (most keys differ there) instead of calling `memcmp`.
#[inline]
fn key_order(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.as_bytes().first(), b.as_bytes().first()) {
        (Some(x), Some(y)) if x != y => x.cmp(y),
        _ => a.as_bytes().cmp(b.as_bytes()),
    }
}

/// Sorts tags by key; returns the index of a key equal to its successor.
/// (`sort_unstable` is an insertion sort for the usual few tags and
/// O(n log n) for many, so a long tag list cannot make this quadratic.)
///
/// Up to [`TAG_ORDER_MAX`] tags, the permutation is sorted rather than the
/// tags (moving one-byte indices, not 48-byte pairs) and remembered: when
/// the remembered permutation orders this line's keys strictly, it is the
/// sorted order and there are no duplicates, so no sort and no duplicate
/// scan is needed. Either way the result is the same sorted list.
fn sort_tags(
    tags: &mut [(Cow<'_, str>, Cow<'_, str>)],
    remembered: &mut TagOrder,
) -> Option<usize> {
    if tags.is_sorted_by(|a, b| key_order(&a.0, &b.0).is_lt()) {
        return None;
    }
    let n = tags.len();
    if n > TAG_ORDER_MAX {
        tags.sort_unstable_by(|a, b| key_order(&a.0, &b.0));
        return tags.windows(2).position(|pair| pair[0].0 == pair[1].0);
    }
    let order = &mut remembered.order[..n];
    let strictly_sorts = |order: &[u8]| {
        order
            .windows(2)
            .all(|p| key_order(&tags[usize::from(p[0])].0, &tags[usize::from(p[1])].0).is_lt())
    };
    if remembered.len == n && strictly_sorts(order) {
        permute(tags, order);
        return None;
    }
    for (j, slot) in order.iter_mut().enumerate() {
        // `j < TAG_ORDER_MAX <= 64`: fits a u8.
        *slot = j as u8;
    }
    order.sort_unstable_by(|&a, &b| key_order(&tags[usize::from(a)].0, &tags[usize::from(b)].0));
    remembered.len = n;
    permute(tags, order);
    tags.windows(2).position(|pair| pair[0].0 == pair[1].0)
}

const _: () = assert!(
    TAG_ORDER_MAX <= 64,
    "TAG_ORDER_MAX: indices fit u8, done-marks fit u64"
);

/// Rearranges `items` so that position `j` holds what was at `order[j]`
/// (`order` is a permutation of `0..items.len()`), following each cycle
/// with swaps.
fn permute<T>(items: &mut [T], order: &[u8]) {
    let mut done = 0u64;
    for start in 0..items.len() {
        if done & (1 << start) != 0 {
            continue;
        }
        // `start` still holds its original item; each swap puts the right
        // item at `j` and moves the original one along the cycle.
        let mut j = start;
        loop {
            done |= 1 << j;
            let from = usize::from(order[j]);
            if from == start {
                break;
            }
            items.swap(j, from);
            j = from;
        }
    }
}

/// Error path only: where the second tag with unescaped key `key` starts.
/// The tag list was already scanned without error, so this rescan succeeds.
fn second_tag_key_position(line: &str, key: &str, name_bytes_max: usize) -> usize {
    let bytes = line.as_bytes();
    let mut seen = false;
    let Ok((_, mut i)) = scan_name(line, 0, Component::Measurement, name_bytes_max) else {
        return 0;
    };
    while i < bytes.len() && bytes[i] == b',' {
        let key_start = i + 1;
        let Ok((this_key, key_end)) = scan_name(line, key_start, Component::TagKey, name_bytes_max)
        else {
            return 0;
        };
        if this_key == key {
            if seen {
                return key_start;
            }
            seen = true;
        }
        let Ok((_, value_end)) = scan_name(line, key_end + 1, Component::TagValue, name_bytes_max)
        else {
            return 0;
        };
        i = value_end;
    }
    0
}

fn unexpected(line: &str, at: usize) -> LineErrorKind {
    let found = line
        .get(at..)
        .and_then(|rest| rest.chars().next())
        .unwrap_or('\u{FFFD}');
    LineErrorKind::UnexpectedCharacter { found }
}

/// `vec.push((a, b))`, writing each half straight into the vector.
///
/// Why: the plain push builds the tuple on the stack with 8-byte stores and
/// copies it with 16-byte loads, which defeats store-to-load forwarding;
/// measured at ~15% of parse time on the TSBS corpus.
#[inline(always)]
fn push_pair<A, B>(vec: &mut Vec<(A, B)>, a: A, b: B) {
    vec.reserve(1);
    let len = vec.len();
    // SAFETY: `reserve(1)` guarantees capacity for index `len`; both halves
    // are initialised by the two writes before `set_len` makes the element
    // visible, and nothing between can panic.
    unsafe {
        let slot = vec.as_mut_ptr().add(len);
        std::ptr::addr_of_mut!((*slot).0).write(a);
        std::ptr::addr_of_mut!((*slot).1).write(b);
        vec.set_len(len + 1);
    }
}

/// A cheap bit index for the duplicate-field mask.
#[inline]
fn field_fingerprint(key: &str) -> u32 {
    let bytes = key.as_bytes();
    let last = bytes.last().copied().unwrap_or(0) as u32;
    let before_last = if bytes.len() >= 2 {
        bytes[bytes.len() - 2] as u32
    } else {
        0
    };
    (bytes.len() as u32)
        .wrapping_mul(31)
        .wrapping_add(last.wrapping_mul(7))
        .wrapping_add(before_last)
        & 127
}

const SLOT_EMPTY: u32 = u32::MAX;

/// Appends a field, or merges a duplicate key (same type: last value wins
/// in the first position; different type: error).
fn add_field<'a>(
    fields: &mut Vec<(Cow<'a, str>, FieldValue<'a>)>,
    key: Cow<'a, str>,
    value: FieldValue<'a>,
    fingerprints: &mut u128,
    slots: &mut Vec<u32>,
    fields_per_line_max: usize,
) -> Result<(), LineErrorKind> {
    let merge = |existing: &mut FieldValue<'a>, key: Cow<'a, str>, value: FieldValue<'a>| {
        if existing.same_type(&value) {
            *existing = value;
            Ok(())
        } else {
            Err(LineErrorKind::FieldTypeConflict {
                key: key.into_owned(),
            })
        }
    };
    if fields.len() < FIELDS_LINEAR_MAX {
        let bit = 1u128 << field_fingerprint(&key);
        if *fingerprints & bit != 0 {
            if let Some((_, existing)) = fields.iter_mut().find(|(k, _)| *k == key) {
                return merge(existing, key, value);
            }
        }
        *fingerprints |= bit;
        push_pair(fields, key, value);
        return Ok(());
    }
    // Many fields: hash index over `fields`, built when the line first
    // reaches FIELDS_LINEAR_MAX fields.
    let capacity = (fields_per_line_max.max(FIELDS_LINEAR_MAX) * 2).next_power_of_two();
    let mask = capacity - 1;
    if fields.len() == FIELDS_LINEAR_MAX {
        slots.clear();
        slots.resize(capacity, SLOT_EMPTY);
        for (index, (existing_key, _)) in fields.iter().enumerate() {
            let mut slot = slot_of(existing_key) & mask;
            while slots[slot] != SLOT_EMPTY {
                slot = (slot + 1) & mask;
            }
            slots[slot] = index as u32;
        }
    }
    let mut slot = slot_of(&key) & mask;
    loop {
        let index = slots[slot];
        if index == SLOT_EMPTY {
            slots[slot] = fields.len() as u32;
            fields.push((key, value));
            return Ok(());
        }
        let (existing_key, existing) = &mut fields[index as usize];
        if *existing_key == key {
            return merge(existing, key, value);
        }
        slot = (slot + 1) & mask;
    }
}

fn slot_of(key: &str) -> usize {
    let mut hasher = SeriesHasher::new();
    hasher.write(key.as_bytes());
    hasher.finish() as usize
}

/// Parses a field value at `start`; returns it and where it ended.
#[inline(always)]
fn parse_value<'a>(
    line: &'a str,
    start: usize,
    options: &ParseOptions,
) -> LineResult<(FieldValue<'a>, usize)> {
    let bytes = line.as_bytes();
    let Some(&first) = bytes.get(start) else {
        return Err((start, LineErrorKind::MissingFieldValue));
    };
    match first {
        b'"' => parse_string(line, start, options.string_bytes_max),
        b'-' | b'0'..=b'9' => parse_number(line, start).map_err(|kind| (start, kind)),
        b't' | b'T' | b'f' | b'F' => {
            let end = value_end(bytes, start);
            let value = match &bytes[start..end] {
                b"t" | b"T" | b"true" | b"True" | b"TRUE" => true,
                b"f" | b"F" | b"false" | b"False" | b"FALSE" => false,
                _ => return Err((start, LineErrorKind::InvalidFieldValue)),
            };
            Ok((FieldValue::Boolean(value), end))
        }
        b',' | b' ' => Err((start, LineErrorKind::MissingFieldValue)),
        _ => Err((start, LineErrorKind::InvalidFieldValue)),
    }
}

/// End of a non-string value: the next `,` or space, or the end of the line.
#[inline]
fn value_end(bytes: &[u8], start: usize) -> usize {
    let mut i = start;
    while i < bytes.len() && bytes[i] != b',' && bytes[i] != b' ' {
        i += 1;
    }
    i
}

#[inline]
fn is_value_delimiter(bytes: &[u8], at: usize) -> bool {
    at >= bytes.len() || bytes[at] == b',' || bytes[at] == b' '
}

/// Exact powers of ten for the fast float path.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Largest mantissa that one more decimal digit cannot overflow: up to
/// here `mantissa * 10 + digit` needs no overflow check.
const MANTISSA_SAFE_MAX: u64 = (u64::MAX - 9) / 10;

#[inline(always)]
fn parse_number<'a>(line: &'a str, start: usize) -> Result<(FieldValue<'a>, usize), LineErrorKind> {
    let bytes = line.as_bytes();
    let mut i = start;
    let negative = bytes[i] == b'-';
    if negative {
        i += 1;
    }
    // Mantissa digits (integer and fraction) accumulated while they fit.
    let mut mantissa: u64 = 0;
    let mut exact = true;
    let integer_start = i;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        let digit = u64::from(bytes[i] - b'0');
        if mantissa <= MANTISSA_SAFE_MAX {
            mantissa = mantissa * 10 + digit;
        } else {
            match mantissa.checked_mul(10).and_then(|m| m.checked_add(digit)) {
                Some(m) => mantissa = m,
                None => exact = false,
            }
        }
        i += 1;
    }
    if i == integer_start {
        return Err(LineErrorKind::InvalidFieldValue);
    }
    match bytes.get(i) {
        Some(b'i') => {
            if !is_value_delimiter(bytes, i + 1) {
                return Err(LineErrorKind::InvalidFieldValue);
            }
            let value = if !exact {
                None
            } else if negative {
                // -(2^63) is the one value whose magnitude does not fit i64.
                0i64.checked_sub_unsigned(mantissa)
            } else {
                i64::try_from(mantissa).ok()
            };
            return match value {
                Some(v) => Ok((FieldValue::Integer(v), i + 1)),
                None => Err(LineErrorKind::IntegerOutOfRange),
            };
        }
        Some(b'u') => {
            if negative || !is_value_delimiter(bytes, i + 1) {
                return Err(LineErrorKind::InvalidFieldValue);
            }
            if !exact {
                return Err(LineErrorKind::UnsignedOutOfRange);
            }
            return Ok((FieldValue::UInteger(mantissa), i + 1));
        }
        _ => {}
    }
    // Float.
    let mut exponent: i64 = 0;
    if bytes.get(i) == Some(&b'.') {
        i += 1;
        let fraction_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            let digit = u64::from(bytes[i] - b'0');
            if exact && mantissa <= MANTISSA_SAFE_MAX {
                mantissa = mantissa * 10 + digit;
                exponent -= 1;
            } else {
                match mantissa.checked_mul(10).and_then(|m| m.checked_add(digit)) {
                    Some(m) if exact => {
                        mantissa = m;
                        exponent -= 1;
                    }
                    _ => exact = false,
                }
            }
            i += 1;
        }
        if i == fraction_start {
            return Err(LineErrorKind::InvalidFieldValue);
        }
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        i += 1;
        let exponent_negative = match bytes.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let digits_start = i;
        let mut written: i64 = 0;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            written = (written * 10 + i64::from(bytes[i] - b'0')).min(1_000_000);
            i += 1;
        }
        if i == digits_start {
            return Err(LineErrorKind::InvalidFieldValue);
        }
        exponent += if exponent_negative { -written } else { written };
    }
    if !is_value_delimiter(bytes, i) {
        return Err(LineErrorKind::InvalidFieldValue);
    }
    let value = if exact && mantissa <= (1u64 << 53) && (-22..=22).contains(&exponent) {
        // Both operands are exact doubles, so one rounding: correctly rounded.
        let m = mantissa as f64;
        let v = if exponent >= 0 {
            m * POW10[exponent as usize]
        } else {
            m / POW10[(-exponent) as usize]
        };
        if negative {
            -v
        } else {
            v
        }
    } else {
        // `i` stops at an ASCII byte or the end: a char boundary.
        match line[start..i].parse::<f64>() {
            Ok(v) => v,
            Err(_) => return Err(LineErrorKind::InvalidFieldValue),
        }
    };
    if value.is_infinite() {
        return Err(LineErrorKind::FloatOutOfRange);
    }
    Ok((FieldValue::Float(value), i))
}

/// Parses `"..."` at `start` (which holds the opening quote).
fn parse_string<'a>(
    line: &'a str,
    start: usize,
    string_bytes_max: usize,
) -> LineResult<(FieldValue<'a>, usize)> {
    let bytes = line.as_bytes();
    let content_start = start + 1;
    let mut i = content_start;
    let mut escaped = false;
    let close = loop {
        match memchr2(b'"', b'\\', &bytes[i..]) {
            None => return Err((start, LineErrorKind::UnterminatedString)),
            Some(offset) => {
                let at = i + offset;
                if bytes[at] == b'"' {
                    break at;
                }
                if matches!(bytes.get(at + 1), Some(b'"' | b'\\')) {
                    escaped = true;
                    i = at + 2;
                } else {
                    i = at + 1;
                }
            }
        }
    };
    let raw = &line[content_start..close];
    let text = if escaped {
        Cow::Owned(unescape_string(raw))
    } else {
        Cow::Borrowed(raw)
    };
    if text.len() > string_bytes_max {
        return Err((
            start,
            LineErrorKind::StringTooLong {
                bytes: text.len(),
                max: string_bytes_max,
            },
        ));
    }
    Ok((FieldValue::String(text), close + 1))
}

fn unescape_string(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut segment_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && matches!(bytes.get(i + 1), Some(b'"' | b'\\')) {
            out.push_str(&raw[segment_start..i]);
            segment_start = i + 1;
            i += 2;
            continue;
        }
        i += 1;
    }
    out.push_str(&raw[segment_start..]);
    out
}

/// Whether all eight bytes of `word` are ASCII digits.
#[inline(always)]
fn all_digits(word: u64) -> bool {
    // High nibble 3, and adding 6 to the low nibble does not carry out.
    (word & 0xf0f0_f0f0_f0f0_f0f0) == 0x3030_3030_3030_3030
        && (word.wrapping_add(0x0606_0606_0606_0606) & 0xf0f0_f0f0_f0f0_f0f0)
            == 0x3030_3030_3030_3030
}

/// The value of eight ASCII digits read little-endian (first digit in the
/// lowest byte): pairs, then quads, then the whole, with no lane carries.
#[inline(always)]
fn eight_digits(word: u64) -> u64 {
    let v = word - 0x3030_3030_3030_3030;
    let v = (v.wrapping_mul(10) + (v >> 8)) & 0x00ff_00ff_00ff_00ff;
    let v = (v.wrapping_mul(100) + (v >> 16)) & 0x0000_ffff_0000_ffff;
    (v.wrapping_mul(10_000) + (v >> 32)) & 0xffff_ffff
}

/// Parses `-?digits` followed by a space or the end of the line.
fn parse_timestamp(bytes: &[u8], start: usize) -> Result<(i64, usize), LineErrorKind> {
    let mut i = start;
    let negative = bytes[i] == b'-';
    if negative {
        i += 1;
    }
    let digits_start = i;
    let mut magnitude: u64 = 0;
    // Up to two blocks of eight digits at once (< 10^16, cannot overflow),
    // then the rest one at a time with overflow checks.
    while i + 8 <= bytes.len() && i - digits_start < 16 {
        let word = read_u64(&bytes[i..]);
        if !all_digits(word) {
            break;
        }
        magnitude = magnitude * 100_000_000 + eight_digits(word);
        i += 8;
    }
    let mut fits = true;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        match magnitude
            .checked_mul(10)
            .and_then(|m| m.checked_add(u64::from(bytes[i] - b'0')))
        {
            Some(m) => magnitude = m,
            None => fits = false,
        }
        i += 1;
    }
    if i == digits_start || (i < bytes.len() && bytes[i] != b' ') {
        return Err(LineErrorKind::InvalidTimestamp);
    }
    let value = if !fits {
        None
    } else if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    };
    match value {
        Some(v) => Ok((v, i)),
        None => Err(LineErrorKind::TimestampOverflow),
    }
}

// ---------------------------------------------------------------------------
// Series hash
// ---------------------------------------------------------------------------

/// The series hash, version 1: a stable 64-bit hash of the canonical series
/// key, the same on every platform, run and release.
///
/// Input: the unescaped measurement, then for each tag in key order the
/// unescaped key and the unescaped value. Each piece is hashed as:
/// for every whole 16-byte block `(a, b)` (two little-endian u64),
/// `h = fold(a ^ h ^ K0, b ^ K1)`; then the 0–15 remaining bytes are read
/// as `(a, b)` (see `read_tail`) and `h = fold(a ^ h ^ K0, b ^ K2 ^ len)`,
/// where `len` is the piece's length, so piece boundaries are unambiguous.
/// `fold(x, y)` is the 128-bit product of `x` and `y` with its halves
/// xor-ed. The start value is `K2` and the result is the MurmurHash3
/// `fmix64` of the final `h`. Changing any of this changes shard routing
/// of existing data: add a new version instead.
pub fn series_hash(measurement: &str, tags: &[(Cow<'_, str>, Cow<'_, str>)]) -> u64 {
    let mut hasher = SeriesHasher::new();
    hasher.write(measurement.as_bytes());
    for (key, value) in tags {
        hasher.write(key.as_bytes());
        hasher.write(value.as_bytes());
    }
    hasher.finish()
}

const K0: u64 = 0xa076_1d64_78bd_642f;
const K1: u64 = 0xe703_7ed1_a0b4_28db;
const K2: u64 = 0x8ebc_6af0_9c88_c6e3;

struct SeriesHasher {
    h: u64,
}

#[inline]
fn fold(x: u64, y: u64) -> u64 {
    let product = u128::from(x) * u128::from(y);
    (product as u64) ^ ((product >> 64) as u64)
}

#[inline]
fn read_u64(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(word)
}

#[inline]
fn read_u32(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[..4]);
    u64::from(u32::from_le_bytes(word))
}

/// The last 0–15 bytes of a piece as two words (overlapping reads; the
/// length is mixed in separately).
#[inline]
fn read_tail(tail: &[u8]) -> (u64, u64) {
    let len = tail.len();
    if len > 8 {
        (read_u64(tail), read_u64(&tail[len - 8..]))
    } else if len >= 4 {
        ((read_u32(tail) << 32) | read_u32(&tail[len - 4..]), 0)
    } else if len > 0 {
        let a = (u64::from(tail[0]) << 16)
            | (u64::from(tail[len >> 1]) << 8)
            | u64::from(tail[len - 1]);
        (a, 0)
    } else {
        (0, 0)
    }
}

impl SeriesHasher {
    fn new() -> SeriesHasher {
        SeriesHasher { h: K2 }
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.h;
        let mut blocks = bytes.chunks_exact(16);
        for block in &mut blocks {
            h = fold(read_u64(block) ^ h ^ K0, read_u64(&block[8..]) ^ K1);
        }
        let (a, b) = read_tail(blocks.remainder());
        h = fold(a ^ h ^ K0, b ^ K2 ^ bytes.len() as u64);
        self.h = h;
    }

    fn finish(&self) -> u64 {
        let mut h = self.h;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^= h >> 33;
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_one(body: &str) -> Result<Point<'_>, LineError> {
        let mut lines = Lines::new(body, ParseOptions::new(Precision::Nanoseconds, 7));
        let mut point = Point::default();
        match lines.next_into(&mut point) {
            Some(Ok(())) => Ok(point),
            Some(Err(e)) => Err(e),
            None => panic!("no line in {body:?}"),
        }
    }

    /// Goal: the series hash is stable across versions and runs.
    /// Method: fixed test vectors; a change here re-routes stored data.
    #[test]
    fn series_hash_test_vectors() {
        let t = |k: &'static str, v: &'static str| (Cow::Borrowed(k), Cow::Borrowed(v));
        assert_eq!(series_hash("cpu", &[]), 0x85e5_a5bc_b7da_7ba6);
        assert_eq!(
            series_hash("cpu", &[t("host", "server01"), t("region", "us-west")]),
            0x6e4d_3ea3_c1fe_3912
        );
        assert_eq!(
            series_hash("a_measurement_name_longer_than_16", &[t("k", "v")]),
            0xf161_a6ce_16fc_22be
        );
    }

    /// Goal: the hash ignores escaping and tag order, and separates pieces.
    /// Method: parse equivalent spellings, compare hashes; shifted boundaries differ.
    #[test]
    fn series_hash_is_canonical() {
        let a = parse_one("c\\ pu,b=2,a=x\\,y f=1").map(|p| p.series_hash);
        let b = parse_one("c\\ pu,a=x\\,y,b=2 f=1").map(|p| p.series_hash);
        assert_eq!(a, b);
        let t = |k: &'static str, v: &'static str| (Cow::Borrowed(k), Cow::Borrowed(v));
        assert_ne!(
            series_hash("ab", &[t("c", "d")]),
            series_hash("a", &[t("bc", "d")])
        );
        assert_ne!(
            series_hash("m", &[t("ab", "c")]),
            series_hash("m", &[t("a", "bc")])
        );
    }

    /// Goal: unescaped input is borrowed, not copied.
    /// Method: parse a line without escapes and check every Cow.
    #[test]
    fn unescaped_input_is_borrowed() {
        let p = parse_one("cpu,host=a,region=b f=1,s=\"x\" 5").expect("valid");
        assert!(matches!(p.measurement, Cow::Borrowed(_)));
        assert!(p
            .tags
            .iter()
            .all(|(k, v)| matches!(k, Cow::Borrowed(_)) && matches!(v, Cow::Borrowed(_))));
        assert!(p.fields.iter().all(|(k, v)| matches!(k, Cow::Borrowed(_))
            && !matches!(v, FieldValue::String(Cow::Owned(_)))));
    }

    /// Goal: the remembered tag permutation never changes the result: tags
    /// come out sorted and duplicates are still found, whether the order
    /// repeats, changes, or repeats with a duplicate key.
    /// Method: a body of lines with permutations of one key set (and some
    /// duplicates), each compared with a plain sort of its written tags.
    #[test]
    fn remembered_tag_order_sorts_every_line() {
        let keys = [
            "host",
            "region",
            "dc",
            "rack",
            "os",
            "service",
            "service_version",
        ];
        let mut body = String::new();
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut expected = Vec::new();
        for line in 0..400 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            // Mostly one order, sometimes a shuffle or a duplicate.
            let mut written: Vec<&str> = keys.to_vec();
            if rng % 4 == 0 {
                written.rotate_left((rng >> 8) as usize % keys.len());
            }
            if rng % 7 == 0 {
                written[(rng >> 16) as usize % keys.len()] = "host";
            }
            let tags: Vec<String> = written
                .iter()
                .enumerate()
                .map(|(i, k)| format!("{k}=v{line}_{i}"))
                .collect();
            body.push_str(&format!("m,{} f=1 {line}\n", tags.join(",")));
            let mut sorted: Vec<(String, String)> = written
                .iter()
                .enumerate()
                .map(|(i, k)| (k.to_string(), format!("v{line}_{i}")))
                .collect();
            sorted.sort();
            let duplicate = sorted.windows(2).any(|p| p[0].0 == p[1].0);
            expected.push((!duplicate).then_some(sorted));
        }
        let mut lines = Lines::new(&body, ParseOptions::new(Precision::Nanoseconds, 0));
        let mut point = Point::default();
        for want in expected {
            let got = lines.next_into(&mut point).expect("a line");
            match want {
                Some(tags) => {
                    assert!(got.is_ok(), "{got:?}");
                    let tags: Vec<(Cow<str>, Cow<str>)> = tags
                        .into_iter()
                        .map(|(k, v)| (k.into(), v.into()))
                        .collect();
                    assert_eq!(point.tags, tags);
                }
                None => assert!(
                    matches!(&got, Err(e) if e.kind == LineErrorKind::DuplicateTag { key: "host".into() }),
                    "{got:?}"
                ),
            }
        }
        assert!(lines.next_into(&mut point).is_none());
    }

    /// Goal: duplicate field detection works past the linear-scan size.
    /// Method: 100 distinct fields then a repeat of the first, same and different type.
    #[test]
    fn many_fields_dedup() {
        let mut body = String::from("m ");
        for k in 0..100 {
            body.push_str(&format!("f{k}={k},"));
        }
        let same = format!("{body}f0=9");
        let p = parse_one(&same).expect("valid");
        assert_eq!(p.fields.len(), 100);
        assert_eq!(p.fields[0].1, FieldValue::Float(9.0));
        let conflict = format!("{body}f0=9i");
        let e = parse_one(&conflict).expect_err("conflict");
        assert_eq!(
            e.kind,
            LineErrorKind::FieldTypeConflict { key: "f0".into() }
        );
    }
}
