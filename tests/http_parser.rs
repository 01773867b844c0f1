//! Differential and property tests of the HTTP parsers in `ringest::http`.
//!
//! The request-head parser is cross-checked against the `httparse` crate on
//! random well-formed requests, mutated requests and random bytes; the
//! chunked decoder round-trips random bodies under random chunkings and
//! random input splits; the form decoder round-trips random strings. No input
//! may panic.
//!
//! # Intended differences from httparse (the only ones tolerated)
//!
//! 1. **Target form.** httparse accepts any run of bytes `!`..=`~` and
//!    0x80..=0xFF (valid UTF-8) as the target. We accept only visible ASCII,
//!    and only origin-form (`/...`), `*` with `OPTIONS`, or absolute-form
//!    `http(s)://authority...`. Where httparse completes and our target rule
//!    refuses, we must say `BadTarget`.
//! 2. **Early limit errors.** We refuse a header line as `TooManyHeaders`
//!    at its first byte when the array is full; httparse first waits for the
//!    whole line (`Partial`) and, if the line is malformed, reports that
//!    instead. Likewise an over-limit head or request line is refused before
//!    its end arrives (the limits here are larger than any input, so only
//!    `TooManyHeaders` shows up).
//! 3. **Request-line validation waits for the line end.** httparse refuses
//!    at the first bad byte; we check the method byte by byte too, but the
//!    target and version only once the request line's `\n` has arrived, so
//!    we may still say `Partial` where httparse already refused. Then the
//!    same input closed with `\r\n\r\n` must be refused by us. (Header
//!    lines are refused at the first bad byte, like httparse.)
//! 4. **Error kinds.** Both refusing is agreement, whatever the kind (the
//!    kinds are not the same taxonomy), except that httparse's
//!    `TooManyHeaders` must be ours too.

use std::borrow::Cow;

use proptest::prelude::*;
use ringest::http::body::{BodyError, BodyLimits, ChunkedDecoder};
use ringest::http::form;
use ringest::http::request::{parse_head, HeadError, HeadLimits, Header, Status, Version};

/// Header array size given to both parsers.
const HEADER_SLOTS: usize = 8;

/// Larger than any generated input, so only the header count limits.
const LIMITS: HeadLimits = HeadLimits {
    request_line_bytes_max: 16 * 1024,
    head_bytes_max: 64 * 1024,
    header_count_max: 64,
};

/// One parser's verdict, in owned form so the two can be compared.
#[derive(Debug, PartialEq)]
enum Verdict {
    Complete {
        method: String,
        target: String,
        version: u8,
        headers: Vec<(String, Vec<u8>)>,
        head_len: usize,
    },
    Partial,
    Error(String),
}

fn ours(input: &[u8]) -> (Verdict, Option<HeadError>) {
    let mut headers = [Header::default(); HEADER_SLOTS];
    match parse_head(input, &mut headers, &LIMITS) {
        Ok(Status::Complete(head)) => (
            Verdict::Complete {
                method: head.method_token.to_string(),
                target: head.target.to_string(),
                version: match head.version {
                    Version::Http10 => 0,
                    Version::Http11 => 1,
                },
                headers: headers[..head.header_count]
                    .iter()
                    .map(|h| (h.name.to_string(), h.value.to_vec()))
                    .collect(),
                head_len: head.head_len,
            },
            None,
        ),
        Ok(Status::Partial) => (Verdict::Partial, None),
        Err(e) => (Verdict::Error(format!("{e:?}")), Some(e)),
    }
}

/// httparse's verdict, its error, and the method and target it had parsed
/// (httparse fills those in before it looks at the headers).
fn theirs(input: &[u8]) -> (Verdict, Option<httparse::Error>, Option<(String, String)>) {
    let mut headers = [httparse::EMPTY_HEADER; HEADER_SLOTS];
    let mut request = httparse::Request::new(&mut headers);
    let result = request.parse(input);
    let line = request
        .method
        .zip(request.path)
        .map(|(m, p)| (m.to_string(), p.to_string()));
    let (verdict, error) = match result {
        Ok(httparse::Status::Complete(head_len)) => (
            Verdict::Complete {
                method: request.method.unwrap_or_default().to_string(),
                target: request.path.unwrap_or_default().to_string(),
                version: request.version.unwrap_or(9),
                headers: request
                    .headers
                    .iter()
                    .map(|h| (h.name.to_string(), h.value.to_vec()))
                    .collect(),
                head_len,
            },
            None,
        ),
        Ok(httparse::Status::Partial) => (Verdict::Partial, None),
        Err(e) => (Verdict::Error(format!("{e:?}")), Some(e)),
    };
    (verdict, error, line)
}

/// Difference 1: does our target rule refuse what httparse took as a path?
fn target_rule_refuses(method: &str, target: &str) -> bool {
    if !target.bytes().all(|b| (b'!'..=b'~').contains(&b)) {
        return true;
    }
    if target.starts_with('/') {
        return false;
    }
    if target == "*" {
        return method != "OPTIONS";
    }
    let lower = target.to_ascii_lowercase();
    let after_scheme = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"));
    match after_scheme {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'),
        None => true,
    }
}

/// Compares the two parsers on `input` under the intended differences.
fn cross_check(input: &[u8]) {
    let (our, our_error) = ours(input);
    let (their, their_error, their_line) = theirs(input);
    let shown = String::from_utf8_lossy(input);
    // Difference 1 seen while httparse was still in (or failed in) the headers.
    let ours_refused_target = our_error == Some(HeadError::BadTarget)
        && their_line.is_some_and(|(method, target)| target_rule_refuses(&method, &target));
    match (&our, &their) {
        (Verdict::Complete { .. }, Verdict::Complete { .. })
        | (Verdict::Partial, Verdict::Partial) => {
            assert_eq!(our, their, "verdicts differ on {shown:?}");
        }
        (Verdict::Error(_), Verdict::Error(_)) => {
            if their_error == Some(httparse::Error::TooManyHeaders) && !ours_refused_target {
                assert_eq!(our_error, Some(HeadError::TooManyHeaders), "on {shown:?}");
            }
        }
        (Verdict::Error(_), Verdict::Complete { method, target, .. }) => {
            assert_eq!(
                our_error,
                Some(HeadError::BadTarget),
                "{our:?} vs {their:?} on {shown:?}"
            );
            assert!(
                target_rule_refuses(method, target),
                "target {target:?} of {shown:?}"
            );
        }
        (Verdict::Error(_), Verdict::Partial) if ours_refused_target => {}
        (Verdict::Error(_), Verdict::Partial) => {
            assert_eq!(
                our_error,
                Some(HeadError::TooManyHeaders),
                "we refused early on {shown:?}"
            );
        }
        (Verdict::Partial, Verdict::Error(_)) => {
            let mut closed = input.to_vec();
            closed.extend_from_slice(b"\r\n\r\n");
            let (closed_verdict, _) = ours(&closed);
            assert!(
                matches!(closed_verdict, Verdict::Error(_)),
                "httparse refused {shown:?} ({their:?}) but closed we gave {closed_verdict:?}"
            );
        }
        _ => panic!("ours {our:?} vs httparse {their:?} on {shown:?}"),
    }
}

/// Our parser on every prefix: `Partial` or the same verdict as the whole.
fn prefixes_agree(input: &[u8]) {
    let (whole, _) = ours(input);
    for cut in 0..input.len() {
        let (prefix, _) = ours(&input[..cut]);
        match (&prefix, &whole) {
            (Verdict::Partial, _) => {}
            (Verdict::Error(a), Verdict::Error(b)) if a == b => {}
            // A complete head in a prefix is the same head (the rest is body).
            (Verdict::Complete { .. }, Verdict::Complete { .. }) if prefix == whole => {}
            _ => panic!(
                "prefix {cut} gave {prefix:?}, whole gave {whole:?}: {:?}",
                String::from_utf8_lossy(input)
            ),
        }
    }
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("GET".to_string()),
        4 => Just("POST".to_string()),
        1 => Just("HEAD".to_string()),
        1 => Just("OPTIONS".to_string()),
        2 => "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,10}",
    ]
}

fn target() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "/[A-Za-z0-9/._~%!$&'()*+,;=:@?-]{0,40}",
        1 => Just("*".to_string()),
        1 => "(http|HTTPS)://[a-z.]{0,10}(:[0-9]{1,4})?(/[a-z]{0,8})?(\\?[a-z=&]{0,10})?",
        1 => "[!-~]{1,20}",
        1 => "/[a-z\u{e9}\u{20ac}]{0,8}",
    ]
}

fn version() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => Just("HTTP/1.1".to_string()),
        3 => Just("HTTP/1.0".to_string()),
        1 => Just("HTTP/2.0".to_string()),
        1 => "[HTP/0-9.]{0,9}",
    ]
}

fn line_end() -> impl Strategy<Value = &'static [u8]> {
    prop_oneof![4 => Just(&b"\r\n"[..]), 1 => Just(&b"\n"[..])]
}

fn header() -> impl Strategy<Value = (String, Vec<u8>, &'static [u8])> {
    let name = prop_oneof![
        3 => prop::sample::select(vec![
            "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Content-Encoding",
            "Authorization", "Accept", "Connection", "Expect",
        ])
        .prop_map(str::to_string),
        2 => "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,16}",
    ];
    let value_byte = prop_oneof![
        12 => 0x20u8..0x7F,
        1 => Just(b'\t'),
        1 => 0x80u8..=0xFF,
    ];
    (name, prop::collection::vec(value_byte, 0..30), line_end())
}

/// A request head from the generators, well-formed except where a
/// generator deliberately strays (odd methods, targets, versions), followed
/// by a few body bytes.
fn request() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(line_end(), 0..2),
        method(),
        target(),
        version(),
        line_end(),
        prop::collection::vec(header(), 0..12),
        line_end(),
        prop::collection::vec(any::<u8>(), 0..16),
    )
        .prop_map(
            |(leading, method, target, version, end, headers, last, body)| {
                let mut out = Vec::new();
                for line in leading {
                    out.extend_from_slice(line);
                }
                out.extend_from_slice(format!("{method} {target} {version}").as_bytes());
                out.extend_from_slice(end);
                for (name, value, end) in headers {
                    out.extend_from_slice(name.as_bytes());
                    out.push(b':');
                    out.extend_from_slice(&value);
                    out.extend_from_slice(end);
                }
                out.extend_from_slice(last);
                out.extend_from_slice(&body);
                out
            },
        )
}

/// Bytes that matter to the grammar, favoured by mutations.
fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        prop::sample::select(vec![
            b'\r', b'\n', b' ', b'\t', b':', b'/', b'?', 0, 0x7F, 0x80, 0xFF, b'a'
        ]),
        any::<u8>(),
    ]
}

#[derive(Clone, Debug)]
enum Mutation {
    Replace(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Delete(prop::sample::Index),
    Truncate(prop::sample::Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<prop::sample::Index>(), interesting_byte()).prop_map(|(i, b)| Mutation::Replace(i, b)),
        2 => (any::<prop::sample::Index>(), interesting_byte()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        2 => any::<prop::sample::Index>().prop_map(Mutation::Delete),
        1 => any::<prop::sample::Index>().prop_map(Mutation::Truncate),
    ]
}

fn apply(mut input: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        if input.is_empty() {
            break;
        }
        match m {
            Mutation::Replace(i, b) => {
                let at = i.index(input.len());
                input[at] = *b;
            }
            Mutation::Insert(i, b) => {
                let at = i.index(input.len() + 1);
                input.insert(at, *b);
            }
            Mutation::Delete(i) => {
                let at = i.index(input.len());
                input.remove(at);
            }
            Mutation::Truncate(i) => {
                let at = i.index(input.len());
                input.truncate(at);
            }
        }
    }
    input
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Goal: on generated requests (mostly valid, some with odd methods,
    /// targets and versions) we agree with httparse up to the intended
    /// differences, and every prefix is `Partial` or the same verdict.
    /// Method: generator → cross_check and prefixes_agree.
    #[test]
    fn generated_requests_agree_with_httparse(input in request()) {
        cross_check(&input);
        prefixes_agree(&input);
    }

    /// Goal: the same on requests broken by byte replacements, insertions,
    /// deletions and truncations (the error paths). Method: mutate a
    /// generated request 1..4 times → cross_check and prefixes_agree.
    #[test]
    fn mutated_requests_agree_with_httparse(
        input in request(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let input = apply(input, &mutations);
        cross_check(&input);
        prefixes_agree(&input);
    }

    /// Goal: arbitrary bytes never panic and still agree with httparse.
    /// Method: random byte strings, plain and after a valid request line.
    #[test]
    fn random_bytes_agree_with_httparse(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        cross_check(&bytes);
        let mut after_line = b"GET / HTTP/1.1\r\n".to_vec();
        after_line.extend_from_slice(&bytes);
        cross_check(&after_line);
        prefixes_agree(&after_line);
    }

    /// Goal: with small limits, no input panics, and with consistent limits
    /// every prefix gives `Partial` or the same verdict (limits detected
    /// early but consistently). Method: mutated requests under tight limits,
    /// including inconsistent ones (head limit below the request line's).
    #[test]
    fn tight_limits_are_consistent(
        input in request(),
        mutations in prop::collection::vec(mutation(), 0..3),
        line_max in 4usize..48,
        extra in 0usize..120,
        count_max in 0usize..6,
    ) {
        let input = apply(input, &mutations);
        let limits = HeadLimits {
            request_line_bytes_max: line_max,
            head_bytes_max: line_max + extra,
            header_count_max: count_max,
        };
        let verdict = |bytes: &[u8]| {
            let mut headers = [Header::default(); HEADER_SLOTS];
            match parse_head(bytes, &mut headers, &limits) {
                Ok(Status::Complete(head)) => {
                    assert!(head.head_len <= limits.head_bytes_max);
                    assert!(head.header_count <= count_max);
                    Ok(Some(head.head_len))
                }
                Ok(Status::Partial) => Ok(None),
                Err(e) => Err(e),
            }
        };
        let whole = verdict(&input);
        if !limits.is_consistent() {
            // Only "never panics, stays within the limits" is promised.
            for cut in 0..input.len() {
                let _ = verdict(&input[..cut]);
            }
            return Ok(());
        }
        for cut in 0..input.len() {
            let prefix = verdict(&input[..cut]);
            prop_assert!(prefix == Ok(None) || prefix == whole, "prefix {} {:?} vs {:?}", cut, prefix, whole);
        }
    }
}

/// Encodes `body` as chunks of the given sizes (cycled), with extensions
/// and trailers when asked.
fn encode_chunked(body: &[u8], sizes: &[usize], extensions: bool, trailers: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    let mut i = 0;
    while !rest.is_empty() {
        let size = sizes[i % sizes.len()].clamp(1, rest.len());
        i += 1;
        out.extend_from_slice(format!("{size:x}").as_bytes());
        if extensions && i % 2 == 0 {
            out.extend_from_slice(b" ;ext=\"v\"");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&rest[..size]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[size..];
    }
    out.extend_from_slice(b"0\r\n");
    if trailers {
        out.extend_from_slice(b"X-Trailer: yes\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Feeds `input` in pieces cut at `cuts`; returns the body, bytes consumed,
/// and whether done, or the error. Asserts the output never passes `max`.
fn decode_in_pieces(
    input: &[u8],
    cuts: &[prop::sample::Index],
    limits: BodyLimits,
) -> Result<(Vec<u8>, usize, bool), BodyError> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
    points.push(0);
    points.push(input.len());
    points.sort_unstable();
    let mut decoder = ChunkedDecoder::new(limits);
    let mut out = Vec::new();
    let mut consumed = 0;
    for pair in points.windows(2) {
        let piece = &input[pair[0]..pair[1]];
        let result = decoder.decode(piece, &mut out);
        assert!(out.len() <= limits.body_bytes_max, "output past the limit");
        let progress = result?;
        consumed += progress.consumed;
        if progress.done {
            return Ok((out, consumed, true));
        }
        assert_eq!(progress.consumed, piece.len());
    }
    Ok((out, consumed, decoder.is_done()))
}

proptest! {
    /// Goal: any body, chunked any way and delivered in any pieces, decodes
    /// to itself and stops exactly at its end. Method: random body, chunk
    /// sizes and cut points; a pipelined request follows the body.
    #[test]
    fn chunked_round_trip(
        body in prop::collection::vec(any::<u8>(), 0..2000),
        sizes in prop::collection::vec(1usize..700, 1..8),
        extensions in any::<bool>(),
        trailers in any::<bool>(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let encoded = encode_chunked(&body, &sizes, extensions, trailers);
        let mut input = encoded.clone();
        input.extend_from_slice(b"POST /write HTTP/1.1\r\n");
        let limits = BodyLimits { body_bytes_max: 2000, chunk_line_bytes_max: 64, trailer_bytes_max: 64 };
        let result = decode_in_pieces(&input, &cuts, limits);
        prop_assert_eq!(result, Ok((body, encoded.len(), true)));
    }

    /// Goal: a body over the limit is refused as TooLarge, whatever the
    /// chunking and split, and the output never passes the limit (asserted
    /// in decode_in_pieces). Method: random body longer than a random limit.
    #[test]
    fn chunked_oversize_is_too_large(
        body in prop::collection::vec(any::<u8>(), 1..1500),
        max_fraction in 0.0f64..1.0,
        sizes in prop::collection::vec(1usize..500, 1..6),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let max = ((body.len() as f64) * max_fraction) as usize;
        let encoded = encode_chunked(&body, &sizes, false, false);
        let limits = BodyLimits { body_bytes_max: max, chunk_line_bytes_max: 64, trailer_bytes_max: 64 };
        prop_assert_eq!(decode_in_pieces(&encoded, &cuts, limits), Err(BodyError::TooLarge));
    }

    /// Goal: arbitrary and mutated chunked input never panics, never
    /// outgrows the limit, and the result does not depend on the split.
    /// Method: mutate a valid encoding; decode whole and in random pieces.
    #[test]
    fn chunked_mutations_split_independent(
        body in prop::collection::vec(any::<u8>(), 0..300),
        sizes in prop::collection::vec(1usize..100, 1..4),
        mutations in prop::collection::vec(mutation(), 0..4),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 1..6),
    ) {
        let input = apply(encode_chunked(&body, &sizes, true, true), &mutations);
        let limits = BodyLimits { body_bytes_max: 256, chunk_line_bytes_max: 32, trailer_bytes_max: 32 };
        let whole = decode_in_pieces(&input, &[], limits);
        prop_assert_eq!(decode_in_pieces(&input, &cuts, limits), whole);
    }
}

/// Percent-encodes every byte except unreserved ones; spaces as `+`.
fn form_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

proptest! {
    /// Goal: decoding inverts form encoding for any string, and `get` finds
    /// the first occurrence of an encoded key. Method: random strings →
    /// encode → decode / get.
    #[test]
    fn form_round_trip(key in "\\PC{1,12}", value in "\\PC{0,24}", other in "\\PC{0,12}") {
        let query = format!("{}={}&{}={}", form_encode(&key), form_encode(&value), form_encode(&key), form_encode(&other));
        prop_assert_eq!(form::get(&query, &key).map(Cow::into_owned), Some(value.clone()));
        let decoded: Vec<(String, String)> = form::pairs(&query).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        prop_assert_eq!(decoded, vec![(key.clone(), value), (key, other)]);
    }

    /// Goal: arbitrary bytes never panic the form decoder, and decoding
    /// never expands beyond the lossy-UTF-8 bound (3 bytes per input byte).
    /// Method: random bytes through pairs_bytes, get_bytes and decode_bytes.
    #[test]
    fn form_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let count = form::pairs_bytes(&bytes).count();
        prop_assert!(count <= bytes.len());
        let _ = form::get_bytes(&bytes, "q");
        let decoded = form::decode_bytes(&bytes);
        prop_assert!(decoded.len() <= bytes.len() * 3);
    }
}
