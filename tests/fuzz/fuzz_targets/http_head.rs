//! Fuzz target: a whole request as the connection reads it: head, framing,
//! body, query string.
//!
//! Invariants checked: the head parser never panics, reports a head inside
//! the buffer and a header count inside the caller's array; `framing` never
//! panics; the body decoder the framing picks never writes past the body
//! limit and consumes all its input until it is done, and nothing after;
//! the query string's pairs and a form body decode without panicking.
//!
//! Input: the request bytes as sent (head, then the body).

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringest::http::body::{BodyDecoder, BodyLimits};
use ringest::http::form;
use ringest::http::request::{framing, parse_head, HeadLimits, Header, Status};

const BODY_LIMITS: BodyLimits = BodyLimits {
    body_bytes_max: 1024,
    chunk_line_bytes_max: 64,
    trailer_bytes_max: 256,
};

fuzz_target!(|data: &[u8]| {
    let mut headers = [Header::default(); 32];
    let limits = HeadLimits {
        request_line_bytes_max: 1024,
        head_bytes_max: 4096,
        header_count_max: 32,
    };
    let Ok(Status::Complete(head)) = parse_head(data, &mut headers, &limits) else {
        return;
    };
    assert!(head.head_len <= data.len());
    assert!(head.header_count <= headers.len());
    assert!(head.target.len() <= data.len());
    for (name, value) in form::pairs(head.query) {
        // A decoded byte is at most one U+FFFD (3 bytes) per input byte.
        assert!(name.len() + value.len() <= 3 * head.query.len());
    }
    let Ok(meta) = framing(&head, &headers) else {
        return;
    };
    let Ok(mut decoder) = BodyDecoder::new(meta.framing, &BODY_LIMITS) else {
        return;
    };
    let rest = &data[head.head_len..];
    let mut body = Vec::with_capacity(BODY_LIMITS.body_bytes_max);
    if let Ok(progress) = decoder.decode(rest, &mut body) {
        assert!(progress.consumed <= rest.len());
        assert!(progress.done || progress.consumed == rest.len());
        assert_eq!(progress.done, decoder.is_done());
    }
    assert!(body.len() <= BODY_LIMITS.body_bytes_max);
    // A `/query` POST body is a form.
    let _ = form::get_bytes(&body, "q");
    assert_eq!(
        body.capacity(),
        BODY_LIMITS.body_bytes_max,
        "no reallocation"
    );
});
