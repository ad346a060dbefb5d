//! The in-memory fakes: one per backend trait, deterministic, sharing state on `Clone`, with a
//! seeded [`FaultPlan`]. They are public and contain no `cfg(test)`: applications test their own
//! code with them, and each passes the same conformance suite as the real backend.

mod artifact;
mod blob;
mod compute;
mod document;
mod fault;
mod lb;
mod log_index;

pub use artifact::InMemoryArtifactStore;
pub use blob::InMemoryBlobStore;
pub use compute::InMemoryCompute;
pub use document::InMemoryDocumentStore;
pub use fault::{FaultPlan, SeededRng};
pub use lb::InMemoryLoadBalancer;
pub use log_index::{InMemoryLogIndex, MappingRule};
