//! Aggregates computed while scanning: `count`, `sum`, `mean`, `min`,
//! `max`, `first`, `last` and `spread` per output group and time bucket,
//! without materialising rows. The answer's size is groups × buckets,
//! whatever the number of rows read; files are fed one at a time, so a
//! `count(*)` over a hundred million persisted points runs in the memory of
//! one file plus the buckets.
//!
//! An [`Aggregator`] is fed every source of one measurement in age order
//! (Parquet files oldest first, frozen generations, live tables: the order
//! of the row scan) and folds each row into the slot of its (group,
//! bucket). That is exact only when no (series, time) repeats across
//! sources, which a scan cannot know before it reads: so the aggregator
//! watches each series' times, and a series whose rows do not come in
//! strictly increasing time order (written out of order, or rewritten) is
//! reported by [`Aggregator::finish`]. The caller then feeds everything again
//! with those series *held*: their rows are copied (bounded by the row
//! limit), deduplicated as the row scan does (later non-null field wins)
//! and folded in time order at the end.
//!
//! Matching the row path ([`crate::query::eval`]'s reducers over points in
//! time order): ties are broken by rules that do not depend on the order
//! rows are fed in — `min`/`max` keep the earliest of equal values,
//! `first`/`last` the larger value at equal times. Sums of a series are
//! added in time order, so a group of one series sums exactly as the row
//! path; a group of several series sums series by series (the last bits of
//! a float `sum`/`mean` may differ from a time-interleaved sum).

use std::collections::{HashMap, HashSet};

use super::{AggregateRequest, Column, ColumnData, ScanError, Table};

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
    Again(Vec<Vec<(String, String)>>),
}

/// Tags of a series.
type Tags = Vec<(String, String)>;

const SKIP: u32 = u32::MAX;
const HOLD: u32 = u32::MAX - 1;

struct SeriesState {
    group: u32,
    last_ns: i64,
    disordered: bool,
    held: bool,
}

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

/// Folds one typed column of a chunk into its slots.
fn fold_column<T: Number>(
    slots: &mut [(u64, Stats<T>)],
    row_slots: &[u32],
    times: &[i64],
    values: &[T],
    valid: &[bool],
) {
    for (row, &slot) in row_slots.iter().enumerate() {
        if slot < HOLD && valid[row] {
            add_value(&mut slots[slot as usize], times[row], values[row]);
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

/// A row of a held series, copied: (series, time, chunk order, values).
struct HeldRow {
    series: u32,
    time: i64,
    order: u32,
    values: Vec<Option<Held>>,
}

/// Folds the rows of one measurement's sources into group × bucket slots.
pub struct Aggregator {
    request: AggregateRequest,
    held_tags: HashSet<Tags>,
    series_ids: HashMap<Tags, u32>,
    series: Vec<SeriesState>,
    series_tags: Vec<Tags>,
    group_ids: HashMap<Tags, u32>,
    group_keys: Vec<Tags>,
    /// Per group: the last bucket start it used and that slot.
    group_cache: Vec<(i64, u32)>,
    slot_ids: HashMap<(u32, i64), u32>,
    slot_keys: Vec<(u32, i64)>,
    fields: Vec<FieldSlots>,
    held: Vec<HeldRow>,
    chunks_fed: u32,
    row_slots: Vec<u32>,
}

impl Aggregator {
    /// `held`: series whose rows are copied and deduplicated (a previous
    /// attempt's [`Finished::Again`]).
    pub fn new(request: AggregateRequest, held: HashSet<Tags>) -> Aggregator {
        let fields = request.fields.iter().map(|_| FieldSlots::Unknown).collect();
        Aggregator {
            request,
            held_tags: held,
            series_ids: HashMap::new(),
            series: Vec::new(),
            series_tags: Vec::new(),
            group_ids: HashMap::new(),
            group_keys: Vec::new(),
            group_cache: Vec::new(),
            slot_ids: HashMap::new(),
            slot_keys: Vec::new(),
            fields,
            held: Vec::new(),
            chunks_fed: 0,
            row_slots: Vec::new(),
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
            held: self.held_tags.contains(tags),
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
        let next = self.slot_keys.len() as u32;
        let slot = *self.slot_ids.entry((group, start)).or_insert(next);
        if slot == next {
            if self.slot_keys.len() >= self.request.bucket_limit {
                return Err(ScanError::TooManyBuckets {
                    limit: self.request.bucket_limit,
                });
            }
            self.slot_keys.push((group, start));
            for field in &mut self.fields {
                field.push_slot();
            }
        }
        self.group_cache[group as usize] = (start, slot);
        Ok(slot)
    }

    /// Folds the rows of one source table (sources oldest first).
    pub fn feed(&mut self, table: &Table) -> Result<(), ScanError> {
        let local: Vec<Option<u32>> = table.series.iter().map(|t| self.series_id(t)).collect();
        let (time_min, time_max) = (self.request.time_min_ns, self.request.time_max_ns);
        for chunk in table.chunks() {
            let order = self.chunks_fed;
            self.chunks_fed += 1;
            if chunk.len() == 0 || chunk.time_max_ns < time_min || chunk.time_min_ns > time_max {
                continue;
            }
            let mut row_slots = std::mem::take(&mut self.row_slots);
            row_slots.clear();
            let mut holding = false;
            for (&time, &series) in chunk.times.iter().zip(&chunk.series) {
                let id = match local[series as usize] {
                    Some(id) if time >= time_min && time <= time_max => id,
                    _ => {
                        row_slots.push(SKIP);
                        continue;
                    }
                };
                let state = &mut self.series[id as usize];
                if state.held {
                    holding = true;
                    row_slots.push(HOLD);
                    continue;
                }
                if time <= state.last_ns {
                    state.disordered = true;
                } else {
                    state.last_ns = time;
                }
                let group = state.group;
                row_slots.push(self.slot(group, time)?);
            }
            for (field, name) in self.fields.iter_mut().zip(&self.request.fields) {
                let Some(column) = chunk.column(name) else {
                    continue;
                };
                if matches!(field, FieldSlots::Unknown) {
                    *field = FieldSlots::new(column, self.slot_keys.len());
                }
                let (times, valid) = (&chunk.times, &column.valid);
                match (field, &column.data) {
                    (FieldSlots::Float(slots), ColumnData::Float(v)) => {
                        fold_column(slots, &row_slots, times, v, valid)
                    }
                    (FieldSlots::Integer(slots), ColumnData::Integer(v)) => {
                        fold_column(slots, &row_slots, times, v, valid)
                    }
                    (FieldSlots::Unsigned(slots), ColumnData::Unsigned(v)) => {
                        fold_column(slots, &row_slots, times, v, valid)
                    }
                    (
                        FieldSlots::Counted(slots),
                        ColumnData::String(_) | ColumnData::Boolean(_),
                    ) => {
                        for (row, &slot) in row_slots.iter().enumerate() {
                            if slot < HOLD && valid[row] {
                                slots[slot as usize] += 1;
                            }
                        }
                    }
                    // Another type than the field's first: impossible
                    // behind the catalog; ignored like the store does.
                    _ => {}
                }
            }
            if holding {
                self.hold_rows(chunk, &row_slots, &local, order)?;
            }
            self.row_slots = row_slots;
        }
        Ok(())
    }

    fn hold_rows(
        &mut self,
        chunk: &super::Chunk,
        row_slots: &[u32],
        local: &[Option<u32>],
        order: u32,
    ) -> Result<(), ScanError> {
        let columns: Vec<Option<&Column>> = self
            .request
            .fields
            .iter()
            .map(|f| chunk.column(f))
            .collect();
        for (row, &slot) in row_slots.iter().enumerate() {
            if slot != HOLD {
                continue;
            }
            let values: Vec<Option<Held>> = columns
                .iter()
                .map(|c| c.and_then(|c| held_value(c, row)))
                .collect();
            if values.iter().all(Option::is_none) {
                continue;
            }
            if self.held.len() >= self.request.row_limit {
                return Err(ScanError::TooManyRows {
                    limit: self.request.row_limit,
                });
            }
            let series = local[chunk.series[row] as usize].expect("held rows pass the filter");
            self.held.push(HeldRow {
                series,
                time: chunk.times[row],
                order,
                values,
            });
        }
        Ok(())
    }

    /// The groups' buckets, or the series to hold in another attempt.
    pub fn finish(mut self) -> Result<Finished, ScanError> {
        let disordered: Vec<Tags> = self
            .series
            .iter()
            .zip(&self.series_tags)
            .filter(|(s, _)| s.disordered)
            .map(|(_, tags)| tags.clone())
            .collect();
        if !disordered.is_empty() {
            return Ok(Finished::Again(disordered));
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

    /// Deduplicates the held rows (same series and time: the later chunk's
    /// non-null values win) and folds them in time order.
    fn fold_held(&mut self) -> Result<(), ScanError> {
        let mut held = std::mem::take(&mut self.held);
        held.sort_unstable_by_key(|r| (r.series, r.time, r.order));
        let mut i = 0;
        while i < held.len() {
            let (series, time) = (held[i].series, held[i].time);
            let mut merged = std::mem::take(&mut held[i].values);
            let mut j = i + 1;
            while j < held.len() && held[j].series == series && held[j].time == time {
                for (m, v) in merged.iter_mut().zip(&held[j].values) {
                    if v.is_some() {
                        *m = *v;
                    }
                }
                j += 1;
            }
            i = j;
            let group = self.series[series as usize].group;
            let slot = self.slot(group, time)? as usize;
            for (field, value) in self.fields.iter_mut().zip(merged) {
                match (field, value) {
                    (FieldSlots::Float(s), Some(Held::Float(v))) => {
                        add_value(&mut s[slot], time, v)
                    }
                    (FieldSlots::Integer(s), Some(Held::Integer(v))) => {
                        add_value(&mut s[slot], time, v)
                    }
                    (FieldSlots::Unsigned(s), Some(Held::Unsigned(v))) => {
                        add_value(&mut s[slot], time, v)
                    }
                    (FieldSlots::Counted(s), Some(Held::Present)) => s[slot] += 1,
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// Aggregates `tables` (one measurement's sources, oldest first) as one
/// store: feeds them again with the out-of-order series held until the
/// answer is exact (each attempt holds at least one more series).
pub(super) fn aggregate(
    tables: &[&Table],
    request: &AggregateRequest,
) -> Result<Vec<GroupAggregates>, ScanError> {
    let mut held = HashSet::new();
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
