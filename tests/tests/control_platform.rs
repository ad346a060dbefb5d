//! The Platform on the in-memory fakes: what a user of the control plane sees.

use std::sync::Arc;
use std::time::Duration;

use ion_core::control::autoscaler::{AppStats, AutoscalePolicy, FakeStatsSource, ScaleMetric};
use ion_core::control::deploy::{RolloutPolicy, RolloutState};
use ion_core::control::health::{FakeProbe, ProbeResult};
use ion_core::control::planner::DeferReason;
use ion_core::control::platform::{Platform, TokioClock};
use ion_core::control::reconciler::AuditKind;
use ion_core::fake::{
    InMemoryArtifactStore, InMemoryBlobStore, InMemoryCompute, InMemoryDocumentStore,
    InMemoryLoadBalancer, InMemoryLogIndex,
};
use ion_core::{
    AppId, AppSpec, ArtifactId, ArtifactRef, Compute, ErrorKind, Hostname, HttpPath,
    InstanceFilter, Sha256Digest, TenantId, Timestamp, Version, Zone,
};

struct Fixture {
    compute: InMemoryCompute,
    lb: InMemoryLoadBalancer,
    docs: InMemoryDocumentStore,
    probe: FakeProbe,
    stats: FakeStatsSource,
    platform: Platform,
}

fn fixture() -> Fixture {
    let compute = InMemoryCompute::default();
    let lb = InMemoryLoadBalancer::new();
    let docs = InMemoryDocumentStore::new();
    let probe = FakeProbe::new();
    let stats = FakeStatsSource::new();
    let platform = build(&compute, &lb, &docs, &probe, &stats);
    Fixture {
        compute,
        lb,
        docs,
        probe,
        stats,
        platform,
    }
}

fn build(
    compute: &InMemoryCompute,
    lb: &InMemoryLoadBalancer,
    docs: &InMemoryDocumentStore,
    probe: &FakeProbe,
    stats: &FakeStatsSource,
) -> Platform {
    Platform::builder()
        .compute(Arc::new(compute.clone()))
        .documents(Arc::new(docs.clone()))
        .blobs(Arc::new(InMemoryBlobStore::new()))
        .artifacts(Arc::new(InMemoryArtifactStore::new()))
        .logs(Arc::new(InMemoryLogIndex::new()))
        .lb(Arc::new(lb.clone()))
        .probe(Arc::new(probe.clone()))
        .stats(Arc::new(stats.clone()))
        .clock(Arc::new(TokioClock::starting_at(Timestamp::from_millis(
            1_800_000_000_000,
        ))))
        .rollout_policy(RolloutPolicy {
            progress_deadline: Duration::from_secs(300),
            crash_budget: 2,
        })
        .build()
        .unwrap()
}

fn spec(tenant: &str, app: &str, version: u64, replicas: u32) -> AppSpec {
    AppSpec {
        tenant: TenantId::parse(tenant).unwrap(),
        app: AppId::parse(app).unwrap(),
        version: Version(version),
        artifact: ArtifactRef {
            id: ArtifactId::parse(&format!("art-{version}")).unwrap(),
            sha256: Sha256Digest::of(b"bin"),
            length: 3,
        },
        replicas,
        hostnames: vec![Hostname::parse(&format!("{app}.{tenant}.example")).unwrap()],
        port: 8080,
        readiness_path: HttpPath::parse("/healthz").unwrap(),
        max_surge: 1,
        max_unavailable: 0,
    }
}

async fn ticks(p: &Platform, n: usize) {
    for _ in 0..n {
        let _ = p.tick().await;
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

async fn zones_of(compute: &InMemoryCompute, app: &str) -> Vec<String> {
    let mut z: Vec<String> = compute
        .describe(&InstanceFilter::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.app.as_str() == app)
        .map(|i| i.zone.to_string())
        .collect();
    z.sort();
    z
}

#[tokio::test(start_paused = true)]
async fn deploy_spreads_over_zones_and_routes_only_ready_instances() {
    let f = fixture();
    f.platform.deploy(spec("acme", "web", 1, 3)).await.unwrap();
    ticks(&f.platform, 4).await;
    assert_eq!(
        zones_of(&f.compute, "web").await,
        ["zone-a", "zone-b", "zone-c"]
    );
    let host = Hostname::parse("web.acme.example").unwrap();
    assert_eq!(f.lb.backends_for(&host).unwrap().len(), 3);
    // An instance that stops answering its readiness probe leaves the route table.
    let victim = f.lb.backends_for(&host).unwrap()[0].instance.clone();
    f.probe.set(&victim, ProbeResult::NotReady);
    ticks(&f.platform, 1).await;
    let backends = f.lb.backends_for(&host).unwrap();
    assert_eq!(backends.len(), 2);
    assert!(backends.iter().all(|b| b.instance != victim));
}

#[tokio::test(start_paused = true)]
async fn a_crashed_instance_is_relaunched_and_recorded() {
    let f = fixture();
    f.platform.deploy(spec("acme", "web", 1, 2)).await.unwrap();
    ticks(&f.platform, 3).await;
    let first = f
        .compute
        .describe(&InstanceFilter::default())
        .await
        .unwrap();
    f.compute.crash(&first[0].id).unwrap();
    ticks(&f.platform, 2).await;
    assert_eq!(
        f.platform
            .active_instances(&first[0].tenant, &first[0].app)
            .await
            .unwrap(),
        2
    );
    let events = f.platform.audit().read_all().await.unwrap();
    assert!(events.iter().any(
        |e| matches!(&e.kind, AuditKind::Crashed { instance, .. } if *instance == first[0].id)
    ));
    assert!(events.iter().any(|e| matches!(&e.kind, AuditKind::Launched { reason, .. } if *reason == ion_core::control::LaunchReason::ReplaceCrashed)));
}

#[tokio::test(start_paused = true)]
async fn a_lost_zone_moves_capacity_and_the_spread_returns() {
    let f = fixture();
    f.platform.deploy(spec("acme", "web", 1, 3)).await.unwrap();
    ticks(&f.platform, 4).await;
    let c = Zone::parse("zone-c").unwrap();
    f.compute.zone_down(&c).unwrap();
    ticks(&f.platform, 3).await;
    let z = zones_of(&f.compute, "web").await;
    assert_eq!(z.len(), 3);
    assert!(!z.contains(&"zone-c".to_string()));
    f.compute.zone_up(&c).unwrap();
    ticks(&f.platform, 5).await;
    assert_eq!(
        zones_of(&f.compute, "web").await,
        ["zone-a", "zone-b", "zone-c"]
    );
}

#[tokio::test(start_paused = true)]
async fn rolling_upgrade_completes_and_a_bad_revision_rolls_back() {
    let f = fixture();
    let (t, a) = (
        TenantId::parse("acme").unwrap(),
        AppId::parse("web").unwrap(),
    );
    f.platform.deploy(spec("acme", "web", 1, 3)).await.unwrap();
    ticks(&f.platform, 4).await;
    let host = Hostname::parse("web.acme.example").unwrap();
    f.platform.deploy(spec("acme", "web", 2, 3)).await.unwrap();
    for _ in 0..12 {
        ticks(&f.platform, 1).await;
        // Zero downtime: the route never has fewer than the desired count of ready backends.
        assert!(f.lb.backends_for(&host).unwrap().len() >= 3);
    }
    assert_eq!(
        f.platform.rollout(&t, &a).await.unwrap().state,
        RolloutState::Complete
    );
    let all = f
        .compute
        .describe(&InstanceFilter::default())
        .await
        .unwrap();
    assert!(all.iter().all(|i| i.version == Version(2)));

    // v3 never becomes ready and fails liveness: rolled back to v2.
    f.probe.set_version(&a, 3, ProbeResult::Unreachable);
    f.platform.deploy(spec("acme", "web", 3, 3)).await.unwrap();
    ticks(&f.platform, 40).await;
    let r = f.platform.rollout(&t, &a).await.unwrap();
    assert_eq!(r.state, RolloutState::RolledBack);
    let desired = f.platform.desired().await;
    assert_eq!(desired[0].spec.version, Version(2));
    let all = f
        .compute
        .describe(&InstanceFilter::default())
        .await
        .unwrap();
    assert!(all.iter().all(|i| i.version == Version(2)));
    assert_eq!(f.lb.backends_for(&host).unwrap().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn quotas_refuse_deploys_without_surge_headroom() {
    let f = fixture();
    let t = TenantId::parse("acme").unwrap();
    f.platform.set_quota(&t, 4).await;
    // 3 replicas + 1 surge = 4 fits; 4 + 1 does not.
    f.platform.deploy(spec("acme", "web", 1, 3)).await.unwrap();
    let e = f
        .platform
        .deploy(spec("acme", "api", 1, 1))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("quota"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn a_recovered_platform_starts_but_stops_nothing_until_desired_is_reasserted() {
    let f = fixture();
    f.platform.deploy(spec("acme", "web", 1, 2)).await.unwrap();
    ticks(&f.platform, 3).await;
    // A stray instance no desired app owns, as after restoring an older store.
    let mut stray = spec("acme", "old", 1, 1);
    stray.hostnames.clear();
    f.platform.deploy(stray).await.unwrap();
    ticks(&f.platform, 2).await;
    f.platform
        .undeploy(
            &TenantId::parse("acme").unwrap(),
            &AppId::parse("old").unwrap(),
        )
        .await
        .unwrap();
    // The failover control plane reads desired state from the store.
    let failover = build(&f.compute, &f.lb, &f.docs, &f.probe, &f.stats);
    assert_eq!(failover.recover().await.unwrap(), 1);
    assert!(!failover.is_fresh().await);
    let report = failover.tick().await.unwrap();
    assert!(report.plan.terminations.is_empty());
    assert!(report
        .plan
        .deferred
        .iter()
        .any(|d| d.reason == DeferReason::FreshnessGate));
    assert_eq!(zones_of(&f.compute, "old").await.len(), 1);
    failover.reassert_desired().await;
    failover.tick().await.unwrap();
    assert!(zones_of(&f.compute, "old").await.is_empty());
    assert_eq!(zones_of(&f.compute, "web").await.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_autoscaler_scales_on_load_and_records_why() {
    let f = fixture();
    let (t, a) = (
        TenantId::parse("acme").unwrap(),
        AppId::parse("web").unwrap(),
    );
    f.platform.deploy(spec("acme", "web", 1, 2)).await.unwrap();
    f.platform
        .set_autoscale(
            &t,
            &a,
            AutoscalePolicy::new(1, 10, ScaleMetric::Cpu, 0.5).unwrap(),
        )
        .await;
    f.stats.set(
        &t,
        &a,
        AppStats {
            requests_per_sec: 0.0,
            cpu: 1.0,
        },
    );
    ticks(&f.platform, 1).await;
    assert_eq!(f.platform.desired().await[0].spec.replicas, 4);
    let events = f.platform.audit().read_all().await.unwrap();
    assert!(events.iter().any(
        |e| matches!(&e.kind, AuditKind::Note { what } if what.starts_with("autoscale 2 -> 4"))
    ));
}

#[tokio::test(start_paused = true)]
async fn a_refused_route_table_is_retried_and_holds_back_stops() {
    let f = fixture();
    f.platform.deploy(spec("acme", "web", 1, 3)).await.unwrap();
    ticks(&f.platform, 4).await;
    f.platform
        .scale(
            &TenantId::parse("acme").unwrap(),
            &AppId::parse("web").unwrap(),
            1,
        )
        .await
        .unwrap();
    f.lb.refuse_next_apply(1);
    let r = f.platform.tick().await.unwrap();
    assert!(matches!(r.routes, Some(Err(_))));
    assert_eq!(r.terminated, 0, "instances still routed are not stopped");
    assert_eq!(f.platform.router_status().await.failures, 1);
    let r = f.platform.tick().await.unwrap();
    assert!(matches!(r.routes, Some(Ok(_))));
    assert_eq!(r.terminated, 2);
    let host = Hostname::parse("web.acme.example").unwrap();
    assert_eq!(f.lb.backends_for(&host).unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn run_converges_in_the_background_and_stops_on_shutdown() {
    let f = fixture();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let platform = f.platform.clone();
    let runner = tokio::spawn(async move {
        platform
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    f.platform.deploy(spec("acme", "web", 1, 3)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let (t, a) = (
        TenantId::parse("acme").unwrap(),
        AppId::parse("web").unwrap(),
    );
    assert_eq!(f.platform.active_instances(&t, &a).await.unwrap(), 3);
    // A crash is repaired by the periodic sweep, with no call from the caller.
    let first = f
        .compute
        .describe(&InstanceFilter::default())
        .await
        .unwrap();
    f.compute.crash(&first[0].id).unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(f.platform.active_instances(&t, &a).await.unwrap(), 3);
    stop.send(()).unwrap();
    runner.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn cancel_converges_to_the_last_good_revision() {
    let f = fixture();
    let (t, a) = (
        TenantId::parse("acme").unwrap(),
        AppId::parse("web").unwrap(),
    );
    f.platform.deploy(spec("acme", "web", 1, 3)).await.unwrap();
    ticks(&f.platform, 4).await;
    // v2 answers but is never ready: the rollout cannot complete.
    f.probe.set_version(&a, 2, ProbeResult::NotReady);
    f.platform.deploy(spec("acme", "web", 2, 3)).await.unwrap();
    ticks(&f.platform, 3).await;
    assert_eq!(
        f.platform.rollout(&t, &a).await.unwrap().state,
        RolloutState::Progressing
    );
    f.platform.cancel_deploy(&t, &a).await.unwrap();
    ticks(&f.platform, 3).await;
    assert_eq!(f.platform.desired().await[0].spec.version, Version(1));
    let all = f
        .compute
        .describe(&InstanceFilter::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|i| i.version == Version(1)));
    let host = Hostname::parse("web.acme.example").unwrap();
    assert_eq!(f.lb.backends_for(&host).unwrap().len(), 3);
    assert!(
        f.platform.cancel_deploy(&t, &a).await.is_err(),
        "nothing left to cancel"
    );
}
