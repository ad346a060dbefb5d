//! Snapshot export and import of a collection against the MongoDB peer: a copy holds the same
//! documents, revisions and bodies; counts and digests match; bad lines are refused.

mod common;

use bytes::Bytes;
use ion_core::model::Sha256Digest;
use ion_core::{
    CollectionName, DocQuery, DocumentBody, DocumentId, DocumentStore, DocumentStoreExt, ErrorKind,
    Revision,
};
use serde_json::json;

fn collection(prefix: &str) -> CollectionName {
    CollectionName::parse(&ion_core::testkit::unique_name(prefix).replace('-', "_")).unwrap()
}

#[tokio::test]
async fn an_export_imports_into_an_identical_collection() {
    const WHAT: &str = "snapshot export/import";
    let Some(store) = common::document_store(WHAT).await else {
        return;
    };
    let source = collection("snap");
    let copy = collection("snap");
    for i in 0..250u32 {
        let id = DocumentId::parse(&format!("doc-{i:04}")).unwrap();
        let body =
            DocumentBody::new(json!({"i": i, "name": format!("$n{i}"), "tags": ["a", {"b": i}]}))
                .unwrap();
        let rev = store.insert(&source, &id, &body).await.unwrap();
        if i % 3 == 0 {
            let body = DocumentBody::new(json!({"i": i, "updated": true})).unwrap();
            store.update(&source, &id, rev, &body).await.unwrap();
        }
    }

    let exported =
        ion_core::stream::collect(store.export_collection(&source).await.unwrap(), 8 << 20)
            .await
            .unwrap();
    assert_eq!(exported.iter().filter(|b| **b == b'\n').count(), 250);

    // Import from uneven pieces, as a blob download would deliver them.
    let report = store
        .import_collection(&copy, ion_core::stream::chunked(exported.clone(), 777))
        .await
        .unwrap();
    assert_eq!(report.documents, 250);
    assert_eq!(report.bytes, exported.len() as u64);
    assert_eq!(report.sha256, Sha256Digest::of(&exported));

    let original = store.find_all(&source, &DocQuery::default()).await.unwrap();
    let copied = store.find_all(&copy, &DocQuery::default()).await.unwrap();
    assert_eq!(copied, original, "the copy differs from the source");
    assert_eq!(copied[3].revision, Revision(2));

    // Importing again changes nothing; the copy stays editable with its revisions.
    let again = store
        .import_collection(&copy, ion_core::stream::once(exported.clone()))
        .await
        .unwrap();
    assert_eq!(again.documents, 250);
    assert_eq!(
        store.find_all(&copy, &DocQuery::default()).await.unwrap(),
        original
    );
    let id = DocumentId::parse("doc-0003").unwrap();
    let next = store
        .update(
            &copy,
            &id,
            Revision(2),
            &DocumentBody::new(json!({"x": 1})).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(next, Revision(3));

    // A line whose body carries an operator key is refused before it reaches the driver.
    let bad =
        Bytes::from_static(b"{\"id\":\"evil\",\"revision\":1,\"body\":{\"$set\":{\"x\":1}}}\n");
    let e = store
        .import_collection(&copy, ion_core::stream::once(bad))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e:?}");
    assert_eq!(
        store
            .get(&copy, &DocumentId::parse("evil").unwrap())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );

    for c in [&source, &copy] {
        for d in store.find_all(c, &DocQuery::default()).await.unwrap() {
            store.delete(c, &d.id).await.unwrap();
        }
        common::drop_collection(WHAT, c.as_str()).await;
    }
}
