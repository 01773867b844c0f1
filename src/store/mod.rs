//! Per-shard columnar in-memory store. TEMPORARY STUB with the agreed API
//! (issue 6 replaces it).

use crate::batch::BatchReader;

#[derive(Clone, Debug)]
pub struct StoreLimits {
    pub memory_bytes_max: usize,
    pub chunk_rows: usize,
}

#[derive(Debug, Clone)]
pub enum ScanRequest {
    Nothing,
}
#[derive(Debug, Clone)]
pub enum ScanResponse {
    Nothing,
}
#[derive(Debug, Clone)]
pub struct ScanError(pub String);

pub struct ShardStore {
    rows: usize,
}

impl ShardStore {
    pub fn new(limits: StoreLimits) -> ShardStore {
        let _ = limits;
        ShardStore { rows: 0 }
    }
    pub fn memory_bytes(&self) -> usize {
        self.rows * 64
    }
    pub fn has_room(&self, incoming_payload_bytes: usize) -> bool {
        let _ = incoming_payload_bytes;
        true
    }
    pub fn apply(&mut self, batch: &BatchReader<'_>) {
        self.rows += batch.row_count() as usize;
    }
    pub fn drop_database(&mut self, database: &str) {
        let _ = database;
    }
    pub fn scan(&self, request: &ScanRequest) -> Result<ScanResponse, ScanError> {
        let _ = request;
        Ok(ScanResponse::Nothing)
    }
}
