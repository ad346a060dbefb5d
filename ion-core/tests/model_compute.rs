//! Model-based test of `InMemoryCompute`: random operation sequences against a `BTreeMap` model.

use std::collections::{BTreeMap, BTreeSet};

use ion_core::fake::InMemoryCompute;
use ion_core::{
    AppId, ArtifactRef, Compute, ErrorKind, IdempotencyKey, InstanceFilter, InstanceId,
    InstanceState, LaunchRequest, Sha256Digest, TenantId, Version, Zone,
};
use proptest::prelude::*;

/// Zones the fake has; index 3 is a zone it does not have.
const ZONES: [&str; 4] = ["zone-a", "zone-b", "zone-c", "zone-x"];
const APPS: [&str; 2] = ["shop", "blog"];

#[derive(Clone, Debug)]
enum Op {
    Launch {
        key: u8,
        zone: usize,
        app: usize,
    },
    Terminate {
        target: u8,
    },
    Crash {
        target: u8,
    },
    ZoneDown {
        zone: usize,
    },
    ZoneUp {
        zone: usize,
    },
    Describe {
        app: Option<usize>,
        include_gone: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..8, 0usize..4, 0usize..2).prop_map(|(key, zone, app)| Op::Launch { key, zone, app }),
        2 => (0u8..10).prop_map(|target| Op::Terminate { target }),
        1 => (0u8..10).prop_map(|target| Op::Crash { target }),
        1 => (0usize..3).prop_map(|zone| Op::ZoneDown { zone }),
        1 => (0usize..3).prop_map(|zone| Op::ZoneUp { zone }),
        2 => (proptest::option::of(0usize..2), any::<bool>())
            .prop_map(|(app, include_gone)| Op::Describe { app, include_gone }),
    ]
}

/// What the model remembers of an instance.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    zone: usize,
    app: usize,
    state: InstanceState,
}

#[derive(Default)]
struct Model {
    /// Key → instance number (1-based, in launch order).
    keys: BTreeMap<u8, u64>,
    instances: BTreeMap<u64, Seen>,
    down: BTreeSet<usize>,
}

fn id_of(n: u64) -> InstanceId {
    InstanceId::parse(&format!("i-{n:017x}")).unwrap()
}

fn request(key: u8, zone: usize, app: usize) -> LaunchRequest {
    LaunchRequest {
        idempotency_key: IdempotencyKey::parse(&format!("key-{key}")).unwrap(),
        zone: Zone::parse(ZONES[zone]).unwrap(),
        tenant: TenantId::parse("acme").unwrap(),
        app: AppId::parse(APPS[app]).unwrap(),
        version: Version(1),
        artifact: ArtifactRef {
            id: "art".parse().unwrap(),
            sha256: Sha256Digest::of(b"x"),
            length: 1,
        },
        port: 80,
    }
}

/// The instance an operation targets: one launched so far, or one that never existed.
fn target_id(model: &Model, target: u8) -> (InstanceId, Option<u64>) {
    let n = u64::from(target) + 1;
    if model.instances.contains_key(&n) {
        (id_of(n), Some(n))
    } else {
        (InstanceId::parse("i-0ffffffffffffffff").unwrap(), None)
    }
}

type Observed = Result<Vec<(String, String, String, InstanceState)>, ErrorKind>;

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let fake = InMemoryCompute::default();
    let mut model = Model::default();
    for op in ops {
        let (got, want): (Observed, Observed) = match op {
            Op::Launch { key, zone, app } => {
                let got = fake
                    .launch(request(key, zone, app))
                    .await
                    .map(|i| {
                        vec![(
                            i.id.to_string(),
                            i.zone.to_string(),
                            i.app.to_string(),
                            i.state,
                        )]
                    })
                    .map_err(|e| e.kind());
                let want = if let Some(&n) = model.keys.get(&key) {
                    let seen = &model.instances[&n];
                    if seen.zone == zone && seen.app == app {
                        Ok(vec![(
                            id_of(n).to_string(),
                            ZONES[zone].to_owned(),
                            APPS[app].to_owned(),
                            seen.state,
                        )])
                    } else {
                        Err(ErrorKind::InvalidInput)
                    }
                } else if zone == 3 {
                    Err(ErrorKind::InvalidInput)
                } else if model.down.contains(&zone) {
                    Err(ErrorKind::Unavailable)
                } else {
                    let n = model.instances.len() as u64 + 1;
                    model.keys.insert(key, n);
                    model.instances.insert(
                        n,
                        Seen {
                            zone,
                            app,
                            state: InstanceState::Running,
                        },
                    );
                    Ok(vec![(
                        id_of(n).to_string(),
                        ZONES[zone].to_owned(),
                        APPS[app].to_owned(),
                        InstanceState::Running,
                    )])
                };
                (got, want)
            }
            Op::Terminate { target } => {
                let (id, n) = target_id(&model, target);
                let got = fake
                    .terminate(&id)
                    .await
                    .map(|()| Vec::new())
                    .map_err(|e| e.kind());
                if let Some(n) = n {
                    model.instances.get_mut(&n).unwrap().state = InstanceState::Terminated;
                }
                (got, Ok(Vec::new()))
            }
            Op::Crash { target } => {
                let (id, n) = target_id(&model, target);
                let got = fake.crash(&id).map(|()| Vec::new()).map_err(|e| e.kind());
                let want = match n {
                    Some(n) => {
                        let seen = model.instances.get_mut(&n).unwrap();
                        if seen.state.is_active() {
                            seen.state = InstanceState::Crashed;
                        }
                        Ok(Vec::new())
                    }
                    None => Err(ErrorKind::NotFound),
                };
                (got, want)
            }
            Op::ZoneDown { zone } => {
                fake.zone_down(&Zone::parse(ZONES[zone]).unwrap()).unwrap();
                model.down.insert(zone);
                for seen in model.instances.values_mut() {
                    if seen.zone == zone && seen.state.is_active() {
                        seen.state = InstanceState::Crashed;
                    }
                }
                (Ok(Vec::new()), Ok(Vec::new()))
            }
            Op::ZoneUp { zone } => {
                fake.zone_up(&Zone::parse(ZONES[zone]).unwrap()).unwrap();
                model.down.remove(&zone);
                (Ok(Vec::new()), Ok(Vec::new()))
            }
            Op::Describe { app, include_gone } => {
                let filter = InstanceFilter {
                    tenant: Some(TenantId::parse("acme").unwrap()),
                    app: app.map(|a| AppId::parse(APPS[a]).unwrap()),
                    include_gone,
                };
                let got = fake
                    .describe(&filter)
                    .await
                    .map(|v| {
                        v.into_iter()
                            .map(|i| {
                                (
                                    i.id.to_string(),
                                    i.zone.to_string(),
                                    i.app.to_string(),
                                    i.state,
                                )
                            })
                            .collect()
                    })
                    .map_err(|e| e.kind());
                let want = model
                    .instances
                    .iter()
                    .filter(|(_, s)| app.is_none_or(|a| a == s.app))
                    .filter(|(_, s)| include_gone || s.state.is_active())
                    .map(|(n, s)| {
                        (
                            id_of(*n).to_string(),
                            ZONES[s.zone].to_owned(),
                            APPS[s.app].to_owned(),
                            s.state,
                        )
                    })
                    .collect();
                (got, Ok(want))
            }
        };
        prop_assert_eq!(got, want);
        // After every step: zone availability and the number of instances really created.
        let zones: Vec<bool> = fake
            .zones()
            .await
            .unwrap()
            .iter()
            .map(|z| z.available)
            .collect();
        let want_zones: Vec<bool> = (0..3).map(|z| !model.down.contains(&z)).collect();
        prop_assert_eq!(zones, want_zones);
        prop_assert_eq!(fake.launch_count(), model.instances.len() as u64);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn in_memory_compute_matches_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(run(ops))?;
    }
}
