//! Deterministic simulation of the control plane on the in-memory fakes (feature `sim`).
//!
//! A [`Schedule`] is a seeded list of faults per step: instance crashes, a zone down then up,
//! compute throttling, load-balancer apply refusals, document-store transient errors, a bad
//! revision that crash-loops, scale changes and good deploys. [`run`] drives a [`Platform`] over
//! it on tokio time (run it on a paused runtime and hours pass in milliseconds), then lets the
//! platform settle with faults cleared, checking invariants after every pass:
//!
//! - the applied route table never holds an instance that is not running and ready;
//! - a pass that launches for an app never takes it above replicas + max_surge;
//! - no pass stops ready instances below an app's min-available (scale-down, rollout, rebalance);
//! - after faults stop, every app reaches its desired count and version within a bounded number
//!   of passes, and with all zones up and replicas ≥ zones every zone holds one;
//! - every launched and every terminated instance has its audit event.
//!
//! A violation carries the seed; [`run`] with the same seed replays it exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::compute::{Compute, InstanceFilter};
use crate::control::deploy::RolloutPolicy;
use crate::control::health::{FakeProbe, HealthConfig, HealthStatus};
use crate::control::planner::{PlannerConfig, TerminationReason};
use crate::control::platform::{Clock, PlanFn, Platform, TokioClock};
use crate::control::reconciler::{AuditKind, RetryPolicy};
use crate::error::ErrorKind;
use crate::fake::{
    InMemoryArtifactStore, InMemoryBlobStore, InMemoryCompute, InMemoryDocumentStore,
    InMemoryLoadBalancer, InMemoryLogIndex, SeededRng,
};
use crate::lb::LoadBalancer;
use crate::model::{AppSpec, ArtifactRef, InstanceState, Sha256Digest, Version};
use crate::name::{AppId, ArtifactId, Hostname, HttpPath, TenantId, Zone};
use crate::time::Timestamp;

/// One injected event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Crash `count` active instances of app `app` (the lowest ids).
    Crash {
        /// App index.
        app: usize,
        /// How many.
        count: usize,
    },
    /// Take zone `zone` down (its instances crash).
    ZoneDown {
        /// Zone index.
        zone: usize,
    },
    /// Bring zone `zone` back.
    ZoneUp {
        /// Zone index.
        zone: usize,
    },
    /// The next `calls` compute calls are throttled.
    Throttle {
        /// How many.
        calls: u32,
    },
    /// The load balancer refuses the next `applies` applies.
    LbRefuse {
        /// How many.
        applies: u32,
    },
    /// The next `calls` document-store calls fail transiently.
    DocFail {
        /// How many.
        calls: u32,
    },
    /// Deploy a new revision of app `app` that crash-loops.
    BadRevision {
        /// App index.
        app: usize,
    },
    /// Deploy a new good revision of app `app`.
    GoodRevision {
        /// App index.
        app: usize,
    },
    /// Scale app `app` to `replicas`.
    Scale {
        /// App index.
        app: usize,
        /// New count.
        replicas: u32,
    },
}

/// A seeded fault schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// The seed it came from.
    pub seed: u64,
    /// Faults by step.
    pub steps: Vec<Vec<Fault>>,
}

/// The apps every simulation runs: (tenant, app, replicas, max_surge, max_unavailable).
const APPS: [(&str, &str, u32, u32, u32); 3] = [
    ("acme", "web", 3, 1, 0),
    ("acme", "api", 2, 1, 1),
    ("globex", "shop", 4, 2, 1),
];
const ZONES: usize = 3;

impl Schedule {
    /// The schedule of `seed`: `steps` steps, about one fault in three steps; a zone that goes
    /// down comes back later in the schedule.
    pub fn generate(seed: u64, steps: usize) -> Self {
        let mut rng = SeededRng::new(seed);
        let mut out = vec![Vec::new(); steps];
        let mut down: Option<usize> = None;
        for (i, step) in out.iter_mut().enumerate() {
            if rng.below(3) != 0 {
                continue;
            }
            let app = rng.below(APPS.len() as u64) as usize;
            let fault = match rng.below(9) {
                0 | 1 => Fault::Crash {
                    app,
                    count: 1 + rng.below(2) as usize,
                },
                2 => match down {
                    None if i + 3 < steps => {
                        let zone = rng.below(ZONES as u64) as usize;
                        down = Some(zone);
                        Fault::ZoneDown { zone }
                    }
                    Some(zone) => {
                        down = None;
                        Fault::ZoneUp { zone }
                    }
                    None => Fault::Throttle { calls: 2 },
                },
                3 => Fault::Throttle {
                    calls: 1 + rng.below(6) as u32,
                },
                4 => Fault::LbRefuse {
                    applies: 1 + rng.below(3) as u32,
                },
                5 => Fault::DocFail {
                    calls: 1 + rng.below(4) as u32,
                },
                6 => Fault::BadRevision { app },
                7 => Fault::GoodRevision { app },
                _ => Fault::Scale {
                    app,
                    replicas: 1 + rng.below(5) as u32,
                },
            };
            step.push(fault);
        }
        if let Some(zone) = down {
            out.last_mut()
                .expect("schedules have steps")
                .push(Fault::ZoneUp { zone });
        }
        Self { seed, steps: out }
    }
}

/// An invariant that did not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The schedule's seed (replay with it).
    pub seed: u64,
    /// The pass it was found after.
    pub pass: u64,
    /// Which invariant, in words.
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} pass {}: {} (replay: ion_core::sim::run(&Schedule::generate({}, ..), ..))",
            self.seed, self.pass, self.what, self.seed
        )
    }
}

impl std::error::Error for Violation {}

/// What a simulation run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimReport {
    /// Passes run.
    pub passes: u64,
    /// Passes the settle phase needed.
    pub settle_passes: u64,
    /// Instances launched in total.
    pub launches: u64,
    /// Rollbacks seen.
    pub rollbacks: u32,
    /// A digest of the run (equal seeds give equal traces).
    pub trace: Vec<String>,
}

/// Options of a run.
#[derive(Clone, Copy, Debug)]
pub struct SimOptions {
    /// Simulated time between passes.
    pub pass_interval: Duration,
    /// Passes allowed after faults stop before "did not converge" is a violation.
    pub settle_limit: u64,
    /// The planner to run (replace with a broken one to test the checker).
    pub plan_fn: Option<PlanFn>,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            pass_interval: Duration::from_secs(10),
            settle_limit: 250,
            plan_fn: None,
        }
    }
}

struct World {
    compute: InMemoryCompute,
    lb: InMemoryLoadBalancer,
    docs: InMemoryDocumentStore,
    probe: FakeProbe,
    platform: Platform,
    clock: TokioClock,
    specs: Vec<AppSpec>,
    bad: BTreeSet<(usize, u64)>,
    pending: Vec<Fault>,
    seed: u64,
}

fn spec(i: usize, version: u64) -> AppSpec {
    let (tenant, app, replicas, surge, unavail) = APPS[i];
    AppSpec {
        tenant: TenantId::parse(tenant).expect("literal"),
        app: AppId::parse(app).expect("literal"),
        version: Version(version),
        artifact: ArtifactRef {
            id: ArtifactId::parse(&format!("art-{app}-{version}")).expect("valid"),
            sha256: Sha256Digest::of(format!("{app}{version}").as_bytes()),
            length: 1,
        },
        replicas,
        hostnames: vec![Hostname::parse(&format!("{app}.{tenant}.example")).expect("valid")],
        port: 8080,
        readiness_path: HttpPath::parse("/healthz").expect("valid"),
        max_surge: surge,
        max_unavailable: unavail,
    }
}

impl World {
    fn violation(&self, pass: u64, what: String) -> Violation {
        Violation {
            seed: self.seed,
            pass,
            what,
        }
    }

    async fn apply(&mut self, fault: Fault) {
        let zones: Vec<Zone> = (0..ZONES)
            .map(|z| Zone::parse(&format!("zone-{}", (b'a' + z as u8) as char)).expect("valid"))
            .collect();
        match fault {
            Fault::Crash { app, count } => {
                let filter = InstanceFilter {
                    tenant: Some(self.specs[app].tenant.clone()),
                    app: Some(self.specs[app].app.clone()),
                    include_gone: false,
                };
                let list = self.compute.describe(&filter).await.unwrap_or_default();
                for i in list.iter().take(count) {
                    let _ = self.compute.crash(&i.id);
                }
            }
            Fault::ZoneDown { zone } => {
                let _ = self.compute.zone_down(&zones[zone]);
            }
            Fault::ZoneUp { zone } => {
                let _ = self.compute.zone_up(&zones[zone]);
            }
            Fault::Throttle { calls } => {
                self.compute
                    .faults()
                    .fail_next(calls, ErrorKind::RateLimited);
            }
            Fault::LbRefuse { applies } => self.lb.refuse_next_apply(applies),
            Fault::DocFail { calls } => {
                self.docs.faults().fail_next(calls, ErrorKind::Unavailable);
            }
            Fault::BadRevision { app } | Fault::GoodRevision { app } => {
                let next = self.specs[app].version.0 + 1;
                let mut s = self.specs[app].clone();
                s.version = Version(next);
                s.artifact = spec(app, next).artifact;
                if matches!(fault, Fault::BadRevision { .. }) {
                    // It crashes as soon as it runs, and never answers its probe (so a crash
                    // the simulation misses under throttling still shows as a liveness failure).
                    self.bad.insert((app, next));
                    self.probe.set_version(
                        &s.app,
                        next,
                        crate::control::health::ProbeResult::Unreachable,
                    );
                }
                match self.platform.deploy(s.clone()).await {
                    Ok(()) => self.specs[app] = s,
                    Err(_) => self.pending.push(fault),
                }
            }
            Fault::Scale { app, replicas } => {
                let s = &self.specs[app];
                match self.platform.scale(&s.tenant, &s.app, replicas).await {
                    Ok(()) => self.specs[app].replicas = replicas,
                    Err(_) => self.pending.push(fault),
                }
            }
        }
    }

    /// Crash-loops every running instance of a bad revision.
    async fn crash_bad(&self) {
        let all = self
            .compute
            .describe(&InstanceFilter::default())
            .await
            .unwrap_or_default();
        for i in all {
            let ix = self.specs.iter().position(|s| s.app == i.app);
            if let Some(ix) = ix {
                if self.bad.contains(&(ix, i.version.0)) {
                    let _ = self.compute.crash(&i.id);
                }
            }
        }
    }

    async fn check_pass(
        &self,
        report: &crate::control::platform::TickReport,
    ) -> Result<(), Violation> {
        let pass = report.pass;
        let desired = self.platform.desired().await;
        // Launch bound: replicas + surge.
        let now_active = self
            .compute
            .describe(&InstanceFilter::default())
            .await
            .unwrap_or_default();
        for d in &desired {
            let launched = report
                .plan
                .launches
                .iter()
                .filter(|l| l.tenant == d.spec.tenant && l.app == d.spec.app)
                .count();
            if launched > 0 {
                let active = now_active
                    .iter()
                    .filter(|i| i.tenant == d.spec.tenant && i.app == d.spec.app)
                    .filter(|i| i.state.is_active())
                    .count() as u32;
                if active > d.spec.replicas + d.spec.max_surge {
                    return Err(self.violation(
                        pass,
                        format!(
                            "{}/{} has {active} instances after launching, above {} + {}",
                            d.spec.tenant, d.spec.app, d.spec.replicas, d.spec.max_surge
                        ),
                    ));
                }
            }
        }
        // Stops of ready instances (not liveness, not undeploy) keep min-available.
        let min_avail: BTreeMap<(&TenantId, &AppId), u32> = desired
            .iter()
            .map(|d| ((&d.spec.tenant, &d.spec.app), d.min_available()))
            .collect();
        let observed = self.platform.last_observed().await;
        let mut ready: BTreeMap<(&TenantId, &AppId), u32> = BTreeMap::new();
        for o in &observed {
            if o.instance.state.is_active() && o.health == Some(HealthStatus::Ready) {
                *ready
                    .entry((&o.instance.tenant, &o.instance.app))
                    .or_default() += 1;
            }
        }
        let mut stopped_ready: BTreeMap<(&TenantId, &AppId), u32> = BTreeMap::new();
        for t in &report.plan.terminations {
            if matches!(
                t.reason,
                TerminationReason::LivenessFailed | TerminationReason::Undeployed
            ) {
                continue;
            }
            let was_ready = observed.iter().any(|o| {
                o.instance.id == t.instance
                    && o.instance.state.is_active()
                    && o.health == Some(HealthStatus::Ready)
            });
            if was_ready {
                *stopped_ready.entry((&t.tenant, &t.app)).or_default() += 1;
            }
        }
        for (k, n) in &stopped_ready {
            let have = ready.get(k).copied().unwrap_or(0);
            let min = min_avail.get(k).copied().unwrap_or(0);
            if have - n < min {
                return Err(self.violation(
                    pass,
                    format!(
                        "{}/{} stopped {n} ready of {have}, below min-available {min}",
                        k.0, k.1
                    ),
                ));
            }
        }
        // Routes: what the load balancer serves is running and ready (when the last apply
        // succeeded; a refused apply keeps the previous table by contract).
        let status = self.platform.router_status().await;
        if status.failures == 0 {
            if let Some(table) = self.lb.live_table() {
                for route in table.routes() {
                    for b in &route.backends {
                        let state = self.compute.instance(&b.instance).map(|i| i.state);
                        let ready = observed.iter().any(|o| {
                            o.instance.id == b.instance && o.health == Some(HealthStatus::Ready)
                        });
                        if state != Some(InstanceState::Running) || !ready {
                            return Err(self.violation(
                                pass,
                                format!(
                                    "route table serves {} for {}/{} which is {state:?}, ready {ready}",
                                    b.instance, route.tenant, route.app
                                ),
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    async fn converged(&self) -> Option<String> {
        let desired = self.platform.desired().await;
        let all = self
            .compute
            .describe(&InstanceFilter::default())
            .await
            .ok()?;
        let observed = self.platform.last_observed().await;
        for d in &desired {
            let mine: Vec<_> = all
                .iter()
                .filter(|i| i.tenant == d.spec.tenant && i.app == d.spec.app)
                .collect();
            if mine.len() as u32 != d.spec.replicas {
                return Some(format!(
                    "{}/{} runs {} of {}",
                    d.spec.tenant,
                    d.spec.app,
                    mine.len(),
                    d.spec.replicas
                ));
            }
            if let Some(i) = mine.iter().find(|i| i.version != d.spec.version) {
                return Some(format!(
                    "{}/{} still runs {}",
                    d.spec.tenant, d.spec.app, i.version
                ));
            }
            let not_ready = mine.iter().any(|i| {
                !observed
                    .iter()
                    .any(|o| o.instance.id == i.id && o.health == Some(HealthStatus::Ready))
            });
            if not_ready {
                return Some(format!("{}/{} not all ready", d.spec.tenant, d.spec.app));
            }
            if d.spec.replicas as usize >= ZONES {
                let zones: BTreeSet<&Zone> = mine.iter().map(|i| &i.zone).collect();
                if zones.len() < ZONES {
                    return Some(format!(
                        "{}/{} has {} instances in only {} zones",
                        d.spec.tenant,
                        d.spec.app,
                        d.spec.replicas,
                        zones.len()
                    ));
                }
            }
            let mut per_zone: BTreeMap<&Zone, u32> = BTreeMap::new();
            for i in &mine {
                *per_zone.entry(&i.zone).or_default() += 1;
            }
            let max = per_zone.values().max().copied().unwrap_or(0);
            let min = if per_zone.len() < ZONES {
                0
            } else {
                per_zone.values().min().copied().unwrap_or(0)
            };
            if max > min + 1 && d.spec.replicas as usize >= ZONES {
                return Some(format!(
                    "{}/{} spread {per_zone:?}",
                    d.spec.tenant, d.spec.app
                ));
            }
        }
        // The route table serves exactly the ready instances.
        if let Some(table) = self.lb.live_table() {
            for d in &desired {
                let host = &d.spec.hostnames[0];
                let n = table.route_for(host).map(|r| r.backends.len()).unwrap_or(0);
                if n as u32 != d.spec.replicas {
                    return Some(format!("{host} routes {n} backends of {}", d.spec.replicas));
                }
            }
        } else {
            return Some("no route table live".to_owned());
        }
        None
    }
}

/// Runs `schedule` and then settles; `Err` on the first invariant that does not hold. Run on a
/// tokio runtime with paused time (`start_paused`), or simulated hours take real hours.
pub async fn run(schedule: &Schedule, options: SimOptions) -> Result<SimReport, Violation> {
    let zones: Vec<Zone> = (0..ZONES)
        .map(|z| Zone::parse(&format!("zone-{}", (b'a' + z as u8) as char)).expect("valid"))
        .collect();
    let compute = InMemoryCompute::new(zones);
    let lb = InMemoryLoadBalancer::new();
    let docs = InMemoryDocumentStore::new();
    let probe = FakeProbe::new();
    let clock = TokioClock::starting_at(Timestamp::from_millis(1_800_000_000_000));
    let mut builder = Platform::builder()
        .compute(Arc::new(compute.clone()))
        .documents(Arc::new(docs.clone()))
        .blobs(Arc::new(InMemoryBlobStore::new()))
        .artifacts(Arc::new(InMemoryArtifactStore::new()))
        .logs(Arc::new(InMemoryLogIndex::new()))
        .lb(Arc::new(lb.clone()))
        .probe(Arc::new(probe.clone()))
        .clock(Arc::new(clock))
        .planner_config(PlannerConfig {
            startup_grace: Duration::from_secs(60),
            ..PlannerConfig::default()
        })
        .health_config(HealthConfig {
            startup_grace: Duration::from_secs(60),
            ..HealthConfig::default()
        })
        .rollout_policy(RolloutPolicy {
            progress_deadline: Duration::from_secs(300),
            crash_budget: 3,
        })
        .retry_policy(RetryPolicy {
            attempts: 2,
            base: Duration::from_millis(100),
        });
    if let Some(f) = options.plan_fn {
        builder = builder.plan_fn(f);
    }
    let platform = builder.build().expect("every backend is set");
    let mut world = World {
        compute,
        lb,
        docs,
        probe,
        platform,
        clock,
        specs: (0..APPS.len()).map(|i| spec(i, 1)).collect(),
        bad: BTreeSet::new(),
        pending: Vec::new(),
        seed: schedule.seed,
    };
    for s in world.specs.clone() {
        world
            .platform
            .deploy(s)
            .await
            .expect("initial deploys succeed on a fault-free store");
    }
    let mut report = SimReport::default();
    let step_pass = |world: &World| world.compute.set_now(world.clock.now());
    let steps = schedule.steps.len();
    let mut settled_for = 0;
    let mut last_deferred = String::new();
    let mut settle = 0u64;
    for step in 0.. {
        let faulting = step < steps;
        if faulting {
            let mut todo: Vec<Fault> = std::mem::take(&mut world.pending);
            todo.extend(schedule.steps[step].iter().cloned());
            for f in todo {
                world.apply(f).await;
            }
        } else {
            if step == steps {
                world.compute.faults().clear();
                world.docs.faults().clear();
                for z in 0..ZONES {
                    world.apply(Fault::ZoneUp { zone: z }).await;
                }
            }
            let todo: Vec<Fault> = std::mem::take(&mut world.pending);
            for f in todo {
                world.apply(f).await;
            }
            settle += 1;
        }
        world.crash_bad().await;
        step_pass(&world);
        let tick = world.platform.tick().await;
        report.passes += 1;
        match tick {
            Ok(t) => {
                last_deferred = format!("{:?}", t.plan.deferred);
                world.check_pass(&t).await?;
                report.launches += t.launched as u64;
                for (_, _, st) in &t.rollouts {
                    if *st == crate::control::deploy::RolloutState::RolledBack {
                        report.rollbacks += 1;
                    }
                }
                report.trace.push(format!(
                    "{} +{} -{} !{} {:?}",
                    t.pass,
                    t.launched,
                    t.terminated,
                    t.failed,
                    t.routes.as_ref().map(|r| r.is_ok())
                ));
            }
            Err(e) => report
                .trace
                .push(format!("{} err {}", report.passes, e.kind())),
        }
        // On a paused runtime the clock jumps ahead at once.
        tokio::time::sleep(options.pass_interval).await;
        if !faulting {
            match world.converged().await {
                None => settled_for += 1,
                Some(why) => {
                    settled_for = 0;
                    if settle >= options.settle_limit {
                        return Err(world.violation(
                            report.passes,
                            format!(
                                "not converged {settle} passes after faults stopped: {why}; \
                                 deferred: {last_deferred}; desired: {:?}",
                                world
                                    .platform
                                    .desired()
                                    .await
                                    .iter()
                                    .map(|d| (
                                        d.spec.app.to_string(),
                                        d.spec.version,
                                        d.spec.replicas
                                    ))
                                    .collect::<Vec<_>>()
                            ),
                        ));
                    }
                }
            }
            if settled_for >= 3 {
                break;
            }
        }
    }
    report.settle_passes = settle;
    // Every launch and termination has its audit event.
    world
        .platform
        .audit()
        .flush()
        .await
        .map_err(|e| world.violation(report.passes, format!("audit flush failed: {e}")))?;
    let events = world
        .platform
        .audit()
        .read_all()
        .await
        .map_err(|e| world.violation(report.passes, format!("audit read failed: {e}")))?;
    let mut launched = BTreeSet::new();
    let mut terminated = BTreeSet::new();
    for e in &events {
        match &e.kind {
            AuditKind::Launched { instance, .. } => {
                launched.insert(instance.clone());
            }
            AuditKind::Terminated { instance, .. } => {
                terminated.insert(instance.clone());
            }
            _ => {}
        }
    }
    let all = world
        .compute
        .describe(&InstanceFilter {
            include_gone: true,
            ..InstanceFilter::default()
        })
        .await
        .map_err(|e| world.violation(report.passes, e.to_string()))?;
    for i in &all {
        if !launched.contains(&i.id) {
            return Err(world.violation(
                report.passes,
                format!("instance {} has no launch event", i.id),
            ));
        }
        if i.state == InstanceState::Terminated && !terminated.contains(&i.id) {
            return Err(world.violation(
                report.passes,
                format!("instance {} was terminated without an event", i.id),
            ));
        }
    }
    let _ = world.lb.live().await;
    Ok(report)
}
