//! The storage suites fail on stores that break a clause: each case wraps a fake so that it
//! violates exactly one promise and checks that the matching suite function names it.
#![cfg(feature = "testkit")]

use async_trait::async_trait;
use bytes::BytesMut;
use futures::StreamExt;
use ion_core::fake::{InMemoryArtifactStore, InMemoryBlobStore, InMemoryDocumentStore};
use ion_core::testkit::{artifact, blob, document};
use ion_core::{
    stream, AppId, ArtifactId, ArtifactInfo, ArtifactMeta, ArtifactRef, ArtifactStore, BlobKey,
    BlobList, BlobMeta, BlobObject, BlobStore, ByteStream, CollectionName, DocPage, DocQuery,
    Document, DocumentBody, DocumentId, DocumentStore, Error, ListRequest, PutOptions, Result,
    Revision, TenantId,
};

/// Which promise a broken blob store breaks.
#[derive(Debug, Clone, Copy)]
enum BlobFlaw {
    /// Stores whatever arrived before the body failed.
    KeepsPartialPuts,
    /// Never returns a continuation token.
    DropsContinuation,
    /// Deleting a missing key is `NotFound`.
    StrictDelete,
}

#[derive(Debug)]
struct BrokenBlobStore(InMemoryBlobStore, BlobFlaw);

#[async_trait]
impl BlobStore for BrokenBlobStore {
    fn capabilities(&self) -> ion_core::blob::BlobCapabilities {
        self.0.capabilities()
    }
    async fn put(
        &self,
        key: &BlobKey,
        mut body: ByteStream,
        options: PutOptions,
    ) -> Result<BlobMeta> {
        if let BlobFlaw::KeepsPartialPuts = self.1 {
            let mut got = BytesMut::new();
            while let Some(chunk) = body.next().await {
                match chunk {
                    Ok(c) => got.extend_from_slice(&c),
                    Err(e) => {
                        self.0.put(key, stream::once(got.freeze()), options).await?;
                        return Err(e);
                    }
                }
            }
            return self.0.put(key, stream::once(got.freeze()), options).await;
        }
        self.0.put(key, body, options).await
    }
    async fn get(&self, key: &BlobKey) -> Result<BlobObject> {
        self.0.get(key).await
    }
    async fn head(&self, key: &BlobKey) -> Result<BlobMeta> {
        self.0.head(key).await
    }
    async fn list(&self, request: &ListRequest) -> Result<BlobList> {
        let mut page = self.0.list(request).await?;
        if let BlobFlaw::DropsContinuation = self.1 {
            page.next = None;
        }
        Ok(page)
    }
    async fn delete(&self, key: &BlobKey) -> Result<()> {
        if let BlobFlaw::StrictDelete = self.1 {
            self.0.head(key).await?;
        }
        self.0.delete(key).await
    }
}

fn broken_blob(flaw: BlobFlaw) -> BrokenBlobStore {
    BrokenBlobStore(InMemoryBlobStore::new(), flaw)
}

#[tokio::test]
#[should_panic(expected = "put that fails part-way leaves no object")]
async fn blob_suite_catches_a_put_that_keeps_a_partial_object() {
    let store = broken_blob(BlobFlaw::KeepsPartialPuts);
    blob::put_that_fails_part_way_leaves_no_object(&store).await;
}

#[tokio::test]
#[should_panic(expected = "put that fails part-way keeps the previous object")]
async fn blob_suite_catches_a_put_that_overwrites_with_a_partial_object() {
    let store = broken_blob(BlobFlaw::KeepsPartialPuts);
    blob::put_that_fails_part_way_keeps_the_previous_object(&store).await;
}

#[tokio::test]
#[should_panic(expected = "list pages with a small page size visit every key once")]
async fn blob_suite_catches_a_listing_that_stops_after_one_page() {
    let store = broken_blob(BlobFlaw::DropsContinuation);
    blob::list_pages_with_a_small_page_size_visit_every_key_once(&store).await;
}

#[tokio::test]
#[should_panic(expected = "delete is idempotent")]
async fn blob_suite_catches_a_delete_of_a_missing_key_that_fails() {
    let store = broken_blob(BlobFlaw::StrictDelete);
    blob::delete_is_idempotent(&store).await;
}

/// Which promise a broken document store breaks.
#[derive(Debug, Clone, Copy)]
enum DocFlaw {
    /// Updates ignore the expected revision: the last writer wins.
    LastWriterWins,
    /// A revision mismatch is reported as `NotFound`.
    ConflictAsNotFound,
    /// `find` ignores `after`, so paging repeats the first page.
    IgnoresAfter,
}

#[derive(Debug)]
struct BrokenDocumentStore(InMemoryDocumentStore, DocFlaw);

#[async_trait]
impl DocumentStore for BrokenDocumentStore {
    async fn insert(
        &self,
        c: &CollectionName,
        id: &DocumentId,
        body: &DocumentBody,
    ) -> Result<Revision> {
        self.0.insert(c, id, body).await
    }
    async fn get(&self, c: &CollectionName, id: &DocumentId) -> Result<Document> {
        self.0.get(c, id).await
    }
    async fn update(
        &self,
        c: &CollectionName,
        id: &DocumentId,
        expected: Revision,
        body: &DocumentBody,
    ) -> Result<Revision> {
        match self.1 {
            DocFlaw::LastWriterWins => {
                let current = self.0.get(c, id).await?.revision;
                self.0.update(c, id, current, body).await
            }
            DocFlaw::ConflictAsNotFound => {
                self.0
                    .update(c, id, expected, body)
                    .await
                    .map_err(|e| match e.kind() {
                        ion_core::ErrorKind::Conflict => Error::not_found(e.message().to_owned()),
                        _ => e,
                    })
            }
            DocFlaw::IgnoresAfter => self.0.update(c, id, expected, body).await,
        }
    }
    async fn delete(&self, c: &CollectionName, id: &DocumentId) -> Result<()> {
        self.0.delete(c, id).await
    }
    async fn find(&self, c: &CollectionName, query: &DocQuery) -> Result<DocPage> {
        if let DocFlaw::IgnoresAfter = self.1 {
            let first = DocQuery {
                after: None,
                ..query.clone()
            };
            return self.0.find(c, &first).await;
        }
        self.0.find(c, query).await
    }
}

fn broken_documents(flaw: DocFlaw) -> BrokenDocumentStore {
    BrokenDocumentStore(InMemoryDocumentStore::new(), flaw)
}

#[tokio::test]
#[should_panic(expected = "stale writer loses and the winner's body is stored")]
async fn document_suite_catches_last_writer_wins() {
    let store = broken_documents(DocFlaw::LastWriterWins);
    document::stale_writer_loses_and_the_winners_body_is_stored(&store).await;
}

#[tokio::test]
#[should_panic(expected = "of concurrent updates from one revision exactly one wins")]
async fn document_suite_catches_concurrent_updates_that_all_win() {
    let store = broken_documents(DocFlaw::LastWriterWins);
    document::of_concurrent_updates_from_one_revision_exactly_one_wins(&store).await;
}

#[tokio::test]
#[should_panic(expected = "update with a stale revision is conflict not not found")]
async fn document_suite_catches_a_conflict_reported_as_not_found() {
    let store = broken_documents(DocFlaw::ConflictAsNotFound);
    document::update_with_a_stale_revision_is_conflict_not_not_found(&store).await;
}

#[tokio::test]
#[should_panic(expected = "find pages past one page visiting each match once")]
async fn document_suite_catches_paging_that_repeats_the_first_page() {
    let store = broken_documents(DocFlaw::IgnoresAfter);
    document::find_pages_past_one_page_visiting_each_match_once(&store).await;
}

/// Which promise a broken artifact store breaks.
#[derive(Debug, Clone, Copy)]
enum ArtifactFlaw {
    /// Downloads hand over the stored bytes without checking them against the reference.
    Unverified,
    /// `list` shows every tenant's artifacts.
    LeaksTenants,
}

#[derive(Debug)]
struct BrokenArtifactStore(InMemoryArtifactStore, ArtifactFlaw);

#[async_trait]
impl ArtifactStore for BrokenArtifactStore {
    async fn upload(&self, meta: &ArtifactMeta, body: ByteStream) -> Result<ArtifactRef> {
        self.0.upload(meta, body).await
    }
    async fn download(&self, reference: &ArtifactRef) -> Result<ByteStream> {
        let verified = self.0.download(reference).await?;
        if let ArtifactFlaw::Unverified = self.1 {
            // Drop the verifying stream's final error: the consumer sees only the bytes.
            return Ok(verified
                .take_while(|item| futures::future::ready(item.is_ok()))
                .boxed());
        }
        Ok(verified)
    }
    async fn list(&self, tenant: &TenantId, app: Option<&AppId>) -> Result<Vec<ArtifactInfo>> {
        let mut infos = self.0.list(tenant, app).await?;
        if let ArtifactFlaw::LeaksTenants = self.1 {
            for other in ["acme", "globex"] {
                infos.extend(self.0.list(&TenantId::parse(other)?, app).await?);
            }
        }
        Ok(infos)
    }
    async fn delete(&self, id: &ArtifactId) -> Result<()> {
        self.0.delete(id).await
    }
}

#[tokio::test]
#[should_panic(expected = "download with a tampered sha256 ends in corrupt")]
async fn artifact_suite_catches_an_unverified_download() {
    let store = BrokenArtifactStore(InMemoryArtifactStore::new(), ArtifactFlaw::Unverified);
    artifact::download_with_a_tampered_sha256_ends_in_corrupt(&store).await;
}

#[tokio::test]
#[should_panic(expected = "list never shows another tenant's artifacts")]
async fn artifact_suite_catches_a_listing_that_leaks_another_tenant() {
    let inner = InMemoryArtifactStore::new();
    let meta = ArtifactMeta {
        tenant: TenantId::parse("acme").unwrap(),
        app: AppId::parse("web").unwrap(),
        version: ion_core::Version(1),
    };
    ion_core::ArtifactStoreExt::upload_bytes(&inner, &meta, "acme's".into())
        .await
        .unwrap();
    let store = BrokenArtifactStore(inner, ArtifactFlaw::LeaksTenants);
    artifact::list_never_shows_another_tenants_artifacts(&store).await;
}
