//! `InMemoryBlobStore`: a deterministic, S3-shaped blob store held in memory.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use crate::blob::{
    BlobCapabilities, BlobList, BlobMeta, BlobObject, BlobStore, ListRequest, PutOptions,
};
use crate::error::{Error, Result};
use crate::fake::FaultPlan;
use crate::name::BlobKey;
use crate::stream::{self, ByteStream};
use crate::time::Timestamp;

/// How large the chunks of a `get` body are: big objects stream rather than arrive whole.
const CHUNK: usize = 64 * 1024;

#[derive(Clone)]
struct StoredBlob {
    data: Bytes,
    last_modified: Timestamp,
}

impl StoredBlob {
    fn meta(&self, key: &BlobKey) -> BlobMeta {
        BlobMeta {
            key: key.clone(),
            size: self.data.len() as u64,
            last_modified: self.last_modified,
        }
    }
}

/// A [`BlobStore`] in memory, behaving like S3.
///
/// - `put` reads the whole body before storing it, so a body that fails part-way stores nothing
///   and leaves a previous object under the key untouched (S3's single-request and multipart
///   uploads are equally all-or-nothing).
/// - `list` returns keys in ascending byte order; the continuation token is the last key of the
///   page (opaque to callers). `next` is `None` exactly when no further key matches, as S3's
///   `IsTruncated` is false on the last page.
/// - `get` streams a snapshot of the object in 64 KiB chunks; a concurrent overwrite does not
///   change a body already being read.
/// - Clones share the objects and the [`FaultPlan`]. Every operation first calls
///   [`FaultPlan::check`] with its name: `put`, `get`, `head`, `list` or `delete`.
/// - [`InMemoryBlobStore::corrupt`] flips a stored byte, as silent bit rot would: reads succeed
///   and return the damaged content, so only a checksum kept elsewhere can tell.
#[derive(Clone, Default)]
pub struct InMemoryBlobStore {
    objects: Arc<Mutex<BTreeMap<BlobKey, StoredBlob>>>,
    faults: FaultPlan,
}

impl InMemoryBlobStore {
    /// An empty store without faults.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store whose calls fail or slow down as `faults` says.
    pub fn with_faults(faults: FaultPlan) -> Self {
        Self {
            objects: Arc::default(),
            faults,
        }
    }

    /// The fault plan (shared with every clone).
    pub fn faults(&self) -> &FaultPlan {
        &self.faults
    }

    /// Flips one byte of the object under `key` (an empty object gains a byte instead).
    ///
    /// Returns false when there is no such object. The size and last-modified time stay as they
    /// were, as they would after a disk silently rots.
    pub fn corrupt(&self, key: &BlobKey) -> bool {
        let mut objects = self.objects();
        let Some(stored) = objects.get_mut(key) else {
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

    /// How many objects the store holds, under any prefix.
    pub fn len(&self) -> usize {
        self.objects().len()
    }

    /// True when the store holds no object.
    pub fn is_empty(&self) -> bool {
        self.objects().is_empty()
    }

    fn objects(&self) -> MutexGuard<'_, BTreeMap<BlobKey, StoredBlob>> {
        // A panic elsewhere while holding the lock cannot leave the map half-updated: every
        // mutation is a single insert or remove.
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl fmt::Debug for InMemoryBlobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the content: objects may be many megabytes.
        f.debug_struct("InMemoryBlobStore")
            .field("objects", &self.len())
            .field("faults", &self.faults)
            .finish()
    }
}

#[async_trait]
impl BlobStore for InMemoryBlobStore {
    fn capabilities(&self) -> BlobCapabilities {
        BlobCapabilities {
            max_object_size: None,
        }
    }

    async fn put(
        &self,
        key: &BlobKey,
        mut body: ByteStream,
        _options: PutOptions,
    ) -> Result<BlobMeta> {
        self.faults.check("put").await?;
        let mut data = BytesMut::new();
        while let Some(chunk) = body.next().await {
            data.extend_from_slice(&chunk?);
        }
        let stored = StoredBlob {
            data: data.freeze(),
            last_modified: Timestamp::now(),
        };
        let meta = stored.meta(key);
        self.objects().insert(key.clone(), stored);
        Ok(meta)
    }

    async fn get(&self, key: &BlobKey) -> Result<BlobObject> {
        self.faults.check("get").await?;
        let stored = self
            .objects()
            .get(key)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("no blob at {key}")))?;
        Ok(BlobObject {
            meta: stored.meta(key),
            body: stream::chunked(stored.data, CHUNK),
        })
    }

    async fn head(&self, key: &BlobKey) -> Result<BlobMeta> {
        self.faults.check("head").await?;
        self.objects()
            .get(key)
            .map(|stored| stored.meta(key))
            .ok_or_else(|| Error::not_found(format!("no blob at {key}")))
    }

    async fn list(&self, request: &ListRequest) -> Result<BlobList> {
        self.faults.check("list").await?;
        let page_size = request.page_size();
        // The token is the last key of the previous page; anything else was not issued by us
        // (S3 answers a forged token with InvalidArgument).
        let after = match &request.continuation {
            Some(token) => Some(BlobKey::parse(token).map_err(|e| {
                Error::invalid_input(format!(
                    "continuation token is not one this store issued: {e}"
                ))
            })?),
            None => None,
        };
        let objects = self.objects();
        let start = match &after {
            Some(after) => Bound::Excluded(after),
            None => Bound::Unbounded,
        };
        // Keys sharing a prefix are contiguous in byte order, so the matches are one run.
        let prefix = request.prefix.as_str();
        let mut matching = objects
            .range::<BlobKey, _>((start, Bound::Unbounded))
            .skip_while(|(key, _)| key.as_str() < prefix)
            .take_while(|(key, _)| request.prefix.matches(key));
        let items: Vec<BlobMeta> = matching
            .by_ref()
            .take(page_size)
            .map(|(key, stored)| stored.meta(key))
            .collect();
        let next = match (matching.next(), items.last()) {
            (Some(_), Some(last)) => Some(last.key.as_str().to_owned()),
            _ => None,
        };
        Ok(BlobList { items, next })
    }

    async fn delete(&self, key: &BlobKey) -> Result<()> {
        self.faults.check("delete").await?;
        self.objects().remove(key);
        Ok(())
    }
}
