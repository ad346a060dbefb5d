//! The conformance testkit: one suite per backend trait, as macros that expand to one named
//! `#[tokio::test]` per contract clause, plus the helpers real-peer tests share.

mod peer;
mod unique;

pub use peer::{peer_unreachable, peer_var, peers_required};
pub use unique::unique_name;
