//! Fuzz target: the line-protocol parser never panics, every line number
//! it reports lies inside the body, and it agrees with InfluxDB 3's parser
//! (the `influxdb-line-protocol` crate) on accept/reject and on every value,
//! except for the documented differences (`ringest::line_protocol::Difference`).
//!
//! The comparison is `tests/common/line_protocol_oracle.rs`, the same code
//! `tests/line_protocol_differential.rs` runs under proptest. It runs with
//! default limits and nanosecond precision on bodies without `\r` (the
//! oracle rejects every CRLF line, `Difference::CrLf`).
//!
//! Also: parsing with the series-key cache (`SeriesKeys`, kept across
//! inputs) gives exactly the outcomes of a parse without it.
//!
//! Input: first byte picks the precision (and, with its top bit, small
//! limits for the no-panic checks), the rest is the body (skipped unless
//! valid UTF-8, as the write path checks UTF-8 before parsing).

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringest::line_protocol::{Lines, ParseOptions, Point, Precision, SeriesKeys};

#[path = "../../common/line_protocol_oracle.rs"]
mod line_protocol_oracle;

const PRECISIONS: [Precision; 6] = [
    Precision::Nanoseconds,
    Precision::Microseconds,
    Precision::Milliseconds,
    Precision::Seconds,
    Precision::Minutes,
    Precision::Hours,
];

thread_local! {
    static KEYS: std::cell::RefCell<SeriesKeys> = std::cell::RefCell::new(SeriesKeys::with_slots(8));
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(body) = std::str::from_utf8(rest) else {
        return;
    };
    let precision = PRECISIONS[usize::from(selector) % PRECISIONS.len()];
    let mut options = ParseOptions::new(precision, 0);
    // Small limits so the limit paths are reached too.
    if selector & 0x80 != 0 {
        options.name_bytes_max = 8;
        options.string_bytes_max = 8;
        options.tags_per_line_max = 3;
        options.fields_per_line_max = 3;
    }
    let physical_lines = body.bytes().filter(|&b| b == b'\n').count() + 1;
    // The series-key cache changes no outcome: each body is parsed twice
    // with one small cache (kept across inputs: sections of earlier
    // inputs meet later ones) against a parse without.
    let expected = line_protocol_oracle::outcomes(Lines::new(body, options.clone()));
    KEYS.with(|keys| {
        let mut keys = keys.borrow_mut();
        for pass in 0..2 {
            let with_keys =
                line_protocol_oracle::outcomes(Lines::with_keys(body, options.clone(), &mut keys));
            assert_eq!(with_keys, expected, "pass {pass} with the series-key cache");
        }
    });
    let mut lines = Lines::new(body, options);
    let mut point = Point::default();
    let mut previous = 0;
    while let Some(result) = lines.next_into(&mut point) {
        let line_number = match result {
            Ok(()) => {
                assert!(point.tags.windows(2).all(|w| w[0].0 < w[1].0));
                point.line_number
            }
            Err(error) => {
                assert!(error.column >= 1);
                let _ = error.to_string();
                error.line_number
            }
        };
        assert!(line_number as usize >= 1 && line_number as usize <= physical_lines);
        assert!(line_number > previous);
        previous = line_number;
    }

    if !body.contains('\r') {
        if let Err(disagreement) = line_protocol_oracle::compare(body) {
            panic!("{disagreement}");
        }
    }
});
