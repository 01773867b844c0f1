//! `/metrics` parses as Prometheus text and moves with known writes; a
//! point is queryable the moment its 204 arrives.

mod common;

use std::collections::HashMap;

use common::{encode, Server};

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
