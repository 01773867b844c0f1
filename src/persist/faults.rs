//! Test only: storage faults injected into persistence's own I/O (the
//! Parquet files and the persisted catalog; the WAL has its own,
//! [`crate::wal::storage::FaultPlan`]), so the tests can prove, step by
//! step, what the server answers and that nothing acknowledged is lost
//! (`tests/persist_faults.rs` holds the table).
//!
//! `RINGEST_TEST_PERSIST_FAULTS=<step>:<count>[,<step>:<count>…]` makes the
//! first `<count>` times the process reaches `<step>` fail, before doing it:
//!
//! | step | fails as | where |
//! |---|---|---|
//! | `parquet-write` | `ENOSPC` | writing a Parquet file's bytes |
//! | `parquet-sync` | `EIO` | its `fsync` (the file is never trusted again: a retry writes a new one) |
//! | `parquet-rename` | `EIO` | renaming it into place |
//! | `parquet-dir-sync` | `EIO` | the `fsync` of its directory after the rename |
//! | `manifest-write` | `ENOSPC` | writing `_catalog.json.tmp` |
//! | `manifest-sync` | `EIO` | its `fsync` |
//! | `manifest-rename` | `EIO` | renaming it over `_catalog.json` |
//! | `manifest-dir-sync` | `EIO` | the `fsync` of the directory after the rename (the new catalog may or may not survive a power loss: it is treated as not written) |
//!
//! Logged at warn level when set; never set it in production.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The environment variable that arms faults.
pub const ENV: &str = "RINGEST_TEST_PERSIST_FAULTS";

/// A point of persistence's I/O where a fault can be injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    ParquetWrite,
    ParquetSync,
    ParquetRename,
    ParquetDirSync,
    ManifestWrite,
    ManifestSync,
    ManifestRename,
    ManifestDirSync,
}

impl Step {
    const ALL: [(Step, &'static str); 8] = [
        (Step::ParquetWrite, "parquet-write"),
        (Step::ParquetSync, "parquet-sync"),
        (Step::ParquetRename, "parquet-rename"),
        (Step::ParquetDirSync, "parquet-dir-sync"),
        (Step::ManifestWrite, "manifest-write"),
        (Step::ManifestSync, "manifest-sync"),
        (Step::ManifestRename, "manifest-rename"),
        (Step::ManifestDirSync, "manifest-dir-sync"),
    ];

    fn errno(self) -> i32 {
        match self {
            Step::ParquetWrite | Step::ManifestWrite => libc::ENOSPC,
            _ => libc::EIO,
        }
    }
}

/// The armed faults: each step with the failures it has left.
fn armed() -> &'static [(Step, AtomicU32)] {
    static ARMED: OnceLock<Vec<(Step, AtomicU32)>> = OnceLock::new();
    ARMED.get_or_init(|| {
        let Ok(value) = std::env::var(ENV) else {
            return Vec::new();
        };
        let parsed = parse(&value);
        match &parsed {
            Ok(steps) => {
                tracing::warn!(?steps, "{ENV} is set: persistence I/O will fail on purpose")
            }
            Err(bad) => {
                tracing::error!(value = %bad, "{ENV}: not <step>:<count>[,…]; nothing armed")
            }
        }
        parsed
            .unwrap_or_default()
            .into_iter()
            .map(|(step, count)| (step, AtomicU32::new(count)))
            .collect()
    })
}

/// `<step>:<count>[,…]`; the part that does not parse.
pub fn parse(value: &str) -> Result<Vec<(Step, u32)>, String> {
    value
        .split(',')
        .filter(|part| !part.trim().is_empty())
        .map(|part| {
            let (name, count) = part
                .trim()
                .split_once(':')
                .ok_or_else(|| part.to_string())?;
            let step = Step::ALL
                .iter()
                .find(|(_, n)| *n == name)
                .map(|(s, _)| *s)
                .ok_or_else(|| part.to_string())?;
            let count = count.parse::<u32>().map_err(|_| part.to_string())?;
            Ok((step, count))
        })
        .collect()
}

/// Fails (with the step's errno) while `step` has injected failures left;
/// otherwise does nothing. Cheap when nothing is armed.
pub fn check(step: Step) -> io::Result<()> {
    for (armed, left) in armed() {
        if *armed == step
            && left
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok()
        {
            return Err(io::Error::from_raw_os_error(step.errno()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: the variable's syntax is read exactly and a typo arms
    /// nothing rather than something else. Method: parse cases.
    #[test]
    fn fault_lists_parse_or_name_the_bad_part() {
        assert_eq!(
            parse("parquet-sync:2, manifest-dir-sync:1").expect("valid"),
            vec![(Step::ParquetSync, 2), (Step::ManifestDirSync, 1)]
        );
        assert_eq!(parse("parquet-snyc:1").expect_err("typo"), "parquet-snyc:1");
        assert_eq!(
            parse("manifest-write").expect_err("no count"),
            "manifest-write"
        );
        assert_eq!(parse("").expect("empty"), vec![]);
    }
}
