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
//! The memory estimate stays exact: each chunk's bytes are recomputed
//! ([`chunk_bytes`]) before and after, and the difference is returned to
//! the budget. The series dictionary is kept (series ids stay stable).

use super::{chunk_bytes, Chunk, ColumnData, ShardStore};

impl ShardStore {
    /// Drops the rows of `database` older than `cutoff_ns` (sealed chunks
    /// wholly older, and the active chunk's older rows); the number of
    /// rows dropped.
    pub fn expire(&mut self, database: &str, cutoff_ns: i64) -> usize {
        let Some(db) = self.databases.get_mut(database) else {
            return 0;
        };
        let mut rows_dropped = 0;
        let mut bytes_freed = 0;
        for table in db.tables.values_mut() {
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
    use super::super::{table_bytes, ShardStore, Value};
    use crate::line_protocol::FieldValue;

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
