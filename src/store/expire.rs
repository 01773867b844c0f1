//! Retention in the store: dropping in-memory rows older than a cutoff.
//!
//! The shard's expiry task calls [`ShardStore::expire`] with each
//! database's cutoff ([`crate::retention::cutoff_ns`]). A sealed chunk is
//! dropped once its newest row is older than the cutoff; a sealed chunk
//! that is only partly expired stays whole until then (queries clamp their
//! time range to the cutoff, so its old rows are never returned). The
//! active chunk loses its expired rows at once, so a database written
//! slowly does not keep them for a whole chunk's life.
//!
//! A table left without any row is dropped whole, with its series
//! dictionary (a later write creates it again), so a measurement whose
//! points all expired is forgotten by `SHOW MEASUREMENTS` and its series
//! by `SHOW SERIES`, and the dictionary of a table no longer written
//! does not stay in memory for ever. A table that still holds rows keeps
//! its dictionary whole (series ids stay stable); the schema scan lists
//! only the series that still hold a row at or after the cutoff.
//!
//! The memory estimate stays exact: each chunk's bytes are recomputed
//! ([`chunk_bytes`]) before and after, and the difference is returned to
//! the budget, as are a dropped table's remaining bytes ([`table_bytes`]).
//!
//! Only the live rows are touched: frozen generations are shared with the
//! persister (which leaves their expired rows out of the files) and leave
//! memory when their snapshot is recorded.

use super::{chunk_bytes, table_bytes, Chunk, ColumnData, ShardStore};

impl ShardStore {
    /// Drops the rows of `database` older than `cutoff_ns` (sealed chunks
    /// wholly older, and the active chunk's older rows), then the tables
    /// left without rows; the number of rows dropped.
    pub fn expire(&mut self, database: &str, cutoff_ns: i64) -> usize {
        let Some(db) = self.databases.get_mut(database) else {
            return 0;
        };
        let mut rows_dropped = 0;
        let mut bytes_freed = 0;
        for table in db.tables.values_mut() {
            let dropped_before = rows_dropped;
            table.sealed.retain(|chunk| {
                let expired = chunk.len() > 0 && chunk.time_max_ns < cutoff_ns;
                if expired {
                    rows_dropped += chunk.len();
                    bytes_freed += chunk_bytes(chunk);
                }
                !expired
            });
            let active = &mut table.active;
            if active.len() > 0 && active.time_min_ns < cutoff_ns {
                let before = chunk_bytes(active);
                rows_dropped += drop_rows_before(active, cutoff_ns);
                bytes_freed += before - chunk_bytes(active);
            }
            if rows_dropped > dropped_before {
                table.rows_dropped = true;
            }
        }
        db.tables.retain(|_, table| {
            let empty = table.chunks().all(|chunk| chunk.len() == 0);
            if empty {
                bytes_freed += table_bytes(table);
            }
            !empty
        });
        if db.tables.is_empty() {
            self.databases.remove(database);
        }
        self.memory_bytes = self.memory_bytes.saturating_sub(bytes_freed);
        rows_dropped
    }
}

/// Removes the rows of an active chunk older than `cutoff_ns`, keeping the
/// others in order; the number removed.
///
/// The (series, time) index is dropped rather than rebuilt: the chunk
/// builds it again when a row arrives out of order. That stays correct
/// because `Table::series_last_ns` is left as it was, an upper bound of
/// each series' newest time in the chunk (removing older rows cannot raise
/// the true newest time).
fn drop_rows_before(chunk: &mut Chunk, cutoff_ns: i64) -> usize {
    let keep: Vec<bool> = chunk.times.iter().map(|t| *t >= cutoff_ns).collect();
    let removed = keep.iter().filter(|k| !**k).count();
    if removed == 0 {
        return 0;
    }
    retain_by(&mut chunk.times, &keep);
    retain_by(&mut chunk.series, &keep);
    for (_, column) in &mut chunk.columns {
        match &mut column.data {
            ColumnData::Float(v) => retain_by(v, &keep),
            ColumnData::Integer(v) => retain_by(v, &keep),
            ColumnData::Unsigned(v) => retain_by(v, &keep),
            ColumnData::String(v) => retain_by(v, &keep),
            ColumnData::Boolean(v) => retain_by(v, &keep),
        }
        retain_by(&mut column.valid, &keep);
    }
    chunk.index = Default::default();
    chunk.indexed = false;
    chunk.time_min_ns = chunk.times.iter().copied().min().unwrap_or(0);
    chunk.time_max_ns = chunk.times.iter().copied().max().unwrap_or(0);
    assert!(
        chunk
            .columns
            .iter()
            .all(|(_, c)| c.len() == chunk.times.len()),
        "invariant: every column of a chunk has one entry per row"
    );
    removed
}

/// Keeps `values[i]` where `keep[i]`.
fn retain_by<T>(values: &mut Vec<T>, keep: &[bool]) {
    let mut flags = keep.iter();
    values.retain(|_| *flags.next().unwrap_or(&true));
}

#[cfg(test)]
mod tests {
    use super::super::tests::{apply, point, rows, scan_rows, store};
    use super::super::{
        table_bytes, MeasurementFilter, ScanRequest, ScanResponse, SchemaRequest, ShardStore,
        TagFilter, Value,
    };
    use crate::line_protocol::FieldValue;

    /// (measurement, its series' `host` values) as a schema scan lists
    /// them, counting rows at or after `time_min_ns`.
    fn listed(
        s: &ShardStore,
        time_min_ns: i64,
        include_series: bool,
    ) -> Vec<(String, Vec<String>)> {
        let request = ScanRequest::Schema(SchemaRequest {
            database: "db".into(),
            measurements: MeasurementFilter::All,
            tag_filter: TagFilter::All,
            include_series,
            series_keys: None,
            series_limit: 100,
            time_min_ns,
            deadline: crate::store::Deadline::NONE,
        });
        let Ok(ScanResponse::Schema(measurements)) = s.scan(&request) else {
            panic!("schema scan")
        };
        measurements
            .into_iter()
            .map(|m| {
                let hosts = m
                    .series
                    .iter()
                    .map(|tags| tags.iter().map(|(_, v)| v.clone()).collect())
                    .collect();
                (m.name, hosts)
            })
            .collect()
    }

    /// Goal: schema scans forget what expired: a measurement or series
    /// whose rows are all older than the request's `time_min_ns` (the
    /// retention cutoff) is not listed, even while those rows still wait in
    /// a partly expired sealed chunk; expiry drops a table left without
    /// rows (dictionary and all, memory estimate exact, nothing left once
    /// every row expired), and a series whose rows all went is no longer
    /// listed though its table stays. Method: chunk_rows = 4; `cpu` series
    /// a at t=1..4 (sealed) and b at t=5,6 (active), `mem` at t=1; scan
    /// with and without a cutoff, expire at 5, then at 100.
    #[test]
    fn schema_forgets_expired_series_and_tables() {
        let mut s = store(4);
        let cpu = |host: &'static str, t: i64| {
            point(
                "cpu",
                &[("host", host)],
                vec![("v", FieldValue::Float(t as f64))],
                t,
            )
        };
        let mut points: Vec<_> = (1..=4).map(|t| cpu("a", t)).collect();
        points.extend([cpu("b", 5), cpu("b", 6)]);
        points.push(point(
            "mem",
            &[("host", "m")],
            vec![("free", FieldValue::Integer(1))],
            1,
        ));
        apply(&mut s, &points);
        let names = |list: Vec<(String, Vec<String>)>| -> Vec<String> {
            list.into_iter().map(|(name, _)| name).collect()
        };
        assert_eq!(names(listed(&s, i64::MIN, false)), ["cpu", "mem"]);
        // Cutoff 5, before expiry ran: only what holds a row at or after 5.
        assert_eq!(names(listed(&s, 5, false)), ["cpu"]);
        assert_eq!(
            listed(&s, 5, true),
            [("cpu".to_string(), vec!["b".to_string()])]
        );
        // Expiry at 5: a's sealed chunk and the whole `mem` table go.
        assert_eq!(s.expire("db", 5), 5);
        assert_eq!(s.databases["db"].tables.keys().collect::<Vec<_>>(), ["cpu"]);
        let recomputed: usize = s.databases["db"].tables.values().map(table_bytes).sum();
        assert_eq!(s.memory_bytes(), recomputed, "estimate stays exact");
        // Series a is still in cpu's dictionary but holds no row.
        assert_eq!(
            listed(&s, i64::MIN, true),
            [("cpu".to_string(), vec!["b".to_string()])]
        );
        // Everything expired: nothing listed, nothing held.
        assert_eq!(s.expire("db", 100), 2);
        assert!(listed(&s, i64::MIN, true).is_empty());
        assert!(s.databases.is_empty());
        assert_eq!(s.memory_bytes(), 0);
        // A later write creates the table again.
        apply(&mut s, &[cpu("c", 200)]);
        assert_eq!(
            listed(&s, 100, true),
            [("cpu".to_string(), vec!["c".to_string()])]
        );
    }

    /// Goal: expiry drops sealed chunks wholly older than the cutoff and
    /// the active chunk's older rows, keeps everything else (including a
    /// partly expired sealed chunk), returns the count, and keeps the
    /// memory estimate exact; an out-of-order repeat after expiry still
    /// merges. Method: chunk_rows = 4; 10 rows t=1..10 (two sealed chunks,
    /// two active rows) plus strings; expire at 6, then at 10; compare
    /// with `table_bytes` and scans.
    #[test]
    fn expire_drops_old_rows_and_keeps_accounting_exact() {
        let mut s = store(4);
        let text = |i: i64| -> &'static str { ["a", "bb", "ccc"][(i % 3) as usize] };
        let points: Vec<_> = (1..=10)
            .map(|t| {
                point(
                    "cpu",
                    &[("host", if t % 2 == 0 { "x" } else { "y" })],
                    vec![
                        ("v", FieldValue::Float(t as f64)),
                        ("s", FieldValue::String(text(t).into())),
                    ],
                    t,
                )
            })
            .collect();
        apply(&mut s, &points);
        let exact = |s: &ShardStore| {
            let recomputed: usize = s.databases["db"].tables.values().map(table_bytes).sum();
            assert_eq!(s.memory_bytes(), recomputed, "estimate stays exact");
        };
        let times = |s: &ShardStore| -> Vec<i64> {
            let mut all: Vec<i64> = scan_rows(s, rows(&["v"]))
                .into_iter()
                .flat_map(|series| series.times)
                .collect();
            all.sort_unstable();
            all
        };
        exact(&s);
        assert_eq!(s.databases["db"].tables["cpu"].sealed.len(), 2);
        // Cutoff 6: chunk 1..4 goes; chunk 5..8 is partly expired and stays.
        assert_eq!(s.expire("db", 6), 4);
        assert_eq!(times(&s), (5..=10).collect::<Vec<_>>());
        exact(&s);
        // Cutoff 10: chunk 5..8 goes, and active row 9.
        assert_eq!(s.expire("db", 10), 5);
        assert_eq!(times(&s), vec![10]);
        exact(&s);
        assert_eq!(s.expire("db", 10), 0, "nothing left to expire");
        assert_eq!(s.expire("nosuch", 10), 0);
        // A repeat of the remaining row still merges into it.
        apply(
            &mut s,
            &[point(
                "cpu",
                &[("host", "x")],
                vec![("v", FieldValue::Float(99.0))],
                10,
            )],
        );
        let found = scan_rows(&s, rows(&["v", "s"]));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].times, vec![10]);
        assert_eq!(found[0].columns[0], vec![Some(Value::Float(99.0))]);
        assert_eq!(found[0].columns[1], vec![Some(Value::String("bb".into()))]);
        exact(&s);
    }
}
