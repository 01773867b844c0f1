//! Fuzz target: gunzip with its size limit (`src/gzip.rs`).
//!
//! Invariants checked:
//! - arbitrary bytes never panic; a success never exceeds the limit, and
//!   the buffer (the limit) never grows;
//! - round trip: data compressed as one or more gzip members (libdeflate,
//!   at a fuzz-chosen level) decodes to exactly that data when it fits the
//!   limit, and is refused as `TooLarge` when it does not; the same data
//!   with bytes appended after the last member is refused.
//!
//! Input: byte 0 picks the limit, byte 1 the mode (even: decompress the
//! rest as is; odd: compress the rest first, split into members at every
//! `0xff` byte, at level `byte 1 / 2 % 13`).

#![no_main]

use libdeflater::{CompressionLvl, Compressor};
use libfuzzer_sys::fuzz_target;
use ringest::gzip::{Gunzip, GzipError};

const LIMITS: [usize; 5] = [0, 1, 64, 4096, 1 << 16];

fn gzip_member(compressor: &mut Compressor, data: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + compressor.gzip_compress_bound(data.len()), 0);
    let n = compressor
        .gzip_compress(data, &mut out[start..])
        .expect("bound is enough");
    out.truncate(start + n);
}

fuzz_target!(|data: &[u8]| {
    let [limit_selector, mode, rest @ ..] = data else {
        return;
    };
    let limit = LIMITS[usize::from(*limit_selector) % LIMITS.len()];
    let mut gunzip = Gunzip::new(limit);

    if mode & 1 == 0 {
        match gunzip.decompress(rest) {
            Ok(out) => assert!(out.len() <= limit),
            Err(GzipError::TooLarge { limit: reported }) => assert_eq!(reported, limit),
            Err(error) => {
                let _ = error.to_string();
            }
        }
        assert_eq!(gunzip.limit(), limit, "the buffer never grows");
        return;
    }

    let level = CompressionLvl::new(i32::from(mode / 2 % 13)).expect("levels 0..=12");
    let mut compressor = Compressor::new(level);
    let mut compressed = Vec::new();
    for member in rest.split(|&b| b == 0xff) {
        gzip_member(&mut compressor, member, &mut compressed);
    }
    let expected: Vec<u8> = rest.iter().copied().filter(|&b| b != 0xff).collect();
    match gunzip.decompress(&compressed) {
        Ok(out) => {
            assert!(expected.len() <= limit, "over the limit yet accepted");
            assert_eq!(out, &expected[..], "round trip");
        }
        Err(GzipError::TooLarge { .. }) => {
            assert!(expected.len() > limit, "fits the limit yet refused");
        }
        Err(error) => panic!("valid gzip refused: {error}"),
    }
    if expected.len() <= limit {
        compressed.push(0);
        assert!(matches!(
            gunzip.decompress(&compressed),
            Err(GzipError::TrailingGarbage { .. } | GzipError::Corrupt { .. })
        ));
    }
    assert_eq!(gunzip.limit(), limit, "the buffer never grows");
});
