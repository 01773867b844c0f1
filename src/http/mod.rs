//! HTTP/1.1, hand-rolled: pure parsers over borrowed bytes ([`request`],
//! [`body`], [`form`]) and the response bytes ([`response`]). No I/O here;
//! [`crate::connection`] drives them.

pub mod body;
pub mod form;
pub mod request;
pub mod response;
