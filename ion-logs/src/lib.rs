//! ion-logs: the multi-tenant log aggregation tier.
//!
//! ingest (HTTP, NDJSON, bearer token → tenant) → [`WriteAheadLog`] (segmented, checksummed,
//! group-commit fsync; the HTTP ack follows the fsync) → shipper (bulk to a `LogIndex` with
//! deterministic ids, per-item retry, dead letters, fair across tenants) → tenant-scoped search.

pub mod codec;
pub mod ndjson;
pub mod rate;
pub mod wal;

pub use wal::{Checkpoint, RecoveryReport, WalConfig, WalPosition, WriteAheadLog};
pub mod es;

pub use es::{ElasticsearchConfig, ElasticsearchLogIndex};
pub mod ledger;
pub mod shipper;

pub use ledger::{Ledger, TenantCounts};
pub use shipper::{spawn_shipper, ShipperConfig, ShipperDeps, ShipperHandle};
pub mod api;
pub mod node;
pub mod tokens;

pub use node::{Aggregator, AggregatorConfig, NodeBackends, SearchTarget, TenantBootstrap};
pub use tokens::TokenStore;
pub mod dir_blob;
