//! Frozen tables → Parquet files, and Parquet files → tables a scan reads.
//! The schema is the table in [`crate::persist`]. Runs on blocking threads
//! only (the persister's and the query loader's), never on a shard's
//! executor: encoding is CPU work and the file I/O blocks.

// Blocking threads only (module doc): std::fs is the right tool here.
#![allow(clippy::disallowed_methods)]

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, Int64Type, TimestampNanosecondType, UInt64Type};
use arrow_array::{
    Array, ArrayRef, BooleanArray, DictionaryArray, Float64Array, Int32Array, Int64Array,
    RecordBatch, StringArray, TimestampNanosecondArray, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::statistics::Statistics;

use super::faults::{self, Step};
use super::layout::{self, SnapshotId, TMP_SUFFIX};
use crate::store::{Chunk, Column, ColumnData, FieldType, Table};

/// Rows per row group: large enough for scans, small enough that time
/// pruning by row-group statistics skips something.
const ROW_GROUP_ROWS: usize = 1 << 20;
/// The time column's name.
pub const TIME_COLUMN: &str = "time";

/// One file a snapshot wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenFile {
    /// Relative to the Parquet directory.
    pub path: PathBuf,
    pub table: String,
    pub rows: u64,
    pub bytes: u64,
    pub time_min_ns: i64,
    pub time_max_ns: i64,
}

/// Why a file could not be written or read.
#[derive(Debug)]
pub enum ParquetError {
    Io {
        path: PathBuf,
        error: io::Error,
    },
    Format {
        path: PathBuf,
        error: String,
    },
    /// The encoder failed while writing (its error wraps the I/O error,
    /// e.g. ENOSPC).
    Encode {
        path: PathBuf,
        error: String,
    },
}

impl fmt::Display for ParquetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParquetError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            ParquetError::Encode { path, error } => {
                write!(f, "{}: cannot write: {error}", path.display())
            }
            ParquetError::Format { path, error } => {
                write!(
                    f,
                    "{}: not a readable Parquet file: {error}",
                    path.display()
                )
            }
        }
    }
}

impl std::error::Error for ParquetError {}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> ParquetError + '_ {
    move |error| ParquetError::Io {
        path: path.to_path_buf(),
        error,
    }
}

fn encode_error<E: fmt::Display>(path: &Path) -> impl FnOnce(E) -> ParquetError + '_ {
    move |error| ParquetError::Encode {
        path: path.to_path_buf(),
        error: error.to_string(),
    }
}

fn format_error<E: fmt::Display>(path: &Path) -> impl FnOnce(E) -> ParquetError + '_ {
    move |error| ParquetError::Format {
        path: path.to_path_buf(),
        error: error.to_string(),
    }
}

/// One merged row: a (series, time) and where its values are.
struct MergedRow {
    day: i64,
    rank: u32,
    time: i64,
    /// Range in `hits` of the (chunk, row) pairs that merge into it,
    /// oldest first.
    hits: std::ops::Range<usize>,
}

/// Writes one table of a frozen generation as one file per UTC day under
/// `root` (the Parquet directory), durably (module doc of
/// [`crate::persist`], step 2). Rows older than `cutoff_ns` (retention)
/// are left out. Returns the files written.
pub fn write_table(
    root: &Path,
    id: SnapshotId,
    database: &str,
    table_name: &str,
    table: &Table,
    cutoff_ns: Option<i64>,
) -> Result<Vec<WrittenFile>, ParquetError> {
    let chunks: Vec<&Chunk> = table.chunks().collect();
    // Series ranked by their tag values in tag-name order, an absent tag
    // first: the sort order of the file (and its `sorting_columns`).
    let tag_keys: Vec<&String> = table.tag_keys.iter().collect();
    let series_key = |series: u32| -> Vec<Option<&str>> {
        let tags = &table.series[series as usize];
        tag_keys
            .iter()
            .map(|key| {
                tags.binary_search_by(|(k, _)| k.as_str().cmp(key.as_str()))
                    .ok()
                    .map(|i| tags[i].1.as_str())
            })
            .collect()
    };
    let keys: Vec<Vec<Option<&str>>> = (0..table.series.len() as u32).map(series_key).collect();
    let mut by_tags: Vec<u32> = (0..table.series.len() as u32).collect();
    by_tags.sort_by(|a, b| keys[*a as usize].cmp(&keys[*b as usize]));
    let mut rank = vec![0u32; table.series.len()];
    for (position, series) in by_tags.iter().enumerate() {
        rank[*series as usize] = position as u32;
    }
    let mut hits: Vec<(i64, u32, i64, u32, u32)> = Vec::new();
    for (order, chunk) in chunks.iter().enumerate() {
        for row in 0..chunk.len() {
            let time = chunk.times[row];
            if cutoff_ns.is_some_and(|cutoff| time < cutoff) {
                continue;
            }
            let series = rank[chunk.series[row] as usize];
            hits.push((layout::day_of(time), series, time, order as u32, row as u32));
        }
    }
    hits.sort_unstable();
    let mut merged: Vec<MergedRow> = Vec::new();
    let mut i = 0;
    while i < hits.len() {
        let (day, rank, time, _, _) = hits[i];
        let mut j = i + 1;
        while j < hits.len() && hits[j].1 == rank && hits[j].2 == time && hits[j].0 == day {
            j += 1;
        }
        merged.push(MergedRow {
            day,
            rank,
            time,
            hits: i..j,
        });
        i = j;
    }
    let fields: Vec<(&String, FieldType)> =
        table.field_types.iter().map(|(k, t)| (k, *t)).collect();
    // Per chunk: its column of each field (by position in `fields`).
    let chunk_columns: Vec<Vec<Option<&Column>>> = chunks
        .iter()
        .map(|chunk| fields.iter().map(|(name, _)| chunk.column(name)).collect())
        .collect();
    // Per tag key, per series rank: the value.
    let tag_values: Vec<Vec<Option<&str>>> = (0..tag_keys.len())
        .map(|k| {
            by_tags
                .iter()
                .map(|series| keys[*series as usize][k])
                .collect()
        })
        .collect();
    let schema = Arc::new(file_schema(&tag_keys, &fields));
    let mut written = Vec::new();
    let mut start = 0;
    while start < merged.len() {
        let day = merged[start].day;
        let mut end = start;
        while end < merged.len() && merged[end].day == day {
            end += 1;
        }
        let rows = &merged[start..end];
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for values in &tag_values {
            arrays.push(tag_array(values, rows));
        }
        for (position, (_, field_type)) in fields.iter().enumerate() {
            let pick = |row: &MergedRow| -> Option<(&Column, usize)> {
                hits[row.hits.clone()]
                    .iter()
                    .rev()
                    .find_map(|&(_, _, _, order, r)| {
                        chunk_columns[order as usize][position]
                            .filter(|c| c.is_valid(r as usize))
                            .map(|c| (c, r as usize))
                    })
            };
            arrays.push(field_array(*field_type, rows, pick));
        }
        let times: Vec<i64> = rows.iter().map(|r| r.time).collect();
        let time_min_ns = times.iter().copied().min().unwrap_or(0);
        let time_max_ns = times.iter().copied().max().unwrap_or(0);
        arrays.push(Arc::new(
            TimestampNanosecondArray::from(times).with_timezone("UTC"),
        ));
        let relative = layout::file_path(id, database, table_name, day);
        let batch =
            RecordBatch::try_new(schema.clone(), arrays).map_err(format_error(&relative))?;
        let bytes = write_durably(&root.join(&relative), &batch, tag_keys.len())?;
        written.push(WrittenFile {
            path: relative,
            table: table_name.to_string(),
            rows: rows.len() as u64,
            bytes,
            time_min_ns,
            time_max_ns,
        });
        start = end;
    }
    Ok(written)
}

fn file_schema(tag_keys: &[&String], fields: &[(&String, FieldType)]) -> Schema {
    let mut columns: Vec<Field> = tag_keys
        .iter()
        .map(|key| {
            Field::new(
                key.as_str(),
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                true,
            )
        })
        .collect();
    for (name, field_type) in fields {
        let data_type = match field_type {
            FieldType::Float => DataType::Float64,
            FieldType::Integer => DataType::Int64,
            FieldType::Unsigned => DataType::UInt64,
            FieldType::String => DataType::Utf8,
            FieldType::Boolean => DataType::Boolean,
        };
        columns.push(Field::new(name.as_str(), data_type, true));
    }
    columns.push(Field::new(
        TIME_COLUMN,
        DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
        false,
    ));
    Schema::new(columns)
}

/// A dictionary column of one tag: one dictionary entry per distinct value.
fn tag_array(values_by_rank: &[Option<&str>], rows: &[MergedRow]) -> ArrayRef {
    let mut dictionary: Vec<&str> = Vec::new();
    let mut keys_by_value: HashMap<&str, i32> = HashMap::new();
    let mut key_by_rank: Vec<Option<i32>> = vec![None; values_by_rank.len()];
    let mut seen = vec![false; values_by_rank.len()];
    let keys: Int32Array = rows
        .iter()
        .map(|row| {
            let rank = row.rank as usize;
            if !seen[rank] {
                seen[rank] = true;
                key_by_rank[rank] = values_by_rank[rank].map(|value| {
                    *keys_by_value.entry(value).or_insert_with(|| {
                        dictionary.push(value);
                        (dictionary.len() - 1) as i32
                    })
                });
            }
            key_by_rank[rank]
        })
        .collect();
    let values = Arc::new(StringArray::from(dictionary));
    Arc::new(
        DictionaryArray::<Int32Type>::try_new(keys, values)
            .expect("invariant: every key indexes the dictionary built with it"),
    )
}

fn field_array<'c>(
    field_type: FieldType,
    rows: &[MergedRow],
    pick: impl Fn(&MergedRow) -> Option<(&'c Column, usize)>,
) -> ArrayRef {
    macro_rules! collect {
        ($variant:ident, $array:ty, $convert:expr) => {{
            let array: $array = rows
                .iter()
                .map(|row| {
                    pick(row).and_then(|(column, r)| match &column.data {
                        ColumnData::$variant(values) => Some($convert(&values[r])),
                        _ => None,
                    })
                })
                .collect();
            Arc::new(array) as ArrayRef
        }};
    }
    match field_type {
        FieldType::Float => collect!(Float, Float64Array, |v: &f64| *v),
        FieldType::Integer => collect!(Integer, Int64Array, |v: &i64| *v),
        FieldType::Unsigned => collect!(Unsigned, UInt64Array, |v: &u64| *v),
        FieldType::Boolean => collect!(Boolean, BooleanArray, |v: &bool| *v),
        FieldType::String => collect!(String, StringArray, |v: &String| v.clone()),
    }
}

/// Writes `batch` to `path` through `<path>.tmp`: write, fsync, rename,
/// fsync of the directory (and of each directory it had to create).
fn write_durably(path: &Path, batch: &RecordBatch, tag_count: usize) -> Result<u64, ParquetError> {
    let dir = path.parent().expect("a file path has a parent");
    create_dirs_durably(dir).map_err(io_error(dir))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(TMP_SUFFIX);
    let tmp = PathBuf::from(tmp);
    let written = write_tmp(&tmp, batch, tag_count);
    let bytes = match written {
        Ok(bytes) => bytes,
        Err(error) => {
            // Never trusted again (a failed fsync may have dropped its
            // pages): a retry writes a file of another name.
            let _ = std::fs::remove_file(&tmp);
            return Err(error);
        }
    };
    let renamed = faults::check(Step::ParquetRename).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(error) = renamed {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_error(path)(error));
    }
    let synced = faults::check(Step::ParquetDirSync).and_then(|()| sync_dir(dir));
    if let Err(error) = synced {
        // Its name may not survive a power loss: not trusted, and named by
        // no catalog yet, so removed (a retry writes another name).
        let _ = std::fs::remove_file(path);
        return Err(io_error(dir)(error));
    }
    Ok(bytes)
}

/// Writes and `fsync`s `batch` as the Parquet file `tmp`; its size.
fn write_tmp(tmp: &Path, batch: &RecordBatch, tag_count: usize) -> Result<u64, ParquetError> {
    let file = File::create(tmp).map_err(io_error(tmp))?;
    // Sorted by the tag columns, then time (the last column).
    let sorting: Vec<SortingColumn> = (0..=tag_count)
        .map(|i| SortingColumn {
            column_idx: if i == tag_count {
                (batch.num_columns() - 1) as i32
            } else {
                i as i32
            },
            descending: false,
            nulls_first: true,
        })
        .collect();
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_sorting_columns(Some(sorting))
        .set_created_by(format!("ringest {}", env!("CARGO_PKG_VERSION")))
        .build();
    faults::check(Step::ParquetWrite).map_err(io_error(tmp))?;
    let mut writer =
        ArrowWriter::try_new(file, batch.schema(), Some(properties)).map_err(encode_error(tmp))?;
    writer.write(batch).map_err(encode_error(tmp))?;
    let file = writer.into_inner().map_err(encode_error(tmp))?;
    faults::check(Step::ParquetSync).map_err(io_error(tmp))?;
    file.sync_all().map_err(io_error(tmp))?;
    Ok(file.metadata().map_err(io_error(tmp))?.len())
}

/// `create_dir_all` that also `fsync`s the parent of every directory it
/// creates, so the new entries survive a power loss.
pub fn create_dirs_durably(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs_durably(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(error),
    }
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// What a scan needs from one file.
#[derive(Clone, Debug)]
pub struct LoadRequest {
    /// Field columns to read; `None`: all of them. Tags and time are always
    /// read.
    pub fields: Option<Vec<String>>,
    /// Inclusive; row groups entirely outside are not read.
    pub time_min_ns: i64,
    pub time_max_ns: i64,
    /// `(shard, count)`: keep only the series that shard owns under that
    /// shard count (the file was written under another count).
    pub owner: Option<(usize, usize)>,
}

/// Reads one file (`relative` in `source`) into a table of one chunk
/// (read-only, for a scan).
pub fn load_table(
    source: &super::source::Source,
    relative: &str,
    request: &LoadRequest,
) -> Result<Table, ParquetError> {
    load(source, relative, request).map(|loaded| loaded.table)
}

/// A file read for a scan.
pub struct Loaded {
    pub table: Table,
    /// No row group was left out by the time range: the table holds every
    /// row of the file (that the owner filter keeps), so it answers any
    /// time range.
    pub every_row_group: bool,
}

/// [`load_table`], saying whether the time range left a row group out.
pub fn load(
    source: &super::source::Source,
    relative: &str,
    request: &LoadRequest,
) -> Result<Loaded, ParquetError> {
    let path = &source.root().join(relative);
    let file = source.open(relative)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(format_error(path))?;
    let schema = builder.schema().clone();
    let mut wanted = Vec::new();
    let mut tag_columns = Vec::new();
    let mut field_types = BTreeMap::new();
    let mut time_index = None;
    for (index, field) in schema.fields().iter().enumerate() {
        let name = field.name();
        match field.data_type() {
            DataType::Timestamp(TimeUnit::Nanosecond, _) if name == TIME_COLUMN => {
                time_index = Some(index);
                wanted.push(index);
            }
            DataType::Dictionary(_, _) => {
                tag_columns.push(name.clone());
                wanted.push(index);
            }
            data_type => {
                let field_type = match data_type {
                    DataType::Float64 => FieldType::Float,
                    DataType::Int64 => FieldType::Integer,
                    DataType::UInt64 => FieldType::Unsigned,
                    DataType::Utf8 => FieldType::String,
                    DataType::Boolean => FieldType::Boolean,
                    other => {
                        return Err(ParquetError::Format {
                            path: path.to_path_buf(),
                            error: format!(
                                "column {name:?} has type {other}, not one ringest writes"
                            ),
                        })
                    }
                };
                field_types.insert(name.clone(), field_type);
                let read = match &request.fields {
                    None => true,
                    Some(fields) => fields.iter().any(|f| f == name),
                };
                if read {
                    wanted.push(index);
                }
            }
        }
    }
    let Some(time_index) = time_index else {
        return Err(ParquetError::Format {
            path: path.to_path_buf(),
            error: "no time column".to_string(),
        });
    };
    let metadata = builder.metadata().clone();
    let row_groups: Vec<usize> = (0..metadata.num_row_groups())
        .filter(
            |&group| match metadata.row_group(group).column(time_index).statistics() {
                Some(Statistics::Int64(stats)) => match (stats.min_opt(), stats.max_opt()) {
                    (Some(min), Some(max)) => {
                        *max >= request.time_min_ns && *min <= request.time_max_ns
                    }
                    _ => true,
                },
                _ => true,
            },
        )
        .collect();
    let every_row_group = row_groups.len() == metadata.num_row_groups();
    let mask = ProjectionMask::roots(builder.parquet_schema(), wanted);
    let reader = builder
        .with_projection(mask)
        .with_row_groups(row_groups)
        .with_batch_size(64 * 1024)
        .build()
        .map_err(format_error(path))?;
    let mut chunk = Chunk::default();
    let mut series: Vec<Vec<(String, String)>> = Vec::new();
    let mut series_ids: HashMap<Vec<(String, String)>, u32> = HashMap::new();
    let mut columns: BTreeMap<String, Column> = BTreeMap::new();
    for batch in reader {
        let batch = batch.map_err(format_error(path))?;
        let batch_schema = batch.schema();
        let tags: Vec<(&str, &DictionaryArray<Int32Type>)> = tag_columns
            .iter()
            .filter_map(|name| {
                let index = batch_schema.index_of(name).ok()?;
                Some((
                    name.as_str(),
                    batch.column(index).as_dictionary::<Int32Type>(),
                ))
            })
            .collect();
        let tag_values: Vec<&StringArray> = tags
            .iter()
            .map(|(_, array)| array.values().as_string::<i32>())
            .collect();
        let time_index = batch_schema
            .index_of(TIME_COLUMN)
            .map_err(format_error(path))?;
        let times = batch
            .column(time_index)
            .as_primitive::<TimestampNanosecondType>();
        // Rows are sorted by series: a row whose dictionary keys and nulls
        // equal the previous row's is of the same series, found without
        // building its tags (keys index this batch's dictionaries). Where
        // the series changes is found column by column.
        let rows = batch.num_rows();
        let mut starts = vec![false; rows];
        if let Some(first) = starts.first_mut() {
            *first = true;
        }
        for (_, array) in &tags {
            let keys = array.keys().values();
            for (start, pair) in starts[1..].iter_mut().zip(keys.windows(2)) {
                *start |= pair[0] != pair[1];
            }
            if array.null_count() > 0 {
                for (row, start) in starts.iter_mut().enumerate().skip(1) {
                    *start |= array.is_valid(row) != array.is_valid(row - 1);
                }
            }
        }
        let mut previous = 0u32;
        let mut keys: Vec<i32> = vec![-1; tags.len()];
        for (row, &start) in starts.iter().enumerate() {
            let id = match start {
                false => previous,
                true => {
                    for (key, (_, array)) in keys.iter_mut().zip(&tags) {
                        *key = if array.is_valid(row) {
                            array.keys().value(row)
                        } else {
                            -1
                        };
                    }
                    let row_tags: Vec<(String, String)> = tags
                        .iter()
                        .zip(&tag_values)
                        .zip(&keys)
                        .filter(|(_, key)| **key >= 0)
                        .map(|(((name, _), values), key)| {
                            (name.to_string(), values.value(*key as usize).to_string())
                        })
                        .collect();
                    let next = series.len() as u32;
                    let id = *series_ids.entry(row_tags).or_insert_with_key(|tags| {
                        series.push(tags.clone());
                        next
                    });
                    previous = id;
                    id
                }
            };
            chunk.series.push(id);
        }
        chunk.times.extend_from_slice(times.values());
        for (name, field_type) in &field_types {
            let Ok(index) = batch_schema.index_of(name) else {
                continue;
            };
            let column = columns.entry(name.clone()).or_insert_with(|| Column {
                data: empty_data(*field_type),
                valid: Vec::new(),
            });
            append_values(column, batch.column(index).as_ref());
        }
    }
    chunk.columns = columns.into_iter().collect();
    if let Some((shard, count)) = request.owner {
        let measurement = table_name(path);
        let keep: Vec<bool> = series
            .iter()
            .map(|tags| {
                let tags: Vec<(Cow<'_, str>, Cow<'_, str>)> = tags
                    .iter()
                    .map(|(k, v)| (Cow::Borrowed(k.as_str()), Cow::Borrowed(v.as_str())))
                    .collect();
                crate::route::owner(
                    crate::line_protocol::series_hash(&measurement, &tags),
                    count,
                ) == shard
            })
            .collect();
        chunk = retain_rows(chunk, |series| keep[series as usize]);
    }
    chunk.time_min_ns = chunk.times.iter().copied().min().unwrap_or(0);
    chunk.time_max_ns = chunk.times.iter().copied().max().unwrap_or(0);
    Ok(Loaded {
        table: Table::loaded(series, field_types, chunk, request.owner.is_some()),
        every_row_group,
    })
}

/// The measurement of a file, from its `table=` directory.
fn table_name(path: &Path) -> String {
    path.ancestors()
        .filter_map(|p| p.file_name()?.to_str()?.strip_prefix("table="))
        .find_map(layout::unescape)
        .unwrap_or_default()
}

/// The chunk with only the rows whose series passes `keep`.
fn retain_rows(chunk: Chunk, keep: impl Fn(u32) -> bool) -> Chunk {
    let rows: Vec<usize> = (0..chunk.times.len())
        .filter(|&row| keep(chunk.series[row]))
        .collect();
    fn pick<T: Clone>(values: &[T], rows: &[usize]) -> Vec<T> {
        rows.iter().map(|&row| values[row].clone()).collect()
    }
    let columns = chunk
        .columns
        .into_iter()
        .map(|(name, column)| {
            let data = match &column.data {
                ColumnData::Float(v) => ColumnData::Float(pick(v, &rows)),
                ColumnData::Integer(v) => ColumnData::Integer(pick(v, &rows)),
                ColumnData::Unsigned(v) => ColumnData::Unsigned(pick(v, &rows)),
                ColumnData::String(v) => ColumnData::String(pick(v, &rows)),
                ColumnData::Boolean(v) => ColumnData::Boolean(pick(v, &rows)),
            };
            let valid = pick(&column.valid, &rows);
            (name, Column { data, valid })
        })
        .collect();
    let mut kept = Chunk::default();
    kept.times = pick(&chunk.times, &rows);
    kept.series = pick(&chunk.series, &rows);
    kept.columns = columns;
    kept
}

fn empty_data(field_type: FieldType) -> ColumnData {
    match field_type {
        FieldType::Float => ColumnData::Float(Vec::new()),
        FieldType::Integer => ColumnData::Integer(Vec::new()),
        FieldType::Unsigned => ColumnData::Unsigned(Vec::new()),
        FieldType::String => ColumnData::String(Vec::new()),
        FieldType::Boolean => ColumnData::Boolean(Vec::new()),
    }
}

fn append_values(column: &mut Column, array: &dyn Array) {
    let rows = array.len();
    column
        .valid
        .extend((0..rows).map(|row| array.is_valid(row)));
    match &mut column.data {
        ColumnData::Float(values) => {
            values.extend_from_slice(array.as_primitive::<Float64Type>().values())
        }
        ColumnData::Integer(values) => {
            values.extend_from_slice(array.as_primitive::<Int64Type>().values())
        }
        ColumnData::Unsigned(values) => {
            values.extend_from_slice(array.as_primitive::<UInt64Type>().values())
        }
        ColumnData::Boolean(values) => {
            let array = array.as_boolean();
            values.extend((0..rows).map(|row| array.value(row)));
        }
        ColumnData::String(values) => {
            let array = array.as_string::<i32>();
            values.extend((0..rows).map(|row| array.value(row).to_string()));
        }
    }
}
