//! The `Compute` conformance suite run against `InMemoryCompute`, plus its domain faults.

use ion_core::fake::{FaultPlan, InMemoryCompute};
use ion_core::{
    ArtifactRef, Compute, ErrorKind, IdempotencyKey, InstanceFilter, InstanceState, LaunchRequest,
    Sha256Digest, Version, Zone,
};

ion_core::compute_conformance!(in_memory, async { Some(InMemoryCompute::default()) });

// The suite must also hold for a fake with other zones and with instances that start pending.
ion_core::compute_conformance!(in_memory_two_zones_pending, async {
    let compute = InMemoryCompute::new(vec![
        Zone::parse("us-east-1a").unwrap(),
        Zone::parse("us-east-1b").unwrap(),
    ]);
    compute.set_auto_run(false);
    Some(compute)
});

fn request(key: &str, zone: &str) -> LaunchRequest {
    LaunchRequest {
        idempotency_key: IdempotencyKey::parse(key).unwrap(),
        zone: Zone::parse(zone).unwrap(),
        tenant: "acme".parse().unwrap(),
        app: "shop".parse().unwrap(),
        version: Version(1),
        artifact: ArtifactRef {
            id: "art-1".parse().unwrap(),
            sha256: Sha256Digest::of(b"bin"),
            length: 3,
        },
        port: 8080,
    }
}

#[tokio::test]
async fn a_retry_after_a_lost_response_creates_nothing() {
    // The first launch succeeds but its answer is lost: the caller sees an error and retries.
    let compute = InMemoryCompute::default();
    let first = compute.launch(request("k1", "zone-a")).await.unwrap();
    compute
        .faults()
        .fail_next(1, ErrorKind::Unavailable)
        .only_ops(&["launch"]);
    assert!(compute.launch(request("k1", "zone-a")).await.is_err());
    let retried = compute.launch(request("k1", "zone-a")).await.unwrap();
    assert_eq!(retried.id, first.id);
    assert_eq!(compute.launch_count(), 1);
}

#[tokio::test]
async fn clones_share_instances_and_faults() {
    let plan = FaultPlan::seeded(9);
    let compute = InMemoryCompute::default().with_faults(plan.clone());
    let clone = compute.clone();
    let a = compute.launch(request("k1", "zone-b")).await.unwrap();
    let seen = clone.describe(&InstanceFilter::default()).await.unwrap();
    assert_eq!(seen.iter().map(|i| &i.id).collect::<Vec<_>>(), [&a.id]);
    plan.fail_next(1, ErrorKind::RateLimited);
    let err = clone
        .describe(&InstanceFilter::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    assert!(err.is_transient());
}

#[tokio::test]
async fn crashed_instances_leave_describe_until_include_gone() {
    let compute = InMemoryCompute::default();
    let a = compute.launch(request("k1", "zone-a")).await.unwrap();
    compute.crash(&a.id).unwrap();
    assert!(compute
        .describe(&InstanceFilter::default())
        .await
        .unwrap()
        .is_empty());
    let all = compute
        .describe(&InstanceFilter {
            include_gone: true,
            ..InstanceFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(all[0].state, InstanceState::Crashed);
}

/// A compute backend that ignores the idempotency key: what the suite exists to catch.
#[derive(Debug, Default)]
struct ForgetfulCompute {
    inner: InMemoryCompute,
    calls: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl Compute for ForgetfulCompute {
    fn capabilities(&self) -> ion_core::ComputeCapabilities {
        self.inner.capabilities()
    }
    async fn zones(&self) -> ion_core::Result<Vec<ion_core::ZoneInfo>> {
        self.inner.zones().await
    }
    async fn launch(&self, mut request: LaunchRequest) -> ion_core::Result<ion_core::Instance> {
        let n = self
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        request.idempotency_key = IdempotencyKey::parse(&format!("fresh-{n}")).unwrap();
        self.inner.launch(request).await
    }
    async fn terminate(&self, id: &ion_core::InstanceId) -> ion_core::Result<()> {
        self.inner.terminate(id).await
    }
    async fn describe(&self, f: &InstanceFilter) -> ion_core::Result<Vec<ion_core::Instance>> {
        self.inner.describe(f).await
    }
}

#[tokio::test]
async fn the_suite_catches_a_launch_that_ignores_the_key() {
    let case = tokio::spawn(async move {
        let forgetful = ForgetfulCompute::default();
        ion_core::testkit::compute::launch_twice_with_one_key_yields_one_instance(&forgetful).await;
    });
    assert!(case.await.unwrap_err().is_panic());
}
