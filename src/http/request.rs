//! Request line and headers over borrowed bytes.
//!
//! Owns: the request-head grammar (RFC 9112 §3 and §5, with the leniencies
//! listed below), the head limits (414 / 431), and the interpretation of the
//! headers that decide framing and connection reuse ([`framing`]). It does no
//! I/O and never allocates: the caller owns the read buffer and the fixed
//! `[Header]` array (one per shard, reused), and everything returned borrows
//! from the buffer.
//!
//! # Contract with `connection.rs`
//!
//! [`parse_head`] is a pure function of the bytes received so far. The
//! connection calls it again after each read with the whole buffer; the result
//! is `Partial` until the blank line arrives, then `Complete` with the head
//! length (the body starts at `head_len`). An error is final: whatever bytes
//! follow, the same error (or an earlier one) would be returned, so the caller
//! answers and closes at once.
//!
//! Invariants:
//! - Limits are detected as soon as enough bytes arrived to know they are
//!   exceeded: a request line with no line end within
//!   `request_line_bytes_max + 2` bytes is [`HeadError::RequestLineTooLong`],
//!   a head with no blank line within `head_bytes_max` bytes is
//!   [`HeadError::HeadTooLarge`], a header line starting when the array is
//!   full is [`HeadError::TooManyHeaders`]. No input makes the parser look
//!   past `head_bytes_max` bytes.
//! - For any input, every prefix gives `Partial` or the same result as the
//!   whole (tests feed every case split at every byte), provided the limits
//!   satisfy [`HeadLimits::is_consistent`].
//!
//! # Which error wins: the first byte that decides one
//!
//! Errors are reported in the order the bytes that decide them arrive: the
//! result for the whole input is the result for its shortest prefix that is
//! not `Partial`; bytes after that point cannot change it. This is what makes
//! the prefix invariant hold when an input breaks two rules. Each error is
//! decided at one byte:
//! - a bad method byte (not a token byte, before the first SP): at itself;
//! - [`HeadError::RequestLineTooLong`]: at byte `request_line_bytes_max + 1`
//!   of the request line if that byte is neither CR nor LF (no line end can
//!   make the line fit any more), else at the byte after that CR if it is
//!   not LF; a bad method byte later than that is not looked at (with a
//!   64-byte limit, `GET` and 62 `A`s followed by `(` is 414, not 400);
//! - [`HeadError::HeadTooLarge`]: at byte `head_bytes_max` of the head, when
//!   it is not the LF ending the blank line;
//! - target and version errors: at the request line's LF; header errors and
//!   [`HeadError::TooManyHeaders`]: at the first bad byte of the line (its
//!   first byte for `TooManyHeaders`).
//!
//! When one byte decides two errors, the malformed byte is reported first: a
//! bad method byte that is also the byte making the line too long (or the
//! last byte within the head limit) is [`HeadError::BadMethod`]; a request
//! line (after leading empty lines) that becomes too long at the last byte
//! within the head limit is [`HeadError::HeadTooLarge`].
//!
//! # Grammar accepted
//!
//! - Leading empty lines before the request line are skipped (RFC 9112 §2.2;
//!   some clients send a CRLF after a body). They count towards the head size.
//! - Line ends are `\r\n` or a bare `\n`; a bare `\r` anywhere is an error.
//! - Request line: `method SP target SP HTTP/1.0|HTTP/1.1`, exactly one space
//!   each. The method is a token (case-sensitive, so `get` is [`Method::Other`]).
//!   The target is visible ASCII (`!`..=`~`): origin-form `/path?query`,
//!   `*` for `OPTIONS` only, or absolute-form `http://host/path?query`
//!   (`https://` too), whose path and query are used.
//! - Header: `token ":" OWS value OWS`. No whitespace before the colon, no
//!   obs-fold (a line starting with SP/HT), value bytes HT, SP..=`~` or
//!   0x80..=0xFF (obs-text); other control bytes and DEL are errors.

use memchr::memchr;

/// Request method. Anything else parses as `Other` (answered 405 by routing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Patch,
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// One header, borrowed from the read buffer. Names compare ASCII
/// case-insensitively; values are raw bytes (trimmed of surrounding spaces/tabs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header<'b> {
    pub name: &'b str,
    pub value: &'b [u8],
}

/// Limits of a request head, from `Config`.
#[derive(Clone, Copy, Debug)]
pub struct HeadLimits {
    /// Request line, without CRLF → 414 past this.
    pub request_line_bytes_max: usize,
    /// Whole head including the request line and the final CRLF → 431 past this.
    pub head_bytes_max: usize,
    /// Header count → 431 past this (also bounded by the caller's array).
    pub header_count_max: usize,
}

impl HeadLimits {
    /// True when the request line (plus its CRLF) fits in the head limit.
    ///
    /// `config.rs` should refuse limits for which this is false: with them a
    /// request line that is too long may be reported as `HeadTooLarge` (431)
    /// instead of `RequestLineTooLong` (414), depending on how the bytes were
    /// split across reads.
    pub const fn is_consistent(&self) -> bool {
        self.request_line_bytes_max.saturating_add(2) <= self.head_bytes_max
    }
}

/// A parsed request head.
#[derive(Clone, Copy, Debug)]
pub struct RequestHead<'b> {
    pub method: Method,
    /// The method token as sent (`GET`, or the unknown token behind `Other`).
    pub method_token: &'b str,
    /// Request target as sent (`/write?db=x`).
    pub target: &'b str,
    /// Target up to `?`, not decoded. For absolute-form targets, the path
    /// part only (`/` when the target has none); `*` for `OPTIONS *`.
    pub path: &'b str,
    /// Target after `?` (empty if none), not decoded.
    pub query: &'b str,
    pub version: Version,
    /// Headers are `headers[..header_count]` of the caller's array.
    pub header_count: usize,
    /// Bytes of the head including the blank line.
    pub head_len: usize,
}

/// Outcome of parsing a head that may not have fully arrived yet.
#[derive(Clone, Copy, Debug)]
pub enum Status<T> {
    Complete(T),
    Partial,
}

/// Why a head is refused. Each maps to one status in `http::response`
/// (the intended status is given on each variant).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// Request line longer than the limit → 414.
    RequestLineTooLong,
    /// Head larger than the limit → 431.
    HeadTooLarge,
    /// More headers than the limit → 431.
    TooManyHeaders,
    /// Method token malformed → 400.
    BadMethod,
    /// Request target malformed → 400.
    BadTarget,
    /// Not `HTTP/1.x` → 400.
    BadVersion,
    /// Well-formed `HTTP/d.d` other than 1.0 and 1.1 (`HTTP/2.0`) → 505.
    UnsupportedVersion,
    /// Header name or value malformed, or a bare CR / obsolete line folding → 400.
    BadHeader,
    /// `Content-Length` not a plain decimal number, too big for u64, or
    /// repeated with different values → 400 ([`framing`]).
    BadContentLength,
    /// Both `Content-Length` and `Transfer-Encoding` → 400 ([`framing`];
    /// RFC 9112 §6.3 allows processing it, refusing closes a smuggling vector).
    ContentLengthWithTransferEncoding,
    /// `Transfer-Encoding` whose last coding is not `chunked`, or that is
    /// empty or applies `chunked` twice → 400 (RFC 9112 §6.3) ([`framing`]).
    BadTransferEncoding,
    /// `Transfer-Encoding` with a coding we do not implement before
    /// `chunked` (`gzip, chunked`) → 501 ([`framing`]).
    UnsupportedTransferEncoding,
    /// `Expect` other than `100-continue` → 417 ([`framing`]).
    UnsupportedExpectation,
}

/// Parses the head at the start of `buf` into `headers`.
///
/// `headers` is only written; on `Complete(head)` the parsed headers are
/// `headers[..head.header_count]`. The header limit is the smaller of
/// `limits.header_count_max` and `headers.len()`.
pub fn parse_head<'b>(
    buf: &'b [u8],
    headers: &mut [Header<'b>],
    limits: &HeadLimits,
) -> Result<Status<RequestHead<'b>>, HeadError> {
    let head_max = limits.head_bytes_max;
    // Never look past the head limit: a line end there is too late anyway.
    let visible = &buf[..buf.len().min(head_max)];

    // Leading empty lines.
    let mut start = 0;
    loop {
        match visible.get(start) {
            Some(b'\n') => start += 1,
            Some(b'\r') => match visible.get(start + 1) {
                Some(b'\n') => start += 2,
                Some(_) => return Err(HeadError::BadMethod),
                None => return partial_or_too_large(buf, head_max),
            },
            Some(_) => break,
            None => return partial_or_too_large(buf, head_max),
        }
    }

    let (line, line_next) = match request_line(visible, start, limits)? {
        Some(found) => found,
        None => return Ok(Status::Partial),
    };
    let line_head = parse_request_line(line)?;

    let header_cap = limits.header_count_max.min(headers.len());
    let mut count = 0;
    let mut pos = line_next;
    loop {
        if pos >= head_max {
            return Err(HeadError::HeadTooLarge);
        }
        let first = match visible.get(pos) {
            Some(&b) => b,
            None => return Ok(Status::Partial),
        };
        match first {
            b'\n' => {
                pos += 1;
                break;
            }
            b'\r' => {
                if pos + 1 >= head_max {
                    return Err(HeadError::HeadTooLarge);
                }
                match visible.get(pos + 1) {
                    Some(b'\n') => {
                        pos += 2;
                        break;
                    }
                    Some(_) => return Err(HeadError::BadHeader),
                    None => return Ok(Status::Partial),
                }
            }
            b' ' | b'\t' => return Err(HeadError::BadHeader),
            _ => {}
        }
        if count >= header_cap {
            return Err(HeadError::TooManyHeaders);
        }
        let (header, next) = match scan_header_line(visible, pos)? {
            Some(found) => found,
            None => return partial_or_too_large(buf, head_max),
        };
        headers[count] = header;
        count += 1;
        pos = next;
    }

    Ok(Status::Complete(RequestHead {
        header_count: count,
        head_len: pos,
        ..line_head
    }))
}

/// `Partial`, unless `head_max` bytes arrived already (the head cannot end
/// within the limit any more).
fn partial_or_too_large<T>(buf: &[u8], head_max: usize) -> Result<Status<T>, HeadError> {
    if buf.len() >= head_max {
        Err(HeadError::HeadTooLarge)
    } else {
        Ok(Status::Partial)
    }
}

/// Finds the request line starting at `start`: returns its content (without
/// the line end) and the offset after its `\n`, `None` if more bytes are
/// needed, or the limit error as soon as it is certain.
///
/// Only the window `start..min(start + request_line_bytes_max + 2,
/// head_bytes_max)` is examined, and the method only in its first
/// `request_line_bytes_max + 1` bytes, so the answer for any prefix agrees
/// with the answer for the whole input.
fn request_line<'b>(
    visible: &'b [u8],
    start: usize,
    limits: &HeadLimits,
) -> Result<Option<(&'b [u8], usize)>, HeadError> {
    let line_max = limits.request_line_bytes_max;
    let line_bound = start.saturating_add(line_max).saturating_add(2);
    let window_end = line_bound.min(limits.head_bytes_max);
    let window = &visible[start..visible.len().min(window_end)];

    // A method with a byte that cannot be in a token is refused right away,
    // before waiting for the line end (a TLS handshake or binary garbage
    // would otherwise hold the connection until the line limit).
    //
    // Only the first `line_max + 1` bytes are scanned: if the scan gets past
    // them, they were all token bytes (no SP, CR or LF), so the line was
    // already known to be too long at byte `line_max + 1`, and a bad byte
    // after it must not change the error (see "Which error wins" above).
    let method_window = &window[..window.len().min(line_max.saturating_add(1))];
    for &b in method_window {
        if b == b' ' {
            break;
        }
        if !is_token(b) {
            return Err(HeadError::BadMethod);
        }
    }

    match memchr(b'\n', window) {
        Some(newline) => {
            let mut content = &window[..newline];
            if let [rest @ .., b'\r'] = content {
                content = rest;
            }
            if content.len() > line_max {
                return Err(HeadError::RequestLineTooLong);
            }
            Ok(Some((content, start + newline + 1)))
        }
        None if window.len() + start >= window_end => {
            // The window is full and holds no line end.
            if line_bound <= limits.head_bytes_max {
                Err(HeadError::RequestLineTooLong)
            } else {
                Err(HeadError::HeadTooLarge)
            }
        }
        None => {
            // One byte short of the window: the line is too long unless that
            // last byte is the CR of its CRLF.
            if window.len() == line_max + 1 && window[line_max] != b'\r' {
                return Err(HeadError::RequestLineTooLong);
            }
            Ok(None)
        }
    }
}

/// Parses `method SP target SP version` (the line without its line end).
/// Returns a head with `header_count` and `head_len` still zero.
fn parse_request_line(line: &[u8]) -> Result<RequestHead<'_>, HeadError> {
    let method_len = line
        .iter()
        .position(|&b| !is_token(b))
        .unwrap_or(line.len());
    if method_len == 0 || line.get(method_len) != Some(&b' ') {
        return Err(HeadError::BadMethod);
    }
    let method_bytes = &line[..method_len];
    let method = method_from_token(method_bytes);

    // The version is the last 8 bytes, preceded by exactly one space.
    let rest = &line[method_len + 1..];
    const VERSION_LEN: usize = b"HTTP/1.1".len();
    if rest.len() < VERSION_LEN + 1 {
        return Err(if rest.contains(&b' ') {
            HeadError::BadVersion
        } else {
            HeadError::BadTarget
        });
    }
    let (target_bytes, version_part) = rest.split_at(rest.len() - VERSION_LEN - 1);
    let version = match version_part {
        b" HTTP/1.1" => Version::Http11,
        b" HTTP/1.0" => Version::Http10,
        [b' ', b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            return Err(HeadError::UnsupportedVersion);
        }
        _ => return Err(HeadError::BadVersion),
    };

    if target_bytes.is_empty() || !is_visible_ascii(target_bytes) {
        return Err(HeadError::BadTarget);
    }
    let target = ascii_str(target_bytes);
    let (path, query) = split_target(target, method)?;
    let method_token = ascii_str(method_bytes);

    Ok(RequestHead {
        method,
        method_token,
        target,
        path,
        query,
        version,
        header_count: 0,
        head_len: 0,
    })
}

fn method_from_token(token: &[u8]) -> Method {
    match token {
        b"GET" => Method::Get,
        b"POST" => Method::Post,
        b"HEAD" => Method::Head,
        b"PUT" => Method::Put,
        b"DELETE" => Method::Delete,
        b"OPTIONS" => Method::Options,
        b"PATCH" => Method::Patch,
        _ => Method::Other,
    }
}

/// Splits a visible-ASCII target into (path, query) by its form.
fn split_target(target: &str, method: Method) -> Result<(&str, &str), HeadError> {
    let bytes = target.as_bytes();
    if bytes[0] == b'/' {
        return Ok(split_query(target));
    }
    if target == "*" {
        return if method == Method::Options {
            Ok(("*", ""))
        } else {
            Err(HeadError::BadTarget)
        };
    }
    // Absolute-form: scheme "://" authority [path] ["?" query].
    let after_scheme = if bytes.len() > 7 && bytes[..7].eq_ignore_ascii_case(b"http://") {
        &target[7..]
    } else if bytes.len() > 8 && bytes[..8].eq_ignore_ascii_case(b"https://") {
        &target[8..]
    } else {
        return Err(HeadError::BadTarget);
    };
    let authority_len = after_scheme
        .bytes()
        .position(|b| b == b'/' || b == b'?')
        .unwrap_or(after_scheme.len());
    if authority_len == 0 {
        return Err(HeadError::BadTarget);
    }
    let path_and_query = &after_scheme[authority_len..];
    if path_and_query.starts_with('/') {
        Ok(split_query(path_and_query))
    } else {
        // "" or "?query": the path is the root.
        Ok(("/", path_and_query.strip_prefix('?').unwrap_or("")))
    }
}

fn split_query(path_and_query: &str) -> (&str, &str) {
    match memchr(b'?', path_and_query.as_bytes()) {
        // `?` is ASCII, so both sides are on char boundaries.
        Some(at) => (&path_and_query[..at], &path_and_query[at + 1..]),
        None => (path_and_query, ""),
    }
}

/// Scans the header line starting at `pos`, whose first byte is known not
/// to be CR, LF, SP or HT. Returns the header and the offset after its line
/// end, or `None` if `visible` ends before the line does.
///
/// One pass: the name byte by byte through the token table, then the value
/// eight bytes at a time up to its first control byte (normally the CR).
/// Errors are reported at the first bad byte, the same for every prefix.
fn scan_header_line(visible: &[u8], pos: usize) -> Result<Option<(Header<'_>, usize)>, HeadError> {
    // The name ends at the colon; a control byte (the line end) first, or
    // any non-token byte, makes the line malformed.
    let mut i = skip_to_colon_or_control(visible, pos);
    if i == pos || !visible[pos..i].iter().fold(true, |ok, &b| ok & is_token(b)) {
        return Err(HeadError::BadHeader);
    }
    match visible.get(i) {
        Some(b':') => {}
        Some(_) => return Err(HeadError::BadHeader),
        None => return Ok(None),
    }
    // SAFETY: every byte of `visible[pos..i]` passed `is_token`, and tokens
    // are ASCII, so the slice is valid UTF-8.
    let name = unsafe { std::str::from_utf8_unchecked(&visible[pos..i]) };
    i += 1;
    while let Some(b' ' | b'\t') = visible.get(i) {
        i += 1;
    }
    let value_start = i;
    let (value_end, next) = loop {
        i = skip_plain_value_bytes(visible, i);
        match visible.get(i) {
            Some(b'\t') => i += 1,
            Some(b'\r') => match visible.get(i + 1) {
                Some(b'\n') => break (i, i + 2),
                Some(_) => return Err(HeadError::BadHeader),
                None => return Ok(None),
            },
            Some(b'\n') => break (i, i + 1),
            Some(_) => return Err(HeadError::BadHeader),
            None => return Ok(None),
        }
    };
    let value = trim_ows(&visible[value_start..value_end]);
    Ok(Some((Header { name, value }, next)))
}

/// Strips spaces and tabs at both ends.
fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

/// The slice as `&str`, for bytes already checked to be ASCII.
fn ascii_str(bytes: &[u8]) -> &str {
    debug_assert!(bytes.is_ascii(), "ascii_str on checked bytes only");
    // SAFETY: callers pass only bytes that passed `is_token` or
    // `is_visible_ascii`, all ASCII, hence valid UTF-8.
    unsafe { std::str::from_utf8_unchecked(bytes) }
}

/// tchar of RFC 9110 §5.6.2.
static TOKEN_TABLE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    table
};

#[inline]
fn is_token(b: u8) -> bool {
    TOKEN_TABLE[b as usize]
}

const LANE_ONES: u64 = 0x0101_0101_0101_0101;
const LANE_HIGH: u64 = 0x8080_8080_8080_8080;

/// High bit set in (at least) the lowest byte of `word` below `n` (n <= 128);
/// bits above the lowest set one may be false positives (borrows).
#[inline]
fn below_mask(word: u64, n: u8) -> u64 {
    word.wrapping_sub(LANE_ONES * n as u64) & !word & LANE_HIGH
}

/// True if any byte of `word` is above `n` (n <= 127).
#[inline]
fn has_byte_above(word: u64, n: u8) -> bool {
    (word.wrapping_add(LANE_ONES * (127 - n as u64)) | word) & LANE_HIGH != 0
}

#[inline]
fn read_word(chunk: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(chunk);
    u64::from_le_bytes(word)
}

/// Every byte in `!`..=`~` (request target), eight at a time.
fn is_visible_ascii(bytes: &[u8]) -> bool {
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let word = read_word(chunk);
        if below_mask(word, b'!') != 0 || has_byte_above(word, b'~') {
            return false;
        }
    }
    chunks
        .remainder()
        .iter()
        .all(|&b| (b'!'..=b'~').contains(&b))
}

/// Index of the first `:` or control byte at or after `i`, or
/// `bytes.len()`; eight bytes at a time (header names are short, but a byte
/// loop through the token table was the parser's hottest spot).
#[inline]
fn skip_to_colon_or_control(bytes: &[u8], mut i: usize) -> usize {
    while i + 8 <= bytes.len() {
        let word = read_word(&bytes[i..i + 8]);
        let mask = below_mask(word, b' ') | below_mask(word ^ (LANE_ONES * b':' as u64), 1);
        if mask != 0 {
            return i + (mask.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < bytes.len() && bytes[i] >= b' ' && bytes[i] != b':' {
        i += 1;
    }
    i
}

/// Index of the first byte at or after `i` that is a control byte (HT, CR
/// and LF included) or DEL, or `bytes.len()`; eight bytes at a time. The
/// bytes skipped are plain field-value bytes: SP..=`~` and obs-text.
#[inline]
fn skip_plain_value_bytes(bytes: &[u8], mut i: usize) -> usize {
    while i + 8 <= bytes.len() {
        let word = read_word(&bytes[i..i + 8]);
        // The lowest set bit of each mask marks a true match, so the
        // lowest set bit of their union is the first special byte.
        let mask = below_mask(word, b' ') | below_mask(word ^ (LANE_ONES * 0x7F), 1);
        if mask != 0 {
            return i + (mask.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < bytes.len() && bytes[i] >= b' ' && bytes[i] != 0x7F {
        i += 1;
    }
    i
}

/// The first header named `name` (ASCII case-insensitive), as raw value bytes.
pub fn find_header<'b>(headers: &[Header<'b>], name: &str) -> Option<&'b [u8]> {
    headers
        .iter()
        .find(|header| header.name.eq_ignore_ascii_case(name))
        .map(|header| header.value)
}

/// How the request body is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No `Content-Length` and no `Transfer-Encoding`: no body.
    None,
    /// Exactly this many bytes follow the head.
    ContentLength(u64),
    /// `Transfer-Encoding: chunked`; see `http::body::ChunkedDecoder`.
    Chunked,
}

/// What the connection needs to know from the headers, beyond routing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestMeta<'b> {
    pub framing: BodyFraming,
    /// Whether the connection may be reused after this request (before any
    /// decision of the server to close).
    pub keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request (ignored for 1.0, as
    /// RFC 9110 §10.1.1 requires).
    pub expect_continue: bool,
    /// First `Content-Encoding` value, raw (`gzip`, `identity`, ...).
    pub content_encoding: Option<&'b [u8]>,
    /// First `Authorization` value, raw.
    pub authorization: Option<&'b [u8]>,
}

/// Interprets the headers that decide framing and connection reuse.
///
/// `headers` is the caller's array (only `..head.header_count` is read) or
/// that prefix itself. One pass over the headers; no allocation.
pub fn framing<'b>(
    head: &RequestHead<'b>,
    headers: &[Header<'b>],
) -> Result<RequestMeta<'b>, HeadError> {
    let headers = &headers[..head.header_count.min(headers.len())];
    let is_http11 = head.version == Version::Http11;

    let mut content_length: Option<u64> = None;
    let mut transfer_encoding = TransferCodings::default();
    let mut has_transfer_encoding = false;
    let mut connection_close = false;
    let mut connection_keep_alive = false;
    let mut expect_continue = false;
    let mut content_encoding = None;
    let mut authorization = None;

    for header in headers {
        let name = header.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let length = parse_content_length(header.value)?;
            if content_length.is_some_and(|seen| seen != length) {
                return Err(HeadError::BadContentLength);
            }
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            has_transfer_encoding = true;
            for coding in list_elements(header.value) {
                transfer_encoding.push(coding);
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for option in list_elements(header.value) {
                if option.eq_ignore_ascii_case(b"close") {
                    connection_close = true;
                } else if option.eq_ignore_ascii_case(b"keep-alive") {
                    connection_keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            if !header.value.eq_ignore_ascii_case(b"100-continue") {
                return Err(HeadError::UnsupportedExpectation);
            }
            expect_continue = is_http11;
        } else if name.eq_ignore_ascii_case(b"content-encoding") {
            content_encoding = content_encoding.or(Some(header.value));
        } else if name.eq_ignore_ascii_case(b"authorization") {
            authorization = authorization.or(Some(header.value));
        }
    }

    let body_framing = if has_transfer_encoding {
        if content_length.is_some() {
            return Err(HeadError::ContentLengthWithTransferEncoding);
        }
        transfer_encoding.framing()?
    } else if let Some(length) = content_length {
        BodyFraming::ContentLength(length)
    } else {
        BodyFraming::None
    };

    let keep_alive = if connection_close {
        false
    } else if is_http11 {
        true
    } else {
        // HTTP/1.0: opt-in; and a 1.0 message with Transfer-Encoding has
        // faulty framing, so the connection closes after it (RFC 9112 §6.1).
        connection_keep_alive && !has_transfer_encoding
    };

    Ok(RequestMeta {
        framing: body_framing,
        keep_alive,
        expect_continue,
        content_encoding,
        authorization,
    })
}

/// 1*DIGIT, fitting in u64.
fn parse_content_length(value: &[u8]) -> Result<u64, HeadError> {
    if value.is_empty() {
        return Err(HeadError::BadContentLength);
    }
    let mut length: u64 = 0;
    for &b in value {
        if !b.is_ascii_digit() {
            return Err(HeadError::BadContentLength);
        }
        length = length
            .checked_mul(10)
            .and_then(|l| l.checked_add(u64::from(b - b'0')))
            .ok_or(HeadError::BadContentLength)?;
    }
    Ok(length)
}

/// Elements of a comma-separated list header, trimmed, empty ones skipped.
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|element| !element.is_empty())
}

/// The transfer codings of all `Transfer-Encoding` headers, in order,
/// summarised without storing them.
#[derive(Default)]
struct TransferCodings {
    count: usize,
    chunked_count: usize,
    last_is_chunked: bool,
}

impl TransferCodings {
    fn push(&mut self, coding: &[u8]) {
        // Parameters (`;q=..`) are not allowed on chunked; compare the whole.
        let is_chunked = coding.eq_ignore_ascii_case(b"chunked");
        self.count += 1;
        self.chunked_count += usize::from(is_chunked);
        self.last_is_chunked = is_chunked;
    }

    fn framing(&self) -> Result<BodyFraming, HeadError> {
        if self.count == 0 || !self.last_is_chunked || self.chunked_count > 1 {
            Err(HeadError::BadTransferEncoding)
        } else if self.count > 1 {
            Err(HeadError::UnsupportedTransferEncoding)
        } else {
            Ok(BodyFraming::Chunked)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        request_line_bytes_max: 64,
        head_bytes_max: 256,
        header_count_max: 8,
    };

    /// What a case expects: the error, or the head summarised.
    #[derive(Clone, Debug, PartialEq)]
    enum Expect {
        Error(HeadError),
        Head {
            method: Method,
            target: &'static str,
            path: &'static str,
            query: &'static str,
            version: Version,
            headers: &'static [(&'static str, &'static [u8])],
        },
    }

    fn head(
        method: Method,
        target: &'static str,
        version: Version,
        headers: &'static [(&'static str, &'static [u8])],
    ) -> Expect {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Expect::Head {
            method,
            target,
            path,
            query,
            version,
            headers,
        }
    }

    fn summarise(buf: &[u8], limits: &HeadLimits) -> Result<Option<(Expect, usize)>, HeadError> {
        let mut headers = [Header::default(); 16];
        match parse_head(buf, &mut headers, limits)? {
            Status::Partial => Ok(None),
            Status::Complete(h) => {
                assert!(h.head_len <= buf.len(), "head_len within the buffer");
                let parsed: Vec<(&'static str, &'static [u8])> = headers[..h.header_count]
                    .iter()
                    .map(|hd| (&*String::from(hd.name).leak(), &*hd.value.to_vec().leak()))
                    .collect();
                Ok(Some((
                    Expect::Head {
                        method: h.method,
                        target: String::from(h.target).leak(),
                        path: String::from(h.path).leak(),
                        query: String::from(h.query).leak(),
                        version: h.version,
                        headers: parsed.leak(),
                    },
                    h.head_len,
                )))
            }
        }
    }

    /// Checks one case whole, then every prefix (`Partial` or the same
    /// error), then with a pipelined next request appended (same result).
    fn check(name: &str, input: &[u8], limits: &HeadLimits, expected: Expect) {
        let whole = summarise(input, limits);
        match (&expected, &whole) {
            (Expect::Error(e), Err(got)) => assert_eq!(e, got, "{name}: error"),
            (Expect::Head { .. }, Ok(Some((got, len)))) => {
                assert_eq!(&expected, got, "{name}: head");
                assert_eq!(*len, input.len(), "{name}: head_len is the whole input");
            }
            _ => panic!("{name}: expected {expected:?}, got {whole:?}"),
        }
        for cut in 0..input.len() {
            match (summarise(&input[..cut], limits), &expected) {
                (Ok(None), _) => {}
                (Err(got), Expect::Error(e)) => assert_eq!(*e, got, "{name}: prefix {cut}"),
                (other, _) => panic!("{name}: prefix {cut} gave {other:?}"),
            }
        }
        if let Expect::Head { .. } = expected {
            let mut pipelined = input.to_vec();
            pipelined.extend_from_slice(b"GET /next HTTP/1.1\r\n\r\n");
            let got = summarise(&pipelined, limits);
            assert!(
                matches!(&got, Ok(Some((h, len))) if *h == expected && *len == input.len()),
                "{name}: with a pipelined request: {got:?}"
            );
        }
    }

    /// Goal: every accepted request form parses to the right method, target
    /// split, version and headers. Method: table of inputs, each checked
    /// whole, at every split point, and followed by a pipelined request.
    #[test]
    fn accepted_forms() {
        use Method::*;
        use Version::*;
        let cases: &[(&str, &[u8], Expect)] = &[
            ("minimal", b"GET / HTTP/1.1\r\n\r\n", head(Get, "/", Http11, &[])),
            (
                "telegraf write",
                b"POST /write?db=telegraf HTTP/1.1\r\nHost: localhost:8086\r\nUser-Agent: Telegraf/1.30\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n",
                head(Post, "/write?db=telegraf", Http11, &[
                    ("Host", b"localhost:8086"),
                    ("User-Agent", b"Telegraf/1.30"),
                    ("Transfer-Encoding", b"chunked"),
                    ("Content-Encoding", b"gzip"),
                ]),
            ),
            ("bare LF", b"GET /ping HTTP/1.0\nHost: a\n\n", head(Get, "/ping", Http10, &[("Host", b"a")])),
            ("mixed line ends", b"GET /ping HTTP/1.1\nA: 1\r\nB: 2\n\r\n", head(Get, "/ping", Http11, &[("A", b"1"), ("B", b"2")])),
            ("leading empty lines", b"\r\n\nHEAD /ping HTTP/1.1\r\n\r\n", head(Head, "/ping", Http11, &[])),
            ("value trimmed", b"GET / HTTP/1.1\r\nX:  \t a b \t\r\n\r\n", head(Get, "/", Http11, &[("X", b"a b")])),
            ("empty value", b"GET / HTTP/1.1\r\nX:\r\nY: \t \r\n\r\n", head(Get, "/", Http11, &[("X", b""), ("Y", b"")])),
            ("tab and obs-text in value", b"GET / HTTP/1.1\r\nX: a\tb\xC3\xA9\xFF c\r\n\r\n", head(Get, "/", Http11, &[("X", b"a\tb\xC3\xA9\xFF c")])),
            ("long value crosses words", b"GET / HTTP/1.1\r\nAuthorization: Token abcdefghijklmnopqrstuvwxyz0123456789\r\n\r\n", head(Get, "/", Http11, &[("Authorization", b"Token abcdefghijklmnopqrstuvwxyz0123456789")])),
            ("token name chars", b"GET / HTTP/1.1\r\n!#$%&'*+-.^_`|~09aZ: v\r\n\r\n", head(Get, "/", Http11, &[("!#$%&'*+-.^_`|~09aZ", b"v")])),
            ("name case kept", b"GET / HTTP/1.1\r\ncOnTeNt-LeNgTh: 0\r\n\r\n", head(Get, "/", Http11, &[("cOnTeNt-LeNgTh", b"0")])),
            ("colon in value", b"GET / HTTP/1.1\r\nHost: h:1:2\r\n\r\n", head(Get, "/", Http11, &[("Host", b"h:1:2")])),
            ("query with specials", b"GET /query?q=SELECT+%22x%22&db=a HTTP/1.1\r\n\r\n", head(Get, "/query?q=SELECT+%22x%22&db=a", Http11, &[])),
            ("empty query", b"GET /a? HTTP/1.1\r\n\r\n", head(Get, "/a?", Http11, &[])),
            ("post", b"POST /api/v2/write HTTP/1.1\r\n\r\n", head(Post, "/api/v2/write", Http11, &[])),
            ("put", b"PUT / HTTP/1.1\r\n\r\n", head(Put, "/", Http11, &[])),
            ("delete", b"DELETE / HTTP/1.1\r\n\r\n", head(Delete, "/", Http11, &[])),
            ("patch", b"PATCH / HTTP/1.1\r\n\r\n", head(Patch, "/", Http11, &[])),
            ("options", b"OPTIONS / HTTP/1.1\r\n\r\n", head(Options, "/", Http11, &[])),
            ("unknown method", b"BREW / HTTP/1.1\r\n\r\n", head(Other, "/", Http11, &[])),
            ("lowercase method is other", b"get / HTTP/1.1\r\n\r\n", head(Other, "/", Http11, &[])),
            ("eight headers (the limit)", b"GET / HTTP/1.1\r\nA:1\r\nB:2\r\nC:3\r\nD:4\r\nE:5\r\nF:6\r\nG:7\r\nH:8\r\n\r\n",
                head(Get, "/", Http11, &[("A", b"1"), ("B", b"2"), ("C", b"3"), ("D", b"4"), ("E", b"5"), ("F", b"6"), ("G", b"7"), ("H", b"8")])),
        ];
        for (name, input, expected) in cases {
            check(name, input, &LIMITS, expected.clone());
        }
    }

    /// Goal: `OPTIONS *` and absolute-form targets give the right path and
    /// query. Method: table, checked at every split.
    #[test]
    fn target_forms() {
        let cases: &[(&[u8], &str, &str)] = &[
            (b"OPTIONS * HTTP/1.1\r\n\r\n", "*", ""),
            (
                b"GET http://example.com/write?db=x HTTP/1.1\r\n\r\n",
                "/write",
                "db=x",
            ),
            (
                b"GET HTTPS://example.com:8086/a/b HTTP/1.1\r\n\r\n",
                "/a/b",
                "",
            ),
            (b"GET http://example.com HTTP/1.1\r\n\r\n", "/", ""),
            (b"GET http://example.com?q=1 HTTP/1.1\r\n\r\n", "/", "q=1"),
        ];
        for (input, path, query) in cases {
            let mut headers = [Header::default(); 4];
            let Ok(Status::Complete(h)) = parse_head(input, &mut headers, &LIMITS) else {
                panic!("{:?} did not parse", String::from_utf8_lossy(input));
            };
            assert_eq!((h.path, h.query), (*path, *query));
            assert_eq!(
                h.target.len() + h.method_token.len() + 2 + 8 + 2,
                input.len() - 2
            );
            for cut in 0..input.len() {
                let mut headers = [Header::default(); 4];
                assert!(matches!(
                    parse_head(&input[..cut], &mut headers, &LIMITS),
                    Ok(Status::Partial)
                ));
            }
        }
    }

    /// Goal: every refusal gives its precise error, and no prefix gives a
    /// different one. Method: table of malformed inputs, each checked whole
    /// and at every split point.
    #[test]
    fn refused_forms() {
        use HeadError::*;
        let long_target = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(65 - 14));
        let long_header = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "v".repeat(240));
        // Which error wins (module doc): the 65th byte of the request line
        // decides 414; a bad method byte after it is not looked at, one at
        // it is reported as 400.
        let too_long_then_bad_method = [b"GET".as_slice(), &[b'A'; 62], b"(".as_slice()].concat();
        let too_long_then_lf = [&[b'A'; 65][..], b"\n\n"].concat();
        let bad_method_at_limit = [&[b'A'; 64][..], b"(\r\n\r\n"].concat();
        let cases: &[(&str, &[u8], HeadError)] = &[
            ("empty method", b" / HTTP/1.1\r\n\r\n", BadMethod),
            ("bad method byte", b"GE(T / HTTP/1.1\r\n\r\n", BadMethod),
            ("TLS handshake", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", BadMethod),
            ("method then CR", b"GET\r\n\r\n", BadMethod),
            ("bare CR in leading lines", b"\rGET / HTTP/1.1\r\n\r\n", BadMethod),
            ("double space", b"GET  / HTTP/1.1\r\n\r\n", BadTarget),
            ("no target", b"GET HTTP/1.1\r\n\r\n", BadTarget),
            ("relative target", b"GET write HTTP/1.1\r\n\r\n", BadTarget),
            ("star not options", b"GET * HTTP/1.1\r\n\r\n", BadTarget),
            ("space in target", b"GET /a b HTTP/1.1\r\n\r\n", BadTarget),
            ("non-ascii target", b"GET /\xC3\xA9 HTTP/1.1\r\n\r\n", BadTarget),
            ("control in target", b"GET /\x01 HTTP/1.1\r\n\r\n", BadTarget),
            ("DEL in target", b"GET /\x7F HTTP/1.1\r\n\r\n", BadTarget),
            ("empty authority", b"GET http:///x HTTP/1.1\r\n\r\n", BadTarget),
            ("other scheme", b"GET ftp://h/x HTTP/1.1\r\n\r\n", BadTarget),
            ("HTTP/0.9", b"GET /\r\n\r\n", BadTarget),
            ("no version", b"GET / \r\n\r\n", BadVersion),
            ("lowercase version", b"GET / http/1.1\r\n\r\n", BadVersion),
            ("two spaces before version", b"GET /  HTTP/1.1\r\n\r\n", BadTarget),
            ("trailing space", b"GET / HTTP/1.1 \r\n\r\n", BadVersion),
            ("HTTP/2.0", b"GET / HTTP/2.0\r\n\r\n", UnsupportedVersion),
            ("HTTP/1.2", b"GET / HTTP/1.2\r\n\r\n", UnsupportedVersion),
            ("HTTP/1.x", b"GET / HTTP/1.x\r\n\r\n", BadVersion),
            ("bare CR after version", b"GET / HTTP/1.1\r\rHost: a\r\n\r\n", BadVersion),
            ("space before colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", BadHeader),
            ("no colon", b"GET / HTTP/1.1\r\nHost a\r\n\r\n", BadHeader),
            ("empty name", b"GET / HTTP/1.1\r\n: a\r\n\r\n", BadHeader),
            ("obs-fold", b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n", BadHeader),
            ("leading space header", b"GET / HTTP/1.1\r\n A: b\r\n\r\n", BadHeader),
            ("bare CR in value", b"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n", BadHeader),
            ("bare CR at line start", b"GET / HTTP/1.1\r\n\rA: b\r\n\r\n", BadHeader),
            ("NUL in value", b"GET / HTTP/1.1\r\nA: b\0c\r\n\r\n", BadHeader),
            ("control in long value", b"GET / HTTP/1.1\r\nA: abcdefgh\x1Fijklmnop\r\n\r\n", BadHeader),
            ("DEL in value", b"GET / HTTP/1.1\r\nA: b\x7Fc\r\n\r\n", BadHeader),
            ("non-token name", b"GET / HTTP/1.1\r\nA(b: c\r\n\r\n", BadHeader),
            ("non-ascii name", b"GET / HTTP/1.1\r\n\xC3\xA9: c\r\n\r\n", BadHeader),
            ("nine headers", b"GET / HTTP/1.1\r\nA:1\r\nB:2\r\nC:3\r\nD:4\r\nE:5\r\nF:6\r\nG:7\r\nH:8\r\nI:9\r\n\r\n", TooManyHeaders),
            ("request line too long", long_target.as_bytes(), RequestLineTooLong),
            ("request line too long, no line end", &[b'G'; 300], RequestLineTooLong),
            ("bad method byte after the line is too long", &too_long_then_bad_method, RequestLineTooLong),
            ("LF after the line is too long", &too_long_then_lf, RequestLineTooLong),
            ("bad method byte that makes the line too long", &bad_method_at_limit, BadMethod),
            ("head too large", long_header.as_bytes(), HeadTooLarge),
            ("head too large, no line end", &long_header.as_bytes()[..256], HeadTooLarge),
            ("empty lines fill the head", &[b'\n'; 256], HeadTooLarge),
        ];
        for (name, input, error) in cases {
            check(name, input, &LIMITS, Expect::Error(*error));
        }
    }

    /// Goal: the limits are exact: a request line of exactly the limit and a
    /// head of exactly the limit are accepted, one byte more is refused, even
    /// with a bare-LF line end. Method: build inputs at the boundary.
    #[test]
    fn limits_are_exact() {
        for line_end in ["\r\n", "\n"] {
            // "GET /" + a* + " HTTP/1.1" == 64 bytes
            let fits = format!("GET /{} HTTP/1.1{line_end}{line_end}", "a".repeat(64 - 14));
            assert!(fits.len() - 2 * line_end.len() == 64);
            check("line at limit", fits.as_bytes(), &LIMITS, head_of(&fits));
            let over = format!("GET /{} HTTP/1.1{line_end}{line_end}", "a".repeat(65 - 14));
            check(
                "line over limit",
                over.as_bytes(),
                &LIMITS,
                Expect::Error(HeadError::RequestLineTooLong),
            );

            let prefix = format!("GET / HTTP/1.1{line_end}X: ");
            let filler = 256 - prefix.len() - 2 * line_end.len();
            let fits = format!("{prefix}{}{line_end}{line_end}", "v".repeat(filler));
            assert_eq!(fits.len(), 256);
            check("head at limit", fits.as_bytes(), &LIMITS, head_of(&fits));
            let over = format!("{prefix}{}{line_end}{line_end}", "v".repeat(filler + 1));
            check(
                "head over limit",
                over.as_bytes(),
                &LIMITS,
                Expect::Error(HeadError::HeadTooLarge),
            );
        }
        // The header array bounds the count too.
        let mut headers = [Header::default(); 2];
        let input = b"GET / HTTP/1.1\r\nA:1\r\nB:2\r\nC:3\r\n\r\n";
        assert_eq!(
            parse_head(input, &mut headers, &LIMITS).err(),
            Some(HeadError::TooManyHeaders)
        );
        // Zero headers allowed: a head without headers still parses.
        let zero = HeadLimits {
            header_count_max: 0,
            ..LIMITS
        };
        check(
            "no headers allowed",
            b"GET / HTTP/1.1\r\n\r\n",
            &zero,
            head(Method::Get, "/", Version::Http11, &[]),
        );
        check(
            "no headers allowed, one sent",
            b"GET / HTTP/1.1\r\nA: b\r\n\r\n",
            &zero,
            Expect::Error(HeadError::TooManyHeaders),
        );
    }

    fn head_of(input: &str) -> Expect {
        match summarise(input.as_bytes(), &LIMITS) {
            Ok(Some((expect, _))) => expect,
            other => panic!("{input:?} did not parse: {other:?}"),
        }
    }

    fn meta(input: &'static [u8]) -> Result<RequestMeta<'static>, HeadError> {
        let headers: &'static mut [Header<'static>] = vec![Header::default(); 16].leak();
        match parse_head(input, headers, &LIMITS) {
            Ok(Status::Complete(head)) => framing(&head, headers),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
        }
    }

    /// Goal: framing, keep-alive, Expect and the passed-through headers are
    /// decided as documented, and each refusal has its variant. Method:
    /// table of heads through `parse_head` then `framing`.
    #[test]
    fn framing_decisions() {
        use BodyFraming::{Chunked, ContentLength};
        let ok = |input: &'static [u8]| meta(input).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(ok(b"GET / HTTP/1.1\r\n\r\n").framing, BodyFraming::None);
        assert!(ok(b"GET / HTTP/1.1\r\n\r\n").keep_alive);
        assert!(!ok(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(ok(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(!ok(b"GET / HTTP/1.1\r\nConnection: keep-alive, CLOSE\r\n\r\n").keep_alive);
        assert!(
            !ok(b"GET / HTTP/1.1\r\nConnection: upgrade\r\nConnection: close\r\n\r\n").keep_alive
        );
        assert!(ok(b"GET / HTTP/1.1\r\nConnection: upgrade, keep-alive\r\n\r\n").keep_alive);
        assert_eq!(
            ok(b"POST / HTTP/1.1\r\nContent-Length: 42\r\n\r\n").framing,
            ContentLength(42)
        );
        assert_eq!(
            ok(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").framing,
            ContentLength(0)
        );
        assert_eq!(
            ok(b"POST / HTTP/1.1\r\ncontent-length: 18446744073709551615\r\n\r\n").framing,
            ContentLength(u64::MAX)
        );
        assert_eq!(
            ok(b"POST / HTTP/1.1\r\nContent-Length: 7\r\nContent-Length: 007\r\n\r\n").framing,
            ContentLength(7)
        );
        assert_eq!(
            ok(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").framing,
            Chunked
        );
        assert_eq!(
            ok(b"POST / HTTP/1.1\r\nTransfer-Encoding: , Chunked ,\r\n\r\n").framing,
            Chunked
        );
        let http10_chunked =
            ok(b"POST / HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(http10_chunked.framing, Chunked);
        assert!(
            !http10_chunked.keep_alive,
            "1.0 with Transfer-Encoding closes"
        );

        let expect = ok(b"POST / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 5\r\n\r\n");
        assert!(expect.expect_continue);
        assert!(!ok(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").expect_continue);
        assert!(!ok(b"POST / HTTP/1.1\r\n\r\n").expect_continue);

        let passed = ok(b"POST / HTTP/1.1\r\nContent-Encoding: gzip\r\nAuthorization: Token abc\r\nAuthorization: Token other\r\n\r\n");
        assert_eq!(passed.content_encoding, Some(&b"gzip"[..]));
        assert_eq!(passed.authorization, Some(&b"Token abc"[..]));
        assert_eq!(ok(b"GET / HTTP/1.1\r\n\r\n").authorization, None);

        use HeadError::*;
        let refused: &[(&[u8], HeadError)] = &[
            (b"POST / HTTP/1.1\r\nContent-Length: \r\n\r\n", BadContentLength),
            (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", BadContentLength),
            (b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n", BadContentLength),
            (b"POST / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n", BadContentLength),
            (b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", BadContentLength),
            (b"POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n", BadContentLength),
            (b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551616\r\n\r\n", BadContentLength),
            (b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", BadContentLength),
            (b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", ContentLengthWithTransferEncoding),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", ContentLengthWithTransferEncoding),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", BadTransferEncoding),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", BadTransferEncoding),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", BadTransferEncoding),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: \r\n\r\n", BadTransferEncoding),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", UnsupportedTransferEncoding),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", UnsupportedTransferEncoding),
            (b"POST / HTTP/1.1\r\nExpect: 200-ok\r\n\r\n", UnsupportedExpectation),
            (b"POST / HTTP/1.1\r\nExpect: \r\n\r\n", UnsupportedExpectation),
        ];
        for (input, error) in refused {
            assert_eq!(
                meta(input),
                Err(*error),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    /// Goal: header lookup ignores ASCII case and returns the first match.
    /// Method: direct calls.
    #[test]
    fn find_header_is_case_insensitive() {
        let headers = [
            Header {
                name: "Host",
                value: b"a",
            },
            Header {
                name: "X-Thing",
                value: b"1",
            },
            Header {
                name: "x-thing",
                value: b"2",
            },
        ];
        assert_eq!(find_header(&headers, "x-THING"), Some(&b"1"[..]));
        assert_eq!(find_header(&headers, "host"), Some(&b"a"[..]));
        assert_eq!(find_header(&headers, "hos"), None);
    }

    /// Goal: the word-at-a-time byte-class checks agree with the byte rules.
    /// Method: every byte value at every position of a 16-byte window, and
    /// a second special byte after it (borrows must not hide the first).
    #[test]
    fn word_checks_match_byte_rules() {
        let special = |b: u8| b < b' ' || b == 0x7F;
        for b in 0..=255u8 {
            for at in 0..16 {
                let mut bytes = [b'a'; 16];
                bytes[at] = b;
                assert_eq!(
                    is_visible_ascii(&bytes),
                    (b'!'..=b'~').contains(&b),
                    "target {b:#x} at {at}"
                );
                let expected = if special(b) { at } else { 16 };
                assert_eq!(
                    skip_plain_value_bytes(&bytes, 0),
                    expected,
                    "value {b:#x} at {at}"
                );
                for later in [0u8, b'\t', 0x1F, 0x7F] {
                    if at + 1 < 16 {
                        bytes[at + 1] = later;
                        let expected = if special(b) { at } else { at + 1 };
                        assert_eq!(
                            skip_plain_value_bytes(&bytes, 0),
                            expected,
                            "{b:#x} then {later:#x}"
                        );
                    }
                }
            }
        }
    }
}
