//! `ElasticsearchLogIndex`: the `LogIndex` trait on Elasticsearch 8/9 or OpenSearch 2, over a
//! list of nodes with round-robin, dead-node marking and retry on another node.
//!
//! The `elasticsearch` crate's default connection pool holds one node, so this backend builds one
//! `Transport` per node and rotates itself. A request that fails to connect, times out or gets
//! 502/503/504 marks the node dead for a growing while and is retried on the next node; dead
//! nodes are tried last, never skipped entirely. Retrying a bulk is safe: every document is a
//! `create` with the record's deterministic id, so a repeat is a per-item 409.
//!
//! Index layout: shared daily indices (`<prefix>-YYYY.MM.DD`) with the tenant as a keyword field
//! and as the routing key. Every search carries a `term` filter on the tenant that ion adds and
//! routes to that tenant's shard; query text is never parsed as query syntax: ion splits it into
//! words ([`ion_core::log_index::tokenize`]) and matches each as an exact `term` on a keyword
//! array of the message's words, indexed beside the analysed message.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use elasticsearch::auth::Credentials;
use elasticsearch::http::headers::{HeaderMap, HeaderValue, CONTENT_TYPE};
use elasticsearch::http::transport::{SingleNodeConnectionPool, Transport, TransportBuilder};
use elasticsearch::http::{Method, Url};
use ion_core::log_index::{tokenize, LogIndexCapabilities, SearchFlavour};
use ion_core::{
    BulkOutcome, Error, IndexInfo, IndexLayout, IndexName, IndexSettings, LogIndex, LogPage,
    LogQuery, LogRecord, Result, SearchCursor, TenantId,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Settings of an [`ElasticsearchLogIndex`].
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ElasticsearchConfig {
    /// Node URLs (`http://host:9200`), all of one cluster.
    pub nodes: Vec<String>,
    /// Index name prefix (`[a-z][a-z0-9-]{0,40}`); indices are `<prefix>-YYYY.MM.DD`.
    pub index_prefix: String,
    /// Client-side timeout of one request to one node, in milliseconds.
    pub request_timeout_ms: u64,
    /// Server-side wait for unavailable shards in a bulk, in milliseconds (then 503 per item).
    pub bulk_shard_timeout_ms: u64,
    /// How long a failed node is first avoided, in milliseconds (doubling per failure, ≤ 30 s).
    pub dead_node_backoff_ms: u64,
    /// Basic-auth user, if the cluster needs one.
    pub username: Option<String>,
    /// Basic-auth password (never printed).
    pub password: Option<String>,
}

impl std::fmt::Debug for ElasticsearchConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElasticsearchConfig")
            .field("nodes", &self.nodes)
            .field("index_prefix", &self.index_prefix)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("bulk_shard_timeout_ms", &self.bulk_shard_timeout_ms)
            .field("dead_node_backoff_ms", &self.dead_node_backoff_ms)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Default for ElasticsearchConfig {
    fn default() -> Self {
        Self {
            nodes: Vec::new(),
            index_prefix: "ion-logs".into(),
            request_timeout_ms: 30_000,
            bulk_shard_timeout_ms: 10_000,
            dead_node_backoff_ms: 1_000,
            username: None,
            password: None,
        }
    }
}

impl ElasticsearchConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> ElasticsearchConfigBuilder {
        ElasticsearchConfigBuilder(Self::default())
    }

    /// From `ION_LOGS_ES_NODES` (comma-separated), `ION_LOGS_INDEX_PREFIX`,
    /// `ION_LOGS_ES_USERNAME`, `ION_LOGS_ES_PASSWORD`.
    pub fn from_env() -> Result<Self> {
        let mut b = Self::builder();
        if let Ok(nodes) = std::env::var("ION_LOGS_ES_NODES") {
            b = b.nodes(nodes.split(',').map(|s| s.trim().to_owned()));
        }
        if let Ok(p) = std::env::var("ION_LOGS_INDEX_PREFIX") {
            b = b.index_prefix(&p);
        }
        if let (Ok(u), Ok(p)) = (
            std::env::var("ION_LOGS_ES_USERNAME"),
            std::env::var("ION_LOGS_ES_PASSWORD"),
        ) {
            b = b.basic_auth(&u, &p);
        }
        b.build()
    }

    /// Checks every value, naming the key that is wrong.
    pub fn validate(&self) -> Result<()> {
        if self.nodes.is_empty() {
            return Err(Error::invalid_config(
                "nodes: at least one node url is needed",
            ));
        }
        for n in &self.nodes {
            let ok = Url::parse(n)
                .map(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .unwrap_or(false);
            if !ok {
                return Err(Error::invalid_config(format!(
                    "nodes: {n:?} is not an http(s) url"
                )));
            }
        }
        IndexLayout::new(&self.index_prefix)
            .map_err(|e| Error::invalid_config(format!("index_prefix: {}", e.message())))?;
        if self.request_timeout_ms == 0 {
            return Err(Error::invalid_config(
                "request_timeout_ms: must be positive",
            ));
        }
        if self.username.is_some() != self.password.is_some() {
            return Err(Error::invalid_config(
                "username: username and password go together",
            ));
        }
        Ok(())
    }
}

/// Builds an [`ElasticsearchConfig`].
#[derive(Debug, Clone)]
pub struct ElasticsearchConfigBuilder(ElasticsearchConfig);

impl ElasticsearchConfigBuilder {
    /// Node URLs.
    pub fn nodes(mut self, nodes: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.0.nodes = nodes.into_iter().map(Into::into).collect();
        self
    }
    /// Index prefix.
    pub fn index_prefix(mut self, prefix: &str) -> Self {
        self.0.index_prefix = prefix.to_owned();
        self
    }
    /// Per-request timeout.
    pub fn request_timeout(mut self, t: Duration) -> Self {
        self.0.request_timeout_ms = t.as_millis() as u64;
        self
    }
    /// Basic auth.
    pub fn basic_auth(mut self, user: &str, password: &str) -> Self {
        self.0.username = Some(user.to_owned());
        self.0.password = Some(password.to_owned());
        self
    }
    /// Validates and returns the config.
    pub fn build(self) -> Result<ElasticsearchConfig> {
        self.0.validate()?;
        Ok(self.0)
    }
}

struct Node {
    url: String,
    transport: Transport,
    dead_until: Mutex<Option<Instant>>,
    failures: AtomicU32,
}

/// The `LogIndex` on Elasticsearch or OpenSearch (see the module docs).
pub struct ElasticsearchLogIndex {
    nodes: Vec<Node>,
    next: AtomicUsize,
    layout: IndexLayout,
    flavour: SearchFlavour,
    config: ElasticsearchConfig,
}

impl std::fmt::Debug for ElasticsearchLogIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElasticsearchLogIndex")
            .field(
                "nodes",
                &self.nodes.iter().map(|n| &n.url).collect::<Vec<_>>(),
            )
            .field("layout", &self.layout)
            .field("flavour", &self.flavour)
            .finish()
    }
}

struct Reply {
    status: u16,
    body: Bytes,
    elastic_product: bool,
}

/// Maps an HTTP status and error body from the server to an ion error. The one place server
/// errors become [`Error`]s.
pub fn map_status(status: u16, body: &[u8]) -> Error {
    let reason = error_reason(body);
    let msg = format!("search server answered {status}: {reason}");
    match status {
        400 | 413 => Error::invalid_input(msg),
        401 | 403 => Error::permission_denied(msg),
        404 => Error::not_found(msg),
        409 => Error::conflict(msg),
        429 => Error::rate_limited(msg),
        500..=599 => Error::unavailable(msg),
        _ => Error::unexpected(msg),
    }
}

/// Maps a transport failure (connect, timeout, TLS) to an ion error: always transient.
pub fn map_transport_error(url: &str, e: elasticsearch::Error) -> Error {
    let what = if e.is_timeout() {
        "timed out"
    } else {
        "failed"
    };
    Error::unavailable(format!("request to {url} {what}: {e}")).with_source(e)
}

fn error_reason(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let e = &v["error"];
    let mut s = match (e["type"].as_str(), e["reason"].as_str()) {
        (Some(t), Some(r)) => format!("{t}: {r}"),
        (Some(t), None) => t.to_owned(),
        _ => match e.as_str() {
            Some(s) => s.to_owned(),
            None => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        },
    };
    s.truncate(500);
    s
}

/// The outcome of one bulk item from its status and error object.
pub fn item_outcome(status: u16, error: &Value) -> BulkOutcome {
    let kind = error["type"].as_str().unwrap_or("");
    let mut reason = match error["reason"].as_str() {
        Some(r) => format!("{kind}: {r}"),
        None => kind.to_owned(),
    };
    reason.truncate(1000);
    match status {
        200 | 201 => BulkOutcome::Created,
        409 => BulkOutcome::AlreadyExists,
        429 | 500..=599 => BulkOutcome::Retryable { status, reason },
        _ if kind == "unavailable_shards_exception"
            || kind == "es_rejected_execution_exception"
            || kind == "circuit_breaking_exception" =>
        {
            BulkOutcome::Retryable { status, reason }
        }
        _ => BulkOutcome::Rejected { status, reason },
    }
}

/// The server flavour from `GET /` (when it answers) or the nodes API version plus whether
/// responses carry `X-Elastic-Product`.
pub fn detect_flavour(
    root: Option<&Value>,
    node_version: Option<&str>,
    elastic_product: bool,
) -> Option<SearchFlavour> {
    let major = |v: &str| v.split('.').next().and_then(|m| m.parse::<u32>().ok());
    if let Some(root) = root {
        let number = root["version"]["number"].as_str()?;
        let m = major(number)?;
        return Some(
            if root["version"]["distribution"].as_str() == Some("opensearch") {
                SearchFlavour::OpenSearch(m)
            } else {
                SearchFlavour::Elasticsearch(m)
            },
        );
    }
    let m = major(node_version?)?;
    Some(if elastic_product {
        SearchFlavour::Elasticsearch(m)
    } else {
        SearchFlavour::OpenSearch(m)
    })
}

#[derive(Serialize)]
struct EsDoc<'a> {
    id: &'a str,
    tenant: &'a str,
    app: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    instance: Option<&'a str>,
    time: ion_core::Timestamp,
    level: ion_core::LogLevel,
    message: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    fields: &'a BTreeMap<ion_core::FieldName, String>,
    words: Vec<String>,
}

/// Appends the bulk lines (action and document) for `record` to `out`.
pub fn bulk_lines(layout: &IndexLayout, record: &LogRecord, out: &mut Vec<u8>) {
    let index = layout.index_for(record.time);
    // Validated names only ([a-z0-9._-]): safe to place between quotes as they are.
    out.extend_from_slice(
        format!(
            "{{\"create\":{{\"_index\":\"{index}\",\"_id\":\"{}\",\"routing\":\"{}\"}}}}\n",
            record.id, record.tenant
        )
        .as_bytes(),
    );
    let mut words = tokenize(&record.message);
    words.sort();
    words.dedup();
    let doc = EsDoc {
        id: record.id.as_str(),
        tenant: record.tenant.as_str(),
        app: record.app.as_str(),
        instance: record.instance.as_ref().map(|i| i.as_str()),
        time: record.time,
        level: record.level,
        message: &record.message,
        fields: &record.fields,
        words,
    };
    serde_json::to_writer(&mut *out, &doc).expect("documents serialize");
    out.push(b'\n');
}

/// The search request body for one tenant: ion's tenant filter first, then the query's filters.
pub fn search_body(tenant: &TenantId, query: &LogQuery) -> Result<Value> {
    let mut filter = vec![json!({"term": {"tenant": tenant.as_str()}})];
    if query.from.is_some() || query.to.is_some() {
        let mut range = serde_json::Map::new();
        if let Some(f) = query.from {
            range.insert("gte".into(), json!(f.as_millis()));
        }
        if let Some(t) = query.to {
            range.insert("lt".into(), json!(t.as_millis()));
        }
        range.insert("format".into(), json!("epoch_millis"));
        filter.push(json!({"range": {"time": range}}));
    }
    if !query.levels.is_empty() {
        let levels: Vec<&str> = query.levels.iter().map(|l| l.as_str()).collect();
        filter.push(json!({"terms": {"level": levels}}));
    }
    if let Some(app) = &query.app {
        filter.push(json!({"term": {"app": app.as_str()}}));
    }
    if let Some(i) = &query.instance {
        filter.push(json!({"term": {"instance": i.as_str()}}));
    }
    let words = query.words();
    if words.len() > 64 {
        return Err(Error::invalid_input("search text has more than 64 words"));
    }
    for w in words {
        // An exact term on a keyword array: the text is data, never query syntax.
        filter.push(json!({"term": {"words": w}}));
    }
    let mut body = json!({
        "size": query.page_size() + 1,
        "track_total_hits": false,
        "sort": [{"time": {"order": "desc"}}, {"id": {"order": "desc"}}],
        "query": {"bool": {"filter": filter}},
    });
    if let Some(after) = &query.after {
        body["search_after"] = json!([after.time.as_millis(), after.id.as_str()]);
    }
    Ok(body)
}

/// The index template for a layout and settings.
pub fn template_body(layout: &IndexLayout, settings: &IndexSettings) -> Value {
    json!({
        "index_patterns": [layout.pattern()],
        // Longer prefixes are more specific; equal-length prefixes never overlap.
        "priority": 100 + layout.prefix().len(),
        "template": {
            "settings": {
                "number_of_shards": settings.shards,
                "number_of_replicas": settings.replicas,
                "refresh_interval": format!("{}ms", settings.refresh_interval.as_millis()),
            },
            "mappings": {
                "dynamic": "strict",
                "_routing": {"required": true},
                "dynamic_templates": [{
                    "fields_as_keywords": {
                        "path_match": "fields.*",
                        "mapping": {"type": "keyword", "ignore_above": 1024}
                    }
                }],
                "properties": {
                    "id": {"type": "keyword"},
                    "tenant": {"type": "keyword"},
                    "app": {"type": "keyword"},
                    "instance": {"type": "keyword"},
                    "level": {"type": "keyword"},
                    "time": {"type": "date", "format": "strict_date_optional_time||epoch_millis"},
                    "message": {"type": "text"},
                    "words": {"type": "keyword", "ignore_above": 256},
                    "fields": {"type": "object", "dynamic": true}
                }
            }
        }
    })
}

impl ElasticsearchLogIndex {
    /// Connects to the cluster, detecting its flavour from the first node that answers.
    pub async fn connect(config: ElasticsearchConfig) -> Result<Self> {
        config.validate()?;
        let mut nodes = Vec::new();
        for n in &config.nodes {
            let url =
                Url::parse(n).map_err(|e| Error::invalid_config(format!("nodes: {n:?}: {e}")))?;
            let mut b = TransportBuilder::new(SingleNodeConnectionPool::new(url))
                .timeout(Duration::from_millis(config.request_timeout_ms))
                .disable_proxy();
            if let (Some(u), Some(p)) = (&config.username, &config.password) {
                b = b.auth(Credentials::Basic(u.clone(), p.clone()));
            }
            let transport = b
                .build()
                .map_err(|e| Error::invalid_config(format!("nodes: {n:?}: {e}")))?;
            nodes.push(Node {
                url: n.clone(),
                transport,
                dead_until: Mutex::new(None),
                failures: AtomicU32::new(0),
            });
        }
        let layout = IndexLayout::new(&config.index_prefix)?;
        let mut index = Self {
            nodes,
            next: AtomicUsize::new(0),
            layout,
            flavour: SearchFlavour::Elasticsearch(8),
            config,
        };
        index.flavour = index.detect().await?;
        tracing::info!(flavour = ?index.flavour, nodes = index.nodes.len(), "search cluster connected");
        Ok(index)
    }

    async fn detect(&self) -> Result<SearchFlavour> {
        let root = self.send(Method::Get, "/", &[], None, false).await?;
        let root_json = (root.status == 200)
            .then(|| serde_json::from_slice::<Value>(&root.body).ok())
            .flatten();
        let (version, elastic) = if root_json.is_none() {
            let nodes = self
                .send(
                    Method::Get,
                    "/_nodes/_local",
                    &[("filter_path", "nodes.*.version".into())],
                    None,
                    false,
                )
                .await?;
            if nodes.status != 200 {
                return Err(map_status(nodes.status, &nodes.body));
            }
            let v: Value = serde_json::from_slice(&nodes.body)
                .map_err(|e| Error::unexpected(format!("nodes info: {e}")))?;
            let version = v["nodes"]
                .as_object()
                .and_then(|m| m.values().next())
                .and_then(|n| n["version"].as_str())
                .map(str::to_owned);
            (version, nodes.elastic_product)
        } else {
            (None, root.elastic_product)
        };
        detect_flavour(root_json.as_ref(), version.as_deref(), elastic)
            .ok_or_else(|| Error::unsupported("cannot tell the search server's version"))
    }

    fn order(&self) -> Vec<usize> {
        let n = self.nodes.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let now = Instant::now();
        let mut alive = Vec::new();
        let mut dead = Vec::new();
        for k in 0..n {
            let i = (start + k) % n;
            let until = *self.nodes[i].dead_until.lock().expect("node lock");
            if until.is_some_and(|u| u > now) {
                dead.push(i);
            } else {
                alive.push(i);
            }
        }
        alive.extend(dead);
        alive
    }

    fn mark_dead(&self, i: usize) {
        let node = &self.nodes[i];
        let f = node.failures.fetch_add(1, Ordering::Relaxed).min(5);
        let wait = Duration::from_millis(self.config.dead_node_backoff_ms << f)
            .min(Duration::from_secs(30));
        *node.dead_until.lock().expect("node lock") = Some(Instant::now() + wait);
        tracing::warn!(node = %node.url, avoid_ms = wait.as_millis() as u64, "search node marked dead");
    }

    fn mark_alive(&self, i: usize) {
        let node = &self.nodes[i];
        if node.failures.swap(0, Ordering::Relaxed) > 0 {
            *node.dead_until.lock().expect("node lock") = None;
            tracing::info!(node = %node.url, "search node answers again");
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Bytes>,
        ndjson: bool,
    ) -> Result<Reply> {
        let mut headers = HeaderMap::new();
        if ndjson {
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-ndjson"),
            );
        }
        let mut last: Option<Error> = None;
        for i in self.order() {
            let node = &self.nodes[i];
            let sent = node
                .transport
                .send(
                    method,
                    path,
                    headers.clone(),
                    Some(&query),
                    body.clone(),
                    None,
                )
                .await;
            let resp = match sent {
                Ok(r) => r,
                Err(e) => {
                    self.mark_dead(i);
                    last = Some(map_transport_error(&node.url, e));
                    continue;
                }
            };
            let status = resp.status_code().as_u16();
            let elastic_product = resp.headers().contains_key("x-elastic-product");
            let body = match resp.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    self.mark_dead(i);
                    last = Some(map_transport_error(&node.url, e));
                    continue;
                }
            };
            if matches!(status, 502..=504) {
                // This node cannot serve (stopping, no master, proxy in front lost it): try
                // another one.
                self.mark_dead(i);
                last = Some(map_status(status, &body));
                continue;
            }
            self.mark_alive(i);
            return Ok(Reply {
                status,
                body,
                elastic_product,
            });
        }
        Err(last.unwrap_or_else(|| Error::unavailable("no search node configured")))
    }

    fn ok(reply: Reply) -> Result<Value> {
        if !(200..300).contains(&reply.status) {
            return Err(map_status(reply.status, &reply.body));
        }
        serde_json::from_slice(&reply.body)
            .map_err(|e| Error::unexpected(format!("search server reply is not json: {e}")))
    }
}

#[async_trait]
impl LogIndex for ElasticsearchLogIndex {
    fn capabilities(&self) -> LogIndexCapabilities {
        LogIndexCapabilities {
            flavour: self.flavour,
        }
    }

    fn layout(&self) -> &IndexLayout {
        &self.layout
    }

    async fn ensure_templates(&self, settings: &IndexSettings) -> Result<()> {
        let body = template_body(&self.layout, settings);
        let composable = match self.flavour {
            SearchFlavour::Elasticsearch(m) => m >= 8,
            SearchFlavour::OpenSearch(m) => m >= 1,
            SearchFlavour::InMemory => true,
        };
        let (path, body) = if composable {
            (format!("/_index_template/{}", self.layout.prefix()), body)
        } else {
            // Legacy templates for servers without composable ones.
            let mut legacy = body["template"].clone();
            legacy["index_patterns"] = body["index_patterns"].clone();
            legacy["order"] = body["priority"].clone();
            (format!("/_template/{}", self.layout.prefix()), legacy)
        };
        let reply = self
            .send(
                Method::Put,
                &path,
                &[],
                Some(Bytes::from(body.to_string())),
                false,
            )
            .await?;
        Self::ok(reply).map(|_| ())
    }

    async fn bulk(&self, records: &[LogRecord]) -> Result<Vec<BulkOutcome>> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let mut body = Vec::with_capacity(records.len() * 400);
        for r in records {
            bulk_lines(&self.layout, r, &mut body);
        }
        let reply = self
            .send(
                Method::Post,
                "/_bulk",
                &[
                    (
                        "timeout",
                        format!("{}ms", self.config.bulk_shard_timeout_ms),
                    ),
                    (
                        "filter_path",
                        "errors,items.*.status,items.*.error.type,items.*.error.reason".into(),
                    ),
                ],
                Some(Bytes::from(body)),
                true,
            )
            .await?;
        let v = Self::ok(reply)?;
        let items = v["items"].as_array().cloned().unwrap_or_default();
        if items.len() != records.len() {
            return Err(Error::unexpected(format!(
                "bulk answered {} items for {} records",
                items.len(),
                records.len()
            )));
        }
        Ok(items
            .iter()
            .map(|item| {
                let op = item
                    .as_object()
                    .and_then(|o| o.values().next())
                    .cloned()
                    .unwrap_or(Value::Null);
                let status = op["status"].as_u64().unwrap_or(500) as u16;
                item_outcome(status, &op["error"])
            })
            .collect())
    }

    async fn refresh(&self) -> Result<()> {
        let reply = self
            .send(
                Method::Post,
                &format!("/{}/_refresh", self.layout.pattern()),
                &[
                    ("ignore_unavailable", "true".into()),
                    ("allow_no_indices", "true".into()),
                ],
                None,
                false,
            )
            .await?;
        Self::ok(reply).map(|_| ())
    }

    async fn search(&self, tenant: &TenantId, query: &LogQuery) -> Result<LogPage> {
        let body = search_body(tenant, query)?;
        let reply = self
            .send(
                Method::Post,
                &format!("/{}/_search", self.layout.pattern()),
                &[
                    ("routing", tenant.as_str().to_owned()),
                    ("ignore_unavailable", "true".into()),
                    ("allow_no_indices", "true".into()),
                ],
                Some(Bytes::from(body.to_string())),
                false,
            )
            .await?;
        let v = Self::ok(reply)?;
        let hits = v["hits"]["hits"].as_array().cloned().unwrap_or_default();
        let size = query.page_size();
        let mut records = Vec::with_capacity(hits.len().min(size));
        for h in hits.into_iter().take(size + 1) {
            let r: LogRecord = serde_json::from_value(h["_source"].clone()).map_err(|e| {
                Error::unexpected(format!("stored document is not a log record: {e}"))
            })?;
            // Defence in depth: the query filters on the tenant; never return anything else.
            if r.tenant != *tenant {
                return Err(Error::unexpected("search returned another tenant's record"));
            }
            records.push(r);
        }
        let more = records.len() > size;
        records.truncate(size);
        let next = if more {
            records.last().map(|r| SearchCursor {
                time: r.time,
                id: r.id.clone(),
            })
        } else {
            None
        };
        Ok(LogPage { records, next })
    }

    async fn list_indices(&self) -> Result<Vec<IndexInfo>> {
        let reply = self
            .send(
                Method::Get,
                &format!("/_cat/indices/{}", self.layout.pattern()),
                &[("format", "json".into()), ("h", "index,docs.count".into())],
                None,
                false,
            )
            .await?;
        if reply.status == 404 {
            return Ok(Vec::new());
        }
        let v = Self::ok(reply)?;
        let mut out: Vec<IndexInfo> = v
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|row| {
                let name = IndexName::parse(row["index"].as_str()?).ok()?;
                self.layout.day_of(&name)?;
                let docs = row["docs.count"]
                    .as_str()
                    .and_then(|d| d.parse().ok())
                    .unwrap_or(0);
                Some(IndexInfo { name, docs })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn delete_index(&self, name: &IndexName) -> Result<()> {
        if self.layout.day_of(name).is_none() {
            return Err(Error::invalid_input(format!(
                "{name} is not an index of layout {}",
                self.layout.prefix()
            )));
        }
        let reply = self
            .send(Method::Delete, &format!("/{name}"), &[], None, false)
            .await?;
        match reply.status {
            200..=299 | 404 => Ok(()),
            s => Err(map_status(s, &reply.body)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ion_core::{AppId, ErrorKind, LogLevel, RecordId, Timestamp};

    #[test]
    fn statuses_map_to_kinds() {
        let body = br#"{"error":{"type":"security_exception","reason":"no"}}"#;
        assert_eq!(map_status(401, body).kind(), ErrorKind::PermissionDenied);
        assert_eq!(map_status(403, body).kind(), ErrorKind::PermissionDenied);
        assert!(map_status(403, body)
            .to_string()
            .contains("security_exception"));
        assert!(map_status(429, b"").is_transient());
        assert!(map_status(503, b"").is_transient());
        assert_eq!(map_status(400, b"{}").kind(), ErrorKind::InvalidInput);
        assert!(!map_status(400, b"{}").is_transient());
        assert_eq!(map_status(404, b"x").kind(), ErrorKind::NotFound);
    }

    #[test]
    fn bulk_items_map_to_outcomes() {
        let none = Value::Null;
        assert_eq!(item_outcome(201, &none), BulkOutcome::Created);
        assert_eq!(
            item_outcome(409, &json!({"type": "version_conflict_engine_exception"})),
            BulkOutcome::AlreadyExists
        );
        assert!(matches!(
            item_outcome(429, &json!({"type": "es_rejected_execution_exception"})),
            BulkOutcome::Retryable { status: 429, .. }
        ));
        assert!(matches!(
            item_outcome(503, &json!({"type": "unavailable_shards_exception"})),
            BulkOutcome::Retryable { status: 503, .. }
        ));
        let rejected = item_outcome(
            400,
            &json!({"type": "document_parsing_exception", "reason": "failed to parse field [fields.code]"}),
        );
        assert!(
            matches!(&rejected, BulkOutcome::Rejected { status: 400, reason } if reason.contains("fields.code"))
        );
        assert!(matches!(
            item_outcome(403, &json!({"type": "cluster_block_exception"})),
            BulkOutcome::Rejected { status: 403, .. }
        ));
    }

    #[test]
    fn flavours_are_told_apart() {
        let os = json!({"version": {"number": "2.19.6", "distribution": "opensearch"}});
        assert_eq!(
            detect_flavour(Some(&os), None, false),
            Some(SearchFlavour::OpenSearch(2))
        );
        let es = json!({"version": {"number": "9.2.8"}});
        assert_eq!(
            detect_flavour(Some(&es), None, true),
            Some(SearchFlavour::Elasticsearch(9))
        );
        assert_eq!(
            detect_flavour(None, Some("8.19.21"), true),
            Some(SearchFlavour::Elasticsearch(8))
        );
        assert_eq!(
            detect_flavour(None, Some("2.19.6"), false),
            Some(SearchFlavour::OpenSearch(2))
        );
        assert_eq!(detect_flavour(None, None, true), None);
    }

    #[test]
    fn search_always_filters_on_the_tenant_and_never_passes_query_syntax() {
        let t = TenantId::parse("acme").unwrap();
        let q = LogQuery {
            text: Some(r#"x" OR tenant:other {"match_all":{}} *"#.into()),
            ..LogQuery::default()
        };
        let body = search_body(&t, &q).unwrap();
        let filters = body["query"]["bool"]["filter"].as_array().unwrap();
        assert_eq!(filters[0], json!({"term": {"tenant": "acme"}}));
        assert_eq!(
            body["query"]["bool"].as_object().unwrap().len(),
            1,
            "only filters"
        );
        for f in &filters[1..] {
            assert!(f["term"]["words"].is_string(), "{f}");
        }
        assert!(!body.to_string().contains("query_string"));
    }

    #[test]
    fn bulk_lines_route_by_tenant_with_create_and_the_record_id() {
        let layout = IndexLayout::default();
        let r = LogRecord {
            id: RecordId::parse("acme_n-00000001_1_1c").unwrap(),
            tenant: TenantId::parse("acme").unwrap(),
            app: AppId::parse("web").unwrap(),
            instance: None,
            time: Timestamp::parse_rfc3339("2026-11-26T10:00:00Z").unwrap(),
            level: LogLevel::Info,
            message: "Hello, World hello".into(),
            fields: BTreeMap::new(),
        };
        let mut out = Vec::new();
        bulk_lines(&layout, &r, &mut out);
        let text = String::from_utf8(out).unwrap();
        let mut lines = text.lines();
        let action: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(action["create"]["_index"], "ion-logs-2026.11.26");
        assert_eq!(action["create"]["_id"], "acme_n-00000001_1_1c");
        assert_eq!(action["create"]["routing"], "acme");
        let doc: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(doc["words"], json!(["hello", "world"]));
        let back: LogRecord = serde_json::from_value(doc).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn config_names_the_bad_key() {
        let e = ElasticsearchConfig::builder().build().unwrap_err();
        assert!(e.to_string().contains("nodes"));
        let e = ElasticsearchConfig::builder()
            .nodes(["ftp://x"])
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("nodes"));
        let e = ElasticsearchConfig::builder()
            .nodes(["http://127.0.0.1:9200"])
            .index_prefix("Bad")
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("index_prefix"));
        let c = ElasticsearchConfig::builder()
            .nodes(["http://127.0.0.1:9200"])
            .basic_auth("u", "secret")
            .build()
            .unwrap();
        assert!(!format!("{c:?}").contains("secret"));
    }
}
