//! Real clients end to end (issue 4 acceptance, and issue 6's v1 `query`).
//!
//! Each test starts ringest through `tests/common`, runs one script of
//! `tests/clients/` with a Python that has the PyPI packages `influxdb` and
//! `influxdb-client`, and demands exit status 0 and the script's `OK` line.
//! The scripts write with the unchanged client library and read the points
//! back through `/query`, failing with the reason on any difference.
//!
//! The interpreter: `RINGEST_PYTHON`, else `.venv/bin/python` at the repo
//! root. Neither present is a failure, never a skip: the acceptance is that
//! the real clients work. `.ci/run` creates the venv:
//! `python3 -m venv .venv && .venv/bin/pip install influxdb-client influxdb`.
//!
//! `RINGEST_E2E_ADDR=<host:port>` runs the scripts against that server
//! instead of a fresh ringest (to check the scripts themselves against a real
//! InfluxDB; 1.6.7 has no `/api/v2/write`, so only the v1 test there).

// Tests are not shard code: std::fs and std::time are fine here (clippy.toml
// bans them on the server's executors).
#![allow(clippy::disallowed_methods)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A client script that has not finished by then is killed and fails the test.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    common::python("influxdb-client and influxdb")
}

/// The server under test: a fresh ringest, or `RINGEST_E2E_ADDR`. The
/// ringest (if any) lives as long as the returned guard.
fn server_under_test() -> (Option<common::Server>, SocketAddr) {
    match std::env::var("RINGEST_E2E_ADDR") {
        Ok(addr) => {
            let addr = addr
                .parse()
                .unwrap_or_else(|e| panic!("RINGEST_E2E_ADDR={addr}: {e}"));
            (None, addr)
        }
        Err(_) => {
            let server = common::Server::start(&[]);
            let addr = server.addr;
            (Some(server), addr)
        }
    }
}

/// Runs `tests/clients/<script>` with `python` and `args`; kills it after SCRIPT_TIMEOUT.
fn run_script(python: &Path, script: &str, args: &[String]) -> Output {
    let child = Command::new(python)
        .arg(repo_root().join("tests/clients").join(script))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {script}: {e}"));
    let pid = child.id();
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match finished.recv_timeout(SCRIPT_TIMEOUT) {
        Ok(output) => output.unwrap_or_else(|e| panic!("wait for {script}: {e}")),
        Err(_) => {
            // SAFETY: plain kill(2) on our own child's pid, which the waiting
            // thread has not reaped (it is still blocked in wait).
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
            panic!("{script} did not finish within {SCRIPT_TIMEOUT:?}");
        }
    }
}

fn assert_script_ok(script: &str, output: &Output, ok_line: &str) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.lines().any(|line| line.starts_with(ok_line)),
        "{script} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
}

/// Goal: the v1 Python client (`influxdb` 5.3.2) works unchanged:
/// `create_database`, `write_points(time_precision='s', batch_size=3)` with a
/// user and password, and `query` returns exactly the written points (every
/// field type, an escaped tag value, an integer beyond 2^53).
/// Method: run tests/clients/v1_client.py against a fresh ringest; it
/// compares what `query` returns with what it wrote and exits non-zero on
/// any difference.
#[test]
fn v1_python_client_writes_and_reads_back() {
    let python = python();
    let (_server, addr) = server_under_test();
    let args = [
        "--host".to_string(),
        addr.ip().to_string(),
        "--port".to_string(),
        addr.port().to_string(),
        "--db".to_string(),
        "e2e_v1".to_string(),
    ];
    let output = run_script(&python, "v1_client.py", &args);
    assert_script_ok("v1_client.py", &output, "v1_client: OK 8 points");
}

/// Goal: the v2 Python client (`influxdb-client`) works unchanged: gzip
/// bodies, the batching writer (1 200 points in batches of 500, the last
/// flushed at close) and a synchronous write with `precision=s`, nothing
/// lost.
/// Method: run tests/clients/v2_client.py against a fresh ringest; any
/// error callback fails it, then it reads back over `/query` and compares
/// count, sums, and the last point of one series exactly.
#[test]
fn v2_python_client_gzip_batching_writes_everything() {
    let python = python();
    let (_server, addr) = server_under_test();
    let args = [
        "--url".to_string(),
        format!("http://{addr}"),
        "--bucket".to_string(),
        "e2e_v2".to_string(),
    ];
    let output = run_script(&python, "v2_client.py", &args);
    assert_script_ok("v2_client.py", &output, "v2_client: OK 1201 points");
}
