//! Mapping conflicts on real Elasticsearch: the refused records land in the dead-letter store
//! with the server's reason, while other tenants' records keep flowing.

use std::sync::Arc;
use std::time::Duration;

use ion_core::fake::{InMemoryBlobStore, InMemoryDocumentStore};
use ion_core::testkit::{peer_unreachable, peer_var, unique_name};
use ion_core::{LogIndex, TenantId, Timestamp};
use ion_logs::node::IndexSettingsConfig;
use ion_logs::shipper::list_dead_letters;
use ion_logs::tokens::token_id;
use ion_logs::{
    Aggregator, AggregatorConfig, ElasticsearchConfig, ElasticsearchLogIndex, NodeBackends,
    TenantBootstrap, WalConfig,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mapping_conflicts_are_dead_lettered_and_others_flow() {
    let what = "dead letters on elasticsearch";
    let Some(url) = peer_var("ION_TEST_ES_URL", what) else {
        return;
    };
    let prefix = unique_name("ion-dlq");
    let config = ElasticsearchConfig::builder()
        .nodes([url.clone()])
        .index_prefix(&prefix)
        .build()
        .unwrap();
    let index = match ElasticsearchLogIndex::connect(config.clone()).await {
        Ok(i) => Arc::new(i),
        Err(e) => {
            peer_unreachable::<()>("ION_TEST_ES_URL", what, &e);
            return;
        }
    };
    // An index for one old day whose `fields.code` is a number: string codes cannot go in.
    let day = Timestamp::parse_rfc3339("2003-03-03T10:00:00Z").unwrap();
    let conflicting = index.layout().index_for(day);
    let http = reqwest::Client::new();
    let created = http
        .put(format!("{url}/{conflicting}"))
        .json(&serde_json::json!({
            "settings": {"number_of_shards": 1, "number_of_replicas": 0},
            "mappings": {"properties": {
                "id": {"type": "keyword"}, "tenant": {"type": "keyword"},
                "time": {"type": "date"}, "message": {"type": "text"},
                "words": {"type": "keyword"},
                "fields": {"properties": {"code": {"type": "long"}}}
            }}
        }))
        .send()
        .await
        .unwrap();
    assert!(
        created.status().is_success(),
        "{}",
        created.text().await.unwrap()
    );

    let dir = tempfile::tempdir().unwrap();
    let dlq = InMemoryDocumentStore::new();
    let tenants = [("dlq-bad", "ion_dlq_bad"), ("dlq-good", "ion_dlq_good")];
    let mut agg = AggregatorConfig {
        listen: "127.0.0.1:0".into(),
        wal: WalConfig {
            dir: dir.path().join("wal"),
            node_name: "dlq".into(),
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
                tenant: TenantId::parse(t).unwrap(),
                token_sha256: token_id(tok),
                rate: None,
            })
            .collect(),
        ..AggregatorConfig::default()
    };
    agg.shipper.linger_ms = 1;
    let node = Aggregator::start(
        agg,
        NodeBackends {
            index: index.clone(),
            dead_letters: Arc::new(dlq.clone()),
            archive: Arc::new(InMemoryBlobStore::new()),
            tokens: Arc::new(InMemoryDocumentStore::new()),
        },
    )
    .await
    .unwrap();
    let base = format!("http://{}/v1/logs", node.addr);
    let bad: Vec<String> = (0..5)
        .map(|i| serde_json::json!({"app": "web", "time": "2003-03-03T10:00:00Z", "message": format!("bad {i}"), "fields": {"code": "not-a-number"}}).to_string())
        .collect();
    let good: Vec<String> = (0..50)
        .map(|i| serde_json::json!({"app": "web", "message": format!("good {i}"), "fields": {"code": "200"}}).to_string())
        .collect();
    for (token, lines) in [(tenants[0].1, &bad), (tenants[1].1, &good)] {
        let r = http
            .post(&base)
            .bearer_auth(token)
            .body(lines.join("\n"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let bad_tenant = TenantId::parse("dlq-bad").unwrap();
    let good_tenant = TenantId::parse("dlq-good").unwrap();
    for _ in 0..300 {
        let (b, g) = (
            node.state.ledger.get(&bad_tenant),
            node.state.ledger.get(&good_tenant),
        );
        if b.in_flight() == 0 && g.in_flight() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let b = node.state.ledger.get(&bad_tenant);
    let g = node.state.ledger.get(&good_tenant);
    assert_eq!(
        (b.dead_lettered, b.indexed, b.in_flight()),
        (5, 0, 0),
        "{b:?}"
    );
    assert_eq!((g.indexed, g.in_flight()), (50, 0), "{g:?}");
    let letters = list_dead_letters(&dlq, &bad_tenant).await.unwrap();
    assert_eq!(letters.len(), 5);
    assert_eq!(letters[0].status, 400);
    assert!(
        letters[0].reason.contains("code"),
        "reason names the field: {}",
        letters[0].reason
    );
    assert_eq!(
        letters[0].record.fields.values().next().unwrap(),
        "not-a-number"
    );
    node.shutdown().await;
    for info in index.list_indices().await.unwrap() {
        index.delete_index(&info.name).await.unwrap();
    }
}
