//! The artifact store conformance suite against `InMemoryArtifactStore`, plus the fake's faults.
#![cfg(feature = "testkit")]

use bytes::Bytes;
use ion_core::fake::{FaultPlan, InMemoryArtifactStore};
use ion_core::testkit::content::drain;
use ion_core::{
    AppId, ArtifactMeta, ArtifactStore, ArtifactStoreExt, ErrorKind, TenantId, Version,
};

ion_core::artifact_store_conformance!(in_memory, async { Some(InMemoryArtifactStore::new()) });

fn meta() -> ArtifactMeta {
    ArtifactMeta {
        tenant: TenantId::parse("acme").unwrap(),
        app: AppId::parse("web").unwrap(),
        version: Version(1),
    }
}

#[tokio::test]
async fn ids_are_issued_in_order_and_clones_share_them() {
    let store = InMemoryArtifactStore::new();
    let clone = store.clone();
    let a = store
        .upload_bytes(&meta(), Bytes::from_static(b"a"))
        .await
        .unwrap();
    let b = clone
        .upload_bytes(&meta(), Bytes::from_static(b"b"))
        .await
        .unwrap();
    assert_eq!(a.id.as_str(), "art-00000001");
    assert_eq!(b.id.as_str(), "art-00000002");
    assert_eq!(store.len(), 2);
}

#[tokio::test]
async fn corrupted_bytes_end_the_download_with_corrupt() {
    let store = InMemoryArtifactStore::new();
    let data = Bytes::from(vec![5u8; 200_000]);
    let reference = store.upload_bytes(&meta(), data).await.unwrap();
    assert!(store.corrupt(&reference.id));
    let drained = drain(store.download(&reference).await.unwrap()).await;
    assert_eq!(drained.error.map(|e| e.kind()), Some(ErrorKind::Corrupt));
    // The listing still shows the digest recorded at upload.
    let listed = store.list(&meta().tenant, None).await.unwrap();
    assert_eq!(listed[0].reference, reference);
}

#[tokio::test]
async fn corrupting_an_empty_artifact_also_ends_in_corrupt() {
    let store = InMemoryArtifactStore::new();
    let reference = store.upload_bytes(&meta(), Bytes::new()).await.unwrap();
    assert!(store.corrupt(&reference.id));
    let err = store.download_bytes(&reference, 10).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt);
}

#[tokio::test]
async fn fault_plan_fails_uploads_and_stores_nothing() {
    let faults = FaultPlan::seeded(9);
    faults
        .fail_next(1, ErrorKind::Unavailable)
        .only_ops(&["upload"]);
    let store = InMemoryArtifactStore::with_faults(faults);
    let err = store
        .upload_bytes(&meta(), Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(store.is_empty());
    assert!(store.list(&meta().tenant, None).await.unwrap().is_empty());
    assert!(!store.corrupt(&ion_core::ArtifactId::parse("art-00000001").unwrap()));
}
