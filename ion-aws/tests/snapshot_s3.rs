//! The control plane's snapshot scheduler on S3BlobStore, end to end against moto: snapshot
//! platform documents, artifacts (one large enough for a multipart upload) and log records into
//! S3, list, verify checksums, restore into empty stores, and prune.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use ion_core::artifact::{ArtifactMeta, ArtifactStoreExt};
use ion_core::document::DocumentStoreExt;
use ion_core::fake::{InMemoryArtifactStore, InMemoryDocumentStore, InMemoryLogIndex};
use ion_core::snapshot::{
    ObjectKind, RestoreTargets, Retention, SnapshotScheduler, SnapshotSources,
};
use ion_core::testkit::unique_name;
use ion_core::{
    AppId, BlobKey, BlobPrefix, BlobStoreExt, CollectionName, DocumentId, LogIndex, LogLevel,
    LogRecord, RecordId, Revision, TenantId, Timestamp, Version,
};
use serde_json::json;

use common::*;

#[tokio::test]
async fn snapshot_scheduler_round_trips_through_s3() {
    let what = "snapshot scheduler on s3";
    let Some(store) = s3_store(what, small_parts()).await else {
        return;
    };
    let docs = InMemoryDocumentStore::new();
    let artifacts = InMemoryArtifactStore::new();
    let logs = InMemoryLogIndex::new();
    let tenants = vec![
        TenantId::parse(&unique_name("t")).unwrap(),
        TenantId::parse(&unique_name("u")).unwrap(),
    ];
    let apps = CollectionName::parse("apps").unwrap();
    let web = AppId::parse("web").unwrap();
    let mut originals = BTreeMap::new();
    for (i, t) in tenants.iter().enumerate() {
        let id = DocumentId::parse(&format!("{t}.web")).unwrap();
        docs.insert_json(&apps, &id, &json!({"tenant": t, "replicas": i + 1}))
            .await
            .unwrap();
        // The first tenant's artifact is 6 MiB: past the 5 MiB threshold, so it goes multipart.
        let size = if i == 0 { 6 * MIB as usize } else { 300_000 };
        let data: Vec<u8> = (0..size).map(|n| (n * 31 + i) as u8).collect();
        let meta = ArtifactMeta {
            tenant: t.clone(),
            app: web.clone(),
            version: Version(1),
        };
        let r = artifacts
            .upload_bytes(&meta, Bytes::from(data))
            .await
            .unwrap();
        originals.insert(r.id.clone(), r);
        let records: Vec<LogRecord> = (0..3)
            .map(|n| LogRecord {
                id: RecordId::parse(&format!("{t}-{n}")).unwrap(),
                tenant: t.clone(),
                app: web.clone(),
                instance: None,
                time: Timestamp::from_millis(1_800_000_000_000 + n),
                level: LogLevel::Info,
                message: format!("hello {n}"),
                fields: BTreeMap::new(),
            })
            .collect();
        logs.bulk(&records).await.unwrap();
    }
    logs.refresh().await.unwrap();

    let prefix = BlobKey::parse(&format!("ion-aws/{}", unique_name("snapshots"))).unwrap();
    let sources = SnapshotSources {
        documents: Some((Arc::new(docs.clone()), vec![apps.clone()])),
        artifacts: Some((Arc::new(artifacts.clone()), tenants.clone())),
        logs: Some((Arc::new(logs.clone()), tenants.clone())),
    };
    let scheduler = SnapshotScheduler::new(Arc::new(store.clone()), sources)
        .with_prefix(&prefix)
        .with_retention(Retention {
            keep_last: 1,
            max_age: None,
        });

    let first = scheduler
        .snapshot(Timestamp::from_millis(1_000))
        .await
        .expect("snapshot");
    assert_eq!(first.count_of(ObjectKind::Documents), 2);
    assert_eq!(first.count_of(ObjectKind::Artifact), 2);
    assert_eq!(first.count_of(ObjectKind::Logs), 6);

    // The objects and the manifest really are in the bucket.
    let listed = store
        .list_all(&BlobPrefix::parse(&format!("{prefix}/")).unwrap())
        .await
        .unwrap();
    assert!(
        listed
            .iter()
            .any(|m| m.key.as_str().ends_with("manifest.json")),
        "{listed:?}"
    );
    assert!(
        listed.iter().any(|m| m.size >= 6 * MIB),
        "the large artifact is stored whole"
    );

    let listed = scheduler.list().await.unwrap();
    assert_eq!(
        listed.iter().map(|m| &m.id).collect::<Vec<_>>(),
        [&first.id]
    );

    // Verify reads every object back from S3 and checks sha256 and size against the manifest.
    let verified = scheduler.verify(&first.id).await.expect("verify");
    assert_eq!(verified.objects as usize, first.objects.len());
    assert_eq!(verified.bytes, first.total_bytes());

    // Restore into empty stores.
    let (docs2, artifacts2, logs2) = (
        InMemoryDocumentStore::new(),
        InMemoryArtifactStore::new(),
        InMemoryLogIndex::new(),
    );
    let targets = RestoreTargets {
        documents: Some(Arc::new(docs2.clone())),
        artifacts: Some(Arc::new(artifacts2.clone())),
        logs: Some(Arc::new(logs2.clone())),
    };
    let report = scheduler
        .restore(&first.id, &targets)
        .await
        .expect("restore");
    assert_eq!(
        (report.documents, report.artifacts, report.log_records),
        (2, 2, 6)
    );
    let (body, rev) = docs2
        .get_json::<serde_json::Value>(
            &apps,
            &DocumentId::parse(&format!("{}.web", tenants[1])).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(body["replicas"], json!(2));
    assert_eq!(rev, Revision(1));
    for (old, new) in &report.artifact_ids {
        let original = &originals[old];
        assert_eq!((new.sha256, new.length), (original.sha256, original.length));
        let restored = artifacts2.download_bytes(new, 16 << 20).await.unwrap();
        let source = artifacts.download_bytes(original, 16 << 20).await.unwrap();
        assert_eq!(restored, source);
    }

    // A second snapshot applies the retention (keep the newest): the first is gone from S3.
    let second = scheduler
        .snapshot(Timestamp::from_millis(2_000))
        .await
        .expect("snapshot 2");
    let left: Vec<String> = scheduler
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(left, [second.id]);
    let first_prefix = BlobPrefix::parse(&format!("{prefix}/{}/", first.id)).unwrap();
    assert!(store.list_all(&first_prefix).await.unwrap().is_empty());
    assert!(scheduler
        .prune(Timestamp::from_millis(3_000))
        .await
        .unwrap()
        .is_empty());

    // Clean up the bucket.
    let all = store
        .list_all(&BlobPrefix::parse(&format!("{prefix}/")).unwrap())
        .await
        .unwrap();
    for m in all {
        ion_core::BlobStore::delete(&store, &m.key).await.unwrap();
    }
}
