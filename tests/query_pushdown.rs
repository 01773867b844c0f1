//! Aggregates computed while scanning, over a real server: Parquet files
//! and memory read as one store without holding rows, so `[query]
//! rows_max` bounds the rows a statement holds (a raw SELECT), not the rows
//! an aggregate reads.

// Tests are not shard code: std::time is fine here.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{config_file, query_series, Server, TempDir};

const HOSTS: i64 = 20;

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

/// Points `from..to` (one per second per host, starting `base_s`): host
/// `i % HOSTS`, integer field `v = i`.
fn lines(base_s: i64, from: i64, to: i64, value: impl Fn(i64) -> i64) -> String {
    (from..to)
        .map(|i| {
            format!(
                "m,host=h{} v={}i {}\n",
                i % HOSTS,
                value(i),
                (base_s + i / HOSTS) * 1_000_000_000
            )
        })
        .collect()
}

fn write(server: &Server, body: &str) {
    let response = server.write_v1("db=agg", body);
    assert_eq!(response.status, 204, "{}", response.text());
}

/// The first row of a one-series answer.
fn first_row(server: &Server, q: &str) -> Vec<String> {
    let series = query_series(server, "agg", q);
    assert_eq!(series.len(), 1, "{q}: {series:?}");
    series[0].values[0].iter().map(|v| v.to_string()).collect()
}

/// Goal: with `rows_max = 1000`, `count`/`sum`/`min`/`max` over 12 000
/// points — most in Parquet files, the rest in memory, some points of one
/// host rewritten (same time, new value) after being persisted — answer
/// exactly (rewrites counted once, with their new value), per host too;
/// `SELECT *` over the same rows is refused by the row limit. Method: real
/// server with 2 shards and 50 ms snapshots, wait until persisted, write
/// more (memory) and rewrite 10 persisted points, query.
#[test]
fn aggregates_read_files_and_memory_beyond_the_row_limit() {
    let dir = TempDir::new("pushdown");
    let config = config_file(
        &dir,
        "[query]\nrows_max = 1000\n[persist]\ninterval_ms = 50\n",
    );
    let args = ["--shards", "2", "--config", config.as_str()];
    let server = Server::start_in(&dir.path.join("data"), &args);
    // A point every second per host, over the last 10 minutes.
    let base = now_s() - 600;
    for from in (0..10_000).step_by(2_000) {
        write(&server, &lines(base, from, from + 2_000, |i| i));
    }
    server.wait_persisted(2);
    write(&server, &lines(base, 10_000, 12_000, |i| i));
    // Rewrite 10 persisted points of host h3: v = i + 1 000 000.
    let rewritten: Vec<i64> = (0..10).map(|k| 3 + k * HOSTS).collect();
    let body: String = rewritten
        .iter()
        .map(|&i| lines(base, i, i + 1, |i| i + 1_000_000))
        .collect();
    write(&server, &body);

    let n = 12_000i64;
    let sum = n * (n - 1) / 2 + 10 * 1_000_000;
    assert_eq!(
        first_row(&server, "SELECT count(v), sum(v), min(v), max(v) FROM m")[1..],
        [
            n.to_string(),
            sum.to_string(),
            "0".to_string(),
            (1_000_000 + rewritten[9]).to_string()
        ]
    );
    let per_host = query_series(&server, "agg", "SELECT count(v) FROM m GROUP BY host");
    assert_eq!(per_host.len(), HOSTS as usize);
    for series in &per_host {
        assert_eq!(series.values[0][1].to_string(), (n / HOSTS).to_string());
    }
    let h3: i64 = (0..n / HOSTS).map(|k| 3 + k * HOSTS).sum::<i64>() + 10 * 1_000_000;
    assert_eq!(
        first_row(&server, "SELECT sum(v) FROM m WHERE host = 'h3'")[1],
        h3.to_string()
    );
    let response = server.query("db=agg&q=SELECT%20*%20FROM%20m");
    assert!(
        response.text().contains("max-select-point"),
        "{}",
        response.text()
    );
}

/// Goal: a repeated query reads persisted files from the decoded-file
/// cache (no decoding: hits counted) and answers the same; rows persisted
/// later are in the next answer (the cache holds files, not answers).
/// Method: real server, 50 ms snapshots; write, wait until persisted,
/// query twice; write more, persist, query again.
#[test]
fn repeated_queries_read_decoded_files_from_the_cache() {
    let dir = TempDir::new("file-cache");
    let config = config_file(&dir, "[persist]\ninterval_ms = 50\n");
    let args = ["--shards", "2", "--config", config.as_str()];
    let server = Server::start_in(&dir.path.join("data"), &args);
    let base = now_s() - 600;
    write(&server, &lines(base, 0, 2_000, |i| i));
    server.wait_persisted(2);
    let q = "SELECT count(v), sum(v) FROM m";
    let first = first_row(&server, q);
    let hits = server.metric("ringest_query_file_cache_hits_total");
    assert_eq!(first_row(&server, q), first);
    assert!(
        server.metric("ringest_query_file_cache_hits_total") > hits,
        "the second query decoded its files again"
    );
    assert!(server.metric("ringest_query_file_cache_bytes") > 0);
    let snapshots = server.metric("ringest_persist_snapshots_total");
    write(&server, &lines(base, 2_000, 3_000, |i| i));
    server.wait_persisted(snapshots + 1);
    assert_eq!(
        first_row(&server, q)[1..],
        ["3000".to_string(), (3_000 * 2_999 / 2).to_string()]
    );
}
