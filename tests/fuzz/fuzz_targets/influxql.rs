//! Fuzz target: the InfluxQL parser and evaluator (`src/query/`).
//!
//! Every input must finish with an answer (a parse error, a statement
//! error or results) in bounded time and memory: deep nesting, huge
//! numbers, regex bombs and `GROUP BY time(1ns)` over a wide range included.
//! `tests/fuzz/run.sh` runs it with libFuzzer's `-timeout` and
//! `-rss_limit_mb`, so an input that takes too long or too much memory is a
//! finding.
//!
//! The evaluator runs over two in-memory shard stores holding the golden
//! data set (`tests/fixtures/influxql/data.lp`, database `golden`) plus a
//! `wide` measurement with points at both ends of the time range. A query
//! that may change them (its text holds `create`, `drop` or `alter`, in any
//! case) gets a fresh copy, thrown away after it; every other query reads
//! one copy built once, so each input sees the same data.
//!
//! Invariants checked: no panic; the status is 200, 400 (parse error) or
//! 403; the body is valid UTF-8 and, unless chunked, one JSON document.
//!
//! Input: byte 0 picks the options (bits 0-2 `epoch`, bit 3 `pretty`,
//! bit 4 `chunked`, bit 5 `chunk_size=2`, bit 6 no `db`), the rest is `q`.

#![no_main]

use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::future::{ready, Future};

use libfuzzer_sys::fuzz_target;
use ringest::batch::BatchEncoder;
use ringest::line_protocol::{Lines, ParseOptions, Point, Precision};
use ringest::query::{execute, QueryBackend, QueryParams};
use ringest::retention::Period;
use ringest::store::{ScanRequest, ScanResponse, ShardStore, StoreLimits};

const DATA: &str = include_str!("../../fixtures/influxql/data.lp");
const WIDE: &str = "wide,k=a v=1 -9223372036854775806\n\
                    wide,k=a v=2 0\n\
                    wide,k=b v=3i 1767225600000000000\n\
                    wide,k=b v=4i 9223372036854775806\n";
const EPOCHS: [Option<&str>; 8] = [
    None,
    Some("ns"),
    Some("u"),
    Some("ms"),
    Some("s"),
    Some("m"),
    Some("h"),
    Some("x"),
];
/// `now()` of every query: 2026-01-01T00:00:00Z, inside the data.
const NOW_NS: i64 = 1_767_225_600_000_000_000;

struct Backend {
    shards: Vec<RefCell<ShardStore>>,
    databases: RefCell<Vec<String>>,
    retentions: RefCell<HashMap<String, Period>>,
}

impl Backend {
    fn new() -> Backend {
        let backend = Backend {
            shards: (0..2)
                .map(|_| {
                    RefCell::new(ShardStore::new(StoreLimits {
                        memory_bytes_max: 64 << 20,
                        chunk_rows: 64,
                    }))
                })
                .collect(),
            databases: RefCell::new(vec!["golden".to_string()]),
            retentions: RefCell::default(),
        };
        for text in [DATA, WIDE] {
            backend.write("golden", text);
        }
        backend
    }

    fn write(&self, database: &str, text: &str) {
        let n = self.shards.len();
        let mut encoders: Vec<BatchEncoder> = (0..n).map(|_| BatchEncoder::new(database)).collect();
        let mut lines = Lines::new(text, ParseOptions::new(Precision::Nanoseconds, 0));
        let mut point = Point::default();
        while let Some(result) = lines.next_into(&mut point) {
            result.expect("fixture line parses");
            encoders[(point.series_hash % n as u64) as usize].push(&point);
        }
        for (shard, encoder) in self.shards.iter().zip(&mut encoders) {
            let batch = encoder.take(database);
            shard.borrow_mut().apply(&batch.reader());
        }
    }
}

impl QueryBackend for Backend {
    fn scan(
        &self,
        request: ScanRequest,
    ) -> impl Future<Output = Result<Vec<ScanResponse>, String>> {
        ready(
            self.shards
                .iter()
                .map(|s| s.borrow().scan(&request).map_err(|e| e.to_string()))
                .collect(),
        )
    }

    fn databases(&self) -> Vec<String> {
        self.databases.borrow().clone()
    }

    fn retention(&self, database: &str) -> Option<Period> {
        let known = self.databases.borrow().iter().any(|d| d == database);
        known.then(|| {
            self.retentions
                .borrow()
                .get(database)
                .copied()
                .unwrap_or(Period::FOREVER)
        })
    }

    fn create_database(
        &self,
        name: &str,
        retention: Option<Period>,
    ) -> impl Future<Output = Result<(), String>> {
        let result = match (self.retention(name), retention) {
            (Some(existing), Some(asked)) if existing != asked => {
                Err("retention policy conflicts with an existing policy".to_string())
            }
            (Some(_), _) => Ok(()),
            (None, retention) => {
                self.databases.borrow_mut().push(name.to_string());
                self.retentions
                    .borrow_mut()
                    .insert(name.to_string(), retention.unwrap_or(Period::FOREVER));
                Ok(())
            }
        };
        ready(result)
    }

    fn set_retention(
        &self,
        database: &str,
        period: Period,
    ) -> impl Future<Output = Result<(), String>> {
        let result = match self.retention(database) {
            None => Err(format!("database not found: {database}")),
            Some(_) => {
                self.retentions
                    .borrow_mut()
                    .insert(database.to_string(), period);
                Ok(())
            }
        };
        ready(result)
    }

    fn drop_database(&self, name: &str) -> impl Future<Output = Result<(), String>> {
        self.databases.borrow_mut().retain(|d| d != name);
        for shard in &self.shards {
            shard.borrow_mut().drop_database(name);
        }
        ready(Ok(()))
    }

    fn may_read(&self, _database: &str) -> bool {
        true
    }
}

thread_local! {
    /// The data read by queries that change nothing.
    static SHARED: OnceCell<Backend> = const { OnceCell::new() };
}

fuzz_target!(|data: &[u8]| {
    let Some((&options, rest)) = data.split_first() else {
        return;
    };
    let Ok(q) = std::str::from_utf8(rest) else {
        return;
    };
    let params = QueryParams {
        q: q.to_string(),
        db: (options & 0x40 == 0).then(|| "golden".to_string()),
        rp: None,
        epoch: EPOCHS[usize::from(options & 7)].map(str::to_string),
        pretty: options & 8 != 0,
        chunked: options & 0x10 != 0,
        chunk_size: (options & 0x20 != 0).then_some(2),
        now_ns: NOW_NS,
        limits: Default::default(),
    };
    let lower = q.to_ascii_lowercase();
    let output = if ["create", "drop", "alter"]
        .iter()
        .any(|w| lower.contains(w))
    {
        futures_lite::future::block_on(execute(&params, &Backend::new()))
    } else {
        SHARED.with(|shared| {
            let backend = shared.get_or_init(Backend::new);
            let output = futures_lite::future::block_on(execute(&params, backend));
            assert_eq!(
                backend.databases(),
                ["golden"],
                "a query without create/drop/alter changed the data"
            );
            assert!(backend.retentions.borrow().is_empty());
            output
        })
    };
    assert!(
        matches!(output.status, 200 | 400 | 403),
        "status {}",
        output.status
    );
    let body = std::str::from_utf8(&output.body).expect("UTF-8 body");
    if !params.chunked {
        serde_json::from_str::<serde_json::Value>(body)
            .unwrap_or_else(|e| panic!("not one JSON document ({e}): {body}"));
    }
});
