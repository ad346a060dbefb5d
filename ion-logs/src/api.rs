//! The HTTP API (axum): `POST /v1/logs`, `GET /v1/logs/search`, `GET /metrics`, `GET /healthz`.
//!
//! A `200` from `POST /v1/logs` means every accepted line is fsynced in this node's WAL. A body
//! with bad lines gets `400` naming each bad line; its good lines are accepted all the same and
//! the response counts them, so a client must not send them again. The tenant is always the
//! bearer token's; a line naming a tenant is refused.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ion_core::{
    AppId, ErrorKind, InstanceId, LogIndex, LogLevel, LogQuery, SearchCursor, TenantId, Timestamp,
};
use serde::Deserialize;
use serde_json::json;

use crate::codec::WalEntry;
use crate::ledger::Ledger;
use crate::ndjson::{count_lines, parse_body, LineLimits};
use crate::rate::TenantRateLimiter;
use crate::shipper::ShipperStatus;
use crate::tokens::{TokenCheck, TokenStore};
use crate::wal::WriteAheadLog;

/// Request limits of the ingest endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct IngestLimits {
    /// Largest body in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Longest line in bytes.
    pub max_line_bytes: usize,
    /// Most entries in a line's `fields`.
    pub max_fields: usize,
}

impl Default for IngestLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 << 20,
            max_line_bytes: 64 << 10,
            max_fields: 32,
        }
    }
}

/// Everything the handlers share.
#[derive(Debug)]
pub struct ApiState {
    /// The node's WAL.
    pub wal: Arc<WriteAheadLog>,
    /// The ledger.
    pub ledger: Arc<Ledger>,
    /// Token → tenant.
    pub tokens: Arc<TokenStore>,
    /// Per-tenant byte rates.
    pub limiter: Arc<TenantRateLimiter>,
    /// Where searches go.
    pub index: Arc<dyn LogIndex>,
    /// Request limits.
    pub limits: IngestLimits,
    /// The shipper's status, for health and metrics.
    pub shipper: Arc<ShipperStatus>,
    /// Health turns bad when records are in flight and none was delivered for this long.
    pub stall_after: Duration,
    /// Most undelivered records one tenant may have on this node; beyond it that tenant (only)
    /// gets 429, so a tenant whose index refuses or stalls cannot fill the node's disk budget.
    pub tenant_backlog_records: u64,
}

/// The router with every endpoint.
pub fn router(state: Arc<ApiState>) -> Router {
    let limit = state.limits.max_body_bytes;
    Router::new()
        .route("/v1/logs", post(ingest).layer(DefaultBodyLimit::max(limit)))
        .route("/v1/logs/search", get(search))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(state)
}

fn retry_after(status: StatusCode, after: Duration, body: serde_json::Value) -> Response {
    let secs = after.as_secs_f64().ceil().max(1.0) as u64;
    let mut r = (status, Json(body)).into_response();
    r.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_str(&secs.to_string()).expect("digits are a header value"),
    );
    r
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

async fn authenticate(state: &ApiState, headers: &HeaderMap) -> Result<TenantId, Response> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(error(StatusCode::UNAUTHORIZED, "missing bearer token"));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return Err(error(StatusCode::UNAUTHORIZED, "malformed bearer token"));
    };
    match state.tokens.check(token).await {
        Ok(TokenCheck::Tenant(t)) => Ok(t),
        Ok(TokenCheck::Revoked) => Err(error(StatusCode::FORBIDDEN, "token revoked")),
        Ok(TokenCheck::Unknown) => Err(error(StatusCode::UNAUTHORIZED, "unknown token")),
        Err(e) => {
            tracing::warn!(error = %e, "token lookup failed");
            Err(retry_after(
                StatusCode::SERVICE_UNAVAILABLE,
                Duration::from_secs(1),
                json!({"error": "token store unavailable"}),
            ))
        }
    }
}

async fn ingest(State(state): State<Arc<ApiState>>, headers: HeaderMap, body: Bytes) -> Response {
    let tenant = match authenticate(&state, &headers).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    if state.ledger.get(&tenant).in_flight() >= state.tenant_backlog_records {
        let lines = count_lines(&body) as u64;
        state.ledger.rejected(&tenant, lines);
        return retry_after(
            StatusCode::TOO_MANY_REQUESTS,
            Duration::from_secs(5),
            json!({"error": "tenant backlog on this node is full", "accepted": 0, "refused": lines}),
        );
    }
    if let Err(after) = state.limiter.check(&tenant, body.len() as u64) {
        let lines = count_lines(&body) as u64;
        state.ledger.rejected(&tenant, lines);
        return retry_after(
            StatusCode::TOO_MANY_REQUESTS,
            after,
            json!({"error": "tenant is over its ingest rate", "accepted": 0, "refused": lines}),
        );
    }
    let limits = LineLimits {
        max_line_bytes: state.limits.max_line_bytes,
        max_fields: state.limits.max_fields,
    };
    let parsed = parse_body(&body, &tenant, Timestamp::now(), limits);
    let bad = parsed.errors.len() as u64;
    let good = parsed.entries.len() as u64;
    if good > 0 {
        let payloads: Vec<Vec<u8>> = parsed.entries.iter().map(WalEntry::encode).collect();
        if let Err(e) = state.wal.append(payloads).await {
            state.ledger.rejected(&tenant, good + bad);
            let after = e.retry_after().unwrap_or(Duration::from_secs(1));
            let reason = if e.message().contains("budget") {
                "node disk budget is full"
            } else {
                "write-ahead log unavailable"
            };
            return retry_after(
                StatusCode::SERVICE_UNAVAILABLE,
                after,
                json!({"error": reason, "accepted": 0}),
            );
        }
        state.ledger.durable(&tenant, good);
    }
    if bad > 0 {
        state.ledger.rejected(&tenant, bad);
    }
    let status = if bad > 0 {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    (
        status,
        Json(json!({"accepted": good, "rejected": parsed.errors})),
    )
        .into_response()
}

/// Query parameters of `GET /v1/logs/search`.
#[derive(Debug, Default, Deserialize)]
struct SearchParams {
    text: Option<String>,
    from: Option<String>,
    to: Option<String>,
    level: Option<String>,
    app: Option<String>,
    instance: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

fn to_query(p: SearchParams) -> Result<LogQuery, String> {
    let time = |s: &Option<String>, what: &str| -> Result<Option<Timestamp>, String> {
        s.as_deref()
            .map(|v| Timestamp::parse_rfc3339(v).ok_or_else(|| format!("{what} must be RFC 3339")))
            .transpose()
    };
    let levels = match p.level.as_deref() {
        None | Some("") => Vec::new(),
        Some(l) => l
            .split(',')
            .map(|x| x.trim().parse::<LogLevel>().map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?,
    };
    Ok(LogQuery {
        text: p.text.filter(|t| !t.is_empty()),
        from: time(&p.from, "from")?,
        to: time(&p.to, "to")?,
        levels,
        app: p
            .app
            .as_deref()
            .map(AppId::parse)
            .transpose()
            .map_err(|e| e.to_string())?,
        instance: p
            .instance
            .as_deref()
            .map(InstanceId::parse)
            .transpose()
            .map_err(|e| e.to_string())?,
        after: p
            .cursor
            .as_deref()
            .map(str::parse::<SearchCursor>)
            .transpose()
            .map_err(|e| e.to_string())?,
        limit: p.limit.unwrap_or(100).min(1000),
    })
}

async fn search(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    params: Result<Query<SearchParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let tenant = match authenticate(&state, &headers).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let Ok(Query(params)) = params else {
        return error(StatusCode::BAD_REQUEST, "malformed query parameters");
    };
    let query = match to_query(params) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    match state.index.search(&tenant, &query).await {
        Ok(page) => Json(json!({
            "records": page.records,
            "next": page.next.map(|c| c.to_string()),
        }))
        .into_response(),
        Err(e) if e.kind() == ErrorKind::InvalidInput => {
            error(StatusCode::BAD_REQUEST, e.message())
        }
        Err(e) => {
            tracing::warn!(error = %e, "search failed");
            retry_after(
                StatusCode::SERVICE_UNAVAILABLE,
                Duration::from_secs(1),
                json!({"error": "search unavailable"}),
            )
        }
    }
}

/// Why the node is unhealthy, if it is.
pub fn health_problems(state: &ApiState) -> Vec<String> {
    let mut problems = Vec::new();
    if !state.shipper.running.load(Ordering::Relaxed) {
        problems.push("shipper is not running".to_owned());
    }
    if state.wal.is_poisoned() {
        problems.push("write-ahead log failed a write".to_owned());
    }
    let in_flight: u64 = state
        .ledger
        .snapshot()
        .values()
        .map(|c| c.in_flight())
        .sum();
    let idle_ms =
        Timestamp::now().as_millis() - state.shipper.last_progress_ms.load(Ordering::Relaxed);
    if in_flight > 0 && idle_ms > state.stall_after.as_millis() as i64 {
        problems.push(format!(
            "wal is not draining: {in_flight} records in flight, nothing delivered for {} s",
            idle_ms / 1000
        ));
    }
    problems
}

async fn healthz(State(state): State<Arc<ApiState>>) -> Response {
    let problems = health_problems(&state);
    if problems.is_empty() {
        Json(json!({"status": "ok"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unhealthy", "problems": problems})),
        )
            .into_response()
    }
}

/// The metrics in Prometheus text format.
pub fn render_metrics(state: &ApiState) -> String {
    let mut out = String::new();
    let counts = state.ledger.snapshot();
    out.push_str("# HELP ion_logs_records_total Log lines per tenant and stage (received = durable + rejected; durable = indexed + dead_lettered + in flight).\n# TYPE ion_logs_records_total counter\n");
    for (t, c) in &counts {
        for (stage, v) in [
            ("received", c.received),
            ("rejected", c.rejected),
            ("durable", c.durable),
            ("indexed", c.indexed),
            ("dead_lettered", c.dead_lettered),
        ] {
            // Tenant ids are validated ([a-z0-9-]): safe inside a label value.
            let _ = writeln!(
                out,
                "ion_logs_records_total{{tenant=\"{t}\",stage=\"{stage}\"}} {v}"
            );
        }
    }
    out.push_str("# HELP ion_logs_in_flight Durable lines not yet indexed or dead-lettered.\n# TYPE ion_logs_in_flight gauge\n");
    for (t, c) in &counts {
        let _ = writeln!(
            out,
            "ion_logs_in_flight{{tenant=\"{t}\"}} {}",
            c.in_flight()
        );
    }
    out.push_str("# HELP ion_logs_tenant_paused 1 while a tenant's stream is paused because the index refused credentials (alert).\n# TYPE ion_logs_tenant_paused gauge\n");
    let paused = state.ledger.paused();
    for t in counts.keys() {
        let _ = writeln!(
            out,
            "ion_logs_tenant_paused{{tenant=\"{t}\"}} {}",
            u8::from(paused.contains_key(t))
        );
    }
    let wal = state.wal.stats();
    let s = &state.shipper;
    for (name, kind, help, v) in [
        (
            "ion_logs_wal_bytes",
            "gauge",
            "Bytes the WAL holds on disk.",
            state.wal.disk_bytes(),
        ),
        (
            "ion_logs_wal_budget_bytes",
            "gauge",
            "The WAL disk budget.",
            state.wal.disk_budget(),
        ),
        (
            "ion_logs_wal_appended_total",
            "counter",
            "Records fsynced since start.",
            wal.appended.load(Ordering::Relaxed),
        ),
        (
            "ion_logs_wal_fsyncs_total",
            "counter",
            "WAL fsyncs since start.",
            wal.fsyncs.load(Ordering::Relaxed),
        ),
        (
            "ion_logs_wal_budget_refusals_total",
            "counter",
            "Appends refused because the disk budget was full.",
            wal.budget_refusals.load(Ordering::Relaxed),
        ),
        (
            "ion_logs_wal_lost_bytes_total",
            "counter",
            "Bytes of once-durable WAL data lost to damage.",
            wal.lost_bytes.load(Ordering::Relaxed),
        ),
        (
            "ion_logs_wal_torn_bytes_total",
            "counter",
            "Bytes of interrupted, never-acknowledged writes cut at recovery.",
            wal.torn_bytes.load(Ordering::Relaxed),
        ),
        (
            "ion_logs_wal_corrupt_segments_total",
            "counter",
            "Damaged WAL segments found.",
            wal.corrupt_segments.load(Ordering::Relaxed),
        ),
        (
            "ion_logs_bulk_requests_total",
            "counter",
            "Bulk requests sent.",
            s.bulks.load(Ordering::Relaxed),
        ),
        (
            "ion_logs_bulk_item_retries_total",
            "counter",
            "Bulk items sent again after a transient failure.",
            s.item_retries.load(Ordering::Relaxed),
        ),
        (
            "ion_logs_archived_segments_total",
            "counter",
            "Segments archived and deleted.",
            s.archived_segments.load(Ordering::Relaxed),
        ),
        (
            "ion_logs_archive_failures_total",
            "counter",
            "Segment archive uploads that failed.",
            s.archive_failures.load(Ordering::Relaxed),
        ),
        (
            "ion_logs_healthy",
            "gauge",
            "1 when the node is healthy.",
            u64::from(health_problems(state).is_empty()),
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    }
    out
}

async fn metrics(State(state): State<Arc<ApiState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        render_metrics(&state),
    )
        .into_response()
}
