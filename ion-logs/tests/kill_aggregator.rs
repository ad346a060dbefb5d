//! Kill -9 the aggregator process while 8 clients ingest into real Elasticsearch, restart it:
//! every record that got a 200 is indexed exactly once, and the ledger adds up.

mod support;

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ion_core::testkit::{peer_unreachable, peer_var, unique_name};
use ion_core::{LogIndex, TenantId};
use ion_logs::tokens::token_id;
use ion_logs::{ElasticsearchConfig, ElasticsearchLogIndex};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

async fn spawn_node(config: &std::path::Path, log: &std::path::Path) -> (Child, String) {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ion-log-aggregator"))
        .arg("--config")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ion-log-aggregator");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(addr) = line.strip_prefix("listening on ") {
                return addr.to_owned();
            }
        }
        panic!("aggregator exited at start; see {}", log.display())
    })
    .await
    .unwrap_or_else(|_| panic!("aggregator did not start in 60 s; see {}", log.display()));
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, format!("http://{addr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_ingest_loses_and_duplicates_nothing() {
    let what = "aggregator kill -9 test";
    let Some(url) = peer_var("ION_TEST_ES_URL", what) else {
        return;
    };
    let prefix = unique_name("ion-kill");
    let es_config = ElasticsearchConfig::builder()
        .nodes([url.clone()])
        .index_prefix(&prefix)
        .build()
        .unwrap();
    let index = match ElasticsearchLogIndex::connect(es_config.clone()).await {
        Ok(i) => i,
        Err(e) => {
            peer_unreachable::<()>("ION_TEST_ES_URL", what, &e);
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tenants: Vec<(TenantId, String)> = (0..4)
        .map(|i| {
            (
                TenantId::parse(&format!("kill-t{i}")).unwrap(),
                format!("ion_kill_token_{i}"),
            )
        })
        .collect();
    let config = serde_json::json!({
        "listen": format!("127.0.0.1:{port}"),
        "wal": {
            "dir": dir.path().join("wal"),
            "node_name": "kill-node",
            "segment_bytes": 256 * 1024,
            "commit_interval": 1
        },
        "search": {"elasticsearch": es_config},
        "archive_dir": dir.path().join("archive"),
        "index_settings": {"shards": 1, "replicas": 0, "refresh_ms": 1000},
        "shipper": {"batch_docs": 500, "linger_ms": 5, "checkpoint_interval_ms": 100},
        "tenants": tenants.iter().map(|(t, tok)| serde_json::json!({"tenant": t, "token_sha256": token_id(tok)})).collect::<Vec<_>>(),
    });
    let config_path = dir.path().join("node.json");
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let log_path = dir.path().join("node.log");

    let (mut child, base) = spawn_node(&config_path, &log_path).await;
    let shared_base = Arc::new(Mutex::new(base.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(support::ClientLog::default());
    let clients = support::spawn_clients(
        shared_base.clone(),
        tenants.clone(),
        8,
        20,
        Duration::from_millis(5),
        stop.clone(),
        log.clone(),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    child.start_kill().expect("SIGKILL the aggregator");
    child.wait().await.unwrap();
    let acked_before: usize = log.acked.lock().unwrap().values().map(|s| s.len()).sum();
    assert!(
        acked_before > 0,
        "clients got acknowledgements before the kill"
    );

    let (mut child, base) = spawn_node(&config_path, &log_path).await;
    *shared_base.lock().unwrap() = base.clone();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }

    let ledger = support::wait_drained(&base, Duration::from_secs(90)).await;
    let ledger_indexed = support::assert_ledger_adds_up(&ledger);
    let total = support::assert_exactly_once(&index, &log).await;
    let acked: usize = log.acked.lock().unwrap().values().map(|s| s.len()).sum();
    println!(
        "acked {acked} records ({acked_before} before the kill), {total} indexed, {} requests without answer, statuses {:?}",
        log.transport_errors.load(Ordering::Relaxed),
        log.statuses.lock().unwrap()
    );
    // The restored ledger counts both runs: it agrees with the index.
    for (tenant, _) in &tenants {
        let found = support::indexed_messages(&index, tenant).await.len() as u64;
        assert_eq!(
            ledger_indexed.get(tenant.as_str()).copied(),
            Some(found),
            "{tenant}"
        );
    }
    child.start_kill().ok();
    let _ = child.wait().await;
    for info in index.list_indices().await.unwrap() {
        index.delete_index(&info.name).await.unwrap();
    }
}
