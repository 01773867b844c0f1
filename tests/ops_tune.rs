//! `ringest tune`: runs the real command on a temporary data directory.

// Tests are not shard code: std::fs and std::time are fine here (clippy.toml
// bans them on the server's executors).
#![allow(clippy::disallowed_methods)]

mod common;

use std::process::Command;

use common::TempDir;

/// Goal: `ringest tune` prints the measured figures with units and a
/// recommended profile that exists in tuning/, and leaves no probe file.
/// Method: run it with a small probe size; check each report line.
#[test]
fn tune_reports_figures_and_a_profile() {
    let dir = TempDir::new("tune");
    let data_dir = dir.path.join("data");
    let output = Command::new(env!("CARGO_BIN_EXE_ringest"))
        .args([
            "tune",
            "--sync-count",
            "50",
            "--write-bytes",
            "8388608",
            "--data-dir",
        ])
        .arg(&data_dir)
        .output()
        .expect("run ringest tune");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = |label: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no {label:?} line in:\n{stdout}"))
            .to_string()
    };
    let number_after = |text: &str, label: &str| -> f64 {
        text.split(label)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.trim_end_matches(',').parse().ok())
            .unwrap_or_else(|| panic!("no number after {label:?} in {text:?}"))
    };
    assert!(number_after(&line("cpus online"), "cpus online") >= 1.0);
    assert!(number_after(&line("numa nodes"), "numa nodes") >= 1.0);
    assert!(line("memory total").contains("iB"));
    let sync = line("fdatasync latency");
    let p50 = number_after(&sync, "p50");
    let p99 = number_after(&sync, "p99");
    assert!(sync.contains(" ms") && p50 >= 0.0 && p99 >= p50, "{sync}");
    assert!(sync.contains("50 x 4 KiB"), "{sync}");
    let write = line("sequential write");
    assert!(
        write.contains("MB/s") && number_after(&write, "sequential write") > 0.0,
        "{write}"
    );

    let profile = line("recommended profile:")
        .split(':')
        .nth(1)
        .expect("name")
        .trim()
        .to_string();
    let toml = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tuning")
        .join(format!("{profile}.toml"));
    assert!(
        toml.exists() && profile != "reference",
        "unknown profile {profile:?}"
    );
    assert!(stdout.contains("  - "), "no reasons:\n{stdout}");

    let left: Vec<_> = std::fs::read_dir(&data_dir).expect("data dir").collect();
    assert!(left.is_empty(), "probe file left: {left:?}");
}

/// Goal: out-of-range options are refused before any I/O. Method:
/// `--sync-count 0`; exit code and message.
#[test]
fn tune_refuses_bad_options() {
    let dir = TempDir::new("tune-bad");
    let output = Command::new(env!("CARGO_BIN_EXE_ringest"))
        .args(["tune", "--sync-count", "0", "--data-dir"])
        .arg(&dir.path)
        .output()
        .expect("run ringest tune");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--sync-count"));
}
