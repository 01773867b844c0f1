//! Retention over real HTTP with the real binary: points older than their
//! database's retention are refused at write time (a line error, the other
//! lines written), expire from queries, schema queries and memory, their
//! Parquet files are deleted (a crash in between leaves nothing behind),
//! and the retention statements of InfluxQL answer like InfluxDB 1.6.7 and
//! survive restarts.

// Tests are not shard code: std::time is fine here (clippy.toml bans it
// on the server's executors).
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{config_file, encode, query_series, Server, TempDir};

const DAY_NS: i64 = 86_400_000_000_000;

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos() as i64
}

/// Runs one statement with POST (CREATE, ALTER) and returns the body.
fn statement(server: &Server, q: &str) -> String {
    let response = server.request("POST", &format!("/query?q={}", encode(q)), &[], b"");
    assert_eq!(response.status, 200, "{q}: {}", response.text());
    response.text()
}

/// `SHOW RETENTION POLICIES ON db`'s (duration, shardGroupDuration).
fn policy(server: &Server, db: &str) -> (String, String) {
    let series = query_series(server, db, &format!("SHOW RETENTION POLICIES ON \"{db}\""));
    assert_eq!(series.len(), 1, "{series:?}");
    assert_eq!(
        series[0].columns,
        [
            "name",
            "duration",
            "shardGroupDuration",
            "replicaN",
            "default"
        ]
    );
    let row = &series[0].values[0];
    let text = |i: usize| row[i].to_string().trim_matches('"').to_string();
    assert_eq!(text(0), "autogen");
    assert_eq!(text(3), "1");
    assert_eq!(text(4), "true");
    (text(1), text(2))
}

/// The number of rows of `SELECT count(v) FROM m` (0 when no series).
fn count(server: &Server, db: &str) -> i64 {
    let series = query_series(server, db, "SELECT count(v) FROM m");
    series
        .first()
        .and_then(|s| s.values.first())
        .and_then(|row| row.get(1))
        .map(|v| v.to_string().parse().expect("count is an integer"))
        .unwrap_or(0)
}

/// The sum over shards of one labelled series of `/metrics`.
fn metric(server: &Server, name: &str, label: &str) -> u64 {
    let text = server.request("GET", "/metrics", &[], b"").text();
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")) && line.contains(label))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// What the schema statements list for `db`: (`SHOW SERIES` keys,
/// `SHOW MEASUREMENTS` names, `SHOW TAG VALUES WITH KEY = "k"` values).
fn schema(server: &Server, db: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let column = |q: &str, index: usize| -> Vec<String> {
        query_series(server, db, q)
            .iter()
            .flat_map(|s| s.values.iter())
            .map(|row| row[index].to_string().trim_matches('"').to_string())
            .collect()
    };
    (
        column("SHOW SERIES", 0),
        column("SHOW MEASUREMENTS", 0),
        column("SHOW TAG VALUES WITH KEY = \"k\"", 1),
    )
}

/// The paths (relative to `parquet/`) the persisted catalog names for
/// database `db`.
fn catalog_files(data: &Path, db: &str) -> BTreeSet<String> {
    let text = std::fs::read(data.join("parquet/_catalog.json")).expect("read _catalog.json");
    let catalog: serde_json::Value = serde_json::from_slice(&text).expect("catalog is JSON");
    catalog["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter(|f| f["database"] == db)
        .map(|f| f["path"].as_str().expect("path").to_string())
        .collect()
}

/// The Parquet files on disk under `parquet/db=<db>/`, relative to
/// `parquet/`.
fn disk_files(data: &Path, db: &str) -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                out.push(path);
            }
        }
    }
    let root = data.join("parquet");
    let mut found = Vec::new();
    walk(&root.join(format!("db={db}")), &mut found);
    found
        .iter()
        .map(|p| {
            let relative = p.strip_prefix(&root).expect("under parquet/");
            relative.to_string_lossy().replace('\\', "/")
        })
        .collect()
}

/// Polls `condition` every 50 ms until it holds or `deadline` passes.
fn eventually(deadline: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + deadline;
    loop {
        if condition() {
            return true;
        }
        if std::time::Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Goal: a point older than the default retention (3 days) written to a
/// database created by that write is refused as a line error naming the
/// retention, in both dialects' wording, while the other lines are
/// written; the refusals are counted under `reason="retention"`.
/// Method: two shards; a v2 write (line 2 is 4 days old) to a new bucket,
/// a v1 write (line 1 old) to a new database; read back with /query.
#[test]
fn old_point_is_a_line_error_naming_the_retention() {
    let server = Server::start(&["--shards", "2", "--retention-default-period", "3d"]);
    assert_eq!(
        metric(
            &server,
            "ringest_lines_rejected_total",
            "reason=\"retention\""
        ),
        0
    );
    let now = now_ns();
    let old = now - 4 * DAY_NS;
    let body = format!("m,k=a v=1 {now}\nm,k=b v=2 {old}\nm,k=c v=3 {}", now + 1);
    let response = server.write_v2("bucket=auto&org=o", &body);
    assert_eq!(response.status, 400, "{}", response.text());
    let text = response.text();
    assert!(text.contains(r#""code":"invalid""#), "{text}");
    assert!(text.contains(r#""line":2"#), "{text}");
    assert!(
        text.contains(
            "partial write has occurred, errors encountered on line(s): line 2: point time"
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"is beyond the retention period of database \"auto\" (72h0m0s)"#),
        "{text}"
    );
    assert_eq!(count(&server, "auto"), 2, "the other lines are written");
    assert_eq!(
        policy(&server, "auto"),
        ("72h0m0s".into(), "24h0m0s".into())
    );

    let body = format!("m v=1 {old}\nm v=2 {}\nm v=3 {}", old + 1, now);
    let response = server.write_v1("db=v1db", &body);
    assert_eq!(response.status, 400, "{}", response.text());
    // The v1 `error` carries InfluxDB 1.x's wording (beside ringest's
    // `code`/`line`/`message`).
    assert!(
        response.text().contains(
            r#""error":"partial write: points beyond retention policy (database \"v1db\" keeps 72h0m0s) dropped=2""#
        ),
        "{}",
        response.text()
    );
    assert_eq!(count(&server, "v1db"), 1);
    // Known database now (the replica path rather than the owner's).
    let response = server.write_v1("db=v1db", &format!("m v=4 {old}"));
    assert_eq!(response.status, 400, "{}", response.text());
    assert!(
        response.text().contains("points beyond retention policy"),
        "{}",
        response.text()
    );
    assert_eq!(count(&server, "v1db"), 1);
    assert_eq!(
        metric(
            &server,
            "ringest_lines_rejected_total",
            "reason=\"retention\""
        ),
        4
    );
}

/// Goal: with `line_protocol.accept_partial = false`, one expired point
/// refuses the whole request. Method: configured server; nothing stored.
#[test]
fn expired_point_refuses_all_when_partial_writes_are_off() {
    let dir = TempDir::new("retention-nopartial");
    let config = config_file(
        &dir,
        "[line_protocol]\naccept_partial = false\n\n[retention]\ndefault_period = \"3d\"\n",
    );
    let server = Server::start(&["--config", &config, "--retention-default-period", "3d"]);
    let now = now_ns();
    let body = format!("m v=1 {now}\nm v=2 {}", now - 4 * DAY_NS);
    let response = server.write_v2("bucket=strict&org=o", &body);
    assert_eq!(response.status, 400, "{}", response.text());
    assert!(
        response.text().contains("no data written") && response.text().contains("retention period"),
        "{}",
        response.text()
    );
    assert_eq!(count(&server, "strict"), 0);
}

/// Goal: points of a database created `WITH DURATION 2s` are visible, then
/// gone from queries once expired, the schema statements (`SHOW SERIES`,
/// `SHOW MEASUREMENTS`, `SHOW TAG VALUES`) forget their series, and the
/// expiry task drops them from memory. Method: two shards; write at now;
/// see them; poll /query until they are gone (bounded deadline) and
/// `ringest_rows_expired_total` until it counts them.
#[test]
fn short_retention_expires_from_queries_and_memory() {
    // Persistence off: the rows must still be in memory when they expire
    // (a snapshot would move them to Parquet first; the Parquet case is
    // `expired_parquet_files_are_deleted_and_forgotten`).
    let dir = common::TempDir::new("retention-fast");
    let config = common::config_file(&dir, "[persist]\nenabled = false\n");
    let server = Server::start(&[
        "--shards",
        "2",
        "--retention-default-period",
        "3d",
        "--config",
        &config,
    ]);
    assert_eq!(
        statement(&server, "CREATE DATABASE \"fast\" WITH DURATION 2s"),
        "{\"results\":[{\"statement_id\":0}]}\n"
    );
    assert_eq!(policy(&server, "fast"), ("2s".into(), "1h0m0s".into()));
    let now = now_ns();
    let body: String = (0..6)
        .map(|i| format!("m,k=s{i} v={i} {}\n", now + i))
        .collect();
    let response = server.write_v1("db=fast", &body);
    assert_eq!(response.status, 204, "{}", response.text());
    assert_eq!(count(&server, "fast"), 6, "visible before they expire");
    let (series, _, values) = schema(&server, "fast");
    assert_eq!((series.len(), values.len()), (6, 6), "{series:?}");
    assert!(
        eventually(Duration::from_secs(20), || count(&server, "fast") == 0),
        "expired points are still returned"
    );
    assert!(
        eventually(Duration::from_secs(20), || schema(&server, "fast")
            == (vec![], vec![], vec![])),
        "expired series are still listed: {:?}",
        schema(&server, "fast")
    );
    assert!(
        eventually(Duration::from_secs(20), || {
            metric(&server, "ringest_rows_expired_total", "shard=") >= 6
        }),
        "the expiry task did not drop the rows"
    );
    // A point at now is still accepted and visible.
    let response = server.write_v1("db=fast", &format!("m,k=new v=9 {}", now_ns()));
    assert_eq!(response.status, 204, "{}", response.text());
    assert_eq!(count(&server, "fast"), 1);
    assert_eq!(
        schema(&server, "fast"),
        (vec!["m,k=new".into()], vec!["m".into()], vec!["new".into()])
    );
}

/// Goal: once every row of a Parquet file is older than its database's
/// retention, the file leaves the persisted catalog and the disk within
/// seconds, with no new write to prompt it, and the data is gone from
/// `SELECT` and from the schema statements; files of a database kept
/// forever, written at the same moment, stay (files, catalog, rows,
/// series), and a restart brings nothing back. Method: two shards,
/// snapshots every 100 ms; `fast` WITH DURATION 3s and `kept` WITH
/// DURATION INF get the same six points at now; poll until both are in
/// Parquet (the catalog names files that exist, nothing left in memory);
/// then poll (bounded) until `fast`'s files are gone from disk and
/// catalog and its queries answer nothing; check `kept`,
/// `ringest_persist_files_expired_total`; kill -9 and restart.
#[test]
fn expired_parquet_files_are_deleted_and_forgotten() {
    let dir = TempDir::new("retention-files");
    let data = dir.path.join("data");
    let config = config_file(&dir, "[persist]\ninterval_ms = 100\n");
    let args = [
        "--shards",
        "2",
        "--retention-default-period",
        "3d",
        "--config",
        config.as_str(),
    ];
    let mut server = Server::start_in(&data, &args);
    statement(&server, "CREATE DATABASE \"fast\" WITH DURATION 3s");
    statement(&server, "CREATE DATABASE \"kept\" WITH DURATION INF");
    let now = now_ns();
    let body: String = (0..6)
        .map(|i| format!("m,k=s{i} v={i} {}\n", now + i))
        .collect();
    for db in ["fast", "kept"] {
        let response = server.write_v1(&format!("db={db}"), &body);
        assert_eq!(response.status, 204, "{}", response.text());
        assert_eq!(count(&server, db), 6, "{db}: visible once acknowledged");
    }
    // Both in Parquet: the catalog names files that exist, and no row is
    // left only in memory.
    let in_parquet = |db: &str| {
        let named = catalog_files(&data, db);
        !named.is_empty() && named.is_subset(&disk_files(&data, db))
    };
    assert!(
        eventually(Duration::from_secs(20), || {
            in_parquet("fast") && in_parquet("kept") && server.metric("ringest_store_bytes") == 0
        }),
        "not persisted: catalog {:?} / {:?}, disk {:?} / {:?}",
        catalog_files(&data, "fast"),
        catalog_files(&data, "kept"),
        disk_files(&data, "fast"),
        disk_files(&data, "kept")
    );
    let fast_files = catalog_files(&data, "fast");
    let kept_files = catalog_files(&data, "kept");
    // Expiry, with no write to prompt it.
    assert!(
        eventually(Duration::from_secs(30), || {
            disk_files(&data, "fast").is_empty() && catalog_files(&data, "fast").is_empty()
        }),
        "expired files remain: catalog {:?}, disk {:?}",
        catalog_files(&data, "fast"),
        disk_files(&data, "fast")
    );
    assert_eq!(count(&server, "fast"), 0);
    assert_eq!(schema(&server, "fast"), (vec![], vec![], vec![]));
    assert!(
        server.metric("ringest_persist_files_expired_total") >= fast_files.len() as u64,
        "{} files expired, counted {}",
        fast_files.len(),
        server.metric("ringest_persist_files_expired_total")
    );
    // The database kept forever lost nothing.
    let kept = |server: &Server| {
        assert_eq!(catalog_files(&data, "kept"), kept_files);
        assert_eq!(disk_files(&data, "kept"), kept_files);
        assert_eq!(count(server, "kept"), 6);
        let (series, measurements, values) = schema(server, "kept");
        assert_eq!((series.len(), values.len()), (6, 6), "{series:?}");
        assert_eq!(measurements, ["m"]);
    };
    kept(&server);
    // Nothing comes back from the WAL or the catalog after a crash.
    server.kill9();
    server.restart();
    kept(&server);
    assert_eq!(count(&server, "fast"), 0);
    assert_eq!(schema(&server, "fast"), (vec![], vec![], vec![]));
    assert!(disk_files(&data, "fast").is_empty());
}

/// Goal: a crash after the expiry's catalog rewrite and before the files
/// are deleted leaves files the catalog does not name, and the next start
/// removes them (the crash table of `src/persist/mod.rs`); nothing expired
/// comes back. Method: the real binary aborts itself at that step
/// (`RINGEST_TEST_PERSIST_CRASH=expiry-recorded`, no clean-up, like
/// `kill -9`); `fast` WITH DURATION 2s gets points at now; wait for the
/// abort; the expired files are on disk and not in the catalog; restart
/// without the hook: they are gone, and the database answers nothing.
#[test]
fn crash_between_expiry_rewrite_and_delete_leaves_nothing_behind() {
    let dir = TempDir::new("retention-crash");
    let data = dir.path.join("data");
    let config = config_file(&dir, "[persist]\ninterval_ms = 100\n");
    let args = [
        "--shards",
        "2",
        "--retention-default-period",
        "3d",
        "--config",
        config.as_str(),
    ];
    let mut server = Server::start_in_with_env(
        &data,
        &args,
        &[("RINGEST_TEST_PERSIST_CRASH", "expiry-recorded")],
    );
    statement(&server, "CREATE DATABASE \"fast\" WITH DURATION 2s");
    let now = now_ns();
    let body: String = (0..6)
        .map(|i| format!("m,k=s{i} v={i} {}\n", now + i))
        .collect();
    let response = server.write_v1("db=fast", &body);
    assert_eq!(response.status, 204, "{}", response.text());
    let status = server
        .wait_exit(Duration::from_secs(30))
        .expect("the crash hook fired once the files expired");
    assert!(!status.success(), "the process aborted");
    let orphans = disk_files(&data, "fast");
    assert!(!orphans.is_empty(), "the expired files are still on disk");
    assert!(
        catalog_files(&data, "fast").is_empty(),
        "the catalog no longer names them"
    );
    let server = Server::start_in(&data, &args);
    assert!(
        disk_files(&data, "fast").is_empty(),
        "start-up left {:?}",
        disk_files(&data, "fast")
    );
    assert_eq!(count(&server, "fast"), 0);
    assert_eq!(schema(&server, "fast"), (vec![], vec![], vec![]));
}

/// Goal: `SHOW RETENTION POLICIES` reflects CREATE … WITH DURATION, ALTER
/// RETENTION POLICY and the default of an auto-created database, and all
/// survive a crash (kill -9) and a clean stop (SIGTERM), even when the
/// configured default changes. Method: statements, restarts, compare.
#[test]
fn retention_policies_survive_restarts() {
    let dir = TempDir::new("retention-restart");
    let data = dir.path.join("data");
    let mut server = Server::start_in(
        &data,
        &["--shards", "2", "--retention-default-period", "3d"],
    );
    statement(&server, "CREATE DATABASE \"a\" WITH DURATION 30d");
    assert_eq!(policy(&server, "a"), ("720h0m0s".into(), "24h0m0s".into()));
    statement(
        &server,
        "ALTER RETENTION POLICY \"autogen\" ON \"a\" DURATION 7d",
    );
    statement(&server, "CREATE DATABASE \"forever\" WITH DURATION INF");
    assert_eq!(
        server
            .write_v1("db=b", &format!("m v=1 {}", now_ns()))
            .status,
        204
    );
    let expected = |server: &Server| {
        assert_eq!(policy(server, "a"), ("168h0m0s".into(), "24h0m0s".into()));
        assert_eq!(policy(server, "b"), ("72h0m0s".into(), "24h0m0s".into()));
        assert_eq!(policy(server, "forever"), ("0s".into(), "168h0m0s".into()));
    };
    expected(&server);
    server.kill9();
    let mut server = Server::start_in(
        &data,
        &["--shards", "2", "--retention-default-period", "1d"],
    );
    expected(&server);
    statement(
        &server,
        "ALTER RETENTION POLICY autogen ON a DURATION 1h30m",
    );
    assert!(server.terminate().success());
    let server = Server::start_in(
        &data,
        &["--shards", "2", "--retention-default-period", "inf"],
    );
    assert_eq!(policy(&server, "a"), ("1h30m0s".into(), "1h0m0s".into()));
    assert_eq!(policy(&server, "b"), ("72h0m0s".into(), "24h0m0s".into()));
    // A database created now takes the new default.
    statement(&server, "CREATE DATABASE c");
    assert_eq!(policy(&server, "c"), ("0s".into(), "168h0m0s".into()));
}
