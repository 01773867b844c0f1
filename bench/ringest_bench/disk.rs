//! `ringest-bench disk`: the data disk alone, written the way the WAL
//! writes it, so an acknowledgement-latency result can be told apart from
//! what the disk itself gives.
//!
//! Each writer thread owns one file in `--dir`, preallocated like a WAL
//! segment (`fallocate`; with `--prezero` its zeros are also written and
//! synced first). It then issues, paced open loop at `--rate` per second,
//! one O_DIRECT write of `--bytes` at the next offset followed by one
//! `fdatasync`: one group commit of one shard. Two writers at the rate of
//! the half-load run reproduce its disk traffic without any server CPU.
//! The latency of each write + `fdatasync` pair goes into a histogram.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// O_DIRECT needs buffer, offset and length aligned to the logical block.
const ALIGN: usize = 4096;

#[derive(clap::Args)]
pub struct DiskArgs {
    /// Directory on the disk to measure (probe files are removed after).
    #[arg(long)]
    pub dir: PathBuf,
    /// Writer threads (one per shard WAL).
    #[arg(long, default_value_t = 2)]
    pub writers: usize,
    /// Write + fdatasync pairs per second, per writer.
    #[arg(long, default_value_t = 300.0)]
    pub rate: f64,
    /// Bytes per write (rounded up to 4096).
    #[arg(long, default_value_t = 262144)]
    pub bytes: usize,
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Write (and sync) the files' zeros before the timed pairs.
    #[arg(long)]
    pub prezero: bool,
}

pub struct DiskResult {
    pub latency_us: Histogram<u64>,
    pub syncs: u64,
}

/// A zero-initialised buffer of `len` bytes at a 4096-byte aligned address.
struct Aligned {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize, fill: u8) -> Aligned {
        let mut storage = vec![fill; len + ALIGN];
        let start = storage.as_ptr().align_offset(ALIGN);
        storage[..start].fill(0);
        Aligned {
            storage,
            start,
            len,
        }
    }
    fn bytes(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }
}

fn preallocate(file: &File, len: u64) -> std::io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| std::io::Error::other("file too large"))?;
    // SAFETY: fallocate on a descriptor we own; no memory is passed.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// One writer: prepare its file, then `count` paced write + fdatasync pairs.
fn writer(path: &Path, args: &DiskArgs, count: u64) -> std::io::Result<Histogram<u64>> {
    let bytes = args.bytes.div_ceil(ALIGN) * ALIGN;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)?;
    let total = bytes as u64 * count;
    preallocate(&file, total)?;
    if args.prezero {
        let zeros = Aligned::new(1 << 20, 0);
        let mut pos = 0;
        while pos < total {
            let n = (total - pos).min(1 << 20) as usize;
            file.write_all_at(&zeros.bytes()[..n], pos)?;
            pos += n as u64;
        }
        file.sync_data()?;
    }
    let data = Aligned::new(bytes, b'x');
    let mut latency_us =
        Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant histogram bounds are valid");
    let start = Instant::now();
    for i in 0..count {
        let due = start + Duration::from_secs_f64(i as f64 / args.rate);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let began = Instant::now();
        file.write_all_at(data.bytes(), i * bytes as u64)?;
        file.sync_data()?;
        latency_us.saturating_record(began.elapsed().as_micros().max(1) as u64);
    }
    Ok(latency_us)
}

/// Runs every writer at once; removes their files whatever happens.
pub fn probe(args: &DiskArgs) -> Result<DiskResult, String> {
    let count = ((args.rate * args.seconds).ceil() as u64).max(1);
    let paths: Vec<PathBuf> = (0..args.writers)
        .map(|w| {
            args.dir.join(format!(
                "ringest-bench-disk-{}-{w}.probe",
                std::process::id()
            ))
        })
        .collect();
    let outcomes: Vec<std::io::Result<Histogram<u64>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = paths
            .iter()
            .map(|path| scope.spawn(move || writer(path, args, count)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("disk writer thread panicked"))
            .collect()
    });
    for path in &paths {
        let _ = std::fs::remove_file(path);
    }
    let mut latency_us =
        Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant histogram bounds are valid");
    for (path, outcome) in paths.iter().zip(outcomes) {
        let histogram = outcome.map_err(|e| format!("{}: {e}", path.display()))?;
        latency_us
            .add(&histogram)
            .map_err(|e| format!("merging histograms: {e}"))?;
    }
    Ok(DiskResult {
        syncs: latency_us.len(),
        latency_us,
    })
}

/// The one-line summary `ringest-bench disk` prints.
pub fn summary(args: &DiskArgs, result: &DiskResult) -> String {
    let ms = |q: f64| result.latency_us.value_at_quantile(q) as f64 / 1000.0;
    format!(
        "disk: {} writer(s) x {} write+fdatasync/s of {} B ({}) in {}: {} syncs; \
         latency p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
        args.writers,
        args.rate,
        args.bytes.div_ceil(ALIGN) * ALIGN,
        if args.prezero {
            "pre-zeroed file"
        } else {
            "fallocated file"
        },
        args.dir.display(),
        result.syncs,
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        result.latency_us.max() as f64 / 1000.0,
    )
}
