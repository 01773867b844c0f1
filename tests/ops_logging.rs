//! What the real binary writes to stderr when stderr is not a terminal
//! (journald, a pipe, a file): no colour codes, no warning for the normal
//! restart, no timestamps under systemd, and `server.log_format = "json"`.

// Tests are not shard code: std::fs is fine here.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::Read;
use std::process::{Command, Stdio};

use common::{config_file, free_port, TempDir};

/// Runs `ringest serve` on `data_dir` (plus `extra_args`, `env`) with
/// stderr to a pipe at log level info, writes one point, stops it with
/// SIGTERM and returns everything it wrote to stderr.
fn stderr_of_one_run(
    data_dir: &std::path::Path,
    extra_args: &[&str],
    env: &[(&str, &str)],
) -> String {
    let mut command = Command::new(common::binary());
    command
        .arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra_args)
        .env("RUST_LOG", "info")
        .env_remove("JOURNAL_STREAM")
        .envs(env.iter().copied())
        .stderr(Stdio::piped());
    let (mut child, addr) = common::spawn_ready(command);
    let mut stderr = child.stderr.take().expect("stderr piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).expect("read stderr");
        text
    });
    let mut client = common::Client::connect(addr);
    let response = client
        .send("POST", "/write?db=logs", b"m f=1")
        .expect("a response");
    assert_eq!(response.status, 204);
    drop(client);
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    assert!(child.wait().expect("wait").success());
    reader.join().expect("stderr reader")
}

/// Goal: log lines carry no ANSI escape codes when stderr is a pipe (it had
/// colour codes everywhere). Method: run the binary with stderr to a pipe;
/// no ESC byte in what it wrote, and it did write log lines.
#[test]
fn no_colour_codes_when_stderr_is_a_pipe() {
    let dir = TempDir::new("log-pipe");
    let text = stderr_of_one_run(&dir.path.join("data"), &[], &[]);
    assert!(text.contains("INFO"), "{text}");
    assert!(!text.contains('\u{1b}'), "ESC in piped logs: {text:?}");
}

/// Goal: a normal restart logs no warning (the unused spare segments were
/// removed with a WARN each time). Method: run twice on one data directory
/// with stderr piped at info level; the second run's log has no WARN line.
#[test]
fn restart_logs_no_warning() {
    let dir = TempDir::new("log-restart");
    let data = dir.path.join("data");
    let _ = stderr_of_one_run(&data, &[], &[]);
    let text = stderr_of_one_run(&data, &[], &[]);
    assert!(text.contains("INFO"), "{text}");
    assert!(!text.contains("WARN"), "a normal restart warned: {text}");
}

/// Goal: under systemd (`JOURNAL_STREAM` set) text lines carry no
/// timestamp, journald adds its own. Method: run with JOURNAL_STREAM set;
/// every line starts with its level, not a date.
#[test]
fn no_timestamps_under_systemd() {
    let dir = TempDir::new("log-journal");
    let text = stderr_of_one_run(&dir.path.join("data"), &[], &[("JOURNAL_STREAM", "8:1234")]);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("ringest:"))
        .collect();
    assert!(!lines.is_empty(), "{text}");
    for line in lines {
        let level = line.split_whitespace().next().unwrap_or_default();
        assert!(
            ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&level),
            "line does not start with its level: {line:?}"
        );
    }
}

/// Goal: `server.log_format = "json"` writes one JSON object per line.
/// Method: run with that config and stderr piped; every line parses as a
/// JSON object with `level` and `fields`.
#[test]
fn json_format_is_one_object_per_line() {
    use simd_json::prelude::*;
    let dir = TempDir::new("log-json");
    let config = config_file(&dir, "[server]\nlog_format = \"json\"\n");
    let text = stderr_of_one_run(&dir.path.join("data"), &["--config", &config], &[]);
    let mut count = 0;
    for line in text.lines() {
        let mut bytes = line.as_bytes().to_vec();
        let value = simd_json::to_owned_value(&mut bytes)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
        assert!(value.is_object(), "{line:?}");
        assert!(value.get("level").is_some(), "{line:?}");
        assert!(value.get("fields").is_some(), "{line:?}");
        count += 1;
    }
    assert!(count >= 3, "{text}");
}

/// Goal: an unknown `server.log_format` is a configuration error.
/// Method: check-config with `log_format = "xml"` exits 2.
#[test]
fn unknown_log_format_is_refused() {
    let dir = TempDir::new("log-bad");
    let config = config_file(&dir, "[server]\nlog_format = \"xml\"\n");
    let output = Command::new(common::binary())
        .args(["check-config", "--config", &config])
        .output()
        .expect("check-config");
    assert_eq!(output.status.code(), Some(2));
}
