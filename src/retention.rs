//! Retention: how long a database keeps its points, and the one rule that
//! turns a period and the current time into a cutoff.
//!
//! Every database has one retention [`Period`] (InfluxDB's `autogen`
//! policy, the only one ringest has). A point is *expired* when its time is
//! older than `now − period`: [`cutoff_ns`] is that bound, and every user of
//! retention asks it — the write path (an expired point is a line error),
//! the query fan-out (the lower time bound of every row scan is clamped to
//! it), the per-shard expiry task (in-memory rows older than it are
//! dropped), and persistence (files wholly older than it are deleted).
//!
//! Periods are written in InfluxQL duration syntax (`ns u µ ms s m h d w`,
//! combinable: `1h30m`), `0` or `inf` meaning forever; the shortest finite
//! period is one second (InfluxDB 1.x refuses less than an hour). They are
//! printed the way InfluxDB prints them in `SHOW RETENTION POLICIES`
//! (Go's `time.Duration` format: `72h0m0s`, `0s` for forever).

use std::fmt;

/// Nanoseconds per second.
const SECOND_NS: i64 = 1_000_000_000;
const HOUR_NS: i64 = 3600 * SECOND_NS;
const DAY_NS: i64 = 24 * HOUR_NS;

/// A retention period: forever, or a whole number of nanoseconds of at
/// least one second. The default is forever.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Period {
    /// 0: forever; otherwise at least [`Period::MIN_NS`].
    ns: i64,
}

/// Why a period was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeriodError {
    /// Not InfluxQL duration syntax (`30d`, `1h30m`), `0` or `inf`.
    Syntax { text: String },
    /// Larger than an `i64` of nanoseconds (about 292 years).
    Overflow { text: String },
    /// Finite but shorter than one second.
    TooShort { ns: i64 },
}

impl fmt::Display for PeriodError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeriodError::Syntax { text } => write!(
                f,
                "invalid duration {text:?} (expected e.g. 3d, 1h30m, 0 or inf; units ns, u, µ, ms, s, m, h, d, w)"
            ),
            PeriodError::Overflow { text } => {
                write!(f, "overflowed duration {text}: choose a smaller duration or INF")
            }
            PeriodError::TooShort { ns } => write!(
                f,
                "retention policy duration must be at least 1s or 0 (forever), got {}",
                go_duration(*ns)
            ),
        }
    }
}

impl std::error::Error for PeriodError {}

impl Period {
    /// Keep forever.
    pub const FOREVER: Period = Period { ns: 0 };
    /// The shortest finite period.
    pub const MIN_NS: i64 = SECOND_NS;

    /// A period of `ns` nanoseconds; 0 is forever.
    pub fn from_ns(ns: i64) -> Result<Period, PeriodError> {
        if ns == 0 || ns >= Period::MIN_NS {
            Ok(Period { ns })
        } else {
            Err(PeriodError::TooShort { ns })
        }
    }

    /// Nanoseconds; 0 is forever (the catalog log's encoding).
    pub fn as_ns(self) -> i64 {
        self.ns
    }

    pub fn is_forever(self) -> bool {
        self.ns == 0
    }

    /// Parses `0`, `inf` (any case) or an InfluxQL duration (`3d`, `1h30m`).
    pub fn parse(text: &str) -> Result<Period, PeriodError> {
        let trimmed = text.trim();
        if trimmed == "0" || trimmed.eq_ignore_ascii_case("inf") {
            return Ok(Period::FOREVER);
        }
        Period::from_ns(parse_duration_ns(trimmed)?)
    }

    /// The shard group duration InfluxDB 1.x derives from a policy's
    /// duration (`shardGroupDuration` in its `meta` package): 7 days for
    /// forever or at least 180 days, 1 day from 2 days on, else 1 hour.
    /// ringest has no shard groups; `SHOW RETENTION POLICIES` prints it.
    pub fn shard_group_ns(self) -> i64 {
        if self.ns == 0 || self.ns >= 180 * DAY_NS {
            7 * DAY_NS
        } else if self.ns >= 2 * DAY_NS {
            DAY_NS
        } else {
            HOUR_NS
        }
    }
}

impl fmt::Display for Period {
    /// Go's duration format, as InfluxDB prints it: `72h0m0s`; `0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&go_duration(self.ns))
    }
}

impl Period {
    /// The period in a form [`Period::parse`] reads back (Go's format
    /// does not always: `1.5s`): `inf`, or units from hours down, zeros
    /// left out (`72h`, `1h30m`, `1s500ms`).
    pub fn to_influxql(self) -> String {
        if self.is_forever() {
            return "inf".to_string();
        }
        let mut rest = self.ns;
        let mut out = String::new();
        for (unit, scale) in [
            ("h", HOUR_NS),
            ("m", 60 * SECOND_NS),
            ("s", SECOND_NS),
            ("ms", 1_000_000),
            ("u", 1_000),
            ("ns", 1),
        ] {
            if rest >= scale {
                out.push_str(&format!("{}{unit}", rest / scale));
                rest %= scale;
            }
        }
        out
    }
}

impl serde::Serialize for Period {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_influxql())
    }
}

impl<'de> serde::Deserialize<'de> for Period {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Period, D::Error> {
        let text = String::deserialize(deserializer)?;
        Period::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The oldest point time a database with this period keeps at `now_ns`:
/// a point with `time < cutoff` is expired. `None`: kept forever.
pub fn cutoff_ns(period: Period, now_ns: i64) -> Option<i64> {
    if period.is_forever() {
        None
    } else {
        Some(now_ns.saturating_sub(period.ns))
    }
}

/// Parses an InfluxQL duration (`ParseDuration` of InfluxDB's `influxql`
/// package): one or more `<digits><unit>` with units `ns u µ ms s m h d w`.
pub fn parse_duration_ns(text: &str) -> Result<i64, PeriodError> {
    let syntax = || PeriodError::Syntax {
        text: text.to_string(),
    };
    let overflow = || PeriodError::Overflow {
        text: text.to_string(),
    };
    if text.is_empty() {
        return Err(syntax());
    }
    let mut total: i64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits == rest.len() {
            return Err(syntax());
        }
        let number: i64 = rest[..digits].parse().map_err(|_| overflow())?;
        rest = &rest[digits..];
        let (scale, unit_len) = if rest.starts_with("ns") {
            (1, 2)
        } else if rest.starts_with("ms") {
            (1_000_000, 2)
        } else if rest.starts_with('u') {
            (1_000, 1)
        } else if rest.starts_with('µ') {
            (1_000, 'µ'.len_utf8())
        } else if rest.starts_with('s') {
            (SECOND_NS, 1)
        } else if rest.starts_with('m') {
            (60 * SECOND_NS, 1)
        } else if rest.starts_with('h') {
            (HOUR_NS, 1)
        } else if rest.starts_with('d') {
            (DAY_NS, 1)
        } else if rest.starts_with('w') {
            (7 * DAY_NS, 1)
        } else {
            return Err(syntax());
        };
        rest = &rest[unit_len..];
        total = number
            .checked_mul(scale)
            .and_then(|ns| total.checked_add(ns))
            .ok_or_else(overflow)?;
    }
    Ok(total)
}

/// A non-negative duration in Go's `time.Duration.String` format:
/// `72h0m0s`, `1h30m0s`, `1.5s`, `0s`; below a second `500ms`, `1.5µs`.
pub fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".to_string();
    }
    let negative = ns < 0;
    let ns = ns.unsigned_abs();
    let sign = if negative { "-" } else { "" };
    if ns < SECOND_NS as u64 {
        let (unit, scale) = if ns < 1_000 {
            ("ns", 1)
        } else if ns < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{sign}{}{unit}", fraction(ns, scale));
    }
    let seconds = fraction(ns % (60 * SECOND_NS as u64), SECOND_NS as u64);
    let minutes_total = ns / (60 * SECOND_NS as u64);
    if minutes_total == 0 {
        return format!("{sign}{seconds}s");
    }
    let hours = minutes_total / 60;
    let minutes = minutes_total % 60;
    if hours == 0 {
        format!("{sign}{minutes}m{seconds}s")
    } else {
        format!("{sign}{hours}h{minutes}m{seconds}s")
    }
}

/// `value / scale` with the fraction's trailing zeros dropped (`1.5`, `2`).
fn fraction(value: u64, scale: u64) -> String {
    let whole = value / scale;
    let rest = value % scale;
    if rest == 0 {
        return whole.to_string();
    }
    let width = scale.ilog10() as usize;
    let digits = format!("{rest:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: periods parse as the docs say: InfluxQL units, combined
    /// units, `0`/`inf` as forever, and refuse junk, overflow and finite
    /// periods under a second. Method: case table.
    #[test]
    fn periods_parse() {
        let ok = |text: &str, ns: i64| {
            assert_eq!(Period::parse(text).map(Period::as_ns), Ok(ns), "{text}");
        };
        ok("3d", 3 * DAY_NS);
        ok("1h30m", HOUR_NS + 30 * 60 * SECOND_NS);
        ok("2w", 14 * DAY_NS);
        ok("1s", SECOND_NS);
        ok("1000ms", SECOND_NS);
        ok("1000000u", SECOND_NS);
        ok("1000000µ", SECOND_NS);
        ok("1000000000ns", SECOND_NS);
        ok("72h0m0s", 3 * DAY_NS);
        ok("0", 0);
        ok("0s", 0);
        ok("inf", 0);
        ok("INF", 0);
        for bad in ["", "3", "d", "3x", "-3d", "1.5h", "3dd", "h3", "3d 1h"] {
            assert!(
                matches!(Period::parse(bad), Err(PeriodError::Syntax { .. })),
                "{bad:?}: {:?}",
                Period::parse(bad)
            );
        }
        assert!(matches!(
            Period::parse("999ms"),
            Err(PeriodError::TooShort { ns: 999_000_000 })
        ));
        assert!(matches!(
            Period::parse("1ns"),
            Err(PeriodError::TooShort { ns: 1 })
        ));
        assert!(matches!(
            Period::parse("9999999999w"),
            Err(PeriodError::Overflow { .. })
        ));
        assert!(matches!(
            Period::parse("99999999999999999999s"),
            Err(PeriodError::Overflow { .. })
        ));
    }

    /// Goal: periods print as InfluxDB prints them (Go durations), and
    /// their configuration form parses back to the same period. Method:
    /// known values.
    #[test]
    fn periods_print_like_go() {
        let cases = [
            (0, "0s"),
            (SECOND_NS, "1s"),
            (1_500_000_000, "1.5s"),
            (90 * SECOND_NS, "1m30s"),
            (HOUR_NS, "1h0m0s"),
            (3 * DAY_NS, "72h0m0s"),
            (30 * DAY_NS, "720h0m0s"),
            (HOUR_NS + 30 * 60 * SECOND_NS + 1, "1h30m0.000000001s"),
        ];
        for (ns, text) in cases {
            let period = Period::from_ns(ns).expect("valid");
            assert_eq!(period.to_string(), text);
            let written = period.to_influxql();
            assert_eq!(Period::parse(&written), Ok(period), "{written} parses back");
        }
        assert_eq!(
            Period::parse("3d").map(Period::to_influxql),
            Ok("72h".into())
        );
        assert_eq!(Period::FOREVER.to_influxql(), "inf");
        assert_eq!(go_duration(500_000_000), "500ms");
        assert_eq!(go_duration(1_500), "1.5µs");
        assert_eq!(go_duration(7), "7ns");
    }

    /// Goal: the shard group duration follows InfluxDB 1.x's rule.
    /// Method: values on each side of every threshold.
    #[test]
    fn shard_group_duration_follows_influxdb() {
        let group = |text: &str| go_duration(Period::parse(text).expect(text).shard_group_ns());
        assert_eq!(group("inf"), "168h0m0s");
        assert_eq!(group("1s"), "1h0m0s");
        assert_eq!(group("47h59m59s"), "1h0m0s");
        assert_eq!(group("2d"), "24h0m0s");
        assert_eq!(group("3d"), "24h0m0s");
        assert_eq!(group("179d"), "24h0m0s");
        assert_eq!(group("180d"), "168h0m0s");
        assert_eq!(group("52w"), "168h0m0s");
    }

    /// Goal: the cutoff is `now − period`, none for forever, and never
    /// overflows. Method: known values and the ends of the i64 range.
    #[test]
    fn cutoff_rule() {
        let period = Period::parse("3d").expect("3d");
        assert_eq!(cutoff_ns(period, 10 * DAY_NS), Some(7 * DAY_NS));
        assert_eq!(cutoff_ns(Period::FOREVER, 10 * DAY_NS), None);
        assert_eq!(cutoff_ns(period, i64::MIN), Some(i64::MIN));
    }
}
