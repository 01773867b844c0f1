//! The WAL as the real binary leaves it across runs: the shard count
//! changes between runs (every acknowledged point is read back, later
//! writes win), and what `ringest wal inspect` prints about the rows.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::{query_series, run_cli, Server, TempDir};
use ringest::wal;

const DB: &str = "reshard";
const SERIES: u64 = 64;
const TIMES: i64 = 20;
const SERIES_PER_REQUEST: u64 = 8;

/// (series, time) → value: what the database must hold.
type Model = BTreeMap<(u64, i64), i64>;

/// Every point of `r` as stored, read back over `/query`.
fn read_back(server: &Server) -> Model {
    use simd_json::prelude::*;
    let mut out = Model::new();
    for series in query_series(server, DB, "SELECT v FROM r GROUP BY s") {
        let s: u64 = series
            .tag("s")
            .and_then(|t| t.strip_prefix('s'))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("series without its tag: {series:?}"));
        for row in &series.values {
            let time = row.first().and_then(|v| v.as_i64()).expect("ns time");
            let value = row.get(1).and_then(|v| v.as_i64()).expect("integer v");
            assert!(
                out.insert((s, time), value).is_none(),
                "series s{s} time {time} returned twice"
            );
        }
    }
    out
}

/// Writes `points` (grouped by series, several series per request, so
/// every request spans shards) and records each acknowledged one in `model`.
fn write(server: &Server, points: &Model, model: &mut Model) {
    let mut by_series: BTreeMap<u64, Vec<(i64, i64)>> = BTreeMap::new();
    for (&(s, t), &v) in points {
        by_series.entry(s).or_default().push((t, v));
    }
    let series: Vec<u64> = by_series.keys().copied().collect();
    for group in series.chunks(SERIES_PER_REQUEST as usize) {
        let mut body = String::new();
        for s in group {
            for (t, v) in &by_series[s] {
                body.push_str(&format!("r,s=s{s} v={v}i {t}\n"));
            }
        }
        let response = server.write_v1(&format!("db={DB}"), &body);
        assert_eq!(response.status, 204, "{}", response.text());
        for s in group {
            for (t, v) in &by_series[s] {
                model.insert((*s, *t), *v);
            }
        }
    }
}

/// Round `round`'s writes: round 0 every point; later rounds overwrite a
/// third of the series at even times (same series and time, new value) and
/// add one new time to every series.
fn round_points(round: i64) -> Model {
    let mut points = Model::new();
    for s in 0..SERIES {
        let value = |t: i64| round * 1_000_000 + s as i64 * 1000 + t;
        if round == 0 {
            for t in 1..=TIMES {
                points.insert((s, t), value(t));
            }
            continue;
        }
        if (s as i64 + round) % 3 == 0 {
            for t in (2..=TIMES).step_by(2) {
                points.insert((s, t), value(t));
            }
        }
        points.insert((s, 100 + round), value(100 + round));
    }
    points
}

fn assert_same(have: &Model, want: &Model, when: &str) {
    let missing: Vec<_> = want
        .keys()
        .filter(|k| !have.contains_key(k))
        .take(5)
        .collect();
    // (series, time), wanted value, stored value.
    let wrong: Vec<_> = want
        .iter()
        .filter_map(|(k, v)| have.get(k).filter(|h| *h != v).map(|h| (k, v, h)))
        .take(5)
        .collect();
    let extra: Vec<_> = have
        .keys()
        .filter(|k| !want.contains_key(k))
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && wrong.is_empty() && extra.is_empty(),
        "{when}: {} points missing (e.g. {missing:?}), {} with another value (e.g. {wrong:?} as (key, wanted, stored)), \
         {} unexpected (e.g. {extra:?})",
        want.keys().filter(|k| !have.contains_key(k)).count(),
        want.iter()
            .filter(|(k, v)| have.get(k).is_some_and(|h| h != *v))
            .count(),
        have.keys().filter(|k| !want.contains_key(k)).count(),
    );
}

/// Runs shard counts 2 → 1 → 2 → 1 on one data directory, stopping each
/// run with SIGTERM (`kill9 == false`) or SIGKILL.
fn shard_count_changes(kill9: bool) {
    let dir = TempDir::new("reshard");
    let data = dir.path.join("data");
    let mut model = Model::new();
    for (round, shards) in ["2", "1", "2", "1"].into_iter().enumerate() {
        let mut server = Server::start_in(&data, &["--shards", shards]);
        let when = format!("start {round} (--shards {shards})");
        if round > 0 {
            assert_same(&read_back(&server), &model, &when);
        }
        if round == 3 {
            break;
        }
        write(&server, &round_points(round as i64), &mut model);
        assert_same(&read_back(&server), &model, &format!("{when}, live"));
        if kill9 {
            server.kill9();
        } else {
            assert!(server.terminate().success(), "{when}: SIGTERM exit");
        }
        if round == 0 {
            // The first run really wrote through both shards' WALs.
            let mut records = [0u64; 2];
            wal::replay(&data.join("wal"), |r| {
                records[r.shard.expect("numeric shard dir") as usize] += 1;
            })
            .expect("replay");
            assert!(
                records[0] > 0 && records[1] > 0,
                "records per shard dir: {records:?}"
            );
        }
    }
    assert!(
        model.len() as u64 > SERIES * TIMES as u64,
        "{} points",
        model.len()
    );
}

/// Goal: changing the shard count between runs loses nothing and keeps
/// "later write wins": every point acknowledged under 2 shards is read back
/// exactly under 1, overwrites made under 1 shard win under 2 shards, and
/// overwrites made under 2 win again under 1 (clean shutdowns).
/// Method: real binary on one data directory, --shards 2 → 1 → 2 → 1,
/// SIGTERM between runs; 64 series × 20 times, then overwrites of a third
/// of the series and new times; after every start and after every round of
/// writes, `/query` must return exactly the model (same points, values).
#[test]
fn shard_count_change_after_sigterm() {
    shard_count_changes(false);
}

/// Goal: the same as [`shard_count_change_after_sigterm`] when every run
/// ends with `kill -9` (nothing gets to flush or close its WAL).
/// Method: the same rounds, SIGKILL between runs.
#[test]
fn shard_count_change_after_kill_9() {
    shard_count_changes(true);
}

/// Goal: `ringest wal inspect` prints each segment's time range (RFC 3339
/// and ns) decoded from the batch records, per segment, and none for the
/// catalog's records (which it still counts).
/// Method: write points with known timestamps (out of order, across
/// requests) in one run and one more point in a second run; after a
/// SIGTERM, inspect the shard WAL and the catalog log with the binary.
#[test]
fn wal_inspect_shows_time_ranges() {
    let dir = TempDir::new("inspect");
    let data = dir.path.join("data");
    // Persistence off: the segments of the first run must stay to be inspected.
    let config = common::config_file(&dir, "[persist]\nenabled = false\n");
    let args = ["--shards", "1", "--config", config.as_str()];
    let mut server = Server::start_in(&data, &args);
    for body in [
        "m,k=a v=1i 1700000000000000001",
        "m,k=b v=2i 1700000000123456789\nm,k=a v=3i 1600000000000000000",
    ] {
        assert_eq!(server.write_v1("db=insp", body).status, 204);
    }
    assert!(server.terminate().success());
    let mut server = Server::start_in(&data, &args);
    assert_eq!(server.write_v1("db=insp", "m,k=c v=4i -1").status, 204);
    assert!(server.terminate().success());

    let output = run_cli(&["wal", "inspect", &data.join("wal").display().to_string()]);
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let segment = |name: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no line for {name}:\n{text}"))
            .to_string()
    };
    let first = segment("00000000000000000001-0000000000.wal");
    assert!(
        first.contains("kinds 4:2"),
        "the shard's records are packed (kind 4):\n{text}"
    );
    assert!(
        first.contains("records 2")
            && first.contains(
                "time 2020-09-13T12:26:40.000000000Z..=2023-11-14T22:13:20.123456789Z \
                 (1600000000000000000..=1700000000123456789 ns)"
            ),
        "{text}"
    );
    let second = segment("00000000000000000002-0000000000.wal");
    assert!(
        second.contains("records 1")
            && second.contains(
                "time 1969-12-31T23:59:59.999999999Z..=1969-12-31T23:59:59.999999999Z (-1..=-1 ns)"
            ),
        "{text}"
    );
    assert!(text.contains("verify: ok"), "{text}");

    let output = run_cli(&[
        "wal",
        "inspect",
        &data.join("catalog").display().to_string(),
    ]);
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let catalog: Vec<&str> = text.lines().filter(|l| l.contains("kinds 2:")).collect();
    assert!(!catalog.is_empty(), "no catalog records counted:\n{text}");
    assert!(
        catalog.iter().all(|l| !l.contains("time ")),
        "a catalog segment with a time range:\n{text}"
    );
}

/// A data directory where the real server wrote one point (`r,s=s1 v=7i 1`)
/// and stopped, and then one record of `kind` holding `payload` was
/// appended to shard 0's WAL in a later generation through the `Wal` API.
fn data_with_appended_record(dir: &TempDir, kind: u8, payload: &'static [u8]) -> PathBuf {
    let data = dir.path.join("data");
    let mut server = Server::start_in(&data, &["--shards", "1"]);
    assert_eq!(
        server.write_v1(&format!("db={DB}"), "r,s=s1 v=7i 1").status,
        204
    );
    assert!(server.terminate().success());

    let wal_root = data.join("wal");
    let generation = wal::next_generation(&wal_root).expect("generation");
    let shard_dir = wal_root.join("0");
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .spawn(move || async move {
            let log = wal::Wal::open(wal::WalOptions::new(shard_dir, generation))
                .await
                .expect("open WAL");
            let sequence = log.append(kind, payload).expect("append");
            log.synced(sequence).await.expect("sync");
            log.close().await;
        })
        .expect("spawn executor")
        .join()
        .expect("executor");
    data
}

/// Goal: a WAL record this build does not read (kind 1: batch format 1,
/// without row lengths) stops start-up and names where it is, instead of
/// being dropped with whatever acknowledged points it holds; with
/// `wal.skip_corrupt` the server starts and serves everything else.
/// Method: the real server writes points and stops; a kind-1 record is
/// appended to shard 0's WAL in a later generation through the `Wal` API;
/// start-up is refused naming the directory and sequence; with the flag it
/// starts and the first points read back.
#[test]
fn unknown_wal_record_kind_stops_start_up() {
    let dir = TempDir::new("server-wal-kind");
    let data = data_with_appended_record(&dir, 1, b"batch format 1");

    let refused = common::start_outcome(&data, &["--shards", "1"]).expect_err("start-up refused");
    assert!(
        refused.contains("record kind 1 is not one this build reads")
            && refused.contains("\"0\"")
            && refused.contains("sequence 1")
            && refused.contains("wal.skip_corrupt"),
        "{refused}"
    );
    let skip = common::config_file(&dir, "[wal]\nskip_corrupt = true\n");
    let server = Server::start_in(&data, &["--shards", "1", "--config", &skip]);
    let read = read_back(&server);
    assert_eq!(
        read,
        Model::from([((1, 1), 7)]),
        "the earlier point is served"
    );
}

/// Goal: a packed record whose framing and checksum hold but which refers
/// to a series its segment never defined (damage the checksum cannot see,
/// or a bug) is not read as some other series: `wal verify` exits 1 naming
/// it, and start-up stops naming directory and sequence (with
/// `wal.skip_corrupt` the rest is served).
/// Method: the real server writes a point and stops; a kind-4 record that
/// refers to series entry 5 of an empty dictionary is appended to shard
/// 0's WAL in a later generation through the `Wal` API.
#[test]
fn packed_record_with_an_undefined_reference_stops_start_up() {
    let dir = TempDir::new("server-wal-packed");
    // format 1, database "db" (varint length), 1 row, series reference 6
    // (entry 5) in a segment whose dictionary is empty.
    let data = data_with_appended_record(
        &dir,
        ringest::shard::RECORD_PACKED,
        &[1, 2, b'd', b'b', 1, 6],
    );
    let wal_root = data.join("wal");

    let output = run_cli(&["wal", "verify", &wal_root.display().to_string()]);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(!output.status.success(), "verify passed:\n{text}");
    assert!(
        text.contains("UNDECODABLE record seq 1: packed record damaged")
            && text.contains("series reference past the dictionary")
            && text.contains("verify: CORRUPT"),
        "{text}"
    );
    let refused = common::start_outcome(&data, &["--shards", "1"]).expect_err("start-up refused");
    assert!(
        refused.contains("series reference past the dictionary")
            && refused.contains("\"0\"")
            && refused.contains("sequence 1")
            && refused.contains("wal.skip_corrupt"),
        "{refused}"
    );
    let skip = common::config_file(&dir, "[wal]\nskip_corrupt = true\n");
    let server = Server::start_in(&data, &["--shards", "1", "--config", &skip]);
    assert_eq!(read_back(&server), Model::from([((1, 1), 7)]));
}

/// Goal: a supervisor that starts ringest again the moment it died (kill -9
/// while clients hold keep-alive connections) gets a server on the same
/// address, not "address in use": the dead process's io_uring holds its
/// listeners for a few milliseconds after it was reaped (without the retry
/// in `probe_listen_address` this fails on the first round).
/// Method: one fixed port, 8 keep-alive connections with a request each,
/// kill -9, start again at once on the same port and data; five rounds.
#[test]
fn immediate_restart_after_kill_9_gets_the_same_address() {
    let dir = TempDir::new("restart-same-port");
    let data = dir.path.join("data");
    let port = common::free_port();
    let command = || {
        let mut command = std::process::Command::new(common::binary());
        command
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(&data)
            .env("RUST_LOG", "error");
        command
    };
    for round in 0..5 {
        let mut server = Server::start_command(command(), &data);
        let clients: Vec<common::Client> = (0..8)
            .map(|_| {
                let mut client = common::Client::connect(server.addr);
                let answer = client.send("GET", "/ping", b"").expect("ping");
                assert_eq!(answer.status, 204, "round {round}");
                client
            })
            .collect();
        server.kill9();
        drop(clients);
    }
}

/// Goal: one data directory serves one process, and a listen address one
/// process: a second ringest on the same data directory (which would write
/// the same WAL files) or on an address another socket holds (which
/// `SO_REUSEPORT` would quietly share) refuses to start, naming why; after
/// `kill -9` of the first, the lock is gone. Method: real processes.
#[test]
fn one_process_per_data_directory_and_address() {
    let mut first = Server::start(&["--shards", "1"]);
    let port = common::free_port().to_string();
    let refused =
        common::start_outcome(&first.data_dir, &["--listen", &format!("127.0.0.1:{port}")])
            .expect_err("same data directory refused");
    assert!(
        refused.contains("is in use by another ringest (pid "),
        "{refused}"
    );
    let other = TempDir::new("server-second");
    let refused = common::start_outcome(
        &other.path.join("data"),
        &["--listen", &first.addr.to_string()],
    )
    .expect_err("same address refused");
    assert!(
        refused.contains("another process listens there"),
        "{refused}"
    );
    first.kill9();
    common::start_outcome(&first.data_dir, &["--listen", &format!("127.0.0.1:{port}")])
        .expect("the lock dies with its process");
}
