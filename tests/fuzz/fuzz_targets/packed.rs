//! Fuzz target: the reader of packed WAL records (`src/packed.rs`), as
//! replay uses it: one unpacker given the records of one segment in order.
//!
//! Invariants checked, for any bytes:
//! - `Unpacker::unpack` returns rows or an error, never panics, and its
//!   dictionary stays within its bounds;
//! - the rows it returns are a valid sub-batch (`BatchReader::new`
//!   accepts them) with as many rows as were kept, and every row's time
//!   lies in the time range it reports.
//! - a sub-batch packed by `Packer` (the input's first record, read as
//!   line protocol) unpacks to the same rows.
//!
//! Input: records separated by `REC!`; byte 0 of each record picks the
//! segment it is read as part of (a change starts a new dictionary).

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringest::batch::{BatchEncoder, BatchReader};
use ringest::line_protocol::{Lines, ParseOptions, Point, Precision};
use ringest::packed::{Packer, Unpacker};

const SEPARATOR: &[u8] = b"REC!";

fn records(mut rest: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some(at) = rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
        out.push(&rest[..at]);
        rest = &rest[at + SEPARATOR.len()..];
    }
    out.push(rest);
    out
}

/// The rows of a valid sub-batch as comparable text.
fn rows_of(bytes: &[u8]) -> Vec<String> {
    let reader = BatchReader::new(bytes).expect("valid sub-batch");
    reader
        .rows()
        .map(|row| {
            format!(
                "{} {} {} {:?} {:?}",
                row.table,
                row.series_hash,
                row.time_ns,
                row.tags().collect::<Vec<_>>(),
                row.fields().collect::<Vec<_>>()
            )
        })
        .collect()
}

/// Packs the lines of `text` (those that parse) and unpacks them again.
fn round_trip(text: &str) {
    let mut lines = Lines::new(text, ParseOptions::new(Precision::Nanoseconds, 0));
    let mut encoder = BatchEncoder::new("db");
    let mut point = Point::default();
    while let Some(parsed) = lines.next_into(&mut point) {
        if parsed.is_ok() {
            encoder.push(&point);
        }
    }
    if encoder.is_empty() {
        return;
    }
    let batch = encoder.take("db");
    let mut packer = Packer::new();
    let packed = packer
        .pack(0, &batch.reader(), batch.len())
        .map(<[u8]>::to_vec);
    packer.settle(true);
    let Some(packed) = packed else {
        return;
    };
    let unpacked = Unpacker::new()
        .unpack((1, "0", 0), &packed, |_| true)
        .expect("what the packer wrote unpacks");
    let kept = unpacked.kept.expect("rows");
    assert_eq!(rows_of(&kept), rows_of(batch.as_bytes()));
}

fuzz_target!(|data: &[u8]| {
    let records = records(data);
    if let Ok(text) = std::str::from_utf8(records[0]) {
        round_trip(text);
    }
    let mut unpacker = Unpacker::new();
    for (i, record) in records.iter().enumerate() {
        let Some((&segment, payload)) = record.split_first() else {
            continue;
        };
        let keep_every_other = i % 2 == 1;
        let Ok(unpacked) = unpacker.unpack((1, "0", u64::from(segment % 4)), payload, |hash| {
            !keep_every_other || hash % 2 == 0
        }) else {
            continue;
        };
        if let Some(kept) = unpacked.kept {
            let reader = BatchReader::new(&kept).expect("unpacked rows are a valid sub-batch");
            assert!(reader.row_count() <= unpacked.rows);
            let (low, high) = unpacked.time_range.expect("rows have a time range");
            for row in reader.rows() {
                assert!((low..=high).contains(&row.time_ns));
            }
        }
    }
});
