//! A minimal HTTP/1.1 client over one keep-alive `TcpStream`.
//!
//! Owns one connection and its reusable read buffer. Sends a prepared head
//! and body with `writev`, reads exactly one response (Content-Length,
//! chunked, or no body for 204/304), and keeps the connection unless the
//! server said `Connection: close`. Limits: response head `HEAD_BYTES_MAX`,
//! response body `body_bytes_max` (set per use: small for writes, larger for
//! verification queries).

use std::io::{self, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

const HEAD_BYTES_MAX: usize = 64 * 1024;

#[derive(Debug)]
pub enum ClientError {
    /// The address did not resolve to anything.
    Resolve,
    /// `connect(2)` failed.
    Connect(io::Error),
    /// Sending the request failed (reset, broken pipe).
    Send(io::Error),
    /// Reading the response failed.
    Receive(io::Error),
    /// No complete response within the read timeout.
    Timeout,
    /// The server closed the connection before a complete response.
    ClosedEarly,
    /// The status line or a header could not be parsed.
    MalformedResponse,
    /// The response head exceeded `HEAD_BYTES_MAX`.
    HeadTooLarge,
    /// The response body exceeded the caller's limit.
    BodyTooLarge,
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Resolve => write!(f, "address did not resolve"),
            ClientError::Connect(e) => write!(f, "connect: {e}"),
            ClientError::Send(e) => write!(f, "send: {e}"),
            ClientError::Receive(e) => write!(f, "receive: {e}"),
            ClientError::Timeout => write!(f, "timed out waiting for the response"),
            ClientError::ClosedEarly => write!(f, "connection closed before a complete response"),
            ClientError::MalformedResponse => write!(f, "malformed response"),
            ClientError::HeadTooLarge => {
                write!(f, "response head larger than {HEAD_BYTES_MAX} bytes")
            }
            ClientError::BodyTooLarge => write!(f, "response body over the limit"),
        }
    }
}

/// Where requests go: `http://host:port` resolved once.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// `host:port` as given, for the Host header.
    pub authority: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, ClientError> {
        let rest = url.strip_prefix("http://").unwrap_or(url);
        let authority = rest.split('/').next().unwrap_or(rest).to_string();
        let addr = authority
            .to_socket_addrs()
            .map_err(|_| ClientError::Resolve)?
            .next()
            .ok_or(ClientError::Resolve)?;
        Ok(Target { addr, authority })
    }
}

pub struct HttpConnection {
    stream: TcpStream,
    buffer: Vec<u8>,
    /// Bytes of `buffer` that hold received data not yet consumed.
    filled: usize,
    body: Vec<u8>,
    body_bytes_max: usize,
    /// The server asked to close, or the stream is in an unknown state.
    pub broken: bool,
}

impl HttpConnection {
    pub fn connect(
        target: &Target,
        timeout: Duration,
        body_bytes_max: usize,
    ) -> Result<HttpConnection, ClientError> {
        let stream =
            TcpStream::connect_timeout(&target.addr, timeout).map_err(ClientError::Connect)?;
        stream.set_nodelay(true).map_err(ClientError::Connect)?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(ClientError::Connect)?;
        stream
            .set_write_timeout(Some(timeout))
            .map_err(ClientError::Connect)?;
        Ok(HttpConnection {
            stream,
            buffer: vec![0; HEAD_BYTES_MAX],
            filled: 0,
            body: Vec::new(),
            body_bytes_max,
            broken: false,
        })
    }

    /// Sends one request and reads its response; returns the status. The
    /// response body is in `body()` until the next call.
    pub fn exchange(&mut self, head: &[u8], body: &[u8]) -> Result<u16, ClientError> {
        let result = self.send(head, body).and_then(|()| self.receive());
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }

    fn send(&mut self, head: &[u8], body: &[u8]) -> Result<(), ClientError> {
        let (mut head, mut body) = (head, body);
        while !head.is_empty() || !body.is_empty() {
            let slices = [IoSlice::new(head), IoSlice::new(body)];
            let written = self
                .stream
                .write_vectored(&slices)
                .map_err(ClientError::Send)?;
            if written == 0 {
                return Err(ClientError::Send(io::ErrorKind::WriteZero.into()));
            }
            let from_head = written.min(head.len());
            head = &head[from_head..];
            body = &body[written - from_head..];
        }
        Ok(())
    }

    fn fill(&mut self) -> Result<(), ClientError> {
        if self.filled == self.buffer.len() {
            return Err(ClientError::HeadTooLarge);
        }
        match self.stream.read(&mut self.buffer[self.filled..]) {
            Ok(0) => Err(ClientError::ClosedEarly),
            Ok(n) => {
                self.filled += n;
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(ClientError::Timeout)
            }
            Err(e) => Err(ClientError::Receive(e)),
        }
    }

    /// Drops `n` consumed bytes from the front of the buffer.
    fn consume(&mut self, n: usize) {
        self.buffer.copy_within(n..self.filled, 0);
        self.filled -= n;
    }

    fn receive(&mut self) -> Result<u16, ClientError> {
        self.body.clear();
        loop {
            let head_end = loop {
                if let Some(at) = memchr::memmem::find(&self.buffer[..self.filled], b"\r\n\r\n") {
                    break at + 4;
                }
                self.fill()?;
            };
            let head =
                Head::parse(&self.buffer[..head_end]).ok_or(ClientError::MalformedResponse)?;
            self.consume(head_end);
            if head.close {
                self.broken = true;
            }
            if (100..200).contains(&head.status) {
                continue; // 100 Continue and friends: the real response follows.
            }
            if head.chunked {
                self.read_chunked()?;
            } else if let Some(length) = head.content_length {
                self.read_exact_body(length)?;
            } else if head.status != 204 && head.status != 304 {
                // No framing: the body runs to the close.
                self.broken = true;
                self.read_to_close()?;
            }
            return Ok(head.status);
        }
    }

    fn take_body_bytes(&mut self, n: usize) -> Result<(), ClientError> {
        if self.body.len() + n > self.body_bytes_max {
            return Err(ClientError::BodyTooLarge);
        }
        self.body.extend_from_slice(&self.buffer[..n]);
        self.consume(n);
        Ok(())
    }

    fn read_exact_body(&mut self, mut length: usize) -> Result<(), ClientError> {
        if length > self.body_bytes_max {
            return Err(ClientError::BodyTooLarge);
        }
        while length > 0 {
            if self.filled == 0 {
                self.fill()?;
            }
            let n = self.filled.min(length);
            self.take_body_bytes(n)?;
            length -= n;
        }
        Ok(())
    }

    fn read_line(&mut self) -> Result<usize, ClientError> {
        loop {
            if let Some(at) = memchr::memmem::find(&self.buffer[..self.filled], b"\r\n") {
                return Ok(at);
            }
            self.fill()?;
        }
    }

    fn read_chunked(&mut self) -> Result<(), ClientError> {
        loop {
            let line_end = self.read_line()?;
            let line = std::str::from_utf8(&self.buffer[..line_end])
                .map_err(|_| ClientError::MalformedResponse)?;
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size =
                usize::from_str_radix(size_text, 16).map_err(|_| ClientError::MalformedResponse)?;
            self.consume(line_end + 2);
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    let end = self.read_line()?;
                    self.consume(end + 2);
                    if end == 0 {
                        return Ok(());
                    }
                }
            }
            self.read_exact_body(size)?;
            let end = self.read_line()?;
            if end != 0 {
                return Err(ClientError::MalformedResponse);
            }
            self.consume(2);
        }
    }

    fn read_to_close(&mut self) -> Result<(), ClientError> {
        loop {
            let n = self.filled;
            self.take_body_bytes(n)?;
            match self.fill() {
                Ok(()) => {}
                Err(ClientError::ClosedEarly) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
}

struct Head {
    status: u16,
    content_length: Option<usize>,
    chunked: bool,
    close: bool,
}

impl Head {
    fn parse(bytes: &[u8]) -> Option<Head> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.split("\r\n");
        let status_line = lines.next()?;
        if !status_line.starts_with("HTTP/1.") {
            return None;
        }
        let status = status_line.split(' ').nth(1)?.parse().ok()?;
        let mut head = Head {
            status,
            content_length: None,
            chunked: false,
            close: false,
        };
        for line in lines.filter(|l| !l.is_empty()) {
            let (name, value) = line.split_once(':')?;
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                head.content_length = Some(value.parse().ok()?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                head.chunked = value.eq_ignore_ascii_case("chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                head.close = value.eq_ignore_ascii_case("close");
            }
        }
        Some(head)
    }
}

/// One GET on a fresh connection with extra header lines (each ending in
/// CRLF); (status, body).
pub fn get_with_headers(
    target: &Target,
    path: &str,
    headers: &str,
    timeout: Duration,
    body_bytes_max: usize,
) -> Result<(u16, Vec<u8>), ClientError> {
    let mut connection = HttpConnection::connect(target, timeout, body_bytes_max)?;
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ringest-bench\r\n{headers}\r\n",
        target.authority
    );
    let status = connection.exchange(head.as_bytes(), b"")?;
    Ok((status, std::mem::take(&mut connection.body)))
}

/// One POST on a fresh connection with extra header lines; (status, body).
pub fn post(
    target: &Target,
    path: &str,
    headers: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<(u16, Vec<u8>), ClientError> {
    let mut connection = HttpConnection::connect(target, timeout, 1 << 20)?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ringest-bench\r\n{headers}Content-Length: {}\r\n\r\n",
        target.authority,
        body.len()
    );
    let status = connection.exchange(head.as_bytes(), body)?;
    Ok((status, std::mem::take(&mut connection.body)))
}

/// Percent-encodes a query-string value.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}
