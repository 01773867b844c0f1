//! Store tests: merge, seal, dedup across chunks, memory accounting, scan
//! filters and bounds.

use std::borrow::Cow;

use super::*;
use crate::batch::BatchEncoder;
use crate::line_protocol::Point;

pub(super) fn point(
    measurement: &'static str,
    tags: &[(&'static str, &'static str)],
    fields: Vec<(&'static str, FieldValue<'static>)>,
    time: i64,
) -> Point<'static> {
    let tags: Vec<(Cow<'static, str>, Cow<'static, str>)> = tags
        .iter()
        .map(|(k, v)| (Cow::Borrowed(*k), Cow::Borrowed(*v)))
        .collect();
    let hash = tags.iter().fold(measurement.len() as u64, |h, (k, v)| {
        h.wrapping_mul(31)
            .wrapping_add((k.len() * 7 + v.len()) as u64)
    });
    Point {
        line_number: 1,
        measurement: Cow::Borrowed(measurement),
        tags,
        fields: fields
            .into_iter()
            .map(|(k, v)| (Cow::Borrowed(k), v))
            .collect(),
        timestamp_ns: time,
        series_hash: hash,
    }
}

pub(super) fn apply(store: &mut ShardStore, points: &[Point<'static>]) {
    let mut encoder = BatchEncoder::new("db");
    for p in points {
        encoder.push(p);
    }
    let payload = encoder.take("db");
    let reader = payload.reader();
    store.apply(&reader);
}

pub(super) fn store(chunk_rows: usize) -> ShardStore {
    ShardStore::new(StoreLimits {
        memory_bytes_max: 1 << 20,
        chunk_rows,
    })
}

pub(super) fn rows(fields: &[&str]) -> RowsRequest {
    RowsRequest {
        database: "db".into(),
        measurements: vec!["cpu".into()],
        tag_filter: TagFilter::All,
        time_min_ns: i64::MIN,
        time_max_ns: i64::MAX,
        fields: fields.iter().map(|f| f.to_string()).collect(),
        condition_fields: Vec::new(),
        row_limit: 1000,
    }
}

pub(super) fn scan_rows(store: &ShardStore, request: RowsRequest) -> Vec<SeriesRows> {
    match store.scan(&ScanRequest::Rows(request)) {
        Ok(ScanResponse::Rows(rows)) => rows,
        other => panic!("unexpected {other:?}"),
    }
}

/// Goal: same series and time in one batch and across batches is one row,
/// fields merged, later write wins. Method: three writes to one (series,
/// time) inside the active chunk; scan.
#[test]
fn same_series_and_time_merges_later_wins() {
    let mut s = store(100);
    apply(
        &mut s,
        &[
            point(
                "cpu",
                &[("host", "a")],
                vec![("a", FieldValue::Float(1.0))],
                10,
            ),
            point(
                "cpu",
                &[("host", "a")],
                vec![("a", FieldValue::Float(2.0)), ("b", FieldValue::Integer(5))],
                10,
            ),
        ],
    );
    apply(
        &mut s,
        &[point(
            "cpu",
            &[("host", "a")],
            vec![("b", FieldValue::Integer(6))],
            10,
        )],
    );
    let out = scan_rows(&s, rows(&["a", "b"]));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].times, vec![10]);
    assert_eq!(out[0].columns[0], vec![Some(Value::Float(2.0))]);
    assert_eq!(out[0].columns[1], vec![Some(Value::Integer(6))]);
}

/// Goal: chunks seal at `chunk_rows` and duplicates across sealed chunks
/// resolve at scan time exactly like in the active chunk. Method:
/// chunk_rows = 2; write (t=1,a=1), (t=2), then (t=1,b=…) and (t=1,a=3)
/// in later chunks; check chunk counts and the merged row.
#[test]
fn seal_and_dedup_across_chunks() {
    let mut s = store(2);
    let host = [("host", "a")];
    apply(
        &mut s,
        &[point("cpu", &host, vec![("a", FieldValue::Float(1.0))], 1)],
    );
    apply(
        &mut s,
        &[point("cpu", &host, vec![("a", FieldValue::Float(9.0))], 2)],
    );
    apply(
        &mut s,
        &[point(
            "cpu",
            &host,
            vec![("b", FieldValue::Boolean(true))],
            1,
        )],
    );
    apply(
        &mut s,
        &[point("cpu", &host, vec![("c", FieldValue::Float(0.5))], 3)],
    );
    apply(
        &mut s,
        &[point("cpu", &host, vec![("a", FieldValue::Float(3.0))], 1)],
    );
    let table = &s.databases["db"].tables["cpu"];
    assert_eq!(table.sealed.len(), 2);
    assert_eq!(table.active.len(), 1);
    assert!(
        table.sealed.iter().all(|c| c.index.is_empty()),
        "sealed chunks drop their index"
    );
    let out = scan_rows(&s, rows(&["a", "b"]));
    assert_eq!(out[0].times, vec![1, 2]);
    assert_eq!(
        out[0].columns[0],
        vec![Some(Value::Float(3.0)), Some(Value::Float(9.0))]
    );
    assert_eq!(out[0].columns[1], vec![Some(Value::Boolean(true)), None]);
}

/// Goal: scans filter by inclusive time range, tag predicates (a missing
/// tag reads as ""), and return a row only when a selected field is set.
/// Method: three series, rows with and without the selected field.
#[test]
fn scan_filters_time_tags_and_field_presence() {
    let mut s = store(3);
    apply(
        &mut s,
        &[
            point(
                "cpu",
                &[("host", "a")],
                vec![("v", FieldValue::Float(1.0))],
                10,
            ),
            point(
                "cpu",
                &[("host", "a")],
                vec![("w", FieldValue::Float(1.0))],
                20,
            ),
            point(
                "cpu",
                &[("host", "b")],
                vec![("v", FieldValue::Float(2.0))],
                20,
            ),
            point("cpu", &[], vec![("v", FieldValue::Float(3.0))], 30),
            point(
                "cpu",
                &[("host", "a")],
                vec![("v", FieldValue::Float(4.0))],
                40,
            ),
        ],
    );
    let mut request = rows(&["v"]);
    request.time_min_ns = 20;
    request.time_max_ns = 40;
    let out = scan_rows(&s, request.clone());
    type Summary = Vec<(Vec<(String, String)>, Vec<i64>)>;
    let summary: Summary = out
        .iter()
        .map(|r| (r.tags.clone(), r.times.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (vec![], vec![30]),
            (vec![("host".into(), "a".into())], vec![40]),
            (vec![("host".into(), "b".into())], vec![20]),
        ]
    );
    request.tag_filter = TagFilter::Eq {
        key: "host".into(),
        value: String::new(),
    };
    assert_eq!(scan_rows(&s, request.clone()).len(), 1);
    request.tag_filter = TagFilter::NotMatch {
        key: "host".into(),
        regex: Regex::new("^a$").expect("re"),
    };
    assert_eq!(scan_rows(&s, request.clone()).len(), 2);
    request.tag_filter = TagFilter::Or(
        Box::new(TagFilter::Eq {
            key: "host".into(),
            value: "a".into(),
        }),
        Box::new(TagFilter::Match {
            key: "host".into(),
            regex: Regex::new("(?i)B").expect("re"),
        }),
    );
    assert_eq!(scan_rows(&s, request).len(), 2);
}

/// Goal: a scan past its row limit is an error, not a large answer.
/// Method: 50 rows, limit 10.
#[test]
fn scan_row_limit_is_an_error() {
    let mut s = store(7);
    let points: Vec<Point<'static>> = (0..50)
        .map(|t| {
            point(
                "cpu",
                &[("host", "a")],
                vec![("v", FieldValue::Float(1.0))],
                t,
            )
        })
        .collect();
    apply(&mut s, &points);
    let mut request = rows(&["v"]);
    request.row_limit = 10;
    assert_eq!(
        s.scan(&ScanRequest::Rows(request)),
        Err(ScanError::TooManyRows { limit: 10 })
    );
}

/// Goal: schema scans report tag keys, field types and series, narrowed
/// by a tag filter and a measurement regex. Method: two measurements.
#[test]
fn schema_scan_reports_keys_types_and_series() {
    let mut s = store(4);
    apply(
        &mut s,
        &[
            point(
                "cpu",
                &[("host", "a"), ("region", "eu")],
                vec![
                    ("v", FieldValue::Float(1.0)),
                    ("n", FieldValue::UInteger(3)),
                ],
                1,
            ),
            point(
                "cpu",
                &[("host", "b")],
                vec![("s", FieldValue::String("x".into()))],
                1,
            ),
            point(
                "mem",
                &[("host", "a")],
                vec![("free", FieldValue::Integer(1))],
                1,
            ),
        ],
    );
    let request = |measurements, tag_filter| {
        ScanRequest::Schema(SchemaRequest {
            database: "db".into(),
            measurements,
            tag_filter,
            include_series: true,
            series_limit: 100,
            time_min_ns: i64::MIN,
        })
    };
    let Ok(ScanResponse::Schema(all)) = s.scan(&request(MeasurementFilter::All, TagFilter::All))
    else {
        panic!("schema")
    };
    assert_eq!(all.len(), 2);
    assert_eq!(
        all[0].tag_keys,
        vec!["host".to_string(), "region".to_string()]
    );
    assert_eq!(
        all[0].fields,
        vec![
            ("n".into(), FieldType::Unsigned),
            ("s".into(), FieldType::String),
            ("v".into(), FieldType::Float)
        ]
    );
    assert_eq!(all[0].series.len(), 2);
    let filter = TagFilter::Eq {
        key: "host".into(),
        value: "b".into(),
    };
    let Ok(ScanResponse::Schema(some)) = s.scan(&request(
        MeasurementFilter::Regex(Regex::new("^c").expect("re")),
        filter,
    )) else {
        panic!("schema")
    };
    assert_eq!(some.len(), 1);
    assert_eq!(some[0].tag_keys, vec!["host".to_string()]);
    assert_eq!(
        some[0].series,
        vec![vec![("host".to_string(), "b".to_string())]]
    );
    let Err(error) = s.scan(&ScanRequest::Schema(SchemaRequest {
        database: "db".into(),
        measurements: MeasurementFilter::All,
        tag_filter: TagFilter::All,
        include_series: true,
        series_limit: 2,
        time_min_ns: i64::MIN,
    })) else {
        panic!("limit")
    };
    assert_eq!(error, ScanError::TooManySeries { limit: 2 });
}

/// Goal: memory accounting grows with data, is close to a recomputation,
/// returns to zero on drop, and `has_room` refuses past the budget.
/// Method: write strings and numbers through several seals; compare the
/// running estimate with `table_bytes`.
#[test]
fn memory_accounting_tracks_writes_and_drops() {
    let mut s = ShardStore::new(StoreLimits {
        memory_bytes_max: 200_000,
        chunk_rows: 16,
    });
    assert_eq!(s.memory_bytes(), 0);
    let points: Vec<Point<'static>> = (0..100)
        .map(|t| {
            point(
                "cpu",
                &[("host", "a")],
                vec![
                    ("v", FieldValue::Float(1.0)),
                    ("s", FieldValue::String("abcdefgh".into())),
                ],
                t,
            )
        })
        .collect();
    apply(&mut s, &points);
    let running = s.memory_bytes();
    let recomputed: usize = s.databases["db"].tables.values().map(table_bytes).sum();
    assert!(running > 100 * (8 + 9 + 8), "estimate {running} too small");
    assert_eq!(
        running, recomputed,
        "running estimate matches recomputation"
    );
    assert!(s.has_room(1000));
    assert!(!s.has_room(200_000));
    s.drop_database("db");
    assert_eq!(s.memory_bytes(), 0);
    assert!(scan_rows(&s, rows(&["v"])).is_empty());
}

/// Goal: the lazily built (series, time) index merges a repeated row that
/// arrives after many in-order appends, in-order rows of two series that
/// share a time stay distinct, and rows whose fields come in another order
/// still land in the right columns; the memory estimate stays exact.
/// Method: in-order rows for two series, then a repeat, an older new time
/// and a reordered row; scan both series and recompute the estimate.
#[test]
fn late_repeat_merges_after_in_order_appends() {
    let mut s = store(1000);
    let mut first = Vec::new();
    for t in 1..=5 {
        for host in ["a", "b"] {
            first.push(point(
                "cpu",
                &[("host", host)],
                vec![
                    ("v", FieldValue::Float(t as f64)),
                    ("i", FieldValue::Integer(t)),
                ],
                t,
            ));
        }
    }
    apply(&mut s, &first);
    assert!(!s.databases["db"].tables["cpu"].active.indexed);
    apply(
        &mut s,
        &[
            point(
                "cpu",
                &[("host", "a")],
                vec![("v", FieldValue::Float(30.0))],
                3,
            ),
            point(
                "cpu",
                &[("host", "a")],
                vec![("v", FieldValue::Float(0.5))],
                0,
            ),
            point(
                "cpu",
                &[("host", "b")],
                vec![
                    ("i", FieldValue::Integer(60)),
                    ("v", FieldValue::Float(6.0)),
                ],
                6,
            ),
        ],
    );
    assert!(s.databases["db"].tables["cpu"].active.indexed);
    let out = scan_rows(&s, rows(&["v", "i"]));
    assert_eq!(out.len(), 2);
    let a = out.iter().find(|r| r.tags[0].1 == "a").expect("series a");
    assert_eq!(a.times, vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(
        a.columns[0][3],
        Some(Value::Float(30.0)),
        "later write wins"
    );
    assert_eq!(a.columns[1][3], Some(Value::Integer(3)), "merge keeps i");
    assert_eq!(a.columns[1][0], None);
    let b = out.iter().find(|r| r.tags[0].1 == "b").expect("series b");
    assert_eq!(b.times, vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(b.columns[0][5], Some(Value::Float(6.0)));
    assert_eq!(b.columns[1][5], Some(Value::Integer(60)));
    let recomputed: usize = s.databases["db"].tables.values().map(table_bytes).sum();
    assert_eq!(s.memory_bytes(), recomputed);
}

/// Goal: a Parquet round trip keeps every series apart, including series
/// that differ only in a tag being absent (a null dictionary key may hold
/// the same key number as a present value), and scans read the file as
/// they read memory. Method: write a table of such series in small chunks
/// (several chunks, rewrites), persist it with `write_table`, load it with
/// `load_table`, compare the row scans of memory and of the file.
#[test]
#[allow(clippy::disallowed_methods)] // a test's temporary directory
fn parquet_round_trip_keeps_series_that_differ_by_an_absent_tag() {
    use crate::persist::layout::SnapshotId;
    use crate::persist::parquet::{load_table, write_table, LoadRequest};
    let mut s = store(3);
    let series: [&[(&'static str, &'static str)]; 5] = [
        &[("host", "a")],
        &[("host", "a"), ("rack", "r1")],
        &[("rack", "r1")],
        &[("host", "b"), ("rack", "r1")],
        &[],
    ];
    let mut points = Vec::new();
    for t in 0..20i64 {
        for (i, tags) in series.iter().enumerate() {
            let value = FieldValue::Integer(t * 10 + i as i64);
            points.push(point("cpu", tags, vec![("v", value)], (t % 7) * 1_000));
        }
    }
    apply(&mut s, &points);
    let memory = s
        .scan(&ScanRequest::Rows(rows(&["v"])))
        .expect("memory scan");
    let frozen = s.freeze().expect("rows to freeze");
    let table = &frozen.databases["db"].tables["cpu"];
    let root = std::env::temp_dir().join(format!("ringest-roundtrip-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let id = SnapshotId {
        generation: 1,
        sequence: 1,
        shard: 0,
        attempt: 0,
        compaction: 0,
    };
    let written = write_table(&root, id, "db", "cpu", table, None).expect("write");
    let load = LoadRequest {
        fields: None,
        time_min_ns: i64::MIN,
        time_max_ns: i64::MAX,
        owner: None,
    };
    let mut persisted = Persisted::default();
    for file in &written {
        let source = crate::persist::source::Source::new(root.clone(), None);
        let loaded = load_table(&source, &file.path.to_string_lossy(), &load).expect("load");
        persisted
            .tables
            .entry("cpu".into())
            .or_default()
            .push(Arc::new(loaded));
    }
    let from_file = store(3)
        .scan_with(&ScanRequest::Rows(rows(&["v"])), &persisted)
        .expect("file scan");
    let _ = std::fs::remove_dir_all(&root);
    let ScanResponse::Rows(list) = &from_file else {
        panic!("rows");
    };
    assert_eq!(list.len(), series.len(), "one series per tag set");
    assert_eq!(from_file, memory);
}

/// Goal: the decoded-file cache serves a file's second read without
/// decoding, keeps under its byte budget by dropping the least recently
/// used file, never caches a partial (time-pruned) read, and forgets a
/// file on request. Method: two real Parquet files; stats after each read.
#[test]
#[allow(clippy::disallowed_methods)] // a test's temporary directory
fn file_cache_hits_evicts_and_forgets() {
    use crate::persist::cache::FileCache;
    use crate::persist::layout::SnapshotId;
    use crate::persist::parquet::{write_table, LoadRequest};
    let root = std::env::temp_dir().join(format!("ringest-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let mut paths = Vec::new();
    for (sequence, table) in ["a", "b", "c"].into_iter().enumerate() {
        let mut s = store(1000);
        let points: Vec<_> = (0..500i64)
            .map(|t| {
                point(
                    table,
                    &[("host", "x")],
                    vec![("v", FieldValue::Integer(t))],
                    t,
                )
            })
            .collect();
        apply(&mut s, &points);
        let frozen = s.freeze().expect("rows");
        let id = SnapshotId {
            generation: 1,
            sequence: sequence as u64 + 1,
            shard: 0,
            attempt: 0,
            compaction: 0,
        };
        let written = write_table(
            &root,
            id,
            "db",
            table,
            &frozen.databases["db"].tables[table],
            None,
        )
        .expect("write");
        paths.push(written[0].path.to_string_lossy().to_string());
    }
    let all = LoadRequest {
        fields: None,
        time_min_ns: i64::MIN,
        time_max_ns: i64::MAX,
        owner: None,
    };
    let root = crate::persist::source::Source::new(root.clone(), None);
    let one = FileCache::new(usize::MAX)
        .load(&root, &paths[0], &all, true)
        .expect("load");
    // Room for two decoded files (the three are the same size).
    let budget = one.estimated_bytes() * 2 + 1;
    let cache = FileCache::new(budget);
    let first = cache.load(&root, &paths[0], &all, true).expect("load");
    let again = cache.load(&root, &paths[0], &all, true).expect("load");
    assert!(
        Arc::ptr_eq(&first, &again),
        "the second read is the cached table"
    );
    assert_eq!(cache.stats().1, 1, "one hit");
    cache.load(&root, &paths[1], &all, true).expect("load");
    cache.load(&root, &paths[2], &all, true).expect("load");
    cache.load(&root, &paths[0], &all, true).expect("load");
    let (bytes, hits, misses) = cache.stats();
    assert_eq!(
        (hits, misses),
        (1, 4),
        "c pushed a out, so a was decoded again"
    );
    assert!(bytes <= budget);
    cache.load(&root, &paths[2], &all, true).expect("load");
    assert_eq!(cache.stats().1, 2, "c stayed (b was older)");
    // A time-pruned read is not cached.
    cache.load(&root, &paths[1], &all, false).expect("load");
    assert_eq!(cache.stats(), (bytes, 2, 4));
    cache.forget(&paths[2..]);
    cache.load(&root, &paths[2], &all, true).expect("load");
    assert_eq!(cache.stats().2, 5, "forgotten: decoded again");
    let _ = std::fs::remove_dir_all(root.root());
}
