//! The conformance testkit: one suite per backend trait, as macros that expand to one named
//! `#[tokio::test]` per contract clause, plus the helpers real-peer tests share.

pub mod artifact;
pub mod blob;
pub mod compute;
pub mod content;
pub mod document;
pub mod lb;
pub mod log_index;

mod cases;
mod peer;
mod unique;

pub use peer::{peer_unreachable, peer_var, peers_required};
pub use unique::unique_name;
