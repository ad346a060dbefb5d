//! The `LoadBalancer` trait: serve a whole route table, atomically.

use std::fmt::Debug;

use async_trait::async_trait;

use crate::error::Result;
use crate::model::{RouteTable, Sha256Digest};

/// The route table a load balancer is serving.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveGeneration {
    /// The table's generation.
    pub generation: u64,
    /// The table's content checksum.
    pub checksum: Sha256Digest,
}

/// Routes traffic for hostnames to app instances (nginx in production).
///
/// # Contract
///
/// - `apply` makes the whole table live, or none of it: on error the previously live table is
///   still the one served and `live` still reports it.
/// - Applying the table that is already live (same generation and checksum) succeeds without
///   disruption. A generation lower than the live one is `Conflict` (a stale writer), as is the
///   live generation with different content.
/// - `live` reports the generation and checksum being served, `None` before the first apply.
#[async_trait]
pub trait LoadBalancer: Send + Sync + Debug + 'static {
    /// Serves `table` entirely, or fails and keeps serving the previous one.
    async fn apply(&self, table: &RouteTable) -> Result<LiveGeneration>;

    /// What is being served.
    async fn live(&self) -> Result<Option<LiveGeneration>>;
}
