//! Memory under overload (issue 17 item 7): a storm of large concurrent
//! writes must not grow the server's memory beyond its configured
//! in-flight budget. It grew RSS by 5.4 GB on the default profile.

// Tests are not shard code: std::fs is fine here.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use common::{Response, Server};

const CONNECTIONS: usize = 64;
const ROUNDS: usize = 3;
const BODY_BYTES: usize = 20 * 1000 * 1000;
const GROWTH_MAX_BYTES: u64 = 1 << 30;

/// `VmRSS` or `VmHWM` of `pid`, in bytes.
fn proc_status_bytes(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let line = text
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("{key} in /proc/{pid}/status"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("a number of kB");
    kib * 1024
}

/// A 20 MB body of real points: 200 lines, each with a 100 kB string
/// field (cheap to parse even in a debug build, yet every byte is copied
/// into sub-batches, the WAL and the store like any write).
fn body() -> Vec<u8> {
    let value = "x".repeat(100_000);
    let mut body = Vec::with_capacity(BODY_BYTES + 1024);
    let mut n = 0u64;
    while body.len() < BODY_BYTES - 200_000 {
        body.extend_from_slice(
            format!(
                "storm,host=h{} s=\"{value}\" {}\n",
                n % 16,
                1_700_000_000_000_000_000 + n
            )
            .as_bytes(),
        );
        n += 1;
    }
    body
}

/// Sends one request on `stream`; the status, or `None` if the server
/// closed the connection (a refusal closes it).
fn send(stream: &mut TcpStream, body: &[u8]) -> Option<u16> {
    let head = format!(
        "POST /write?db=storm HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    // A refused request is answered and closed before its body is read.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(response) = Response::parse(&raw) {
            return Some(response.status);
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Goal: 64 concurrent 20 MB writes, three rounds, grow the server's peak
/// memory by less than 1 GiB on the default profile (bodies are counted in
/// the in-flight budget and their memory goes back after the request).
/// Method: the real binary on 127.0.0.1; the peak (`VmHWM`) after the
/// storm minus `VmRSS` before it, from /proc. Every request ends in 204 or
/// a refusal (503); at least one round-trip succeeded per connection.
#[test]
fn storm_of_large_bodies_stays_within_budget() {
    let server = Server::start(&[]);
    let pid = server.pid();
    let before = proc_status_bytes(pid, "VmRSS");
    let body = Arc::new(body());
    let addr = server.addr;
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let body = body.clone();
            std::thread::spawn(move || {
                let mut statuses = Vec::new();
                let connect = || {
                    let stream = TcpStream::connect(addr).expect("connect");
                    stream
                        .set_read_timeout(Some(Duration::from_secs(60)))
                        .expect("timeout");
                    stream
                };
                let mut stream = connect();
                for _ in 0..ROUNDS {
                    match send(&mut stream, &body) {
                        Some(status) => {
                            statuses.push(status);
                            if status != 204 {
                                stream = connect();
                            }
                        }
                        None => stream = connect(),
                    }
                }
                statuses
            })
        })
        .collect();
    let statuses: Vec<u16> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("worker"))
        .collect();
    let peak = proc_status_bytes(pid, "VmHWM");
    let after = proc_status_bytes(pid, "VmRSS");
    let growth = peak.saturating_sub(before);
    eprintln!(
        "storm: RSS before {} MiB, peak {} MiB, after {} MiB; growth {} MiB; statuses {:?}",
        before >> 20,
        peak >> 20,
        after >> 20,
        growth >> 20,
        {
            let mut counts = std::collections::BTreeMap::new();
            for s in &statuses {
                *counts.entry(*s).or_insert(0) += 1;
            }
            counts
        }
    );
    assert!(
        statuses.iter().all(|s| *s == 204 || *s == 503),
        "{statuses:?}"
    );
    assert!(statuses.contains(&204), "{statuses:?}");
    assert!(
        growth < GROWTH_MAX_BYTES,
        "peak RSS grew by {} MiB (limit {} MiB)",
        growth >> 20,
        GROWTH_MAX_BYTES >> 20
    );
}
