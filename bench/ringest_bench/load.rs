//! The load loop: connections, pacing, and what each request's answer was.
//!
//! Owns the sending threads (one std thread per connection; blocking I/O is
//! the simplest thing that keeps up, the server under test is elsewhere).
//! Requests take block numbers from one shared counter, so every request
//! carries distinct points (see `workload`).
//!
//! - Closed loop: each connection sends its next request as soon as the
//!   previous answer arrived; latency is answer time − send time.
//! - Open loop: request `k` of connection `c` is due at `start + (k * C + c)
//!   / rate`; latency is answer time − due time, so time spent waiting behind
//!   a slow answer counts (no coordinated omission).
//!
//! Limits: histograms are fixed-bound (1 µs .. `LATENCY_US_MAX`, saturating);
//! per-connection template memory is bounded by `TEMPLATE_BYTES_MAX`.

use crate::client::{ClientError, HttpConnection, Target};
use crate::workload::{Template, Workload};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const LATENCY_US_MAX: u64 = 600_000_000;
/// Plain bodies are copied per connection (re-stamped in place); cap the total.
pub const TEMPLATE_BYTES_MAX: u64 = 4 << 30;
/// Consecutive failed connects after which a connection gives up.
const CONNECT_FAILURES_MAX: u32 = 3;

/// The bodies a run sends.
pub enum Bodies {
    /// Built once; each connection keeps its own copy and re-stamps timestamps.
    Plain(Arc<Vec<Template>>),
    /// Pre-compressed, one per block; the run ends when they are used up.
    Gzip {
        pool: Arc<Vec<Vec<u8>>>,
        raw_bytes_total: u64,
    },
}

pub struct LoadPlan {
    pub target: Target,
    pub workload: Workload,
    pub bodies: Bodies,
    /// Request head up to (not including) Content-Length.
    pub head_prefix: String,
    pub connections: usize,
    /// Stop after this many requests (blocks).
    pub blocks_max: u64,
    /// Stop sending new requests after this long.
    pub duration: Option<Duration>,
    /// Open loop: points per second offered; closed loop when `None`.
    pub rate_points_per_s: Option<f64>,
    pub timeout: Duration,
    /// Soak: counters every answer also goes to while the run lasts, so a
    /// sampler can read them per interval (`None`: only the final outcome).
    pub live: Option<Arc<Live>>,
}

/// Running totals of a run, readable while it runs (`soak` samples them).
/// The connections add to them after every answer; a sampler takes the
/// latency histogram out and puts an empty one back, so each histogram
/// covers one interval.
pub struct Live {
    pub points_acked: AtomicU64,
    /// Answers by class: 2xx, 429, 503, and any other status or no answer.
    pub answers_2xx: AtomicU64,
    pub answers_429: AtomicU64,
    pub answers_503: AtomicU64,
    pub answers_other: AtomicU64,
    latency_us: Mutex<Histogram<u64>>,
}

impl Live {
    pub fn new() -> Live {
        Live {
            points_acked: AtomicU64::new(0),
            answers_2xx: AtomicU64::new(0),
            answers_429: AtomicU64::new(0),
            answers_503: AtomicU64::new(0),
            answers_other: AtomicU64::new(0),
            latency_us: Mutex::new(new_histogram()),
        }
    }

    /// The latencies recorded since the last call; starts a new interval.
    pub fn take_latency_us(&self) -> Histogram<u64> {
        let mut held = self.latency_us.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *held, new_histogram())
    }

    fn record(&self, status: Option<u16>, points: u64, latency_us: u64) {
        let counter = match status {
            Some(200..=299) => {
                self.points_acked.fetch_add(points, Ordering::Relaxed);
                &self.answers_2xx
            }
            Some(429) => &self.answers_429,
            Some(503) => &self.answers_503,
            _ => &self.answers_other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if status.is_some() {
            self.latency_us
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .saturating_record(latency_us);
        }
    }
}

impl Default for Live {
    fn default() -> Live {
        Live::new()
    }
}

/// What one run observed.
pub struct LoadOutcome {
    pub latency_us: Histogram<u64>,
    pub status_counts: BTreeMap<u16, u64>,
    /// Requests without an HTTP answer, by cause.
    pub error_counts: BTreeMap<&'static str, u64>,
    /// Blocks answered with 2xx.
    pub acked_blocks: Vec<u64>,
    /// Blocks sent (acked or not).
    pub sent_blocks: u64,
    /// Every block number below this was handed to a connection.
    pub blocks_issued: u64,
    pub wire_bytes: u64,
    pub raw_bytes: u64,
    pub elapsed: Duration,
    /// Open loop: due requests never sent because the run ended first.
    pub behind_schedule: u64,
    /// An example of a non-2xx answer body, for the report.
    pub error_example: Option<String>,
}

struct ConnectionOutcome {
    latency_us: Histogram<u64>,
    status_counts: BTreeMap<u16, u64>,
    error_counts: BTreeMap<&'static str, u64>,
    acked_blocks: Vec<u64>,
    sent_blocks: u64,
    wire_bytes: u64,
    raw_bytes: u64,
    last_answer: Instant,
    behind_schedule: u64,
    error_example: Option<String>,
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("constant histogram bounds are valid")
}

fn error_name(error: &ClientError) -> &'static str {
    match error {
        ClientError::Resolve => "resolve",
        ClientError::Connect(_) => "connect",
        ClientError::Send(_) => "send",
        ClientError::Receive(_) => "receive",
        ClientError::Timeout => "timeout",
        ClientError::ClosedEarly => "closed",
        ClientError::MalformedResponse => "malformed",
        ClientError::HeadTooLarge => "head_too_large",
        ClientError::BodyTooLarge => "body_too_large",
    }
}

pub fn run(plan: &LoadPlan) -> LoadOutcome {
    let next_block = AtomicU64::new(0);
    let start = Instant::now();
    let deadline = plan.duration.map(|d| start + d);
    let outcomes: Vec<ConnectionOutcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..plan.connections)
            .map(|index| {
                let next_block = &next_block;
                scope.spawn(move || run_connection(plan, index, next_block, start, deadline))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("connection thread panicked"))
            .collect()
    });
    let mut total = LoadOutcome {
        latency_us: new_histogram(),
        status_counts: BTreeMap::new(),
        error_counts: BTreeMap::new(),
        acked_blocks: Vec::new(),
        sent_blocks: 0,
        blocks_issued: next_block.load(Ordering::Acquire).min(plan.blocks_max),
        wire_bytes: 0,
        raw_bytes: 0,
        elapsed: Duration::ZERO,
        behind_schedule: 0,
        error_example: None,
    };
    let mut last_answer = start;
    for outcome in outcomes {
        total
            .latency_us
            .add(&outcome.latency_us)
            .expect("same histogram bounds");
        for (status, n) in outcome.status_counts {
            *total.status_counts.entry(status).or_default() += n;
        }
        for (name, n) in outcome.error_counts {
            *total.error_counts.entry(name).or_default() += n;
        }
        total.acked_blocks.extend(outcome.acked_blocks);
        total.sent_blocks += outcome.sent_blocks;
        total.wire_bytes += outcome.wire_bytes;
        total.raw_bytes += outcome.raw_bytes;
        total.behind_schedule += outcome.behind_schedule;
        total.error_example = total.error_example.or(outcome.error_example);
        last_answer = last_answer.max(outcome.last_answer);
    }
    total.acked_blocks.sort_unstable();
    total.elapsed = last_answer.duration_since(start);
    total
}

fn run_connection(
    plan: &LoadPlan,
    index: usize,
    next_block: &AtomicU64,
    start: Instant,
    deadline: Option<Instant>,
) -> ConnectionOutcome {
    let mut outcome = ConnectionOutcome {
        latency_us: new_histogram(),
        status_counts: BTreeMap::new(),
        error_counts: BTreeMap::new(),
        acked_blocks: Vec::new(),
        sent_blocks: 0,
        wire_bytes: 0,
        raw_bytes: 0,
        last_answer: start,
        behind_schedule: 0,
        error_example: None,
    };
    // Each connection re-stamps its own copy of the plain templates.
    let mut templates: Vec<Template> = match &plan.bodies {
        Bodies::Plain(templates) => templates.as_ref().clone(),
        Bodies::Gzip { .. } => Vec::new(),
    };
    let interval = plan.rate_points_per_s.map(|rate| {
        let requests_per_s = rate / plan.workload.lines_per_request as f64;
        Duration::from_secs_f64(plan.connections as f64 / requests_per_s)
    });
    let offset = plan.rate_points_per_s.map(|rate| {
        Duration::from_secs_f64(index as f64 * plan.workload.lines_per_request as f64 / rate)
    });
    let mut head = String::with_capacity(plan.head_prefix.len() + 64);
    let mut connection: Option<HttpConnection> = None;
    let mut sent_count: u32 = 0;
    let mut connect_failures = 0u32;
    loop {
        // When is this request due (open loop), and may it still go?
        let due = match (interval, offset) {
            (Some(interval), Some(offset)) => {
                let due = start + offset + interval * sent_count;
                if deadline.is_some_and(|d| due >= d) {
                    break;
                }
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                Some(due)
            }
            _ => None,
        };
        if let Some(deadline) = deadline.filter(|&d| Instant::now() >= d) {
            if let (Some(due), Some(interval)) = (due, interval) {
                // This request and every later one due before the deadline:
                // ceil((deadline - due) / interval), at least this one.
                let span = deadline.saturating_duration_since(due).as_nanos();
                let step = interval.as_nanos().max(1);
                outcome.behind_schedule += (span.div_ceil(step) as u64).max(1);
            }
            break;
        }
        let block = next_block.fetch_add(1, Ordering::AcqRel);
        if block >= plan.blocks_max {
            break;
        }
        sent_count += 1;
        let (body, raw_len): (&[u8], u64) = match &plan.bodies {
            Bodies::Plain(_) => {
                let template = &mut templates[(block % plan.workload.template_count()) as usize];
                template.stamp(&plan.workload, block);
                (&template.body, template.body.len() as u64)
            }
            Bodies::Gzip {
                pool,
                raw_bytes_total,
            } => {
                let body = &pool[block as usize];
                (body.as_slice(), raw_bytes_total / pool.len().max(1) as u64)
            }
        };
        head.clear();
        head.push_str(&plan.head_prefix);
        let _ = write!(head, "Content-Length: {}\r\n\r\n", body.len());
        if connection.as_ref().is_none_or(|c| c.broken) {
            match HttpConnection::connect(&plan.target, plan.timeout, 64 * 1024) {
                Ok(c) => {
                    connection = Some(c);
                    connect_failures = 0;
                }
                Err(error) => {
                    *outcome.error_counts.entry(error_name(&error)).or_default() += 1;
                    if let Some(live) = &plan.live {
                        live.record(None, 0, 0);
                    }
                    outcome.sent_blocks += 1;
                    outcome.last_answer = Instant::now();
                    connection = None;
                    connect_failures += 1;
                    if connect_failures >= CONNECT_FAILURES_MAX {
                        break; // The server is gone; do not spin on connect.
                    }
                    continue;
                }
            }
        }
        let Some(open) = connection.as_mut() else {
            continue;
        };
        let sent_at = Instant::now();
        let result = open.exchange(head.as_bytes(), body);
        let answered_at = Instant::now();
        outcome.sent_blocks += 1;
        outcome.wire_bytes += (head.len() + body.len()) as u64;
        outcome.raw_bytes += raw_len;
        outcome.last_answer = answered_at;
        let latency = answered_at.duration_since(due.unwrap_or(sent_at));
        if let Some(live) = &plan.live {
            let latency_us = latency.as_micros().max(1) as u64;
            live.record(
                result.as_ref().ok().copied(),
                plan.workload.lines_per_request,
                latency_us,
            );
        }
        match result {
            Ok(status) => {
                outcome
                    .latency_us
                    .saturating_record(latency.as_micros().max(1) as u64);
                *outcome.status_counts.entry(status).or_default() += 1;
                if (200..300).contains(&status) {
                    outcome.acked_blocks.push(block);
                } else if outcome.error_example.is_none() {
                    let text = String::from_utf8_lossy(open.body());
                    outcome.error_example = Some(format!(
                        "{status}: {}",
                        text.chars().take(300).collect::<String>()
                    ));
                }
            }
            Err(error) => {
                *outcome.error_counts.entry(error_name(&error)).or_default() += 1;
            }
        }
    }
    outcome
}
