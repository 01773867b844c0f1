//! The HTTP layer of the real server over real sockets on 127.0.0.1:
//! framing, Expect, pipelining, HTTP/1.0, every limit's status, timeouts,
//! connection spreading over shards, and the endpoints of issue 2.

// Tests are not shard code: std::fs and std::time are fine here (clippy.toml
// bans them on the server's executors).
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{config_file, Response, Server, TempDir};

/// Reads until one full response is available (or EOF); returns it and
/// keeps any extra bytes in `pending`.
fn read_response(stream: &mut TcpStream, pending: &mut Vec<u8>) -> Option<Response> {
    loop {
        if let Some((response, used)) = Response::parse_prefix(pending) {
            // A read-to-close body is only complete at EOF.
            if response.header("content-length").is_some()
                || response.header("transfer-encoding").is_some()
                || response.status == 204
                || response.status < 200
            {
                pending.drain(..used);
                return Some(response);
            }
        }
        let mut chunk = [0u8; 65536];
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => {
                let parsed = Response::parse_prefix(pending).map(|(r, _)| r);
                pending.clear();
                return parsed;
            }
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
        }
    }
}

/// True once the server closed the connection (EOF), within the read timeout.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// Goal: the README's run command (embedded default, only address and data
/// directory moved for the test) serves `/ping` → 204 with both version
/// headers. Method: start the binary, GET and HEAD /ping.
#[test]
fn ping_answers_204_with_version_headers() {
    let server = Server::start(&[]);
    for method in ["GET", "HEAD"] {
        let response = server.request(method, "/ping", &[], b"");
        assert_eq!(response.status, 204, "{method}");
        assert!(response.header("x-influxdb-version").is_some(), "{method}");
        assert!(response.header("x-influxdb-build").is_some(), "{method}");
        assert!(response.header("request-id").is_some(), "{method}");
    }
    let verbose = server.request("GET", "/ping?verbose=true", &[], b"");
    assert_eq!(verbose.status, 200);
    assert!(verbose.text().contains("\"version\""), "{}", verbose.text());
}

/// Goal: /health, /ready and /api/v2/ready answer what clients parse; an
/// unknown path is a JSON 404; a wrong method is 405 with Allow.
/// Method: one request each.
#[test]
fn endpoints_of_the_foundation() {
    let server = Server::start(&[]);
    let health = server.request("GET", "/health", &[], b"");
    assert_eq!(health.status, 200);
    assert!(
        health.text().contains("\"status\":\"pass\""),
        "{}",
        health.text()
    );
    assert!(health.text().contains("\"name\":\"ringest\""));
    for path in ["/ready", "/api/v2/ready"] {
        let ready = server.request("GET", path, &[], b"");
        assert_eq!(ready.status, 200, "{path}");
        assert!(
            ready.text().contains("\"status\":\"ready\""),
            "{}",
            ready.text()
        );
        assert!(
            ready.text().contains("\"started\":\"20"),
            "{}",
            ready.text()
        );
    }
    let missing = server.request("GET", "/nope", &[], b"");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("content-type"), Some("application/json"));
    assert!(missing.text().contains("\"code\":\"not found\""));
    let wrong = server.request("GET", "/write?db=x", &[], b"");
    assert_eq!(wrong.status, 405);
    assert_eq!(wrong.header("allow"), Some("OPTIONS, POST"));
}

/// Goal: a body framed by Content-Length and the same body chunked (with
/// extensions and trailers) reach the server identically. Method: a
/// `/query` form body both ways must give byte-identical answers.
#[test]
fn content_length_and_chunked_bodies_arrive_identically() {
    let server = Server::start(&[]);
    let body = b"q=SHOW+DATABASES";
    let plain = server.request(
        "POST",
        "/query",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        body,
    );
    let mut stream = server.connect();
    let head = "POST /query HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    let chunked =
        format!("{head}5;ext=1\r\nq=SHO\r\nB\r\nW+DATABASES\r\n0\r\nX-Trailer: yes\r\n\r\n");
    stream.write_all(chunked.as_bytes()).unwrap();
    let mut pending = Vec::new();
    let response = read_response(&mut stream, &mut pending).expect("response");
    assert_eq!(plain.status, 200, "{}", plain.text());
    assert_eq!(response.status, plain.status);
    assert_eq!(response.body, plain.body);
}

/// Goal: `Expect: 100-continue` gets `100 Continue` then the final status;
/// an oversize Content-Length gets 413 at once without `100`, and the
/// connection closes. Method: raw requests, read what arrives first.
#[test]
fn expect_continue_and_early_refusal() {
    let dir = TempDir::new("expect");
    let config = config_file(&dir, "[http]\nbody_bytes_max = 4096\n");
    let server = Server::start(&["--config", &config]);

    let mut stream = server.connect();
    stream
        .write_all(b"POST /query HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 16\r\nExpect: 100-continue\r\n\r\n")
        .unwrap();
    let mut pending = Vec::new();
    let interim = read_response(&mut stream, &mut pending).expect("interim");
    assert_eq!(interim.status, 100);
    stream.write_all(b"q=SHOW+DATABASES").unwrap();
    let last = read_response(&mut stream, &mut pending).expect("final");
    assert_eq!(last.status, 200);

    let mut stream = server.connect();
    stream
        .write_all(b"POST /write?db=x HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
        .unwrap();
    let mut pending = Vec::new();
    let refused = read_response(&mut stream, &mut pending).expect("final");
    assert_eq!(refused.status, 413, "no 100 Continue before a refusal");
    assert_eq!(refused.header("connection"), Some("close"));
    assert!(closed_by_server(&mut stream));
}

/// Goal: pipelined requests on one connection are answered in order.
/// Method: three different requests in one write; match each answer.
#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = Server::start(&[]);
    let mut stream = server.connect();
    stream
        .write_all(
            b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\nGET /nope HTTP/1.1\r\nHost: t\r\n\r\nGET /ping?verbose=true HTTP/1.1\r\nHost: t\r\n\r\nGET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
    let mut pending = Vec::new();
    let statuses: Vec<u16> = (0..4)
        .map(|_| {
            read_response(&mut stream, &mut pending)
                .expect("response")
                .status
        })
        .collect();
    assert_eq!(statuses, vec![204, 404, 200, 200]);
    assert!(closed_by_server(&mut stream));
}

/// Goal: HTTP/1.0 works and closes by default; keep-alive on request.
/// Method: raw HTTP/1.0 requests.
#[test]
fn http_1_0_is_served() {
    let server = Server::start(&[]);
    let mut stream = server.connect();
    stream.write_all(b"GET /ping HTTP/1.0\r\n\r\n").unwrap();
    let mut pending = Vec::new();
    assert_eq!(
        read_response(&mut stream, &mut pending).unwrap().status,
        204
    );
    assert!(closed_by_server(&mut stream));

    let mut stream = server.connect();
    stream
        .write_all(
            b"GET /ping HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /ping HTTP/1.0\r\n\r\n",
        )
        .unwrap();
    let mut pending = Vec::new();
    assert_eq!(
        read_response(&mut stream, &mut pending).unwrap().status,
        204
    );
    assert_eq!(
        read_response(&mut stream, &mut pending).unwrap().status,
        204
    );
}

/// Goal: every HTTP limit answers its own status, in JSON, and malformed
/// requests are 400 and close. Method: one violating request per limit
/// against small configured limits.
#[test]
fn each_limit_gives_its_status() {
    let dir = TempDir::new("limits");
    let config = config_file(
        &dir,
        "[http]\nrequest_line_bytes_max = 100\nhead_bytes_max = 2048\nheader_count_max = 8\nbody_bytes_max = 4096\n",
    );
    let server = Server::start(&["--config", &config]);
    let send = |raw: Vec<u8>| {
        let mut stream = server.connect();
        stream.write_all(&raw).unwrap();
        let mut pending = Vec::new();
        read_response(&mut stream, &mut pending).expect("a response")
    };
    let long_line = format!("GET /ping?{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(200));
    assert_eq!(send(long_line.into_bytes()).status, 414);
    let mut many = String::from("GET /ping HTTP/1.1\r\n");
    for i in 0..20 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(send(many.into_bytes()).status, 431);
    let big = format!("GET /ping HTTP/1.1\r\nX-Big: {}\r\n\r\n", "b".repeat(3000));
    assert_eq!(send(big.into_bytes()).status, 431);
    let body = send(b"POST /write?db=x HTTP/1.1\r\nContent-Length: 9999\r\n\r\n".to_vec());
    assert_eq!(body.status, 413);
    assert!(body.text().contains("exceeded"), "{}", body.text());
    let mut chunked = b"POST /write?db=x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        chunked.extend_from_slice(format!("800\r\n{}\r\n", "x".repeat(0x800)).as_bytes());
    }
    assert_eq!(send(chunked).status, 413, "chunked body over the limit");
    let malformed = send(b"GET /ping HTTP/1.1\r\nBad Header: x\r\n\r\n".to_vec());
    assert_eq!(malformed.status, 400);
    assert_eq!(malformed.header("content-type"), Some("application/json"));
    assert_eq!(send(b"GET /ping HTTP/2.0\r\n\r\n".to_vec()).status, 505);
    assert_eq!(
        send(b"POST /write?db=x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".to_vec())
            .status,
        501
    );
}

/// Goal: a client that stops sending mid-head or mid-body is disconnected
/// by its timeout, and an idle keep-alive connection by the idle timeout.
/// Method: short timeouts in config; send a partial request; the server
/// must close the socket (EOF) well before our own 30 s read timeout.
#[test]
fn stalled_clients_are_disconnected() {
    let dir = TempDir::new("timeouts");
    let config = config_file(
        &dir,
        "[http]\nhead_timeout_ms = 300\nbody_timeout_ms = 300\nidle_timeout_ms = 500\n",
    );
    let server = Server::start(&["--config", &config]);
    let started = std::time::Instant::now();
    let mut mid_head = server.connect();
    mid_head
        .write_all(b"GET /ping HTTP/1.1\r\nHost: t\r\n")
        .unwrap();
    assert!(closed_by_server(&mut mid_head), "mid-head");
    let mut mid_body = server.connect();
    mid_body
        .write_all(b"POST /write?db=x HTTP/1.1\r\nContent-Length: 100\r\n\r\ncpu v=1")
        .unwrap();
    assert!(closed_by_server(&mut mid_body), "mid-body");
    let mut idle = server.connect();
    idle.write_all(b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut pending = Vec::new();
    assert_eq!(read_response(&mut idle, &mut pending).unwrap().status, 204);
    assert!(closed_by_server(&mut idle), "idle keep-alive");
    assert!(started.elapsed() < Duration::from_secs(20));
}

/// Goal: with `--shards 2`, connections land on both shards (SO_REUSEPORT
/// spreads them). Method: 64 connections, then per-shard request counts
/// from /metrics.
#[test]
fn connections_land_on_both_shards() {
    let server = Server::start(&["--shards", "2"]);
    for _ in 0..64 {
        assert_eq!(server.request("GET", "/ping", &[], b"").status, 204);
    }
    let metrics = server.request("GET", "/metrics", &[], b"").text();
    for shard in ["0", "1"] {
        let needle = format!("ringest_http_requests_total{{shard=\"{shard}\",endpoint=\"ping\"");
        assert!(
            metrics.contains(&needle),
            "no ping on shard {shard}:\n{metrics}"
        );
    }
}

/// Goal: the per-shard connection limit answers 503 and closes.
/// Method: one shard allowing one connection; hold it, open a second.
#[test]
fn connection_limit_is_503() {
    let dir = TempDir::new("connlimit");
    let config = config_file(&dir, "[http]\nconnections_per_shard_max = 1\n");
    let server = Server::start(&["--shards", "1", "--config", &config]);
    let mut first = server.connect();
    first
        .write_all(b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut pending = Vec::new();
    assert_eq!(read_response(&mut first, &mut pending).unwrap().status, 204);
    let mut second = server.connect();
    let mut pending = Vec::new();
    let refused = read_response(&mut second, &mut pending).expect("503");
    assert_eq!(refused.status, 503);
    assert!(refused.header("retry-after").is_some());
}

/// Goal: SIGTERM shuts down cleanly with exit status 0.
/// Method: start, serve one request, SIGTERM, wait.
#[test]
fn sigterm_exits_zero() {
    let mut server = Server::start(&[]);
    assert_eq!(server.request("GET", "/ping", &[], b"").status, 204);
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
}

/// Goal: `check-config` prints the effective config, and refuses an
/// unknown key naming it with a non-zero exit. Method: run the binary.
#[test]
fn check_config_reports() {
    let ok = std::process::Command::new(common::binary())
        .args(["check-config", "--profile", "small-vm"])
        .output()
        .unwrap();
    assert!(ok.status.success());
    assert!(String::from_utf8_lossy(&ok.stdout).contains("memory_bytes_max = 536870912"));
    let dir = TempDir::new("badconfig");
    let config = config_file(&dir, "[wal]\nsegmant_bytes = 1\n");
    let bad = std::process::Command::new(common::binary())
        .args(["check-config", "--config", &config])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("segmant_bytes"));
}

/// Goal: a v2 write refused as too large answers 413 with the body the v2
/// write contract lists: code `"invalid"` (was `"request too large"`),
/// plus `maxLength` and the message. Method: a Content-Length over
/// `http.body_bytes_max` on `/api/v2/write`; compare the whole body.
#[test]
fn v2_body_too_large_has_code_invalid() {
    let dir = TempDir::new("413-v2");
    let config = config_file(&dir, "[http]\nbody_bytes_max = 4096\n");
    let server = Server::start(&["--config", &config]);
    let mut stream = server.connect();
    stream
        .write_all(b"POST /api/v2/write?bucket=x HTTP/1.1\r\nContent-Length: 9999\r\n\r\n")
        .unwrap();
    let mut pending = Vec::new();
    let response = read_response(&mut stream, &mut pending).expect("a response");
    assert_eq!(response.status, 413);
    assert_eq!(
        response.text(),
        "{\"code\":\"invalid\",\"maxLength\":4096,\"message\":\"max request size (4096 bytes) exceeded\"}\n"
    );
}
