//! The differential comparison of the line-protocol parser with its oracle,
//! the `influxdb-line-protocol` crate (InfluxDB 3's own parser), shared by
//! `tests/line_protocol_differential.rs` (proptest) and the `line_protocol`
//! fuzz target (`tests/fuzz/fuzz_targets/line_protocol.rs`), both of which
//! include this file with `#[path]`.
//!
//! Every disagreement must be explained by one of the documented
//! differences in `ringest::line_protocol::Difference` (the ONE list, in the
//! module docs of `src/line_protocol.rs`); [`compare`] checks the
//! explanation against the oracle's own output, so a claimed difference
//! cannot hide a bug. Bodies holding `\r` are outside [`compare`]: there
//! the oracle rejects every CRLF line (`Difference::CrLf`), which
//! `crlf_equals_lf` covers instead.

// Each includer uses a different part of this file.
#![allow(dead_code)]

use influxdb_line_protocol as oracle;
use ringest::line_protocol::{
    Difference, FieldValue, LineError, Lines, ParseOptions, Point, Precision, TIMESTAMP_NS_MAX,
    TIMESTAMP_NS_MIN,
};

pub const DEFAULT_TIME: i64 = 7;

/// One line's result from our parser, owned.
#[derive(Debug)]
pub enum Ours {
    Point {
        measurement: String,
        tags: Vec<(String, String)>,
        fields: Vec<(String, Value)>,
        timestamp_ns: i64,
    },
    Error(LineError),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Bits, so -0.0 and 0.0 differ and NaN cannot appear equal.
    Float(u64),
    Integer(i64),
    UInteger(u64),
    String(String),
    Boolean(bool),
}

impl Value {
    fn same_type(&self, other: &Value) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}

pub fn ours(body: &str) -> Vec<Ours> {
    let mut lines = Lines::new(
        body,
        ParseOptions::new(Precision::Nanoseconds, DEFAULT_TIME),
    );
    let mut point = Point::default();
    let mut out = Vec::new();
    while let Some(result) = lines.next_into(&mut point) {
        out.push(match result {
            Ok(()) => Ours::Point {
                measurement: point.measurement.to_string(),
                tags: point
                    .tags
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                fields: point
                    .fields
                    .iter()
                    .map(|(k, v)| (k.to_string(), our_value(v)))
                    .collect(),
                timestamp_ns: point.timestamp_ns,
            },
            Err(e) => Ours::Error(e),
        });
    }
    out
}

fn our_value(value: &FieldValue<'_>) -> Value {
    match value {
        FieldValue::Float(f) => Value::Float(f.to_bits()),
        FieldValue::Integer(i) => Value::Integer(*i),
        FieldValue::UInteger(u) => Value::UInteger(*u),
        FieldValue::String(s) => Value::String(s.to_string()),
        FieldValue::Boolean(b) => Value::Boolean(*b),
    }
}

/// One line's result from the oracle, owned.
#[derive(Debug)]
pub enum Theirs {
    Point {
        measurement: String,
        tags: Vec<(String, String)>,
        fields: Vec<(String, Value)>,
        timestamp: Option<i64>,
    },
    /// The oracle's message, shown (via Debug) in failure reports.
    Error(#[allow(dead_code)] String),
}

pub fn theirs(body: &str) -> Vec<Theirs> {
    oracle::parse_lines(body)
        .map(|result| match result {
            Ok(line) => Theirs::Point {
                measurement: line.series.measurement.to_string(),
                tags: line
                    .series
                    .tag_set
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                fields: line
                    .field_set
                    .iter()
                    .map(|(k, v)| {
                        let value = match v {
                            oracle::FieldValue::F64(f) => Value::Float(f.to_bits()),
                            oracle::FieldValue::I64(i) => Value::Integer(*i),
                            oracle::FieldValue::U64(u) => Value::UInteger(*u),
                            oracle::FieldValue::String(s) => Value::String(s.to_string()),
                            oracle::FieldValue::Boolean(b) => Value::Boolean(*b),
                        };
                        (k.to_string(), value)
                    })
                    .collect(),
                timestamp: line.timestamp,
            },
            Err(e) => Theirs::Error(e.to_string()),
        })
        .collect()
}

/// The oracle's accepted line, normalised by the value-level differences
/// (`TagsSorted`, `DuplicateFieldLastWins`, `TimestampScaled`). Returns
/// `Err(differences)` when the oracle's line is one we must reject, with
/// every difference that applies.
#[allow(clippy::type_complexity)]
fn normalise(
    tags: &[(String, String)],
    fields: &[(String, Value)],
    timestamp: Option<i64>,
) -> Result<(Vec<(String, String)>, Vec<(String, Value)>, i64), Vec<Difference>> {
    let mut reasons = Vec::new();
    let mut sorted = tags.to_vec();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    if sorted.windows(2).any(|w| w[0].0 == w[1].0) || sorted.iter().any(|(k, _)| k == "time") {
        reasons.push(Difference::SemanticChecks);
    }
    let mut merged: Vec<(String, Value)> = Vec::new();
    for (key, value) in fields {
        if key == "time" {
            reasons.push(Difference::SemanticChecks);
        }
        if let Value::Float(bits) = value {
            if f64::from_bits(*bits).is_infinite() {
                reasons.push(Difference::FloatOverflow);
            }
        }
        match merged.iter_mut().find(|(k, _)| k == key) {
            Some((_, existing)) if existing.same_type(value) => *existing = value.clone(),
            Some(_) => reasons.push(Difference::SemanticChecks),
            None => merged.push((key.clone(), value.clone())),
        }
    }
    let timestamp_ns = match timestamp {
        None => DEFAULT_TIME,
        Some(t) if (TIMESTAMP_NS_MIN..=TIMESTAMP_NS_MAX).contains(&t) => t,
        Some(_) => {
            reasons.push(Difference::TimestampScaled);
            0
        }
    };
    if reasons.is_empty() {
        Ok((sorted, merged, timestamp_ns))
    } else {
        Err(reasons)
    }
}

/// Byte offset of the start of physical line `line_number` (1-based).
fn body_line_start(body: &str, line_number: u32) -> usize {
    if line_number <= 1 {
        return 0;
    }
    body.match_indices('\n')
        .nth(line_number as usize - 2)
        .map_or(body.len(), |(i, _)| i + 1)
}

/// Compares both parsers on one body; `Err` describes the disagreement.
pub fn compare(body: &str) -> Result<(), String> {
    let ours = ours(body);
    let theirs = theirs(body);
    if ours.len() != theirs.len() {
        return Err(format!(
            "line count: ours {} theirs {}\nours {ours:?}\ntheirs {theirs:?}",
            ours.len(),
            theirs.len()
        ));
    }
    for (index, (o, t)) in ours.iter().zip(&theirs).enumerate() {
        let context = || format!("line {index} of {body:?}\nours {o:?}\ntheirs {t:?}");
        match (o, t) {
            (Ours::Error(_), Theirs::Error(_)) => {}
            (Ours::Point { .. }, Theirs::Error(_)) => {
                return Err(format!("we accept, oracle rejects: {}", context()))
            }
            (
                Ours::Error(error),
                Theirs::Point {
                    tags,
                    fields,
                    timestamp,
                    ..
                },
            ) => {
                let claimed = error.kind.difference();
                let actual = if claimed == Some(Difference::EmptyField) {
                    // We stopped at an unescaped comma that starts a field
                    // (after a comma or a space); the oracle read it as the
                    // first byte of the next field's key.
                    let line_start = body_line_start(body, error.line_number);
                    let at = line_start + error.column as usize - 1;
                    let bytes = body.as_bytes();
                    let empty_segment = bytes.get(at) == Some(&b',')
                        && matches!(bytes.get(at - 1), Some(b',' | b' '));
                    if empty_segment && fields.iter().any(|(k, _)| k.starts_with(',')) {
                        vec![Difference::EmptyField]
                    } else {
                        Vec::new()
                    }
                } else if claimed == Some(Difference::TrailingFieldComma) {
                    // The oracle kept exactly one field and we stopped right after a comma.
                    let line_start = body_line_start(body, error.line_number);
                    let at = line_start + error.column as usize - 1;
                    if fields.len() == 1 && body.as_bytes().get(at - 1) == Some(&b',') {
                        vec![Difference::TrailingFieldComma]
                    } else {
                        Vec::new()
                    }
                } else {
                    normalise(tags, fields, *timestamp)
                        .err()
                        .unwrap_or_default()
                };
                if !claimed.is_some_and(|c| actual.contains(&c)) {
                    return Err(format!(
                        "we reject ({:?}), oracle accepts; claimed {claimed:?}, oracle shows {actual:?}: {}",
                        error.kind,
                        context()
                    ));
                }
            }
            (
                Ours::Point {
                    measurement,
                    tags,
                    fields,
                    timestamp_ns,
                },
                Theirs::Point {
                    measurement: their_measurement,
                    tags: their_tags,
                    fields: their_fields,
                    timestamp,
                },
            ) => {
                let expected = normalise(their_tags, their_fields, *timestamp)
                    .map_err(|d| format!("we accept, oracle's line needs {d:?}: {}", context()))?;
                if (measurement, tags, fields, timestamp_ns)
                    != (their_measurement, &expected.0, &expected.1, &expected.2)
                {
                    return Err(format!("values differ: {}", context()));
                }
            }
        }
    }
    Ok(())
}

/// Every outcome of a parse as text, with what [`ours`] leaves out: the
/// series hash and whether the measurement was borrowed. For comparing a
/// parse with the series-key cache against one without.
pub fn outcomes(mut lines: Lines<'_, '_>) -> Vec<String> {
    let mut point = Point::default();
    let mut out = Vec::new();
    while let Some(result) = lines.next_into(&mut point) {
        out.push(match result {
            Ok(()) => format!(
                "{} {:?} {:?} {:?} {} {:x} {}",
                point.line_number,
                point.measurement,
                point.tags,
                point.fields,
                point.timestamp_ns,
                point.series_hash,
                matches!(point.measurement, std::borrow::Cow::Borrowed(_))
            ),
            Err(error) => format!("{error:?}"),
        });
    }
    out
}
