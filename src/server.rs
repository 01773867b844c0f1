//! Start-up, one executor per core, one listener per shard, shutdown.
//!
//! Start-up, in order (each step logged): check io_uring and the
//! locked-memory limit; recover the catalog log and the WAL (verify every
//! segment, cut torn tails); then per shard, on its own pinned glommio
//! executor: open its WAL segment for this run, replay the WAL into its
//! store, connect the cross-shard channels, bind the listen address with
//! `SO_REUSEPORT` (the kernel spreads connections over the shards), and
//! report ready. Only when every shard is ready does the process print
//! `ringest: ready on <addr> (<n> shards)`.
//!
//! Shutdown: the first SIGTERM/SIGINT stops accepting, lets in-flight
//! requests finish within `shutdown_grace_ms`, syncs and closes the WALs,
//! and exits 0. A second signal exits at once.
//!
//! # Test only: injected storage faults
//!
//! When the environment variable [`TEST_FAULTS_ENV`]
//! (`RINGEST_TEST_FAULTS`) is set, its value is one
//! [`crate::wal::Fault`] (`fail-write:N`, `fail-sync:N`,
//! `enospc-write:N`, `enospc-preallocate:N`), armed in every shard's data
//! WAL (`wal/<shard>/`, not the catalog log) right after the WAL opened: `N`
//! counts that WAL's calls from its first batch of this run, so with one
//! writer `fail-sync:3` fails the third batch. It exists so that tests of
//! the real binary over real HTTP can fail real I/O; it is read once here,
//! logged at warn level, and a value that does not parse stops start-up.
//! Never set it in production: it makes the server fail on purpose.

use std::fmt;
use std::net::SocketAddr;
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use glommio::net::TcpListener;
use glommio::{Latency, LocalExecutorBuilder, Placement, Shares};

use crate::config::Config;
use crate::connection;
use crate::route::{self, MeshEnds, Peers};
use crate::shard::{self, CatalogOwner, Shard, ShardParts};
use crate::store::{ShardStore, StoreLimits};
use crate::wal::{self, Fault, FaultPlan, GlommioStorage, Wal, WalOptions};

/// Test-only environment variable: a storage fault to inject into every
/// shard's data WAL (see the module doc).
pub const TEST_FAULTS_ENV: &str = "RINGEST_TEST_FAULTS";

/// Why the server could not start. Each says what to do.
#[derive(Debug)]
pub enum StartError {
    IoUringUnavailable(std::io::Error),
    LockedMemoryTooLow {
        limit: u64,
        needed: u64,
    },
    NoCpus,
    DataDir {
        path: PathBuf,
        error: std::io::Error,
    },
    Recovery(String),
    Shard {
        shard: usize,
        error: String,
    },
    Signals(std::io::Error),
    /// [`TEST_FAULTS_ENV`] is set to something that is not a fault.
    TestFaults {
        value: String,
    },
    /// Another process holds `<data-dir>/LOCK`.
    DataDirInUse {
        path: PathBuf,
        holder: String,
    },
    /// Another socket listens on the address (`SO_REUSEPORT` would
    /// silently share the port with it).
    AddressInUse {
        addr: SocketAddr,
        error: std::io::Error,
    },
    /// `[object_store]`: not usable, refused, or another node's.
    ObjectStore(crate::remote::RemoteError),
}

impl From<crate::remote::RemoteError> for StartError {
    fn from(error: crate::remote::RemoteError) -> Self {
        StartError::ObjectStore(error)
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::IoUringUnavailable(error) => write!(
                f,
                "io_uring is not available ({error}). ringest needs it for all socket and disk I/O. \
                 Causes: a container seccomp profile that blocks io_uring_setup (run with a profile \
                 that allows it), the sysctl kernel.io_uring_disabled set to 1 or 2 (set it to 0), \
                 or a kernel older than 5.8 (upgrade)."
            ),
            StartError::LockedMemoryTooLow { limit, needed } => write!(
                f,
                "the locked-memory limit is {limit} bytes, but the shards need {needed} bytes of \
                 registered I/O memory. Raise it (LimitMEMLOCK= in the systemd unit, or ulimit -l) \
                 or lower server.io_memory_bytes / server.shards."
            ),
            StartError::NoCpus => write!(f, "no CPU is available in the process's affinity mask"),
            StartError::DataDir { path, error } => {
                write!(f, "data directory {}: {error}", path.display())
            }
            StartError::Recovery(detail) => write!(f, "recovery failed: {detail}"),
            StartError::ObjectStore(error) => write!(f, "{error}"),
            StartError::Shard { shard, error } => write!(f, "shard {shard} failed to start: {error}"),
            StartError::Signals(error) => write!(f, "cannot set up signal handling: {error}"),
            StartError::DataDirInUse { path, holder } => write!(
                f,
                "data directory {} is in use by another ringest ({holder}); \
                 stop it or choose another --data-dir",
                path.display()
            ),
            StartError::AddressInUse { addr, error } => write!(
                f,
                "cannot listen on {addr}: {error}; another process listens there \
                 (stop it or choose another --listen)"
            ),
            StartError::TestFaults { value } => write!(
                f,
                "{TEST_FAULTS_ENV}={value:?} is not a fault (fail-write:N, fail-sync:N, \
                 enospc-write:N or enospc-preallocate:N, N >= 1); it is for tests only: unset it"
            ),
        }
    }
}

/// Reads [`TEST_FAULTS_ENV`] once. Unset or empty: no fault.
fn test_fault() -> Result<Option<Fault>, StartError> {
    let Some(value) = std::env::var_os(TEST_FAULTS_ENV) else {
        return Ok(None);
    };
    let value = value.to_string_lossy().into_owned();
    if value.is_empty() {
        return Ok(None);
    }
    let fault = value.parse::<Fault>().map_err(|_| StartError::TestFaults {
        value: value.clone(),
    })?;
    tracing::warn!(
        fault = %value,
        "{TEST_FAULTS_ENV} is set: every shard WAL will FAIL ON PURPOSE as told (test only; unset it in production)"
    );
    Ok(Some(fault))
}

/// Takes `<data-dir>/LOCK` (an exclusive `flock`, released by the kernel
/// when the process dies, `kill -9` included) and writes our pid into it.
/// Two processes on one data directory would create the same WAL segment
/// names and truncate each other's tails at recovery. The file must stay
/// open for the life of the process.
// Start-up on the main thread, before any executor runs: std::fs is fine.
#[allow(clippy::disallowed_methods)]
fn lock_data_dir(data_dir: &std::path::Path) -> Result<std::fs::File, StartError> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    let path = data_dir.join("LOCK");
    let data_dir_error = |error| StartError::DataDir {
        path: path.clone(),
        error,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(data_dir_error)?;
    // SAFETY: flock(2) on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(data_dir_error(error));
        }
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = match holder.trim() {
            "" => "pid unknown".to_string(),
            pid => format!("pid {pid}"),
        };
        return Err(StartError::DataDirInUse {
            path: data_dir.to_path_buf(),
            holder,
        });
    }
    file.set_len(0).map_err(data_dir_error)?;
    file.rewind().map_err(data_dir_error)?;
    writeln!(file, "{}", std::process::id()).map_err(data_dir_error)?;
    Ok(file)
}

/// Fails if another socket already listens on `addr`: every shard binds
/// it with `SO_REUSEPORT`, which would quietly split the connections with
/// that other process. The probe (std's bind: `SO_REUSEADDR` only, so a
/// previous run's TIME_WAIT connections do not count) is closed at once.
///
/// A previous run killed a moment ago (SIGKILL, a crash) still holds its
/// listeners for a few milliseconds after it was reaped: the kernel tears
/// its io_uring down asynchronously, and the ring holds the sockets
/// (measured: 5-10 ms). So the address is tried again for up to
/// [`LISTEN_RETRY_US`] before it counts as taken: a supervisor restarting
/// at once must not fail.
fn probe_listen_address(addr: SocketAddr) -> Result<(), StartError> {
    if addr.port() == 0 {
        return Ok(());
    }
    let started = crate::clock::monotonic();
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(_listener) => return Ok(()),
            Err(error)
                if error.kind() == std::io::ErrorKind::AddrInUse
                    && crate::clock::elapsed_us(started) < LISTEN_RETRY_US =>
            {
                // Start-up, before any executor runs: sleeping blocks nothing.
                #[allow(clippy::disallowed_methods)]
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(error) => return Err(StartError::AddressInUse { addr, error }),
        }
    }
}

/// How long a taken listen address is tried again at start, µs ([`probe_listen_address`]).
const LISTEN_RETRY_US: u64 = 2_000_000;

/// Checks that io_uring can be set up at all.
fn probe_io_uring() -> Result<(), StartError> {
    io_uring::IoUring::new(8)
        .map(drop)
        .map_err(StartError::IoUringUnavailable)
}

fn locked_memory_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    (rc == 0).then_some(limit.rlim_cur)
}

/// The CPUs to run shards on: the process's affinity mask.
fn cpus() -> Vec<usize> {
    core_affinity::get_core_ids()
        .map(|ids| ids.into_iter().map(|id| id.id).collect())
        .unwrap_or_default()
}

/// Blocks SIGTERM, SIGINT (and ignores SIGPIPE) in this thread, so every
/// thread spawned afterwards inherits the mask and `sigwait` in the main
/// thread receives them.
fn block_signals() -> Result<libc::sigset_t, StartError> {
    // SAFETY: plain POSIX signal-mask calls on a local sigset_t.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(StartError::Signals(std::io::Error::from_raw_os_error(rc)));
        }
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        Ok(set)
    }
}

fn wait_signal(set: &libc::sigset_t) -> i32 {
    let mut signal = 0;
    // SAFETY: sigwait reads the set and writes the signal number.
    unsafe {
        libc::sigwait(set, &mut signal);
    }
    signal
}

/// Binds `addr` with SO_REUSEPORT and the configured backlog.
fn bind_listener(addr: SocketAddr, backlog: u32) -> std::io::Result<(TcpListener, i32)> {
    let domain = if addr.is_ipv6() {
        libc::AF_INET6
    } else {
        libc::AF_INET
    };
    // SAFETY: socket/setsockopt/bind/listen on a descriptor we own; the
    // sockaddr structs are fully initialised and sized; on any error the
    // descriptor is closed before returning.
    unsafe {
        let fd = libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fail = |fd| {
            let error = std::io::Error::last_os_error();
            libc::close(fd);
            Err(error)
        };
        let one: libc::c_int = 1;
        let size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        for option in [libc::SO_REUSEPORT, libc::SO_REUSEADDR] {
            if libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                (&one as *const libc::c_int).cast(),
                size,
            ) != 0
            {
                return fail(fd);
            }
        }
        let rc = match addr {
            SocketAddr::V4(v4) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: v4.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(v4.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                libc::bind(
                    fd,
                    (&sin as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
            SocketAddr::V6(v6) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: v6.port().to_be(),
                    sin6_flowinfo: v6.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: v6.ip().octets(),
                    },
                    sin6_scope_id: v6.scope_id(),
                };
                libc::bind(
                    fd,
                    (&sin6 as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        };
        if rc != 0 {
            return fail(fd);
        }
        if libc::listen(fd, backlog.min(i32::MAX as u32) as libc::c_int) != 0 {
            return fail(fd);
        }
        Ok((TcpListener::from_raw_fd(fd), fd))
    }
}

/// Everything a shard's thread needs, moved into it.
struct ShardSeed {
    id: usize,
    count: usize,
    cpu: Option<usize>,
    config: Config,
    generation: u64,
    catalog: crate::catalog::Catalog,
    /// The persisted catalog as found at start.
    manifest: Arc<crate::persist::manifest::Manifest>,
    ends: MeshEnds,
    shutdown: Arc<AtomicBool>,
    ready: mpsc::Sender<Result<usize, String>>,
    heartbeats: Arc<crate::notify::Heartbeats>,
    /// Test only ([`TEST_FAULTS_ENV`]): armed in this shard's data WAL.
    fault: Option<Fault>,
    remote: Option<Arc<crate::remote::Remote>>,
}

/// Keeps freed heap memory of request-sized buffers for reuse instead of
/// returning it to the kernel, but not that of large bodies.
///
/// Every request allocates a few buffers of hundreds of KiB to a few MiB
/// (sub-batches, WAL group buffers, small bodies). With glibc's defaults
/// each comes from a fresh `mmap` (or a heap top that was just trimmed),
/// and first touching its pages costs a page fault and a zeroed page per
/// 4 KiB: 10 % of the server's CPU under load. Fixed thresholds make
/// allocations below `MMAP_THRESHOLD` come from the (per-thread) heaps and
/// stay there once freed, so the steady state reuses warm pages.
///
/// Larger ones (bodies of many MiB; sub-batches are sealed at
/// `wal.batch_bytes_max / 2`, 4 MiB by default) are mapped and unmapped:
/// kept in the heaps, a storm of them made its peak permanent, and the
/// heaps of several threads fragmented into far more than the in-flight
/// budget (issue 17: +5.4 GB RSS). Their page faults are a small cost
/// next to reading that many bytes from a socket.
fn keep_freed_memory() {
    const MIB: libc::c_int = 1024 * 1024;
    const MMAP_THRESHOLD: libc::c_int = 8 * MIB;
    // SAFETY: mallopt only changes allocator parameters; it is called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 * MIB);
    }
}

/// Creates the data directory if needed and returns its absolute,
/// canonical path. Done once, first: every later step (the lock, recovery,
/// each shard's WAL opened on its own executor thread) then sees the same
/// absolute path, whatever the working directory. A relative path reached
/// glommio's directory calls relative to no directory at all (`EBADF`).
// Start-up on the main thread, before any executor runs: std::fs is fine.
#[allow(clippy::disallowed_methods)]
fn resolve_data_dir(data_dir: &Path) -> Result<PathBuf, StartError> {
    let data_dir_error = |error| StartError::DataDir {
        path: data_dir.to_path_buf(),
        error,
    };
    std::fs::create_dir_all(data_dir).map_err(data_dir_error)?;
    std::fs::canonicalize(data_dir).map_err(data_dir_error)
}

/// Runs the server until a signal. Returns when shut down cleanly.
pub fn run(mut config: Config) -> Result<(), StartError> {
    config.server.data_dir = resolve_data_dir(&config.server.data_dir)?;
    tracing::info!(data_dir = %config.server.data_dir.display(), "data directory");
    probe_io_uring()?;
    keep_freed_memory();
    let fault = test_fault()?;
    let available = cpus();
    let count = match config.server.shards {
        0 => available.len(),
        n => n,
    };
    if count == 0 {
        return Err(StartError::NoCpus);
    }
    let needed = (count * config.server.io_memory_bytes) as u64;
    if let Some(limit) = locked_memory_limit() {
        if limit != libc::RLIM_INFINITY && limit < needed {
            return Err(StartError::LockedMemoryTooLow { limit, needed });
        }
    }
    let data_dir = config.server.data_dir.clone();
    let wal_root = data_dir.join("wal");
    let catalog_dir = data_dir.join("catalog");
    for dir in [&data_dir, &wal_root, &catalog_dir] {
        // Start-up on the main thread, before any executor runs.
        #[allow(clippy::disallowed_methods)]
        std::fs::create_dir_all(dir).map_err(|error| StartError::DataDir {
            path: dir.clone(),
            error,
        })?;
    }
    let _data_dir_lock = lock_data_dir(&data_dir)?;
    probe_listen_address(config.server.listen)?;
    tracing::info!(shards = count, data_dir = %data_dir.display(), "starting");
    crate::notify::status("recovering the catalog and the WAL");
    let catalog = shard::recover_catalog(&catalog_dir, config.wal.skip_corrupt)
        .map_err(StartError::Recovery)?;
    tracing::info!(databases = catalog.databases.len(), "catalog recovered");
    let mut manifest = load_manifest(&data_dir, config.object_store.url.is_some())?;
    let remote = start_remote(&config, &data_dir, &mut manifest)?;
    let manifest = Arc::new(manifest);
    wal::recover(&wal_root, config.wal.skip_corrupt)
        .map_err(|e| StartError::Recovery(e.to_string()))?;
    let generation = wal::next_generation(&wal_root).map_err(|error| StartError::DataDir {
        path: wal_root.clone(),
        error,
    })?;
    tracing::info!(generation, "WAL verified");

    let signals = block_signals()?;
    let shutdown = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel();
    let heartbeats = crate::notify::Heartbeats::new(count);
    let mut handles = Vec::with_capacity(count);
    for (id, ends) in route::mesh(count, config.backpressure.channel_capacity)
        .into_iter()
        .enumerate()
    {
        let seed = ShardSeed {
            id,
            count,
            cpu: (config.server.pin_cpus && !available.is_empty())
                .then(|| available[id % available.len()]),
            config: config.clone(),
            generation,
            catalog: catalog.clone(),
            manifest: manifest.clone(),
            ends,
            shutdown: shutdown.clone(),
            ready: ready_tx.clone(),
            heartbeats: heartbeats.clone(),
            fault,
            remote: remote.as_ref().map(|(remote, ..)| remote.clone()),
        };
        let placement = match seed.cpu {
            Some(cpu) => Placement::Fixed(cpu),
            None => Placement::Unbound,
        };
        let builder = LocalExecutorBuilder::new(placement)
            .name(&format!("ringest-shard-{id}"))
            .io_memory(config.server.io_memory_bytes)
            .ring_depth(config.server.ring_depth);
        let handle = builder
            .spawn(move || shard_main(seed))
            .map_err(|e| StartError::Shard {
                shard: id,
                error: e.to_string(),
            })?;
        handles.push(handle);
    }
    drop(ready_tx);
    for _ in 0..count {
        match ready_rx.recv() {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                shutdown.store(true, Ordering::Relaxed);
                return Err(StartError::Shard { shard: 0, error });
            }
            Err(_) => {
                return Err(StartError::Shard {
                    shard: 0,
                    error: "a shard thread exited during start-up".into(),
                })
            }
        }
    }
    println!(
        "ringest: ready on {} ({count} shards)",
        config.server.listen
    );
    tracing::info!(listen = %config.server.listen, shards = count, "ready");
    crate::notify::ready(&format!(
        "ready on {} ({count} shards)",
        config.server.listen
    ));
    let watchdog = crate::notify::spawn_watchdog(heartbeats, shutdown.clone());

    let signal = wait_signal(&signals);
    tracing::info!(
        signal,
        "shutting down: no new connections, finishing in-flight requests"
    );
    crate::notify::stopping("draining in-flight requests");
    shutdown.store(true, Ordering::Relaxed);
    // A second signal ends the process at once.
    std::thread::spawn(move || {
        let signal = wait_signal(&signals);
        tracing::warn!(signal, "second signal: exiting now");
        // SAFETY: _exit ends the process at once, skipping destructors and
        // atexit handlers, which is the point of a second signal.
        unsafe { libc::_exit(130) }
    });
    for handle in handles {
        let _ = handle.join();
    }
    if let Some((remote, runtime, uploader)) = remote {
        // The last snapshots' files, if the store answers within the grace
        // (a round already waiting on an unreachable store is not waited
        // for past it: the WAL keeps what is not uploaded, the next start
        // uploads it).
        remote.stop();
        let grace = Duration::from_millis(config.server.shutdown_grace_ms);
        let _ = runtime.block_on(async { tokio::time::timeout(grace, uploader).await });
        runtime.shutdown_timeout(Duration::from_secs(1));
    }
    if let Some(watchdog) = watchdog {
        let _ = watchdog.join();
    }
    tracing::info!("stopped");
    Ok(())
}

/// The object store's shared state, its runtime and the uploader's task.
type RemoteRunning = (
    Arc<crate::remote::Remote>,
    tokio::runtime::Runtime,
    tokio::task::JoinHandle<()>,
);

/// With `[object_store] url`: binds this data directory to its node (the
/// manifest's `node`, written before anything is uploaded), checks the
/// bucket answers and holds no other data directory's files under the
/// node id, publishes the manifest found at start (its files may not all be
/// uploaded yet) and starts the uploader ([`crate::remote`]).
fn start_remote(
    config: &Config,
    data_dir: &Path,
    manifest: &mut crate::persist::manifest::Manifest,
) -> Result<Option<RemoteRunning>, StartError> {
    use crate::persist::{layout, manifest::NodeEntry};
    use crate::remote;
    let Some(configured) = remote::configure(&config.object_store)? else {
        return Ok(None);
    };
    let root = data_dir.join(layout::PARQUET_DIR);
    let node_id = configured.target.node_id.clone();
    match &manifest.node {
        Some(node) if node.id == node_id => {}
        Some(node) if !manifest.files.is_empty() => {
            return Err(remote::RemoteError::Config(format!(
                "this data directory writes as node_id {:?} ({} files are under that name in \
                 the bucket); object_store.node_id is {node_id:?}. Set it back, or start a \
                 new data directory for the new name",
                node.id,
                manifest.files.len()
            ))
            .into());
        }
        _ => {
            manifest.node = Some(NodeEntry {
                id: node_id.clone(),
                token: remote::new_token(),
            });
            crate::persist::manifest::store(&root, manifest).map_err(|error| {
                StartError::DataDir {
                    path: root.clone(),
                    error,
                }
            })?;
        }
    }
    let token = manifest
        .node
        .as_ref()
        .map(|n| n.token.clone())
        .unwrap_or_default();
    let runtime = remote::runtime()?;
    let listing = remote::probe(&runtime, &configured, &token, manifest)?;
    warn_if_wal_budget_exceeds_disk(config, data_dir);
    tracing::info!(
        url = %configured.target.url,
        node_id = %node_id,
        reachable = listing.is_some(),
        objects = listing.as_ref().map_or(0, |l| l.objects.len()),
        "object store"
    );
    let shared = Arc::new(remote::Remote::new(
        configured.target.clone(),
        configured.store,
        runtime.handle().clone(),
    ));
    shared.publish(remote::FIRST_VERSION, manifest.clone());
    let uploader = remote::uploader::start(
        &runtime,
        remote::uploader::Uploader {
            remote: shared.clone(),
            parquet_root: root,
            part_bytes: config.object_store.part_bytes,
            token,
            listing,
            owned: Default::default(),
            grace: Duration::from_millis(config.server.shutdown_grace_ms),
            local_bytes_max: config.object_store.local_bytes_max,
        },
    );
    Ok(Some((shared, runtime, uploader)))
}

/// While the object store is away the WAL is kept (the module doc of
/// [`crate::remote`]): writes are refused with 503 once it reaches
/// `wal.wal_bytes_max` per shard. If the disk is smaller than that, it
/// fills first, and a full disk fails the WAL for good (until a restart).
fn warn_if_wal_budget_exceeds_disk(config: &Config, data_dir: &Path) {
    let Ok(path) = std::ffi::CString::new(data_dir.as_os_str().as_encoded_bytes()) else {
        return;
    };
    // SAFETY: statvfs fills the zeroed struct from a NUL-terminated path.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return;
    }
    let available = stat.f_bavail as u64 * stat.f_frsize as u64;
    let shards = match config.server.shards {
        0 => cpus().len().max(1),
        n => n,
    } as u64;
    let budget = config.wal.wal_bytes_max.saturating_mul(shards);
    if budget > available {
        tracing::warn!(
            wal_bytes_max = config.wal.wal_bytes_max,
            shards,
            available,
            "the WAL may grow to wal.wal_bytes_max per shard while the object store is \
             unreachable, more than the free space of the data directory: a long outage \
             would fill the disk (writes then fail until a restart) before writes are \
             refused with 503; set wal.wal_bytes_max below the free space divided by the shards"
        );
    }
}

/// Reads the persisted catalog and cleans what a crash left under the
/// Parquet directory (the crash table in [`crate::persist`]).
// Start-up on the main thread, before any executor runs.
#[allow(clippy::disallowed_methods)]
fn load_manifest(
    data_dir: &Path,
    remote_configured: bool,
) -> Result<crate::persist::manifest::Manifest, StartError> {
    use crate::persist::{layout, manifest};
    let root = data_dir.join(layout::PARQUET_DIR);
    let loaded = manifest::load(&root).map_err(|e| StartError::Recovery(e.to_string()))?;
    if !root.join(layout::MANIFEST_FILE).exists() {
        // A fresh data directory: the (empty) manifest exists before any
        // Parquet file, so a missing manifest beside files always means
        // damage, never a first snapshot that crashed.
        manifest::store(&root, &loaded).map_err(|error| StartError::DataDir {
            path: root.clone(),
            error,
        })?;
    }
    let report = manifest::clean(&root, &loaded).map_err(|error| StartError::DataDir {
        path: root.clone(),
        error,
    })?;
    if report.tmp_removed + report.orphans_removed > 0 {
        tracing::info!(
            unfinished = report.tmp_removed,
            unrecorded = report.orphans_removed,
            "removed Parquet files of snapshots that did not complete (their rows are in the WAL)"
        );
    }
    if remote_configured && !report.missing.is_empty() {
        tracing::info!(
            files = report.missing.len(),
            "Parquet files only in the object store (object_store.local_bytes_max): fetched when read"
        );
    }
    for missing in report.missing.iter().filter(|_| !remote_configured) {
        tracing::error!(
            file = %root.join(missing).display(),
            "a Parquet file the persisted catalog names is missing: queries that need it fail"
        );
    }
    tracing::info!(
        files = loaded.files.len(),
        floor_generation = loaded.wal.floor_generation,
        "persisted catalog loaded"
    );
    Ok(loaded)
}

/// One shard's life on its executor.
async fn shard_main(seed: ShardSeed) {
    let ready = seed.ready.clone();
    let id = seed.id;
    let heartbeats = seed.heartbeats.clone();
    match start_shard(seed).await {
        Ok((shard, listener)) => {
            // The watchdog pings systemd only while every shard's executor
            // keeps running this task.
            glommio::spawn_local(async move {
                loop {
                    heartbeats.beat(id);
                    glommio::timer::sleep(Duration::from_millis(100)).await;
                }
            })
            .detach();
            // Retention: drop expired in-memory rows every second, on the
            // query queue so that it never delays ingest.
            let expiry = glommio::spawn_local_into(shard.clone().run_expiry(), shard.query_queue);
            if let Ok(task) = expiry {
                task.detach();
            }
            let _ = ready.send(Ok(id));
            drop(ready);
            accept_loop(shard, listener).await;
        }
        Err(error) => {
            let _ = ready.send(Err(format!("shard {id}: {error}")));
        }
    }
}

async fn start_shard(seed: ShardSeed) -> Result<(Rc<Shard>, (TcpListener, i32)), String> {
    let generation = seed.generation;
    let config = Rc::new(seed.config);
    let data_dir = &config.server.data_dir;
    let wal_root = data_dir.join("wal");
    let wal_options = |dir: PathBuf| WalOptions {
        dir,
        generation: seed.generation,
        segment_bytes: config.wal.segment_bytes,
        batch_bytes_max: config.wal.batch_bytes_max,
        pending_bytes_max: config.wal.pending_bytes_max,
        wal_bytes_max: config.wal.wal_bytes_max,
        batch_delay: Duration::from_micros(config.wal.batch_delay_us),
        spare_segment: true,
        prezero_spare: config.wal.prezero_segments,
        segment_retry: Duration::from_secs(1),
    };
    let plan = seed.fault.map(|fault| (FaultPlan::new(), fault));
    let storage = match &plan {
        Some((plan, _)) => GlommioStorage::with_faults(plan.clone()),
        None => GlommioStorage::new(),
    };
    let wal = Wal::open_with(wal_options(wal_root.join(seed.id.to_string())), storage)
        .await
        .map_err(|e| format!("open WAL: {e}"))?;
    if let Some((plan, fault)) = plan {
        // Armed after open: call numbers count from this run's first batch.
        plan.inject(fault);
    }
    let owner = if seed.id == route::CATALOG_OWNER {
        // The catalog log rarely rotates: no spare segment for it.
        let catalog_options = WalOptions {
            spare_segment: false,
            ..wal_options(data_dir.join("catalog"))
        };
        let catalog_wal = Wal::open(catalog_options)
            .await
            .map_err(|e| format!("open catalog WAL: {e}"))?;
        Some(CatalogOwner {
            catalog: std::cell::RefCell::new(seed.catalog.clone()),
            wal: catalog_wal,
            manifest: std::cell::RefCell::new((*seed.manifest).clone()),
            manifest_lock: glommio::sync::Semaphore::new(1),
            final_commits: std::cell::Cell::new(0),
            version: std::cell::Cell::new(crate::remote::FIRST_VERSION),
        })
    } else {
        None
    };
    let store = ShardStore::new(StoreLimits {
        memory_bytes_max: config.store.memory_bytes_max,
        chunk_rows: config.store.chunk_rows,
    });
    let query_queue = glommio::executor().create_task_queue(
        Shares::Static(100),
        Latency::Matters(Duration::from_millis(10)),
        "query",
    );
    let persist_queue = glommio::executor().create_task_queue(
        Shares::Static(100),
        Latency::NotImportant,
        "persist",
    );
    let (peers, receivers) = Peers::connect(seed.ends).await;
    let shard = Shard::new(ShardParts {
        id: seed.id,
        count: seed.count,
        config: config.clone(),
        wal,
        store,
        catalog: seed.catalog,
        owner,
        peers,
        query_queue,
        shutdown: seed.shutdown,
        // Its own files; files written under another shard count are read
        // by every shard, each keeping the series it owns now.
        // Oldest first (the manifest lists a compaction's file last).
        files: {
            let mut files: Vec<crate::persist::manifest::FileEntry> = seed
                .manifest
                .files
                .iter()
                .filter(|f| f.shard_count as usize != seed.count || f.shard as usize == seed.id)
                .cloned()
                .collect();
            files.sort_by_key(crate::persist::manifest::FileEntry::age);
            files
        },
        generation,
        remote: seed.remote,
    });
    replay(&shard, &wal_root, generation, &seed.manifest.wal)?;
    let handler = {
        let shard = shard.clone();
        Rc::new(move |message| shard.handle(message))
    };
    route::serve_inbox(receivers, handler);
    crate::persister::spawn(&shard, persist_queue);
    let listener = bind_listener(config.server.listen, config.server.listen_backlog)
        .map_err(|e| format!("bind {}: {e}", config.server.listen))?;
    Ok((shard, listener))
}

/// Feeds this shard's rows from every WAL directory into its store.
/// Records (and rows) the manifest says are persisted are skipped.
fn replay(
    shard: &Rc<Shard>,
    wal_root: &Path,
    generation: u64,
    persisted: &crate::persist::manifest::WalState,
) -> Result<(), String> {
    let mut refused = None;
    let mut skipped = 0u64;
    let stats = wal::replay_before(wal_root, generation, |record| {
        if refused.is_some() {
            return;
        }
        // A persisted record is still read for the definitions later
        // records of its segment use ([`crate::packed`]), but keeps no row.
        let done = persisted.record_persisted(record.generation, record.shard, record.sequence.0);
        skipped += u64::from(done);
        if let Err(error) = shard.replay_record(&record, done, persisted) {
            refused = Some(format!(
                "replay: WAL directory {:?}, generation {}, sequence {}: {error} \
                 (start with wal.skip_corrupt = true to skip such records)",
                record.dir, record.generation, record.sequence.0
            ));
        }
    })
    .map_err(|e| format!("replay: {e}"))?;
    shard.replay_done();
    if let Some(error) = refused {
        return Err(error);
    }
    tracing::info!(
        shard = shard.id,
        records = stats.records,
        skipped_persisted = skipped,
        "WAL replayed into the store"
    );
    Ok(())
}

async fn accept_loop(shard: Rc<Shard>, (listener, fd): (TcpListener, i32)) {
    // On shutdown, a watcher shuts the listening socket down, which makes
    // the pending accept fail; the loop then sees the flag and stops.
    let watcher = {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            while !shard.shutting_down() {
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
            // SAFETY: shutdown(2) on the listener's descriptor, which stays
            // open until the accept loop below drops the listener.
            unsafe {
                libc::shutdown(fd, libc::SHUT_RDWR);
            }
        })
    };
    while !shard.shutting_down() {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(error) => {
                if !shard.shutting_down() {
                    tracing::warn!(shard = shard.id, %error, "accept failed");
                }
                continue;
            }
        };
        match shard.admission.admit_connection() {
            Some(permit) => {
                glommio::spawn_local(connection::serve(shard.clone(), stream, permit)).detach();
            }
            None => {
                let shard = shard.clone();
                glommio::spawn_local(async move { connection::refuse(&shard, stream).await })
                    .detach();
            }
        }
    }
    watcher.await;
    drop(listener);
    // Let in-flight requests finish, within the grace period.
    let deadline =
        crate::clock::monotonic() + Duration::from_millis(shard.config.server.shutdown_grace_ms);
    while shard.admission.connections() > 0 && crate::clock::monotonic() < deadline {
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
    if shard.config.persist.enabled {
        // What is in memory goes to Parquet, so a clean restart replays
        // nothing; a failure leaves it in the WAL (replayed at start).
        // Bounded: the owner that records it may already be gone.
        let grace = Duration::from_millis(shard.config.server.shutdown_grace_ms);
        let last = futures_lite::future::or(crate::persister::snapshot(&shard, true), async {
            glommio::timer::sleep(grace).await;
            Err(format!("not recorded within {} ms", grace.as_millis()))
        });
        if let Err(error) = last.await {
            tracing::warn!(shard = shard.id, %error, "last snapshot failed; the WAL keeps the rows");
        }
        if let Some(owner) = &shard.owner {
            // The other shards record their last snapshots through this one.
            let others = shard.count - 1;
            while owner.final_commits.get() < others
                && crate::clock::monotonic()
                    < deadline + Duration::from_millis(shard.config.server.shutdown_grace_ms)
            {
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    shard.wal.close().await;
    if let Some(owner) = &shard.owner {
        owner.wal.close().await;
    }
    tracing::info!(shard = shard.id, "shard stopped");
}
