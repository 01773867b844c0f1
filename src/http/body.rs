//! Body framing: `Content-Length` and chunked, with the body size cap.
//!
//! SKELETON (issue 2).
