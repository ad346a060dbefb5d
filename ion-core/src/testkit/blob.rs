//! The `BlobStore` conformance suite: one function per clause of the trait's contract.
//!
//! Run it with [`blob_store_conformance!`](crate::blob_store_conformance). Every case works under
//! its own unique prefix (`conformance/blob-…/`), so it can share a real bucket with other runs;
//! it never assumes the store is empty and deletes what it wrote when it passes.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{self, StreamExt};

use crate::blob::{BlobStore, BlobStoreExt, ListRequest, PutOptions};
use crate::error::{ErrorKind, Result};
use crate::name::{BlobKey, BlobPrefix};
use crate::stream as body;
use crate::testkit::content::{self, body_failure, drain, failing_after, generated, read_all};
use crate::testkit::unique_name;
use crate::time::Timestamp;

/// Runs the blob store conformance suite against a backend.
///
/// `$factory` is an async block returning `Option<S>` for some `S: BlobStore`; it runs once per
/// case, and `None` skips the case (use `ion_core::testkit::peer_var(..)?` inside). The invoking
/// crate needs `tokio` with the `macros` and `rt` features.
///
/// ```
/// ion_core::blob_store_conformance!(in_memory, async {
///     Some(ion_core::fake::InMemoryBlobStore::new())
/// });
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! blob_store_conformance {
    ($name:ident, $factory:expr) => {
        $crate::__store_conformance_cases!(
            $name,
            $factory,
            blob,
            [
                put_then_get_returns_the_same_bytes,
                put_returns_and_head_reports_the_size,
                get_of_a_missing_key_is_not_found,
                head_of_a_missing_key_is_not_found,
                put_replaces_an_existing_object,
                put_of_an_empty_body_stores_an_empty_object,
                put_that_fails_part_way_leaves_no_object,
                put_that_fails_part_way_keeps_the_previous_object,
                put_that_fails_after_several_megabytes_changes_nothing,
                delete_is_idempotent,
                deleted_objects_leave_get_head_and_list,
                list_returns_keys_in_ascending_byte_order,
                list_by_prefix_excludes_other_prefixes,
                list_prefix_is_a_plain_string_prefix,
                list_of_an_unused_prefix_is_empty,
                list_reports_the_size_of_each_object,
                list_pages_past_the_default_page_size,
                list_pages_with_a_small_page_size_visit_every_key_once,
                large_objects_stream_in_chunks,
            ]
        );
    };
}

/// Chunk size the suite uploads large bodies in.
const CHUNK: usize = 64 * 1024;
/// Size of the large object: several S3 multipart parts, many chunks.
const LARGE: u64 = 8 * 1024 * 1024;

/// A fresh prefix for one case: `conformance/blob-<unique>/`.
fn scope() -> BlobPrefix {
    let name = format!("conformance/{}/", unique_name("blob"));
    BlobPrefix::parse(&name).expect("unique names make valid prefixes")
}

fn key(prefix: &BlobPrefix, rest: &str) -> BlobKey {
    BlobKey::parse(&format!("{}{rest}", prefix.as_str())).expect("suite keys are valid")
}

#[track_caller]
fn must<T>(result: Result<T>, clause: &str, what: &str) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("{clause}: {what} failed: {e:?}"),
    }
}

#[track_caller]
fn must_fail<T>(result: Result<T>, kind: ErrorKind, clause: &str, what: &str) {
    match result {
        Ok(_) => panic!("{clause}: {what} succeeded, expected {kind}"),
        Err(e) => assert_eq!(
            e.kind(),
            kind,
            "{clause}: {what} failed with {e:?}, expected {kind}"
        ),
    }
}

async fn put(store: &dyn BlobStore, key: &BlobKey, data: &'static [u8], clause: &str) {
    must(
        store.put_bytes(key, Bytes::from_static(data)).await,
        clause,
        &format!("put {key}"),
    );
}

async fn get(store: &dyn BlobStore, key: &BlobKey, clause: &str) -> Bytes {
    let object = must(store.get(key).await, clause, &format!("get {key}"));
    must(
        read_all(object.body).await,
        clause,
        &format!("reading {key}"),
    )
}

/// Every page of a listing, checking each one's size bound on the way.
async fn list_pages(
    store: &dyn BlobStore,
    mut request: ListRequest,
    expected_keys: usize,
    clause: &str,
) -> Vec<Vec<BlobKey>> {
    let page_size = request.page_size();
    // A store may end with an empty page after a full one, never with more pages than that.
    let max_pages = expected_keys / page_size + 2;
    let mut pages = Vec::new();
    loop {
        let page = must(store.list(&request).await, clause, "list");
        assert!(
            page.items.len() <= page_size,
            "{clause}: a page held {} items, more than the page size {page_size}",
            page.items.len()
        );
        pages.push(page.items.into_iter().map(|m| m.key).collect());
        assert!(
            pages.len() <= max_pages,
            "{clause}: {expected_keys} keys took more than {max_pages} pages of {page_size}"
        );
        match page.next {
            Some(token) => request.continuation = Some(token),
            None => return pages,
        }
    }
}

/// Deletes everything under `prefix`; a failure here does not fail the case.
async fn clean(store: &dyn BlobStore, prefix: &BlobPrefix) {
    if let Ok(items) = store.list_all(prefix).await {
        stream::iter(items)
            .for_each_concurrent(16, |meta| async move {
                let _ = store.delete(&meta.key).await;
            })
            .await;
    }
}

async fn put_many(store: &dyn BlobStore, keys: &[BlobKey], clause: &str) {
    stream::iter(keys)
        .for_each_concurrent(32, |k| async move {
            must(
                store.put_bytes(k, Bytes::from(k.as_str().to_owned())).await,
                clause,
                &format!("put {k}"),
            );
        })
        .await;
}

/// `put` stores the bytes and `get` streams back exactly them.
pub async fn put_then_get_returns_the_same_bytes(store: &dyn BlobStore) {
    let clause = "put then get returns the same bytes";
    let prefix = scope();
    let k = key(&prefix, "a/b.bin");
    let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    let chunks = body::chunked(Bytes::from(data.clone()), 777);
    must(
        store.put(&k, chunks, PutOptions::default()).await,
        clause,
        "put",
    );
    assert_eq!(
        get(store, &k, clause).await,
        data,
        "{clause}: content differs"
    );
    clean(store, &prefix).await;
}

/// `put` returns the object's metadata and `head` reports the same key and size.
pub async fn put_returns_and_head_reports_the_size(store: &dyn BlobStore) {
    let clause = "put returns and head reports the size";
    let prefix = scope();
    let k = key(&prefix, "sized");
    let before = Timestamp::now();
    let put = must(
        store.put_bytes(&k, Bytes::from_static(b"12345")).await,
        clause,
        "put",
    );
    assert_eq!(put.key, k, "{clause}: put returned another key");
    assert_eq!(put.size, 5, "{clause}: put returned the wrong size");
    let head = must(store.head(&k).await, clause, "head");
    assert_eq!(head.key, k, "{clause}: head returned another key");
    assert_eq!(head.size, 5, "{clause}: head returned the wrong size");
    // Generous bounds: a store's clock and ours may differ by seconds, not by an hour.
    let hour = Duration::from_secs(3600);
    assert!(
        head.last_modified > before.minus(hour) && head.last_modified < Timestamp::now().plus(hour),
        "{clause}: last modified {} is nowhere near now",
        head.last_modified
    );
    clean(store, &prefix).await;
}

/// `get` of a key never written is `NotFound`.
pub async fn get_of_a_missing_key_is_not_found(store: &dyn BlobStore) {
    let clause = "get of a missing key is not found";
    let k = key(&scope(), "missing");
    must_fail(store.get(&k).await, ErrorKind::NotFound, clause, "get");
}

/// `head` of a key never written is `NotFound`.
pub async fn head_of_a_missing_key_is_not_found(store: &dyn BlobStore) {
    let clause = "head of a missing key is not found";
    let k = key(&scope(), "missing");
    must_fail(store.head(&k).await, ErrorKind::NotFound, clause, "head");
}

/// A second `put` under a key replaces the object entirely (a shorter body leaves no tail).
pub async fn put_replaces_an_existing_object(store: &dyn BlobStore) {
    let clause = "put replaces an existing object";
    let prefix = scope();
    let k = key(&prefix, "replaced");
    put(store, &k, b"the first and longer version", clause).await;
    put(store, &k, b"second", clause).await;
    assert_eq!(
        get(store, &k, clause).await,
        &b"second"[..],
        "{clause}: content"
    );
    let head = must(store.head(&k).await, clause, "head");
    assert_eq!(head.size, 6, "{clause}: head size after replace");
    clean(store, &prefix).await;
}

/// An empty body stores an object of size zero, which is found, not missing.
pub async fn put_of_an_empty_body_stores_an_empty_object(store: &dyn BlobStore) {
    let clause = "put of an empty body stores an empty object";
    let prefix = scope();
    let k = key(&prefix, "empty");
    must(
        store
            .put(&k, body::from_chunks(Vec::new()), PutOptions::default())
            .await,
        clause,
        "put",
    );
    assert_eq!(get(store, &k, clause).await.len(), 0, "{clause}: content");
    assert_eq!(
        must(store.head(&k).await, clause, "head").size,
        0,
        "{clause}: size"
    );
    clean(store, &prefix).await;
}

/// A body that fails part-way returns the stream's error and leaves no object under a new key.
pub async fn put_that_fails_part_way_leaves_no_object(store: &dyn BlobStore) {
    let clause = "put that fails part-way leaves no object";
    let prefix = scope();
    let k = key(&prefix, "partial");
    let broken = failing_after(body::once(&b"the first half"[..]), body_failure());
    let result = store.put(&k, broken, PutOptions::default()).await;
    must_fail(
        result,
        body_failure().kind(),
        clause,
        "put of a failing body",
    );
    must_fail(
        store.head(&k).await,
        ErrorKind::NotFound,
        clause,
        "head after the failed put",
    );
    must_fail(
        store.get(&k).await,
        ErrorKind::NotFound,
        clause,
        "get after the failed put",
    );
    let listed = must(store.list_all(&prefix).await, clause, "list");
    assert!(listed.is_empty(), "{clause}: list shows {listed:?}");
    clean(store, &prefix).await;
}

/// A body that fails part-way leaves the previous object under the key unchanged.
pub async fn put_that_fails_part_way_keeps_the_previous_object(store: &dyn BlobStore) {
    let clause = "put that fails part-way keeps the previous object";
    let prefix = scope();
    let k = key(&prefix, "kept");
    put(store, &k, b"the original", clause).await;
    let broken = failing_after(body::once(&b"a replacement that brea"[..]), body_failure());
    let result = store.put(&k, broken, PutOptions::default()).await;
    must_fail(
        result,
        body_failure().kind(),
        clause,
        "put of a failing body",
    );
    assert_eq!(
        get(store, &k, clause).await,
        &b"the original"[..],
        "{clause}: content"
    );
    assert_eq!(
        must(store.head(&k).await, clause, "head").size,
        12,
        "{clause}: size"
    );
    clean(store, &prefix).await;
}

/// A body that fails after several megabytes (past the first part of a multipart upload)
/// changes nothing: no new object, and the old one is intact.
pub async fn put_that_fails_after_several_megabytes_changes_nothing(store: &dyn BlobStore) {
    let clause = "put that fails after several megabytes changes nothing";
    let prefix = scope();
    let fresh = key(&prefix, "fresh");
    let existing = key(&prefix, "existing");
    put(store, &existing, b"the original", clause).await;
    for k in [&fresh, &existing] {
        let broken = failing_after(generated(7, 6 * 1024 * 1024, CHUNK), body_failure());
        let result = store.put(k, broken, PutOptions::default()).await;
        must_fail(
            result,
            body_failure().kind(),
            clause,
            &format!("put of a failing body to {k}"),
        );
    }
    must_fail(
        store.head(&fresh).await,
        ErrorKind::NotFound,
        clause,
        "head of the fresh key",
    );
    assert_eq!(
        get(store, &existing, clause).await,
        &b"the original"[..],
        "{clause}: content"
    );
    let listed = must(store.list_all(&prefix).await, clause, "list");
    let keys: Vec<_> = listed.iter().map(|m| &m.key).collect();
    assert_eq!(keys, [&existing], "{clause}: listing");
    clean(store, &prefix).await;
}

/// Deleting a missing key succeeds, and so does deleting the same key twice.
pub async fn delete_is_idempotent(store: &dyn BlobStore) {
    let clause = "delete is idempotent";
    let prefix = scope();
    let k = key(&prefix, "deleted");
    must(
        store.delete(&k).await,
        clause,
        "delete of a key never written",
    );
    put(store, &k, b"x", clause).await;
    must(store.delete(&k).await, clause, "first delete");
    must(store.delete(&k).await, clause, "second delete");
    must_fail(
        store.get(&k).await,
        ErrorKind::NotFound,
        clause,
        "get after delete",
    );
}

/// A deleted object is gone from `get`, `head` and `list`; its neighbours stay.
pub async fn deleted_objects_leave_get_head_and_list(store: &dyn BlobStore) {
    let clause = "deleted objects leave get, head and list";
    let prefix = scope();
    let gone = key(&prefix, "gone");
    let kept = key(&prefix, "kept");
    put(store, &gone, b"1", clause).await;
    put(store, &kept, b"2", clause).await;
    must(store.delete(&gone).await, clause, "delete");
    must_fail(store.get(&gone).await, ErrorKind::NotFound, clause, "get");
    must_fail(store.head(&gone).await, ErrorKind::NotFound, clause, "head");
    let listed = must(store.list_all(&prefix).await, clause, "list");
    let keys: Vec<_> = listed.iter().map(|m| &m.key).collect();
    assert_eq!(keys, [&kept], "{clause}: listing");
    clean(store, &prefix).await;
}

/// `list` returns keys in ascending byte order (`-` < `.` < digits < `=` < upper < `_` < lower).
pub async fn list_returns_keys_in_ascending_byte_order(store: &dyn BlobStore) {
    let clause = "list returns keys in ascending byte order";
    let prefix = scope();
    let names = [
        "b", "a", "_x", "Z", "0", "=", "-", ".x", "a/b", "a-b", "aa", "B9", "b.0",
    ];
    let keys: Vec<BlobKey> = names.iter().map(|n| key(&prefix, n)).collect();
    put_many(store, &keys, clause).await;
    let listed: Vec<BlobKey> = must(store.list_all(&prefix).await, clause, "list")
        .into_iter()
        .map(|m| m.key)
        .collect();
    let mut expected = keys.clone();
    expected.sort_by(|a, b| a.as_str().as_bytes().cmp(b.as_str().as_bytes()));
    assert_eq!(listed, expected, "{clause}: order");
    clean(store, &prefix).await;
}

/// `list` under a prefix returns only keys with that prefix, never a sibling's.
pub async fn list_by_prefix_excludes_other_prefixes(store: &dyn BlobStore) {
    let clause = "list by prefix excludes other prefixes";
    let root = scope();
    let mine = BlobPrefix::parse(&format!("{}mine/", root.as_str())).expect("valid prefix");
    let keys = [
        key(&root, "mine/1"),
        key(&root, "mine/2"),
        key(&root, "other/1"),
        key(&root, "mine-not/1"),
        key(&root, "top"),
    ];
    put_many(store, &keys, clause).await;
    let listed: Vec<BlobKey> = must(store.list_all(&mine).await, clause, "list")
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(
        listed,
        [keys[0].clone(), keys[1].clone()],
        "{clause}: listing of {mine}"
    );
    clean(store, &root).await;
}

/// The prefix is a string prefix, not a directory: `x/a` also matches `x/ab/1`, `x/a/` does not.
pub async fn list_prefix_is_a_plain_string_prefix(store: &dyn BlobStore) {
    let clause = "list prefix is a plain string prefix";
    let root = scope();
    let keys = [key(&root, "a/1"), key(&root, "ab/1"), key(&root, "b/1")];
    put_many(store, &keys, clause).await;
    let bare = BlobPrefix::parse(&format!("{}a", root.as_str())).expect("valid prefix");
    let dir = BlobPrefix::parse(&format!("{}a/", root.as_str())).expect("valid prefix");
    let listed = |p: BlobPrefix| async move {
        must(store.list_all(&p).await, clause, "list")
            .into_iter()
            .map(|m| m.key)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        listed(bare).await,
        [keys[0].clone(), keys[1].clone()],
        "{clause}: bare prefix"
    );
    assert_eq!(
        listed(dir).await,
        [keys[0].clone()],
        "{clause}: prefix ending in /"
    );
    clean(store, &root).await;
}

/// Listing a prefix nothing was written under is one empty page without a token.
pub async fn list_of_an_unused_prefix_is_empty(store: &dyn BlobStore) {
    let clause = "list of an unused prefix is empty";
    let page = must(
        store.list(&ListRequest::prefix(scope())).await,
        clause,
        "list",
    );
    assert!(page.items.is_empty(), "{clause}: items {:?}", page.items);
    assert_eq!(page.next, None, "{clause}: continuation token");
}

/// Each listed item carries its object's size.
pub async fn list_reports_the_size_of_each_object(store: &dyn BlobStore) {
    let clause = "list reports the size of each object";
    let prefix = scope();
    put(store, &key(&prefix, "one"), b"1", clause).await;
    put(store, &key(&prefix, "three"), b"333", clause).await;
    let listed = must(store.list_all(&prefix).await, clause, "list");
    let sizes: Vec<(String, u64)> = listed
        .iter()
        .map(|m| {
            (
                m.key
                    .as_str()
                    .trim_start_matches(prefix.as_str())
                    .to_owned(),
                m.size,
            )
        })
        .collect();
    assert_eq!(
        sizes,
        [("one".to_owned(), 1), ("three".to_owned(), 3)],
        "{clause}: sizes"
    );
    clean(store, &prefix).await;
}

/// With the default page size (1000), 1,050 keys take more than one page and paging visits
/// each exactly once, in order.
pub async fn list_pages_past_the_default_page_size(store: &dyn BlobStore) {
    let clause = "list pages past the default page size";
    paging_case(store, 1050, 0, clause).await;
}

/// With a page size of 10, 25 keys take three pages and paging visits each exactly once.
pub async fn list_pages_with_a_small_page_size_visit_every_key_once(store: &dyn BlobStore) {
    let clause = "list pages with a small page size visit every key once";
    paging_case(store, 25, 10, clause).await;
}

async fn paging_case(store: &dyn BlobStore, count: usize, limit: usize, clause: &str) {
    let root = scope();
    let inside = BlobPrefix::parse(&format!("{}in/", root.as_str())).expect("valid prefix");
    let mut keys: Vec<BlobKey> = (0..count)
        .map(|i| key(&root, &format!("in/{i:05}")))
        .collect();
    // Neighbours on both sides of the prefix must not leak into its pages.
    keys.push(key(&root, "im"));
    keys.push(key(&root, "in-after"));
    put_many(store, &keys, clause).await;
    let mut request = ListRequest::prefix(inside.clone());
    request.limit = limit;
    let pages = list_pages(store, request, count, clause).await;
    assert!(
        pages.len() >= 2,
        "{clause}: {count} keys came in {} page(s)",
        pages.len()
    );
    assert!(!pages[0].is_empty(), "{clause}: the first page is empty");
    let seen: Vec<BlobKey> = pages.into_iter().flatten().collect();
    let distinct: BTreeSet<&BlobKey> = seen.iter().collect();
    assert_eq!(
        distinct.len(),
        seen.len(),
        "{clause}: a key came back twice"
    );
    let expected: Vec<BlobKey> = keys[..count].to_vec();
    assert_eq!(
        seen.len(),
        expected.len(),
        "{clause}: number of keys visited"
    );
    assert!(
        seen == expected,
        "{clause}: pages did not visit every key once in ascending order"
    );
    clean(store, &root).await;
}

/// An 8 MiB object uploaded in 64 KiB chunks comes back with the same sha256 and length, in
/// more than one chunk (the store streams rather than handing over one buffer).
pub async fn large_objects_stream_in_chunks(store: &dyn BlobStore) {
    let clause = "large objects stream in chunks";
    if let Some(max) = store.capabilities().max_object_size {
        assert!(
            max >= LARGE,
            "{clause}: the store accepts at most {max} bytes"
        );
    }
    let prefix = scope();
    let k = key(&prefix, "large.bin");
    let put = must(
        store
            .put(&k, generated(42, LARGE, CHUNK), PutOptions::default())
            .await,
        clause,
        "put",
    );
    assert_eq!(put.size, LARGE, "{clause}: size returned by put");
    let object = must(store.get(&k).await, clause, "get");
    assert_eq!(object.meta.size, LARGE, "{clause}: size returned by get");
    let drained = drain(object.body).await;
    assert!(
        drained.error.is_none(),
        "{clause}: reading failed: {:?}",
        drained.error
    );
    assert_eq!(drained.length, LARGE, "{clause}: bytes read");
    assert_eq!(
        drained.sha256,
        content::generated_sha256(42, LARGE).await,
        "{clause}: sha256"
    );
    assert!(
        drained.chunks > 1,
        "{clause}: {LARGE} bytes arrived as one chunk; the store did not stream"
    );
    clean(store, &prefix).await;
}
