//! The `Compute` trait: instances of apps in availability zones.

use std::fmt::Debug;

use async_trait::async_trait;

use crate::error::Result;
use crate::model::{ArtifactRef, Instance, Version};
use crate::name::{AppId, IdempotencyKey, InstanceId, TenantId, Zone};

/// What to launch and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchRequest {
    /// Launching twice with one key yields one instance.
    pub idempotency_key: IdempotencyKey,
    /// The zone to place it in.
    pub zone: Zone,
    /// Owner (recorded as a tag).
    pub tenant: TenantId,
    /// App (recorded as a tag).
    pub app: AppId,
    /// Version (recorded as a tag).
    pub version: Version,
    /// The binary the instance runs.
    pub artifact: ArtifactRef,
    /// Port the app listens on.
    pub port: u16,
}

/// Which instances to describe. Empty fields match everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstanceFilter {
    /// Only this tenant's.
    pub tenant: Option<TenantId>,
    /// Only this app's (combine with `tenant`).
    pub app: Option<AppId>,
    /// Also return terminated and crashed instances the backend still knows about.
    pub include_gone: bool,
}

impl InstanceFilter {
    /// True when `instance` passes the filter.
    pub fn matches(&self, instance: &Instance) -> bool {
        self.tenant.as_ref().is_none_or(|t| *t == instance.tenant)
            && self.app.as_ref().is_none_or(|a| *a == instance.app)
            && (self.include_gone
                || !matches!(
                    instance.state,
                    crate::model::InstanceState::Terminated | crate::model::InstanceState::Crashed
                ))
    }
}

/// A zone and whether it takes launches now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneInfo {
    /// The zone.
    pub zone: Zone,
    /// False while the zone is down or out of capacity.
    pub available: bool,
}

/// What a compute backend can do; backends legitimately differ here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ComputeCapabilities {
    /// Instances really run the app (false for fakes and API emulators).
    pub runs_workloads: bool,
    /// Zones are real failure domains (false when simulated by labels).
    pub real_zones: bool,
}

/// Runs app instances in availability zones.
///
/// # Contract
///
/// - `zones` lists every zone the backend can place in, each once, in a stable order.
/// - `launch` places one instance in the requested zone, tagged with tenant, app and version. A
///   second launch with the same idempotency key returns the same instance (same id) and creates
///   nothing; this holds across retries after a lost response. A launch into an unknown zone is
///   `InvalidInput`; into an unavailable zone `Unavailable`, scoped to that zone
///   ([`crate::Error::zone`]).
/// - `terminate` stops an instance; terminating an unknown or already terminated instance succeeds.
/// - `describe` returns the instances passing the filter, however many (backends paginate
///   internally), ordered by id. A terminated instance is not returned unless `include_gone`.
/// - Transient failures (throttling, unavailability) have [`crate::Error::is_transient`] set.
#[async_trait]
pub trait Compute: Send + Sync + Debug + 'static {
    /// What this backend can do.
    fn capabilities(&self) -> ComputeCapabilities;

    /// The zones and their availability.
    async fn zones(&self) -> Result<Vec<ZoneInfo>>;

    /// Launches (or returns the instance already launched with this idempotency key).
    async fn launch(&self, request: LaunchRequest) -> Result<Instance>;

    /// Terminates an instance; idempotent.
    async fn terminate(&self, id: &InstanceId) -> Result<()>;

    /// Lists instances passing `filter`, ordered by id.
    async fn describe(&self, filter: &InstanceFilter) -> Result<Vec<Instance>>;
}
