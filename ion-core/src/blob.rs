//! The `BlobStore` trait: whole objects by key, streamed.

use std::fmt::Debug;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;
use crate::name::{BlobKey, BlobPrefix};
use crate::stream::{self, ByteStream};
use crate::time::Timestamp;

/// Options for a put.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PutOptions {
    /// MIME type recorded with the object.
    pub content_type: Option<String>,
}

/// What a store knows about an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobMeta {
    /// Its key.
    pub key: BlobKey,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written.
    pub last_modified: Timestamp,
}

/// An object being read: its metadata and its content.
pub struct BlobObject {
    /// Metadata.
    pub meta: BlobMeta,
    /// Content, streamed.
    pub body: ByteStream,
}

impl Debug for BlobObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobObject")
            .field("meta", &self.meta)
            .finish()
    }
}

/// One page of a listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlobList {
    /// Objects in ascending key order.
    pub items: Vec<BlobMeta>,
    /// Pass to the next `list` call to continue; `None` at the end.
    pub next: Option<String>,
}

/// Where a listing starts and how much it returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListRequest {
    /// Only keys starting with this.
    pub prefix: BlobPrefix,
    /// The `next` token of the previous page.
    pub continuation: Option<String>,
    /// At most this many items (1..=1000; 0 means 1000).
    pub limit: usize,
}

impl ListRequest {
    /// The first page of `prefix`, up to 1000 items.
    pub fn prefix(prefix: BlobPrefix) -> Self {
        Self {
            prefix,
            continuation: None,
            limit: 1000,
        }
    }

    /// The effective page size.
    pub fn page_size(&self) -> usize {
        if self.limit == 0 {
            1000
        } else {
            self.limit.min(1000)
        }
    }
}

/// What a blob store can do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobCapabilities {
    /// Largest object size accepted, if bounded.
    pub max_object_size: Option<u64>,
}

/// Stores whole objects by key (S3 in production).
///
/// # Contract
///
/// - `put` is atomic: readers see the old object or the new one, never a part; a body stream
///   that fails part-way leaves no new object visible and returns the stream's error.
/// - `get` streams the content; `NotFound` for a missing key. `head` returns metadata only.
/// - `list` returns keys with the prefix in ascending byte order, at most `page_size` per page,
///   with a continuation token until the last page; paging visits every key exactly once.
/// - `delete` is idempotent: deleting a missing key succeeds.
/// - Objects of many megabytes stream in bounded memory.
#[async_trait]
pub trait BlobStore: Send + Sync + Debug + 'static {
    /// What this store can do.
    fn capabilities(&self) -> BlobCapabilities;

    /// Writes `body` under `key`, replacing any object there.
    async fn put(&self, key: &BlobKey, body: ByteStream, options: PutOptions) -> Result<BlobMeta>;

    /// Reads an object.
    async fn get(&self, key: &BlobKey) -> Result<BlobObject>;

    /// Reads an object's metadata.
    async fn head(&self, key: &BlobKey) -> Result<BlobMeta>;

    /// Lists one page of keys.
    async fn list(&self, request: &ListRequest) -> Result<BlobList>;

    /// Deletes an object; idempotent.
    async fn delete(&self, key: &BlobKey) -> Result<()>;
}

/// Conveniences over [`BlobStore`].
#[async_trait]
pub trait BlobStoreExt: BlobStore {
    /// Puts bytes held in memory.
    async fn put_bytes(&self, key: &BlobKey, data: Bytes) -> Result<BlobMeta> {
        self.put(key, stream::once(data), PutOptions::default())
            .await
    }

    /// Reads a whole object into memory, failing past `limit` bytes.
    async fn get_bytes(&self, key: &BlobKey, limit: usize) -> Result<Bytes> {
        let object = self.get(key).await?;
        stream::collect(object.body, limit).await
    }

    /// Lists every key under `prefix`, following continuation tokens.
    async fn list_all(&self, prefix: &BlobPrefix) -> Result<Vec<BlobMeta>> {
        let mut request = ListRequest::prefix(prefix.clone());
        let mut out = Vec::new();
        loop {
            let page = self.list(&request).await?;
            out.extend(page.items);
            match page.next {
                Some(token) => request.continuation = Some(token),
                None => return Ok(out),
            }
        }
    }
}

impl<T: BlobStore + ?Sized> BlobStoreExt for T {}
