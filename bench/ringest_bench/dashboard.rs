//! `ringest-bench query --dashboard-seconds N`: ingest while a dashboard
//! refreshes (issue 19: "ingest throughput while a dashboard of six panels
//! refreshes every 5 s stays ≥ 90 % of ingest alone, and no write times
//! out").
//!
//! After the timed queries, the same closed-loop load runs twice for N
//! seconds: alone, then while one more connection asks the six panels of
//! the query set ([`crate::query::QUERIES`]) one after another every
//! `--dashboard-every` seconds (a refresh that takes longer starts the next
//! at once; at least one refresh). Both loads write unique points after everything loaded so far
//! (one point per host per millisecond, from now on; the second load after
//! the first's last possible point), so each adds new rows the panels then
//! read. Printed: points/s of each load, their ratio, the write requests
//! not acknowledged (a non-2xx answer, or none within `--timeout`), ack
//! p99, and per panel the refreshes and their slowest time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::client::Target;
use crate::load;
use crate::query::{cpu_load_plan, QueryArgs, QueryError, Session, QUERIES};

/// Time between two points of one host in the dashboard loads: unique
/// points ahead of now that stay close to it.
const STEP_NS: u64 = 1_000_000;
/// More points per second than this machine class can take: sizes the
/// first load's time range so the second starts after it.
const POINTS_PER_S_BOUND: f64 = 5_000_000.0;

/// One load's figures.
struct Phase {
    points_per_s: f64,
    acked_points: u64,
    not_acked: u64,
    p99_ms: f64,
}

/// Runs both loads and prints the comparison.
pub fn run(args: &QueryArgs, target: &Target, authorization: &str) -> Result<(), QueryError> {
    let seconds = args.dashboard_seconds;
    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let blocks_max = ((seconds * POINTS_PER_S_BOUND) as u64 / args.lines).max(1);
    let span_ns = (blocks_max * args.lines).div_ceil(args.series) * STEP_NS;
    println!(
        "dashboard: {seconds} s of load alone, then {seconds} s with the six panels asked every {} s ({} connections, {} lines/request, unique points)",
        args.dashboard_every, args.connections, args.lines
    );
    let alone = phase(args, target, authorization, now_ns, blocks_max)?;
    let stop = AtomicBool::new(false);
    let (with, panels) = std::thread::scope(|scope| {
        let panels = scope.spawn(|| refresh_panels(args, target, authorization, &stop));
        let with = phase(
            args,
            target,
            authorization,
            now_ns + span_ns + STEP_NS,
            blocks_max,
        );
        stop.store(true, Ordering::Relaxed);
        let panels = panels.join().unwrap_or_default();
        (with, panels)
    });
    let with = with?;
    let line = |name: &str, p: &Phase| {
        println!(
            "dashboard: {name}: {:.0} points/s ({} points acknowledged, {} write requests not acknowledged), ack p99 {:.1} ms",
            p.points_per_s, p.acked_points, p.not_acked, p.p99_ms
        )
    };
    line("ingest alone", &alone);
    line("ingest while the panels refresh", &with);
    println!(
        "dashboard: ingest while the panels refresh = {:.1} % of ingest alone",
        100.0 * with.points_per_s / alone.points_per_s.max(1e-9)
    );
    for (id, (runs, failures, slowest_ms)) in QUERIES.iter().map(|q| q.id).zip(&panels) {
        println!(
            "dashboard: panel {id}: {runs} refreshes, {failures} failed, slowest {slowest_ms:.1} ms"
        );
    }
    Ok(())
}

/// One closed-loop load of `seconds`, points from `start_ns`.
fn phase(
    args: &QueryArgs,
    target: &Target,
    authorization: &str,
    start_ns: u64,
    blocks_max: u64,
) -> Result<Phase, QueryError> {
    let duration = Duration::from_secs_f64(args.dashboard_seconds);
    let plan = cpu_load_plan(
        args,
        target,
        authorization,
        (start_ns, STEP_NS),
        blocks_max,
        Some(duration),
    )?;
    let outcome = load::run(&plan);
    let acked_points = outcome.acked_blocks.len() as u64 * args.lines;
    Ok(Phase {
        points_per_s: acked_points as f64 / outcome.elapsed.as_secs_f64().max(1e-9),
        acked_points,
        not_acked: outcome.sent_blocks - outcome.acked_blocks.len() as u64,
        p99_ms: outcome.latency_us.value_at_quantile(0.99) as f64 / 1000.0,
    })
}

/// Asks the six panels every `--dashboard-every` seconds until `stop`;
/// per panel: (refreshes, failures, slowest ms).
fn refresh_panels(
    args: &QueryArgs,
    target: &Target,
    authorization: &str,
    stop: &AtomicBool,
) -> Vec<(u64, u64, f64)> {
    let mut session = Session::new(
        target,
        authorization,
        &args.db,
        Duration::from_secs_f64(args.timeout),
    );
    let mut panels = vec![(0u64, 0u64, 0f64); QUERIES.len()];
    let every = Duration::from_secs_f64(args.dashboard_every);
    // At least one refresh, however short the load.
    loop {
        let round = Instant::now();
        for (panel, spec) in panels.iter_mut().zip(&QUERIES) {
            let started = Instant::now();
            let (status, _) = session.query(spec.text);
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            panel.0 += 1;
            panel.1 += u64::from(status != 200);
            panel.2 = panel.2.max(ms);
        }
        // Pacing, not ordering: the next refresh is due `every` after this
        // one began; wake often enough to notice the end of the load.
        while !stop.load(Ordering::Relaxed) && round.elapsed() < every {
            std::thread::sleep(Duration::from_millis(20));
        }
        if stop.load(Ordering::Relaxed) {
            return panels;
        }
    }
}
