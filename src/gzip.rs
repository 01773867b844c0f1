//! gzip
//!
//! SKELETON.
