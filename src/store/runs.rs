//! A chunk's rows as series runs: grouped by series, each group in time
//! order. Scans read runs instead of rows: a tag filter is decided once per
//! run, a time range is two binary searches, a `GROUP BY time` bucket is a
//! contiguous stretch of a run, and an aggregate of a whole run can be read
//! from its per-run summary ([`super::aggregate`]).
//!
//! A chunk loaded from a Parquet file is already in (series, time) order
//! (the file's sort order): its runs are found in one pass and its rows are
//! read in place. A chunk of live rows is in arrival order: a counting sort
//! by series id (stable, one pass) and a time sort of each series' rows that
//! are not in order already give the positions of its runs.
//!
//! A sealed chunk never changes, so its runs are computed once, on the first
//! scan that reads it, and kept with it ([`super::Chunk::cached_runs`]); the
//! active chunk's are computed for each scan (at most `chunk_rows` rows).

use std::ops::Range;

/// The rows of one series in one chunk, in time order: positions
/// `start..end` of [`SeriesRuns`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Run {
    /// The table's series id.
    pub(crate) series: u32,
    pub(crate) start: u32,
    pub(crate) end: u32,
}

/// A chunk's runs and the row at each position.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SeriesRuns {
    /// Position → row; `None` when the rows are already in run order
    /// (position = row).
    order: Option<Box<[u32]>>,
    pub(crate) runs: Vec<Run>,
    /// A (series, time) appears twice in the chunk. The store never makes
    /// such a chunk (see its invariants); a run with repeats is read as a
    /// series out of order, so the scan's deduplication still applies.
    pub(crate) repeats: bool,
}

impl SeriesRuns {
    /// The runs of a chunk with these series ids and times (one entry per
    /// row).
    pub(crate) fn build(series: &[u32], times: &[i64]) -> SeriesRuns {
        debug_assert_eq!(series.len(), times.len());
        if let Some(runs) = in_run_order(series, times) {
            return SeriesRuns {
                order: None,
                runs,
                repeats: false,
            };
        }
        // Counting sort by series id (stable: arrival order within a series).
        let ids = series
            .iter()
            .copied()
            .max()
            .map_or(0, |max| max as usize + 1);
        let mut starts = vec![0u32; ids + 1];
        for &id in series {
            starts[id as usize + 1] += 1;
        }
        for id in 0..ids {
            starts[id + 1] += starts[id];
        }
        let mut next = starts.clone();
        let mut order = vec![0u32; series.len()].into_boxed_slice();
        for (row, &id) in series.iter().enumerate() {
            let slot = &mut next[id as usize];
            order[*slot as usize] = row as u32;
            *slot += 1;
        }
        let mut runs = Vec::new();
        let mut repeats = false;
        for id in 0..ids {
            let (start, end) = (starts[id], starts[id + 1]);
            if start == end {
                continue;
            }
            let rows = &mut order[start as usize..end as usize];
            let increasing = rows
                .windows(2)
                .all(|pair| times[pair[0] as usize] < times[pair[1] as usize]);
            if !increasing {
                // Stable: equal times (repeats) keep arrival order.
                rows.sort_by_key(|&row| times[row as usize]);
                repeats |= rows
                    .windows(2)
                    .any(|pair| times[pair[0] as usize] == times[pair[1] as usize]);
            }
            runs.push(Run {
                series: id as u32,
                start,
                end,
            });
        }
        SeriesRuns {
            order: Some(order),
            runs,
            repeats,
        }
    }

    /// The row at `position`.
    #[inline]
    pub(crate) fn row(&self, position: usize) -> usize {
        match &self.order {
            None => position,
            Some(order) => order[position] as usize,
        }
    }

    /// The rows at positions `range`, in order.
    #[inline]
    pub(crate) fn rows(&self, range: Range<usize>) -> Rows<'_> {
        match &self.order {
            None => Rows::InPlace(range),
            Some(order) => Rows::Ordered(&order[range]),
        }
    }

    /// The positions of `run` whose time is within `[min, max]`.
    pub(crate) fn clip(&self, run: &Run, times: &[i64], min: i64, max: i64) -> Range<usize> {
        let (start, end) = (run.start as usize, run.end as usize);
        let time = |position: usize| times[self.row(position)];
        if time(start) >= min && time(end - 1) <= max {
            return start..end;
        }
        let low = start + partition(start..end, |p| time(p) < min);
        let high = low + partition(low..end, |p| time(p) <= max);
        low..high
    }

    /// The first position of `range` whose time is at or after `end_ns`
    /// (`range.end` if none): the end of a time bucket. Steps a few rows
    /// before searching, as buckets are often a row or two long.
    #[inline]
    pub(crate) fn bucket_end(&self, range: Range<usize>, times: &[i64], end_ns: i64) -> usize {
        let time = |position: usize| times[self.row(position)];
        let mut position = range.start;
        let stop = range.end.min(range.start + 4);
        while position < stop {
            if time(position) >= end_ns {
                return position;
            }
            position += 1;
        }
        if position == range.end || time(range.end - 1) < end_ns {
            return range.end;
        }
        position + partition(position..range.end, |p| time(p) < end_ns)
    }
}

/// The rows at some positions: a range read in place, or through the
/// order.
pub(crate) enum Rows<'a> {
    InPlace(Range<usize>),
    Ordered(&'a [u32]),
}

impl Rows<'_> {
    /// Calls `f` with each row, in order: one loop per kind, so that the
    /// in-place one is a plain loop over a range.
    #[inline]
    pub(crate) fn each(self, mut f: impl FnMut(usize)) {
        match self {
            Rows::InPlace(range) => range.for_each(f),
            Rows::Ordered(rows) => rows.iter().for_each(|&row| f(row as usize)),
        }
    }
}

/// The number of leading positions of `range` for which `below` holds
/// (`below` is true then false along the range).
fn partition(range: Range<usize>, below: impl Fn(usize) -> bool) -> usize {
    let (mut low, mut high) = (range.start, range.end);
    while low < high {
        let middle = low + (high - low) / 2;
        if below(middle) {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    low - range.start
}

/// The runs when every series' rows are contiguous and in strictly
/// increasing time order already (a chunk loaded from a file); `None`
/// otherwise.
fn in_run_order(series: &[u32], times: &[i64]) -> Option<Vec<Run>> {
    let mut runs: Vec<Run> = Vec::new();
    let mut seen: Vec<bool> = Vec::new();
    let mut start = 0usize;
    for row in 0..series.len() {
        let new_run = row == 0 || series[row] != series[row - 1];
        if !new_run {
            if times[row] <= times[row - 1] {
                return None;
            }
            continue;
        }
        let id = series[row] as usize;
        if id >= seen.len() {
            seen.resize(id + 1, false);
        }
        if std::mem::replace(&mut seen[id], true) {
            // The series came back after another one.
            return None;
        }
        if row > 0 {
            runs.push(Run {
                series: series[start],
                start: start as u32,
                end: row as u32,
            });
        }
        start = row;
    }
    if !series.is_empty() {
        runs.push(Run {
            series: series[start],
            start: start as u32,
            end: series.len() as u32,
        });
    }
    Some(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn positions(runs: &SeriesRuns, run: &Run) -> Vec<usize> {
        let mut rows = Vec::new();
        runs.rows(run.start as usize..run.end as usize)
            .each(|row| rows.push(row));
        rows
    }

    #[test]
    fn rows_in_file_order_are_read_in_place() {
        let series = [0, 0, 0, 1, 1, 2];
        let times = [1, 2, 3, 1, 5, 9];
        let runs = SeriesRuns::build(&series, &times);
        assert_eq!(
            runs.order, None,
            "no order kept for rows already in run order"
        );
        assert_eq!(
            runs.runs,
            vec![
                Run {
                    series: 0,
                    start: 0,
                    end: 3
                },
                Run {
                    series: 1,
                    start: 3,
                    end: 5
                },
                Run {
                    series: 2,
                    start: 5,
                    end: 6
                },
            ]
        );
        assert!(!runs.repeats);
    }

    #[test]
    fn rows_in_arrival_order_are_grouped_by_series_and_sorted_by_time() {
        // Two writers interleaved, one of them behind in time.
        let series = [1, 0, 1, 0, 1, 0];
        let times = [50, 10, 20, 30, 60, 20];
        let runs = SeriesRuns::build(&series, &times);
        assert_eq!(runs.runs.len(), 2);
        let rows0 = positions(&runs, &runs.runs[0]);
        let rows1 = positions(&runs, &runs.runs[1]);
        assert_eq!((runs.runs[0].series, runs.runs[1].series), (0, 1));
        assert_eq!(
            rows0.iter().map(|&r| times[r]).collect::<Vec<_>>(),
            [10, 20, 30]
        );
        assert_eq!(
            rows1.iter().map(|&r| times[r]).collect::<Vec<_>>(),
            [20, 50, 60]
        );
        assert!(!runs.repeats);
    }

    #[test]
    fn a_series_coming_back_is_not_taken_for_run_order() {
        let series = [0, 1, 0];
        let times = [1, 1, 2];
        let runs = SeriesRuns::build(&series, &times);
        assert!(runs.order.is_some());
        assert_eq!(runs.runs.len(), 2);
        assert_eq!(positions(&runs, &runs.runs[0]), vec![0, 2]);
    }

    #[test]
    fn a_repeated_time_is_reported() {
        let runs = SeriesRuns::build(&[0, 0, 0], &[5, 1, 5]);
        assert!(runs.repeats);
        let runs = SeriesRuns::build(&[0, 0], &[5, 5]);
        assert!(runs.repeats, "repeats in place are found too");
    }

    #[test]
    fn clip_and_bucket_end_find_time_bounds() {
        let series = [3; 8];
        let times = [10, 20, 30, 40, 50, 60, 70, 80];
        let runs = SeriesRuns::build(&series, &times);
        let run = runs.runs[0];
        assert_eq!(runs.clip(&run, &times, 0, 100), 0..8);
        assert_eq!(runs.clip(&run, &times, 25, 60), 2..6);
        assert_eq!(runs.clip(&run, &times, 81, 100), 8..8);
        assert_eq!(runs.clip(&run, &times, 0, 9), 0..0);
        assert_eq!(runs.bucket_end(0..8, &times, 15), 1);
        assert_eq!(
            runs.bucket_end(0..8, &times, 75),
            7,
            "past the first steps: searched"
        );
        assert_eq!(runs.bucket_end(2..8, &times, 1000), 8);
        assert_eq!(runs.bucket_end(5..8, &times, 10), 5);
    }
}
