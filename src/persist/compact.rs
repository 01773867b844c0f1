//! Compaction of a shard's small Parquet files (the rule, its order and
//! its crash table are in [`crate::persist`]): which files to merge, and
//! the merge itself (blocking: runs on a thread of its own).

use std::collections::BTreeMap;

use super::layout::SnapshotId;
use super::manifest::FileEntry;
use super::parquet::{self, LoadRequest, ParquetError, WrittenFile};
use crate::store::Table;

/// When files are merged.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Merge a run of at least this many small files (0: never).
    pub files_min: usize,
    /// Rows of a merged file at most; a file of half as many rows or more
    /// is not small.
    pub rows_max: u64,
}

/// The oldest run of small files worth merging among `files` (a shard's
/// list, any order): files of `shard` written under `shard_count`, of one
/// partition, consecutive in age among that partition's files, oldest
/// first. `None` when no partition has such a run.
pub fn pick(
    files: &[FileEntry],
    shard: u32,
    shard_count: u32,
    policy: Policy,
) -> Option<Vec<FileEntry>> {
    if policy.files_min < 2 {
        return None;
    }
    let mut partitions: BTreeMap<&str, Vec<&FileEntry>> = BTreeMap::new();
    for file in files
        .iter()
        .filter(|f| f.shard == shard && f.shard_count == shard_count)
    {
        partitions.entry(file.partition()).or_default().push(file);
    }
    let mut best: Option<Vec<FileEntry>> = None;
    for mut list in partitions.into_values() {
        list.sort_by_key(|f| f.age());
        let mut run: Vec<&FileEntry> = Vec::new();
        let mut rows = 0u64;
        let mut found: Option<Vec<&FileEntry>> = None;
        for file in list {
            let small = file.rows < policy.rows_max / 2;
            if small && rows + file.rows <= policy.rows_max {
                run.push(file);
                rows += file.rows;
                continue;
            }
            if run.len() >= policy.files_min {
                found = Some(std::mem::take(&mut run));
                break;
            }
            run.clear();
            rows = 0;
            if small {
                run.push(file);
                rows = file.rows;
            }
        }
        let found = found.or_else(|| (run.len() >= policy.files_min).then_some(run));
        if let Some(found) = found {
            // The partition whose run starts oldest goes first.
            let older = best.as_ref().is_none_or(|b| found[0].age() < b[0].age());
            if older {
                best = Some(found.into_iter().cloned().collect());
            }
        }
    }
    best
}

/// The name of the file that replaces `inputs` (oldest first): the newest
/// input's, one compaction later — its place in age order.
pub fn merged_id(inputs: &[FileEntry]) -> Option<SnapshotId> {
    let newest = inputs.last()?;
    let name = newest.path.rsplit('/').next()?;
    let id = SnapshotId::parse(name)?;
    Some(SnapshotId {
        compaction: id.compaction + 1,
        ..id
    })
}

/// Reads `inputs` (one partition, oldest first) and writes them as one
/// file under `root`, durably, leaving out rows older than `cutoff_ns`.
/// `None` when no row is left (every input expired).
pub fn merge(
    source: &super::source::Source,
    inputs: &[FileEntry],
    id: SnapshotId,
    cutoff_ns: Option<i64>,
) -> Result<Option<WrittenFile>, ParquetError> {
    let Some(first) = inputs.first() else {
        return Ok(None);
    };
    let everything = LoadRequest {
        fields: None,
        time_min_ns: i64::MIN,
        time_max_ns: i64::MAX,
        owner: None,
    };
    let tables = inputs
        .iter()
        .map(|f| parquet::load_table(source, &f.path, &everything))
        .collect::<Result<Vec<Table>, _>>()?;
    let merged = Table::merged(tables);
    let mut written = parquet::write_table(
        source.root(),
        id,
        &first.database,
        &first.table,
        &merged,
        cutoff_ns,
    )?;
    // One partition in, one file out (a day's rows stay in their day).
    debug_assert!(written.len() <= 1, "one partition makes one file");
    Ok(written.pop())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, partition: &str, rows: u64) -> FileEntry {
        let id = SnapshotId::parse(name).expect("a file name");
        FileEntry {
            path: format!("{partition}/{name}"),
            database: "db".into(),
            table: "t".into(),
            shard: id.shard,
            shard_count: 2,
            generation: id.generation,
            sequence: id.sequence,
            rows,
            bytes: rows,
            time_min_ns: 0,
            time_max_ns: 0,
        }
    }

    fn name(sequence: u64, shard: u32) -> String {
        format!("{:020}-{sequence:020}-s{shard:03}.parquet", 1)
    }

    /// Goal: the run picked is of one shard, one partition, consecutive in
    /// age, small files only, within the row bound; nothing when no run is
    /// long enough. Method: hand-made lists.
    #[test]
    fn picks_a_consecutive_run_of_small_files() {
        let policy = Policy {
            files_min: 3,
            rows_max: 100,
        };
        let p = "db=db/table=t/date=2026-12-04";
        let q = "db=db/table=t/date=2026-12-03";
        // Newest first on purpose: the order of the list does not matter.
        let files = vec![
            file(&name(9, 0), p, 10),
            file(&name(8, 0), p, 10),
            file(&name(7, 0), p, 10),
            file(&name(6, 0), p, 60), // big: breaks the run
            file(&name(5, 0), p, 10),
            file(&name(4, 0), p, 10),
            file(&name(3, 1), p, 10), // another shard's
            file(&name(2, 0), q, 10), // another day's
        ];
        let run = pick(&files, 0, 2, policy).expect("a run");
        let sequences: Vec<u64> = run.iter().map(|f| f.sequence).collect();
        assert_eq!(sequences, [7, 8, 9]);
        assert_eq!(
            merged_id(&run).map(|id| (id.sequence, id.compaction)),
            Some((9, 1))
        );
        // The row bound ends a run: 45 + 45 > 80.
        let bounded = Policy {
            files_min: 2,
            rows_max: 80,
        };
        let files = vec![
            file(&name(1, 0), p, 35),
            file(&name(2, 0), p, 35),
            file(&name(3, 0), p, 35),
        ];
        let run = pick(&files, 0, 2, bounded).expect("a run");
        assert_eq!(run.len(), 2);
        assert!(pick(&files[..1], 0, 2, bounded).is_none());
        assert!(pick(&files, 0, 1, bounded).is_none(), "another shard count");
        let off = Policy {
            files_min: 0,
            rows_max: 80,
        };
        assert!(pick(&files, 0, 2, off).is_none());
    }
}
