//! Scheduled snapshots of platform, customer and log data into a `BlobStore`, with a manifest of
//! per-object sha256 digests, retention, restore into empty stores, and a verify drill.
//!
//! Layout under the configured prefix (default `snapshots`):
//!
//! ```text
//! snapshots/snap-<millis>/documents/<collection>.jsonl   one {"id","revision","body"} per line
//! snapshots/snap-<millis>/artifacts/<artifact-id>        the artifact's bytes
//! snapshots/snap-<millis>/logs/<tenant>.jsonl            one LogRecord per line
//! snapshots/snap-<millis>/manifest.json                  written last: a snapshot without one is
//!                                                        incomplete and never restored
//! ```
//!
//! Restores keep document ids and log record ids (so a restore into a non-empty log index cannot
//! duplicate), but not document revisions (restored documents start again at revision 1) nor
//! artifact ids (the store assigns new ones): [`RestoreReport::artifact_ids`] maps old ids to the
//! new references, whose sha256 and length are unchanged.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::artifact::{ArtifactInfo, ArtifactStore};
use crate::blob::{BlobStore, BlobStoreExt, PutOptions};
use crate::document::{DocQuery, DocumentBody, DocumentStore, Revision};
use crate::error::{Error, ErrorKind, Result};
use crate::fake::{InMemoryArtifactStore, InMemoryDocumentStore, InMemoryLogIndex};
use crate::log_index::{LogIndex, LogQuery};
use crate::model::{ArtifactRef, LogRecord, Sha256Digest, Sha256Hasher};
use crate::name::{ArtifactId, BlobKey, BlobPrefix, CollectionName, DocumentId, TenantId};
use crate::stream::{self, ByteStream};
use crate::time::Timestamp;

/// What a snapshot covers. Stores that are `None` are skipped.
#[derive(Clone, Debug, Default)]
pub struct SnapshotSources {
    /// Platform data: these collections of this store.
    pub documents: Option<(Arc<dyn DocumentStore>, Vec<CollectionName>)>,
    /// Customer data: these tenants' artifacts.
    pub artifacts: Option<(Arc<dyn ArtifactStore>, Vec<TenantId>)>,
    /// Log data: these tenants' records in this index.
    pub logs: Option<(Arc<dyn LogIndex>, Vec<TenantId>)>,
}

/// Where restored data goes. Stores that are `None` are not restored.
#[derive(Clone, Debug, Default)]
pub struct RestoreTargets {
    /// Documents go here (the store should be empty).
    pub documents: Option<Arc<dyn DocumentStore>>,
    /// Artifacts go here.
    pub artifacts: Option<Arc<dyn ArtifactStore>>,
    /// Log records go here.
    pub logs: Option<Arc<dyn LogIndex>>,
}

/// How many snapshots to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Keep at most this many (newest first); at least 1 is always kept.
    pub keep_last: usize,
    /// Delete snapshots older than this, except the newest.
    pub max_age: Option<Duration>,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            keep_last: 30,
            max_age: None,
        }
    }
}

/// Which kind of data an object holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    /// One collection as JSON lines.
    Documents,
    /// One artifact's bytes.
    Artifact,
    /// One tenant's log records as JSON lines.
    Logs,
}

/// One object of a snapshot, as recorded in its manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Key of the object in the blob store.
    pub key: BlobKey,
    /// What it holds.
    pub kind: ObjectKind,
    /// sha256 of the object's bytes.
    pub sha256: Sha256Digest,
    /// Size in bytes.
    pub size: u64,
    /// Documents or records it holds (1 for an artifact).
    pub count: u64,
    /// The collection, for documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<CollectionName>,
    /// The tenant, for logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
    /// The artifact as it was listed, for artifacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<ArtifactInfo>,
}

/// The index of one complete snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version of the manifest.
    pub format: u32,
    /// The snapshot id (`snap-<millis>`).
    pub id: String,
    /// When it was taken.
    pub taken_at: Timestamp,
    /// Every object, in the order written.
    pub objects: Vec<ManifestEntry>,
}

impl Manifest {
    /// Total bytes of all objects.
    pub fn total_bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.size).sum()
    }

    /// Objects of one kind.
    pub fn count_of(&self, kind: ObjectKind) -> u64 {
        self.objects
            .iter()
            .filter(|o| o.kind == kind)
            .map(|o| o.count)
            .sum()
    }
}

/// How far a running snapshot or restore has come.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Objects finished.
    pub objects_done: u64,
    /// Bytes finished.
    pub bytes_done: u64,
}

/// Called after every finished object of a long snapshot or restore.
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// What a restore did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Documents inserted.
    pub documents: u64,
    /// Artifacts uploaded.
    pub artifacts: u64,
    /// Log records written (created or already there).
    pub log_records: u64,
    /// Old artifact id → the new reference (same sha256 and length).
    pub artifact_ids: BTreeMap<ArtifactId, ArtifactRef>,
}

/// What a verify drill found: the snapshot restored into in-memory stores and matched its
/// manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// The snapshot verified.
    pub id: String,
    /// Objects whose sha256 and size were checked.
    pub objects: u64,
    /// Bytes read.
    pub bytes: u64,
    /// The restore's counts (equal to the manifest's, or verify fails).
    pub restored: RestoreReport,
}

/// Takes, lists, prunes, restores and verifies snapshots in one `BlobStore`.
#[derive(Clone)]
pub struct SnapshotScheduler {
    blobs: Arc<dyn BlobStore>,
    prefix: String,
    sources: SnapshotSources,
    retention: Retention,
    progress: Option<ProgressFn>,
}

impl std::fmt::Debug for SnapshotScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotScheduler")
            .field("blobs", &self.blobs)
            .field("prefix", &self.prefix)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

const FORMAT: u32 = 1;
const LOG_PAGE: usize = 1000;

impl SnapshotScheduler {
    /// Snapshots `sources` into `blobs` under the prefix `snapshots`.
    pub fn new(blobs: Arc<dyn BlobStore>, sources: SnapshotSources) -> Self {
        Self {
            blobs,
            prefix: "snapshots".to_owned(),
            sources,
            retention: Retention::default(),
            progress: None,
        }
    }

    /// Uses another key prefix (a valid blob key, e.g. `backups/platform`).
    pub fn with_prefix(mut self, prefix: &BlobKey) -> Self {
        self.prefix = prefix.as_str().to_owned();
        self
    }

    /// Sets the retention applied after each snapshot.
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Reports progress after every object.
    pub fn with_progress(mut self, progress: ProgressFn) -> Self {
        self.progress = Some(progress);
        self
    }

    fn key(&self, rest: &str) -> Result<BlobKey> {
        Ok(BlobKey::parse(&format!("{}/{rest}", self.prefix))?)
    }

    fn report(&self, p: Progress) {
        if let Some(f) = &self.progress {
            f(p);
        }
    }

    /// Takes one snapshot now, then applies retention. Returns its manifest.
    pub async fn snapshot(&self, now: Timestamp) -> Result<Manifest> {
        let id = format!("snap-{:015}", now.as_millis().max(0));
        if self
            .blobs
            .head(&self.key(&format!("{id}/manifest.json"))?)
            .await
            .is_ok()
        {
            return Err(Error::already_exists(format!(
                "snapshot {id} already exists"
            )));
        }
        let mut objects = Vec::new();
        let mut progress = Progress::default();

        if let Some((store, collections)) = &self.sources.documents {
            for collection in collections {
                let mut lines = BytesMut::new();
                let mut count = 0u64;
                let mut query = DocQuery {
                    limit: 1000,
                    ..DocQuery::default()
                };
                loop {
                    let page = store.find(collection, &query).await?;
                    for doc in &page.documents {
                        let line = DocumentLine {
                            id: doc.id.clone(),
                            revision: doc.revision,
                            body: doc.body.clone(),
                        };
                        lines.extend_from_slice(&to_json_line(&line)?);
                        count += 1;
                    }
                    match page.next {
                        Some(next) => query.after = Some(next),
                        None => break,
                    }
                }
                let key = self.key(&format!("{id}/documents/{collection}.jsonl"))?;
                let entry = self
                    .put_hashed(
                        &key,
                        stream::once(lines.freeze()),
                        ObjectKind::Documents,
                        count,
                    )
                    .await?;
                objects.push(ManifestEntry {
                    collection: Some(collection.clone()),
                    ..entry
                });
                self.advance(&mut progress, &objects);
            }
        }

        if let Some((store, tenants)) = &self.sources.artifacts {
            for tenant in tenants {
                for info in store.list(tenant, None).await? {
                    let key = self.key(&format!("{id}/artifacts/{}", info.reference.id))?;
                    // The download verifies sha256 and length as it streams: a corrupted
                    // artifact fails the snapshot instead of being preserved silently.
                    let body = store.download(&info.reference).await?;
                    let entry = self.put_hashed(&key, body, ObjectKind::Artifact, 1).await?;
                    if entry.sha256 != info.reference.sha256 {
                        return Err(Error::corrupt(format!(
                            "artifact {} changed while being snapshotted",
                            info.reference.id
                        )));
                    }
                    objects.push(ManifestEntry {
                        artifact: Some(info),
                        ..entry
                    });
                    self.advance(&mut progress, &objects);
                }
            }
        }

        if let Some((index, tenants)) = &self.sources.logs {
            for tenant in tenants {
                let mut lines = BytesMut::new();
                let mut count = 0u64;
                let mut query = LogQuery {
                    limit: LOG_PAGE,
                    ..LogQuery::default()
                };
                loop {
                    let page = index.search(tenant, &query).await?;
                    for record in &page.records {
                        lines.extend_from_slice(&to_json_line(record)?);
                        count += 1;
                    }
                    match page.next {
                        Some(next) if !page.records.is_empty() => query.after = Some(next),
                        _ => break,
                    }
                }
                let key = self.key(&format!("{id}/logs/{tenant}.jsonl"))?;
                let entry = self
                    .put_hashed(&key, stream::once(lines.freeze()), ObjectKind::Logs, count)
                    .await?;
                objects.push(ManifestEntry {
                    tenant: Some(tenant.clone()),
                    ..entry
                });
                self.advance(&mut progress, &objects);
            }
        }

        let manifest = Manifest {
            format: FORMAT,
            id: id.clone(),
            taken_at: now,
            objects,
        };
        let json = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| Error::unexpected(format!("manifest does not serialize: {e}")))?;
        // Written last: only a snapshot whose every object is stored has a manifest.
        self.blobs
            .put_bytes(
                &self.key(&format!("{id}/manifest.json"))?,
                Bytes::from(json),
            )
            .await?;
        tracing::info!(snapshot = %id, objects = manifest.objects.len(), bytes = manifest.total_bytes(), "snapshot taken");
        self.prune(now).await?;
        Ok(manifest)
    }

    fn advance(&self, progress: &mut Progress, objects: &[ManifestEntry]) {
        if let Some(last) = objects.last() {
            progress.objects_done += 1;
            progress.bytes_done += last.size;
            self.report(*progress);
        }
    }

    async fn put_hashed(
        &self,
        key: &BlobKey,
        body: ByteStream,
        kind: ObjectKind,
        count: u64,
    ) -> Result<ManifestEntry> {
        let (body, digest) = hashing(body);
        let meta = self.blobs.put(key, body, PutOptions::default()).await?;
        let (sha256, size) = digest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| Error::unexpected("the blob store did not read the whole body"))?;
        if size != meta.size {
            return Err(Error::unexpected(format!(
                "stored {} bytes of {key}, sent {size}",
                meta.size
            )));
        }
        Ok(ManifestEntry {
            key: key.clone(),
            kind,
            sha256,
            size,
            count,
            collection: None,
            tenant: None,
            artifact: None,
        })
    }

    /// Complete snapshots, oldest first.
    pub async fn list(&self) -> Result<Vec<Manifest>> {
        let prefix = BlobPrefix::parse(&format!("{}/", self.prefix))?;
        let mut out = Vec::new();
        for meta in self.blobs.list_all(&prefix).await? {
            if meta.key.as_str().ends_with("/manifest.json") {
                let bytes = self.blobs.get_bytes(&meta.key, 64 << 20).await?;
                let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::corrupt(format!("manifest {} does not parse: {e}", meta.key))
                })?;
                out.push(manifest);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Deletes snapshots beyond the retention (never the newest), and objects of snapshots that
    /// never got a manifest and are older than the newest complete one. Returns the ids deleted.
    pub async fn prune(&self, now: Timestamp) -> Result<Vec<String>> {
        let manifests = self.list().await?;
        let keep_last = self.retention.keep_last.max(1);
        let mut doomed = Vec::new();
        let n = manifests.len();
        for (i, m) in manifests.iter().enumerate() {
            let newest = i + 1 == n;
            let beyond_count = n - i > keep_last;
            let too_old = self
                .retention
                .max_age
                .is_some_and(|age| now.since(m.taken_at) > age);
            if !newest && (beyond_count || too_old) {
                doomed.push(m.id.clone());
            }
        }
        // Leftovers of snapshots that failed before their manifest was written.
        let newest_id = manifests.last().map(|m| m.id.clone());
        let prefix = BlobPrefix::parse(&format!("{}/", self.prefix))?;
        let complete: Vec<&str> = manifests.iter().map(|m| m.id.as_str()).collect();
        let mut orphans = Vec::new();
        for meta in self.blobs.list_all(&prefix).await? {
            let rest = &meta.key.as_str()[self.prefix.len() + 1..];
            let snap = rest.split('/').next().unwrap_or_default();
            let older = newest_id.as_deref().is_some_and(|n| snap < n);
            if doomed.iter().any(|d| d == snap) || (!complete.contains(&snap) && older) {
                orphans.push(meta.key);
            }
        }
        // Manifests go first so that a prune cut short never leaves a manifest without objects.
        orphans.sort_by_key(|k| !k.as_str().ends_with("/manifest.json"));
        for key in orphans {
            self.blobs.delete(&key).await?;
        }
        Ok(doomed)
    }

    async fn read_object(&self, entry: &ManifestEntry) -> Result<Bytes> {
        let object = self.blobs.get(&entry.key).await?;
        let body = stream::verified(object.body, entry.sha256, entry.size);
        stream::collect(
            body,
            usize::try_from(entry.size).unwrap_or(usize::MAX).max(1),
        )
        .await
    }

    /// Restores the snapshot `id` into `targets` (which should be empty). Every object's sha256
    /// and size are checked against the manifest as it is read.
    pub async fn restore(&self, id: &str, targets: &RestoreTargets) -> Result<RestoreReport> {
        let manifest = self
            .list()
            .await?
            .into_iter()
            .find(|m| m.id == id)
            .ok_or_else(|| Error::not_found(format!("no complete snapshot {id}")))?;
        let mut report = RestoreReport::default();
        let mut progress = Progress::default();
        for entry in &manifest.objects {
            match entry.kind {
                ObjectKind::Documents => {
                    let (Some(store), Some(collection)) = (&targets.documents, &entry.collection)
                    else {
                        continue;
                    };
                    let bytes = self.read_object(entry).await?;
                    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                        let doc: DocumentLine = from_json_line(line, &entry.key)?;
                        match store.insert(collection, &doc.id, &doc.body).await {
                            Ok(_) => report.documents += 1,
                            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                                return Err(Error::conflict(format!(
                                    "restore target already holds {collection}/{}",
                                    doc.id
                                )))
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
                ObjectKind::Artifact => {
                    let (Some(store), Some(info)) = (&targets.artifacts, &entry.artifact) else {
                        continue;
                    };
                    let object = self.blobs.get(&entry.key).await?;
                    let body = stream::verified(object.body, entry.sha256, entry.size);
                    let new_ref = store.upload(&info.meta, body).await?;
                    if new_ref.sha256 != info.reference.sha256 {
                        return Err(Error::corrupt(format!(
                            "restored artifact {} has another digest",
                            info.reference.id
                        )));
                    }
                    report.artifacts += 1;
                    report
                        .artifact_ids
                        .insert(info.reference.id.clone(), new_ref);
                }
                ObjectKind::Logs => {
                    let Some(index) = &targets.logs else { continue };
                    let bytes = self.read_object(entry).await?;
                    let records: Vec<LogRecord> = bytes
                        .split(|b| *b == b'\n')
                        .filter(|l| !l.is_empty())
                        .map(|l| from_json_line(l, &entry.key))
                        .collect::<Result<_>>()?;
                    for chunk in records.chunks(LOG_PAGE) {
                        let outcomes = index.bulk(chunk).await?;
                        if let Some(bad) = outcomes.iter().find(|o| !o.is_delivered()) {
                            return Err(Error::unavailable(format!(
                                "restoring logs of {}: {bad:?}",
                                entry.tenant.as_ref().map(|t| t.as_str()).unwrap_or("?")
                            )));
                        }
                        report.log_records += chunk.len() as u64;
                    }
                }
            }
            progress.objects_done += 1;
            progress.bytes_done += entry.size;
            self.report(progress);
        }
        Ok(report)
    }

    /// The restore drill: restores snapshot `id` into fresh in-memory stores and checks every
    /// checksum and every count against the manifest.
    pub async fn verify(&self, id: &str) -> Result<VerifyReport> {
        let manifest = self
            .list()
            .await?
            .into_iter()
            .find(|m| m.id == id)
            .ok_or_else(|| Error::not_found(format!("no complete snapshot {id}")))?;
        let logs = InMemoryLogIndex::new();
        let targets = RestoreTargets {
            documents: Some(Arc::new(InMemoryDocumentStore::new())),
            artifacts: Some(Arc::new(InMemoryArtifactStore::new())),
            logs: Some(Arc::new(logs.clone())),
        };
        let restored = self.restore(id, &targets).await?;
        let expect = |kind, got: u64, what: &str| {
            let want = manifest.count_of(kind);
            if want == got {
                Ok(())
            } else {
                Err(Error::corrupt(format!(
                    "snapshot {id}: manifest lists {want} {what}, restore produced {got}"
                )))
            }
        };
        expect(ObjectKind::Documents, restored.documents, "documents")?;
        expect(ObjectKind::Artifact, restored.artifacts, "artifacts")?;
        expect(ObjectKind::Logs, restored.log_records, "log records")?;
        logs.refresh().await?;
        Ok(VerifyReport {
            id: manifest.id.clone(),
            objects: manifest.objects.len() as u64,
            bytes: manifest.total_bytes(),
            restored,
        })
    }

    /// Takes a snapshot every `interval` (the first one after one interval) until `shutdown`
    /// resolves. A failed snapshot is logged and retried at the next tick; nothing is deleted
    /// unless a snapshot completed.
    pub async fn run(
        &self,
        interval: Duration,
        now: impl Fn() -> Timestamp + Send,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = ticker.tick() => {
                    if let Err(e) = self.snapshot(now()).await {
                        tracing::warn!(error = %e, "snapshot failed; retrying at the next tick");
                    }
                }
            }
        }
    }
}

/// One line of a documents object: the format shared by snapshots and by backends' own
/// collection exports (`ion-store`), so either can read the other's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DocumentLine {
    /// The document's id.
    pub id: DocumentId,
    /// Its revision when exported (a restore starts again at revision 1 unless the backend can
    /// set revisions).
    pub revision: Revision,
    /// Its content.
    pub body: DocumentBody,
}

fn to_json_line<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut line = serde_json::to_vec(value)
        .map_err(|e| Error::unexpected(format!("snapshot line does not serialize: {e}")))?;
    line.push(b'\n');
    Ok(line)
}

fn from_json_line<T: serde::de::DeserializeOwned>(line: &[u8], key: &BlobKey) -> Result<T> {
    serde_json::from_slice(line)
        .map_err(|e| Error::corrupt(format!("a line of {key} does not parse: {e}")))
}

type DigestSlot = Arc<Mutex<Option<(Sha256Digest, u64)>>>;

/// Passes `body` through, leaving its sha256 and length in the slot once it ended cleanly.
fn hashing(body: ByteStream) -> (ByteStream, DigestSlot) {
    let slot: DigestSlot = Arc::new(Mutex::new(None));
    let out = slot.clone();
    let state = (body, Some(Sha256Hasher::default()), 0u64, slot);
    let s = futures::stream::unfold(state, |(mut body, mut hasher, mut n, slot)| async move {
        let h = hasher.as_mut()?;
        match body.next().await {
            Some(Ok(chunk)) => {
                h.update(&chunk);
                n += chunk.len() as u64;
                Some((Ok(chunk), (body, hasher, n, slot)))
            }
            Some(Err(e)) => Some((Err(e), (body, None, n, slot))),
            None => {
                let digest = hasher.take()?.finish();
                *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some((digest, n));
                None
            }
        }
    })
    .boxed();
    (s, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::{ArtifactMeta, ArtifactStoreExt};
    use crate::document::DocumentStoreExt;
    use crate::fake::InMemoryBlobStore;
    use crate::model::{LogLevel, Version};
    use crate::name::{AppId, RecordId};
    use serde_json::json;

    struct World {
        docs: InMemoryDocumentStore,
        artifacts: InMemoryArtifactStore,
        blobs: InMemoryBlobStore,
        scheduler: SnapshotScheduler,
        tenants: Vec<TenantId>,
    }

    async fn world() -> World {
        let docs = InMemoryDocumentStore::new();
        let artifacts = InMemoryArtifactStore::new();
        let logs = InMemoryLogIndex::new();
        let blobs = InMemoryBlobStore::new();
        let tenants = vec![
            TenantId::parse("acme").unwrap(),
            TenantId::parse("globex").unwrap(),
        ];
        let apps = CollectionName::parse("apps").unwrap();
        for (i, t) in tenants.iter().enumerate() {
            let id = DocumentId::parse(&format!("{t}.web")).unwrap();
            docs.insert_json(&apps, &id, &json!({"tenant": t, "replicas": i + 1}))
                .await
                .unwrap();
            let meta = ArtifactMeta {
                tenant: t.clone(),
                app: AppId::parse("web").unwrap(),
                version: Version(1),
            };
            artifacts
                .upload_bytes(&meta, Bytes::from(vec![i as u8; 300_000]))
                .await
                .unwrap();
            let records: Vec<LogRecord> = (0..3)
                .map(|n| LogRecord {
                    id: RecordId::parse(&format!("{t}-{n}")).unwrap(),
                    tenant: t.clone(),
                    app: AppId::parse("web").unwrap(),
                    instance: None,
                    time: Timestamp::from_millis(1_800_000_000_000 + n),
                    level: LogLevel::Info,
                    message: format!("hello {n}"),
                    fields: BTreeMap::new(),
                })
                .collect();
            logs.bulk(&records).await.unwrap();
        }
        logs.refresh().await.unwrap();
        let sources = SnapshotSources {
            documents: Some((Arc::new(docs.clone()), vec![apps])),
            artifacts: Some((Arc::new(artifacts.clone()), tenants.clone())),
            logs: Some((Arc::new(logs.clone()), tenants.clone())),
        };
        let scheduler = SnapshotScheduler::new(Arc::new(blobs.clone()), sources);
        World {
            docs,
            artifacts,
            blobs,
            scheduler,
            tenants,
        }
    }

    #[tokio::test]
    async fn snapshot_then_verify_restores_every_object_with_matching_counts() {
        let w = world().await;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let scheduler = w
            .scheduler
            .clone()
            .with_progress(Arc::new(move |p| sink.lock().unwrap().push(p)));
        let manifest = scheduler
            .snapshot(Timestamp::from_millis(1_000))
            .await
            .unwrap();
        assert_eq!(manifest.count_of(ObjectKind::Documents), 2);
        assert_eq!(manifest.count_of(ObjectKind::Artifact), 2);
        assert_eq!(manifest.count_of(ObjectKind::Logs), 6);
        let progress = seen.lock().unwrap().clone();
        assert_eq!(progress.len(), manifest.objects.len());
        assert_eq!(progress.last().unwrap().bytes_done, manifest.total_bytes());

        let report = scheduler.verify(&manifest.id).await.unwrap();
        assert_eq!(report.restored.documents, 2);
        assert_eq!(report.restored.artifacts, 2);
        assert_eq!(report.restored.log_records, 6);
    }

    #[tokio::test]
    async fn restore_into_empty_stores_brings_back_documents_artifacts_and_logs() {
        let w = world().await;
        let manifest = w
            .scheduler
            .snapshot(Timestamp::from_millis(1_000))
            .await
            .unwrap();
        let docs = InMemoryDocumentStore::new();
        let artifacts = InMemoryArtifactStore::new();
        let logs = InMemoryLogIndex::new();
        let targets = RestoreTargets {
            documents: Some(Arc::new(docs.clone())),
            artifacts: Some(Arc::new(artifacts.clone())),
            logs: Some(Arc::new(logs.clone())),
        };
        let report = w.scheduler.restore(&manifest.id, &targets).await.unwrap();
        let apps = CollectionName::parse("apps").unwrap();
        let (body, rev) = docs
            .get_json::<serde_json::Value>(&apps, &DocumentId::parse("globex.web").unwrap())
            .await
            .unwrap();
        assert_eq!(body["replicas"], json!(2));
        assert_eq!(rev, Revision(1));
        for (old, new) in &report.artifact_ids {
            let original = w.artifacts.list(&w.tenants[0], None).await.unwrap();
            let original = original
                .iter()
                .chain(w.artifacts.list(&w.tenants[1], None).await.unwrap().iter())
                .find(|i| &i.reference.id == old)
                .cloned()
                .unwrap();
            assert_eq!(original.reference.sha256, new.sha256);
            let bytes = artifacts.download_bytes(new, 1 << 20).await.unwrap();
            assert_eq!(bytes.len() as u64, new.length);
        }
        logs.refresh().await.unwrap();
        let page = logs
            .search(&w.tenants[0], &LogQuery::default())
            .await
            .unwrap();
        assert_eq!(page.records.len(), 3);
        assert!(page.records.iter().all(|r| r.tenant == w.tenants[0]));
    }

    #[tokio::test]
    async fn a_corrupted_snapshot_object_fails_verify() {
        let w = world().await;
        let manifest = w
            .scheduler
            .snapshot(Timestamp::from_millis(1_000))
            .await
            .unwrap();
        let victim = &manifest.objects[0].key;
        assert!(w.blobs.corrupt(victim));
        let err = w.scheduler.verify(&manifest.id).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    }

    #[tokio::test]
    async fn a_corrupted_artifact_fails_the_snapshot_and_leaves_no_manifest() {
        let w = world().await;
        let victim = w.artifacts.list(&w.tenants[1], None).await.unwrap()[0]
            .reference
            .id
            .clone();
        assert!(w.artifacts.corrupt(&victim));
        let err = w
            .scheduler
            .snapshot(Timestamp::from_millis(1_000))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        assert!(w.scheduler.list().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn retention_keeps_the_newest_n_and_removes_their_objects() {
        let w = world().await;
        let scheduler = w.scheduler.clone().with_retention(Retention {
            keep_last: 2,
            max_age: None,
        });
        for t in 1..=4 {
            scheduler
                .snapshot(Timestamp::from_millis(t * 1000))
                .await
                .unwrap();
        }
        let ids: Vec<String> = scheduler
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, ["snap-000000000003000", "snap-000000000004000"]);
        let left = w.blobs.list_all(&BlobPrefix::all()).await.unwrap();
        assert!(left
            .iter()
            .all(|m| m.key.as_str().contains("snap-00000000000300")
                || m.key.as_str().contains("snap-00000000000400")));
    }

    #[tokio::test]
    async fn max_age_prunes_old_snapshots_but_never_the_newest() {
        let w = world().await;
        let scheduler = w.scheduler.clone().with_retention(Retention {
            keep_last: 10,
            max_age: Some(Duration::from_secs(60)),
        });
        scheduler.snapshot(Timestamp::from_millis(0)).await.unwrap();
        scheduler
            .snapshot(Timestamp::from_millis(1_000))
            .await
            .unwrap();
        let pruned = scheduler
            .prune(Timestamp::from_millis(3_600_000))
            .await
            .unwrap();
        assert_eq!(pruned, ["snap-000000000000000"]);
        assert_eq!(scheduler.list().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn restore_refuses_a_non_empty_document_target() {
        let w = world().await;
        let manifest = w
            .scheduler
            .snapshot(Timestamp::from_millis(1_000))
            .await
            .unwrap();
        let targets = RestoreTargets {
            documents: Some(Arc::new(w.docs.clone())),
            ..RestoreTargets::default()
        };
        let err = w
            .scheduler
            .restore(&manifest.id, &targets)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict);
    }

    #[tokio::test(start_paused = true)]
    async fn run_takes_a_snapshot_every_interval_until_shutdown() {
        let w = world().await;
        let clock = Arc::new(Mutex::new(0i64));
        let c = clock.clone();
        let now = move || {
            let mut t = c.lock().unwrap();
            *t += 60_000;
            Timestamp::from_millis(*t)
        };
        let shutdown = tokio::time::sleep(Duration::from_secs(3 * 3600 + 1));
        w.scheduler
            .run(Duration::from_secs(3600), now, shutdown)
            .await;
        assert_eq!(w.scheduler.list().await.unwrap().len(), 3);
    }
}
