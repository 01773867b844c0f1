//! catalog
//!
//! SKELETON.
