//! Smoke tests for the search peers (Elasticsearch 8, Elasticsearch 9, OpenSearch 2): create an
//! index, bulk, refresh and search with the elasticsearch crate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use elasticsearch::http::request::JsonBody;
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::indices::{IndicesCreateParts, IndicesDeleteParts, IndicesRefreshParts};
use elasticsearch::nodes::NodesInfoParts;
use elasticsearch::{BulkParts, Elasticsearch, SearchParts};
use ion_core::testkit::{peer_unreachable, peer_var};
use serde_json::{json, Value};

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos}", std::process::id())
}

fn client(url: &str) -> Elasticsearch {
    let url = url
        .parse()
        .unwrap_or_else(|e| panic!("search url {url} does not parse: {e}"));
    // The crate sends plain `application/json` (no `compatible-with` media type), which
    // Elasticsearch 8, Elasticsearch 9 and OpenSearch 2 all accept; no setting is needed.
    let transport = TransportBuilder::new(SingleNodeConnectionPool::new(url))
        .timeout(Duration::from_secs(30))
        .disable_proxy()
        .build()
        .expect("build the transport");
    Elasticsearch::new(transport)
}

/// Runs the create / bulk / refresh / search round trip against the peer named by `var`.
async fn round_trip(var: &str, what: &str) {
    let Some(url) = peer_var(var, what) else {
        return;
    };
    let es = client(&url);

    // Reachability and version through the nodes API: the integ-test-zip distribution of
    // Elasticsearch 8/9 lacks the rest-root module, so `GET /` (the crate's `info()`) answers
    // 405 there; ion must not depend on it.
    let nodes = match es
        .nodes()
        .info(NodesInfoParts::NodeId(&["_local"]))
        .send()
        .await
    {
        Ok(r) => r,
        Err(err) => {
            peer_unreachable::<()>(var, what, &err);
            return;
        }
    };
    let nodes: Value = nodes.json().await.expect("nodes info body");
    let version = nodes["nodes"]
        .as_object()
        .and_then(|m| m.values().next())
        .map(|n| n["version"].clone());
    println!(
        "{what}: version {} at {url}",
        version.unwrap_or(Value::Null)
    );
    match es.info().send().await {
        Ok(r) if !r.status_code().is_success() => {
            println!(
                "peer gap: {url} answers {} to GET / (no rest-root module)",
                r.status_code()
            )
        }
        Ok(_) => {}
        Err(err) => panic!("{what}: GET / at {url}: {err}"),
    }

    let index = unique("ion-smoke-logs");
    let created = es
        .indices()
        .create(IndicesCreateParts::Index(&index))
        .body(json!({
            "settings": { "number_of_shards": 1, "number_of_replicas": 0 },
            "mappings": { "properties": {
                "tenant": { "type": "keyword" },
                "message": { "type": "text" },
                "ts": { "type": "date" }
            } }
        }))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{what}: create index at {url}: {e}"));
    let status = created.status_code();
    assert!(
        status.is_success(),
        "{what}: create index returned {status}: {}",
        created.text().await.unwrap_or_default()
    );

    // Deterministic ids, as the shipper uses them: a replayed bulk must not duplicate.
    let lines = [
        ("t1", "started app"),
        ("t1", "request served"),
        ("t2", "request served"),
    ];
    let mut ndjson: Vec<Value> = Vec::new();
    for (n, (tenant, message)) in lines.iter().enumerate() {
        ndjson.push(json!({ "create": { "_id": format!("{tenant}-{n}") } }));
        ndjson.push(json!({ "tenant": tenant, "message": message, "ts": "2025-01-01T00:00:00Z" }));
    }
    let body: Vec<JsonBody<Value>> = ndjson.iter().cloned().map(JsonBody::from).collect();
    let replay: Vec<JsonBody<Value>> = ndjson.into_iter().map(JsonBody::from).collect();
    let bulk: Value = es
        .bulk(BulkParts::Index(&index))
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{what}: bulk at {url}: {e}"))
        .json()
        .await
        .expect("bulk body");
    assert_eq!(
        bulk["errors"],
        json!(false),
        "{what}: bulk reported errors: {bulk}"
    );

    let again: Value = es
        .bulk(BulkParts::Index(&index))
        .body(replay)
        .send()
        .await
        .expect("replayed bulk")
        .json()
        .await
        .expect("body");
    let statuses: Vec<i64> = again["items"]
        .as_array()
        .expect("bulk items")
        .iter()
        .map(|i| i["create"]["status"].as_i64().unwrap_or(0))
        .collect();
    assert_eq!(
        statuses,
        [409, 409, 409],
        "{what}: a replayed create must be 409 per item: {again}"
    );

    es.indices()
        .refresh(IndicesRefreshParts::Index(&[&index]))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{what}: refresh at {url}: {e}"));

    let found: Value = es
        .search(SearchParts::Index(&[&index]))
        .body(json!({
            "query": { "bool": {
                "filter": [ { "term": { "tenant": "t1" } } ],
                "must": [ { "match": { "message": "served" } } ]
            } }
        }))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{what}: search at {url}: {e}"))
        .json()
        .await
        .expect("search body");
    assert_eq!(
        found["hits"]["total"]["value"],
        json!(1),
        "{what}: tenant-scoped search: {found}"
    );
    assert_eq!(
        found["hits"]["hits"][0]["_id"],
        json!("t1-1"),
        "{what}: search hit: {found}"
    );

    es.indices()
        .delete(IndicesDeleteParts::Index(&[&index]))
        .send()
        .await
        .expect("delete index");
}

#[tokio::test]
async fn elasticsearch_8_create_bulk_refresh_search() {
    round_trip("ION_TEST_ES_URL", "elasticsearch 8 smoke test").await;
}

#[tokio::test]
async fn elasticsearch_9_create_bulk_refresh_search() {
    round_trip("ION_TEST_ES9_URL", "elasticsearch 9 smoke test").await;
}

#[tokio::test]
async fn opensearch_create_bulk_refresh_search() {
    round_trip("ION_TEST_OPENSEARCH_URL", "opensearch smoke test").await;
}
