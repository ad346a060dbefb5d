//! Model-based test: `InMemoryBlobStore` against a `BTreeMap` after every operation.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::StreamExt as _;
use ion_core::fake::InMemoryBlobStore;
use ion_core::stream;
use ion_core::{
    BlobKey, BlobPrefix, BlobStore, BlobStoreExt, Error, ErrorKind, ListRequest, PutOptions,
};
use proptest::prelude::*;

const KEYS: [&str; 7] = ["a", "a/b", "a/c", "ab", "b", "b/a", "b/a/c"];
const PREFIXES: [&str; 5] = ["", "a", "a/", "b", "c"];

#[derive(Clone, Debug)]
enum Op {
    Put { key: usize, data: Vec<u8> },
    PutFailing { key: usize, data: Vec<u8> },
    Delete { key: usize },
    Get { key: usize },
    Head { key: usize },
    List { prefix: usize, limit: usize },
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..KEYS.len();
    let data = proptest::collection::vec(any::<u8>(), 0..40);
    prop_oneof![
        3 => (key.clone(), data.clone()).prop_map(|(key, data)| Op::Put { key, data }),
        1 => (key.clone(), data).prop_map(|(key, data)| Op::PutFailing { key, data }),
        2 => key.clone().prop_map(|key| Op::Delete { key }),
        2 => key.clone().prop_map(|key| Op::Get { key }),
        1 => key.prop_map(|key| Op::Head { key }),
        2 => (0..PREFIXES.len(), 0usize..4).prop_map(|(prefix, limit)| Op::List { prefix, limit }),
    ]
}

fn key(i: usize) -> BlobKey {
    BlobKey::parse(KEYS[i]).unwrap()
}

fn kind<T>(r: &Result<T, Error>) -> Option<ErrorKind> {
    r.as_ref().err().map(Error::kind)
}

/// Pages through `prefix` with `limit`, checking each page against the model's keys.
async fn check_listing(
    store: &InMemoryBlobStore,
    model: &BTreeMap<&'static str, Vec<u8>>,
    prefix: &str,
    limit: usize,
) {
    let expected: Vec<(String, u64)> = model
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| (k.to_string(), v.len() as u64))
        .collect();
    let mut request = ListRequest::prefix(BlobPrefix::parse(prefix).unwrap());
    request.limit = limit;
    let page_size = request.page_size();
    let mut seen = Vec::new();
    loop {
        let page = store.list(&request).await.unwrap();
        let rest = expected.len() - seen.len();
        assert_eq!(page.items.len(), rest.min(page_size), "page length");
        seen.extend(page.items.iter().map(|m| (m.key.to_string(), m.size)));
        // The fake's `next` is precise: set exactly when more keys follow.
        assert_eq!(
            page.next.is_some(),
            seen.len() < expected.len(),
            "next token"
        );
        match page.next {
            Some(token) => request.continuation = Some(token),
            None => break,
        }
    }
    assert_eq!(seen, expected, "listing of {prefix:?}");
}

async fn run(ops: Vec<Op>) {
    let store = InMemoryBlobStore::new();
    let mut model: BTreeMap<&'static str, Vec<u8>> = BTreeMap::new();
    for op in ops {
        match op {
            Op::Put { key: k, data } => {
                let meta = store
                    .put(
                        &key(k),
                        stream::chunked(Bytes::from(data.clone()), 7),
                        PutOptions::default(),
                    )
                    .await
                    .unwrap();
                assert_eq!(meta.size, data.len() as u64);
                model.insert(KEYS[k], data);
            }
            Op::PutFailing { key: k, data } => {
                let body =
                    stream::chunked(Bytes::from(data), 5).chain(futures::stream::once(async {
                        Err(Error::unavailable("broken body"))
                    }));
                let r = store
                    .put(&key(k), Box::pin(body), PutOptions::default())
                    .await;
                assert_eq!(kind(&r), Some(ErrorKind::Unavailable));
            }
            Op::Delete { key: k } => {
                store.delete(&key(k)).await.unwrap();
                model.remove(KEYS[k]);
            }
            Op::Get { key: k } => {
                let got = store.get_bytes(&key(k), 1 << 20).await;
                match model.get(KEYS[k]) {
                    Some(data) => assert_eq!(got.unwrap(), &data[..]),
                    None => assert_eq!(kind(&got), Some(ErrorKind::NotFound)),
                }
            }
            Op::Head { key: k } => {
                let got = store.head(&key(k)).await;
                match model.get(KEYS[k]) {
                    Some(data) => assert_eq!(got.unwrap().size, data.len() as u64),
                    None => assert_eq!(kind(&got), Some(ErrorKind::NotFound)),
                }
            }
            Op::List { prefix, limit } => {
                check_listing(&store, &model, PREFIXES[prefix], limit).await;
            }
        }
        // After every step the whole store matches the model.
        check_listing(&store, &model, "", 0).await;
        assert_eq!(store.len(), model.len());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn in_memory_blob_store_behaves_like_a_btreemap(ops in proptest::collection::vec(op(), 1..30)) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(run(ops));
    }
}
