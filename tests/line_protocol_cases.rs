//! Case table for the line-protocol parser (issue 3): every escape, type,
//! boundary and error, each case run alone, as the first line, a middle line
//! and the last line without `\n`, with `\n` and with `\r\n` separators.

use ringest::line_protocol::{
    Component, FieldValue, LineErrorKind, Lines, ParseOptions, Point, Precision,
};

const DEFAULT_TIME: i64 = 7;

#[derive(Clone, Debug, PartialEq)]
enum Outcome {
    /// Line number and the rendered point (`measurement|tags|fields|time`).
    Point(u32, String),
    /// Line number, column (0 = not checked) and kind.
    Error(u32, u32, LineErrorKind),
}

fn render(point: &Point<'_>) -> String {
    let tags: Vec<String> = point.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let fields: Vec<String> = point
        .fields
        .iter()
        .map(|(k, v)| match v {
            FieldValue::Float(f) => format!("{k}={f:?}"),
            FieldValue::Integer(i) => format!("{k}={i}i"),
            FieldValue::UInteger(u) => format!("{k}={u}u"),
            FieldValue::String(s) => format!("{k}=\"{s}\""),
            FieldValue::Boolean(b) => format!("{k}={b}"),
        })
        .collect();
    format!(
        "{}|{}|{}|{}",
        point.measurement,
        tags.join(","),
        fields.join(","),
        point.timestamp_ns
    )
}

fn run_with(body: &str, options: ParseOptions) -> Vec<Outcome> {
    let mut lines = Lines::new(body, options);
    let mut point = Point::default();
    let mut out = Vec::new();
    while let Some(result) = lines.next_into(&mut point) {
        out.push(match result {
            Ok(()) => Outcome::Point(point.line_number, render(&point)),
            Err(e) => Outcome::Error(e.line_number, e.column, e.kind),
        });
    }
    out
}

fn run(body: &str) -> Vec<Outcome> {
    run_with(
        body,
        ParseOptions::new(Precision::Nanoseconds, DEFAULT_TIME),
    )
}

/// Zeroes the columns the case does not check.
fn mask_columns(outcomes: &mut [Outcome], expected: &[Outcome]) {
    for (got, want) in outcomes.iter_mut().zip(expected) {
        if let (Outcome::Error(_, column, _), Outcome::Error(_, 0, _)) = (got, want) {
            *column = 0;
        }
    }
}

enum Expect {
    Ok(&'static str),
    Err(LineErrorKind, u32),
    Skip,
    /// Only meaningful as the whole body (it swallows what follows).
    AloneErr(LineErrorKind),
}

struct Case {
    input: &'static str,
    expect: Expect,
}

fn ok(input: &'static str, rendered: &'static str) -> Case {
    Case {
        input,
        expect: Expect::Ok(rendered),
    }
}
fn err(input: &'static str, kind: LineErrorKind) -> Case {
    Case {
        input,
        expect: Expect::Err(kind, 0),
    }
}
fn errc(input: &'static str, kind: LineErrorKind, column: u32) -> Case {
    Case {
        input,
        expect: Expect::Err(kind, column),
    }
}
fn skip(input: &'static str) -> Case {
    Case {
        input,
        expect: Expect::Skip,
    }
}
fn alone(input: &'static str, kind: LineErrorKind) -> Case {
    Case {
        input,
        expect: Expect::AloneErr(kind),
    }
}

fn cases() -> Vec<Case> {
    use LineErrorKind as K;
    let unexpected = |found| K::UnexpectedCharacter { found };
    let backslash = |component| K::EndsWithBackslash { component };
    vec![
        // --- line shapes ---
        ok("m f=1", "m||f=1.0|7"),
        ok("m f=1 123", "m||f=1.0|123"),
        ok("m,t=v f=1i 5", "m|t=v|f=1i|5"),
        ok("m,b=2,a=1 f=1", "m|a=1,b=2|f=1.0|7"),
        ok("m,c=3,a=1,b=2 f=1", "m|a=1,b=2,c=3|f=1.0|7"),
        ok("m,a=1,b=2,c=3 f=1", "m|a=1,b=2,c=3|f=1.0|7"),
        ok("m  f=1", "m||f=1.0|7"),
        ok("m f=1  123", "m||f=1.0|123"),
        ok("m f=1 123  ", "m||f=1.0|123"),
        ok("  m f=1", "m||f=1.0|7"),
        ok("\t m f=1", "m||f=1.0|7"),
        ok("m a=1,b=2,c=3", "m||a=1.0,b=2.0,c=3.0|7"),
        ok("m c=1,a=2,b=3", "m||c=1.0,a=2.0,b=3.0|7"),
        ok(
            "m f=1,g=2i,h=\"s\",b=t,u=3u",
            "m||f=1.0,g=2i,h=\"s\",b=true,u=3u|7",
        ),
        ok(
            "cpu,host=a,region=eu usage=0.5,n=3i 1700000000000000000",
            "cpu|host=a,region=eu|usage=0.5,n=3i|1700000000000000000",
        ),
        // --- timestamps ---
        ok("m f=1 -1", "m||f=1.0|-1"),
        ok("m f=1 0", "m||f=1.0|0"),
        ok("m f=1 -0", "m||f=1.0|0"),
        ok("m f=1 007", "m||f=1.0|7"),
        ok("m f=1 9223372036854775806", "m||f=1.0|9223372036854775806"),
        ok(
            "m f=1 -9223372036854775806",
            "m||f=1.0|-9223372036854775806",
        ),
        errc("m f=1 9223372036854775807", K::TimestampOutOfRange, 7),
        err("m f=1 -9223372036854775807", K::TimestampOutOfRange),
        err("m f=1 -9223372036854775808", K::TimestampOutOfRange),
        err("m f=1 9223372036854775808", K::TimestampOverflow),
        err("m f=1 -9223372036854775809", K::TimestampOverflow),
        err("m f=1 99999999999999999999", K::TimestampOverflow),
        errc("m f=1 1.5", K::InvalidTimestamp, 7),
        err("m f=1 +5", K::InvalidTimestamp),
        err("m f=1 12a", K::InvalidTimestamp),
        err("m f=1 -", K::InvalidTimestamp),
        err("m f=1 1e9", K::InvalidTimestamp),
        err("m f=1 123\t", K::InvalidTimestamp),
        errc("m f=1 123 456", K::TrailingContent, 11),
        err("m f=1 123 # comment", K::TrailingContent),
        errc("m f=1 ", K::MissingTimestamp, 6),
        err("m f=1   ", K::MissingTimestamp),
        err("m f=1\t123", K::InvalidFieldValue),
        // --- floats ---
        ok("m f=1.0", "m||f=1.0|7"),
        ok("m f=-1.5e10", "m||f=-15000000000.0|7"),
        ok("m f=1e-3", "m||f=0.001|7"),
        ok("m f=1E5", "m||f=100000.0|7"),
        ok("m f=1e+3", "m||f=1000.0|7"),
        ok("m f=1.5E-3", "m||f=0.0015|7"),
        ok("m f=-0.0", "m||f=-0.0|7"),
        ok("m f=-0", "m||f=-0.0|7"),
        ok("m f=01", "m||f=1.0|7"),
        ok("m f=00.5", "m||f=0.5|7"),
        ok("m f=0.1", "m||f=0.1|7"),
        ok("m f=3.141592653589793", "m||f=3.141592653589793|7"),
        ok(
            "m f=123456789012345678901234567890",
            "m||f=1.2345678901234568e29|7",
        ),
        ok(
            "m f=1.7976931348623157e308",
            "m||f=1.7976931348623157e308|7",
        ),
        ok(
            "m f=2.2250738585072014e-308",
            "m||f=2.2250738585072014e-308|7",
        ),
        ok("m f=4.9e-324", "m||f=5e-324|7"),
        ok("m f=1e-400", "m||f=0.0|7"),
        ok("m f=9007199254740993", "m||f=9007199254740992.0|7"),
        ok("m f=0.30000000000000004", "m||f=0.30000000000000004|7"),
        errc("m f=1e400", K::FloatOutOfRange, 5),
        err("m f=1.8e308", K::FloatOutOfRange),
        err("m f=-1e400", K::FloatOutOfRange),
        errc("m f=.5", K::InvalidFieldValue, 5),
        err("m f=1.", K::InvalidFieldValue),
        err("m f=+1", K::InvalidFieldValue),
        err("m f=-.5", K::InvalidFieldValue),
        err("m f=NaN", K::InvalidFieldValue),
        err("m f=nan", K::InvalidFieldValue),
        err("m f=Inf", K::InvalidFieldValue),
        err("m f=inf", K::InvalidFieldValue),
        err("m f=0x10", K::InvalidFieldValue),
        err("m f=1_000", K::InvalidFieldValue),
        err("m f=1e", K::InvalidFieldValue),
        err("m f=1e+", K::InvalidFieldValue),
        err("m f=1.5e", K::InvalidFieldValue),
        err("m f=1..5", K::InvalidFieldValue),
        err("m f=1.5.5", K::InvalidFieldValue),
        err("m f=--1", K::InvalidFieldValue),
        err("m f=-", K::InvalidFieldValue),
        err("m f=1.5i", K::InvalidFieldValue),
        err("m f=1e3i", K::InvalidFieldValue),
        err("m f=1f", K::InvalidFieldValue),
        // --- integers ---
        ok("m f=1i", "m||f=1i|7"),
        ok("m f=-1i", "m||f=-1i|7"),
        ok("m f=0i", "m||f=0i|7"),
        ok("m f=-0i", "m||f=0i|7"),
        ok("m f=01i", "m||f=1i|7"),
        ok("m f=9223372036854775807i", "m||f=9223372036854775807i|7"),
        ok("m f=-9223372036854775808i", "m||f=-9223372036854775808i|7"),
        errc("m f=9223372036854775808i", K::IntegerOutOfRange, 5),
        err("m f=-9223372036854775809i", K::IntegerOutOfRange),
        err("m f=99999999999999999999999i", K::IntegerOutOfRange),
        err("m f=+1i", K::InvalidFieldValue),
        err("m f=1.0i", K::InvalidFieldValue),
        err("m f=1ii", K::InvalidFieldValue),
        err("m f=i", K::InvalidFieldValue),
        err("m f=-i", K::InvalidFieldValue),
        err("m f=1i2", K::InvalidFieldValue),
        // --- unsigned ---
        ok("m f=0u", "m||f=0u|7"),
        ok("m f=1u", "m||f=1u|7"),
        ok("m f=18446744073709551615u", "m||f=18446744073709551615u|7"),
        err("m f=18446744073709551616u", K::UnsignedOutOfRange),
        err("m f=-1u", K::InvalidFieldValue),
        err("m f=1.0u", K::InvalidFieldValue),
        err("m f=+1u", K::InvalidFieldValue),
        err("m f=1uu", K::InvalidFieldValue),
        // --- booleans ---
        ok("m f=t", "m||f=true|7"),
        ok("m f=T", "m||f=true|7"),
        ok("m f=true", "m||f=true|7"),
        ok("m f=True", "m||f=true|7"),
        ok("m f=TRUE", "m||f=true|7"),
        ok("m f=f", "m||f=false|7"),
        ok("m f=F", "m||f=false|7"),
        ok("m f=false", "m||f=false|7"),
        ok("m f=False", "m||f=false|7"),
        ok("m f=FALSE,g=t", "m||f=false,g=true|7"),
        err("m f=tRUE", K::InvalidFieldValue),
        err("m f=tru", K::InvalidFieldValue),
        err("m f=yes", K::InvalidFieldValue),
        err("m f=truee", K::InvalidFieldValue),
        err("m f=FALSe", K::InvalidFieldValue),
        // --- strings ---
        ok(r#"m s="abc""#, r#"m||s="abc"|7"#),
        ok(r#"m s="""#, r#"m||s=""|7"#),
        ok(r#"m s="a b,c=d" 5"#, r#"m||s="a b,c=d"|5"#),
        ok(r#"m s="a\"b""#, r#"m||s="a"b"|7"#),
        ok(r#"m s="a\\b""#, r#"m||s="a\b"|7"#),
        ok(r#"m s="a\nb""#, r#"m||s="a\nb"|7"#),
        ok(r#"m s="\\""#, r#"m||s="\"|7"#),
        ok(r#"m s="a\\\"b""#, r#"m||s="a\"b"|7"#),
        ok(r#"m s="a\b""#, r#"m||s="a\b"|7"#),
        ok("m s=\"é ü 日本\"", "m||s=\"é ü 日本\"|7"),
        ok("m s=\"a\tb\"", "m||s=\"a\tb\"|7"),
        ok("m s=\"line1\nline2\" 9", "m||s=\"line1\nline2\"|9"),
        ok("m s=\"x\",f=1", "m||s=\"x\",f=1.0|7"),
        ok(
            r##"m s="# not a comment""##,
            r##"m||s="# not a comment"|7"##,
        ),
        alone(r#"m s="abc"#, K::UnterminatedString),
        alone(r#"m s="a\""#, K::UnterminatedString),
        alone(r#"m f=1,g="x"#, K::UnterminatedString),
        errc(r#"m s="abc"x"#, unexpected('x'), 10),
        alone(r#"m s="a"b""#, unexpected('b')),
        // --- names and escapes ---
        ok(
            r"my\,meas\ x,tag\ key=tag\,val\=x\ y f\=2=1,f\,3=2,field\ k=3",
            "my,meas x|tag key=tag,val=x y|f=2=1.0,f,3=2.0,field k=3.0|7",
        ),
        ok(r"a\\b f=1", r"a\b||f=1.0|7"),
        ok(r"a\=b f=1", r"a\=b||f=1.0|7"),
        ok("a=b f=1", "a=b||f=1.0|7"),
        ok(r"a\xb f=1", r"a\xb||f=1.0|7"),
        ok(r"m\ x f=1", "m x||f=1.0|7"),
        ok(r"m,t=a\\b f=1", r"m|t=a\b|f=1.0|7"),
        ok(r"m,t=a\\\\b f=1", r"m|t=a\\b|f=1.0|7"),
        ok(r"m,t=a\xb f=1", r"m|t=a\xb|f=1.0|7"),
        ok("m,t=a=b f=1", "m|t=a=b|f=1.0|7"),
        ok("m,a,b=c f=1", "m|a,b=c|f=1.0|7"),
        ok("m a,b=1", "m||a,b=1.0|7"),
        ok(r"m,t=x\ y f=1", "m|t=x y|f=1.0|7"),
        ok(r"m,t\=k=v f=1", "m|t=k=v|f=1.0|7"),
        ok("温度,地点=东京 值=1", "温度|地点=东京|值=1.0|7"),
        ok("\u{feff}m f=1", "\u{feff}m||f=1.0|7"),
        ok("m\\\tx f=1", "m\\\tx||f=1.0|7"),
        ok("m,t=a\0b f=1", "m|t=a\0b|f=1.0|7"),
        ok("m,t=\"q\" f=1", "m|t=\"q\"|f=1.0|7"),
        ok("m,t=\"a f=1", "m|t=\"a|f=1.0|7"),
        ok("m,\"k\"=v f=1", "m|\"k\"=v|f=1.0|7"),
        ok("m#1 f=1", "m#1||f=1.0|7"),
        ok("m,Time=1 f=1,TIME=2", "m|Time=1|f=1.0,TIME=2.0|7"),
        ok("m\\\nx f=1", "m\\\nx||f=1.0|7"),
        ok("m f\\\n=1", "m||f\\\n=1.0|7"),
        errc(r"m\\ f=1", backslash(Component::Measurement), 1),
        errc(r"m,t=a\\ f=1", backslash(Component::TagValue), 5),
        errc(r"m,t\\=a f=1", backslash(Component::TagKey), 3),
        errc(r"m f\\=1", backslash(Component::FieldKey), 3),
        err(r"m\ f=1", K::MissingFields),
        err(r"m,t=a\ f=1", K::MissingFields),
        errc("m\0x f=1", unexpected('\0'), 2),
        // --- structure errors ---
        errc(",t=v f=1", K::MissingMeasurement, 1),
        errc("m", K::MissingFields, 2),
        errc("m,", K::MissingTagKey, 3),
        errc("m, f=1", K::MissingTagKey, 3),
        errc("m,=v f=1", K::MissingTagKey, 3),
        errc("m,t f=1", K::MissingTagEquals, 4),
        errc("m,t", K::MissingTagEquals, 4),
        errc("m,t= f=1", K::MissingTagValue, 5),
        err("m,t=", K::MissingTagValue),
        errc("m,t=v,", K::MissingTagKey, 7),
        err("m,t=v, f=1", K::MissingTagKey),
        ok("m,t=v,,u=w f=1", "m|,u=w,t=v|f=1.0|7"),
        errc("m ", K::MissingFields, 3),
        errc("m,t=v", K::MissingFields, 6),
        err("m,t=v ", K::MissingFields),
        errc("m\tf=1", unexpected('\t'), 2),
        err("m,t=v\tf=1", unexpected('\t')),
        errc("m f", K::MissingFieldEquals, 4),
        err("m f 1", K::MissingFieldEquals),
        errc("m =1", K::MissingFieldKey, 3),
        errc("m f=", K::MissingFieldValue, 5),
        err("m f= 1", K::MissingFieldValue),
        err("m f=,g=1", K::MissingFieldValue),
        errc("m f=1,", K::MissingFieldKey, 7),
        err("m f=1, g=2", K::MissingFieldKey),
        errc("m f=1,,g=2", K::EmptyField, 7),
        errc("m ,f=1", K::EmptyField, 3),
        errc("m f=1,g=2,,h=3", K::EmptyField, 11),
        err("m f=1,,", K::EmptyField),
        ok(r"m \,f=1", "m||,f=1.0|7"),
        err("m f=1,g", K::MissingFieldEquals),
        errc("m f=abc", K::InvalidFieldValue, 5),
        err("m f=1 123 x", K::TrailingContent),
        errc("   ,t=v f=1", K::MissingMeasurement, 4),
        // --- validation ---
        errc("m,time=1 f=1", K::TimeTag, 3),
        errc("m time=1", K::TimeField, 3),
        errc("m f=1,time=2", K::TimeField, 7),
        ok(r"m,tim\e=1 f=1", r"m|tim\e=1|f=1.0|7"),
        errc("m,t=1,t=2 f=1", K::DuplicateTag { key: "t".into() }, 7),
        err("m,t=1,t=1 f=1", K::DuplicateTag { key: "t".into() }),
        errc("m,b=1,a=2,b=3 f=1", K::DuplicateTag { key: "b".into() }, 11),
        err(
            r"m,t\ x=1,t\ x=2 f=1",
            K::DuplicateTag { key: "t x".into() },
        ),
        ok("m f=1,f=2", "m||f=2.0|7"),
        ok("m f=1i,f=2i,f=3i", "m||f=3i|7"),
        ok("m f=1,g=2,f=3", "m||f=3.0,g=2.0|7"),
        ok("m f=t,f=false", "m||f=false|7"),
        ok(r#"m f="a",f="b""#, r#"m||f="b"|7"#),
        ok(r"m f=1,f\ =2", "m||f=1.0,f =2.0|7"),
        errc("m f=1,f=2i", K::FieldTypeConflict { key: "f".into() }, 7),
        err("m f=1u,f=1i", K::FieldTypeConflict { key: "f".into() }),
        err(r#"m f="a",f=t"#, K::FieldTypeConflict { key: "f".into() }),
        err(r"m f\,=1,f\,=2i", K::FieldTypeConflict { key: "f,".into() }),
        // --- skipped lines ---
        skip(""),
        skip("   "),
        skip("\t"),
        skip("# comment"),
        skip("  # comment"),
        skip("#"),
        skip("# m f=1"),
        skip("\t# x=\"y"),
    ]
}

fn newlines(text: &str) -> u32 {
    text.bytes().filter(|&b| b == b'\n').count() as u32
}

/// What parsing `input` starting on `line` gives (empty when skipped).
fn expected_for(case: &Case, line: u32) -> Vec<Outcome> {
    match &case.expect {
        Expect::Ok(rendered) => vec![Outcome::Point(line, (*rendered).to_owned())],
        Expect::Err(kind, column) => vec![Outcome::Error(line, *column, kind.clone())],
        Expect::AloneErr(kind) => vec![Outcome::Error(line, 0, kind.clone())],
        Expect::Skip => vec![],
    }
}

/// Goal: the table has at least 150 cases and each gives its expected
/// outcome wherever it stands in a body. Method: run every case alone, as
/// the first line, a middle line and the last line without `\n`, with `\n`
/// and `\r\n` separators; compare line numbers, columns, kinds and values.
#[test]
fn case_table() {
    let table = cases();
    assert!(table.len() >= 150, "only {} cases", table.len());
    let mut failures = Vec::new();
    for case in &table {
        let input = case.input;
        let mut check = |body: String, want: Vec<Outcome>| {
            let mut got = run(&body);
            mask_columns(&mut got, &want);
            if got != want {
                failures.push(format!("body {body:?}\n  want {want:?}\n  got  {got:?}"));
            }
        };
        check(input.to_owned(), expected_for(case, 1));
        if matches!(case.expect, Expect::AloneErr(_)) {
            continue;
        }
        let after = 2 + newlines(input);
        for sep in ["\n", "\r\n"] {
            let mut first = expected_for(case, 1);
            first.push(Outcome::Point(after - 1 + 1, "z||f=1i|7".into()));
            check(format!("{input}{sep}z f=1i"), first);

            let mut middle = vec![Outcome::Point(1, "a||f=1i|7".into())];
            middle.extend(expected_for(case, 2));
            middle.push(Outcome::Point(after + 1, "z||f=1i|7".into()));
            check(format!("a f=1i{sep}{input}{sep}z f=1i"), middle);

            let mut last = vec![Outcome::Point(1, "a||f=1i|7".into())];
            last.extend(expected_for(case, 2));
            check(format!("a f=1i{sep}{input}"), last);
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Goal: line numbers count blank, comment and CRLF lines and the physical
/// lines inside multi-line strings. Method: one body, every outcome checked.
#[test]
fn line_numbers_are_physical() {
    let body = "\r\n# c\r\n\r\nm f=1\r\n  \nm s=\"a\nb\nc\"\nbad\n\nm f=2";
    let got = run(body);
    assert_eq!(
        got,
        vec![
            Outcome::Point(4, "m||f=1.0|7".into()),
            Outcome::Point(6, "m||s=\"a\nb\nc\"|7".into()),
            Outcome::Error(9, 4, LineErrorKind::MissingFields),
            Outcome::Point(11, "m||f=2.0|7".into()),
        ]
    );
}

/// Goal: only one `\r` directly before `\n` is stripped. Method: a lone
/// trailing `\r` at the end of the body, and `\r\r\n`, are both rejected.
#[test]
fn crlf_strips_exactly_one_cr() {
    assert_eq!(
        run("m f=1 5\r"),
        vec![Outcome::Error(1, 7, LineErrorKind::InvalidTimestamp)]
    );
    assert_eq!(
        run("m f=1 5\r\r\n"),
        vec![Outcome::Error(1, 7, LineErrorKind::InvalidTimestamp)]
    );
    assert_eq!(
        run("m f=1 5\r\n"),
        vec![Outcome::Point(1, "m||f=1.0|5".into())]
    );
}

/// Goal: timestamps are scaled by every precision, with overflow detection.
/// Method: table of (precision, written, expected ns or out of range).
#[test]
fn precision_scaling() {
    let table: &[(Precision, &str, Option<i64>)] = &[
        (Precision::Nanoseconds, "5", Some(5)),
        (Precision::Microseconds, "-1", Some(-1_000)),
        (
            Precision::Milliseconds,
            "9223372036854",
            Some(9_223_372_036_854_000_000),
        ),
        (Precision::Milliseconds, "9223372036855", None),
        (Precision::Seconds, "1", Some(1_000_000_000)),
        (
            Precision::Seconds,
            "-9223372036",
            Some(-9_223_372_036_000_000_000),
        ),
        (Precision::Seconds, "9223372037", None),
        (Precision::Minutes, "1", Some(60_000_000_000)),
        (Precision::Minutes, "1600000000", None),
        (Precision::Hours, "1", Some(3_600_000_000_000)),
        (
            Precision::Hours,
            "-2562047",
            Some(-9_223_369_200_000_000_000),
        ),
        (Precision::Hours, "2562048", None),
    ];
    for (precision, written, want) in table {
        let body = format!("m f=1 {written}");
        let got = run_with(&body, ParseOptions::new(*precision, 0));
        let want = match want {
            Some(ns) => Outcome::Point(1, format!("m||f=1.0|{ns}")),
            None => Outcome::Error(1, 7, LineErrorKind::TimestampOutOfRange),
        };
        assert_eq!(got, vec![want], "{precision:?} {written}");
    }
    // A missing timestamp takes the request's default time.
    let got = run_with(
        "m f=1",
        ParseOptions::new(Precision::Seconds, 42_000_000_000),
    );
    assert_eq!(got, vec![Outcome::Point(1, "m||f=1.0|42000000000".into())]);
    assert_eq!(Precision::Seconds.truncate(1_999_999_999), 1_000_000_000);
    assert_eq!(Precision::Seconds.truncate(-1), -1_000_000_000);
}

/// Goal: every limit in ParseOptions is enforced at its exact boundary,
/// on unescaped lengths. Method: small limits, one line at and one past each.
#[test]
fn limits_are_enforced() {
    let mut options = ParseOptions::new(Precision::Nanoseconds, 0);
    options.name_bytes_max = 3;
    options.string_bytes_max = 2;
    options.tags_per_line_max = 2;
    options.fields_per_line_max = 3;
    let one = |body: &str| run_with(body, options.clone()).remove(0);
    let is_ok = |o: &Outcome| matches!(o, Outcome::Point(..));
    let kind = |o: Outcome| match o {
        Outcome::Error(_, _, k) => k,
        other => panic!("expected an error, got {other:?}"),
    };
    assert!(is_ok(&one(r#"abc,k\,k=vvv fff=1,s="\\""#)));
    assert_eq!(
        kind(one("abcd f=1")),
        LineErrorKind::NameTooLong {
            component: Component::Measurement,
            bytes: 4,
            max: 3
        }
    );
    assert!(matches!(
        kind(one("m,kkkk=v f=1")),
        LineErrorKind::NameTooLong {
            component: Component::TagKey,
            ..
        }
    ));
    assert!(matches!(
        kind(one("m,k=vvvv f=1")),
        LineErrorKind::NameTooLong {
            component: Component::TagValue,
            ..
        }
    ));
    assert!(matches!(
        kind(one("m ffff=1")),
        LineErrorKind::NameTooLong {
            component: Component::FieldKey,
            ..
        }
    ));
    assert_eq!(
        kind(one("m s=\"abc\"")),
        LineErrorKind::StringTooLong { bytes: 3, max: 2 }
    );
    assert!(is_ok(&one("m,a=1,b=2 f=1")));
    assert_eq!(
        kind(one("m,a=1,b=2,c=3 f=1")),
        LineErrorKind::TooManyTags { max: 2 }
    );
    assert!(is_ok(&one("m a=1,b=2,c=3")));
    assert_eq!(
        kind(one("m a=1,b=2,c=3,d=4")),
        LineErrorKind::TooManyFields { max: 3 }
    );
    // Duplicates count toward the field limit (it bounds work per line).
    assert_eq!(
        kind(one("m a=1,a=2,a=3,a=4")),
        LineErrorKind::TooManyFields { max: 3 }
    );
}

/// Goal: errors carry an excerpt of the offending line, truncated at 64
/// bytes on a character boundary, and a message naming line and column.
/// Method: a long bad line of multi-byte characters.
#[test]
fn error_excerpt_and_message() {
    let line = format!("m f={}", "é".repeat(100));
    let mut lines = Lines::new(&line, ParseOptions::new(Precision::Nanoseconds, 0));
    let mut point = Point::default();
    let Some(Err(error)) = lines.next_into(&mut point) else {
        panic!("expected an error")
    };
    assert!(error.excerpt.len() <= 64 && line.starts_with(&error.excerpt));
    assert_eq!(error.excerpt.len(), 64);
    let message = error.to_string();
    assert!(
        message.starts_with("line 1 column 5: invalid field value"),
        "{message}"
    );
}

/// Counts heap allocations made by the current thread (tests run in
/// parallel threads, so a global count would see other tests).
mod counting_allocator {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    }

    pub struct Counting;

    // SAFETY: every call is forwarded unchanged to the system allocator.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            ALLOCATIONS.with(|n| n.set(n.get() + 1));
            // SAFETY: same contract as the caller's.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: same contract as the caller's.
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            ALLOCATIONS.with(|n| n.set(n.get() + 1));
            // SAFETY: same contract as the caller's.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    pub fn allocations() -> u64 {
        ALLOCATIONS.with(Cell::get)
    }
}

#[global_allocator]
static ALLOCATOR: counting_allocator::Counting = counting_allocator::Counting;

/// Goal: a warm parser allocates nothing per line for input without
/// escapes (the `Point` vectors are reused, names and strings borrowed).
/// Method: parse one body twice with the same `Point`; the second pass,
/// over 1000 lines with tags, all field types and strings, must not allocate.
#[test]
fn warm_parser_does_not_allocate() {
    let mut body = String::new();
    for i in 0..1000 {
        body.push_str(&format!(
            "cpu,region=eu,host=h{i},rack=r{} usage=0.{i},n={i}i,u={i}u,ok=t,s=\"text {i}\" {i}\n",
            i % 7
        ));
    }
    let options = ParseOptions::new(Precision::Seconds, 0);
    fn parse<'a>(body: &'a str, options: &ParseOptions, point: &mut Point<'a>) -> usize {
        let mut lines = Lines::new(body, options.clone());
        let mut accepted = 0;
        while let Some(result) = lines.next_into(point) {
            assert!(result.is_ok());
            accepted += 1;
        }
        accepted
    }
    let mut point = Point::default();
    let cold = counting_allocator::allocations();
    assert_eq!(parse(&body, &options, &mut point), 1000);
    // The counter works: the cold pass grew the Point's vectors.
    assert!(counting_allocator::allocations() > cold);
    // `Lines::new` clones the options (no heap data): count only parsing.
    let before = counting_allocator::allocations();
    assert_eq!(parse(&body, &options, &mut point), 1000);
    assert_eq!(counting_allocator::allocations() - before, 0);
}
