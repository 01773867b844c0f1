//! route
//!
//! SKELETON.
