//! ringest: a durable, InfluxDB-compatible line-protocol ingest server.
//!
//! A `204` from ringest means the points of the request are on stable storage
//! (an `fdatasync` covering every one of them has returned) and visible to
//! queries. Everything else is in service of making that promise fast.
//!
//! # The write path, in the order the bytes travel
//!
//! | step | module | what happens |
//! |---|---|---|
//! | socket | [`server`], [`connection`] | one glommio executor per core, each with its own `SO_REUSEPORT` listener |
//! | HTTP | [`http::request`], [`http::body`] | request head parsed from borrowed bytes; `Content-Length` / chunked framing |
//! | admission | [`backpressure`], [`auth`] | refuse at once (429/503) when a bound is reached; check the credential |
//! | gunzip | [`gzip`] | libdeflate into a per-shard buffer whose size is the limit |
//! | line protocol | [`line_protocol`] | lines → borrowed points with series hash; per-line errors; recent series keys from a per-shard cache |
//! | schema | [`catalog`] | column kinds checked against one catalog shared by all shards |
//! | route | [`route`], [`batch`] | points split by series hash into per-shard sub-batches (the WAL payload) |
//! | WAL | [`packed`], [`wal`] | each shard packs its sub-batch (series keys and field layouts once per segment) and appends it to its own segment file |
//! | fsync | [`group_commit`] | one `fdatasync` per batch of concurrent writers |
//! | store | [`store`] | the synced rows enter the in-memory columnar store |
//! | 204 | [`http::response`] | only after every involved shard synced and applied |
//!
//! [`ingest`] is the one short function that calls these stages in order.
//! [`query`] answers InfluxQL on `/query` by fanning out to every shard;
//! each scans its memory and Parquet files as one store ([`store`]) and
//! returns rows, or aggregates folded while scanning
//! ([`store::aggregate`]).
//!
//! # After the 204: memory → Parquet, WAL truncated
//!
//! | step | module | what happens |
//! |---|---|---|
//! | freeze | [`persister`], [`store`] | every few seconds (or past a size) a shard freezes its live rows; writes go on |
//! | encode | [`persist::parquet`], [`blocking`] | off the executor: one Parquet file per database, table and UTC day, fsynced |
//! | record | [`persist::manifest`], [`route`] | the catalog owner rewrites `parquet/_catalog.json` atomically: the files and the WAL position |
//! | upload | [`remote`] | with an object store: files and catalog copied to the bucket on a thread of its own; the WAL waits for it |
//! | release | [`store`], [`wal`] | the frozen rows leave memory, the WAL segments behind the position are deleted |
//! | compact | [`persist::compact`], [`persister`] | runs of small files of one day merge into one; the catalog swaps them atomically |
//! | expire | [`persister`], [`store`] | files and rows past their database's retention are dropped |
//! | read | [`shard`], [`store`] | scans read the shard's files and its memory as one store, run by run (a chunk's rows grouped by series in time order); aggregates fold while scanning, whole runs and blocks from kept summaries ([`store::aggregate`]) |
//!
//! # Module map
//!
//! - [`config`]: the `Config` built once at start, profiles, limits.
//! - [`clock`]: the only source of time.
//! - [`retention`]: a database's retention period and the cutoff rule
//!   (write path, query clamp, in-memory expiry, persistence).
//! - [`metrics`]: per-shard counters and histograms, Prometheus export.
//! - [`notify`]: systemd readiness, status and watchdog (`sd_notify`).
//! - [`tune`]: `ringest tune`, measure the host and recommend a profile.
//! - [`persist`]: the on-disk formats of persistence (layout, Parquet
//!   schema, the persisted catalog) and their durability argument.

/// Compile-time check that `$t::ALL` lists the variants in discriminant
/// order (`ALL[i] as usize == i`): metric arrays are indexed by
/// `variant as usize` and labelled through `ALL`.
macro_rules! assert_all_in_discriminant_order {
    ($t:ident) => {
        const _: () = {
            let mut index = 0;
            while index < $t::ALL.len() {
                assert!(
                    $t::ALL[index] as usize == index,
                    concat!(stringify!($t), "::ALL order")
                );
                index += 1;
            }
        };
    };
}

pub mod auth;
pub mod backpressure;
pub mod batch;
pub mod blocking;
pub mod catalog;
pub mod clock;
pub mod config;
pub mod connection;
pub mod group_commit;
pub mod gzip;
pub mod http;
pub mod ingest;
pub mod line_protocol;
pub mod metrics;
pub mod notify;
pub mod packed;
pub mod persist;
pub mod persister;
pub mod query;
pub mod remote;
pub mod retention;
pub mod route;
pub mod server;
pub mod shard;
pub mod store;
pub mod tune;
pub mod wal;
