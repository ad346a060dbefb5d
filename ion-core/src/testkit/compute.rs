//! The `Compute` conformance suite: one public async function per clause of the contract.
//!
//! Every case works against a shared real server (moto, an AWS account): it launches under a
//! tenant and app of its own ([`unique_name`]), filters every `describe` by them, never assumes
//! an empty server, and terminates what it launched.

use std::collections::BTreeSet;

use crate::compute::{Compute, InstanceFilter, LaunchRequest};
use crate::error::ErrorKind;
use crate::model::{ArtifactRef, Instance, InstanceState, Sha256Digest, Version};
use crate::name::{AppId, ArtifactId, IdempotencyKey, InstanceId, TenantId, Zone};
use crate::testkit::unique_name;

/// Expands to `mod $name` with one `#[tokio::test]` per clause of the [`Compute`](crate::Compute)
/// contract, each running the function of the same name in [`testkit::compute`](self) against a
/// backend from `$factory` (an async block yielding `Option<impl Compute>`, evaluated once per
/// case; `None` skips the case).
///
/// ```text
/// ion_core::compute_conformance!(in_memory, async { Some(ion_core::fake::InMemoryCompute::default()) });
/// ```
#[macro_export]
macro_rules! compute_conformance {
    ($name:ident, $factory:expr) => {
        $crate::compute_conformance!(@cases $name, $factory, [
            zones_are_listed_once_each_in_a_stable_order,
            launch_places_the_instance_in_the_requested_zone,
            launch_tags_the_instance_with_tenant_app_and_version,
            launch_twice_with_one_key_yields_one_instance,
            launches_with_different_keys_yield_different_instances,
            describe_by_tenant_and_app_returns_exactly_the_launched_instances,
            describe_orders_instances_by_id,
            terminating_twice_succeeds,
            terminating_an_unknown_instance_succeeds,
            terminated_instances_are_described_only_with_include_gone,
            launch_into_an_unknown_zone_is_invalid_input,
        ]);
    };
    (@cases $name:ident, $factory:expr, [$($case:ident),* $(,)?]) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[::tokio::test]
                async fn $case() {
                    let Some(backend) = ($factory).await else {
                        return;
                    };
                    $crate::testkit::compute::$case(&backend).await;
                }
            )*
        }
    };
}

/// A tenant and app no other case uses.
struct Owner {
    tenant: TenantId,
    app: AppId,
}

impl Owner {
    fn new() -> Self {
        Self {
            tenant: TenantId::parse(&unique_name("t")).expect("unique names are tenant ids"),
            app: AppId::parse(&unique_name("a")).expect("unique names are app ids"),
        }
    }

    fn with_app(&self, app: &AppId) -> Self {
        Self {
            tenant: self.tenant.clone(),
            app: app.clone(),
        }
    }

    fn request(&self, zone: &Zone) -> LaunchRequest {
        LaunchRequest {
            idempotency_key: IdempotencyKey::parse(&unique_name("k"))
                .expect("unique names are idempotency keys"),
            zone: zone.clone(),
            tenant: self.tenant.clone(),
            app: self.app.clone(),
            version: Version(3),
            artifact: ArtifactRef {
                id: ArtifactId::parse("conformance-artifact").expect("literal artifact id"),
                sha256: Sha256Digest::of(b"conformance"),
                length: 11,
            },
            port: 8080,
        }
    }

    fn filter(&self) -> InstanceFilter {
        InstanceFilter {
            tenant: Some(self.tenant.clone()),
            app: Some(self.app.clone()),
            include_gone: false,
        }
    }
}

/// The available zones, at least one.
async fn available_zones(compute: &dyn Compute) -> Vec<Zone> {
    let zones: Vec<Zone> = compute
        .zones()
        .await
        .expect("zones")
        .into_iter()
        .filter(|z| z.available)
        .map(|z| z.zone)
        .collect();
    assert!(
        !zones.is_empty(),
        "the backend must offer at least one available zone"
    );
    zones
}

async fn launch(compute: &dyn Compute, request: LaunchRequest) -> Instance {
    let zone = request.zone.clone();
    compute
        .launch(request)
        .await
        .unwrap_or_else(|e| panic!("launch into {zone}: {e}"))
}

async fn terminate_all(compute: &dyn Compute, instances: &[Instance]) {
    for instance in instances {
        compute
            .terminate(&instance.id)
            .await
            .unwrap_or_else(|e| panic!("terminate {}: {e}", instance.id));
    }
}

fn ids(instances: &[Instance]) -> Vec<InstanceId> {
    instances.iter().map(|i| i.id.clone()).collect()
}

/// `zones` lists every zone once, and the same zones in the same order on every call.
pub async fn zones_are_listed_once_each_in_a_stable_order(compute: &dyn Compute) {
    let first: Vec<Zone> = compute
        .zones()
        .await
        .expect("zones")
        .into_iter()
        .map(|z| z.zone)
        .collect();
    assert!(!first.is_empty(), "zones must list at least one zone");
    let unique: BTreeSet<&Zone> = first.iter().collect();
    assert_eq!(
        unique.len(),
        first.len(),
        "a zone is listed twice: {first:?}"
    );
    let second: Vec<Zone> = compute
        .zones()
        .await
        .expect("zones")
        .into_iter()
        .map(|z| z.zone)
        .collect();
    assert_eq!(first, second, "zones must come in a stable order");
}

/// A launch lands in the zone it asked for (tried in two zones when the backend has two).
pub async fn launch_places_the_instance_in_the_requested_zone(compute: &dyn Compute) {
    let owner = Owner::new();
    let zones = available_zones(compute).await;
    let mut launched = Vec::new();
    for zone in zones.iter().rev().take(2) {
        let instance = launch(compute, owner.request(zone)).await;
        assert_eq!(
            &instance.zone, zone,
            "launch must honour the requested zone"
        );
        launched.push(instance);
    }
    let described = compute.describe(&owner.filter()).await.expect("describe");
    for instance in &launched {
        let found = described
            .iter()
            .find(|d| d.id == instance.id)
            .unwrap_or_else(|| panic!("launched instance {} is not described", instance.id));
        assert_eq!(found.zone, instance.zone, "describe must report the zone");
    }
    terminate_all(compute, &launched).await;
}

/// A launched instance carries its tenant, app, version and key, and is pending or running.
pub async fn launch_tags_the_instance_with_tenant_app_and_version(compute: &dyn Compute) {
    let owner = Owner::new();
    let zone = available_zones(compute).await.remove(0);
    let request = owner.request(&zone);
    let instance = launch(compute, request.clone()).await;
    assert_eq!(instance.tenant, request.tenant);
    assert_eq!(instance.app, request.app);
    assert_eq!(instance.version, request.version);
    assert_eq!(instance.idempotency_key, request.idempotency_key);
    assert!(
        instance.state.is_active(),
        "a new instance is pending or running, not {:?}",
        instance.state
    );
    let described = compute.describe(&owner.filter()).await.expect("describe");
    assert_eq!(described.len(), 1, "describe: {described:?}");
    assert_eq!(described[0].id, instance.id);
    assert_eq!(described[0].tenant, request.tenant);
    assert_eq!(described[0].app, request.app);
    assert_eq!(described[0].version, request.version);
    terminate_all(compute, &[instance]).await;
}

/// Launching twice with one idempotency key yields one instance (same id), and describe shows one.
pub async fn launch_twice_with_one_key_yields_one_instance(compute: &dyn Compute) {
    let owner = Owner::new();
    let zone = available_zones(compute).await.remove(0);
    let request = owner.request(&zone);
    let first = launch(compute, request.clone()).await;
    let second = launch(compute, request).await;
    assert_eq!(
        first.id, second.id,
        "a repeated key must return the same instance"
    );
    let described = compute.describe(&owner.filter()).await.expect("describe");
    assert_eq!(
        ids(&described),
        std::slice::from_ref(&first.id),
        "one key must make exactly one instance"
    );
    terminate_all(compute, &[first]).await;
}

/// Two launches with different keys make two instances.
pub async fn launches_with_different_keys_yield_different_instances(compute: &dyn Compute) {
    let owner = Owner::new();
    let zone = available_zones(compute).await.remove(0);
    let a = launch(compute, owner.request(&zone)).await;
    let b = launch(compute, owner.request(&zone)).await;
    assert_ne!(a.id, b.id, "different keys must make different instances");
    let described: BTreeSet<InstanceId> = ids(&compute.describe(&owner.filter()).await.unwrap())
        .into_iter()
        .collect();
    assert_eq!(described, BTreeSet::from([a.id.clone(), b.id.clone()]));
    terminate_all(compute, &[a, b]).await;
}

/// Describe by tenant, or by tenant and app, returns exactly the instances launched with them.
pub async fn describe_by_tenant_and_app_returns_exactly_the_launched_instances(
    compute: &dyn Compute,
) {
    let owner = Owner::new();
    let other_app = owner.with_app(&AppId::parse(&unique_name("b")).expect("app id"));
    // Another tenant with the same app name must not show up under this tenant.
    let other_tenant = Owner {
        tenant: TenantId::parse(&unique_name("u")).expect("tenant id"),
        app: owner.app.clone(),
    };
    let zone = available_zones(compute).await.remove(0);
    let a1 = launch(compute, owner.request(&zone)).await;
    let a2 = launch(compute, owner.request(&zone)).await;
    let b1 = launch(compute, other_app.request(&zone)).await;
    let c1 = launch(compute, other_tenant.request(&zone)).await;

    let set = |v: Vec<Instance>| -> BTreeSet<InstanceId> { ids(&v).into_iter().collect() };
    assert_eq!(
        set(compute.describe(&owner.filter()).await.unwrap()),
        BTreeSet::from([a1.id.clone(), a2.id.clone()]),
        "describe by tenant and app"
    );
    let by_tenant = InstanceFilter {
        tenant: Some(owner.tenant.clone()),
        ..InstanceFilter::default()
    };
    assert_eq!(
        set(compute.describe(&by_tenant).await.unwrap()),
        BTreeSet::from([a1.id.clone(), a2.id.clone(), b1.id.clone()]),
        "describe by tenant"
    );
    assert_eq!(
        set(compute.describe(&other_tenant.filter()).await.unwrap()),
        BTreeSet::from([c1.id.clone()]),
        "describe by the other tenant"
    );
    terminate_all(compute, &[a1, a2, b1, c1]).await;
}

/// Describe returns instances ordered by id.
pub async fn describe_orders_instances_by_id(compute: &dyn Compute) {
    let owner = Owner::new();
    let zones = available_zones(compute).await;
    let mut launched = Vec::new();
    for i in 0..4 {
        launched.push(launch(compute, owner.request(&zones[i % zones.len()])).await);
    }
    let by_tenant = InstanceFilter {
        tenant: Some(owner.tenant.clone()),
        ..InstanceFilter::default()
    };
    let described = ids(&compute.describe(&by_tenant).await.unwrap());
    let mut sorted = described.clone();
    sorted.sort();
    assert_eq!(described.len(), 4, "describe: {described:?}");
    assert_eq!(described, sorted, "describe must order by id");
    terminate_all(compute, &launched).await;
}

/// Terminating an instance twice succeeds both times.
pub async fn terminating_twice_succeeds(compute: &dyn Compute) {
    let owner = Owner::new();
    let zone = available_zones(compute).await.remove(0);
    let instance = launch(compute, owner.request(&zone)).await;
    compute.terminate(&instance.id).await.expect("terminate");
    compute
        .terminate(&instance.id)
        .await
        .expect("terminating a terminated instance must succeed");
    assert!(
        compute.describe(&owner.filter()).await.unwrap().is_empty(),
        "a terminated instance is not described by default"
    );
}

/// Terminating an instance the backend never had succeeds.
pub async fn terminating_an_unknown_instance_succeeds(compute: &dyn Compute) {
    // Shaped like an EC2 id (`i-` and 17 hex digits) so a backend cannot refuse it as malformed.
    let suffix = unique_name("x");
    let unknown = InstanceId::parse(&format!("i-0ffffff{}", &suffix[2..])).expect("instance id");
    compute
        .terminate(&unknown)
        .await
        .expect("terminating an unknown instance must succeed");
}

/// A terminated instance is left out of describe, unless `include_gone`.
pub async fn terminated_instances_are_described_only_with_include_gone(compute: &dyn Compute) {
    let owner = Owner::new();
    let zone = available_zones(compute).await.remove(0);
    let kept = launch(compute, owner.request(&zone)).await;
    let gone = launch(compute, owner.request(&zone)).await;
    compute.terminate(&gone.id).await.expect("terminate");

    assert_eq!(
        ids(&compute.describe(&owner.filter()).await.unwrap()),
        std::slice::from_ref(&kept.id),
        "a terminated instance is not described by default"
    );
    let all = compute
        .describe(&InstanceFilter {
            include_gone: true,
            ..owner.filter()
        })
        .await
        .unwrap();
    let found = all
        .iter()
        .find(|i| i.id == gone.id)
        .expect("a terminated instance is described with include_gone");
    assert!(
        matches!(
            found.state,
            InstanceState::Terminated | InstanceState::Stopping
        ),
        "a terminated instance reports terminated (or stopping), not {:?}",
        found.state
    );
    assert!(all.iter().any(|i| i.id == kept.id));
    terminate_all(compute, &[kept]).await;
}

/// A launch into a zone the backend does not have is `InvalidInput`, and launches nothing.
pub async fn launch_into_an_unknown_zone_is_invalid_input(compute: &dyn Compute) {
    let owner = Owner::new();
    let nowhere = Zone::parse(&unique_name("nowhere")).expect("zone");
    let err = compute
        .launch(owner.request(&nowhere))
        .await
        .expect_err("a launch into an unknown zone must fail");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(
        compute
            .describe(&InstanceFilter {
                include_gone: true,
                ..owner.filter()
            })
            .await
            .unwrap()
            .is_empty(),
        "a refused launch must launch nothing"
    );
}
