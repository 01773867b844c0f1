//! Evaluator tests over real `ShardStore`s behind a test backend.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use super::*;
use crate::batch::{BatchEncoder, BatchReader};
use crate::line_protocol::{FieldValue, Point};
use crate::query::{execute, QueryParams};
use crate::store::{ShardStore, StoreLimits};

/// A backend over `n` local stores; series routed by hash like the server.
struct TestBackend {
    shards: Vec<RefCell<ShardStore>>,
    databases: RefCell<Vec<String>>,
    readable: Option<&'static str>,
}

impl TestBackend {
    fn new(shards: usize, chunk_rows: usize) -> TestBackend {
        TestBackend {
            shards: (0..shards)
                .map(|_| {
                    RefCell::new(ShardStore::new(StoreLimits {
                        memory_bytes_max: 1 << 30,
                        chunk_rows,
                    }))
                })
                .collect(),
            databases: RefCell::new(vec!["db".to_string()]),
            readable: None,
        }
    }

    /// Writes line-protocol-like points: (measurement, tags, fields, time).
    fn write(&self, points: &[Point<'static>]) {
        let n = self.shards.len();
        let mut encoders: Vec<BatchEncoder> = (0..n).map(|_| BatchEncoder::new("db")).collect();
        for point in points {
            encoders[(point.series_hash % n as u64) as usize].push(point);
        }
        for (i, encoder) in encoders.iter_mut().enumerate() {
            let payload = encoder.take("db");
            let reader = BatchReader::new(&payload).expect("valid batch");
            self.shards[i].borrow_mut().apply(&reader);
        }
    }
}

impl QueryBackend for TestBackend {
    fn scan(
        &self,
        request: ScanRequest,
    ) -> impl std::future::Future<Output = Result<Vec<ScanResponse>, String>> {
        let result = self
            .shards
            .iter()
            .map(|s| s.borrow().scan(&request).map_err(|e| e.to_string()))
            .collect();
        std::future::ready(result)
    }

    fn databases(&self) -> Vec<String> {
        self.databases.borrow().clone()
    }

    fn create_database(&self, name: &str) -> impl std::future::Future<Output = Result<(), String>> {
        let mut dbs = self.databases.borrow_mut();
        if !dbs.iter().any(|d| d == name) {
            dbs.push(name.to_string());
        }
        std::future::ready(Ok(()))
    }

    fn drop_database(&self, name: &str) -> impl std::future::Future<Output = Result<(), String>> {
        self.databases.borrow_mut().retain(|d| d != name);
        for shard in &self.shards {
            shard.borrow_mut().drop_database(name);
        }
        std::future::ready(Ok(()))
    }

    fn may_read(&self, database: &str) -> bool {
        self.readable.is_none_or(|r| r == database)
    }
}

enum F {
    F(f64),
    I(i64),
    S(&'static str),
    B(bool),
}

fn point(
    measurement: &'static str,
    tags: &[(&'static str, &'static str)],
    fields: &[(&'static str, F)],
    time: i64,
) -> Point<'static> {
    let mut tags: Vec<(Cow<'static, str>, Cow<'static, str>)> = tags
        .iter()
        .map(|(k, v)| (Cow::Borrowed(*k), Cow::Borrowed(*v)))
        .collect();
    tags.sort();
    let mut hasher = DefaultHasher::new();
    measurement.hash(&mut hasher);
    tags.hash(&mut hasher);
    Point {
        line_number: 1,
        measurement: Cow::Borrowed(measurement),
        tags,
        fields: fields
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    F::F(f) => FieldValue::Float(*f),
                    F::I(i) => FieldValue::Integer(*i),
                    F::S(s) => FieldValue::String(Cow::Borrowed(*s)),
                    F::B(b) => FieldValue::Boolean(*b),
                };
                (Cow::Borrowed(*k), value)
            })
            .collect(),
        timestamp_ns: time,
        series_hash: hasher.finish(),
    }
}

const S: i64 = 1_000_000_000;

fn run_with(backend: &TestBackend, q: &str, epoch: Option<&str>) -> (u16, String) {
    let params = QueryParams {
        q: q.to_string(),
        db: Some("db".into()),
        epoch: epoch.map(str::to_string),
        now_ns: 1_000 * S,
        ..QueryParams::default()
    };
    let output = futures_lite::future::block_on(execute(&params, backend));
    let body = String::from_utf8(output.body).expect("utf8");
    (output.status, body.trim_end().to_string())
}

fn run(backend: &TestBackend, q: &str) -> String {
    let (status, body) = run_with(backend, q, Some("s"));
    assert_eq!(status, 200, "{q}: {body}");
    body
}

/// cpu: two hosts, floats every 10 s from t=100 s to 150 s.
fn cpu_backend(shards: usize) -> TestBackend {
    let backend = TestBackend::new(shards, 4);
    let mut points = Vec::new();
    for i in 0..6i64 {
        points.push(point(
            "cpu",
            &[("host", "a"), ("region", "eu")],
            &[("v", F::F(i as f64)), ("n", F::I(i * 10))],
            (100 + i * 10) * S,
        ));
        points.push(point(
            "cpu",
            &[("host", "b"), ("region", "us")],
            &[("v", F::F(10.0 + i as f64))],
            (105 + i * 10) * S,
        ));
    }
    points.push(point("mem", &[("host", "a")], &[("free", F::I(7)), ("ok", F::B(true)), ("msg", F::S("hi"))], 100 * S));
    backend.write(&points);
    backend
}

#[test]
fn smoke_print() {
    let b = cpu_backend(2);
    for q in [
        "SHOW DATABASES",
        "SHOW MEASUREMENTS",
        "SHOW TAG KEYS",
        "SHOW TAG VALUES WITH KEY = \"host\"",
        "SHOW FIELD KEYS",
        "SHOW SERIES",
        "SHOW RETENTION POLICIES",
        "SELECT * FROM cpu",
        "SELECT * FROM mem",
        "SELECT v FROM cpu WHERE host = 'a' AND v > 2",
        "SELECT mean(v) FROM cpu",
        "SELECT max(v) FROM cpu",
        "SELECT count(*) FROM cpu",
        "SELECT mean(v) FROM cpu WHERE time >= 100s AND time < 160s GROUP BY time(20s)",
        "SELECT mean(v) FROM cpu WHERE time >= 90s AND time < 200s GROUP BY time(20s), host fill(none)",
        "SELECT mean(v) FROM cpu WHERE time >= 90s AND time < 200s GROUP BY time(20s) fill(previous)",
        "SELECT count(v) FROM cpu WHERE time >= 90s AND time < 200s GROUP BY time(20s)",
        "SELECT derivative(mean(v)) FROM cpu WHERE time >= 100s AND time < 160s GROUP BY time(20s)",
        "SELECT mean(v) * 2 AS x, max(v) FROM cpu WHERE time >= 100s AND time < 160s GROUP BY time(20s) ORDER BY time DESC LIMIT 2",
        "SELECT v FROM cpu GROUP BY time(10s)",
        "SELEC bad",
        "SELECT distinct(host) FROM cpu",
    ] {
        println!("{q}\n  {:?}", run_with(&b, q, Some("s")));
    }
    println!("{:?}", run_with(&b, "SELECT v FROM cpu LIMIT 2", None));
}
