//! The `ArtifactStore` trait: application binaries with end-to-end integrity.

use std::fmt::Debug;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::model::{ArtifactRef, Version};
use crate::name::{AppId, ArtifactId, TenantId};
use crate::stream::{self, ByteStream};
use crate::time::Timestamp;

/// Whose binary an upload is.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ArtifactMeta {
    /// Owner.
    pub tenant: TenantId,
    /// App.
    pub app: AppId,
    /// App version the binary belongs to.
    pub version: Version,
}

/// A stored artifact as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactInfo {
    /// Id, digest and length.
    pub reference: ArtifactRef,
    /// Owner, app and version.
    pub meta: ArtifactMeta,
    /// When the upload completed.
    pub uploaded_at: Timestamp,
}

/// Stores application binaries (GridFS in production).
///
/// # Contract
///
/// - `upload` consumes the stream and returns an [`ArtifactRef`] whose sha256 and length the store
///   computed itself; a stream that fails part-way stores nothing (no orphan parts) and returns the
///   stream's error.
/// - `download` streams the content and verifies it against the reference (use
///   [`crate::stream::verified`]): a consumer reading to the end gets exactly the uploaded bytes,
///   or an error of kind `Corrupt` if they changed in storage or the reference does not match.
///   A missing id is `NotFound`.
/// - `list` returns a tenant's artifacts (optionally one app's) ordered by app, then version,
///   then id; never another tenant's.
/// - `delete` is idempotent.
/// - Artifacts of many megabytes stream in bounded memory.
#[async_trait]
pub trait ArtifactStore: Send + Sync + Debug + 'static {
    /// Stores a binary.
    async fn upload(&self, meta: &ArtifactMeta, body: ByteStream) -> Result<ArtifactRef>;

    /// Reads a binary, verifying it as it streams.
    async fn download(&self, reference: &ArtifactRef) -> Result<ByteStream>;

    /// Lists a tenant's artifacts.
    async fn list(&self, tenant: &TenantId, app: Option<&AppId>) -> Result<Vec<ArtifactInfo>>;

    /// Deletes a binary; idempotent.
    async fn delete(&self, id: &ArtifactId) -> Result<()>;
}

/// Conveniences over [`ArtifactStore`].
#[async_trait]
pub trait ArtifactStoreExt: ArtifactStore {
    /// Uploads bytes held in memory.
    async fn upload_bytes(&self, meta: &ArtifactMeta, data: Bytes) -> Result<ArtifactRef> {
        self.upload(meta, stream::once(data)).await
    }

    /// Downloads and verifies a whole artifact into memory, failing past `limit` bytes.
    async fn download_bytes(&self, reference: &ArtifactRef, limit: usize) -> Result<Bytes> {
        stream::collect(self.download(reference).await?, limit).await
    }
}

impl<T: ArtifactStore + ?Sized> ArtifactStoreExt for T {}
