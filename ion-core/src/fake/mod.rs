//! The in-memory fakes: one per backend trait, deterministic, sharing state on `Clone`, with a
//! seeded [`FaultPlan`]. They are public and contain no `cfg(test)`: applications test their own
//! code with them, and each passes the same conformance suite as the real backend.

mod compute;
mod fault;
mod lb;
mod log_index;

pub use fault::{FaultPlan, SeededRng};
pub use compute::InMemoryCompute;
pub use lb::InMemoryLoadBalancer;
pub use log_index::{InMemoryLogIndex, MappingRule};
