//! ion-store: the MongoDB persistence layer: [`MongoDocumentStore`] (documents with optimistic
//! concurrency), [`GridFsArtifactStore`] (application binaries with end-to-end SHA-256) and
//! [`MongoStatsStore`] (per-app stats samples for the autoscaler).
//!
//! All share one [`MongoConnection`] built from a [`MongoConfig`]. Every driver error is mapped
//! by one function (`error::map_error`, unit-tested); transient ones (network, server selection, stepdown, not writable primary,
//! retryable labels) are retried per the [`RetryPolicy`].
//!
//! # Retried writes never duplicate and never lie
//!
//! A write whose acknowledgment is lost (connection reset, primary stepdown, timeout) may or may
//! not have been applied. Each insert and update therefore stores a fresh write token (`_op`, an
//! ObjectId made once per call, reused by every attempt of that call):
//!
//! - insert: a retry that hits duplicate key reads the document back; if it carries this call's
//!   token the earlier attempt landed and the insert succeeds with its revision, otherwise the id
//!   belonged to someone else and the result is `AlreadyExists`.
//! - update (filtered on `{_id, _rev: expected}`): a retry that matches nothing reads the
//!   document; `_rev = expected + 1` with this call's token means the earlier attempt landed
//!   (success); anything else is `Conflict` (or `NotFound` when the document is gone).
//! - delete is idempotent and simply retried.
//!
//! When the attempts run out the error stays transient (`Unavailable`): the caller learns the
//! outcome is unknown, never a false success. With a real replica set the driver also retries
//! once itself with server-side deduplication (retryable writes); the token covers the retries
//! above it.

mod artifact;
mod bson_body;
mod config;
mod connection;
mod document;
mod error;
mod retry;
mod snapshot;
mod stats;

pub use artifact::{GridFsArtifactStore, GridFsOptions, SweepReport};
pub use config::{
    MongoConfig, MongoConfigBuilder, ReadConcernLevel, ReadPreferenceMode, WriteAcknowledgment,
};
pub use connection::MongoConnection;
pub use document::{DocumentIndex, MongoDocumentStore};
pub use retry::RetryPolicy;
pub use snapshot::ImportReport;
pub use stats::{MongoStatsStore, StatsOptions, StatsSample, StatsWindow};
