//! Where persisted files live (the layout in [`crate::persist`]): pure
//! functions from names and numbers to relative paths, and back.

use std::path::{Path, PathBuf};

/// The directory under the data directory that holds every Parquet file
/// and the manifest.
pub const PARQUET_DIR: &str = "parquet";
/// The manifest's file name inside [`PARQUET_DIR`].
pub const MANIFEST_FILE: &str = "_catalog.json";
/// Suffix of a file being written (removed at start if found).
pub const TMP_SUFFIX: &str = ".tmp";

const NS_PER_DAY: i64 = 86_400 * 1_000_000_000;

/// Escapes a database or table name into one safe path component: ASCII
/// letters, digits, `_` and `-` stay, every other byte becomes `%XX`
/// (upper-case hex). The result is never empty for a non-empty name, never
/// `.` or `..`, and never holds `/`.
pub fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Inverse of [`escape`]; `None` for text `escape` cannot produce.
pub fn unescape(component: &str) -> Option<String> {
    let bytes = component.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = component.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The UTC day (days since 1970-01-01) of a time.
pub fn day_of(time_ns: i64) -> i64 {
    time_ns.div_euclid(NS_PER_DAY)
}

/// `YYYY-MM-DD` of a day number.
pub fn date_text(day: i64) -> String {
    let (year, month, day) = crate::clock::civil_from_days(day);
    format!("{year:04}-{month:02}-{day:02}")
}

/// What names one snapshot's files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotId {
    pub generation: u64,
    /// The last WAL sequence the snapshot holds (0: only replayed rows).
    pub sequence: u64,
    pub shard: u32,
    /// Attempt number of this snapshot (a failed attempt's files may be left
    /// behind; the next attempt must not reuse their names).
    pub attempt: u32,
    /// How many compactions made the file (0: a snapshot wrote it).
    pub compaction: u32,
}

/// The age of a file among one shard's files: later is newer. Rows of the
/// same series and time in two files: the newer file's win.
pub type FileAge = (u64, u64, u32, u32);

impl SnapshotId {
    pub fn age(&self) -> FileAge {
        (
            self.generation,
            self.sequence,
            self.attempt,
            self.compaction,
        )
    }

    /// The id in a file name `file_path` made (`None`: not one of ours).
    pub fn parse(file_name: &str) -> Option<SnapshotId> {
        let stem = file_name.strip_suffix(".parquet")?;
        let mut parts = stem.split('-');
        let generation = parts.next()?.parse().ok()?;
        let sequence = parts.next()?.parse().ok()?;
        let shard = parts.next()?.strip_prefix('s')?.parse().ok()?;
        let mut id = SnapshotId {
            generation,
            sequence,
            shard,
            attempt: 0,
            compaction: 0,
        };
        for part in parts {
            if let Some(n) = part.strip_prefix('a') {
                id.attempt = n.parse().ok()?;
            } else if let Some(n) = part.strip_prefix('c') {
                id.compaction = n.parse().ok()?;
            } else {
                return None;
            }
        }
        Some(id)
    }
}

/// The file of one snapshot, database, table and day, relative to the
/// Parquet directory.
pub fn file_path(id: SnapshotId, database: &str, table: &str, day: i64) -> PathBuf {
    let mut name = format!("{:020}-{:020}-s{:03}", id.generation, id.sequence, id.shard);
    if id.attempt > 0 {
        name.push_str(&format!("-a{}", id.attempt));
    }
    if id.compaction > 0 {
        name.push_str(&format!("-c{}", id.compaction));
    }
    name.push_str(".parquet");
    Path::new(&format!("db={}", escape(database)))
        .join(format!("table={}", escape(table)))
        .join(format!("date={}", date_text(day)))
        .join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: no name escapes its directory and every name round-trips.
    /// Method: hostile names; check the component and the inverse.
    #[test]
    fn names_never_leave_their_directory() {
        for name in [
            "..",
            ".",
            "a/b",
            "../../etc",
            "db=x",
            "%2F",
            "ünï",
            "a b",
            "-",
            "x\0y",
            "/",
        ] {
            let escaped = escape(name);
            assert!(!escaped.contains('/'), "{name:?} → {escaped}");
            assert!(!escaped.contains('.'), "{name:?} → {escaped}");
            assert!(escaped != "." && escaped != ".." && !escaped.is_empty());
            assert_eq!(unescape(&escaped).as_deref(), Some(name));
        }
        assert_eq!(escape("telegraf_1-x"), "telegraf_1-x");
        assert_eq!(unescape("%G1"), None);
        assert_eq!(unescape("%4"), None);
    }

    /// Goal: the path is Hive-style with the UTC date of the day, and day
    /// numbers floor for times before 1970. Method: known values.
    #[test]
    fn hive_path_and_day() {
        let id = SnapshotId {
            generation: 3,
            sequence: 42,
            shard: 1,
            attempt: 0,
            compaction: 0,
        };
        let day = day_of(1_700_000_000_000_000_000);
        assert_eq!(date_text(day), "2023-11-14");
        assert_eq!(
            file_path(id, "db/rp", "cpu", day),
            Path::new(
                "db=db%2Frp/table=cpu/date=2023-11-14/00000000000000000003-00000000000000000042-s001.parquet"
            )
        );
        assert_eq!(day_of(-1), -1);
        assert_eq!(date_text(-1), "1969-12-31");
        let again = SnapshotId { attempt: 2, ..id };
        assert!(file_path(again, "d", "t", 0)
            .to_string_lossy()
            .ends_with("-s001-a2.parquet"));
        // Names parse back, and their ages order compacted files right
        // after their newest input, before anything newer.
        for id in [
            id,
            again,
            SnapshotId {
                compaction: 3,
                ..again
            },
        ] {
            let path = file_path(id, "d", "t", 0);
            let name = path.file_name().and_then(|n| n.to_str()).unwrap();
            assert_eq!(SnapshotId::parse(name), Some(id));
        }
        let compacted = SnapshotId {
            compaction: 1,
            ..id
        };
        let newer = SnapshotId { attempt: 1, ..id };
        assert!(id.age() < compacted.age() && compacted.age() < newer.age());
        assert_eq!(SnapshotId::parse("x.parquet"), None);
    }
}
