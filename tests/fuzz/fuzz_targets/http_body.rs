//! Fuzz target: the chunked body decoder (`src/http/body.rs`) against a
//! slow obvious decoder of the same grammar, and against itself fed in
//! pieces.
//!
//! Invariants checked:
//! - fed at once or split into any pieces, the decoder gives the same
//!   result, the same body and (unless it fails) the same consumed count;
//! - the body never exceeds `body_bytes_max` and the output `Vec` never
//!   reallocates;
//! - all input is consumed until the body is done;
//! - it agrees with [`reference`]: a complete valid body decodes to the
//!   same bytes and length; an invalid one is refused; input that is still
//!   undecided is either waited for or refused early (a limit that is
//!   already exceeded, a byte that can never be valid).
//!
//! Input: byte 0 picks the limits, byte 1 seeds the split points, the rest
//! is the chunked body.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringest::http::body::{BodyLimits, ChunkedDecoder};

const BODY_BYTES_MAX: [usize; 4] = [0, 7, 64, 4096];
const CHUNK_LINE_BYTES_MAX: [usize; 4] = [1, 3, 16, 4096];
const TRAILER_BYTES_MAX: [usize; 4] = [0, 5, 32, 16384];

/// What the reference decoder decides about a whole input.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// A complete body of `body` using `consumed` input bytes.
    Done { body: Vec<u8>, consumed: usize },
    /// Not a valid chunked body, whatever follows.
    Invalid,
    /// Valid so far; more input is needed to decide.
    NeedMore,
}

/// The chunked grammar of `body.rs`, read line by line:
/// `hex+ [ \t]* [";" ext] CRLF data CRLF ... "0" ... CRLF (trailer CRLF)* CRLF`,
/// where ext bytes are visible ASCII, space, tab or >= 0x80, a trailer line
/// is one or more bytes other than CR and LF, and every line end is CRLF.
fn reference(input: &[u8], limits: &BodyLimits) -> Verdict {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        // Chunk-size line.
        let Some(cr) = input[pos..].iter().position(|&b| b == b'\r') else {
            return Verdict::NeedMore;
        };
        let line = &input[pos..pos + cr];
        let Some(size) = size_line(line) else {
            return Verdict::Invalid;
        };
        if line.len() > limits.chunk_line_bytes_max {
            return Verdict::Invalid;
        }
        match input.get(pos + cr + 1) {
            None => return Verdict::NeedMore,
            Some(b'\n') => {}
            Some(_) => return Verdict::Invalid,
        }
        pos += cr + 2;
        if size > (limits.body_bytes_max - body.len()) as u64 {
            return Verdict::Invalid;
        }
        let size = size as usize;
        if size == 0 {
            break;
        }
        // Data, then CRLF.
        if input.len() < pos + size {
            return Verdict::NeedMore;
        }
        body.extend_from_slice(&input[pos..pos + size]);
        pos += size;
        for expected in [b'\r', b'\n'] {
            match input.get(pos) {
                None => return Verdict::NeedMore,
                Some(&b) if b == expected => pos += 1,
                Some(_) => return Verdict::Invalid,
            }
        }
    }
    // Trailer lines, then the empty line.
    let mut trailer_bytes = 0;
    loop {
        let Some(cr) = input[pos..].iter().position(|&b| b == b'\r') else {
            return Verdict::NeedMore;
        };
        let line = &input[pos..pos + cr];
        if line.contains(&b'\n') {
            return Verdict::Invalid;
        }
        match input.get(pos + cr + 1) {
            None => return Verdict::NeedMore,
            Some(b'\n') => {}
            Some(_) => return Verdict::Invalid,
        }
        pos += cr + 2;
        if line.is_empty() {
            return Verdict::Done {
                body,
                consumed: pos,
            };
        }
        trailer_bytes += line.len() + 2;
        if trailer_bytes > limits.trailer_bytes_max {
            return Verdict::Invalid;
        }
    }
}

/// The size of a chunk-size line without its CRLF; `None` if invalid.
fn size_line(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return None;
    }
    let mut size = 0u64;
    for &b in &line[..digits] {
        let digit = (b as char).to_digit(16)?;
        size = size.checked_mul(16)?.checked_add(u64::from(digit))?;
    }
    let rest = &line[digits..];
    let spaces = rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    let rest = &rest[spaces..];
    match rest.split_first() {
        None => Some(size),
        Some((b';', extension)) => extension
            .iter()
            .all(|&b| b == b'\t' || !(b < 0x20 || b == 0x7f))
            .then_some(size),
        Some(_) => None,
    }
}

/// Feeds `pieces` of `input` in order; returns (result, body, consumed).
fn decode_split(
    input: &[u8],
    cuts: &[usize],
    limits: BodyLimits,
) -> (Result<bool, ringest::http::body::BodyError>, Vec<u8>, usize) {
    let mut decoder = ChunkedDecoder::new(limits);
    let mut body = Vec::with_capacity(limits.body_bytes_max);
    let mut consumed = 0;
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&input.len())) {
        let piece = &input[start..end];
        start = end;
        match decoder.decode(piece, &mut body) {
            Ok(progress) => {
                assert!(progress.consumed <= piece.len());
                assert!(
                    progress.done || progress.consumed == piece.len(),
                    "all input consumed until done"
                );
                assert_eq!(progress.done, decoder.is_done());
                consumed += progress.consumed;
                if progress.done {
                    break;
                }
            }
            // Errors are final (the connection answers and closes): the
            // consumed count no longer matters.
            Err(error) => return (Err(error), body, 0),
        }
        assert!(body.len() <= limits.body_bytes_max, "body within the limit");
    }
    assert_eq!(body.capacity(), limits.body_bytes_max, "no reallocation");
    // `body_bytes` counts a chunk's declared size once its size line is
    // read, before its data arrives.
    assert!(body.len() as u64 <= decoder.body_bytes());
    assert!(decoder.body_bytes() <= limits.body_bytes_max as u64);
    if decoder.is_done() {
        assert_eq!(decoder.body_bytes(), body.len() as u64);
    }
    (Ok(decoder.is_done()), body, consumed)
}

fuzz_target!(|data: &[u8]| {
    let [selector, seed, input @ ..] = data else {
        return;
    };
    let limits = BodyLimits {
        body_bytes_max: BODY_BYTES_MAX[usize::from(selector & 3)],
        chunk_line_bytes_max: CHUNK_LINE_BYTES_MAX[usize::from((selector >> 2) & 3)],
        trailer_bytes_max: TRAILER_BYTES_MAX[usize::from((selector >> 4) & 3)],
    };

    let whole = decode_split(input, &[], limits);
    // Split points from a small xorshift seeded by `seed`.
    let mut state = u32::from(*seed) | 0x100;
    let mut cuts = Vec::new();
    let mut at = 0;
    while !input.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        at += 1 + (state as usize % 8);
        if at >= input.len() {
            break;
        }
        cuts.push(at);
    }
    let split = decode_split(input, &cuts, limits);
    assert_eq!(
        whole, split,
        "same outcome fed whole and in pieces {cuts:?}"
    );

    let (result, body, consumed) = whole;
    match (reference(input, &limits), result) {
        (
            Verdict::Done {
                body: expected,
                consumed: used,
            },
            Ok(true),
        ) => {
            assert_eq!(body, expected, "body");
            assert_eq!(consumed, used, "consumed");
        }
        (Verdict::Invalid, Err(_)) | (Verdict::NeedMore, Ok(false) | Err(_)) => {}
        (verdict, result) => panic!("reference {verdict:?}, decoder {result:?}"),
    }
});
