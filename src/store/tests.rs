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
        deadline: Deadline::NONE,
    }
}

/// Aggregates of `fields` of `cpu` over all time, no groups or buckets,
/// limits of 100.
pub(super) fn aggregate_request(fields: &[&str]) -> AggregateRequest {
    AggregateRequest {
        database: "db".into(),
        measurement: "cpu".into(),
        tag_filter: TagFilter::All,
        time_min_ns: i64::MIN,
        time_max_ns: i64::MAX,
        fields: fields.iter().map(|f| f.to_string()).collect(),
        group_keys: Vec::new(),
        window: None,
        sums: false,
        bucket_limit: 100,
        row_limit: 100,
        deadline: Deadline::NONE,
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
            series_keys: None,
            series_limit: 100,
            time_min_ns: i64::MIN,
            deadline: Deadline::NONE,
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
        series_keys: None,
        series_limit: 2,
        time_min_ns: i64::MIN,
        deadline: Deadline::NONE,
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
        .load(&root, &paths[0], &all)
        .expect("load");
    // Room for two decoded files (the three are the same size).
    let budget = one.estimated_bytes() * 2 + 1;
    let cache = FileCache::new(budget);
    let first = cache.load(&root, &paths[0], &all).expect("load");
    let again = cache.load(&root, &paths[0], &all).expect("load");
    assert!(
        Arc::ptr_eq(&first, &again),
        "the second read is the cached table"
    );
    assert_eq!(cache.stats().1, 1, "one hit");
    cache.load(&root, &paths[1], &all).expect("load");
    cache.load(&root, &paths[2], &all).expect("load");
    cache.load(&root, &paths[0], &all).expect("load");
    let (bytes, hits, misses) = cache.stats();
    assert_eq!(
        (hits, misses),
        (1, 4),
        "c pushed a out, so a was decoded again"
    );
    assert!(bytes <= budget);
    cache.load(&root, &paths[2], &all).expect("load");
    assert_eq!(cache.stats().1, 2, "c stayed (b was older)");
    // A read that leaves a row group out by time is not kept...
    let later = LoadRequest {
        time_min_ns: i64::MAX - 1,
        ..all.clone()
    };
    let pruned = cache.load(&root, &paths[1], &later).expect("load");
    assert_eq!(pruned.sealed[0].len(), 0, "its one row group left out");
    assert_eq!(cache.stats(), (bytes, 2, 5), "read, not kept");
    // ... and a kept file answers any time range (scans apply theirs).
    let kept = cache.load(&root, &paths[2], &later).expect("load");
    assert_eq!(cache.stats().1, 3, "c answered from the cache");
    assert!(kept.sealed[0].len() > 0, "every row of it");
    cache.forget(&paths[2..]);
    cache.load(&root, &paths[2], &all).expect("load");
    assert_eq!(cache.stats().2, 6, "forgotten: decoded again");
    let _ = std::fs::remove_dir_all(root.root());
}

/// One (group, bucket) of the reference fold: count, sum, min and max
/// (value, earliest time), first and last (time, value).
#[derive(Debug, Default, PartialEq)]
struct Reference {
    count: u64,
    sum: f64,
    min: Option<(f64, i64)>,
    max: Option<(f64, i64)>,
    first: Option<(i64, f64)>,
    last: Option<(i64, f64)>,
}

/// Per (group key, bucket start): one [`Reference`] per field.
type Folded = BTreeMap<(Vec<(String, String)>, i64), Vec<Reference>>;

/// The aggregates of `request` computed the plain way: the row scan's
/// deduplicated rows of all time, cut to the time range here and folded
/// one by one. Per (group key, bucket start), per field.
fn reference_fold(store: &ShardStore, persisted: &Persisted, request: &AggregateRequest) -> Folded {
    let rows_request = RowsRequest {
        database: "db".into(),
        measurements: vec![request.measurement.clone()],
        tag_filter: request.tag_filter.clone(),
        time_min_ns: i64::MIN,
        time_max_ns: i64::MAX,
        fields: request.fields.clone(),
        condition_fields: Vec::new(),
        row_limit: 1 << 20,
        deadline: Deadline::NONE,
    };
    let Ok(ScanResponse::Rows(list)) = store.scan_with(&ScanRequest::Rows(rows_request), persisted)
    else {
        panic!("row scan");
    };
    let mut out: BTreeMap<_, Vec<Reference>> = BTreeMap::new();
    for series in list {
        let key: Vec<(String, String)> = request
            .group_keys
            .iter()
            .map(|k| {
                let value = series
                    .tags
                    .iter()
                    .find(|(t, _)| t == k)
                    .map(|(_, v)| v.clone());
                (k.clone(), value.unwrap_or_default())
            })
            .collect();
        for (row, &time) in series.times.iter().enumerate() {
            if time < request.time_min_ns || time > request.time_max_ns {
                continue;
            }
            let start = match request.window {
                Some((interval, offset)) => aggregate::bucket_start(time, interval, offset),
                None => 0,
            };
            let slot = out.entry((key.clone(), start)).or_insert_with(|| {
                (0..request.fields.len())
                    .map(|_| Reference::default())
                    .collect()
            });
            for (reference, value) in slot.iter_mut().zip(&series.columns) {
                let v = match &value[row] {
                    Some(Value::Float(v)) => *v,
                    Some(Value::Integer(v)) => *v as f64,
                    None => continue,
                    other => panic!("{other:?}"),
                };
                reference.count += 1;
                reference.sum += v;
                if reference
                    .min
                    .is_none_or(|(m, t)| v < m || (v == m && time < t))
                {
                    reference.min = Some((v, time));
                }
                if reference
                    .max
                    .is_none_or(|(m, t)| v > m || (v == m && time < t))
                {
                    reference.max = Some((v, time));
                }
                if reference
                    .first
                    .is_none_or(|(t, f)| time < t || (time == t && v > f))
                {
                    reference.first = Some((time, v));
                }
                if reference
                    .last
                    .is_none_or(|(t, l)| time > t || (time == t && v > l))
                {
                    reference.last = Some((time, v));
                }
            }
        }
    }
    out
}

/// The scan's aggregates in the reference's shape.
fn scanned_fold(store: &ShardStore, persisted: &Persisted, request: &AggregateRequest) -> Folded {
    let Ok(ScanResponse::Aggregates(groups)) =
        store.scan_with(&ScanRequest::Aggregate(request.clone()), persisted)
    else {
        panic!("aggregate scan");
    };
    let mut out = BTreeMap::new();
    for group in groups {
        for bucket in group.buckets {
            let fields = bucket
                .fields
                .iter()
                .map(|f| {
                    let mut r = Reference {
                        count: f.count,
                        ..Reference::default()
                    };
                    let as_f64 = |s: Stats<i64>| Stats {
                        sum: s.sum as f64,
                        float_sum: s.float_sum,
                        min: (s.min.0 as f64, s.min.1),
                        max: (s.max.0 as f64, s.max.1),
                        first: (s.first.0, s.first.1 as f64),
                        last: (s.last.0, s.last.1 as f64),
                    };
                    let stats = match f.stats {
                        Some(NumericStats::Float(s)) => s,
                        Some(NumericStats::Integer(s)) => as_f64(s),
                        None => return r,
                        other => panic!("{other:?}"),
                    };
                    r.sum = stats.sum;
                    r.min = Some(stats.min);
                    r.max = Some(stats.max);
                    r.first = Some(stats.first);
                    r.last = Some(stats.last);
                    r
                })
                .collect();
            out.insert((group.key.clone(), bucket.start_ns), fields);
        }
    }
    out
}

/// Goal: aggregates read run by run (a time range cut inside runs, buckets
/// as stretches of runs, whole runs from their kept summaries, series out
/// of order or rewritten held and deduplicated) equal the plain fold of the
/// deduplicated rows, over a Parquet file read in place and memory in
/// arrival order together, asked twice (the second time from kept runs and
/// summaries). Method: seeded rows: six series, the first half in time
/// order persisted with `write_table` and loaded, then in memory (7-row
/// chunks) four series going on in order and two written at random times
/// over the file's (rewrites, disorder); several requests against
/// `reference_fold`. Values are quarters and small integers, exact in
/// binary, so sums do not depend on the order of their additions.
#[test]
#[allow(clippy::disallowed_methods)] // a test's temporary directory
fn aggregates_read_by_runs_equal_the_fold_of_the_rows() {
    use crate::persist::layout::SnapshotId;
    use crate::persist::parquet::{load_table, write_table, LoadRequest};
    const S: i64 = 1_000_000_000;
    let hosts: [&[(&'static str, &'static str)]; 6] = [
        &[("host", "h0")],
        &[("host", "h1"), ("rack", "r1")],
        &[("host", "h2"), ("rack", "r1")],
        &[("host", "h3"), ("rack", "r2")],
        &[("host", "h4")],
        &[("host", "h5"), ("rack", "r2")],
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let row = |host: usize, t: i64, next: &mut dyn FnMut(u64) -> u64| {
        let v = FieldValue::Float((next(401) as f64 - 200.0) / 4.0);
        let n = FieldValue::Integer(next(21) as i64 - 10);
        let fields = match next(4) {
            0 => vec![("v", v)],
            1 => vec![("n", n)],
            _ => vec![("v", v), ("n", n)],
        };
        point("cpu", hosts[host], fields, t * S)
    };
    let mut s = store(7);
    let mut points = Vec::new();
    for t in 0..300 {
        for host in 0..6 {
            points.push(row(host, t, &mut next));
        }
    }
    apply(&mut s, &points);
    let frozen = s.freeze().expect("rows");
    let root = std::env::temp_dir().join(format!("ringest-runs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let id = SnapshotId {
        generation: 1,
        sequence: 1,
        shard: 0,
        attempt: 0,
        compaction: 0,
    };
    let table = &frozen.databases["db"].tables["cpu"];
    let written = write_table(&root, id, "db", "cpu", table, None).expect("write");
    let everything = LoadRequest {
        fields: None,
        time_min_ns: i64::MIN,
        time_max_ns: i64::MAX,
        owner: None,
    };
    let mut persisted = Persisted::default();
    let source = crate::persist::source::Source::new(root.clone(), None);
    for file in &written {
        let loaded = load_table(&source, &file.path.to_string_lossy(), &everything).expect("load");
        persisted
            .tables
            .entry("cpu".into())
            .or_default()
            .push(Arc::new(loaded));
    }
    let _ = std::fs::remove_dir_all(&root);
    let mut s = store(7);
    let mut points = Vec::new();
    for t in 300..500 {
        for host in 2..6 {
            points.push(row(host, t, &mut next));
        }
        for host in 0..2 {
            let t = next(500) as i64;
            points.push(row(host, t, &mut next));
        }
        if points.len() > 40 {
            apply(&mut s, &points);
            points.clear();
        }
    }
    apply(&mut s, &points);
    let request = |filter: TagFilter, range: (i64, i64), window: Option<i64>, groups: &[&str]| {
        AggregateRequest {
            tag_filter: filter,
            time_min_ns: range.0 * S,
            time_max_ns: range.1 * S,
            group_keys: groups.iter().map(|g| g.to_string()).collect(),
            window: window.map(|w| (w * S, 0)),
            bucket_limit: 1 << 20,
            row_limit: 1 << 20,
            ..aggregate_request(&["v", "n"])
        }
    };
    let host = |h: &str| TagFilter::Eq {
        key: "host".into(),
        value: h.into(),
    };
    let requests = [
        request(TagFilter::All, (i64::MIN / S, i64::MAX / S), None, &[]),
        request(
            TagFilter::All,
            (i64::MIN / S, i64::MAX / S),
            None,
            &["host"],
        ),
        request(TagFilter::All, (17, 433), Some(13), &["rack"]),
        request(TagFilter::All, (0, 499), Some(1), &["host"]),
        request(host("h3"), (100, 120), None, &[]),
        request(host("h0"), (0, 499), Some(50), &[]),
        request(
            TagFilter::Or(Box::new(host("h2")), Box::new(host("h5"))),
            (150, 350),
            Some(100),
            &["host"],
        ),
    ];
    for pass in ["first", "again (kept runs and summaries)"] {
        for request in &requests {
            for sums in [false, true] {
                let request = AggregateRequest {
                    sums,
                    ..request.clone()
                };
                let expected = reference_fold(&s, &persisted, &request);
                assert!(!expected.is_empty(), "{request:?}");
                assert_eq!(
                    scanned_fold(&s, &persisted, &request),
                    expected,
                    "{pass}: {request:?}"
                );
            }
        }
    }
}

/// Goal: a scan past its deadline (`[query] time_limit_ms`) stops with
/// `query-timeout limit exceeded`, whatever its kind; one before it, or
/// without one, answers. Method: rows in memory, each kind of scan with a
/// deadline that passed (1 ms after a start one second ago), one a minute
/// away, and none.
#[test]
fn scans_past_their_deadline_stop() {
    let mut s = store(4);
    let points: Vec<_> = (0..20)
        .map(|t| {
            point(
                "cpu",
                &[("host", "a")],
                vec![("v", FieldValue::Integer(t))],
                t,
            )
        })
        .collect();
    apply(&mut s, &points);
    let start = crate::clock::monotonic();
    let passed = Deadline::after(start - std::time::Duration::from_secs(1), 1);
    let ahead = Deadline::after(start, 60_000);
    let aggregate = aggregate_request(&["v"]);
    let schema = SchemaRequest {
        database: "db".into(),
        measurements: MeasurementFilter::All,
        tag_filter: TagFilter::All,
        include_series: true,
        series_keys: None,
        series_limit: 100,
        time_min_ns: i64::MIN,
        deadline: Deadline::NONE,
    };
    let requests = [
        ScanRequest::Rows(rows(&["v"])),
        ScanRequest::Schema(schema),
        ScanRequest::Aggregate(aggregate),
    ];
    for mut request in requests {
        request.set_deadline(passed);
        let error = s.scan(&request).expect_err("past its deadline");
        assert_eq!(error, ScanError::TimeLimit { limit_ms: 1 });
        assert!(error
            .to_string()
            .starts_with("query-timeout limit exceeded"));
        for deadline in [ahead, Deadline::NONE] {
            request.set_deadline(deadline);
            assert!(s.scan(&request).is_ok(), "{deadline:?}");
        }
    }
}

/// Goal: a series held with the spans of another attempt's runs (the
/// sources changed in between: a snapshot moved rows to a file) is not
/// trusted: the attempt asks for another with the spans it saw, and that
/// one answers exactly. Method: one series in two overlapping runs (two
/// chunks, a rewritten time); an aggregator told a span that is not there;
/// then one told the spans the first reported.
#[test]
fn held_series_whose_runs_moved_are_held_again() {
    let mut s = store(3);
    let rows = |times: &[i64], base: i64| -> Vec<Point<'static>> {
        times
            .iter()
            .map(|&t| {
                point(
                    "cpu",
                    &[("host", "a")],
                    vec![("v", FieldValue::Integer(base + t))],
                    t,
                )
            })
            .collect()
    };
    apply(&mut s, &rows(&[1, 2, 3], 0));
    apply(&mut s, &rows(&[3, 4, 5], 100));
    let request = aggregate_request(&["v"]);
    let tags = vec![("host".to_string(), "a".to_string())];
    let table = &s.databases["db"].tables["cpu"];
    let stale: aggregate::HeldSeries = [(tags.clone(), vec![(1, 3)])].into_iter().collect();
    let mut first = aggregate::Aggregator::new(request.clone(), stale);
    first.feed(table).expect("feed");
    let aggregate::Finished::Again(again) = first.finish().expect("finish") else {
        panic!("the stale spans were trusted");
    };
    assert_eq!(again[&tags], vec![(1, 3), (3, 5)], "the spans it saw");
    let mut second = aggregate::Aggregator::new(request, again);
    second.feed(table).expect("feed");
    let aggregate::Finished::Done(groups) = second.finish().expect("finish") else {
        panic!("the spans it saw were not enough");
    };
    let field = &groups[0].buckets[0].fields[0];
    assert_eq!(field.count, 5, "time 3 counted once");
    let Some(NumericStats::Integer(stats)) = field.stats else {
        panic!("{field:?}");
    };
    assert_eq!(stats.min, (1, 1));
    assert_eq!(stats.max, (105, 5));
    assert_eq!(
        stats.sum,
        1 + 2 + 103 + 104 + 105,
        "the rewrite's value won"
    );
}

/// Goal: rows written between two attempts of one aggregate (the active
/// chunk of a held series grew, or was sealed and a new one begun) do not
/// make the second attempt ask for a third (under steady ingest every
/// attempt would, and the query would end `Busy`), and it still answers
/// exactly; an inverted time range with `GROUP BY time` answers nothing
/// instead of panicking. Method: a series in a sealed chunk and the active
/// chunk with a rewritten time (held); attempt 1; write more (growing, then
/// sealing); attempt 2 with attempt 1's spans.
#[test]
fn a_held_series_written_between_attempts_needs_no_third() {
    let request = aggregate_request(&["v"]);
    let at = |t: i64, v: i64| {
        point(
            "cpu",
            &[("host", "a")],
            vec![("v", FieldValue::Integer(v))],
            t,
        )
    };
    for more in [vec![at(5, 5)], vec![at(5, 5), at(6, 6), at(7, 7)]] {
        let mut s = store(4);
        apply(&mut s, &[at(1, 1), at(2, 2), at(3, 3), at(10, 10)]);
        apply(&mut s, &[at(3, 30), at(4, 4)]);
        let mut first = aggregate::Aggregator::new(request.clone(), Default::default());
        first.feed(&s.databases["db"].tables["cpu"]).expect("feed");
        let aggregate::Finished::Again(held) = first.finish().expect("finish") else {
            panic!("the rewrite of time 3 went unnoticed");
        };
        apply(&mut s, &more);
        let mut second = aggregate::Aggregator::new(request.clone(), held);
        second.feed(&s.databases["db"].tables["cpu"]).expect("feed");
        let aggregate::Finished::Done(groups) = second.finish().expect("finish") else {
            panic!(
                "rows written between attempts forced a third ({} more)",
                more.len()
            );
        };
        let field = &groups[0].buckets[0].fields[0];
        assert_eq!(field.count, 5 + more.len() as u64, "time 3 once");
        let Some(NumericStats::Integer(stats)) = field.stats else {
            panic!("{field:?}");
        };
        assert_eq!(stats.max, (30, 3), "the rewrite's value, not the first");
    }
    let mut s = store(4);
    apply(&mut s, &[at(100, 1)]);
    let inverted = AggregateRequest {
        time_min_ns: 100,
        time_max_ns: 95,
        window: Some((10, 0)),
        ..request
    };
    match s.scan(&ScanRequest::Aggregate(inverted)) {
        Ok(ScanResponse::Aggregates(groups)) => assert!(groups.is_empty(), "{groups:?}"),
        other => panic!("{other:?}"),
    }
}
