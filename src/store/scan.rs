//! Scans over every place a shard's rows live, as one store: tables loaded
//! from its Parquet files (oldest file first), frozen generations awaiting
//! persistence (oldest first), then the live tables.
//!
//! The sources of one measurement are put in that order, so "later write
//! wins" holds across them exactly as it does across the chunks of one
//! table: rows with the same (series, time) merge, the later non-null field
//! wins. A series is identified by its tags, which is the same in every
//! source (series ids are per table).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{
    Chunk, Column, MeasurementSchema, Persisted, RowsRequest, ScanError, SchemaRequest, SeriesRows,
    ShardStore, Table, Value,
};

/// The tables of one database, by measurement, oldest source first.
pub(super) struct Sources<'a> {
    tables: BTreeMap<&'a str, Vec<&'a Table>>,
}

impl<'a> Sources<'a> {
    pub(super) fn new(database: &str, persisted: &'a Persisted, store: &'a ShardStore) -> Self {
        let mut tables: BTreeMap<&'a str, Vec<&'a Table>> = BTreeMap::new();
        for (name, loaded) in &persisted.tables {
            tables
                .entry(name.as_str())
                .or_default()
                .extend(loaded.iter().map(|t| &**t));
        }
        let frozen = store
            .frozen
            .iter()
            .filter_map(|f| f.databases.get(database).map(|d| &**d));
        for db in frozen.chain(store.databases.get(database)) {
            for (name, table) in &db.tables {
                tables.entry(name.as_str()).or_default().push(table);
            }
        }
        Sources { tables }
    }

    /// The sources of one measurement, oldest first.
    pub(super) fn tables_of(&self, measurement: &str) -> Vec<&'a Table> {
        self.tables.get(measurement).cloned().unwrap_or_default()
    }
}

pub(super) fn schema(
    sources: &Sources<'_>,
    request: &SchemaRequest,
) -> Result<Vec<MeasurementSchema>, ScanError> {
    let mut out = Vec::new();
    let mut series_total = 0usize;
    let filtered = !matches!(request.tag_filter, super::TagFilter::All);
    for (name, tables) in &sources.tables {
        if !request.measurements.matches(name) {
            continue;
        }
        let mut tag_keys: BTreeSet<&str> = BTreeSet::new();
        let mut fields: BTreeMap<&str, super::FieldType> = BTreeMap::new();
        let mut series: BTreeSet<Vec<(&str, &str)>> = BTreeSet::new();
        let mut any = false;
        let mut present = false;
        for table in tables {
            request.deadline.check()?;
            if !holds_rows_since(table, request.time_min_ns) {
                continue;
            }
            present = true;
            for (key, field_type) in &table.field_types {
                fields.entry(key.as_str()).or_insert(*field_type);
            }
            if !filtered {
                tag_keys.extend(table.tag_keys.iter().map(String::as_str));
            }
            if !filtered && !request.include_series {
                continue;
            }
            let live = series_with_rows_since(table, request.time_min_ns);
            let series_live = table
                .series
                .iter()
                .enumerate()
                .filter(|(id, _)| live.as_ref().is_none_or(|live| live[*id]))
                .map(|(_, tags)| tags);
            for tags in series_live {
                if filtered && !request.tag_filter.matches(tags) {
                    continue;
                }
                any = true;
                if filtered {
                    tag_keys.extend(tags.iter().map(|(k, _)| k.as_str()));
                }
                if request.include_series && series.insert(projected(tags, &request.series_keys)) {
                    series_total += 1;
                    if series_total > request.series_limit {
                        return Err(ScanError::TooManySeries {
                            limit: request.series_limit,
                        });
                    }
                }
            }
        }
        if !present || (filtered && !any) {
            continue;
        }
        out.push(MeasurementSchema {
            name: name.to_string(),
            tag_keys: tag_keys.into_iter().map(str::to_string).collect(),
            fields: fields
                .into_iter()
                .map(|(k, t)| (k.to_string(), t))
                .collect(),
            series: series
                .into_iter()
                .map(|tags| {
                    tags.into_iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect()
                })
                .collect(),
        });
    }
    Ok(out)
}

/// The tags of a series with only `keys` (all when `None`), borrowed.
fn projected<'a>(
    tags: &'a [(String, String)],
    keys: &Option<Vec<String>>,
) -> Vec<(&'a str, &'a str)> {
    tags.iter()
        .filter(|(k, _)| keys.as_ref().is_none_or(|keys| keys.contains(k)))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// Does the table hold a row at or after `time_min_ns`? (A table whose
/// rows all expired is not listed.)
fn holds_rows_since(table: &Table, time_min_ns: i64) -> bool {
    table
        .chunks()
        .any(|chunk| chunk.len() > 0 && chunk.time_max_ns >= time_min_ns)
}

/// Per series id of `table`: does the series hold a row at or after
/// `time_min_ns`? The dictionary keeps series whose rows were all dropped
/// (expired) or are all older, so it alone cannot say: one pass over the
/// series column of the chunks that reach `time_min_ns`. `None` (every
/// series does) without that pass when no row was dropped and none is
/// older: the common case while retention has not reached the table.
fn series_with_rows_since(table: &Table, time_min_ns: i64) -> Option<Vec<bool>> {
    let all_recent = table
        .chunks()
        .all(|chunk| chunk.len() == 0 || chunk.time_min_ns >= time_min_ns);
    if all_recent && !table.rows_dropped {
        return None;
    }
    let mut live = vec![false; table.series.len()];
    for chunk in table.chunks() {
        if chunk.len() == 0 || chunk.time_max_ns < time_min_ns {
            continue;
        }
        if chunk.time_min_ns >= time_min_ns {
            chunk.series.iter().for_each(|s| live[*s as usize] = true);
        } else {
            for (series, time) in chunk.series.iter().zip(&chunk.times) {
                if *time >= time_min_ns {
                    live[*series as usize] = true;
                }
            }
        }
    }
    Some(live)
}

pub(super) fn rows(
    sources: &Sources<'_>,
    request: &RowsRequest,
) -> Result<Vec<SeriesRows>, ScanError> {
    let mut names: Vec<&String> = request.measurements.iter().collect();
    names.sort();
    names.dedup();
    let mut out = Vec::new();
    let mut rows_total = 0usize;
    let columns: Vec<&str> = request
        .fields
        .iter()
        .chain(&request.condition_fields)
        .map(String::as_str)
        .collect();
    for name in names {
        let Some(tables) = sources.tables.get(name.as_str()) else {
            continue;
        };
        measurement_rows(name, tables, request, &columns, &mut rows_total, &mut out)?;
    }
    Ok(out)
}

/// The rows of one measurement over its sources, appended to `out` in
/// tags order.
fn measurement_rows(
    name: &str,
    tables: &[&Table],
    request: &RowsRequest,
    columns: &[&str],
    rows_total: &mut usize,
    out: &mut Vec<SeriesRows>,
) -> Result<(), ScanError> {
    // Series of every source, by tags → one id for this scan; `None` for
    // series the tag filter drops.
    let mut ids: HashMap<&[(String, String)], usize> = HashMap::new();
    let mut series_tags: Vec<&Vec<(String, String)>> = Vec::new();
    let local_ids: Vec<Vec<Option<usize>>> = tables
        .iter()
        .map(|table| {
            table
                .series
                .iter()
                .map(|tags| {
                    if !request.tag_filter.matches(tags) {
                        return None;
                    }
                    Some(*ids.entry(tags.as_slice()).or_insert_with(|| {
                        series_tags.push(tags);
                        series_tags.len() - 1
                    }))
                })
                .collect()
        })
        .collect();
    // Every chunk of every source, in age order, with its series mapping
    // and whether it is sealed (its runs are kept).
    let all_chunks: Vec<(&Chunk, &[Option<usize>], bool)> = tables
        .iter()
        .zip(&local_ids)
        .flat_map(|(table, local)| {
            let sealed = table.sealed.len();
            table
                .chunks()
                .enumerate()
                .map(move |(index, chunk)| (chunk, local.as_slice(), index < sealed))
        })
        .collect();
    let column_refs: Vec<Vec<Option<&Column>>> = all_chunks
        .iter()
        .map(|(chunk, _, _)| columns.iter().map(|c| chunk.column(c)).collect())
        .collect();
    // Per series: (time, chunk order, row) of every candidate row, read
    // run by run: only the runs of series the filter keeps, only their
    // rows in the time range.
    let mut per_series: Vec<Vec<(i64, u32, u32)>> = vec![Vec::new(); series_tags.len()];
    let mut candidates = 0usize;
    let candidates_max = request.row_limit.saturating_mul(4).max(1024);
    for (order, (chunk, local, sealed)) in all_chunks.iter().enumerate() {
        if chunk.len() == 0
            || chunk.time_max_ns < request.time_min_ns
            || chunk.time_min_ns > request.time_max_ns
        {
            continue;
        }
        request.deadline.check()?;
        let refs = &column_refs[order];
        let runs = chunk.runs(*sealed);
        for run in &runs.runs {
            let Some(series) = local[run.series as usize] else {
                continue;
            };
            let range = runs.clip(run, &chunk.times, request.time_min_ns, request.time_max_ns);
            for position in range {
                let row = runs.row(position);
                // A row without any requested column contributes nothing.
                if !refs.is_empty() && !refs.iter().flatten().any(|c| c.is_valid(row)) {
                    continue;
                }
                per_series[series].push((chunk.times[row], order as u32, row as u32));
                candidates += 1;
                // Bound the work even before deduplication.
                if candidates > candidates_max {
                    return Err(ScanError::TooManyRows {
                        limit: request.row_limit,
                    });
                }
            }
        }
    }
    let mut series_ids: Vec<usize> = (0..per_series.len())
        .filter(|id| !per_series[*id].is_empty())
        .collect();
    series_ids.sort_by(|a, b| series_tags[*a].cmp(series_tags[*b]));
    // Reused per row: no allocation per row.
    let mut values: Vec<Option<Value>> = vec![None; columns.len()];
    for series in series_ids {
        let hits = &mut per_series[series];
        // Usually already in order: chunks are mostly appended in time.
        hits.sort_unstable();
        let mut found = SeriesRows {
            measurement: name.to_string(),
            tags: series_tags[series].clone(),
            times: Vec::with_capacity(hits.len()),
            columns: vec![Vec::with_capacity(hits.len()); columns.len()],
        };
        let mut i = 0;
        while i < hits.len() {
            let time = hits[i].0;
            let mut j = i;
            while j < hits.len() && hits[j].0 == time {
                j += 1;
            }
            // Merge hits[i..j] (older chunk first, later non-null wins).
            values.iter_mut().for_each(|v| *v = None);
            for &(_, order, row) in &hits[i..j] {
                for (c, column) in column_refs[order as usize].iter().enumerate() {
                    if let Some(column) = column {
                        if column.is_valid(row as usize) {
                            values[c] = column.get(row as usize);
                        }
                    }
                }
            }
            i = j;
            let present = request.fields.is_empty()
                || values[..request.fields.len()].iter().any(Option::is_some);
            if !present {
                continue;
            }
            *rows_total += 1;
            if *rows_total > request.row_limit {
                return Err(ScanError::TooManyRows {
                    limit: request.row_limit,
                });
            }
            found.times.push(time);
            for (c, value) in values.iter_mut().enumerate() {
                found.columns[c].push(value.take());
            }
        }
        if !found.times.is_empty() {
            out.push(found);
        }
    }
    Ok(())
}
