//! `InMemoryCompute`: the in-memory fake of the `Compute` trait, with EC2-like semantics.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use crate::compute::{Compute, ComputeCapabilities, InstanceFilter, LaunchRequest, ZoneInfo};
use crate::error::{Error, Result};
use crate::fake::FaultPlan;
use crate::model::{Instance, InstanceState};
use crate::name::{IdempotencyKey, InstanceId, Zone};
use crate::time::Timestamp;

/// The first port handed out as an instance address; each launch takes the next one.
const FIRST_PORT: u16 = 20_000;

/// An in-memory [`Compute`] backend that behaves like EC2 as far as the contract can observe.
///
/// - **Idempotency** follows EC2's `ClientToken`: a launch with a key seen before returns the
///   instance first launched with it, in whatever state it is now (even terminated), and creates
///   nothing. Reusing a key with different parameters (zone, tenant, app, version, artifact,
///   port) is `InvalidInput`, as EC2 answers `IdempotentParameterMismatch`. A known key is
///   answered before the zone is checked, so a retry succeeds even if its zone has gone down since.
/// - **Ids** are `i-` followed by 17 hex digits counting up from 1 (`i-00000000000000001`), so
///   ordering by id is ordering by launch, and every run numbers alike.
/// - **State**: instances are `Running` at once; after [`set_auto_run(false)`](Self::set_auto_run)
///   they start `Pending` until [`mark_running`](Self::mark_running).
/// - **Addresses** are `127.0.0.1:<port>` with the port counting up from 20000, one per launch,
///   so routing code sees distinct addresses (the requested app port is not used for them).
/// - **Time**: `launched_at` comes from a clock the fake holds, starting at
///   [`Timestamp::EPOCH`]; move it with [`set_now`](Self::set_now) and [`advance`](Self::advance).
/// - **Terminated and crashed instances** stay describable (with `include_gone`) for the fake's
///   lifetime; EC2 forgets them after about an hour.
///
/// Domain faults: [`crash`](Self::crash) one instance, [`zone_down`](Self::zone_down) (the zone
/// refuses launches and every active instance in it becomes `Crashed`, as a real AZ loss takes its
/// instances down; they stay crashed after [`zone_up`](Self::zone_up), the platform replaces
/// them), and [`set_zone_capacity`](Self::set_zone_capacity) (launches beyond the capacity fail
/// with `Unavailable` scoped to the zone, like EC2's `InsufficientInstanceCapacity`). The generic
/// [`FaultPlan`] is checked at the start of every operation under the names `zones`, `launch`,
/// `terminate` and `describe`.
///
/// Clones share state.
#[derive(Clone, Debug)]
pub struct InMemoryCompute {
    state: Arc<Mutex<ComputeState>>,
    faults: FaultPlan,
}

#[derive(Debug)]
struct ZoneState {
    zone: Zone,
    up: bool,
    capacity: Option<usize>,
}

#[derive(Debug)]
struct ComputeState {
    zones: Vec<ZoneState>,
    instances: BTreeMap<InstanceId, Instance>,
    /// What each key launched, and with which request (to detect parameter mismatches).
    by_key: BTreeMap<IdempotencyKey, (InstanceId, LaunchRequest)>,
    launches: u64,
    next_port: u16,
    now: Timestamp,
    auto_run: bool,
}

impl ComputeState {
    fn zone(&self, zone: &Zone) -> Option<&ZoneState> {
        self.zones.iter().find(|z| z.zone == *zone)
    }

    fn active_in(&self, zone: &Zone) -> usize {
        self.instances
            .values()
            .filter(|i| i.zone == *zone && i.state.is_active())
            .count()
    }

    fn has_room(&self, z: &ZoneState) -> bool {
        z.capacity.is_none_or(|cap| self.active_in(&z.zone) < cap)
    }
}

impl Default for InMemoryCompute {
    /// Three zones: `zone-a`, `zone-b`, `zone-c`.
    fn default() -> Self {
        let zones = ["zone-a", "zone-b", "zone-c"]
            .into_iter()
            .map(|z| Zone::parse(z).expect("literal zone names are valid"))
            .collect();
        Self::new(zones)
    }
}

impl InMemoryCompute {
    /// A fake with these zones, listed in this order (a repeated zone is listed once).
    pub fn new(zones: Vec<Zone>) -> Self {
        let mut unique: Vec<ZoneState> = Vec::with_capacity(zones.len());
        for zone in zones {
            if !unique.iter().any(|z| z.zone == zone) {
                unique.push(ZoneState {
                    zone,
                    up: true,
                    capacity: None,
                });
            }
        }
        Self {
            state: Arc::new(Mutex::new(ComputeState {
                zones: unique,
                instances: BTreeMap::new(),
                by_key: BTreeMap::new(),
                launches: 0,
                next_port: FIRST_PORT,
                now: Timestamp::EPOCH,
                auto_run: true,
            })),
            faults: FaultPlan::default(),
        }
    }

    /// The same fake with `faults` checked at the start of every operation.
    pub fn with_faults(mut self, faults: FaultPlan) -> Self {
        self.faults = faults;
        self
    }

    /// The fault plan (shared: faults set through it apply to every clone).
    pub fn faults(&self) -> &FaultPlan {
        &self.faults
    }

    fn state(&self) -> MutexGuard<'_, ComputeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether new instances are `Running` at once (the default) or `Pending` until
    /// [`mark_running`](Self::mark_running).
    pub fn set_auto_run(&self, auto_run: bool) {
        self.state().auto_run = auto_run;
    }

    /// Moves a `Pending` instance to `Running`. `NotFound` for an unknown id; an instance in any
    /// other state is left as it is (a terminated instance does not come back).
    pub fn mark_running(&self, id: &InstanceId) -> Result<()> {
        let mut s = self.state();
        let instance = s
            .instances
            .get_mut(id)
            .ok_or_else(|| Error::not_found(format!("no instance {id}")))?;
        if instance.state == InstanceState::Pending {
            instance.state = InstanceState::Running;
        }
        Ok(())
    }

    /// Crashes an instance (process exit, host loss): an active instance becomes `Crashed`;
    /// a terminated or already crashed one is left as it is. `NotFound` for an unknown id.
    pub fn crash(&self, id: &InstanceId) -> Result<()> {
        let mut s = self.state();
        let instance = s
            .instances
            .get_mut(id)
            .ok_or_else(|| Error::not_found(format!("no instance {id}")))?;
        if instance.state.is_active() {
            instance.state = InstanceState::Crashed;
        }
        Ok(())
    }

    /// Takes a zone down: it reports `available: false`, new launches there fail with
    /// `Unavailable` scoped to the zone, and its active instances become `Crashed`.
    /// `NotFound` for a zone the fake does not have.
    pub fn zone_down(&self, zone: &Zone) -> Result<()> {
        let mut s = self.state();
        let z = s
            .zones
            .iter_mut()
            .find(|z| z.zone == *zone)
            .ok_or_else(|| Error::not_found(format!("no zone {zone}")))?;
        z.up = false;
        for instance in s.instances.values_mut() {
            if instance.zone == *zone && instance.state.is_active() {
                instance.state = InstanceState::Crashed;
            }
        }
        Ok(())
    }

    /// Brings a zone back: it takes launches again. Instances that crashed with it stay crashed.
    /// `NotFound` for a zone the fake does not have.
    pub fn zone_up(&self, zone: &Zone) -> Result<()> {
        let mut s = self.state();
        let z = s
            .zones
            .iter_mut()
            .find(|z| z.zone == *zone)
            .ok_or_else(|| Error::not_found(format!("no zone {zone}")))?;
        z.up = true;
        Ok(())
    }

    /// Limits how many active (pending or running) instances a zone holds; `None` removes the
    /// limit. A full zone reports `available: false` and refuses launches with `Unavailable`
    /// scoped to the zone. `NotFound` for a zone the fake does not have.
    pub fn set_zone_capacity(&self, zone: &Zone, capacity: Option<usize>) -> Result<()> {
        let mut s = self.state();
        let z = s
            .zones
            .iter_mut()
            .find(|z| z.zone == *zone)
            .ok_or_else(|| Error::not_found(format!("no zone {zone}")))?;
        z.capacity = capacity;
        Ok(())
    }

    /// How many instances were really created (an idempotent replay creates none).
    pub fn launch_count(&self) -> u64 {
        self.state().launches
    }

    /// The instance with this id, whatever its state (no fault check: for test assertions).
    pub fn instance(&self, id: &InstanceId) -> Option<Instance> {
        self.state().instances.get(id).cloned()
    }

    /// The fake's clock: what the next launch records as `launched_at`.
    pub fn now(&self) -> Timestamp {
        self.state().now
    }

    /// Sets the fake's clock.
    pub fn set_now(&self, now: Timestamp) {
        self.state().now = now;
    }

    /// Moves the fake's clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut s = self.state();
        s.now = s.now.plus(by);
    }
}

/// True when a replayed request asks for what the key first launched.
fn same_parameters(a: &LaunchRequest, b: &LaunchRequest) -> bool {
    a.zone == b.zone
        && a.tenant == b.tenant
        && a.app == b.app
        && a.version == b.version
        && a.artifact == b.artifact
        && a.port == b.port
}

#[async_trait]
impl Compute for InMemoryCompute {
    fn capabilities(&self) -> ComputeCapabilities {
        ComputeCapabilities {
            runs_workloads: false,
            real_zones: false,
        }
    }

    async fn zones(&self) -> Result<Vec<ZoneInfo>> {
        self.faults.check("zones").await?;
        let s = self.state();
        Ok(s.zones
            .iter()
            .map(|z| ZoneInfo {
                zone: z.zone.clone(),
                available: z.up && s.has_room(z),
            })
            .collect())
    }

    async fn launch(&self, request: LaunchRequest) -> Result<Instance> {
        self.faults.check("launch").await?;
        let mut s = self.state();
        if let Some((id, first)) = s.by_key.get(&request.idempotency_key) {
            if !same_parameters(first, &request) {
                return Err(Error::invalid_input(format!(
                    "idempotency key {} was used for a different launch",
                    request.idempotency_key
                )));
            }
            return Ok(s.instances[id].clone());
        }
        let zone = s
            .zone(&request.zone)
            .ok_or_else(|| Error::invalid_input(format!("unknown zone {}", request.zone)))?;
        if !zone.up {
            return Err(Error::unavailable(format!("zone {} is down", request.zone))
                .with_zone(request.zone.clone()));
        }
        if !s.has_room(zone) {
            return Err(Error::unavailable(format!(
                "insufficient capacity in zone {}",
                request.zone
            ))
            .with_zone(request.zone.clone()));
        }
        s.launches += 1;
        let id = InstanceId::parse(&format!("i-{:017x}", s.launches))
            .expect("generated instance ids are valid");
        let port = s.next_port;
        s.next_port = s.next_port.checked_add(1).unwrap_or(FIRST_PORT);
        let instance = Instance {
            id: id.clone(),
            tenant: request.tenant.clone(),
            app: request.app.clone(),
            version: request.version,
            zone: request.zone.clone(),
            state: if s.auto_run {
                InstanceState::Running
            } else {
                InstanceState::Pending
            },
            address: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, port))),
            launched_at: s.now,
            idempotency_key: request.idempotency_key.clone(),
        };
        s.instances.insert(id.clone(), instance.clone());
        s.by_key
            .insert(request.idempotency_key.clone(), (id, request));
        Ok(instance)
    }

    async fn terminate(&self, id: &InstanceId) -> Result<()> {
        self.faults.check("terminate").await?;
        if let Some(instance) = self.state().instances.get_mut(id) {
            instance.state = InstanceState::Terminated;
        }
        Ok(())
    }

    async fn describe(&self, filter: &InstanceFilter) -> Result<Vec<Instance>> {
        self.faults.check("describe").await?;
        Ok(self
            .state()
            .instances
            .values()
            .filter(|i| filter.matches(i))
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::model::{ArtifactRef, Sha256Digest, Version};
    use crate::name::{AppId, ArtifactId, TenantId};

    fn request(key: &str, zone: &str) -> LaunchRequest {
        LaunchRequest {
            idempotency_key: IdempotencyKey::parse(key).unwrap(),
            zone: Zone::parse(zone).unwrap(),
            tenant: TenantId::parse("acme").unwrap(),
            app: AppId::parse("shop").unwrap(),
            version: Version(1),
            artifact: ArtifactRef {
                id: ArtifactId::parse("art-1").unwrap(),
                sha256: Sha256Digest::of(b"bin"),
                length: 3,
            },
            port: 8080,
        }
    }

    #[tokio::test]
    async fn a_terminated_key_replays_the_original_instance() {
        let compute = InMemoryCompute::default();
        let first = compute.launch(request("k1", "zone-a")).await.unwrap();
        compute.terminate(&first.id).await.unwrap();
        let again = compute.launch(request("k1", "zone-a")).await.unwrap();
        assert_eq!(again.id, first.id);
        assert_eq!(again.state, InstanceState::Terminated);
        assert_eq!(compute.launch_count(), 1);
    }

    #[tokio::test]
    async fn a_reused_key_with_other_parameters_is_invalid_input() {
        let compute = InMemoryCompute::default();
        compute.launch(request("k1", "zone-a")).await.unwrap();
        let err = compute.launch(request("k1", "zone-b")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert_eq!(compute.launch_count(), 1);
    }

    #[tokio::test]
    async fn ids_addresses_and_clock_are_deterministic() {
        let compute = InMemoryCompute::default();
        compute.set_now(Timestamp::from_millis(1_000));
        let a = compute.launch(request("k1", "zone-a")).await.unwrap();
        compute.advance(Duration::from_secs(5));
        let b = compute.launch(request("k2", "zone-b")).await.unwrap();
        assert_eq!(a.id.as_str(), "i-00000000000000001");
        assert_eq!(b.id.as_str(), "i-00000000000000002");
        assert_eq!(a.address, Some("127.0.0.1:20000".parse().unwrap()));
        assert_eq!(b.address, Some("127.0.0.1:20001".parse().unwrap()));
        assert_eq!(a.launched_at, Timestamp::from_millis(1_000));
        assert_eq!(b.launched_at, Timestamp::from_millis(6_000));
    }

    #[tokio::test]
    async fn pending_until_marked_running_when_auto_run_is_off() {
        let compute = InMemoryCompute::default();
        compute.set_auto_run(false);
        let a = compute.launch(request("k1", "zone-a")).await.unwrap();
        assert_eq!(a.state, InstanceState::Pending);
        compute.mark_running(&a.id).unwrap();
        assert_eq!(
            compute.instance(&a.id).unwrap().state,
            InstanceState::Running
        );
    }

    #[tokio::test]
    async fn a_downed_zone_crashes_its_instances_and_refuses_launches() {
        let compute = InMemoryCompute::default();
        let a = compute.launch(request("k1", "zone-a")).await.unwrap();
        let b = compute.launch(request("k2", "zone-b")).await.unwrap();
        let zone_a = Zone::parse("zone-a").unwrap();
        compute.zone_down(&zone_a).unwrap();

        let zones = compute.zones().await.unwrap();
        assert!(!zones[0].available && zones[1].available && zones[2].available);
        let err = compute.launch(request("k3", "zone-a")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(err.is_transient());
        assert_eq!(err.zone(), Some(&zone_a));
        // A retry of a launch that already succeeded is still answered.
        assert_eq!(
            compute.launch(request("k1", "zone-a")).await.unwrap().id,
            a.id
        );

        let live = compute.describe(&InstanceFilter::default()).await.unwrap();
        assert_eq!(live.iter().map(|i| &i.id).collect::<Vec<_>>(), [&b.id]);
        assert_eq!(
            compute.instance(&a.id).unwrap().state,
            InstanceState::Crashed
        );

        compute.zone_up(&zone_a).unwrap();
        assert!(compute.launch(request("k3", "zone-a")).await.is_ok());
        assert_eq!(
            compute.instance(&a.id).unwrap().state,
            InstanceState::Crashed
        );
    }

    #[tokio::test]
    async fn a_full_zone_refuses_launches_until_room_is_made() {
        let compute = InMemoryCompute::default();
        let zone_a = Zone::parse("zone-a").unwrap();
        compute.set_zone_capacity(&zone_a, Some(1)).unwrap();
        let a = compute.launch(request("k1", "zone-a")).await.unwrap();
        assert!(!compute.zones().await.unwrap()[0].available);
        let err = compute.launch(request("k2", "zone-a")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert_eq!(err.zone(), Some(&zone_a));
        compute.terminate(&a.id).await.unwrap();
        assert!(compute.launch(request("k2", "zone-a")).await.is_ok());
    }

    #[tokio::test]
    async fn crash_marks_one_instance_and_unknown_ids_are_not_found() {
        let compute = InMemoryCompute::default();
        let a = compute.launch(request("k1", "zone-a")).await.unwrap();
        compute.crash(&a.id).unwrap();
        assert_eq!(
            compute.instance(&a.id).unwrap().state,
            InstanceState::Crashed
        );
        let unknown = InstanceId::parse("i-0fff").unwrap();
        assert_eq!(
            compute.crash(&unknown).unwrap_err().kind(),
            ErrorKind::NotFound
        );
        assert_eq!(
            compute
                .zone_down(&Zone::parse("nowhere").unwrap())
                .unwrap_err()
                .kind(),
            ErrorKind::NotFound
        );
    }

    #[tokio::test]
    async fn fault_plan_fails_the_named_operation() {
        let compute = InMemoryCompute::default().with_faults(FaultPlan::seeded(3));
        compute
            .faults()
            .fail_next(1, ErrorKind::RateLimited)
            .only_ops(&["launch"]);
        assert!(compute.zones().await.is_ok());
        let err = compute.launch(request("k1", "zone-a")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RateLimited);
        assert_eq!(compute.launch_count(), 0);
        assert!(compute.launch(request("k1", "zone-a")).await.is_ok());
    }
}
