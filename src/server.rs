//! server
//!
//! SKELETON.
