//! `ringest tune --data-dir DIR`: measure this machine and its data disk,
//! then recommend one of the profiles in `tuning/`, with the reasons.
//!
//! Owns: the measurements (CPUs, NUMA nodes, memory and any cgroup limit,
//! `fdatasync` latency and sequential write bandwidth of the data disk, the
//! host settings the profiles depend on) and the recommendation rule.
//!
//! This is a one-shot command run before installing, not shard code: plain
//! blocking `std::fs` I/O is the point (it measures what a sync costs). The
//! only file it creates is `DIR/.ringest-tune-<pid>.tmp`, removed on every
//! path out. The rule ([`recommend`]) is a pure function of the
//! measurements, so it is tested with made-up machines.

// A one-shot CLI command, not shard code (module doc): blocking std::fs and
// measuring a sync's wall time are the point.
#![allow(clippy::disallowed_methods)]

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::clock;
use crate::config::{Config, Overrides, PROFILES};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// Size of one latency probe write: one page, the smallest WAL append.
pub const SYNC_WRITE_BYTES: usize = 4096;
/// Size of one write of the bandwidth probe.
pub const BANDWIDTH_WRITE_BYTES: usize = MIB as usize;
/// Limits on the options, so a typo cannot fill a disk or run for hours.
pub const SYNC_COUNT_MAX: usize = 100_000;
pub const WRITE_BYTES_MAX: u64 = 64 * GIB;
/// Share of the memory limit the profile's worst-case budgets may take.
const MEMORY_SHARE_PERCENT: u64 = 75;
/// At or above this median sync latency a disk counts as slow.
const SLOW_SYNC_P50_US: u64 = 2_000;
/// Below this sequential bandwidth a disk counts as slow.
const SLOW_WRITE_BYTES_PER_SECOND: f64 = 200.0 * 1e6;

/// Profiles that ship a `tuning/<name>.sysctl.conf` fragment (checked
/// against the directory by a test).
pub const SYSCTL_PROFILES: &[&str] = &["default", "small-vm"];

/// What to measure.
#[derive(Clone, Debug)]
pub struct TuneOptions {
    pub data_dir: PathBuf,
    /// Number of 4 KiB write + `fdatasync` probes.
    pub sync_count: usize,
    /// Bytes written for the bandwidth probe.
    pub write_bytes: u64,
}

impl TuneOptions {
    pub fn new(data_dir: PathBuf) -> TuneOptions {
        TuneOptions {
            data_dir,
            sync_count: 200,
            write_bytes: 256 * MIB,
        }
    }
}

/// Why `ringest tune` could not measure.
#[derive(Debug)]
pub enum TuneError {
    /// `--sync-count` or `--write-bytes` out of range.
    Option { name: &'static str, detail: String },
    /// The data directory cannot be created or inspected.
    DataDir { path: PathBuf, error: io::Error },
    /// Not enough free space for the bandwidth probe.
    NoSpace {
        path: PathBuf,
        free: u64,
        needed: u64,
    },
    /// The probe file could not be written or synced.
    Probe { path: PathBuf, error: io::Error },
    /// Writing the report failed (closed stdout).
    Output(io::Error),
}

impl fmt::Display for TuneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TuneError::Option { name, detail } => write!(f, "--{name}: {detail}"),
            TuneError::DataDir { path, error } => write!(f, "{}: {error}", path.display()),
            TuneError::NoSpace { path, free, needed } => write!(
                f,
                "{}: {} free, the write probe needs {} (lower --write-bytes)",
                path.display(),
                bytes(*free),
                bytes(*needed)
            ),
            TuneError::Probe { path, error } => write!(f, "probe {}: {error}", path.display()),
            TuneError::Output(error) => write!(f, "cannot write the report: {error}"),
        }
    }
}

impl std::error::Error for TuneError {}

/// The machine, as far as the profiles care.
#[derive(Clone, Debug, PartialEq)]
pub struct Machine {
    /// CPUs online (`/sys/devices/system/cpu/online`).
    pub cpus_online: usize,
    /// CPUs in this process's affinity mask: the shards `shards = 0` starts.
    pub cpus_allowed: usize,
    /// NUMA nodes (`/sys/devices/system/node/node*`); 1 when not exposed.
    pub numa_nodes: usize,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
    /// cgroup v2 `memory.max` of this process, when set.
    pub cgroup_memory_max_bytes: Option<u64>,
    /// Current `net.core.somaxconn` (caps every listen backlog).
    pub somaxconn: Option<u64>,
    /// Current soft `RLIMIT_MEMLOCK`; `None` = unlimited.
    pub memlock_bytes: Option<u64>,
}

impl Machine {
    /// The memory the process may really use.
    pub fn memory_limit_bytes(&self) -> u64 {
        match self.cgroup_memory_max_bytes {
            Some(max) => max.min(self.memory_total_bytes),
            None => self.memory_total_bytes,
        }
    }
}

/// The data disk's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct Disk {
    /// File system type name (`ext4`, `xfs`, `tmpfs`, …).
    pub filesystem: &'static str,
    pub syncs: usize,
    pub sync_p50_us: u64,
    pub sync_p99_us: u64,
    pub sync_max_us: u64,
    pub write_bytes: u64,
    /// Time to write `write_bytes` and `fdatasync` them.
    pub write_duration: Duration,
}

impl Disk {
    pub fn write_bytes_per_second(&self) -> f64 {
        self.write_bytes as f64 / self.write_duration.as_secs_f64().max(1e-9)
    }
}

/// A profile name from `tuning/` and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Recommendation {
    pub profile: &'static str,
    pub reasons: Vec<String>,
    /// Host changes that would help whichever profile runs.
    pub notes: Vec<String>,
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Counts CPUs in a kernel CPU list such as `0-3,8,10-11`.
pub fn count_cpu_list(list: &str) -> usize {
    list.split(',')
        .filter(|part| !part.trim().is_empty())
        .map(|part| match part.trim().split_once('-') {
            Some((a, b)) => match (a.parse::<usize>(), b.parse::<usize>()) {
                (Ok(a), Ok(b)) if b >= a => b - a + 1,
                _ => 0,
            },
            None => usize::from(part.trim().parse::<usize>().is_ok()),
        })
        .sum()
}

/// A `/proc/meminfo` value (`MemTotal:  24683656 kB`) in bytes.
pub fn meminfo_bytes(meminfo: &str, key: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib * KIB)
    })
}

fn cgroup_memory_max() -> Option<u64> {
    // cgroup v2: "0::/system.slice/ringest.service" names our group.
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    let value = read_trimmed(&format!("/sys/fs/cgroup{path}/memory.max"))
        .or_else(|| read_trimmed("/sys/fs/cgroup/memory.max"))?;
    value.parse().ok()
}

fn memlock_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    (rc == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// Reads the machine's figures (no side effects).
pub fn measure_machine() -> Machine {
    let allowed = core_affinity::get_core_ids().map_or(0, |ids| ids.len());
    let online = read_trimmed("/sys/devices/system/cpu/online")
        .map(|list| count_cpu_list(&list))
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let numa_nodes = std::fs::read_dir("/sys/devices/system/node")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name.strip_prefix("node")
                        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                })
                .count()
        })
        .unwrap_or(0)
        .max(1);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    Machine {
        cpus_online: online,
        cpus_allowed: if allowed == 0 { online } else { allowed },
        numa_nodes,
        memory_total_bytes: meminfo_bytes(&meminfo, "MemTotal").unwrap_or(0),
        memory_available_bytes: meminfo_bytes(&meminfo, "MemAvailable").unwrap_or(0),
        cgroup_memory_max_bytes: cgroup_memory_max(),
        somaxconn: read_trimmed("/proc/sys/net/core/somaxconn").and_then(|v| v.parse().ok()),
        memlock_bytes: memlock_limit(),
    }
}

/// Free bytes and file system type of the file system holding `dir`.
fn statfs(dir: &Path) -> io::Result<(u64, &'static str)> {
    let c_path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: statfs fills the zeroed struct; the path is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; both pointers are valid for the call.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // f_type's width differs by target.
    let name = match st.f_type as u64 {
        0xEF53 => "ext4",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x0102_1994 => "tmpfs",
        0x794C_7630 => "overlayfs",
        0x2FC1_2FC1 => "zfs",
        0x6969 => "nfs",
        0xF2F5_2010 => "f2fs",
        _ => "other",
    };
    #[allow(clippy::unnecessary_cast)]
    let free = (st.f_bavail as u64).saturating_mul(st.f_bsize as u64);
    Ok((free, name))
}

/// The probe file; removed when dropped.
struct ProbeFile {
    path: PathBuf,
    file: File,
}

impl Drop for ProbeFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn percentile(sorted: &[u64], percent: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (sorted.len() * percent).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

/// Measures `fdatasync` latency and sequential write bandwidth in the
/// data directory (created if missing).
pub fn measure_disk(options: &TuneOptions) -> Result<Disk, TuneError> {
    if options.sync_count == 0 || options.sync_count > SYNC_COUNT_MAX {
        return Err(TuneError::Option {
            name: "sync-count",
            detail: format!("must be between 1 and {SYNC_COUNT_MAX}"),
        });
    }
    if options.write_bytes < MIB || options.write_bytes > WRITE_BYTES_MAX {
        return Err(TuneError::Option {
            name: "write-bytes",
            detail: format!("must be between 1 MiB and {}", bytes(WRITE_BYTES_MAX)),
        });
    }
    let dir = &options.data_dir;
    let dir_error = |error| TuneError::DataDir {
        path: dir.clone(),
        error,
    };
    std::fs::create_dir_all(dir).map_err(dir_error)?;
    let (free, filesystem) = statfs(dir).map_err(dir_error)?;
    let needed = options.write_bytes + 16 * MIB;
    if free < needed {
        return Err(TuneError::NoSpace {
            path: dir.clone(),
            free,
            needed,
        });
    }
    let path = dir.join(format!(".ringest-tune-{}.tmp", std::process::id()));
    let probe_error = |error| TuneError::Probe {
        path: path.clone(),
        error,
    };
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(probe_error)?;
    let probe = ProbeFile {
        path: path.clone(),
        file,
    };

    // Latency: like a WAL append into a preallocated segment, one page
    // written then fdatasync'd, at increasing offsets.
    let sync_region = (options.sync_count * SYNC_WRITE_BYTES) as u64;
    preallocate(&probe.file, sync_region);
    probe.file.sync_all().map_err(probe_error)?;
    let page = [0x5Au8; SYNC_WRITE_BYTES];
    let mut latencies_us = Vec::with_capacity(options.sync_count);
    for i in 0..options.sync_count {
        let start = clock::monotonic();
        probe
            .file
            .write_all_at(&page, (i * SYNC_WRITE_BYTES) as u64)
            .map_err(probe_error)?;
        probe.file.sync_data().map_err(probe_error)?;
        latencies_us.push(clock::elapsed_us(start));
    }
    latencies_us.sort_unstable();

    // Bandwidth: sequential 1 MiB writes after the latency region, then one
    // fdatasync, timed together (what a large group commit costs).
    let chunk = vec![0xA5u8; BANDWIDTH_WRITE_BYTES];
    let start = clock::monotonic();
    let mut written = 0u64;
    while written < options.write_bytes {
        let len = (options.write_bytes - written).min(chunk.len() as u64) as usize;
        probe
            .file
            .write_all_at(&chunk[..len], sync_region + written)
            .map_err(probe_error)?;
        written += len as u64;
    }
    probe.file.sync_data().map_err(probe_error)?;
    let write_duration = clock::monotonic().saturating_duration_since(start);
    drop(probe);

    Ok(Disk {
        filesystem,
        syncs: latencies_us.len(),
        sync_p50_us: percentile(&latencies_us, 50),
        sync_p99_us: percentile(&latencies_us, 99),
        sync_max_us: latencies_us.last().copied().unwrap_or(0),
        write_bytes: written,
        write_duration,
    })
}

/// Best effort: a WAL segment is preallocated; where the file system
/// cannot, plain appends are measured instead.
fn preallocate(file: &File, len: u64) {
    // SAFETY: fallocate on a descriptor we own; no memory is passed.
    let _ = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len as libc::off_t) };
}

/// Worst-case memory a profile's budgets allow on `shards` shards: the
/// store, in-flight bodies, unsynced WAL bytes and registered I/O memory.
pub fn profile_budget_bytes(config: &Config, shards: usize) -> u64 {
    let shards = shards.max(1) as u64;
    let per_shard = config.store.memory_bytes_max as u64
        + config.wal.pending_bytes_max as u64
        + config.server.io_memory_bytes as u64;
    // The in-flight budget is for the whole process, but each shard's
    // share is at least one maximum-size body.
    let inflight = (config.backpressure.inflight_request_bytes_max as u64)
        .max((config.http.body_bytes_max as u64).saturating_mul(shards));
    per_shard.saturating_mul(shards).saturating_add(inflight)
}

fn profile_config(name: &str) -> Option<Config> {
    Config::load(Some(name), None, &Overrides::default()).ok()
}

fn profile_name(name: &str) -> &'static str {
    PROFILES
        .iter()
        .find(|(n, _)| *n == name)
        .map_or("default", |(n, _)| n)
}

/// The recommendation rule, from the measurements alone.
///
/// 1. A profile whose worst-case budgets exceed 75 % of the memory limit
///    is out; if `default` is out, `small-vm`.
/// 2. Otherwise `default`. A slow disk (median sync ≥ 2 ms or < 200 MB/s)
///    is named in a note: group commit already lets every writer that
///    arrives during a sync share the next one, and the profiles that
///    tried to do better with larger batches measured no different
///    (`bench/RESULTS.md`, 2026-12-01), so no profile is chosen for it.
pub fn recommend(machine: &Machine, disk: &Disk) -> Recommendation {
    let shards = machine.cpus_allowed.max(1);
    let limit = machine.memory_limit_bytes();
    let allowed = limit / 100 * MEMORY_SHARE_PERCENT;
    let budget = |name: &str| profile_config(name).map(|c| profile_budget_bytes(&c, shards));
    let fits = |name: &str| budget(name).is_some_and(|b| b <= allowed);
    let mut reasons = Vec::new();
    let mut notes = Vec::new();
    let slow_disk = disk.sync_p50_us >= SLOW_SYNC_P50_US
        || disk.write_bytes_per_second() < SLOW_WRITE_BYTES_PER_SECOND;

    let profile = if !fits("default") {
        reasons.push(format!(
            "the default budgets on {shards} shards need up to {}, more than {MEMORY_SHARE_PERCENT} % of the {} memory limit",
            bytes(budget("default").unwrap_or(0)),
            bytes(limit)
        ));
        if !fits("small-vm") {
            notes.push(format!(
                "even small-vm needs up to {} here: lower store.memory_bytes_max or server.shards",
                bytes(budget("small-vm").unwrap_or(0))
            ));
        }
        "small-vm"
    } else {
        reasons.push(format!(
            "{} CPUs and {} of memory: the default budgets ({}) fit",
            machine.cpus_allowed,
            bytes(limit),
            bytes(budget("default").unwrap_or(0))
        ));
        "default"
    };
    if slow_disk {
        notes.push(format!(
            "the disk is slow (fdatasync p50 {}, {}): every 204 waits for it; group commit spreads each sync over the writers that wait",
            micros(disk.sync_p50_us),
            rate(disk.write_bytes_per_second())
        ));
    } else {
        reasons.push(format!(
            "the disk keeps up (fdatasync p50 {}, {})",
            micros(disk.sync_p50_us),
            rate(disk.write_bytes_per_second())
        ));
    }

    if matches!(disk.filesystem, "tmpfs" | "overlayfs") {
        notes.push(format!(
            "the data directory is on {}: fdatasync there says nothing about a real disk (and tmpfs is not durable)",
            disk.filesystem
        ));
    }
    if machine.numa_nodes > 1 {
        notes.push(format!(
            "{} NUMA nodes: keep server.pin_cpus = true so each shard's memory stays on its node",
            machine.numa_nodes
        ));
    }
    if let Some(config) = profile_config(profile) {
        let backlog = u64::from(config.server.listen_backlog);
        if machine.somaxconn.is_some_and(|s| s < backlog) {
            notes.push(format!(
                "net.core.somaxconn is {} but {profile} asks for a listen backlog of {backlog}: apply its sysctl fragment",
                machine.somaxconn.unwrap_or(0)
            ));
        }
        let memlock = config.server.io_memory_bytes as u64 * shards as u64;
        if machine.memlock_bytes.is_some_and(|m| m < memlock) {
            notes.push(format!(
                "RLIMIT_MEMLOCK is {} but {shards} shards need {}: the systemd unit sets LimitMEMLOCK (or ulimit -l)",
                bytes(machine.memlock_bytes.unwrap_or(0)),
                bytes(memlock)
            ));
        }
    }
    Recommendation {
        profile: profile_name(profile),
        reasons,
        notes,
    }
}

/// `12.3 GiB`-style sizes.
pub fn bytes(n: u64) -> String {
    let units = [(GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")];
    for (size, unit) in units {
        if n >= size {
            return format!("{:.1} {unit}", n as f64 / size as f64);
        }
    }
    format!("{n} B")
}

fn micros(us: u64) -> String {
    format!("{:.3} ms", us as f64 / 1000.0)
}

fn rate(bytes_per_second: f64) -> String {
    format!("{:.1} MB/s", bytes_per_second / 1e6)
}

/// Writes the report for measured figures (separate from measuring so the
/// layout is testable).
pub fn report(
    out: &mut dyn Write,
    data_dir: &Path,
    machine: &Machine,
    disk: &Disk,
    recommendation: &Recommendation,
) -> io::Result<()> {
    writeln!(out, "machine")?;
    writeln!(out, "  cpus online           {}", machine.cpus_online)?;
    writeln!(out, "  cpus allowed          {}", machine.cpus_allowed)?;
    writeln!(out, "  numa nodes            {}", machine.numa_nodes)?;
    writeln!(
        out,
        "  memory total          {}",
        bytes(machine.memory_total_bytes)
    )?;
    writeln!(
        out,
        "  memory available      {}",
        bytes(machine.memory_available_bytes)
    )?;
    match machine.cgroup_memory_max_bytes {
        Some(max) => writeln!(out, "  cgroup memory limit   {}", bytes(max))?,
        None => writeln!(out, "  cgroup memory limit   none")?,
    }
    writeln!(
        out,
        "data disk ({}, {})",
        data_dir.display(),
        disk.filesystem
    )?;
    writeln!(
        out,
        "  fdatasync latency     p50 {}, p99 {}, max {} ({} x 4 KiB write + fdatasync)",
        micros(disk.sync_p50_us),
        micros(disk.sync_p99_us),
        micros(disk.sync_max_us),
        disk.syncs
    )?;
    writeln!(
        out,
        "  sequential write      {} ({} in 1 MiB writes + one fdatasync, {:.3} s)",
        rate(disk.write_bytes_per_second()),
        bytes(disk.write_bytes),
        disk.write_duration.as_secs_f64()
    )?;
    writeln!(out, "host settings")?;
    match machine.somaxconn {
        Some(v) => writeln!(out, "  net.core.somaxconn    {v}")?,
        None => writeln!(out, "  net.core.somaxconn    unknown")?,
    }
    match machine.memlock_bytes {
        Some(v) => writeln!(out, "  RLIMIT_MEMLOCK        {}", bytes(v))?,
        None => writeln!(out, "  RLIMIT_MEMLOCK        unlimited")?,
    }
    writeln!(out, "recommended profile: {}", recommendation.profile)?;
    for reason in &recommendation.reasons {
        writeln!(out, "  - {reason}")?;
    }
    for note in &recommendation.notes {
        writeln!(out, "  note: {note}")?;
    }
    let sysctl = if SYSCTL_PROFILES.contains(&recommendation.profile) {
        " --sysctl"
    } else {
        ""
    };
    writeln!(
        out,
        "apply: ringest serve --profile {p}, or systemd/install.sh --profile {p}{sysctl}",
        p = recommendation.profile
    )?;
    Ok(())
}

/// The whole command: measure, recommend, report to `out`.
pub fn run(options: &TuneOptions, out: &mut dyn Write) -> Result<Recommendation, TuneError> {
    let machine = measure_machine();
    let disk = measure_disk(options)?;
    let recommendation = recommend(&machine, &disk);
    report(out, &options.data_dir, &machine, &disk, &recommendation).map_err(TuneError::Output)?;
    Ok(recommendation)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(cpus: usize, memory_gib: u64) -> Machine {
        Machine {
            cpus_online: cpus,
            cpus_allowed: cpus,
            numa_nodes: 1,
            memory_total_bytes: memory_gib * GIB,
            memory_available_bytes: memory_gib * GIB,
            cgroup_memory_max_bytes: None,
            somaxconn: Some(4096),
            memlock_bytes: None,
        }
    }

    fn disk(p50_us: u64, p99_us: u64, mb_per_s: u64) -> Disk {
        Disk {
            filesystem: "ext4",
            syncs: 200,
            sync_p50_us: p50_us,
            sync_p99_us: p99_us,
            sync_max_us: p99_us,
            write_bytes: mb_per_s * 1_000_000,
            write_duration: Duration::from_secs(1),
        }
    }

    /// Goal: each branch of the rule picks the profile it documents.
    /// Method: a table of made-up machines and disks.
    #[test]
    fn rule_table() {
        let cases = [
            (machine(2, 2), disk(300, 600, 500), "small-vm", false),
            (machine(4, 64), disk(5_000, 9_000, 500), "default", true),
            (machine(4, 64), disk(300, 600, 50), "default", true),
            (machine(16, 256), disk(300, 600, 1000), "default", false),
            (machine(2, 16), disk(300, 600, 1000), "default", false),
        ];
        for (m, d, expected, slow_note) in cases {
            let r = recommend(&m, &d);
            assert_eq!(r.profile, expected, "{m:?} {d:?}: {r:?}");
            assert!(!r.reasons.is_empty());
            assert_eq!(
                r.notes.iter().any(|n| n.contains("the disk is slow")),
                slow_note,
                "{r:?}"
            );
        }
    }

    /// Goal: a cgroup limit below physical memory is what counts. Method:
    /// a big host confined to 2 GiB.
    #[test]
    fn cgroup_limit_wins() {
        let mut m = machine(4, 64);
        m.cgroup_memory_max_bytes = Some(2 * GIB);
        assert_eq!(recommend(&m, &disk(300, 600, 1000)).profile, "small-vm");
    }

    /// Goal: CPU lists and meminfo parse. Method: samples in kernel format.
    #[test]
    fn proc_formats() {
        assert_eq!(count_cpu_list("0-3,8,10-11\n".trim()), 7);
        assert_eq!(count_cpu_list("0"), 1);
        assert_eq!(count_cpu_list(""), 0);
        let meminfo = "MemTotal:       24683656 kB\nMemFree:  1 kB\nMemAvailable:   22880020 kB\n";
        assert_eq!(meminfo_bytes(meminfo, "MemTotal"), Some(24_683_656 * 1024));
        assert_eq!(
            meminfo_bytes(meminfo, "MemAvailable"),
            Some(22_880_020 * 1024)
        );
        assert_eq!(meminfo_bytes(meminfo, "Mem"), None);
    }

    /// Goal: SYSCTL_PROFILES names exactly the fragments in tuning/.
    /// Method: list `tuning/*.sysctl.conf`.
    #[test]
    fn sysctl_profiles_match_the_files() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tuning");
        let mut found: Vec<String> = std::fs::read_dir(dir)
            .expect("tuning/")
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".sysctl.conf").map(String::from)
            })
            .collect();
        found.sort();
        assert_eq!(found, SYSCTL_PROFILES);
    }

    /// Goal: percentiles pick the nearest rank. Method: 1..=100.
    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50), 50);
        assert_eq!(percentile(&v, 99), 99);
        assert_eq!(percentile(&[7], 99), 7);
        assert_eq!(percentile(&[], 50), 0);
    }
}
