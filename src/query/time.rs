//! Time text: RFC3339 printing like Go's `time.RFC3339Nano` and parsing of
//! the time strings InfluxQL accepts in WHERE clauses. Pure functions.

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

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
