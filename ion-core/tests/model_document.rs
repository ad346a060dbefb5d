//! Model-based test: `InMemoryDocumentStore` against a `BTreeMap` after every operation.

use std::collections::BTreeMap;

use ion_core::fake::InMemoryDocumentStore;
use ion_core::{
    CollectionName, DocQuery, DocumentBody, DocumentId, DocumentStore, DocumentStoreExt, Error,
    ErrorKind, FieldFilter, FieldPath, Revision, Scalar,
};
use proptest::prelude::*;
use serde_json::{json, Value};

const COLLECTIONS: [&str; 2] = ["apps", "routes"];
const IDS: [&str; 6] = ["a", "a.1", "b", "b-2", "c", "d_3"];
const STRINGS: [&str; 3] = ["x", "$ne", "{\"$gt\": 0}"];

#[derive(Clone, Debug)]
struct Body {
    n: i64,
    s: usize,
    flag: bool,
}

impl Body {
    fn json(&self) -> Value {
        json!({"n": self.n, "s": STRINGS[self.s], "nested": {"flag": self.flag}})
    }
}

#[derive(Clone, Debug)]
enum Filter {
    N(i64),
    S(usize),
    Flag(bool),
}

#[derive(Clone, Debug)]
enum Op {
    Insert {
        c: usize,
        id: usize,
        body: Body,
    },
    /// `offset` 0 expects the current revision; anything else a wrong one.
    Update {
        c: usize,
        id: usize,
        offset: i8,
        body: Body,
    },
    Delete {
        c: usize,
        id: usize,
    },
    Get {
        c: usize,
        id: usize,
    },
    Find {
        c: usize,
        filters: Vec<Filter>,
        limit: usize,
    },
}

fn body() -> impl Strategy<Value = Body> {
    (0i64..3, 0..STRINGS.len(), any::<bool>()).prop_map(|(n, s, flag)| Body { n, s, flag })
}

fn filter() -> impl Strategy<Value = Filter> {
    prop_oneof![
        (0i64..3).prop_map(Filter::N),
        (0..STRINGS.len()).prop_map(Filter::S),
        any::<bool>().prop_map(Filter::Flag),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let c = 0..COLLECTIONS.len();
    let id = 0..IDS.len();
    prop_oneof![
        3 => (c.clone(), id.clone(), body()).prop_map(|(c, id, body)| Op::Insert { c, id, body }),
        3 => (c.clone(), id.clone(), prop_oneof![Just(0i8), -2i8..=2], body())
            .prop_map(|(c, id, offset, body)| Op::Update { c, id, offset, body }),
        1 => (c.clone(), id.clone()).prop_map(|(c, id)| Op::Delete { c, id }),
        2 => (c.clone(), id).prop_map(|(c, id)| Op::Get { c, id }),
        2 => (c, proptest::collection::vec(filter(), 0..3), 0usize..4)
            .prop_map(|(c, filters, limit)| Op::Find { c, filters, limit }),
    ]
}

type Model = BTreeMap<(usize, &'static str), (u64, Value)>;

fn coll(c: usize) -> CollectionName {
    CollectionName::parse(COLLECTIONS[c]).unwrap()
}

fn doc_id(i: usize) -> DocumentId {
    DocumentId::parse(IDS[i]).unwrap()
}

fn kind<T>(r: &Result<T, Error>) -> Option<ErrorKind> {
    r.as_ref().err().map(Error::kind)
}

fn to_filter(f: &Filter) -> FieldFilter {
    let (path, value) = match f {
        Filter::N(n) => ("n", Scalar::Int(*n)),
        Filter::S(s) => ("s", Scalar::String(STRINGS[*s].to_owned())),
        Filter::Flag(b) => ("nested.flag", Scalar::Bool(*b)),
    };
    FieldFilter {
        path: FieldPath::parse(path).unwrap(),
        value,
    }
}

fn model_matches(f: &Filter, v: &Value) -> bool {
    match f {
        Filter::N(n) => v["n"] == json!(n),
        Filter::S(s) => v["s"] == json!(STRINGS[*s]),
        Filter::Flag(b) => v["nested"]["flag"] == json!(b),
    }
}

async fn check_find(
    store: &InMemoryDocumentStore,
    model: &Model,
    c: usize,
    filters: &[Filter],
    limit: usize,
) {
    let expected: Vec<(String, u64, Value)> = model
        .iter()
        .filter(|((mc, _), (_, v))| *mc == c && filters.iter().all(|f| model_matches(f, v)))
        .map(|((_, id), (rev, v))| (id.to_string(), *rev, v.clone()))
        .collect();
    let mut query = DocQuery {
        filters: filters.iter().map(to_filter).collect(),
        after: None,
        limit,
    };
    let page_size = query.page_size();
    let mut seen = Vec::new();
    loop {
        let page = store.find(&coll(c), &query).await.unwrap();
        let rest = expected.len() - seen.len();
        assert_eq!(page.documents.len(), rest.min(page_size), "page length");
        seen.extend(page.documents.iter().map(|d| {
            (
                d.id.to_string(),
                d.revision.0,
                Value::Object(d.body.as_map().clone()),
            )
        }));
        assert_eq!(page.next.is_some(), seen.len() < expected.len(), "next");
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    assert_eq!(
        seen, expected,
        "find in {} with {filters:?}",
        COLLECTIONS[c]
    );
}

async fn run(ops: Vec<Op>) {
    let store = InMemoryDocumentStore::new();
    let mut model: Model = BTreeMap::new();
    for op in ops {
        match op {
            Op::Insert { c, id, body } => {
                let r = store
                    .insert(
                        &coll(c),
                        &doc_id(id),
                        &DocumentBody::new(body.json()).unwrap(),
                    )
                    .await;
                match model.get(&(c, IDS[id])) {
                    Some(_) => assert_eq!(kind(&r), Some(ErrorKind::AlreadyExists)),
                    None => {
                        assert_eq!(r.unwrap(), Revision(1));
                        model.insert((c, IDS[id]), (1, body.json()));
                    }
                }
            }
            Op::Update {
                c,
                id,
                offset,
                body,
            } => {
                let current = model.get(&(c, IDS[id])).map(|(rev, _)| *rev);
                let expected = (current.unwrap_or(1) as i64 + i64::from(offset)).max(0) as u64;
                let r = store
                    .update(
                        &coll(c),
                        &doc_id(id),
                        Revision(expected),
                        &DocumentBody::new(body.json()).unwrap(),
                    )
                    .await;
                match current {
                    None => assert_eq!(kind(&r), Some(ErrorKind::NotFound)),
                    Some(rev) if rev == expected => {
                        assert_eq!(r.unwrap(), Revision(rev + 1));
                        model.insert((c, IDS[id]), (rev + 1, body.json()));
                    }
                    Some(_) => assert_eq!(kind(&r), Some(ErrorKind::Conflict)),
                }
            }
            Op::Delete { c, id } => {
                store.delete(&coll(c), &doc_id(id)).await.unwrap();
                model.remove(&(c, IDS[id]));
            }
            Op::Get { c, id } => {
                let r = store.get(&coll(c), &doc_id(id)).await;
                match model.get(&(c, IDS[id])) {
                    Some((rev, v)) => {
                        let doc = r.unwrap();
                        assert_eq!(doc.revision, Revision(*rev));
                        assert_eq!(&Value::Object(doc.body.into_map()), v);
                    }
                    None => assert_eq!(kind(&r), Some(ErrorKind::NotFound)),
                }
            }
            Op::Find { c, filters, limit } => check_find(&store, &model, c, &filters, limit).await,
        }
        // After every step every collection matches the model.
        for c in 0..COLLECTIONS.len() {
            check_find(&store, &model, c, &[], 0).await;
            let all = store
                .find_all(&coll(c), &DocQuery::default())
                .await
                .unwrap();
            assert_eq!(all.len(), store.count(&coll(c)));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn in_memory_document_store_behaves_like_a_btreemap(ops in proptest::collection::vec(op(), 1..30)) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(run(ops));
    }
}
