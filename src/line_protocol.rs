//! Line protocol: request body text → borrowed points, with per-line errors.
//!
//! SKELETON: the types below are the contract with the write path, the batch
//! encoder and the store; the parser behind `Lines::next_into` is being built
//! (issue 3).

use std::borrow::Cow;
use std::fmt;

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

/// One field value, borrowed from the body when it has no escapes.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldValue<'a> {
    Float(f64),
    Integer(i64),
    UInteger(u64),
    String(Cow<'a, str>),
    Boolean(bool),
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
    /// Stable hash of the canonical series key (measurement + sorted tags).
    pub series_hash: u64,
}

/// Why a line was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineErrorKind {
    Unimplemented,
}

/// A rejected line: where, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    /// Physical 1-based line number.
    pub line_number: u32,
    /// 1-based byte column inside the line where the problem was found.
    pub column: u32,
    pub kind: LineErrorKind,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {:?}", self.line_number, self.kind)
    }
}

/// Iterator-like cursor over the lines of one body.
pub struct Lines<'a> {
    body: &'a str,
    options: ParseOptions,
}

impl<'a> Lines<'a> {
    pub fn new(body: &'a str, options: ParseOptions) -> Lines<'a> {
        Lines { body, options }
    }

    /// Parses the next non-blank, non-comment line into `point`. `None` at the end.
    pub fn next_into(&mut self, point: &mut Point<'a>) -> Option<Result<(), LineError>> {
        let _ = (&self.body, &self.options, point);
        None
    }
}
