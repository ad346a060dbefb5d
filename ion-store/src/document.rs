//! `MongoDocumentStore`: the `DocumentStore` trait over MongoDB collections.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use async_trait::async_trait;
use futures::TryStreamExt;
use ion_core::{
    CollectionName, DocPage, DocQuery, Document, DocumentBody, DocumentId, DocumentStore, Error,
    FieldPath, Result, Revision, Scalar,
};
use mongodb::bson::{doc, oid::ObjectId, Bson, Document as BsonDocument};
use mongodb::options::IndexOptions;
use mongodb::{Collection, IndexModel};

use crate::bson_body::{body_to_bson, bson_to_body};
use crate::connection::MongoConnection;
use crate::error::map_error;

/// Field holding the document id.
const ID: &str = "_id";
/// Field holding the revision (Int64).
const REV: &str = "_rev";
/// Field holding the token of the last write, to recognise our own write after a lost ack.
const OP: &str = "_op";
/// Field holding the tenant-supplied body, kept apart from the store's own fields.
const BODY: &str = "body";

/// An index to create on a collection at start: fields of the body, ascending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocumentIndex {
    /// The collection.
    pub collection: CollectionName,
    /// Body paths, in index order (at least one).
    pub fields: Vec<FieldPath>,
    /// Whether two documents may not share the indexed values (an insert or update that would
    /// duplicate them fails with `AlreadyExists`).
    pub unique: bool,
}

impl DocumentIndex {
    /// A non-unique index on `fields` of `collection`.
    pub fn new(collection: CollectionName, fields: Vec<FieldPath>) -> Self {
        Self {
            collection,
            fields,
            unique: false,
        }
    }

    /// The same index, unique.
    pub fn unique(mut self) -> Self {
        self.unique = true;
        self
    }

    /// The index keys: every path under `body.`, ascending. Built only from validated names.
    fn keys(&self) -> BsonDocument {
        let mut keys = BsonDocument::new();
        for f in &self.fields {
            keys.insert(body_path(f), 1_i32);
        }
        keys
    }
}

/// JSON documents in MongoDB collections, one collection per [`CollectionName`].
///
/// Each document is stored as `{_id: <id>, _rev: <i64>, _op: <ObjectId>, body: {…}}`: the tenant's
/// body sits under `body`, so its keys can never collide with the store's fields, and filters
/// address it as `body.<path>` built from validated [`FieldPath`] segments only.
///
/// Updates are `update_one` filtered on `{_id, _rev: expected}`; when nothing matched, the
/// document is read: present means `Conflict`, absent `NotFound`. See the crate docs for how a
/// retried write that lost its acknowledgment is resolved.
#[derive(Clone, Debug)]
pub struct MongoDocumentStore {
    pub(crate) conn: MongoConnection,
    /// Per-document write serialization for servers without atomic conditional updates.
    stripes: Option<Arc<WriteStripes>>,
}

/// A fixed set of async locks; a document's writes take the lock its (collection, id) hashes to.
struct WriteStripes(Vec<tokio::sync::Mutex<()>>);

impl std::fmt::Debug for WriteStripes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WriteStripes({})", self.0.len())
    }
}

impl WriteStripes {
    fn new() -> Self {
        Self((0..256).map(|_| tokio::sync::Mutex::new(())).collect())
    }

    fn lock_for(&self, collection: &CollectionName, id: &DocumentId) -> &tokio::sync::Mutex<()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (collection, id).hash(&mut h);
        &self.0[(h.finish() % self.0.len() as u64) as usize]
    }
}

impl MongoDocumentStore {
    /// A store over `conn`'s database, creating `indexes` first (existing ones are kept).
    pub async fn new(conn: MongoConnection, indexes: &[DocumentIndex]) -> Result<Self> {
        let stripes = (!conn.conditional_writes_atomic()).then(|| Arc::new(WriteStripes::new()));
        let store = Self { conn, stripes };
        for index in indexes {
            store.create_index(index).await?;
        }
        Ok(store)
    }

    /// Creates one index; idempotent.
    pub async fn create_index(&self, index: &DocumentIndex) -> Result<()> {
        if index.fields.is_empty() {
            return Err(Error::invalid_input("an index needs at least one field"));
        }
        let coll = self.collection(&index.collection);
        let keys = index.keys();
        let model = IndexModel::builder()
            .keys(keys.clone())
            .options(IndexOptions::builder().unique(index.unique).build())
            .build();
        let conflict = |why: &str| {
            // The declared index differs from the one the collection has (e.g. unique versus
            // not): a deployment mismatch to fix, not something to paper over.
            Error::invalid_config(format!(
                "index {keys} on {} conflicts with an existing index: {why}",
                index.collection
            ))
        };
        let retry = self.conn.retry();
        retry
            .run("create_index", |_| async {
                coll.create_index(model.clone())
                    .await
                    .map(|_| ())
                    .map_err(map_error)
            })
            .await
            .map_err(|e| {
                if e.kind() == ion_core::ErrorKind::AlreadyExists {
                    conflict(e.message())
                } else {
                    e
                }
            })?;
        // MongoDB refuses a conflicting index (IndexOptionsConflict); FerretDB 1.24 answers "ok"
        // and keeps the old one. Read back what exists so a unique index is really unique.
        let existing: Vec<IndexModel> = retry
            .run("list_indexes", |_| async {
                coll.list_indexes()
                    .await
                    .map_err(map_error)?
                    .try_collect()
                    .await
                    .map_err(map_error)
            })
            .await?;
        let unique = existing
            .iter()
            .find(|m| m.keys == keys)
            .map(|m| m.options.as_ref().and_then(|o| o.unique).unwrap_or(false));
        match unique {
            Some(u) if u == index.unique => Ok(()),
            Some(_) => Err(conflict("it differs in uniqueness")),
            None => Err(Error::unexpected(format!(
                "index {keys} on {} is missing right after it was created",
                index.collection
            ))),
        }
    }

    /// Holds the document's write lock when the server cannot guard writes by itself.
    async fn write_guard(
        &self,
        collection: &CollectionName,
        id: &DocumentId,
    ) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.stripes {
            Some(s) => Some(s.lock_for(collection, id).lock().await),
            None => None,
        }
    }

    pub(crate) fn collection(&self, name: &CollectionName) -> Collection<BsonDocument> {
        self.conn.database().collection(name.as_str())
    }

    /// Reads `_rev` and `_op` of a document, if it exists.
    async fn read_stamp(
        &self,
        coll: &Collection<BsonDocument>,
        id: &DocumentId,
    ) -> Result<Option<(i64, Option<ObjectId>)>> {
        let found = coll
            .find_one(doc! { ID: { "$eq": id.as_str() } })
            .projection(doc! { REV: 1, OP: 1 })
            .await
            .map_err(map_error)?;
        Ok(found.map(|d| (d.get_i64(REV).unwrap_or(0), d.get_object_id(OP).ok())))
    }
}

/// `body.<a>.<b>`: validated segments only, so the key can hold no operator.
fn body_path(path: &FieldPath) -> String {
    let mut key = String::from(BODY);
    for seg in path.segments() {
        key.push('.');
        key.push_str(seg.as_str());
    }
    key
}

fn scalar(v: &Scalar) -> Bson {
    match v {
        Scalar::String(s) => Bson::String(s.clone()),
        Scalar::Int(i) => Bson::Int64(*i),
        Scalar::Bool(b) => Bson::Boolean(*b),
    }
}

/// The filter of a `find`: explicit `$eq` per field, so a value is always a literal.
///
/// A bare MongoDB equality on `a.b` also matches when `a` or `b` is an array holding the value;
/// the contract compares the value at the path itself, so every step of the path (the leaf
/// included) must also not be an array.
pub(crate) fn find_filter(query: &DocQuery) -> BsonDocument {
    let not_array = || doc! { "$type": "array" };
    let mut clauses: Vec<Bson> = Vec::new();
    for f in &query.filters {
        let segments = f.path.segments();
        let mut prefix = String::from(BODY);
        for seg in &segments[..segments.len().saturating_sub(1)] {
            prefix.push('.');
            prefix.push_str(seg.as_str());
            clauses.push(Bson::Document(
                doc! { prefix.clone(): { "$not": not_array() } },
            ));
        }
        clauses.push(Bson::Document(doc! {
            body_path(&f.path): { "$eq": scalar(&f.value), "$not": not_array() }
        }));
    }
    if let Some(after) = &query.after {
        clauses.push(Bson::Document(doc! { ID: { "$gt": after.as_str() } }));
    }
    match clauses.len() {
        0 => doc! {},
        1 => match clauses.pop() {
            Some(Bson::Document(d)) => d,
            _ => doc! {},
        },
        _ => doc! { "$and": clauses },
    }
}

fn to_i64(rev: Revision) -> Option<i64> {
    i64::try_from(rev.0).ok()
}

pub(crate) fn to_document(d: &BsonDocument) -> Result<Document> {
    let id = d
        .get_str(ID)
        .map_err(|_| Error::unexpected("stored document has no string _id"))?;
    let id = DocumentId::parse(id)
        .map_err(|e| Error::unexpected(format!("stored document id is invalid: {e}")))?;
    let rev = d
        .get_i64(REV)
        .map_err(|_| Error::unexpected(format!("stored document {id} has no _rev")))?;
    let body = match d.get_document(BODY) {
        Ok(b) => bson_to_body(b)?,
        Err(_) => {
            return Err(Error::unexpected(format!(
                "stored document {id} has no body"
            )))
        }
    };
    Ok(Document {
        id,
        revision: Revision(u64::try_from(rev).unwrap_or(0)),
        body,
    })
}

#[async_trait]
impl DocumentStore for MongoDocumentStore {
    async fn insert(
        &self,
        collection: &CollectionName,
        id: &DocumentId,
        body: &DocumentBody,
    ) -> Result<Revision> {
        let coll = self.collection(collection);
        let token = ObjectId::new();
        let stored = doc! { ID: id.as_str(), REV: 1_i64, OP: token, BODY: body_to_bson(body)? };
        let _guard = self.write_guard(collection, id).await;
        self.conn
            .retry()
            .run("insert", |_| async {
                match coll.insert_one(stored.clone()).await {
                    Ok(_) => Ok(Revision(1)),
                    Err(e) => {
                        let e = map_error(e);
                        if e.kind() != ion_core::ErrorKind::AlreadyExists {
                            return Err(e);
                        }
                        // An earlier attempt may have been applied with its acknowledgment
                        // lost: the stored token tells ours from someone else's document.
                        match self.read_stamp(&coll, id).await? {
                            Some((rev, Some(op))) if op == token => Ok(Revision(rev as u64)),
                            Some(_) => Err(Error::already_exists(format!(
                                "document {id} already exists in {collection}"
                            ))),
                            None => Err(e),
                        }
                    }
                }
            })
            .await
    }

    async fn get(&self, collection: &CollectionName, id: &DocumentId) -> Result<Document> {
        let coll = self.collection(collection);
        let found = self
            .conn
            .retry()
            .run("get", |_| async {
                coll.find_one(doc! { ID: { "$eq": id.as_str() } })
                    .projection(doc! { OP: 0 })
                    .await
                    .map_err(map_error)
            })
            .await?;
        match found {
            Some(d) => to_document(&d),
            None => Err(Error::not_found(format!(
                "document {id} not found in {collection}"
            ))),
        }
    }

    async fn update(
        &self,
        collection: &CollectionName,
        id: &DocumentId,
        expected: Revision,
        body: &DocumentBody,
    ) -> Result<Revision> {
        let coll = self.collection(collection);
        let Some(expected_i) = to_i64(expected).filter(|r| *r < i64::MAX) else {
            return Err(Error::conflict(format!(
                "document {id} cannot be at revision {expected}"
            )));
        };
        let next = expected_i + 1;
        let token = ObjectId::new();
        let filter = doc! { ID: { "$eq": id.as_str() }, REV: { "$eq": expected_i } };
        let change = doc! { "$set": { REV: next, OP: token, BODY: body_to_bson(body)? } };
        let _guard = self.write_guard(collection, id).await;
        self.conn
            .retry()
            .run("update", |_| async {
                let r = coll
                    .update_one(filter.clone(), change.clone())
                    .await
                    .map_err(map_error)?;
                if r.matched_count == 1 {
                    return Ok(Revision(next as u64));
                }
                match self.read_stamp(&coll, id).await? {
                    None => Err(Error::not_found(format!(
                        "document {id} not found in {collection}"
                    ))),
                    // Our own earlier attempt was applied and its acknowledgment lost.
                    Some((rev, Some(op))) if op == token && rev == next => {
                        Ok(Revision(next as u64))
                    }
                    Some((rev, _)) => Err(Error::conflict(format!(
                        "document {id} in {collection} is at revision r{rev}, expected {expected}"
                    ))),
                }
            })
            .await
    }

    async fn delete(&self, collection: &CollectionName, id: &DocumentId) -> Result<()> {
        let coll = self.collection(collection);
        let _guard = self.write_guard(collection, id).await;
        self.conn
            .retry()
            .run("delete", |_| async {
                coll.delete_one(doc! { ID: { "$eq": id.as_str() } })
                    .await
                    .map(|_| ())
                    .map_err(map_error)
            })
            .await
    }

    async fn find(&self, collection: &CollectionName, query: &DocQuery) -> Result<DocPage> {
        let coll = self.collection(collection);
        let filter = find_filter(query);
        let size = query.page_size();
        let rows: Vec<BsonDocument> = self
            .conn
            .retry()
            .run("find", |_| async {
                coll.find(filter.clone())
                    .projection(doc! { OP: 0 })
                    .sort(doc! { ID: 1 })
                    .limit(size as i64 + 1)
                    .await
                    .map_err(map_error)?
                    .try_collect()
                    .await
                    .map_err(map_error)
            })
            .await?;
        let more = rows.len() > size;
        let documents = rows
            .iter()
            .take(size)
            .map(to_document)
            .collect::<Result<Vec<_>>>()?;
        let next = if more {
            documents.last().map(|d| d.id.clone())
        } else {
            None
        };
        Ok(DocPage { documents, next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ion_core::FieldFilter;

    fn path(s: &str) -> FieldPath {
        FieldPath::parse(s).unwrap()
    }

    #[test]
    fn filters_address_the_body_with_explicit_eq() {
        let q = DocQuery {
            filters: vec![FieldFilter {
                path: path("spec.owner"),
                value: Scalar::String("$ne".into()),
            }],
            after: None,
            limit: 0,
        };
        assert_eq!(
            find_filter(&q),
            doc! { "$and": [
                { "body.spec": { "$not": { "$type": "array" } } },
                { "body.spec.owner": { "$eq": "$ne", "$not": { "$type": "array" } } },
            ] }
        );
    }

    #[test]
    fn several_clauses_are_anded_and_after_bounds_the_id() {
        let q = DocQuery {
            filters: vec![
                FieldFilter {
                    path: path("a"),
                    value: Scalar::Int(3),
                },
                FieldFilter {
                    path: path("a"),
                    value: Scalar::Bool(true),
                },
            ],
            after: Some(DocumentId::parse("k-1").unwrap()),
            limit: 5,
        };
        assert_eq!(
            find_filter(&q),
            doc! { "$and": [
                { "body.a": { "$eq": 3_i64, "$not": { "$type": "array" } } },
                { "body.a": { "$eq": true, "$not": { "$type": "array" } } },
                { "_id": { "$gt": "k-1" } },
            ] }
        );
    }

    #[test]
    fn index_keys_live_under_body() {
        let i = DocumentIndex::new(
            CollectionName::parse("apps").unwrap(),
            vec![path("tenant"), path("spec.version")],
        );
        assert_eq!(i.keys(), doc! { "body.tenant": 1, "body.spec.version": 1 });
    }
}
