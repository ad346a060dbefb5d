//! The `DocumentStore` conformance suite: one function per clause of the trait's contract.
//!
//! Run it with [`document_store_conformance!`](crate::document_store_conformance). Every case
//! works in its own uniquely named collections (`conf_…`), so it can share a real database with
//! other runs; it never assumes the store is empty and deletes what it wrote when it passes.
//!
//! Paging is checked the way the contract words it: a page holds at most `page_size`
//! documents and following `next` visits each match exactly once. A store may answer a full last
//! page with a `next` that leads to one empty page (as a plain `limit` query does) or with `None`
//! (as the in-memory fake does); both pass.

use std::collections::BTreeSet;

use futures::future::join_all;
use serde_json::{json, Value};

use crate::document::{DocQuery, DocumentBody, DocumentStore, FieldFilter, Revision, Scalar};
use crate::error::{ErrorKind, Result};
use crate::name::{CollectionName, DocumentId, FieldPath};
use crate::testkit::unique_name;

/// Runs the document store conformance suite against a backend.
///
/// `$factory` is an async block returning `Option<S>` for some `S: DocumentStore`; it runs once
/// per case, and `None` skips the case (use `ion_core::testkit::peer_var(..)?` inside). The
/// invoking crate needs `tokio` with the `macros` and `rt` features.
///
/// ```
/// ion_core::document_store_conformance!(in_memory, async {
///     Some(ion_core::fake::InMemoryDocumentStore::new())
/// });
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! document_store_conformance {
    ($name:ident, $factory:expr) => {
        $crate::__store_conformance_cases!(
            $name,
            $factory,
            document,
            [
                insert_creates_revision_one_and_get_returns_the_body,
                insert_of_an_existing_id_is_already_exists_and_changes_nothing,
                get_of_a_missing_document_is_not_found,
                update_with_the_current_revision_replaces_the_body_and_increments_it,
                update_with_a_stale_revision_is_conflict_not_not_found,
                stale_writer_loses_and_the_winners_body_is_stored,
                of_concurrent_updates_from_one_revision_exactly_one_wins,
                update_of_a_missing_document_is_not_found,
                delete_is_idempotent,
                insert_after_delete_starts_again_at_revision_one,
                find_matches_every_filter,
                find_filters_on_nested_paths,
                find_matches_operator_like_strings_literally,
                find_does_not_match_a_scalar_inside_an_array,
                find_returns_documents_in_id_order,
                find_pages_past_one_page_visiting_each_match_once,
                find_in_an_unused_collection_is_empty,
                collections_are_independent_and_share_ids,
            ]
        );
    };
}

/// A fresh collection for one case.
fn collection() -> CollectionName {
    let name = unique_name("conf").replace('-', "_");
    CollectionName::parse(&name).expect("unique names make valid collection names")
}

fn id(s: &str) -> DocumentId {
    DocumentId::parse(s).expect("suite ids are valid")
}

fn body(v: Value) -> DocumentBody {
    DocumentBody::new(v).expect("suite bodies are valid")
}

fn filter(path: &str, value: Scalar) -> FieldFilter {
    FieldFilter {
        path: FieldPath::parse(path).expect("suite paths are valid"),
        value,
    }
}

fn text(s: &str) -> Scalar {
    Scalar::String(s.to_owned())
}

#[track_caller]
fn must<T>(result: Result<T>, clause: &str, what: &str) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("{clause}: {what} failed: {e:?}"),
    }
}

#[track_caller]
fn must_fail<T: std::fmt::Debug>(result: Result<T>, kind: ErrorKind, clause: &str, what: &str) {
    match result {
        Ok(v) => panic!("{clause}: {what} returned {v:?}, expected {kind}"),
        Err(e) => assert_eq!(
            e.kind(),
            kind,
            "{clause}: {what} failed with {e:?}, expected {kind}"
        ),
    }
}

/// Every match of `query`, following `next`, checking the page bound on the way.
async fn find_pages(
    store: &dyn DocumentStore,
    c: &CollectionName,
    mut query: DocQuery,
    expected: usize,
    clause: &str,
) -> Vec<Vec<DocumentId>> {
    let page_size = query.page_size();
    let max_pages = expected / page_size + 2;
    let mut pages = Vec::new();
    loop {
        let page = must(store.find(c, &query).await, clause, "find");
        assert!(
            page.documents.len() <= page_size,
            "{clause}: a page held {} documents, more than the page size {page_size}",
            page.documents.len()
        );
        pages.push(page.documents.into_iter().map(|d| d.id).collect());
        assert!(
            pages.len() <= max_pages,
            "{clause}: {expected} matches took more than {max_pages} pages of {page_size}"
        );
        match page.next {
            Some(next) => query.after = Some(next),
            None => return pages,
        }
    }
}

async fn found(
    store: &dyn DocumentStore,
    c: &CollectionName,
    filters: Vec<FieldFilter>,
    clause: &str,
) -> Vec<String> {
    let query = DocQuery {
        filters,
        ..DocQuery::default()
    };
    let pages = find_pages(store, c, query, 0, clause).await;
    pages
        .into_iter()
        .flatten()
        .map(|d| d.as_str().to_owned())
        .collect()
}

/// Deletes every document of `c`; a failure here does not fail the case.
async fn clean(store: &dyn DocumentStore, c: &CollectionName) {
    let mut query = DocQuery {
        limit: 1000,
        ..DocQuery::default()
    };
    // Bounded, so a misbehaving store cannot keep the cleanup looping.
    for _ in 0..100 {
        let Ok(page) = store.find(c, &query).await else {
            return;
        };
        for doc in &page.documents {
            let _ = store.delete(c, &doc.id).await;
        }
        match page.next {
            Some(next) => query.after = Some(next),
            None => return,
        }
    }
}

async fn insert(store: &dyn DocumentStore, c: &CollectionName, i: &str, v: Value, clause: &str) {
    let rev = must(
        store.insert(c, &id(i), &body(v)).await,
        clause,
        &format!("insert {i}"),
    );
    assert_eq!(rev, Revision(1), "{clause}: insert of {i} returned {rev}");
}

/// `insert` returns revision 1 and `get` returns the body as written, at revision 1.
pub async fn insert_creates_revision_one_and_get_returns_the_body(store: &dyn DocumentStore) {
    let clause = "insert creates revision one and get returns the body";
    let c = collection();
    let v = json!({
        "name": "web",
        "replicas": 3,
        "public": true,
        "nothing": null,
        "tags": ["a", "b"],
        "limits": {"cpu": {"millis": 250}, "memory": "512Mi"},
        "note": "grüße, 日本, \"quoted\"",
    });
    insert(store, &c, "app.web-1", v.clone(), clause).await;
    let doc = must(store.get(&c, &id("app.web-1")).await, clause, "get");
    assert_eq!(doc.id, id("app.web-1"), "{clause}: id");
    assert_eq!(doc.revision, Revision(1), "{clause}: revision");
    assert_eq!(doc.body, body(v), "{clause}: body");
    clean(store, &c).await;
}

/// Inserting an id that exists is `AlreadyExists` and leaves the stored body and revision.
pub async fn insert_of_an_existing_id_is_already_exists_and_changes_nothing(
    store: &dyn DocumentStore,
) {
    let clause = "insert of an existing id is already exists and changes nothing";
    let c = collection();
    insert(store, &c, "d1", json!({"v": "first"}), clause).await;
    must(
        store
            .update(&c, &id("d1"), Revision(1), &body(json!({"v": "second"})))
            .await,
        clause,
        "update",
    );
    let again = store
        .insert(&c, &id("d1"), &body(json!({"v": "intruder"})))
        .await;
    must_fail(again, ErrorKind::AlreadyExists, clause, "second insert");
    let doc = must(store.get(&c, &id("d1")).await, clause, "get");
    assert_eq!(doc.revision, Revision(2), "{clause}: revision");
    assert_eq!(doc.body, body(json!({"v": "second"})), "{clause}: body");
    clean(store, &c).await;
}

/// `get` of an id never inserted is `NotFound`.
pub async fn get_of_a_missing_document_is_not_found(store: &dyn DocumentStore) {
    let clause = "get of a missing document is not found";
    let c = collection();
    insert(store, &c, "present", json!({}), clause).await;
    must_fail(
        store.get(&c, &id("absent")).await,
        ErrorKind::NotFound,
        clause,
        "get",
    );
    clean(store, &c).await;
}

/// `update` with the stored revision replaces the whole body and returns the next revision.
pub async fn update_with_the_current_revision_replaces_the_body_and_increments_it(
    store: &dyn DocumentStore,
) {
    let clause = "update with the current revision replaces the body and increments it";
    let c = collection();
    insert(store, &c, "d", json!({"a": 1, "b": {"c": true}}), clause).await;
    let r2 = must(
        store
            .update(&c, &id("d"), Revision(1), &body(json!({"a": 2})))
            .await,
        clause,
        "update 1",
    );
    assert_eq!(r2, Revision(2), "{clause}: first update");
    let r3 = must(
        store
            .update(&c, &id("d"), r2, &body(json!({"z": "last"})))
            .await,
        clause,
        "update 2",
    );
    assert_eq!(r3, Revision(3), "{clause}: second update");
    let doc = must(store.get(&c, &id("d")).await, clause, "get");
    assert_eq!(doc.revision, Revision(3), "{clause}: stored revision");
    // A replace, not a merge: fields of earlier bodies are gone.
    assert_eq!(doc.body, body(json!({"z": "last"})), "{clause}: body");
    clean(store, &c).await;
}

/// `update` with an older or newer revision than the stored one is `Conflict`, never
/// `NotFound`, and changes nothing.
pub async fn update_with_a_stale_revision_is_conflict_not_not_found(store: &dyn DocumentStore) {
    let clause = "update with a stale revision is conflict not not found";
    let c = collection();
    insert(store, &c, "d", json!({"v": 0}), clause).await;
    must(
        store
            .update(&c, &id("d"), Revision(1), &body(json!({"v": 1})))
            .await,
        clause,
        "update",
    );
    for stale in [Revision(1), Revision(0), Revision(7)] {
        let r = store
            .update(&c, &id("d"), stale, &body(json!({"v": "lost"})))
            .await;
        must_fail(
            r,
            ErrorKind::Conflict,
            clause,
            &format!("update expecting {stale}"),
        );
    }
    let doc = must(store.get(&c, &id("d")).await, clause, "get");
    assert_eq!(
        (doc.revision, doc.body),
        (Revision(2), body(json!({"v": 1}))),
        "{clause}: stored"
    );
    clean(store, &c).await;
}

/// Two writers read revision 1; the first to update wins, the second gets `Conflict`, and the
/// winner's body is what is stored.
pub async fn stale_writer_loses_and_the_winners_body_is_stored(store: &dyn DocumentStore) {
    let clause = "stale writer loses and the winner's body is stored";
    let c = collection();
    insert(store, &c, "shared", json!({"owner": "nobody"}), clause).await;
    let seen_by_a = must(store.get(&c, &id("shared")).await, clause, "get by a").revision;
    let seen_by_b = must(store.get(&c, &id("shared")).await, clause, "get by b").revision;
    let won = store
        .update(&c, &id("shared"), seen_by_a, &body(json!({"owner": "a"})))
        .await;
    assert_eq!(
        must(won, clause, "update by a"),
        Revision(2),
        "{clause}: winner's revision"
    );
    let lost = store
        .update(&c, &id("shared"), seen_by_b, &body(json!({"owner": "b"})))
        .await;
    must_fail(lost, ErrorKind::Conflict, clause, "update by b");
    let doc = must(store.get(&c, &id("shared")).await, clause, "get");
    assert_eq!(
        doc.body,
        body(json!({"owner": "a"})),
        "{clause}: stored body"
    );
    assert_eq!(doc.revision, Revision(2), "{clause}: stored revision");
    clean(store, &c).await;
}

/// Eight updates sent at once, all expecting revision 1: exactly one succeeds, the rest are
/// `Conflict`, and the stored body is the winner's.
pub async fn of_concurrent_updates_from_one_revision_exactly_one_wins(store: &dyn DocumentStore) {
    let clause = "of concurrent updates from one revision exactly one wins";
    let c = collection();
    insert(store, &c, "raced", json!({"writer": -1}), clause).await;
    let doc_id = id("raced");
    let attempts = (0..8i64).map(|w| {
        let (c, doc_id) = (&c, &doc_id);
        async move {
            (
                w,
                store
                    .update(c, doc_id, Revision(1), &body(json!({"writer": w})))
                    .await,
            )
        }
    });
    let results = join_all(attempts).await;
    let mut winners = Vec::new();
    for (w, r) in results {
        match r {
            Ok(rev) => {
                assert_eq!(rev, Revision(2), "{clause}: winner's revision");
                winners.push(w);
            }
            Err(e) => assert_eq!(
                e.kind(),
                ErrorKind::Conflict,
                "{clause}: loser {w} got {e:?}"
            ),
        }
    }
    assert_eq!(winners.len(), 1, "{clause}: winners {winners:?}");
    let doc = must(store.get(&c, &doc_id).await, clause, "get");
    assert_eq!(
        doc.body,
        body(json!({"writer": winners[0]})),
        "{clause}: stored body"
    );
    assert_eq!(doc.revision, Revision(2), "{clause}: stored revision");
    clean(store, &c).await;
}

/// `update` of an id never inserted (or deleted) is `NotFound`, whatever revision it expects,
/// and does not create the document.
pub async fn update_of_a_missing_document_is_not_found(store: &dyn DocumentStore) {
    let clause = "update of a missing document is not found";
    let c = collection();
    insert(store, &c, "gone", json!({}), clause).await;
    must(store.delete(&c, &id("gone")).await, clause, "delete");
    for (name, rev) in [
        ("never", Revision(1)),
        ("gone", Revision(1)),
        ("gone", Revision(2)),
    ] {
        let r = store
            .update(&c, &id(name), rev, &body(json!({"v": 1})))
            .await;
        must_fail(
            r,
            ErrorKind::NotFound,
            clause,
            &format!("update of {name} expecting {rev}"),
        );
        must_fail(
            store.get(&c, &id(name)).await,
            ErrorKind::NotFound,
            clause,
            "get after update",
        );
    }
    clean(store, &c).await;
}

/// Deleting a missing document succeeds; a deleted document is gone from `get` and `find`.
pub async fn delete_is_idempotent(store: &dyn DocumentStore) {
    let clause = "delete is idempotent";
    let c = collection();
    must(
        store.delete(&c, &id("never")).await,
        clause,
        "delete of a missing document",
    );
    insert(store, &c, "d", json!({"k": "v"}), clause).await;
    insert(store, &c, "e", json!({"k": "v"}), clause).await;
    must(store.delete(&c, &id("d")).await, clause, "first delete");
    must(store.delete(&c, &id("d")).await, clause, "second delete");
    must_fail(
        store.get(&c, &id("d")).await,
        ErrorKind::NotFound,
        clause,
        "get after delete",
    );
    assert_eq!(
        found(store, &c, vec![filter("k", text("v"))], clause).await,
        ["e"],
        "{clause}: find"
    );
    clean(store, &c).await;
}

/// After a delete, inserting the same id creates a new document at revision 1.
pub async fn insert_after_delete_starts_again_at_revision_one(store: &dyn DocumentStore) {
    let clause = "insert after delete starts again at revision one";
    let c = collection();
    insert(store, &c, "d", json!({"v": 1}), clause).await;
    must(
        store
            .update(&c, &id("d"), Revision(1), &body(json!({"v": 2})))
            .await,
        clause,
        "update",
    );
    must(store.delete(&c, &id("d")).await, clause, "delete");
    insert(store, &c, "d", json!({"v": 3}), clause).await;
    let doc = must(store.get(&c, &id("d")).await, clause, "get");
    assert_eq!(
        (doc.revision, doc.body),
        (Revision(1), body(json!({"v": 3}))),
        "{clause}: stored"
    );
    clean(store, &c).await;
}

/// `find` returns the documents matching every filter (strings, integers and booleans compared
/// by type: `"1"` is not `1`, `"true"` is not `true`).
pub async fn find_matches_every_filter(store: &dyn DocumentStore) {
    let clause = "find matches every filter";
    let c = collection();
    insert(
        store,
        &c,
        "a",
        json!({"kind": "web", "n": 1, "on": true}),
        clause,
    )
    .await;
    insert(
        store,
        &c,
        "b",
        json!({"kind": "web", "n": 2, "on": true}),
        clause,
    )
    .await;
    insert(
        store,
        &c,
        "c",
        json!({"kind": "web", "n": "1", "on": "true"}),
        clause,
    )
    .await;
    insert(
        store,
        &c,
        "d",
        json!({"kind": "worker", "n": 1, "on": false}),
        clause,
    )
    .await;
    insert(store, &c, "e", json!({"n": 1}), clause).await;
    let q = |f: Vec<FieldFilter>| found(store, &c, f, clause);
    assert_eq!(
        q(vec![filter("kind", text("web"))]).await,
        ["a", "b", "c"],
        "{clause}: kind=web"
    );
    assert_eq!(
        q(vec![filter("n", Scalar::Int(1))]).await,
        ["a", "d", "e"],
        "{clause}: n=1"
    );
    assert_eq!(
        q(vec![filter("n", text("1"))]).await,
        ["c"],
        "{clause}: n=\"1\""
    );
    assert_eq!(
        q(vec![filter("on", Scalar::Bool(true))]).await,
        ["a", "b"],
        "{clause}: on=true"
    );
    let both = vec![filter("kind", text("web")), filter("n", Scalar::Int(1))];
    assert_eq!(q(both).await, ["a"], "{clause}: kind=web and n=1");
    let none = vec![
        filter("kind", text("web")),
        filter("on", Scalar::Bool(false)),
    ];
    assert!(q(none).await.is_empty(), "{clause}: kind=web and on=false");
    assert!(
        q(vec![filter("missing", text("x"))]).await.is_empty(),
        "{clause}: absent field"
    );
    clean(store, &c).await;
}

/// Filters reach into nested objects with dotted paths.
pub async fn find_filters_on_nested_paths(store: &dyn DocumentStore) {
    let clause = "find filters on nested paths";
    let c = collection();
    insert(
        store,
        &c,
        "a",
        json!({"spec": {"limits": {"cpu": 250}, "zone": "a"}}),
        clause,
    )
    .await;
    insert(
        store,
        &c,
        "b",
        json!({"spec": {"limits": {"cpu": 500}, "zone": "a"}}),
        clause,
    )
    .await;
    insert(
        store,
        &c,
        "c",
        json!({"spec": {"limits": 250}, "cpu": 250}),
        clause,
    )
    .await;
    let q = |f: Vec<FieldFilter>| found(store, &c, f, clause);
    let cpu = |n| vec![filter("spec.limits.cpu", Scalar::Int(n))];
    assert_eq!(q(cpu(250)).await, ["a"], "{clause}: spec.limits.cpu=250");
    assert_eq!(q(cpu(500)).await, ["b"], "{clause}: spec.limits.cpu=500");
    assert_eq!(
        q(vec![filter("spec.zone", text("a"))]).await,
        ["a", "b"],
        "{clause}: spec.zone"
    );
    assert!(
        q(vec![filter("spec.limits", text("x"))]).await.is_empty(),
        "{clause}: object vs scalar"
    );
    clean(store, &c).await;
}

/// A filter value that looks like a query operator (`"$ne"`, `"$gt"`, `"{\"$exists\": true}"`)
/// is compared as plain text and never changes the query.
pub async fn find_matches_operator_like_strings_literally(store: &dyn DocumentStore) {
    let clause = "find matches operator-like strings literally";
    let c = collection();
    insert(
        store,
        &c,
        "plain",
        json!({"role": "admin", "meta": {"tag": "x"}}),
        clause,
    )
    .await;
    insert(
        store,
        &c,
        "dollar",
        json!({"role": "$ne", "meta": {"tag": "$gt"}}),
        clause,
    )
    .await;
    insert(
        store,
        &c,
        "json",
        json!({"role": "{\"$exists\": true}"}),
        clause,
    )
    .await;
    let q = |f: Vec<FieldFilter>| found(store, &c, f, clause);
    assert_eq!(
        q(vec![filter("role", text("$ne"))]).await,
        ["dollar"],
        "{clause}: role=$ne"
    );
    assert_eq!(
        q(vec![filter("meta.tag", text("$gt"))]).await,
        ["dollar"],
        "{clause}: tag=$gt"
    );
    let exists = text("{\"$exists\": true}");
    assert_eq!(
        q(vec![filter("role", exists)]).await,
        ["json"],
        "{clause}: role={{$exists}}"
    );
    assert!(
        q(vec![filter("role", text("$where"))]).await.is_empty(),
        "{clause}: role=$where"
    );
    assert!(
        q(vec![filter("role", text("$regex"))]).await.is_empty(),
        "{clause}: role=$regex"
    );
    clean(store, &c).await;
}

/// A scalar filter compares the value at the path itself: an array holding that scalar does not
/// match (unlike a bare MongoDB equality, which would look inside the array).
pub async fn find_does_not_match_a_scalar_inside_an_array(store: &dyn DocumentStore) {
    let clause = "find does not match a scalar inside an array";
    let c = collection();
    insert(store, &c, "list", json!({"tag": ["blue", "green"]}), clause).await;
    insert(
        store,
        &c,
        "nested",
        json!({"items": [{"tag": "blue"}]}),
        clause,
    )
    .await;
    insert(store, &c, "scalar", json!({"tag": "blue"}), clause).await;
    assert_eq!(
        found(store, &c, vec![filter("tag", text("blue"))], clause).await,
        ["scalar"],
        "{clause}: tag"
    );
    let nested = found(store, &c, vec![filter("items.tag", text("blue"))], clause).await;
    assert!(nested.is_empty(), "{clause}: items.tag matched {nested:?}");
    clean(store, &c).await;
}

/// `find` returns matches in ascending id order whatever order they were inserted in.
pub async fn find_returns_documents_in_id_order(store: &dyn DocumentStore) {
    let clause = "find returns documents in id order";
    let c = collection();
    let ids = ["m", "b.2", "z", "a-1", "b_1", "0", "b.10", "aa"];
    for i in ids {
        insert(store, &c, i, json!({"all": true}), clause).await;
    }
    let mut expected: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    expected.sort();
    let got = found(store, &c, vec![filter("all", Scalar::Bool(true))], clause).await;
    assert_eq!(got, expected, "{clause}: order");
    clean(store, &c).await;
}

/// 25 matches among non-matching documents, with a page size of 10: several pages, each match
/// exactly once, in id order, and no non-match.
pub async fn find_pages_past_one_page_visiting_each_match_once(store: &dyn DocumentStore) {
    let clause = "find pages past one page visiting each match once";
    let c = collection();
    let mut expected = Vec::new();
    for i in 0..35 {
        let name = format!("doc-{i:03}");
        // Ten non-matching documents sit among the first matches, so pages must skip them.
        let matching = i >= 20 || i % 2 == 0;
        let group = if matching { "in" } else { "out" };
        insert(store, &c, &name, json!({ "group": group }), clause).await;
        if matching {
            expected.push(id(&name));
        }
    }
    assert_eq!(expected.len(), 25, "suite setup");
    let query = DocQuery {
        filters: vec![filter("group", text("in"))],
        after: None,
        limit: 10,
    };
    let pages = find_pages(store, &c, query, 25, clause).await;
    assert!(
        pages.len() >= 3,
        "{clause}: 25 matches came in {} page(s) of 10",
        pages.len()
    );
    let seen: Vec<DocumentId> = pages.into_iter().flatten().collect();
    let distinct: BTreeSet<&DocumentId> = seen.iter().collect();
    assert_eq!(
        distinct.len(),
        seen.len(),
        "{clause}: a document came back twice"
    );
    assert_eq!(seen, expected, "{clause}: documents visited");
    clean(store, &c).await;
}

/// `find` in a collection nothing was written to is one empty page without `next`.
pub async fn find_in_an_unused_collection_is_empty(store: &dyn DocumentStore) {
    let clause = "find in an unused collection is empty";
    let page = must(
        store.find(&collection(), &DocQuery::default()).await,
        clause,
        "find",
    );
    assert!(
        page.documents.is_empty(),
        "{clause}: documents {:?}",
        page.documents
    );
    assert_eq!(page.next, None, "{clause}: next");
}

/// The same id lives independently in two collections: separate bodies, revisions and deletes.
pub async fn collections_are_independent_and_share_ids(store: &dyn DocumentStore) {
    let clause = "collections are independent and share ids";
    let (one, two) = (collection(), collection());
    insert(store, &one, "same", json!({"in": "one"}), clause).await;
    insert(store, &two, "same", json!({"in": "two"}), clause).await;
    must(
        store
            .update(
                &one,
                &id("same"),
                Revision(1),
                &body(json!({"in": "one, updated"})),
            )
            .await,
        clause,
        "update in one",
    );
    let a = must(store.get(&one, &id("same")).await, clause, "get from one");
    let b = must(store.get(&two, &id("same")).await, clause, "get from two");
    assert_eq!(
        (a.revision, a.body),
        (Revision(2), body(json!({"in": "one, updated"}))),
        "{clause}: one"
    );
    assert_eq!(
        (b.revision, b.body),
        (Revision(1), body(json!({"in": "two"}))),
        "{clause}: two"
    );
    assert_eq!(
        found(store, &two, Vec::new(), clause).await,
        ["same"],
        "{clause}: find in two"
    );
    must(
        store.delete(&one, &id("same")).await,
        clause,
        "delete from one",
    );
    must_fail(
        store.get(&one, &id("same")).await,
        ErrorKind::NotFound,
        clause,
        "get from one",
    );
    let b = must(
        store.get(&two, &id("same")).await,
        clause,
        "get from two after delete",
    );
    assert_eq!(b.revision, Revision(1), "{clause}: two after delete in one");
    clean(store, &one).await;
    clean(store, &two).await;
}
