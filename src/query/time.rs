//! Time text: RFC3339 printing like Go's `time.RFC3339Nano` and parsing of
//! the time strings InfluxQL accepts in WHERE clauses. Pure functions.

use crate::clock::civil_from_days;

/// (year, month, day) → days since 1970-01-01.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Appends `ns` as Go's `time.RFC3339Nano` in UTC: fraction trimmed of
/// trailing zeros and left out when zero, `Z` suffix.
pub fn write_rfc3339_nano(out: &mut Vec<u8>, ns: i64) {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let text = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    );
    out.extend_from_slice(text.as_bytes());
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        out.push(b'.');
        out.extend_from_slice(fraction.trim_end_matches('0').as_bytes());
    }
    out.push(b'Z');
}

/// Parses the time strings InfluxQL accepts: `YYYY-MM-DD`,
/// `YYYY-MM-DD HH:MM:SS[.frac]`, and RFC3339 `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
pub fn parse_time(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    if bytes.len() < 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let year = number(0..4)?;
    let month = u32::try_from(number(5..7)?).ok()?;
    let day = u32::try_from(number(8..10)?).ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    if bytes.len() == 10 {
        return days.checked_mul(86_400_000_000_000);
    }
    if bytes.len() < 19 || !(bytes[10] == b'T' || bytes[10] == b' ') {
        return None;
    }
    if bytes[13] != b':' || bytes[16] != b':' {
        return None;
    }
    let hour = number(11..13)?;
    let minute = number(14..16)?;
    let second = number(17..19)?;
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut pos = 19;
    let mut nanos: i64 = 0;
    if bytes.get(pos) == Some(&b'.') {
        pos += 1;
        let start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        let digits = &text[start..pos];
        if digits.is_empty() || digits.len() > 9 {
            return None;
        }
        nanos = digits.parse::<i64>().ok()? * 10i64.pow(9 - digits.len() as u32);
    }
    let mut offset_secs = 0i64;
    match bytes.get(pos) {
        None if bytes[10] == b' ' => {}
        Some(b'Z') if pos + 1 == bytes.len() => {}
        Some(sign @ (b'+' | b'-')) if pos + 6 == bytes.len() && bytes[pos + 3] == b':' => {
            let h = number(pos + 1..pos + 3)?;
            let m = number(pos + 4..pos + 6)?;
            offset_secs = (h * 3600 + m * 60) * if *sign == b'-' { -1 } else { 1 };
        }
        _ => return None,
    }
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// A time zone from the system's TZif files (what Go's `LoadLocation`
/// reads): UTC offsets by transition time.
#[derive(Clone, Debug, PartialEq)]
pub struct Zone {
    /// (transition time in UTC seconds, offset in seconds from then on).
    transitions: Vec<(i64, i32)>,
    /// Offset before the first transition.
    initial_offset_secs: i32,
}

/// Where the TZif files live (Debian's tzdata).
const ZONEINFO_DIR: &str = "/usr/share/zoneinfo";
/// Largest TZif file read.
const ZONE_FILE_BYTES_MAX: usize = 1 << 20;

impl Zone {
    pub fn utc() -> Zone {
        Zone {
            transitions: Vec::new(),
            initial_offset_secs: 0,
        }
    }

    /// Loads `name` (e.g. `Europe/Oslo`); `None` when unknown. Reads a small
    /// file once per query that names a zone.
    pub fn load(name: &str) -> Option<Zone> {
        if name.is_empty() || name == "UTC" {
            return Some(Zone::utc());
        }
        let valid = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_-+".contains(&b))
            && !name.starts_with('/')
            && !name.contains("..");
        if !valid {
            return None;
        }
        // Blocking read on the shard's executor, accepted for now: one small
        // file (at most ZONE_FILE_BYTES_MAX, usually in the page cache) per
        // query that names a zone. Ingest on this core waits for it.
        #[allow(clippy::disallowed_methods)]
        let bytes = std::fs::read(format!("{ZONEINFO_DIR}/{name}")).ok()?;
        if bytes.len() > ZONE_FILE_BYTES_MAX {
            return None;
        }
        Zone::parse(&bytes)
    }

    /// Parses TZif version 2+ (64-bit section) or version 1.
    pub fn parse(bytes: &[u8]) -> Option<Zone> {
        let header = |at: usize| -> Option<(u8, [usize; 6])> {
            if bytes.get(at..at + 4)? != b"TZif" {
                return None;
            }
            let version = *bytes.get(at + 4)?;
            let mut counts = [0usize; 6];
            for (k, count) in counts.iter_mut().enumerate() {
                let start = at + 20 + 4 * k;
                let raw: [u8; 4] = bytes.get(start..start + 4)?.try_into().ok()?;
                *count = u32::from_be_bytes(raw) as usize;
            }
            Some((version, counts))
        };
        let (version, counts) = header(0)?;
        let [isut, isstd, leap, time, types, chars] = counts;
        let v1_len = time * 5 + types * 6 + chars + leap * 8 + isstd + isut;
        let (at, width, counts) = if version >= b'2' {
            let (_, counts) = header(44 + v1_len)?;
            (44 + v1_len + 44, 8, counts)
        } else {
            (44, 4, counts)
        };
        let [_, _, _, time, types, _] = counts;
        let times_at = at;
        let index_at = times_at + time * width;
        let types_at = index_at + time;
        bytes.get(types_at..types_at + types * 6)?;
        let offset_of = |t: usize| -> Option<(i32, bool)> {
            let start = types_at + t * 6;
            let raw: [u8; 4] = bytes.get(start..start + 4)?.try_into().ok()?;
            Some((i32::from_be_bytes(raw), *bytes.get(start + 4)? != 0))
        };
        let mut transitions = Vec::with_capacity(time);
        for k in 0..time {
            let start = times_at + k * width;
            let when = if width == 8 {
                i64::from_be_bytes(bytes.get(start..start + 8)?.try_into().ok()?)
            } else {
                i64::from(i32::from_be_bytes(
                    bytes.get(start..start + 4)?.try_into().ok()?,
                ))
            };
            let kind = usize::from(*bytes.get(index_at + k)?);
            transitions.push((when, offset_of(kind)?.0));
        }
        // Before the first transition: the first standard-time type (Go's rule).
        let initial_offset_secs = (0..types)
            .filter_map(&offset_of)
            .find(|(_, dst)| !dst)
            .or_else(|| offset_of(0))
            .map_or(0, |(offset, _)| offset);
        Some(Zone {
            transitions,
            initial_offset_secs,
        })
    }

    /// Offset from UTC in seconds at the instant `ns`.
    pub fn offset_secs(&self, ns: i64) -> i32 {
        let secs = ns.div_euclid(1_000_000_000);
        match self.transitions.partition_point(|(when, _)| *when <= secs) {
            0 => self.initial_offset_secs,
            k => self.transitions[k - 1].1,
        }
    }

    pub fn is_utc(&self) -> bool {
        self.transitions.is_empty() && self.initial_offset_secs == 0
    }
}

/// Appends `ns` as RFC3339Nano in `zone` (`Z` when the offset is zero).
pub fn write_rfc3339_nano_in(out: &mut Vec<u8>, ns: i64, zone: &Zone) {
    let offset = zone.offset_secs(ns);
    if offset == 0 {
        write_rfc3339_nano(out, ns);
        return;
    }
    write_rfc3339_nano(out, ns.saturating_add(i64::from(offset) * 1_000_000_000));
    out.pop(); // the `Z`
    let sign = if offset < 0 { '-' } else { '+' };
    let abs = offset.unsigned_abs();
    out.extend_from_slice(format!("{sign}{:02}:{:02}", abs / 3600, (abs / 60) % 60).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(ns: i64) -> String {
        let mut out = Vec::new();
        write_rfc3339_nano(&mut out, ns);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Goal: times print exactly like Go's RFC3339Nano. Method: known
    /// instants, including trimmed fractions and negative times.
    #[test]
    fn rfc3339_nano_matches_go() {
        assert_eq!(format(0), "1970-01-01T00:00:00Z");
        assert_eq!(format(1_795_537_511_000_000_000), "2026-11-24T16:25:11Z");
        assert_eq!(
            format(1_600_000_000_000_000_001),
            "2020-09-13T12:26:40.000000001Z"
        );
        assert_eq!(format(1_600_000_000_120_000_000), "2020-09-13T12:26:40.12Z");
        assert_eq!(format(-1), "1969-12-31T23:59:59.999999999Z");
    }

    /// Goal: TZif zones load and give Go's offsets, winter and summer.
    /// Method: the system's Europe/Oslo (skipped when tzdata is absent).
    #[test]
    fn zones_give_offsets() {
        let Some(oslo) = Zone::load("Europe/Oslo") else {
            return;
        };
        assert_eq!(oslo.offset_secs(1_767_225_600_000_000_000), 3600);
        assert_eq!(oslo.offset_secs(1_782_864_000_000_000_000), 7200);
        let mut out = Vec::new();
        write_rfc3339_nano_in(&mut out, 1_767_225_600_000_002_000, &oslo);
        assert_eq!(
            String::from_utf8(out).unwrap_or_default(),
            "2026-01-01T01:00:00.000002+01:00"
        );
        assert_eq!(Zone::load("../etc/passwd"), None);
        assert_eq!(Zone::load("UTC"), Some(Zone::utc()));
    }

    /// Goal: the WHERE time string forms parse to the right instant.
    /// Method: round trip through the printer plus fixed offsets.
    #[test]
    fn time_strings_parse() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_time("2020-09-13T12:26:40.12Z"),
            Some(1_600_000_000_120_000_000)
        );
        assert_eq!(
            parse_time("2020-09-13 12:26:40"),
            Some(1_600_000_000_000_000_000)
        );
        assert_eq!(
            parse_time("2020-09-13T14:26:40+02:00"),
            Some(1_600_000_000_000_000_000)
        );
        assert_eq!(parse_time("2020-09-13"), Some(1_599_955_200_000_000_000));
        assert_eq!(parse_time("2020-13-13"), None);
        assert_eq!(parse_time("yesterday"), None);
    }
}
