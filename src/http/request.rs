//! Request line and headers over borrowed bytes.
//!
//! SKELETON (issue 2): the types are the contract with `connection.rs`.

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

/// A parsed request head.
#[derive(Clone, Copy, Debug)]
pub struct RequestHead<'b> {
    pub method: Method,
    /// Request target as sent (`/write?db=x`).
    pub target: &'b str,
    /// Target up to `?`, not decoded.
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

/// Why a head is refused. Each maps to one status in `http::response`.
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
    /// Not `HTTP/1.x` → 400; `HTTP/2.0` etc → 505.
    BadVersion,
    UnsupportedVersion,
    /// Header name or value malformed, or a bare CR / obsolete line folding → 400.
    BadHeader,
}

/// Parses the head at the start of `buf` into `headers`.
pub fn parse_head<'b>(
    buf: &'b [u8],
    headers: &mut [Header<'b>],
    limits: &HeadLimits,
) -> Result<Status<RequestHead<'b>>, HeadError> {
    let _ = (buf, headers, limits);
    Ok(Status::Partial)
}
