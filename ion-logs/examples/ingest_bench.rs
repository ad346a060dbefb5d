//! Ingest benchmark: N records (~250 bytes, many tenants) over HTTP with 16 connections through
//! one aggregator node (durable acks) into the target, against a direct `_bulk` loader of the
//! same records (same batch size and concurrency, no WAL) as the baseline.
//!
//! `cargo run --release -p ion-logs --example ingest_bench -- --target <es-url|fake>
//!  [--records 1000000] [--tenants 50] [--connections 16] [--lines-per-request 500]`
//!
//! The last line is `RESULT ingest events_per_s=<n> baseline_events_per_s=<n> ratio=<r>
//! ack_p99_ms=<ms>`; events/s counts until every record is indexed, not just acknowledged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ion_core::fake::{InMemoryBlobStore, InMemoryDocumentStore, InMemoryLogIndex};
use ion_core::{AppId, InstanceId, LogIndex, LogLevel, LogRecord, RecordId, TenantId, Timestamp};
use ion_logs::node::IndexSettingsConfig;
use ion_logs::tokens::token_id;
use ion_logs::{
    Aggregator, AggregatorConfig, ElasticsearchConfig, ElasticsearchLogIndex, NodeBackends,
    TenantBootstrap, WalConfig,
};

struct Args {
    target: String,
    records: usize,
    tenants: usize,
    connections: usize,
    lines: usize,
    bulk_docs: usize,
    concurrency: usize,
}

fn args() -> Args {
    let mut a = Args {
        target: "fake".into(),
        records: 1_000_000,
        tenants: 50,
        connections: 16,
        lines: 500,
        bulk_docs: 2000,
        concurrency: 2,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < v.len() {
        let val = v[i + 1].clone();
        let n = || val.parse::<usize>().expect("a number");
        match v[i].as_str() {
            "--target" => a.target = val.clone(),
            "--records" => a.records = n(),
            "--tenants" => a.tenants = n(),
            "--connections" => a.connections = n(),
            "--lines-per-request" => a.lines = n(),
            "--bulk-docs" => a.bulk_docs = n(),
            "--concurrency" => a.concurrency = n(),
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    a
}

/// Line `i`: about 250 bytes of NDJSON.
fn line(i: usize, tenants: usize) -> (usize, String) {
    let t = i % tenants;
    let msg = format!(
        "GET /api/v1/orders/{i} completed status=200 bytes={} duration_ms={} user=u{} trace={:016x} region=eu-west-1 cache=miss",
        (i * 7919) % 100_000,
        i % 997,
        i % 10_000,
        (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    );
    let l = serde_json::json!({
        "app": format!("app-{}", i % 7),
        "instance": format!("i-{:08x}", i % 64),
        "level": "info",
        "time": Timestamp::from_millis(1_764_000_000_000 + i as i64).to_string(),
        "message": msg,
    })
    .to_string();
    (t, l)
}

fn record(i: usize, tenants: usize) -> LogRecord {
    let (t, l) = line(i, tenants);
    let v: serde_json::Value = serde_json::from_str(&l).unwrap();
    LogRecord {
        id: RecordId::parse(&format!("base-{i}")).unwrap(),
        tenant: TenantId::parse(&format!("bench-t{t}")).unwrap(),
        app: AppId::parse(v["app"].as_str().unwrap()).unwrap(),
        instance: Some(InstanceId::parse(v["instance"].as_str().unwrap()).unwrap()),
        time: Timestamp::parse_rfc3339(v["time"].as_str().unwrap()).unwrap(),
        level: LogLevel::Info,
        message: v["message"].as_str().unwrap().to_owned(),
        fields: Default::default(),
    }
}

async fn make_index(target: &str, prefix: &str) -> Arc<dyn LogIndex> {
    if target == "fake" {
        return Arc::new(InMemoryLogIndex::new());
    }
    let config = ElasticsearchConfig::builder()
        .nodes(target.split(',').map(str::to_owned))
        .index_prefix(prefix)
        .request_timeout(Duration::from_secs(60))
        .build()
        .expect("es config");
    Arc::new(
        ElasticsearchLogIndex::connect(config)
            .await
            .expect("connect to the search server"),
    )
}

async fn cleanup(index: &dyn LogIndex) {
    if let Ok(indices) = index.list_indices().await {
        for i in indices {
            let _ = index.delete_index(&i.name).await;
        }
    }
}

/// The baseline: the same records straight into `_bulk`, same batch size and concurrency.
async fn baseline(index: Arc<dyn LogIndex>, a: &Args) -> f64 {
    let settings = ion_core::IndexSettings {
        shards: 1,
        replicas: 0,
        refresh_interval: Duration::from_secs(1),
    };
    index.ensure_templates(&settings).await.expect("templates");
    let batches: Vec<Vec<LogRecord>> = (0..a.records)
        .collect::<Vec<_>>()
        .chunks(a.bulk_docs)
        .map(|c| c.iter().map(|i| record(*i, a.tenants)).collect())
        .collect();
    let queue = Arc::new(std::sync::Mutex::new(batches));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.concurrency {
        let queue = queue.clone();
        let index = index.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(mut batch) = queue.lock().unwrap().pop() else {
                    return;
                };
                // Retry only what failed transiently, as a careful loader would.
                while !batch.is_empty() {
                    let outcomes = match index.bulk(&batch).await {
                        Ok(o) => o,
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    batch = batch
                        .into_iter()
                        .zip(outcomes)
                        .filter(|(_, o)| matches!(o, ion_core::BulkOutcome::Retryable { .. }))
                        .map(|(r, _)| r)
                        .collect();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    a.records as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let a = args();
    let run = ion_core::Timestamp::now().as_millis();
    let dir = tempfile::tempdir().expect("tempdir");
    let tenants: Vec<(TenantId, String)> = (0..a.tenants)
        .map(|t| {
            (
                TenantId::parse(&format!("bench-t{t}")).unwrap(),
                format!("ion_bench_{t}"),
            )
        })
        .collect();

    // Baseline first, into its own indices.
    let base_index = make_index(&a.target, &format!("ion-bench-base-{run}")).await;
    let baseline_eps = baseline(base_index.clone(), &a).await;
    cleanup(&*base_index).await;
    eprintln!("baseline: {baseline_eps:.0} events/s");

    let index = make_index(&a.target, &format!("ion-bench-{run}")).await;
    let mut config = AggregatorConfig {
        listen: "127.0.0.1:0".into(),
        wal: WalConfig {
            dir: dir.path().join("wal"),
            node_name: "bench".into(),
            ..WalConfig::default()
        },
        index_settings: IndexSettingsConfig {
            shards: 1,
            replicas: 0,
            refresh_ms: 1000,
        },
        tenants: tenants
            .iter()
            .map(|(t, tok)| TenantBootstrap {
                tenant: t.clone(),
                token_sha256: token_id(tok),
                rate: None,
            })
            .collect(),
        ..AggregatorConfig::default()
    };
    config.shipper.batch_docs = a.bulk_docs;
    config.shipper.concurrency = a.concurrency;
    let node = Aggregator::start(
        config,
        NodeBackends {
            index: index.clone(),
            dead_letters: Arc::new(InMemoryDocumentStore::new()),
            archive: Arc::new(InMemoryBlobStore::new()),
            tokens: Arc::new(InMemoryDocumentStore::new()),
        },
    )
    .await
    .expect("start the node");
    let url = format!("http://{}/v1/logs", node.addr);

    // Pre-build request bodies: each request carries one tenant's lines.
    let mut per_tenant: Vec<Vec<String>> = vec![Vec::new(); a.tenants];
    for i in 0..a.records {
        let (t, l) = line(i, a.tenants);
        per_tenant[t].push(l);
    }
    let mut bodies: Vec<(String, String)> = Vec::new();
    for (t, lines) in per_tenant.into_iter().enumerate() {
        for chunk in lines.chunks(a.lines) {
            bodies.push((tenants[t].1.clone(), chunk.join("\n")));
        }
    }
    // Interleave tenants.
    bodies.sort_by_key(|(_, b)| b.len() % 13);
    let total_bytes: usize = bodies.iter().map(|(_, b)| b.len()).sum();
    let queue = Arc::new(std::sync::Mutex::new(bodies));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.connections {
        let queue = queue.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut latencies = Vec::new();
            loop {
                let Some((token, body)) = queue.lock().unwrap().pop() else {
                    return latencies;
                };
                loop {
                    let t0 = Instant::now();
                    let resp = http
                        .post(&url)
                        .bearer_auth(&token)
                        .body(body.clone())
                        .send()
                        .await;
                    match resp {
                        Ok(r) if r.status().as_u16() == 200 => {
                            latencies.push(t0.elapsed());
                            break;
                        }
                        Ok(r) if r.status().as_u16() == 429 || r.status().as_u16() == 503 => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Ok(r) => panic!("ingest answered {}", r.status()),
                        Err(e) => panic!("ingest failed: {e}"),
                    }
                }
            }
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let acked_after = start.elapsed();
    loop {
        let in_flight: u64 = node
            .state
            .ledger
            .snapshot()
            .values()
            .map(|c| c.in_flight())
            .sum();
        if in_flight == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let indexed_after = start.elapsed();
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    let eps = a.records as f64 / indexed_after.as_secs_f64();
    let ack_eps = a.records as f64 / acked_after.as_secs_f64();
    let indexed: u64 = node
        .state
        .ledger
        .snapshot()
        .values()
        .map(|c| c.indexed)
        .sum();
    assert_eq!(indexed as usize, a.records, "every record indexed");
    node.shutdown().await;
    cleanup(&*index).await;

    println!("target            {}", a.target);
    println!(
        "records           {} ({} tenants, {:.0} bytes/line)",
        a.records,
        a.tenants,
        total_bytes as f64 / a.records as f64
    );
    println!(
        "connections       {} x {} lines/request",
        a.connections, a.lines
    );
    println!(
        "acknowledged in   {:.2} s ({ack_eps:.0} events/s)",
        acked_after.as_secs_f64()
    );
    println!(
        "indexed in        {:.2} s ({eps:.0} events/s)",
        indexed_after.as_secs_f64()
    );
    println!(
        "ack p50/p99/max   {:.1} / {:.1} / {:.1} ms",
        p(0.5).as_secs_f64() * 1e3,
        p(0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
    println!(
        "baseline          {baseline_eps:.0} events/s (direct bulk, {} docs x {} in flight)",
        a.bulk_docs, a.concurrency
    );
    println!(
        "RESULT ingest events_per_s={:.0} baseline_events_per_s={:.0} ratio={:.2} ack_p99_ms={:.1}",
        eps,
        baseline_eps,
        eps / baseline_eps,
        p(0.99).as_secs_f64() * 1e3
    );
}
