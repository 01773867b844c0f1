//! The fault table of persistence (issue 18 item 2): each storage fault
//! injected into the real binary's Parquet and catalog I/O (the test-only
//! `RINGEST_TEST_PERSIST_FAULTS`, `src/persist/faults.rs`), a number of
//! times in a row (the first column), then gone. The WAL's own faults (failed write or fdatasync, ENOSPC, the
//! fsyncgate rule) are `tests/server_faults.rs` and `tests/wal_faults.rs`.
//!
//! | fault (times) | what the server answers meanwhile | what the test proves |
//! |---|---|---|
//! | `parquet-write` ×2, ENOSPC | writes 204, queries answer; the snapshot fails, its rows stay in memory and WAL, retried in 1 s (`ringest_persist_failures_total`) | every acked point read back, once, before and after a kill -9; the failed attempt's files removed at once |
//! | `parquet-sync` ×2, EIO | the same; the unsynced file is deleted and never trusted (the retry writes a new name) | same; no `*.tmp` left |
//! | `parquet-rename` ×2, EIO | the same | same |
//! | `parquet-dir-sync` ×2, EIO | the same (the renamed file is not trusted without its directory's fsync) | same |
//! | `manifest-write` ×1, ENOSPC | the same: the commit fails, the old catalog is written back (in case), the snapshot's files are removed at once | same |
//! | `manifest-sync` ×1, EIO | the same | same |
//! | `manifest-rename` ×1, EIO | the same | same |
//! | `manifest-dir-sync` ×2, EIO | the same: the new catalog may or may not survive a power loss, so it is treated as not written and the old one is written back (which meets the second failure here: then the commit's files stay, as the catalog on disk may name them, and the next start decides) | same, and after the restart every Parquet file on disk is one the catalog names |
//!
//! | `manifest-write` ENOSPC on a fresh data directory's first start | start-up refuses, naming the directory and the error (exit 1) | `start_refuses_when_the_first_catalog_cannot_be_written` |
//! | the catalog's rename lost at a power loss (abort after the rewrite, old catalog put back) | — (after the restart) every acknowledged point read back once: the WAL was not released before the rename's directory was synced | `a_catalog_rename_lost_at_power_loss_loses_nothing` |
//!
//! In every case: the WAL is untouched (a persistence failure never costs
//! an acknowledgement), rows wait in memory until a snapshot succeeds
//! (bounded by `store.memory_bytes_max`, then 503), and after the kill -9
//! and a start without faults the catalog names exactly the files on disk.

#![allow(clippy::disallowed_methods)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{config_file, Server, TempDir};

const FAULTS_ENV: &str = "RINGEST_TEST_PERSIST_FAULTS";

fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos() as i64
}

/// `count` points of `m` from index `first` (value = index), 40 series.
fn lines(first: usize, count: usize, base_ns: i64) -> String {
    (first..first + count)
        .map(|i| {
            format!(
                "m,host=h{} v={i}i {}\n",
                i % 40,
                base_ns + i as i64 * 1_000_000
            )
        })
        .collect()
}

fn write_ok(server: &Server, body: &str) {
    let response = server.write_v1("db=faults", body);
    assert_eq!(response.status, 204, "{}", response.text());
}

/// `[count, sum]` of every point, as the query answers it.
fn count_and_sum(server: &Server) -> String {
    let answer = server.query("db=faults&q=SELECT+count(v),sum(v)+FROM+m");
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.text()
}

/// Parquet files on disk (relative), and the catalog's.
fn files_on_disk_and_named(data: &Path) -> (Vec<String>, Vec<String>) {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let relative = path.strip_prefix(root).expect("under root");
                out.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    let root = data.join("parquet");
    let mut on_disk = Vec::new();
    walk(&root, &root, &mut on_disk);
    on_disk.retain(|p| p != "_catalog.json");
    on_disk.sort();
    let catalog: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("_catalog.json")).expect("read catalog"))
            .expect("catalog parses");
    let mut named: Vec<String> = catalog["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["path"].as_str().expect("path").to_string())
        .collect();
    named.sort();
    (on_disk, named)
}

/// One row of the table: the fault armed `count` times, writes and reads
/// served throughout, persistence recovers by itself (and, when
/// `clean_before_restart`, the failed attempts' files are already gone),
/// then kill -9 and a start without faults: every acked point exactly
/// once, catalog = disk.
fn fault_case(step: &str, count: u32, clean_before_restart: bool) {
    let dir = TempDir::new(&format!("persist-fault-{step}"));
    let config = config_file(&dir, "[persist]\ninterval_ms = 200\n");
    let data = dir.path.join("data");
    let args = ["--shards", "2", "--config", config.as_str()];
    // A first start writes the (empty) catalog: with a catalog fault armed
    // from the start, start-up itself would refuse (`start_refuses_…`).
    let mut fresh = Server::start_in(&data, &args);
    assert!(fresh.terminate().success());
    let fault = format!("{step}:{count}");
    let mut server = Server::start_in_with_env(&data, &args, &[(FAULTS_ENV, fault.as_str())]);
    let base = now_ns() - 3_600_000_000_000;
    write_ok(&server, &lines(0, 2000, base));
    wait_for(Duration::from_secs(30), "the fault fires", || {
        server.metric("ringest_persist_failures_total") >= 1
    });
    // Reads and writes go on while persistence fails.
    let first: usize = (0..2000).sum();
    assert!(
        count_and_sum(&server).contains(&format!(",2000,{first}]")),
        "{step}: {}",
        count_and_sum(&server)
    );
    write_ok(&server, &lines(2000, 2000, base));
    server.wait_persisted(2);
    let all: usize = (0..4000).sum();
    let expected = format!(",4000,{all}]");
    assert!(
        count_and_sum(&server).contains(&expected),
        "{step}: {}",
        count_and_sum(&server)
    );
    let (on_disk, named) = files_on_disk_and_named(&data);
    assert!(
        on_disk.iter().all(|p| !p.ends_with(".tmp")),
        "{step}: unfinished files left: {on_disk:?}"
    );
    if clean_before_restart {
        // Failed attempts' files are removed at once, not left for the next
        // start (a disk that filled up gets its space back).
        assert_eq!(on_disk, named, "{step}: files no catalog names");
    }
    server.kill9();
    let server = Server::start_in(&data, &args);
    assert!(
        count_and_sum(&server).contains(&expected),
        "{step} after kill -9: {}",
        count_and_sum(&server)
    );
    let (on_disk, named) = files_on_disk_and_named(&data);
    assert_eq!(
        on_disk, named,
        "{step}: the catalog names exactly the files on disk"
    );
}

#[test]
fn parquet_write_enospc() {
    fault_case("parquet-write", 2, true);
}

#[test]
fn parquet_sync_eio() {
    fault_case("parquet-sync", 2, true);
}

#[test]
fn parquet_rename_eio() {
    fault_case("parquet-rename", 2, true);
}

#[test]
fn parquet_dir_sync_eio() {
    fault_case("parquet-dir-sync", 2, true);
}

#[test]
fn manifest_write_enospc() {
    fault_case("manifest-write", 1, true);
}

#[test]
fn manifest_sync_eio() {
    fault_case("manifest-sync", 1, true);
}

#[test]
fn manifest_rename_eio() {
    fault_case("manifest-rename", 1, true);
}

#[test]
fn manifest_dir_sync_eio() {
    fault_case("manifest-dir-sync", 2, false);
}

/// Goal: a fresh data directory whose first (empty) catalog cannot be
/// written does not start, and says why. Method: the fault armed from the
/// first start.
#[test]
fn start_refuses_when_the_first_catalog_cannot_be_written() {
    let dir = TempDir::new("persist-fault-first-catalog");
    let error = common::start_outcome_with_env(
        &dir.path.join("data"),
        &["--shards", "1"],
        &[(FAULTS_ENV, "manifest-write:1")],
    )
    .expect_err("refused");
    assert!(error.contains("No space left on device"), "{error}");
    assert!(error.contains("parquet"), "{error}");
}

/// Goal: a catalog rename that did not reach the disk (a power loss after
/// `rename`, before the directory's `fsync` made it durable: the old
/// catalog comes back) loses no acknowledged point: the WAL was not
/// released before the rename was synced. Method: the process aborts right
/// after a snapshot's catalog rewrite (`RINGEST_TEST_PERSIST_CRASH=
/// manifest-written`), the test puts the previous catalog back as the
/// power loss would, and a start without hooks reads every acknowledged
/// point once; the snapshot's files, named by no catalog now, are removed.
#[test]
fn a_catalog_rename_lost_at_power_loss_loses_nothing() {
    let dir = TempDir::new("persist-fault-rename-lost");
    let config = config_file(&dir, "[persist]\ninterval_ms = 50\n");
    let data = dir.path.join("data");
    let args = ["--shards", "2", "--config", config.as_str()];
    let mut fresh = Server::start_in(&data, &args);
    assert!(fresh.terminate().success());
    let catalog = data.join("parquet/_catalog.json");
    let before = std::fs::read(&catalog).expect("the first catalog");
    let mut server = Server::start_in_with_env(
        &data,
        &args,
        &[("RINGEST_TEST_PERSIST_CRASH", "manifest-written")],
    );
    let base = now_ns() - 3_600_000_000_000;
    let mut written = 0;
    let status = loop {
        if common::try_write(&server, "faults", &lines(written, 500, base)) == Some(204) {
            written += 500;
        }
        if let Some(status) = server.wait_exit(Duration::from_millis(30)) {
            break status;
        }
        assert!(written < 500_000, "the crash hook never fired");
    };
    assert!(!status.success(), "the process aborted at the hook");
    assert_ne!(
        std::fs::read(&catalog).expect("catalog"),
        before,
        "rewritten"
    );
    std::fs::write(&catalog, &before).expect("put the old catalog back");
    let server = Server::start_in(&data, &args);
    let sum: usize = (0..written).sum();
    assert!(
        count_and_sum(&server).contains(&format!(",{written},{sum}]")),
        "{written} acknowledged: {}",
        count_and_sum(&server)
    );
    let (on_disk, named) = files_on_disk_and_named(&data);
    assert_eq!(on_disk, named, "files of the lost catalog removed at start");
}
