//! ingest
//!
//! SKELETON.
