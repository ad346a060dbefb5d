//! Model-based test: `InMemoryArtifactStore` against a `BTreeMap` after every operation.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use futures::StreamExt as _;
use ion_core::fake::InMemoryArtifactStore;
use ion_core::stream;
use ion_core::{
    AppId, ArtifactId, ArtifactMeta, ArtifactRef, ArtifactStore, ArtifactStoreExt, Error,
    ErrorKind, Sha256Digest, TenantId, Version,
};
use proptest::prelude::*;

const TENANTS: [&str; 3] = ["acme", "globex", "initech"];
const APPS: [&str; 3] = ["api", "web", "worker"];

#[derive(Clone, Debug)]
enum Op {
    Upload {
        tenant: usize,
        app: usize,
        version: u64,
        data: Vec<u8>,
    },
    UploadFailing {
        tenant: usize,
        app: usize,
        data: Vec<u8>,
    },
    /// Deletes the `n`-th id ever issued (modulo how many there are), or an unknown id.
    Delete {
        n: usize,
    },
    Download {
        n: usize,
    },
    List {
        tenant: usize,
        app: Option<usize>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let data = proptest::collection::vec(any::<u8>(), 0..64);
    prop_oneof![
        4 => (0..TENANTS.len(), 0..APPS.len(), 1u64..4, data.clone())
            .prop_map(|(tenant, app, version, data)| Op::Upload { tenant, app, version, data }),
        1 => (0..TENANTS.len(), 0..APPS.len(), data)
            .prop_map(|(tenant, app, data)| Op::UploadFailing { tenant, app, data }),
        2 => any::<usize>().prop_map(|n| Op::Delete { n }),
        2 => any::<usize>().prop_map(|n| Op::Download { n }),
        2 => (0..TENANTS.len(), proptest::option::of(0..APPS.len()))
            .prop_map(|(tenant, app)| Op::List { tenant, app }),
    ]
}

fn meta(tenant: usize, app: usize, version: u64) -> ArtifactMeta {
    ArtifactMeta {
        tenant: TenantId::parse(TENANTS[tenant]).unwrap(),
        app: AppId::parse(APPS[app]).unwrap(),
        version: Version(version),
    }
}

fn kind<T>(r: &Result<T, Error>) -> Option<ErrorKind> {
    r.as_ref().err().map(Error::kind)
}

#[derive(Default)]
struct Model {
    /// Every reference ever issued, in order (deleted ones included).
    issued: Vec<ArtifactRef>,
    live: BTreeMap<ArtifactId, (ArtifactMeta, Vec<u8>)>,
}

impl Model {
    /// The `n`-th issued reference, or a reference to an id never issued.
    fn pick(&self, n: usize) -> ArtifactRef {
        if self.issued.is_empty() || n % (self.issued.len() + 1) == self.issued.len() {
            ArtifactRef {
                id: ArtifactId::parse("never-issued").unwrap(),
                sha256: Sha256Digest::of(b""),
                length: 0,
            }
        } else {
            self.issued[n % (self.issued.len() + 1)].clone()
        }
    }
}

async fn check_list(
    store: &InMemoryArtifactStore,
    model: &Model,
    tenant: usize,
    app: Option<usize>,
) {
    let t = TenantId::parse(TENANTS[tenant]).unwrap();
    let a = app.map(|a| AppId::parse(APPS[a]).unwrap());
    let mut expected: Vec<(AppId, Version, ArtifactId, Sha256Digest, u64)> = model
        .live
        .iter()
        .filter(|(_, (m, _))| m.tenant == t && a.as_ref().is_none_or(|a| m.app == *a))
        .map(|(id, (m, data))| {
            (
                m.app.clone(),
                m.version,
                id.clone(),
                Sha256Digest::of(data),
                data.len() as u64,
            )
        })
        .collect();
    expected.sort();
    let got: Vec<_> = store
        .list(&t, a.as_ref())
        .await
        .unwrap()
        .into_iter()
        .map(|i| {
            assert_eq!(i.meta.tenant, t, "another tenant's artifact");
            (
                i.meta.app,
                i.meta.version,
                i.reference.id,
                i.reference.sha256,
                i.reference.length,
            )
        })
        .collect();
    assert_eq!(got, expected, "list of {t} {a:?}");
}

async fn run(ops: Vec<Op>) {
    let store = InMemoryArtifactStore::new();
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Upload {
                tenant,
                app,
                version,
                data,
            } => {
                let m = meta(tenant, app, version);
                let reference = store
                    .upload(&m, stream::chunked(Bytes::from(data.clone()), 9))
                    .await
                    .unwrap();
                assert_eq!(reference.sha256, Sha256Digest::of(&data));
                assert_eq!(reference.length, data.len() as u64);
                assert!(
                    model.issued.iter().all(|r| r.id != reference.id),
                    "id {} issued twice",
                    reference.id
                );
                model.issued.push(reference.clone());
                model.live.insert(reference.id, (m, data));
            }
            Op::UploadFailing { tenant, app, data } => {
                let body =
                    stream::chunked(Bytes::from(data), 4).chain(futures::stream::once(async {
                        Err(Error::unavailable("broken body"))
                    }));
                let r = store.upload(&meta(tenant, app, 1), Box::pin(body)).await;
                assert_eq!(kind(&r), Some(ErrorKind::Unavailable));
            }
            Op::Delete { n } => {
                let reference = model.pick(n);
                store.delete(&reference.id).await.unwrap();
                model.live.remove(&reference.id);
            }
            Op::Download { n } => {
                let reference = model.pick(n);
                let r = store.download_bytes(&reference, 1 << 20).await;
                match model.live.get(&reference.id) {
                    Some((_, data)) => assert_eq!(r.unwrap(), &data[..]),
                    None => assert_eq!(kind(&r), Some(ErrorKind::NotFound)),
                }
            }
            Op::List { tenant, app } => check_list(&store, &model, tenant, app).await,
        }
        // After every step every tenant's listing matches the model.
        for tenant in 0..TENANTS.len() {
            check_list(&store, &model, tenant, None).await;
        }
        assert_eq!(store.len(), model.live.len());
        let ids: BTreeSet<&ArtifactId> = model.issued.iter().map(|r| &r.id).collect();
        assert_eq!(ids.len(), model.issued.len());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn in_memory_artifact_store_behaves_like_a_btreemap(ops in proptest::collection::vec(op(), 1..30)) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(run(ops));
    }
}
