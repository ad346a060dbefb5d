//! The `DocumentStore` trait: JSON documents in named collections, with optimistic concurrency.

use std::fmt::{self, Debug};

use async_trait::async_trait;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::name::{CollectionName, DocumentId, FieldPath, Rule, ValidationError};

/// A document's revision: 1 after insert, +1 per update.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Revision(pub u64);

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

/// A validated document body: a JSON object whose keys can never act as database operators.
///
/// Keys at every depth are non-empty, contain no `.` and no NUL, and do not start with `$`;
/// top-level keys do not start with `_` (reserved for the store's id and revision). Nesting is
/// at most 32 levels.
#[derive(Clone, PartialEq, Debug, Serialize)]
#[serde(transparent)]
pub struct DocumentBody(Map<String, Value>);

impl DocumentBody {
    /// Validates a JSON value as a body.
    pub fn new(value: Value) -> Result<Self, ValidationError> {
        let Value::Object(map) = value else {
            return Err(ValidationError {
                field: "document body",
                rule: Rule::Shape("must be a JSON object"),
            });
        };
        for key in map.keys() {
            if key.starts_with('_') {
                return Err(ValidationError {
                    field: "document key",
                    rule: Rule::Reserved,
                });
            }
        }
        check_keys(&Value::Object(map.clone()), 0)?;
        Ok(Self(map))
    }

    /// Serializes `value` and validates the result.
    pub fn from_serialize<T: Serialize>(value: &T) -> Result<Self> {
        let v = serde_json::to_value(value)
            .map_err(|e| Error::invalid_input(format!("document does not serialize: {e}")))?;
        Ok(Self::new(v)?)
    }

    /// The JSON object.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// Converts into the JSON object.
    pub fn into_map(self) -> Map<String, Value> {
        self.0
    }

    /// Deserializes into `T`.
    pub fn to_typed<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(Value::Object(self.0.clone()))
            .map_err(|e| Error::unexpected(format!("document does not deserialize: {e}")))
    }

    /// The value at `path`, if present.
    pub fn get_path(&self, path: &FieldPath) -> Option<&Value> {
        let mut segments = path.segments().iter();
        let mut current = self.0.get(segments.next()?.as_str())?;
        for seg in segments {
            current = current.as_object()?.get(seg.as_str())?;
        }
        Some(current)
    }
}

impl<'de> Deserialize<'de> for DocumentBody {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        DocumentBody::new(v).map_err(serde::de::Error::custom)
    }
}

fn check_keys(v: &Value, depth: usize) -> Result<(), ValidationError> {
    let bad = |rule| ValidationError {
        field: "document key",
        rule,
    };
    if depth > 32 {
        return Err(bad(Rule::Shape("nested deeper than 32 levels")));
    }
    match v {
        Value::Object(map) => {
            for (key, value) in map {
                if key.is_empty() {
                    return Err(bad(Rule::Empty));
                }
                if key.starts_with('$') {
                    return Err(bad(Rule::BadStart));
                }
                if let Some((at, ch)) = key.char_indices().find(|(_, c)| *c == '.' || *c == '\0') {
                    return Err(bad(Rule::ForbiddenChar { ch, at }));
                }
                check_keys(value, depth + 1)?;
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(|i| check_keys(i, depth + 1)),
        _ => Ok(()),
    }
}

/// A stored document.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// Its id.
    pub id: DocumentId,
    /// Its current revision.
    pub revision: Revision,
    /// Its content.
    pub body: DocumentBody,
}

/// A scalar a filter compares with. Never an object: a filter value cannot carry an operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    /// A string, compared literally (a value `"$ne"` is just text).
    String(String),
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
}

impl Scalar {
    /// True when the JSON value equals this scalar.
    pub fn matches(&self, v: &Value) -> bool {
        match (self, v) {
            (Scalar::String(s), Value::String(t)) => s == t,
            (Scalar::Int(i), Value::Number(n)) => n.as_i64() == Some(*i),
            (Scalar::Bool(b), Value::Bool(c)) => b == c,
            _ => false,
        }
    }
}

/// Equality of the value at `path` with `value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldFilter {
    /// Where in the body.
    pub path: FieldPath,
    /// What it must equal.
    pub value: Scalar,
}

/// A `find`: all filters must match; results in ascending id order, paged by id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DocQuery {
    /// Equality filters, all of which must hold.
    pub filters: Vec<FieldFilter>,
    /// Only ids greater than this (the last id of the previous page).
    pub after: Option<DocumentId>,
    /// At most this many (1..=1000; 0 means 100).
    pub limit: usize,
}

impl DocQuery {
    /// The effective page size.
    pub fn page_size(&self) -> usize {
        if self.limit == 0 {
            100
        } else {
            self.limit.min(1000)
        }
    }

    /// True when `doc` passes every filter and the `after` bound.
    pub fn matches(&self, doc: &Document) -> bool {
        self.after.as_ref().is_none_or(|a| doc.id > *a)
            && self.filters.iter().all(|f| {
                doc.body
                    .get_path(&f.path)
                    .is_some_and(|v| f.value.matches(v))
            })
    }
}

/// One page of `find` results.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DocPage {
    /// Matching documents in ascending id order.
    pub documents: Vec<Document>,
    /// Pass as `after` to continue; `None` at the end.
    pub next: Option<DocumentId>,
}

/// Stores JSON documents in named collections (MongoDB in production).
///
/// # Contract
///
/// - `insert` creates revision 1; an existing id is `AlreadyExists` and changes nothing.
/// - `get` returns the document or `NotFound`.
/// - `update` replaces the body only when the stored revision equals `expected`, returning the
///   next revision; a different revision is `Conflict` (never `NotFound`); a missing document is
///   `NotFound`.
/// - `delete` is idempotent: deleting a missing document succeeds.
/// - `find` returns documents whose body matches every filter, ordered by id, at most
///   `page_size`, with `next` set while more may follow; paging visits each match exactly once.
/// - Collections are independent: the same id may exist in two collections.
#[async_trait]
pub trait DocumentStore: Send + Sync + Debug + 'static {
    /// Creates a document.
    async fn insert(
        &self,
        collection: &CollectionName,
        id: &DocumentId,
        body: &DocumentBody,
    ) -> Result<Revision>;

    /// Reads a document.
    async fn get(&self, collection: &CollectionName, id: &DocumentId) -> Result<Document>;

    /// Replaces a document if its revision is still `expected`.
    async fn update(
        &self,
        collection: &CollectionName,
        id: &DocumentId,
        expected: Revision,
        body: &DocumentBody,
    ) -> Result<Revision>;

    /// Deletes a document; idempotent.
    async fn delete(&self, collection: &CollectionName, id: &DocumentId) -> Result<()>;

    /// Finds documents by equality filters.
    async fn find(&self, collection: &CollectionName, query: &DocQuery) -> Result<DocPage>;
}

/// Conveniences over [`DocumentStore`].
#[async_trait]
pub trait DocumentStoreExt: DocumentStore {
    /// Inserts a serializable value.
    async fn insert_json<T: Serialize + Sync>(
        &self,
        collection: &CollectionName,
        id: &DocumentId,
        value: &T,
    ) -> Result<Revision> {
        let body = DocumentBody::from_serialize(value)?;
        self.insert(collection, id, &body).await
    }

    /// Reads and deserializes a document, with its revision.
    async fn get_json<T: DeserializeOwned>(
        &self,
        collection: &CollectionName,
        id: &DocumentId,
    ) -> Result<(T, Revision)> {
        let doc = self.get(collection, id).await?;
        Ok((doc.body.to_typed()?, doc.revision))
    }

    /// Every match of `query`, following pages.
    async fn find_all(
        &self,
        collection: &CollectionName,
        query: &DocQuery,
    ) -> Result<Vec<Document>> {
        let mut q = query.clone();
        let mut out = Vec::new();
        loop {
            let page = self.find(collection, &q).await?;
            out.extend(page.documents);
            match page.next {
                Some(next) => q.after = Some(next),
                None => return Ok(out),
            }
        }
    }
}

impl<T: DocumentStore + ?Sized> DocumentStoreExt for T {}
