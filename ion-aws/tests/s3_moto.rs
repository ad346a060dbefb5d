//! S3BlobStore against moto: the BlobStore conformance suite, multipart uploads and their
//! cleanup, pagination past 1,000 keys, encryption and storage class, and checksums.

mod common;

use std::time::Duration;

use bytes::Bytes;
use futures::{stream, StreamExt};
use ion_aws::{S3BlobStoreConfig, ServerSideEncryption};
use ion_core::testkit::content::{drain, generated, generated_sha256};
use ion_core::testkit::{peer_var, unique_name};
use ion_core::{
    BlobKey, BlobPrefix, BlobStore, BlobStoreExt, Error, ErrorKind, ListRequest, PutOptions,
};

use common::*;

ion_core::blob_store_conformance!(s3_moto_multipart, async {
    s3_store("s3 blob store conformance", small_parts()).await
});

ion_core::blob_store_conformance!(s3_moto_defaults, async {
    s3_store(
        "s3 blob store conformance (default thresholds)",
        S3BlobStoreConfig::new(bucket()),
    )
    .await
});

fn scope(name: &str) -> String {
    format!("ion-aws/{}/", unique_name(name))
}

fn key(s: &str) -> BlobKey {
    BlobKey::parse(s).expect("test key")
}

#[tokio::test]
async fn multipart_put_round_trips_and_leaves_no_upload_open() {
    let what = "s3 multipart put";
    let Some(store) = s3_store(what, small_parts()).await else {
        return;
    };
    let endpoint = peer_var(S3_VAR, what).expect("checked above");
    let raw = raw_s3(&endpoint).await;
    let prefix = scope("mp");
    let k = key(&format!("{prefix}big.bin"));
    let len = 17 * MIB + 123;
    let meta = store
        .put(&k, generated(11, len, 64 * 1024), PutOptions::default())
        .await
        .expect("multipart put");
    assert_eq!(meta.size, len);
    assert_eq!(store.head(&k).await.expect("head").size, len);

    let object = store.get(&k).await.expect("get");
    assert_eq!(object.meta.size, len);
    let drained = drain(object.body).await;
    assert!(drained.error.is_none(), "{:?}", drained.error);
    assert_eq!(drained.length, len);
    assert_eq!(drained.sha256, generated_sha256(11, len).await);

    // Four 5 MiB parts: the object S3 assembled has four parts.
    let parts = raw
        .head_object()
        .bucket(bucket())
        .key(k.as_str())
        .part_number(1)
        .send()
        .await
        .expect("head part 1");
    assert_eq!(
        parts.parts_count(),
        Some(4),
        "object was not uploaded in parts"
    );
    assert!(open_uploads(&raw, &prefix).await.is_empty());
    store.delete(&k).await.expect("delete");
}

#[tokio::test]
async fn a_body_failing_mid_multipart_aborts_the_upload() {
    let what = "s3 multipart abort";
    let Some(store) = s3_store(what, small_parts()).await else {
        return;
    };
    let endpoint = peer_var(S3_VAR, what).expect("checked above");
    let raw = raw_s3(&endpoint).await;
    let prefix = scope("abort");
    let k = key(&format!("{prefix}broken.bin"));
    // 12 MiB arrive (two parts uploaded, a third buffered), then the source fails.
    let body = generated(3, 12 * MIB, 64 * 1024)
        .chain(stream::once(async {
            Err(Error::unavailable("source disk went away"))
        }))
        .boxed();
    let err = store
        .put(&k, body, PutOptions::default())
        .await
        .expect_err("a failing body must fail the put");
    assert_eq!(
        err.message(),
        "source disk went away",
        "the stream's own error"
    );
    assert_eq!(
        store.head(&k).await.expect_err("no object").kind(),
        ErrorKind::NotFound
    );
    assert!(
        open_uploads(&raw, &prefix).await.is_empty(),
        "the multipart upload was left open"
    );
}

/// A put interrupted mid-stream (the caller gives up and drops the future) leaves no visible
/// object and, once the detached abort has run, no multipart upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_dropped_mid_stream_leaves_no_object_and_no_upload() {
    let what = "s3 interrupted upload";
    let Some(store) = s3_store(what, small_parts()).await else {
        return;
    };
    let endpoint = peer_var(S3_VAR, what).expect("checked above");
    let raw = raw_s3(&endpoint).await;
    let prefix = scope("drop");
    let k = key(&format!("{prefix}stalled.bin"));
    let (sent_tx, sent_rx) = tokio::sync::oneshot::channel::<()>();
    // 11 MiB arrive, then the source stalls forever, as a hung client would.
    let mut sent_tx = Some(sent_tx);
    let body = generated(5, 11 * MIB, 64 * 1024)
        .chain(stream::poll_fn(move |_| {
            if let Some(tx) = sent_tx.take() {
                let _ = tx.send(());
            }
            std::task::Poll::Pending
        }))
        .boxed();
    let task = {
        let (store, k) = (store.clone(), k.clone());
        tokio::spawn(async move { store.put(&k, body, PutOptions::default()).await })
    };
    sent_rx.await.expect("the body was read up to the stall");
    assert_eq!(
        open_uploads(&raw, &prefix).await,
        [k.as_str().to_owned()],
        "the upload is in progress while the body stalls"
    );
    task.abort();
    assert!(task.await.expect_err("aborted").is_cancelled());

    // The abort runs as a detached task; give it a bounded time to land.
    let mut left = open_uploads(&raw, &prefix).await;
    for _ in 0..100 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = open_uploads(&raw, &prefix).await;
    }
    assert!(left.is_empty(), "uploads left open: {left:?}");
    assert_eq!(
        store.head(&k).await.expect_err("no object").kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test]
async fn list_pages_through_more_than_a_thousand_keys() {
    let what = "s3 list pagination";
    let Some(store) = s3_store(what, S3BlobStoreConfig::new(bucket())).await else {
        return;
    };
    let prefix = scope("many");
    let keys: Vec<BlobKey> = (0..1_050)
        .map(|i| key(&format!("{prefix}k{i:05}")))
        .collect();
    stream::iter(&keys)
        .for_each_concurrent(16, |k| {
            let store = &store;
            async move {
                store
                    .put_bytes(k, Bytes::from_static(b"x"))
                    .await
                    .expect("put");
            }
        })
        .await;
    let p = BlobPrefix::parse(&prefix).unwrap();

    let first = store
        .list(&ListRequest::prefix(p.clone()))
        .await
        .expect("page 1");
    assert_eq!(first.items.len(), 1000, "a full first page");
    let token = first
        .next
        .clone()
        .expect("a continuation token after 1000 of 1050");
    let second = store
        .list(&ListRequest {
            prefix: p.clone(),
            continuation: Some(token),
            limit: 1000,
        })
        .await
        .expect("page 2");
    assert_eq!(second.items.len(), 50);
    assert_eq!(second.next, None, "the last page has no token");

    let all: Vec<BlobKey> = store
        .list_all(&p)
        .await
        .expect("list all")
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(all, keys, "every key once, in order");

    stream::iter(&keys)
        .for_each_concurrent(16, |k| {
            let store = &store;
            async move { store.delete(k).await.expect("delete") }
        })
        .await;
    assert!(store.list_all(&p).await.unwrap().is_empty());
}

#[tokio::test]
async fn encryption_and_storage_class_are_applied() {
    let what = "s3 sse and storage class";
    let config = S3BlobStoreConfig::builder(bucket())
        .server_side_encryption(ServerSideEncryption::Aes256)
        .storage_class("STANDARD_IA")
        .build()
        .unwrap();
    let Some(store) = s3_store(what, config).await else {
        return;
    };
    let endpoint = peer_var(S3_VAR, what).expect("checked above");
    let raw = raw_s3(&endpoint).await;
    let k = key(&format!("{}enc", scope("sse")));
    let mut options = PutOptions::default();
    options.content_type = Some("application/json".into());
    store
        .put(&k, ion_core::stream::once(&b"{}"[..]), options)
        .await
        .expect("put");
    let head = raw
        .head_object()
        .bucket(bucket())
        .key(k.as_str())
        .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
        .send()
        .await
        .expect("raw head");
    assert_eq!(
        head.server_side_encryption(),
        Some(&aws_sdk_s3::types::ServerSideEncryption::Aes256)
    );
    assert_eq!(
        head.storage_class(),
        Some(&aws_sdk_s3::types::StorageClass::StandardIa)
    );
    assert_eq!(head.content_type(), Some("application/json"));
    // The CRC32 the SDK computed on upload was stored with the object and is checked on read.
    assert!(head.checksum_crc32().is_some(), "no crc32 stored: {head:?}");
    store.delete(&k).await.unwrap();
}

#[tokio::test]
async fn missing_keys_are_not_found_and_deletes_are_idempotent() {
    let what = "s3 missing keys";
    let Some(store) = s3_store(what, S3BlobStoreConfig::new(bucket())).await else {
        return;
    };
    let k = key(&format!("{}nothing", scope("missing")));
    assert_eq!(store.get(&k).await.unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(
        store.head(&k).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    store.delete(&k).await.expect("delete of a missing key");
}

#[tokio::test]
async fn a_missing_bucket_is_not_found() {
    let what = "s3 missing bucket";
    let Some(endpoint) = peer_var(S3_VAR, what) else {
        return;
    };
    let store = ion_aws::S3BlobStore::new(
        &aws_config(&endpoint),
        S3BlobStoreConfig::new(unique_name("ion-no-bucket")),
    )
    .await
    .unwrap();
    let e = store.head(&key("a")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let e = store
        .list(&ListRequest::prefix(BlobPrefix::all()))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}

/// Tenant-supplied keys are parsed before anything reaches S3: traversal, absolute paths and
/// control characters never become a `BlobKey`, so no call can carry them.
#[tokio::test]
async fn hostile_keys_are_rejected_before_any_call() {
    for bad in [
        "../etc/passwd",
        "a/../b",
        "/absolute",
        "a//b",
        "a/./b",
        "nul\0byte",
        "new\nline",
        "tab\tkey",
        "esc\u{1b}[31m",
        "",
        "trailing/",
    ] {
        let e: Error = BlobKey::parse(bad).unwrap_err().into();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad:?}");
        assert!(e.message().contains("blob key"), "{e}");
    }
    // The same holds for a prefix used to list.
    for bad in ["../", "/x/", "a\u{7f}"] {
        assert!(BlobPrefix::parse(bad).is_err(), "{bad:?}");
    }
}

/// An unreachable endpoint is transient `Unavailable` (a connection failure), not a hang.
#[tokio::test]
async fn an_unreachable_endpoint_is_transient_unavailable() {
    let aws = ion_aws::AwsConfig::builder()
        .endpoint_url("http://127.0.0.1:9")
        .region("us-east-1")
        .force_path_style(true)
        .static_credentials("a", "b")
        .max_attempts(1)
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let store = ion_aws::S3BlobStore::new(&aws, S3BlobStoreConfig::new(bucket()))
        .await
        .unwrap();
    let e = store.head(&key("a")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_transient());
}
