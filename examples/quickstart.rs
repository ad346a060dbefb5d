//! quickstart: the platform's backends on the embedded in-memory default, no external service.
//!
//! Walks through each backend trait doing real work and prints a narrative:
//! store and verify an artifact, keep app documents with a revision conflict, launch instances in
//! two zones, apply a route table, index and search logs for two tenants showing isolation.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use ion_core::fake::{
    InMemoryArtifactStore, InMemoryCompute, InMemoryDocumentStore, InMemoryLoadBalancer,
    InMemoryLogIndex,
};
use ion_core::{
    AppId, ArtifactMeta, ArtifactStore, ArtifactStoreExt, Backend, CollectionName, Compute,
    DocumentId, DocumentStore, DocumentStoreExt, ErrorKind, Hostname, IdempotencyKey,
    InstanceFilter, LaunchRequest, LoadBalancer, LogIndex, LogLevel, LogQuery, LogRecord, RecordId,
    Route, RouteTable, TenantId, Timestamp, Version, Zone,
};
use serde_json::json;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn step(title: &str) {
    println!("\n== {title}");
}

#[tokio::main]
async fn main() -> Result<()> {
    println!("ion quickstart: every backend is the embedded in-memory default");

    // One `Arc<dyn …>` per trait: swap any of them for Ec2Compute, MongoDocumentStore,
    // GridFsArtifactStore, ElasticsearchLogIndex or NginxLoadBalancer without touching the rest.
    let zones = vec![Zone::parse("zone-a")?, Zone::parse("zone-b")?];
    let compute: Arc<dyn Compute> = Arc::new(InMemoryCompute::new(zones.clone()));
    let documents: Arc<dyn DocumentStore> = Arc::new(InMemoryDocumentStore::new());
    let artifacts = InMemoryArtifactStore::new();
    let artifact_store: Arc<dyn ArtifactStore> = Arc::new(artifacts.clone());
    let logs: Arc<dyn LogIndex> = Arc::new(InMemoryLogIndex::new());
    let lb: Arc<dyn LoadBalancer> = Arc::new(InMemoryLoadBalancer::new());

    let acme = TenantId::parse("acme")?;
    let globex = TenantId::parse("globex")?;
    let billing = AppId::parse("billing")?;

    step("tenant input is parsed at the boundary");
    for hostile in ["acme; rm -rf /", "Acme", "../etc", "a\nserver {"] {
        let err = TenantId::parse(hostile).expect_err("hostile names never parse");
        println!("refused {hostile:?}: {err}");
    }

    step("artifact store: upload, verify, detect corruption");
    let meta = ArtifactMeta {
        tenant: acme.clone(),
        app: billing.clone(),
        version: Version(1),
    };
    let binary = Bytes::from(vec![0x7f; 256 * 1024]);
    let artifact = artifact_store.upload_bytes(&meta, binary.clone()).await?;
    println!(
        "uploaded {} ({} bytes, sha256 {})",
        artifact.id, artifact.length, artifact.sha256
    );
    let back = artifact_store.download_bytes(&artifact, 1 << 20).await?;
    assert_eq!(back, binary);
    println!("downloaded and verified {} bytes", back.len());
    let spare = artifact_store
        .upload_bytes(&meta, Bytes::from_static(b"spare"))
        .await?;
    artifacts.corrupt(&spare.id);
    let err = artifact_store
        .download_bytes(&spare, 1 << 20)
        .await
        .expect_err("a corrupted artifact never downloads cleanly");
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    println!("a flipped byte in storage is caught at download: {err}");

    step("document store: app metadata with optimistic concurrency");
    let apps = CollectionName::parse("apps")?;
    let id = DocumentId::parse("acme.billing")?;
    let rev1 = documents
        .insert_json(
            &apps,
            &id,
            &json!({"tenant": "acme", "app": "billing", "replicas": 2}),
        )
        .await?;
    println!("inserted {id} at {rev1}");
    let (doc, rev) = documents.get_json::<serde_json::Value>(&apps, &id).await?;
    let mut scaled = doc.clone();
    scaled["replicas"] = json!(3);
    let body = ion_core::DocumentBody::new(scaled)?;
    let rev2 = documents.update(&apps, &id, rev, &body).await?;
    println!("scaled to 3 replicas: {rev} -> {rev2}");
    let stale = documents.update(&apps, &id, rev1, &body).await;
    let err = stale.expect_err("a stale writer must lose");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    println!("a writer still holding {rev1} is refused: {err}");

    step("compute: launch instances in two zones, idempotently");
    let mut backends = Vec::new();
    for (slot, zone) in zones.iter().enumerate() {
        let request = LaunchRequest {
            idempotency_key: IdempotencyKey::parse(&format!("acme-billing-v1-{slot}"))?,
            zone: zone.clone(),
            tenant: acme.clone(),
            app: billing.clone(),
            version: Version(1),
            artifact: artifact.clone(),
            port: 8080,
        };
        let first = compute.launch(request.clone()).await?;
        let retry = compute.launch(request).await?;
        assert_eq!(first.id, retry.id);
        println!(
            "launched {} in {} at {:?} (a retried launch returned the same instance)",
            first.id, first.zone, first.address
        );
        if let Some(addr) = first.address {
            backends.push(Backend {
                instance: first.id.clone(),
                addr,
                zone: first.zone.clone(),
            });
        }
    }
    let running = compute
        .describe(&InstanceFilter {
            tenant: Some(acme.clone()),
            app: Some(billing.clone()),
            include_gone: false,
        })
        .await?;
    println!("describe finds {} instances of acme/billing", running.len());
    assert_eq!(running.len(), 2);

    step("load balancer: apply a whole route table");
    let table = RouteTable::new(
        1,
        vec![Route {
            tenant: acme.clone(),
            app: billing.clone(),
            hostnames: vec![Hostname::parse("billing.acme.example.com")?],
            backends,
            tls: None,
        }],
    )?;
    let live = lb.apply(&table).await?;
    println!(
        "generation {} is live (checksum {})",
        live.generation, live.checksum
    );
    let clash = RouteTable::new(
        2,
        vec![
            Route {
                tenant: acme.clone(),
                app: billing.clone(),
                hostnames: vec![Hostname::parse("shop.example.com")?],
                backends: vec![],
                tls: None,
            },
            Route {
                tenant: globex.clone(),
                app: billing.clone(),
                hostnames: vec![Hostname::parse("shop.example.com")?],
                backends: vec![],
                tls: None,
            },
        ],
    );
    println!(
        "a table where two tenants claim one hostname is refused: {}",
        clash.expect_err("hostname takeover is refused")
    );

    step("log index: two tenants, one index, isolated search");
    let now = Timestamp::parse_rfc3339("2026-11-26T12:00:00Z").ok_or("bad time")?;
    let mut records = Vec::new();
    for (i, (tenant, message)) in [
        (&acme, "payment accepted for order 17"),
        (&acme, "payment declined: card expired"),
        (&globex, "payment accepted for order 99"),
    ]
    .into_iter()
    .enumerate()
    {
        records.push(LogRecord {
            id: RecordId::parse(&format!("quickstart-{i}"))?,
            tenant: tenant.clone(),
            app: billing.clone(),
            instance: None,
            time: now.plus(std::time::Duration::from_secs(i as u64)),
            level: if message.contains("declined") {
                LogLevel::Warn
            } else {
                LogLevel::Info
            },
            message: message.to_owned(),
            fields: BTreeMap::new(),
        });
    }
    let outcomes = logs.bulk(&records).await?;
    println!("bulk outcomes: {outcomes:?}");
    let again = logs.bulk(&records[..1]).await?;
    println!(
        "re-sending a record is reported as {:?}, never duplicated",
        again[0]
    );
    logs.refresh().await?;
    let query = LogQuery {
        text: Some("payment accepted".into()),
        ..LogQuery::default()
    };
    for tenant in [&acme, &globex] {
        let page = logs.search(tenant, &query).await?;
        for record in &page.records {
            assert_eq!(&record.tenant, tenant);
            println!("{tenant} sees: {} {}", record.level, record.message);
        }
    }
    let sneaky = LogQuery {
        text: Some("tenant:globex OR *".into()),
        ..LogQuery::default()
    };
    let page = logs.search(&acme, &sneaky).await?;
    assert!(page.records.iter().all(|r| r.tenant == acme));
    println!(
        "query text is plain words, never query syntax: acme's 'tenant:globex OR *' finds {} records",
        page.records.len()
    );

    println!("\nquickstart complete");
    Ok(())
}
