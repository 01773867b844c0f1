//! Fuzz target: the HTTP request-head parser never panics and reports a
//! head inside the buffer and a header count inside the caller's array.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringest::http::request::{parse_head, HeadLimits, Header, Status};

fuzz_target!(|data: &[u8]| {
    let mut headers = [Header::default(); 32];
    let limits = HeadLimits {
        request_line_bytes_max: 1024,
        head_bytes_max: 4096,
        header_count_max: 32,
    };
    if let Ok(Status::Complete(head)) = parse_head(data, &mut headers, &limits) {
        assert!(head.head_len <= data.len());
        assert!(head.header_count <= headers.len());
        assert!(head.target.len() <= data.len());
    }
});
