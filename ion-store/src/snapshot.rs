//! Snapshot export and import of document collections as NDJSON streams, with counts and digests.

use bytes::{Bytes, BytesMut};
use futures::stream::{self, StreamExt, TryStreamExt};
use ion_core::model::Sha256Hasher;
use ion_core::snapshot::DocumentLine;
use ion_core::{ByteStream, CollectionName, Error, Result, Sha256Digest};
use mongodb::bson::{doc, oid::ObjectId};

use crate::bson_body::body_to_bson;
use crate::document::{to_document, MongoDocumentStore};
use crate::error::map_error;

/// Longest line an import accepts: a document is at most 16 MiB in MongoDB.
const MAX_LINE: usize = 17 * 1024 * 1024;

/// What an import read and wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportReport {
    /// Documents written.
    pub documents: u64,
    /// Bytes read.
    pub bytes: u64,
    /// SHA-256 of the bytes read: compare with the digest recorded when the export was stored.
    pub sha256: Sha256Digest,
}

impl MongoDocumentStore {
    /// Streams every document of `collection` as NDJSON lines
    /// `{"id":…,"revision":…,"body":{…}}` in id order, 1000 documents per cursor batch.
    ///
    /// Each document is read whole at majority read concern, but the collection is not frozen:
    /// writes during the export may or may not appear. For a point-in-time copy, export from a
    /// hidden secondary taken out of replication (as the platform's snapshot job does).
    pub async fn export_collection(&self, collection: &CollectionName) -> Result<ByteStream> {
        let coll = self.collection(collection);
        let cursor = self
            .conn
            .retry()
            .run("export", |_| async {
                coll.find(doc! {})
                    .projection(doc! { "_op": 0 })
                    .sort(doc! { "_id": 1 })
                    .batch_size(1000)
                    .await
                    .map_err(map_error)
            })
            .await?;
        Ok(stream::try_unfold(cursor, |mut cursor| async move {
            let Some(row) = cursor.try_next().await.map_err(map_error)? else {
                return Ok(None);
            };
            let d = to_document(&row)?;
            let mut line = serde_json::to_vec(&DocumentLine {
                id: d.id,
                revision: d.revision,
                body: d.body,
            })
            .map_err(|e| Error::unexpected(format!("export line does not serialize: {e}")))?;
            line.push(b'\n');
            Ok(Some((Bytes::from(line), cursor)))
        })
        .boxed())
    }

    /// Writes every line of an export into `collection`, replacing documents with the same id
    /// (revision and body as exported). Each line is validated as a [`DocumentId`](ion_core::DocumentId), a
    /// [`Revision`](ion_core::Revision) and a [`DocumentBody`](ion_core::DocumentBody) before it reaches the driver. Idempotent: importing
    /// the same export twice gives the same collection.
    pub async fn import_collection(
        &self,
        collection: &CollectionName,
        mut body: ByteStream,
    ) -> Result<ImportReport> {
        let coll = self.collection(collection);
        let mut hasher = Sha256Hasher::default();
        let (mut documents, mut bytes) = (0u64, 0u64);
        let mut pending = BytesMut::new();
        let mut done = false;
        while !done {
            match body.next().await {
                Some(chunk) => {
                    let chunk = chunk?;
                    hasher.update(&chunk);
                    bytes += chunk.len() as u64;
                    pending.extend_from_slice(&chunk);
                }
                None => done = true,
            }
            loop {
                let end = match pending.iter().position(|b| *b == b'\n') {
                    Some(at) => at,
                    None if done && !pending.is_empty() => pending.len(),
                    None => break,
                };
                let raw = pending.split_to(end);
                if !pending.is_empty() {
                    let _newline = pending.split_to(1);
                }
                if raw.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let line: DocumentLine = serde_json::from_slice(&raw).map_err(|e| {
                    Error::invalid_input(format!(
                        "import line {} is not a valid document: {e}",
                        documents + 1
                    ))
                })?;
                let rev = i64::try_from(line.revision.0)
                    .map_err(|_| Error::invalid_input("revision must be below 2^63"))?;
                let stored = doc! {
                    "_id": line.id.as_str(),
                    "_rev": rev,
                    "_op": ObjectId::new(),
                    "body": body_to_bson(&line.body)?,
                };
                let filter = doc! { "_id": { "$eq": line.id.as_str() } };
                self.conn
                    .retry()
                    .run("import", |_| async {
                        coll.replace_one(filter.clone(), stored.clone())
                            .upsert(true)
                            .await
                            .map(|_| ())
                            .map_err(map_error)
                    })
                    .await?;
                documents += 1;
            }
            if pending.len() > MAX_LINE {
                return Err(Error::invalid_input(format!(
                    "import line {} is longer than {MAX_LINE} bytes",
                    documents + 1
                )));
            }
        }
        tracing::info!(%collection, documents, bytes, "collection imported");
        Ok(ImportReport {
            documents,
            bytes,
            sha256: hasher.finish(),
        })
    }
}
