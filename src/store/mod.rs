//! Per-shard columnar in-memory store. SKELETON (issue 6).
