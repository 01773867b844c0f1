//! Response bytes, and the one place that maps a refusal to its status
//! (and, beside it, to the cause it is counted under in `/metrics`).
//!
//! Every response carries `X-Influxdb-Version`, `X-Influxdb-Build` and a
//! `Request-Id` (clients sniff the first two; operators grep the last).
//! Error bodies are JSON: `{"code","message"}` as InfluxDB 3 / v2 answer,
//! plus `"error"` and the `X-Influxdb-Error` header on the v1 endpoints,
//! because Telegraf's v1 output and the v1 clients read those.

use std::fmt::Write as _;

use crate::backpressure::Overload;

/// Version reported to clients (they compare it; 1.8-compatible API).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const BUILD: &str = "ringest";

/// Which API family a request belongs to: decides error body details and
/// the overload status (Telegraf's v1 output drops 4xx batches, so `/write`
/// never answers 429).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    V1,
    V2,
    Other,
}

/// Every reason a request is refused or fails, one variant per cause.
/// [`Refusal::status`] is the one status mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    // Framing (http::request / http::body).
    BadRequest(&'static str),
    RequestLineTooLong,
    HeadTooLarge,
    VersionNotSupported,
    TransferEncodingNotImplemented,
    ExpectationFailed,
    BodyTooLarge {
        limit: usize,
    },
    LengthRequired,
    // Routing.
    NotFound,
    MethodNotAllowed {
        allow: &'static str,
    },
    // Parameters.
    MissingDatabase,
    MissingBucket,
    BadDatabaseName {
        name: String,
        detail: String,
    },
    BadPrecision {
        value: String,
        dialect: Dialect,
    },
    BadParameter {
        name: &'static str,
        value: String,
    },
    DatabaseNotFound {
        name: String,
    },
    /// A retention policy other than the default one (`''`, `autogen`,
    /// `default`): from `rp` on `/write`, or `bucket=db/rp` on
    /// `/api/v2/write`. Each database has only its default policy.
    RetentionPolicyNotFound {
        rp: String,
    },
    // Auth.
    Unauthorized,
    Forbidden {
        database: String,
    },
    // Body.
    UnsupportedEncoding {
        encoding: String,
    },
    Gzip {
        detail: String,
    },
    NotUtf8 {
        offset: usize,
    },
    // Lines (partial or total rejection).
    Lines {
        first_line: u32,
        message: String,
        v1_error: String,
    },
    // Capacity.
    Overloaded {
        retry_after_s: u32,
        cause: Overload,
    },
    TooManyConnections,
    ShuttingDown,
    /// A shard stopped acknowledging writes after a WAL failure.
    Unhealthy {
        cause: String,
    },
    /// The WAL's disk is full.
    NoSpace,
    // Failure.
    Internal {
        cause: String,
    },
}

impl Refusal {
    pub fn status(&self, dialect: Dialect) -> u16 {
        match self {
            Refusal::BadRequest(_) => 400,
            Refusal::RequestLineTooLong => 414,
            Refusal::HeadTooLarge => 431,
            Refusal::VersionNotSupported => 505,
            Refusal::TransferEncodingNotImplemented => 501,
            Refusal::ExpectationFailed => 417,
            Refusal::BodyTooLarge { .. } => 413,
            Refusal::LengthRequired => 411,
            Refusal::NotFound => 404,
            Refusal::MethodNotAllowed { .. } => 405,
            Refusal::MissingDatabase
            | Refusal::MissingBucket
            | Refusal::BadDatabaseName { .. }
            | Refusal::BadPrecision { .. }
            | Refusal::BadParameter { .. } => 400,
            Refusal::DatabaseNotFound { .. } => 404,
            // What InfluxDB answers: 1.x a 500 for `rp` (Telegraf's v1
            // output recognises the text and drops the batch instead of
            // retrying it); 2.x a 404 for a bucket that does not exist.
            Refusal::RetentionPolicyNotFound { .. } => match dialect {
                Dialect::V2 => 404,
                Dialect::V1 | Dialect::Other => 500,
            },
            Refusal::Unauthorized => 401,
            Refusal::Forbidden { .. } => 403,
            Refusal::UnsupportedEncoding { .. } => 415,
            Refusal::Gzip { .. } | Refusal::NotUtf8 { .. } | Refusal::Lines { .. } => 400,
            Refusal::Overloaded { .. } => match dialect {
                Dialect::V2 => 429,
                Dialect::V1 | Dialect::Other => 503,
            },
            Refusal::TooManyConnections
            | Refusal::ShuttingDown
            | Refusal::Unhealthy { .. }
            | Refusal::NoSpace => 503,
            Refusal::Internal { .. } => 500,
        }
    }

    /// The cause a 429/503 refusal is counted under; `None` for every
    /// other status. Exhaustive on purpose: a new variant must choose.
    pub fn cause(&self) -> Option<RefusalCause> {
        match self {
            Refusal::Overloaded { cause, .. } => Some(RefusalCause::Overloaded(*cause)),
            Refusal::TooManyConnections => Some(RefusalCause::Connections),
            Refusal::ShuttingDown => Some(RefusalCause::ShuttingDown),
            Refusal::Unhealthy { .. } => Some(RefusalCause::Unhealthy),
            Refusal::NoSpace => Some(RefusalCause::NoSpace),
            Refusal::BadRequest(_)
            | Refusal::RequestLineTooLong
            | Refusal::HeadTooLarge
            | Refusal::VersionNotSupported
            | Refusal::TransferEncodingNotImplemented
            | Refusal::ExpectationFailed
            | Refusal::BodyTooLarge { .. }
            | Refusal::LengthRequired
            | Refusal::NotFound
            | Refusal::MethodNotAllowed { .. }
            | Refusal::MissingDatabase
            | Refusal::MissingBucket
            | Refusal::BadDatabaseName { .. }
            | Refusal::BadPrecision { .. }
            | Refusal::BadParameter { .. }
            | Refusal::DatabaseNotFound { .. }
            | Refusal::RetentionPolicyNotFound { .. }
            | Refusal::Unauthorized
            | Refusal::Forbidden { .. }
            | Refusal::UnsupportedEncoding { .. }
            | Refusal::Gzip { .. }
            | Refusal::NotUtf8 { .. }
            | Refusal::Lines { .. }
            | Refusal::Internal { .. } => None,
        }
    }

    /// The machine-readable `code` of an InfluxDB error body.
    fn code(&self, dialect: Dialect) -> &'static str {
        match self.status(dialect) {
            // 413 is "invalid" too: the v2 write contract lists that code
            // for an oversized payload (with `maxLength`).
            400 | 411 | 413 | 414 | 417 | 431 | 505 => "invalid",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not found",
            405 => "method not allowed",
            415 => "unsupported media type",
            429 => "too many requests",
            501 => "not implemented",
            503 => "unavailable",
            _ => "internal error",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Refusal::BadRequest(detail) => format!("bad request: {detail}"),
            Refusal::RequestLineTooLong => "request line too long".into(),
            Refusal::HeadTooLarge => "request header fields too large".into(),
            Refusal::VersionNotSupported => "HTTP version not supported".into(),
            Refusal::TransferEncodingNotImplemented => {
                "transfer-encoding not implemented (only chunked)".into()
            }
            Refusal::ExpectationFailed => "expectation failed (only 100-continue)".into(),
            Refusal::BodyTooLarge { limit } => format!("max request size ({limit} bytes) exceeded"),
            Refusal::LengthRequired => "length required".into(),
            Refusal::NotFound => "not found".into(),
            Refusal::MethodNotAllowed { allow } => format!("method not allowed (allowed: {allow})"),
            Refusal::MissingDatabase => "database is required".into(),
            Refusal::MissingBucket => "missing bucket value".into(),
            Refusal::BadDatabaseName { name, detail } => {
                format!("invalid database name {name:?}: {detail}")
            }
            Refusal::BadPrecision { value, dialect } => match dialect {
                Dialect::V2 => format!("invalid precision {value:?} (use ns, us, ms or s)"),
                _ => format!("invalid precision {value:?} (use n, ns, u, us, µ, ms, s, m or h)"),
            },
            Refusal::BadParameter { name, value } => format!("invalid {name} {value:?}"),
            Refusal::DatabaseNotFound { name } => format!("database not found: {name:?}"),
            Refusal::RetentionPolicyNotFound { rp } => format!("retention policy not found: {rp}"),
            Refusal::Unauthorized => "unauthorized access".into(),
            Refusal::Forbidden { database } => {
                format!("token is not allowed to access database {database:?}")
            }
            Refusal::UnsupportedEncoding { encoding } => {
                format!("unacceptable content-encoding: {encoding}")
            }
            Refusal::Gzip { detail } => format!("error decoding gzip stream: {detail}"),
            Refusal::NotUtf8 { offset } => {
                format!("body content is not valid utf8: invalid byte at offset {offset}")
            }
            Refusal::Lines { message, .. } => message.clone(),
            Refusal::Overloaded { cause, .. } => {
                format!("server overloaded ({cause}), retry later")
            }
            Refusal::TooManyConnections => "too many connections, retry later".into(),
            Refusal::ShuttingDown => "server is shutting down".into(),
            Refusal::Unhealthy { cause } => format!("service unavailable: {cause}"),
            Refusal::NoSpace => "service unavailable: no space left on the WAL device".into(),
            Refusal::Internal { cause } => format!("internal error: {cause}"),
        }
    }

    /// Whether the connection must close after this answer (the request's
    /// body may be unread, or the stream is no longer trustworthy).
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            Refusal::BadRequest(_)
                | Refusal::RequestLineTooLong
                | Refusal::HeadTooLarge
                | Refusal::VersionNotSupported
                | Refusal::TransferEncodingNotImplemented
                | Refusal::BodyTooLarge { .. }
                | Refusal::LengthRequired
                | Refusal::TooManyConnections
                | Refusal::ShuttingDown
        )
    }

    /// The JSON error body.
    pub fn body(&self, dialect: Dialect) -> Vec<u8> {
        let message = self.message();
        let mut body = Vec::with_capacity(64 + message.len() * 2);
        body.extend_from_slice(b"{\"code\":\"");
        body.extend_from_slice(self.code(dialect).as_bytes());
        body.extend_from_slice(b"\"");
        if let Refusal::Lines { first_line, .. } = self {
            let _ = write!(Json(&mut body), ",\"line\":{first_line}");
        }
        if let Refusal::BodyTooLarge { limit } = self {
            let _ = write!(Json(&mut body), ",\"maxLength\":{limit}");
        }
        body.extend_from_slice(b",\"message\":");
        json_string(&mut body, &message);
        if dialect == Dialect::V1 {
            body.extend_from_slice(b",\"error\":");
            json_string(&mut body, &self.v1_error());
        }
        body.extend_from_slice(b"}\n");
        body
    }

    /// The InfluxDB 1.x wording, for `"error"` and `X-Influxdb-Error`.
    pub fn v1_error(&self) -> String {
        match self {
            Refusal::Lines { v1_error, .. } => v1_error.clone(),
            Refusal::BodyTooLarge { .. } => "Request Entity Too Large".into(),
            other => other.message(),
        }
    }

    pub fn retry_after_s(&self) -> Option<u32> {
        match self {
            Refusal::Overloaded { retry_after_s, .. } => Some(*retry_after_s),
            Refusal::TooManyConnections
            | Refusal::ShuttingDown
            | Refusal::Unhealthy { .. }
            | Refusal::NoSpace => Some(1),
            _ => None,
        }
    }
}

/// Why a request was refused with 429/503: the `cause` label of
/// `ringest_refusals_total`. Each refusal has exactly one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalCause {
    /// A capacity bound (backpressure); which one.
    Overloaded(Overload),
    /// The shard's connection limit, at accept.
    Connections,
    /// The server is shutting down (or a peer shard is gone).
    ShuttingDown,
    /// A shard stopped acknowledging writes after a WAL failure.
    Unhealthy,
    /// The WAL's disk is full (a new segment cannot be made, or a write
    /// failed with ENOSPC).
    NoSpace,
}

impl RefusalCause {
    pub const COUNT: usize = Overload::ALL.len() + 4;

    /// Every cause, in [`RefusalCause::index`] order.
    pub const ALL: [RefusalCause; RefusalCause::COUNT] = [
        RefusalCause::Overloaded(Overload::ALL[0]),
        RefusalCause::Overloaded(Overload::ALL[1]),
        RefusalCause::Overloaded(Overload::ALL[2]),
        RefusalCause::Overloaded(Overload::ALL[3]),
        RefusalCause::Overloaded(Overload::ALL[4]),
        RefusalCause::Overloaded(Overload::ALL[5]),
        RefusalCause::Overloaded(Overload::ALL[6]),
        RefusalCause::Connections,
        RefusalCause::ShuttingDown,
        RefusalCause::Unhealthy,
        RefusalCause::NoSpace,
    ];

    /// Position in a per-cause counter array (`0..COUNT`).
    pub fn index(self) -> usize {
        let n = Overload::ALL.len();
        match self {
            RefusalCause::Overloaded(overload) => overload as usize,
            RefusalCause::Connections => n,
            RefusalCause::ShuttingDown => n + 1,
            RefusalCause::Unhealthy => n + 2,
            RefusalCause::NoSpace => n + 3,
        }
    }

    /// The Prometheus label value.
    pub fn label(self) -> &'static str {
        match self {
            RefusalCause::Overloaded(overload) => overload.label(),
            RefusalCause::Connections => "connections",
            RefusalCause::ShuttingDown => "shutting_down",
            RefusalCause::Unhealthy => "unhealthy",
            RefusalCause::NoSpace => "no_space",
        }
    }
}

/// `fmt::Write` into a byte buffer.
struct Json<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Json<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Appends `text` as a JSON string literal.
pub fn json_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut start = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        let escape: Option<&[u8]> = match byte {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0..=0x1f => None,
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..index]);
        match escape {
            Some(escaped) => out.extend_from_slice(escaped),
            None => {
                let _ = write!(Json(out), "\\u{byte:04x}");
            }
        }
        start = index + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// The interim answer to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// One response, written into the connection's output buffer.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: Option<&'static str>,
    /// Extra headers (name, value); values must not contain CR or LF.
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    pub close: bool,
}

impl Response {
    pub fn no_content() -> Response {
        Response {
            status: 204,
            content_type: None,
            headers: Vec::new(),
            body: Vec::new(),
            close: false,
        }
    }

    pub fn json(status: u16, body: Vec<u8>) -> Response {
        Response {
            status,
            content_type: Some("application/json"),
            headers: Vec::new(),
            body,
            close: false,
        }
    }

    pub fn from_refusal(refusal: &Refusal, dialect: Dialect) -> Response {
        let mut response = Response::json(refusal.status(dialect), refusal.body(dialect));
        response.close = refusal.closes_connection();
        if let Some(seconds) = refusal.retry_after_s() {
            response.headers.push(("Retry-After", seconds.to_string()));
        }
        if let Refusal::MethodNotAllowed { allow } = refusal {
            response.headers.push(("Allow", (*allow).to_string()));
        }
        if let Refusal::Unauthorized = refusal {
            response
                .headers
                .push(("WWW-Authenticate", "Basic realm=\"ringest\"".to_string()));
        }
        if dialect == Dialect::V1 {
            let text: String = refusal
                .v1_error()
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .take(1024)
                .collect();
            response.headers.push(("X-Influxdb-Error", text));
        }
        response
    }

    /// Serialises the response. `head_only` omits the body (HEAD requests).
    pub fn write_to(&self, out: &mut Vec<u8>, request_id: &str, head_only: bool) {
        let _ = write!(
            Json(out),
            "HTTP/1.1 {} {}\r\nX-Influxdb-Version: {VERSION}\r\nX-Influxdb-Build: {BUILD}\r\nRequest-Id: {request_id}\r\nX-Request-Id: {request_id}\r\n",
            self.status,
            reason(self.status)
        );
        if let Some(content_type) = self.content_type {
            let _ = write!(Json(out), "Content-Type: {content_type}\r\n");
        }
        for (name, value) in &self.headers {
            let _ = write!(Json(out), "{name}: {value}\r\n");
        }
        if self.status != 204 && self.status >= 200 {
            let _ = write!(Json(out), "Content-Length: {}\r\n", self.body.len());
        }
        if self.close {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !head_only && self.status != 204 {
            out.extend_from_slice(&self.body);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: overload is 503 on /write and 429 on /api/v2/write, both with
    /// an integer Retry-After. Method: render the same refusal twice.
    #[test]
    fn overload_status_depends_on_dialect() {
        let refusal = Refusal::Overloaded {
            retry_after_s: 2,
            cause: Overload::WalPendingBytes,
        };
        let v1 = Response::from_refusal(&refusal, Dialect::V1);
        let v2 = Response::from_refusal(&refusal, Dialect::V2);
        assert_eq!(v1.status, 503);
        assert_eq!(v2.status, 429);
        assert!(v2.headers.contains(&("Retry-After", "2".to_string())));
    }

    /// Goal: a refusal has a metrics cause exactly when its status is 429 or
    /// 503, in every dialect, so each such answer is counted once. Method:
    /// one refusal of every variant (every overload), status vs `cause()`.
    #[test]
    fn cause_exactly_for_429_and_503() {
        let text = || String::from("x");
        let mut refusals = vec![
            Refusal::BadRequest("x"),
            Refusal::RequestLineTooLong,
            Refusal::HeadTooLarge,
            Refusal::VersionNotSupported,
            Refusal::TransferEncodingNotImplemented,
            Refusal::ExpectationFailed,
            Refusal::BodyTooLarge { limit: 1 },
            Refusal::LengthRequired,
            Refusal::NotFound,
            Refusal::MethodNotAllowed { allow: "GET" },
            Refusal::MissingDatabase,
            Refusal::MissingBucket,
            Refusal::BadDatabaseName {
                name: text(),
                detail: text(),
            },
            Refusal::BadPrecision {
                value: text(),
                dialect: Dialect::V1,
            },
            Refusal::BadParameter {
                name: "db",
                value: text(),
            },
            Refusal::DatabaseNotFound { name: text() },
            Refusal::Unauthorized,
            Refusal::Forbidden { database: text() },
            Refusal::UnsupportedEncoding { encoding: text() },
            Refusal::Gzip { detail: text() },
            Refusal::NotUtf8 { offset: 0 },
            Refusal::Lines {
                first_line: 1,
                message: text(),
                v1_error: text(),
            },
            Refusal::TooManyConnections,
            Refusal::ShuttingDown,
            Refusal::Unhealthy { cause: text() },
            Refusal::NoSpace,
            Refusal::Internal { cause: text() },
        ];
        refusals.extend(Overload::ALL.map(|cause| Refusal::Overloaded {
            retry_after_s: 1,
            cause,
        }));
        let mut causes = std::collections::HashSet::new();
        for refusal in &refusals {
            for dialect in [Dialect::V1, Dialect::V2, Dialect::Other] {
                let refused = matches!(refusal.status(dialect), 429 | 503);
                assert_eq!(
                    refused,
                    refusal.cause().is_some(),
                    "{refusal:?} {dialect:?}"
                );
            }
            causes.extend(refusal.cause().map(RefusalCause::index));
        }
        assert_eq!(
            causes.len(),
            RefusalCause::COUNT,
            "every cause is reachable"
        );
    }

    /// Goal: `RefusalCause::ALL` is in index order and its labels are
    /// distinct, so per-cause counter arrays and the exposition agree.
    /// Method: check every position and label.
    #[test]
    fn refusal_causes_are_indexed_and_labelled() {
        let mut labels = std::collections::HashSet::new();
        for (position, cause) in RefusalCause::ALL.iter().enumerate() {
            assert_eq!(cause.index(), position, "{cause:?}");
            assert!(labels.insert(cause.label()), "{cause:?}");
        }
    }

    /// Goal: error bodies are valid JSON even with quotes and control
    /// characters in the message. Method: escape a hostile string and
    /// check the exact output.
    #[test]
    fn json_string_escapes_everything_needed() {
        let mut out = Vec::new();
        json_string(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"a\\\"b\\\\c\\nd\\u0001é\""
        );
    }

    /// Goal: 204 carries no body and no Content-Length; every response has
    /// the version headers. Method: render one.
    #[test]
    fn no_content_has_version_headers_and_no_body() {
        let mut out = Vec::new();
        Response::no_content().write_to(&mut out, "id-1", false);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 204 No Content\r\n"));
        assert!(text.contains("X-Influxdb-Version: "));
        assert!(text.contains("X-Influxdb-Build: "));
        assert!(text.contains("Request-Id: id-1\r\n"));
        assert!(!text.contains("Content-Length"));
        assert!(text.ends_with("\r\n\r\n"));
    }
}
