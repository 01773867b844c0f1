//! Disk full for real: the data directory is a small ext4 filesystem
//! (a loop-mounted image file), filled by a file the test allocates while
//! writers load the real `ringest serve`. Observed over real HTTP: what
//! writers are told while the disk is full, that reads and health checks
//! keep answering, that writes resume by themselves once the file is
//! deleted (no restart), and, after `kill -9` and a restart, that every
//! acknowledged point is there exactly once and no refused one is.
//!
//! Needs root (mount). Where mounting is not possible the test says so and
//! passes, unless `RINGEST_REQUIRE_MOUNT=1` (set by `.ci/run`) makes that a
//! failure.

// Test process, not an executor thread: plain std I/O and clocks.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{config_file, query_series, Client, Server, TempDir};

const DB: &str = "full";
/// Persistence on and busy: a snapshot a second, so Parquet files and the
/// catalog are written (and fail) while the disk is full, and released WAL
/// segments are the other way space comes back.
const CONFIG_PERSISTING: &str =
    "[wal]\nsegment_bytes = 1048576\nbatch_bytes_max = 262144\npending_bytes_max = 1048576\n\
                                 [persist]\ninterval_ms = 1000\n";
/// Points per request.
const LINES: u64 = 200;
const WRITERS: u64 = 2;
/// Free space the filler leaves: less than one WAL segment (1 MiB below).
const LEAVE_BYTES: u64 = 256 << 10;
/// 1 MiB segments, so a few hundred KiB of writes need a new one; no
/// snapshot during the test (a snapshot would release WAL segments and free
/// space by itself, which is the other way out of a full disk).
const CONFIG: &str = "[wal]\nsegment_bytes = 1048576\nbatch_bytes_max = 262144\npending_bytes_max = 1048576\n\
                      [persist]\ninterval_ms = 3600000\nstore_bytes_trigger = 1073741824\nwal_bytes_trigger = 1073741824\n";

/// A loop-mounted ext4 image, unmounted on drop.
struct Mount {
    point: PathBuf,
}

impl Mount {
    /// `size` bytes of ext4 with no blocks reserved for root (the test runs
    /// as root, and reserved blocks would hide the full disk from it).
    fn new(dir: &TempDir, size: u64) -> Result<Mount, String> {
        let image = dir.path.join("disk.img");
        let point = dir.path.join("mnt");
        std::fs::create_dir_all(&point).map_err(|e| e.to_string())?;
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(size))
            .map_err(|e| e.to_string())?;
        run("mkfs.ext4", &["-q", "-m", "0", path_str(&image)])?;
        run("mount", &["-o", "loop", path_str(&image), path_str(&point)])?;
        Ok(Mount { point })
    }

    /// Bytes an unprivileged (and, with `-m 0`, any) writer can still use.
    fn available(&self) -> u64 {
        let path = std::ffi::CString::new(path_str(&self.point)).expect("path");
        // SAFETY: statvfs(3) on a NUL-terminated path into a zeroed struct.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
        assert_eq!(rc, 0, "statvfs {}", self.point.display());
        stat.f_bavail * stat.f_frsize
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(error) = run("umount", &[path_str(&self.point)]) {
            eprintln!("umount {}: {error}", self.point.display());
        }
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Takes all but `leave` bytes of the filesystem's free space (the server
/// writes meanwhile: a request too large by then is retried 64 KiB smaller).
fn fill(mount: &Mount, leave: u64) -> PathBuf {
    use std::os::fd::AsRawFd;
    let path = mount.point.join("filler");
    let file = std::fs::File::create(&path).expect("create filler");
    let mut len = mount.available().saturating_sub(leave);
    loop {
        // SAFETY: fallocate(2) on a file we own.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len as libc::off_t) };
        if rc == 0 {
            break;
        }
        let error = std::io::Error::last_os_error();
        assert_eq!(
            error.raw_os_error(),
            Some(libc::ENOSPC),
            "fallocate {len}: {error}"
        );
        assert!(len > 64 << 10, "cannot take the free space: {error}");
        len -= 64 << 10;
    }
    file.sync_all().expect("sync filler");
    path
}

/// What the writers saw, shared with the test.
#[derive(Default)]
struct Seen {
    /// Values of acknowledged points.
    acked: Mutex<Vec<u64>>,
    /// 503 "no space left on the WAL device" answers.
    no_space: AtomicU64,
    /// 204s after a no-space refusal on the same writer.
    resumed: AtomicU64,
    /// Answers that were neither 204 nor the no-space 503.
    other: Mutex<Vec<String>>,
    stop: AtomicBool,
}

/// Writer `w`: requests of `LINES` points with values unique across
/// writers, on one keep-alive connection, until told to stop. A refused
/// request is not re-sent: its points must never appear.
fn writer(server_addr: std::net::SocketAddr, w: u64, seen: Arc<Seen>) {
    let mut client = Client::connect(server_addr);
    let mut refused_before = false;
    // Timestamps within the last hour (inside the default retention).
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
        - 3_600_000_000_000;
    for request in 0.. {
        if seen.stop.load(Ordering::SeqCst) {
            return;
        }
        let first = (w << 40) + request * LINES;
        let body: String = (first..first + LINES)
            .map(|v| format!("disk,w=w{w} v={v}i {}\n", base + v))
            .collect();
        let response = client
            .send("POST", &format!("/write?db={DB}"), body.as_bytes())
            .unwrap_or_else(|| panic!("writer {w}: connection broke"));
        match response.status {
            204 => {
                seen.acked
                    .lock()
                    .expect("lock")
                    .extend(first..first + LINES);
                if refused_before {
                    seen.resumed.fetch_add(1, Ordering::SeqCst);
                }
            }
            503 if response.text().contains("no space left on the WAL device") => {
                assert_eq!(response.header("retry-after"), Some("1"));
                assert!(response
                    .header("content-type")
                    .is_some_and(|t| t.starts_with("application/json")));
                refused_before = true;
                seen.no_space.fetch_add(1, Ordering::SeqCst);
                // As a client honouring Retry-After would, but sooner.
                std::thread::sleep(Duration::from_millis(20));
            }
            status => {
                seen.other
                    .lock()
                    .expect("lock")
                    .push(format!("{status} {}", response.text()));
                return;
            }
        }
    }
}

/// Polls `done` (every 20 ms, up to 60 s): waiting for an event the test
/// cannot be told about otherwise.
fn wait_for(what: &str, seen: &Seen, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        let other = seen.other.lock().expect("lock").clone();
        assert!(other.is_empty(), "unexpected answers: {other:?}");
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `count`/`sum` equal `expected` (the acknowledged points), before and
/// after `kill -9` + restart.
fn stored_exactly_through_a_crash(server: &mut Server, expected: (u64, u64)) {
    assert_eq!(count_and_sum(server), expected, "before the crash");
    server.kill9();
    server.restart();
    assert_eq!(count_and_sum(server), expected, "after kill -9 and restart");
}

fn count_and_sum(server: &Server) -> (u64, u64) {
    let series = query_series(server, DB, "SELECT count(v), sum(v) FROM disk");
    let Some(row) = series.first().and_then(|s| s.values.first()) else {
        return (0, 0);
    };
    use simd_json::prelude::*;
    (
        row[1].as_u64().expect("count"),
        row[2].as_u64().expect("sum"),
    )
}

/// Mounts the test filesystem, or says why the test cannot run here
/// (`None`: skipped).
fn mount_or_skip(dir: &TempDir) -> Option<Mount> {
    match Mount::new(dir, 32 << 20) {
        Ok(mount) => Some(mount),
        Err(error) if std::env::var("RINGEST_REQUIRE_MOUNT").as_deref() != Ok("1") => {
            eprintln!("SKIPPED: cannot mount a loop filesystem here ({error}); set RINGEST_REQUIRE_MOUNT=1 to fail instead");
            None
        }
        Err(error) => panic!("cannot mount a loop filesystem: {error}"),
    }
}

/// Starts `WRITERS` writers against `server`.
fn start_writers(server: &Server, seen: &Arc<Seen>) -> Vec<std::thread::JoinHandle<()>> {
    (0..WRITERS)
        .map(|w| {
            let (addr, seen) = (server.addr, seen.clone());
            std::thread::spawn(move || writer(addr, w, seen))
        })
        .collect()
}

/// Stops the writers; the values of every acknowledged point.
fn stop_writers(seen: &Seen, writers: Vec<std::thread::JoinHandle<()>>) -> Vec<u64> {
    seen.stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.join().expect("writer thread");
    }
    let other = seen.other.lock().expect("lock").clone();
    assert!(other.is_empty(), "unexpected answers: {other:?}");
    seen.acked.lock().expect("lock").clone()
}

/// Goal: a data disk that fills during a load run is backpressure, not a
/// failure: writers get 503 + `Retry-After` + a JSON error naming the full
/// disk; `/health` fails naming it (so a load balancer sends writes
/// elsewhere) while `/ping` and queries keep answering; when space is freed
/// the same process accepts writes again by itself; nothing acknowledged is
/// lost or doubled and nothing refused is stored, through `kill -9` too.
/// Method: 32 MiB ext4 image, 1 shard, 2 writers; a file takes all but
/// 256 KiB of the free space; wait for refusals; check reads and health;
/// delete the file; wait until writers are acknowledged again; stop,
/// compare `count`/`sum` with the acknowledged points before and after
/// `kill -9` + restart.
#[test]
fn full_data_disk_refuses_writes_keeps_reads_and_resumes_by_itself() {
    let dir = TempDir::new("disk-full");
    let Some(mount) = mount_or_skip(&dir) else {
        return;
    };
    let config = config_file(&dir, CONFIG);
    let data = mount.point.join("data");
    let mut server = Server::start_in(&data, &["--shards", "1", "--config", &config]);

    let seen = Arc::new(Seen::default());
    let writers = start_writers(&server, &seen);
    let acked = || seen.acked.lock().expect("lock").len() as u64;
    wait_for("the first acknowledgements", &seen, || {
        acked() >= 10 * LINES
    });

    // The disk fills under load.
    let filler = fill(&mount, LEAVE_BYTES);
    wait_for("no-space refusals", &seen, || {
        seen.no_space.load(Ordering::SeqCst) >= 4
    });
    let health = server.request("GET", "/health", &[], b"");
    assert_eq!(health.status, 503, "{}", health.text());
    assert!(health.text().contains("\"status\":\"fail\""));
    assert!(
        health.text().contains("cannot make its next segment")
            && health.text().contains("No space left on device"),
        "{}",
        health.text()
    );
    assert_eq!(server.request("GET", "/ping", &[], b"").status, 204);
    assert_eq!(server.metric("ringest_wal_segment_failing"), 1);
    let acked_while_full = acked();
    let (count, _) = count_and_sum(&server);
    assert!(
        count >= acked_while_full,
        "a query while the disk is full sees every acknowledged point: {count} < {acked_while_full}"
    );

    // Space comes back; writes resume in the same process.
    std::fs::remove_file(&filler).expect("remove filler");
    wait_for("writes acknowledged again", &seen, || {
        seen.resumed.load(Ordering::SeqCst) >= 10
    });
    let health = server.request("GET", "/health", &[], b"");
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(server.metric("ringest_wal_segment_failing"), 0);
    let acked_values = stop_writers(&seen, writers);
    let expected = (acked_values.len() as u64, acked_values.iter().sum::<u64>());
    eprintln!(
        "{} points acknowledged, {} no-space refusals",
        expected.0,
        seen.no_space.load(Ordering::SeqCst)
    );
    stored_exactly_through_a_crash(&mut server, expected);
    drop(server);
    drop(mount);
}

/// Goal: the same with persistence running, so that every writer of the
/// data directory meets the full disk: Parquet snapshots fail (and are
/// retried, their rows kept in memory and in the WAL), the WAL cannot make
/// a segment, and once space is freed, snapshots succeed again, the WAL is
/// truncated behind them and writes resume, all in the same process; the
/// catalog and files stay readable: after `kill -9` every acknowledged
/// point is read back exactly once.
/// Method: as above with a snapshot every second and the filler taking
/// every free byte; wait until both a snapshot failed and a write was
/// refused; free; wait for acknowledgements and a snapshot after the
/// failures; compare `count`/`sum`, kill -9, restart, compare again.
#[test]
fn full_data_disk_with_persistence_running_recovers_by_itself() {
    let dir = TempDir::new("disk-full-persist");
    let Some(mount) = mount_or_skip(&dir) else {
        return;
    };
    let config = config_file(&dir, CONFIG_PERSISTING);
    let data = mount.point.join("data");
    let mut server = Server::start_in(&data, &["--shards", "1", "--config", &config]);
    let seen = Arc::new(Seen::default());
    let writers = start_writers(&server, &seen);
    let acked = || seen.acked.lock().expect("lock").len() as u64;
    wait_for("a first snapshot", &seen, || {
        acked() > 0 && server.metric("ringest_persist_snapshots_total") >= 1
    });

    let filler = fill(&mount, 0);
    wait_for("a failed snapshot and a refused write", &seen, || {
        server.metric("ringest_persist_failures_total") >= 1
            && seen.no_space.load(Ordering::SeqCst) >= 1
    });
    // Health answers (503 while a segment cannot be made; a WAL segment
    // a late snapshot releases may already have let it pass again).
    let health = server.request("GET", "/health", &[], b"");
    assert!(
        health.status == 200 || health.text().contains("cannot make its next segment"),
        "{} {}",
        health.status,
        health.text()
    );
    assert_eq!(server.request("GET", "/ping", &[], b"").status, 204);
    count_and_sum(&server); // Queries answer while the disk is full.
    let snapshots_while_full = server.metric("ringest_persist_snapshots_total");

    std::fs::remove_file(&filler).expect("remove filler");
    wait_for(
        "writes acknowledged and a snapshot after the disk was freed",
        &seen,
        || {
            seen.resumed.load(Ordering::SeqCst) >= 10
                && server.metric("ringest_persist_snapshots_total") > snapshots_while_full
        },
    );
    let health = server.request("GET", "/health", &[], b"");
    assert_eq!(health.status, 200, "{}", health.text());
    let acked_values = stop_writers(&seen, writers);
    let expected = (acked_values.len() as u64, acked_values.iter().sum::<u64>());
    eprintln!(
        "{} points acknowledged, {} no-space refusals, {} snapshot failures",
        expected.0,
        seen.no_space.load(Ordering::SeqCst),
        server.metric("ringest_persist_failures_total")
    );
    stored_exactly_through_a_crash(&mut server, expected);
    drop(server);
    drop(mount);
}
