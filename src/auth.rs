//! auth
//!
//! SKELETON.
