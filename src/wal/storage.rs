//! The storage seam: the only way the WAL touches files on the shard path.
//!
//! - [`GlommioStorage`]: real files through glommio's `DmaFile` (O_DIRECT over
//!   io_uring) and `Directory::sync` for directory entries.
//! - [`MemStorage`]: files in memory for tests. It can fail the n-th write or
//!   sync (EIO), answer ENOSPC, and simulate power loss: every byte not
//!   covered by a completed sync, and every file whose directory entry was
//!   not synced, is gone. Its image can be written to a real directory so
//!   that recovery (std::fs) runs on it.
//!
//! Every write is a whole number of [`WAL_BLOCK_BYTES`] blocks at a block
//! aligned offset (what O_DIRECT needs); [`MemStorage`] asserts it, so tests
//! check the alignment logic of the committer too.
//!
//! Single-threaded by design (one instance per shard): no `Send` bound.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Alignment and granularity of every WAL write. 4096 covers devices with 512
/// and 4096 byte logical blocks; `GlommioStorage` checks the file's own
/// O_DIRECT alignment divides it.
pub const WAL_BLOCK_BYTES: usize = 4096;

/// What the WAL needs from storage. Implementations decide the buffer type so
/// that the one copy of a record goes straight into memory the device can
/// read (a `DmaBuffer` for O_DIRECT).
#[allow(async_fn_in_trait)] // single-threaded seam: futures are never sent
pub trait Storage: 'static {
    type File: 'static;
    type Buffer: 'static;

    /// A buffer of exactly `len` bytes (contents unspecified).
    fn alloc_buffer(&self, len: usize) -> Self::Buffer;
    fn buffer_bytes_mut(buffer: &mut Self::Buffer) -> &mut [u8];
    fn buffer_bytes(buffer: &Self::Buffer) -> &[u8];
    /// Shortens the buffer to `len` bytes (a multiple of the block size).
    fn buffer_trim(buffer: &mut Self::Buffer, len: usize);

    /// Creates `dir` and its missing parents and makes their entries durable
    /// (start-up only: the real implementation uses blocking std::fs).
    async fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Total bytes of segment files already in `dir` (start-up only, counts
    /// toward `wal_bytes_max`).
    async fn segment_bytes_in(&self, dir: &Path) -> io::Result<u64>;
    /// Creates a new file; fails if it exists.
    async fn create_file(&self, path: &Path) -> io::Result<Self::File>;
    /// Reserves `len` bytes (file size becomes `len`, contents read as zeros).
    async fn preallocate(&self, file: &Self::File, len: u64) -> io::Result<()>;
    /// Writes the whole buffer at `pos` (block aligned).
    async fn write_at(&self, file: &Self::File, buffer: Self::Buffer, pos: u64) -> io::Result<()>;
    /// `fdatasync`: data written so far (and the size) is durable on return.
    async fn sync_data(&self, file: &Self::File) -> io::Result<()>;
    /// Makes the directory's entries (files created in it) durable.
    async fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    async fn close(&self, file: Self::File) -> io::Result<()>;
    /// Removes a closed file (an unused spare segment at shutdown).
    async fn remove_file(&self, path: &Path) -> io::Result<()>;
}

/// Converts a glommio error to `io::Error` keeping the OS error code (the
/// library's own `From` drops it, and we need ENOSPC to stay ENOSPC).
fn to_io<T>(error: glommio::GlommioError<T>) -> io::Error {
    match error {
        glommio::GlommioError::IoError(e) => e,
        glommio::GlommioError::EnhancedIoError { source, .. } => source,
        other => io::Error::from(other),
    }
}

/// Real storage: glommio `DmaFile` (O_DIRECT) files, with an optional
/// [`FaultPlan`] so that tests of the whole server can fail real I/O.
#[derive(Debug, Default)]
pub struct GlommioStorage {
    faults: Option<FaultPlan>,
}

impl GlommioStorage {
    pub fn new() -> GlommioStorage {
        GlommioStorage::default()
    }

    /// Real files whose calls also go through `faults` (tests only).
    pub fn with_faults(faults: FaultPlan) -> GlommioStorage {
        GlommioStorage {
            faults: Some(faults),
        }
    }

    fn check(&self, call: fn(&FaultPlan) -> io::Result<()>) -> io::Result<()> {
        match &self.faults {
            Some(plan) => call(plan),
            None => Ok(()),
        }
    }
}

impl Storage for GlommioStorage {
    type File = glommio::io::DmaFile;
    type Buffer = glommio::io::DmaBuffer;

    fn alloc_buffer(&self, len: usize) -> Self::Buffer {
        glommio::allocate_dma_buffer(len)
    }
    fn buffer_bytes_mut(buffer: &mut Self::Buffer) -> &mut [u8] {
        buffer.as_bytes_mut()
    }
    fn buffer_bytes(buffer: &Self::Buffer) -> &[u8] {
        buffer.as_bytes()
    }
    fn buffer_trim(buffer: &mut Self::Buffer, len: usize) {
        buffer.trim_to_size(len);
    }

    #[allow(clippy::disallowed_methods)]
    async fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        // Start-up only (Wal::open): blocking std::fs is acceptable here.
        let mut missing = Vec::new();
        let mut cursor = Some(dir);
        while let Some(path) = cursor {
            if path.as_os_str().is_empty() || path.exists() {
                break;
            }
            missing.push(path);
            cursor = path.parent();
        }
        std::fs::create_dir_all(dir)?;
        // Each created directory's entry lives in its parent: sync parents,
        // deepest last, then the directory itself.
        for path in missing.iter().rev() {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                self.sync_dir(parent).await?;
            }
        }
        self.sync_dir(dir).await
    }
    #[allow(clippy::disallowed_methods)]
    async fn segment_bytes_in(&self, dir: &Path) -> io::Result<u64> {
        // Start-up only (Wal::open): blocking std::fs is acceptable here.
        let mut total = 0;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if name
                .to_str()
                .and_then(super::segment::parse_segment_file_name)
                .is_some()
            {
                total += entry.metadata()?.len();
            }
        }
        Ok(total)
    }
    async fn create_file(&self, path: &Path) -> io::Result<Self::File> {
        let file = glommio::io::OpenOptions::new()
            .write(true)
            .create_new(true)
            .dma_open(path)
            .await
            .map_err(to_io)?;
        if WAL_BLOCK_BYTES as u64 % file.alignment() != 0 {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "device O_DIRECT alignment does not divide the WAL block size",
            ));
        }
        Ok(file)
    }
    async fn preallocate(&self, file: &Self::File, len: u64) -> io::Result<()> {
        self.check(FaultPlan::on_preallocate)?;
        file.pre_allocate(len, false).await.map_err(to_io)
    }
    async fn write_at(&self, file: &Self::File, buffer: Self::Buffer, pos: u64) -> io::Result<()> {
        self.check(FaultPlan::on_write)?;
        let len = buffer.len();
        let written = file.write_at(buffer, pos).await.map_err(to_io)?;
        if written != len {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short O_DIRECT write",
            ));
        }
        Ok(())
    }
    async fn sync_data(&self, file: &Self::File) -> io::Result<()> {
        self.check(FaultPlan::on_sync)?;
        file.fdatasync().await.map_err(to_io)
    }
    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let directory = glommio::io::Directory::open(dir).await.map_err(to_io)?;
        let synced = directory.sync().await.map_err(to_io);
        let closed = directory.close().await.map_err(to_io);
        synced.and(closed)
    }
    async fn close(&self, file: Self::File) -> io::Result<()> {
        file.close().await.map_err(to_io)
    }
    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        glommio::io::remove(path).await.map_err(to_io)
    }
}

/// A fault to inject into a storage (see [`FaultPlan`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The n-th `write_at` call (1-based, counted from arming) fails with EIO.
    FailWrite(u64),
    /// The n-th `sync_data` call fails with EIO.
    FailSync(u64),
    /// The n-th `write_at` call fails with ENOSPC.
    NoSpaceOnWrite(u64),
    /// The n-th `preallocate` call fails with ENOSPC.
    NoSpaceOnPreallocate(u64),
    /// Every `preallocate` call fails with ENOSPC until [`FaultPlan::clear`]
    /// (a full disk that is freed later).
    NoSpaceOnEveryPreallocate,
}

impl std::str::FromStr for Fault {
    type Err = FaultParseError;

    /// `fail-write:N`, `fail-sync:N`, `enospc-write:N`, `enospc-preallocate:N`.
    fn from_str(text: &str) -> Result<Fault, FaultParseError> {
        let (name, n) = text.split_once(':').ok_or(FaultParseError)?;
        let n: u64 = n.parse().map_err(|_| FaultParseError)?;
        if n == 0 {
            return Err(FaultParseError);
        }
        match name {
            "fail-write" => Ok(Fault::FailWrite(n)),
            "fail-sync" => Ok(Fault::FailSync(n)),
            "enospc-write" => Ok(Fault::NoSpaceOnWrite(n)),
            "enospc-preallocate" => Ok(Fault::NoSpaceOnPreallocate(n)),
            _ => Err(FaultParseError),
        }
    }
}

/// Text is not one of the forms `Fault` parses from (see its `FromStr`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultParseError;

#[derive(Debug, Default)]
struct FaultState {
    writes: u64,
    syncs: u64,
    preallocates: u64,
    armed: Option<Fault>,
    base: (u64, u64, u64),
}

/// Counts storage calls and fails the one an armed [`Fault`] names. Clones
/// share the plan, so a test (or a test-only hook in the server) can arm a
/// fault on a running `Wal`. Disarmed, it costs one `RefCell` borrow per call.
#[derive(Clone, Debug, Default)]
pub struct FaultPlan {
    state: Rc<RefCell<FaultState>>,
}

impl FaultPlan {
    pub fn new() -> FaultPlan {
        FaultPlan::default()
    }

    /// Arms one fault; call numbers count from now.
    pub fn inject(&self, fault: Fault) {
        let mut state = self.state.borrow_mut();
        state.base = (state.writes, state.syncs, state.preallocates);
        state.armed = Some(fault);
    }

    /// Disarms the fault (the disk was freed).
    pub fn clear(&self) {
        self.state.borrow_mut().armed = None;
    }

    /// Calls so far: (write_at, sync_data).
    pub fn calls(&self) -> (u64, u64) {
        let state = self.state.borrow();
        (state.writes, state.syncs)
    }

    fn on_write(&self) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        state.writes += 1;
        let n = state.writes - state.base.0;
        match state.armed {
            Some(Fault::FailWrite(at)) if at == n => Err(eio()),
            Some(Fault::NoSpaceOnWrite(at)) if at == n => Err(enospc()),
            _ => Ok(()),
        }
    }

    fn on_sync(&self) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        state.syncs += 1;
        let n = state.syncs - state.base.1;
        match state.armed {
            Some(Fault::FailSync(at)) if at == n => Err(eio()),
            _ => Ok(()),
        }
    }

    fn on_preallocate(&self) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        state.preallocates += 1;
        let n = state.preallocates - state.base.2;
        match state.armed {
            Some(Fault::NoSpaceOnPreallocate(at)) if at == n => Err(enospc()),
            Some(Fault::NoSpaceOnEveryPreallocate) => Err(enospc()),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Default)]
struct MemFile {
    /// What a read would see now.
    data: Vec<u8>,
    /// What survives power loss: `data` as of the last completed sync.
    synced: Vec<u8>,
    /// The directory entry was synced after the file was created.
    entry_synced: bool,
}

#[derive(Debug, Default)]
struct MemState {
    files: BTreeMap<PathBuf, MemFile>,
}

/// In-memory storage for tests; clones share the same files.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    state: Rc<RefCell<MemState>>,
    faults: FaultPlan,
}

/// Handle of a [`MemStorage`] file.
#[derive(Debug)]
pub struct MemFileHandle {
    path: PathBuf,
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}
fn enospc() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
}

impl MemStorage {
    pub fn new() -> MemStorage {
        MemStorage::default()
    }

    /// Arms one fault; counts start from the calls made so far.
    pub fn inject(&self, fault: Fault) {
        self.faults.inject(fault);
    }

    /// Disarms the fault ([`FaultPlan::clear`]).
    pub fn clear_faults(&self) {
        self.faults.clear();
    }

    /// Calls so far: (write_at, sync_data).
    pub fn calls(&self) -> (u64, u64) {
        self.faults.calls()
    }

    /// Power loss: unsynced bytes revert to their synced content and files
    /// whose directory entry was never synced disappear.
    pub fn power_loss(&self) {
        let mut state = self.state.borrow_mut();
        state.files.retain(|_, file| file.entry_synced);
        for file in state.files.values_mut() {
            file.data = file.synced.clone();
        }
    }

    /// Power loss in the middle of writing: like [`MemStorage::power_loss`],
    /// but in each file the first `keep_bytes` unsynced bytes (from the first
    /// byte that differs from the synced content) did reach the disk: a torn
    /// write that persisted a prefix.
    pub fn power_loss_torn(&self, keep_bytes: usize) {
        let mut state = self.state.borrow_mut();
        state.files.retain(|_, file| file.entry_synced);
        for file in state.files.values_mut() {
            let common = file
                .data
                .iter()
                .zip(file.synced.iter())
                .take_while(|(a, b)| a == b)
                .count();
            let keep_to = (common + keep_bytes).min(file.data.len());
            let mut survived = file.synced.clone();
            if survived.len() < keep_to {
                survived.resize(keep_to, 0);
            }
            survived[common..keep_to].copy_from_slice(&file.data[common..keep_to]);
            file.data = survived;
        }
    }

    /// Writes every file (current contents) under `root`, keeping the paths
    /// relative to `prefix`. Test helper (std::fs).
    #[allow(clippy::disallowed_methods)]
    pub fn write_image(&self, prefix: &Path, root: &Path) -> io::Result<()> {
        let state = self.state.borrow();
        for (path, file) in &state.files {
            let relative = path
                .strip_prefix(prefix)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file outside prefix"))?;
            let target = root.join(relative);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(target, &file.data)?;
        }
        Ok(())
    }

    /// What a read of `path` would see now, if it exists (test helper).
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        self.state.borrow().files.get(path).map(|f| f.data.clone())
    }

    /// Paths of the files that exist now.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.state.borrow().files.keys().cloned().collect()
    }
}

impl Storage for MemStorage {
    type File = MemFileHandle;
    type Buffer = Vec<u8>;

    fn alloc_buffer(&self, len: usize) -> Self::Buffer {
        // Not zeroed on purpose in spirit: fill with a pattern so that a
        // committer relying on zeroed buffers is caught.
        vec![0xA5; len]
    }
    fn buffer_bytes_mut(buffer: &mut Self::Buffer) -> &mut [u8] {
        buffer
    }
    fn buffer_bytes(buffer: &Self::Buffer) -> &[u8] {
        buffer
    }
    fn buffer_trim(buffer: &mut Self::Buffer, len: usize) {
        buffer.truncate(len);
    }

    async fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }
    async fn segment_bytes_in(&self, dir: &Path) -> io::Result<u64> {
        let state = self.state.borrow();
        Ok(state
            .files
            .iter()
            .filter(|(path, _)| path.parent() == Some(dir))
            .map(|(_, file)| file.data.len() as u64)
            .sum())
    }
    async fn create_file(&self, path: &Path) -> io::Result<Self::File> {
        let mut state = self.state.borrow_mut();
        if state.files.contains_key(path) {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        state.files.insert(path.to_path_buf(), MemFile::default());
        Ok(MemFileHandle {
            path: path.to_path_buf(),
        })
    }
    async fn preallocate(&self, file: &Self::File, len: u64) -> io::Result<()> {
        self.faults.on_preallocate()?;
        let mut state = self.state.borrow_mut();
        let entry = state.files.get_mut(&file.path).ok_or_else(eio)?;
        if (entry.data.len() as u64) < len {
            entry.data.resize(len as usize, 0);
        }
        Ok(())
    }
    async fn write_at(&self, file: &Self::File, buffer: Self::Buffer, pos: u64) -> io::Result<()> {
        assert!(
            pos % WAL_BLOCK_BYTES as u64 == 0 && buffer.len() % WAL_BLOCK_BYTES == 0,
            "invariant: WAL writes are whole aligned blocks (pos {pos}, len {})",
            buffer.len()
        );
        self.faults.on_write()?;
        {
            let mut state = self.state.borrow_mut();
            let entry = state.files.get_mut(&file.path).ok_or_else(eio)?;
            let end = pos as usize + buffer.len();
            if entry.data.len() < end {
                entry.data.resize(end, 0);
            }
            entry.data[pos as usize..end].copy_from_slice(&buffer);
        }
        futures_lite::future::yield_now().await;
        Ok(())
    }
    async fn sync_data(&self, file: &Self::File) -> io::Result<()> {
        // Let other tasks run (append) while the "device" works.
        futures_lite::future::yield_now().await;
        self.faults.on_sync()?;
        let mut state = self.state.borrow_mut();
        let entry = state.files.get_mut(&file.path).ok_or_else(eio)?;
        entry.synced = entry.data.clone();
        Ok(())
    }
    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        for (path, file) in state.files.iter_mut() {
            if path.parent() == Some(dir) {
                file.entry_synced = true;
            }
        }
        Ok(())
    }
    async fn close(&self, _file: Self::File) -> io::Result<()> {
        Ok(())
    }
    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        state
            .files
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
    }
}
