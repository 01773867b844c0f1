//! `ringest`: command line, configuration, start the server, exit code.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use ringest::config::{Config, LogFormat, Overrides};

#[derive(Parser)]
#[command(
    name = "ringest",
    version,
    about = "Durable InfluxDB-compatible line-protocol ingest"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (with no flags: the embedded default, 127.0.0.1:8086, ./ringest-data).
    Serve(ConfigArgs),
    /// Print the effective configuration, or every validation error.
    CheckConfig(ConfigArgs),
    /// Token management.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Measure this machine and its data disk, and recommend a tuning profile.
    Tune(TuneArgs),
    /// Show the persisted catalog of a data directory: databases,
    /// Parquet files per table, WAL positions (`--json`: the file itself).
    Catalog {
        /// The data directory (as `serve --data-dir`).
        #[arg(long, default_value = "./ringest-data")]
        data_dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Write-ahead log tools.
    Wal {
        #[command(subcommand)]
        command: WalCommand,
    },
}

#[derive(Args, Clone)]
struct ConfigArgs {
    /// TOML configuration file (only the keys it changes).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Tuning profile: default, small-vm.
    #[arg(long)]
    profile: Option<String>,
    /// Listen address (overrides the configuration).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Data directory (overrides the configuration).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Number of shards; 0 = one per CPU (overrides the configuration).
    #[arg(long)]
    shards: Option<usize>,
    /// Retention of newly created databases, e.g. 3d, 1h30m, inf
    /// (overrides retention.default_period).
    #[arg(long, value_parser = ringest::retention::Period::parse)]
    retention_default_period: Option<ringest::retention::Period>,
}

#[derive(Args)]
struct TuneArgs {
    /// The data directory to measure (created if missing; a probe file is
    /// written there and removed).
    #[arg(long)]
    data_dir: PathBuf,
    /// Number of 4 KiB write + fdatasync latency probes.
    #[arg(long, default_value_t = 200)]
    sync_count: usize,
    /// Bytes written for the sequential bandwidth probe.
    #[arg(long, default_value_t = 256 << 20)]
    write_bytes: u64,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a new random token and the configuration lines that grant it.
    Create {
        /// A name for the token (shown in the config).
        #[arg(long, default_value = "token")]
        name: String,
        /// Databases it may write, comma-separated, or "*".
        #[arg(long, default_value = "*")]
        write: String,
        /// Databases it may query, comma-separated, or "*".
        #[arg(long, default_value = "*")]
        read: String,
    },
}

#[derive(Subcommand)]
enum WalCommand {
    /// List segments, records, sequences, the time range of their rows
    /// (RFC 3339 and ns) and any corruption.
    Inspect { dir: PathBuf },
    /// Exit non-zero if any segment is corrupt.
    Verify { dir: PathBuf },
}

fn load(args: &ConfigArgs) -> Result<Config, ExitCode> {
    let overrides = Overrides {
        listen: args.listen,
        data_dir: args.data_dir.clone(),
        shards: args.shards,
        retention_default_period: args.retention_default_period,
    };
    Config::load(args.profile.as_deref(), args.config.as_deref(), &overrides).map_err(|errors| {
        for error in errors {
            eprintln!("ringest: configuration error: {error}");
        }
        ExitCode::from(2)
    })
}

fn init_logging(level: &str, format: LogFormat) {
    use std::io::IsTerminal;
    let directives = std::env::var("RUST_LOG").unwrap_or_else(|_| level.to_string());
    // glommio logs an ERROR when its optional iopoll probe does not apply to
    // a file system; it then uses the normal ring, which is what we want.
    let directives = if directives.contains("glommio") {
        directives
    } else {
        format!("{directives},glommio::reactor=off")
    };
    let filter = tracing_subscriber::EnvFilter::new(directives);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => {
            // Colour codes only for a person at a terminal, never into
            // journald, a pipe or a file.
            let builder = builder.with_ansi(std::io::stderr().is_terminal());
            // systemd sets JOURNAL_STREAM when stderr goes to journald,
            // which stamps every line itself.
            if std::env::var_os("JOURNAL_STREAM").is_some() {
                builder.without_time().init()
            } else {
                builder.init()
            }
        }
    }
}

fn list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let config = match load(&args) {
                Ok(config) => config,
                Err(code) => return code,
            };
            init_logging(&config.server.log_level, config.server.log_format);
            match ringest::server::run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(%error, "cannot start");
                    eprintln!("ringest: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig(args) => match load(&args) {
            Ok(config) => {
                print!("{}", config.to_toml());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Token {
            command: TokenCommand::Create { name, write, read },
        } => match ringest::auth::generate_token() {
            Ok(token) => {
                println!("token: {token}");
                println!("(shown once; only its hash is stored)\n");
                println!("[[auth.tokens]]");
                println!("name = {name:?}");
                println!("sha256 = \"{}\"", ringest::auth::hash_hex(token.as_bytes()));
                println!("write = {:?}", list(&write));
                println!("read = {:?}", list(&read));
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("ringest: cannot generate a token: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Tune(args) => {
            let options = ringest::tune::TuneOptions {
                data_dir: args.data_dir,
                sync_count: args.sync_count,
                write_bytes: args.write_bytes,
            };
            match ringest::tune::run(&options, &mut std::io::stdout().lock()) {
                Ok(_) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("ringest tune: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Catalog { data_dir, json } => {
            use ringest::persist::{layout, manifest};
            let root = data_dir.join(layout::PARQUET_DIR);
            match manifest::load(&root) {
                Ok(loaded) => {
                    let mut out = std::io::stdout().lock();
                    let written = if json {
                        serde_json::to_writer_pretty(&mut out, &loaded)
                            .map_err(std::io::Error::other)
                            .and_then(|()| writeln!(out))
                    } else {
                        manifest::describe(&loaded, &mut out)
                    };
                    match written {
                        Ok(()) => ExitCode::SUCCESS,
                        Err(error) => {
                            eprintln!("ringest catalog: {error}");
                            ExitCode::FAILURE
                        }
                    }
                }
                Err(error) => {
                    eprintln!("ringest catalog: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Wal { command } => {
            let (dir, verify) = match command {
                WalCommand::Inspect { dir } => (dir, false),
                WalCommand::Verify { dir } => (dir, true),
            };
            let mut out = std::io::stdout().lock();
            let mut times = ringest::shard::RecordTimes::default();
            match ringest::wal::inspect_with(&dir, &mut out, |r| times.time_range(r)) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) if verify => ExitCode::FAILURE,
                Ok(false) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("ringest: {}: {error}", dir.display());
                    ExitCode::FAILURE
                }
            }
        }
    }
}
