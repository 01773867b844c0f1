//! Parser tests: every statement form of issue 6, and exact error text.

use super::*;

fn parse_one(text: &str) -> Statement {
    let mut statements = parse_query(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    assert_eq!(statements.len(), 1, "{text}");
    statements.remove(0)
}

fn select(text: &str) -> Select {
    match parse_one(text) {
        Statement::Select(select) => *select,
        other => panic!("{text}: {other:?}"),
    }
}

fn error(text: &str) -> String {
    match parse_query(text) {
        Ok(statements) => panic!("{text}: parsed as {statements:?}"),
        Err(e) => e.to_string(),
    }
}

/// Goal: every statement Grafana and the v1 clients send parses. Method: a
/// table of queries, each checked for its statement kind.
#[test]
fn statement_table_parses() {
    let cases: &[(&str, &str)] = &[
        ("SHOW DATABASES", "ShowDatabases"),
        ("show measurements", "ShowMeasurements"),
        ("SHOW MEASUREMENTS ON \"db\" WITH MEASUREMENT =~ /(?i)cp/ LIMIT 100", "ShowMeasurements"),
        ("SHOW MEASUREMENTS WITH MEASUREMENT = \"cpu\" WHERE \"host\" = 'a'", "ShowMeasurements"),
        ("SHOW TAG KEYS FROM \"autogen\".\"cpu\" WHERE host =~ /a/", "ShowTagKeys"),
        ("SHOW TAG KEYS ON db FROM /^c/", "ShowTagKeys"),
        ("SHOW TAG VALUES WITH KEY = \"host\"", "ShowTagValues"),
        ("SHOW TAG VALUES FROM cpu WITH KEY IN (\"a\", \"b\") WHERE region = 'eu'", "ShowTagValues"),
        ("SHOW TAG VALUES WITH KEY =~ /ho/", "ShowTagValues"),
        ("SHOW FIELD KEYS FROM \"cpu\"", "ShowFieldKeys"),
        ("SHOW RETENTION POLICIES on \"telegraf\"", "ShowRetentionPolicies"),
        ("SHOW SERIES FROM cpu WHERE host = 'a' LIMIT 2", "ShowSeries"),
        ("CREATE DATABASE \"x\"", "CreateDatabase"),
        ("CREATE DATABASE \"x\" WITH DURATION 30d", "CreateDatabase"),
        ("ALTER RETENTION POLICY \"autogen\" ON \"x\" DURATION 7d", "AlterRetentionPolicy"),
        ("drop database x", "DropDatabase"),
        ("SELECT * FROM cpu", "Select"),
        ("SELECT mean(\"v\") FROM \"db\".\"autogen\".\"m\" WHERE time >= now() - 1h GROUP BY time(1m), \"host\" fill(null)", "Select"),
    ];
    for (text, kind) in cases {
        let statement = parse_one(text);
        let debug = format!("{statement:?}");
        assert!(debug.starts_with(kind), "{text}: {debug}");
    }
    assert_eq!(
        parse_query("SHOW DATABASES; SHOW MEASUREMENTS;").map(|s| s.len()),
        Ok(2)
    );
}

/// Goal: a Grafana-style SELECT keeps every clause. Method: parse one with
/// all clauses and inspect the tree.
#[test]
fn select_clauses_are_kept() {
    let s = select(
        "SELECT mean(\"v\") * 100 AS \"x\", last(v) FROM \"db\".\"rp\".\"m\" WHERE (\"host\"::tag = 'a' OR \"v\"::field > 5) and time >= 1700000000000ms and time <= 1700003600000ms GROUP BY time(1m, -30s), \"host\"::tag fill(-1.5) ORDER BY time DESC LIMIT 10 OFFSET 2 SLIMIT 3 SOFFSET 1 tz('UTC')",
    );
    assert_eq!(s.fields.len(), 2);
    assert_eq!(s.fields[0].alias.as_deref(), Some("x"));
    assert!(matches!(
        &s.fields[0].expr,
        Expr::Binary {
            op: BinaryOp::Mul,
            ..
        }
    ));
    assert_eq!(s.sources[0].database.as_deref(), Some("db"));
    assert_eq!(s.sources[0].retention_policy.as_deref(), Some("rp"));
    assert_eq!(s.group_time, Some((60_000_000_000, -30_000_000_000)));
    assert!(matches!(&s.group_tags, GroupTags::Keys(k) if k == &["host".to_string()]));
    assert_eq!(s.fill, Fill::Number(-1.5));
    assert!(s.descending);
    assert_eq!((s.limit, s.offset, s.slimit, s.soffset), (10, 2, 3, 1));
    assert_eq!(s.timezone.as_deref(), Some("UTC"));
    let Some(Expr::Binary {
        op: BinaryOp::And,
        lhs,
        ..
    }) = &s.condition
    else {
        panic!("condition {:?}", s.condition)
    };
    // AND binds tighter than OR; the parenthesised OR stays together.
    let Expr::Binary {
        op: BinaryOp::And,
        lhs: inner,
        ..
    } = lhs.as_ref()
    else {
        panic!("{lhs:?}")
    };
    assert!(matches!(inner.as_ref(), Expr::Paren(_)));
}

/// Goal: literals lex right: durations in every unit, regex with escaped
/// slash, strings with escapes, negative numbers, `GROUP BY *`.
#[test]
fn literals_lex() {
    let s = select(
        "SELECT v FROM /a\\/b/ WHERE s = 'it\\'s' AND d > -2 AND t < 1w GROUP BY * fill(previous)",
    );
    let MeasurementName::Regex(re) = &s.sources[0].measurement else {
        panic!("regex source")
    };
    assert_eq!(re.as_str(), "a/b");
    let text = format!("{:?}", s.condition);
    assert!(text.contains("String(\"it's\")"), "{text}");
    assert!(text.contains("Integer(-2)"), "{text}");
    assert!(text.contains("Duration(604800000000000)"), "{text}");
    assert!(matches!(s.group_tags, GroupTags::All));
    assert_eq!(s.fill, Fill::Previous);
    for (unit, ns) in [
        ("ns", 1),
        ("u", 1_000),
        ("µ", 1_000),
        ("ms", 1_000_000),
        ("s", 1_000_000_000),
        ("m", 60_000_000_000),
        ("h", 3_600_000_000_000),
        ("d", 86_400_000_000_000),
    ] {
        let s = select(&format!("SELECT count(v) FROM m GROUP BY time(2{unit})"));
        assert_eq!(s.group_time, Some((2 * ns, 0)), "{unit}");
    }
}

/// Goal: errors read like InfluxDB's, with 1-based positions. Method:
/// table of bad queries and their exact messages.
#[test]
fn errors_match_influxdb_wording() {
    let cases: &[(&str, &str)] = &[
        ("SELEC bad", "found SELEC, expected SELECT, DELETE, SHOW, CREATE, DROP, EXPLAIN, GRANT, REVOKE, ALTER, SET, KILL at line 1, char 1"),
        ("SELECT v", "found EOF, expected FROM at line 1, char 9"),
        ("SELECT FROM m", "found FROM, expected identifier, string, number, bool at line 1, char 8"),
        ("SELECT v FROM m WHERE", "found EOF, expected identifier, string, number, bool at line 1, char 22"),
        ("SHOW FOO", "found FOO, expected CONTINUOUS, DATABASES, DIAGNOSTICS, FIELD, GRANTS, MEASUREMENT, MEASUREMENTS, QUERIES, RETENTION, SERIES, SHARD, SHARDS, STATS, SUBSCRIPTIONS, TAG, USERS at line 1, char 6"),
        ("SELECT v FROM m ORDER BY v", "only ORDER BY time supported at this time at line 1, char 26"),
        ("SELECT v FROM m\nLIMIT x", "found x, expected integer at line 2, char 7"),
        ("SELECT v FROM m WHERE a =~ 'x'", "found 'x', expected regex at line 1, char 28"),
    ];
    for (text, expected) in cases {
        assert_eq!(&error(text), expected, "{text}");
    }
}

/// Goal: hostile input is an error, never a panic or a stack overflow.
/// Method: deep parentheses, unterminated quotes, every prefix of a query.
#[test]
fn hostile_input_is_an_error() {
    let deep = format!(
        "SELECT v FROM m WHERE {}a = 1{}",
        "(".repeat(5000),
        ")".repeat(5000)
    );
    assert!(parse_query(&deep).is_err());
    assert!(parse_query("SELECT \"v FROM m").is_err());
    assert!(parse_query("SELECT v FROM m WHERE a = 'x").is_err());
    let query = "SELECT mean(\"v\") FROM \"m\" WHERE time >= now() - 1h GROUP BY time(1m), host fill(0) LIMIT 3";
    for cut in 0..query.len() {
        let _ = parse_query(&query[..cut]);
    }
}

/// Goal: `CREATE DATABASE … WITH` keeps InfluxDB's clauses (DURATION with
/// combined units or INF, REPLICATION, SHARD DURATION, NAME, in that order)
/// and refuses what InfluxDB refuses, with its wording. Method: case table
/// of statements and error texts.
#[test]
fn create_database_with_retention_clauses() {
    let clauses = |text: &str| match parse_one(text) {
        Statement::CreateDatabase { retention, .. } => retention,
        other => panic!("{text}: {other:?}"),
    };
    assert_eq!(clauses("CREATE DATABASE x"), None);
    assert_eq!(
        clauses("CREATE DATABASE \"x\" WITH DURATION 30d"),
        Some(RetentionClauses {
            duration_ns: Some(30 * 86_400_000_000_000),
            ..RetentionClauses::default()
        })
    );
    assert_eq!(
        clauses("create database x with duration 1h30m replication 1 shard duration 1h name \"autogen\""),
        Some(RetentionClauses {
            duration_ns: Some(5_400_000_000_000),
            replication: Some(1),
            shard_duration_ns: Some(3_600_000_000_000),
            name: Some("autogen".into()),
            default: false,
        })
    );
    assert_eq!(
        clauses("CREATE DATABASE x WITH DURATION INF"),
        Some(RetentionClauses {
            duration_ns: Some(0),
            ..RetentionClauses::default()
        })
    );
    assert_eq!(
        clauses("CREATE DATABASE x WITH NAME rp"),
        Some(RetentionClauses {
            name: Some("rp".into()),
            ..RetentionClauses::default()
        })
    );
    assert_eq!(
        error("CREATE DATABASE x WITH"),
        "found EOF, expected DURATION, NAME, REPLICATION, SHARD at line 1, char 23"
    );
    assert_eq!(
        error("CREATE DATABASE x WITH DURATION foo"),
        "found foo, expected duration at line 1, char 33"
    );
    assert_eq!(
        error("CREATE DATABASE x WITH DURATION 3x"),
        "invalid duration"
    );
    assert_eq!(
        error("CREATE DATABASE x WITH REPLICATION 0"),
        "invalid value 0: must be 1 <= n <= 2147483647 at line 1, char 36"
    );
    assert_eq!(
        error("CREATE DATABASE x WITH SHARD 1h"),
        "found 1h, expected DURATION at line 1, char 30"
    );
    // Fixed order, as in InfluxDB: DURATION after REPLICATION is trailing junk.
    assert_eq!(
        error("CREATE DATABASE x WITH REPLICATION 1 DURATION 1d"),
        "found DURATION, expected ; at line 1, char 38"
    );
}

/// Goal: `ALTER RETENTION POLICY` takes its options in any order, each at
/// most once, at least one, and the policy name as written (`DEFAULT` as
/// "default"). Method: case table of statements and error texts.
#[test]
fn alter_retention_policy_clauses() {
    let alter = |text: &str| match parse_one(text) {
        Statement::AlterRetentionPolicy {
            policy,
            database,
            clauses,
        } => (policy, database, clauses),
        other => panic!("{text}: {other:?}"),
    };
    assert_eq!(
        alter("ALTER RETENTION POLICY \"autogen\" ON \"x\" DURATION 7d"),
        (
            "autogen".to_string(),
            "x".to_string(),
            RetentionClauses {
                duration_ns: Some(7 * 86_400_000_000_000),
                ..RetentionClauses::default()
            }
        )
    );
    assert_eq!(
        alter("alter retention policy autogen on x default shard duration 2h replication 3 duration inf"),
        (
            "autogen".to_string(),
            "x".to_string(),
            RetentionClauses {
                duration_ns: Some(0),
                replication: Some(3),
                shard_duration_ns: Some(7_200_000_000_000),
                name: None,
                default: true,
            }
        )
    );
    assert_eq!(
        alter("ALTER RETENTION POLICY DEFAULT ON x DEFAULT").0,
        "default"
    );
    assert_eq!(
        error("ALTER RETENTION POLICY autogen ON x"),
        "found EOF, expected DURATION, REPLICATION, SHARD, DEFAULT at line 1, char 36"
    );
    assert_eq!(
        error("ALTER RETENTION POLICY autogen ON x DURATION 1d DURATION 2d"),
        "found duplicate DURATION option at line 1, char 49"
    );
    assert_eq!(
        error("ALTER DATABASE x"),
        "found DATABASE, expected RETENTION at line 1, char 7"
    );
    assert_eq!(
        error("ALTER RETENTION POLICY autogen x"),
        "found x, expected ON at line 1, char 32"
    );
}

/// Goal: a duration of several units is one token, as in InfluxDB's
/// scanner (`1h30m`), in any statement. Method: a WHERE clause and a
/// GROUP BY interval.
#[test]
fn combined_durations_lex_as_one() {
    let s = select("SELECT count(v) FROM m WHERE time > now() - 1h30m GROUP BY time(1m30s)");
    assert_eq!(s.group_time, Some((90_000_000_000, 0)));
    let text = format!("{:?}", s.condition);
    assert!(text.contains("Duration(5400000000000)"), "{text}");
}
