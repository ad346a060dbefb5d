//! The planner: a pure function from desired and observed state to a plan with reasons.
//!
//! [`plan`] compares each desired app with the instances the compute backend reports and the
//! health the probes report, and returns launches and terminations, each with a typed reason,
//! plus [`Deferred`] entries saying why an action that the diff calls for was not taken (crash
//! back-off, quota, surge budget, herd control, no zone, freshness gate). It performs no I/O; the
//! only state it carries between passes is the [`PlannerState`] it is handed (crash records,
//! launch attempts, slow-start allowances, zones to avoid).
//!
//! Placement follows Diego's auction: the available zone with the fewest instances of the app.
//! Scale-down takes victims from the fullest zone (the Kubernetes gap), never takes ready
//! instances below the desired count, and never touches a starting instance outside the fullest
//! zone, so a surge-first rebalance is not undone before it is ready. When zones are uneven (a lost
//! zone came back), a budgeted rebalancer surges one instance into the emptiest zone; the normal
//! scale-down then retires one from the fullest once the new one is ready.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::compute::ZoneInfo;
use crate::control::backoff::{CrashPolicy, CrashRecord, RestartDecision};
use crate::control::health::HealthStatus;
use crate::model::{AppSpec, ArtifactRef, Instance, InstanceState, Sha256Digest, Version};
use crate::name::{AppId, IdempotencyKey, InstanceId, TenantId, Zone};
use crate::time::Timestamp;

/// One app the platform should keep running.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredApp {
    /// The version, size and routing wanted.
    pub spec: AppSpec,
    /// How crashing slots are restarted.
    #[serde(default)]
    pub crash_policy: CrashPolicy,
}

impl DesiredApp {
    /// `spec` with Diego's crash policy.
    pub fn new(spec: AppSpec) -> Self {
        Self {
            spec,
            crash_policy: CrashPolicy::diego(),
        }
    }

    /// The fewest ready instances a deploy or scale-down may leave.
    pub fn min_available(&self) -> u32 {
        self.spec.replicas.saturating_sub(self.spec.max_unavailable)
    }
}

/// Knobs of the planner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannerConfig {
    /// Global cap on pending instances plus launches planned in one pass (Diego's
    /// `startingContainerCountMaximum`).
    pub max_in_flight: u32,
    /// Upper bound of the per-app slow-start allowance (1, 2, 4, … up to this).
    pub max_burst: u32,
    /// Rebalancing surges started per pass over all apps (the disruption budget).
    pub rebalance_per_pass: u32,
    /// A not-ready instance younger than this is "starting", not "unhealthy".
    pub startup_grace: Duration,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 500,
            max_burst: 64,
            rebalance_per_pass: 32,
            startup_grace: Duration::from_secs(120),
        }
    }
}

/// An instance as the compute backend reports it, with the health the probes report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The instance.
    pub instance: Instance,
    /// Its health; `None` (never probed) counts as starting.
    pub health: Option<HealthStatus>,
}

/// Everything the planner looks at in one pass.
#[derive(Clone, Copy, Debug)]
pub struct PlanInput<'a> {
    /// Desired apps (any order; the plan is sorted).
    pub desired: &'a [DesiredApp],
    /// Instances the compute backend reports, including crashed and terminated ones, each with
    /// its health (kept beside the instance so the planner makes no random lookups).
    pub observed: &'a [Observed],
    /// Zones and whether they take launches.
    pub zones: &'a [ZoneInfo],
    /// The time of the pass.
    pub now: Timestamp,
    /// Instance quota per tenant (tenants absent here are unlimited).
    pub quotas: &'a BTreeMap<TenantId, u32>,
    /// False until desired state is re-asserted after a restore or failover: the plan may start
    /// instances but never stops any.
    pub allow_terminations: bool,
}

/// Why an instance is launched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LaunchReason {
    /// Fewer instances than desired (new app or scale-up).
    BelowDesired,
    /// The slot's previous instance crashed or failed liveness.
    ReplaceCrashed,
    /// A new version is rolling out.
    Rollout,
    /// Surge-first rebalancing into an emptier zone.
    Rebalance,
}

/// Why an instance is stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TerminationReason {
    /// More instances than desired (scale-down or after a rebalance surge).
    ScaleDown,
    /// Runs a version that is no longer desired.
    Superseded,
    /// The app is no longer desired at all.
    Undeployed,
    /// The liveness check failed: counted as a crash.
    LivenessFailed,
    /// Terminate-first rebalancing (no surge allowed): the next pass launches into an emptier
    /// zone.
    Rebalance,
}

/// Which action a [`Deferred`] holds back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// Launching instances.
    Launch,
    /// Terminating instances.
    Terminate,
}

/// Why an action the diff calls for is not taken in this pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum DeferReason {
    /// The slot crashed recently; Diego's curve says wait.
    CrashBackOff {
        /// Earliest restart.
        until: Timestamp,
        /// Consecutive crashes of the slot.
        crashes: u32,
    },
    /// The slot crashed too often; it is not restarted any more.
    CrashLimit {
        /// Consecutive crashes of the slot.
        crashes: u32,
    },
    /// The tenant's instance quota is used up.
    Quota {
        /// The quota.
        limit: u32,
    },
    /// Launching more would exceed replicas + max_surge while old instances still run.
    SurgeBudget,
    /// The per-app slow-start allowance of this pass is used.
    SlowStart {
        /// Launches allowed this pass.
        allowed: u32,
    },
    /// The global cap on in-flight launches is reached.
    InFlightCap {
        /// The cap.
        cap: u32,
    },
    /// No zone takes launches now.
    NoZoneAvailable,
    /// Stopping more would take ready instances below the minimum available.
    MinAvailable {
        /// The floor.
        min_available: u32,
    },
    /// Desired state has not been re-asserted since a restore or failover.
    FreshnessGate,
    /// The route table without these instances could not be applied: they stay until it is.
    RoutesNotApplied,
}

/// One launch to make.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launch {
    /// Owner.
    pub tenant: TenantId,
    /// App.
    pub app: AppId,
    /// Version.
    pub version: Version,
    /// The slot (stable index) this instance fills.
    pub slot: u32,
    /// How often the slot was launched before at this version.
    pub attempt: u32,
    /// Where.
    pub zone: Zone,
    /// Deterministic from app, version, slot and attempt: a retry reuses it.
    pub idempotency_key: IdempotencyKey,
    /// Why.
    pub reason: LaunchReason,
    /// The binary to run.
    pub artifact: ArtifactRef,
    /// The port the app listens on.
    pub port: u16,
}

/// One instance to stop.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Termination {
    /// Owner.
    pub tenant: TenantId,
    /// App.
    pub app: AppId,
    /// The instance.
    pub instance: InstanceId,
    /// Its version.
    pub version: Version,
    /// Its zone.
    pub zone: Zone,
    /// Why.
    pub reason: TerminationReason,
}

/// An action the diff calls for that this pass does not take, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deferred {
    /// Owner.
    pub tenant: TenantId,
    /// App.
    pub app: AppId,
    /// Which action.
    pub action: ActionKind,
    /// How many such actions.
    pub count: u32,
    /// Why not now.
    pub reason: DeferReason,
}

/// A crash the planner noticed for the first time (crashed state or failed liveness).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashObserved {
    /// Owner.
    pub tenant: TenantId,
    /// App.
    pub app: AppId,
    /// The instance.
    pub instance: InstanceId,
    /// Its version.
    pub version: Version,
    /// Its slot, when it was launched by ion.
    pub slot: Option<u32>,
    /// The slot's consecutive crash count after this crash.
    pub crashes: u32,
}

/// The result of one planning pass. Every list is sorted by tenant, app, then slot or instance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Instances to start.
    pub launches: Vec<Launch>,
    /// Instances to stop.
    pub terminations: Vec<Termination>,
    /// Actions not taken, with reasons.
    pub deferred: Vec<Deferred>,
    /// Crashes seen for the first time.
    pub crashes: Vec<CrashObserved>,
}

impl Plan {
    /// True when the plan neither launches nor terminates anything.
    pub fn is_empty(&self) -> bool {
        self.launches.is_empty() && self.terminations.is_empty()
    }
}

type AppKey = (TenantId, AppId);

/// A fast non-cryptographic hasher (the Fx multiply-rotate) for the planner's per-pass maps,
/// whose keys come from the backend, not from an attacker choosing collisions.
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let v = u64::from_le_bytes(c.try_into().expect("chunks of 8"));
            self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
        for b in chunks.remainder() {
            self.0 =
                (self.0.rotate_left(5) ^ u64::from(*b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(i)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, i: usize) {
        self.0 = (self.0.rotate_left(5) ^ i as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn finish(&self) -> u64 {
        // The multiply leaves the low bits weak; hashbrown picks buckets from them.
        self.0.rotate_left(26)
    }
}

type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<FxHasher>>;
type FastSet<K> = HashSet<K, std::hash::BuildHasherDefault<FxHasher>>;
type SlotKey = (TenantId, AppId, Version, u32);

/// What the planner remembers between passes. Owned by the caller; [`plan`] updates it.
#[derive(Clone, Debug, Default)]
pub struct PlannerState {
    crashes: HashMap<SlotKey, CrashRecord>,
    attempts: HashMap<SlotKey, u32>,
    seen_gone: HashSet<InstanceId>,
    burst: HashMap<AppKey, u32>,
    avoid_zones: BTreeMap<Zone, Timestamp>,
    pass: u64,
}

impl PlannerState {
    /// A fresh state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Planning passes run so far.
    pub fn passes(&self) -> u64 {
        self.pass
    }

    /// Avoids `zone` for placement until `until` (after a zone-scoped `Unavailable`).
    pub fn avoid_zone(&mut self, zone: Zone, until: Timestamp) {
        self.avoid_zones.insert(zone, until);
    }

    /// Records that a launch of `app` failed: its slow-start allowance starts over at 1.
    pub fn launch_failed(&mut self, tenant: &TenantId, app: &AppId) {
        self.burst.remove(&(tenant.clone(), app.clone()));
    }

    /// Records that the instance launched with `key` is gone (terminated, crashed, or returned
    /// gone by an idempotent launch): the slot's next launch uses the next attempt and key.
    pub fn note_gone(&mut self, tenant: &TenantId, app: &AppId, key: &IdempotencyKey) {
        if let Some((version, slot, attempt)) = parse_key(key) {
            let e = self
                .attempts
                .entry((tenant.clone(), app.clone(), version, slot))
                .or_insert(0);
            *e = (*e).max(attempt + 1);
        }
    }

    /// The crash record of a slot, if it crashed.
    pub fn crash_record(
        &self,
        tenant: &TenantId,
        app: &AppId,
        version: Version,
        slot: u32,
    ) -> Option<CrashRecord> {
        self.crashes
            .get(&(tenant.clone(), app.clone(), version, slot))
            .copied()
    }

    /// Forgets everything about an app (after undeploy).
    pub fn forget_app(&mut self, tenant: &TenantId, app: &AppId) {
        self.crashes.retain(|k, _| !(k.0 == *tenant && k.1 == *app));
        self.attempts
            .retain(|k, _| !(k.0 == *tenant && k.1 == *app));
        self.burst.remove(&(tenant.clone(), app.clone()));
    }
}

/// The idempotency key of a launch: `k<16 hex of sha256(tenant/app)>-v<version>-s<slot>-a<attempt>`.
pub fn launch_key(
    tenant: &TenantId,
    app: &AppId,
    version: Version,
    slot: u32,
    attempt: u32,
) -> IdempotencyKey {
    let digest = Sha256Digest::of(format!("{tenant}/{app}").as_bytes());
    let hex = hex::encode(&digest.as_bytes()[..8]);
    IdempotencyKey::parse(&format!("k{hex}-v{}-s{slot}-a{attempt}", version.0))
        .expect("launch keys are valid idempotency keys")
}

/// Version, slot and attempt of a key made by [`launch_key`]; `None` for foreign keys.
pub fn parse_key(key: &IdempotencyKey) -> Option<(Version, u32, u32)> {
    let mut parts = key.as_str().rsplitn(4, '-');
    let attempt = parts.next()?.strip_prefix('a')?.parse().ok()?;
    let slot = parts.next()?.strip_prefix('s')?.parse().ok()?;
    let version = parts.next()?.strip_prefix('v')?.parse().ok()?;
    let head = parts.next()?;
    if head.len() != 17 || !head.starts_with('k') {
        return None;
    }
    Some((Version(version), slot, attempt))
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Condition {
    // Order is the victim preference: unhealthy first, ready last.
    Unhealthy,
    Starting,
    Ready,
}

struct Live<'a> {
    inst: &'a Instance,
    cond: Condition,
    zone_ix: Option<usize>,
}

struct Pass<'a> {
    input: &'a PlanInput<'a>,
    config: &'a PlannerConfig,
    zone_ix: FastMap<&'a Zone, usize>,
    zone_open: Vec<bool>,
    all_open: bool,
    in_flight: u32,
    tenant_used: FastMap<&'a TenantId, u32>,
    rebalance_left: u32,
    plan: Plan,
    zone_up: Vec<bool>,
    // Scratch buffers reused across apps (no per-app allocation on the steady path).
    cur_buf: Vec<Live<'a>>,
    occupied_buf: Vec<u32>,
}

/// Plans one pass. Deterministic: the same input and state give the same plan and next state.
pub fn plan(input: &PlanInput<'_>, config: &PlannerConfig, state: &mut PlannerState) -> Plan {
    state.pass += 1;
    let now = input.now;
    state.avoid_zones.retain(|_, until| *until > now);

    let zone_ix: FastMap<&Zone, usize> = input
        .zones
        .iter()
        .enumerate()
        .map(|(i, z)| (&z.zone, i))
        .collect();
    let zone_open: Vec<bool> = input
        .zones
        .iter()
        .map(|z| z.available && !state.avoid_zones.contains_key(&z.zone))
        .collect();
    let all_open = zone_open.iter().all(|o| *o);

    // Group observed instances by app; count tenant usage and global in-flight launches.
    // Bucket instances by desired app with a counting sort into one flat vector (no per-app
    // allocation); instances of apps no longer desired go to `by_orphan`.
    let n = input.desired.len();
    // App lookup per instance is the planner's hottest path. The table maps a 64-bit hash of
    // (tenant, app) to the first desired app with it (16-byte entries: 100k apps fit in L2), and
    // the names it is verified against sit in one compact buffer instead of being spread over the
    // desired specs. Apps whose hashes collide are chained through `same_hash`.
    let name_hash = |t: &str, a: &str| {
        use std::hash::{Hash, Hasher};
        let mut h = FxHasher::default();
        t.hash(&mut h);
        a.hash(&mut h);
        h.finish()
    };
    let mut names = String::with_capacity(
        input
            .desired
            .iter()
            .map(|d| d.spec.tenant.as_str().len() + d.spec.app.as_str().len())
            .sum(),
    );
    let mut spans: Vec<(u32, u32, u32)> = Vec::with_capacity(n);
    let mut same_hash: Vec<u32> = vec![u32::MAX; n];
    let mut app_ix: FastMap<u64, u32> = FastMap::default();
    app_ix.reserve(n);
    for (i, d) in input.desired.iter().enumerate() {
        let start = names.len() as u32;
        names.push_str(d.spec.tenant.as_str());
        let mid = names.len() as u32;
        names.push_str(d.spec.app.as_str());
        spans.push((start, mid, names.len() as u32));
        let h = name_hash(d.spec.tenant.as_str(), d.spec.app.as_str());
        if let Some(prev) = app_ix.insert(h, i as u32) {
            same_hash[i] = prev;
        }
    }
    let find_app = |t: &str, a: &str| -> Option<u32> {
        let mut ix = *app_ix.get(&name_hash(t, a))?;
        loop {
            let (start, mid, end) = spans[ix as usize];
            if &names[start as usize..mid as usize] == t && &names[mid as usize..end as usize] == a
            {
                return Some(ix);
            }
            ix = same_hash[ix as usize];
            if ix == u32::MAX {
                return None;
            }
        }
    };
    let mut bucket_of: Vec<u32> = Vec::with_capacity(input.observed.len());
    let mut offsets: Vec<u32> = vec![0; n + 1];
    let mut by_orphan: BTreeMap<(&TenantId, &AppId), Vec<&Instance>> = BTreeMap::new();
    let mut tenant_used: FastMap<&TenantId, u32> = FastMap::default();
    let mut in_flight = 0u32;
    let mut gone_now: FastSet<&InstanceId> = FastSet::default();
    // Active instances per desired app; summed per tenant once per app, not once per instance.
    let mut active_of: Vec<u32> = vec![0; n];
    for o in input.observed {
        let inst = &o.instance;
        let active = inst.state.is_active();
        match find_app(inst.tenant.as_str(), inst.app.as_str()) {
            Some(b) => {
                bucket_of.push(b);
                offsets[b as usize + 1] += 1;
                active_of[b as usize] += u32::from(active);
            }
            None => {
                bucket_of.push(u32::MAX);
                by_orphan
                    .entry((&inst.tenant, &inst.app))
                    .or_default()
                    .push(inst);
                if active {
                    *tenant_used.entry(&inst.tenant).or_default() += 1;
                }
            }
        }
        if active {
            if inst.state == InstanceState::Pending {
                in_flight += 1;
            }
        } else if matches!(
            inst.state,
            InstanceState::Terminated | InstanceState::Crashed
        ) {
            gone_now.insert(&inst.id);
        }
    }

    for b in 0..n {
        offsets[b + 1] += offsets[b];
        if active_of[b] > 0 {
            *tenant_used
                .entry(&input.desired[b].spec.tenant)
                .or_default() += active_of[b];
        }
    }
    let mut flat: Vec<&Observed> = Vec::new();
    if let Some(first) = input.observed.first() {
        // Every cell is overwritten: each bucketed instance fills exactly one.
        flat = vec![first; offsets[n] as usize];
        let mut fill = offsets.clone();
        for (o, b) in input.observed.iter().zip(&bucket_of) {
            if *b != u32::MAX {
                flat[fill[*b as usize] as usize] = o;
                fill[*b as usize] += 1;
            }
        }
    }

    let mut pass = Pass {
        input,
        config,
        zone_ix,
        zone_open,
        all_open,
        in_flight,
        tenant_used,
        rebalance_left: config.rebalance_per_pass,
        plan: Plan::default(),
        zone_up: input.zones.iter().map(|z| z.available).collect(),
        cur_buf: Vec::new(),
        occupied_buf: Vec::new(),
    };

    // Rotate the starting app each pass so global caps do not always favour the same apps.
    let start = if n == 0 { 0 } else { (state.pass as usize) % n };
    for k in 0..n {
        let ix = (start + k) % n;
        let app = &input.desired[ix];
        let insts = &flat[offsets[ix] as usize..offsets[ix + 1] as usize];
        plan_app(&mut pass, app, insts, state);
    }

    // Instances of apps no longer desired: stop them.
    for ((tenant, app), insts) in by_orphan {
        let active: Vec<&Instance> = insts
            .iter()
            .copied()
            .filter(|i| i.state.is_active())
            .collect();
        for i in insts.iter().filter(|i| !i.state.is_active()) {
            note_gone_once(state, i);
        }
        if active.is_empty() {
            continue;
        }
        if !input.allow_terminations {
            pass.plan.deferred.push(Deferred {
                tenant: (*tenant).clone(),
                app: (*app).clone(),
                action: ActionKind::Terminate,
                count: active.len() as u32,
                reason: DeferReason::FreshnessGate,
            });
            continue;
        }
        for i in active {
            pass.plan
                .terminations
                .push(termination(i, TerminationReason::Undeployed));
        }
    }

    state.seen_gone.retain(|id| gone_now.contains(id));

    let mut plan = pass.plan;
    plan.launches
        .sort_by(|a, b| (&a.tenant, &a.app, a.slot).cmp(&(&b.tenant, &b.app, b.slot)));
    plan.terminations
        .sort_by(|a, b| (&a.tenant, &a.app, &a.instance).cmp(&(&b.tenant, &b.app, &b.instance)));
    plan.deferred
        .sort_by(|a, b| (&a.tenant, &a.app, a.action).cmp(&(&b.tenant, &b.app, b.action)));
    plan.crashes
        .sort_by(|a, b| (&a.tenant, &a.app, &a.instance).cmp(&(&b.tenant, &b.app, &b.instance)));
    plan
}

fn termination(i: &Instance, reason: TerminationReason) -> Termination {
    Termination {
        tenant: i.tenant.clone(),
        app: i.app.clone(),
        instance: i.id.clone(),
        version: i.version,
        zone: i.zone.clone(),
        reason,
    }
}

fn note_gone_once(state: &mut PlannerState, i: &Instance) -> bool {
    if state.seen_gone.contains(&i.id) {
        return false;
    }
    state.seen_gone.insert(i.id.clone());
    state.note_gone(&i.tenant, &i.app, &i.idempotency_key);
    true
}

fn record_crash(pass: &mut Pass<'_>, state: &mut PlannerState, policy: &CrashPolicy, i: &Instance) {
    let slot = parse_key(&i.idempotency_key).map(|(_, s, _)| s);
    let mut crashes = 0;
    if let Some(slot) = slot {
        let key = (i.tenant.clone(), i.app.clone(), i.version, slot);
        let prev = state.crashes.get(&key).copied();
        let rec = policy.record_crash(prev, i.launched_at, pass.input.now);
        crashes = rec.count;
        state.crashes.insert(key, rec);
    }
    pass.plan.crashes.push(CrashObserved {
        tenant: i.tenant.clone(),
        app: i.app.clone(),
        instance: i.id.clone(),
        version: i.version,
        slot,
        crashes,
    });
}

fn plan_app<'a>(
    pass: &mut Pass<'a>,
    app: &'a DesiredApp,
    insts: &[&'a Observed],
    state: &mut PlannerState,
) {
    let spec = &app.spec;
    let now = pass.input.now;
    let nz = pass.input.zones.len();

    let mut cur: Vec<Live<'a>> = std::mem::take(&mut pass.cur_buf);
    cur.clear();
    let mut old: Vec<Live<'_>> = Vec::new();
    let mut occupied: Vec<u32> = std::mem::take(&mut pass.occupied_buf);
    occupied.clear();
    let mut dead: Vec<&Instance> = Vec::new();

    for &o in insts {
        let inst = &o.instance;
        match inst.state {
            InstanceState::Crashed => {
                if note_gone_once(state, inst) {
                    record_crash(pass, state, &app.crash_policy, inst);
                }
                continue;
            }
            InstanceState::Terminated => {
                note_gone_once(state, inst);
                continue;
            }
            InstanceState::Stopping => continue,
            InstanceState::Pending | InstanceState::Running => {}
        }
        let health = o.health;
        let slot = parse_key(&inst.idempotency_key).map(|(_, s, _)| s);
        if health == Some(HealthStatus::Dead) {
            dead.push(inst);
            if inst.version == spec.version {
                if let Some(s) = slot {
                    occupied.push(s);
                }
            }
            continue;
        }
        // Few zones: a linear scan beats hashing the name.
        let zone_ix = if nz <= 8 {
            pass.input.zones.iter().position(|z| z.zone == inst.zone)
        } else {
            pass.zone_ix.get(&inst.zone).copied()
        };
        let cond = match health {
            Some(HealthStatus::Ready) => Condition::Ready,
            Some(HealthStatus::NotReady) => Condition::Unhealthy,
            // Never probed or not yet passed: starting, unless it has been starting too long.
            _ if now.since(inst.launched_at) > pass.config.startup_grace => Condition::Unhealthy,
            _ => Condition::Starting,
        };
        let live = Live {
            inst,
            cond,
            zone_ix,
        };
        if inst.version == spec.version {
            if let Some(s) = slot {
                occupied.push(s);
            }
            cur.push(live);
        } else {
            old.push(live);
        }
    }

    // Liveness failures: a crash, and the instance is stopped (it no longer counts).
    let mut terminations: Vec<Termination> = Vec::new();
    for inst in &dead {
        if !state.seen_gone.contains(&inst.id) {
            state.seen_gone.insert(inst.id.clone());
            record_crash(pass, state, &app.crash_policy, inst);
        }
        terminations.push(termination(inst, TerminationReason::LivenessFailed));
    }

    // Instances in zones that are down do not count toward the app (they are replaced elsewhere).
    let zone_up = std::mem::take(&mut pass.zone_up);
    let counts = |v: &[Live<'_>]| -> Vec<u32> {
        let mut c = vec![0u32; nz];
        for l in v {
            if let Some(z) = l.zone_ix {
                if zone_up[z] {
                    c[z] += 1;
                }
            }
        }
        c
    };
    let in_open = |l: &Live<'_>| l.zone_ix.is_none_or(|z| zone_up[z]);
    let cur_active = cur.iter().filter(|l| in_open(l)).count() as u32;
    let old_active = old.iter().filter(|l| in_open(l)).count() as u32;
    let total_active = cur_active + old_active;
    let ready_cur = cur
        .iter()
        .filter(|l| in_open(l) && l.cond == Condition::Ready)
        .count() as u32;
    let ready_old = old
        .iter()
        .filter(|l| in_open(l) && l.cond == Condition::Ready)
        .count() as u32;
    let replicas = spec.replicas;
    let max_total = replicas + spec.max_surge;
    let min_available = app.min_available();

    // ---- terminations ----
    let mut term_deferred: Option<DeferReason> = None;
    let mut term_deferred_count = 0u32;
    if !old.is_empty() {
        // Retire the old version: not-ready ones at once, ready ones within the availability budget.
        let mut ready_total = ready_cur + ready_old;
        let mut olds: Vec<&Live<'_>> = old.iter().collect();
        olds.sort_by_key(|l| (l.cond, std::cmp::Reverse(l.inst.launched_at), &l.inst.id));
        let all_new_ready = ready_cur >= replicas;
        for l in olds {
            if l.cond != Condition::Ready || all_new_ready || ready_total > min_available {
                if l.cond == Condition::Ready && in_open(l) {
                    ready_total -= 1;
                }
                terminations.push(termination(l.inst, TerminationReason::Superseded));
            } else {
                term_deferred = Some(DeferReason::MinAvailable { min_available });
                term_deferred_count += 1;
            }
        }
    }
    if cur_active > replicas {
        let mut excess = cur_active - replicas;
        let mut zc = counts(&cur);
        let mut ready_left = ready_cur;
        let mut taken: FastSet<&InstanceId> = FastSet::default();
        while excess > 0 {
            let Some(&max) = zc.iter().max() else { break };
            // Candidates in the fullest zone(s); unknown-zone instances go first.
            let mut best: Option<&Live<'_>> = None;
            for l in cur
                .iter()
                .filter(|l| in_open(l) && !taken.contains(&l.inst.id))
            {
                // Unhealthy instances may go from any zone; the rest only from the fullest, so
                // a starting rebalance surge in an emptier zone is never undone.
                let in_fullest = l.zone_ix.is_none_or(|z| zc[z] == max);
                if !in_fullest && l.cond != Condition::Unhealthy {
                    continue;
                }
                if l.cond == Condition::Ready && ready_left <= replicas {
                    continue;
                }
                let better = match best {
                    None => true,
                    Some(b) => {
                        (l.cond, std::cmp::Reverse(l.inst.launched_at), &l.inst.id)
                            < (b.cond, std::cmp::Reverse(b.inst.launched_at), &b.inst.id)
                    }
                };
                if better {
                    best = Some(l);
                }
            }
            let Some(v) = best else {
                term_deferred = Some(DeferReason::MinAvailable {
                    min_available: replicas,
                });
                term_deferred_count += excess;
                break;
            };
            taken.insert(&v.inst.id);
            if let Some(z) = v.zone_ix {
                zc[z] -= 1;
            }
            if v.cond == Condition::Ready {
                ready_left -= 1;
            }
            terminations.push(termination(v.inst, TerminationReason::ScaleDown));
            excess -= 1;
        }
    }
    if !pass.input.allow_terminations && !terminations.is_empty() {
        pass.plan.deferred.push(Deferred {
            tenant: spec.tenant.clone(),
            app: spec.app.clone(),
            action: ActionKind::Terminate,
            count: terminations.len() as u32,
            reason: DeferReason::FreshnessGate,
        });
        terminations.clear();
    }
    pass.plan.terminations.extend(terminations);
    if let Some(reason) = term_deferred {
        pass.plan.deferred.push(Deferred {
            tenant: spec.tenant.clone(),
            app: spec.app.clone(),
            action: ActionKind::Terminate,
            count: term_deferred_count,
            reason,
        });
    }

    // ---- launches ----
    let want = replicas.saturating_sub(cur_active);
    let room = max_total.saturating_sub(total_active);
    // Placement spreads the desired version on its own: old instances are about to go, so
    // counting them would leave the new version lopsided once they do.
    let mut zone_counts = counts(&cur);
    let mut to_launch: Vec<(u32, LaunchReason)> = Vec::new();
    let mut deferred: Vec<(DeferReason, u32)> = Vec::new();
    if want > 0 {
        let n = want.min(room);
        if n < want {
            deferred.push((DeferReason::SurgeBudget, want - n));
        }
        let mut slot = 0u32;
        let mut picked = 0;
        while picked < want {
            if !occupied.contains(&slot) {
                if picked < n {
                    let reason = if !old.is_empty() {
                        LaunchReason::Rollout
                    } else if state.crashes.contains_key(&(
                        spec.tenant.clone(),
                        spec.app.clone(),
                        spec.version,
                        slot,
                    )) {
                        LaunchReason::ReplaceCrashed
                    } else {
                        LaunchReason::BelowDesired
                    };
                    to_launch.push((slot, reason));
                }
                picked += 1;
            }
            slot += 1;
        }
    } else if old.is_empty()
        && cur_active == replicas
        && room > 0
        && pass.all_open
        && pass.rebalance_left > 0
        && nz > 1
    {
        // Surge-first rebalance when the spread is off by two or more (e.g. a zone came back).
        let max = zone_counts.iter().copied().max().unwrap_or(0);
        let min = zone_counts.iter().copied().min().unwrap_or(0);
        let all_ready = cur.iter().all(|l| l.cond == Condition::Ready);
        if max >= min + 2 && all_ready {
            let mut slot = 0u32;
            while occupied.contains(&slot) {
                slot += 1;
            }
            to_launch.push((slot, LaunchReason::Rebalance));
            pass.rebalance_left -= 1;
        }
    } else if old.is_empty()
        && cur_active == replicas
        && room == 0
        && pass.all_open
        && pass.input.allow_terminations
        && pass.rebalance_left > 0
        && nz > 1
        && ready_cur == replicas
        && ready_cur > min_available
    {
        // No surge allowed: rebalance terminate-first within max_unavailable.
        let max = zone_counts.iter().copied().max().unwrap_or(0);
        let min = zone_counts.iter().copied().min().unwrap_or(0);
        if max >= min + 2 {
            let victim = cur
                .iter()
                .filter(|l| l.zone_ix.is_some_and(|z| zone_counts[z] == max))
                .max_by_key(|l| (l.inst.launched_at, &l.inst.id));
            if let Some(v) = victim {
                pass.plan
                    .terminations
                    .push(termination(v.inst, TerminationReason::Rebalance));
                pass.rebalance_left -= 1;
            }
        }
    }

    // Only apps that launch or have an allowance touch the burst map (no key clones otherwise).
    let key = (!to_launch.is_empty() || !state.burst.is_empty())
        .then(|| (spec.tenant.clone(), spec.app.clone()));
    let allowed = key
        .as_ref()
        .and_then(|k| state.burst.get(k).copied())
        .unwrap_or(1);
    let mut launched = 0u32;
    let quota = pass.input.quotas.get(&spec.tenant).copied();
    for (slot, reason) in to_launch {
        let sk = (spec.tenant.clone(), spec.app.clone(), spec.version, slot);
        if let Some(rec) = state.crashes.get(&sk) {
            match app.crash_policy.decide(rec) {
                RestartDecision::Now => {}
                RestartDecision::At { at } if now >= at => {}
                RestartDecision::At { at } => {
                    deferred.push((
                        DeferReason::CrashBackOff {
                            until: at,
                            crashes: rec.count,
                        },
                        1,
                    ));
                    continue;
                }
                RestartDecision::GiveUp => {
                    deferred.push((DeferReason::CrashLimit { crashes: rec.count }, 1));
                    continue;
                }
            }
        }
        if let Some(limit) = quota {
            let used = pass.tenant_used.get(&spec.tenant).copied().unwrap_or(0);
            if used >= limit {
                deferred.push((DeferReason::Quota { limit }, 1));
                continue;
            }
        }
        if launched >= allowed {
            deferred.push((DeferReason::SlowStart { allowed }, 1));
            continue;
        }
        if pass.in_flight >= pass.config.max_in_flight {
            deferred.push((
                DeferReason::InFlightCap {
                    cap: pass.config.max_in_flight,
                },
                1,
            ));
            continue;
        }
        // The open zone with the fewest instances of this app; ties by zone order.
        let zone = (0..nz)
            .filter(|z| pass.zone_open[*z])
            .min_by_key(|z| (zone_counts[*z], *z));
        let Some(z) = zone else {
            deferred.push((DeferReason::NoZoneAvailable, 1));
            continue;
        };
        zone_counts[z] += 1;
        let attempt = state.attempts.get(&sk).copied().unwrap_or(0);
        pass.plan.launches.push(Launch {
            tenant: spec.tenant.clone(),
            app: spec.app.clone(),
            version: spec.version,
            slot,
            attempt,
            zone: pass.input.zones[z].zone.clone(),
            idempotency_key: launch_key(&spec.tenant, &spec.app, spec.version, slot, attempt),
            reason,
            artifact: spec.artifact.clone(),
            port: spec.port,
        });
        launched += 1;
        pass.in_flight += 1;
        *pass.tenant_used.entry(&spec.tenant).or_default() += 1;
    }
    // Slow start: the allowance doubles while the app still needs launches, else starts over.
    if want > launched {
        let key = key.unwrap_or_else(|| (spec.tenant.clone(), spec.app.clone()));
        let next = allowed.saturating_mul(2).min(pass.config.max_burst.max(1));
        state.burst.insert(key, next);
    } else if let Some(key) = key {
        state.burst.remove(&key);
    }
    // One deferred entry per reason kind, counts summed, in a stable order.
    let mut merged: Vec<(DeferReason, u32)> = Vec::new();
    for (reason, count) in deferred {
        match merged
            .iter_mut()
            .find(|(r, _)| std::mem::discriminant(r) == std::mem::discriminant(&reason))
        {
            Some((_, c)) => *c += count,
            None => merged.push((reason, count)),
        }
    }
    for (reason, count) in merged {
        pass.plan.deferred.push(Deferred {
            tenant: spec.tenant.clone(),
            app: spec.app.clone(),
            action: ActionKind::Launch,
            count,
            reason,
        });
    }
    pass.zone_up = zone_up;
    cur.clear();
    pass.cur_buf = cur;
    pass.occupied_buf = occupied;
}
