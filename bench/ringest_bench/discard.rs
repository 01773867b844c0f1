//! The built-in reference server: `discard` and `count` modes.
//!
//! Owns a std-thread HTTP/1.1 server (one thread per connection) that the
//! load generator can target instead of a real database.
//!
//! - `discard` reads every request body and answers 204; it stores nothing,
//!   so it measures the generator's own ceiling, and verification against it
//!   must report every point missing (this is how the harness proves its
//!   verification can fail).
//! - `count` also parses each body (gunzipping it when asked) and counts
//!   points per series key; `/query` answers `SELECT count(..) ... GROUP BY *`
//!   in InfluxDB 1.x's JSON shape. With `drop_points` it silently loses that
//!   many points first, to show verification catches a single lost point.
//!
//! Limits: `CONNECTIONS_MAX` connections, `HEAD_BYTES_MAX` per head,
//! `BODY_BYTES_MAX` per body and per decompressed body. It answers only
//! Content-Length framed requests (411 otherwise), which is what the
//! generator sends.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const CONNECTIONS_MAX: usize = 4096;
const HEAD_BYTES_MAX: usize = 64 * 1024;
const BODY_BYTES_MAX: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreMode {
    /// Read and drop every body; store nothing.
    Discard,
    /// Count points per series; answer count queries.
    Count,
}

struct Shared {
    mode: StoreMode,
    /// Points still to be dropped silently (count mode).
    drop_points: AtomicU64,
    connections: AtomicUsize,
    /// Series key (measurement and tags as written) → points stored.
    counts: Mutex<HashMap<Vec<u8>, u64>>,
}

/// Accepts connections forever on `listener`.
pub fn serve(listener: TcpListener, mode: StoreMode, drop_points: u64) {
    let shared = Arc::new(Shared {
        mode,
        drop_points: AtomicU64::new(drop_points),
        connections: AtomicUsize::new(0),
        counts: Mutex::new(HashMap::new()),
    });
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if shared.connections.fetch_add(1, Ordering::AcqRel) >= CONNECTIONS_MAX {
            shared.connections.fetch_sub(1, Ordering::AcqRel);
            let mut stream = stream;
            let _ = stream.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            continue;
        }
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || {
            let _ = serve_connection(stream, &shared);
            shared.connections.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// Starts `serve` on a background thread on 127.0.0.1 and returns its address.
pub fn spawn_local(mode: StoreMode, drop_points: u64) -> io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || serve(listener, mode, drop_points));
    Ok(addr)
}

fn serve_connection(mut stream: TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buffer = vec![0u8; HEAD_BYTES_MAX];
    let mut filled = 0usize;
    let mut body: Vec<u8> = Vec::new();
    let mut decompressor = libdeflater::Decompressor::new();
    let mut plain: Vec<u8> = Vec::new();
    loop {
        let head_end = loop {
            if let Some(at) = memchr::memmem::find(&buffer[..filled], b"\r\n\r\n") {
                break at + 4;
            }
            if filled == buffer.len() {
                stream.write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
                return Ok(());
            }
            let n = stream.read(&mut buffer[filled..])?;
            if n == 0 {
                return Ok(());
            }
            filled += n;
        };
        let head = RequestHead::parse(&buffer[..head_end]);
        let Some(head) = head else {
            stream.write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )?;
            return Ok(());
        };
        let Some(length) = head.content_length.or((!head.chunked).then_some(0)) else {
            stream.write_all(
                b"HTTP/1.1 411 Length Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )?;
            return Ok(());
        };
        if length > BODY_BYTES_MAX {
            stream.write_all(
                b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )?;
            return Ok(());
        }
        // Body: what is already buffered, then straight from the socket.
        body.clear();
        let buffered = (filled - head_end).min(length);
        body.extend_from_slice(&buffer[head_end..head_end + buffered]);
        let rest_start = head_end + buffered;
        buffer.copy_within(rest_start..filled, 0);
        filled -= rest_start;
        if body.len() < length {
            let have = body.len();
            body.resize(length, 0);
            stream.read_exact(&mut body[have..])?;
        }
        let is_write = head.path.starts_with("/write") || head.path.starts_with("/api/v2/write");
        if is_write {
            if shared.mode == StoreMode::Count {
                let lines: &[u8] = if head.gzip {
                    match gunzip(&mut decompressor, &body, &mut plain) {
                        Some(()) => &plain,
                        None => {
                            stream.write_all(
                                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
                            )?;
                            continue;
                        }
                    }
                } else {
                    &body
                };
                count_lines(shared, lines);
            }
            stream.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")?;
        } else if head.path.starts_with("/query") {
            let json = query_json(shared);
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                json.len()
            );
            stream.write_all(response.as_bytes())?;
            stream.write_all(json.as_bytes())?;
        } else if head.path.starts_with("/ping") || head.path.starts_with("/health") {
            stream.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")?;
        } else {
            stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")?;
        }
    }
}

fn gunzip(
    decompressor: &mut libdeflater::Decompressor,
    body: &[u8],
    out: &mut Vec<u8>,
) -> Option<()> {
    // ISIZE: the uncompressed length mod 2^32, in the last four bytes.
    let trailer: [u8; 4] = body.get(body.len().checked_sub(4)?..)?.try_into().ok()?;
    let size = u32::from_le_bytes(trailer) as usize;
    if size > BODY_BYTES_MAX {
        return None;
    }
    out.resize(size, 0);
    let used = decompressor.gzip_decompress(body, out).ok()?;
    out.truncate(used);
    Some(())
}

fn count_lines(shared: &Shared, lines: &[u8]) {
    let mut local: HashMap<&[u8], u64> = HashMap::new();
    for line in lines.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() || line[0] == b'#' {
            continue;
        }
        let key_end = series_key_end(line);
        if shared
            .drop_points
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(1)
            })
            .is_ok()
        {
            continue;
        }
        *local.entry(&line[..key_end]).or_default() += 1;
    }
    let mut counts = shared
        .counts
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for (key, n) in local {
        *counts.entry(key.to_vec()).or_default() += n;
    }
}

/// Index of the first unescaped space: the end of measurement and tags.
fn series_key_end(line: &[u8]) -> usize {
    let mut at = 0;
    while at < line.len() {
        match line[at] {
            b'\\' => at += 2,
            b' ' => return at,
            _ => at += 1,
        }
    }
    line.len()
}

/// `GROUP BY *` count answer in InfluxDB 1.x's shape (one series per key).
fn query_json(shared: &Shared) -> String {
    use std::fmt::Write;
    let counts = shared
        .counts
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if counts.is_empty() {
        return "{\"results\":[{\"statement_id\":0}]}\n".to_string();
    }
    let mut keys: Vec<(&Vec<u8>, &u64)> = counts.iter().collect();
    keys.sort();
    let mut out = String::from("{\"results\":[{\"statement_id\":0,\"series\":[");
    for (i, (key, count)) in keys.into_iter().enumerate() {
        let key = String::from_utf8_lossy(key);
        let mut parts = key.split(',');
        let name = parts.next().unwrap_or("");
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{{\"name\":\"{}\",\"tags\":{{", json_escape(name));
        for (j, tag) in parts.enumerate() {
            let (k, v) = tag.split_once('=').unwrap_or((tag, ""));
            if j > 0 {
                out.push(',');
            }
            let _ = write!(out, "\"{}\":\"{}\"", json_escape(k), json_escape(v));
        }
        let _ = write!(
            out,
            "}},\"columns\":[\"time\",\"count\"],\"values\":[[0,{count}]]}}"
        );
    }
    out.push_str("]}]}\n");
    out
}

fn json_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

struct RequestHead {
    path: String,
    content_length: Option<usize>,
    chunked: bool,
    gzip: bool,
}

impl RequestHead {
    fn parse(bytes: &[u8]) -> Option<RequestHead> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.split("\r\n");
        let mut request_line = lines.next()?.split(' ');
        let _method = request_line.next()?;
        let path = request_line.next()?.to_string();
        let mut head = RequestHead {
            path,
            content_length: None,
            chunked: false,
            gzip: false,
        };
        for line in lines.filter(|l| !l.is_empty()) {
            let (name, value) = line.split_once(':')?;
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                head.content_length = Some(value.parse().ok()?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                head.chunked = true;
            } else if name.eq_ignore_ascii_case("content-encoding") {
                head.gzip = value.eq_ignore_ascii_case("gzip");
            }
        }
        Some(head)
    }
}
