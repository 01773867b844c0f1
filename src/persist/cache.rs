//! Decoded Parquet files kept for the next query: a dashboard asks the
//! same questions of the same files every few seconds, and decoding a file
//! (ZSTD, dictionaries, rebuilding its series) costs far more than scanning
//! it. Files never change once written (a compaction or expiry makes new
//! names and removes old ones), so an entry is never stale: it is dropped
//! only to stay under the byte budget (least recently used first) or when
//! its file leaves the shard's list.
//!
//! One cache per shard, shared with the blocking threads that read files
//! for that shard's scans (a mutex held only to look up, insert or evict,
//! never while decoding).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::parquet::{self, LoadRequest, ParquetError};
use crate::store::Table;

/// What a cached table holds: the file, the field columns read (sorted;
/// `None`: all) and the owner filter. Only loads of every row group are
/// kept (none left out by the time range), so an entry answers any time
/// range: scans apply their own.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    path: String,
    fields: Option<Vec<String>>,
    owner: Option<(usize, usize)>,
}

impl Key {
    fn of(path: &str, request: &LoadRequest) -> Key {
        Key {
            path: path.to_string(),
            fields: request.fields.as_ref().map(|fields| {
                let mut fields = fields.clone();
                fields.sort();
                fields.dedup();
                fields
            }),
            owner: request.owner,
        }
    }
}

struct Entry {
    table: Arc<Table>,
    bytes: usize,
    used: u64,
}

#[derive(Default)]
struct State {
    entries: HashMap<Key, Entry>,
    bytes: usize,
    clock: u64,
    hits: u64,
    misses: u64,
}

/// A byte-bounded cache of decoded files. Cloning shares it.
#[derive(Clone)]
pub struct FileCache {
    budget: usize,
    state: Arc<Mutex<State>>,
}

impl FileCache {
    /// `budget` bytes of decoded tables at most (0: nothing is kept).
    pub fn new(budget: usize) -> FileCache {
        FileCache {
            budget,
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    /// The table of `path` (relative to `root`) as `request` asks: from
    /// the cache (every row of the file, whatever the request's time
    /// range), or read (blocking) and kept when no row group was left out.
    /// A file's rows are sorted by series, so its row groups usually all
    /// span its time range and are all read.
    pub fn load(
        &self,
        source: &super::source::Source,
        path: &str,
        request: &LoadRequest,
    ) -> Result<Arc<Table>, ParquetError> {
        let key = Key::of(path, request);
        if let Some(table) = self.lookup(&key) {
            return Ok(table);
        }
        if self.budget > 0 {
            self.lock().misses += 1;
        }
        let loaded = parquet::load(source, path, request)?;
        let table = Arc::new(loaded.table);
        if self.budget > 0 && loaded.every_row_group {
            let bytes = table.estimated_bytes();
            if bytes <= self.budget / 2 {
                self.insert(key, table.clone(), bytes);
            }
        }
        Ok(table)
    }

    /// The table of `path` as `request` asks if the cache holds it (a
    /// hit), without reading anything: a scan whose files are all kept
    /// needs no reader thread.
    pub fn cached(&self, path: &str, request: &LoadRequest) -> Option<Arc<Table>> {
        self.lookup(&Key::of(path, request))
    }

    fn lookup(&self, key: &Key) -> Option<Arc<Table>> {
        if self.budget == 0 {
            return None;
        }
        let mut state = self.lock();
        state.clock += 1;
        let now = state.clock;
        let entry = state.entries.get_mut(key)?;
        entry.used = now;
        let table = entry.table.clone();
        state.hits += 1;
        Some(table)
    }

    fn insert(&self, key: Key, table: Arc<Table>, bytes: usize) {
        let mut state = self.lock();
        state.clock += 1;
        let used = state.clock;
        if let Some(old) = state.entries.insert(key, Entry { table, bytes, used }) {
            state.bytes -= old.bytes;
        }
        state.bytes += bytes;
        while state.bytes > self.budget {
            let Some(oldest) = state
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(gone) = state.entries.remove(&oldest) {
                state.bytes -= gone.bytes;
            }
        }
    }

    /// Drops every entry of these files (they left the shard's list).
    pub fn forget(&self, paths: &[String]) {
        let mut state = self.lock();
        let before = state.entries.len();
        state.entries.retain(|key, _| !paths.contains(&key.path));
        if state.entries.len() != before {
            state.bytes = state.entries.values().map(|e| e.bytes).sum();
        }
    }

    /// (bytes held, hits, misses).
    pub fn stats(&self) -> (usize, u64, u64) {
        let state = self.lock();
        (state.bytes, state.hits, state.misses)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain numbers and maps:
        // still consistent enough to go on with.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
