//! clock
//!
//! SKELETON.
