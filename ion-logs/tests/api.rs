//! The HTTP API on an in-process node over the fakes: status codes, counts, auth, limits,
//! backpressure, search, metrics and health.

use std::sync::Arc;
use std::time::Duration;

use ion_core::fake::{InMemoryBlobStore, InMemoryDocumentStore, InMemoryLogIndex};
use ion_core::TenantId;
use ion_logs::node::IndexSettingsConfig;
use ion_logs::rate::RateLimit;
use ion_logs::tokens::token_id;
use ion_logs::{Aggregator, AggregatorConfig, NodeBackends, TenantBootstrap, WalConfig};
use serde_json::Value;

const TOKEN_A: &str = "ion_token_of_tenant_a";
const TOKEN_B: &str = "ion_token_of_tenant_b";

struct Harness {
    node: Aggregator,
    fake: InMemoryLogIndex,
    http: reqwest::Client,
    base: String,
    _dir: tempfile::TempDir,
}

async fn start(tweak: impl FnOnce(&mut AggregatorConfig)) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let mut config = AggregatorConfig {
        listen: "127.0.0.1:0".into(),
        wal: WalConfig {
            dir: dir.path().join("wal"),
            node_name: "api-test".into(),
            ..WalConfig::default()
        },
        index_settings: IndexSettingsConfig {
            shards: 1,
            replicas: 0,
            refresh_ms: 1000,
        },
        tenants: vec![
            TenantBootstrap {
                tenant: TenantId::parse("tenant-a").unwrap(),
                token_sha256: token_id(TOKEN_A),
                rate: None,
            },
            TenantBootstrap {
                tenant: TenantId::parse("tenant-b").unwrap(),
                token_sha256: token_id(TOKEN_B),
                rate: Some(RateLimit {
                    bytes_per_s: 1000,
                    burst_bytes: 1000,
                }),
            },
        ],
        token_cache_ms: 0,
        ..AggregatorConfig::default()
    };
    config.shipper.linger_ms = 1;
    config.shipper.checkpoint_interval_ms = 20;
    tweak(&mut config);
    let fake = InMemoryLogIndex::new();
    let backends = NodeBackends {
        index: Arc::new(fake.clone()),
        dead_letters: Arc::new(InMemoryDocumentStore::new()),
        archive: Arc::new(InMemoryBlobStore::new()),
        tokens: Arc::new(InMemoryDocumentStore::new()),
    };
    let node = Aggregator::start(config, backends).await.unwrap();
    let base = format!("http://{}", node.addr);
    Harness {
        node,
        fake,
        http: reqwest::Client::new(),
        base,
        _dir: dir,
    }
}

fn line(app: &str, message: &str) -> String {
    serde_json::json!({"app": app, "message": message, "level": "info"}).to_string()
}

impl Harness {
    async fn post(&self, token: Option<&str>, body: String) -> (u16, Option<String>, Value) {
        let mut req = self.http.post(format!("{}/v1/logs", self.base)).body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let retry = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = resp.json().await.unwrap_or(Value::Null);
        (status, retry, body)
    }

    async fn search(&self, token: &str, query: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}/v1/logs/search?{query}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }

    async fn text(&self, path: &str) -> (u16, String) {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    async fn wait_indexed(&self, n: usize) {
        for _ in 0..500 {
            if self.fake.stored_count() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("only {} of {n} records indexed", self.fake.stored_count());
    }
}

#[tokio::test]
async fn accepted_lines_are_acknowledged_indexed_and_searchable_by_their_tenant_only() {
    let h = start(|_| {}).await;
    let body = (0..20)
        .map(|i| line("web", &format!("request {i} served")))
        .collect::<Vec<_>>()
        .join("\n");
    let (status, _, resp) = h.post(Some(TOKEN_A), body).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["accepted"], 20);
    assert_eq!(resp["rejected"], serde_json::json!([]));
    h.wait_indexed(20).await;
    ion_core::LogIndex::refresh(&h.fake).await.unwrap();

    let (status, page) = h.search(TOKEN_A, "text=served&limit=15").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["records"].as_array().unwrap().len(), 15);
    assert!(page["records"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["tenant"] == "tenant-a"));
    let cursor = page["next"].as_str().unwrap().to_owned();
    let (_, rest) = h
        .search(TOKEN_A, &format!("text=served&limit=15&cursor={cursor}"))
        .await;
    assert_eq!(rest["records"].as_array().unwrap().len(), 5);
    assert!(rest["next"].is_null());

    let (_, other) = h.search(TOKEN_B, "text=served").await;
    assert_eq!(
        other["records"],
        serde_json::json!([]),
        "tenant b sees none of a's records"
    );

    let (status, _) = h.search(TOKEN_A, "from=yesterday").await;
    assert_eq!(status, 400);
    h.node.shutdown().await;
}

#[tokio::test]
async fn bad_lines_are_named_and_good_lines_still_accepted() {
    let h = start(|_| {}).await;
    let body = [
        line("web", "fine"),
        "{not json".to_owned(),
        serde_json::json!({"app": "web", "message": "spoof", "tenant": "tenant-b"}).to_string(),
        line("web", "also fine"),
        line("BAD APP", "x"),
    ]
    .join("\n");
    let (status, _, resp) = h.post(Some(TOKEN_A), body).await;
    assert_eq!(status, 400);
    assert_eq!(resp["accepted"], 2);
    let lines: Vec<u64> = resp["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [2, 3, 5]);
    assert!(resp["rejected"][1]["reason"]
        .as_str()
        .unwrap()
        .contains("tenant"));
    h.wait_indexed(2).await;
    let c = h
        .node
        .state
        .ledger
        .get(&TenantId::parse("tenant-a").unwrap());
    assert_eq!((c.received, c.durable, c.rejected), (5, 2, 3));
    assert_eq!(
        h.node
            .state
            .ledger
            .get(&TenantId::parse("tenant-b").unwrap())
            .received,
        0,
        "the payload's tenant is never used"
    );
    h.node.shutdown().await;
}

#[tokio::test]
async fn auth_failures_are_401_and_revoked_tokens_403() {
    let h = start(|_| {}).await;
    assert_eq!(h.post(None, line("web", "x")).await.0, 401);
    assert_eq!(h.post(Some("ion_wrong"), line("web", "x")).await.0, 401);
    let t = TenantId::parse("tenant-a").unwrap();
    let issued = h.node.state.tokens.issue(&t, "temp").await.unwrap();
    assert_eq!(h.post(Some(&issued.token), line("web", "x")).await.0, 200);
    h.node.state.tokens.revoke(&issued.id).await.unwrap();
    assert_eq!(h.post(Some(&issued.token), line("web", "x")).await.0, 403);
    let resp = h
        .http
        .get(format!("{}/v1/logs/search", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    h.node.shutdown().await;
}

#[tokio::test]
async fn oversized_bodies_are_413_and_fast_tenants_get_429_with_retry_after() {
    let h = start(|c| c.limits.max_body_bytes = 4096).await;
    let big = (0..100)
        .map(|i| line("web", &format!("line {i} {}", "x".repeat(50))))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(h.post(Some(TOKEN_A), big).await.0, 413);

    // tenant-b may send 1000 bytes per second.
    let body = (0..8)
        .map(|i| line("web", &format!("msg {i} {}", "x".repeat(40))))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(body.len() < 1000);
    let (first, _, _) = h.post(Some(TOKEN_B), body.clone()).await;
    assert_eq!(first, 200);
    let (second, retry, resp) = h.post(Some(TOKEN_B), body.clone()).await;
    assert_eq!(second, 429, "{resp}");
    assert!(retry.unwrap().parse::<u64>().unwrap() >= 1);
    // The other tenant is not affected.
    assert_eq!(h.post(Some(TOKEN_A), body).await.0, 200);
    let c = h
        .node
        .state
        .ledger
        .get(&TenantId::parse("tenant-b").unwrap());
    assert_eq!((c.durable, c.rejected), (8, 8));
    h.node.shutdown().await;
}

#[tokio::test]
async fn a_full_disk_budget_answers_503_and_keeps_acknowledged_data() {
    let h = start(|c| {
        c.wal.disk_budget_bytes = 20_000;
        c.wal.segment_bytes = 8_000;
    })
    .await;
    // With the index down nothing drains, so the WAL fills up.
    h.fake.set_unavailable(true);
    let mut acked = 0u64;
    let mut refused = None;
    for round in 0..100 {
        let body = (0..10)
            .map(|i| line("web", &format!("round {round} line {i}")))
            .collect::<Vec<_>>()
            .join("\n");
        let (status, retry, resp) = h.post(Some(TOKEN_A), body).await;
        match status {
            200 => acked += resp["accepted"].as_u64().unwrap(),
            503 => {
                refused = Some(retry);
                break;
            }
            s => panic!("unexpected {s}: {resp}"),
        }
    }
    let retry = refused.expect("the budget fills up and ingest answers 503");
    assert!(retry.is_some(), "503 carries Retry-After");
    assert!(acked > 0);
    h.fake.set_unavailable(false);
    h.wait_indexed(acked as usize).await;
    assert_eq!(
        h.fake.stored_count() as u64,
        acked,
        "every acknowledged line, nothing else"
    );
    h.node.shutdown().await;
}

#[tokio::test]
async fn metrics_show_the_ledger_and_health_follows_draining() {
    let h = start(|c| c.stall_after_ms = 300).await;
    assert_eq!(h.text("/healthz").await.0, 200);
    let (status, _, _) = h.post(Some(TOKEN_A), line("web", "hello")).await;
    assert_eq!(status, 200);
    h.wait_indexed(1).await;
    let (_, metrics) = h.text("/metrics").await;
    assert!(
        metrics.contains("ion_logs_records_total{tenant=\"tenant-a\",stage=\"indexed\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("ion_logs_in_flight{tenant=\"tenant-a\"} 0"));

    h.fake.set_unavailable(true);
    h.post(Some(TOKEN_A), line("web", "stuck")).await;
    let mut unhealthy = false;
    for _ in 0..300 {
        let (status, body) = h.text("/healthz").await;
        if status == 503 {
            assert!(body.contains("not draining"), "{body}");
            unhealthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(unhealthy, "health turns bad when the wal stops draining");
    h.fake.set_unavailable(false);
    h.wait_indexed(2).await;
    for _ in 0..300 {
        if h.text("/healthz").await.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h.text("/healthz").await.0, 200);
    h.node.shutdown().await;
}

#[tokio::test]
async fn retention_deletes_only_days_before_the_cutoff() {
    use ion_core::{AppId, LogIndex, LogLevel, LogRecord, RecordId, Timestamp};
    let fake = InMemoryLogIndex::new();
    let day = |d: &str| Timestamp::parse_rfc3339(&format!("{d}T12:00:00Z")).unwrap();
    let records: Vec<LogRecord> = ["2026-01-01", "2026-01-02", "2026-01-03"]
        .iter()
        .enumerate()
        .map(|(i, d)| LogRecord {
            id: RecordId::parse(&format!("r{i}")).unwrap(),
            tenant: TenantId::parse("acme").unwrap(),
            app: AppId::parse("web").unwrap(),
            instance: None,
            time: day(d),
            level: LogLevel::Info,
            message: "m".into(),
            fields: Default::default(),
        })
        .collect();
    fake.bulk(&records).await.unwrap();
    let deleted = ion_logs::node::delete_expired_indices(&fake, day("2026-01-02"))
        .await
        .unwrap();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0], fake.layout().index_for(day("2026-01-01")));
    assert_eq!(fake.list_indices().await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_stalled_tenants_backlog_is_capped_without_touching_others() {
    let h = start(|c| c.tenant_backlog_records = 30).await;
    h.fake.set_unavailable(true);
    let body = (0..10)
        .map(|i| line("web", &format!("m {i}")))
        .collect::<Vec<_>>()
        .join("\n");
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(h.post(Some(TOKEN_A), body.clone()).await.0);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    // Another tenant still gets in (its own backlog is empty).
    let small = line("web", "other tenant");
    assert_eq!(h.post(Some(TOKEN_B), small).await.0, 200);
    h.fake.set_unavailable(false);
    h.wait_indexed(31).await;
    assert_eq!(h.fake.stored_count(), 31);
    assert_eq!(
        h.post(Some(TOKEN_A), body).await.0,
        200,
        "room again once delivered"
    );
    h.node.shutdown().await;
}
