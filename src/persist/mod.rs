//! Persistence: a shard's rows leave memory as Parquet files, the
//! persisted catalog names them, and the WAL is truncated behind it
//! (issue 14). Like InfluxDB 3: recent data lives in memory + WAL, older
//! data in Parquet any engine reads.
//!
//! Ownership: [`layout`] names every file (and escapes names so none can
//! leave its directory), [`parquet`] turns frozen tables into Parquet files
//! and files back into tables for scans, [`manifest`] is the persisted
//! catalog (its format, atomic rewrite, the replay rule), [`compact`]
//! chooses and merges runs of small files, [`cache`] keeps decoded files
//! for later scans. The per-shard loop that freezes, encodes, commits,
//! truncates, compacts and expires is [`crate::persister`]; the cross-core
//! messages travel in [`crate::route`]; the catalog owner (shard 0) writes
//! the manifest.
//!
//! # Layout
//!
//! ```text
//! <data_dir>/parquet/_catalog.json                the persisted catalog (manifest)
//! <data_dir>/parquet/db=<db>/table=<table>/date=<YYYY-MM-DD>/<generation:020>-<sequence:020>-s<shard:03>[-a<attempt>][-c<compaction>].parquet
//! ```
//!
//! Hive-style: DuckDB's `read_parquet('<data_dir>/parquet/**/*.parquet',
//! hive_partitioning = true, union_by_name = true)` and pyarrow's
//! `dataset(..., partitioning = "hive")` read it unmodified. Names are
//! escaped ([`layout::escape`]): bytes other than ASCII letters, digits,
//! `_` and `-` become `%XX`, so `/`, `.`, `=` and `%` never reach the file
//! system and a name can never be `..` or leave its directory. `date` is
//! the UTC day of the rows' times. The file name is the snapshot that wrote
//! it: this run's WAL generation, the last WAL sequence the snapshot holds,
//! the shard, the attempt (a retried snapshot's files never reuse a name)
//! and the compaction count (below); (generation, sequence, attempt,
//! compaction) orders one shard's files by age ([`layout::FileAge`]).
//!
//! # Parquet schema (one file per snapshot × database × table × UTC day)
//!
//! | column | Arrow type | nulls |
//! |---|---|---|
//! | each tag, by name | `Dictionary(Int32, Utf8)` | absent tag |
//! | each field, by name | float `Float64`, integer `Int64`, unsigned `UInt64`, string `Utf8`, boolean `Boolean` | absent field |
//! | `time` | `Timestamp(Nanosecond, "UTC")` | never |
//!
//! Columns: tags sorted by name, fields sorted by name, `time` last. Rows
//! are sorted by the series key (the tag values in tag-name order, an
//! absent tag first) then time, and the writer declares that order
//! (`sorting_columns`). A (series, time) appears once per file (the
//! snapshot merged repeats, later write wins). ZSTD, dictionary encoding,
//! page statistics (min/max per row group and page), row groups of up to
//! 1 Mi rows. A table whose schema grows between snapshots simply makes
//! files with other columns; readers union them by name.
//!
//! # The manifest (`_catalog.json`, [`manifest::Manifest`])
//!
//! One JSON document, schema in [`manifest`]: format name and version, the
//! databases with their retention and column kinds (a copy of the catalog
//! for operators and other engines; ringest itself rebuilds the schema from
//! the catalog log), every Parquet file (path, database, table, shard,
//! generation, sequence, rows, bytes, min/max time), and the WAL positions
//! persisted through (below).
//!
//! # Durability argument
//!
//! **Promise.** A row leaves the WAL only after the Parquet file holding it
//! and the manifest naming that file are on stable storage; the manifest
//! never names a file that is not.
//!
//! **Order of one snapshot** (shard `k`, WAL generation `G`):
//! 1. On the shard, synchronously: the live store is frozen; it holds
//!    exactly the WAL records of this shard's directory of generation `G`
//!    with sequence `≤ S` (the store applies records in sequence order, see
//!    [`crate::shard`]) plus, the first time in a run, everything replayed
//!    at start.
//! 2. On a blocking thread (never on the shard's executor): each file is
//!    written to `<name>.tmp`, `fsync`ed, renamed to `<name>`, and its
//!    directory (and each new parent directory) `fsync`ed.
//! 3. The catalog owner rewrites the manifest: `_catalog.json.tmp` written
//!    and `fsync`ed, renamed over `_catalog.json`, directory `fsync`ed. It
//!    records the files and the position `(k, G, S)`.
//! 4. Only then: the frozen rows leave memory (queries read the files), and
//!    the WAL segments of `k` whose records all have sequence `≤ S` are
//!    deleted — with an object store (`[object_store]`), only once the
//!    bucket holds the files and a manifest naming them ([`crate::remote`]).
//!
//! **Expired files** (retention; the catalog owner's persister, see
//! [`crate::persister`]): a file whose newest row (`time_max_ns`) is older
//! than its database's cutoff ([`crate::retention::cutoff_ns`]) is deleted
//! within about a second, in this order: the manifest is rewritten without
//! it (one atomic rewrite for every expired file of every shard, as in
//! step 3), every shard drops it from the files its scans read, then it is
//! unlinked. A file that straddles the cutoff stays until its newest row
//! expires; queries never return its expired rows (their time range is
//! clamped to the cutoff) and schema queries do not list series that have
//! none left. The WAL is not involved: the rows of a file were persisted
//! (the position moved past their records) when it was recorded.
//!
//! **Compaction** ([`compact`]; each shard, its own files): snapshots at
//! a low write rate make many small files, and every file costs a manifest
//! entry (rewritten whole on each commit), an open and a footer read per
//! query. A shard merges a run of at least `persist.compact_files` small
//! files (each under half of `persist.compact_rows_max` rows) of one
//! database, table and UTC day, consecutive in age among that partition's
//! files, into one file of at most `compact_rows_max` rows:
//! 1. on a blocking thread, the inputs are read oldest first and written
//!    as one file exactly as a snapshot writes (repeats of a (series,
//!    time) merged, the newer file winning; rows past the retention cutoff
//!    left out), durably (step 2 above);
//! 2. the catalog owner rewrites the manifest with the new file in place
//!    of the inputs, in one atomic rewrite (step 3), and only if every
//!    input is still named (an input expired meanwhile: the commit is
//!    refused and the new file removed);
//! 3. the shard's scans switch to the new file (running ones start over),
//!    then the inputs are unlinked.
//!
//! The new file takes the inputs' place in age order: its name is the
//! newest input's with the compaction count one higher
//! (`…-s<shard>[-a<attempt>]-c<count>.parquet`), and files are ordered by
//! (generation, sequence, attempt, compaction) — so "the newer file wins"
//! still holds against files written before and after it. Memory: the
//! inputs' rows, at most `compact_rows_max`, on the blocking thread.
//!
//! **The replay rule** ([`manifest::WalState::record_persisted`], [`manifest::WalState::row_persisted`]): a WAL record of
//! directory `d`, generation `g`, sequence `s` is skipped at start when
//! - `g` is below `floor_generation` (every shard of a later run persisted
//!   what it replayed, so nothing older is unpersisted), or
//! - the position of `d` has generation `g` and sequence `≥ s`;
//!
//! and one of its rows is skipped when a run `R > g` listed in `runs`
//! recorded that the row's owner under `R`'s shard count persisted
//! everything it replayed (so a crash between shards' first snapshots
//! neither loses nor duplicates a row). Old generations' segments are
//! deleted once the floor passes them: a shard learns the floor from a
//! commit's answer, so one that has no rows to persist commits an empty
//! snapshot once per `persist.interval_ms` until it has deleted them.
//!
//! **What a crash can leave**, and what start-up does:
//!
//! | crash | left on disk | start-up |
//! |---|---|---|
//! | while writing a file | `*.parquet.tmp` | removed |
//! | files renamed, manifest not rewritten | Parquet files the manifest does not name; their rows still in the WAL | the files are removed; the WAL replays the rows, a later snapshot persists them again |
//! | while writing the manifest | `_catalog.json.tmp` | removed; the old manifest holds |
//! | manifest rewritten, WAL not yet truncated | segments of persisted records | replay skips them (rule above); they are deleted after the next snapshot |
//! | expiry: while writing the manifest without the expired files | `_catalog.json.tmp` | removed; the old manifest still names the files, and the first expiry pass after start deletes them |
//! | expiry: manifest rewritten, files not (all) unlinked | expired Parquet files the manifest does not name | removed as orphans, like the unrecorded files above; nothing replays their rows (persisted long before, and expired) |
//! | compaction: new file written, manifest not rewritten | a Parquet file the manifest does not name | removed as an orphan; the inputs still hold the rows |
//! | compaction: manifest rewritten, inputs not (all) unlinked | inputs the manifest does not name | removed as orphans; the new file holds their rows |
//! | between shards' first snapshots of a run | some shards' replayed rows persisted | per-row rule above |
//!
//! **What a failed write does** (no crash; `tests/persist_faults.rs` injects
//! each through [`faults`]): a Parquet file whose write, `fsync`, rename or
//! directory `fsync` fails is deleted and never trusted again (a failed
//! `fsync` may have dropped its pages), and so are the files this snapshot
//! already wrote; the rows stay frozen in memory and in the WAL and the
//! next attempt writes new names. A catalog rewrite that fails at any step
//! is answered as not written; the owner writes the previous catalog back
//! (after a failed directory `fsync` the new one may be on disk, or may
//! vanish at a power loss), and the snapshot's files are deleted; if the
//! previous one cannot be written back either, the files stay, because the
//! catalog on disk may name them, and start-up decides by the catalog it
//! finds. A commit refused or failed never releases the WAL.
//!
//! **What start-up refuses** (with the path and the fix): a manifest that
//! does not parse, or is missing while Parquet files exist (the WAL may
//! already be truncated behind them: guessing could lose or duplicate
//! data). A file the manifest names that is missing is logged at start and
//! named in the error of any query that needs it; the rest is served.

pub mod cache;
pub mod compact;
pub mod faults;
pub mod layout;
pub mod manifest;
pub mod parquet;
pub mod source;
