//! One connection: read bytes into its buffer, frame requests with the
//! HTTP parsers, hand each request to its endpoint, write the answers in
//! order (pipelined requests are answered one after another).
//!
//! Knows sockets, timeouts and framing; knows nothing of line protocol or
//! the WAL — writes go to [`crate::ingest`], queries to [`crate::query`].
//!
//! Bounds: the head must arrive within `head_timeout_ms` of its first byte
//! and fit `head_bytes_max`; a body must arrive within `body_timeout_ms`
//! and fit `body_bytes_max` (checked from `Content-Length` before reading,
//! and while de-chunking); an idle keep-alive connection is closed after
//! `idle_timeout_ms`. A write's body bytes are reserved from the shard's
//! in-flight budget before they are read.

use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use crate::backpressure::{BytesPermit, ConnectionPermit};
use crate::clock;
use crate::config::HEADER_ARRAY_LEN;
use crate::http::body::{BodyDecoder, BodyError, BodyLimits};
use crate::http::form;
use crate::http::request::{self, BodyFraming, HeadError, HeadLimits, Header, Method, Status};
use crate::http::response::{self, Dialect, Refusal, Response};
use crate::ingest::{self, WriteRequest};
use crate::metrics::Endpoint;
use crate::shard::Shard;

/// What to do with a request once its head is understood.
enum Plan {
    /// Answer without looking at the body (it is still read and dropped).
    Answer(Response),
    Write(WriteRequest),
    Query(QueryPlan),
    Health,
    Metrics,
    /// Refuse; the connection closes if the body was not read.
    Refuse(Refusal, Dialect),
}

/// The owned parts of a `/query` head.
struct QueryPlan {
    query_string: String,
    authorization: Option<Vec<u8>>,
    form_body: bool,
}

/// How the connection ended (for logs at debug level).
#[derive(Debug)]
enum End {
    PeerClosed,
    Timeout,
    Io,
    Closed,
}

struct Connection {
    shard: Rc<Shard>,
    stream: TcpStream,
    /// Unconsumed input is `buf[start..end]`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    body: Vec<u8>,
    out: Vec<u8>,
}

/// Serves one accepted connection until it closes.
pub async fn serve(shard: Rc<Shard>, stream: TcpStream, _permit: ConnectionPermit) {
    let _ = stream.set_nodelay(true);
    let capacity = shard.config.http.read_buffer_bytes;
    let mut connection = Connection {
        shard,
        stream,
        buf: vec![0u8; capacity],
        start: 0,
        end: 0,
        body: Vec::new(),
        out: Vec::with_capacity(1024),
    };
    let end = connection.run().await;
    tracing::debug!(?end, "connection closed");
}

/// Answer to a connection refused at accept time (over the shard's limit).
pub async fn refuse(shard: &Shard, mut stream: TcpStream) {
    let mut out = Vec::with_capacity(512);
    refusal_response(shard, &Refusal::TooManyConnections, Dialect::Other).write_to(
        &mut out,
        &shard.request_id(),
        false,
    );
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = stream.write_all(&out).await;
    let _ = stream.close().await;
}

impl Connection {
    async fn run(&mut self) -> End {
        loop {
            match self.one_request().await {
                Ok(true) => {}
                Ok(false) => return End::Closed,
                Err(end) => return end,
            }
        }
    }

    /// Reads more input before `deadline`. `Err` ends the connection.
    async fn read_more(&mut self, deadline: Instant, limit: usize) -> Result<(), End> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.buf.len() {
            // Keep unconsumed bytes at the front; grow only up to `limit`.
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                let grown = (self.buf.len() * 2).min(limit.max(self.buf.len()));
                if grown == self.buf.len() {
                    return Err(End::Closed);
                }
                self.buf.resize(grown, 0);
            }
        }
        let remaining = deadline.saturating_duration_since(clock::monotonic());
        if remaining.is_zero() {
            return Err(End::Timeout);
        }
        let _ = self.stream.set_read_timeout(Some(remaining));
        match self.stream.read(&mut self.buf[self.end..]).await {
            Ok(0) => Err(End::PeerClosed),
            Ok(n) => {
                self.end += n;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Err(End::Timeout),
            Err(_) => Err(End::Io),
        }
    }

    /// Waits for a new request's first bytes, in short steps so that an
    /// idle keep-alive connection notices shutdown quickly.
    async fn wait_idle(&mut self, idle_timeout: Duration, limit: usize) -> Result<(), End> {
        let deadline = clock::monotonic() + idle_timeout;
        loop {
            if self.shard.shutting_down() {
                return Err(End::Closed);
            }
            let step = (clock::monotonic() + Duration::from_millis(250)).min(deadline);
            match self.read_more(step, limit).await {
                Err(End::Timeout) if clock::monotonic() < deadline => continue,
                other => return other,
            }
        }
    }

    async fn send(&mut self, response: &Response, head_only: bool) -> Result<(), End> {
        self.out.clear();
        let request_id = self.shard.request_id();
        response.write_to(&mut self.out, &request_id, head_only);
        self.stream.write_all(&self.out).await.map_err(|_| End::Io)
    }

    /// Handles one request. `Ok(true)`: keep the connection.
    async fn one_request(&mut self) -> Result<bool, End> {
        let config = self.shard.config.clone();
        let http = &config.http;
        let limits = HeadLimits {
            request_line_bytes_max: http.request_line_bytes_max,
            head_bytes_max: http.head_bytes_max,
            header_count_max: http.header_count_max,
        };
        let head_timeout = Duration::from_millis(http.head_timeout_ms);
        let body_timeout = Duration::from_millis(http.body_timeout_ms);
        let idle_timeout = Duration::from_millis(http.idle_timeout_ms);
        let body_limits = BodyLimits {
            body_bytes_max: http.body_bytes_max,
            chunk_line_bytes_max: 4096,
            trailer_bytes_max: 16 * 1024,
        };
        let head_bytes_max = http.head_bytes_max;

        // Wait for the first byte (idle), then for the whole head.
        if self.start == self.end {
            self.wait_idle(idle_timeout, head_bytes_max).await?;
        }
        let started = clock::monotonic();
        let head_deadline = started + head_timeout;
        let (plan, framing, keep_alive, expect_continue, head_only, endpoint, head_len) = loop {
            let mut headers = [Header::default(); HEADER_ARRAY_LEN];
            match request::parse_head(&self.buf[self.start..self.end], &mut headers, &limits) {
                Ok(Status::Complete(head)) => {
                    let meta = match request::framing(&head, &headers) {
                        Ok(meta) => meta,
                        Err(error) => {
                            let refusal = head_refusal(error);
                            let response = refusal_response(&self.shard, &refusal, Dialect::Other);
                            self.send(&response, false).await?;
                            return Ok(false);
                        }
                    };
                    let (endpoint, plan) = plan(&self.shard, &head, &meta);
                    break (
                        plan,
                        meta.framing,
                        meta.keep_alive,
                        meta.expect_continue,
                        head.method == Method::Head,
                        endpoint,
                        head.head_len,
                    );
                }
                Ok(Status::Partial) => self.read_more(head_deadline, head_bytes_max).await?,
                Err(error) => {
                    let refusal = head_refusal(error);
                    let response = refusal_response(&self.shard, &refusal, Dialect::Other);
                    self.send(&response, false).await?;
                    return Ok(false);
                }
            }
        };
        self.start += head_len;

        // Refusals known from the head are answered before any body byte
        // is read (and without `100 Continue`); the connection then closes,
        // since the body is still on the wire.
        if let Plan::Refuse(refusal, dialect) = &plan {
            let mut response = refusal_response(&self.shard, refusal, *dialect);
            let body_pending = framing != BodyFraming::None;
            response.close |= body_pending || !keep_alive;
            self.shard.metrics.request(endpoint, response.status);
            self.send(&response, head_only).await?;
            return Ok(!response.close);
        }
        let mut decoder = match BodyDecoder::new(framing, &body_limits) {
            Ok(decoder) => decoder,
            Err(_) => {
                let refusal = Refusal::BodyTooLarge {
                    limit: body_limits.body_bytes_max,
                };
                let dialect = dialect_of(endpoint);
                self.shard.metrics.request(endpoint, 413);
                let response = refusal_response(&self.shard, &refusal, dialect);
                self.send(&response, false).await?;
                return Ok(false);
            }
        };
        let mut permit = None;
        if let Plan::Write(request) = &plan {
            let declared = match framing {
                BodyFraming::ContentLength(n) => n as usize,
                _ => 0,
            };
            match self.shard.admission.admit_bytes(declared) {
                Ok(p) => {
                    // Exactly the admitted bytes: growing by doubling would
                    // hold up to twice the counted size (and copy it).
                    self.body.reserve_exact(declared);
                    permit = Some(p);
                }
                Err(refused) => {
                    let refusal = Refusal::Overloaded {
                        retry_after_s: refused.retry_after_s,
                        cause: refused.cause,
                    };
                    let mut response = refusal_response(&self.shard, &refusal, request.dialect);
                    response.close = true;
                    self.shard.metrics.request(endpoint, response.status);
                    self.send(&response, false).await?;
                    return Ok(false);
                }
            }
        }
        if expect_continue && !decoder.is_done() {
            self.stream
                .write_all(response::CONTINUE)
                .await
                .map_err(|_| End::Io)?;
        }

        // Read the body.
        self.body.clear();
        let body_deadline = clock::monotonic() + body_timeout;
        loop {
            let progress = match decoder.decode(&self.buf[self.start..self.end], &mut self.body) {
                Ok(progress) => progress,
                Err(error) => {
                    let refusal = body_refusal(error, body_limits.body_bytes_max);
                    let mut response =
                        refusal_response(&self.shard, &refusal, dialect_of(endpoint));
                    response.close = true;
                    self.shard.metrics.request(endpoint, response.status);
                    self.send(&response, false).await?;
                    return Ok(false);
                }
            };
            self.start += progress.consumed;
            if let Some(permit) = permit.as_mut() {
                if let Err(refusal) = grow_permit(permit, self.body.len()) {
                    let mut response =
                        refusal_response(&self.shard, &refusal, dialect_of(endpoint));
                    response.close = true;
                    self.shard.metrics.request(endpoint, response.status);
                    self.send(&response, false).await?;
                    return Ok(false);
                }
            }
            if progress.done {
                break;
            }
            let buffer_limit = self.buf.len().max(http.read_buffer_bytes);
            self.read_more(body_deadline, buffer_limit).await?;
        }

        let response = match plan {
            Plan::Answer(response) => response,
            Plan::Write(request) => {
                let result =
                    ingest::write(&self.shard, &request, &self.body, permit.as_mut()).await;
                drop(permit);
                self.shard.metrics.ack_latency(clock::elapsed_us(started));
                match result {
                    Ok(()) => Response::no_content(),
                    Err(refusal) => refusal_response(&self.shard, &refusal, request.dialect),
                }
            }
            Plan::Query(query) => self.query(query).await,
            Plan::Health => health(&self.shard.snapshots().await),
            Plan::Metrics => {
                let snapshots = self.shard.snapshots().await;
                let mut text = crate::metrics::render(&snapshots);
                if let Some(remote) = &self.shard.remote {
                    remote.render_metrics(&mut text);
                }
                let mut response = Response::json(200, text.into_bytes());
                response.content_type = Some("text/plain; version=0.0.4; charset=utf-8");
                response
            }
            Plan::Refuse(..) => unreachable!("refusals are answered before the body"),
        };
        // Do not keep large bodies' memory on an idle connection.
        if self.body.capacity() > 4 * self.shard.config.http.read_buffer_bytes {
            self.body = Vec::new();
        }
        let mut response = response;
        let keep = keep_alive && !response.close && !self.shard.shutting_down();
        response.close = !keep;
        self.shard.metrics.request(endpoint, response.status);
        self.send(&response, head_only).await?;
        Ok(keep)
    }

    async fn query(&mut self, plan: QueryPlan) -> Response {
        let body_text = if plan.form_body {
            String::from_utf8_lossy(&self.body).into_owned()
        } else {
            String::new()
        };
        let lookup =
            |key: &str| form::get(&plan.query_string, key).or_else(|| form::get(&body_text, key));
        let secret = crate::auth::extract(plan.authorization.as_deref(), lookup("p"));
        let secret = secret.map(|s| s.into_owned());
        if self
            .shard
            .authorizer
            .check_known(secret.as_deref())
            .is_err()
        {
            return refusal_response(&self.shard, &Refusal::Unauthorized, Dialect::V1);
        }
        let params = crate::query::QueryParams {
            q: lookup("q").map(|v| v.into_owned()).unwrap_or_default(),
            db: lookup("db").map(|v| v.into_owned()),
            rp: lookup("rp").map(|v| v.into_owned()),
            epoch: lookup("epoch").map(|v| v.into_owned()),
            pretty: lookup("pretty").is_some_and(|v| v == "true"),
            chunked: lookup("chunked").is_some_and(|v| v == "true"),
            chunk_size: lookup("chunk_size").and_then(|v| v.parse().ok()),
            now_ns: clock::now_ns(),
            limits: crate::query::Limits {
                rows_max: self.shard.config.query.rows_max,
                buckets_max: self.shard.config.query.buckets_max,
            },
        };
        let backend = crate::shard::QueryService {
            shard: self.shard.clone(),
            secret,
            deadline: crate::store::Deadline::after(
                clock::monotonic(),
                self.shard.config.query.time_limit_ms,
            ),
        };
        let queue = self.shard.query_queue;
        let task = glommio::spawn_local_into(
            async move {
                let output = crate::query::execute(&params, &backend).await;
                (output.status, output.body)
            },
            queue,
        );
        let (status, body) = match task {
            Ok(task) => task.await,
            Err(_) => (500, b"{\"error\":\"query queue unavailable\"}\n".to_vec()),
        };
        Response::json(status, body)
    }
}

/// The answer to `refusal`, counted under its cause when it is a 429/503
/// (every refusal this module answers goes through here, exactly once,
/// before its bytes are sent).
fn refusal_response(shard: &Shard, refusal: &Refusal, dialect: Dialect) -> Response {
    if let Some(cause) = refusal.cause() {
        shard.metrics.refused(cause);
    }
    Response::from_refusal(refusal, dialect)
}

fn grow_permit(permit: &mut BytesPermit, body_len: usize) -> Result<(), Refusal> {
    if body_len <= permit.bytes() {
        return Ok(());
    }
    permit
        .grow(body_len - permit.bytes())
        .map_err(|refused| Refusal::Overloaded {
            retry_after_s: refused.retry_after_s,
            cause: refused.cause,
        })
}

fn dialect_of(endpoint: Endpoint) -> Dialect {
    match endpoint {
        Endpoint::WriteV1 | Endpoint::Query => Dialect::V1,
        Endpoint::WriteV2 => Dialect::V2,
        _ => Dialect::Other,
    }
}

fn head_refusal(error: HeadError) -> Refusal {
    match error {
        HeadError::RequestLineTooLong => Refusal::RequestLineTooLong,
        HeadError::HeadTooLarge | HeadError::TooManyHeaders => Refusal::HeadTooLarge,
        HeadError::BadMethod => Refusal::BadRequest("malformed method"),
        HeadError::BadTarget => Refusal::BadRequest("malformed request target"),
        HeadError::BadVersion => Refusal::BadRequest("malformed HTTP version"),
        HeadError::UnsupportedVersion => Refusal::VersionNotSupported,
        HeadError::BadHeader => Refusal::BadRequest("malformed header"),
        HeadError::BadContentLength => Refusal::BadRequest("invalid Content-Length"),
        HeadError::ContentLengthWithTransferEncoding => {
            Refusal::BadRequest("both Content-Length and Transfer-Encoding")
        }
        HeadError::BadTransferEncoding => Refusal::BadRequest("invalid Transfer-Encoding"),
        HeadError::UnsupportedTransferEncoding => Refusal::TransferEncodingNotImplemented,
        HeadError::UnsupportedExpectation => Refusal::ExpectationFailed,
    }
}

fn body_refusal(error: BodyError, limit: usize) -> Refusal {
    match error {
        BodyError::TooLarge => Refusal::BodyTooLarge { limit },
        BodyError::BadChunkSize => Refusal::BadRequest("invalid chunk size"),
        BodyError::ChunkSizeOverflow => Refusal::BadRequest("chunk size overflows"),
        BodyError::ChunkLineTooLong => Refusal::BadRequest("chunk size line too long"),
        BodyError::BadChunkExtension => Refusal::BadRequest("invalid chunk extension"),
        BodyError::BadLineEnd => Refusal::BadRequest("invalid line end in chunked body"),
        BodyError::MissingChunkEnd => Refusal::BadRequest("chunk data not followed by CRLF"),
        BodyError::TrailersTooLarge => Refusal::BadRequest("trailers too large"),
    }
}

/// Routes a parsed head to its plan.
fn plan(
    shard: &Shard,
    head: &request::RequestHead<'_>,
    meta: &request::RequestMeta<'_>,
) -> (Endpoint, Plan) {
    let method = head.method;
    let get_or_head = matches!(method, Method::Get | Method::Head);
    let not_allowed =
        |allow: &'static str| Plan::Refuse(Refusal::MethodNotAllowed { allow }, Dialect::Other);
    if shard.shutting_down() && matches!(head.path, "/write" | "/api/v2/write") {
        return (
            Endpoint::Other,
            Plan::Refuse(Refusal::ShuttingDown, Dialect::Other),
        );
    }
    match head.path {
        "/write" | "/api/v2/write" => {
            let (endpoint, dialect) = if head.path == "/write" {
                (Endpoint::WriteV1, Dialect::V1)
            } else {
                (Endpoint::WriteV2, Dialect::V2)
            };
            match method {
                Method::Post => {}
                Method::Options => {
                    let mut response = Response::no_content();
                    response.headers.push(("Allow", "OPTIONS, POST".into()));
                    return (endpoint, Plan::Answer(response));
                }
                _ => return (endpoint, not_allowed("OPTIONS, POST")),
            }
            match ingest::prepare(
                shard,
                dialect,
                head.query,
                meta.authorization,
                meta.content_encoding,
            ) {
                Ok(request) => (endpoint, Plan::Write(request)),
                Err(refusal) => (endpoint, Plan::Refuse(refusal, dialect)),
            }
        }
        "/query" => {
            if !matches!(method, Method::Get | Method::Post) {
                return (Endpoint::Query, not_allowed("GET, POST"));
            }
            let form_body = method == Method::Post;
            (
                Endpoint::Query,
                Plan::Query(QueryPlan {
                    query_string: head.query.to_string(),
                    authorization: meta.authorization.map(<[u8]>::to_vec),
                    form_body,
                }),
            )
        }
        "/ping" => {
            if !get_or_head {
                return (Endpoint::Ping, not_allowed("GET, HEAD"));
            }
            if form::get(head.query, "verbose").is_some_and(|v| v == "true") {
                let body = format!("{{\"version\":\"{}\"}}\n", response::VERSION).into_bytes();
                return (Endpoint::Ping, Plan::Answer(Response::json(200, body)));
            }
            (Endpoint::Ping, Plan::Answer(Response::no_content()))
        }
        "/health" => {
            if !get_or_head {
                return (Endpoint::Health, not_allowed("GET, HEAD"));
            }
            (Endpoint::Health, Plan::Health)
        }
        "/ready" | "/api/v2/ready" => {
            if !get_or_head {
                return (Endpoint::Health, not_allowed("GET, HEAD"));
            }
            let up = clock::monotonic().saturating_duration_since(shard.started);
            let body = format!(
                "{{\"status\":\"ready\",\"started\":\"{}\",\"up\":\"{}\"}}\n",
                clock::rfc3339_seconds(shard.started_ns),
                clock::go_duration(up)
            );
            (
                Endpoint::Health,
                Plan::Answer(Response::json(200, body.into_bytes())),
            )
        }
        "/metrics" => {
            if !get_or_head {
                return (Endpoint::Metrics, not_allowed("GET, HEAD"));
            }
            if shard.config.metrics.require_auth {
                let secret = crate::auth::extract(meta.authorization, None);
                if shard.authorizer.check_known(secret.as_deref()).is_err() {
                    return (
                        Endpoint::Metrics,
                        Plan::Refuse(Refusal::Unauthorized, Dialect::Other),
                    );
                }
            }
            (Endpoint::Metrics, Plan::Metrics)
        }
        _ => (
            Endpoint::Other,
            Plan::Refuse(Refusal::NotFound, Dialect::Other),
        ),
    }
}

/// `/health`: pass while every shard acknowledges writes and can make its
/// next WAL segment (a disk too full for one fails the check, so a load
/// balancer sends writes elsewhere; it passes again once space is freed).
fn health(snapshots: &[crate::metrics::Snapshot]) -> Response {
    let mut body = Vec::with_capacity(256);
    let failing = snapshots.iter().find_map(|s| {
        let g = &s.gauges;
        g.unhealthy_cause
            .clone()
            .or_else(|| g.wal_segment_failing.clone())
    });
    let (status, state, message) = match failing {
        None => (200, "pass", "ready for queries and writes".to_string()),
        Some(cause) => (503, "fail", cause),
    };
    body.extend_from_slice(b"{\"name\":\"ringest\",\"status\":\"");
    body.extend_from_slice(state.as_bytes());
    body.extend_from_slice(b"\",\"message\":");
    response::json_string(&mut body, &message);
    body.extend_from_slice(b",\"checks\":[],\"version\":\"");
    body.extend_from_slice(response::VERSION.as_bytes());
    body.extend_from_slice(b"\"}\n");
    Response::json(status, body)
}
