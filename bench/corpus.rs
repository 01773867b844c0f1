//! Deterministic request bodies and a per-thread CPU clock, shared by the
//! micro-benchmarks (`#[path]`-included: each bench is its own crate).

#![allow(dead_code)] // each bench uses a subset

use std::time::Duration;

/// Deterministic generator (xorshift64*), so every run parses the same bytes.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn float(&mut self) -> String {
        format!("{}.{:02}", self.below(100), self.below(100))
    }
}

pub fn tsbs_cpu(target_bytes: usize) -> String {
    const REGIONS: [&str; 4] = ["us-east-1", "eu-west-1", "ap-southeast-2", "sa-east-1"];
    const OSES: [&str; 3] = ["Ubuntu16.10", "Ubuntu16.04LTS", "Ubuntu15.10"];
    const TEAMS: [&str; 4] = ["SF", "NYC", "LON", "CHI"];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut body = String::with_capacity(target_bytes + 512);
    let mut time: i64 = 1_451_606_400_000_000_000;
    // Hosts (series) the lines are drawn from: 4000, or `LP_BENCH_HOSTS`
    // (the series-key cache's benefit depends on it).
    let hosts: u64 = std::env::var("LP_BENCH_HOSTS")
        .ok()
        .and_then(|h| h.parse().ok())
        .unwrap_or(4000);
    while body.len() < target_bytes {
        let host = rng.below(hosts);
        let region = REGIONS[(host % 4) as usize];
        body.push_str(&format!(
            "cpu,hostname=host_{host},region={region},datacenter={region}{az},rack={rack},\
             os={os},arch=x{arch},team={team},service={service},service_version={version},\
             service_environment=production ",
            az = ["a", "b", "c"][(host % 3) as usize],
            rack = host % 100,
            os = OSES[(host % 3) as usize],
            arch = if host % 2 == 0 { 64 } else { 86 },
            team = TEAMS[(host % 4) as usize],
            service = host % 20,
            version = host % 2,
        ));
        body.push_str(&format!(
            "usage_user={},usage_system={},usage_idle={},usage_nice={}i,usage_iowait={},\
             usage_irq={}i,usage_softirq={},usage_steal={}i,usage_guest={}i,usage_guest_nice={}i {time}\n",
            rng.float(),
            rng.float(),
            rng.float(),
            rng.below(100),
            rng.float(),
            rng.below(100),
            rng.float(),
            rng.below(100),
            rng.below(100),
            rng.below(100),
        ));
        time += 10_000_000_000;
    }
    body
}

pub fn iot(target_bytes: usize) -> String {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut body = String::with_capacity(target_bytes + 256);
    let mut time: i64 = 1_700_000_000_000_000_000;
    while body.len() < target_bytes {
        let device = rng.below(10_000);
        if device % 2 == 0 {
            body.push_str(&format!("sensor,id=s{device}"));
        } else {
            body.push_str(&format!("sensor,id=s{device},site=ams{}", device % 7));
        }
        body.push_str(&format!(
            " temp={},hum={}i,ok={} {time}\n",
            rng.float(),
            rng.below(100),
            if rng.below(10) == 0 { "f" } else { "t" },
        ));
        time += 1_000_000;
    }
    body
}

/// CPU time consumed by the calling thread.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID
    // is supported on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
