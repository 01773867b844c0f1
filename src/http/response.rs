//! Response bytes and the one error → status mapping.
//!
//! SKELETON (issue 2).
