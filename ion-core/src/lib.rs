//! ion-core: the domain model, the backend traits, the in-memory fakes and the control plane.

#[cfg(feature = "testkit")]
pub mod testkit;
