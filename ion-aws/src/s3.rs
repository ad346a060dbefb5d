//! `S3BlobStore`: `ion_core::BlobStore` on S3, multipart above a threshold, streamed reads.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, CompletedMultipartUpload, CompletedPart, StorageClass,
};
use aws_sdk_s3::Client;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use ion_core::blob::BlobCapabilities;
use ion_core::{
    BlobKey, BlobList, BlobMeta, BlobObject, BlobStore, ByteStream, Error, ListRequest, PutOptions,
    Result, Timestamp,
};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::config::{lookup_var, parse_var, AwsConfig, Lookup};
use crate::error::map_sdk_error;

const MIB: u64 = 1024 * 1024;
/// S3's smallest part (all but the last).
const MIN_PART: u64 = 5 * MIB;
/// S3's largest part and largest single put.
const MAX_PART: u64 = 5 * 1024 * MIB;
/// S3's most parts per upload.
const MAX_PARTS: u64 = 10_000;

/// Server-side encryption applied to every object written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum ServerSideEncryption {
    /// SSE-S3 (`AES256`).
    Aes256,
    /// SSE-KMS with the given key, or the account's default S3 key.
    AwsKms {
        /// Key id or ARN; `None` uses the AWS-managed key.
        key_id: Option<String>,
    },
}

/// Where and how [`S3BlobStore`] writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct S3BlobStoreConfig {
    /// The bucket (must exist, or call [`S3BlobStore::create_bucket_if_missing`]).
    pub bucket: String,
    /// Bodies longer than this many bytes are written by multipart upload; shorter ones by one
    /// `PutObject`. At least 5 MiB. Memory held for a put is at most this, or
    /// `part_size × (max_concurrent_parts + 1)` for a multipart one.
    pub multipart_threshold: u64,
    /// Size of each multipart part in bytes (5 MiB ..= 5 GiB); objects may have 10,000 parts.
    pub part_size: u64,
    /// Parts uploaded at once per put.
    pub max_concurrent_parts: usize,
    /// Server-side encryption for new objects; `None` leaves the bucket default.
    pub server_side_encryption: Option<ServerSideEncryption>,
    /// Storage class for new objects (e.g. `STANDARD_IA`); `None` is `STANDARD`.
    pub storage_class: Option<String>,
}

impl Default for S3BlobStoreConfig {
    fn default() -> Self {
        Self {
            bucket: String::new(),
            multipart_threshold: 16 * MIB,
            part_size: 8 * MIB,
            max_concurrent_parts: 4,
            server_side_encryption: None,
            storage_class: None,
        }
    }
}

impl S3BlobStoreConfig {
    /// Defaults for `bucket`.
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            ..Self::default()
        }
    }

    /// A builder for `bucket`.
    pub fn builder(bucket: impl Into<String>) -> S3BlobStoreConfigBuilder {
        S3BlobStoreConfigBuilder {
            config: Self::new(bucket),
        }
    }

    /// Reads `ION_S3_BUCKET` (required), `ION_S3_MULTIPART_THRESHOLD`, `ION_S3_PART_SIZE`,
    /// `ION_S3_MAX_CONCURRENT_PARTS`, `ION_S3_SSE` (`AES256` or `aws:kms`),
    /// `ION_S3_SSE_KMS_KEY_ID` and `ION_S3_STORAGE_CLASS`.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(&|k| std::env::var(k).ok())
    }

    pub(crate) fn from_lookup(lookup: Lookup<'_>) -> Result<Self> {
        let bucket = lookup_var(lookup, "ION_S3_BUCKET")
            .ok_or_else(|| Error::invalid_config("bucket (ION_S3_BUCKET): not set"))?;
        let mut c = Self::new(bucket);
        if let Some(v) = parse_var(lookup, "ION_S3_MULTIPART_THRESHOLD")? {
            c.multipart_threshold = v;
        }
        if let Some(v) = parse_var(lookup, "ION_S3_PART_SIZE")? {
            c.part_size = v;
        }
        if let Some(v) = parse_var(lookup, "ION_S3_MAX_CONCURRENT_PARTS")? {
            c.max_concurrent_parts = v;
        }
        let kms_key = lookup_var(lookup, "ION_S3_SSE_KMS_KEY_ID");
        c.server_side_encryption = match lookup_var(lookup, "ION_S3_SSE").as_deref() {
            None if kms_key.is_some() => Some(ServerSideEncryption::AwsKms { key_id: kms_key }),
            None => None,
            Some("AES256") => Some(ServerSideEncryption::Aes256),
            Some("aws:kms") => Some(ServerSideEncryption::AwsKms { key_id: kms_key }),
            Some(other) => {
                return Err(Error::invalid_config(format!(
                    "server_side_encryption (ION_S3_SSE): expected AES256 or aws:kms, got {other:?}"
                )))
            }
        };
        c.storage_class = lookup_var(lookup, "ION_S3_STORAGE_CLASS");
        c.validate()?;
        Ok(c)
    }

    /// Checks every field, naming the offending key.
    pub fn validate(&self) -> Result<()> {
        let b = self.bucket.as_bytes();
        let bucket_ok = (3..=63).contains(&b.len())
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'.')
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && !self.bucket.contains("..");
        if !bucket_ok {
            return Err(Error::invalid_config(format!(
                "bucket (ION_S3_BUCKET): not a valid bucket name: {:?}",
                self.bucket
            )));
        }
        if !(MIN_PART..=MAX_PART).contains(&self.part_size) {
            return Err(Error::invalid_config(format!(
                "part_size (ION_S3_PART_SIZE): must be 5 MiB ..= 5 GiB, got {}",
                self.part_size
            )));
        }
        if !(MIN_PART..=MAX_PART).contains(&self.multipart_threshold) {
            return Err(Error::invalid_config(format!(
                "multipart_threshold (ION_S3_MULTIPART_THRESHOLD): must be 5 MiB ..= 5 GiB, got {}",
                self.multipart_threshold
            )));
        }
        if !(1..=64).contains(&self.max_concurrent_parts) {
            return Err(Error::invalid_config(format!(
                "max_concurrent_parts (ION_S3_MAX_CONCURRENT_PARTS): must be 1..=64, got {}",
                self.max_concurrent_parts
            )));
        }
        if let Some(class) = &self.storage_class {
            if !StorageClass::values().contains(&class.as_str()) {
                return Err(Error::invalid_config(format!(
                    "storage_class (ION_S3_STORAGE_CLASS): unknown storage class {class:?}"
                )));
            }
        }
        if let Some(ServerSideEncryption::AwsKms { key_id: Some(k) }) = &self.server_side_encryption
        {
            if k.is_empty() || k.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(Error::invalid_config(
                    "server_side_encryption.key_id (ION_S3_SSE_KMS_KEY_ID): not a key id or arn",
                ));
            }
        }
        Ok(())
    }
}

/// Builds an [`S3BlobStoreConfig`]; `build` validates it.
#[derive(Clone, Debug)]
pub struct S3BlobStoreConfigBuilder {
    config: S3BlobStoreConfig,
}

impl S3BlobStoreConfigBuilder {
    /// Sets the multipart threshold in bytes.
    pub fn multipart_threshold(mut self, bytes: u64) -> Self {
        self.config.multipart_threshold = bytes;
        self
    }
    /// Sets the part size in bytes.
    pub fn part_size(mut self, bytes: u64) -> Self {
        self.config.part_size = bytes;
        self
    }
    /// Sets how many parts upload at once.
    pub fn max_concurrent_parts(mut self, n: usize) -> Self {
        self.config.max_concurrent_parts = n;
        self
    }
    /// Encrypts new objects server-side.
    pub fn server_side_encryption(mut self, sse: ServerSideEncryption) -> Self {
        self.config.server_side_encryption = Some(sse);
        self
    }
    /// Writes new objects in this storage class.
    pub fn storage_class(mut self, class: impl Into<String>) -> Self {
        self.config.storage_class = Some(class.into());
        self
    }
    /// Validates and returns the config.
    pub fn build(self) -> Result<S3BlobStoreConfig> {
        self.config.validate()?;
        Ok(self.config)
    }
}

/// `BlobStore` on one S3 bucket.
///
/// Puts of at most `multipart_threshold` bytes are one `PutObject`; longer bodies are uploaded
/// in parts, several at once, and the upload is aborted on any failure (a failing body stream,
/// a failed part, or the put future being dropped), so nothing partial becomes visible and no
/// upload is left behind. Every request and part carries a CRC32 checksum the service checks;
/// reads validate the checksum S3 returns for whole-object checksums.
#[derive(Clone)]
pub struct S3BlobStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    config: S3BlobStoreConfig,
}

impl fmt::Debug for S3BlobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3BlobStore")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl S3BlobStore {
    /// Connects to the bucket named in `config` with the connection settings in `aws`.
    pub async fn new(aws: &AwsConfig, config: S3BlobStoreConfig) -> Result<Self> {
        config.validate()?;
        let shared = aws.load_sdk_config().await?;
        let s3 = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(aws.force_path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenSupported)
            .response_checksum_validation(ResponseChecksumValidation::WhenSupported)
            .build();
        Ok(Self {
            inner: Arc::new(Inner {
                client: Client::from_conf(s3),
                config,
            }),
        })
    }

    /// The bucket this store writes to.
    pub fn bucket(&self) -> &str {
        &self.inner.config.bucket
    }

    /// Creates the bucket unless it already exists and is ours.
    pub async fn create_bucket_if_missing(&self) -> Result<()> {
        let r = self
            .inner
            .client
            .create_bucket()
            .bucket(self.bucket())
            .send()
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = map_sdk_error("s3 create_bucket", e, None);
                if e.kind() == ion_core::ErrorKind::AlreadyExists
                    && e.message().contains("BucketAlreadyOwnedByYou")
                {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn put_single(&self, key: &BlobKey, body: Bytes, options: &PutOptions) -> Result<()> {
        let c = &self.inner.config;
        let mut req = self
            .inner
            .client
            .put_object()
            .bucket(&c.bucket)
            .key(key.as_str())
            .content_length(body.len() as i64)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .body(SdkByteStream::from(body));
        if let Some(t) = &options.content_type {
            req = req.content_type(t);
        }
        if let Some(class) = &c.storage_class {
            req = req.storage_class(StorageClass::from(class.as_str()));
        }
        req = match &c.server_side_encryption {
            None => req,
            Some(ServerSideEncryption::Aes256) => {
                req.server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::Aes256)
            }
            Some(ServerSideEncryption::AwsKms { key_id }) => req
                .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
                .set_ssekms_key_id(key_id.clone()),
        };
        req.send()
            .await
            .map_err(|e| map_sdk_error("s3 put_object", e, None))?;
        Ok(())
    }

    async fn put_multipart(
        &self,
        key: &BlobKey,
        mut chunker: Chunker,
        options: &PutOptions,
    ) -> Result<u64> {
        let c = &self.inner.config;
        let mut req = self
            .inner
            .client
            .create_multipart_upload()
            .bucket(&c.bucket)
            .key(key.as_str())
            .checksum_algorithm(ChecksumAlgorithm::Crc32);
        if let Some(t) = &options.content_type {
            req = req.content_type(t);
        }
        if let Some(class) = &c.storage_class {
            req = req.storage_class(StorageClass::from(class.as_str()));
        }
        req = match &c.server_side_encryption {
            None => req,
            Some(ServerSideEncryption::Aes256) => {
                req.server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::Aes256)
            }
            Some(ServerSideEncryption::AwsKms { key_id }) => req
                .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
                .set_ssekms_key_id(key_id.clone()),
        };
        let created = req
            .send()
            .await
            .map_err(|e| map_sdk_error("s3 create_multipart_upload", e, None))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| Error::unexpected("s3 create_multipart_upload: no upload id"))?
            .to_owned();
        let mut guard = AbortGuard {
            client: self.inner.client.clone(),
            bucket: c.bucket.clone(),
            key: key.as_str().to_owned(),
            upload_id: Some(upload_id.clone()),
        };
        match self.upload_parts(key, &upload_id, &mut chunker).await {
            Ok(size) => {
                guard.upload_id = None;
                Ok(size)
            }
            Err(e) => {
                guard.abort_now().await;
                Err(e)
            }
        }
    }

    async fn upload_parts(
        &self,
        key: &BlobKey,
        upload_id: &str,
        chunker: &mut Chunker,
    ) -> Result<u64> {
        let c = &self.inner.config;
        let mut tasks: JoinSet<Result<CompletedPart>> = JoinSet::new();
        let mut parts = Vec::new();
        let mut size = 0u64;
        let mut number = 0i32;
        let result: Result<()> = async {
            loop {
                // Bound memory and concurrency: wait for a slot before reading the next part.
                while tasks.len() >= c.max_concurrent_parts {
                    parts.push(join_part(tasks.join_next().await)?);
                }
                let Some(part) = chunker.take(c.part_size as usize).await? else {
                    break;
                };
                number += 1;
                if number as u64 > MAX_PARTS {
                    return Err(Error::invalid_input(format!(
                        "s3 put: body exceeds {MAX_PARTS} parts of {} bytes",
                        c.part_size
                    )));
                }
                size += part.len() as u64;
                let client = self.inner.client.clone();
                let (bucket, key, upload_id) = (
                    c.bucket.clone(),
                    key.as_str().to_owned(),
                    upload_id.to_owned(),
                );
                tasks.spawn(async move {
                    let out = client
                        .upload_part()
                        .bucket(bucket)
                        .key(key)
                        .upload_id(upload_id)
                        .part_number(number)
                        .content_length(part.len() as i64)
                        .checksum_algorithm(ChecksumAlgorithm::Crc32)
                        .body(SdkByteStream::from(part))
                        .send()
                        .await
                        .map_err(|e| map_sdk_error("s3 upload_part", e, None))?;
                    Ok(CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(out.e_tag().map(str::to_owned))
                        .set_checksum_crc32(out.checksum_crc32().map(str::to_owned))
                        .build())
                });
            }
            while let Some(done) = tasks.join_next().await {
                parts.push(join_part(Some(done))?);
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            // Stop the other parts before the caller aborts the upload, so no part lands after.
            tasks.shutdown().await;
            return Err(e);
        }
        parts.sort_by_key(|p| p.part_number());
        self.inner
            .client
            .complete_multipart_upload()
            .bucket(&c.bucket)
            .key(key.as_str())
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| map_sdk_error("s3 complete_multipart_upload", e, None))?;
        Ok(size)
    }
}

fn join_part(
    joined: Option<std::result::Result<Result<CompletedPart>, tokio::task::JoinError>>,
) -> Result<CompletedPart> {
    match joined {
        Some(Ok(r)) => r,
        Some(Err(e)) => Err(Error::unexpected(format!(
            "s3 upload_part task failed: {e}"
        ))),
        None => Err(Error::unexpected("s3 upload_part: no task to join")),
    }
}

/// Aborts a multipart upload unless disarmed (`upload_id = None`), also when the put future is
/// dropped part-way: then the abort runs as a detached task on the current runtime.
struct AbortGuard {
    client: Client,
    bucket: String,
    key: String,
    upload_id: Option<String>,
}

impl AbortGuard {
    async fn abort_now(&mut self) {
        if let Some(id) = self.upload_id.take() {
            abort_upload(&self.client, &self.bucket, &self.key, &id).await;
        }
    }
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if let Some(id) = self.upload_id.take() {
            let (client, bucket, key) =
                (self.client.clone(), self.bucket.clone(), self.key.clone());
            match tokio::runtime::Handle::try_current() {
                Ok(h) => {
                    h.spawn(async move { abort_upload(&client, &bucket, &key, &id).await });
                }
                Err(_) => {
                    tracing::warn!(bucket = %bucket, key = %key, upload_id = %id, "multipart upload left behind: no runtime to abort it")
                }
            }
        }
    }
}

async fn abort_upload(client: &Client, bucket: &str, key: &str, upload_id: &str) {
    let r = client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await;
    match r {
        Ok(_) => tracing::debug!(bucket, key, upload_id, "aborted multipart upload"),
        Err(e) => {
            let e = map_sdk_error("s3 abort_multipart_upload", e, None);
            if e.kind() != ion_core::ErrorKind::NotFound {
                tracing::warn!(bucket, key, upload_id, error = %e, "could not abort multipart upload");
            }
        }
    }
}

/// Cuts a byte stream into pieces of a requested size without copying a chunk that already
/// holds a whole piece.
struct Chunker {
    body: ByteStream,
    queued: VecDeque<Bytes>,
    queued_len: usize,
    done: bool,
}

impl Chunker {
    fn new(body: ByteStream) -> Self {
        Self {
            body,
            queued: VecDeque::new(),
            queued_len: 0,
            done: false,
        }
    }

    /// Reads until `n` bytes are queued or the body ends; true when the body ended.
    async fn fill(&mut self, n: usize) -> Result<bool> {
        while self.queued_len < n && !self.done {
            match self.body.next().await {
                Some(Ok(chunk)) => {
                    if !chunk.is_empty() {
                        self.queued_len += chunk.len();
                        self.queued.push_back(chunk);
                    }
                }
                Some(Err(e)) => return Err(e),
                None => self.done = true,
            }
        }
        Ok(self.done && self.queued_len <= n)
    }

    /// The next `n` bytes (fewer at the end), or `None` when nothing is left.
    async fn take(&mut self, n: usize) -> Result<Option<Bytes>> {
        self.fill(n).await?;
        if self.queued_len == 0 {
            return Ok(None);
        }
        let want = n.min(self.queued_len);
        self.queued_len -= want;
        let front = self.queued.front_mut().expect("queued_len > 0");
        if front.len() >= want {
            let piece = front.split_to(want);
            if front.is_empty() {
                self.queued.pop_front();
            }
            return Ok(Some(piece));
        }
        let mut out = BytesMut::with_capacity(want);
        while out.len() < want {
            let front = self.queued.front_mut().expect("enough queued");
            let need = want - out.len();
            if front.len() <= need {
                out.extend_from_slice(front);
                self.queued.pop_front();
            } else {
                out.extend_from_slice(&front.split_to(need));
            }
        }
        Ok(Some(out.freeze()))
    }
}

fn timestamp(dt: Option<&aws_smithy_types::DateTime>) -> Timestamp {
    dt.and_then(|d| d.to_millis().ok())
        .map(Timestamp::from_millis)
        .unwrap_or(Timestamp::EPOCH)
}

#[async_trait]
impl BlobStore for S3BlobStore {
    fn capabilities(&self) -> BlobCapabilities {
        BlobCapabilities {
            max_object_size: Some(self.inner.config.part_size * MAX_PARTS),
        }
    }

    async fn put(&self, key: &BlobKey, body: ByteStream, options: PutOptions) -> Result<BlobMeta> {
        let threshold = self.inner.config.multipart_threshold as usize;
        let mut chunker = Chunker::new(body);
        // Read one byte past the threshold: a body of exactly `threshold` bytes is one put.
        let size = if chunker.fill(threshold + 1).await? {
            let body = chunker.take(threshold).await?.unwrap_or_default();
            let size = body.len() as u64;
            self.put_single(key, body, &options).await?;
            size
        } else {
            self.put_multipart(key, chunker, &options).await?
        };
        tracing::debug!(bucket = %self.bucket(), key = %key, size, "put object");
        Ok(BlobMeta {
            key: key.clone(),
            size,
            // S3 does not return the time on put; a head would double the calls per small put.
            last_modified: Timestamp::now(),
        })
    }

    async fn get(&self, key: &BlobKey) -> Result<BlobObject> {
        let out = self
            .inner
            .client
            .get_object()
            .bucket(self.bucket())
            .key(key.as_str())
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .map_err(|e| map_sdk_error("s3 get_object", e, None))?;
        let meta = BlobMeta {
            key: key.clone(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            last_modified: timestamp(out.last_modified()),
        };
        let body = futures::stream::unfold(Some(out.body), |body| async move {
            let mut body = body?;
            match body.next().await {
                Some(Ok(chunk)) => Some((Ok(chunk), Some(body))),
                Some(Err(e)) => Some((
                    Err(crate::error::map_body_error("s3 get_object body", e)),
                    None,
                )),
                None => None,
            }
        })
        .boxed();
        Ok(BlobObject { meta, body })
    }

    async fn head(&self, key: &BlobKey) -> Result<BlobMeta> {
        let out = self
            .inner
            .client
            .head_object()
            .bucket(self.bucket())
            .key(key.as_str())
            .send()
            .await
            .map_err(|e| map_sdk_error("s3 head_object", e, None))?;
        Ok(BlobMeta {
            key: key.clone(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            last_modified: timestamp(out.last_modified()),
        })
    }

    async fn list(&self, request: &ListRequest) -> Result<BlobList> {
        let mut req = self
            .inner
            .client
            .list_objects_v2()
            .bucket(self.bucket())
            .max_keys(request.page_size() as i32)
            .set_continuation_token(request.continuation.clone());
        if !request.prefix.as_str().is_empty() {
            req = req.prefix(request.prefix.as_str());
        }
        let out = req
            .send()
            .await
            .map_err(|e| map_sdk_error("s3 list_objects_v2", e, None))?;
        let mut items = Vec::with_capacity(out.contents().len());
        for object in out.contents() {
            let Some(raw) = object.key() else { continue };
            // Objects written by other tools may not be valid keys; they are not ours to list.
            let Ok(key) = BlobKey::parse(raw) else {
                tracing::warn!(bucket = %self.bucket(), key = raw, "skipping object whose key is not a valid blob key");
                continue;
            };
            items.push(BlobMeta {
                key,
                size: object.size().unwrap_or(0).max(0) as u64,
                last_modified: timestamp(object.last_modified()),
            });
        }
        let next = if out.is_truncated() == Some(true) {
            out.next_continuation_token().map(str::to_owned)
        } else {
            None
        };
        Ok(BlobList { items, next })
    }

    async fn delete(&self, key: &BlobKey) -> Result<()> {
        let r = self
            .inner
            .client
            .delete_object()
            .bucket(self.bucket())
            .key(key.as_str())
            .send()
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = map_sdk_error("s3 delete_object", e, None);
                // S3 deletes are idempotent already; an emulator that says NoSuchKey agrees.
                if e.kind() == ion_core::ErrorKind::NotFound && e.message().contains("NoSuchKey") {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use ion_core::ErrorKind;

    use super::*;

    #[tokio::test]
    async fn chunker_cuts_exact_pieces_and_slices_big_chunks() {
        let data: Vec<u8> = (0..100u8).collect();
        let body = ion_core::stream::from_chunks(vec![
            Bytes::copy_from_slice(&data[..7]),
            Bytes::copy_from_slice(&data[7..60]),
            Bytes::new(),
            Bytes::copy_from_slice(&data[60..]),
        ]);
        let mut c = Chunker::new(body);
        let mut pieces = Vec::new();
        while let Some(p) = c.take(30).await.unwrap() {
            pieces.push(p);
        }
        let lens: Vec<usize> = pieces.iter().map(Bytes::len).collect();
        assert_eq!(lens, [30, 30, 30, 10]);
        assert_eq!(pieces.concat(), data);
    }

    #[tokio::test]
    async fn chunker_passes_the_stream_error_on() {
        let body = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"abc")),
            Err(Error::unavailable("disk gone")),
        ])
        .boxed();
        let mut c = Chunker::new(body);
        let e = c.take(10).await.unwrap_err();
        assert_eq!(e.message(), "disk gone");
    }

    fn from_map(pairs: &[(&str, &str)]) -> Result<S3BlobStoreConfig> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        S3BlobStoreConfig::from_lookup(&move |k| map.get(k).cloned())
    }

    #[test]
    fn config_from_env_and_its_errors() {
        let c = from_map(&[
            ("ION_S3_BUCKET", "ion-backups"),
            ("ION_S3_PART_SIZE", "10485760"),
            ("ION_S3_SSE", "aws:kms"),
            ("ION_S3_SSE_KMS_KEY_ID", "alias/ion"),
            ("ION_S3_STORAGE_CLASS", "STANDARD_IA"),
        ])
        .unwrap();
        assert_eq!(c.bucket, "ion-backups");
        assert_eq!(c.part_size, 10 * MIB);
        assert_eq!(
            c.server_side_encryption,
            Some(ServerSideEncryption::AwsKms {
                key_id: Some("alias/ion".into())
            })
        );
        assert_eq!(c.storage_class.as_deref(), Some("STANDARD_IA"));

        for (pairs, key) in [
            (vec![], "ION_S3_BUCKET"),
            (vec![("ION_S3_BUCKET", "Bad_Bucket")], "ION_S3_BUCKET"),
            (
                vec![("ION_S3_BUCKET", "ok-bucket"), ("ION_S3_PART_SIZE", "1024")],
                "ION_S3_PART_SIZE",
            ),
            (
                vec![("ION_S3_BUCKET", "ok-bucket"), ("ION_S3_SSE", "rot13")],
                "ION_S3_SSE",
            ),
            (
                vec![
                    ("ION_S3_BUCKET", "ok-bucket"),
                    ("ION_S3_STORAGE_CLASS", "CHEAP"),
                ],
                "ION_S3_STORAGE_CLASS",
            ),
            (
                vec![
                    ("ION_S3_BUCKET", "ok-bucket"),
                    ("ION_S3_MAX_CONCURRENT_PARTS", "0"),
                ],
                "ION_S3_MAX_CONCURRENT_PARTS",
            ),
        ] {
            let e = from_map(&pairs).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig);
            assert!(e.message().contains(key), "{e} should name {key}");
        }
    }
}
