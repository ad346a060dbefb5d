//! The blob store conformance suite against `InMemoryBlobStore`, plus the fake's own faults.
#![cfg(feature = "testkit")]

use bytes::Bytes;
use ion_core::fake::{FaultPlan, InMemoryBlobStore};
use ion_core::{BlobKey, BlobStore, BlobStoreExt, ErrorKind};

ion_core::blob_store_conformance!(in_memory, async { Some(InMemoryBlobStore::new()) });

fn key(s: &str) -> BlobKey {
    BlobKey::parse(s).unwrap()
}

#[tokio::test]
async fn clones_share_objects() {
    let store = InMemoryBlobStore::new();
    let clone = store.clone();
    store
        .put_bytes(&key("a"), Bytes::from_static(b"x"))
        .await
        .unwrap();
    assert_eq!(clone.get_bytes(&key("a"), 10).await.unwrap(), &b"x"[..]);
    assert_eq!(clone.len(), 1);
}

#[tokio::test]
async fn fault_plan_fails_the_named_operation_and_stores_nothing() {
    let faults = FaultPlan::seeded(3);
    faults
        .fail_next(1, ErrorKind::Unavailable)
        .only_ops(&["put"]);
    let store = InMemoryBlobStore::with_faults(faults.clone());
    let err = store
        .put_bytes(&key("a"), Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.is_transient());
    assert!(store.is_empty(), "a failed put stored something");
    store
        .put_bytes(&key("a"), Bytes::from_static(b"x"))
        .await
        .unwrap();
    assert_eq!(store.faults().injected(), 1);
}

#[tokio::test]
async fn corrupt_changes_the_content_but_not_the_size() {
    let store = InMemoryBlobStore::new();
    let data = Bytes::from_static(b"snapshot manifest");
    store.put_bytes(&key("m"), data.clone()).await.unwrap();
    assert!(store.corrupt(&key("m")));
    assert!(!store.corrupt(&key("missing")));
    let got = store.get_bytes(&key("m"), 100).await.unwrap();
    assert_eq!(got.len(), data.len());
    assert_ne!(got, data);
    assert_eq!(store.head(&key("m")).await.unwrap().size, data.len() as u64);
}

#[tokio::test]
async fn a_forged_continuation_token_is_invalid_input() {
    let store = InMemoryBlobStore::new();
    let mut request = ion_core::ListRequest::prefix(ion_core::BlobPrefix::all());
    request.continuation = Some("../not a key".to_owned());
    let err = store.list(&request).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}
