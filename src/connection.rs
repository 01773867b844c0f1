//! connection
//!
//! SKELETON.
