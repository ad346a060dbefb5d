//! The in-memory fakes: one per backend trait, deterministic, sharing state on `Clone`, with a
//! seeded [`FaultPlan`]. They are public and contain no `cfg(test)`: applications test their own
//! code with them, and each passes the same conformance suite as the real backend.

mod artifact;
mod blob;
mod document;
mod fault;

pub use artifact::InMemoryArtifactStore;
pub use blob::InMemoryBlobStore;
pub use document::InMemoryDocumentStore;
pub use fault::{FaultPlan, SeededRng};
