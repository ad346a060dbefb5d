//! `InMemoryDocumentStore`: deterministic JSON documents with optimistic concurrency, in memory.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crate::document::{DocPage, DocQuery, Document, DocumentBody, DocumentStore, Revision};
use crate::error::{Error, Result};
use crate::fake::FaultPlan;
use crate::name::{CollectionName, DocumentId};

type Collections = BTreeMap<CollectionName, BTreeMap<DocumentId, (Revision, DocumentBody)>>;

/// A [`DocumentStore`] in memory, behaving like the MongoDB store.
///
/// - Documents live in independent collections that exist as soon as something is inserted, as
///   in MongoDB; a collection never written is simply empty.
/// - `insert` creates revision 1 (also after a delete); `update` compares the revision and
///   replaces the body in one step under a lock, so of several writers holding the same revision
///   exactly one wins and the others get `Conflict`.
/// - `find` evaluates [`DocQuery::matches`] over the collection in ascending id order and returns
///   at most [`DocQuery::page_size`] documents. `next` is the last id of the page when a further
///   match exists and `None` otherwise, so a page never ends with a `next` that leads nowhere.
/// - Clones share the documents and the [`FaultPlan`]. Every operation first calls
///   [`FaultPlan::check`] with its name: `insert`, `get`, `update`, `delete` or `find`.
#[derive(Clone, Default)]
pub struct InMemoryDocumentStore {
    collections: Arc<Mutex<Collections>>,
    faults: FaultPlan,
}

impl InMemoryDocumentStore {
    /// An empty store without faults.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store whose calls fail or slow down as `faults` says.
    pub fn with_faults(faults: FaultPlan) -> Self {
        Self {
            collections: Arc::default(),
            faults,
        }
    }

    /// The fault plan (shared with every clone).
    pub fn faults(&self) -> &FaultPlan {
        &self.faults
    }

    /// How many documents `collection` holds.
    pub fn count(&self, collection: &CollectionName) -> usize {
        self.collections().get(collection).map_or(0, BTreeMap::len)
    }

    fn collections(&self) -> MutexGuard<'_, Collections> {
        // Every mutation is a single insert or remove, so a poisoned lock still guards a
        // consistent map.
        self.collections.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl fmt::Debug for InMemoryDocumentStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let collections = self.collections();
        let sizes: BTreeMap<&str, usize> = collections
            .iter()
            .map(|(name, docs)| (name.as_str(), docs.len()))
            .collect();
        f.debug_struct("InMemoryDocumentStore")
            .field("collections", &sizes)
            .field("faults", &self.faults)
            .finish()
    }
}

#[async_trait]
impl DocumentStore for InMemoryDocumentStore {
    async fn insert(
        &self,
        collection: &CollectionName,
        id: &DocumentId,
        body: &DocumentBody,
    ) -> Result<Revision> {
        self.faults.check("insert").await?;
        let mut collections = self.collections();
        let docs = collections.entry(collection.clone()).or_default();
        if docs.contains_key(id) {
            return Err(Error::already_exists(format!(
                "document {id} already exists in {collection}"
            )));
        }
        docs.insert(id.clone(), (Revision(1), body.clone()));
        Ok(Revision(1))
    }

    async fn get(&self, collection: &CollectionName, id: &DocumentId) -> Result<Document> {
        self.faults.check("get").await?;
        self.collections()
            .get(collection)
            .and_then(|docs| docs.get(id))
            .map(|(revision, body)| Document {
                id: id.clone(),
                revision: *revision,
                body: body.clone(),
            })
            .ok_or_else(|| Error::not_found(format!("no document {id} in {collection}")))
    }

    async fn update(
        &self,
        collection: &CollectionName,
        id: &DocumentId,
        expected: Revision,
        body: &DocumentBody,
    ) -> Result<Revision> {
        self.faults.check("update").await?;
        let mut collections = self.collections();
        let Some((revision, stored)) = collections.get_mut(collection).and_then(|d| d.get_mut(id))
        else {
            return Err(Error::not_found(format!(
                "no document {id} in {collection}"
            )));
        };
        if *revision != expected {
            return Err(Error::conflict(format!(
                "document {id} in {collection} is at {revision}, not {expected}"
            )));
        }
        *revision = Revision(revision.0 + 1);
        *stored = body.clone();
        Ok(*revision)
    }

    async fn delete(&self, collection: &CollectionName, id: &DocumentId) -> Result<()> {
        self.faults.check("delete").await?;
        if let Some(docs) = self.collections().get_mut(collection) {
            docs.remove(id);
        }
        Ok(())
    }

    async fn find(&self, collection: &CollectionName, query: &DocQuery) -> Result<DocPage> {
        self.faults.check("find").await?;
        let page_size = query.page_size();
        let collections = self.collections();
        let Some(docs) = collections.get(collection) else {
            return Ok(DocPage::default());
        };
        let start = match &query.after {
            Some(after) => Bound::Excluded(after),
            None => Bound::Unbounded,
        };
        let mut matching = docs
            .range::<DocumentId, _>((start, Bound::Unbounded))
            .map(|(id, (revision, body))| Document {
                id: id.clone(),
                revision: *revision,
                body: body.clone(),
            })
            .filter(|doc| query.matches(doc));
        let documents: Vec<Document> = matching.by_ref().take(page_size).collect();
        let next = match (matching.next(), documents.last()) {
            (Some(_), Some(last)) => Some(last.id.clone()),
            _ => None,
        };
        Ok(DocPage { documents, next })
    }
}
