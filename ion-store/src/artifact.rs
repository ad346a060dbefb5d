//! `GridFsArtifactStore`: the `ArtifactStore` trait on a GridFS bucket, with our own SHA-256.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::io::AsyncWriteExt;
use futures::stream::{self, StreamExt, TryStreamExt};
use ion_core::model::Sha256Hasher;
use ion_core::stream::verified;
use ion_core::{
    AppId, ArtifactId, ArtifactInfo, ArtifactMeta, ArtifactRef, ArtifactStore, ByteStream, Error,
    ErrorKind, Result, Sha256Digest, TenantId, Timestamp, Version,
};
use mongodb::bson::{doc, oid::ObjectId, Bson, Document};
use mongodb::gridfs::GridFsBucket;
use mongodb::options::{GridFsBucketOptions, IndexOptions};
use mongodb::{Collection, IndexModel};

use crate::connection::MongoConnection;
use crate::error::{map_error, map_io_error};

/// `metadata.state` of a files document whose digest is recorded: the only visible state.
const COMPLETE: &str = "complete";
/// `metadata.state` while bytes are being written (or after a crash before the digest landed).
const UPLOADING: &str = "uploading";

/// Chunks per driver write during upload (about 1 MiB with the default chunk size).
const WRITE_BATCH_CHUNKS: usize = 4;

/// Where and how artifacts are stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GridFsOptions {
    /// Bucket name: collections `<bucket>.files` and `<bucket>.chunks` (default `artifacts`; the
    /// `.` keeps them apart from every [`ion_core::CollectionName`]).
    pub bucket: String,
    /// Chunk size in bytes (default 255 KiB, the GridFS default: one chunk document stays well
    /// under the 16 MiB BSON limit and a chunk's memory is small).
    pub chunk_size_bytes: u32,
    /// Chunks fetched per cursor batch on download (default 4): bounds download memory, which
    /// with the driver's own download stream is one server batch (up to 16 MiB or more).
    pub read_batch_chunks: u32,
}

impl Default for GridFsOptions {
    fn default() -> Self {
        Self {
            bucket: "artifacts".to_owned(),
            chunk_size_bytes: 255 * 1024,
            read_batch_chunks: 4,
        }
    }
}

/// What [`GridFsArtifactStore::sweep_incomplete`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Files documents of uploads that never got their digest.
    pub incomplete_files: u64,
    /// Chunk documents belonging to no complete file.
    pub orphan_chunks: u64,
}

/// Application binaries in a GridFS bucket, with SHA-256 and length computed by ion.
///
/// GridFS keeps no digest, so `upload` hashes the stream as it writes the chunks and records
/// `metadata: {tenant, app, version, sha256, length, state: "complete"}` on the files document
/// once every chunk is written. Until then the file is `uploading` and invisible to `list` and
/// `download`. `download` checks the reference against the recorded digest, then streams the
/// chunks through [`ion_core::stream::verified`], so changed bytes end the stream with `Corrupt`.
///
/// Memory per transfer is bounded by a few chunks: up to five on upload (what the driver buffers
/// per write), `read_batch_chunks` on download.
#[derive(Clone, Debug)]
pub struct GridFsArtifactStore {
    conn: MongoConnection,
    options: GridFsOptions,
}

impl GridFsArtifactStore {
    /// A store on `conn`'s database; creates the bucket's indexes (the GridFS ones, with the
    /// chunk index unique, and one for listing by tenant and app).
    pub async fn new(conn: MongoConnection, options: GridFsOptions) -> Result<Self> {
        if options.bucket.is_empty()
            || !options
                .bucket
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(Error::invalid_config(
                "gridfs bucket: must be a non-empty name of [A-Za-z0-9_-]",
            ));
        }
        if options.chunk_size_bytes == 0 || options.chunk_size_bytes > 15 * 1024 * 1024 {
            return Err(Error::invalid_config(
                "gridfs chunk_size_bytes: must be between 1 byte and 15 MiB",
            ));
        }
        let store = Self {
            conn,
            options: GridFsOptions {
                read_batch_chunks: options.read_batch_chunks.max(1),
                ..options
            },
        };
        store.create_indexes().await?;
        Ok(store)
    }

    async fn create_indexes(&self) -> Result<()> {
        let unique = IndexOptions::builder().unique(true).build();
        let indexes: [(Collection<Document>, Document, Option<IndexOptions>); 3] = [
            (self.chunks(), doc! { "files_id": 1, "n": 1 }, Some(unique)),
            (self.files(), doc! { "filename": 1, "uploadDate": 1 }, None),
            (
                self.files(),
                doc! { "metadata.tenant": 1, "metadata.app": 1, "metadata.version": 1 },
                None,
            ),
        ];
        for (coll, keys, opts) in indexes {
            let model = IndexModel::builder().keys(keys).options(opts).build();
            let created = self
                .conn
                .retry()
                .run("create_index", |_| async {
                    coll.create_index(model.clone())
                        .await
                        .map(|_| ())
                        .map_err(map_error)
                })
                .await;
            match created {
                Ok(()) => {}
                // A bucket first written by the plain driver has `files_id_1_n_1` without
                // `unique`; it still serves every lookup, so keep it rather than fail to start.
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    tracing::warn!(collection = coll.name(), error = %e, "gridfs index exists with other options; keeping it");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn bucket(&self) -> GridFsBucket {
        self.conn.database().gridfs_bucket(
            GridFsBucketOptions::builder()
                .bucket_name(self.options.bucket.clone())
                .chunk_size_bytes(self.options.chunk_size_bytes)
                .build(),
        )
    }

    fn files(&self) -> Collection<Document> {
        self.conn
            .database()
            .collection(&format!("{}.files", self.options.bucket))
    }

    fn chunks(&self) -> Collection<Document> {
        self.conn
            .database()
            .collection(&format!("{}.chunks", self.options.bucket))
    }

    /// Deletes the artifacts of `app` outside its newest `keep` versions; returns what it deleted.
    pub async fn retain_versions(
        &self,
        tenant: &TenantId,
        app: &AppId,
        keep: usize,
    ) -> Result<Vec<ArtifactId>> {
        let all = self.list(tenant, Some(app)).await?;
        let mut versions: Vec<Version> = all.iter().map(|a| a.meta.version).collect();
        versions.sort_unstable_by(|a, b| b.cmp(a));
        versions.dedup();
        let kept: Vec<Version> = versions.into_iter().take(keep).collect();
        let mut deleted = Vec::new();
        for a in all {
            if !kept.contains(&a.meta.version) {
                self.delete(&a.reference.id).await?;
                deleted.push(a.reference.id);
            }
        }
        tracing::info!(%tenant, %app, keep, deleted = deleted.len(), "artifact retention applied");
        Ok(deleted)
    }

    /// Number of chunk documents of an artifact (0 when it has none); for integrity checks and
    /// tests of the no-orphan guarantee.
    pub async fn chunk_count(&self, id: &ArtifactId) -> Result<u64> {
        let Some(oid) = object_id(id) else {
            return Ok(0);
        };
        let chunks = self.chunks();
        self.conn
            .retry()
            .run("count_chunks", |_| async {
                chunks
                    .count_documents(doc! { "files_id": { "$eq": oid } })
                    .await
                    .map_err(map_error)
            })
            .await
    }

    /// Removes what interrupted uploads left when even their cleanup failed (the server went
    /// away mid-upload): files documents still `uploading` and chunks without a files document,
    /// both older than `older_than` so uploads in progress are left alone.
    pub async fn sweep_incomplete(&self, older_than: Duration) -> Result<SweepReport> {
        let cutoff_secs = Timestamp::now().minus(older_than).as_millis() / 1000;
        let cutoff = ObjectId::from_bytes({
            let mut b = [0u8; 12];
            b[..4].copy_from_slice(&(cutoff_secs.clamp(0, u32::MAX as i64) as u32).to_be_bytes());
            b
        });
        let files = self.files();
        let chunks = self.chunks();
        let retry = self.conn.retry();
        let incomplete_files = retry
            .run("sweep_files", |_| async {
                files
                    .delete_many(doc! {
                        "_id": { "$lt": cutoff },
                        "metadata.state": { "$ne": COMPLETE },
                    })
                    .await
                    .map(|r| r.deleted_count)
                    .map_err(map_error)
            })
            .await?;
        let candidates: Vec<Bson> = retry
            .run("sweep_distinct", |_| async {
                chunks
                    .distinct("files_id", doc! { "files_id": { "$lt": cutoff } })
                    .await
                    .map_err(map_error)
            })
            .await?;
        let mut orphan_chunks = 0;
        for files_id in candidates {
            let present = retry
                .run("sweep_lookup", |_| async {
                    files
                        .count_documents(doc! {
                            "_id": { "$eq": files_id.clone() },
                            "metadata.state": { "$eq": COMPLETE },
                        })
                        .await
                        .map_err(map_error)
                })
                .await?;
            if present == 0 {
                orphan_chunks += retry
                    .run("sweep_chunks", |_| async {
                        chunks
                            .delete_many(doc! { "files_id": { "$eq": files_id.clone() } })
                            .await
                            .map(|r| r.deleted_count)
                            .map_err(map_error)
                    })
                    .await?;
            }
        }
        let report = SweepReport {
            incomplete_files,
            orphan_chunks,
        };
        tracing::info!(
            incomplete_files,
            orphan_chunks,
            "swept incomplete gridfs uploads"
        );
        Ok(report)
    }

    /// Deletes a files document and its chunks, in that order (so a half-done delete is
    /// invisible and a repeat finishes it).
    async fn remove(&self, oid: ObjectId) -> Result<()> {
        let files = self.files();
        let chunks = self.chunks();
        let retry = self.conn.retry();
        retry
            .run("delete_file", |_| async {
                files
                    .delete_one(doc! { "_id": { "$eq": oid } })
                    .await
                    .map(|_| ())
                    .map_err(map_error)
            })
            .await?;
        retry
            .run("delete_chunks", |_| async {
                chunks
                    .delete_many(doc! { "files_id": { "$eq": oid } })
                    .await
                    .map(|_| ())
                    .map_err(map_error)
            })
            .await
    }

    /// Best-effort removal after a failed upload; the sweep catches what this cannot.
    async fn discard(&self, oid: ObjectId) {
        if let Err(e) = self.remove(oid).await {
            tracing::warn!(id = %oid, error = %e, "could not remove a failed upload; sweep_incomplete will");
        }
    }
}

fn object_id(id: &ArtifactId) -> Option<ObjectId> {
    // Our ids are ObjectIds in lowercase hex; any other valid ArtifactId names nothing here.
    let s = id.as_str();
    if s.len() == 24 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        ObjectId::parse_str(s).ok()
    } else {
        None
    }
}

fn artifact_id(oid: ObjectId) -> Result<ArtifactId> {
    ArtifactId::parse(&oid.to_hex()).map_err(Error::from)
}

/// Reads a complete files document into an [`ArtifactInfo`].
fn to_info(d: &Document) -> Result<ArtifactInfo> {
    let bad = |what: &str| Error::unexpected(format!("gridfs files document: {what}"));
    let oid = d
        .get_object_id("_id")
        .map_err(|_| bad("_id is not an ObjectId"))?;
    let m = d.get_document("metadata").map_err(|_| bad("no metadata"))?;
    let text = |k: &str| {
        m.get_str(k)
            .map_err(|_| bad(&format!("metadata.{k} missing")))
    };
    let tenant = TenantId::parse(text("tenant")?).map_err(Error::from)?;
    let app = AppId::parse(text("app")?).map_err(Error::from)?;
    let version = m
        .get_i64("version")
        .map_err(|_| bad("metadata.version missing"))?;
    let sha256 = Sha256Digest::parse(text("sha256")?).map_err(Error::from)?;
    let length = m
        .get_i64("length")
        .map_err(|_| bad("metadata.length missing"))?;
    let uploaded = d
        .get_datetime("uploadDate")
        .map(|t| t.timestamp_millis())
        .unwrap_or(0);
    Ok(ArtifactInfo {
        reference: ArtifactRef {
            id: artifact_id(oid)?,
            sha256,
            length: length as u64,
        },
        meta: ArtifactMeta {
            tenant,
            app,
            version: Version(version as u64),
        },
        uploaded_at: Timestamp::from_millis(uploaded),
    })
}

/// The chunks of file `oid` in order, one `Bytes` per chunk, fetched `batch` at a time.
///
/// GridFS's own download stream reads whole server batches; reading the chunks collection
/// directly with a small batch size keeps a download's memory at a few chunks. Order and gaps
/// are checked here (a missing or repeated `n` is `Corrupt`); the content itself is checked by
/// [`verified`].
fn chunk_stream(cursor: mongodb::Cursor<Document>) -> ByteStream {
    stream::try_unfold((cursor, 0i64), |(mut cursor, expected)| async move {
        let Some(chunk) = cursor.try_next().await.map_err(map_error)? else {
            return Ok(None);
        };
        let n = match chunk.get("n") {
            Some(Bson::Int32(n)) => i64::from(*n),
            Some(Bson::Int64(n)) => *n,
            _ => -1,
        };
        if n != expected {
            return Err(Error::corrupt(format!(
                "gridfs chunk {expected} is missing (found chunk {n})"
            )));
        }
        let data = match chunk.get("data") {
            Some(Bson::Binary(b)) => Bytes::from(b.bytes.clone()),
            _ => {
                return Err(Error::corrupt(format!(
                    "gridfs chunk {n} has no binary data"
                )))
            }
        };
        Ok(Some((data, (cursor, expected + 1))))
    })
    .boxed()
}

#[async_trait]
impl ArtifactStore for GridFsArtifactStore {
    async fn upload(&self, meta: &ArtifactMeta, mut body: ByteStream) -> Result<ArtifactRef> {
        let version = i64::try_from(meta.version.0)
            .map_err(|_| Error::invalid_input("version must be below 2^63"))?;
        let oid = ObjectId::new();
        let bucket = self.bucket();
        // Names are validated types, so the filename is safe text; it is informational only.
        let filename = format!("{}/{}/{}", meta.tenant, meta.app, meta.version);
        let metadata = doc! {
            "tenant": meta.tenant.as_str(),
            "app": meta.app.as_str(),
            "version": version,
            "state": UPLOADING,
        };
        let mut upload = self
            .conn
            .retry()
            .run("open_upload", |_| async {
                bucket
                    .open_upload_stream(&filename)
                    .id(Bson::ObjectId(oid))
                    .metadata(metadata.clone())
                    .await
                    .map_err(map_error)
            })
            .await?;
        let mut hasher = Sha256Hasher::default();
        let mut length: u64 = 0;
        // Hand the driver at most WRITE_BATCH_CHUNKS chunks per write: it buffers what one write
        // gives it and inserts the full chunks in one `insert_many`, so this bounds memory while
        // keeping round trips few.
        let piece = self.options.chunk_size_bytes as usize * WRITE_BATCH_CHUNKS;
        while let Some(next) = body.next().await {
            let chunk: Bytes = match next {
                Ok(chunk) => chunk,
                Err(e) => {
                    // The caller's stream failed: abort deletes the chunks written so far.
                    if let Err(abort) = upload.abort().await {
                        tracing::warn!(id = %oid, error = %abort, "gridfs abort failed");
                    }
                    self.discard(oid).await;
                    return Err(e);
                }
            };
            hasher.update(&chunk);
            length += chunk.len() as u64;
            for part in chunk.chunks(piece) {
                if let Err(e) = upload.write_all(part).await {
                    // The driver already tried to delete the written chunks; try again.
                    self.discard(oid).await;
                    return Err(map_io_error(e));
                }
            }
        }
        if let Err(e) = upload.close().await {
            self.discard(oid).await;
            return Err(map_io_error(e));
        }
        let sha256 = hasher.finish();
        let files = self.files();
        let stamp = doc! { "$set": {
            "metadata.sha256": sha256.to_string(),
            "metadata.length": length as i64,
            "metadata.state": COMPLETE,
        } };
        let stamped = self
            .conn
            .retry()
            .run("stamp_digest", |_| async {
                files
                    .update_one(doc! { "_id": { "$eq": oid } }, stamp.clone())
                    .await
                    .map_err(map_error)
            })
            .await;
        match stamped {
            Ok(r) if r.matched_count == 1 => {}
            Ok(_) => {
                self.discard(oid).await;
                return Err(Error::unexpected(format!(
                    "gridfs files document {oid} vanished before its digest was recorded"
                )));
            }
            Err(e) => {
                self.discard(oid).await;
                return Err(e);
            }
        }
        let reference = ArtifactRef {
            id: artifact_id(oid)?,
            sha256,
            length,
        };
        tracing::info!(id = %reference.id, tenant = %meta.tenant, app = %meta.app, version = %meta.version, length, "artifact uploaded");
        Ok(reference)
    }

    async fn download(&self, reference: &ArtifactRef) -> Result<ByteStream> {
        let not_found = || Error::not_found(format!("artifact {} not found", reference.id));
        let Some(oid) = object_id(&reference.id) else {
            return Err(not_found());
        };
        let files = self.files();
        let file = self
            .conn
            .retry()
            .run("find_file", |_| async {
                files
                    .find_one(doc! { "_id": { "$eq": oid }, "metadata.state": { "$eq": COMPLETE } })
                    .await
                    .map_err(map_error)
            })
            .await?
            .ok_or_else(not_found)?;
        let info = to_info(&file)?;
        let stored_length = file
            .get_i64("length")
            .map(|l| l as u64)
            .or_else(|_| file.get_i32("length").map(|l| l as u64))
            .unwrap_or(u64::MAX);
        if info.reference != *reference || stored_length != reference.length {
            let mismatch = Error::corrupt(format!(
                "artifact {} does not match its reference (stored sha256 {} length {}, reference sha256 {} length {})",
                reference.id, info.reference.sha256, stored_length, reference.sha256, reference.length
            ));
            // The contract reports a mismatch where a consumer looks: at the end of the stream.
            return Ok(stream::once(async move { Err(mismatch) }).boxed());
        }
        let chunks = self.chunks();
        let batch = self.options.read_batch_chunks;
        let cursor = self
            .conn
            .retry()
            .run("open_download", |_| async {
                chunks
                    .find(doc! { "files_id": { "$eq": oid } })
                    .sort(doc! { "n": 1 })
                    .batch_size(batch)
                    .await
                    .map_err(map_error)
            })
            .await?;
        Ok(verified(
            chunk_stream(cursor),
            reference.sha256,
            reference.length,
        ))
    }

    async fn list(&self, tenant: &TenantId, app: Option<&AppId>) -> Result<Vec<ArtifactInfo>> {
        let mut filter = doc! {
            "metadata.tenant": { "$eq": tenant.as_str() },
            "metadata.state": { "$eq": COMPLETE },
        };
        if let Some(app) = app {
            filter.insert("metadata.app", doc! { "$eq": app.as_str() });
        }
        let files = self.files();
        let docs: Vec<Document> = self
            .conn
            .retry()
            .run("list", |_| async {
                files
                    .find(filter.clone())
                    .sort(doc! { "metadata.app": 1, "metadata.version": 1, "_id": 1 })
                    .await
                    .map_err(map_error)?
                    .try_collect()
                    .await
                    .map_err(map_error)
            })
            .await?;
        let mut out = docs.iter().map(to_info).collect::<Result<Vec<_>>>()?;
        // The order is the contract's, whatever the server's sort does with mixed types.
        out.sort_by(|a, b| {
            (&a.meta.app, a.meta.version, &a.reference.id).cmp(&(
                &b.meta.app,
                b.meta.version,
                &b.reference.id,
            ))
        });
        Ok(out)
    }

    async fn delete(&self, id: &ArtifactId) -> Result<()> {
        match object_id(id) {
            Some(oid) => self.remove(oid).await,
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_object_id_shaped_ids_name_artifacts() {
        let oid = ObjectId::new();
        let id = artifact_id(oid).unwrap();
        assert_eq!(object_id(&id), Some(oid));
        assert_eq!(object_id(&ArtifactId::parse("abc").unwrap()), None);
        assert_eq!(
            object_id(&ArtifactId::parse("zzzzzzzzzzzzzzzzzzzzzzzz").unwrap()),
            None
        );
    }

    #[test]
    fn object_id_hex_order_is_creation_order() {
        let a = ObjectId::new();
        let b = ObjectId::new();
        assert!(artifact_id(a).unwrap() < artifact_id(b).unwrap());
    }
}
