//! Request-head parse microbenchmark: ringest's `parse_head` against
//! `httparse` on the same realistic inputs, in the same run.
//!
//! Inputs are the heads real clients send to `/write` (from
//! `/work/shared/reference/clients-and-ecosystem.md`): Telegraf's v1 output,
//! the Python `influxdb-client`, and curl with a large body.
//!
//! `cargo bench --bench http_parse` (argv holds `--bench`) runs the full
//! measurement and prints, per input and parser, ns per request (minimum,
//! median and p99 of 300 batch means of 10,000 parses, the parsers taking
//! turns batch by batch) and MB/s at the median, plus CSV lines for
//! `bench/results/`.
//! Without `--bench` (as run by `cargo test --all-targets`) it runs a few
//! iterations and asserts both parsers agree on every input, so the
//! benchmark cannot rot.

// Timing is this file's purpose; the clock seam is for the server.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::hint::black_box;
use std::time::Instant;

use ringest::http::request::{framing, parse_head, HeadLimits, Header, Status};

const TELEGRAF: &[u8] = b"POST /write?db=telegraf HTTP/1.1\r\n\
Host: 127.0.0.1:8086\r\n\
User-Agent: Telegraf/1.30.1 Go/1.22.1\r\n\
Transfer-Encoding: chunked\r\n\
Authorization: Basic dGVsZWdyYWY6bWV0cmljcw==\r\n\
Content-Encoding: gzip\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Accept-Encoding: gzip\r\n\
\r\n";

const PYTHON: &[u8] = b"POST /api/v2/write?org=my-org&bucket=b2&precision=ns HTTP/1.1\r\n\
Host: localhost:8086\r\n\
Accept-Encoding: identity\r\n\
Content-Length: 18389\r\n\
Content-Type: text/plain\r\n\
Accept: application/json\r\n\
Authorization: Token xJ3mY8a0sQ2fP5kLzR7vBn1cWd4Ge6Hu9iOtA-_K0mNpQrStUvWxYz==\r\n\
User-Agent: influxdb-client-python/1.50.0\r\n\
\r\n";

const CURL: &[u8] = b"POST /write?db=mydb&precision=s HTTP/1.1\r\n\
Host: localhost:8086\r\n\
User-Agent: curl/7.88.1\r\n\
Accept: */*\r\n\
Content-Length: 2000000\r\n\
Content-Type: application/x-www-form-urlencoded\r\n\
Expect: 100-continue\r\n\
\r\n";

const INPUTS: [(&str, &[u8]); 3] = [("telegraf", TELEGRAF), ("python", PYTHON), ("curl", CURL)];

const LIMITS: HeadLimits = HeadLimits {
    request_line_bytes_max: 8 * 1024,
    head_bytes_max: 64 * 1024,
    header_count_max: 64,
};

const HEADER_SLOTS: usize = 64;

/// Ours: head only; returns head length and header count.
fn ours(input: &[u8]) -> (usize, usize) {
    let mut headers = [Header::default(); HEADER_SLOTS];
    match parse_head(input, &mut headers, &LIMITS) {
        Ok(Status::Complete(head)) => (head.head_len, head.header_count),
        other => panic!("ours did not complete: {other:?}"),
    }
}

/// Ours plus the framing interpretation the connection does next.
fn ours_with_framing(input: &[u8]) -> (usize, usize) {
    let mut headers = [Header::default(); HEADER_SLOTS];
    match parse_head(input, &mut headers, &LIMITS) {
        Ok(Status::Complete(head)) => match framing(&head, &headers) {
            Ok(meta) => (
                head.head_len,
                head.header_count + usize::from(meta.keep_alive),
            ),
            Err(e) => panic!("framing refused: {e:?}"),
        },
        other => panic!("ours did not complete: {other:?}"),
    }
}

fn theirs(input: &[u8]) -> (usize, usize) {
    let mut headers = [httparse::EMPTY_HEADER; HEADER_SLOTS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(input) {
        Ok(httparse::Status::Complete(len)) => (len, request.headers.len()),
        other => panic!("httparse did not complete: {other:?}"),
    }
}

/// Both parsers agree on method, target, version and headers.
fn assert_agree(name: &str, input: &[u8]) {
    let mut ours_headers = [Header::default(); HEADER_SLOTS];
    let head = match parse_head(input, &mut ours_headers, &LIMITS) {
        Ok(Status::Complete(head)) => head,
        other => panic!("{name}: ours did not complete: {other:?}"),
    };
    let mut their_headers = [httparse::EMPTY_HEADER; HEADER_SLOTS];
    let mut request = httparse::Request::new(&mut their_headers);
    let len = match request.parse(input) {
        Ok(httparse::Status::Complete(len)) => len,
        other => panic!("{name}: httparse did not complete: {other:?}"),
    };
    assert_eq!(head.head_len, len, "{name}: head length");
    assert_eq!(Some(head.method_token), request.method, "{name}: method");
    assert_eq!(Some(head.target), request.path, "{name}: target");
    assert_eq!(Some(1), request.version, "{name}: version");
    let ours_pairs: Vec<(&str, &[u8])> = ours_headers[..head.header_count]
        .iter()
        .map(|h| (h.name, h.value))
        .collect();
    let their_pairs: Vec<(&str, &[u8])> =
        request.headers.iter().map(|h| (h.name, h.value)).collect();
    assert_eq!(ours_pairs, their_pairs, "{name}: headers");
    assert_eq!(ours(input), theirs(input), "{name}: summaries");
    assert_eq!(ours_with_framing(input).0, len, "{name}: with framing");
}

type Parse = fn(&[u8]) -> (usize, usize);

/// Per-request nanoseconds of each batch, per parser, sorted. The parsers
/// take turns batch by batch, so load from other processes on the machine
/// falls on all of them alike.
fn measure(parsers: &[Parse], input: &[u8], batches: usize, per_batch: usize) -> Vec<Vec<f64>> {
    // Warm-up: caches, branch predictors, CPU frequency.
    for parse in parsers {
        for _ in 0..per_batch {
            black_box(parse(black_box(input)));
        }
    }
    let mut samples = vec![Vec::with_capacity(batches); parsers.len()];
    for _ in 0..batches {
        for (parse, samples) in parsers.iter().zip(&mut samples) {
            let start = Instant::now();
            for _ in 0..per_batch {
                black_box(parse(black_box(input)));
            }
            samples.push(start.elapsed().as_nanos() as f64 / per_batch as f64);
        }
    }
    for parser_samples in &mut samples {
        parser_samples.sort_by(f64::total_cmp);
    }
    samples
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index]
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    for (name, input) in INPUTS {
        assert_agree(name, input);
    }
    if !full {
        // Test mode: a few iterations through the measuring code as well.
        for (_, input) in INPUTS {
            let samples = measure(&[ours, theirs], input, 3, 10);
            assert!(samples.iter().all(|s| s.len() == 3));
        }
        println!(
            "http_parse: parsers agree on {} inputs (test mode)",
            INPUTS.len()
        );
        return;
    }

    let names = ["ringest", "ringest+framing", "httparse"];
    let parsers: [Parse; 3] = [ours, ours_with_framing, theirs];
    let (batches, per_batch) = (300, 10_000);
    println!("input     bytes  parser           ns/req min  ns/req p50  ns/req p99  MB/s (p50)");
    let mut csv = Vec::new();
    for (name, input) in INPUTS {
        let samples = measure(&parsers, input, batches, per_batch);
        for (parser_name, samples) in names.iter().zip(&samples) {
            let min = samples[0];
            let p50 = percentile(samples, 0.5);
            let p99 = percentile(samples, 0.99);
            let mb_per_s = input.len() as f64 / p50 * 1e9 / 1e6;
            println!(
                "{name:<9} {:>5}  {parser_name:<16} {min:>10.1} {p50:>11.1} {p99:>11.1} {mb_per_s:>11.0}",
                input.len()
            );
            csv.push(format!(
                "{name},{},{parser_name},{min:.1},{p50:.1},{p99:.1},{mb_per_s:.0}",
                input.len()
            ));
        }
    }
    println!("\ncsv: input,bytes,parser,ns_per_req_min,ns_per_req_p50,ns_per_req_p99,mb_per_s_p50");
    for line in csv {
        println!("{line}");
    }
}
