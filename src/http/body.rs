//! Body framing: `Content-Length` and chunked, with the body size cap.
//!
//! Owns: turning the bytes after the head into the request body, and the
//! body size limit (413). Input arrives in whatever pieces the socket gives;
//! the decoders here are incremental state machines: feed them each piece,
//! they append body bytes to the caller's output `Vec` and say how much input
//! they consumed and whether the body is complete. No I/O, no allocation of
//! their own, no decompression (that is `gzip.rs`).
//!
//! Invariants:
//! - The output never grows past `body_bytes_max` body bytes: a chunk whose
//!   declared size would exceed it is refused as [`BodyError::TooLarge`] as
//!   soon as its size digits say so, before any of its data is copied. With an
//!   output `Vec` whose capacity is the limit, the decoders never reallocate.
//! - Every input byte is consumed until the body is done; after that nothing
//!   more is consumed (the rest is the next pipelined request).
//! - Data is copied with one `extend_from_slice` per chunk per call, however
//!   large the chunk.
//! - Errors are final: the connection answers and closes.
//!
//! Chunked grammar (RFC 9112 §7.1): `size-hex [BWS] [";" extensions] CRLF
//! data CRLF` ... `0 [";" extensions] CRLF *(trailer-line CRLF) CRLF`.
//! Extensions and trailer lines are skipped (each bounded); line ends must
//! be CRLF (every client sends CRLF here; being strict leaves no room for
//! framing disagreements).

use super::request::BodyFraming;

/// Why a body is refused. Each maps to one status in `http::response`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyError {
    /// The body (declared or decoded) exceeds `body_bytes_max` → 413.
    TooLarge,
    /// A chunk size missing or with a non-hex byte → 400.
    BadChunkSize,
    /// A chunk size that does not fit in 64 bits → 400.
    ChunkSizeOverflow,
    /// A chunk-size line (size and extensions) longer than
    /// `chunk_line_bytes_max` → 400.
    ChunkLineTooLong,
    /// A control byte inside a chunk extension → 400.
    BadChunkExtension,
    /// A CR not followed by LF, or a bare LF, in a chunk-size or trailer
    /// line → 400.
    BadLineEnd,
    /// Chunk data not followed by CRLF (the size was wrong) → 400.
    MissingChunkEnd,
    /// Trailer section longer than `trailer_bytes_max` → 400.
    TrailersTooLarge,
}

/// Body limits, from `Config`.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimits {
    /// Decoded body bytes → 413 past this.
    pub body_bytes_max: usize,
    /// One chunk-size line without its CRLF (size digits plus extensions).
    pub chunk_line_bytes_max: usize,
    /// The whole trailer section, line ends included, without the final CRLF.
    pub trailer_bytes_max: usize,
}

/// What one call to `decode` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyProgress {
    /// Input bytes used; equal to the input length unless `done`.
    pub consumed: usize,
    /// The body is complete; bytes after `consumed` belong to the next request.
    pub done: bool,
}

/// A body decoder for either framing, so the connection has one code path.
#[derive(Clone, Debug)]
pub enum BodyDecoder {
    Length(LengthDecoder),
    Chunked(ChunkedDecoder),
}

impl BodyDecoder {
    /// Refuses a `Content-Length` over the limit at once (before reading the
    /// body, and before any `100 Continue`). `BodyFraming::None` is an empty
    /// body: a length decoder that is already done.
    pub fn new(framing: BodyFraming, limits: &BodyLimits) -> Result<BodyDecoder, BodyError> {
        match framing {
            BodyFraming::None => Ok(BodyDecoder::Length(LengthDecoder::new(
                0,
                limits.body_bytes_max,
            )?)),
            BodyFraming::ContentLength(length) => Ok(BodyDecoder::Length(LengthDecoder::new(
                length,
                limits.body_bytes_max,
            )?)),
            BodyFraming::Chunked => Ok(BodyDecoder::Chunked(ChunkedDecoder::new(*limits))),
        }
    }

    /// Appends the body bytes in `input` to `out`.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<BodyProgress, BodyError> {
        match self {
            BodyDecoder::Length(decoder) => Ok(decoder.decode(input, out)),
            BodyDecoder::Chunked(decoder) => decoder.decode(input, out),
        }
    }

    pub fn is_done(&self) -> bool {
        match self {
            BodyDecoder::Length(decoder) => decoder.is_done(),
            BodyDecoder::Chunked(decoder) => decoder.is_done(),
        }
    }
}

/// A `Content-Length` body: the next `remaining` bytes.
#[derive(Clone, Debug)]
pub struct LengthDecoder {
    remaining: u64,
}

impl LengthDecoder {
    /// `TooLarge` when the declared length is over the limit: the caller
    /// answers 413 without reading (or asking for) the body.
    pub fn new(content_length: u64, body_bytes_max: usize) -> Result<LengthDecoder, BodyError> {
        if content_length > body_bytes_max as u64 {
            return Err(BodyError::TooLarge);
        }
        Ok(LengthDecoder {
            remaining: content_length,
        })
    }

    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> BodyProgress {
        let take = input
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        out.extend_from_slice(&input[..take]);
        self.remaining -= take as u64;
        BodyProgress {
            consumed: take,
            done: self.remaining == 0,
        }
    }

    /// Body bytes still expected.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    pub fn is_done(&self) -> bool {
        self.remaining == 0
    }
}

/// Where the chunked decoder is in the grammar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    /// Start of a chunk-size line: a hex digit must come.
    SizeStart,
    /// In the size digits.
    Size,
    /// Whitespace after the size (BWS before `;`).
    SizeSpace,
    /// In the extensions, until CR.
    Extension,
    /// Saw the CR of the size line.
    SizeLf,
    /// Copying chunk data; `chunk_remaining` bytes to go.
    Data,
    /// After the data: CR expected.
    DataCr,
    /// After the data's CR: LF expected.
    DataLf,
    /// Start of a trailer line or of the final CRLF.
    TrailerStart,
    /// Inside a trailer line, until CR.
    Trailer,
    /// Saw the CR of a trailer line.
    TrailerLf,
    /// Saw the CR of the final empty line.
    EndLf,
    /// The body is complete.
    Done,
}

/// Incremental decoder of a `Transfer-Encoding: chunked` body.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    limits: BodyLimits,
    state: ChunkState,
    /// Size of the current chunk while reading its digits, then the data
    /// bytes still to copy.
    chunk_remaining: u64,
    /// Decoded body bytes so far (≤ `limits.body_bytes_max`).
    body_bytes: u64,
    /// Bytes of the current chunk-size line so far (bounded: extension bombs).
    line_bytes: usize,
    /// Bytes of the trailer section so far (bounded).
    trailer_bytes: usize,
}

impl ChunkedDecoder {
    pub fn new(limits: BodyLimits) -> ChunkedDecoder {
        ChunkedDecoder {
            limits,
            state: ChunkState::SizeStart,
            chunk_remaining: 0,
            body_bytes: 0,
            line_bytes: 0,
            trailer_bytes: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decoded body bytes so far.
    pub fn body_bytes(&self) -> u64 {
        self.body_bytes
    }

    /// Feeds the next piece of input; appends decoded data to `out`.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<BodyProgress, BodyError> {
        let mut pos = 0;
        while pos < input.len() {
            if self.state == ChunkState::Done {
                break;
            }
            if self.state == ChunkState::Data {
                let available = input.len() - pos;
                let take = usize::try_from(self.chunk_remaining)
                    .unwrap_or(usize::MAX)
                    .min(available);
                out.extend_from_slice(&input[pos..pos + take]);
                pos += take;
                self.chunk_remaining -= take as u64;
                if self.chunk_remaining == 0 {
                    self.state = ChunkState::DataCr;
                }
                continue;
            }
            self.step(input[pos])?;
            pos += 1;
        }
        Ok(BodyProgress {
            consumed: pos,
            done: self.state == ChunkState::Done,
        })
    }

    /// One byte outside chunk data.
    fn step(&mut self, b: u8) -> Result<(), BodyError> {
        use ChunkState::*;
        self.state = match self.state {
            SizeStart => {
                self.line_bytes = 0;
                self.chunk_remaining = 0;
                self.size_digit(b).ok_or(BodyError::BadChunkSize)??;
                Size
            }
            Size => match self.size_digit(b) {
                Some(result) => {
                    result?;
                    Size
                }
                None => self.after_size(b)?,
            },
            SizeSpace => self.after_size(b)?,
            Extension => match b {
                b'\r' => SizeLf,
                b'\n' => return Err(BodyError::BadLineEnd),
                b'\t' => {
                    self.count_line_byte()?;
                    Extension
                }
                0..=0x1F | 0x7F => return Err(BodyError::BadChunkExtension),
                _ => {
                    self.count_line_byte()?;
                    Extension
                }
            },
            SizeLf => {
                if b != b'\n' {
                    return Err(BodyError::BadLineEnd);
                }
                // The size is final (checked against the room left).
                self.body_bytes += self.chunk_remaining;
                if self.chunk_remaining == 0 {
                    TrailerStart
                } else {
                    Data
                }
            }
            Data => {
                // `decode` copies data in bulk; one byte here would be a bug.
                unreachable!("chunk data is copied by decode, not stepped");
            }
            DataCr if b == b'\r' => DataLf,
            DataLf if b == b'\n' => SizeStart,
            DataCr | DataLf => return Err(BodyError::MissingChunkEnd),
            TrailerStart => match b {
                b'\r' => EndLf,
                b'\n' => return Err(BodyError::BadLineEnd),
                _ => {
                    self.count_trailer_byte()?;
                    Trailer
                }
            },
            Trailer => {
                self.count_trailer_byte()?;
                match b {
                    b'\r' => TrailerLf,
                    b'\n' => return Err(BodyError::BadLineEnd),
                    _ => Trailer,
                }
            }
            TrailerLf => {
                self.count_trailer_byte()?;
                if b != b'\n' {
                    return Err(BodyError::BadLineEnd);
                }
                TrailerStart
            }
            EndLf => {
                if b != b'\n' {
                    return Err(BodyError::BadLineEnd);
                }
                Done
            }
            Done => Done,
        };
        Ok(())
    }

    /// `None` if `b` is not a hex digit; otherwise adds it to the size,
    /// refusing overflow and a size that would take the body past its limit.
    fn size_digit(&mut self, b: u8) -> Option<Result<(), BodyError>> {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        Some(self.add_size_digit(digit))
    }

    fn add_size_digit(&mut self, digit: u8) -> Result<(), BodyError> {
        self.count_line_byte()?;
        if self.chunk_remaining > u64::MAX >> 4 {
            return Err(BodyError::ChunkSizeOverflow);
        }
        self.chunk_remaining = (self.chunk_remaining << 4) | u64::from(digit);
        // The size only grows with more digits, so refusing now is final.
        let room = (self.limits.body_bytes_max as u64).saturating_sub(self.body_bytes);
        if self.chunk_remaining > room {
            return Err(BodyError::TooLarge);
        }
        Ok(())
    }

    /// A byte after the size digits: BWS, `;`, or the CR.
    fn after_size(&mut self, b: u8) -> Result<ChunkState, BodyError> {
        let next = match b {
            b' ' | b'\t' => ChunkState::SizeSpace,
            b';' => ChunkState::Extension,
            b'\r' => return Ok(ChunkState::SizeLf),
            b'\n' => return Err(BodyError::BadLineEnd),
            _ => return Err(BodyError::BadChunkSize),
        };
        self.count_line_byte()?;
        Ok(next)
    }

    fn count_line_byte(&mut self) -> Result<(), BodyError> {
        self.line_bytes += 1;
        if self.line_bytes > self.limits.chunk_line_bytes_max {
            return Err(BodyError::ChunkLineTooLong);
        }
        Ok(())
    }

    fn count_trailer_byte(&mut self) -> Result<(), BodyError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > self.limits.trailer_bytes_max {
            return Err(BodyError::TrailersTooLarge);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: BodyLimits = BodyLimits {
        body_bytes_max: 64,
        chunk_line_bytes_max: 16,
        trailer_bytes_max: 32,
    };

    /// Feeds `pieces` in order to a fresh decoder; returns the body and the
    /// total consumed, checking that everything before `done` is consumed.
    fn feed(pieces: &[&[u8]], limits: BodyLimits) -> Result<(Vec<u8>, usize, bool), BodyError> {
        let mut decoder = ChunkedDecoder::new(limits);
        let mut out = Vec::new();
        let mut consumed = 0;
        for piece in pieces {
            let progress = decoder.decode(piece, &mut out)?;
            assert!(
                out.len() <= limits.body_bytes_max,
                "output within the limit"
            );
            assert_eq!(out.len() as u64, decoder.body_bytes().min(out.len() as u64));
            consumed += progress.consumed;
            if !progress.done {
                assert_eq!(
                    progress.consumed,
                    piece.len(),
                    "all input consumed until done"
                );
            }
            assert_eq!(progress.done, decoder.is_done());
        }
        Ok((out, consumed, decoder.is_done()))
    }

    /// Checks a case whole, split into two pieces at every point, and one
    /// byte at a time: all give the same result.
    fn check(
        name: &str,
        input: &[u8],
        limits: BodyLimits,
        expected: Result<(&[u8], usize), BodyError>,
    ) {
        let as_result = |r: Result<(Vec<u8>, usize, bool), BodyError>| match r {
            Ok((body, consumed, true)) => Ok((body, consumed)),
            Ok((_, _, false)) => panic!("{name}: not done"),
            Err(e) => Err(e),
        };
        let expected = expected.map(|(body, consumed)| (body.to_vec(), consumed));
        assert_eq!(as_result(feed(&[input], limits)), expected, "{name}: whole");
        for cut in 0..=input.len() {
            let (a, b) = input.split_at(cut);
            assert_eq!(
                as_result(feed(&[a, b], limits)),
                expected,
                "{name}: split at {cut}"
            );
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(
            as_result(feed(&bytes, limits)),
            expected,
            "{name}: byte by byte"
        );
    }

    /// Goal: accepted chunked bodies decode to the right bytes and stop
    /// exactly at their end. Method: table, each fed whole, split at every
    /// byte, and one byte at a time, with a pipelined request after it.
    #[test]
    fn chunked_accepted() {
        let next = b"GET / HTTP/1.1\r\n\r\n";
        let cases: &[(&str, &[u8], &[u8])] = &[
            ("empty body", b"0\r\n\r\n", b""),
            ("one chunk", b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
            ("two chunks", b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", b"abcde"),
            ("hex sizes", b"a\r\n0123456789\r\nB\r\nabcdefghijk\r\n0\r\n\r\n", b"0123456789abcdefghijk"),
            ("leading zeros", b"0005\r\nhello\r\n000\r\n\r\n", b"hello"),
            ("extensions", b"5;n=value;flag\r\nhello\r\n0;last=\"q\tx\"\r\n\r\n", b"hello"),
            ("space before extension", b"5 \t;x\r\nhello\r\n0 \r\n\r\n", b"hello"),
            ("trailers", b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\nY: z\r\n\r\n", b"hello"),
            ("CRLF inside data", b"4\r\n\r\n\r\n\r\n0\r\n\r\n", b"\r\n\r\n"),
            ("exactly the limit", b"40\r\n0123456789012345678901234567890123456789012345678901234567890123\r\n0\r\n\r\n",
                b"0123456789012345678901234567890123456789012345678901234567890123"),
        ];
        for (name, input, body) in cases {
            let mut with_next = input.to_vec();
            with_next.extend_from_slice(next);
            check(name, &with_next, LIMITS, Ok((body, input.len())));
        }
    }

    /// Goal: every malformed or oversized chunked body gives its precise
    /// error, whatever the split. Method: table, each fed whole, split at
    /// every byte, and one byte at a time.
    #[test]
    fn chunked_refused() {
        use BodyError::*;
        let cases: &[(&str, &[u8], BodyError)] = &[
            ("no size", b"\r\nhello\r\n0\r\n\r\n", BadChunkSize),
            ("non-hex size", b"5g\r\nhello\r\n0\r\n\r\n", BadChunkSize),
            ("sign", b"+5\r\nhello\r\n0\r\n\r\n", BadChunkSize),
            ("leading space", b" 5\r\nhello\r\n0\r\n\r\n", BadChunkSize),
            ("0x prefix", b"0x5\r\nhello\r\n0\r\n\r\n", BadChunkSize),
            ("space inside size", b"1 0\r\n", BadChunkSize),
            ("bare LF after size", b"5\nhello\r\n0\r\n\r\n", BadLineEnd),
            ("CR without LF", b"5\rhello\r\n0\r\n\r\n", BadLineEnd),
            (
                "bare LF in extension",
                b"5;a\nhello\r\n0\r\n\r\n",
                BadLineEnd,
            ),
            (
                "control in extension",
                b"5;a\x01\r\nhello\r\n0\r\n\r\n",
                BadChunkExtension,
            ),
            ("data too long", b"3\r\nhello\r\n0\r\n\r\n", MissingChunkEnd),
            (
                "data CR without LF",
                b"5\r\nhello\rX0\r\n\r\n",
                MissingChunkEnd,
            ),
            (
                "size line too long",
                b"5;aaaaaaaaaaaaaaaa\r\nhello\r\n0\r\n\r\n",
                ChunkLineTooLong,
            ),
            (
                "many leading zeros",
                b"00000000000000005\r\nhello\r\n0\r\n\r\n",
                ChunkLineTooLong,
            ),
            ("chunk over the limit", b"41\r\n", TooLarge),
            (
                "sum over the limit",
                b"20\r\n01234567890123456789012345678901\r\n21\r\n",
                TooLarge,
            ),
            ("huge size", b"ffffffffffffffffff\r\n", TooLarge),
            ("bare LF trailer", b"0\r\nX: y\n\r\n", BadLineEnd),
            ("trailer CR without LF", b"0\r\nX: y\rZ\r\n\r\n", BadLineEnd),
            ("final CR without LF", b"0\r\n\rX", BadLineEnd),
            ("bare LF final line", b"0\r\n\n", BadLineEnd),
            (
                "trailers too large",
                b"0\r\nX: 0123456789012345678901234567\r\n\r\n",
                TrailersTooLarge,
            ),
        ];
        for (name, input, error) in cases {
            check(name, input, LIMITS, Err(*error));
        }
        // Overflow is reachable only with a limit near u64::MAX.
        let unlimited = BodyLimits {
            body_bytes_max: usize::MAX,
            chunk_line_bytes_max: 64,
            ..LIMITS
        };
        check(
            "overflow",
            b"11111111111111111\r\n",
            unlimited,
            Err(ChunkSizeOverflow),
        );
    }

    /// Goal: an oversized chunk is refused before any of its data is copied,
    /// and an output with capacity = limit never reallocates. Method: feed a
    /// valid chunk then an oversized one; compare capacity and contents.
    #[test]
    fn oversize_never_grows_output() {
        let mut decoder = ChunkedDecoder::new(LIMITS);
        let mut out = Vec::with_capacity(LIMITS.body_bytes_max);
        let capacity = out.capacity();
        let first = decoder.decode(b"3c\r\n", &mut out).map(|p| p.done);
        assert_eq!(first, Ok(false));
        let data = [b'x'; 60];
        assert_eq!(decoder.decode(&data, &mut out).map(|p| p.consumed), Ok(60));
        assert_eq!(
            decoder.decode(b"\r\n5\r\nhello", &mut out),
            Err(BodyError::TooLarge)
        );
        assert_eq!(out.len(), 60);
        assert_eq!(out.capacity(), capacity);
    }

    /// Goal: Content-Length bodies stop at their length, refuse an oversize
    /// length up front, and `None` framing is an empty, finished body.
    /// Method: direct calls through `BodyDecoder`.
    #[test]
    fn length_bodies() {
        let limits = LIMITS;
        assert_eq!(
            BodyDecoder::new(BodyFraming::ContentLength(65), &limits).err(),
            Some(BodyError::TooLarge)
        );
        assert_eq!(
            BodyDecoder::new(BodyFraming::ContentLength(u64::MAX), &limits).err(),
            Some(BodyError::TooLarge)
        );
        let mut none =
            BodyDecoder::new(BodyFraming::None, &limits).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(none.is_done());
        let mut out = Vec::new();
        assert_eq!(
            none.decode(b"GET", &mut out),
            Ok(BodyProgress {
                consumed: 0,
                done: true
            })
        );

        let mut decoder = BodyDecoder::new(BodyFraming::ContentLength(5), &limits)
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            decoder.decode(b"he", &mut out),
            Ok(BodyProgress {
                consumed: 2,
                done: false
            })
        );
        assert_eq!(
            decoder.decode(b"lloGET", &mut out),
            Ok(BodyProgress {
                consumed: 3,
                done: true
            })
        );
        assert_eq!(out, b"hello");

        let mut chunked =
            BodyDecoder::new(BodyFraming::Chunked, &limits).unwrap_or_else(|e| panic!("{e:?}"));
        out.clear();
        assert_eq!(
            chunked.decode(b"2\r\nhi\r\n0\r\n\r\n", &mut out),
            Ok(BodyProgress {
                consumed: 12,
                done: true
            })
        );
        assert!(chunked.is_done());
        assert_eq!(out, b"hi");
    }
}
