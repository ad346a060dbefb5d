//! Planner benchmark: 1k, 10k and 100k apps × 3 replicas over 3 zones against a realistic
//! observed state; prints a table and, last, `RESULT planner apps_10k_ms=… ratio_100k_10k=…`.
//!
//! The observed state is a running platform in motion: most apps steady and ready, 2 % with a
//! crashed instance, 1 % mid-deploy (one old-version instance left), 1 % scaled up by one, and
//! terminated history for 5 % of apps. A fresh `PlannerState` is used for every run, so each run
//! also pays for first-seen crash bookkeeping.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use ion_core::compute::ZoneInfo;
use ion_core::control::health::HealthStatus;
use ion_core::control::planner::{
    launch_key, plan, DesiredApp, Observed, PlanInput, PlannerConfig, PlannerState,
};
use ion_core::model::{AppSpec, ArtifactRef, Instance, InstanceState, Sha256Digest, Version};
use ion_core::name::{AppId, ArtifactId, Hostname, HttpPath, InstanceId, TenantId, Zone};
use ion_core::time::Timestamp;

struct World {
    desired: Vec<DesiredApp>,
    observed: Vec<Observed>,
    zones: Vec<ZoneInfo>,
}

fn world(apps: usize) -> World {
    let zones: Vec<ZoneInfo> = ["zone-a", "zone-b", "zone-c"]
        .iter()
        .map(|z| ZoneInfo {
            zone: Zone::parse(z).unwrap(),
            available: true,
        })
        .collect();
    let artifact = ArtifactRef {
        id: ArtifactId::parse("art-1").unwrap(),
        sha256: Sha256Digest::of(b"bin"),
        length: 3,
    };
    let mut desired = Vec::with_capacity(apps);
    let mut observed = Vec::with_capacity(apps * 3 + apps / 10);
    let mut next = 0u64;
    let now = Timestamp::from_millis(1_800_000_000_000);
    for a in 0..apps {
        let tenant = TenantId::parse(&format!("t{}", a / 10)).unwrap();
        let app = AppId::parse(&format!("app{a}")).unwrap();
        let version = Version(2);
        let replicas = if a % 100 == 7 { 4 } else { 3 };
        desired.push(DesiredApp::new(AppSpec {
            tenant: tenant.clone(),
            app: app.clone(),
            version,
            artifact: artifact.clone(),
            replicas,
            hostnames: vec![Hostname::parse(&format!("app{a}.example.com")).unwrap()],
            port: 8080,
            readiness_path: HttpPath::parse("/healthz").unwrap(),
            max_surge: 1,
            max_unavailable: 0,
        }));
        let mut push = |slot: u32, version: Version, zone: usize, state: InstanceState| {
            next += 1;
            let id = InstanceId::parse(&format!("i-{next:017x}")).unwrap();
            let health = (state == InstanceState::Running).then_some(HealthStatus::Ready);
            observed.push(Observed {
                health,
                instance: Instance {
                    id,
                    tenant: tenant.clone(),
                    app: app.clone(),
                    version,
                    zone: zones[zone].zone.clone(),
                    state,
                    address: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 20_000))),
                    launched_at: now.minus(Duration::from_secs(3600)),
                    idempotency_key: launch_key(&tenant, &app, version, slot, 0),
                },
            });
        };
        for slot in 0..3u32 {
            let crashed = a % 50 == 3 && slot == 1;
            let old = a % 100 == 5 && slot == 2;
            let state = if crashed {
                InstanceState::Crashed
            } else {
                InstanceState::Running
            };
            push(
                slot,
                if old { Version(1) } else { version },
                slot as usize,
                state,
            );
        }
        if a % 20 == 11 {
            push(9, Version(1), 0, InstanceState::Terminated);
        }
    }
    World {
        desired,
        observed,
        zones,
    }
}

fn plan_once(w: &World) -> (f64, usize) {
    let quotas = BTreeMap::new();
    let config = PlannerConfig::default();
    let mut state = PlannerState::new();
    let input = PlanInput {
        desired: &w.desired,
        observed: &w.observed,
        zones: &w.zones,
        now: Timestamp::from_millis(1_800_000_000_000),
        quotas: &quotas,
        allow_terminations: true,
    };
    let start = Instant::now();
    let p = plan(&input, &config, &mut state);
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    let actions = p.launches.len() + p.terminations.len() + p.deferred.len();
    drop(std::hint::black_box(p));
    (ms, actions)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("times are finite"));
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; no argument is read. The sizes are timed round-robin (one
    // run of each per round) so load from other processes affects every size alike.
    const SIZES: [usize; 3] = [1_000, 10_000, 100_000];
    const ROUNDS: usize = 15;
    let worlds: Vec<World> = SIZES.iter().map(|n| world(*n)).collect();
    let mut times = vec![Vec::with_capacity(ROUNDS); SIZES.len()];
    let mut actions = vec![0; SIZES.len()];
    for _ in 0..ROUNDS {
        for (i, w) in worlds.iter().enumerate() {
            let (ms, a) = plan_once(w);
            times[i].push(ms);
            actions[i] = a;
        }
    }
    println!(
        "{:>8} {:>10} {:>10} {:>12} {:>10} {:>8}",
        "apps", "instances", "actions", "median_ms", "min_ms", "runs"
    );
    let mut medians = Vec::new();
    for (i, n) in SIZES.iter().enumerate() {
        let min = times[i].iter().copied().fold(f64::INFINITY, f64::min);
        let med = median(times[i].clone());
        println!(
            "{:>8} {:>10} {:>10} {:>12.3} {:>10.3} {:>8}",
            n,
            worlds[i].observed.len(),
            actions[i],
            med,
            min,
            ROUNDS
        );
        medians.push(med);
    }
    println!(
        "RESULT planner apps_10k_ms={:.2} ratio_100k_10k={:.2}",
        medians[1],
        medians[2] / medians[1]
    );
}
