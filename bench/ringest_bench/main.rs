//! `ringest-bench`: load generator and comparison harness for line-protocol
//! write endpoints (ringest, InfluxDB 1.x, VictoriaMetrics, or the built-in
//! discard server).
//!
//! Subcommands:
//! - `run`: one load run (closed or open loop), a summary on stdout, one CSV
//!   row, then verification that every acknowledged point is stored;
//! - `discard`: the built-in reference server (`discard` or `count` mode);
//! - `report`: the medians table and SVG charts from a CSV file;
//! - `disk`: the data disk alone, written the way the WAL writes it
//!   (paced O_DIRECT write + `fdatasync` pairs from N writers).
//!
//! Exit codes of `run`: 0 all good; 1 bad arguments or set-up failure;
//! 2 verification found acknowledged points missing (or phantom points);
//! 3 verification could not be done; 4 no request was acknowledged at all.
//!
//! This file only wires arguments to the modules; see `load`, `workload`,
//! `verify`, `report`, `discard`, `client`.

// Benchmark binary, not shard code: std threads, wall-clock timing, blocking
// files and sleeps are what it is made of (clippy.toml bans them in shard code).
#![allow(clippy::disallowed_methods)]

mod client;
mod discard;
mod disk;
mod load;
mod report;
mod verify;
mod workload;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Parser)]
#[command(
    name = "ringest-bench",
    about = "Load generator and comparison harness for InfluxDB-compatible write endpoints"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One load run against a target, then verification.
    Run(Box<RunArgs>),
    /// Serve the built-in reference server until killed.
    Discard {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        #[arg(long, value_enum, default_value = "discard")]
        store: discard::StoreMode,
        /// Count mode: silently lose this many points first.
        #[arg(long, default_value_t = 0)]
        drop_points: u64,
    },
    /// Print a TCP port on 127.0.0.1 that was free a moment ago.
    FreePort,
    /// The data disk alone, written like the WAL: each writer thread issues
    /// paced O_DIRECT write + fdatasync pairs into its own preallocated file;
    /// prints the latency percentiles of those pairs.
    Disk(disk::DiskArgs),
    /// Wait until `GET <url><path>` answers 2xx (exit 1 after --timeout seconds).
    Wait {
        #[arg(long)]
        url: String,
        #[arg(long, default_value = "/ping")]
        path: String,
        #[arg(long, default_value_t = 30.0)]
        timeout: f64,
    },
    /// Print the median closed-loop points/s of one system and workload from a CSV
    /// (plain v1 bodies), for sizing open-loop runs; prints 0 when there is none.
    Max {
        #[arg(long)]
        csv: PathBuf,
        #[arg(long)]
        system: String,
        #[arg(long, value_enum, default_value = "cpu")]
        workload: workload::WorkloadKind,
        /// Only runs with this many lines per request (default: any).
        #[arg(long)]
        lines: Option<u64>,
    },
    /// Medians table and SVG charts from a CSV of runs.
    Report {
        #[arg(long)]
        csv: PathBuf,
        /// Write throughput.svg and latency.svg here (default: beside the CSV).
        #[arg(long)]
        out_dir: Option<PathBuf>,
        /// System the ratios are computed against.
        #[arg(long, default_value = "ringest")]
        baseline: String,
        /// The tuning-profile table instead (systems are profiles; ratios are
        /// profile ÷ baseline; open-loop latency and peak server memory beside
        /// throughput): what `bench/profiles.sh` writes.
        #[arg(long)]
        profiles: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Endpoint {
    /// `/write?db=…` (InfluxDB 1.x)
    V1,
    /// `/api/v2/write?bucket=…&org=…` (InfluxDB 2.x)
    V2,
}

#[derive(Parser)]
struct RunArgs {
    /// `http://host:port`, or `internal:discard` / `internal:count` for an
    /// in-process reference server.
    #[arg(long)]
    url: String,
    #[arg(long, value_enum, default_value = "cpu")]
    workload: workload::WorkloadKind,
    /// Number of distinct series.
    #[arg(long, default_value_t = 1000)]
    series: u64,
    /// Lines (points) per request.
    #[arg(long, default_value_t = 1000)]
    lines: u64,
    /// gzip bodies (pre-compressed before the run).
    #[arg(long)]
    gzip: bool,
    /// libdeflate level for --gzip (1..12).
    #[arg(long, default_value_t = 6)]
    gzip_level: i32,
    /// With --gzip and --duration: points pre-compressed; the run ends when they are used up.
    #[arg(long, default_value_t = 5_000_000)]
    gzip_pool_points: u64,
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Seconds to run (ignored if --points is given).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Total points to send (rounded up to whole requests).
    #[arg(long)]
    points: Option<u64>,
    /// Open loop: offered points per second. Without it: closed loop.
    #[arg(long)]
    rate: Option<f64>,
    #[arg(long, value_enum, default_value = "v1")]
    endpoint: Endpoint,
    /// Database (v1) or bucket (v2).
    #[arg(long, default_value = "bench")]
    db: String,
    /// Organization for the v2 endpoint.
    #[arg(long, default_value = "bench")]
    org: String,
    /// Sent as `Authorization: Token <token>`.
    #[arg(long)]
    token: Option<String>,
    /// Send `CREATE DATABASE` first (InfluxDB 1.x needs it).
    #[arg(long)]
    create_db: bool,
    #[arg(long, value_enum, default_value = "influxql")]
    verify: verify::VerifyMethod,
    /// Seconds to wait for verification answers (and for VictoriaMetrics to show the data).
    #[arg(long, default_value_t = 60.0)]
    verify_timeout: f64,
    /// Per-request answer timeout, seconds.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// First timestamp, ns since 1970 (default: now − 1 day, whole second:
    /// inside ringest's default retention of 3 days, so no point is refused
    /// or expires during the run).
    #[arg(long)]
    start_ns: Option<u64>,
    /// System name for the report.
    #[arg(long, default_value = "target")]
    label: String,
    /// Whether the target's acknowledgement means synced (for the report).
    #[arg(long, default_value = "unknown")]
    ack_synced: String,
    /// Round number (for the report).
    #[arg(long, default_value_t = 0)]
    round: u32,
    /// Append one row to this CSV file.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// internal:count only: silently lose this many points.
    #[arg(long, default_value_t = 0)]
    internal_drop_points: u64,
    /// Process id of the server under test: after the run and its
    /// verification, its peak resident set (VmHWM in /proc/PID/status) goes
    /// into the row (`server_vmhwm_kib`; 0 when not given).
    #[arg(long)]
    server_pid: Option<u32>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(*args),
        Command::Discard {
            listen,
            store,
            drop_points,
        } => {
            let listener = match std::net::TcpListener::bind(&listen) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("ringest-bench: cannot listen on {listen}: {e}");
                    return ExitCode::from(1);
                }
            };
            match listener.local_addr() {
                Ok(addr) => println!("ringest-bench: {} ready on {addr}", store_name(store)),
                Err(e) => {
                    eprintln!("ringest-bench: {e}");
                    return ExitCode::from(1);
                }
            }
            discard::serve(listener, store, drop_points);
            ExitCode::SUCCESS
        }
        Command::Report {
            csv,
            out_dir,
            baseline,
            profiles,
        } => report_command(&csv, out_dir, &baseline, profiles),
        Command::FreePort => {
            match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
                Ok(addr) => {
                    println!("{}", addr.port());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Command::Wait { url, path, timeout } => wait_command(&url, &path, timeout),
        Command::Disk(args) => {
            let positive = |x: f64| x.is_finite() && x > 0.0;
            if args.writers == 0
                || !positive(args.rate)
                || args.bytes == 0
                || !positive(args.seconds)
            {
                return fail("disk: --writers, --rate, --bytes and --seconds must be positive");
            }
            match disk::probe(&args) {
                Ok(result) => {
                    println!("{}", disk::summary(&args, &result));
                    ExitCode::SUCCESS
                }
                Err(e) => fail(format!("disk: {e}")),
            }
        }
        Command::Max {
            csv,
            system,
            workload,
            lines,
        } => match report::read_csv(&csv) {
            Ok(records) => {
                println!(
                    "{:.0}",
                    report::closed_loop_median(&records, &system, workload.name(), lines)
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(format!("cannot read {}: {e}", csv.display())),
        },
    }
}

fn wait_command(url: &str, path: &str, timeout_s: f64) -> ExitCode {
    let target = match client::Target::parse(url) {
        Ok(t) => t,
        Err(e) => return fail(format!("{url}: {e}")),
    };
    let deadline = std::time::Instant::now() + Duration::from_secs_f64(timeout_s);
    loop {
        match client::get_with_headers(&target, path, "", Duration::from_secs(2), 1 << 20) {
            Ok((status, _)) if (200..300).contains(&status) => return ExitCode::SUCCESS,
            _ if std::time::Instant::now() >= deadline => {
                return fail(format!(
                    "{url}{path} did not answer 2xx within {timeout_s} s"
                ))
            }
            // Polling a starting server: nothing to wait on but time.
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn store_name(store: discard::StoreMode) -> &'static str {
    match store {
        discard::StoreMode::Discard => "discard",
        discard::StoreMode::Count => "count",
    }
}

fn report_command(
    csv: &std::path::Path,
    out_dir: Option<PathBuf>,
    baseline: &str,
    profiles: bool,
) -> ExitCode {
    let records = match report::read_csv(csv) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ringest-bench: cannot read {}: {e}", csv.display());
            return ExitCode::from(1);
        }
    };
    if profiles {
        print!("{}", report::profiles_table(&records, baseline));
    } else {
        print!("{}", report::table(&records, baseline));
    }
    let dir = out_dir.unwrap_or_else(|| csv.parent().map(|p| p.to_path_buf()).unwrap_or_default());
    let stem = csv
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("results");
    let charts = [
        (
            format!("{stem}-throughput.svg"),
            report::throughput_svg(&records),
        ),
        (format!("{stem}-latency.svg"), report::latency_svg(&records)),
    ];
    for (name, svg) in charts {
        let path = dir.join(name);
        if let Err(e) = std::fs::write(&path, svg) {
            eprintln!("ringest-bench: cannot write {}: {e}", path.display());
            return ExitCode::from(1);
        }
        println!("chart: {}", path.display());
    }
    ExitCode::SUCCESS
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("ringest-bench: {message}");
    ExitCode::from(1)
}

fn run(args: RunArgs) -> ExitCode {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let start_ns = args
        .start_ns
        .unwrap_or((now.as_secs() - 86_400) * 1_000_000_000);
    let workload = match workload::Workload::new(args.workload, args.series, args.lines, start_ns) {
        Ok(w) => w,
        Err(e) => return fail(e),
    };
    if args.connections == 0 || args.connections > 4096 {
        return fail("--connections must be between 1 and 4096");
    }
    if args.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        return fail("--rate must be positive");
    }
    let target_url = match args.url.as_str() {
        "internal:discard" | "internal:count" => {
            let mode = if args.url.ends_with("count") {
                discard::StoreMode::Count
            } else {
                discard::StoreMode::Discard
            };
            match discard::spawn_local(mode, args.internal_drop_points) {
                Ok(addr) => format!("http://{addr}"),
                Err(e) => return fail(format!("cannot start the internal server: {e}")),
            }
        }
        url => url.to_string(),
    };
    let target = match client::Target::parse(&target_url) {
        Ok(t) => t,
        Err(e) => return fail(format!("{}: {e}", args.url)),
    };
    let timeout = Duration::from_secs_f64(args.timeout);
    let authorization = args
        .token
        .as_ref()
        .map(|t| format!("Authorization: Token {t}\r\n"))
        .unwrap_or_default();
    if args.create_db {
        let path = format!(
            "/query?q={}",
            client::encode(&format!("CREATE DATABASE \"{}\"", args.db))
        );
        match client::post(&target, &path, &authorization, b"", timeout) {
            Ok((status, _)) if (200..300).contains(&status) => {}
            Ok((status, body)) => {
                return fail(format!(
                    "CREATE DATABASE answered {status}: {}",
                    String::from_utf8_lossy(&body)
                ))
            }
            Err(e) => return fail(format!("CREATE DATABASE: {e}")),
        }
    }

    // Requests to send, and their bodies, all prepared before the clock starts.
    let mut blocks_max = match args.points {
        Some(points) => points.div_ceil(args.lines),
        None => u64::MAX,
    };
    let prepare_started = std::time::Instant::now();
    let bodies = if args.gzip {
        if args.points.is_none() {
            blocks_max = args.gzip_pool_points.div_ceil(args.lines);
        }
        if let Err(e) = workload.check_blocks(blocks_max) {
            return fail(e);
        }
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let (pool, raw_bytes_total) = workload.gzip_pool(blocks_max, args.gzip_level, threads);
        load::Bodies::Gzip {
            pool: Arc::new(pool),
            raw_bytes_total,
        }
    } else {
        let count = workload.template_count();
        let templates: Vec<workload::Template> = (0..count).map(|i| workload.template(i)).collect();
        let bytes: u64 = templates.iter().map(|t| t.body.len() as u64).sum();
        if bytes.saturating_mul(args.connections as u64) > load::TEMPLATE_BYTES_MAX {
            return fail(format!(
                "{count} distinct bodies × {} connections need {} MiB (limit {} MiB): lower --series or --connections, or make --series a multiple of --lines",
                args.connections,
                (bytes * args.connections as u64) >> 20,
                load::TEMPLATE_BYTES_MAX >> 20
            ));
        }
        // Keep every timestamp within the fixed width for the whole run.
        while workload.check_blocks(blocks_max).is_err() {
            blocks_max /= 2;
        }
        load::Bodies::Plain(Arc::new(templates))
    };
    let path = match args.endpoint {
        Endpoint::V1 => format!("/write?db={}&precision=ns", client::encode(&args.db)),
        Endpoint::V2 => format!(
            "/api/v2/write?bucket={}&org={}&precision=ns",
            client::encode(&args.db),
            client::encode(&args.org)
        ),
    };
    let head_prefix = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ringest-bench\r\nContent-Type: text/plain; charset=utf-8\r\n{}{authorization}",
        target.authority,
        if args.gzip { "Content-Encoding: gzip\r\n" } else { "" }
    );
    let plan = load::LoadPlan {
        target: target.clone(),
        workload: workload.clone(),
        bodies,
        head_prefix,
        connections: args.connections,
        blocks_max,
        duration: args
            .points
            .is_none()
            .then(|| Duration::from_secs_f64(args.duration)),
        rate_points_per_s: args.rate,
        timeout,
    };
    let mean_line_bytes = match &plan.bodies {
        load::Bodies::Plain(t) => t[0].body.len() as f64 / args.lines as f64,
        load::Bodies::Gzip {
            pool,
            raw_bytes_total,
        } => *raw_bytes_total as f64 / (pool.len() as u64 * args.lines) as f64,
    };
    println!(
        "ringest-bench: {} → {} ({}), {} series, {} lines/request ({:.0} bytes/line), {}, {} connections, {}, bodies prepared in {:.1} s",
        args.workload.name(),
        args.label,
        target_url,
        args.series,
        args.lines,
        mean_line_bytes,
        if args.gzip { format!("gzip level {}", args.gzip_level) } else { "plain".to_string() },
        args.connections,
        match args.rate {
            Some(rate) => format!("open loop at {rate:.0} points/s"),
            None => "closed loop".to_string(),
        },
        prepare_started.elapsed().as_secs_f64()
    );

    let outcome = load::run(&plan);

    let lines = args.lines;
    let elapsed_s = outcome.elapsed.as_secs_f64().max(1e-9);
    let points_acked = outcome.acked_blocks.len() as u64 * lines;
    let requests: u64 = outcome.sent_blocks;
    let hist = &outcome.latency_us;
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let mut answers: Vec<String> = outcome
        .status_counts
        .iter()
        .map(|(s, n)| format!("{s}:{n}"))
        .collect();
    answers.extend(outcome.error_counts.iter().map(|(e, n)| format!("{e}:{n}")));
    let mut record = report::RunRecord {
        system: args.label.clone(),
        ack_synced: args.ack_synced.clone(),
        round: args.round,
        workload: args.workload.name().to_string(),
        mode: if args.rate.is_some() {
            "open"
        } else {
            "closed"
        }
        .to_string(),
        endpoint: match args.endpoint {
            Endpoint::V1 => "v1",
            Endpoint::V2 => "v2",
        }
        .to_string(),
        gzip: args.gzip,
        series: args.series,
        lines_per_request: lines,
        connections: args.connections as u64,
        offered_points_per_s: args.rate.unwrap_or(0.0),
        elapsed_s,
        requests,
        points_acked,
        points_per_s: points_acked as f64 / elapsed_s,
        wire_mb_per_s: outcome.wire_bytes as f64 / elapsed_s / 1e6,
        raw_mb_per_s: outcome.raw_bytes as f64 / elapsed_s / 1e6,
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: hist.max() as f64 / 1000.0,
        answers: answers.join(";"),
        behind_schedule: outcome.behind_schedule,
        verify: "skipped".to_string(),
        missing_points: 0,
        unix_s: now.as_secs(),
        server_vmhwm_kib: 0,
    };
    println!(
        "result: {:.0} points/s ({:.0} values/s), {} points acknowledged in {:.2} s, {} requests, wire {:.1} MB/s, decompressed {:.1} MB/s",
        record.points_per_s,
        record.points_per_s * workload.fields_per_line() as f64,
        points_acked,
        elapsed_s,
        requests,
        record.wire_mb_per_s,
        record.raw_mb_per_s
    );
    println!(
        "latency{}: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
        if args.rate.is_some() {
            " (from intended send time)"
        } else {
            ""
        },
        record.p50_ms,
        record.p90_ms,
        record.p99_ms,
        record.p999_ms,
        record.max_ms
    );
    println!(
        "answers: {}",
        if answers.is_empty() {
            "none".to_string()
        } else {
            answers.join(", ")
        }
    );
    if let Some(example) = &outcome.error_example {
        println!("first error answer: {example}");
    }
    if outcome.behind_schedule > 0 {
        println!(
            "open loop: {} due requests were never sent (the target or the connection count could not keep up)",
            outcome.behind_schedule
        );
    }

    // Counting per series costs a pass over every point: only when it is used.
    let expected = match args.verify {
        verify::VerifyMethod::None => verify::Expected {
            acked: Vec::new(),
            issued: Vec::new(),
        },
        _ => verify::Expected::new(&workload, &outcome.acked_blocks, outcome.blocks_issued),
    };
    let verify_plan = verify::VerifyPlan {
        target: &target,
        workload: &workload,
        database: &args.db,
        token: args.token.as_deref(),
        timeout: Duration::from_secs_f64(args.verify_timeout),
        points_issued: outcome.blocks_issued * lines,
    };
    let mut code = ExitCode::SUCCESS;
    match verify::verify(args.verify, &verify_plan, &expected) {
        Ok(None) => println!("verify: skipped (--verify none): stored points were NOT checked"),
        Ok(Some(v)) if v.passed() => {
            record.verify = "ok".to_string();
            println!(
                "verify ({}): OK, every acknowledged point is stored: {} acknowledged, {} stored in {} series{} (answered after {:.2} s)",
                args.verify.name(),
                v.acked_points,
                v.stored_points,
                args.series,
                if v.stored_points > v.acked_points { ", the rest from unacknowledged requests" } else { "" },
                v.waited.as_secs_f64()
            );
        }
        Ok(Some(v)) => {
            record.verify = "missing".to_string();
            record.missing_points = v.missing_points;
            println!(
                "verify ({}): FAILED: {} acknowledged points missing in {} series; {} points more than were sent ({} unknown series); {} acknowledged, {} stored (waited {:.2} s)",
                args.verify.name(),
                v.missing_points,
                v.short_series,
                v.excess_points,
                v.unknown_series,
                v.acked_points,
                v.stored_points,
                v.waited.as_secs_f64()
            );
            code = ExitCode::from(2);
        }
        Err(e) => {
            record.verify = "error".to_string();
            println!("verify ({}): could not verify: {e}", args.verify.name());
            code = ExitCode::from(3);
        }
    }
    // After verification, so the memory its queries took counts too: the
    // last run of a server's life reads its peak just before it is stopped.
    if let Some(pid) = args.server_pid {
        match report::vmhwm_kib(pid) {
            Ok(kib) => {
                record.server_vmhwm_kib = kib;
                println!(
                    "server: peak resident set {:.1} MiB so far (VmHWM of pid {pid})",
                    kib as f64 / 1024.0
                );
            }
            Err(e) => eprintln!("ringest-bench: no peak resident set of pid {pid}: {e}"),
        }
    }
    if let Some(csv) = &args.csv {
        if let Err(e) = report::append_csv(csv, &record) {
            eprintln!("ringest-bench: cannot append to {}: {e}", csv.display());
            return ExitCode::from(1);
        }
    }
    if points_acked == 0 && code == ExitCode::SUCCESS {
        println!("result: no request was acknowledged");
        code = ExitCode::from(4);
    }
    code
}
