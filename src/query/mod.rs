//! InfluxQL `/query`. TEMPORARY STUB with the agreed API (issue 6 replaces it).

use std::future::Future;

use crate::store::{ScanRequest, ScanResponse};

#[derive(Clone, Debug, Default)]
pub struct QueryParams {
    pub q: String,
    pub db: Option<String>,
    pub rp: Option<String>,
    pub epoch: Option<String>,
    pub pretty: bool,
    pub chunked: bool,
    pub chunk_size: Option<usize>,
    pub now_ns: i64,
}

pub struct QueryOutput {
    pub status: u16,
    pub body: Vec<u8>,
}

pub trait QueryBackend {
    fn scan(&self, request: ScanRequest)
        -> impl Future<Output = Result<Vec<ScanResponse>, String>>;
    fn databases(&self) -> Vec<String>;
    fn create_database(&self, name: &str) -> impl Future<Output = Result<(), String>>;
    fn drop_database(&self, name: &str) -> impl Future<Output = Result<(), String>>;
    fn may_read(&self, database: &str) -> bool;
}

pub async fn execute(params: &QueryParams, backend: &impl QueryBackend) -> QueryOutput {
    let q = params.q.trim();
    if let Some(rest) = q.strip_prefix("CREATE DATABASE ") {
        let name = rest.trim().trim_matches('"');
        return match backend.create_database(name).await {
            Ok(()) => QueryOutput {
                status: 200,
                body: b"{\"results\":[{\"statement_id\":0}]}\n".to_vec(),
            },
            Err(e) => QueryOutput {
                status: 200,
                body: format!("{{\"results\":[{{\"statement_id\":0,\"error\":{e:?}}}]}}\n")
                    .into_bytes(),
            },
        };
    }
    if q == "SHOW DATABASES" {
        let names: Vec<String> = backend
            .databases()
            .iter()
            .map(|n| format!("[{n:?}]"))
            .collect();
        return QueryOutput {
            status: 200,
            body: format!(
                "{{\"results\":[{{\"statement_id\":0,\"series\":[{{\"name\":\"databases\",\"columns\":[\"name\"],\"values\":[{}]}}]}}]}}\n",
                names.join(",")
            )
            .into_bytes(),
        };
    }
    QueryOutput {
        status: 400,
        body: b"{\"error\":\"error parsing query: not implemented yet\"}\n".to_vec(),
    }
}
