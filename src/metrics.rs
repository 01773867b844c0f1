//! metrics
//!
//! SKELETON.
