//! `ringest-bench chaos`: mixed load with crashes (issue 18 item 4).
//!
//! Owns one ringest process (started, killed with SIGKILL every
//! `crash_every` seconds, started again on the same data directory and
//! port) and, against it, every kind of client at once:
//!
//! | client | what it sends |
//! |---|---|
//! | `w0` | `/write` (v1), plain, keep-alive, `precision=ns` |
//! | `w1` | `/write`, gzip, keep-alive, `precision=u`, `u`/`p` credentials |
//! | `w2` | `/api/v2/write`, plain, keep-alive, `precision=ms`, `Authorization: Token` |
//! | `w3` | `/api/v2/write`, gzip, a new connection per request, `precision=us` |
//! | `w4` | `/write`, plain, a new connection per request, `precision=ms` |
//! | `w5` | a slow client: `/write` whose head and body arrive in 8 pieces over ~1.6 s |
//! | queries | `/query` (GET and POST): counts, `GROUP BY time`, `SHOW …`, `last … GROUP BY` |
//! | bad | malformed line protocol, bad gzip, unknown path, wrong method, no database, bad precision, a 100 GB Content-Length, bad InfluxQL, a garbage request line, a bad chunk size: each must get its own status |
//! | slowloris | connections that send half a head and stall: the server must close each within `http.head_timeout_ms` (10 s) + 5 s |
//!
//! **Ledger.** Writer `wN` writes point `n` (0, 1, 2, …; never twice) as
//! `chaos,writer=wN,s=<n mod S> v=<n>i,f=<n>.5,ok=true <t>` where `t` is
//! `start + n / S` milliseconds in the writer's precision. Each point is
//! *acknowledged* (its request got 204), or *in doubt* (sent, and the
//! answer was not 204: a crash, a 429/503 that may have reached some shards,
//! a broken connection), or never sent.
//!
//! **Check** (after the last crash and restart): per writer, `count(v)` and
//! `sum(v)` per 100-ms bucket of `t`. A bucket without points in doubt must
//! match the acknowledged points exactly; any other bucket is read raw
//! (`SELECT v`), and there every acknowledged point must appear exactly
//! once, every point in doubt at most once, and nothing else. So: zero lost,
//! zero duplicated, zero phantom points.
//!
//! **Watched**: every `sample_interval` the server's RSS and open fds, bytes
//! on disk, answers so far (CSV); per process life, its RSS and fds just
//! before the kill; at the end, the fds of the long-running last process
//! once idle against those of a fresh process (a leak shows as the
//! difference).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use simd_json::prelude::*;

use crate::client::{self, HttpConnection, Target};
use crate::soak;

const DB: &str = "chaos";
/// Bucket of the check, in milliseconds of point time.
const BUCKET_MS: u64 = 100;
const TIMEOUT: Duration = Duration::from_secs(60);

/// What `chaos` is told (see `main.rs`).
pub struct Settings {
    pub ringest: PathBuf,
    pub data_dir: PathBuf,
    pub server_args: Vec<String>,
    pub duration: Duration,
    pub crash_every: Duration,
    /// Points per second offered by the five paced writers together.
    pub rate: u64,
    /// Series per writer.
    pub series: u64,
    /// Points per request.
    pub lines: u64,
    pub sample_interval: Duration,
    pub csv: PathBuf,
    pub report: PathBuf,
    pub ready_timeout: Duration,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    V1,
    V2,
}

#[derive(Clone, Copy)]
enum Precision {
    Ns,
    Us,
    Ms,
}

impl Precision {
    fn per_ms(self) -> u64 {
        match self {
            Precision::Ns => 1_000_000,
            Precision::Us => 1_000,
            Precision::Ms => 1,
        }
    }
    fn query(self, api: Api) -> &'static str {
        match (self, api) {
            (Precision::Ns, _) => "ns",
            (Precision::Us, Api::V1) => "u",
            (Precision::Us, Api::V2) => "us",
            (Precision::Ms, _) => "ms",
        }
    }
}

#[derive(Clone, Copy)]
struct WriterSpec {
    id: u64,
    api: Api,
    gzip: bool,
    /// A new connection per request.
    churn: bool,
    precision: Precision,
    credentials: bool,
    /// Head and body sent in pieces, 200 ms apart.
    slow: bool,
}

const WRITERS: [WriterSpec; 6] = [
    WriterSpec {
        id: 0,
        api: Api::V1,
        gzip: false,
        churn: false,
        precision: Precision::Ns,
        credentials: false,
        slow: false,
    },
    WriterSpec {
        id: 1,
        api: Api::V1,
        gzip: true,
        churn: false,
        precision: Precision::Us,
        credentials: true,
        slow: false,
    },
    WriterSpec {
        id: 2,
        api: Api::V2,
        gzip: false,
        churn: false,
        precision: Precision::Ms,
        credentials: true,
        slow: false,
    },
    WriterSpec {
        id: 3,
        api: Api::V2,
        gzip: true,
        churn: true,
        precision: Precision::Us,
        credentials: true,
        slow: false,
    },
    WriterSpec {
        id: 4,
        api: Api::V1,
        gzip: false,
        churn: true,
        precision: Precision::Ms,
        credentials: false,
        slow: false,
    },
    WriterSpec {
        id: 5,
        api: Api::V1,
        gzip: false,
        churn: true,
        precision: Precision::Ns,
        credentials: false,
        slow: true,
    },
];

/// Point states in a writer's ledger.
const SENT: u8 = 1;
const ACKED: u8 = 2;

/// Answers so far, by kind (shared by every client thread).
#[derive(Default)]
struct Counters {
    write_requests: AtomicU64,
    points_acked: AtomicU64,
    /// 429/503 with Retry-After.
    write_refused: AtomicU64,
    /// No answer (connection refused, reset, timeout): mostly around crashes.
    write_unanswered: AtomicU64,
    queries_ok: AtomicU64,
    queries_unanswered: AtomicU64,
    bad_as_expected: AtomicU64,
    bad_unanswered: AtomicU64,
    slowloris_closed: AtomicU64,
    /// Anything a correct server must not answer; examples in `Shared::unexpected`.
    unexpected: AtomicU64,
}

struct Shared {
    target: Target,
    settings_lines: u64,
    series: u64,
    start_ms: u64,
    stop: AtomicBool,
    counters: Counters,
    unexpected: Mutex<Vec<String>>,
}

impl Shared {
    fn unexpected(&self, what: String) {
        self.counters.unexpected.fetch_add(1, Ordering::Relaxed);
        let mut examples = self.unexpected.lock().expect("lock");
        if examples.len() < 20 {
            examples.push(what);
        }
    }
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// One writer's ledger: the state of each point it made.
struct Ledger {
    spec: WriterSpec,
    states: Vec<u8>,
}

/// The server process, restarted on the same port and data directory.
struct Server {
    settings_ringest: PathBuf,
    data_dir: PathBuf,
    args: Vec<String>,
    addr: SocketAddr,
    log: PathBuf,
    child: Option<Child>,
}

impl Server {
    fn start(&mut self, ready_timeout: Duration) -> Result<Duration, String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let started = Instant::now();
        let child = Command::new(&self.settings_ringest)
            .arg("serve")
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{}: {e}", self.settings_ringest.display()))?;
        self.child = Some(child);
        let target = Target::parse(&self.addr.to_string()).map_err(|e| e.to_string())?;
        loop {
            if let Ok((200, _)) =
                client::get_with_headers(&target, "/ready", "", Duration::from_secs(2), 1 << 16)
            {
                return Ok(started.elapsed());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Err(format!(
                    "ringest exited during start-up: {status} (log: {})",
                    self.log.display()
                ));
            }
            if started.elapsed() > ready_timeout {
                return Err(format!(
                    "ringest not ready after {ready_timeout:?} (log: {})",
                    self.log.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One process life: how it ended.
struct Life {
    pid: u32,
    lived_s: f64,
    ready_ms: u128,
    rss_kib: u64,
    fds: u64,
}

/// Runs the whole thing; the report's verdict is the exit status (0: zero
/// lost, duplicated or phantom points and no unexpected answer).
pub fn run(settings: &Settings) -> Result<bool, String> {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("free port: {e}"))?;
    let log = settings.data_dir.with_extension("log");
    let mut server = Server {
        settings_ringest: settings.ringest.clone(),
        data_dir: settings.data_dir.clone(),
        args: settings.server_args.clone(),
        addr,
        log,
        child: None,
    };
    let first_ready = server.start(settings.ready_timeout)?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let shared = Arc::new(Shared {
        target: Target::parse(&addr.to_string()).map_err(|e| e.to_string())?,
        settings_lines: settings.lines,
        series: settings.series,
        // One hour back, on a whole second (bucket-aligned).
        start_ms: (now_ms - 3_600_000) / 1000 * 1000,
        stop: AtomicBool::new(false),
        counters: Counters::default(),
        unexpected: Mutex::new(Vec::new()),
    });

    // Queries start at once: the database must exist before any write.
    let target = &shared.target;
    match client::post(
        target,
        "/query",
        "Content-Type: application/x-www-form-urlencoded\r\n",
        format!("q={}", client::encode(&format!("CREATE DATABASE {DB}"))).as_bytes(),
        TIMEOUT,
    ) {
        Ok((200, _)) => {}
        other => return Err(format!("CREATE DATABASE {DB}: {other:?}")),
    }
    let paced = WRITERS.iter().filter(|w| !w.slow).count() as u64;
    let per_writer = (settings.rate / paced).max(1);
    let writers: Vec<_> = WRITERS
        .iter()
        .map(|&spec| {
            let shared = shared.clone();
            std::thread::spawn(move || writer(&shared, spec, per_writer))
        })
        .collect();
    let others: Vec<std::thread::JoinHandle<()>> = vec![
        {
            let shared = shared.clone();
            std::thread::spawn(move || queries(&shared))
        },
        {
            let shared = shared.clone();
            std::thread::spawn(move || bad_requests(&shared))
        },
        {
            let shared = shared.clone();
            std::thread::spawn(move || slowloris(&shared))
        },
    ];

    // Samples and crashes.
    let mut csv = std::fs::File::create(&settings.csv)
        .map_err(|e| format!("{}: {e}", settings.csv.display()))?;
    writeln!(
        csv,
        "elapsed_s,pid,rss_kib,fds,disk_bytes,wal_bytes,parquet_bytes,points_acked,write_requests,write_refused,write_unanswered,queries_ok,bad_as_expected,slowloris_closed,unexpected,restarts"
    )
    .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut life_started = Instant::now();
    let mut lives: Vec<Life> = Vec::new();
    let mut ready_ms = first_ready.as_millis();
    let mut next_sample = settings.sample_interval;
    let mut next_crash = settings.crash_every;
    while started.elapsed() < settings.duration {
        std::thread::sleep(Duration::from_millis(50));
        let elapsed = started.elapsed();
        if elapsed >= next_sample {
            next_sample += settings.sample_interval;
            sample(
                &mut csv,
                &shared,
                &server,
                &settings.data_dir,
                elapsed,
                lives.len(),
            )?;
        }
        // No crash in the last moments: the last process gets some load.
        let quiet_end = (settings.crash_every / 2).min(Duration::from_secs(5));
        if elapsed >= next_crash && elapsed + quiet_end < settings.duration {
            next_crash += settings.crash_every;
            let pid = server.pid();
            let (rss_kib, fds) = (soak::rss_kib(pid), soak::fd_count(pid));
            server.kill9();
            lives.push(Life {
                pid,
                lived_s: life_started.elapsed().as_secs_f64(),
                ready_ms,
                rss_kib,
                fds,
            });
            eprintln!(
                "chaos: {:.0} s: killed pid {pid} (RSS {} MiB, {fds} fds); restarting",
                elapsed.as_secs_f64(),
                rss_kib / 1024
            );
            ready_ms = server.start(settings.ready_timeout)?.as_millis();
            life_started = Instant::now();
        }
    }
    shared.stop.store(true, Ordering::SeqCst);
    let ledgers: Vec<Ledger> = writers
        .into_iter()
        .map(|w| w.join().expect("writer thread"))
        .collect();
    for other in others {
        other.join().expect("client thread");
    }

    // The last process, idle now: its fds against a fresh process's.
    std::thread::sleep(Duration::from_secs(2));
    let pid = server.pid();
    let idle_fds_long = soak::fd_count(pid);
    let (rss_kib, fds) = (soak::rss_kib(pid), idle_fds_long);
    server.kill9();
    lives.push(Life {
        pid,
        lived_s: life_started.elapsed().as_secs_f64(),
        ready_ms,
        rss_kib,
        fds,
    });
    let final_ready = server.start(settings.ready_timeout)?;
    std::thread::sleep(Duration::from_secs(2));
    let idle_fds_fresh = soak::fd_count(server.pid());
    eprintln!("chaos: load stopped; checking every point");
    let (checked, check_error) = match check(&shared, &ledgers) {
        Ok(checked) => (checked, None),
        Err(error) => (Vec::new(), Some(error)),
    };
    let report = Report {
        settings,
        elapsed: started.elapsed(),
        shared: &shared,
        lives: &lives,
        final_ready,
        idle_fds_long,
        idle_fds_fresh,
        checked: &checked,
        check_error: check_error.as_deref(),
    };
    let text = report.markdown();
    std::fs::write(&settings.report, &text)
        .map_err(|e| format!("{}: {e}", settings.report.display()))?;
    println!("{text}");
    Ok(report.passed())
}

fn sample(
    csv: &mut std::fs::File,
    shared: &Shared,
    server: &Server,
    data_dir: &Path,
    elapsed: Duration,
    restarts: usize,
) -> Result<(), String> {
    let pid = server.pid();
    let (rss, fds) = (soak::rss_kib(pid), soak::fd_count(pid));
    let disk = soak::disk_usage(data_dir).allocated;
    let c = &shared.counters;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    writeln!(
        csv,
        "{:.1},{pid},{rss},{fds},{},{},{},{},{},{},{},{},{},{},{},{restarts}",
        elapsed.as_secs_f64(),
        disk.total(),
        disk.wal,
        disk.parquet,
        get(&c.points_acked),
        get(&c.write_requests),
        get(&c.write_refused),
        get(&c.write_unanswered),
        get(&c.queries_ok),
        get(&c.bad_as_expected),
        get(&c.slowloris_closed),
        get(&c.unexpected),
    )
    .map_err(|e| e.to_string())
}

/// The lines of points `first..first + count` of writer `spec`.
fn body(shared: &Shared, spec: WriterSpec, first: u64, count: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(count as usize * 64);
    for n in first..first + count {
        let t = (shared.start_ms + n / shared.series) * spec.precision.per_ms();
        let s = n % shared.series;
        let _ = writeln!(
            out,
            "chaos,writer=w{},s={s} v={n}i,f={n}.5,ok=true {t}",
            spec.id
        );
    }
    out
}

fn write_path(spec: WriterSpec) -> String {
    let precision = spec.precision.query(spec.api);
    match (spec.api, spec.credentials) {
        (Api::V1, false) => format!("/write?db={DB}&precision={precision}"),
        (Api::V1, true) => {
            format!("/write?db={DB}&rp=autogen&precision={precision}&u=chaos&p=chaos")
        }
        (Api::V2, _) => format!("/api/v2/write?bucket={DB}&org=chaos&precision={precision}"),
    }
}

fn write_head(shared: &Shared, spec: WriterSpec, body_len: usize) -> String {
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ringest-bench-chaos\r\nContent-Length: {body_len}\r\n",
        write_path(spec),
        shared.target.authority
    );
    if spec.gzip {
        head.push_str("Content-Encoding: gzip\r\n");
    }
    if spec.api == Api::V2 {
        head.push_str("Authorization: Token chaos\r\n");
    }
    if spec.churn {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    head
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut compressor = libdeflater::Compressor::new(libdeflater::CompressionLvl::fastest());
    let mut out = vec![0; compressor.gzip_compress_bound(bytes.len())];
    let n = compressor
        .gzip_compress(bytes, &mut out)
        .expect("bound is enough");
    out.truncate(n);
    out
}

/// One writer: requests of `lines` new points, paced at `rate` points/s
/// (the slow writer: as fast as its pieces allow), until told to stop.
fn writer(shared: &Shared, spec: WriterSpec, rate: u64) -> Ledger {
    let lines = shared.settings_lines;
    let mut states: Vec<u8> = Vec::new();
    let mut connection: Option<HttpConnection> = None;
    let started = Instant::now();
    let c = &shared.counters;
    while !shared.stopping() {
        let first = states.len() as u64;
        if !spec.slow {
            // Pacing: point `first` is due at first / rate seconds.
            let due = Duration::from_secs_f64(first as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait.min(Duration::from_millis(100)));
                continue;
            }
        }
        let plain = body(shared, spec, first, lines);
        let payload = if spec.gzip { gzip(&plain) } else { plain };
        let head = write_head(shared, spec, payload.len());
        if connection.is_none() && !spec.slow {
            match HttpConnection::connect(&shared.target, TIMEOUT, 1 << 20) {
                Ok(fresh) => connection = Some(fresh),
                Err(_) => {
                    // The server is down (a crash): nothing sent.
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            }
        }
        states.resize(states.len() + lines as usize, SENT);
        c.write_requests.fetch_add(1, Ordering::Relaxed);
        let answer = if spec.slow {
            slow_exchange(shared, head.as_bytes(), &payload)
        } else {
            let conn = connection.as_mut().expect("connected above");
            conn.exchange(head.as_bytes(), &payload)
                .map(|status| (status, String::from_utf8_lossy(conn.body()).into_owned()))
                .map_err(|e| e.to_string())
        };
        match answer {
            Ok((204, _)) => {
                states[first as usize..].fill(ACKED);
                c.points_acked.fetch_add(lines, Ordering::Relaxed);
            }
            Ok((429 | 503, _)) => {
                c.write_refused.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok((status, body)) => {
                shared.unexpected(format!("w{}: write answered {status}: {body}", spec.id));
            }
            Err(_) => {
                c.write_unanswered.fetch_add(1, Ordering::Relaxed);
                connection = None;
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if spec.churn || connection.as_ref().is_some_and(|c| c.broken) {
            connection = None;
        }
    }
    Ledger { spec, states }
}

/// A new connection to the server, reads bounded by `TIMEOUT`.
fn connect(shared: &Shared) -> Result<TcpStream, String> {
    let stream =
        TcpStream::connect_timeout(&shared.target.addr, TIMEOUT).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    Ok(stream)
}

/// Sends `head` and `body` in four pieces each, 100 ms apart, on a new
/// connection (`Connection: close`), and reads the answer to the end.
fn slow_exchange(shared: &Shared, head: &[u8], body: &[u8]) -> Result<(u16, String), String> {
    let mut stream = connect(shared)?;
    for part in [head, body] {
        let step = part.len().div_ceil(4).max(1);
        for piece in part.chunks(step) {
            stream.write_all(piece).map_err(|e| e.to_string())?;
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no status line in {:?}", text.get(..80)))?;
    Ok((status, text))
}

/// Dashboard-like queries, one every 500 ms, GET and POST; each must be a
/// 200 without an error inside (or unanswered while the server restarts).
fn queries(shared: &Shared) {
    let statements = [
        "SELECT count(v) FROM chaos WHERE writer = 'w0'".to_string(),
        "SELECT mean(f) FROM chaos WHERE time > now() - 2h GROUP BY time(1m)".to_string(),
        "SELECT last(v) FROM chaos GROUP BY writer".to_string(),
        "SHOW MEASUREMENTS".to_string(),
        "SHOW TAG VALUES FROM chaos WITH KEY = \"writer\"".to_string(),
        "SHOW DATABASES".to_string(),
        format!(
            "SELECT max(v), min(v) FROM chaos WHERE writer = 'w2' AND time >= {}ms GROUP BY time(10s)",
            shared.start_ms
        ),
    ];
    let mut i = 0;
    while !shared.stopping() {
        let q = &statements[i % statements.len()];
        let answer = if i % 2 == 0 {
            client::get_with_headers(
                &shared.target,
                &format!("/query?db={DB}&q={}", client::encode(q)),
                "",
                TIMEOUT,
                64 << 20,
            )
        } else {
            client::post(
                &shared.target,
                &format!("/query?db={DB}"),
                "Content-Type: application/x-www-form-urlencoded\r\n",
                format!("q={}", client::encode(q)).as_bytes(),
                TIMEOUT,
            )
        };
        match answer {
            Ok((200, body)) if !contains(&body, b"\"error\"") => {
                shared.counters.queries_ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok((status, body)) => shared.unexpected(format!(
                "query {q:?} answered {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            )),
            Err(_) => {
                shared
                    .counters
                    .queries_unanswered
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Bad requests, one every 100 ms, each on a new connection, each with the
/// status it must get.
fn bad_requests(shared: &Shared) {
    let host = &shared.target.authority;
    let post = |path: &str, headers: &str, body: &[u8]| -> Vec<u8> {
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        request
    };
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("bad line protocol", post("/write?db=chaos_bad", "", b"this is not line protocol\n"), 400),
        ("bad gzip", post("/write?db=chaos_bad", "Content-Encoding: gzip\r\n", b"not gzip at all"), 400),
        ("unknown path", format!("GET /nope HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes(), 404),
        ("GET /write", format!("GET /write?db=chaos_bad HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes(), 405),
        ("no database", post("/write", "", b"m v=1\n"), 400),
        ("bad precision", post("/api/v2/write?bucket=chaos_bad&precision=xx", "", b"m v=1\n"), 400),
        (
            "100 GB Content-Length",
            format!("POST /write?db=chaos_bad HTTP/1.1\r\nHost: {host}\r\nContent-Length: 100000000000\r\n\r\n").into_bytes(),
            413,
        ),
        ("bad InfluxQL", format!("GET /query?db={DB}&q=SELEC%20nonsense HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes(), 400),
        ("garbage request line", b"BLAH\r\n\r\n".to_vec(), 400),
        (
            "bad chunk size",
            format!("POST /write?db=chaos_bad HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").into_bytes(),
            400,
        ),
    ];
    let mut i = 0;
    while !shared.stopping() {
        let (name, request, expected) = &cases[i % cases.len()];
        match raw_exchange(shared, request) {
            Ok(status) if status == *expected => {
                shared
                    .counters
                    .bad_as_expected
                    .fetch_add(1, Ordering::Relaxed);
            }
            Ok(status) => shared.unexpected(format!("{name}: {status}, expected {expected}")),
            Err(_) => {
                shared
                    .counters
                    .bad_unanswered
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends `request` on a new connection and reads the status line.
fn raw_exchange(shared: &Shared, request: &[u8]) -> Result<u16, String> {
    let mut stream = connect(shared)?;
    stream.write_all(request).map_err(|e| e.to_string())?;
    let mut buffer = [0u8; 64];
    let mut filled = 0;
    while filled < 12 {
        match stream.read(&mut buffer[filled..]) {
            Ok(0) => return Err("closed before a status line".into()),
            Ok(n) => filled += n,
            Err(e) => return Err(e.to_string()),
        }
    }
    std::str::from_utf8(&buffer[9..12])
        .ok()
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            format!(
                "no status in {:?}",
                String::from_utf8_lossy(&buffer[..filled])
            )
        })
}

/// Connections that send half a head and stall, one every 5 s, at most 8
/// open; each must be closed by the server within head timeout + 5 s.
fn slowloris(shared: &Shared) {
    const LIMIT: Duration = Duration::from_secs(15);
    let mut open: Vec<(TcpStream, Instant)> = Vec::new();
    let mut last_open = Instant::now() - Duration::from_secs(5);
    while !shared.stopping() {
        if open.len() < 8 && last_open.elapsed() >= Duration::from_secs(5) {
            last_open = Instant::now();
            if let Ok(mut stream) = TcpStream::connect_timeout(&shared.target.addr, TIMEOUT) {
                let half = format!(
                    "POST /write?db=chaos_bad HTTP/1.1\r\nHost: {}\r\n",
                    shared.target.authority
                );
                if stream.write_all(half.as_bytes()).is_ok() && stream.set_nonblocking(true).is_ok()
                {
                    open.push((stream, Instant::now()));
                }
            }
        }
        open.retain_mut(|(stream, opened)| {
            let mut buffer = [0u8; 512];
            let closed = loop {
                match stream.read(&mut buffer) {
                    Ok(0) => break true,
                    Ok(_) => continue, // An answer (408) before the close.
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
                    Err(_) => break true, // Reset: closed (or the server crashed).
                }
            };
            if closed {
                shared
                    .counters
                    .slowloris_closed
                    .fetch_add(1, Ordering::Relaxed);
                return false;
            }
            if opened.elapsed() > LIMIT {
                shared.unexpected(format!("a stalled head was still open after {LIMIT:?}"));
                return false;
            }
            true
        });
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What the check found, per writer.
struct Checked {
    writer: u64,
    sent: u64,
    acked: u64,
    in_doubt: u64,
    doubt_stored: u64,
    buckets: u64,
    raw_buckets: u64,
    lost: u64,
    duplicated: u64,
    phantom: u64,
}

/// Per writer: `count`/`sum` per bucket, raw values where points are in
/// doubt or the sums disagree.
fn check(shared: &Shared, ledgers: &[Ledger]) -> Result<Vec<Checked>, String> {
    let mut out = Vec::new();
    let per_bucket = BUCKET_MS * shared.series;
    for ledger in ledgers {
        let states = &ledger.states;
        let sent = states.len() as u64;
        let buckets = sent.div_ceil(per_bucket);
        let end_ms = shared.start_ms + buckets * BUCKET_MS;
        let q = format!(
            "SELECT count(v), sum(v) FROM chaos WHERE writer = 'w{}' AND time >= {}ms AND time < {end_ms}ms GROUP BY time({BUCKET_MS}ms) fill(0)",
            ledger.spec.id, shared.start_ms
        );
        let rows = query_rows(shared, &q)?;
        let mut stored = vec![(0u64, 0u64); buckets as usize];
        for row in rows {
            let time = row
                .first()
                .and_then(|v| v.as_u64())
                .ok_or("bucket without time")?;
            let b = ((time - shared.start_ms) / BUCKET_MS) as usize;
            let count = row.get(1).and_then(|v| v.as_u64()).unwrap_or(0);
            let sum = row.get(2).and_then(|v| v.as_u64()).unwrap_or(0);
            if b < stored.len() {
                stored[b] = (count, sum);
            } else if count > 0 {
                return Err(format!(
                    "w{}: {count} points after the last one sent",
                    ledger.spec.id
                ));
            }
        }
        let mut checked = Checked {
            writer: ledger.spec.id,
            sent,
            acked: states.iter().filter(|&&s| s == ACKED).count() as u64,
            in_doubt: states.iter().filter(|&&s| s == SENT).count() as u64,
            doubt_stored: 0,
            buckets,
            raw_buckets: 0,
            lost: 0,
            duplicated: 0,
            phantom: 0,
        };
        for (b, &(count, sum)) in stored.iter().enumerate() {
            let first = b as u64 * per_bucket;
            let last = (first + per_bucket).min(sent);
            let (mut acked, mut acked_sum, mut doubt) = (0u64, 0u64, 0u64);
            for n in first..last {
                match states[n as usize] {
                    ACKED => {
                        acked += 1;
                        acked_sum += n;
                    }
                    _ => doubt += 1,
                }
            }
            if doubt == 0 && count == acked && sum == acked_sum {
                continue;
            }
            // Account for every point of the bucket: one (millisecond,
            // series) cell holds exactly one point `n`, so its count says
            // how often `n` is stored and its sum says it is `n`. (An
            // aggregate, not a raw SELECT: it folds while scanning, with no
            // row limit however many files the bucket's time range spans.)
            checked.raw_buckets += 1;
            let from = shared.start_ms + b as u64 * BUCKET_MS;
            let q = format!(
                "SELECT count(v), sum(v) FROM chaos WHERE writer = 'w{}' AND time >= {from}ms AND time < {}ms GROUP BY time(1ms), s",
                ledger.spec.id,
                from + BUCKET_MS
            );
            let mut seen = vec![0u64; (last - first) as usize];
            for (tags, rows) in query_all_series(shared, &q)? {
                let series: u64 = tags
                    .iter()
                    .find(|(k, _)| k == "s")
                    .and_then(|(_, v)| v.parse().ok())
                    .ok_or("a series without its s tag")?;
                for row in rows {
                    let time = row
                        .first()
                        .and_then(|v| v.as_u64())
                        .ok_or("cell without time")?;
                    let count = row.get(1).and_then(|v| v.as_u64()).unwrap_or(0);
                    if count == 0 {
                        continue;
                    }
                    let sum = row.get(2).and_then(|v| v.as_u64()).unwrap_or(0);
                    let n = (time - shared.start_ms) * shared.series + series;
                    if n < first || n >= last || sum != n * count {
                        checked.phantom += count;
                    } else {
                        seen[(n - first) as usize] += count;
                    }
                }
            }
            for (i, &times) in seen.iter().enumerate() {
                let state = states[first as usize + i];
                match (state, times) {
                    (ACKED, 0) => checked.lost += 1,
                    (_, 2..) => checked.duplicated += 1,
                    (SENT, 1) => checked.doubt_stored += 1,
                    _ => {}
                }
            }
        }
        out.push(checked);
    }
    Ok(out)
}

/// The `values` of the first series of a one-statement answer.
fn query_rows(shared: &Shared, q: &str) -> Result<Vec<Vec<simd_json::OwnedValue>>, String> {
    Ok(query_all_series(shared, q)?
        .into_iter()
        .next()
        .map(|(_, rows)| rows)
        .unwrap_or_default())
}

/// Each series of a one-statement answer: its tags and its `values`.
type SeriesRows = (Vec<(String, String)>, Vec<Vec<simd_json::OwnedValue>>);

fn query_all_series(shared: &Shared, q: &str) -> Result<Vec<SeriesRows>, String> {
    let (status, mut body) = client::get_with_headers(
        &shared.target,
        &format!("/query?db={DB}&epoch=ms&q={}", client::encode(q)),
        "",
        Duration::from_secs(600),
        1 << 30,
    )
    .map_err(|e| format!("{q}: {e}"))?;
    if status != 200 {
        return Err(format!("{q}: {status} {}", String::from_utf8_lossy(&body)));
    }
    let value = simd_json::to_owned_value(&mut body).map_err(|e| format!("{q}: {e}"))?;
    let result = value
        .get("results")
        .and_then(|r| r.as_array())
        .and_then(|r| r.first())
        .ok_or_else(|| format!("{q}: no result"))?;
    if let Some(error) = result.get("error") {
        return Err(format!("{q}: {error}"));
    }
    let mut out = Vec::new();
    for series in result
        .get("series")
        .and_then(|s| s.as_array())
        .into_iter()
        .flatten()
    {
        let tags = series
            .get("tags")
            .and_then(|t| t.as_object())
            .map(|t| {
                t.iter()
                    .map(|(k, v)| (k.to_string(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let rows = series
            .get("values")
            .and_then(|v| v.as_array())
            .map(|rows| {
                rows.iter()
                    .map(|r| r.as_array().cloned().unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default();
        out.push((tags, rows));
    }
    Ok(out)
}

struct Report<'a> {
    settings: &'a Settings,
    elapsed: Duration,
    shared: &'a Shared,
    lives: &'a [Life],
    final_ready: Duration,
    idle_fds_long: u64,
    idle_fds_fresh: u64,
    checked: &'a [Checked],
    /// The check could not be completed (a query failed).
    check_error: Option<&'a str>,
}

impl Report<'_> {
    fn passed(&self) -> bool {
        let c = &self.shared.counters;
        c.unexpected.load(Ordering::Relaxed) == 0
            && self.check_error.is_none()
            && self
                .checked
                .iter()
                .all(|k| k.lost == 0 && k.duplicated == 0 && k.phantom == 0)
            && self.idle_fds_long <= self.idle_fds_fresh
    }

    fn markdown(&self) -> String {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let s = self.settings;
        let mut out = String::new();
        let _ = std::fmt::Write::write_fmt(
            &mut out,
            format_args!(
                "# chaos: mixed load with crashes\n\n\
                 Verdict: **{}**\n\n\
                 Settings: {:.0} s, a SIGKILL + restart every {:.0} s, {} points/s offered by 5 paced writers + 1 slow writer, \
                 {} points per request, {} series per writer; server `{}` with `{}`.\n\n\
                 | answers | count |\n|---|---|\n\
                 | write requests | {} |\n| points acknowledged | {} |\n| writes refused (429/503) | {} |\n\
                 | writes unanswered (crashes) | {} |\n| queries answered 200 | {} |\n| queries unanswered (crashes) | {} |\n\
                 | bad requests answered as expected | {} |\n| bad requests unanswered (crashes) | {} |\n\
                 | stalled heads closed by the server | {} |\n| **unexpected answers** | {} |\n| SIGKILLs + restarts | {} |\n\n",
                if self.passed() { "PASS" } else { "FAIL" },
                self.elapsed.as_secs_f64(),
                s.crash_every.as_secs_f64(),
                s.rate,
                s.lines,
                s.series,
                s.ringest.display(),
                s.server_args.join(" "),
                get(&c.write_requests),
                get(&c.points_acked),
                get(&c.write_refused),
                get(&c.write_unanswered),
                get(&c.queries_ok),
                get(&c.queries_unanswered),
                get(&c.bad_as_expected),
                get(&c.bad_unanswered),
                get(&c.slowloris_closed),
                get(&c.unexpected),
                self.lives.len(),
            ),
        );
        for example in self.shared.unexpected.lock().expect("lock").iter() {
            out.push_str(&format!("- unexpected: {example}\n"));
        }
        if let Some(error) = self.check_error {
            out.push_str(&format!(
                "\n**The check could not be completed**: {error}\n"
            ));
        }
        out.push_str("\n| writer | sent | acknowledged | in doubt | in doubt, stored | buckets | read raw | lost | duplicated | phantom |\n|---|---|---|---|---|---|---|---|---|---|\n");
        for k in self.checked {
            out.push_str(&format!(
                "| w{} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                k.writer,
                k.sent,
                k.acked,
                k.in_doubt,
                k.doubt_stored,
                k.buckets,
                k.raw_buckets,
                k.lost,
                k.duplicated,
                k.phantom
            ));
        }
        out.push_str("\nProcess lives (RSS and open fds just before the SIGKILL; the last one after the load stopped):\n\n| life | pid | lived s | ready after start ms | RSS MiB | fds |\n|---|---|---|---|---|---|\n");
        for (i, life) in self.lives.iter().enumerate() {
            out.push_str(&format!(
                "| {} | {} | {:.0} | {} | {} | {} |\n",
                i + 1,
                life.pid,
                life.lived_s,
                life.ready_ms,
                life.rss_kib / 1024,
                life.fds
            ));
        }
        out.push_str(&format!(
            "\nOpen fds once idle: the last process {} vs a fresh process on the same data {} (ready {} ms after start).\n",
            self.idle_fds_long,
            self.idle_fds_fresh,
            self.final_ready.as_millis()
        ));
        out
    }
}
