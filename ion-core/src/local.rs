//! `LocalProcessCompute`: a real `Compute` that runs app instances as child processes on loopback.
//!
//! Each instance is a process started from the program its artifact resolves to, listening on a
//! loopback port ion picks and passes in `PORT` (the port in the launch request is the port
//! inside an instance; locally every instance needs its own). Zones are labels: they organise
//! placement and failure drills but share one machine. Real traffic can therefore flow through a
//! real load balancer to real instances on one host, for examples and end-to-end tests.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::compute::{Compute, ComputeCapabilities, InstanceFilter, LaunchRequest, ZoneInfo};
use crate::error::{Error, Result};
use crate::model::{ArtifactRef, Instance, InstanceState};
use crate::name::{IdempotencyKey, InstanceId, Zone};
use crate::time::Timestamp;

/// What to execute for an artifact: a program and its arguments. Never passed through a shell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalProgram {
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
}

/// Maps an artifact to the program that runs it (for example: the artifact store's copy of the
/// binary, unpacked to a local path, checked against the artifact's digest).
pub type ArtifactResolver = Arc<dyn Fn(&ArtifactRef) -> Result<LocalProgram> + Send + Sync>;

/// Runs instances as local child processes; see the module docs. Clones share state; dropping
/// the last clone kills every instance still running.
#[derive(Clone)]
pub struct LocalProcessCompute {
    inner: Arc<Mutex<State>>,
    resolver: ArtifactResolver,
}

struct State {
    zones: Vec<(Zone, bool)>,
    next: u64,
    instances: BTreeMap<InstanceId, Entry>,
    by_key: BTreeMap<IdempotencyKey, InstanceId>,
}

struct Entry {
    instance: Instance,
    child: Option<tokio::process::Child>,
}

impl fmt::Debug for LocalProcessCompute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.lock().expect("local compute lock");
        f.debug_struct("LocalProcessCompute")
            .field("zones", &state.zones)
            .field("instances", &state.instances.len())
            .finish_non_exhaustive()
    }
}

impl LocalProcessCompute {
    /// A backend with `zones` (at least one), running what `resolver` says for each artifact.
    pub fn new(
        zones: Vec<Zone>,
        resolver: impl Fn(&ArtifactRef) -> Result<LocalProgram> + Send + Sync + 'static,
    ) -> Result<Self> {
        if zones.is_empty() {
            return Err(Error::invalid_config("zones: at least one zone is needed"));
        }
        let mut seen = zones.clone();
        seen.sort();
        seen.dedup();
        if seen.len() != zones.len() {
            return Err(Error::invalid_config("zones: a zone is listed twice"));
        }
        Ok(Self {
            inner: Arc::new(Mutex::new(State {
                zones: zones.into_iter().map(|z| (z, true)).collect(),
                next: 0,
                instances: BTreeMap::new(),
                by_key: BTreeMap::new(),
            })),
            resolver: Arc::new(resolver),
        })
    }

    /// Marks a zone down (launches there fail with `Unavailable`) or up again; for drills.
    pub fn set_zone_available(&self, zone: &Zone, available: bool) -> Result<()> {
        let mut state = self.inner.lock().expect("local compute lock");
        let entry = state
            .zones
            .iter_mut()
            .find(|(z, _)| z == zone)
            .ok_or_else(|| Error::invalid_input(format!("unknown zone {zone}")))?;
        entry.1 = available;
        Ok(())
    }

    /// Kills an instance's process without terminating it through the API, as a crash would.
    pub fn kill(&self, id: &InstanceId) -> Result<()> {
        let mut state = self.inner.lock().expect("local compute lock");
        let entry = state
            .instances
            .get_mut(id)
            .ok_or_else(|| Error::not_found(format!("instance {id}")))?;
        if let Some(child) = entry.child.as_mut() {
            child
                .start_kill()
                .map_err(|e| Error::unexpected(format!("kill instance {id}: {e}")))?;
        }
        Ok(())
    }

    /// Updates states from the processes: an exit nobody asked for is `Crashed`.
    fn refresh(state: &mut State) {
        for entry in state.instances.values_mut() {
            let Some(child) = entry.child.as_mut() else {
                continue;
            };
            if let Ok(Some(_)) = child.try_wait() {
                entry.child = None;
                if entry.instance.state.is_active() {
                    entry.instance.state = InstanceState::Crashed;
                }
            }
        }
    }
}

fn free_loopback_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| Error::unavailable(format!("no free loopback port: {e}")))?;
    Ok(l.local_addr()
        .map_err(|e| Error::unexpected(format!("local addr: {e}")))?
        .port())
}

#[async_trait]
impl Compute for LocalProcessCompute {
    fn capabilities(&self) -> ComputeCapabilities {
        ComputeCapabilities {
            runs_workloads: true,
            real_zones: false,
        }
    }

    async fn zones(&self) -> Result<Vec<ZoneInfo>> {
        let state = self.inner.lock().expect("local compute lock");
        Ok(state
            .zones
            .iter()
            .map(|(zone, available)| ZoneInfo {
                zone: zone.clone(),
                available: *available,
            })
            .collect())
    }

    async fn launch(&self, request: LaunchRequest) -> Result<Instance> {
        let mut state = self.inner.lock().expect("local compute lock");
        if let Some(id) = state.by_key.get(&request.idempotency_key) {
            return Ok(state.instances[id].instance.clone());
        }
        let available = state
            .zones
            .iter()
            .find(|(z, _)| *z == request.zone)
            .map(|(_, a)| *a)
            .ok_or_else(|| Error::invalid_input(format!("unknown zone {}", request.zone)))?;
        if !available {
            return Err(Error::unavailable(format!("zone {} is down", request.zone))
                .with_zone(request.zone.clone()));
        }
        let program = (self.resolver)(&request.artifact)?;
        let port = free_loopback_port()?;
        state.next += 1;
        let id = InstanceId::parse(&format!("lp-{:010}", state.next))
            .map_err(|e| Error::unexpected(e.to_string()))?;
        let child = tokio::process::Command::new(&program.program)
            .args(&program.args)
            .env("PORT", port.to_string())
            .env("ION_INSTANCE", id.as_str())
            .env("ION_TENANT", request.tenant.as_str())
            .env("ION_APP", request.app.as_str())
            .env("ION_ZONE", request.zone.as_str())
            .env("ION_VERSION", request.version.0.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                Error::invalid_input(format!(
                    "cannot start {} for artifact {}: {e}",
                    program.program.display(),
                    request.artifact.id
                ))
            })?;
        let instance = Instance {
            id: id.clone(),
            tenant: request.tenant,
            app: request.app,
            version: request.version,
            zone: request.zone,
            state: InstanceState::Running,
            address: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, port))),
            launched_at: Timestamp::now(),
            idempotency_key: request.idempotency_key.clone(),
        };
        tracing::info!(instance = %id, port, "local instance started");
        state.by_key.insert(request.idempotency_key, id.clone());
        state.instances.insert(
            id,
            Entry {
                instance: instance.clone(),
                child: Some(child),
            },
        );
        Ok(instance)
    }

    async fn terminate(&self, id: &InstanceId) -> Result<()> {
        let child = {
            let mut state = self.inner.lock().expect("local compute lock");
            let Some(entry) = state.instances.get_mut(id) else {
                return Ok(());
            };
            entry.instance.state = InstanceState::Terminated;
            entry.child.take()
        };
        if let Some(mut child) = child {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        Ok(())
    }

    async fn describe(&self, filter: &InstanceFilter) -> Result<Vec<Instance>> {
        let mut state = self.inner.lock().expect("local compute lock");
        Self::refresh(&mut state);
        Ok(state
            .instances
            .values()
            .map(|e| e.instance.clone())
            .filter(|i| filter.matches(i))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Sha256Digest, Version};

    fn sleeper(_: &ArtifactRef) -> Result<LocalProgram> {
        Ok(LocalProgram {
            program: "sleep".into(),
            args: vec!["30".into()],
        })
    }

    fn request(key: &str) -> LaunchRequest {
        LaunchRequest {
            idempotency_key: IdempotencyKey::parse(key).unwrap(),
            zone: Zone::parse("z1").unwrap(),
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
    async fn a_killed_process_is_reported_crashed() {
        let c = LocalProcessCompute::new(vec![Zone::parse("z1").unwrap()], sleeper).unwrap();
        let i = c.launch(request("k1")).await.unwrap();
        assert!(i.address.unwrap().ip().is_loopback());
        c.kill(&i.id).unwrap();
        let mut state = InstanceState::Running;
        for _ in 0..200 {
            let all = c
                .describe(&InstanceFilter {
                    include_gone: true,
                    ..Default::default()
                })
                .await
                .unwrap();
            state = all[0].state;
            if state == InstanceState::Crashed {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(state, InstanceState::Crashed);
    }

    #[tokio::test]
    async fn an_unresolvable_program_fails_the_launch() {
        let c = LocalProcessCompute::new(vec![Zone::parse("z1").unwrap()], |_: &ArtifactRef| {
            Ok(LocalProgram {
                program: "/nonexistent/ion-app".into(),
                args: vec![],
            })
        })
        .unwrap();
        let err = c.launch(request("k2")).await.unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidInput);
    }
}
