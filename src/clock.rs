//! The only source of time. Everything else asks here, so tests and
//! lint rules have one place to look (`Instant::now` and `SystemTime::now`
//! are banned elsewhere by `clippy.toml`).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Wall-clock nanoseconds since the Unix epoch (the default point time).
pub fn now_ns() -> i64 {
    #[allow(clippy::disallowed_methods)]
    let now = SystemTime::now();
    match now.duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_nanos()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

/// Monotonic instant, for timeouts and latency.
pub fn monotonic() -> Instant {
    #[allow(clippy::disallowed_methods)]
    Instant::now()
}

/// Microseconds elapsed since `start`, saturating.
pub fn elapsed_us(start: Instant) -> u64 {
    u64::try_from(monotonic().saturating_duration_since(start).as_micros()).unwrap_or(u64::MAX)
}

/// `ns` since the epoch as RFC 3339 with seconds precision, UTC
/// (`2026-11-24T17:58:39Z`), for `/ready`.
pub fn rfc3339_seconds(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// `ns` since the epoch as RFC 3339 UTC with all nine fraction digits
/// (`2026-11-24T17:58:39.000000001Z`), for `ringest wal inspect`: fixed
/// width, so ranges line up and no digit is ever dropped.
pub fn rfc3339_nanos(ns: i64) -> String {
    let seconds = rfc3339_seconds(ns);
    let whole = seconds.strip_suffix('Z').unwrap_or(&seconds);
    format!("{whole}.{:09}Z", ns.rem_euclid(1_000_000_000))
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
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

/// A duration as Go prints it (`1h2m3.5s`), for `/ready`'s `up`.
pub fn go_duration(duration: Duration) -> String {
    let total_ms = duration.as_millis();
    let hours = total_ms / 3_600_000;
    let minutes = (total_ms / 60_000) % 60;
    let seconds = (total_ms % 60_000) as f64 / 1000.0;
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&format!("{seconds}s"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: RFC 3339 rendering is right on known dates, including before
    /// 1970 and on a leap day. Method: compare with hand-checked strings.
    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339_seconds(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339_seconds(1_709_164_800_000_000_000),
            "2024-02-29T00:00:00Z"
        );
        assert_eq!(rfc3339_seconds(-1_000_000_000), "1969-12-31T23:59:59Z");
        assert_eq!(
            rfc3339_seconds(1_795_543_119_000_000_000),
            "2026-11-24T17:58:39Z"
        );
    }

    /// Goal: the nanosecond form keeps all nine digits, also before 1970
    /// and at both ends of the i64 range. Method: hand-checked strings.
    #[test]
    fn rfc3339_nanos_known_instants() {
        assert_eq!(rfc3339_nanos(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339_nanos(1_795_543_119_000_000_001),
            "2026-11-24T17:58:39.000000001Z"
        );
        assert_eq!(rfc3339_nanos(-1), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(rfc3339_nanos(i64::MAX), "2262-04-11T23:47:16.854775807Z");
        assert_eq!(rfc3339_nanos(i64::MIN), "1677-09-21T00:12:43.145224192Z");
    }

    /// Goal: durations print like Go's. Method: known values.
    #[test]
    fn go_duration_format() {
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(3723)), "1h2m3s");
        assert_eq!(go_duration(Duration::from_secs(60)), "1m0s");
    }
}
