//! The document store conformance suite against `InMemoryDocumentStore`, plus the fake's faults.
#![cfg(feature = "testkit")]

use ion_core::fake::{FaultPlan, InMemoryDocumentStore};
use ion_core::{CollectionName, DocumentBody, DocumentId, DocumentStore, ErrorKind, Revision};
use serde_json::json;

ion_core::document_store_conformance!(in_memory, async { Some(InMemoryDocumentStore::new()) });

fn names() -> (CollectionName, DocumentId) {
    (
        CollectionName::parse("apps").unwrap(),
        DocumentId::parse("web").unwrap(),
    )
}

#[tokio::test]
async fn clones_share_documents() {
    let store = InMemoryDocumentStore::new();
    let (c, id) = names();
    let body = DocumentBody::new(json!({"v": 1})).unwrap();
    store.insert(&c, &id, &body).await.unwrap();
    let clone = store.clone();
    assert_eq!(clone.get(&c, &id).await.unwrap().body, body);
    assert_eq!(clone.count(&c), 1);
}

#[tokio::test]
async fn fault_plan_fails_updates_without_changing_the_document() {
    let faults = FaultPlan::seeded(5);
    let store = InMemoryDocumentStore::with_faults(faults.clone());
    let (c, id) = names();
    store
        .insert(&c, &id, &DocumentBody::new(json!({"v": 1})).unwrap())
        .await
        .unwrap();
    faults
        .fail_next(1, ErrorKind::RateLimited)
        .only_ops(&["update"]);
    let err = store
        .update(
            &c,
            &id,
            Revision(1),
            &DocumentBody::new(json!({"v": 2})).unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    let doc = store.get(&c, &id).await.unwrap();
    assert_eq!(doc.revision, Revision(1));
    assert_eq!(store.faults().injected(), 1);
}
