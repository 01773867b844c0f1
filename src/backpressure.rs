//! backpressure
//!
//! SKELETON.
