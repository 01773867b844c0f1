//! The load-balancer configurations of `systemd/scale-out/` (the scale-out
//! guide), run for real: HAProxy and nginx with the shipped files, only
//! their addresses replaced, in front of real ringest nodes on loopback.
//!
//! Nothing here installs packages, and nothing is skipped: a missing
//! `haproxy` or `nginx` fails the test, naming `.ci/run`, which installs
//! Debian's packages.
//!
//! Each proxy gets three backends as shipped: two ringest nodes and one
//! address where nothing listens (a node that is down from the start), so
//! every run also exercises the retry of a failed connection on another
//! node.

#![allow(clippy::disallowed_methods)]

mod common;

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, query_series, request_at, Client, Server, TempDir};
use simd_json::prelude::*;

/// The database every write goes to.
const DB: &str = "scale";
/// Points per batch.
const BATCH_POINTS: u64 = 100;
/// Timestamp of the first point (2023-11-14); each point gets its own.
const TIME_BASE_NS: u64 = 1_700_000_000_000_000_000;

fn source(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Fails with what to do when `program` is not installed.
fn require(program: &str, version_flag: &str) {
    match Command::new(program).arg(version_flag).output() {
        Ok(_) => {}
        Err(error) if error.kind() == ErrorKind::NotFound => panic!(
            "{program} is not installed: run .ci/run (it installs Debian's {program} package), \
             or apt-get install -y {program}"
        ),
        Err(error) => panic!("cannot run {program}: {error}"),
    }
}

/// Polls `done` every 20 ms for up to `limit`; panics with `what`.
fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A proxy process started by a test (its stderr in a file), killed on drop.
struct Proxy {
    name: &'static str,
    child: Child,
    stderr: PathBuf,
}

impl Proxy {
    fn start(name: &'static str, mut command: Command, dir: &Path) -> Proxy {
        let stderr = dir.join(format!("{name}.stderr"));
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("create stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Proxy {
            name,
            child,
            stderr,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until `addr` accepts connections (the proxy is up), failing at
    /// once with its stderr if it exits.
    fn wait_listening(&mut self, addr: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited ({status}):\n{}", self.name, self.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "{} not listening on {addr} within 30 s:\n{}",
                self.name,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proxy {
    /// SIGTERM, so that nginx's master stops its workers (after a SIGKILL
    /// they would live on, orphaned, still listening); SIGKILL if it has
    /// not exited within 10 s.
    fn drop(&mut self) {
        // SAFETY: plain kill(2) on our own child's pid, not yet waited for.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes batches of unique points (one series, a timestamp each), so the
/// number stored is exactly the number acknowledged.
struct Writer {
    next: u64,
}

impl Writer {
    fn batch(&mut self, points: u64) -> String {
        let mut body = String::new();
        for _ in 0..points {
            let n = self.next;
            self.next += 1;
            body.push_str(&format!("m,via=lb v={n} {}\n", TIME_BASE_NS + n));
        }
        body
    }

    /// The request target of batch `i`: `/write` and `/api/v2/write` in turn.
    fn target(i: usize) -> String {
        if i % 2 == 0 {
            format!("/write?db={DB}&precision=ns")
        } else {
            format!("/api/v2/write?bucket={DB}&precision=ns")
        }
    }

    /// `batches` writes through `proxy`, each on a connection of its own;
    /// every one must be acknowledged. The points written.
    fn write_each_connection(&mut self, proxy: SocketAddr, batches: usize, when: &str) -> u64 {
        for i in 0..batches {
            let body = self.batch(BATCH_POINTS);
            let response = request_at(proxy, "POST", &Writer::target(i), &[], body.as_bytes());
            assert_eq!(
                response.status,
                204,
                "{when}: write {i} through the proxy: {}",
                response.text()
            );
        }
        batches as u64 * BATCH_POINTS
    }

    /// `batches` writes through `proxy` on one keep-alive connection, as
    /// Telegraf sends them; every one must be acknowledged.
    fn write_keep_alive(&mut self, proxy: SocketAddr, batches: usize, when: &str) -> u64 {
        let mut client = Client::connect(proxy);
        for i in 0..batches {
            let body = self.batch(BATCH_POINTS);
            let response = client
                .send("POST", &Writer::target(i), body.as_bytes())
                .unwrap_or_else(|| panic!("{when}: keep-alive write {i}: connection closed"));
            assert_eq!(
                response.status,
                204,
                "{when}: keep-alive write {i} through the proxy: {}",
                response.text()
            );
        }
        batches as u64 * BATCH_POINTS
    }

    /// 20 writes one per connection, 20 on one keep-alive connection and
    /// a large batch through `proxy` to nodes `a` and `b` (fresh): they
    /// hold exactly the points acknowledged, and both got some. The points
    /// written.
    fn write_balanced(&mut self, proxy: SocketAddr, a: &Server, b: &Server, when: &str) -> u64 {
        let mut written = self.write_each_connection(proxy, 20, when);
        written += self.write_keep_alive(proxy, 20, when);
        written += self.write_large(proxy);
        let (on_a, on_b) = (count(a), count(b));
        assert_eq!(on_a + on_b, written, "{when}: A {on_a} + B {on_b} points");
        assert!(
            on_a > 0 && on_b > 0,
            "{when}: both nodes get writes: A {on_a}, B {on_b}"
        );
        written
    }

    /// One batch of more than 1 MiB (nginx's default body limit, which the
    /// shipped file raises to the node's).
    fn write_large(&mut self, proxy: SocketAddr) -> u64 {
        let points = 40_000;
        let body = self.batch(points);
        assert!(
            body.len() > 1 << 20,
            "the large batch is {} bytes",
            body.len()
        );
        let response = request_at(proxy, "POST", &Writer::target(0), &[], body.as_bytes());
        assert_eq!(response.status, 204, "2 MiB batch: {}", response.text());
        points
    }
}

/// Kills `node` and waits until its port refuses connections. The port
/// goes on accepting for a moment after the process is reaped (the kernel
/// tears its io_uring instances down, and the listening socket with them,
/// asynchronously): a request sent in that window is lost after sending,
/// a 502 no proxy may retry. "Dead" is when the port refuses.
fn kill_and_wait_refused(node: &mut Server) {
    node.kill9();
    let addr = node.addr;
    wait_for(
        Duration::from_secs(10),
        "the killed node's port refuses",
        || TcpStream::connect(addr).is_err(),
    );
}

/// With every node down, a write through `proxy` gets the proxy's own
/// answer shaped like a node's refusal: 503, JSON, Retry-After.
fn assert_unavailable(proxy: SocketAddr) {
    let body = "m,via=lb v=0 1\n";
    let response = request_at(proxy, "POST", &Writer::target(0), &[], body.as_bytes());
    assert_eq!(response.status, 503, "all nodes down: {}", response.text());
    assert_eq!(
        response.header("retry-after"),
        Some("5"),
        "{:?}",
        response.headers
    );
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json"))
            && response.text().contains("\"code\":\"unavailable\""),
        "all nodes down: {:?} {}",
        response.headers,
        response.text()
    );
}

/// Points one node stores (asked directly, not through the proxy).
fn count(node: &Server) -> u64 {
    let series = query_series(node, DB, "SELECT count(v) FROM m");
    match series.first() {
        None => 0,
        Some(series) => series.values[0][1]
            .as_u64()
            .unwrap_or_else(|| panic!("count is not a number: {:?}", series.values)),
    }
}

/// Two ringest nodes (one shard each) and a loopback address where nothing
/// listens, in the order of the shipped files' three `server` lines.
fn backends() -> (Server, Server, SocketAddr) {
    let a = Server::start(&["--shards", "1"]);
    let b = Server::start(&["--shards", "1"]);
    let dead: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    (a, b, dead)
}

/// Replaces, in `text`, each line that starts (after indentation) with a
/// key of `lines` by its value, and each `server` line's address (the
/// token after the address-bearing keyword) by the next of `servers`.
/// Every key must match exactly one line, and there must be exactly as many
/// `server` lines as `servers`: a changed shipped file fails here instead of
/// being half rewritten.
fn rewrite(
    text: &str,
    lines: &[(&str, String)],
    server_keyword: &str,
    servers: &[SocketAddr],
) -> String {
    let mut out = String::new();
    let mut matched = vec![0; lines.len()];
    let mut next_server = 0;
    for line in text.lines() {
        let indent = &line[..line.len() - line.trim_start().len()];
        let trimmed = line.trim_start();
        if let Some(k) = lines.iter().position(|(key, _)| trimmed.starts_with(key)) {
            matched[k] += 1;
            out.push_str(&format!("{indent}{}\n", lines[k].1));
        } else if trimmed.starts_with(server_keyword) {
            let mut tokens: Vec<String> = trimmed.split_whitespace().map(String::from).collect();
            // haproxy: `server NAME ADDR ...`; nginx: `server ADDR ...;`.
            let at = tokens
                .iter()
                .position(|t| t.starts_with("10.0.0."))
                .unwrap_or_else(|| panic!("no 10.0.0.x address on {line:?}"));
            let addr = servers
                .get(next_server)
                .unwrap_or_else(|| panic!("more server lines than backends: {line:?}"));
            tokens[at] = addr.to_string();
            next_server += 1;
            out.push_str(&format!("{indent}{}\n", tokens.join(" ")));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    for ((key, _), n) in lines.iter().zip(&matched) {
        assert_eq!(*n, 1, "{key:?} matched {n} lines of the shipped file");
    }
    assert_eq!(
        next_server,
        servers.len(),
        "server lines in the shipped file"
    );
    out
}

/// One column of one server's row of HAProxy's stats page (`/;csv`), of
/// the `ringest` backend.
fn haproxy_stat(stats: SocketAddr, server: &str, column: &str) -> String {
    let csv = request_at(stats, "GET", "/;csv", &[], b"").text();
    let header: Vec<&str> = csv
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("# ")
        .split(',')
        .collect();
    let at = header
        .iter()
        .position(|h| *h == column)
        .unwrap_or_else(|| panic!("no column {column} in the stats:\n{csv}"));
    csv.lines()
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"ringest") && f.get(1) == Some(&server))
        .and_then(|f| f.get(at).map(|s| s.to_string()))
        .unwrap_or_else(|| panic!("no ringest/{server} in the stats:\n{csv}"))
}

/// Goal: the shipped `haproxy.cfg` is valid as it is, and does what the
/// guide says: spreads writes over the nodes, retries a request whose node
/// cannot be connected to on another node, takes a node killed with
/// SIGKILL out by its health check, and loses no acknowledged point.
/// Method: `haproxy -c` on the file (no warning allowed); then the file
/// with only its addresses replaced in front of nodes A, B and a dead
/// address; writes through it (each on its own connection, and on one
/// keep-alive connection) must all get 204, and A's and B's counts, asked
/// directly, must add up to the points written, each non-zero. Then
/// SIGKILL B and wait until its port refuses connections: writes right
/// after it must still all get 204 (the ones sent to B are passed on to A:
/// B's redispatch counter on the stats page is non-zero), the stats page
/// must show B DOWN, later writes get 204 too, A holds everything written
/// since, and B restarted on its data directory holds exactly what it had
/// acknowledged. Last, with A killed too, a write gets HAProxy's own 503
/// with Retry-After and a JSON body.
#[test]
fn haproxy_config_balances_fails_over_and_loses_no_acknowledged_point() {
    require("haproxy", "-v");
    let shipped = source("systemd/scale-out/haproxy.cfg");
    let check = Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(&shipped)
        .output()
        .expect("run haproxy -c");
    let check_text = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        check.status.success()
            && !check_text.contains("[WARNING]")
            && !check_text.contains("[ALERT]"),
        "haproxy -c {}: {check_text}",
        shipped.display()
    );

    let dir = TempDir::new("haproxy");
    let (mut a, mut b, dead) = backends();
    let proxy_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let stats_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let socket = dir.path.join("admin.sock");
    let text = std::fs::read_to_string(&shipped).expect("read haproxy.cfg");
    let copy = rewrite(
        &text,
        &[
            ("bind :8086", format!("bind {proxy_addr}")),
            ("bind 127.0.0.1:8404", format!("bind {stats_addr}")),
            (
                "stats socket /run/haproxy/admin.sock",
                format!("stats socket {} mode 660 level admin", socket.display()),
            ),
        ],
        "server ",
        &[a.addr, b.addr, dead],
    );
    let config = dir.path.join("haproxy.cfg");
    std::fs::write(&config, copy).expect("write haproxy.cfg copy");
    let mut command = Command::new("haproxy");
    command.arg("-db").arg("-f").arg(&config);
    let mut proxy = Proxy::start("haproxy", command, &dir.path);
    proxy.wait_listening(proxy_addr);
    proxy.wait_listening(stats_addr);

    let mut writer = Writer { next: 0 };
    let mut written = writer.write_balanced(proxy_addr, &a, &b, "all up");
    let on_b = count(&b);

    // B dies with every write it acknowledged in its WAL.
    kill_and_wait_refused(&mut b);
    written += writer.write_each_connection(proxy_addr, 10, "right after B died");
    let status = |server: &str| haproxy_stat(stats_addr, server, "status");
    let redispatched: u64 = haproxy_stat(stats_addr, "ingest-2", "wredis")
        .parse()
        .expect("wredis is a number");
    assert!(
        redispatched > 0,
        "some writes were sent to the dead B and passed on to A"
    );
    wait_for(
        Duration::from_secs(30),
        "HAProxy marks ingest-2 DOWN",
        || status("ingest-2").starts_with("DOWN"),
    );
    assert!(
        status("ingest-1").starts_with("UP"),
        "ingest-1 stays up: {}",
        status("ingest-1")
    );
    written += writer.write_each_connection(proxy_addr, 10, "B marked down");
    written += writer.write_keep_alive(proxy_addr, 10, "B marked down");
    assert_eq!(
        count(&a),
        written - on_b,
        "A holds every point written since B died"
    );

    // B's acknowledged points were never lost, only unreachable.
    b.restart();
    assert_eq!(count(&b), on_b, "B after a restart on its data directory");
    assert_eq!(count(&a) + count(&b), written);

    // The restarted B listens elsewhere; with A gone too, no node is left.
    kill_and_wait_refused(&mut a);
    assert_unavailable(proxy_addr);
}

/// A minimal main nginx configuration around `fragment` (an `http` block
/// fragment, as installed in /etc/nginx/conf.d/), with every path nginx
/// writes inside `dir`.
fn nginx_main(dir: &Path, fragment: &Path) -> String {
    let d = dir.display();
    format!(
        "pid {d}/nginx.pid;\n\
         error_log {d}/error.log;\n\
         events {{}}\n\
         http {{\n\
         access_log off;\n\
         client_body_temp_path {d}/body;\n\
         proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n\
         uwsgi_temp_path {d}/uwsgi;\n\
         scgi_temp_path {d}/scgi;\n\
         include {};\n\
         }}\n",
        fragment.display()
    )
}

/// Goal: the shipped `nginx.conf` fragment is valid as it is and spreads
/// writes over the nodes, passing a write whose node cannot be connected
/// to on to another node, with bodies above nginx's default 1 MiB limit.
/// Method: `nginx -t` on the file inside a minimal main configuration;
/// then the file with only its addresses replaced in front of nodes A, B
/// and a dead address; every write through it must get 204, and A's and
/// B's counts, asked directly, must add up to the points written, each
/// non-zero. With A and B killed, a write gets the file's 503 with
/// Retry-After and a JSON body. (Writes while a node dies are not tested
/// under nginx: it may send one over a kept-alive connection to the dead
/// node before it notices the close, and that request fails by design,
/// see the file; HAProxy's test covers the failover.)
#[test]
fn nginx_config_balances_and_passes_on_refused_connections() {
    require("nginx", "-v");
    let dir = TempDir::new("nginx");
    let shipped = source("systemd/scale-out/nginx.conf");
    let main = dir.path.join("check.conf");
    std::fs::write(&main, nginx_main(&dir.path, &shipped)).expect("write check.conf");
    let check = Command::new("nginx")
        .arg("-t")
        .arg("-p")
        .arg(&dir.path)
        .arg("-e")
        .arg(dir.path.join("error.log"))
        .arg("-c")
        .arg(&main)
        .output()
        .expect("run nginx -t");
    let check_text = String::from_utf8_lossy(&check.stderr);
    assert!(
        check.status.success() && !check_text.contains("[warn]"),
        "nginx -t {}: {check_text}",
        shipped.display()
    );

    let (mut a, mut b, dead) = backends();
    let proxy_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let text = std::fs::read_to_string(&shipped).expect("read nginx.conf");
    let copy = rewrite(
        &text,
        &[("listen 8086;", format!("listen {proxy_addr};"))],
        "server 10.0.0.",
        &[a.addr, b.addr, dead],
    );
    let fragment = dir.path.join("ringest.conf");
    std::fs::write(&fragment, copy).expect("write nginx.conf copy");
    let main = dir.path.join("nginx.conf");
    std::fs::write(&main, nginx_main(&dir.path, &fragment)).expect("write nginx main");
    let mut command = Command::new("nginx");
    command
        .arg("-p")
        .arg(&dir.path)
        .arg("-e")
        .arg(dir.path.join("error.log"))
        .arg("-c")
        .arg(&main)
        .arg("-g")
        .arg("daemon off;");
    let mut proxy = Proxy::start("nginx", command, &dir.path);
    proxy.wait_listening(proxy_addr);

    let mut writer = Writer { next: 0 };
    writer.write_balanced(proxy_addr, &a, &b, "nginx");

    kill_and_wait_refused(&mut a);
    kill_and_wait_refused(&mut b);
    assert_unavailable(proxy_addr);
}
