//! ion-core: the domain model, the backend traits, the in-memory fakes and the control plane.
//!
//! Every backend of the platform sits behind one of six traits ([`Compute`], [`BlobStore`],
//! [`DocumentStore`], [`ArtifactStore`], [`LogIndex`], [`LoadBalancer`]), held as `Arc<dyn …>`.
//! Each trait's rustdoc has a `# Contract` section; the conformance suites in [`testkit`] (feature
//! `testkit`) are its executable form, run against the in-memory fakes in [`fake`] and against
//! every real backend.

pub mod artifact;
pub mod blob;
pub mod compute;
pub mod control;
pub mod document;
pub mod error;
pub mod fake;
pub mod lb;
pub mod local;
pub mod log_index;
pub mod model;
pub mod name;
pub mod snapshot;
pub mod stream;
pub mod time;

#[cfg(feature = "sim")]
pub mod sim;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use artifact::{ArtifactInfo, ArtifactMeta, ArtifactStore, ArtifactStoreExt};
pub use blob::{BlobList, BlobMeta, BlobObject, BlobStore, BlobStoreExt, ListRequest, PutOptions};
pub use compute::{Compute, ComputeCapabilities, InstanceFilter, LaunchRequest, ZoneInfo};
pub use document::{
    DocPage, DocQuery, Document, DocumentBody, DocumentStore, DocumentStoreExt, FieldFilter,
    Revision, Scalar,
};
pub use error::{Error, ErrorKind, Result};
pub use lb::{LiveGeneration, LoadBalancer};
pub use log_index::{
    BulkOutcome, IndexInfo, IndexLayout, IndexSettings, LogIndex, LogPage, LogQuery, SearchCursor,
};
pub use model::{
    AppSpec, ArtifactRef, Backend, Instance, InstanceState, LogLevel, LogRecord, Route, RouteTable,
    Sha256Digest, TlsCertificate, Version,
};
pub use name::{
    AppId, ArtifactId, BlobKey, BlobPrefix, CollectionName, DocumentId, FieldName, FieldPath,
    Hostname, HttpPath, IdempotencyKey, IndexName, InstanceId, RecordId, TenantId, ValidationError,
    Zone,
};
pub use stream::ByteStream;
pub use time::Timestamp;

/// The README's embedding example, compiled as a doc test so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
