//! The persisted catalog (`parquet/_catalog.json`): what exists in
//! Parquet and how far each WAL is persisted. Pure state and rules, plus
//! the blocking load / atomic store used on blocking threads and at start.
//!
//! # Schema (JSON, version 1)
//!
//! ```text
//! {
//!   "format": "ringest-catalog",          constant
//!   "version": 1,                          refused if not 1
//!   "written_ns": 1733280000000000000,     when this version was written
//!   "databases": [                         copy of the catalog, for readers
//!     { "name": "db", "retention_ns": 259200000000000 | null (forever),
//!       "tables": [ { "name": "cpu",
//!                     "columns": [ { "name": "host", "kind": "tag" },
//!                                  { "name": "usage", "kind": "float" } ] } ] } ],
//!   "files": [                             every Parquet file; each exists
//!     { "path": "db=db/table=cpu/date=2024-12-04/….parquet",   relative to parquet/
//!       "database": "db", "table": "cpu", "shard": 0, "shard_count": 2,
//!       "generation": 7, "sequence": 1234,  the snapshot that wrote it
//!       "rows": 1000, "bytes": 52000,
//!       "time_min_ns": …, "time_max_ns": … } ],
//!   "wal": {
//!     "floor_generation": 7,               records of older generations are persisted
//!     "runs": [ { "generation": 8, "shard_count": 2, "persisted": [0] } ],
//!     "positions": [ { "shard": 0, "generation": 8, "sequence": 1234 } ]
//!   },
//!   "node": { "id": "ingest-1", "token": "5f0c…(32 hex)" }   only with an object store
//! }
//! ```
//!
//! `kind` is `tag`, `float`, `integer`, `unsigned`, `string` or `boolean`.
//! The replay rule these encode is in [`crate::persist`] and
//! [`WalState`].

// Blocking threads and start-up only: std::fs is the right tool here.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::faults::Step;
use super::layout::{MANIFEST_FILE, TMP_SUFFIX};
use super::parquet::sync_dir;

pub const FORMAT: &str = "ringest-catalog";
pub const VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub written_ns: i64,
    pub databases: Vec<DatabaseEntry>,
    pub files: Vec<FileEntry>,
    pub wal: WalState,
    /// With an object store: the node this data directory writes as
    /// ([`crate::remote`]). Absent without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    /// `object_store.node_id`: files go under `node=<id>/` in the bucket.
    pub id: String,
    /// Drawn once per data directory: a node manifest in the bucket with
    /// another token belongs to another data directory.
    pub token: String,
}

impl Default for Manifest {
    fn default() -> Self {
        Manifest {
            format: FORMAT.to_string(),
            version: VERSION,
            written_ns: 0,
            databases: Vec::new(),
            files: Vec::new(),
            wal: WalState::default(),
            node: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseEntry {
    pub name: String,
    /// `None`: kept forever.
    pub retention_ns: Option<u64>,
    pub tables: Vec<TableEntry>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableEntry {
    pub name: String,
    pub columns: Vec<ColumnEntry>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnEntry {
    pub name: String,
    pub kind: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Relative to the Parquet directory, `/`-separated.
    pub path: String,
    pub database: String,
    pub table: String,
    pub shard: u32,
    /// The shard count of the run that wrote it: under another count its
    /// series belong to other shards.
    pub shard_count: u32,
    pub generation: u64,
    pub sequence: u64,
    pub rows: u64,
    pub bytes: u64,
    pub time_min_ns: i64,
    pub time_max_ns: i64,
}

impl FileEntry {
    /// Its age among its shard's files, from its name
    /// ([`super::layout::SnapshotId::parse`]).
    pub fn age(&self) -> super::layout::FileAge {
        let name = self.path.rsplit('/').next().unwrap_or_default();
        super::layout::SnapshotId::parse(name)
            .map_or((self.generation, self.sequence, 0, 0), |id| id.age())
    }

    /// The partition it belongs to: database, table and UTC day (its
    /// directory).
    pub fn partition(&self) -> &str {
        self.path.rsplit_once('/').map_or("", |(dir, _)| dir)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalState {
    /// Every WAL record of a generation below this is persisted.
    pub floor_generation: u64,
    /// Runs at or above the floor in which some shards persisted everything
    /// they replayed at start.
    pub runs: Vec<Run>,
    /// Per WAL directory (shard number): persisted through this sequence of
    /// this generation.
    pub positions: Vec<Position>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Run {
    pub generation: u64,
    pub shard_count: u32,
    /// Shards of this run whose first snapshot (everything they replayed
    /// from older generations) is persisted.
    pub persisted: Vec<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Position {
    pub shard: u32,
    pub generation: u64,
    pub sequence: u64,
}

impl WalState {
    /// Is every row of this WAL record persisted (skip it at replay)?
    /// `shard` is the record's directory as a shard number.
    pub fn record_persisted(&self, generation: u64, shard: Option<u32>, sequence: u64) -> bool {
        if generation < self.floor_generation {
            return true;
        }
        shard.is_some_and(|shard| {
            self.positions
                .iter()
                .any(|p| p.shard == shard && p.generation == generation && p.sequence >= sequence)
        })
    }

    /// Is this row of a record of `generation` persisted by a later run's
    /// first snapshot (the row's owner in that run persisted all it
    /// replayed)?
    pub fn row_persisted(&self, generation: u64, series_hash: u64) -> bool {
        self.runs.iter().any(|run| {
            run.generation > generation && {
                let owner = crate::route::owner(series_hash, run.shard_count as usize) as u32;
                run.persisted.contains(&owner)
            }
        })
    }

    /// Could any row of generation `generation` be skipped row by row?
    pub fn has_runs_after(&self, generation: u64) -> bool {
        self.runs.iter().any(|run| run.generation > generation)
    }
}

/// What one shard asks the owner to record after writing its files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Commit {
    pub shard: u32,
    pub shard_count: u32,
    /// This run's WAL generation.
    pub generation: u64,
    pub added: Vec<FileEntry>,
    /// Paths of files to forget (expired; or merged, see `compaction`);
    /// deleted after the commit.
    pub removed: Vec<String>,
    /// A compaction: `added` replaces `removed`, which must all be named
    /// (else the commit is refused), and which the compacting shard deletes
    /// itself once its scans use `added`.
    pub compaction: bool,
    /// The shard's own WAL is persisted through this sequence of
    /// `generation`.
    pub position: Option<u64>,
    /// This commit holds everything the shard replayed at start.
    pub covers_replay: bool,
    /// The shard's last snapshot before shutdown (the owner waits for the
    /// other shards' before it stops).
    pub before_shutdown: bool,
}

/// What changed beyond the commit itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitOutcome {
    /// Every shard of the run persisted what it replayed: generations below
    /// this one are entirely persisted and their segments may go.
    pub floor_raised_to: Option<u64>,
    /// The floor after the commit: segments of older generations may go.
    pub floor_generation: u64,
    /// The version of the manifest that holds the commit (set by the
    /// catalog owner; an object store confirms versions, [`crate::remote`]).
    pub version: u64,
}

impl Manifest {
    /// Applies a commit to this (owner's) state.
    pub fn apply(&mut self, commit: &Commit) -> CommitOutcome {
        let removed: BTreeSet<&str> = commit.removed.iter().map(String::as_str).collect();
        self.files.retain(|f| !removed.contains(f.path.as_str()));
        self.files.extend(commit.added.iter().cloned());
        if let Some(sequence) = commit.position {
            let position = Position {
                shard: commit.shard,
                generation: commit.generation,
                sequence,
            };
            match self
                .wal
                .positions
                .iter_mut()
                .find(|p| p.shard == commit.shard)
            {
                Some(existing) => {
                    if (existing.generation, existing.sequence) < (position.generation, sequence) {
                        *existing = position;
                    }
                }
                None => self.wal.positions.push(position),
            }
            self.wal.positions.sort_by_key(|p| p.shard);
        }
        let mut outcome = CommitOutcome::default();
        if commit.covers_replay && commit.generation > self.wal.floor_generation {
            let run = match self
                .wal
                .runs
                .iter_mut()
                .position(|r| r.generation == commit.generation)
            {
                Some(i) => &mut self.wal.runs[i],
                None => {
                    self.wal.runs.push(Run {
                        generation: commit.generation,
                        shard_count: commit.shard_count,
                        persisted: Vec::new(),
                    });
                    self.wal.runs.last_mut().expect("just pushed")
                }
            };
            if !run.persisted.contains(&commit.shard) {
                run.persisted.push(commit.shard);
                run.persisted.sort_unstable();
            }
            if run.persisted.len() as u32 >= run.shard_count {
                let floor = run.generation;
                self.wal.floor_generation = floor;
                self.wal.runs.retain(|r| r.generation > floor);
                outcome.floor_raised_to = Some(floor);
            }
        }
        outcome.floor_generation = self.wal.floor_generation;
        outcome
    }

    /// The files of one database.
    pub fn files_of<'a>(&'a self, database: &'a str) -> impl Iterator<Item = &'a FileEntry> {
        self.files.iter().filter(move |f| f.database == database)
    }
}

/// The files whose every row expired: the newest row (`time_max_ns`) is
/// older than its database's cutoff (`cutoff(database)`, `None`: kept
/// forever, see [`crate::retention::cutoff_ns`]). A file that straddles
/// the cutoff is not one of them until its newest row expires too (queries
/// clamp their time range to the cutoff meanwhile).
pub fn expired_files<'a>(
    files: &'a [FileEntry],
    cutoff: impl Fn(&str) -> Option<i64> + 'a,
) -> impl Iterator<Item = &'a FileEntry> + 'a {
    files
        .iter()
        .filter(move |f| cutoff(&f.database).is_some_and(|cutoff| f.time_max_ns < cutoff))
}

/// The catalog as the manifest copies it (databases, tables and column
/// kinds by name).
pub fn databases_of(catalog: &crate::catalog::Catalog) -> Vec<DatabaseEntry> {
    let mut databases: Vec<DatabaseEntry> = catalog
        .databases
        .iter()
        .map(|(name, database)| {
            let mut tables: Vec<TableEntry> = database
                .tables
                .iter()
                .map(|(name, table)| {
                    let mut columns: Vec<ColumnEntry> = table
                        .columns
                        .iter()
                        .map(|(name, kind)| ColumnEntry {
                            name: name.clone(),
                            kind: kind.describe().to_string(),
                        })
                        .collect();
                    columns.sort_by(|a, b| a.name.cmp(&b.name));
                    TableEntry {
                        name: name.clone(),
                        columns,
                    }
                })
                .collect();
            tables.sort_by(|a, b| a.name.cmp(&b.name));
            DatabaseEntry {
                name: name.clone(),
                retention_ns: (!database.retention.is_forever())
                    .then(|| database.retention.as_ns() as u64),
                tables,
            }
        })
        .collect();
    databases.sort_by(|a, b| a.name.cmp(&b.name));
    databases
}

/// Deletes files the manifest no longer names (after it was stored). A
/// file already gone is not an error.
pub fn remove_files(root: &Path, paths: &[String]) -> io::Result<()> {
    for path in paths {
        match fs::remove_file(root.join(path)) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Prints the manifest for an operator (`ringest catalog`): databases,
/// per table its files, rows, bytes and time range, and the WAL positions.
pub fn describe(manifest: &Manifest, out: &mut impl Write) -> io::Result<()> {
    let time = |ns: i64| crate::clock::rfc3339_nanos(ns);
    writeln!(
        out,
        "persisted catalog: {} files, {} rows, {} bytes; written {}",
        manifest.files.len(),
        manifest.files.iter().map(|f| f.rows).sum::<u64>(),
        manifest.files.iter().map(|f| f.bytes).sum::<u64>(),
        time(manifest.written_ns)
    )?;
    for database in &manifest.databases {
        let retention = match database.retention_ns {
            Some(ns) => crate::clock::go_duration(std::time::Duration::from_nanos(ns)),
            None => "forever".to_string(),
        };
        writeln!(out, "database {:?} (retention {retention})", database.name)?;
        for table in &database.tables {
            let files: Vec<&FileEntry> = manifest
                .files_of(&database.name)
                .filter(|f| f.table == table.name)
                .collect();
            let columns: Vec<String> = table
                .columns
                .iter()
                .map(|c| format!("{}:{}", c.name, c.kind))
                .collect();
            write!(
                out,
                "  table {:?}: {} files, {} rows, {} bytes",
                table.name,
                files.len(),
                files.iter().map(|f| f.rows).sum::<u64>(),
                files.iter().map(|f| f.bytes).sum::<u64>()
            )?;
            if let (Some(min), Some(max)) = (
                files.iter().map(|f| f.time_min_ns).min(),
                files.iter().map(|f| f.time_max_ns).max(),
            ) {
                write!(out, ", time {}..={}", time(min), time(max))?;
            }
            writeln!(out, "\n    columns {}", columns.join(" "))?;
        }
    }
    if let Some(node) = &manifest.node {
        writeln!(
            out,
            "object store: this data directory writes as node {:?} (node=<id>/ in the bucket)",
            node.id
        )?;
    }
    writeln!(
        out,
        "WAL: generations below {} persisted",
        manifest.wal.floor_generation
    )?;
    for position in &manifest.wal.positions {
        writeln!(
            out,
            "  shard {}: generation {} persisted through sequence {}",
            position.shard, position.generation, position.sequence
        )?;
    }
    for run in &manifest.wal.runs {
        writeln!(
            out,
            "  run {} ({} shards): replay persisted by shards {:?}",
            run.generation, run.shard_count, run.persisted
        )?;
    }
    Ok(())
}

/// Why the manifest could not be read.
#[derive(Debug)]
pub enum ManifestError {
    Io {
        path: PathBuf,
        error: io::Error,
    },
    Parse {
        path: PathBuf,
        error: String,
    },
    Version {
        path: PathBuf,
        found: String,
    },
    /// Well-formed JSON that breaks a rule readers rely on.
    Invalid {
        path: PathBuf,
        rule: InvalidManifest,
    },
    /// No manifest, but Parquet files exist: the WAL may be truncated behind
    /// them, so starting empty could lose or duplicate data.
    Missing {
        path: PathBuf,
        parquet_files: usize,
    },
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManifestError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            ManifestError::Parse { path, error } => write!(
                f,
                "{}: the persisted catalog is corrupt ({error}); restore it from a backup \
                 (the Parquet files it names are intact)",
                path.display()
            ),
            ManifestError::Version { path, found } => write!(
                f,
                "{}: persisted catalog format {found}, this build reads {FORMAT} version {VERSION}",
                path.display()
            ),
            ManifestError::Invalid { path, rule } => write!(
                f,
                "{}: the persisted catalog is corrupt ({rule}); restore it from a backup",
                path.display()
            ),
            ManifestError::Missing {
                path,
                parquet_files,
            } => write!(
                f,
                "{} is missing but {parquet_files} Parquet files exist beside it: the WAL \
                 may already be truncated behind them, so starting without it could lose or \
                 duplicate data; restore the file, or move the parquet directory away to \
                 start over",
                path.display()
            ),
        }
    }
}

impl std::error::Error for ManifestError {}

/// A rule of the manifest that [`parse`] checks beyond the JSON schema,
/// because start-up and the catalog owner rely on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InvalidManifest {
    /// A run with `shard_count` 0: the replay rule routes rows among the
    /// run's shards ([`WalState::row_persisted`]), and there are none.
    RunWithoutShards { generation: u64 },
    /// A file path that is not a relative path of plain names ending in
    /// `.parquet`: files are opened, and deleted (expiry, `DROP DATABASE`),
    /// at `parquet/` + this path, which must not leave that directory.
    FilePath { path: String },
}

impl fmt::Display for InvalidManifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidManifest::RunWithoutShards { generation } => {
                write!(f, "run of generation {generation} has shard_count 0")
            }
            InvalidManifest::FilePath { path } => write!(
                f,
                "file path {path:?} is not a relative path of plain names ending in .parquet"
            ),
        }
    }
}

impl Manifest {
    /// The first broken rule, if any (see [`InvalidManifest`]).
    pub fn check(&self) -> Result<(), InvalidManifest> {
        if let Some(run) = self.wal.runs.iter().find(|run| run.shard_count == 0) {
            return Err(InvalidManifest::RunWithoutShards {
                generation: run.generation,
            });
        }
        let plain = |path: &str| {
            path.ends_with(".parquet")
                && Path::new(path)
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)))
        };
        if let Some(file) = self.files.iter().find(|file| !plain(&file.path)) {
            return Err(InvalidManifest::FilePath {
                path: file.path.clone(),
            });
        }
        Ok(())
    }
}

/// Reads `<root>/_catalog.json`; a missing file is an empty manifest when
/// no Parquet file exists under `root`.
pub fn load(root: &Path) -> Result<Manifest, ManifestError> {
    let path = root.join(MANIFEST_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            let parquet_files = parquet_files(root)
                .map_err(|error| ManifestError::Io {
                    path: root.to_path_buf(),
                    error,
                })?
                .len();
            if parquet_files > 0 {
                return Err(ManifestError::Missing {
                    path,
                    parquet_files,
                });
            }
            return Ok(Manifest::default());
        }
        Err(error) => return Err(ManifestError::Io { path, error }),
    };
    parse(&path, &bytes)
}

/// Reads a manifest from the bytes of `_catalog.json` (`path` only names
/// the file in errors): the JSON, the format and version, then the rules
/// of [`Manifest::check`]. This is [`load`] after the file is read; public
/// so that the `manifest` fuzz target (`tests/fuzz`) can feed it arbitrary
/// bytes without a file.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Manifest, ManifestError> {
    let manifest: Manifest =
        serde_json::from_slice(bytes).map_err(|error| ManifestError::Parse {
            path: path.to_path_buf(),
            error: error.to_string(),
        })?;
    if manifest.format != FORMAT || manifest.version != VERSION {
        return Err(ManifestError::Version {
            path: path.to_path_buf(),
            found: format!("{} version {}", manifest.format, manifest.version),
        });
    }
    manifest.check().map_err(|rule| ManifestError::Invalid {
        path: path.to_path_buf(),
        rule,
    })?;
    Ok(manifest)
}

/// Writes the manifest atomically: `_catalog.json.tmp`, `fsync`, rename,
/// `fsync` of the directory.
pub fn store(root: &Path, manifest: &Manifest) -> io::Result<()> {
    super::parquet::create_dirs_durably(root)?;
    let path = root.join(MANIFEST_FILE);
    let tmp = root.join(format!("{MANIFEST_FILE}{TMP_SUFFIX}"));
    let bytes = to_bytes(manifest)?;
    let mut file = File::create(&tmp)?;
    super::faults::check(Step::ManifestWrite)?;
    file.write_all(&bytes)?;
    super::faults::check(Step::ManifestSync)?;
    file.sync_all()?;
    drop(file);
    super::faults::check(Step::ManifestRename)?;
    fs::rename(&tmp, &path)?;
    super::faults::check(Step::ManifestDirSync)?;
    sync_dir(root)
}

/// The manifest's JSON text (as stored, and as uploaded: [`crate::remote`]).
pub fn to_bytes(manifest: &Manifest) -> io::Result<Vec<u8>> {
    serde_json::to_vec_pretty(manifest).map_err(io::Error::other)
}

/// Every `*.parquet` file under `root`, relative, `/`-separated.
pub fn parquet_files(root: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    walk(root, root, &mut |relative, _| {
        if relative.ends_with(".parquet") {
            out.push(relative.to_string());
        }
    })?;
    Ok(out)
}

fn walk(root: &Path, dir: &Path, f: &mut impl FnMut(&str, &Path)) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            walk(root, &path, f)?;
        } else if let Ok(relative) = path.strip_prefix(root) {
            let relative = relative.to_string_lossy().replace('\\', "/");
            f(&relative, &path);
        }
    }
    Ok(())
}

/// What start-up found and did under the Parquet directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanReport {
    /// Unfinished files (`*.tmp`) removed.
    pub tmp_removed: usize,
    /// Parquet files the manifest does not name (a snapshot that crashed
    /// before its commit; its rows are still in the WAL), removed.
    pub orphans_removed: usize,
    /// Files the manifest names that do not exist.
    pub missing: Vec<String>,
}

/// Start-up clean-up (crash table in [`crate::persist`]).
pub fn clean(root: &Path, manifest: &Manifest) -> io::Result<CleanReport> {
    let named: BTreeSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    let mut report = CleanReport::default();
    let mut remove = Vec::new();
    walk(root, root, &mut |relative, path| {
        if relative.ends_with(TMP_SUFFIX) {
            report.tmp_removed += 1;
            remove.push(path.to_path_buf());
        } else if relative.ends_with(".parquet") && !named.contains(relative) {
            report.orphans_removed += 1;
            remove.push(path.to_path_buf());
        }
    })?;
    for path in remove {
        fs::remove_file(&path)?;
    }
    report.missing = manifest
        .files
        .iter()
        .filter(|f| !root.join(&f.path).is_file())
        .map(|f| f.path.clone())
        .collect();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, shard: u32) -> FileEntry {
        FileEntry {
            path: path.into(),
            database: "db".into(),
            table: "cpu".into(),
            shard,
            shard_count: 2,
            generation: 2,
            sequence: 10,
            rows: 5,
            bytes: 100,
            time_min_ns: 0,
            time_max_ns: 1,
        }
    }

    /// Goal: a commit records files and the position; a later commit never
    /// moves a position back; removed files are forgotten. Method: apply
    /// commits in order and out of order.
    #[test]
    fn commits_record_files_and_positions() {
        let mut manifest = Manifest::default();
        manifest.apply(&Commit {
            shard: 1,
            shard_count: 2,
            generation: 2,
            added: vec![file("a.parquet", 1)],
            position: Some(10),
            ..Commit::default()
        });
        manifest.apply(&Commit {
            shard: 1,
            shard_count: 2,
            generation: 2,
            added: vec![file("b.parquet", 1)],
            removed: vec!["a.parquet".into()],
            compaction: false,
            position: Some(7),
            ..Commit::default()
        });
        assert_eq!(manifest.files, vec![file("b.parquet", 1)]);
        assert_eq!(
            manifest.wal.positions,
            vec![Position {
                shard: 1,
                generation: 2,
                sequence: 10
            }]
        );
        assert!(manifest.wal.record_persisted(2, Some(1), 10));
        assert!(!manifest.wal.record_persisted(2, Some(1), 11));
        assert!(!manifest.wal.record_persisted(2, Some(0), 1));
        assert!(!manifest.wal.record_persisted(3, Some(1), 1));
    }

    /// Goal: a file is expired only when its newest row is older than its
    /// database's cutoff: a file straddling the cutoff, a file of a
    /// database kept forever and one of an unknown database stay; an
    /// expiry commit removes exactly the expired files from the manifest.
    /// Method: four files, cutoffs per database; apply the commit.
    #[test]
    fn expired_files_are_those_wholly_older_than_the_cutoff() {
        let entry = |path: &str, database: &str, time_min_ns, time_max_ns| FileEntry {
            database: database.into(),
            time_min_ns,
            time_max_ns,
            ..file(path, 0)
        };
        let mut manifest = Manifest {
            files: vec![
                entry("old.parquet", "short", 10, 99),
                entry("straddles.parquet", "short", 50, 100),
                entry("forever.parquet", "long", 0, 1),
                entry("unknown.parquet", "gone", 0, 1),
            ],
            ..Manifest::default()
        };
        let cutoff = |database: &str| match database {
            "short" => Some(100),
            _ => None,
        };
        let expired: Vec<String> = expired_files(&manifest.files, cutoff)
            .map(|f| f.path.clone())
            .collect();
        assert_eq!(expired, ["old.parquet"]);
        manifest.apply(&Commit {
            removed: expired,
            compaction: false,
            ..Commit::default()
        });
        let left: Vec<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            left,
            ["straddles.parquet", "forever.parquet", "unknown.parquet"]
        );
        assert_eq!(manifest.wal, WalState::default(), "no position moved");
    }

    /// Goal: the floor rises only when every shard of a run persisted what
    /// it replayed, and until then rows of older generations are skipped by
    /// their owner in that run. Method: two shards commit one after the
    /// other; check the rule between and after.
    #[test]
    fn floor_rises_when_every_shard_persisted_its_replay() {
        let mut manifest = Manifest::default();
        let first = |shard| Commit {
            shard,
            shard_count: 2,
            generation: 5,
            covers_replay: true,
            position: Some(0),
            ..Commit::default()
        };
        assert_eq!(manifest.apply(&first(0)).floor_raised_to, None);
        // A row of generation 3 owned by shard 0 under 2 shards is persisted;
        // one owned by shard 1 is not.
        let owned_by_0 = 1u64; // owner(1, 2) = 0
        let owned_by_1 = u64::MAX; // owner(MAX, 2) = 1
        assert!(manifest.wal.row_persisted(3, owned_by_0));
        assert!(!manifest.wal.row_persisted(3, owned_by_1));
        assert!(!manifest.wal.row_persisted(5, owned_by_0));
        assert!(!manifest.wal.record_persisted(3, Some(0), 1));
        assert_eq!(manifest.apply(&first(1)).floor_raised_to, Some(5));
        assert!(manifest.wal.record_persisted(3, Some(1), 1));
        assert!(manifest.wal.runs.is_empty());
        assert!(!manifest.wal.record_persisted(5, Some(1), 1));
    }

    /// Goal: the manifest survives a store/load round trip and a missing
    /// manifest beside Parquet files is refused, while an empty directory
    /// is a fresh start. Method: real files in a temporary directory.
    #[test]
    fn store_load_and_missing() {
        let dir = std::env::temp_dir().join(format!("ringest-manifest-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(load(&dir).unwrap(), Manifest::default());
        let mut manifest = Manifest::default();
        manifest.files.push(file("db=db/x.parquet", 0));
        store(&dir, &manifest).unwrap();
        assert_eq!(load(&dir).unwrap(), manifest);
        fs::create_dir_all(dir.join("db=db")).unwrap();
        fs::write(dir.join("db=db/x.parquet"), b"x").unwrap();
        fs::remove_file(dir.join(MANIFEST_FILE)).unwrap();
        assert!(matches!(
            load(&dir),
            Err(ManifestError::Missing {
                parquet_files: 1,
                ..
            })
        ));
        fs::write(dir.join(MANIFEST_FILE), b"{not json").unwrap();
        let error = load(&dir).unwrap_err();
        assert!(matches!(error, ManifestError::Parse { .. }));
        assert!(error.to_string().contains("corrupt"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
