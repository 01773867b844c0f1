//! Persistence with the real binary (issue 14): crashes at each step of a
//! snapshot lose nothing and duplicate nothing, the Parquet files are what
//! the layout promises and real readers count every row, the WAL stays
//! bounded, hostile names stay inside the Parquet directory, and a damaged
//! persisted catalog or a missing file gets a clear error.

// Tests are not shard code: std::fs and std::time are fine here (clippy.toml
// bans them on the server's executors).
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{config_file, encode, query_series, start_outcome, Server, TempDir};
use simd_json::prelude::*;

/// `count` points of `series` series for database `db`, measurement `m`,
/// integer field `v` = the point's number (unique), times 1 ns apart from
/// `first`.
fn lines(first: u64, count: u64, series: u64) -> String {
    (first..first + count)
        .map(|n| {
            format!(
                "m,host=h{} v={n}i {}\n",
                n % series,
                1_700_000_000_000_000_000 + n
            )
        })
        .collect()
}

/// Every `v` stored in measurement `m` of `db`.
fn stored(server: &Server, db: &str) -> BTreeSet<u64> {
    let mut values = BTreeSet::new();
    for series in query_series(server, db, "SELECT v FROM m") {
        for row in series.values {
            if let Some(v) = row.get(1).and_then(|v| v.as_u64()) {
                values.insert(v);
            }
        }
    }
    values
}

/// Every Parquet file under `root`, recursively.
fn parquet_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(parquet_files(&path));
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Rows in a Parquet file, from its footer.
fn parquet_rows(path: &Path) -> u64 {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let file = std::fs::File::open(path).expect("open parquet");
    let reader = SerializedFileReader::new(file).expect("parquet footer");
    reader.metadata().file_metadata().num_rows() as u64
}

fn write_ok(server: &Server, db: &str, body: &str) {
    let response = server.write_v1(&format!("db={db}"), body);
    assert_eq!(response.status, 204, "{}", response.text());
}

/// Goal: a crash at each step of a snapshot — files written but not in the
/// persisted catalog, catalog written but rows still in memory and WAL —
/// loses no acknowledged point and persists none twice. Method: the real
/// binary aborts itself at the step (`RINGEST_TEST_PERSIST_CRASH`, no
/// clean-up, like `kill -9`); restart; every acknowledged point is read
/// back; then SIGTERM persists everything and the Parquet row count equals
/// the points written exactly (a record persisted twice would add rows).
#[test]
fn crash_at_each_snapshot_step_loses_and_duplicates_nothing() {
    for step in ["files-written", "manifest-written"] {
        let dir = TempDir::new("persist-crash");
        let data = dir.path.join("data");
        let config = config_file(&dir, "[persist]\ninterval_ms = 50\n");
        let args = ["--shards", "2", "--config", config.as_str()];
        let mut server =
            Server::start_in_with_env(&data, &args, &[("RINGEST_TEST_PERSIST_CRASH", step)]);
        let mut written = 0u64;
        // Write until the hook fires (the process exits by itself).
        let status = loop {
            let body = lines(written, 500, 7);
            if common::try_write(&server, "p", &body) == Some(204) {
                written += 500;
            }
            if let Some(status) = server.wait_exit(Duration::from_millis(30)) {
                break status;
            }
            assert!(written < 500_000, "{step}: the crash hook never fired");
        };
        assert!(!status.success(), "{step}: the process aborted");
        let mut server = Server::start_in(&data, &args);
        let expected: BTreeSet<u64> = (0..written).collect();
        let have = stored(&server, "p");
        assert!(
            expected.is_subset(&have),
            "{step}: {} acknowledged points lost",
            expected.difference(&have).count()
        );
        // More writes after the crash, then a clean stop persists it all.
        write_ok(&server, "p", &lines(written, 300, 7));
        let total = written + 300;
        assert!(server.terminate().success());
        server.restart();
        assert_eq!(
            server.metric("ringest_store_bytes"),
            0,
            "{step}: nothing replayed"
        );
        let have = stored(&server, "p");
        assert!((0..total).all(|v| have.contains(&v)), "{step}: points lost");
        let rows: u64 = parquet_files(&data.join("parquet"))
            .iter()
            .map(|f| parquet_rows(f))
            .sum();
        // Unacknowledged writes that raced with the abort may be stored too.
        assert!(
            rows >= total && rows <= total + 500,
            "{step}: {rows} Parquet rows for {total} points (a duplicate adds rows)"
        );
        assert_eq!(server.metric("ringest_persist_file_rows"), rows);
    }
}

/// Goal: the files are the layout and schema `crate::persist` documents:
/// Hive paths `db=/table=/date=`, `time` as UTC nanosecond timestamps,
/// tags dictionary-encoded and null where absent, each field type mapped,
/// rows sorted by series then time, and together every row written once.
/// Method: write points of every type over two UTC days with an absent
/// tag, SIGTERM (persists all), read every file with the `parquet` crate.
#[test]
fn parquet_files_follow_the_documented_schema() {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int32Type, TimestampNanosecondType};
    use arrow_array::Array;
    use arrow_schema::{DataType, TimeUnit};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    let dir = TempDir::new("persist-schema");
    let data = dir.path.join("data");
    let mut server = Server::start_in(&data, &["--shards", "2"]);
    let day = 86_400_000_000_000i64;
    let base = 1_700_000_000_000_000_000i64;
    let mut body = String::new();
    for i in 0..40i64 {
        let t = base + (i % 2) * day + i;
        let tags = if i % 5 == 0 {
            String::new()
        } else {
            format!(",host=h{}", i % 3)
        };
        body.push_str(&format!(
            "m{tags},region=r{} f={i}.5,i={i}i,u={i}u,s=\"x{i}\",b={} {t}\n",
            i % 2,
            i % 2 == 0
        ));
    }
    write_ok(&server, "schema", &body);
    assert!(server.terminate().success());
    let files = parquet_files(&data.join("parquet"));
    assert!(files.len() >= 2, "two days → at least two files: {files:?}");
    let mut rows = 0;
    for file in &files {
        let relative = file.strip_prefix(data.join("parquet")).unwrap();
        let parts: Vec<String> = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        assert_eq!(parts[0], "db=schema");
        assert_eq!(parts[1], "table=m");
        assert!(
            parts[2] == "date=2023-11-14" || parts[2] == "date=2023-11-15",
            "{parts:?}"
        );
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(file).unwrap()).unwrap();
        let schema = reader.schema().clone();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["host", "region", "b", "f", "i", "s", "u", "time"]);
        let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        assert_eq!(schema.field(0).data_type(), &dictionary);
        assert_eq!(schema.field(1).data_type(), &dictionary);
        assert_eq!(schema.field(2).data_type(), &DataType::Boolean);
        assert_eq!(schema.field(3).data_type(), &DataType::Float64);
        assert_eq!(schema.field(4).data_type(), &DataType::Int64);
        assert_eq!(schema.field(5).data_type(), &DataType::Utf8);
        assert_eq!(schema.field(6).data_type(), &DataType::UInt64);
        assert_eq!(
            schema.field(7).data_type(),
            &DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
        );
        for batch in reader.build().unwrap() {
            let batch = batch.unwrap();
            rows += batch.num_rows();
            let host = batch.column(0).as_dictionary::<Int32Type>();
            let region = batch.column(1).as_dictionary::<Int32Type>();
            let times = batch.column(7).as_primitive::<TimestampNanosecondType>();
            let key = |row: usize| {
                let value = |array: &arrow_array::DictionaryArray<Int32Type>| {
                    array.is_valid(row).then(|| {
                        let values = array.values().as_string::<i32>();
                        values.value(array.keys().value(row) as usize).to_string()
                    })
                };
                (value(host), value(region), times.value(row))
            };
            for row in 1..batch.num_rows() {
                assert!(key(row - 1) < key(row), "sorted by series then time");
            }
            assert!(
                (0..batch.num_rows()).any(|row| host.is_null(row)),
                "an absent tag is null"
            );
        }
    }
    assert_eq!(rows, 40, "every row once");
}

/// Goal: pyarrow and DuckDB read the Parquet directory unmodified (Hive
/// partitioning) and count exactly the rows written; DuckDB's one-liner in
/// the README works. Method: the Python of the real-client tests
/// (`RINGEST_PYTHON`, set up by `.ci/run`) runs both readers.
#[test]
fn pyarrow_and_duckdb_count_every_row() {
    let python = common::python("pyarrow and duckdb");
    let dir = TempDir::new("persist-readers");
    let data = dir.path.join("data");
    let mut server = Server::start_in(&data, &["--shards", "2"]);
    write_ok(&server, "readers", &lines(0, 3000, 11));
    write_ok(&server, "other", "cpu,host=a usage=1 1700000000000000000\n");
    assert!(server.terminate().success());
    let root = data.join("parquet");
    let script = format!(
        r#"
import duckdb, pyarrow.dataset as ds
root = {root:?}
t = ds.dataset(root + "/db=readers", format="parquet", partitioning="hive").to_table()
print("pyarrow", t.num_rows, sorted(set(t.column("table").to_pylist())))
n = duckdb.sql(f"SELECT count(*) FROM read_parquet('{{root}}/**/*.parquet', hive_partitioning=true, union_by_name=true) WHERE db = 'readers'").fetchall()[0][0]
s = duckdb.sql(f"SELECT sum(v) FROM read_parquet('{{root}}/db=readers/**/*.parquet', hive_partitioning=true)").fetchall()[0][0]
print("duckdb", n, s)
"#,
        root = root.display().to_string()
    );
    let output = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("pyarrow 3000 ['m']"), "{stdout}");
    let sum: u64 = (0..3000).sum();
    assert!(stdout.contains(&format!("duckdb 3000 {sum}")), "{stdout}");
}

/// Goal: under continuous writes the WAL on disk stays bounded by the
/// snapshot cadence, not by how much was written. Method: 256 KiB
/// segments, snapshots every 50 ms, ~40 segments' worth of points; after
/// they are persisted each shard's WAL directory holds at most three
/// segments (the current one, its spare, one not yet released).
#[test]
fn wal_is_truncated_behind_persisted_rows() {
    let dir = TempDir::new("persist-wal");
    let data = dir.path.join("data");
    let config = config_file(
        &dir,
        "[wal]\nsegment_bytes = 262144\nbatch_bytes_max = 131072\npending_bytes_max = 262144\n\
         [persist]\ninterval_ms = 50\n",
    );
    let server = Server::start_in(&data, &["--shards", "2", "--config", &config]);
    // WAL records are packed (series and field names once per segment):
    // the volume comes from a 64-byte string on every line.
    let pad = "p".repeat(64);
    let mut written = 0;
    for _ in 0..100 {
        let body: String = lines(written, 1000, 13)
            .lines()
            .map(|line| line.replacen(' ', &format!(" s=\"{pad}\","), 1) + "\n")
            .collect();
        write_ok(&server, "w", &body);
        written += 1000;
    }
    let appended = server.metric("ringest_wal_bytes_total");
    assert!(
        appended > 20 * 262_144,
        "wrote {appended} WAL bytes: too few to prove anything"
    );
    server.wait_persisted(2);
    // The last segments are released at the next snapshot after the one
    // that persisted their rows: write a little more and wait again.
    write_ok(&server, "w", &lines(written, 10, 13));
    let snapshots = server.metric("ringest_persist_snapshots_total");
    server.wait_persisted(snapshots + 1);
    for shard in 0..2 {
        let segments = std::fs::read_dir(data.join("wal").join(shard.to_string()))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".wal")
            })
            .count();
        assert!(segments <= 3, "shard {shard}: {segments} segments left");
    }
    assert!(server.metric("ringest_wal_disk_bytes") <= 2 * 3 * 262_144);
    assert_eq!(stored(&server, "w").len() as u64, written + 10);
}

/// Goal: a shard snapshots once its WAL grew by `persist.wal_bytes_trigger`
/// since its last snapshot began, though neither the interval nor the
/// store trigger is due: what a restart after a crash replays stays
/// bounded by it. Method: interval 10 min, store trigger 256 MiB (far
/// away), WAL trigger 1 MiB; after each shard's first snapshot, write ~8
/// MiB of WAL in small requests; poll (bounded) until both shards persisted
/// rows, and every point reads back.
#[test]
fn wal_growth_triggers_a_snapshot() {
    let dir = TempDir::new("persist-wal-trigger");
    let data = dir.path.join("data");
    let config = config_file(
        &dir,
        "[persist]\ninterval_ms = 600000\nwal_bytes_trigger = 1048576\n",
    );
    let server = Server::start_in(&data, &["--shards", "2", "--config", &config]);
    // Each shard's first snapshot (of what it replayed: nothing) comes
    // right after start; rows written before it would ride along.
    server.wait_persisted(2);
    assert_eq!(server.metric("ringest_persist_rows_total"), 0);
    let mut written = 0;
    while server.metric("ringest_wal_bytes_total") < 8 << 20 {
        write_ok(&server, "t", &lines(written, 2000, 17));
        written += 2000;
        assert!(written < 2_000_000, "the WAL does not grow");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let persisted_by_both = || {
        let text = server.request("GET", "/metrics", &[], b"").text();
        let rows: Vec<u64> = text
            .lines()
            .filter(|l| l.starts_with("ringest_persist_rows_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        rows.len() == 2 && rows.iter().all(|r| *r > 0)
    };
    while !persisted_by_both() {
        assert!(
            std::time::Instant::now() < deadline,
            "no snapshot after {} WAL bytes",
            server.metric("ringest_wal_bytes_total")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(server.metric("ringest_store_bytes") < 256 << 20);
    assert_eq!(stored(&server, "t").len() as u64, written);
}

/// Goal: database, table and tag names that are not safe path components
/// never leave the Parquet directory, and their rows read back. Method:
/// measurements `../../escape`, `a/b=c%`, `.`; SIGTERM; every file is under
/// `parquet/` with escaped components; a restart answers the queries.
#[test]
fn hostile_names_stay_inside_the_parquet_directory() {
    let dir = TempDir::new("persist-names");
    let data = dir.path.join("data");
    let mut server = Server::start_in(&data, &["--shards", "1"]);
    let body = "../../escape,t=../x v=1i 1700000000000000000\n\
                a/b=c%,t=y v=2i 1700000000000000000\n\
                .,t=z v=3i 1700000000000000000\n";
    write_ok(&server, "db/rp-x", body);
    assert!(server.terminate().success());
    for file in parquet_files(&data.join("parquet")) {
        let relative = file.strip_prefix(data.join("parquet")).unwrap();
        assert!(
            relative
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_))),
            "{relative:?}"
        );
        assert!(relative.starts_with("db=db%2Frp-x"), "{relative:?}");
    }
    assert_eq!(parquet_files(&data.join("parquet")).len(), 3);
    assert!(!dir.path.join("escape").exists() && !data.join("escape").exists());
    server.restart();
    for (measurement, value) in [("../../escape", 1), ("a/b=c%", 2), (".", 3)] {
        let q = format!("SELECT v FROM \"{measurement}\"");
        let series = query_series(&server, "db/rp-x", &q);
        assert_eq!(series.len(), 1, "{measurement}");
        assert_eq!(
            series[0].values[0][1].as_u64(),
            Some(value),
            "{measurement}"
        );
    }
}

/// Goal: a corrupt or missing persisted catalog stops start-up with an
/// error naming the file (never an empty start that would hide or
/// duplicate data), and restoring it brings everything back. Method:
/// persist, then damage `_catalog.json` / remove it, start, restore.
#[test]
fn damaged_persisted_catalog_stops_start_up_clearly() {
    let dir = TempDir::new("persist-manifest");
    let data = dir.path.join("data");
    let mut server = Server::start_in(&data, &["--shards", "1"]);
    write_ok(&server, "d", &lines(0, 100, 3));
    assert!(server.terminate().success());
    let manifest = data.join("parquet/_catalog.json");
    let good = std::fs::read(&manifest).unwrap();
    std::fs::write(&manifest, &good[..good.len() / 2]).unwrap();
    let error = start_outcome(&data, &["--shards", "1"]).unwrap_err();
    assert!(
        error.contains("_catalog.json") && error.contains("corrupt"),
        "{error}"
    );
    std::fs::remove_file(&manifest).unwrap();
    let error = start_outcome(&data, &["--shards", "1"]).unwrap_err();
    assert!(
        error.contains("_catalog.json") && error.contains("missing"),
        "{error}"
    );
    std::fs::write(&manifest, &good).unwrap();
    server.restart();
    assert_eq!(stored(&server, "d").len(), 100);
}

/// Goal: a Parquet file deleted behind the server's back is named in the
/// error of a query that needs it, while other data is still served and
/// writes still work. Method: persist two tables, delete one table's file,
/// restart, query both.
#[test]
fn missing_parquet_file_is_named_in_query_errors() {
    let dir = TempDir::new("persist-missing");
    let data = dir.path.join("data");
    let mut server = Server::start_in(&data, &["--shards", "1"]);
    write_ok(&server, "d", &lines(0, 10, 2));
    write_ok(&server, "d", "gone,host=a v=1i 1700000000000000000\n");
    assert!(server.terminate().success());
    let victim = parquet_files(&data.join("parquet"))
        .into_iter()
        .find(|f| f.to_string_lossy().contains("table=gone"))
        .expect("the file of table gone");
    std::fs::remove_file(&victim).unwrap();
    server.restart();
    assert_eq!(stored(&server, "d").len(), 10);
    let response = server.query(&format!("db=d&q={}", encode("SELECT v FROM gone")));
    let text = response.text();
    assert!(
        text.contains("table=gone") && text.contains("cannot be read"),
        "{text}"
    );
    write_ok(&server, "d", "gone,host=a v=2i 1700000000000000001\n");
}

/// Whether the Parquet files on disk are exactly those the persisted
/// catalog names (no orphan, none missing).
fn catalog_matches_disk(data: &Path) -> bool {
    let root = data.join("parquet");
    let mut text = std::fs::read(root.join("_catalog.json")).expect("catalog");
    let catalog = simd_json::to_owned_value(&mut text).expect("catalog JSON");
    let mut named: Vec<PathBuf> = catalog["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| root.join(f["path"].as_str().expect("path")))
        .collect();
    named.sort();
    named == parquet_files(&root)
}

/// Writes `batches` batches of 100 points (10 hosts), each persisted
/// before the next (one small file per shard per batch); every batch also
/// rewrites point 0 (same series and time) with `v = 1 000 000 + batch`.
/// Returns the distinct points written.
fn small_files(server: &Server, batches: u64) -> u64 {
    for batch in 0..batches {
        let snapshots = server.metric("ringest_persist_snapshots_total");
        let mut body = lines(batch * 100 + 1, 100, 10);
        body.push_str(&format!(
            "m,host=h0 v={}i 1700000000000000000\n",
            1_000_000 + batch
        ));
        write_ok(server, "c", &body);
        server.wait_persisted(snapshots + 1);
    }
    batches * 100 + 1
}

/// What a correct store answers after `small_files(…, batches)`: every
/// point once, point 0 with the last rewrite's value.
fn assert_small_files_answers(server: &Server, batches: u64) {
    let have = stored(server, "c");
    let mut expected: BTreeSet<u64> = (1..=batches * 100).collect();
    expected.insert(1_000_000 + batches - 1);
    let wrong: Vec<&u64> = have.symmetric_difference(&expected).collect();
    assert!(wrong.is_empty(), "values missing or unexpected: {wrong:?}");
    let count = query_series(server, "c", "SELECT count(v) FROM m");
    assert_eq!(count[0].values[0][1].as_u64(), Some(batches * 100 + 1));
}

/// Goal: compaction merges runs of small files into one (fewer files, the
/// catalog and the disk agree), and every answer stays the same: no row
/// lost or doubled, a point rewritten in a newer file keeps the newest
/// value (the merged file takes its inputs' place in age order), before
/// and after a restart. Method: real server, 2 shards, 50 ms snapshots,
/// `compact_files = 4`; ten batches, each persisted before the next (ten
/// small files per shard), each rewriting one old point; wait (polling
/// `/metrics`) until compactions brought each shard under 4 files.
#[test]
fn compaction_merges_small_files_and_changes_no_answer() {
    let dir = TempDir::new("persist-compact");
    let data = dir.path.join("data");
    let config = config_file(
        &dir,
        "[persist]\ninterval_ms = 50\ncompact_files = 4\ncompact_rows_max = 100000\n",
    );
    let args = ["--shards", "2", "--config", config.as_str()];
    let mut server = Server::start_in(&data, &args);
    let points = small_files(&server, 10);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while metric_max(&server, "ringest_persist_files") >= 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "still {} files after 60 s",
            server.metric("ringest_persist_files")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(server.metric("ringest_persist_compactions_total") >= 2);
    assert!(server.metric("ringest_persist_files_compacted_total") >= 8);
    // Every point once per shard, but for point 0's older versions: at
    // most one in each other file of its shard (the newest wins in scans).
    let rows = server.metric("ringest_persist_file_rows");
    let files = server.metric("ringest_persist_files");
    assert!(
        rows >= points && rows < points + files,
        "{rows} rows in {files} files for {points} points"
    );
    assert_small_files_answers(&server, 10);
    while !catalog_matches_disk(&data) {
        assert!(
            std::time::Instant::now() < deadline,
            "files the catalog does not name remain"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.restart();
    assert_small_files_answers(&server, 10);
    assert_eq!(server.metric("ringest_persist_file_rows"), rows);
}

/// The largest per-shard sample of a metric (`name{shard="…"} v`).
fn metric_max(server: &Server, name: &str) -> u64 {
    let text = server.request("GET", "/metrics", &[], b"").text();
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
}

/// Goal: a crash at each step of a compaction — merged file written but
/// not in the catalog, catalog rewritten but inputs not deleted — loses
/// and doubles nothing, and start-up removes what the catalog does not
/// name. Method: the test hook aborts the process at that step of the
/// first compaction; restart; same answers, catalog and disk agree.
#[test]
fn crash_at_each_compaction_step_loses_and_duplicates_nothing() {
    for step in ["compaction-written", "compaction-recorded"] {
        let dir = TempDir::new("persist-compact-crash");
        let data = dir.path.join("data");
        let config = config_file(
            &dir,
            "[persist]\ninterval_ms = 50\ncompact_files = 4\ncompact_rows_max = 100000\n",
        );
        let args = ["--shards", "2", "--config", config.as_str()];
        let mut server =
            Server::start_in_with_env(&data, &args, &[("RINGEST_TEST_PERSIST_CRASH", step)]);
        // Four small files per shard make the first compaction.
        for batch in 0..4 {
            let snapshots = server.metric("ringest_persist_snapshots_total");
            let mut body = lines(batch * 100 + 1, 100, 10);
            body.push_str(&format!(
                "m,host=h0 v={}i 1700000000000000000\n",
                1_000_000 + batch
            ));
            write_ok(&server, "c", &body);
            if batch < 3 {
                server.wait_persisted(snapshots + 1);
            }
        }
        let status = server
            .wait_exit(Duration::from_secs(60))
            .unwrap_or_else(|| panic!("{step}: the crash hook never fired"));
        assert!(!status.success(), "{step}: the process aborted");
        let server = Server::start_in(&data, &args);
        assert_small_files_answers(&server, 4);
        // What was not compacted before the crash is compacted now: no
        // shard keeps a run of 4 small files.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while metric_max(&server, "ringest_persist_files") >= 4 {
            assert!(
                std::time::Instant::now() < deadline,
                "{step}: a shard still holds 4 small files"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The disk settles on exactly the files the catalog names (the
        // orphan of the crash removed at start, merged inputs deleted).
        while !catalog_matches_disk(&data) {
            assert!(
                std::time::Instant::now() < deadline,
                "{step}: files the catalog does not name remain"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_small_files_answers(&server, 4);
    }
}
