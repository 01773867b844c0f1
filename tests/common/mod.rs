//! Shared test support: run the real `ringest` binary on 127.0.0.1 with its
//! own temporary data directory, and talk to it over real sockets.
//!
//! The server prints one line `ringest: ready on <addr> (<n> shards)` to
//! stdout once every shard listens; `Server::start` waits for that line, so
//! no test ever sleeps to order events.

// Tests are not shard code: std::fs and std::time are fine here (clippy.toml
// bans them on the server's executors).
#![allow(dead_code, clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A temporary directory removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "ringest-test-{label}-{}-{unique}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Writes `text` as `ringest.toml` in `dir`; the path, for `--config`.
pub fn config_file(dir: &TempDir, text: &str) -> String {
    let path = dir.path.join("ringest.toml");
    std::fs::write(&path, text).expect("write config");
    path.display().to_string()
}

/// A running `ringest serve` process.
pub struct Server {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    extra_args: Vec<String>,
    /// Extra environment of the process (kept by `restart`).
    env: Vec<(String, String)>,
    child: Option<Child>,
    /// Keeps the data directory alive as long as the server (when owned).
    _owned_dir: Option<TempDir>,
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ringest"))
}

/// A port that was free a moment ago on 127.0.0.1, and that this test
/// process has not handed out before: the tests of one binary run in
/// parallel, and two servers told the same port would both bind it (the
/// listeners use `SO_REUSEPORT`) or one would refuse to start.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind :0");
        let port = listener.local_addr().expect("local addr").port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

impl Server {
    /// Starts with a fresh data directory and the given extra arguments
    /// (e.g. `["--shards", "2"]`).
    pub fn start(extra_args: &[&str]) -> Server {
        let dir = TempDir::new("server");
        let data_dir = dir.path.join("data");
        let mut server = Server::start_in(&data_dir, extra_args);
        server._owned_dir = Some(dir);
        server
    }

    /// Starts on an existing data directory (for restart and crash tests).
    pub fn start_in(data_dir: &Path, extra_args: &[&str]) -> Server {
        Server::start_in_with_env(data_dir, extra_args, &[])
    }

    /// [`Server::start_in`] with extra environment variables, e.g. the
    /// test-only `RINGEST_TEST_FAULTS` (see `src/server.rs`).
    pub fn start_in_with_env(data_dir: &Path, extra_args: &[&str], env: &[(&str, &str)]) -> Server {
        let extra_args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (child, addr) = spawn(data_dir, &extra_args, &env);
        Server {
            addr,
            data_dir: data_dir.to_path_buf(),
            extra_args,
            env,
            child: Some(child),
            _owned_dir: None,
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// SIGKILL, as a crash: nothing gets to flush.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits (up to `limit`) for the process to exit by itself; its status.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut().expect("server running");
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// SIGTERM, and the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server running");
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        child.wait().expect("wait for server")
    }

    /// Starts again on the same data directory and arguments.
    pub fn restart(&mut self) {
        self.kill9();
        let (child, addr) = spawn(&self.data_dir, &self.extra_args, &self.env);
        self.child = Some(child);
        self.addr = addr;
    }

    /// The sum over shards of a metric's samples (`name{shard="…"} v`).
    pub fn metric(&self, name: &str) -> u64 {
        let text = self.request("GET", "/metrics", &[], b"").text();
        text.lines()
            .filter(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u64)
            .sum()
    }

    /// Waits until nothing written so far is only in memory: every shard
    /// snapshotted (at least `snapshots` in all) and holds no rows in
    /// memory. Polls `/metrics` (an event, bounded by 60 s), so a test
    /// never guesses how long persistence takes.
    pub fn wait_persisted(&self, snapshots: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if self.metric("ringest_store_bytes") == 0
                && self.metric("ringest_persist_snapshots_total") >= snapshots
            {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "rows still in memory after 60 s: store bytes {}, snapshots {}",
                self.metric("ringest_store_bytes"),
                self.metric("ringest_persist_snapshots_total")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).expect("connect to server");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("set timeout");
        stream.set_nodelay(true).expect("nodelay");
        stream
    }

    /// One request on a new connection (`Connection: close`); the whole response.
    pub fn request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        request_at(self.addr, method, target, headers, body)
    }

    pub fn write_v1(&self, query: &str, body: &str) -> Response {
        self.request("POST", &format!("/write?{query}"), &[], body.as_bytes())
    }

    pub fn write_v2(&self, query: &str, body: &str) -> Response {
        self.request(
            "POST",
            &format!("/api/v2/write?{query}"),
            &[],
            body.as_bytes(),
        )
    }

    /// `GET /query?q=…&…`; `query` is already URL-encoded.
    pub fn query(&self, query: &str) -> Response {
        self.request("GET", &format!("/query?{query}"), &[], b"")
    }
}

/// One request to `addr` on a new connection (`Connection: close`); the
/// whole response. For servers and for proxies in front of them.
pub fn request_at(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut stream = TcpStream::connect(addr).expect("connect to server");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("set timeout");
    stream.set_nodelay(true).expect("nodelay");
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes()).expect("send head");
    stream.write_all(body).expect("send body");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    Response::parse(&raw).expect("one complete response")
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The retention flag a server under test gets unless its test passes its
/// own: keep forever. Most tests write fixed timestamps (1970, 2026-01-01)
/// that the default retention (3 days) would refuse; the retention tests
/// pass `--retention-default-period` themselves.
fn retention_args(extra_args: &[&str]) -> &'static [&'static str] {
    if extra_args.contains(&"--retention-default-period") {
        &[]
    } else {
        &["--retention-default-period", "inf"]
    }
}

fn spawn(data_dir: &Path, extra_args: &[String], env: &[(String, String)]) -> (Child, SocketAddr) {
    let port = free_port();
    let borrowed: Vec<&str> = extra_args.iter().map(String::as_str).collect();
    let mut command = Command::new(binary());
    command
        .arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra_args)
        .args(retention_args(&borrowed))
        .env(
            "RUST_LOG",
            std::env::var("RINGEST_TEST_LOG").unwrap_or_else(|_| "warn".to_string()),
        )
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stderr(Stdio::inherit());
    spawn_ready(command)
}

impl Server {
    /// Starts an arbitrary `ringest serve` command line (its own working
    /// directory, arguments and environment; stdout is taken over) and
    /// waits for its ready line. `data_dir` is where the caller expects
    /// the data (used by `restart`, which runs the usual command line).
    pub fn start_command(command: Command, data_dir: &Path) -> Server {
        let (child, addr) = spawn_ready(command);
        Server {
            addr,
            data_dir: data_dir.to_path_buf(),
            extra_args: Vec::new(),
            env: Vec::new(),
            child: Some(child),
            _owned_dir: None,
        }
    }
}

/// Spawns `command` with stdout piped and waits for the ready line; the
/// child and the address it reported.
pub fn spawn_ready(mut command: Command) -> (Child, SocketAddr) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn ringest");
    let stdout = child.stdout.take().expect("stdout piped");
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(rest) = line.strip_prefix("ringest: ready on ") {
                    let addr = rest.split_whitespace().next().expect("address after ready");
                    break addr.parse::<SocketAddr>().expect("socket address");
                }
            }
            _ => {
                let status = child.wait().expect("wait");
                panic!("ringest exited before ready: {status}");
            }
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

/// A parsed HTTP response (possibly preceded by `100 Continue`).
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// Parses one response from the start of `raw`; `None` if incomplete.
    pub fn parse(raw: &[u8]) -> Option<Response> {
        Response::parse_prefix(raw).map(|(response, _)| response)
    }

    /// Parses one response; also returns the bytes it used. Handles
    /// Content-Length, chunked, and read-to-close bodies.
    pub fn parse_prefix(raw: &[u8]) -> Option<(Response, usize)> {
        let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = std::str::from_utf8(&raw[..head_end]).ok()?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next()?;
        let status: u16 = status_line.split_whitespace().nth(1)?.parse().ok()?;
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .filter_map(|l| {
                let (name, value) = l.split_once(':')?;
                Some((name.trim().to_ascii_lowercase(), value.trim().to_string()))
            })
            .collect();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let (body, used) = if let Some(length) = header("content-length") {
            let length: usize = length.parse().ok()?;
            if raw.len() < head_end + length {
                return None;
            }
            (raw[head_end..head_end + length].to_vec(), head_end + length)
        } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            let mut body = Vec::new();
            let mut at = head_end;
            loop {
                let line_end = raw[at..].windows(2).position(|w| w == b"\r\n")? + at;
                let size_text = std::str::from_utf8(&raw[at..line_end]).ok()?;
                let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
                at = line_end + 2;
                if size == 0 {
                    let trailer_end = raw[at..].windows(2).position(|w| w == b"\r\n")? + at;
                    at = trailer_end + 2;
                    break;
                }
                if raw.len() < at + size + 2 {
                    return None;
                }
                body.extend_from_slice(&raw[at..at + size]);
                at += size + 2;
            }
            (body, at)
        } else if status == 204 || status == 304 || (100..200).contains(&status) {
            (Vec::new(), head_end)
        } else {
            (raw[head_end..].to_vec(), raw.len())
        };
        Some((
            Response {
                status,
                headers,
                body,
            },
            used,
        ))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Percent-encodes a query-string value.
pub fn encode(value: &str) -> String {
    let mut out = String::new();
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

/// One keep-alive connection that sends requests one after another.
pub struct Client {
    stream: TcpStream,
    /// Bytes read past the end of the previous response.
    pending: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect to server");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("set timeout");
        stream.set_nodelay(true).expect("nodelay");
        Client {
            stream,
            pending: Vec::new(),
        }
    }

    /// Sends one request and reads its response; `None` if the connection
    /// broke before a whole response arrived.
    pub fn send(&mut self, method: &str, target: &str, body: &[u8]) -> Option<Response> {
        let head = format!(
            "{method} {target} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.stream.write_all(head.as_bytes()).ok()?;
        self.stream.write_all(body).ok()?;
        loop {
            if let Some((response, used)) = Response::parse_prefix(&self.pending) {
                self.pending.drain(..used);
                return Some(response);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// One series of a `/query` answer.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub tags: Vec<(String, String)>,
    pub columns: Vec<String>,
    pub values: Vec<Vec<simd_json::OwnedValue>>,
}

impl Series {
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Runs one InfluxQL statement on `db` (nanosecond epochs) and returns the
/// series of its first result; panics unless the answer is 200 without an
/// error.
pub fn query_series(server: &Server, db: &str, q: &str) -> Vec<Series> {
    use simd_json::prelude::*;
    let response = server.query(&format!("db={}&epoch=ns&q={}", encode(db), encode(q)));
    assert_eq!(response.status, 200, "{q}: {}", response.text());
    let mut bytes = response.body.clone();
    let value = simd_json::to_owned_value(&mut bytes).expect("query answer is JSON");
    let result = value
        .get("results")
        .and_then(|r| r.as_array())
        .and_then(|r| r.first())
        .unwrap_or_else(|| panic!("{q}: no result in {}", response.text()));
    assert!(result.get("error").is_none(), "{q}: {}", response.text());
    let mut out = Vec::new();
    for series in result
        .get("series")
        .and_then(|s| s.as_array())
        .into_iter()
        .flatten()
    {
        let text = |v: &simd_json::OwnedValue| v.as_str().unwrap_or_default().to_string();
        out.push(Series {
            name: series.get("name").map(text).unwrap_or_default(),
            tags: series
                .get("tags")
                .and_then(|t| t.as_object())
                .map(|t| t.iter().map(|(k, v)| (k.to_string(), text(v))).collect())
                .unwrap_or_default(),
            columns: series
                .get("columns")
                .and_then(|c| c.as_array())
                .map(|c| c.iter().map(text).collect())
                .unwrap_or_default(),
            values: series
                .get("values")
                .and_then(|v| v.as_array())
                .map(|rows| {
                    rows.iter()
                        .map(|row| row.as_array().cloned().unwrap_or_default())
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
    out
}

/// Starts the real binary on `data_dir` and reads its stdout to the end
/// of start-up: `Ok` (then stopped) if it printed its ready line, `Err`
/// with its stderr if it exited first.
pub fn start_outcome(data_dir: &std::path::Path, extra_args: &[&str]) -> Result<(), String> {
    start_outcome_with_env(data_dir, extra_args, &[])
}

/// [`start_outcome`] with extra environment variables.
pub fn start_outcome_with_env(
    data_dir: &std::path::Path,
    extra_args: &[&str],
    env: &[(&str, &str)],
) -> Result<(), String> {
    let mut command = Command::new(binary());
    command
        .envs(env.iter().copied())
        .arg("serve")
        .args(extra_args)
        .args(retention_args(extra_args));
    if !extra_args.contains(&"--listen") {
        command
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", free_port()));
    }
    let mut child = command
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringest");
    let stdout = child.stdout.take().expect("stdout piped");
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line.starts_with("ringest: ready on "));
    if ready {
        let _ = child.kill();
        let _ = child.wait();
        return Ok(());
    }
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    let status = child.wait().expect("wait for ringest");
    assert!(!status.success(), "exited 0 without being ready: {stderr}");
    Err(stderr)
}

/// A one-shard server whose whole in-flight request budget (64 KiB) is
/// held by one admitted request: its `100 Continue` arrived, its body never
/// will while the returned stream lives. Every further write is refused
/// for `request_bytes_in_flight`.
pub fn server_with_budget_held() -> (Server, TempDir, TcpStream) {
    let dir = TempDir::new("pressure");
    let config = config_file(
        &dir,
        "[http]\nbody_bytes_max = 65536\n\n[backpressure]\ninflight_request_bytes_max = 65536\n",
    );
    let server = Server::start(&["--shards", "1", "--config", &config]);
    let mut holder = server.connect();
    holder
        .write_all(b"POST /write?db=x HTTP/1.1\r\nHost: t\r\nContent-Length: 65536\r\nExpect: 100-continue\r\n\r\n")
        .expect("send head");
    let mut interim = [0u8; 25];
    holder.read_exact(&mut interim).expect("100 Continue");
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    (server, dir, holder)
}

/// The Python interpreter of the tests that run real clients, Parquet
/// readers or the S3 server: `RINGEST_PYTHON`, else the venv `.ci/run`
/// creates at the repo root. Panics, naming what the test needs
/// (`needs`), when there is none.
pub fn python(needs: &str) -> PathBuf {
    if let Some(path) = std::env::var_os("RINGEST_PYTHON") {
        let path = PathBuf::from(path);
        assert!(
            path.exists(),
            "RINGEST_PYTHON={} does not exist",
            path.display()
        );
        return path;
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with {needs}: set RINGEST_PYTHON, or run .ci/run (it creates .venv at the \
         repo root and installs them)"
    );
    venv
}

/// A `/write?db=` of `body` on a fresh connection: its status, or `None`
/// when the connection failed (the server died meanwhile: crash tests).
pub fn try_write(server: &Server, db: &str, body: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(server.addr).ok()?;
    let head = format!(
        "POST /write?db={db} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body.as_bytes()).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    Response::parse(&raw).map(|r| r.status)
}

/// Runs the `ringest` binary with `args` (e.g. `["wal", "verify", dir]`)
/// to completion.
pub fn run_cli(args: &[&str]) -> std::process::Output {
    Command::new(binary())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ringest")
}
