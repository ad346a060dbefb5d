//! The `Platform` facade: one `Arc<dyn …>` per backend trait, and the control loop over them.
//!
//! A pass ([`Platform::tick`]) observes zones and instances, probes health, plans, pushes the
//! route table (without the instances about to be stopped, so they leave the load balancer
//! first), executes the plan, judges rollouts and autoscaling, and writes the audit log.
//! [`Platform::run`] repeats passes on a periodic sweep and at once when desired state changes.
//! Desired state lives in the `apps` collection of the `DocumentStore`; a platform recovered from
//! the store starts with the freshness gate closed (it may start instances, never stop them) until
//! [`Platform::reassert_desired`] is called.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, Notify};

use crate::artifact::ArtifactStore;
use crate::blob::BlobStore;
use crate::compute::{Compute, InstanceFilter};
use crate::control::autoscaler::{AutoscalePolicy, Autoscaler, StatsSource};
use crate::control::deploy::{RollbackReason, Rollout, RolloutPolicy, RolloutState, RolloutStep};
use crate::control::health::{probe_all, HealthConfig, HealthProbe, HealthTracker, HttpProbe};
use crate::control::planner::{
    plan, ActionKind, DeferReason, DesiredApp, Observed, Plan, PlannerConfig, PlannerState,
};
use crate::control::reconciler::{
    with_retry, AuditEvent, AuditKind, AuditLog, Reconciler, RetryPolicy,
};
use crate::control::router::{build_routes, RouteSync, Router, RouterStatus};
use crate::document::{DocQuery, DocumentBody, DocumentStore, DocumentStoreExt};
use crate::error::{Error, ErrorKind, Result};
use crate::lb::LoadBalancer;
use crate::log_index::{LogIndex, LogPage, LogQuery};
use crate::model::{AppSpec, InstanceState, RouteTable};
use crate::name::{AppId, CollectionName, DocumentId, TenantId};
use crate::time::Timestamp;

/// The planning function a platform runs: [`plan`] unless replaced (simulations swap in broken
/// planners to prove their invariant checks catch them).
pub type PlanFn =
    fn(&crate::control::planner::PlanInput<'_>, &PlannerConfig, &mut PlannerState) -> Plan;

/// The collection desired apps are stored in.
pub const APPS_COLLECTION: &str = "apps";

/// Where the control plane takes the time from.
pub trait Clock: Send + Sync + Debug + 'static {
    /// Now.
    fn now(&self) -> Timestamp;
}

/// The wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// Time from tokio's clock, starting at `base`: with a paused runtime, simulated time.
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    base: Timestamp,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock reading `base` now and advancing with tokio time.
    pub fn starting_at(base: Timestamp) -> Self {
        Self {
            base,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        self.base.plus(self.start.elapsed())
    }
}

type AppKey = (TenantId, AppId);

#[derive(Clone, Debug, Serialize, Deserialize)]
struct AppRecord {
    desired: DesiredApp,
}

/// Builds a [`Platform`]; every backend is required.
#[derive(Debug, Default)]
pub struct PlatformBuilder {
    compute: Option<Arc<dyn Compute>>,
    documents: Option<Arc<dyn DocumentStore>>,
    blobs: Option<Arc<dyn BlobStore>>,
    artifacts: Option<Arc<dyn ArtifactStore>>,
    logs: Option<Arc<dyn LogIndex>>,
    lb: Option<Arc<dyn LoadBalancer>>,
    probe: Option<Arc<dyn HealthProbe>>,
    stats: Option<Arc<dyn StatsSource>>,
    clock: Option<Arc<dyn Clock>>,
    planner: PlannerConfig,
    health: HealthConfig,
    rollout: RolloutPolicy,
    retry: RetryPolicy,
    concurrency: Option<usize>,
    sweep: Option<Duration>,
    plan_fn: Option<PlanFn>,
}

macro_rules! setter {
    ($(#[$m:meta])* $name:ident: $t:ty) => {
        $(#[$m])*
        pub fn $name(mut self, v: $t) -> Self {
            self.$name = Some(v);
            self
        }
    };
}

impl PlatformBuilder {
    setter!(/// Instances.
        compute: Arc<dyn Compute>);
    setter!(/// Desired state, audit log.
        documents: Arc<dyn DocumentStore>);
    setter!(/// Snapshots.
        blobs: Arc<dyn BlobStore>);
    setter!(/// App binaries.
        artifacts: Arc<dyn ArtifactStore>);
    setter!(/// Log search.
        logs: Arc<dyn LogIndex>);
    setter!(/// Routing.
        lb: Arc<dyn LoadBalancer>);
    setter!(/// Readiness and liveness (default: [`HttpProbe`]).
        probe: Arc<dyn HealthProbe>);
    setter!(/// Autoscaling metrics (default: none, autoscaling off).
        stats: Arc<dyn StatsSource>);
    setter!(/// Time (default: the system clock).
        clock: Arc<dyn Clock>);

    /// Planner knobs.
    pub fn planner_config(mut self, c: PlannerConfig) -> Self {
        self.planner = c;
        self
    }
    /// Health thresholds.
    pub fn health_config(mut self, c: HealthConfig) -> Self {
        self.health = c;
        self
    }
    /// Rollout deadline and crash budget.
    pub fn rollout_policy(mut self, p: RolloutPolicy) -> Self {
        self.rollout = p;
        self
    }
    /// Retries of transient backend errors within a pass.
    pub fn retry_policy(mut self, p: RetryPolicy) -> Self {
        self.retry = p;
        self
    }
    /// Concurrent backend calls per pass (default 16).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = Some(n);
        self
    }
    /// Replaces the planner (for mutation tests of invariant checkers; default [`plan`]).
    pub fn plan_fn(mut self, f: PlanFn) -> Self {
        self.plan_fn = Some(f);
        self
    }
    /// Period of the background sweep in [`Platform::run`] (default 10 s).
    pub fn sweep_interval(mut self, d: Duration) -> Self {
        self.sweep = Some(d);
        self
    }

    /// Builds the platform; a missing backend is `InvalidConfig` naming it.
    pub fn build(self) -> Result<Platform> {
        let missing =
            |what: &str| Error::invalid_config(format!("platform needs a {what} backend"));
        let compute = self.compute.ok_or_else(|| missing("compute"))?;
        let documents = self.documents.ok_or_else(|| missing("documents"))?;
        let blobs = self.blobs.ok_or_else(|| missing("blobs"))?;
        let artifacts = self.artifacts.ok_or_else(|| missing("artifacts"))?;
        let logs = self.logs.ok_or_else(|| missing("logs"))?;
        let lb = self.lb.ok_or_else(|| missing("lb"))?;
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let probe = self.probe.unwrap_or_else(|| Arc::new(HttpProbe::default()));
        let concurrency = self.concurrency.unwrap_or(16);
        let audit = AuditLog::new(documents.clone(), clock.now().as_millis().max(0) as u64);
        Ok(Platform {
            inner: Arc::new(Inner {
                reconciler: Reconciler::new(compute.clone(), concurrency, self.retry),
                router_lb: lb.clone(),
                compute,
                documents,
                blobs,
                artifacts,
                logs,
                probe,
                stats: self.stats,
                clock,
                audit,
                wake: Notify::new(),
                planner_config: self.planner,
                rollout_policy: self.rollout,
                retry: self.retry,
                concurrency,
                sweep: self.sweep.unwrap_or(Duration::from_secs(10)),
                plan_fn: self.plan_fn.unwrap_or(plan),
                state: Mutex::new(State {
                    desired: BTreeMap::new(),
                    rollouts: BTreeMap::new(),
                    autoscale: BTreeMap::new(),
                    quotas: BTreeMap::new(),
                    planner: PlannerState::new(),
                    health: HealthTracker::new(self.health),
                    router: Router::new(lb),
                    fresh: true,
                    last_deferred: HashSet::new(),
                    dirty: BTreeMap::new(),
                    last_observed: Vec::new(),
                    pass: 0,
                }),
            }),
        })
    }
}

#[derive(Debug)]
struct State {
    desired: BTreeMap<AppKey, DesiredApp>,
    rollouts: BTreeMap<AppKey, Rollout>,
    autoscale: BTreeMap<AppKey, (AutoscalePolicy, Autoscaler)>,
    quotas: BTreeMap<TenantId, u32>,
    planner: PlannerState,
    health: HealthTracker,
    router: Router,
    fresh: bool,
    last_deferred: HashSet<(AppKey, ActionKind, String)>,
    /// Desired records to write (Some) or delete (None) in the store.
    dirty: BTreeMap<AppKey, Option<DesiredApp>>,
    last_observed: Vec<Observed>,
    pass: u64,
}

#[derive(Debug)]
struct Inner {
    compute: Arc<dyn Compute>,
    documents: Arc<dyn DocumentStore>,
    blobs: Arc<dyn BlobStore>,
    artifacts: Arc<dyn ArtifactStore>,
    logs: Arc<dyn LogIndex>,
    router_lb: Arc<dyn LoadBalancer>,
    probe: Arc<dyn HealthProbe>,
    stats: Option<Arc<dyn StatsSource>>,
    clock: Arc<dyn Clock>,
    audit: AuditLog,
    reconciler: Reconciler,
    wake: Notify,
    planner_config: PlannerConfig,
    rollout_policy: RolloutPolicy,
    retry: RetryPolicy,
    concurrency: usize,
    sweep: Duration,
    plan_fn: PlanFn,
    state: Mutex<State>,
}

/// What one pass did.
#[derive(Debug, Default)]
pub struct TickReport {
    /// The pass number.
    pub pass: u64,
    /// The plan of the pass.
    pub plan: Plan,
    /// Instances launched.
    pub launched: usize,
    /// Instances terminated.
    pub terminated: usize,
    /// Launches or terminations that failed (retried by later passes).
    pub failed: usize,
    /// The route sync, or its error.
    pub routes: Option<std::result::Result<RouteSync, String>>,
    /// Rollouts that completed, rolled back or failed in this pass.
    pub rollouts: Vec<(TenantId, AppId, RolloutState)>,
    /// Audit events still queued after the pass (the store refused them for now).
    pub audit_pending: usize,
}

/// The platform: desired apps kept running across zones, routed, audited.
#[derive(Clone, Debug)]
pub struct Platform {
    inner: Arc<Inner>,
}

fn doc_id(key: &AppKey) -> DocumentId {
    DocumentId::parse(&format!("{}.{}", key.0, key.1)).expect("tenant.app is a valid document id")
}

fn apps_collection() -> CollectionName {
    CollectionName::parse(APPS_COLLECTION).expect("valid collection name")
}

impl Platform {
    /// Starts building a platform.
    pub fn builder() -> PlatformBuilder {
        PlatformBuilder::default()
    }

    /// The blob store (snapshots).
    pub fn blobs(&self) -> &Arc<dyn BlobStore> {
        &self.inner.blobs
    }

    /// The artifact store.
    pub fn artifacts(&self) -> &Arc<dyn ArtifactStore> {
        &self.inner.artifacts
    }

    /// The document store.
    pub fn documents(&self) -> &Arc<dyn DocumentStore> {
        &self.inner.documents
    }

    /// The audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.inner.audit
    }

    fn event(&self, pass: u64, key: Option<&AppKey>, kind: AuditKind) -> AuditEvent {
        AuditEvent {
            at: self.inner.clock.now(),
            pass,
            tenant: key.map(|k| k.0.clone()),
            app: key.map(|k| k.1.clone()),
            kind,
        }
    }

    fn check_quota(state: &State, spec: &AppSpec) -> Result<()> {
        let Some(limit) = state.quotas.get(&spec.tenant) else {
            return Ok(());
        };
        let key = (spec.tenant.clone(), spec.app.clone());
        let others: u32 = state
            .desired
            .iter()
            .filter(|(k, _)| k.0 == spec.tenant && **k != key)
            .map(|(_, d)| d.spec.replicas + d.spec.max_surge)
            .sum();
        let need = others + spec.replicas + spec.max_surge;
        if need > *limit {
            return Err(Error::invalid_input(format!(
                "tenant {} instance quota is {limit}; this needs {need} including surge headroom",
                spec.tenant
            )));
        }
        Ok(())
    }

    /// Makes `spec` the desired state of its app. A new version of a running app rolls out with
    /// zero downtime and is rolled back automatically if it fails. Refused up front when the
    /// tenant's quota cannot hold the app including its surge headroom, or a hostname belongs to
    /// another app.
    pub async fn deploy(&self, spec: AppSpec) -> Result<()> {
        self.deploy_app(DesiredApp::new(spec)).await
    }

    /// Like [`deploy`](Self::deploy) with an explicit crash policy.
    pub async fn deploy_app(&self, app: DesiredApp) -> Result<()> {
        app.spec.validate()?;
        let key = (app.spec.tenant.clone(), app.spec.app.clone());
        let mut state = self.inner.state.lock().await;
        for (k, d) in &state.desired {
            if *k != key
                && d.spec
                    .hostnames
                    .iter()
                    .any(|h| app.spec.hostnames.contains(h))
            {
                return Err(Error::invalid_input(format!(
                    "a hostname of {}/{} belongs to {}/{}",
                    key.0, key.1, k.0, k.1
                )));
            }
        }
        Self::check_quota(&state, &app.spec)?;
        self.store_desired(&key, Some(&app)).await?;
        let now = self.inner.clock.now();
        let pass = state.pass;
        let previous = state.desired.get(&key).cloned();
        if let Some(prev) = &previous {
            if prev.spec.version != app.spec.version {
                // Roll back to what last completed, not to a revision still rolling out.
                let last_good = match state.rollouts.get(&key) {
                    Some(r) if r.state == RolloutState::Progressing => r.last_good.clone(),
                    _ => Some(prev.spec.clone()),
                };
                let rollout =
                    Rollout::start(app.spec.clone(), last_good, now, self.inner.rollout_policy);
                state.rollouts.insert(key.clone(), rollout);
            }
        }
        state.desired.insert(key.clone(), app.clone());
        self.inner.audit.record(self.event(
            pass,
            Some(&key),
            AuditKind::DesiredChanged {
                version: Some(app.spec.version),
                replicas: Some(app.spec.replicas),
                why: match previous {
                    None => "deployed".to_owned(),
                    Some(p) if p.spec.version != app.spec.version => {
                        format!("rolling out {} over {}", app.spec.version, p.spec.version)
                    }
                    Some(_) => "redeployed".to_owned(),
                },
            },
        ));
        drop(state);
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Changes an app's replica count.
    pub async fn scale(&self, tenant: &TenantId, app: &AppId, replicas: u32) -> Result<()> {
        let key = (tenant.clone(), app.clone());
        let mut state = self.inner.state.lock().await;
        let mut d = state
            .desired
            .get(&key)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("app {tenant}/{app} is not deployed")))?;
        let from = d.spec.replicas;
        d.spec.replicas = replicas;
        d.spec.validate()?;
        Self::check_quota(&state, &d.spec)?;
        self.store_desired(&key, Some(&d)).await?;
        if let Some(r) = state.rollouts.get_mut(&key) {
            r.target.replicas = replicas;
            if let Some(g) = r.last_good.as_mut() {
                g.replicas = replicas;
            }
        }
        state.desired.insert(key.clone(), d);
        let pass = state.pass;
        self.inner.audit.record(self.event(
            pass,
            Some(&key),
            AuditKind::DesiredChanged {
                version: None,
                replicas: Some(replicas),
                why: format!("scaled from {from} to {replicas}"),
            },
        ));
        drop(state);
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Stops running an app (its instances are terminated by the next pass).
    pub async fn undeploy(&self, tenant: &TenantId, app: &AppId) -> Result<()> {
        let key = (tenant.clone(), app.clone());
        let mut state = self.inner.state.lock().await;
        self.store_desired(&key, None).await?;
        state.desired.remove(&key);
        state.rollouts.remove(&key);
        state.autoscale.remove(&key);
        let pass = state.pass;
        self.inner.audit.record(self.event(
            pass,
            Some(&key),
            AuditKind::DesiredChanged {
                version: None,
                replicas: None,
                why: "undeployed".to_owned(),
            },
        ));
        drop(state);
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Cancels a rollout: the app converges back to its last good revision.
    pub async fn cancel_deploy(&self, tenant: &TenantId, app: &AppId) -> Result<()> {
        let key = (tenant.clone(), app.clone());
        let mut state = self.inner.state.lock().await;
        let pass = state.pass;
        let step = match state.rollouts.get_mut(&key) {
            Some(r) if r.state == RolloutState::Progressing => r.abort(RollbackReason::Cancelled),
            _ => {
                return Err(Error::not_found(format!(
                    "no rollout of {tenant}/{app} in progress"
                )))
            }
        };
        self.apply_rollout_step(&mut state, &key, step, pass);
        drop(state);
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Sets a tenant's instance quota (checked at deploy and at plan time, surge included).
    pub async fn set_quota(&self, tenant: &TenantId, max_instances: u32) {
        self.inner
            .state
            .lock()
            .await
            .quotas
            .insert(tenant.clone(), max_instances);
    }

    /// Scales an app automatically from the stats source.
    pub async fn set_autoscale(&self, tenant: &TenantId, app: &AppId, policy: AutoscalePolicy) {
        self.inner
            .state
            .lock()
            .await
            .autoscale
            .insert((tenant.clone(), app.clone()), (policy, Autoscaler::new()));
    }

    /// Searches one tenant's logs.
    pub async fn search_logs(&self, tenant: &TenantId, query: &LogQuery) -> Result<LogPage> {
        self.inner.logs.search(tenant, query).await
    }

    /// The desired apps, sorted.
    pub async fn desired(&self) -> Vec<DesiredApp> {
        self.inner
            .state
            .lock()
            .await
            .desired
            .values()
            .cloned()
            .collect()
    }

    /// The rollout of an app, if one was started.
    pub async fn rollout(&self, tenant: &TenantId, app: &AppId) -> Option<Rollout> {
        self.inner
            .state
            .lock()
            .await
            .rollouts
            .get(&(tenant.clone(), app.clone()))
            .cloned()
    }

    /// What the router believes is live.
    pub async fn router_status(&self) -> RouterStatus {
        self.inner.state.lock().await.router.status().clone()
    }

    /// The route table last applied.
    pub async fn route_table(&self) -> Option<RouteTable> {
        self.inner.state.lock().await.router.last_table().cloned()
    }

    /// Instances and health as seen by the last pass.
    pub async fn last_observed(&self) -> Vec<Observed> {
        self.inner.state.lock().await.last_observed.clone()
    }

    /// Whether destructive actions are allowed (false after [`recover`](Self::recover) until
    /// [`reassert_desired`](Self::reassert_desired)).
    pub async fn is_fresh(&self) -> bool {
        self.inner.state.lock().await.fresh
    }

    /// Loads desired state from the store (after a restore or failover) and closes the freshness
    /// gate: passes may start instances but stop none until desired state is re-asserted.
    pub async fn recover(&self) -> Result<usize> {
        let docs = self
            .inner
            .documents
            .find_all(&apps_collection(), &DocQuery::default())
            .await?;
        let mut state = self.inner.state.lock().await;
        state.desired.clear();
        for d in &docs {
            let rec: AppRecord = d.body.to_typed()?;
            let key = (
                rec.desired.spec.tenant.clone(),
                rec.desired.spec.app.clone(),
            );
            state.desired.insert(key, rec.desired);
        }
        state.fresh = false;
        let pass = state.pass;
        self.inner.audit.record(self.event(
            pass,
            None,
            AuditKind::Note {
                what: format!(
                    "recovered {} desired apps; freshness gate closed",
                    docs.len()
                ),
            },
        ));
        Ok(docs.len())
    }

    /// Declares desired state complete: the freshness gate opens and stops are allowed again.
    pub async fn reassert_desired(&self) {
        let mut state = self.inner.state.lock().await;
        state.fresh = true;
        let pass = state.pass;
        self.inner.audit.record(self.event(
            pass,
            None,
            AuditKind::Note {
                what: "desired state re-asserted; freshness gate open".to_owned(),
            },
        ));
        drop(state);
        self.inner.wake.notify_one();
    }

    async fn store_desired(&self, key: &AppKey, app: Option<&DesiredApp>) -> Result<()> {
        let docs = &self.inner.documents;
        let coll = apps_collection();
        let id = doc_id(key);
        let retry = self.inner.retry;
        match app {
            None => with_retry(retry, || docs.delete(&coll, &id)).await,
            Some(app) => {
                let body = DocumentBody::from_serialize(&AppRecord {
                    desired: app.clone(),
                })?;
                with_retry(retry, || async {
                    match docs.get(&coll, &id).await {
                        Ok(doc) => docs
                            .update(&coll, &id, doc.revision, &body)
                            .await
                            .map(|_| ()),
                        Err(e) if e.kind() == ErrorKind::NotFound => {
                            match docs.insert(&coll, &id, &body).await {
                                // A retry whose first insert landed: update on the next try.
                                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                                    Err(Error::unavailable("insert raced; retry"))
                                }
                                r => r.map(|_| ()),
                            }
                        }
                        Err(e) => Err(e),
                    }
                })
                .await
            }
        }
    }

    fn apply_rollout_step(&self, state: &mut State, key: &AppKey, step: RolloutStep, pass: u64) {
        match step {
            RolloutStep::Continue | RolloutStep::Completed => {}
            RolloutStep::RollBack { to, reason } => {
                let mut d = state
                    .desired
                    .get(key)
                    .cloned()
                    .unwrap_or_else(|| DesiredApp::new(to.clone()));
                d.spec = to;
                self.inner.audit.record(self.event(
                    pass,
                    Some(key),
                    AuditKind::DesiredChanged {
                        version: Some(d.spec.version),
                        replicas: Some(d.spec.replicas),
                        why: format!("rolled back to {} ({reason:?})", d.spec.version),
                    },
                ));
                state.dirty.insert(key.clone(), Some(d.clone()));
                state.desired.insert(key.clone(), d);
            }
            RolloutStep::Fail { reason } => {
                self.inner.audit.record(self.event(
                    pass,
                    Some(key),
                    AuditKind::Note {
                        what: format!("rollout failed ({reason:?}) with no revision to return to"),
                    },
                ));
            }
        }
    }

    /// One pass of the control loop. Level-triggered: whatever a failed or missed pass left
    /// undone, the next one repairs.
    pub async fn tick(&self) -> Result<TickReport> {
        let inner = &self.inner;
        let mut state = inner.state.lock().await;
        state.pass += 1;
        let pass = state.pass;
        let now = inner.clock.now();
        let mut report = TickReport {
            pass,
            ..TickReport::default()
        };

        // Persist desired changes a previous pass could not write.
        let dirty: Vec<_> = state
            .dirty
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (key, d) in dirty {
            if self.store_desired(&key, d.as_ref()).await.is_ok() {
                state.dirty.remove(&key);
            }
        }

        let observe = async {
            let zones = with_retry(inner.retry, || inner.compute.zones()).await?;
            let filter = InstanceFilter {
                include_gone: true,
                ..InstanceFilter::default()
            };
            let instances = with_retry(inner.retry, || inner.compute.describe(&filter)).await?;
            Ok::<_, Error>((zones, instances))
        };
        let (zones, instances) = match observe.await {
            Ok(v) => v,
            Err(e) => {
                inner.audit.record(self.event(
                    pass,
                    None,
                    AuditKind::Note {
                        what: format!("observe failed, pass skipped: {e}"),
                    },
                ));
                let _ = inner.audit.flush().await;
                return Err(e);
            }
        };

        let specs: HashMap<AppKey, AppSpec> = state
            .desired
            .iter()
            .map(|(k, d)| (k.clone(), d.spec.clone()))
            .collect();
        let health = {
            let st = &mut *state;
            probe_all(
                &inner.probe,
                &mut st.health,
                &instances,
                &specs,
                now,
                inner.concurrency,
            )
            .await
        };
        let observed: Vec<Observed> = instances
            .into_iter()
            .map(|i| {
                let health = health.get(&i.id).copied();
                Observed {
                    instance: i,
                    health,
                }
            })
            .collect();

        // Autoscaling: adjust replicas before planning; every tick records why.
        if let Some(stats) = &inner.stats {
            let keys: Vec<AppKey> = state.autoscale.keys().cloned().collect();
            for key in keys {
                let Some(current) = state.desired.get(&key).map(|d| d.spec.replicas) else {
                    continue;
                };
                let s = stats.app_stats(&key.0, &key.1).await.ok().flatten();
                let Some((policy, scaler)) = state.autoscale.get_mut(&key) else {
                    continue;
                };
                let policy = *policy;
                let decision = scaler.recommend(&policy, current, s, now);
                inner.audit.record(self.event(
                    pass,
                    Some(&key),
                    AuditKind::Note {
                        what: format!(
                            "autoscale {} -> {}: {:?}",
                            decision.current, decision.desired, decision.reason
                        ),
                    },
                ));
                if decision.desired != current {
                    if let Some(d) = state.desired.get_mut(&key) {
                        d.spec.replicas = decision.desired;
                        let d = d.clone();
                        state.dirty.insert(key.clone(), Some(d));
                    }
                }
            }
        }

        let desired: Vec<DesiredApp> = state.desired.values().cloned().collect();
        let quotas = state.quotas.clone();
        let input = crate::control::planner::PlanInput {
            desired: &desired,
            observed: &observed,
            zones: &zones,
            now,
            quotas: &quotas,
            allow_terminations: state.fresh,
        };
        let mut the_plan = (inner.plan_fn)(&input, &inner.planner_config, &mut state.planner);

        // Routes first, without the instances about to stop: they leave the load balancer before
        // they go. If the table cannot be applied, nothing is stopped this pass.
        let stopping: HashSet<_> = the_plan
            .terminations
            .iter()
            .map(|t| t.instance.clone())
            .collect();
        let routable: Vec<Observed> = observed
            .iter()
            .filter(|o| !stopping.contains(&o.instance.id))
            .cloned()
            .collect();
        let routes = build_routes(&desired, &routable);
        match state.router.sync(routes).await {
            Ok(sync) => {
                if let RouteSync::Applied {
                    generation,
                    checksum,
                } = sync
                {
                    inner.audit.record(self.event(
                        pass,
                        None,
                        AuditKind::RoutesApplied {
                            generation,
                            checksum,
                        },
                    ));
                }
                report.routes = Some(Ok(sync));
            }
            Err(e) => {
                inner.audit.record(self.event(
                    pass,
                    None,
                    AuditKind::RoutesFailed {
                        error: e.to_string(),
                    },
                ));
                report.routes = Some(Err(e.to_string()));
                if !the_plan.terminations.is_empty() {
                    let mut held: BTreeMap<AppKey, u32> = BTreeMap::new();
                    for t in the_plan.terminations.drain(..) {
                        *held.entry((t.tenant, t.app)).or_default() += 1;
                    }
                    for ((tenant, app), count) in held {
                        the_plan.deferred.push(crate::control::planner::Deferred {
                            tenant,
                            app,
                            action: ActionKind::Terminate,
                            count,
                            reason: DeferReason::RoutesNotApplied,
                        });
                    }
                }
            }
        }

        // Deferred actions are recorded when they change, not every pass.
        let mut now_deferred = HashSet::new();
        for d in &the_plan.deferred {
            let tag = format!("{:?}", std::mem::discriminant(&d.reason));
            let k = ((d.tenant.clone(), d.app.clone()), d.action, tag);
            if !state.last_deferred.contains(&k) {
                inner.audit.record(self.event(
                    pass,
                    Some(&k.0),
                    AuditKind::Deferred {
                        action: d.action,
                        count: d.count,
                        reason: d.reason,
                    },
                ));
            }
            now_deferred.insert(k);
        }
        state.last_deferred = now_deferred;

        let exec = inner
            .reconciler
            .execute(&the_plan, &inner.audit, pass, now)
            .await;
        for (l, e) in &exec.failed_launches {
            state.planner.launch_failed(&l.tenant, &l.app);
            if let Some(zone) = e.zone() {
                state
                    .planner
                    .avoid_zone(zone.clone(), now.plus(Duration::from_secs(60)));
            }
        }
        for (l, instance) in &exec.launched {
            if !instance.state.is_active() {
                state
                    .planner
                    .note_gone(&l.tenant, &l.app, &l.idempotency_key);
            }
        }
        report.launched = exec.launched.len();
        report.terminated = exec.terminated.len();
        report.failed = exec.failed_launches.len() + exec.failed_terminations.len();

        // Judge rollouts with this pass's crashes.
        let mut crashes: HashMap<(TenantId, AppId, crate::model::Version), u32> = HashMap::new();
        for c in &the_plan.crashes {
            *crashes
                .entry((c.tenant.clone(), c.app.clone(), c.version))
                .or_default() += 1;
        }
        let keys: Vec<AppKey> = state.rollouts.keys().cloned().collect();
        for key in keys {
            let app_obs: Vec<&Observed> = observed
                .iter()
                .filter(|o| o.instance.tenant == key.0 && o.instance.app == key.1)
                .collect();
            let Some(r) = state.rollouts.get_mut(&key) else {
                continue;
            };
            let before = r.state;
            let n = crashes
                .get(&(key.0.clone(), key.1.clone(), r.version()))
                .copied()
                .unwrap_or(0);
            let step = r.evaluate(&app_obs, n, now);
            let after = r.state;
            if before != after {
                report.rollouts.push((key.0.clone(), key.1.clone(), after));
                if after == RolloutState::Complete {
                    inner.audit.record(self.event(
                        pass,
                        Some(&key),
                        AuditKind::Note {
                            what: format!("rollout of {} complete", r.version()),
                        },
                    ));
                }
            }
            self.apply_rollout_step(&mut state, &key, step, pass);
        }

        state.last_observed = observed;
        report.plan = the_plan;
        drop(state);
        if let Err(e) = inner.audit.flush().await {
            tracing::warn!(error = %e, pending = inner.audit.pending(), "audit flush deferred");
        }
        report.audit_pending = inner.audit.pending();
        Ok(report)
    }

    /// Runs passes until `shutdown` completes: at once when desired state changes, and every
    /// sweep interval regardless (the backstop for missed events).
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            if let Err(e) = self.tick().await {
                tracing::warn!(error = %e, "control pass failed");
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(self.inner.sweep) => {}
            }
        }
    }

    /// Instances of `tenant`/`app` that are active, as the compute backend reports now.
    pub async fn active_instances(&self, tenant: &TenantId, app: &AppId) -> Result<usize> {
        let filter = InstanceFilter {
            tenant: Some(tenant.clone()),
            app: Some(app.clone()),
            include_gone: false,
        };
        Ok(self
            .inner
            .compute
            .describe(&filter)
            .await?
            .iter()
            .filter(|i| i.state == InstanceState::Running || i.state == InstanceState::Pending)
            .count())
    }

    /// The load balancer the router drives.
    pub fn load_balancer(&self) -> &Arc<dyn LoadBalancer> {
        &self.inner.router_lb
    }
}
