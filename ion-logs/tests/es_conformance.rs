//! The `LogIndex` conformance suite against Elasticsearch 8, Elasticsearch 9 and OpenSearch 2
//! (each skipped with a printed reason when its peer variable is unset), and against the fake.

use std::time::Duration;

use ion_core::testkit::{peer_unreachable, peer_var};
use ion_core::{IndexSettings, LogIndex};
use ion_logs::{ElasticsearchConfig, ElasticsearchLogIndex};

async fn connect(var: &str, what: &str) -> Option<ElasticsearchLogIndex> {
    let url = peer_var(var, what)?;
    let config = ElasticsearchConfig::builder()
        .nodes(url.split(',').map(str::to_owned))
        .index_prefix("ion-conformance")
        .request_timeout(Duration::from_secs(20))
        .build()
        .expect("config");
    let index = match ElasticsearchLogIndex::connect(config).await {
        Ok(i) => i,
        Err(e) => return peer_unreachable(var, what, &e),
    };
    let settings = IndexSettings {
        shards: 1,
        replicas: 0,
        refresh_interval: Duration::from_secs(1),
    };
    index
        .ensure_templates(&settings)
        .await
        .unwrap_or_else(|e| panic!("{what}: templates: {e}"));
    Some(index)
}

ion_core::log_index_conformance!(
    elasticsearch_8,
    crate::connect("ION_TEST_ES_URL", "elasticsearch 8 log index conformance")
);
ion_core::log_index_conformance!(
    elasticsearch_9,
    crate::connect("ION_TEST_ES9_URL", "elasticsearch 9 log index conformance")
);
ion_core::log_index_conformance!(
    opensearch_2,
    crate::connect(
        "ION_TEST_OPENSEARCH_URL",
        "opensearch 2 log index conformance"
    )
);
