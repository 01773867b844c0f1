//! The write API of issue 4 over real sockets: every row of the status
//! table, every parameter and credential form, gzip in all its shapes,
//! partial writes (checking exactly which lines were stored), type
//! conflicts, database rules, and backpressure.

mod common;

use std::io::{Read, Write};

use common::{config_file, encode, Client, Response, Server, TempDir};

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut compressor = libdeflater::Compressor::new(libdeflater::CompressionLvl::default());
    let mut out = vec![0u8; compressor.gzip_compress_bound(data.len())];
    let n = compressor.gzip_compress(data, &mut out).expect("compress");
    out.truncate(n);
    out
}

/// `SELECT …` on `db`, nanosecond epochs; the JSON body.
fn select(server: &Server, db: &str, q: &str) -> String {
    let response = server.query(&format!("db={}&epoch=ns&q={}", encode(db), encode(q)));
    assert_eq!(response.status, 200, "{q}: {}", response.text());
    response.text()
}

fn post(server: &Server, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    server.request("POST", target, headers, body)
}

/// Goal: each parameter error has its status and exact message, checked
/// before auth and body. Method: one request per case.
#[test]
fn parameter_errors() {
    let server = Server::start(&[]);
    let v2 = server.write_v2("org=", "cpu v=1");
    assert_eq!(v2.status, 400);
    assert!(v2.text().contains(r#""code":"invalid""#), "{}", v2.text());
    assert!(
        v2.text().contains(r#""message":"missing bucket value""#),
        "{}",
        v2.text()
    );
    let v1 = server.write_v1("precision=s", "cpu v=1");
    assert_eq!(v1.status, 400);
    assert!(v1.text().contains("database is required"), "{}", v1.text());
    for (query, v2) in [
        ("db=x&precision=xx", false),
        ("bucket=x&precision=m", true),
        ("db=x&precision=NS", false),
    ] {
        let response = if v2 {
            server.write_v2(query, "cpu v=1")
        } else {
            server.write_v1(query, "cpu v=1")
        };
        assert_eq!(response.status, 400, "{query}");
        assert!(
            response.text().contains("invalid precision"),
            "{query}: {}",
            response.text()
        );
    }
    let bad_name = server.write_v1("db=bad%20name", "cpu v=1");
    assert_eq!(bad_name.status, 400);
    assert!(
        bad_name.text().contains("position 4"),
        "{}",
        bad_name.text()
    );
    let long = server.write_v1(&format!("db={}", "a".repeat(65)), "cpu v=1");
    assert_eq!(long.status, 400);
    let encoding = post(
        &server,
        "/write?db=x",
        &[("Content-Encoding", "br")],
        b"cpu v=1",
    );
    assert_eq!(encoding.status, 415);
    assert!(
        encoding
            .text()
            .contains("unacceptable content-encoding: br"),
        "{}",
        encoding.text()
    );
}

/// Goal: empty and comment-only bodies are 204; a body that is not UTF-8
/// is a 400; Content-Type is ignored. Method: one request each.
#[test]
fn body_edge_cases() {
    let server = Server::start(&[]);
    assert_eq!(server.write_v1("db=x", "").status, 204);
    assert_eq!(
        server.write_v1("db=x", "# only a comment\n\n   \n").status,
        204
    );
    let not_utf8 = post(&server, "/write?db=x", &[], b"cpu v=\"\xff\xfe\"\n");
    assert_eq!(not_utf8.status, 400);
    assert!(
        not_utf8.text().contains("not valid utf8"),
        "{}",
        not_utf8.text()
    );
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/octet-stream",
    ] {
        let response = post(
            &server,
            "/write?db=x",
            &[("Content-Type", content_type)],
            b"cpu v=1",
        );
        assert_eq!(response.status, 204, "{content_type}");
    }
}

/// Goal: every accepted precision spelling scales the timestamp, and a
/// point without a timestamp gets the server time truncated to the
/// precision. Method: write `t v=N T` per spelling, read back ns times.
#[test]
fn precisions_scale_timestamps() {
    let server = Server::start(&[]);
    let cases: [(&str, bool, i64); 11] = [
        ("n", false, 1),
        ("ns", false, 1),
        ("u", false, 1_000),
        ("us", false, 1_000),
        ("%C2%B5", false, 1_000),
        ("ms", false, 1_000_000),
        ("s", false, 1_000_000_000),
        ("m", false, 60_000_000_000),
        ("h", false, 3_600_000_000_000),
        ("us", true, 1_000),
        ("s", true, 1_000_000_000),
    ];
    for (index, (precision, v2, scale)) in cases.iter().enumerate() {
        let db = format!("p{index}");
        let line = format!("t v={index} 7");
        let response = if *v2 {
            server.write_v2(&format!("bucket={db}&precision={precision}"), &line)
        } else {
            server.write_v1(&format!("db={db}&precision={precision}"), &line)
        };
        assert_eq!(response.status, 204, "{precision}: {}", response.text());
        let body = select(&server, &db, "SELECT v FROM t");
        assert!(
            body.contains(&format!("[{},{index}]", 7 * scale)),
            "{precision}: {body}"
        );
    }
    assert_eq!(server.write_v1("db=now&precision=h", "t v=1").status, 204);
    let body = select(&server, "now", "SELECT v FROM t");
    let start = body.find("[[").expect("a row") + 2;
    let time: i64 = body[start..].split(',').next().unwrap().parse().unwrap();
    assert_eq!(time % 3_600_000_000_000, 0, "truncated to the hour: {body}");
}

/// Goal: gzip (single, multi-member, x-gzip, any case, chunked) writes;
/// corrupt and truncated gzip are 400; a bomb is 413 and nothing is
/// written. Method: one request each, then read back.
#[test]
fn gzip_bodies() {
    let dir = TempDir::new("gzip");
    let config = config_file(&dir, "[http]\nbody_bytes_max = 65536\n");
    let server = Server::start(&["--config", &config]);
    let gz = |encoding: &str, body: &[u8]| {
        post(
            &server,
            "/write?db=g",
            &[("Content-Encoding", encoding)],
            body,
        )
    };
    assert_eq!(gz("gzip", &gzip(b"m,k=a v=1 1\n")).status, 204);
    let mut multi = gzip(b"m,k=b v=2 2\n");
    multi.extend_from_slice(&gzip(b"m,k=c v=3 3\n"));
    assert_eq!(gz("GZIP", &multi).status, 204);
    assert_eq!(gz("x-gzip", &gzip(b"m,k=d v=4 4\n")).status, 204);
    let good = gzip(b"m,k=e v=5 5\n");
    let corrupt = gz("gzip", b"this is not gzip");
    assert_eq!(corrupt.status, 400);
    assert!(
        corrupt.text().contains("error decoding gzip stream"),
        "{}",
        corrupt.text()
    );
    assert_eq!(gz("gzip", &good[..good.len() - 4]).status, 400, "truncated");
    let bomb = gzip(&b"m,k=z v=1\n".repeat(20_000));
    assert!(bomb.len() < 65536);
    assert_eq!(gz("gzip", &bomb).status, 413);

    // Chunked + gzip, as Telegraf sends it.
    let body = gzip(b"m,k=f v=6 6\n");
    let mut stream = server.connect();
    let mut raw = b"POST /write?db=g HTTP/1.1\r\nHost: t\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for piece in body.chunks(7) {
        raw.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        raw.extend_from_slice(piece);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    stream.write_all(&raw).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    assert_eq!(Response::parse(&answer).unwrap().status, 204);

    let stored = select(&server, "g", "SELECT count(v) FROM m");
    assert!(
        stored.contains("[0,5]"),
        "five points (a, b, c, d, f), none from the bad bodies: {stored}"
    );
}

/// Goal: a request with bad lines writes exactly its good lines and names
/// the bad ones by physical line number; `/write` adds the 1.x `error`
/// and `X-Influxdb-Error`. Method: mixed body, then read back.
#[test]
fn partial_writes_store_exactly_the_good_lines() {
    let server = Server::start(&[]);
    let body = "m v=1 1\n\n# comment\nm v= 2\nm v=3 3\r\nm,time=x v=4 4\nm v=5 5";
    let response = server.write_v1("db=pw", body);
    assert_eq!(response.status, 400);
    let text = response.text();
    assert!(
        text.contains(r#""line":4"#),
        "first bad line is physical line 4: {text}"
    );
    assert!(text.contains("partial write has occurred"), "{text}");
    assert!(
        text.contains("line 4:") && text.contains("line 6:"),
        "{text}"
    );
    assert!(
        text.contains(r#""error":"partial write: unable to parse"#),
        "{text}"
    );
    assert!(response.header("x-influxdb-error").is_some());
    let stored = select(&server, "pw", "SELECT v FROM m");
    assert!(stored.contains("[1,1],[3,3],[5,5]"), "{stored}");

    let none = server.write_v2("bucket=pw", "bad\nalso bad");
    assert_eq!(none.status, 400);
    assert!(none.text().contains("no data written"), "{}", none.text());
    assert!(
        !none.text().contains(r#""error""#),
        "v2 bodies carry code and message only"
    );
}

/// Goal: with `accept_partial = false` one bad line rejects the request.
/// Method: configured server, mixed body, nothing stored.
#[test]
fn all_or_nothing_when_configured() {
    let dir = TempDir::new("nopartial");
    let config = config_file(&dir, "[line_protocol]\naccept_partial = false\n");
    let server = Server::start(&["--config", &config]);
    let response = server.write_v1("db=an", "m v=1 1\nbad\nm v=3 3");
    assert_eq!(response.status, 400);
    assert!(
        response.text().contains("no data written"),
        "{}",
        response.text()
    );
    let stored = select(&server, "an", "SELECT count(v) FROM m");
    assert!(!stored.contains("series"), "{stored}");
}

/// Goal: a field's type is fixed by its first write, across requests and
/// within one (first line wins); a tag name cannot become a field.
/// Method: conflicting writes, messages, and what was stored.
#[test]
fn type_conflicts() {
    let server = Server::start(&["--shards", "2"]);
    assert_eq!(server.write_v1("db=tc", "m,h=a v=1 1").status, 204);
    let across = server.write_v1("db=tc", "m,h=a v=\"text\" 2\nm,h=b v=2 2");
    assert_eq!(across.status, 400);
    assert!(
        across.text().contains(
            r#"input field \"v\" on measurement \"m\" is type string, already exists as type float"#
        ),
        "{}",
        across.text()
    );
    let within = server.write_v1("db=tc", "n w=1i 1\nn w=2 2\nn w=3i 3");
    assert_eq!(within.status, 400);
    assert!(within.text().contains(r#""line":2"#), "{}", within.text());
    let tag_as_field = server.write_v1("db=tc", "m h=5 9");
    assert_eq!(tag_as_field.status, 400);
    assert!(
        tag_as_field.text().contains("already exists as a tag"),
        "{}",
        tag_as_field.text()
    );
    let m = select(&server, "tc", "SELECT v FROM m");
    assert!(
        m.contains("[1,1]") && m.contains("[2,2]") && !m.contains("text"),
        "{m}"
    );
    let n = select(&server, "tc", "SELECT w FROM n");
    assert!(
        n.contains("[1,1]") && n.contains("[3,3]") && !n.contains("[2,2]"),
        "{n}"
    );
}

/// A keep-alive connection served by shard `shard` (the shard id is the
/// third group of every `Request-Id`).
fn client_on_shard(server: &Server, shard: u16) -> Client {
    for _ in 0..200 {
        let mut client = Client::connect(server.addr);
        let ping = client.send("GET", "/ping", b"").expect("ping");
        let id = ping.header("Request-Id").expect("Request-Id").to_string();
        let served_by = id
            .split('-')
            .nth(2)
            .and_then(|g| u16::from_str_radix(g, 16).ok());
        if served_by == Some(shard) {
            return client;
        }
    }
    panic!("no connection landed on shard {shard} in 200 tries");
}

/// Goal: a line that conflicts with an earlier line of the same request
/// over a column the catalog already holds gets the same answer whichever
/// shard takes the request: whether or not that shard's catalog replica
/// has learnt the column yet. Method: create `f` as float through shard 0
/// (the catalog owner, so shard 1's replica does not know `f`), then send
/// `f=1i` then `f=2.0` through shard 1 and through shard 0; both times only
/// the integer line is rejected and the float line is stored.
#[test]
fn in_request_conflicts_do_not_depend_on_the_replica() {
    let server = Server::start(&["--shards", "2"]);
    let mut owner = client_on_shard(&server, 0);
    let mut other = client_on_shard(&server, 1);
    let create = owner
        .send("POST", "/write?db=rc", b"m f=0.5 1")
        .expect("answer");
    assert_eq!(create.status, 204, "{}", create.text());
    for (client, t) in [(&mut other, 10), (&mut owner, 20)] {
        let body = format!("m f={t}i {t}\nm f={}.5 {}", t, t + 1);
        let answer = client
            .send("POST", "/write?db=rc", body.as_bytes())
            .expect("answer");
        assert_eq!(answer.status, 400, "{}", answer.text());
        assert!(answer.text().contains(r#""line":1"#), "{}", answer.text());
        assert!(
            answer
                .text()
                .contains("is type integer, already exists as type float"),
            "{}",
            answer.text()
        );
    }
    let stored = select(&server, "rc", "SELECT f FROM m");
    for row in ["[1,0.5]", "[11,10.5]", "[21,20.5]"] {
        assert!(stored.contains(row), "{row} missing: {stored}");
    }
    assert!(
        !stored.contains("[10,") && !stored.contains("[20,"),
        "{stored}"
    );
}

/// Goal: the same point written three times is one row with merged
/// fields, the later write winning. Method: x=1, y=2, x=3 in one batch and
/// across batches.
#[test]
fn same_point_merges_later_wins() {
    let server = Server::start(&[]);
    assert_eq!(
        server
            .write_v1("db=dup", "m,k=a x=1 5\nm,k=a y=2 5\nm,k=a x=3 5")
            .status,
        204
    );
    assert_eq!(server.write_v1("db=dup", "m,k=b x=1 5").status, 204);
    assert_eq!(server.write_v1("db=dup", "m,k=b x=7 5").status, 204);
    let body = select(&server, "dup", "SELECT x, y FROM m GROUP BY k");
    assert!(body.contains("[[5,3,2]]"), "{body}");
    assert!(body.contains("[[5,7,null]]"), "{body}");
}

/// Goal: databases are created by their first write (both endpoints), the
/// default retention policy (`rp` on `/write`, `bucket=db/rp` on
/// `/api/v2/write`) maps to the database itself, and with auto-create off
/// an unknown database is 404. Method: writes, SHOW DATABASES, a second
/// server configured strictly.
#[test]
fn database_rules() {
    let server = Server::start(&[]);
    assert_eq!(server.write_v1("db=a1&rp=autogen", "m v=1").status, 204);
    assert_eq!(server.write_v1("db=a1&rp=DEFAULT", "m v=1").status, 204);
    assert_eq!(
        server.write_v2("bucket=b1%2Fautogen&org=", "m v=1").status,
        204
    );
    assert_eq!(server.write_v2("bucket=b1%2F&org=", "m v=1").status, 204);
    let list = server.query("q=SHOW+DATABASES").text();
    assert_eq!(
        list.trim_end(),
        r#"{"results":[{"statement_id":0,"series":[{"name":"databases","columns":["name"],"values":[["a1"],["b1"]]}]}]}"#
    );
    let dir = TempDir::new("noauto");
    let config = config_file(&dir, "[schema]\nauto_create_databases = false\n");
    let strict = Server::start(&["--config", &config]);
    let missing = strict.write_v1("db=nope", "m v=1");
    assert_eq!(missing.status, 404);
    assert!(
        missing.text().contains(r#"database not found: \"nope\""#),
        "{}",
        missing.text()
    );
    assert_eq!(strict.query("q=CREATE+DATABASE+%22nope%22").status, 200);
    assert_eq!(strict.write_v1("db=nope", "m v=1").status, 204);
}

const TOKEN_WRITER: &str = "writer-secret";
const TOKEN_READER: &str = "reader-secret";

fn auth_server() -> (Server, TempDir) {
    let dir = TempDir::new("auth");
    let config = format!(
        "[auth]\nenabled = true\n\n[[auth.tokens]]\nname = \"writer\"\nsha256 = \"{}\"\nwrite = [\"telegraf\"]\nread = [\"telegraf\"]\n\n[[auth.tokens]]\nname = \"reader\"\nsha256 = \"{}\"\nread = [\"*\"]\n",
        ringest::auth::hash_hex(TOKEN_WRITER.as_bytes()),
        ringest::auth::hash_hex(TOKEN_READER.as_bytes()),
    );
    let path = config_file(&dir, &config);
    (Server::start(&["--config", &path]), dir)
}

/// Goal: every credential form is accepted with auth on; missing and
/// unknown credentials are 401 with WWW-Authenticate; a token without
/// write permission is 403; parameters are checked before auth; /ping and
/// /health need nothing. Method: one request per form.
#[test]
fn credentials() {
    let (server, _dir) = auth_server();
    let basic = format!("Basic {}", base64_encode(&format!("anyone:{TOKEN_WRITER}")));
    let forms: [(&str, Vec<(&str, String)>); 4] = [
        (
            "/write?db=telegraf",
            vec![("Authorization", format!("Token {TOKEN_WRITER}"))],
        ),
        (
            "/api/v2/write?bucket=telegraf",
            vec![("Authorization", format!("Bearer {TOKEN_WRITER}"))],
        ),
        ("/write?db=telegraf", vec![("Authorization", basic)]),
        ("/write?db=telegraf&u=someone&p=writer-secret", vec![]),
    ];
    for (target, headers) in &forms {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let response = post(&server, target, &headers, b"m v=1");
        assert_eq!(
            response.status,
            204,
            "{target} {headers:?}: {}",
            response.text()
        );
    }
    let missing = server.write_v1("db=telegraf", "m v=1");
    assert_eq!(missing.status, 401);
    assert!(missing.header("www-authenticate").is_some());
    assert!(
        missing.text().contains(r#""code":"unauthorized""#),
        "{}",
        missing.text()
    );
    let unknown = post(
        &server,
        "/write?db=telegraf",
        &[("Authorization", "Token nope")],
        b"m v=1",
    );
    assert_eq!(unknown.status, 401);
    let forbidden = post(
        &server,
        "/write?db=other",
        &[("Authorization", &format!("Token {TOKEN_WRITER}"))],
        b"m v=1",
    );
    assert_eq!(forbidden.status, 403);
    let reader = post(
        &server,
        "/write?db=telegraf",
        &[("Authorization", &format!("Token {TOKEN_READER}"))],
        b"m v=1",
    );
    assert_eq!(reader.status, 403, "read-only token cannot write");
    assert_eq!(
        server.write_v2("org=", "m v=1").status,
        400,
        "parameters before auth"
    );
    assert_eq!(server.request("GET", "/ping", &[], b"").status, 204);
    assert_eq!(server.request("GET", "/health", &[], b"").status, 200);
    let query = server.query("q=SHOW+DATABASES");
    assert_eq!(query.status, 401);
}

fn base64_encode(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Goal: over the in-flight bound, `/write` answers 503 and `/api/v2/write`
/// 429, both with an integer Retry-After, before reading the body.
/// Method: one request holds the whole budget (its `100 Continue` proves it
/// was admitted), then one more request on each endpoint.
#[test]
fn backpressure_refuses_at_once() {
    let (server, _dir, holder) = common::server_with_budget_held();
    let v1 = post(&server, "/write?db=x", &[], b"m v=1");
    assert_eq!(v1.status, 503, "{}", v1.text());
    let retry: u32 = v1
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("integer");
    assert!((1..=30).contains(&retry));
    let v2 = post(&server, "/api/v2/write?bucket=x", &[], b"m v=1");
    assert_eq!(v2.status, 429, "{}", v2.text());
    assert!(v2.header("retry-after").is_some());
    drop(holder);
}

/// Goal: `bucket=db/autogen` on `/api/v2/write` writes to database `db`,
/// exactly like `/write?db=db&rp=autogen` (issue 17: it wrote to a database
/// named `db/autogen`). Method: one point through each, then one query on
/// `db` sees both.
#[test]
fn v2_bucket_with_rp_maps_like_v1_db_and_rp() {
    let server = Server::start(&[]);
    assert_eq!(server.write_v1("db=db&rp=autogen", "m v=1 1").status, 204);
    assert_eq!(
        server.write_v2("bucket=db%2Fautogen", "m v=2 2").status,
        204
    );
    let body = select(&server, "db", "SELECT v FROM m");
    assert!(body.contains("[[1,1],[2,2]]"), "{body}");
}

/// Goal: a retention policy other than the default is refused on both
/// endpoints with InfluxDB's wording naming the policy and InfluxDB's
/// status (1.x: 500 on `/write`; 2.x: 404 on `/api/v2/write`), and nothing
/// is written or created. Method: one write each, then SHOW DATABASES.
#[test]
fn unknown_retention_policy_is_refused() {
    let server = Server::start(&[]);
    let v1 = server.write_v1("db=mydb&rp=nosuch", "m v=1");
    assert_eq!(v1.status, 500, "{}", v1.text());
    assert_eq!(
        v1.header("x-influxdb-error"),
        Some("retention policy not found: nosuch")
    );
    assert!(
        v1.text()
            .contains(r#""error":"retention policy not found: nosuch""#),
        "{}",
        v1.text()
    );
    let v2 = server.write_v2("bucket=mydb%2Fweekly", "m v=1");
    assert_eq!(v2.status, 404, "{}", v2.text());
    assert_eq!(
        v2.text(),
        "{\"code\":\"not found\",\"message\":\"retention policy not found: weekly\"}\n"
    );
    let list = server.query("q=SHOW+DATABASES").text();
    assert!(!list.contains("mydb"), "{list}");
}
