//! Failures of the 3-node search cluster during ingest (`scripts/peers up search-cluster`):
//! nodes SIGKILLed mid-ingest, then the whole cluster down for 30 s with a small disk budget.
//! No acknowledged record is lost or duplicated, and ingest clients never see a 5xx while the
//! WAL has room.

mod support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ion_core::fake::{InMemoryBlobStore, InMemoryDocumentStore};
use ion_core::testkit::{peer_unreachable, peer_var, unique_name};
use ion_core::{LogIndex, TenantId};
use ion_logs::node::IndexSettingsConfig;
use ion_logs::tokens::token_id;
use ion_logs::{
    Aggregator, AggregatorConfig, ElasticsearchConfig, ElasticsearchLogIndex, NodeBackends,
    TenantBootstrap, WalConfig,
};

/// The two tests kill nodes of one shared cluster: never at the same time.
static CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn peers_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/peers")
}

async fn peers(args: &[&str]) {
    let status = tokio::process::Command::new(peers_script())
        .args(args)
        .status()
        .await
        .expect("run scripts/peers");
    assert!(status.success(), "scripts/peers {args:?} failed");
}

/// Starts the given nodes together (a node waits for all three, so never one by one), then
/// waits until the cluster has all three nodes again.
async fn start_nodes(urls: &str, nodes: &[&str]) {
    let starts: Vec<_> = nodes
        .iter()
        .map(|n| async move {
            // The script's own readiness wait can misjudge a node that was SIGKILLed a moment
            // ago; the cluster health below is what counts.
            let _ = tokio::process::Command::new(peers_script())
                .args(["start-node", n])
                .status()
                .await;
        })
        .collect();
    futures::future::join_all(starts).await;
    wait_for_cluster(urls).await;
}

/// Waits (at most 120 s) until the cluster answers with three nodes.
async fn wait_for_cluster(urls: &str) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for _ in 0..120 {
        for url in urls.split(',') {
            let health = http
                .get(format!("{url}/_cluster/health?wait_for_nodes=3&timeout=1s"))
                .send()
                .await;
            if health.is_ok_and(|r| r.status().is_success()) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("search cluster at {urls} did not come back with three nodes in 120 s");
}

struct Setup {
    node: Aggregator,
    index: Arc<ElasticsearchLogIndex>,
    base: String,
    tenants: Vec<(TenantId, String)>,
    urls: String,
    _dir: tempfile::TempDir,
}

async fn setup(what: &str, budget: u64) -> Option<Setup> {
    let urls = peer_var("ION_TEST_SEARCH_CLUSTER_URLS", what)?;
    wait_for_cluster(&urls).await;
    let es = ElasticsearchConfig {
        nodes: urls.split(',').map(str::to_owned).collect(),
        index_prefix: unique_name("ion-cluster"),
        request_timeout_ms: 10_000,
        bulk_shard_timeout_ms: 5_000,
        dead_node_backoff_ms: 500,
        ..ElasticsearchConfig::default()
    };
    let index = match ElasticsearchLogIndex::connect(es).await {
        Ok(i) => Arc::new(i),
        Err(e) => return peer_unreachable("ION_TEST_SEARCH_CLUSTER_URLS", what, &e),
    };
    let dir = tempfile::tempdir().unwrap();
    let tenants: Vec<(TenantId, String)> = (0..4)
        .map(|i| {
            (
                TenantId::parse(&format!("cl-t{i}")).unwrap(),
                format!("ion_cluster_token_{i}"),
            )
        })
        .collect();
    let mut config = AggregatorConfig {
        listen: "127.0.0.1:0".into(),
        wal: WalConfig {
            dir: dir.path().join("wal"),
            node_name: "cluster-node".into(),
            segment_bytes: 512 << 10,
            disk_budget_bytes: budget,
            ..WalConfig::default()
        },
        index_settings: IndexSettingsConfig {
            shards: 3,
            replicas: 1,
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
    config.shipper.batch_docs = 500;
    config.shipper.retry_max_ms = 2_000;
    config.shipper.checkpoint_interval_ms = 100;
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
    .expect("start the aggregator");
    let base = format!("http://{}", node.addr);
    Some(Setup {
        node,
        index,
        base,
        tenants,
        urls,
        _dir: dir,
    })
}

async fn finish(s: Setup, log: &support::ClientLog) {
    let ledger = support::wait_drained(&s.base, Duration::from_secs(120)).await;
    support::assert_ledger_adds_up(&ledger);
    let total = support::assert_exactly_once(&*s.index, log).await;
    let acked: usize = log.acked.lock().unwrap().values().map(|m| m.len()).sum();
    println!(
        "acked {acked}, indexed {total}, statuses {:?}, requests without answer {}",
        log.statuses.lock().unwrap(),
        log.transport_errors.load(Ordering::Relaxed)
    );
    s.node.shutdown().await;
    for info in s.index.list_indices().await.unwrap_or_default() {
        let _ = s.index.delete_index(&info.name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_killed_mid_ingest_lose_and_duplicate_nothing() {
    let _one_at_a_time = CLUSTER.lock().await;
    let Some(s) = setup("search cluster node-kill test", 8 << 30).await else {
        return;
    };
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(support::ClientLog::default());
    log.watch_5xx.store(true, Ordering::Relaxed);
    let clients = support::spawn_clients(
        Arc::new(Mutex::new(s.base.clone())),
        s.tenants.clone(),
        8,
        20,
        Duration::from_millis(100),
        stop.clone(),
        log.clone(),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    peers(&["kill-node", "2"]).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    // A second node goes too: the cluster loses its quorum for 20 s; ingest goes on into the WAL.
    peers(&["kill-node", "3"]).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    start_nodes(&s.urls, &["2", "3"]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(
        log.watched_5xx.load(Ordering::Relaxed),
        0,
        "clients saw 5xx while search nodes were down: {:?}",
        log.statuses.lock().unwrap()
    );
    finish(s, &log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_down_30s_fills_the_wal_then_delivers_everything() {
    let _one_at_a_time = CLUSTER.lock().await;
    let Some(s) = setup("search cluster outage test", 3 << 20).await else {
        return;
    };
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(support::ClientLog::default());
    let clients = support::spawn_clients(
        Arc::new(Mutex::new(s.base.clone())),
        s.tenants.clone(),
        8,
        20,
        Duration::from_millis(100),
        stop.clone(),
        log.clone(),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    for n in ["1", "2", "3"] {
        peers(&["kill-node", n]).await;
    }
    let acked_at_outage: usize = log.acked.lock().unwrap().values().map(|m| m.len()).sum();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let acked_during: usize = log
        .acked
        .lock()
        .unwrap()
        .values()
        .map(|m| m.len())
        .sum::<usize>()
        - acked_at_outage;
    let refused = log.statuses.lock().unwrap().get(&503).copied().unwrap_or(0);
    start_nodes(&s.urls, &["1", "2", "3"]).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert!(
        acked_during > 0,
        "ingest went on into the wal while the cluster was down"
    );
    assert!(refused > 0, "the small disk budget turned into 503s");
    finish(s, &log).await;
}
