//! `/metrics` parses as Prometheus text and moves with known writes
//! (rejected lines by reason, refusals by cause); a point is queryable the
//! moment its 204 arrives.

// Tests are not shard code: std::fs and std::time are fine here (clippy.toml
// bans them on the server's executors).
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;

use common::{config_file, encode, Response, Server, TempDir};

/// Parses Prometheus text exposition (0.0.4): `# HELP`/`# TYPE` lines and
/// `name{labels} value` samples. Panics, naming the line, on anything else.
fn parse_exposition(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    let mut typed = std::collections::HashSet::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let name = parts.next().expect("metric name");
            let kind = parts.next().expect("metric type");
            assert!(
                ["counter", "gauge", "summary", "histogram", "untyped"].contains(&kind),
                "bad type line: {line}"
            );
            assert!(
                typed.insert(name.to_string()),
                "type declared twice: {line}"
            );
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment line: {line}");
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(
                    labels.starts_with('{') && labels.ends_with('}'),
                    "bad labels: {line}"
                );
                for pair in labels[1..labels.len() - 1].split(',') {
                    let (key, value) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad label: {line}"));
                    assert!(
                        !key.is_empty() && value.starts_with('"') && value.ends_with('"'),
                        "{line}"
                    );
                }
            }
        }
        let base = name
            .trim_end_matches("_sum")
            .trim_end_matches("_count")
            .to_string();
        assert!(
            typed.contains(name) || typed.contains(&base),
            "sample without a TYPE line: {line}"
        );
        samples.insert(series.to_string(), value);
    }
    samples
}

fn sum(samples: &HashMap<String, f64>, name: &str) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| series.split('{').next() == Some(name))
        .map(|(_, v)| v)
        .sum()
}

/// Sum of `name`'s samples whose labels include `label="value"`.
fn labelled(samples: &HashMap<String, f64>, name: &str, label: &str, value: &str) -> f64 {
    let pair = format!("{label}=\"{value}\"");
    samples
        .iter()
        .filter(|(series, _)| {
            series.split('{').next() == Some(name)
                && series.split_once('{').is_some_and(|(_, labels)| {
                    labels.trim_end_matches('}').split(',').any(|p| p == pair)
                })
        })
        .map(|(_, v)| v)
        .sum()
}

/// The distinct values of `label` on `name`'s samples, sorted.
fn label_values(samples: &HashMap<String, f64>, name: &str, label: &str) -> Vec<String> {
    let prefix = format!("{label}=\"");
    let mut values: Vec<String> = samples
        .keys()
        .filter(|series| series.split('{').next() == Some(name))
        .filter_map(|series| {
            let (_, labels) = series.split_once('{')?;
            let pair = labels
                .trim_end_matches('}')
                .split(',')
                .find(|p| p.starts_with(&prefix))?;
            Some(pair[prefix.len()..pair.len() - 1].to_string())
        })
        .collect();
    values.sort();
    values.dedup();
    values
}

/// One scrape on a new connection, parsed.
fn scrape(server: &Server) -> HashMap<String, f64> {
    let response = server.request("GET", "/metrics", &[], b"");
    assert_eq!(response.status, 200, "{}", response.text());
    parse_exposition(&response.text())
}

/// One scrape on an open keep-alive connection, parsed.
fn scrape_on(stream: &mut TcpStream) -> HashMap<String, f64> {
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("send scrape");
    let mut raw = Vec::new();
    let response = loop {
        if let Some(response) = Response::parse(&raw) {
            break response;
        }
        let mut chunk = [0u8; 16384];
        let n = stream.read(&mut chunk).expect("read scrape");
        assert!(n > 0, "server closed the scraping connection");
        raw.extend_from_slice(&chunk[..n]);
    };
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("connection"), None, "kept alive");
    parse_exposition(&response.text())
}

/// Every `cause` label of `ringest_refusals_total`, sorted.
const CAUSES: [&str; 11] = [
    "connections",
    "cross_shard_queue",
    "no_space",
    "queued_sub_batches",
    "request_bytes_in_flight",
    "shutting_down",
    "store_memory",
    "unhealthy",
    "wal_budget",
    "wal_pending_bytes",
    "wal_segment",
];

/// Asserts that, between two scrapes, `ringest_refusals_total` moved by
/// exactly `count` under `cause` (when given) and by nothing under any
/// other cause.
fn assert_refusals_moved(
    before: &HashMap<String, f64>,
    after: &HashMap<String, f64>,
    cause: Option<&str>,
    count: f64,
) {
    let name = "ringest_refusals_total";
    assert_eq!(label_values(after, name, "cause"), CAUSES, "the fixed set");
    for other in CAUSES {
        let moved = labelled(after, name, "cause", other) - labelled(before, name, "cause", other);
        let expected = if Some(other) == cause { count } else { 0.0 };
        assert_eq!(moved, expected, "cause {other}");
    }
}

/// Goal: `/metrics` is valid Prometheus exposition, and its counters move
/// by exactly the known writes (points, rejected lines, requests, syncs).
/// Method: scrape, write 5 good lines and 1 bad one, scrape again.
#[test]
fn metrics_parse_and_move_with_writes() {
    let server = Server::start(&["--shards", "2"]);
    let before = parse_exposition(&server.request("GET", "/metrics", &[], b"").text());
    let response = server.write_v1(
        "db=m",
        "a v=1 1\na v=2 2\nb,h=x v=3 3\nbad\nc v=4 4\nd v=5 5",
    );
    assert_eq!(
        response.status, 400,
        "one bad line makes it a partial write"
    );
    let after_response = server.request("GET", "/metrics", &[], b"");
    assert_eq!(
        after_response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let after = parse_exposition(&after_response.text());
    let delta = |name: &str| sum(&after, name) - sum(&before, name);
    assert_eq!(delta("ringest_points_accepted_total"), 5.0);
    assert_eq!(delta("ringest_lines_rejected_total"), 1.0);
    assert!(delta("ringest_wal_syncs_total") >= 1.0);
    assert!(delta("ringest_wal_bytes_total") > 0.0);
    let requests_400: f64 = after
        .iter()
        .filter(|(s, _)| {
            s.starts_with("ringest_http_requests_total")
                && s.contains("endpoint=\"write_v1\",code=\"400\"")
        })
        .map(|(_, v)| v)
        .sum();
    assert_eq!(requests_400, 1.0);
    assert_eq!(sum(&after, "ringest_shard_healthy"), 2.0);
}

/// Goal: a point is visible to `/query` the instant its 204 is sent —
/// under concurrency, with no delay between the two. Method: 4 threads ×
/// 50 rounds of write-then-query on fresh connections, each checking its
/// own point is there.
#[test]
fn visible_at_204_under_concurrency() {
    let server = Server::start(&["--shards", "2"]);
    std::thread::scope(|scope| {
        for writer in 0..4 {
            let server = &server;
            scope.spawn(move || {
                for round in 1..=50 {
                    let line = format!("vis,w=w{writer} v={round}i {round}");
                    let response = server.write_v1("db=vis", &line);
                    assert_eq!(response.status, 204, "{}", response.text());
                    let q = format!("SELECT last(v) FROM vis WHERE w = 'w{writer}'");
                    let answer = server.query(&format!("db=vis&epoch=ns&q={}", encode(&q)));
                    let text = answer.text();
                    assert!(
                        text.contains(&format!("[{round},{round}]")),
                        "writer {writer} round {round}: not visible right after its 204: {text}"
                    );
                }
            });
        }
    });
}

/// Goal: every rejected line is counted under its reason — `parse`,
/// `schema_conflict`, `limit` — by the exact count, and the reasons add up
/// to all rejected lines. Method: two shards allowing 3 columns per table
/// (time + 2); one good write creates `m,h=… v=…`; then requests with 4
/// parse errors, 3 schema conflicts (field type across requests, a tag
/// written as a field, field type within one request) and 2 catalog-limit
/// rejections (new columns on the full table `m`), each beside good lines.
/// The counts differ per reason, so a swapped label fails; scrape before
/// and after. (Good lines in a request never reuse a column an earlier
/// line of it proposed with a conflicting kind: that line's fate depends on
/// whether the accepting shard's catalog replica knows the column yet.)
#[test]
fn rejected_lines_by_reason() {
    let dir = TempDir::new("reasons");
    let config = config_file(&dir, "[schema]\ncolumns_per_table_max = 3\n");
    let server = Server::start(&["--shards", "2", "--config", &config]);
    assert_eq!(server.write_v1("db=r", "m,h=a v=1 1").status, 204);
    let before = scrape(&server);
    let requests = [
        "bad\nm,h=a v= 2\nm,time=x v=3 3\nm,h=a,h=b v=4 4\nm,h=a v=5 5",
        "m,h=a v=\"text\" 6\nm h=7 7\nn w=1i 8\nn w=2 9\no v=10 10",
        "m,h=a w=11 11\nm,h=a x=12 12\nm,h=a v=13 13",
    ];
    for body in requests {
        let response = server.write_v1("db=r", body);
        assert_eq!(response.status, 400, "{body}: {}", response.text());
        assert!(
            response.text().contains("partial write has occurred"),
            "{body}: {}",
            response.text()
        );
    }
    let after = scrape(&server);
    let name = "ringest_lines_rejected_total";
    assert_eq!(
        label_values(&after, name, "reason"),
        ["limit", "parse", "retention", "schema_conflict"],
        "the fixed set"
    );
    let moved = |reason: &str| {
        labelled(&after, name, "reason", reason) - labelled(&before, name, "reason", reason)
    };
    assert_eq!(moved("parse"), 4.0);
    assert_eq!(moved("schema_conflict"), 3.0);
    assert_eq!(moved("limit"), 2.0);
    assert_eq!(sum(&after, name) - sum(&before, name), 9.0, "the total");
    assert_eq!(
        sum(&after, "ringest_points_accepted_total")
            - sum(&before, "ringest_points_accepted_total"),
        4.0,
        "the good lines were written"
    );
    assert_refusals_moved(&before, &after, None, 0.0);
}

/// Goal: every write refused for lack of in-flight request memory is
/// counted once, under `request_bytes_in_flight`, whether answered 503
/// (`/write`) or 429 (`/api/v2/write`), and no other cause moves. Method:
/// one shard; a request holds the whole in-flight budget (its `100
/// Continue` proves it was admitted); three writes are refused; scrape
/// before and after, while the holder still holds the budget.
#[test]
fn refusals_for_in_flight_bytes_by_cause() {
    let (server, _dir, holder) = common::server_with_budget_held();
    let before = scrape(&server);
    let refused = [
        server.write_v1("db=x", "m v=1"),
        server.write_v2("bucket=x", "m v=1"),
        server.write_v1("db=x", "m v=2"),
    ];
    let statuses: Vec<u16> = refused.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 429, 503]);
    let after = scrape(&server);
    assert_refusals_moved(&before, &after, Some("request_bytes_in_flight"), 3.0);
    let answered = |code: &str| {
        labelled(&after, "ringest_http_requests_total", "code", code)
            - labelled(&before, "ringest_http_requests_total", "code", code)
    };
    assert_eq!(
        answered("503") + answered("429"),
        3.0,
        "one count per answer"
    );
    drop(holder);
}

/// Goal: every connection refused at the per-shard connection limit is
/// counted once, under `connections`, and no other cause moves. Method:
/// one shard allowing one connection; that connection is the scraper
/// (kept alive between its two scrapes, so it holds the only slot); two
/// connections opened in between are each answered 503 and closed.
#[test]
fn refusals_for_connection_limit_by_cause() {
    let dir = TempDir::new("connrefusals");
    let config = config_file(&dir, "[http]\nconnections_per_shard_max = 1\n");
    let server = Server::start(&["--shards", "1", "--config", &config]);
    let mut scraper = server.connect();
    let before = scrape_on(&mut scraper);
    for attempt in 0..2 {
        let mut refused = server.connect();
        let mut raw = Vec::new();
        refused.read_to_end(&mut raw).expect("read the refusal");
        let response = Response::parse(&raw).expect("one response");
        assert_eq!(
            response.status,
            503,
            "attempt {attempt}: {}",
            response.text()
        );
    }
    let after = scrape_on(&mut scraper);
    assert_refusals_moved(&before, &after, Some("connections"), 2.0);
}

/// Goal: README's `/metrics` list is exactly what the server exports: the
/// same metric families, each under its kind (counters, gauges,
/// summaries), and every `reason` and `cause` label value. Method: scrape
/// a fresh server, collect its `# TYPE` lines and label values; collect the
/// `ringest_…` names of README's `/metrics` sub-lists by kind; compare.
#[test]
fn readme_lists_exactly_the_exported_metrics() {
    let server = Server::start(&["--shards", "1"]);
    let response = server.request("GET", "/metrics", &[], b"");
    let text = response.text();
    let mut exported = std::collections::BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("name and kind");
            exported.insert(name.to_string(), kind.to_string());
        }
    }
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let start = readme
        .find("- `/metrics`")
        .expect("README has a /metrics item");
    let end = start
        + readme[start..]
            .find("Scrape config")
            .expect("scrape config");
    let section = &readme[start..end];
    let mut listed = std::collections::BTreeMap::new();
    let mut kind = None;
    for line in section.lines() {
        let trimmed = line.trim_start();
        for (heading, name) in [
            ("- counters:", "counter"),
            ("- gauges:", "gauge"),
            ("- summaries:", "summary"),
        ] {
            if trimmed.starts_with(heading) {
                kind = Some(name);
            }
        }
        let mut rest = line;
        while let Some(at) = rest.find("ringest_") {
            let token: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + token.len()..];
            // Names before the first sub-list are the item's introduction.
            let Some(kind) = kind else { continue };
            if let Some(previous) = listed.insert(token.clone(), kind.to_string()) {
                assert_eq!(previous, kind, "{token} listed under two kinds");
            }
        }
    }
    assert_eq!(listed, exported, "README (left) vs /metrics (right)");
    let samples = parse_exposition(&text);
    for (name, label) in [
        ("ringest_lines_rejected_total", "reason"),
        ("ringest_refusals_total", "cause"),
    ] {
        for value in label_values(&samples, name, label) {
            assert!(
                section.contains(&format!("`{value}`")),
                "README does not list {label} `{value}` of {name}"
            );
        }
    }
}

/// Goal: group commit seen from the metrics alone: with 64 concurrent
/// writers the WAL syncs far fewer times than it acknowledges writes, and
/// every write is acknowledged. Method: one shard; 64 keep-alive
/// connections, released together by a barrier, each send 20 one-line
/// writes back to back; scrape before and after; syncs × 4 ≤ 204 answers.
#[test]
fn sixty_four_writers_share_syncs() {
    const WRITERS: usize = 64;
    const WRITES: usize = 20;
    let server = Server::start(&["--shards", "1"]);
    assert_eq!(server.write_v1("db=gc", "m v=0 0").status, 204);
    let before = parse_exposition(&server.request("GET", "/metrics", &[], b"").text());
    let start = std::sync::Arc::new(std::sync::Barrier::new(WRITERS));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (addr, start) = (server.addr, start.clone());
            std::thread::spawn(move || {
                let mut client = common::Client::connect(addr);
                start.wait();
                (0..WRITES)
                    .filter(|i| {
                        let line = format!("m,w=w{w} v={i} {}", i + 1);
                        let answer = client.send("POST", "/write?db=gc", line.as_bytes());
                        answer.map(|r| r.status) == Some(204)
                    })
                    .count()
            })
        })
        .collect();
    let acknowledged: usize = writers.into_iter().map(|t| t.join().expect("writer")).sum();
    assert_eq!(acknowledged, WRITERS * WRITES, "every write gets its 204");
    let after = parse_exposition(&server.request("GET", "/metrics", &[], b"").text());
    let syncs = sum(&after, "ringest_wal_syncs_total") - sum(&before, "ringest_wal_syncs_total");
    assert!(
        syncs >= 1.0 && syncs * 4.0 <= acknowledged as f64,
        "{syncs} syncs for {acknowledged} acknowledged writes"
    );
}

/// Goal: `ringest_http_requests_total` counts each answered status under
/// its own code: a query's 200 is not reported as 204 (it was, before),
/// and a write's 204 stays 204. Method: one shard; one write, two queries;
/// deltas of the (endpoint, code) series between two scrapes.
#[test]
fn requests_are_counted_under_their_own_status() {
    let server = Server::start(&["--shards", "1"]);
    let before = scrape(&server);
    assert_eq!(server.write_v1("db=codes", "m v=1 1").status, 204);
    for _ in 0..2 {
        let response = server.query("db=codes&q=SELECT+v+FROM+m");
        assert_eq!(response.status, 200, "{}", response.text());
    }
    let after = scrape(&server);
    let delta = |endpoint: &str, code: &str| {
        let key = format!(
            "ringest_http_requests_total{{shard=\"0\",endpoint=\"{endpoint}\",code=\"{code}\"}}"
        );
        after.get(&key).copied().unwrap_or(0.0) - before.get(&key).copied().unwrap_or(0.0)
    };
    assert_eq!(delta("write_v1", "204"), 1.0);
    assert_eq!(delta("query", "200"), 2.0);
    assert_eq!(delta("query", "204"), 0.0);
}
