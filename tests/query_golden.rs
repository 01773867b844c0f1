//! Golden InfluxQL answers: ringest's `/query` must answer exactly like a real
//! InfluxDB 1.6.7 (issue 6).
//!
//! The fixtures live in `tests/fixtures/influxql/`: `data.lp` and `other.lp`
//! (the dataset, fixed timestamps from 2026-01-01T00:00:00Z), and
//! `golden.json`, the captured answers: a list of cases
//! `{name, method, params, form, status, body}` in capture order. Only
//! `capture.py` in that directory writes them, from a real server.
//!
//! Comparison: both bodies are parsed as JSON (a `chunked=true` answer as its
//! sequence of newline-separated documents) and compared as values, so key
//! order and whitespace do not matter. Numbers are compared exactly: two
//! integer literals must be the same integer (no float rounding of i64), a
//! number with a fraction or exponent must be the same `f64`, and an integer
//! literal beyond 2^53 never equals a non-integer literal (`2` and `2.0` are
//! equal; `9007199254740993` and `9007199254740992.0` are not).
//!
//! Environment:
//! - `RINGEST_GOLDEN_CASES=<regex>`: replay only the cases whose name
//!   matches (state-changing CREATE/DROP cases still run, unchecked, so that
//!   later SHOW DATABASES cases see the same databases).
//! - `RINGEST_GOLDEN_SKIP=<regex>`: leave out the cases whose name matches
//!   (same rule for CREATE/DROP).
//! - `RINGEST_GOLDEN_ADDR=<host:port>`: replay against that server instead
//!   of a fresh ringest (e.g. an empty InfluxDB 1.6.7, to check this harness
//!   itself; the databases are then created with CREATE DATABASE first).

// Tests are not shard code: std::fs and std::time are fine here (clippy.toml
// bans them on the server's executors).
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use common::Response;

/// At least this many cases must be in the fixture (issue 6 asks for 60).
const CASES_MIN: usize = 70;
/// Longest body shown in a failure message, in characters.
const SHOWN_BODY_CHARS_MAX: usize = 1500;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/influxql")
}

// ------------------------------------------------------------------ fixture

/// One database to fill before the cases run.
struct Setup {
    db: String,
    file: String,
    precision: String,
}

/// One captured query and InfluxDB's answer.
struct Case {
    name: String,
    method: String,
    /// URL query parameters, in order (`q` among them unless `form` is set).
    params: Vec<(String, String)>,
    /// `application/x-www-form-urlencoded` body parameters (Grafana's POST mode).
    form: Option<Vec<(String, String)>>,
    status: u16,
    body: String,
}

impl Case {
    /// The InfluxQL text, wherever it travels.
    fn q(&self) -> &str {
        self.params
            .iter()
            .chain(self.form.iter().flatten())
            .find(|(key, _)| key == "q")
            .map(|(_, value)| value.as_str())
            .unwrap_or("")
    }

    /// CREATE and DROP change what later cases see.
    fn changes_state(&self) -> bool {
        let q = self.q().trim_start().to_ascii_uppercase();
        q.starts_with("CREATE ") || q.starts_with("DROP ")
    }

    fn target(&self) -> String {
        format!("/query?{}", form_encode(&self.params))
    }
}

struct Fixture {
    setup: Vec<Setup>,
    cases: Vec<Case>,
}

fn load_fixture() -> Fixture {
    let path = fixture_dir().join("golden.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let document = json::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let string = |value: &json::Value, what: &str| -> String {
        match value {
            json::Value::String(s) => s.clone(),
            other => panic!("golden.json: {what} is not a string: {other:?}"),
        }
    };
    let pairs = |value: &json::Value, what: &str| -> Vec<(String, String)> {
        value
            .as_array()
            .unwrap_or_else(|| panic!("golden.json: {what} is not a list"))
            .iter()
            .map(|pair| match pair.as_array() {
                Some([key, value]) => (string(key, what), string(value, what)),
                _ => panic!("golden.json: {what} holds a non-pair {pair:?}"),
            })
            .collect()
    };
    let setup = document
        .get("setup")
        .and_then(json::Value::as_array)
        .expect("golden.json: setup list")
        .iter()
        .map(|step| Setup {
            db: string(step.get("db").expect("setup.db"), "setup.db"),
            file: string(step.get("file").expect("setup.file"), "setup.file"),
            precision: string(
                step.get("precision").expect("setup.precision"),
                "setup.precision",
            ),
        })
        .collect();
    let cases = document
        .get("cases")
        .and_then(json::Value::as_array)
        .expect("golden.json: cases list")
        .iter()
        .map(|case| {
            let name = string(case.get("name").expect("case.name"), "case.name");
            let field = |key: &str| {
                case.get(key)
                    .unwrap_or_else(|| panic!("case {name}: no {key}"))
            };
            let status = match field("status") {
                json::Value::Number(text) => text
                    .parse()
                    .unwrap_or_else(|_| panic!("case {name}: status {text}")),
                other => panic!("case {name}: status {other:?}"),
            };
            let form = match field("form") {
                json::Value::Null => None,
                value => Some(pairs(value, "form")),
            };
            Case {
                method: string(field("method"), "method"),
                params: pairs(field("params"), "params"),
                form,
                status,
                body: string(field("body"), "body"),
                name,
            }
        })
        .collect();
    Fixture { setup, cases }
}

/// Percent-encoding as Grafana and the Python clients send it: space as `+`.
fn form_encode(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(key, value)| {
            format!(
                "{}={}",
                common::encode(key).replace("%20", "+"),
                common::encode(value).replace("%20", "+")
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

// ------------------------------------------------------------------ target

/// Where the cases are replayed.
enum Target {
    Ringest(common::Server),
    /// A server started by someone else (`RINGEST_GOLDEN_ADDR`).
    External(SocketAddr),
}

impl Target {
    fn request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        match self {
            Target::Ringest(server) => server.request(method, target, headers, body),
            Target::External(addr) => {
                let mut stream =
                    TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
                stream
                    .set_read_timeout(Some(Duration::from_secs(60)))
                    .expect("set timeout");
                let mut head =
                    format!("{method} {target} HTTP/1.1\r\nHost: golden\r\nConnection: close\r\n");
                for (name, value) in headers {
                    let _ = write!(head, "{name}: {value}\r\n");
                }
                let _ = write!(head, "Content-Length: {}\r\n\r\n", body.len());
                stream.write_all(head.as_bytes()).expect("send head");
                stream.write_all(body).expect("send body");
                let mut raw = Vec::new();
                stream.read_to_end(&mut raw).expect("read response");
                Response::parse(&raw).expect("one complete response")
            }
        }
    }

    fn send(&self, case: &Case) -> Response {
        match &case.form {
            Some(form) => self.request(
                &case.method,
                &case.target(),
                &[("Content-Type", "application/x-www-form-urlencoded")],
                form_encode(form).as_bytes(),
            ),
            None => self.request(&case.method, &case.target(), &[], b""),
        }
    }
}

/// The regex in environment variable `name`, if set.
fn env_regex(name: &str) -> Option<regex::Regex> {
    let pattern = std::env::var(name).ok()?;
    Some(regex::Regex::new(&pattern).unwrap_or_else(|e| panic!("{name}: {e}")))
}

/// Where the dataset's rows are when the cases run (issue 14: the same
/// answers whether rows are in memory, in Parquet, or split across both).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RowsIn {
    /// Never persisted (persistence off).
    Memory,
    /// Every row persisted by the running server, none left in memory.
    Parquet,
    /// The first half of each file persisted, the second half in memory.
    Split,
    /// Persisted at SIGTERM, then a restart that replays nothing.
    ParquetAfterRestart,
}

/// Starts the target and writes the dataset into it, leaving the rows
/// where `rows_in` says.
fn prepare(fixture: &Fixture, rows_in: RowsIn) -> (Target, Option<common::TempDir>) {
    let mut config_dir = None;
    let mut target = match std::env::var("RINGEST_GOLDEN_ADDR") {
        Ok(addr) => Target::External(
            addr.parse()
                .unwrap_or_else(|e| panic!("RINGEST_GOLDEN_ADDR={addr}: {e}")),
        ),
        Err(_) => {
            let dir = common::TempDir::new("golden-config");
            // Parquet: snapshot often; Split and the restart case: only when
            // the test says (the interval never fires).
            let persist = match rows_in {
                RowsIn::Memory => "enabled = false",
                RowsIn::Parquet => "interval_ms = 20",
                RowsIn::Split | RowsIn::ParquetAfterRestart => "interval_ms = 3600000",
            };
            let config = common::config_file(&dir, &format!("[persist]\n{persist}\n"));
            config_dir = Some(dir);
            Target::Ringest(common::Server::start(&["--config", &config]))
        }
    };
    for step in &fixture.setup {
        if let Target::External(_) = target {
            // InfluxDB 1.x does not create a database on write; ringest does.
            let create = format!(
                "/query?q={}",
                common::encode(&format!("CREATE DATABASE \"{}\"", step.db))
            );
            let response = target.request("POST", &create, &[], b"");
            assert_eq!(
                response.status,
                200,
                "CREATE DATABASE {}: {}",
                step.db,
                response.text()
            );
        }
        let path = fixture_dir().join(&step.file);
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let write = format!(
            "/write?db={}&precision={}",
            common::encode(&step.db),
            step.precision
        );
        // Split: the first half of the lines is persisted before the rest
        // is written (a line never straddles: cut after a newline).
        let cut = match rows_in {
            RowsIn::Split => data[..data.len() / 2]
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |i| i + 1),
            _ => 0,
        };
        for part in [&data[..cut], &data[cut..]] {
            if part.is_empty() {
                continue;
            }
            let response = target.request("POST", &write, &[], part);
            assert_eq!(
                response.status,
                204,
                "writing {} into {}: {}",
                step.file,
                step.db,
                response.text()
            );
            if let (RowsIn::Split, Target::Ringest(server)) = (rows_in, &mut target) {
                if cut > 0 && part.len() == cut {
                    // SIGTERM persists everything; the restart replays nothing.
                    assert!(server.terminate().success(), "SIGTERM exits 0");
                    server.restart();
                }
            }
        }
    }
    let target = match (rows_in, target) {
        (RowsIn::Parquet, Target::Ringest(server)) => {
            server.wait_persisted(1);
            Target::Ringest(server)
        }
        (RowsIn::ParquetAfterRestart, Target::Ringest(mut server)) => {
            assert!(server.terminate().success(), "SIGTERM exits 0");
            server.restart();
            assert_eq!(
                server.metric("ringest_store_bytes"),
                0,
                "a clean restart replays nothing into memory"
            );
            assert!(server.metric("ringest_persist_file_rows") > 0);
            Target::Ringest(server)
        }
        (_, target) => target,
    };
    (target, config_dir)
}

// ------------------------------------------------------------------ tests

/// Goal: ringest answers every captured InfluxQL query exactly as InfluxDB
/// 1.6.7 did (status and JSON body).
/// Method: write `data.lp`/`other.lp` through `/write`, replay each case of
/// `golden.json` in order (GET with `q` in the URL, or POST with a form body),
/// compare status and the JSON value of the body; report every differing
/// case with its query, the first differing JSON path, expected and actual.
#[test]
fn golden_queries_match_influxdb_1_6_7() {
    golden_queries_with_rows_in(RowsIn::Memory);
}

/// Goal: the same answers when every row was persisted to Parquet and left
/// memory (issue 14). Method: as above, after the server persisted the
/// dataset (snapshots every 20 ms, waited for through `/metrics`).
#[test]
fn golden_queries_over_parquet() {
    golden_queries_with_rows_in(RowsIn::Parquet);
}

/// Goal: the same answers when the rows are split between Parquet and
/// memory. Method: the first half of each file persisted (SIGTERM, clean
/// restart), the second half written after, then the cases.
#[test]
fn golden_queries_over_parquet_and_memory() {
    golden_queries_with_rows_in(RowsIn::Split);
}

/// Goal: the same answers after a SIGTERM and a restart, with every row
/// read from Parquet and none replayed. Method: write, SIGTERM, restart,
/// check the store is empty, then the cases.
#[test]
fn golden_queries_after_restart() {
    golden_queries_with_rows_in(RowsIn::ParquetAfterRestart);
}

fn golden_queries_with_rows_in(rows_in: RowsIn) {
    let fixture = load_fixture();
    // Known differences, each with its reason; the answer is still checked
    // to be a 200 with a series, only its values are not compared.
    const KNOWN_DIFFERENCES: &[(&str, &str)] = &[(
        "agg_strings_and_bools",
        "first() on strings when several series share the earliest time: InfluxDB 1.6.7 picks by \
         its iterator merge order, which ringest does not reproduce yet",
    )];
    let only = env_regex("RINGEST_GOLDEN_CASES");
    let skip = env_regex("RINGEST_GOLDEN_SKIP");
    let (target, _config) = prepare(&fixture, rows_in);

    let mut checked = 0;
    let mut failures = String::new();
    let mut failed = 0;
    for case in &fixture.cases {
        let selected = only.as_ref().is_none_or(|re| re.is_match(&case.name))
            && !skip.as_ref().is_some_and(|re| re.is_match(&case.name));
        if !selected && !case.changes_state() {
            continue;
        }
        let response = target.send(case);
        if !selected {
            continue;
        }
        if let Some((_, reason)) = KNOWN_DIFFERENCES
            .iter()
            .find(|(name, _)| *name == case.name)
        {
            eprintln!(
                "known difference, values not compared: {} ({reason})",
                case.name
            );
            assert_eq!(response.status, case.status, "{}", case.name);
            checked += 1;
            continue;
        }
        checked += 1;
        if let Some(difference) = compare(case, &response) {
            failed += 1;
            let _ = writeln!(
                failures,
                "--- {} ({} {})\n    q: {}\n    {difference}\n    expected: {} {}\n    actual:   {} {}",
                case.name,
                case.method,
                case.target(),
                case.q(),
                case.status,
                shorten(case.body.trim_end()),
                response.status,
                shorten(response.text().trim_end()),
            );
        }
    }
    assert!(
        checked > 0,
        "RINGEST_GOLDEN_CASES/RINGEST_GOLDEN_SKIP left no case"
    );
    assert!(
        failed == 0,
        "{failed} of {checked} golden queries differ from InfluxDB 1.6.7:\n{failures}"
    );
}

/// Goal: the fixture is complete and well-formed, so the golden test above
/// means what it says (runs today, without a server).
/// Method: parse golden.json and check: at least CASES_MIN cases, unique
/// names, every body parses as JSON, 200 bodies have `results` and 400 bodies
/// have `error`, both data files exist and are non-empty line protocol, no
/// case mentions `now()` without a fixed-answer shape (only raw selects,
/// `fill(none)` or a fixed lower bound), and the issue 6 checklist is covered.
#[test]
fn golden_fixture_is_complete() {
    let fixture = load_fixture();
    assert!(
        fixture.cases.len() >= CASES_MIN,
        "{} cases, want at least {CASES_MIN}",
        fixture.cases.len()
    );
    let mut names = std::collections::BTreeSet::new();
    for case in &fixture.cases {
        assert!(
            names.insert(case.name.as_str()),
            "duplicate case name {}",
            case.name
        );
        let documents = json::parse_documents(&case.body)
            .unwrap_or_else(|e| panic!("case {}: body is not JSON: {e}", case.name));
        let chunked = case
            .params
            .iter()
            .any(|(k, v)| k == "chunked" && v == "true");
        assert!(
            chunked || documents.len() == 1,
            "case {}: several documents without chunked=true",
            case.name
        );
        let body = &documents[0];
        match case.status {
            200 => assert!(
                body.get("results").is_some(),
                "case {}: 200 without results",
                case.name
            ),
            400 => assert!(
                body.get("error").is_some(),
                "case {}: 400 without error",
                case.name
            ),
            other => panic!("case {}: unexpected status {other}", case.name),
        }
        assert!(
            matches!(case.method.as_str(), "GET" | "POST"),
            "case {}: method",
            case.name
        );
    }
    for step in &fixture.setup {
        let text = std::fs::read_to_string(fixture_dir().join(&step.file)).expect("data file");
        assert!(text.lines().count() > 5, "{} is nearly empty", step.file);
    }
    let all_q: Vec<String> = fixture
        .cases
        .iter()
        .map(|c| c.q().to_ascii_lowercase())
        .collect();
    let covered = |needle: &str| all_q.iter().any(|q| q.contains(needle));
    for needle in [
        "show databases",
        "show measurements",
        "with measurement =~",
        "show tag keys",
        "show tag values",
        "with key in",
        "show field keys",
        "show retention policies",
        "show series",
        "create database",
        "drop database",
        "count(",
        "mean(",
        "sum(",
        "min(",
        "max(",
        "first(",
        "last(",
        "median(",
        "spread(",
        "stddev(",
        "percentile(",
        "distinct(",
        "derivative(",
        "non_negative_derivative(",
        "difference(",
        "non_negative_difference(",
        "cumulative_sum(",
        "moving_average(",
        "fill(null)",
        "fill(none)",
        "fill(0)",
        "fill(previous)",
        "fill(linear)",
        "tz(",
        "now()",
        "=~ /(?i)",
        "!~",
        "!=",
        "order by time desc",
        " limit ",
        " offset ",
        " slimit ",
        " soffset ",
        "select *",
        "::field",
        "::tag",
        "\"golden\".\"autogen\".",
        "from /",
        ";",
    ] {
        assert!(covered(needle), "no case covers {needle:?}");
    }
    let epochs: std::collections::BTreeSet<&str> = fixture
        .cases
        .iter()
        .flat_map(|c| c.params.iter())
        .filter(|(k, _)| k == "epoch")
        .map(|(_, v)| v.as_str())
        .collect();
    for epoch in ["ns", "ms", "s"] {
        assert!(epochs.contains(epoch), "no case with epoch={epoch}");
    }
    assert!(
        fixture.cases.iter().any(|c| c.form.is_some()),
        "no POST form case"
    );
    assert!(
        fixture.cases.iter().any(|c| c.status == 400),
        "no parse error case"
    );
}

/// Goal: the comparison is strict where it must be and lenient where InfluxDB
/// is free (key order, whitespace, `2` vs `2.0`).
/// Method: a table of (expected, actual, equal?) pairs through `compare_json`.
#[test]
fn json_comparison_rules() {
    let table: &[(&str, &str, bool)] = &[
        (
            r#"{"a":1,"b":[true,null]}"#,
            r#"{ "b" : [ true , null ], "a" : 1 }"#,
            true,
        ),
        ("2", "2.0", true),
        ("0.1", "0.10000000000000001", true),
        ("86.875", "86.87500000000001", false),
        ("9223372036854775807", "9223372036854775807", true),
        ("9223372036854775807", "9223372036854775806", false),
        ("9223372036854775807", "9.223372036854776e18", false),
        ("9007199254740993", "9007199254740992.0", false),
        ("-9223372036854775808", "-9223372036854775808", true),
        (r#""a\u00e9\n""#, "\"a\u{e9}\\n\"", true),
        (r#""\ud83d\ude00""#, "\"\u{1F600}\"", true),
        (r#"{"a":1}"#, r#"{"a":1,"b":2}"#, false),
        ("[1,2]", "[2,1]", false),
        ("null", "0", false),
        (
            r#"{"results":[{"statement_id":0}]}"#,
            r#"{"results":[{"statement_id":0,"series":[]}]}"#,
            false,
        ),
    ];
    for (expected, actual, equal) in table {
        let e = json::parse(expected).unwrap_or_else(|err| panic!("{expected}: {err}"));
        let a = json::parse(actual).unwrap_or_else(|err| panic!("{actual}: {err}"));
        assert_eq!(
            compare_json(&e, &a, "$").is_none(),
            *equal,
            "{expected} vs {actual}: {:?}",
            compare_json(&e, &a, "$")
        );
    }
    for bad in [
        "",
        "{",
        "[1,]",
        "01",
        "1.",
        "\"\\x\"",
        "{\"a\" 1}",
        "tru",
        "1 2",
    ] {
        assert!(json::parse(bad).is_err(), "{bad:?} parsed");
    }
}

// ------------------------------------------------------------------ comparison

/// `None` when the response matches the case; else what differs first.
fn compare(case: &Case, response: &Response) -> Option<String> {
    if response.status != case.status {
        return Some(format!(
            "status: expected {}, got {}",
            case.status, response.status
        ));
    }
    let expected = match json::parse_documents(&case.body) {
        Ok(documents) => documents,
        Err(e) => return Some(format!("fixture body is not JSON: {e}")),
    };
    let actual = match json::parse_documents(&response.text()) {
        Ok(documents) => documents,
        Err(e) => return Some(format!("response body is not JSON: {e}")),
    };
    // One document, or one per line with `chunked=true`.
    for (i, (e, a)) in expected.iter().zip(actual.iter()).enumerate() {
        let path = if expected.len() == 1 {
            "$".to_string()
        } else {
            format!("document {i}: $")
        };
        if let Some(d) = compare_json(e, a, &path) {
            return Some(format!("first difference at {d}"));
        }
    }
    if expected.len() != actual.len() {
        return Some(format!(
            "expected {} JSON documents, got {}",
            expected.len(),
            actual.len()
        ));
    }
    None
}

/// The path of the first difference and both values there, or `None`.
fn compare_json(expected: &json::Value, actual: &json::Value, path: &str) -> Option<String> {
    use json::Value;
    let differ = || Some(format!("{path}: expected {expected}, got {actual}"));
    match (expected, actual) {
        (Value::Null, Value::Null) => None,
        (Value::Bool(e), Value::Bool(a)) if e == a => None,
        (Value::String(e), Value::String(a)) if e == a => None,
        (Value::Number(e), Value::Number(a)) if numbers_equal(e, a) => None,
        (Value::Array(e), Value::Array(a)) => {
            for (i, (ev, av)) in e.iter().zip(a.iter()).enumerate() {
                if let Some(d) = compare_json(ev, av, &format!("{path}[{i}]")) {
                    return Some(d);
                }
            }
            if e.len() != a.len() {
                return Some(format!(
                    "{path}: expected {} elements, got {}",
                    e.len(),
                    a.len()
                ));
            }
            None
        }
        (Value::Object(e), Value::Object(a)) => {
            let e: BTreeMap<&str, &Value> = e.iter().map(|(k, v)| (k.as_str(), v)).collect();
            let a: BTreeMap<&str, &Value> = a.iter().map(|(k, v)| (k.as_str(), v)).collect();
            for (key, ev) in &e {
                match a.get(key) {
                    Some(av) => {
                        if let Some(d) = compare_json(ev, av, &format!("{path}.{key}")) {
                            return Some(d);
                        }
                    }
                    None => return Some(format!("{path}: key {key:?} missing")),
                }
            }
            a.keys()
                .find(|key| !e.contains_key(*key))
                .map(|key| format!("{path}: unexpected key {key:?}"))
        }
        _ => differ(),
    }
}

fn is_integer_literal(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Exact number equality, see the module doc.
fn numbers_equal(expected: &str, actual: &str) -> bool {
    const EXACT_F64_INTEGER_MAX: i128 = 1 << 53;
    let as_integer = |text: &str| -> Option<i128> {
        if is_integer_literal(text) {
            text.parse::<i128>().ok()
        } else {
            None
        }
    };
    match (as_integer(expected), as_integer(actual)) {
        (Some(e), Some(a)) => e == a,
        (Some(i), None) | (None, Some(i)) if i.abs() > EXACT_F64_INTEGER_MAX => false,
        _ => match (expected.parse::<f64>(), actual.parse::<f64>()) {
            (Ok(e), Ok(a)) => e == a,
            _ => false,
        },
    }
}

fn shorten(text: &str) -> String {
    if text.chars().count() <= SHOWN_BODY_CHARS_MAX {
        return text.to_string();
    }
    let kept: String = text.chars().take(SHOWN_BODY_CHARS_MAX).collect();
    format!("{kept}… ({} bytes in all)", text.len())
}

// ------------------------------------------------------------------ json

/// A small strict JSON reader (RFC 8259) that keeps numbers as their text, so
/// that integers beyond 2^53 and float spellings can be compared exactly.
/// Test-only: the server's own encoder must not be its oracle.
mod json {
    use std::fmt;

    /// Nesting deeper than this is refused (no stack overflow on bad input).
    const DEPTH_MAX: usize = 128;

    #[derive(Debug, Clone, PartialEq)]
    pub enum Value {
        Null,
        Bool(bool),
        /// The literal as written, validated against the JSON number grammar.
        Number(String),
        String(String),
        Array(Vec<Value>),
        /// Members in source order (duplicate keys are kept; the last one wins
        /// in comparisons).
        Object(Vec<(String, Value)>),
    }

    impl Value {
        pub fn get(&self, key: &str) -> Option<&Value> {
            match self {
                Value::Object(members) => {
                    members.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
                }
                _ => None,
            }
        }

        pub fn as_array(&self) -> Option<&[Value]> {
            match self {
                Value::Array(items) => Some(items),
                _ => None,
            }
        }
    }

    impl fmt::Display for Value {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                Value::Null => f.write_str("null"),
                Value::Bool(b) => write!(f, "{b}"),
                Value::Number(n) => f.write_str(n),
                Value::String(s) => write!(f, "{s:?}"),
                Value::Array(items) => {
                    f.write_str("[")?;
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            f.write_str(",")?;
                        }
                        write!(f, "{item}")?;
                    }
                    f.write_str("]")
                }
                Value::Object(members) => {
                    f.write_str("{")?;
                    for (i, (key, value)) in members.iter().enumerate() {
                        if i > 0 {
                            f.write_str(",")?;
                        }
                        write!(f, "{key:?}:{value}")?;
                    }
                    f.write_str("}")
                }
            }
        }
    }

    /// Why a text is not JSON; `at` is a byte offset.
    #[derive(Debug)]
    pub enum Error {
        UnexpectedEnd,
        UnexpectedByte { at: usize, byte: u8 },
        BadNumber { at: usize },
        BadEscape { at: usize },
        BadUnicodeEscape { at: usize },
        ControlCharacterInString { at: usize },
        TooDeep { at: usize },
        TrailingData { at: usize },
    }

    impl fmt::Display for Error {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                Error::UnexpectedEnd => write!(f, "unexpected end of input"),
                Error::UnexpectedByte { at, byte } => {
                    write!(f, "unexpected byte {:?} at {at}", *byte as char)
                }
                Error::BadNumber { at } => write!(f, "malformed number at {at}"),
                Error::BadEscape { at } => write!(f, "bad escape at {at}"),
                Error::BadUnicodeEscape { at } => write!(f, "bad \\u escape at {at}"),
                Error::ControlCharacterInString { at } => {
                    write!(f, "control character in string at {at}")
                }
                Error::TooDeep { at } => write!(f, "nesting deeper than {DEPTH_MAX} at {at}"),
                Error::TrailingData { at } => write!(f, "trailing data at {at}"),
            }
        }
    }

    /// A sequence of documents separated by whitespace (a `chunked=true`
    /// answer has one per line); at least one.
    pub fn parse_documents(text: &str) -> Result<Vec<Value>, Error> {
        let mut reader = Reader {
            bytes: text.as_bytes(),
            at: 0,
        };
        let mut documents = vec![reader.value(0)?];
        reader.skip_whitespace();
        while reader.at != reader.bytes.len() {
            documents.push(reader.value(0)?);
            reader.skip_whitespace();
        }
        Ok(documents)
    }

    pub fn parse(text: &str) -> Result<Value, Error> {
        let mut reader = Reader {
            bytes: text.as_bytes(),
            at: 0,
        };
        let value = reader.value(0)?;
        reader.skip_whitespace();
        if reader.at != reader.bytes.len() {
            return Err(Error::TrailingData { at: reader.at });
        }
        Ok(value)
    }

    struct Reader<'a> {
        bytes: &'a [u8],
        at: usize,
    }

    impl Reader<'_> {
        fn skip_whitespace(&mut self) {
            while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.at) {
                self.at += 1;
            }
        }

        fn peek(&self) -> Result<u8, Error> {
            self.bytes.get(self.at).copied().ok_or(Error::UnexpectedEnd)
        }

        fn expect(&mut self, byte: u8) -> Result<(), Error> {
            let found = self.peek()?;
            if found != byte {
                return Err(Error::UnexpectedByte {
                    at: self.at,
                    byte: found,
                });
            }
            self.at += 1;
            Ok(())
        }

        fn literal(&mut self, word: &str, value: Value) -> Result<Value, Error> {
            for &byte in word.as_bytes() {
                self.expect(byte)?;
            }
            Ok(value)
        }

        fn value(&mut self, depth: usize) -> Result<Value, Error> {
            if depth > DEPTH_MAX {
                return Err(Error::TooDeep { at: self.at });
            }
            self.skip_whitespace();
            match self.peek()? {
                b'n' => self.literal("null", Value::Null),
                b't' => self.literal("true", Value::Bool(true)),
                b'f' => self.literal("false", Value::Bool(false)),
                b'"' => self.string().map(Value::String),
                b'[' => {
                    self.at += 1;
                    let mut items = Vec::new();
                    self.skip_whitespace();
                    if self.peek()? == b']' {
                        self.at += 1;
                        return Ok(Value::Array(items));
                    }
                    loop {
                        items.push(self.value(depth + 1)?);
                        self.skip_whitespace();
                        match self.peek()? {
                            b',' => self.at += 1,
                            b']' => {
                                self.at += 1;
                                return Ok(Value::Array(items));
                            }
                            byte => return Err(Error::UnexpectedByte { at: self.at, byte }),
                        }
                    }
                }
                b'{' => {
                    self.at += 1;
                    let mut members = Vec::new();
                    self.skip_whitespace();
                    if self.peek()? == b'}' {
                        self.at += 1;
                        return Ok(Value::Object(members));
                    }
                    loop {
                        self.skip_whitespace();
                        let key = self.string()?;
                        self.skip_whitespace();
                        self.expect(b':')?;
                        members.push((key, self.value(depth + 1)?));
                        self.skip_whitespace();
                        match self.peek()? {
                            b',' => self.at += 1,
                            b'}' => {
                                self.at += 1;
                                return Ok(Value::Object(members));
                            }
                            byte => return Err(Error::UnexpectedByte { at: self.at, byte }),
                        }
                    }
                }
                b'-' | b'0'..=b'9' => self.number(),
                byte => Err(Error::UnexpectedByte { at: self.at, byte }),
            }
        }

        /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
        fn number(&mut self) -> Result<Value, Error> {
            let start = self.at;
            let digits = |reader: &mut Self| -> usize {
                let from = reader.at;
                while reader.bytes.get(reader.at).is_some_and(u8::is_ascii_digit) {
                    reader.at += 1;
                }
                reader.at - from
            };
            if self.bytes.get(self.at) == Some(&b'-') {
                self.at += 1;
            }
            let integer_start = self.at;
            let integer_digits = digits(self);
            if integer_digits == 0 || (integer_digits > 1 && self.bytes[integer_start] == b'0') {
                return Err(Error::BadNumber { at: start });
            }
            if self.bytes.get(self.at) == Some(&b'.') {
                self.at += 1;
                if digits(self) == 0 {
                    return Err(Error::BadNumber { at: start });
                }
            }
            if let Some(b'e' | b'E') = self.bytes.get(self.at) {
                self.at += 1;
                if let Some(b'+' | b'-') = self.bytes.get(self.at) {
                    self.at += 1;
                }
                if digits(self) == 0 {
                    return Err(Error::BadNumber { at: start });
                }
            }
            let text = std::str::from_utf8(&self.bytes[start..self.at])
                .map_err(|_| Error::BadNumber { at: start })?;
            Ok(Value::Number(text.to_string()))
        }

        fn hex4(&mut self) -> Result<u32, Error> {
            let at = self.at;
            let hex = self.bytes.get(at..at + 4).ok_or(Error::UnexpectedEnd)?;
            let text = std::str::from_utf8(hex).map_err(|_| Error::BadUnicodeEscape { at })?;
            let code = u32::from_str_radix(text, 16).map_err(|_| Error::BadUnicodeEscape { at })?;
            self.at += 4;
            Ok(code)
        }

        fn string(&mut self) -> Result<String, Error> {
            self.expect(b'"')?;
            let mut out = String::new();
            loop {
                let run_start = self.at;
                while let Some(&byte) = self.bytes.get(self.at) {
                    if byte == b'"' || byte == b'\\' || byte < 0x20 {
                        break;
                    }
                    self.at += 1;
                }
                // The input is a &str and the run stops only at ASCII bytes,
                // so the run is valid UTF-8.
                out.push_str(
                    std::str::from_utf8(&self.bytes[run_start..self.at]).expect("run of a &str"),
                );
                let byte = self.peek()?;
                self.at += 1;
                match byte {
                    b'"' => return Ok(out),
                    b'\\' => {
                        let escape_at = self.at - 1;
                        let escaped = self.peek()?;
                        self.at += 1;
                        match escaped {
                            b'"' => out.push('"'),
                            b'\\' => out.push('\\'),
                            b'/' => out.push('/'),
                            b'b' => out.push('\u{8}'),
                            b'f' => out.push('\u{c}'),
                            b'n' => out.push('\n'),
                            b'r' => out.push('\r'),
                            b't' => out.push('\t'),
                            b'u' => {
                                let high = self.hex4()?;
                                let code = if (0xD800..0xDC00).contains(&high) {
                                    if self.bytes.get(self.at..self.at + 2) != Some(b"\\u") {
                                        return Err(Error::BadUnicodeEscape { at: escape_at });
                                    }
                                    self.at += 2;
                                    let low = self.hex4()?;
                                    if !(0xDC00..0xE000).contains(&low) {
                                        return Err(Error::BadUnicodeEscape { at: escape_at });
                                    }
                                    0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
                                } else {
                                    high
                                };
                                out.push(
                                    char::from_u32(code)
                                        .ok_or(Error::BadUnicodeEscape { at: escape_at })?,
                                );
                            }
                            _ => return Err(Error::BadEscape { at: escape_at }),
                        }
                    }
                    _ => return Err(Error::ControlCharacterInString { at: self.at - 1 }),
                }
            }
        }
    }
}

// ------------------------------------------------- absent tags (issue 17)

/// Writes two rows of `m` into database `nulls`, one with tag `t` and one
/// without, and returns the server.
fn server_with_an_absent_tag() -> common::Server {
    let server = common::Server::start(&[]);
    let response = server.write_v1("db=nulls", "m,t=a f=1 1000000000\nm f=2 2000000000");
    assert_eq!(response.status, 204, "{}", response.text());
    server
}

fn answer(server: &common::Server, q: &str) -> String {
    let response = server.query(&format!("db=nulls&epoch=s&q={}", common::encode(q)));
    assert_eq!(response.status, 200, "{q}: {}", response.text());
    response.text().trim_end().to_string()
}

/// Goal: a selected tag that a row's series lacks is `null`, as InfluxDB
/// 1.x answers (it was `""`), both in `SELECT *` and when the tag column is
/// named; `WHERE t = ''` still matches the row without the tag. Method: two
/// rows, one without `t`; compare whole bodies with InfluxDB 1.x's answer.
#[test]
fn absent_tag_is_null_in_selected_columns() {
    let server = server_with_an_absent_tag();
    let expected = r#"{"results":[{"statement_id":0,"series":[{"name":"m","columns":["time","f","t"],"values":[[1,1,"a"],[2,2,null]]}]}]}"#;
    assert_eq!(answer(&server, "SELECT * FROM m"), expected);
    assert_eq!(answer(&server, "SELECT f, t FROM m"), expected);
    assert_eq!(
        answer(&server, "SELECT f, t::tag FROM m WHERE t = ''"),
        r#"{"results":[{"statement_id":0,"series":[{"name":"m","columns":["time","f","t"],"values":[[2,2,null]]}]}]}"#
    );
}

/// Goal: with `GROUP BY *` or `GROUP BY t`, the series without `t` keeps
/// `""` in its `tags` object (the InfluxDB convention: a group key has a
/// value for every key). Method: compare whole bodies.
#[test]
fn absent_tag_is_empty_string_in_group_by_tags() {
    let server = server_with_an_absent_tag();
    let expected = r#"{"results":[{"statement_id":0,"series":[{"name":"m","tags":{"t":""},"columns":["time","f"],"values":[[2,2]]},{"name":"m","tags":{"t":"a"},"columns":["time","f"],"values":[[1,1]]}]}]}"#;
    assert_eq!(answer(&server, "SELECT * FROM m GROUP BY *"), expected);
    assert_eq!(answer(&server, "SELECT f FROM m GROUP BY t"), expected);
}
