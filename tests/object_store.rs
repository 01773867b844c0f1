//! Object storage (issue 16) against a real S3 server: moto's server
//! (`moto[server]` from PyPI, installed in the venv by `.ci/run`), started
//! by each test on a loopback port, and read back with pyarrow's own S3
//! client and DuckDB — never a mock object inside the process.
//!
//! A store that goes away is simulated by a TCP relay between ringest and
//! moto that the test cuts (connections reset, new ones closed at once) and
//! restores: moto keeps its objects meanwhile, as a real store would.

#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{config_file, free_port, Server, TempDir};

/// The venv's Python (`RINGEST_PYTHON`, else `.venv/bin/python`).
fn python() -> PathBuf {
    common::python("moto[server], pyarrow and duckdb")
}

/// Runs `script` with the venv's Python and `env`; its stdout (panics with
/// stderr on failure).
fn run_python(script: &str, env: &[(&str, &str)]) -> String {
    let output = Command::new(python())
        .arg("-c")
        .arg(script)
        .envs(env.iter().copied())
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "python failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Polls `done` every 20 ms for up to `limit`; panics with `what`.
fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

const KEY: &str = "ringest-test-key";
const SECRET: &str = "ringest-test-secret";
const BUCKET: &str = "ringest-bucket";

/// A moto S3 server on a loopback port, stopped on drop.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn start(env: &[(&str, &str)]) -> Moto {
        let port = free_port();
        let child = Command::new(python())
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto's server (pip install 'moto[server]')");
        let moto = Moto { child, port };
        wait_for(Duration::from_secs(60), "moto server listening", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        moto
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates the test bucket (any credentials: moto without auth).
    fn create_bucket(&self) {
        run_python(
            &format!(
                "import boto3\nboto3.client('s3', endpoint_url='{}', region_name='us-east-1', \
                 aws_access_key_id='{KEY}', aws_secret_access_key='{SECRET}')\
                 .create_bucket(Bucket='{BUCKET}')\n",
                self.endpoint()
            ),
            &[],
        );
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP relay to `upstream` that the test can cut and restore.
struct Relay {
    port: u16,
    down: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn start(upstream: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let port = listener.local_addr().expect("relay addr").port();
        let down = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (down_flag, open_list) = (down.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if down_flag.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                {
                    let mut open = open_list.lock().expect("relay list");
                    open.push(client.try_clone().expect("clone"));
                    open.push(server.try_clone().expect("clone"));
                }
                for (mut from, mut to) in [
                    (
                        client.try_clone().expect("clone"),
                        server.try_clone().expect("clone"),
                    ),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let mut buffer = [0u8; 65536];
                        while let Ok(n) = from.read(&mut buffer) {
                            if n == 0 || to.write_all(&buffer[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Write);
                    });
                }
            }
        });
        Relay { port, down, open }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The store is unreachable: open connections reset, new ones closed.
    fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        for stream in self.open.lock().expect("relay list").drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

/// A config file for a node writing to `endpoint` as `node_id`.
fn node_config(dir: &TempDir, endpoint: &str, node_id: &str, extra: &str, persist: &str) -> String {
    config_file(
        dir,
        &format!(
            "[persist]\ninterval_ms = 300\n{persist}\n[wal]\nsegment_bytes = 131072\nbatch_bytes_max = 65536\n\n\
             [object_store]\nurl = \"s3://{BUCKET}/fleet\"\nendpoint = \"{endpoint}\"\n\
             region = \"us-east-1\"\nallow_http = true\nnode_id = \"{node_id}\"\n\
             request_timeout_ms = 2000\n{extra}"
        ),
    )
}

fn credentials() -> [(&'static str, &'static str); 2] {
    [
        ("AWS_ACCESS_KEY_ID", KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
    ]
}

/// `count` lines of table `m`, hosts `h<first>…`, times now-relative (the
/// default retention keeps them), value = index.
fn lines(first: usize, count: usize) -> String {
    padded_lines(first, count, 0)
}

/// [`lines`] with a string field `pad` of `pad` bytes on every line (when
/// `pad > 0`): WAL records are packed (series and field names once per
/// segment), so a test that needs WAL volume writes it as values.
fn padded_lines(first: usize, count: usize, pad: usize) -> String {
    let base = common_now_ns() - 3_600_000_000_000;
    let pad = if pad > 0 {
        format!(",pad=\"{}\"", "p".repeat(pad))
    } else {
        String::new()
    };
    (first..first + count)
        .map(|i| {
            format!(
                "m,host=h{} v={i}i{pad} {}\n",
                i % 50,
                base + i as i64 * 1_000_000
            )
        })
        .collect()
}

fn common_now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos() as i64
}

fn write_ok(server: &Server, body: &str) {
    let response = server.write_v1("db=fleet", body);
    assert_eq!(response.status, 204, "{}", response.text());
}

/// Waits until everything written is in Parquet and the bucket holds the
/// catalog version naming it (nothing pending, no version behind).
fn wait_uploaded(server: &Server) {
    server.wait_persisted(1);
    wait_for(
        Duration::from_secs(60),
        "catalog confirmed in the bucket",
        || {
            server.metric("ringest_object_store_versions_behind") == 0
                && server.metric("ringest_object_store_files_pending") == 0
                && server.metric("ringest_store_bytes") == 0
        },
    );
}

/// WAL segment files of every shard directory.
fn segments(data_dir: &Path) -> usize {
    let Ok(dirs) = std::fs::read_dir(data_dir.join("wal")) else {
        return 0;
    };
    dirs.flatten()
        .filter(|d| d.path().is_dir())
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
        .filter(|f| f.file_name().to_string_lossy().ends_with(".wal"))
        .count()
}

/// Reads table `m` of database `fleet` from the bucket with pyarrow's S3
/// client, and the same dataset with DuckDB; prints
/// `rows <n> distinct <series×time> sum <v> nodes <list> duckdb <n> <sum>`
/// and, per node, its manifest's row count.
fn read_bucket(endpoint: &str) -> String {
    run_python(
        &format!(
            r#"
import json, duckdb, pyarrow.dataset as ds, pyarrow.fs as pafs, pyarrow.compute as pc
fs = pafs.S3FileSystem(endpoint_override="{endpoint}", scheme="http", region="us-east-1",
                       access_key="{KEY}", secret_key="{SECRET}")
base = "{BUCKET}/fleet"
nodes = sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(base)) if i.type == pafs.FileType.Directory)
files = [i.path for i in fs.get_file_info(pafs.FileSelector(base, recursive=True))
         if i.path.endswith(".parquet") and "/db=fleet/table=m/" in i.path]
d = ds.dataset(files, filesystem=fs, format="parquet", partitioning="hive", partition_base_dir=base)
t = d.to_table()
distinct = len(set(zip(t["host"].to_pylist(), t["time"].cast("int64").to_pylist())))
print("rows", t.num_rows, "distinct", distinct, "sum", pc.sum(t["v"]).as_py(), "nodes", ",".join(nodes))
n, s = duckdb.sql("SELECT count(*), sum(v) FROM d").fetchall()[0]
print("duckdb", n, s)
for node in nodes:
    with fs.open_input_stream(base + "/" + node + "/_catalog.json") as f:
        m = json.load(f)
    print("manifest", node, sum(f["rows"] for f in m["files"] if f["database"] == "fleet"), m["node"]["id"])
"#
        ),
        &[],
    )
}

/// Goal: the Parquet files and the node manifest reach the bucket in the
/// Hive layout under `node=<id>/`, pyarrow's own S3 client and DuckDB count
/// exactly the rows written, the manifest names them all, and the WAL is
/// released once they are there. Method: moto, 2 shards, 3 000 rows.
#[test]
fn files_and_manifest_reach_the_bucket_and_readers_count_every_row() {
    let moto = Moto::start(&[]);
    moto.create_bucket();
    let dir = TempDir::new("s3-basic");
    let config = node_config(&dir, &moto.endpoint(), "node-a", "", "");
    let data = dir.path.join("data");
    let server = Server::start_in_with_env(
        &data,
        &["--shards", "2", "--config", &config],
        &credentials(),
    );
    write_ok(&server, &lines(0, 3000));
    wait_uploaded(&server);
    assert!(server.metric("ringest_object_store_files_uploaded_total") >= 2);
    assert_eq!(server.metric("ringest_object_store_up"), 1);
    let read = read_bucket(&moto.endpoint());
    let sum: usize = (0..3000).sum();
    assert!(
        read.contains(&format!(
            "rows 3000 distinct 3000 sum {sum} nodes node=node-a"
        )),
        "{read}"
    );
    assert!(read.contains(&format!("duckdb 3000 {sum}")), "{read}");
    assert!(read.contains("manifest node=node-a 3000 node-a"), "{read}");
    // Released behind the confirmed catalog: each shard keeps its open
    // segment (and at most a spare).
    wait_for(Duration::from_secs(30), "WAL released after upload", || {
        segments(&data) <= 4
    });
}

/// Goal: while the store is unreachable, writes are still acknowledged,
/// the WAL keeps every segment whose Parquet files are not in the bucket
/// (even across a kill -9 and a start with the store still away), and when
/// the store returns the backlog drains: the bucket holds every
/// acknowledged row exactly once. Method: a relay the test cuts.
#[test]
fn store_away_keeps_the_wal_and_the_backlog_drains_when_it_returns() {
    let moto = Moto::start(&[]);
    moto.create_bucket();
    let relay = Relay::start(moto.port);
    let dir = TempDir::new("s3-away");
    let config = node_config(&dir, &relay.endpoint(), "node-a", "", "");
    let data = dir.path.join("data");
    let mut server = Server::start_in_with_env(
        &data,
        &["--shards", "2", "--config", &config],
        &credentials(),
    );
    // Every line of this test carries 200 bytes of string: about 1 MB of
    // WAL per 5000-line batch, several 128 KiB segments per shard.
    write_ok(&server, &padded_lines(0, 2000, 200));
    wait_uploaded(&server);
    let released = segments(&data);

    relay.cut();
    for batch in 0..4 {
        write_ok(&server, &padded_lines(2000 + batch * 5000, 5000, 200));
    }
    server.wait_persisted(1);
    wait_for(Duration::from_secs(30), "the uploader notices", || {
        server.metric("ringest_object_store_failures_total") >= 1
    });
    assert!(server.metric("ringest_object_store_versions_behind") > 0);
    let kept = segments(&data);
    assert!(
        kept >= released + 8,
        "segments of persisted but not uploaded rows were deleted: {released} before, {kept} now"
    );

    // A crash while the store is away, and a start while it still is.
    server.kill9();
    server.restart();
    write_ok(&server, &padded_lines(22_000, 1000, 200));
    server.wait_persisted(1);
    assert!(
        segments(&data) >= kept,
        "a restart released unconfirmed WAL"
    );

    relay.restore();
    wait_uploaded(&server);
    let read = read_bucket(&moto.endpoint());
    let sum: usize = (0..23_000).sum();
    assert!(
        read.contains(&format!("rows 23000 distinct 23000 sum {sum}")),
        "{read}"
    );
    wait_for(
        Duration::from_secs(30),
        "WAL released after the backlog",
        || segments(&data) <= 4,
    );
}

/// Goal: two appliances with different node ids share one bucket without
/// colliding, a reader over the bucket counts every row of both exactly
/// once, also after one of them is killed and restarted. Method: two
/// servers, one moto.
#[test]
fn two_nodes_share_one_bucket_and_a_restart_duplicates_nothing() {
    let moto = Moto::start(&[]);
    moto.create_bucket();
    let (dir_a, dir_b) = (TempDir::new("s3-node-a"), TempDir::new("s3-node-b"));
    let config_a = node_config(&dir_a, &moto.endpoint(), "node-a", "", "");
    let config_b = node_config(&dir_b, &moto.endpoint(), "node-b", "", "");
    let start = |dir: &TempDir, config: &str| {
        Server::start_in_with_env(
            &dir.path.join("data"),
            &["--shards", "2", "--config", config],
            &credentials(),
        )
    };
    let mut a = start(&dir_a, &config_a);
    let b = start(&dir_b, &config_b);
    write_ok(&a, &lines(0, 4000));
    write_ok(&b, &lines(4000, 4000));
    write_ok(&a, &lines(8000, 1000));
    // Unpersisted when killed: the WAL replays it, persisted once.
    a.kill9();
    a.restart();
    write_ok(&a, &lines(9000, 1000));
    wait_uploaded(&a);
    wait_uploaded(&b);
    let read = read_bucket(&moto.endpoint());
    let sum: usize = (0..10_000).sum();
    assert!(
        read.contains(&format!(
            "rows 10000 distinct 10000 sum {sum} nodes node=node-a,node=node-b"
        )),
        "{read}"
    );
    assert!(read.contains("manifest node=node-a 6000 node-a"), "{read}");
    assert!(read.contains("manifest node=node-b 4000 node-b"), "{read}");
}

/// Goal: credentials the store refuses stop the start with an error that
/// says so (no silent fallback to the local directory); so does a missing
/// bucket; the right credentials start. Method: moto with authentication
/// on (its IAM), a user created by the test.
#[test]
fn refused_credentials_and_missing_bucket_stop_the_start() {
    // The first 3 requests (create user, key, policy) need no credentials;
    // every later one is checked.
    let moto = Moto::start(&[("INITIAL_NO_AUTH_ACTION_COUNT", "3")]);
    let keys = run_python(
        &format!(
            r#"
import boto3, json
kw = dict(endpoint_url="{endpoint}", region_name="us-east-1")
iam = boto3.client("iam", aws_access_key_id="x", aws_secret_access_key="y", **kw)
iam.create_user(UserName="ringest")
key = iam.create_access_key(UserName="ringest")["AccessKey"]
iam.put_user_policy(UserName="ringest", PolicyName="s3", PolicyDocument=json.dumps(
    {{"Version": "2012-10-17", "Statement": [{{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}}]}}))
boto3.client("s3", aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"], **kw).create_bucket(Bucket="{BUCKET}")
print(key["AccessKeyId"], key["SecretAccessKey"])
"#,
            endpoint = moto.endpoint()
        ),
        &[],
    );
    let (key, secret) = keys.trim().split_once(' ').expect("key and secret");
    let dir = TempDir::new("s3-auth");
    let config = node_config(&dir, &moto.endpoint(), "node-a", "", "");
    let attempt = |env: &[(&str, &str)], config: &str| {
        common::start_outcome_with_env(&dir.path.join("data"), &["--config", config], env)
    };
    let wrong = attempt(
        &[
            ("AWS_ACCESS_KEY_ID", "AKIAWRONG"),
            ("AWS_SECRET_ACCESS_KEY", "wrong"),
        ],
        &config,
    )
    .expect_err("wrong credentials must stop the start");
    assert!(wrong.contains("refused access"), "{wrong}");
    assert!(wrong.contains("InvalidAccessKeyId"), "{wrong}");
    assert!(
        !wrong.contains("wrong\""),
        "the secret must not be logged: {wrong}"
    );

    let other_dir = TempDir::new("s3-auth-bucket");
    let missing = config_file(
        &other_dir,
        &std::fs::read_to_string(&config)
            .expect("config")
            .replace(BUCKET, "no-such-bucket"),
    );
    let refused = attempt(
        &[
            ("AWS_ACCESS_KEY_ID", key),
            ("AWS_SECRET_ACCESS_KEY", secret),
        ],
        &missing,
    )
    .expect_err("a missing bucket must stop the start");
    assert!(refused.contains("NoSuchBucket"), "{refused}");

    attempt(
        &[
            ("AWS_ACCESS_KEY_ID", key),
            ("AWS_SECRET_ACCESS_KEY", secret),
        ],
        &config,
    )
    .expect("the right credentials start");
}

/// Goal: a second data directory configured with a node id that already
/// holds another data directory's files is refused at start (it would
/// delete the other's files as leftovers). Method: two data directories,
/// one node id.
#[test]
fn a_node_id_taken_by_another_data_directory_is_refused() {
    let moto = Moto::start(&[]);
    moto.create_bucket();
    let dir = TempDir::new("s3-taken");
    let config = node_config(&dir, &moto.endpoint(), "same", "", "");
    let first = Server::start_in_with_env(
        &dir.path.join("first"),
        &["--shards", "1", "--config", &config],
        &credentials(),
    );
    write_ok(&first, &lines(0, 10));
    wait_uploaded(&first);
    let refused = common::start_outcome_with_env(
        &dir.path.join("second"),
        &["--config", &config],
        &credentials(),
    )
    .expect_err("the node id is taken");
    assert!(
        refused.contains("already holds the files of another data directory"),
        "{refused}"
    );
    assert_eq!(
        read_bucket(&moto.endpoint()).matches("manifest ").count(),
        1
    );
}

/// Goal: with `local_bytes_max`, the local copies of files already in the
/// bucket are deleted, and queries and compactions that need them fetch
/// them back: every answer stays exact. Method: a budget of one byte (every
/// uploaded file's local copy goes), eight snapshots that compaction merges
/// (its inputs fetched), counts and sums before and after a restart.
#[test]
fn local_copies_past_the_budget_are_fetched_back_for_queries_and_compaction() {
    let moto = Moto::start(&[]);
    moto.create_bucket();
    let dir = TempDir::new("s3-evict");
    let config = node_config(
        &dir,
        &moto.endpoint(),
        "node-a",
        "local_bytes_max = 1\n",
        "compact_files = 4\n",
    );
    let data = dir.path.join("data");
    let mut server = Server::start_in_with_env(
        &data,
        &["--shards", "1", "--config", &config],
        &credentials(),
    );
    for batch in 0..8 {
        write_ok(&server, &lines(batch * 500, 500));
        wait_uploaded(&server);
    }
    wait_for(Duration::from_secs(60), "local copies evicted", || {
        server.metric("ringest_object_store_files_evicted_total") >= 4
    });
    let count = |server: &Server| {
        let answer = server.query("db=fleet&q=SELECT+count(v),sum(v)+FROM+m");
        assert_eq!(answer.status, 200, "{}", answer.text());
        answer.text()
    };
    let sum: usize = (0..4000).sum();
    let expected = format!(",4000,{sum}]");
    assert!(count(&server).contains(&expected), "{}", count(&server));
    assert!(server.metric("ringest_object_store_files_fetched_total") >= 1);
    wait_for(
        Duration::from_secs(60),
        "a compaction of evicted files",
        || server.metric("ringest_persist_compactions_total") >= 1,
    );
    assert!(count(&server).contains(&expected), "{}", count(&server));
    server.restart();
    assert!(count(&server).contains(&expected), "{}", count(&server));
    wait_uploaded(&server);
    let read = read_bucket(&moto.endpoint());
    assert!(
        read.contains(&format!("rows 4000 distinct 4000 sum {sum}")),
        "{read}"
    );
}

/// Goal: a data directory never writes next to files another one wrote
/// under its `node_id` (file names repeat between data directories: it
/// would overwrite them), even when that node's manifest was removed by
/// hand; the earlier files stay readable. Method: node A writes and stops,
/// its bucket manifest is deleted, a fresh data directory configured as A
/// is refused at start, the bucket still holds A's rows; the first data
/// directory itself starts again (its upload journal proves the files are
/// its own) and writes on.
#[test]
fn a_node_id_whose_files_another_data_directory_wrote_is_refused_without_a_manifest() {
    let moto = Moto::start(&[]);
    moto.create_bucket();
    let dir = TempDir::new("s3-foreign");
    let config = node_config(&dir, &moto.endpoint(), "node-a", "", "");
    let mut first = Server::start_in_with_env(
        &dir.path.join("first"),
        &["--shards", "1", "--config", &config],
        &credentials(),
    );
    write_ok(&first, &lines(0, 1000));
    wait_uploaded(&first);
    assert!(first.terminate().success());
    run_python(
        &format!(
            "import boto3\nboto3.client('s3', endpoint_url='{}', region_name='us-east-1', \
             aws_access_key_id='{KEY}', aws_secret_access_key='{SECRET}')\
             .delete_object(Bucket='{BUCKET}', Key='fleet/node=node-a/_catalog.json')\n",
            moto.endpoint()
        ),
        &[],
    );
    let refused = common::start_outcome_with_env(
        &dir.path.join("second"),
        &["--config", &config],
        &credentials(),
    )
    .expect_err("files of another data directory under the node id");
    assert!(
        refused.contains("files this data directory did not write"),
        "{refused}"
    );
    let files = run_python(
        &format!(
            r#"
import pyarrow.dataset as ds, pyarrow.fs as pafs
fs = pafs.S3FileSystem(endpoint_override="{endpoint}", scheme="http", region="us-east-1",
                       access_key="{KEY}", secret_key="{SECRET}")
sel = pafs.FileSelector("{BUCKET}/fleet/node=node-a/db=fleet", recursive=True)
files = [i.path for i in fs.get_file_info(sel) if i.path.endswith(".parquet")]
print("rows", ds.dataset(files, filesystem=fs, format="parquet").count_rows())
"#,
            endpoint = moto.endpoint()
        ),
        &[],
    );
    assert!(files.contains("rows 1000"), "{files}");
    // The data directory that wrote them may go on (they are its own).
    let first = Server::start_in_with_env(
        &dir.path.join("first"),
        &["--shards", "1", "--config", &config],
        &credentials(),
    );
    write_ok(&first, &lines(1000, 1000));
    wait_uploaded(&first);
    let read = read_bucket(&moto.endpoint());
    let sum: usize = (0..2000).sum();
    assert!(
        read.contains(&format!("rows 2000 distinct 2000 sum {sum}")),
        "{read}"
    );
}
