//! group_commit
//!
//! SKELETON.
