//! Aggregates computed while scanning: `count`, `sum`, `mean`, `min`,
//! `max`, `first`, `last` and `spread` per output group and time bucket,
//! without materialising rows. The answer's size is groups × buckets,
//! whatever the number of rows read; files are fed one at a time, so a
//! `count(*)` over a hundred million persisted points runs in the memory of
//! one file plus the buckets.
//!
//! An [`Aggregator`] is fed every source of one measurement in age order
//! (Parquet files oldest first, frozen generations, live tables: the order
//! of the row scan) and reads each chunk as series runs ([`super::runs`]):
//! the time range cut by binary search, a bucket a stretch of a run, and
//! without `sum`/`mean` whole runs and blocks folded from summaries kept
//! with sealed chunks ([`Summaries`]). That is exact only when no (series,
//! time) repeats across sources, which a scan cannot know before it reads:
//! so the aggregator watches each series' runs, and a series whose runs do
//! not come in strictly increasing time order (written out of order,
//! rewritten, or by several writers at different times) is reported by
//! [`Aggregator::finish`] with its runs' spans. The caller then feeds
//! everything again with those series *held*: the rows a run shares in time
//! with another run of the series (all its rows when a sum is asked) are
//! copied (bounded by the row limit), deduplicated as the row scan does
//! (later non-null field wins) and folded in time order at the end; the
//! rest folds as usual. `finish` checks that every time two runs shared was
//! held in both (the sources may have changed between attempts), else asks
//! for another attempt.
//!
//! Matching the row path ([`crate::query::eval`]'s reducers over points in
//! time order): ties are broken by rules that do not depend on the order
//! rows are fed in — `min`/`max` keep the earliest of equal values,
//! `first`/`last` the larger value at equal times. Sums of a series are
//! added in time order, so a group of one series sums exactly as the row
//! path; a group of several series sums series by series (the last bits of
//! a float `sum`/`mean` may differ from a time-interleaved sum).

use std::collections::HashMap;

use std::ops::Range;
use std::sync::Arc;

use super::runs::{Rows, SeriesRuns};
use super::{AggregateRequest, Chunk, Column, ColumnData, FastHash, ScanError, Table};

/// A numeric value type aggregates accumulate.
pub trait Number: Copy + PartialOrd {
    /// Start of a sum (`-0.0` for floats, as Rust's `Sum` for `f64`).
    const SUM_ZERO: Self;
    /// Addition as the row path adds (wrapping for integers).
    fn plus(self, other: Self) -> Self;
    fn to_f64(self) -> f64;
}

impl Number for f64 {
    const SUM_ZERO: f64 = -0.0;
    fn plus(self, other: f64) -> f64 {
        self + other
    }
    fn to_f64(self) -> f64 {
        self
    }
}

impl Number for i64 {
    const SUM_ZERO: i64 = 0;
    fn plus(self, other: i64) -> i64 {
        self.wrapping_add(other)
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
}

impl Number for u64 {
    const SUM_ZERO: u64 = 0;
    fn plus(self, other: u64) -> u64 {
        self.wrapping_add(other)
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
}

/// Running statistics of one numeric field in one bucket (at least one
/// value).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats<T> {
    pub sum: T,
    /// The values as `f64`, summed from `0.0` (what `mean` divides).
    pub float_sum: f64,
    /// Value and time; the earliest of equal values.
    pub min: (T, i64),
    pub max: (T, i64),
    /// Time and value; the larger value at equal times.
    pub first: (i64, T),
    pub last: (i64, T),
}

impl<T: Number> Stats<T> {
    fn new(time: i64, value: T) -> Self {
        Stats {
            sum: T::SUM_ZERO.plus(value),
            float_sum: 0.0 + value.to_f64(),
            min: (value, time),
            max: (value, time),
            first: (time, value),
            last: (time, value),
        }
    }

    #[inline]
    fn add(&mut self, time: i64, value: T) {
        self.sum = self.sum.plus(value);
        self.float_sum += value.to_f64();
        self.keep_extremes(&Stats::new(time, value));
    }

    /// Folds `other` (rows after this one's in time, for sums).
    fn merge(&mut self, other: &Stats<T>) {
        self.sum = self.sum.plus(other.sum);
        self.float_sum += other.float_sum;
        self.keep_extremes(other);
    }

    #[inline]
    fn keep_extremes(&mut self, other: &Stats<T>) {
        let (v, t) = other.min;
        if v < self.min.0 || (v == self.min.0 && t < self.min.1) {
            self.min = (v, t);
        }
        let (v, t) = other.max;
        if v > self.max.0 || (v == self.max.0 && t < self.max.1) {
            self.max = (v, t);
        }
        let (t, v) = other.first;
        if t < self.first.0 || (t == self.first.0 && v > self.first.1) {
            self.first = (t, v);
        }
        let (t, v) = other.last;
        if t > self.last.0 || (t == self.last.0 && v > self.last.1) {
            self.last = (t, v);
        }
    }
}

/// The statistics of a numeric field, by its type.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NumericStats {
    Float(Stats<f64>),
    Integer(Stats<i64>),
    Unsigned(Stats<u64>),
}

/// One field in one bucket of one group.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FieldAggregate {
    /// Non-null values.
    pub count: u64,
    /// `None` for string and boolean fields (only counted) or no values.
    pub stats: Option<NumericStats>,
}

impl FieldAggregate {
    /// Folds another partial aggregate of the same field (another shard's,
    /// another series').
    pub fn merge(&mut self, other: &FieldAggregate) {
        self.count += other.count;
        match (&mut self.stats, &other.stats) {
            (_, None) => {}
            (None, Some(theirs)) => self.stats = Some(*theirs),
            (Some(NumericStats::Float(a)), Some(NumericStats::Float(b))) => a.merge(b),
            (Some(NumericStats::Integer(a)), Some(NumericStats::Integer(b))) => a.merge(b),
            (Some(NumericStats::Unsigned(a)), Some(NumericStats::Unsigned(b))) => a.merge(b),
            // A field has one type per measurement (the catalog's rule).
            _ => {}
        }
    }
}

/// One time bucket of a group: its start and one aggregate per requested
/// field.
#[derive(Clone, Debug, PartialEq)]
pub struct Bucket {
    pub start_ns: i64,
    pub fields: Vec<FieldAggregate>,
}

/// The buckets of one output group, in time order (only those with values).
#[derive(Clone, Debug, PartialEq)]
pub struct GroupAggregates {
    /// The GROUP BY tags (a missing tag is `""`), in the request's key order.
    pub key: Vec<(String, String)>,
    pub buckets: Vec<Bucket>,
}

/// The start of the bucket holding `time` (UTC alignment, InfluxDB's
/// `Window`), saturating at the ends of the time range.
pub fn bucket_start(time: i64, interval: i64, offset: i64) -> i64 {
    let t = time.saturating_sub(offset);
    t.saturating_sub(t.rem_euclid(interval))
        .saturating_add(offset)
}

/// What [`Aggregator::finish`] found.
pub enum Finished {
    Done(Vec<GroupAggregates>),
    /// These series' rows were not in strictly increasing time order: feed
    /// everything again with them held.
    Again(HeldSeries),
}

/// Tags of a series.
type Tags = Vec<(String, String)>;

/// Series to hold, each with the time spans (first, last time in range) of
/// its runs as the attempt that found it saw them, sorted; the span of a run
/// of an active chunk (which may grow before the next attempt) reaches to
/// the end of time.
pub type HeldSeries = HashMap<Tags, Vec<(i64, i64)>, FastHash>;

const SKIP: u32 = u32::MAX;

struct SeriesState {
    group: u32,
    last_ns: i64,
    disordered: bool,
    /// The spans of its runs in the previous attempt (sorted) when held.
    held: Option<Vec<(i64, i64)>>,
    /// The spans of its runs in this attempt, as [`HeldSeries`] keeps them.
    spans: Vec<(i64, i64)>,
    /// Held without sums: each run's actual span and the parts of it that
    /// were held, to check at the end that every time two runs share was
    /// held in both (the sources may have changed since the spans were
    /// taken).
    held_parts: Vec<HeldParts>,
}

/// A held run's actual span and the parts of it that were held.
type HeldParts = ((i64, i64), Vec<(i64, i64)>);

/// One field's slots, typed once its first column is seen.
enum FieldSlots {
    Unknown,
    Float(Vec<(u64, Stats<f64>)>),
    Integer(Vec<(u64, Stats<i64>)>),
    Unsigned(Vec<(u64, Stats<u64>)>),
    Counted(Vec<u64>),
}

impl FieldSlots {
    fn new(column: &Column, slots: usize) -> FieldSlots {
        match column.data {
            ColumnData::Float(_) => FieldSlots::Float(vec![(0, zero_stats(0.0)); slots]),
            ColumnData::Integer(_) => FieldSlots::Integer(vec![(0, zero_stats(0)); slots]),
            ColumnData::Unsigned(_) => FieldSlots::Unsigned(vec![(0, zero_stats(0)); slots]),
            ColumnData::String(_) | ColumnData::Boolean(_) => FieldSlots::Counted(vec![0; slots]),
        }
    }

    fn push_slot(&mut self) {
        match self {
            FieldSlots::Unknown => {}
            FieldSlots::Float(v) => v.push((0, zero_stats(0.0))),
            FieldSlots::Integer(v) => v.push((0, zero_stats(0))),
            FieldSlots::Unsigned(v) => v.push((0, zero_stats(0))),
            FieldSlots::Counted(v) => v.push(0),
        }
    }

    fn get(&self, slot: usize) -> FieldAggregate {
        fn of<T: Copy>(
            entry: &(u64, Stats<T>),
            wrap: fn(Stats<T>) -> NumericStats,
        ) -> FieldAggregate {
            FieldAggregate {
                count: entry.0,
                stats: (entry.0 > 0).then(|| wrap(entry.1)),
            }
        }
        match self {
            FieldSlots::Unknown => FieldAggregate::default(),
            FieldSlots::Float(v) => of(&v[slot], NumericStats::Float),
            FieldSlots::Integer(v) => of(&v[slot], NumericStats::Integer),
            FieldSlots::Unsigned(v) => of(&v[slot], NumericStats::Unsigned),
            FieldSlots::Counted(v) => FieldAggregate {
                count: v[slot],
                stats: None,
            },
        }
    }
}

fn zero_stats<T: Number>(zero: T) -> Stats<T> {
    Stats::new(0, zero)
}

#[inline]
fn add_value<T: Number>(entry: &mut (u64, Stats<T>), time: i64, value: T) {
    if entry.0 == 0 {
        entry.1 = Stats::new(time, value);
    } else {
        entry.1.add(time, value);
    }
    entry.0 += 1;
}

/// Folds the values of `rows` into one slot's entry.
#[inline]
fn fold_rows<T: Number>(
    entry: &mut (u64, Stats<T>),
    rows: Rows<'_>,
    times: &[i64],
    values: &[T],
    valid: &[bool],
) {
    rows.each(|row| {
        if valid[row] {
            add_value(entry, times[row], values[row]);
        }
    });
}

/// Folds a partial entry (a run's summary) into a slot's entry.
#[inline]
fn merge_entry<T: Number>(entry: &mut (u64, Stats<T>), other: &(u64, Stats<T>)) {
    if other.0 == 0 {
        return;
    }
    if entry.0 == 0 {
        *entry = *other;
    } else {
        entry.1.merge(&other.1);
        entry.0 += other.0;
    }
}

/// Rows per block of a run's summary: a stretch inside a run folds its
/// whole blocks from their summaries and at most `2 × (BLOCK − 1)` rows
/// one by one.
const BLOCK: usize = 128;
/// Blocks per big block: a long stretch folds whole big blocks, and at
/// most `2 × (BIG − 1)` blocks one by one.
const BIG: usize = 64;

/// The aggregates of one field over each run of a sealed chunk and over
/// each `BLOCK` rows of a run (from its start): a run read whole is folded
/// in one step, a stretch of it in one step per block, instead of one per
/// row. Not used when a sum is asked: a float sum rounds by the order of
/// its additions, and the row path adds value by value in time order.
#[derive(Debug)]
pub(crate) struct Summaries<E> {
    /// Per run.
    runs: Vec<E>,
    /// Per block of every run, run after run.
    blocks: Vec<E>,
    /// Per run: the index of its first block in `blocks`.
    first_block: Vec<u32>,
    /// Per `BIG` blocks of every run (from its first), run after run.
    bigs: Vec<E>,
    /// Per run: the index of its first big block in `bigs`.
    first_big: Vec<u32>,
}

impl<E: Copy> Summaries<E> {
    /// `fold` aggregates a range of positions (at most a block) into an
    /// empty entry; `merge` folds one entry into another.
    fn build(
        runs: &SeriesRuns,
        empty: E,
        fold: impl Fn(&mut E, Range<usize>),
        merge: impl Fn(&mut E, &E),
    ) -> Summaries<E> {
        let mut out = Summaries {
            runs: Vec::with_capacity(runs.runs.len()),
            blocks: Vec::new(),
            first_block: Vec::with_capacity(runs.runs.len()),
            bigs: Vec::new(),
            first_big: Vec::with_capacity(runs.runs.len()),
        };
        for run in &runs.runs {
            out.first_block.push(out.blocks.len() as u32);
            out.first_big.push(out.bigs.len() as u32);
            let mut whole = empty;
            let mut big = empty;
            let (start, end) = (run.start as usize, run.end as usize);
            for (index, block_start) in (start..end).step_by(BLOCK).enumerate() {
                let mut block = empty;
                fold(&mut block, block_start..(block_start + BLOCK).min(end));
                merge(&mut whole, &block);
                merge(&mut big, &block);
                out.blocks.push(block);
                if index % BIG == BIG - 1 {
                    out.bigs.push(std::mem::replace(&mut big, empty));
                }
            }
            out.runs.push(whole);
        }
        out
    }

    /// Folds positions `range` of run `index` (starting at position
    /// `run_start`, ending at `run_end`) into `entry`: its summary if the
    /// range is the run, its whole blocks' summaries and `rows` for the
    /// rest otherwise.
    #[inline]
    fn fold_into(
        &self,
        index: usize,
        run: (usize, usize),
        range: Range<usize>,
        entry: &mut E,
        rows: impl Fn(&mut E, Range<usize>),
        merge: impl Fn(&mut E, &E),
    ) {
        let (run_start, run_end) = run;
        if range.start == run_start && range.end == run_end {
            merge(entry, &self.runs[index]);
            return;
        }
        let first_full = (range.start - run_start).div_ceil(BLOCK);
        let end_full = (range.end - run_start) / BLOCK;
        if first_full >= end_full {
            rows(entry, range);
            return;
        }
        rows(entry, range.start..run_start + first_full * BLOCK);
        let base = self.first_block[index] as usize;
        let (first_big, end_big) = (first_full.div_ceil(BIG), end_full / BIG);
        if first_big < end_big {
            let big_base = self.first_big[index] as usize;
            let blocks = self.blocks[base + first_full..base + first_big * BIG]
                .iter()
                .chain(&self.bigs[big_base + first_big..big_base + end_big])
                .chain(&self.blocks[base + end_big * BIG..base + end_full]);
            for summary in blocks {
                merge(entry, summary);
            }
        } else {
            for block in &self.blocks[base + first_full..base + end_full] {
                merge(entry, block);
            }
        }
        rows(entry, run_start + end_full * BLOCK..range.end);
    }
}

/// [`Summaries`] of a field, by its type (strings and booleans: counts).
#[derive(Debug)]
pub(crate) enum RunSummaries {
    Float(Summaries<(u64, Stats<f64>)>),
    Integer(Summaries<(u64, Stats<i64>)>),
    Unsigned(Summaries<(u64, Stats<u64>)>),
    Counted(Summaries<u64>),
}

impl RunSummaries {
    pub(crate) fn of(column: &Column, runs: &SeriesRuns, times: &[i64]) -> RunSummaries {
        fn typed<T: Number>(
            runs: &SeriesRuns,
            times: &[i64],
            values: &[T],
            valid: &[bool],
        ) -> Summaries<(u64, Stats<T>)> {
            Summaries::build(
                runs,
                (0, zero_stats(T::SUM_ZERO)),
                |entry, range| fold_rows(entry, runs.rows(range), times, values, valid),
                merge_entry,
            )
        }
        let valid = &column.valid;
        match &column.data {
            ColumnData::Float(v) => RunSummaries::Float(typed(runs, times, v, valid)),
            ColumnData::Integer(v) => RunSummaries::Integer(typed(runs, times, v, valid)),
            ColumnData::Unsigned(v) => RunSummaries::Unsigned(typed(runs, times, v, valid)),
            ColumnData::String(_) | ColumnData::Boolean(_) => {
                RunSummaries::Counted(Summaries::build(
                    runs,
                    0,
                    |count, range| *count += count_valid(runs.rows(range), valid),
                    |count, other| *count += *other,
                ))
            }
        }
    }
}

/// A value of a held row (strings and booleans only count).
#[derive(Clone, Copy, Debug)]
enum Held {
    Float(f64),
    Integer(i64),
    Unsigned(u64),
    Present,
}

fn held_value(column: &Column, row: usize) -> Option<Held> {
    if !column.valid[row] {
        return None;
    }
    Some(match &column.data {
        ColumnData::Float(v) => Held::Float(v[row]),
        ColumnData::Integer(v) => Held::Integer(v[row]),
        ColumnData::Unsigned(v) => Held::Unsigned(v[row]),
        ColumnData::String(_) | ColumnData::Boolean(_) => Held::Present,
    })
}

/// A row of a held series, copied: its time, the order of its chunk among
/// those fed, and where its values start in [`Aggregator::held_values`].
#[derive(Clone, Copy)]
struct HeldRow {
    time: i64,
    order: u32,
    at: u32,
}

/// Entries of a [`DenseSlots`] table at most (16 MiB).
const DENSE_ENTRIES_MAX: usize = 1 << 22;

/// The slots of `GROUP BY time` over a bounded time range, found by
/// arithmetic: per group, one entry per bucket of the range, so a series
/// whose every row opens a bucket (one point per second grouped by second)
/// costs no hash lookup per row. Groups past what the table may hold use
/// the hash map.
struct DenseSlots {
    first_start: i64,
    interval: i64,
    buckets: usize,
    groups_max: usize,
    /// `group × buckets + bucket` → slot (`SKIP`: none yet); grown a group
    /// at a time.
    slots: Vec<u32>,
}

impl DenseSlots {
    fn for_request(request: &AggregateRequest) -> Option<DenseSlots> {
        let (interval, offset) = request.window?;
        if request.time_min_ns == i64::MIN
            || request.time_max_ns == i64::MAX
            || request.time_min_ns > request.time_max_ns
            || interval <= 0
        {
            return None;
        }
        let first_start = bucket_start(request.time_min_ns, interval, offset);
        let last_start = bucket_start(request.time_max_ns, interval, offset);
        let buckets = (i128::from(last_start) - i128::from(first_start)) / i128::from(interval) + 1;
        let buckets = usize::try_from(buckets)
            .ok()
            .filter(|b| (1..=DENSE_ENTRIES_MAX).contains(b))?;
        Some(DenseSlots {
            first_start,
            interval,
            buckets,
            groups_max: DENSE_ENTRIES_MAX / buckets,
            slots: Vec::new(),
        })
    }

    /// The entry of (group, bucket `start`), the table grown to hold it;
    /// `None` for a group or bucket outside it.
    #[inline]
    fn index(&mut self, group: u32, start: i64) -> Option<usize> {
        let group = group as usize;
        if group >= self.groups_max || start < self.first_start {
            return None;
        }
        let bucket = usize::try_from(start.checked_sub(self.first_start)? / self.interval).ok()?;
        if bucket >= self.buckets {
            return None;
        }
        let index = group * self.buckets + bucket;
        if self.slots.len() <= index {
            self.slots.resize((group + 1) * self.buckets, SKIP);
        }
        Some(index)
    }
}

/// Folds the rows of one measurement's sources into group × bucket slots.
pub struct Aggregator {
    request: AggregateRequest,
    held_tags: HeldSeries,
    series_ids: HashMap<Tags, u32, FastHash>,
    series: Vec<SeriesState>,
    series_tags: Vec<Tags>,
    group_ids: HashMap<Tags, u32, FastHash>,
    group_keys: Vec<Tags>,
    /// Per group: the last bucket start it used and that slot.
    group_cache: Vec<(i64, u32)>,
    slot_ids: HashMap<(u32, i64), u32, FastHash>,
    /// Slots by arithmetic for `GROUP BY time` over a bounded range.
    dense: Option<DenseSlots>,
    slot_keys: Vec<(u32, i64)>,
    fields: Vec<FieldSlots>,
    /// Per held series id: its rows as fed (runs in time order, one after
    /// another).
    held: HashMap<u32, Vec<HeldRow>, FastHash>,
    /// The held rows' values, one per requested field each.
    held_values: Vec<Option<Held>>,
    held_count: usize,
    chunks_fed: u32,
}

impl Aggregator {
    /// `held`: series whose rows are copied and deduplicated (a previous
    /// attempt's [`Finished::Again`]).
    pub fn new(request: AggregateRequest, held: HeldSeries) -> Aggregator {
        let fields = request.fields.iter().map(|_| FieldSlots::Unknown).collect();
        let dense = DenseSlots::for_request(&request);
        Aggregator {
            request,
            held_tags: held,
            series_ids: HashMap::default(),
            series: Vec::new(),
            series_tags: Vec::new(),
            group_ids: HashMap::default(),
            group_keys: Vec::new(),
            group_cache: Vec::new(),
            slot_ids: HashMap::default(),
            dense,
            slot_keys: Vec::new(),
            fields,
            held: HashMap::default(),
            held_values: Vec::new(),
            held_count: 0,
            chunks_fed: 0,
        }
    }

    pub fn request(&self) -> &AggregateRequest {
        &self.request
    }

    /// This scan's id of a table's series; `None` if the filter drops it.
    fn series_id(&mut self, tags: &Tags) -> Option<u32> {
        if let Some(&id) = self.series_ids.get(tags) {
            return Some(id);
        }
        if !self.request.tag_filter.matches(tags) {
            return None;
        }
        let key: Tags = self
            .request
            .group_keys
            .iter()
            .map(|k| {
                let value = tags
                    .binary_search_by(|(t, _)| t.as_str().cmp(k))
                    .map(|i| tags[i].1.clone())
                    .unwrap_or_default();
                (k.clone(), value)
            })
            .collect();
        let next_group = self.group_keys.len() as u32;
        let group = *self.group_ids.entry(key.clone()).or_insert(next_group);
        if group == next_group {
            self.group_keys.push(key);
            self.group_cache.push((0, SKIP));
        }
        let id = self.series.len() as u32;
        self.series.push(SeriesState {
            group,
            last_ns: i64::MIN,
            disordered: false,
            held: self.held_tags.get(tags).cloned(),
            spans: Vec::new(),
            held_parts: Vec::new(),
        });
        self.series_tags.push(tags.clone());
        self.series_ids.insert(tags.clone(), id);
        Some(id)
    }

    /// The slot of (group, bucket of `time`).
    #[inline]
    fn slot(&mut self, group: u32, time: i64) -> Result<u32, ScanError> {
        let start = match self.request.window {
            Some((interval, offset)) => bucket_start(time, interval, offset),
            None => 0,
        };
        let cached = self.group_cache[group as usize];
        if cached.1 != SKIP && cached.0 == start {
            return Ok(cached.1);
        }
        let slot = match self.dense.as_mut().and_then(|d| d.index(group, start)) {
            Some(index) => match self.dense.as_ref().map(|d| d.slots[index]) {
                Some(slot) if slot != SKIP => slot,
                _ => {
                    let slot = self.new_slot(group, start)?;
                    if let Some(dense) = self.dense.as_mut() {
                        dense.slots[index] = slot;
                    }
                    slot
                }
            },
            None => match self.slot_ids.get(&(group, start)) {
                Some(&slot) => slot,
                None => {
                    let slot = self.new_slot(group, start)?;
                    self.slot_ids.insert((group, start), slot);
                    slot
                }
            },
        };
        self.group_cache[group as usize] = (start, slot);
        Ok(slot)
    }

    /// A new slot for (group, bucket start), within the bucket limit.
    fn new_slot(&mut self, group: u32, start: i64) -> Result<u32, ScanError> {
        if self.slot_keys.len() >= self.request.bucket_limit {
            return Err(ScanError::TooManyBuckets {
                limit: self.request.bucket_limit,
            });
        }
        self.slot_keys.push((group, start));
        for field in &mut self.fields {
            field.push_slot();
        }
        Ok(self.slot_keys.len() as u32 - 1)
    }

    /// Folds the rows of one source table (sources oldest first).
    pub fn feed(&mut self, table: &Table) -> Result<(), ScanError> {
        let local: Vec<Option<u32>> = table.series.iter().map(|t| self.series_id(t)).collect();
        let (time_min, time_max) = (self.request.time_min_ns, self.request.time_max_ns);
        let sealed = table.sealed.len();
        for (index, chunk) in table.chunks().enumerate() {
            let order = self.chunks_fed;
            self.chunks_fed += 1;
            if chunk.len() == 0 || chunk.time_max_ns < time_min || chunk.time_min_ns > time_max {
                continue;
            }
            self.request.deadline.check()?;
            self.feed_chunk(chunk, index < sealed, &local, order)?;
        }
        Ok(())
    }

    /// Folds one chunk, run by run: a series' rows in the time range are
    /// one stretch of its run, and a bucket one stretch of that.
    fn feed_chunk(
        &mut self,
        chunk: &Chunk,
        sealed: bool,
        local: &[Option<u32>],
        order: u32,
    ) -> Result<(), ScanError> {
        let runs = chunk.runs(sealed);
        let times = &chunk.times;
        let columns: Vec<Option<&Column>> = self
            .request
            .fields
            .iter()
            .map(|name| chunk.column(name))
            .collect();
        for (field, column) in self.fields.iter_mut().zip(&columns) {
            if let (FieldSlots::Unknown, Some(column)) = (&*field, column) {
                *field = FieldSlots::new(column, self.slot_keys.len());
            }
        }
        let summarised = sealed && !self.request.sums;
        let names = self.request.fields.clone();
        let mut fold = ChunkFold {
            chunk,
            runs: &runs,
            names: &names,
            summaries: vec![None; columns.len()],
            columns,
        };
        let (time_min, time_max) = (self.request.time_min_ns, self.request.time_max_ns);
        for (run_index, run) in runs.runs.iter().enumerate() {
            let Some(id) = local[run.series as usize] else {
                continue;
            };
            let range = runs.clip(run, times, time_min, time_max);
            if range.is_empty() {
                continue;
            }
            let (first, last) = (times[runs.row(range.start)], times[runs.row(range.end - 1)]);
            let state = &mut self.series[id as usize];
            // An active chunk's run may grow before another attempt.
            let kept = (first, if sealed { last } else { i64::MAX });
            state.spans.push(kept);
            let summary = summarised.then_some(run_index);
            if let Some(spans) = &state.held {
                // Only rows that another run of the series may repeat
                // (within its span) need merging; with a sum asked, all
                // of them (added in time order); all of a run that is not
                // among the spans (new since).
                let shared = if self.request.sums || runs.repeats {
                    vec![(first, last)]
                } else {
                    let shared = shared_spans(spans, kept, (first, last))
                        .unwrap_or_else(|()| vec![(first, last)]);
                    state.held_parts.push(((first, last), shared.clone()));
                    shared
                };
                let group = state.group;
                // Between the shared parts: folded directly; the parts:
                // held.
                let mut at = range.start;
                for (low, high) in shared {
                    let start = at + partition_times(&runs, times, at..range.end, low);
                    let end = start
                        + partition_times(&runs, times, start..range.end, high.saturating_add(1));
                    self.fold_stretch(&mut fold, group, at..start, summary)?;
                    hold_run(
                        HeldStore {
                            rows: self.held.entry(id).or_default(),
                            values: &mut self.held_values,
                            count: &mut self.held_count,
                            limit: self.request.row_limit,
                        },
                        &runs,
                        start..end,
                        times,
                        &fold.columns,
                        order,
                    )?;
                    at = end;
                }
                self.fold_stretch(&mut fold, group, at..range.end, summary)?;
                continue;
            }
            if first <= state.last_ns || runs.repeats {
                state.disordered = true;
            }
            state.last_ns = state.last_ns.max(last);
            if state.disordered {
                // Read again, held, in the next attempt: folding it now
                // would be wasted.
                continue;
            }
            let group = state.group;
            self.fold_stretch(&mut fold, group, range, summary)?;
        }
        Ok(())
    }

    /// Folds the rows at `range` of one run (of a series of `group`) into
    /// their buckets' slots: the whole range in one step without `GROUP BY
    /// time`, else one stretch per bucket; `summary` (the run's index, when
    /// its summaries may be used) folds what they cover from them.
    fn fold_stretch(
        &mut self,
        fold: &mut ChunkFold<'_>,
        group: u32,
        range: Range<usize>,
        summary: Option<usize>,
    ) -> Result<(), ScanError> {
        if range.is_empty() {
            return Ok(());
        }
        let Some((interval, offset)) = self.request.window else {
            let slot = self.slot(group, 0)? as usize;
            fold.fold(&mut self.fields, slot, range, summary);
            return Ok(());
        };
        let (runs, times) = (fold.runs, &fold.chunk.times);
        let mut start = range.start;
        while start < range.end {
            let time = times[runs.row(start)];
            let bucket_end = bucket_start(time, interval, offset).saturating_add(interval);
            let end = runs
                .bucket_end(start..range.end, times, bucket_end)
                .max(start + 1);
            let slot = self.slot(group, time)? as usize;
            let whole = start == range.start && end == range.end;
            fold.fold(
                &mut self.fields,
                slot,
                start..end,
                summary.filter(|_| whole),
            );
            start = end;
        }
        Ok(())
    }

    /// The groups' buckets, or the series to hold in another attempt.
    pub fn finish(mut self) -> Result<Finished, ScanError> {
        let mut again = HeldSeries::default();
        for (state, tags) in self.series.iter_mut().zip(&self.series_tags) {
            state.spans.sort_unstable();
            // A held series whose runs changed since their spans were taken
            // may have rows that repeat one another outside the rows held:
            // again, with this attempt's spans.
            if state.disordered || !shared_times_held(&state.held_parts) {
                again.insert(tags.clone(), std::mem::take(&mut state.spans));
            }
        }
        if !again.is_empty() {
            return Ok(Finished::Again(again));
        }
        self.fold_held()?;
        let mut per_group: Vec<Vec<Bucket>> = vec![Vec::new(); self.group_keys.len()];
        for (slot, &(group, start_ns)) in self.slot_keys.iter().enumerate() {
            let fields: Vec<FieldAggregate> = self.fields.iter().map(|f| f.get(slot)).collect();
            if fields.iter().all(|f| f.count == 0) {
                continue;
            }
            per_group[group as usize].push(Bucket { start_ns, fields });
        }
        let mut out: Vec<GroupAggregates> = per_group
            .into_iter()
            .zip(self.group_keys)
            .filter(|(buckets, _)| !buckets.is_empty())
            .map(|(mut buckets, key)| {
                buckets.sort_by_key(|b| b.start_ns);
                GroupAggregates { key, buckets }
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Finished::Done(out))
    }

    /// Deduplicates each held series' rows (same time: the later chunk's
    /// non-null values win) and folds them in time order.
    fn fold_held(&mut self) -> Result<(), ScanError> {
        let width = self.request.fields.len().max(1);
        let held = std::mem::take(&mut self.held);
        let mut merged: Vec<Option<Held>> = vec![None; width];
        for (series, mut rows) in held {
            // Stable, and the rows come as runs in time order: a merge of
            // the runs; equal times keep the order they were fed in.
            rows.sort_by_key(|r| r.time);
            let group = self.series[series as usize].group;
            let mut i = 0;
            while i < rows.len() {
                let time = rows[i].time;
                merged.iter_mut().for_each(|m| *m = None);
                while i < rows.len() && rows[i].time == time {
                    debug_assert!(
                        i == 0 || rows[i - 1].time < time || rows[i - 1].order <= rows[i].order
                    );
                    let at = rows[i].at as usize * width;
                    for (m, v) in merged.iter_mut().zip(&self.held_values[at..at + width]) {
                        if v.is_some() {
                            *m = *v;
                        }
                    }
                    i += 1;
                }
                let slot = self.slot(group, time)? as usize;
                for (field, value) in self.fields.iter_mut().zip(&merged) {
                    match (field, value) {
                        (FieldSlots::Float(s), Some(Held::Float(v))) => {
                            add_value(&mut s[slot], time, *v)
                        }
                        (FieldSlots::Integer(s), Some(Held::Integer(v))) => {
                            add_value(&mut s[slot], time, *v)
                        }
                        (FieldSlots::Unsigned(s), Some(Held::Unsigned(v))) => {
                            add_value(&mut s[slot], time, *v)
                        }
                        (FieldSlots::Counted(s), Some(Held::Present)) => s[slot] += 1,
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }
}

/// The parts of `own` (a run's first and last time) that other runs of the
/// series may repeat: its intersections with their spans, merged where they
/// overlap, in time order (empty if it shares nothing). `spans` holds every
/// run's span as kept (`key` for this run) once: `Err` when it does not
/// (the runs changed).
fn shared_spans(
    spans: &[(i64, i64)],
    key: (i64, i64),
    own: (i64, i64),
) -> Result<Vec<(i64, i64)>, ()> {
    let mut seen_own = false;
    let mut shared: Vec<(i64, i64)> = Vec::new();
    for &span in spans {
        if span == key && !seen_own {
            seen_own = true;
            continue;
        }
        if span.0 <= own.1 && span.1 >= own.0 {
            shared.push((span.0.max(own.0), span.1.min(own.1)));
        }
    }
    if !seen_own {
        return Err(());
    }
    shared.sort_unstable();
    let mut merged: Vec<(i64, i64)> = Vec::with_capacity(shared.len());
    for (low, high) in shared {
        match merged.last_mut() {
            Some(last) if low <= last.1 => last.1 = last.1.max(high),
            _ => merged.push((low, high)),
        }
    }
    Ok(merged)
}

/// Did every time two runs of a held series share fall in a part held in
/// both? (`held_parts`: each run's span and its held parts.) Then no row
/// folded directly repeats another, whatever changed since the spans the
/// parts were taken from.
fn shared_times_held(held_parts: &[HeldParts]) -> bool {
    let covered = |parts: &[(i64, i64)], (low, high): (i64, i64)| {
        parts.iter().any(|&(l, h)| l <= low && high <= h)
    };
    held_parts.iter().enumerate().all(|(i, (a, a_parts))| {
        held_parts.iter().enumerate().all(|(j, (b, b_parts))| {
            let shared = (a.0.max(b.0), a.1.min(b.1));
            i == j || shared.0 > shared.1 || (covered(a_parts, shared) && covered(b_parts, shared))
        })
    })
}

/// The number of leading positions of `range` (of one run) whose time is
/// below `bound`.
fn partition_times(runs: &SeriesRuns, times: &[i64], range: Range<usize>, bound: i64) -> usize {
    let (mut low, mut high) = (range.start, range.end);
    while low < high {
        let middle = low + (high - low) / 2;
        if times[runs.row(middle)] < bound {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    low - range.start
}

/// Where held rows go.
struct HeldStore<'a> {
    rows: &'a mut Vec<HeldRow>,
    values: &'a mut Vec<Option<Held>>,
    count: &'a mut usize,
    limit: usize,
}

/// Copies the rows of a held series at `range` of `runs` (a row with none
/// of the requested fields contributes nothing and is left).
fn hold_run(
    store: HeldStore<'_>,
    runs: &SeriesRuns,
    range: Range<usize>,
    times: &[i64],
    columns: &[Option<&Column>],
    order: u32,
) -> Result<(), ScanError> {
    let width = columns.len().max(1);
    for position in range {
        let row = runs.row(position);
        let at = store.values.len();
        store
            .values
            .extend(columns.iter().map(|c| c.and_then(|c| held_value(c, row))));
        store.values.resize(at + width, None);
        if store.values[at..].iter().all(Option::is_none) {
            store.values.truncate(at);
            continue;
        }
        if *store.count >= store.limit {
            return Err(ScanError::TooManyRows { limit: store.limit });
        }
        *store.count += 1;
        store.rows.push(HeldRow {
            time: times[row],
            order,
            at: (at / width) as u32,
        });
    }
    Ok(())
}

/// What folding one chunk reads: its columns in the request's field
/// order, its runs, and the run summaries fetched so far.
struct ChunkFold<'a> {
    chunk: &'a Chunk,
    runs: &'a SeriesRuns,
    names: &'a [String],
    columns: Vec<Option<&'a Column>>,
    /// Fetched on first use: a scan that reads no run whole never makes
    /// them.
    summaries: Vec<Option<Arc<RunSummaries>>>,
}

impl ChunkFold<'_> {
    /// Folds the rows at `range` (of one series, in one bucket) into
    /// `slot` of every field; through the summaries of run `summary` (its
    /// own, or its blocks') where they cover the range.
    #[inline]
    fn fold(
        &mut self,
        fields: &mut [FieldSlots],
        slot: usize,
        range: Range<usize>,
        summary: Option<usize>,
    ) {
        let (chunk, runs, times) = (self.chunk, self.runs, &self.chunk.times);
        let per_field = fields
            .iter_mut()
            .zip(&self.columns)
            .zip(self.summaries.iter_mut().zip(self.names));
        for ((field, column), (kept, name)) in per_field {
            let Some(column) = column else {
                continue;
            };
            let valid = &column.valid;
            if let Some(index) = summary {
                let kept = kept.get_or_insert_with(|| {
                    chunk.summaries(name, || RunSummaries::of(column, runs, times))
                });
                let run = &runs.runs[index];
                let run = (run.start as usize, run.end as usize);
                let range = range.clone();
                match (field, &**kept, &column.data) {
                    (FieldSlots::Float(s), RunSummaries::Float(k), ColumnData::Float(v)) => k
                        .fold_into(
                            index,
                            run,
                            range,
                            &mut s[slot],
                            |e, r| fold_rows(e, runs.rows(r), times, v, valid),
                            merge_entry,
                        ),
                    (FieldSlots::Integer(s), RunSummaries::Integer(k), ColumnData::Integer(v)) => k
                        .fold_into(
                            index,
                            run,
                            range,
                            &mut s[slot],
                            |e, r| fold_rows(e, runs.rows(r), times, v, valid),
                            merge_entry,
                        ),
                    (
                        FieldSlots::Unsigned(s),
                        RunSummaries::Unsigned(k),
                        ColumnData::Unsigned(v),
                    ) => k.fold_into(
                        index,
                        run,
                        range,
                        &mut s[slot],
                        |e, r| fold_rows(e, runs.rows(r), times, v, valid),
                        merge_entry,
                    ),
                    (FieldSlots::Counted(s), RunSummaries::Counted(k), _) => k.fold_into(
                        index,
                        run,
                        range,
                        &mut s[slot],
                        |count, r| *count += count_valid(runs.rows(r), valid),
                        |count, other| *count += *other,
                    ),
                    _ => {}
                }
                continue;
            }
            let rows = runs.rows(range.clone());
            match (field, &column.data) {
                (FieldSlots::Float(s), ColumnData::Float(v)) => {
                    fold_rows(&mut s[slot], rows, times, v, valid)
                }
                (FieldSlots::Integer(s), ColumnData::Integer(v)) => {
                    fold_rows(&mut s[slot], rows, times, v, valid)
                }
                (FieldSlots::Unsigned(s), ColumnData::Unsigned(v)) => {
                    fold_rows(&mut s[slot], rows, times, v, valid)
                }
                (FieldSlots::Counted(s), ColumnData::String(_) | ColumnData::Boolean(_)) => {
                    s[slot] += count_valid(rows, valid)
                }
                // Another type than the field's first: impossible behind
                // the catalog; ignored like the store does.
                _ => {}
            }
        }
    }
}

/// The valid values among `rows`.
fn count_valid(rows: Rows<'_>, valid: &[bool]) -> u64 {
    let mut count = 0u64;
    rows.each(|row| count += u64::from(valid[row]));
    count
}

/// Aggregates `tables` (one measurement's sources, oldest first) as one
/// store: feeds them again with the out-of-order series held until the
/// answer is exact (each attempt holds at least one more series).
pub(super) fn aggregate(
    tables: &[&Table],
    request: &AggregateRequest,
) -> Result<Vec<GroupAggregates>, ScanError> {
    let mut held = HeldSeries::default();
    loop {
        let mut aggregator = Aggregator::new(request.clone(), held.clone());
        for table in tables {
            aggregator.feed(table)?;
        }
        match aggregator.finish()? {
            Finished::Done(groups) => return Ok(groups),
            Finished::Again(series) => held.extend(series),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: a stretch of a run folded through its summaries (the run's,
    /// its big blocks', its blocks', rows at the ends) equals the fold of
    /// its rows, for stretches of every shape: inside one block, across a
    /// few blocks, across big blocks, the whole run. Method: two runs of
    /// 20 000 and 300 rows with nulls; stretches from seeded bounds
    /// against `fold_rows`.
    #[test]
    fn stretches_through_summaries_equal_the_fold_of_their_rows() {
        let rows = 20_300usize;
        let series: Vec<u32> = (0..rows).map(|r| u32::from(r >= 20_000)).collect();
        let times: Vec<i64> = (0..rows as i64).collect();
        let values: Vec<i64> = (0..rows as i64).map(|r| (r * 7919) % 1009 - 500).collect();
        let valid: Vec<bool> = (0..rows).map(|r| r % 11 != 3).collect();
        let runs = SeriesRuns::build(&series, &times);
        let summaries = Summaries::build(
            &runs,
            (0, zero_stats(0i64)),
            |entry, range| fold_rows(entry, runs.rows(range), &times, &values, &valid),
            merge_entry,
        );
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for (index, run) in runs.runs.iter().enumerate() {
            let (start, end) = (run.start as usize, run.end as usize);
            let mut stretches = vec![start..end, start..start + 1, end - 1..end];
            for _ in 0..300 {
                let a = start + next(end - start);
                let b = a + 1 + next(end - a);
                stretches.push(a..b);
            }
            for stretch in stretches {
                let mut expected = (0, zero_stats(0i64));
                fold_rows(
                    &mut expected,
                    runs.rows(stretch.clone()),
                    &times,
                    &values,
                    &valid,
                );
                let mut folded = (0, zero_stats(0i64));
                summaries.fold_into(
                    index,
                    (start, end),
                    stretch.clone(),
                    &mut folded,
                    |e, r| fold_rows(e, runs.rows(r), &times, &values, &valid),
                    merge_entry,
                );
                assert_eq!(folded.0, expected.0, "count of {stretch:?}");
                let (f, e) = (folded.1, expected.1);
                assert_eq!(
                    (f.min, f.max, f.first, f.last),
                    (e.min, e.max, e.first, e.last),
                    "{stretch:?}"
                );
                assert_eq!(f.sum, e.sum, "integer sums add in any order: {stretch:?}");
            }
        }
    }
}
