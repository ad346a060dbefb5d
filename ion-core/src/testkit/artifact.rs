//! The `ArtifactStore` conformance suite: one function per clause of the trait's contract.
//!
//! Run it with [`artifact_store_conformance!`](crate::artifact_store_conformance). Every case
//! uploads under its own unique tenants (`conf-…`), so it can share a real store with other
//! runs; it never assumes the store is empty and deletes what it uploaded when it passes.

use std::time::Duration;

use bytes::Bytes;

use crate::artifact::{ArtifactInfo, ArtifactMeta, ArtifactStore, ArtifactStoreExt};
use crate::error::{ErrorKind, Result};
use crate::model::{ArtifactRef, Sha256Digest, Version};
use crate::name::{AppId, ArtifactId, TenantId};
use crate::stream as body;
use crate::testkit::content::{self, body_failure, drain, failing_after, generated};
use crate::testkit::unique_name;
use crate::time::Timestamp;

/// Runs the artifact store conformance suite against a backend.
///
/// `$factory` is an async block returning `Option<S>` for some `S: ArtifactStore`; it runs once
/// per case, and `None` skips the case (use `ion_core::testkit::peer_var(..)?` inside). The
/// invoking crate needs `tokio` with the `macros` and `rt` features.
///
/// ```
/// ion_core::artifact_store_conformance!(in_memory, async {
///     Some(ion_core::fake::InMemoryArtifactStore::new())
/// });
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! artifact_store_conformance {
    ($name:ident, $factory:expr) => {
        $crate::__store_conformance_cases!(
            $name,
            $factory,
            artifact,
            [
                upload_returns_the_sha256_and_length_the_store_computed,
                download_returns_exactly_the_uploaded_bytes,
                download_of_an_unknown_id_is_not_found,
                download_with_a_tampered_sha256_ends_in_corrupt,
                download_with_a_wrong_length_ends_in_corrupt,
                upload_that_fails_part_way_stores_nothing,
                upload_that_fails_after_several_megabytes_stores_nothing,
                list_never_shows_another_tenants_artifacts,
                list_filters_by_app,
                list_is_ordered_by_app_then_version_then_id,
                list_reports_the_reference_meta_and_upload_time,
                delete_is_idempotent,
                empty_artifacts_round_trip,
                large_artifacts_stream_in_chunks,
            ]
        );
    };
}

/// Chunk size the suite uploads large bodies in.
const CHUNK: usize = 64 * 1024;
/// Size of the large artifact: many GridFS chunks, many stream chunks.
const LARGE: u64 = 8 * 1024 * 1024;

/// A fresh tenant for one case.
fn tenant() -> TenantId {
    TenantId::parse(&unique_name("conf")).expect("unique names make valid tenant ids")
}

fn meta(tenant: &TenantId, app: &str, version: u64) -> ArtifactMeta {
    ArtifactMeta {
        tenant: tenant.clone(),
        app: AppId::parse(app).expect("suite app ids are valid"),
        version: Version(version),
    }
}

#[track_caller]
fn must<T>(result: Result<T>, clause: &str, what: &str) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("{clause}: {what} failed: {e:?}"),
    }
}

async fn upload(
    store: &dyn ArtifactStore,
    meta: &ArtifactMeta,
    data: &[u8],
    clause: &str,
) -> ArtifactRef {
    let what = format!("upload for {}/{} {}", meta.tenant, meta.app, meta.version);
    must(
        store.upload_bytes(meta, Bytes::copy_from_slice(data)).await,
        clause,
        &what,
    )
}

async fn list(
    store: &dyn ArtifactStore,
    tenant: &TenantId,
    app: Option<&str>,
    clause: &str,
) -> Vec<ArtifactInfo> {
    let app = app.map(|a| AppId::parse(a).expect("suite app ids are valid"));
    must(
        store.list(tenant, app.as_ref()).await,
        clause,
        &format!("list of {tenant}"),
    )
}

/// Deletes every artifact of `tenant`; a failure here does not fail the case.
async fn clean(store: &dyn ArtifactStore, tenant: &TenantId) {
    if let Ok(infos) = store.list(tenant, None).await {
        for info in infos {
            let _ = store.delete(&info.reference.id).await;
        }
    }
}

/// Downloads `reference` to the end and returns the error that ended it, if any.
async fn download_error(
    store: &dyn ArtifactStore,
    reference: &ArtifactRef,
    clause: &str,
) -> Option<crate::Error> {
    let stream = must(store.download(reference).await, clause, "download");
    drain(stream).await.error
}

/// `upload` returns a reference whose sha256 and length are those of the content sent.
pub async fn upload_returns_the_sha256_and_length_the_store_computed(store: &dyn ArtifactStore) {
    let clause = "upload returns the sha256 and length the store computed";
    let t = tenant();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let chunks = body::chunked(Bytes::from(data.clone()), 4096);
    let reference = must(
        store.upload(&meta(&t, "web", 1), chunks).await,
        clause,
        "upload",
    );
    assert_eq!(
        reference.sha256,
        Sha256Digest::of(&data),
        "{clause}: sha256"
    );
    assert_eq!(reference.length, data.len() as u64, "{clause}: length");
    clean(store, &t).await;
}

/// `download` streams back exactly the uploaded bytes and ends without error.
pub async fn download_returns_exactly_the_uploaded_bytes(store: &dyn ArtifactStore) {
    let clause = "download returns exactly the uploaded bytes";
    let t = tenant();
    let data = b"#!/bin/sh\necho hello from the artifact\n";
    let reference = upload(store, &meta(&t, "web", 1), data, clause).await;
    let got = must(
        store.download_bytes(&reference, 1 << 20).await,
        clause,
        "download",
    );
    assert_eq!(got, &data[..], "{clause}: content");
    clean(store, &t).await;
}

/// `download` of an id the store never issued, or of a deleted artifact, is `NotFound`.
pub async fn download_of_an_unknown_id_is_not_found(store: &dyn ArtifactStore) {
    let clause = "download of an unknown id is not found";
    let t = tenant();
    let deleted = upload(store, &meta(&t, "web", 1), b"short-lived", clause).await;
    must(store.delete(&deleted.id).await, clause, "delete");
    let unknown = ArtifactRef {
        id: ArtifactId::parse(&unique_name("missing")).expect("valid id"),
        ..deleted.clone()
    };
    for reference in [&unknown, &deleted] {
        match store.download(reference).await {
            Ok(_) => panic!("{clause}: download of {} succeeded", reference.id),
            Err(e) => assert_eq!(
                e.kind(),
                ErrorKind::NotFound,
                "{clause}: {} gave {e:?}",
                reference.id
            ),
        }
    }
    clean(store, &t).await;
}

/// A reference whose sha256 differs from the stored content's makes the download end with
/// `Corrupt` (the consumer never mistakes other bytes for the artifact it asked for).
pub async fn download_with_a_tampered_sha256_ends_in_corrupt(store: &dyn ArtifactStore) {
    let clause = "download with a tampered sha256 ends in corrupt";
    let t = tenant();
    let reference = upload(store, &meta(&t, "web", 1), &[7u8; 300_000], clause).await;
    let mut digest = *reference.sha256.as_bytes();
    digest[0] ^= 1;
    let tampered = ArtifactRef {
        sha256: Sha256Digest::from_bytes(digest),
        ..reference.clone()
    };
    let error = download_error(store, &tampered, clause).await;
    assert_eq!(
        error.map(|e| e.kind()),
        Some(ErrorKind::Corrupt),
        "{clause}: end of stream"
    );
    // The untampered reference still downloads cleanly.
    assert!(
        download_error(store, &reference, clause).await.is_none(),
        "{clause}: good reference"
    );
    clean(store, &t).await;
}

/// A reference whose length is shorter or longer than the content makes the download end with
/// `Corrupt`.
pub async fn download_with_a_wrong_length_ends_in_corrupt(store: &dyn ArtifactStore) {
    let clause = "download with a wrong length ends in corrupt";
    let t = tenant();
    let reference = upload(store, &meta(&t, "web", 1), &[9u8; 200_000], clause).await;
    for length in [reference.length - 1, reference.length + 1, 0] {
        let wrong = ArtifactRef {
            length,
            ..reference.clone()
        };
        let error = download_error(store, &wrong, clause).await;
        assert_eq!(
            error.map(|e| e.kind()),
            Some(ErrorKind::Corrupt),
            "{clause}: length {length}"
        );
    }
    clean(store, &t).await;
}

/// An upload whose stream fails part-way returns the stream's error and stores nothing.
pub async fn upload_that_fails_part_way_stores_nothing(store: &dyn ArtifactStore) {
    let clause = "upload that fails part-way stores nothing";
    let t = tenant();
    let broken = failing_after(body::once(&b"the first half"[..]), body_failure());
    match store.upload(&meta(&t, "web", 1), broken).await {
        Ok(r) => panic!("{clause}: upload of a failing stream returned {r:?}"),
        Err(e) => assert_eq!(
            e.kind(),
            body_failure().kind(),
            "{clause}: upload gave {e:?}"
        ),
    }
    let listed = list(store, &t, None, clause).await;
    assert!(listed.is_empty(), "{clause}: list shows {listed:?}");
    clean(store, &t).await;
}

/// An upload whose stream fails after several megabytes (many stored chunks in GridFS) returns
/// the stream's error and stores nothing; the tenant's other artifacts are untouched.
pub async fn upload_that_fails_after_several_megabytes_stores_nothing(store: &dyn ArtifactStore) {
    let clause = "upload that fails after several megabytes stores nothing";
    let t = tenant();
    let kept = upload(store, &meta(&t, "web", 1), b"kept", clause).await;
    let broken = failing_after(generated(3, 3 * 1024 * 1024, CHUNK), body_failure());
    match store.upload(&meta(&t, "web", 2), broken).await {
        Ok(r) => panic!("{clause}: upload of a failing stream returned {r:?}"),
        Err(e) => assert_eq!(
            e.kind(),
            body_failure().kind(),
            "{clause}: upload gave {e:?}"
        ),
    }
    let listed: Vec<ArtifactRef> = list(store, &t, None, clause)
        .await
        .into_iter()
        .map(|i| i.reference)
        .collect();
    assert_eq!(listed, std::slice::from_ref(&kept), "{clause}: listing");
    let got = must(
        store.download_bytes(&kept, 1024).await,
        clause,
        "download of the kept artifact",
    );
    assert_eq!(got, &b"kept"[..], "{clause}: kept content");
    clean(store, &t).await;
}

/// `list` of one tenant never includes another tenant's artifacts, even for the same app name.
pub async fn list_never_shows_another_tenants_artifacts(store: &dyn ArtifactStore) {
    let clause = "list never shows another tenant's artifacts";
    let (a, b, nobody) = (tenant(), tenant(), tenant());
    let ra = upload(store, &meta(&a, "web", 1), b"a's binary", clause).await;
    let rb = upload(store, &meta(&b, "web", 1), b"b's binary", clause).await;
    let ids = |infos: Vec<ArtifactInfo>| {
        infos
            .into_iter()
            .map(|i| i.reference.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(list(store, &a, None, clause).await),
        std::slice::from_ref(&ra.id),
        "{clause}: tenant a"
    );
    assert_eq!(
        ids(list(store, &b, None, clause).await),
        std::slice::from_ref(&rb.id),
        "{clause}: tenant b"
    );
    assert_eq!(
        ids(list(store, &a, Some("web"), clause).await),
        std::slice::from_ref(&ra.id),
        "{clause}: a's web"
    );
    assert!(
        list(store, &nobody, None, clause).await.is_empty(),
        "{clause}: a tenant with nothing"
    );
    clean(store, &a).await;
    clean(store, &b).await;
}

/// `list` with an app returns only that app's artifacts.
pub async fn list_filters_by_app(store: &dyn ArtifactStore) {
    let clause = "list filters by app";
    let t = tenant();
    let web = upload(store, &meta(&t, "web", 1), b"web", clause).await;
    let api = upload(store, &meta(&t, "api", 1), b"api", clause).await;
    let ids = |infos: Vec<ArtifactInfo>| {
        infos
            .into_iter()
            .map(|i| i.reference.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(list(store, &t, Some("web"), clause).await),
        std::slice::from_ref(&web.id),
        "{clause}: web"
    );
    assert_eq!(
        ids(list(store, &t, Some("api"), clause).await),
        std::slice::from_ref(&api.id),
        "{clause}: api"
    );
    assert!(
        list(store, &t, Some("worker"), clause).await.is_empty(),
        "{clause}: an app with nothing"
    );
    assert_eq!(
        list(store, &t, None, clause).await.len(),
        2,
        "{clause}: all apps"
    );
    clean(store, &t).await;
}

/// `list` orders by app, then version, then id, whatever the upload order.
pub async fn list_is_ordered_by_app_then_version_then_id(store: &dyn ArtifactStore) {
    let clause = "list is ordered by app then version then id";
    let t = tenant();
    let order = [
        ("web", 2),
        ("api", 10),
        ("web", 1),
        ("api", 9),
        ("web", 2),
        ("api", 10),
    ];
    for (app, version) in order {
        upload(
            store,
            &meta(&t, app, version),
            format!("{app} {version}").as_bytes(),
            clause,
        )
        .await;
    }
    let listed = list(store, &t, None, clause).await;
    let got: Vec<(String, u64, ArtifactId)> = listed
        .iter()
        .map(|i| {
            (
                i.meta.app.to_string(),
                i.meta.version.0,
                i.reference.id.clone(),
            )
        })
        .collect();
    let mut expected = got.clone();
    expected.sort();
    assert_eq!(got, expected, "{clause}: order");
    let versions: Vec<(String, u64)> = got.iter().map(|(a, v, _)| (a.clone(), *v)).collect();
    let want = [
        ("api", 9),
        ("api", 10),
        ("api", 10),
        ("web", 1),
        ("web", 2),
        ("web", 2),
    ];
    let want: Vec<(String, u64)> = want.iter().map(|(a, v)| (a.to_string(), *v)).collect();
    assert_eq!(versions, want, "{clause}: apps and versions");
    clean(store, &t).await;
}

/// Each listed artifact carries the reference `upload` returned, the meta it was uploaded with,
/// and an upload time near now.
pub async fn list_reports_the_reference_meta_and_upload_time(store: &dyn ArtifactStore) {
    let clause = "list reports the reference, meta and upload time";
    let t = tenant();
    let before = Timestamp::now();
    let m = meta(&t, "web", 3);
    let reference = upload(store, &m, b"contents", clause).await;
    let listed = list(store, &t, None, clause).await;
    assert_eq!(listed.len(), 1, "{clause}: listing {listed:?}");
    assert_eq!(listed[0].reference, reference, "{clause}: reference");
    assert_eq!(listed[0].meta, m, "{clause}: meta");
    // Generous bounds: the store's clock and ours may differ by seconds, not by an hour.
    let hour = Duration::from_secs(3600);
    let at = listed[0].uploaded_at;
    assert!(
        at > before.minus(hour) && at < Timestamp::now().plus(hour),
        "{clause}: uploaded at {at}"
    );
    clean(store, &t).await;
}

/// Deleting twice succeeds, as does deleting an id never issued; the artifact leaves `list` and
/// `download`, and the tenant's other artifacts stay.
pub async fn delete_is_idempotent(store: &dyn ArtifactStore) {
    let clause = "delete is idempotent";
    let t = tenant();
    let gone = upload(store, &meta(&t, "web", 1), b"gone", clause).await;
    let kept = upload(store, &meta(&t, "web", 2), b"kept", clause).await;
    must(store.delete(&gone.id).await, clause, "first delete");
    must(store.delete(&gone.id).await, clause, "second delete");
    let never = ArtifactId::parse(&unique_name("never")).expect("valid id");
    must(
        store.delete(&never).await,
        clause,
        "delete of an id never issued",
    );
    let listed: Vec<ArtifactRef> = list(store, &t, None, clause)
        .await
        .into_iter()
        .map(|i| i.reference)
        .collect();
    assert_eq!(listed, std::slice::from_ref(&kept), "{clause}: listing");
    match store.download(&gone).await {
        Ok(_) => panic!("{clause}: download after delete succeeded"),
        Err(e) => assert_eq!(
            e.kind(),
            ErrorKind::NotFound,
            "{clause}: download after delete gave {e:?}"
        ),
    }
    clean(store, &t).await;
}

/// An empty upload is an artifact of length 0 with the sha256 of no bytes, and downloads as
/// empty.
pub async fn empty_artifacts_round_trip(store: &dyn ArtifactStore) {
    let clause = "empty artifacts round trip";
    let t = tenant();
    let reference = must(
        store
            .upload(&meta(&t, "web", 1), body::from_chunks(Vec::new()))
            .await,
        clause,
        "upload",
    );
    assert_eq!(reference.length, 0, "{clause}: length");
    assert_eq!(reference.sha256, Sha256Digest::of(b""), "{clause}: sha256");
    let got = must(
        store.download_bytes(&reference, 1024).await,
        clause,
        "download",
    );
    assert!(got.is_empty(), "{clause}: content {got:?}");
    clean(store, &t).await;
}

/// An 8 MiB artifact uploaded in 64 KiB chunks gets the right sha256 and length and downloads
/// verified, in more than one chunk.
pub async fn large_artifacts_stream_in_chunks(store: &dyn ArtifactStore) {
    let clause = "large artifacts stream in chunks";
    let t = tenant();
    let expected = content::generated_sha256(11, LARGE).await;
    let reference = must(
        store
            .upload(&meta(&t, "web", 1), generated(11, LARGE, CHUNK))
            .await,
        clause,
        "upload",
    );
    assert_eq!(reference.length, LARGE, "{clause}: length");
    assert_eq!(reference.sha256, expected, "{clause}: sha256");
    let drained = drain(must(store.download(&reference).await, clause, "download")).await;
    assert!(
        drained.error.is_none(),
        "{clause}: download ended with {:?}",
        drained.error
    );
    assert_eq!(
        (drained.length, drained.sha256),
        (LARGE, expected),
        "{clause}: content"
    );
    assert!(
        drained.chunks > 1,
        "{clause}: {LARGE} bytes arrived as one chunk; the store did not stream"
    );
    clean(store, &t).await;
}
