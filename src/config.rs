//! Configuration: one `Config`, built once at start from layers, validated
//! as a whole, then read-only.
//!
//! Layers, later wins: built-in defaults (the embedded default: listen on
//! `127.0.0.1:8086`, data in `./ringest-data`, auth off) → a named tuning
//! profile (`--profile`, the files of `tuning/` compiled in) → a config file
//! (`--config`) → command-line flags. Every key is documented in
//! `tuning/reference.toml`; unknown keys are rejected with their name.
//!
//! Every limit of the server lives here (STYLE practice 3), and the
//! relations between limits are checked in [`Config::validate`].

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::retention::Period;

/// Largest header array a connection keeps (the parser's fixed array).
pub const HEADER_ARRAY_LEN: usize = 128;

/// Profiles shipped in `tuning/`, compiled into the binary.
pub const PROFILES: &[(&str, &str)] = &[
    ("default", include_str!("../tuning/default.toml")),
    ("small-vm", include_str!("../tuning/small-vm.toml")),
];

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub http: HttpConfig,
    pub line_protocol: LineProtocolConfig,
    pub schema: SchemaConfig,
    pub wal: WalConfig,
    pub backpressure: BackpressureConfig,
    pub store: StoreConfig,
    pub query: QueryConfig,
    pub auth: AuthConfig,
    pub metrics: MetricsConfig,
    pub persist: PersistConfig,
    pub retention: RetentionConfig,
    pub object_store: ObjectStoreConfig,
}

/// `server.log_format`: the shape of log lines on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event; colour only on a terminal, no
    /// timestamp under systemd (journald adds its own).
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// 0: one shard per CPU in the process's affinity mask.
    pub shards: usize,
    /// Pin each shard's thread to its CPU.
    pub pin_cpus: bool,
    /// `error`, `warn`, `info`, `debug`, `trace`; `RUST_LOG` overrides.
    pub log_level: String,
    /// How log lines on stderr look.
    pub log_format: LogFormat,
    /// In-flight requests get this long to finish after SIGTERM.
    pub shutdown_grace_ms: u64,
    /// Bytes of registered I/O memory per shard (glommio); counts against
    /// the locked-memory limit.
    pub io_memory_bytes: usize,
    /// io_uring submission queue depth per shard.
    pub ring_depth: usize,
    /// Listen backlog of each shard's socket.
    pub listen_backlog: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub request_line_bytes_max: usize,
    pub head_bytes_max: usize,
    pub header_count_max: usize,
    /// One limit for the wire body and for the decompressed body.
    pub body_bytes_max: usize,
    pub head_timeout_ms: u64,
    pub body_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub connections_per_shard_max: usize,
    /// Initial read buffer of a connection.
    pub read_buffer_bytes: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LineProtocolConfig {
    pub name_bytes_max: usize,
    pub string_bytes_max: usize,
    pub tags_per_line_max: usize,
    pub fields_per_line_max: usize,
    /// Write the valid lines of a request with bad lines (and answer 400
    /// naming them); false: reject the whole request.
    pub accept_partial: bool,
    /// Errors listed in a partial-write answer.
    pub errors_reported_max: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchemaConfig {
    /// A write to an unknown database creates it; false: 404.
    pub auto_create_databases: bool,
    pub databases_max: usize,
    pub tables_per_database_max: usize,
    pub columns_per_table_max: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WalConfig {
    pub segment_bytes: u64,
    pub batch_bytes_max: usize,
    pub pending_bytes_max: usize,
    pub wal_bytes_max: u64,
    pub batch_delay_us: u64,
    /// Write (and sync) each spare segment's zeros before it is used, so
    /// that no `fdatasync` has to commit unwritten-extent conversions.
    pub prezero_segments: bool,
    /// Start even when an earlier segment is corrupt (skipping the rest of it).
    pub skip_corrupt: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackpressureConfig {
    /// Write requests' memory in flight, whole process: bodies (wire
    /// bytes) plus their encoded sub-batches; each shard gets an equal
    /// share, at least `http.body_bytes_max`.
    pub inflight_request_bytes_max: usize,
    /// Sub-batches from other shards being processed per shard.
    pub queued_sub_batches_max: usize,
    /// Cross-shard channel capacity (messages per pair of shards).
    pub channel_capacity: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub memory_bytes_max: usize,
    pub chunk_rows: usize,
}

/// Parquet persistence (`crate::persist`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PersistConfig {
    /// Persist in-memory rows to Parquet (and truncate the WAL behind
    /// them). Off: memory and WAL grow until their budgets refuse writes.
    pub enabled: bool,
    /// A shard snapshots at least this often (when it holds new rows).
    pub interval_ms: u64,
    /// ... and as soon as its live rows take this many bytes of memory.
    pub store_bytes_trigger: usize,
    /// ... and as soon as its WAL grew by this many bytes since its last
    /// snapshot began: bounds what a restart after a crash replays.
    pub wal_bytes_trigger: u64,
    /// A shard merges a run of at least this many small Parquet files of one
    /// database, table and day into one (0: never; see `crate::persist`).
    pub compact_files: usize,
    /// Rows of a merged file at most (a file of half as many or more is not
    /// small); the merge holds this many rows in memory.
    pub compact_rows_max: u64,
}

/// A copy of the Parquet files and the catalog in an object store
/// (`crate::remote`). No `url`: the local directory only.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectStoreConfig {
    /// `s3://bucket[/prefix]`, `gs://bucket[/prefix]`, `az://container[/prefix]`
    /// or `file:///mounted/dir`. Credentials never go here (environment).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// S3-compatible stores: the endpoint URL (`http://127.0.0.1:9000`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// S3: the region (else `AWS_REGION`, else `us-east-1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Allow `http://` endpoints (tests, stores on a trusted network).
    pub allow_http: bool,
    /// This appliance's directory in the bucket (`node=<node_id>/`);
    /// default: the hostname. Each appliance needs its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// One request to the store may take this long.
    pub request_timeout_ms: u64,
    /// Files larger than this are uploaded in parts of this size.
    pub part_bytes: usize,
    /// Parquet bytes kept on the local disk: past it, the local copies of
    /// the oldest files already in the bucket are deleted (fetched back
    /// when read). 0: keep every file locally.
    pub local_bytes_max: u64,
}

impl Default for ObjectStoreConfig {
    fn default() -> Self {
        ObjectStoreConfig {
            url: None,
            endpoint: None,
            region: None,
            allow_http: false,
            node_id: None,
            request_timeout_ms: 30_000,
            part_bytes: 16 * 1024 * 1024,
            local_bytes_max: 0,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    pub rows_max: usize,
    pub buckets_max: usize,
    /// Bytes of decoded Parquet files each shard keeps for later queries.
    pub file_cache_bytes: usize,
    /// A query's scans stop this long after it began (`query-timeout limit
    /// exceeded`); 0: no limit.
    pub time_limit_ms: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub enabled: bool,
    pub tokens: Vec<TokenConfig>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    pub name: String,
    /// Hex SHA-256 of the token (`ringest token create` prints it).
    pub sha256: String,
    /// Databases this token may write: names, or `"*"`.
    pub write: Vec<String>,
    /// Databases this token may query: names, or `"*"`.
    pub read: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `/metrics` needs a token with any permission when auth is on.
    pub require_auth: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Retention of a database created without one (on first write, or by
    /// `CREATE DATABASE` without `WITH DURATION`).
    pub default_period: Period,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            default_period: Period::from_ns(3 * 24 * 3600 * 1_000_000_000)
                .expect("3 days is a valid period"),
        }
    }
}

const MIB: usize = 1024 * 1024;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8086)),
            data_dir: PathBuf::from("./ringest-data"),
            shards: 0,
            pin_cpus: true,
            log_level: "info".to_string(),
            log_format: LogFormat::Text,
            shutdown_grace_ms: 10_000,
            io_memory_bytes: 2 * MIB,
            ring_depth: 128,
            listen_backlog: 1024,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            request_line_bytes_max: 8 * 1024,
            head_bytes_max: 64 * 1024,
            header_count_max: 64,
            body_bytes_max: 50 * MIB,
            head_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            idle_timeout_ms: 120_000,
            connections_per_shard_max: 4096,
            read_buffer_bytes: 64 * 1024,
        }
    }
}

impl Default for LineProtocolConfig {
    fn default() -> Self {
        LineProtocolConfig {
            name_bytes_max: 64 * 1024,
            string_bytes_max: MIB,
            tags_per_line_max: 250,
            fields_per_line_max: 250,
            accept_partial: true,
            errors_reported_max: 100,
        }
    }
}

impl Default for SchemaConfig {
    fn default() -> Self {
        SchemaConfig {
            auto_create_databases: true,
            databases_max: 1000,
            tables_per_database_max: 10_000,
            columns_per_table_max: 250,
        }
    }
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            segment_bytes: 64 * MIB as u64,
            batch_bytes_max: 8 * MIB,
            pending_bytes_max: 128 * MIB,
            wal_bytes_max: 64 * 1024 * MIB as u64,
            batch_delay_us: 0,
            prezero_segments: false,
            skip_corrupt: false,
        }
    }
}

impl Default for BackpressureConfig {
    fn default() -> Self {
        BackpressureConfig {
            inflight_request_bytes_max: 512 * MIB,
            queued_sub_batches_max: 4096,
            channel_capacity: 1024,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            memory_bytes_max: 4096 * MIB,
            chunk_rows: 65_536,
        }
    }
}

impl Default for PersistConfig {
    fn default() -> Self {
        PersistConfig {
            enabled: true,
            interval_ms: 10_000,
            store_bytes_trigger: 256 * MIB,
            wal_bytes_trigger: 256 * MIB as u64,
            compact_files: 8,
            compact_rows_max: 2 * 1024 * 1024,
        }
    }
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            rows_max: 10_000_000,
            time_limit_ms: 60_000,
            buckets_max: 1_000_000,
            file_cache_bytes: 256 * MIB,
        }
    }
}

#[allow(clippy::derivable_impls)]
impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerConfig::default(),
            http: HttpConfig::default(),
            line_protocol: LineProtocolConfig::default(),
            schema: SchemaConfig::default(),
            wal: WalConfig::default(),
            backpressure: BackpressureConfig::default(),
            store: StoreConfig::default(),
            query: QueryConfig::default(),
            auth: AuthConfig::default(),
            metrics: MetricsConfig::default(),
            persist: PersistConfig::default(),
            retention: RetentionConfig::default(),
            object_store: ObjectStoreConfig::default(),
        }
    }
}

/// Why a configuration was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    UnknownProfile(String),
    /// A layer did not parse (TOML syntax, unknown key, wrong type); the
    /// text is the TOML parser's, naming the key.
    Parse {
        source: String,
        detail: String,
    },
    Read {
        path: PathBuf,
        detail: String,
    },
    /// A value out of its range.
    Invalid {
        key: &'static str,
        detail: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::UnknownProfile(name) => {
                let names: Vec<&str> = PROFILES.iter().map(|(n, _)| *n).collect();
                write!(f, "unknown profile {name:?} (known: {})", names.join(", "))
            }
            ConfigError::Parse { source, detail } => write!(f, "{source}: {detail}"),
            ConfigError::Read { path, detail } => write!(f, "{}: {detail}", path.display()),
            ConfigError::Invalid { key, detail } => write!(f, "{key}: {detail}"),
        }
    }
}

/// Command-line overrides, applied last.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub shards: Option<usize>,
    pub retention_default_period: Option<Period>,
}

/// Deep-merges `overlay` into `base` (tables merge key by key).
fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base_table)), toml::Value::Table(overlay_table)) => {
                merge(base_table, overlay_table)
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn parse_layer(source: &str, text: &str) -> Result<toml::Table, ConfigError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Parse {
            source: source.to_string(),
            detail: e.to_string(),
        })?;
    // Each layer must be valid on its own, so an unknown key is reported
    // against the file that has it.
    Config::deserialize(toml::Value::Table(table.clone())).map_err(|e| ConfigError::Parse {
        source: source.to_string(),
        detail: e.to_string(),
    })?;
    Ok(table)
}

/// The text of a compiled-in profile.
pub fn profile_text(name: &str) -> Option<&'static str> {
    PROFILES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
}

impl Config {
    /// Builds the effective configuration from its layers. Returns every
    /// error found, not only the first.
    pub fn load(
        profile: Option<&str>,
        file: Option<&std::path::Path>,
        overrides: &Overrides,
    ) -> Result<Config, Vec<ConfigError>> {
        let mut table = toml::Table::new();
        if let Some(name) = profile {
            let text = profile_text(name)
                .ok_or_else(|| vec![ConfigError::UnknownProfile(name.to_string())])?;
            merge(
                &mut table,
                parse_layer(&format!("profile {name}"), text).map_err(|e| vec![e])?,
            );
        }
        if let Some(path) = file {
            // Read once at start, before any executor runs.
            #[allow(clippy::disallowed_methods)]
            let text = std::fs::read_to_string(path).map_err(|e| {
                vec![ConfigError::Read {
                    path: path.to_path_buf(),
                    detail: e.to_string(),
                }]
            })?;
            merge(
                &mut table,
                parse_layer(&path.display().to_string(), &text).map_err(|e| vec![e])?,
            );
        }
        let mut config = Config::deserialize(toml::Value::Table(table)).map_err(|e| {
            vec![ConfigError::Parse {
                source: "merged configuration".to_string(),
                detail: e.to_string(),
            }]
        })?;
        if let Some(listen) = overrides.listen {
            config.server.listen = listen;
        }
        if let Some(dir) = &overrides.data_dir {
            config.server.data_dir = dir.clone();
        }
        if let Some(shards) = overrides.shards {
            config.server.shards = shards;
        }
        if let Some(period) = overrides.retention_default_period {
            config.retention.default_period = period;
        }
        let errors = config.validate();
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(errors)
        }
    }

    /// Every value in range, every relation between limits holding.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut check = |ok: bool, key: &'static str, detail: String| {
            if !ok {
                errors.push(ConfigError::Invalid { key, detail });
            }
        };
        let h = &self.http;
        check(
            h.request_line_bytes_max >= 64 && h.request_line_bytes_max <= h.head_bytes_max,
            "http.request_line_bytes_max",
            format!(
                "must be at least 64 and at most http.head_bytes_max ({})",
                h.head_bytes_max
            ),
        );
        check(
            (1024..=16 * MIB).contains(&h.head_bytes_max),
            "http.head_bytes_max",
            "must be between 1 KiB and 16 MiB".into(),
        );
        check(
            (1..=HEADER_ARRAY_LEN).contains(&h.header_count_max),
            "http.header_count_max",
            format!("must be between 1 and {HEADER_ARRAY_LEN}"),
        );
        check(
            h.body_bytes_max >= 1024 && h.body_bytes_max <= 1024 * MIB,
            "http.body_bytes_max",
            "must be between 1 KiB and 1 GiB".into(),
        );
        check(
            h.head_timeout_ms > 0 && h.body_timeout_ms > 0 && h.idle_timeout_ms > 0,
            "http.*_timeout_ms",
            "timeouts must be positive".into(),
        );
        check(
            h.connections_per_shard_max > 0,
            "http.connections_per_shard_max",
            "must be positive".into(),
        );
        check(
            h.read_buffer_bytes >= h.head_bytes_max.min(64 * 1024)
                && h.read_buffer_bytes <= 64 * MIB,
            "http.read_buffer_bytes",
            "must hold a head of up to 64 KiB (or http.head_bytes_max) and be at most 64 MiB"
                .into(),
        );
        let lp = &self.line_protocol;
        check(
            lp.name_bytes_max > 0 && lp.name_bytes_max <= MIB,
            "line_protocol.name_bytes_max",
            "must be between 1 and 1 MiB".into(),
        );
        check(
            lp.string_bytes_max > 0 && lp.string_bytes_max <= 1024 * MIB,
            "line_protocol.string_bytes_max",
            "must be between 1 and 1 GiB (a body caps it anyway)".into(),
        );
        check(
            lp.tags_per_line_max <= usize::from(u16::MAX),
            "line_protocol.tags_per_line_max",
            "must fit the WAL's u16 count".into(),
        );
        check(
            lp.fields_per_line_max >= 1 && lp.fields_per_line_max <= usize::from(u16::MAX),
            "line_protocol.fields_per_line_max",
            "must be between 1 and 65535".into(),
        );
        check(
            lp.errors_reported_max >= 1,
            "line_protocol.errors_reported_max",
            "must be at least 1".into(),
        );
        let s = &self.schema;
        check(
            s.databases_max >= 1 && s.tables_per_database_max >= 1 && s.columns_per_table_max >= 2,
            "schema.*_max",
            "databases and tables at least 1, columns at least 2".into(),
        );
        let w = &self.wal;
        check(
            w.batch_bytes_max >= 64 * 1024,
            "wal.batch_bytes_max",
            "must be at least 64 KiB".into(),
        );
        check(
            w.segment_bytes >= 2 * w.batch_bytes_max as u64,
            "wal.segment_bytes",
            "must hold at least two full batches (2 × wal.batch_bytes_max)".into(),
        );
        check(
            w.pending_bytes_max >= w.batch_bytes_max,
            "wal.pending_bytes_max",
            "must be at least wal.batch_bytes_max".into(),
        );
        check(
            w.wal_bytes_max >= 2 * w.segment_bytes,
            "wal.wal_bytes_max",
            "must hold at least two segments".into(),
        );
        check(
            w.batch_delay_us <= 100_000,
            "wal.batch_delay_us",
            "must be at most 100 ms (it adds to every acknowledgement)".into(),
        );
        let b = &self.backpressure;
        check(
            b.inflight_request_bytes_max >= h.body_bytes_max,
            "backpressure.inflight_request_bytes_max",
            "must admit at least one maximum-size body (http.body_bytes_max)".into(),
        );
        check(
            b.queued_sub_batches_max >= 1 && b.channel_capacity >= 1,
            "backpressure.queued_sub_batches_max",
            "queues must hold at least one sub-batch".into(),
        );
        check(
            self.store.memory_bytes_max >= 16 * MIB,
            "store.memory_bytes_max",
            "must be at least 16 MiB".into(),
        );
        check(
            self.store.chunk_rows >= 16,
            "store.chunk_rows",
            "must be at least 16".into(),
        );
        check(
            self.persist.interval_ms >= 10,
            "persist.interval_ms",
            "must be at least 10".into(),
        );
        check(
            self.persist.compact_rows_max >= 2,
            "persist.compact_rows_max",
            "must be at least 2 (a merged file holds at least two small files' rows)".to_string(),
        );
        check(
            self.persist.store_bytes_trigger >= MIB
                && self.persist.store_bytes_trigger <= self.store.memory_bytes_max / 2,
            "persist.store_bytes_trigger",
            format!(
                "must be at least 1 MiB and at most half of store.memory_bytes_max ({}), so \
                 writes go on while a snapshot is persisted",
                self.store.memory_bytes_max
            ),
        );
        check(
            self.persist.wal_bytes_trigger >= MIB as u64
                && self.persist.wal_bytes_trigger <= self.wal.wal_bytes_max / 2,
            "persist.wal_bytes_trigger",
            format!(
                "must be at least 1 MiB and at most half of wal.wal_bytes_max ({}), so \
                 writes go on while a snapshot is persisted",
                self.wal.wal_bytes_max
            ),
        );
        let o = &self.object_store;
        check(
            o.part_bytes >= 5 * MIB && o.part_bytes <= 1024 * MIB,
            "object_store.part_bytes",
            "must be between 5 MiB (S3's smallest part) and 1 GiB".into(),
        );
        check(
            (1_000..=600_000).contains(&o.request_timeout_ms),
            "object_store.request_timeout_ms",
            "must be between 1 s and 10 minutes".into(),
        );
        check(
            o.node_id
                .as_deref()
                .is_none_or(crate::remote::valid_node_id),
            "object_store.node_id",
            "must be a plain name: letters, digits, '_', '-', '.', at most 128".into(),
        );
        check(
            o.url.is_some() || (o.endpoint.is_none() && o.region.is_none()),
            "object_store.url",
            "endpoint or region is set but url is not (no object store is used without url)".into(),
        );
        check(
            o.url.is_none() || self.persist.enabled,
            "object_store.url",
            "needs persist.enabled (the object store holds persisted Parquet files)".into(),
        );
        check(
            self.query.rows_max >= 1 && self.query.buckets_max >= 1,
            "query.*_max",
            "must be positive".into(),
        );
        check(
            self.server.shards <= 1024,
            "server.shards",
            "must be at most 1024 (0 = one per CPU)".into(),
        );
        check(
            self.server.shutdown_grace_ms <= 600_000,
            "server.shutdown_grace_ms",
            "must be at most 10 minutes".into(),
        );
        check(
            self.server.io_memory_bytes >= 64 * 1024,
            "server.io_memory_bytes",
            "must be at least 64 KiB".into(),
        );
        check(
            self.server.ring_depth.is_power_of_two()
                && (8..=4096).contains(&self.server.ring_depth),
            "server.ring_depth",
            "must be a power of two between 8 and 4096".into(),
        );
        check(
            ["error", "warn", "info", "debug", "trace"].contains(&self.server.log_level.as_str()),
            "server.log_level",
            "must be one of error, warn, info, debug, trace".into(),
        );
        for token in &self.auth.tokens {
            check(
                token.sha256.len() == 64 && token.sha256.bytes().all(|b| b.is_ascii_hexdigit()),
                "auth.tokens.sha256",
                format!("token {:?}: must be 64 hex digits", token.name),
            );
            check(
                !token.write.is_empty() || !token.read.is_empty(),
                "auth.tokens",
                format!(
                    "token {:?} grants nothing (write and read are empty)",
                    token.name
                ),
            );
        }
        check(
            !self.auth.enabled || !self.auth.tokens.is_empty(),
            "auth.tokens",
            "auth is enabled but no token is configured".into(),
        );
        errors
    }

    /// The effective configuration as TOML (for `check-config`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: every shipped profile loads and validates. Method: load each by name.
    #[test]
    fn every_profile_loads_and_validates() {
        for (name, _) in PROFILES {
            let loaded = Config::load(Some(name), None, &Overrides::default());
            assert!(loaded.is_ok(), "profile {name}: {:?}", loaded.err());
        }
    }

    /// Goal: the embedded default is what the README promises. Method: load
    /// with no layers.
    #[test]
    fn embedded_default_matches_readme() {
        let config = Config::load(None, None, &Overrides::default()).expect("default is valid");
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:8086");
        assert_eq!(config.server.data_dir, PathBuf::from("./ringest-data"));
        assert!(!config.auth.enabled);
    }

    /// Goal: an unknown key is refused, naming the key. Method: a file
    /// layer with a typo.
    #[test]
    fn unknown_key_is_named() {
        let err = parse_layer("test", "[http]\nbody_bytes_maxx = 5\n").expect_err("must refuse");
        assert!(err.to_string().contains("body_bytes_maxx"), "{err}");
    }

    /// Goal: relations between limits are checked and all errors reported.
    /// Method: break two relations at once.
    #[test]
    fn broken_relations_are_all_reported() {
        let mut config = Config::default();
        config.wal.segment_bytes = 1024;
        config.backpressure.inflight_request_bytes_max = 1;
        let errors = config.validate();
        let keys: Vec<&str> = errors
            .iter()
            .filter_map(|e| match e {
                ConfigError::Invalid { key, .. } => Some(*key),
                _ => None,
            })
            .collect();
        assert!(keys.contains(&"wal.segment_bytes"), "{keys:?}");
        assert!(
            keys.contains(&"backpressure.inflight_request_bytes_max"),
            "{keys:?}"
        );
    }

    /// Goal: `retention.default_period` reads InfluxQL durations and
    /// refuses, naming the key, a period under a second. Method: layers.
    #[test]
    fn retention_default_period_is_parsed_and_checked() {
        assert_eq!(
            Config::default().retention.default_period.to_string(),
            "72h0m0s"
        );
        let table =
            parse_layer("test", "[retention]\ndefault_period = \"1h30m\"\n").expect("1h30m parses");
        let config = Config::deserialize(toml::Value::Table(table)).expect("deserializes");
        assert_eq!(config.retention.default_period.as_ns(), 5_400_000_000_000);
        let table =
            parse_layer("test", "[retention]\ndefault_period = \"inf\"\n").expect("inf parses");
        let config = Config::deserialize(toml::Value::Table(table)).expect("deserializes");
        assert!(config.retention.default_period.is_forever());
        let err = parse_layer("test", "[retention]\ndefault_period = \"500ms\"\n")
            .expect_err("under a second");
        assert!(err.to_string().contains("default_period"), "{err}");
        assert!(err.to_string().contains("at least 1s"), "{err}");
    }

    /// Goal: the documented reference file is itself a valid, complete
    /// configuration (so the docs cannot drift from the code). Method: parse
    /// it strictly and compare it with the defaults it claims to show.
    #[test]
    fn reference_file_is_valid_and_matches_defaults() {
        let text = include_str!("../tuning/reference.toml");
        let table = parse_layer("reference.toml", text).expect("reference parses");
        let config = Config::deserialize(toml::Value::Table(table)).expect("deserializes");
        assert_eq!(config.to_toml(), Config::default().to_toml());
    }
}
