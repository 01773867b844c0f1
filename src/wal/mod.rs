//! Write-ahead log. TEMPORARY STUB with the agreed API (issue 5 replaces it):
//! it keeps nothing and syncs nothing.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub type Sequence = u64;

#[derive(Clone, Debug)]
pub struct WalOptions {
    pub dir: PathBuf,
    pub generation: u64,
    pub segment_bytes: u64,
    pub batch_bytes_max: usize,
    pub pending_bytes_max: usize,
    pub wal_bytes_max: u64,
    pub batch_delay: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalError {
    Full { pending_bytes: usize },
    NoSpace,
    Failed(String),
}

impl std::fmt::Display for WalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

#[derive(Clone, Debug, Default)]
pub struct WalStats {
    pub records: u64,
    pub bytes: u64,
    pub syncs: u64,
    pub pending_bytes: u64,
}

#[derive(Clone)]
pub struct Wal {
    next: std::rc::Rc<std::cell::Cell<u64>>,
}

impl Wal {
    pub async fn open(options: WalOptions) -> Result<Wal, WalError> {
        let _ = options;
        Ok(Wal {
            next: Default::default(),
        })
    }
    pub fn append(&self, kind: u8, payload: &[u8]) -> Result<Sequence, WalError> {
        let _ = (kind, payload);
        self.next.set(self.next.get() + 1);
        Ok(self.next.get())
    }
    pub async fn synced(&self, seq: Sequence) -> Result<(), WalError> {
        let _ = seq;
        Ok(())
    }
    pub fn health(&self) -> Result<(), WalError> {
        Ok(())
    }
    pub fn stats(&self) -> WalStats {
        WalStats::default()
    }
    pub async fn close(&self) {}
}

#[derive(Debug)]
pub struct RecoveryError(pub String);

impl std::fmt::Display for RecoveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Default)]
pub struct RecoveryReport {}
#[derive(Debug, Default)]
pub struct ReplayStats {
    pub records: u64,
}

pub struct RecordRef<'a> {
    pub kind: u8,
    pub payload: &'a [u8],
}

pub fn next_generation(wal_root: &Path) -> io::Result<u64> {
    let _ = wal_root;
    Ok(1)
}
pub fn recover(wal_root: &Path, skip_corrupt: bool) -> Result<RecoveryReport, RecoveryError> {
    let _ = (wal_root, skip_corrupt);
    Ok(RecoveryReport::default())
}
pub fn replay(wal_root: &Path, f: impl FnMut(RecordRef<'_>)) -> Result<ReplayStats, RecoveryError> {
    let _ = (wal_root, f);
    Ok(ReplayStats::default())
}
pub fn inspect(path: &Path, out: &mut impl Write) -> io::Result<bool> {
    writeln!(out, "{}: (stub)", path.display())?;
    Ok(true)
}
