//! Timing of the two I/O choices for the WAL (not a pass/fail test).
//!
//! Run: `cargo test --release --test wal_sync_timing -- --ignored --nocapture`
//! (set `WAL_TIMING_DIR` to measure another file system; default /work).

// Tests are not shard code: std::fs and std::time are fine here (clippy.toml
// bans them on the server's executors).
#![allow(clippy::disallowed_methods)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use glommio::io::{BufferedFile, DmaFile};
use glommio::LocalExecutorBuilder;
use glommio::Placement;

const ITERATIONS: usize = 1000;

fn dir() -> PathBuf {
    let base = std::env::var_os("WAL_TIMING_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work"));
    base.join(format!("ringest-wal-timing-{}", std::process::id()))
}

fn percentiles(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    let total: Duration = samples.iter().sum();
    println!(
        "{label:<40} p50 {:>6} µs  p99 {:>6} µs  p999 {:>6} µs  max {:>6} µs  mean {:>6} µs",
        at(0.50).as_micros(),
        at(0.99).as_micros(),
        at(0.999).as_micros(),
        samples[samples.len() - 1].as_micros(),
        (total / samples.len() as u32).as_micros()
    );
}

/// Goal: measure write + fdatasync latency for DmaFile (O_DIRECT, rewrite of
/// the partial tail block) and BufferedFile (page cache + fdatasync), both on
/// a preallocated file, for 64 KiB and 4 KiB appends.
/// Method: 1000 × (append N bytes + fdatasync), wall time of each pair.
#[test]
#[ignore = "timing run, not a check; see module doc for the command"]
fn sync_timing() {
    let dir = dir();
    std::fs::create_dir_all(&dir).expect("create timing dir");
    let dir2 = dir.clone();
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            for &size in &[65536usize, 4096, 1000] {
                // DmaFile: keep a tail buffer; each append writes from the aligned
                // start of the partial block up to the aligned end of the data.
                let path = dir2.join(format!("dma-{size}"));
                let file = DmaFile::create(&path).await.expect("create");
                let total = (ITERATIONS * size + (1 << 20)) as u64;
                file.pre_allocate(total, false).await.expect("fallocate");
                file.fdatasync().await.expect("sync");
                let align = file.alignment() as usize;
                let mut samples = Vec::with_capacity(ITERATIONS);
                let mut offset = 0usize;
                for _ in 0..ITERATIONS {
                    let start = Instant::now();
                    let aligned_start = offset / align * align;
                    let end = offset + size;
                    let aligned_end = end.div_ceil(align) * align;
                    let mut buf = file.alloc_dma_buffer(aligned_end - aligned_start);
                    buf.as_bytes_mut().fill(0xab);
                    file.write_at(buf, aligned_start as u64)
                        .await
                        .expect("write");
                    file.fdatasync().await.expect("sync");
                    samples.push(start.elapsed());
                    offset = end;
                }
                percentiles(&format!("DmaFile {size} B + fdatasync"), samples);
                file.close().await.expect("close");

                let path = dir2.join(format!("buffered-{size}"));
                let file = BufferedFile::create(&path).await.expect("create");
                file.pre_allocate(total, false).await.expect("fallocate");
                file.fdatasync().await.expect("sync");
                let mut samples = Vec::with_capacity(ITERATIONS);
                let mut offset = 0u64;
                for _ in 0..ITERATIONS {
                    let start = Instant::now();
                    let buf = vec![0xabu8; size];
                    file.write_at(buf, offset).await.expect("write");
                    file.fdatasync().await.expect("sync");
                    samples.push(start.elapsed());
                    offset += size as u64;
                }
                percentiles(&format!("BufferedFile {size} B + fdatasync"), samples);
                file.close().await.expect("close");
            }
        })
        .expect("spawn executor")
        .join()
        .expect("executor");
    std::fs::remove_dir_all(&dir).expect("remove timing dir");
}
