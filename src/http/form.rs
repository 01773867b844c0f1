//! Percent-decoding of query strings and `application/x-www-form-urlencoded`
//! bodies (`+` is a space).
//!
//! SKELETON (issue 2).
