//! `InMemoryArtifactStore`: deterministic application binaries with verified downloads, in memory.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use crate::artifact::{ArtifactInfo, ArtifactMeta, ArtifactStore};
use crate::error::{Error, Result};
use crate::fake::FaultPlan;
use crate::model::{ArtifactRef, Sha256Hasher};
use crate::name::{AppId, ArtifactId, TenantId};
use crate::stream::{self, ByteStream};
use crate::time::Timestamp;

/// How large the chunks of a download are (GridFS's default chunk is 255 KiB; smaller chunks
/// make a consumer that wrongly assumes one chunk fail sooner).
const CHUNK: usize = 64 * 1024;

struct StoredArtifact {
    info: ArtifactInfo,
    data: Bytes,
}

#[derive(Default)]
struct State {
    issued: u64,
    artifacts: BTreeMap<ArtifactId, StoredArtifact>,
}

/// An [`ArtifactStore`] in memory, behaving like the GridFS store.
///
/// - `upload` reads the whole stream, hashing it, before anything is stored: a stream that fails
///   part-way leaves nothing behind (GridFS deletes the chunks of an aborted upload).
/// - Ids are issued in order, `art-00000001`, `art-00000002`, …, shared by all clones, so a test
///   run is reproducible.
/// - `download` streams the stored bytes in 64 KiB chunks through [`stream::verified`] against
///   the reference the caller passes in, so a reference with a wrong sha256 or length, or bytes
///   damaged with [`InMemoryArtifactStore::corrupt`], end the stream with a `Corrupt` error.
/// - `list` orders by app, version, then id.
/// - Clones share the artifacts and the [`FaultPlan`]. Every operation first calls
///   [`FaultPlan::check`] with its name: `upload`, `download`, `list` or `delete`.
#[derive(Clone, Default)]
pub struct InMemoryArtifactStore {
    state: Arc<Mutex<State>>,
    faults: FaultPlan,
}

impl InMemoryArtifactStore {
    /// An empty store without faults.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store whose calls fail or slow down as `faults` says.
    pub fn with_faults(faults: FaultPlan) -> Self {
        Self {
            state: Arc::default(),
            faults,
        }
    }

    /// The fault plan (shared with every clone).
    pub fn faults(&self) -> &FaultPlan {
        &self.faults
    }

    /// Flips one byte of the stored content of `id` (an empty artifact gains a byte instead), so
    /// that any download of it ends with a `Corrupt` error.
    ///
    /// Returns false when there is no such artifact. The listed digest and length stay as they
    /// were at upload, as they would after a disk silently rots.
    pub fn corrupt(&self, id: &ArtifactId) -> bool {
        let mut state = self.state();
        let Some(stored) = state.artifacts.get_mut(id) else {
            return false;
        };
        let mut data = BytesMut::from(&stored.data[..]);
        if data.is_empty() {
            data.extend_from_slice(&[0]);
        } else {
            let at = data.len() / 2;
            data[at] ^= 0xff;
        }
        stored.data = data.freeze();
        true
    }

    /// How many artifacts the store holds, across tenants.
    pub fn len(&self) -> usize {
        self.state().artifacts.len()
    }

    /// True when the store holds no artifact.
    pub fn is_empty(&self) -> bool {
        self.state().artifacts.is_empty()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every mutation is a single insert or remove, so a poisoned lock still guards a
        // consistent state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl fmt::Debug for InMemoryArtifactStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the content: artifacts may be many megabytes.
        let state = self.state();
        f.debug_struct("InMemoryArtifactStore")
            .field("artifacts", &state.artifacts.len())
            .field("issued", &state.issued)
            .field("faults", &self.faults)
            .finish()
    }
}

#[async_trait]
impl ArtifactStore for InMemoryArtifactStore {
    async fn upload(&self, meta: &ArtifactMeta, mut body: ByteStream) -> Result<ArtifactRef> {
        self.faults.check("upload").await?;
        let mut hasher = Sha256Hasher::default();
        let mut data = BytesMut::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            hasher.update(&chunk);
            data.extend_from_slice(&chunk);
        }
        let mut state = self.state();
        state.issued += 1;
        let id = ArtifactId::parse(&format!("art-{:08}", state.issued))
            .map_err(|e| Error::unexpected(format!("issued an invalid artifact id: {e}")))?;
        let reference = ArtifactRef {
            id: id.clone(),
            sha256: hasher.finish(),
            length: data.len() as u64,
        };
        let info = ArtifactInfo {
            reference: reference.clone(),
            meta: meta.clone(),
            uploaded_at: Timestamp::now(),
        };
        state.artifacts.insert(
            id,
            StoredArtifact {
                info,
                data: data.freeze(),
            },
        );
        Ok(reference)
    }

    async fn download(&self, reference: &ArtifactRef) -> Result<ByteStream> {
        self.faults.check("download").await?;
        let data = self
            .state()
            .artifacts
            .get(&reference.id)
            .map(|stored| stored.data.clone())
            .ok_or_else(|| Error::not_found(format!("no artifact {}", reference.id)))?;
        Ok(stream::verified(
            stream::chunked(data, CHUNK),
            reference.sha256,
            reference.length,
        ))
    }

    async fn list(&self, tenant: &TenantId, app: Option<&AppId>) -> Result<Vec<ArtifactInfo>> {
        self.faults.check("list").await?;
        let mut infos: Vec<ArtifactInfo> = self
            .state()
            .artifacts
            .values()
            .filter(|stored| stored.info.meta.tenant == *tenant)
            .filter(|stored| app.is_none_or(|app| stored.info.meta.app == *app))
            .map(|stored| stored.info.clone())
            .collect();
        infos.sort_by(|a, b| {
            (&a.meta.app, a.meta.version, &a.reference.id).cmp(&(
                &b.meta.app,
                b.meta.version,
                &b.reference.id,
            ))
        });
        Ok(infos)
    }

    async fn delete(&self, id: &ArtifactId) -> Result<()> {
        self.faults.check("delete").await?;
        self.state().artifacts.remove(id);
        Ok(())
    }
}
