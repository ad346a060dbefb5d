//! Unit and property tests of the planner against a tiny in-test world model.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use proptest::prelude::*;

use super::health::HealthStatus;
use super::planner::*;
use crate::compute::ZoneInfo;
use crate::model::{AppSpec, ArtifactRef, Instance, InstanceState, Sha256Digest, Version};
use crate::name::{AppId, ArtifactId, HttpPath, InstanceId, TenantId, Zone};
use crate::time::Timestamp;

fn spec(tenant: &str, app: &str, version: u64, replicas: u32, surge: u32, unavail: u32) -> AppSpec {
    AppSpec {
        tenant: TenantId::parse(tenant).unwrap(),
        app: AppId::parse(app).unwrap(),
        version: Version(version),
        artifact: ArtifactRef {
            id: ArtifactId::parse("a1").unwrap(),
            sha256: Sha256Digest::of(b"x"),
            length: 1,
        },
        replicas,
        hostnames: vec![],
        port: 8080,
        readiness_path: HttpPath::parse("/healthz").unwrap(),
        max_surge: surge,
        max_unavailable: unavail,
    }
}

fn zones(n: usize) -> Vec<ZoneInfo> {
    (0..n)
        .map(|i| ZoneInfo {
            zone: Zone::parse(&format!("zone-{}", (b'a' + i as u8) as char)).unwrap(),
            available: true,
        })
        .collect()
}

/// A toy world: launches start running and ready at once, terminations take effect at once.
#[derive(Default, Clone)]
struct World {
    instances: Vec<Instance>,
    health: HashMap<InstanceId, HealthStatus>,
    next: u64,
    now: Timestamp,
}

impl World {
    fn apply(&mut self, plan: &Plan, ready: bool) {
        for t in &plan.terminations {
            if let Some(i) = self.instances.iter_mut().find(|i| i.id == t.instance) {
                i.state = InstanceState::Terminated;
            }
        }
        for l in &plan.launches {
            if self
                .instances
                .iter()
                .any(|i| i.idempotency_key == l.idempotency_key)
            {
                continue;
            }
            self.next += 1;
            let id = InstanceId::parse(&format!("i-{:05}", self.next)).unwrap();
            self.health.insert(
                id.clone(),
                if ready {
                    HealthStatus::Ready
                } else {
                    HealthStatus::Starting
                },
            );
            self.instances.push(Instance {
                id,
                tenant: l.tenant.clone(),
                app: l.app.clone(),
                version: l.version,
                zone: l.zone.clone(),
                state: InstanceState::Running,
                address: None,
                launched_at: self.now,
                idempotency_key: l.idempotency_key.clone(),
            });
        }
        self.now = self.now.plus(Duration::from_secs(10));
    }

    fn active(&self, app: &str) -> Vec<&Instance> {
        self.instances
            .iter()
            .filter(|i| i.app.as_str() == app && i.state.is_active())
            .collect()
    }

    fn pass(
        &mut self,
        desired: &[DesiredApp],
        zones: &[ZoneInfo],
        state: &mut PlannerState,
        config: &PlannerConfig,
    ) -> Plan {
        let quotas = BTreeMap::new();
        let observed = self.observed();
        let input = PlanInput {
            desired,
            observed: &observed,
            zones,
            now: self.now,
            quotas: &quotas,
            allow_terminations: true,
        };
        plan(&input, config, state)
    }

    fn observed(&self) -> Vec<Observed> {
        self.instances
            .iter()
            .map(|i| Observed {
                instance: i.clone(),
                health: self.health.get(&i.id).copied(),
            })
            .collect()
    }
}

fn per_zone(w: &World, app: &str, zones: &[ZoneInfo]) -> Vec<usize> {
    zones
        .iter()
        .map(|z| w.active(app).iter().filter(|i| i.zone == z.zone).count())
        .collect()
}

#[test]
fn new_app_spreads_over_zones_with_slow_start() {
    let z = zones(3);
    let desired = vec![DesiredApp::new(spec("acme", "web", 1, 7, 1, 0))];
    let mut state = PlannerState::new();
    let mut w = World::default();
    let config = PlannerConfig::default();
    let sizes: Vec<usize> = (0..4)
        .map(|_| {
            let p = w.pass(&desired, &z, &mut state, &config);
            w.apply(&p, true);
            p.launches.len()
        })
        .collect();
    // Herd control: 1, 2, 4, then the remainder.
    assert_eq!(sizes, vec![1, 2, 4, 0]);
    assert_eq!(per_zone(&w, "web", &z), vec![3, 2, 2]);
    let p = w.pass(&desired, &z, &mut state, &config);
    assert!(p.is_empty(), "{p:?}");
}

#[test]
fn slow_start_is_reported_as_deferred() {
    let z = zones(3);
    let desired = vec![DesiredApp::new(spec("acme", "web", 1, 3, 1, 0))];
    let mut state = PlannerState::new();
    let p = World::default().pass(&desired, &z, &mut state, &PlannerConfig::default());
    assert_eq!(p.launches.len(), 1);
    assert_eq!(p.launches[0].reason, LaunchReason::BelowDesired);
    assert_eq!(p.deferred.len(), 1);
    assert_eq!(p.deferred[0].count, 2);
    assert_eq!(p.deferred[0].reason, DeferReason::SlowStart { allowed: 1 });
}

fn converge(w: &mut World, desired: &[DesiredApp], z: &[ZoneInfo], state: &mut PlannerState) {
    let config = PlannerConfig::default();
    for _ in 0..40 {
        // After faults stop, every instance that runs becomes ready.
        for i in &w.instances {
            w.health.insert(i.id.clone(), HealthStatus::Ready);
        }
        let p = w.pass(desired, z, state, &config);
        if p.is_empty() {
            return;
        }
        w.apply(&p, true);
    }
    panic!("did not converge");
}

#[test]
fn scale_down_takes_from_the_fullest_zone() {
    let z = zones(3);
    let mut state = PlannerState::new();
    let mut w = World::default();
    converge(
        &mut w,
        &[DesiredApp::new(spec("acme", "web", 1, 6, 1, 0))],
        &z,
        &mut state,
    );
    assert_eq!(per_zone(&w, "web", &z), vec![2, 2, 2]);
    // 6 -> 3 must leave one per zone (the Kubernetes#124149 complaint).
    converge(
        &mut w,
        &[DesiredApp::new(spec("acme", "web", 1, 3, 1, 0))],
        &z,
        &mut state,
    );
    assert_eq!(per_zone(&w, "web", &z), vec![1, 1, 1]);
}

#[test]
fn crash_is_replaced_at_once_then_backs_off() {
    let z = zones(3);
    let desired = vec![DesiredApp::new(spec("acme", "web", 1, 1, 1, 0))];
    let mut state = PlannerState::new();
    let mut w = World::default();
    converge(&mut w, &desired, &z, &mut state);
    let config = PlannerConfig::default();
    let mut crash_and_plan = |w: &mut World| {
        let i = w
            .instances
            .iter_mut()
            .find(|i| i.state.is_active())
            .unwrap();
        i.state = InstanceState::Crashed;
        w.pass(&desired, &z, &mut state, &config)
    };
    let p1 = crash_and_plan(&mut w);
    assert_eq!(p1.launches.len(), 1);
    assert_eq!(p1.launches[0].reason, LaunchReason::ReplaceCrashed);
    assert_eq!(p1.launches[0].attempt, 1);
    assert_eq!(p1.crashes[0].crashes, 1);
    w.apply(&p1, true);
    let p2 = crash_and_plan(&mut w);
    assert_eq!(p2.launches.len(), 1, "second crash restarts at once");
    w.apply(&p2, true);
    let p3 = crash_and_plan(&mut w);
    assert!(p3.launches.is_empty(), "third crash waits");
    let crashed_at = w.now;
    assert_eq!(
        p3.deferred[0].reason,
        DeferReason::CrashBackOff {
            until: crashed_at.plus(Duration::from_secs(30)),
            crashes: 3
        }
    );
    w.apply(&p3, true);
    w.now = crashed_at.plus(Duration::from_secs(30));
    let p4 = w.pass(&desired, &z, &mut state, &config);
    assert_eq!(p4.launches.len(), 1);
    assert_eq!(p4.launches[0].attempt, 3);
}

#[test]
fn unavailable_zone_is_avoided_and_rebalanced_when_back() {
    let mut z = zones(3);
    let desired = vec![DesiredApp::new(spec("acme", "web", 1, 3, 1, 0))];
    let mut state = PlannerState::new();
    let mut w = World::default();
    converge(&mut w, &desired, &z, &mut state);
    // zone-c goes down and takes its instance with it.
    z[2].available = false;
    for i in w.instances.iter_mut() {
        if i.zone == z[2].zone && i.state.is_active() {
            i.state = InstanceState::Crashed;
        }
    }
    converge(&mut w, &desired, &z, &mut state);
    assert_eq!(per_zone(&w, "web", &z), vec![2, 1, 0]);
    z[2].available = true;
    converge(&mut w, &desired, &z, &mut state);
    assert_eq!(per_zone(&w, "web", &z), vec![1, 1, 1]);
}

#[test]
fn rolling_deploy_keeps_min_available_and_retires_old() {
    let z = zones(3);
    let mut state = PlannerState::new();
    let mut w = World::default();
    converge(
        &mut w,
        &[DesiredApp::new(spec("acme", "web", 1, 3, 1, 0))],
        &z,
        &mut state,
    );
    let v2 = [DesiredApp::new(spec("acme", "web", 2, 3, 1, 0))];
    let config = PlannerConfig::default();
    for _ in 0..30 {
        let p = w.pass(&v2, &z, &mut state, &config);
        if p.is_empty() {
            break;
        }
        w.apply(&p, false);
        assert!(w.active("web").len() <= 4);
        // New instances become ready one pass after launch.
        for i in &w.instances {
            w.health.insert(i.id.clone(), HealthStatus::Ready);
        }
        let ready = w.active("web").len();
        assert!(ready >= 3, "availability dropped to {ready}");
    }
    assert!(w.active("web").iter().all(|i| i.version == Version(2)));
    assert_eq!(w.active("web").len(), 3);
}

#[test]
fn freshness_gate_blocks_every_termination() {
    let z = zones(3);
    let mut state = PlannerState::new();
    let mut w = World::default();
    converge(
        &mut w,
        &[DesiredApp::new(spec("acme", "web", 1, 3, 1, 0))],
        &z,
        &mut state,
    );
    let quotas = BTreeMap::new();
    let input = PlanInput {
        desired: &[],
        observed: &w.observed(),
        zones: &z,
        now: w.now,
        quotas: &quotas,
        allow_terminations: false,
    };
    let p = plan(&input, &PlannerConfig::default(), &mut state);
    assert!(p.terminations.is_empty());
    assert_eq!(p.deferred[0].reason, DeferReason::FreshnessGate);
    let input = PlanInput {
        allow_terminations: true,
        ..input
    };
    let p = plan(&input, &PlannerConfig::default(), &mut state);
    assert_eq!(p.terminations.len(), 3);
    assert!(p
        .terminations
        .iter()
        .all(|t| t.reason == TerminationReason::Undeployed));
}

#[test]
fn quota_defers_launches() {
    let z = zones(3);
    let desired = vec![DesiredApp::new(spec("acme", "web", 1, 3, 1, 0))];
    let mut quotas = BTreeMap::new();
    quotas.insert(TenantId::parse("acme").unwrap(), 0);
    let w = World::default();
    let input = PlanInput {
        desired: &desired,
        observed: &w.observed(),
        zones: &z,
        now: w.now,
        quotas: &quotas,
        allow_terminations: true,
    };
    let p = plan(&input, &PlannerConfig::default(), &mut PlannerState::new());
    assert!(p.launches.is_empty());
    assert!(p
        .deferred
        .iter()
        .any(|d| d.reason == DeferReason::Quota { limit: 0 }));
}

#[test]
fn launch_keys_round_trip() {
    let t = TenantId::parse("acme").unwrap();
    let a = AppId::parse("web").unwrap();
    let k = launch_key(&t, &a, Version(12), 3, 7);
    assert_eq!(parse_key(&k), Some((Version(12), 3, 7)));
    assert_eq!(k, launch_key(&t, &a, Version(12), 3, 7));
    assert_ne!(
        k,
        launch_key(&t, &AppId::parse("api").unwrap(), Version(12), 3, 7)
    );
    assert!(k.as_str().len() <= 64);
}

#[test]
fn in_flight_cap_is_global() {
    let z = zones(3);
    let desired: Vec<DesiredApp> = (0..10)
        .map(|i| DesiredApp::new(spec("acme", &format!("app{i}"), 1, 1, 1, 0)))
        .collect();
    let config = PlannerConfig {
        max_in_flight: 4,
        ..PlannerConfig::default()
    };
    let w = World::default();
    let quotas = BTreeMap::new();
    let input = PlanInput {
        desired: &desired,
        observed: &w.observed(),
        zones: &z,
        now: w.now,
        quotas: &quotas,
        allow_terminations: true,
    };
    let p = plan(&input, &config, &mut PlannerState::new());
    assert_eq!(p.launches.len(), 4);
    assert_eq!(
        p.deferred
            .iter()
            .filter(|d| d.reason == DeferReason::InFlightCap { cap: 4 })
            .count(),
        6
    );
}

#[derive(Debug, Clone)]
struct Scenario {
    apps: Vec<(u32, u32, u32, u64)>,
    zones: usize,
    down: Vec<bool>,
    observed: Vec<(usize, u64, usize, u8, u8)>,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (1usize..=4, 2usize..=4).prop_flat_map(|(napps, nz)| {
        (
            prop::collection::vec((0u32..=7, 0u32..=2, 0u32..=2, 1u64..=2), napps),
            Just(nz),
            prop::collection::vec(prop::bool::weighted(0.2), nz),
            prop::collection::vec((0..napps, 1u64..=2, 0..nz, 0u8..5, 0u8..4), 0..20),
        )
            .prop_map(|(apps, zones, down, observed)| Scenario {
                apps,
                zones,
                down,
                observed,
            })
    })
}

fn build(s: &Scenario) -> (Vec<DesiredApp>, Vec<ZoneInfo>, World) {
    let desired: Vec<DesiredApp> = s
        .apps
        .iter()
        .enumerate()
        .map(|(i, (r, surge, un, v))| {
            let surge = if *surge == 0 && *un == 0 { 1 } else { *surge };
            DesiredApp::new(spec("acme", &format!("app{i}"), *v, *r, surge, *un))
        })
        .collect();
    let mut z = zones(s.zones);
    for (zi, d) in s.down.iter().enumerate() {
        z[zi].available = !d;
    }
    let mut w = World {
        now: Timestamp::from_millis(1_000_000),
        ..World::default()
    };
    for (n, (app, version, zone, state, health)) in s.observed.iter().enumerate() {
        let id = InstanceId::parse(&format!("i-obs{n:03}")).unwrap();
        let d = &desired[*app].spec;
        let st = match state {
            0 => InstanceState::Pending,
            1 | 2 => InstanceState::Running,
            3 => InstanceState::Crashed,
            _ => InstanceState::Terminated,
        };
        let h = match health {
            0 => HealthStatus::Starting,
            1 | 2 => HealthStatus::Ready,
            _ => HealthStatus::NotReady,
        };
        w.health.insert(id.clone(), h);
        w.instances.push(Instance {
            id,
            tenant: d.tenant.clone(),
            app: d.app.clone(),
            version: Version(*version),
            zone: z[*zone].zone.clone(),
            state: st,
            address: None,
            launched_at: Timestamp::from_millis(n as i64 * 1000),
            idempotency_key: launch_key(&d.tenant, &d.app, Version(*version), n as u32, 0),
        });
    }
    (desired, z, w)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn single_pass_invariants(s in scenario()) {
        let (desired, z, w) = build(&s);
        let mut state = PlannerState::new();
        let mut state2 = PlannerState::new();
        let p = w.clone().pass(&desired, &z, &mut state, &PlannerConfig::default());
        // Deterministic.
        let p2 = w.clone().pass(&desired, &z, &mut state2, &PlannerConfig::default());
        prop_assert_eq!(&p, &p2);
        // Sorted.
        let keys: Vec<_> = p.launches.iter().map(|l| (l.tenant.clone(), l.app.clone(), l.slot)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        prop_assert_eq!(keys, sorted);
        for l in &p.launches {
            let zi = z.iter().find(|zz| zz.zone == l.zone).unwrap();
            prop_assert!(zi.available, "launch into unavailable zone {}", l.zone);
        }
        for d in &desired {
            let up = |i: &&Instance| z.iter().any(|zz| zz.zone == i.zone && zz.available);
            let active: Vec<&Instance> = w.instances.iter()
                .filter(|i| i.app == d.spec.app && i.state.is_active()).filter(up).collect();
            let launches = p.launches.iter().filter(|l| l.app == d.spec.app).count();
            if launches > 0 {
                prop_assert!(active.len() + launches <= (d.spec.replicas + d.spec.max_surge) as usize,
                    "{} active + {} launches > {} + {}", active.len(), launches, d.spec.replicas, d.spec.max_surge);
            }
            let ready_before = active.iter().filter(|i| w.health.get(&i.id) == Some(&HealthStatus::Ready)).count();
            let ready_killed = p.terminations.iter().filter(|t| t.app == d.spec.app
                && w.health.get(&t.instance) == Some(&HealthStatus::Ready)
                && active.iter().any(|i| i.id == t.instance)).count();
            if ready_killed > 0 {
                prop_assert!(ready_before - ready_killed >= d.min_available() as usize,
                    "ready {} - {} below min {}", ready_before, ready_killed, d.min_available());
            }
            // A slot is never launched twice in one pass.
            let mut slots: Vec<u32> = p.launches.iter().filter(|l| l.app == d.spec.app).map(|l| l.slot).collect();
            let n = slots.len();
            slots.dedup();
            prop_assert_eq!(n, slots.len());
        }
    }

    #[test]
    fn converges_to_desired_with_one_per_zone(s in scenario()) {
        let (desired, mut z, mut w) = build(&s);
        for zz in z.iter_mut() { zz.available = true; }
        let mut state = PlannerState::new();
        converge(&mut w, &desired, &z, &mut state);
        for d in &desired {
            let active = w.active(d.spec.app.as_str());
            prop_assert_eq!(active.len(), d.spec.replicas as usize);
            prop_assert!(active.iter().all(|i| i.version == d.spec.version));
            let counts = per_zone(&w, d.spec.app.as_str(), &z);
            if d.spec.replicas as usize >= z.len() {
                prop_assert!(counts.iter().all(|c| *c >= 1), "zones {:?} for {} replicas", counts, d.spec.replicas);
            }
            let max = counts.iter().max().unwrap();
            let min = counts.iter().min().unwrap();
            prop_assert!(max - min <= 1, "spread {:?}", counts);
        }
    }
}
