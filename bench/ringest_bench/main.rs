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
//!   (paced O_DIRECT write + `fdatasync` pairs from N writers);
//! - `soak`: a long run of unique points, sampling throughput, answers,
//!   latency, the server's RSS and fds and its data directory's bytes by
//!   kind every interval (CSV, SVG, summary), and an acked log;
//! - `verify`: reads back every point an acked log lists (after a restart);
//! - `query`: the dashboard query benchmark (load, then time a fixed query
//!   set); `query-report`: its runs side by side.
//!
//! Exit codes of `run` and `verify`: 0 all good; 1 bad arguments or set-up failure;
//! 2 verification found acknowledged points missing (or phantom points);
//! 3 verification could not be done; 4 no request was acknowledged at all.
//!
//! `soak` exits 0 when any point was acknowledged, 4 when none was, 1 on
//! set-up failure; its refusals and memory are for the reader to judge.
//!
//! This file only wires arguments to the modules; see `load`, `workload`,
//! `verify`, `report`, `soak`, `query`, `discard`, `client`.

// Benchmark binary, not shard code: std threads, wall-clock timing, blocking
// files and sleeps are what it is made of (clippy.toml bans them in shard code).
#![allow(clippy::disallowed_methods)]

mod chaos;
mod client;
mod dashboard;
mod discard;
mod disk;
mod load;
mod query;
mod report;
mod soak;
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
    /// A long run of unique points with the server watched over time (issue 14)
    ///
    /// Load: unique points (no point repeats), open loop paced at --rate
    /// points/s, or closed loop on --connections without it, for --duration s.
    /// Every --sample-interval s one CSV row: acknowledged points/s, answers
    /// 2xx/429/503/other, ack latency p50/p99, the server's VmRSS and open
    /// fds (/proc/PID; PID from --server-pid or `<data-dir>/LOCK`), and the
    /// bytes under --data-dir by kind (wal/, parquet/, catalog/, the rest,
    /// total; apparent and allocated = st_blocks*512).
    /// At the end: an SVG chart (throughput, RSS, disk over time), a summary
    /// (points acknowledged, refusals, RSS flatness = the last third of the
    /// run against the mean of 1/6..1/3 of it, i.e. the last 10 minutes
    /// against minutes 5-10 of 30, +-10 %; WAL max bytes; bytes per point of
    /// the WAL and of the Parquet files), and an acked log for `verify`.
    /// Exit 0 when any point was acknowledged, 4 when none was.
    ///
    /// Example (bench/soak.sh does all of it, kill -9, restart and verify included):
    ///   ringest-bench soak --url http://127.0.0.1:8086 --data-dir ./ringest-data \
    ///     --rate 400000 --duration 1800 --csv soak.csv
    ///   ringest-bench verify --url http://127.0.0.1:8086 --acked-log soak.acked
    #[command(verbatim_doc_comment)]
    Soak(Box<SoakArgs>),
    /// Mixed load with crashes (issue 18 item 4)
    ///
    /// Starts `--ringest serve` on --data-dir (plus each --server-arg) on a
    /// free loopback port, runs every kind of client against it at once (v1
    /// and v2 writes, gzip, keep-alive and a connection per request, a slow
    /// client, queries, bad requests, stalled heads), SIGKILLs and restarts
    /// it every --crash-every s, samples RSS/fds/disk to --csv, and at the
    /// end checks that every acknowledged point is stored exactly once and
    /// nothing else is (`bench/chaos.rs` explains the ledger). Report in
    /// --report (Markdown); the server's output goes to `<data-dir>.log`.
    /// Exit 0: zero lost, duplicated or phantom points, no unexpected
    /// answer, no leaked fd; 2 otherwise; 1 when it could not run.
    ///
    /// Example (bench/chaos.sh wraps it):
    ///   ringest-bench chaos --ringest target/release/ringest --data-dir /tmp/chaos \
    ///     --duration 3600 --crash-every 300 --csv chaos.csv --report chaos.md
    #[command(verbatim_doc_comment)]
    Chaos(Box<ChaosArgs>),
    /// Read back every point an acked log (from `soak --acked-log`) lists as
    /// acknowledged, e.g. after the server was killed and restarted.
    Verify {
        /// `http://host:port` of the server to read the points back from.
        #[arg(long)]
        url: String,
        /// The acked log a soak wrote (`soak --acked-log`, default beside its CSV).
        #[arg(long)]
        acked_log: PathBuf,
        /// Sent as `Authorization: Token <token>`.
        #[arg(long)]
        token: Option<String>,
        /// Seconds to wait for each query answer.
        #[arg(long, default_value_t = 120.0)]
        timeout: f64,
    },
    /// The dashboard query benchmark (issue 19 item 5)
    ///
    /// Loads --load-points unique cpu points (--series hosts, one point per
    /// host every --step-ms, ending one step before now; 0: query what is
    /// there), then runs each query of the fixed set once to warm up and
    /// --repeat times timed, on one keep-alive connection, with `epoch=ms`:
    ///   count                SELECT count(usage_user) FROM cpu
    ///   mean_1s_2h           SELECT mean(usage_user) FROM cpu WHERE time >= now() - 2h GROUP BY time(1s)
    ///   last_by_host         SELECT last(usage_user) FROM cpu GROUP BY hostname
    ///   mean_10s_1h_by_host  SELECT mean(usage_user) FROM cpu WHERE time >= now() - 1h GROUP BY time(10s), hostname
    ///   tag_values           SHOW TAG VALUES FROM cpu WITH KEY = "hostname"
    ///   host_lookup          SELECT usage_user FROM cpu WHERE hostname = 'host_1'
    /// Per query: min/median/max wall ms (request sent to last answer byte),
    /// the answer's digest (bytes, series, rows, non-null values, their sum,
    /// a hash of its strings; the time column left out, so two systems'
    /// answers can be compared: `query-report`), and:
    ///   points in range = the stored points the query's time range and tag
    ///     condition select: `SELECT count(usage_user) FROM cpu <its WHERE>`
    ///     asked of the server right before the timed runs (for tag_values:
    ///     the values returned, one index entry per series);
    ///   rows scanned/s per core = points in range ÷ median wall seconds ÷
    ///     --cores (default: this machine's cores, all of which the server
    ///     may use);
    ///   with --server-pid: server CPU s/run = (utime + stime from
    ///     /proc/PID/stat after the timed runs − before) ÷ --repeat, and
    ///     rows/CPU-s = points in range ÷ that (10 ms tick resolution).
    /// Prints a Markdown table; --csv appends one row per query.
    /// Exit 0; 1 bad arguments, set-up or load failure, or a query answered
    /// with an error; 2 the count after a load is not the points loaded.
    ///
    /// Example (bench/query.sh does it for ringest and InfluxDB 1.6.7):
    ///   ringest-bench query --url http://127.0.0.1:8086 --load-points 10000000 \
    ///     --label ringest --server-pid PID --csv query.csv
    ///   ringest-bench query --url http://127.0.0.1:8086 --load-points 0 --wait-persisted \
    ///     --label ringest-persisted --server-pid PID --csv query.csv
    ///   ringest-bench query-report --csv query.csv
    #[command(verbatim_doc_comment)]
    Query(Box<query::QueryArgs>),
    /// The runs of `query --csv` side by side: median times, rows scanned/s
    /// per core and server CPU per system, ratios against the baselines, and
    /// whether each answer agrees with the first baseline's.
    QueryReport {
        #[arg(long)]
        csv: PathBuf,
        /// `OTHER:BASELINE`: a ratio column of OTHER's median times ÷
        /// BASELINE's (repeatable; default: every system not named ringest*
        /// against every one that is).
        #[arg(long, value_parser = ratio_pair)]
        ratio: Vec<(String, String)>,
        /// The system whose answers the others' are compared with (default:
        /// the first one named ringest*).
        #[arg(long)]
        reference: Option<String>,
    },
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

#[derive(Parser)]
struct SoakArgs {
    /// `http://host:port` of the server under test.
    #[arg(long)]
    url: String,
    /// The server's data directory: its bytes by kind are sampled, and its
    /// `LOCK` file names the server's pid unless --server-pid does.
    #[arg(long)]
    data_dir: PathBuf,
    /// Process id of the server (default: the pid in `<data-dir>/LOCK`).
    #[arg(long)]
    server_pid: Option<u32>,
    #[arg(long, value_enum, default_value = "cpu")]
    workload: workload::WorkloadKind,
    /// Number of distinct series.
    #[arg(long, default_value_t = 1000)]
    series: u64,
    /// Lines (points) per request.
    #[arg(long, default_value_t = 1000)]
    lines: u64,
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Open loop: offered points per second (paced). Without it: closed loop.
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds to run.
    #[arg(long, default_value_t = 1800.0)]
    duration: f64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 10.0)]
    sample_interval: f64,
    #[arg(long, value_enum, default_value = "v1")]
    endpoint: Endpoint,
    /// Database (v1) or bucket (v2).
    #[arg(long, default_value = "soak")]
    db: String,
    /// Organization for the v2 endpoint.
    #[arg(long, default_value = "bench")]
    org: String,
    /// Sent as `Authorization: Token <token>`.
    #[arg(long)]
    token: Option<String>,
    /// Per-request answer timeout, seconds.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// First timestamp, ns since 1970 (default: now − 1 day: inside the default retention of 3 days, whole second).
    #[arg(long)]
    start_ns: Option<u64>,
    /// One row per sample (written as taken; overwritten if it exists).
    #[arg(long)]
    csv: PathBuf,
    /// The chart (default: the CSV's path with `.svg`).
    #[arg(long)]
    svg: Option<PathBuf>,
    /// The acknowledged blocks, for `verify` (default: the CSV's path with `.acked`).
    #[arg(long)]
    acked_log: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct ChaosArgs {
    /// The ringest binary to start (and restart).
    #[arg(long)]
    ringest: PathBuf,
    /// Its data directory (kept across the restarts).
    #[arg(long)]
    data_dir: PathBuf,
    /// One more argument for `ringest serve` (repeat: `--server-arg=--shards --server-arg=2`).
    #[arg(long, allow_hyphen_values = true)]
    server_arg: Vec<String>,
    /// Seconds of load.
    #[arg(long, default_value_t = 3600.0)]
    duration: f64,
    /// Seconds between SIGKILLs.
    #[arg(long, default_value_t = 300.0)]
    crash_every: f64,
    /// Points per second offered by the five paced writers together.
    #[arg(long, default_value_t = 20000)]
    rate: u64,
    /// Series per writer.
    #[arg(long, default_value_t = 100)]
    series: u64,
    /// Points per request.
    #[arg(long, default_value_t = 200)]
    lines: u64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 10.0)]
    sample_interval: f64,
    /// Seconds a (re)start may take to answer `/ready`.
    #[arg(long, default_value_t = 120.0)]
    ready_timeout: f64,
    /// One row per sample.
    #[arg(long)]
    csv: PathBuf,
    /// The Markdown report.
    #[arg(long)]
    report: PathBuf,
}

fn chaos_command(args: ChaosArgs) -> ExitCode {
    let seconds = |s: f64| Duration::from_secs_f64(s.max(0.001));
    if args.series == 0 || args.lines == 0 || args.rate == 0 {
        return fail("--series, --lines and --rate must be positive");
    }
    let settings = chaos::Settings {
        ringest: args.ringest,
        data_dir: args.data_dir,
        server_args: args.server_arg,
        duration: seconds(args.duration),
        crash_every: seconds(args.crash_every),
        rate: args.rate,
        series: args.series,
        lines: args.lines,
        sample_interval: seconds(args.sample_interval),
        csv: args.csv,
        report: args.report,
        ready_timeout: seconds(args.ready_timeout),
    };
    match chaos::run(&settings) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(error) => fail(error),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(*args),
        Command::Soak(args) => soak_command(*args),
        Command::Chaos(args) => chaos_command(*args),
        Command::Query(args) => match query::run(&args) {
            Ok(outcome) if outcome.count_mismatch => ExitCode::from(2),
            Ok(outcome) if outcome.records.iter().any(|r| r.digest.error.is_some()) => {
                eprintln!("ringest-bench: a query was answered with an error (see the table)");
                ExitCode::from(1)
            }
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => fail(format!("query: {e}")),
        },
        Command::QueryReport {
            csv,
            ratio,
            reference,
        } => match query::read_csv(&csv) {
            Ok(records) if records.is_empty() => fail(format!("{}: no query rows", csv.display())),
            Ok(records) => {
                print!("{}", query::report(&records, &ratio, reference.as_deref()));
                ExitCode::SUCCESS
            }
            Err(e) => fail(format!("cannot read {}: {e}", csv.display())),
        },
        Command::Verify {
            url,
            acked_log,
            token,
            timeout,
        } => verify_command(&url, &acked_log, token.as_deref(), timeout),
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

/// Plain bodies for `connections` connections (each re-stamps its own copy);
/// lowers `blocks_max` until every timestamp of the run fits the fixed width.
fn plain_bodies(
    workload: &workload::Workload,
    connections: usize,
    blocks_max: &mut u64,
) -> Result<load::Bodies, String> {
    let count = workload.template_count();
    let templates: Vec<workload::Template> = (0..count).map(|i| workload.template(i)).collect();
    let bytes: u64 = templates.iter().map(|t| t.body.len() as u64).sum();
    if bytes.saturating_mul(connections as u64) > load::TEMPLATE_BYTES_MAX {
        return Err(format!(
            "{count} distinct bodies × {connections} connections need {} MiB (limit {} MiB): lower --series or --connections, or make --series a multiple of --lines",
            (bytes * connections as u64) >> 20,
            load::TEMPLATE_BYTES_MAX >> 20
        ));
    }
    // Keep every timestamp within the fixed width for the whole run.
    while workload.check_blocks(*blocks_max).is_err() {
        *blocks_max /= 2;
    }
    Ok(load::Bodies::Plain(Arc::new(templates)))
}

/// The head of every write request, up to (not including) Content-Length.
fn write_head_prefix(
    target: &client::Target,
    endpoint: Endpoint,
    db: &str,
    org: &str,
    authorization: &str,
    gzip: bool,
) -> String {
    let path = match endpoint {
        Endpoint::V1 => format!("/write?db={}&precision=ns", client::encode(db)),
        Endpoint::V2 => format!(
            "/api/v2/write?bucket={}&org={}&precision=ns",
            client::encode(db),
            client::encode(org)
        ),
    };
    format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ringest-bench\r\nContent-Type: text/plain; charset=utf-8\r\n{}{authorization}",
        target.authority,
        if gzip { "Content-Encoding: gzip\r\n" } else { "" }
    )
}

/// `OTHER:BASELINE` of `query-report --ratio`.
fn ratio_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once(':') {
        Some((other, baseline)) if !other.is_empty() && !baseline.is_empty() => {
            Ok((other.to_string(), baseline.to_string()))
        }
        _ => Err("expected OTHER:BASELINE (two system names)".to_string()),
    }
}

/// Sends `CREATE DATABASE "<db>"` (InfluxDB 1.x needs it before writes).
fn create_database(
    target: &client::Target,
    db: &str,
    authorization: &str,
    timeout: Duration,
) -> Result<(), String> {
    let path = format!(
        "/query?q={}",
        client::encode(&format!("CREATE DATABASE \"{db}\""))
    );
    match client::post(target, &path, authorization, b"", timeout) {
        Ok((status, _)) if (200..300).contains(&status) => Ok(()),
        Ok((status, body)) => Err(format!(
            "answered {status}: {}",
            String::from_utf8_lossy(&body)
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// `Authorization: Token <token>` and its line end, or nothing.
fn authorization_header(token: Option<&str>) -> String {
    token
        .map(|t| format!("Authorization: Token {t}\r\n"))
        .unwrap_or_default()
}

/// Prints the outcome of a verification; returns the report's `verify`
/// word, the missing points and the exit code (0, 2 missing, 3 not done).
fn print_verification(
    method: verify::VerifyMethod,
    series: u64,
    result: Result<Option<verify::Verification>, verify::VerifyError>,
) -> (&'static str, u64, ExitCode) {
    match result {
        Ok(None) => {
            println!("verify: skipped (--verify none): stored points were NOT checked");
            ("skipped", 0, ExitCode::SUCCESS)
        }
        Ok(Some(v)) if v.passed() => {
            println!(
                "verify ({}): OK, every acknowledged point is stored: {} acknowledged, {} stored in {} series{} (answered after {:.2} s)",
                method.name(),
                v.acked_points,
                v.stored_points,
                series,
                if v.stored_points > v.acked_points { ", the rest from unacknowledged requests" } else { "" },
                v.waited.as_secs_f64()
            );
            ("ok", 0, ExitCode::SUCCESS)
        }
        Ok(Some(v)) => {
            println!(
                "verify ({}): FAILED: {} acknowledged points missing in {} series; {} points more than were sent ({} unknown series); {} acknowledged, {} stored (waited {:.2} s)",
                method.name(),
                v.missing_points,
                v.short_series,
                v.excess_points,
                v.unknown_series,
                v.acked_points,
                v.stored_points,
                v.waited.as_secs_f64()
            );
            ("missing", v.missing_points, ExitCode::from(2))
        }
        Err(e) => {
            println!("verify ({}): could not verify: {e}", method.name());
            ("error", 0, ExitCode::from(3))
        }
    }
}

/// The first timestamp when none is given: a day back, inside ringest's
/// default retention of 3 days (one rule for `run` and `soak`).
fn default_start_ns() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (now.as_secs() - 86_400) * 1_000_000_000
}

fn soak_command(args: SoakArgs) -> ExitCode {
    let start_ns = args.start_ns.unwrap_or_else(default_start_ns);
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
    let positive = |x: f64| x.is_finite() && x > 0.0;
    if !positive(args.duration) || !positive(args.sample_interval) {
        return fail("--duration and --sample-interval must be positive");
    }
    let target = match client::Target::parse(&args.url) {
        Ok(t) => t,
        Err(e) => return fail(format!("{}: {e}", args.url)),
    };
    let server_pid = match args.server_pid {
        Some(pid) => pid,
        None => match soak::lock_holder_pid(&args.data_dir) {
            Ok(pid) => pid,
            Err(e) => return fail(format!("no --server-pid, and {e}")),
        },
    };
    let mut blocks_max = u64::MAX;
    let bodies = match plain_bodies(&workload, args.connections, &mut blocks_max) {
        Ok(bodies) => bodies,
        Err(e) => return fail(e),
    };
    let authorization = authorization_header(args.token.as_deref());
    let live = Arc::new(load::Live::new());
    let plan = load::LoadPlan {
        target: target.clone(),
        workload: workload.clone(),
        bodies,
        head_prefix: write_head_prefix(
            &target,
            args.endpoint,
            &args.db,
            &args.org,
            &authorization,
            false,
        ),
        connections: args.connections,
        blocks_max,
        duration: Some(Duration::from_secs_f64(args.duration)),
        rate_points_per_s: args.rate,
        timeout: Duration::from_secs_f64(args.timeout),
        live: Some(live),
    };
    let watch = soak::Watch {
        data_dir: args.data_dir.clone(),
        server_pid,
        interval: Duration::from_secs_f64(args.sample_interval),
    };
    let svg_path = args
        .svg
        .clone()
        .unwrap_or_else(|| args.csv.with_extension("svg"));
    let acked_path = args
        .acked_log
        .clone()
        .unwrap_or_else(|| args.csv.with_extension("acked"));
    let mut csv = match std::fs::File::create(&args.csv) {
        Ok(f) => f,
        Err(e) => return fail(format!("cannot create {}: {e}", args.csv.display())),
    };
    println!(
        "ringest-bench soak: {} → {} (pid {server_pid}, data {}), {} series, {} lines/request, {} connections, {}, {:.0} s, a sample every {} s",
        args.workload.name(),
        args.url,
        args.data_dir.display(),
        args.series,
        args.lines,
        args.connections,
        match args.rate {
            Some(rate) => format!("open loop at {rate:.0} points/s"),
            None => "closed loop".to_string(),
        },
        args.duration,
        args.sample_interval
    );
    let (outcome, samples) = match soak::run(&plan, &watch, &mut csv) {
        Ok(done) => done,
        Err(e) => return fail(format!("cannot write {}: {e}", args.csv.display())),
    };
    let log = verify::AckedLog {
        workload: args.workload,
        series: args.series,
        lines_per_request: args.lines,
        start_ns,
        database: args.db.clone(),
        blocks_issued: outcome.blocks_issued,
        acked_blocks: outcome.acked_blocks.clone(),
    };
    if let Err(e) = std::fs::write(&acked_path, log.to_text()) {
        return fail(format!("cannot write {}: {e}", acked_path.display()));
    }
    let title = format!(
        "Soak: {} {}, {} connections, {:.0} s",
        args.workload.name(),
        match args.rate {
            Some(rate) => format!("open loop at {rate:.0} points/s"),
            None => "closed loop".to_string(),
        },
        args.connections,
        args.duration
    );
    if let Err(e) = std::fs::write(&svg_path, soak::svg(&samples, args.sample_interval, &title)) {
        return fail(format!("cannot write {}: {e}", svg_path.display()));
    }
    print!(
        "{}",
        soak::summary(
            &samples,
            args.duration,
            args.sample_interval,
            workload.fields_per_line()
        )
    );
    let hist = &outcome.latency_us;
    println!(
        "latency over the whole run{}: p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
        if args.rate.is_some() {
            " (from intended send time)"
        } else {
            ""
        },
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.value_at_quantile(0.999) as f64 / 1000.0,
        hist.max() as f64 / 1000.0
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
    println!(
        "wrote {}, {} and {} (ringest-bench verify --url URL --acked-log {})",
        args.csv.display(),
        svg_path.display(),
        acked_path.display(),
        acked_path.display()
    );
    if outcome.acked_blocks.is_empty() {
        println!("soak: no request was acknowledged");
        return ExitCode::from(4);
    }
    ExitCode::SUCCESS
}

fn verify_command(
    url: &str,
    acked_log: &std::path::Path,
    token: Option<&str>,
    timeout_s: f64,
) -> ExitCode {
    let log = match std::fs::read_to_string(acked_log)
        .map_err(|e| e.to_string())
        .and_then(|text| verify::AckedLog::parse(&text))
    {
        Ok(log) => log,
        Err(e) => return fail(format!("{}: {e}", acked_log.display())),
    };
    let workload = match workload::Workload::new(
        log.workload,
        log.series,
        log.lines_per_request,
        log.start_ns,
    ) {
        Ok(w) => w,
        Err(e) => return fail(format!("{}: {e}", acked_log.display())),
    };
    let target = match client::Target::parse(url) {
        Ok(t) => t,
        Err(e) => return fail(format!("{url}: {e}")),
    };
    let expected = verify::Expected::new(&workload, &log.acked_blocks, log.blocks_issued);
    let plan = verify::VerifyPlan {
        target: &target,
        workload: &workload,
        database: &log.database,
        token,
        timeout: Duration::from_secs_f64(timeout_s),
        points_issued: log.blocks_issued * log.lines_per_request,
    };
    let method = verify::VerifyMethod::Influxql;
    let (_, _, code) =
        print_verification(method, log.series, verify::verify(method, &plan, &expected));
    code
}

fn run(args: RunArgs) -> ExitCode {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let start_ns = args.start_ns.unwrap_or_else(default_start_ns);
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
    let authorization = authorization_header(args.token.as_deref());
    if args.create_db {
        if let Err(e) = create_database(&target, &args.db, &authorization, timeout) {
            return fail(format!("CREATE DATABASE: {e}"));
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
        match plain_bodies(&workload, args.connections, &mut blocks_max) {
            Ok(bodies) => bodies,
            Err(e) => return fail(e),
        }
    };
    let head_prefix = write_head_prefix(
        &target,
        args.endpoint,
        &args.db,
        &args.org,
        &authorization,
        args.gzip,
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
        live: None,
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

    // ringest's WAL bytes before and after: bytes per point (0: unknown).
    let authorization = authorization_header(args.token.as_deref());
    let wal_bytes = || query::metric(&target, &authorization, "ringest_wal_bytes_total");
    let wal_before = wal_bytes();
    let outcome = load::run(&plan);
    let wal_grown = wal_before
        .zip(wal_bytes())
        .map(|(a, b)| b.saturating_sub(a));

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
        wal_bytes_per_point: match wal_grown {
            Some(bytes) if points_acked > 0 => bytes as f64 / points_acked as f64,
            _ => 0.0,
        },
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
    if record.wal_bytes_per_point > 0.0 {
        // Lines of the run: raw bytes per acknowledged point.
        let line_bytes = outcome.raw_bytes as f64 / requests.max(1) as f64 / lines as f64;
        println!(
            "wal: {:.1} bytes per point ({:.3} of the {:.0} bytes of its line; ringest_wal_bytes_total)",
            record.wal_bytes_per_point,
            record.wal_bytes_per_point / line_bytes.max(1e-9),
            line_bytes
        );
    }
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
    let (verify_word, missing_points, mut code) = print_verification(
        args.verify,
        args.series,
        verify::verify(args.verify, &verify_plan, &expected),
    );
    record.verify = verify_word.to_string();
    record.missing_points = missing_points;
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
