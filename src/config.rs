//! config
//!
//! SKELETON.
