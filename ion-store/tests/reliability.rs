//! Bad stored data and bad input against the MongoDB peer: corrupted chunks are caught at
//! download, interrupted uploads leave no chunks, operator-injection attempts never reach the
//! driver (or reach it only as literal values).

mod common;

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use ion_core::testkit::content::{drain, failing_after, generated};
use ion_core::{
    AppId, ArtifactMeta, ArtifactStore, ArtifactStoreExt, CollectionName, DocQuery, DocumentBody,
    DocumentId, DocumentStore, DocumentStoreExt, ErrorKind, FieldFilter, FieldPath, Scalar,
    TenantId, Version,
};
use mongodb::bson::{doc, spec::BinarySubtype, Binary, Bson, Document};
use serde_json::json;

fn meta(tenant: &TenantId, app: &str, version: u64) -> ArtifactMeta {
    ArtifactMeta {
        tenant: tenant.clone(),
        app: AppId::parse(app).unwrap(),
        version: Version(version),
    }
}

fn tenant() -> TenantId {
    TenantId::parse(&ion_core::testkit::unique_name("rel")).unwrap()
}

/// Counts the chunk documents of a bucket, whatever file they belong to.
async fn all_chunks(db: &mongodb::Database, bucket: &str) -> u64 {
    db.collection::<Document>(&format!("{bucket}.chunks"))
        .count_documents(doc! {})
        .await
        .expect("count chunks")
}

#[tokio::test]
async fn a_chunk_changed_in_place_is_corrupt_at_download() {
    const WHAT: &str = "corrupted chunk detection";
    let Some((store, bucket)) = common::private_bucket_store(WHAT).await else {
        return;
    };
    let db = common::raw_database(WHAT)
        .await
        .expect("peer is configured");
    let t = tenant();
    let data: Vec<u8> = (0..800_000u32).map(|i| (i % 253) as u8).collect();
    let reference = store
        .upload_bytes(&meta(&t, "web", 1), Bytes::from(data.clone()))
        .await
        .expect("upload");
    assert_eq!(
        store
            .download_bytes(&reference, 1 << 20)
            .await
            .expect("clean download"),
        data
    );

    // Flip one byte of chunk 1, keeping its length, as bit rot or a bad restore would.
    let chunks = db.collection::<Document>(&format!("{bucket}.chunks"));
    let files_id = mongodb::bson::oid::ObjectId::parse_str(reference.id.as_str()).unwrap();
    let chunk = chunks
        .find_one(doc! { "files_id": files_id, "n": 1 })
        .await
        .expect("read chunk")
        .expect("chunk 1 exists");
    let mut bytes = chunk
        .get_binary_generic("data")
        .expect("chunk data")
        .clone();
    bytes[1000] ^= 0x5a;
    let changed = chunks
        .update_one(
            doc! { "_id": chunk.get_object_id("_id").unwrap() },
            doc! { "$set": { "data": Bson::Binary(Binary { subtype: BinarySubtype::Generic, bytes }) } },
        )
        .await
        .expect("modify chunk");
    assert_eq!(changed.modified_count, 1);

    let drained = drain(store.download(&reference).await.expect("download opens")).await;
    let error = drained
        .error
        .expect("a changed chunk must end the stream with an error");
    assert_eq!(error.kind(), ErrorKind::Corrupt, "{error:?}");
    assert!(!error.is_transient(), "corruption is not worth retrying");

    // A chunk that vanished is corrupt too, not a short success.
    chunks
        .delete_one(doc! { "files_id": files_id, "n": 2 })
        .await
        .expect("delete chunk");
    let drained = drain(store.download(&reference).await.expect("download opens")).await;
    assert_eq!(
        drained.error.expect("missing chunk must fail").kind(),
        ErrorKind::Corrupt
    );
    store.delete(&reference.id).await.expect("delete");
    db.collection::<Document>(&format!("{bucket}.files"))
        .drop()
        .await
        .ok();
    chunks.drop().await.ok();
}

#[tokio::test]
async fn an_upload_whose_stream_fails_leaves_no_chunk_behind() {
    const WHAT: &str = "interrupted upload cleanup";
    let Some((store, bucket)) = common::private_bucket_store(WHAT).await else {
        return;
    };
    let db = common::raw_database(WHAT)
        .await
        .expect("peer is configured");
    let t = tenant();
    // 3 MB in 64 KiB pieces: a dozen GridFS chunks are written before the body breaks.
    let body = failing_after(
        generated(7, 3 << 20, 64 * 1024),
        ion_core::Error::invalid_input("client went away"),
    );
    let e = store
        .upload(&meta(&t, "web", 1), body)
        .await
        .expect_err("a broken body must fail the upload");
    assert_eq!(
        e.kind(),
        ErrorKind::InvalidInput,
        "the stream's own error is returned"
    );
    assert_eq!(
        all_chunks(&db, &bucket).await,
        0,
        "orphan chunks after a failed upload"
    );
    assert!(store.list(&t, None).await.unwrap().is_empty());
    db.collection::<Document>(&format!("{bucket}.chunks"))
        .drop()
        .await
        .ok();
    db.collection::<Document>(&format!("{bucket}.files"))
        .drop()
        .await
        .ok();
}

#[tokio::test]
async fn a_cancelled_upload_leaves_no_chunk_behind() {
    const WHAT: &str = "cancelled upload cleanup";
    let Some((store, bucket)) = common::private_bucket_store(WHAT).await else {
        return;
    };
    let db = common::raw_database(WHAT)
        .await
        .expect("peer is configured");
    let t = tenant();
    // A body that yields 2 MB and then never ends: the caller gives up and drops the upload.
    let body = generated(9, 2 << 20, 64 * 1024)
        .chain(futures::stream::pending())
        .boxed();
    let m = meta(&t, "web", 1);
    let upload = store.upload(&m, body);
    let outcome = tokio::time::timeout(Duration::from_secs(3), upload).await;
    assert!(
        outcome.is_err(),
        "the upload cannot finish: its body never ends"
    );
    // The driver deletes a dropped stream's chunks in a background task; wait for it.
    let mut left = all_chunks(&db, &bucket).await;
    for _ in 0..100 {
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = all_chunks(&db, &bucket).await;
    }
    assert_eq!(left, 0, "chunks of a dropped upload were not removed");
    assert!(store.list(&t, None).await.unwrap().is_empty());
    db.collection::<Document>(&format!("{bucket}.chunks"))
        .drop()
        .await
        .ok();
    db.collection::<Document>(&format!("{bucket}.files"))
        .drop()
        .await
        .ok();
}

#[tokio::test]
async fn retention_keeps_the_newest_versions_of_one_app_only() {
    const WHAT: &str = "artifact retention";
    let Some((store, bucket)) = common::private_bucket_store(WHAT).await else {
        return;
    };
    let db = common::raw_database(WHAT)
        .await
        .expect("peer is configured");
    let t = tenant();
    for v in [1, 2, 3, 4] {
        store
            .upload_bytes(&meta(&t, "web", v), Bytes::from(vec![v as u8; 300_000]))
            .await
            .unwrap();
    }
    store
        .upload_bytes(
            &meta(&t, "web", 4),
            Bytes::from_static(b"second binary of v4"),
        )
        .await
        .unwrap();
    let other = store
        .upload_bytes(&meta(&t, "api", 1), Bytes::from_static(b"api"))
        .await
        .unwrap();
    let deleted = store
        .retain_versions(&t, &AppId::parse("web").unwrap(), 2)
        .await
        .unwrap();
    assert_eq!(deleted.len(), 2);
    let versions: Vec<u64> = store
        .list(&t, Some(&AppId::parse("web").unwrap()))
        .await
        .unwrap()
        .iter()
        .map(|a| a.meta.version.0)
        .collect();
    assert_eq!(versions, [3, 4, 4]);
    let api = store
        .list(&t, Some(&AppId::parse("api").unwrap()))
        .await
        .unwrap();
    assert_eq!(api.len(), 1, "another app's artifacts are untouched");
    for id in deleted {
        assert_eq!(
            store.chunk_count(&id).await.unwrap(),
            0,
            "chunks of a retired version"
        );
    }
    store.delete(&other.id).await.unwrap();
    store
        .retain_versions(&t, &AppId::parse("web").unwrap(), 0)
        .await
        .unwrap();
    assert_eq!(all_chunks(&db, &bucket).await, 0);
    db.collection::<Document>(&format!("{bucket}.chunks"))
        .drop()
        .await
        .ok();
    db.collection::<Document>(&format!("{bucket}.files"))
        .drop()
        .await
        .ok();
}

#[tokio::test]
async fn operator_injection_never_reaches_the_driver_as_an_operator() {
    const WHAT: &str = "operator injection";
    // Names that could act as operators or paths do not even parse: nothing to send.
    for bad in ["$where", "a.b", "system_users", "$ne", "a$b", ""] {
        assert!(CollectionName::parse(bad).is_err(), "collection {bad:?}");
    }
    for bad in ["$ne", "{\"$ne\":1}", "a..b", "$where", ".hidden"] {
        assert!(DocumentId::parse(bad).is_err(), "document id {bad:?}");
    }
    for bad in ["$where", "a.$ne", "_id", "a..b", "a.$", "body.$gt"] {
        assert!(FieldPath::parse(bad).is_err(), "field path {bad:?}");
    }
    for bad in [
        json!({"$set": {"x": 1}}),
        json!({"a": {"$where": "sleep(1000)"}}),
        json!({"a.b": 1}),
        json!({"_rev": 99}),
        json!({"a": [{"$gt": ""}]}),
    ] {
        assert!(DocumentBody::new(bad.clone()).is_err(), "body {bad}");
    }
    // A filter value is a scalar: an object such as {"$ne": ""} does not deserialize into one.
    assert!(serde_json::from_value::<Scalar>(json!({"$ne": ""})).is_err());
    assert!(serde_json::from_value::<Scalar>(json!(["$in"])).is_err());

    // What does parse is sent as a literal: "$ne" and "$where" as values match only themselves.
    let Some(store) = common::document_store(WHAT).await else {
        return;
    };
    let c =
        CollectionName::parse(&ion_core::testkit::unique_name("inj").replace('-', "_")).unwrap();
    for (id, owner) in [("a", "$ne"), ("b", "alice"), ("c", "$where"), ("d", "")] {
        store
            .insert_json(
                &c,
                &DocumentId::parse(id).unwrap(),
                &json!({"owner": owner, "note": "this.owner == 1"}),
            )
            .await
            .unwrap();
    }
    let find = |value: &str| DocQuery {
        filters: vec![FieldFilter {
            path: FieldPath::parse("owner").unwrap(),
            value: Scalar::String(value.to_owned()),
        }],
        ..DocQuery::default()
    };
    for (value, expected) in [
        ("$ne", vec!["a"]),
        ("$where", vec!["c"]),
        ("", vec!["d"]),
        ("$gt", vec![]),
    ] {
        let ids: Vec<String> = store
            .find_all(&c, &find(value))
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.id.to_string())
            .collect();
        assert_eq!(ids, expected, "filter owner == {value:?}");
    }
    let doc = store
        .get(&c, &DocumentId::parse("c").unwrap())
        .await
        .unwrap();
    assert_eq!(
        doc.body.as_map()["owner"],
        json!("$where"),
        "stored literally"
    );
    for id in ["a", "b", "c", "d"] {
        store
            .delete(&c, &DocumentId::parse(id).unwrap())
            .await
            .unwrap();
    }
    common::drop_collection(WHAT, c.as_str()).await;
}

#[tokio::test]
async fn a_bucket_first_written_by_the_plain_driver_is_adopted() {
    const WHAT: &str = "adopting a driver-made bucket";
    let Some(conn) = common::connect(WHAT).await else {
        return;
    };
    let db = common::raw_database(WHAT)
        .await
        .expect("peer is configured");
    let bucket = ion_core::testkit::unique_name("b").replace('-', "_");
    // What the mongodb driver creates on a bucket's first upload: the chunk index, not unique.
    db.collection::<Document>(&format!("{bucket}.chunks"))
        .create_index(
            mongodb::IndexModel::builder()
                .keys(doc! { "files_id": 1, "n": 1 })
                .build(),
        )
        .await
        .expect("driver-style index");
    let store = ion_store::GridFsArtifactStore::new(
        conn.clone(),
        ion_store::GridFsOptions {
            bucket: bucket.clone(),
            ..ion_store::GridFsOptions::default()
        },
    )
    .await
    .expect("an existing non-unique chunk index must not stop the store");
    let t = tenant();
    let r = store
        .upload_bytes(&meta(&t, "web", 1), Bytes::from_static(b"adopted"))
        .await
        .unwrap();
    assert_eq!(
        store.download_bytes(&r, 100).await.unwrap(),
        Bytes::from_static(b"adopted")
    );
    store.delete(&r.id).await.unwrap();

    // A declared document index that contradicts the existing one is a configuration error.
    let c =
        CollectionName::parse(&ion_core::testkit::unique_name("idx").replace('-', "_")).unwrap();
    let path = FieldPath::parse("owner").unwrap();
    ion_store::MongoDocumentStore::new(
        conn.clone(),
        &[ion_store::DocumentIndex::new(c.clone(), vec![path.clone()])],
    )
    .await
    .expect("plain index");
    let e = ion_store::MongoDocumentStore::new(
        conn,
        &[ion_store::DocumentIndex::new(c.clone(), vec![path]).unique()],
    )
    .await
    .expect_err("unique over an existing non-unique index");
    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e:?}");
    for name in [
        format!("{bucket}.chunks"),
        format!("{bucket}.files"),
        c.to_string(),
    ] {
        common::drop_collection(WHAT, &name).await;
    }
}
