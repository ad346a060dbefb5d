//! Health: readiness gates routability, liveness failures count as crashes.
//!
//! A [`HealthProbe`] answers one probe of one instance; [`HealthTracker`] turns probe results
//! over time into a [`HealthStatus`] per instance (ready after one passing probe, dead after
//! `liveness_failures` consecutive unreachable probes once past the startup grace).
//! [`HttpProbe`] speaks a minimal HTTP/1.1 GET over `tokio::net::TcpStream`, so ion-core needs
//! no HTTP client dependency; [`FakeProbe`] is scripted by tests and the simulation.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::model::{AppSpec, Instance, InstanceState};
use crate::name::{InstanceId, Zone};
use crate::time::Timestamp;

/// What the control plane believes about an instance's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// No probe has passed yet; not routable.
    Starting,
    /// The readiness probe passes: routable.
    Ready,
    /// The readiness probe fails but the instance answers: not routable, not replaced.
    NotReady,
    /// The liveness check failed: treated as a crash (terminated and replaced under back-off).
    Dead,
}

/// The answer of one probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeResult {
    /// The readiness endpoint answered 2xx.
    Ready,
    /// The instance answered, but not 2xx.
    NotReady,
    /// No answer (connection refused, timeout, malformed reply).
    Unreachable,
}

/// Probes one instance of an app.
#[async_trait]
pub trait HealthProbe: Send + Sync + Debug + 'static {
    /// One probe of `instance` (running `spec`).
    async fn probe(&self, instance: &Instance, spec: &AppSpec) -> ProbeResult;
}

/// Probes `GET <readiness_path>` on the instance address with a timeout.
#[derive(Clone, Debug)]
pub struct HttpProbe {
    timeout: Duration,
}

impl Default for HttpProbe {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(2),
        }
    }
}

impl HttpProbe {
    /// A probe giving up after `timeout` (connect plus answer).
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }

    /// Probes `path` at `addr`; the status line decides.
    pub async fn get(&self, addr: SocketAddr, path: &str) -> ProbeResult {
        match tokio::time::timeout(self.timeout, http_status(addr, path)).await {
            Ok(Some(status)) if (200..300).contains(&status) => ProbeResult::Ready,
            Ok(Some(_)) => ProbeResult::NotReady,
            _ => ProbeResult::Unreachable,
        }
    }
}

async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    // The path is a validated `HttpPath`: no spaces, CR or LF can reach the request line.
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: ion-probe\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut buf = Vec::with_capacity(64);
    let mut chunk = [0u8; 64];
    while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 1024 {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    parse_status_line(&buf)
}

/// The status code of an HTTP/1.x status line, if `head` starts with one.
fn parse_status_line(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end();
    let mut parts = line.splitn(3, ' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

#[async_trait]
impl HealthProbe for HttpProbe {
    async fn probe(&self, instance: &Instance, spec: &AppSpec) -> ProbeResult {
        match instance.address {
            Some(addr) => self.get(addr, spec.readiness_path.as_str()).await,
            None => ProbeResult::Unreachable,
        }
    }
}

#[derive(Debug, Default)]
struct FakeProbeState {
    default: Option<ProbeResult>,
    by_instance: HashMap<InstanceId, ProbeResult>,
    by_zone: BTreeMap<Zone, ProbeResult>,
    by_version: BTreeMap<(String, u64), ProbeResult>,
    probes: u64,
}

/// A scripted probe: every running instance is ready unless told otherwise. Clones share state.
#[derive(Clone, Debug, Default)]
pub struct FakeProbe(Arc<Mutex<FakeProbeState>>);

impl FakeProbe {
    /// Every instance answers ready.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FakeProbeState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What instances without a more specific answer return (ready by default).
    pub fn set_default(&self, result: ProbeResult) {
        self.state().default = Some(result);
    }

    /// `instance` answers `result` from now on.
    pub fn set(&self, instance: &InstanceId, result: ProbeResult) {
        self.state().by_instance.insert(instance.clone(), result);
    }

    /// Every instance in `zone` answers `result` (e.g. a network partition).
    pub fn set_zone(&self, zone: &Zone, result: Option<ProbeResult>) {
        match result {
            Some(r) => self.state().by_zone.insert(zone.clone(), r),
            None => self.state().by_zone.remove(zone),
        };
    }

    /// Every instance of `app` at `version` answers `result` (e.g. a bad revision).
    pub fn set_version(&self, app: &crate::name::AppId, version: u64, result: ProbeResult) {
        self.state()
            .by_version
            .insert((app.as_str().to_owned(), version), result);
    }

    /// Probes answered so far.
    pub fn probes(&self) -> u64 {
        self.state().probes
    }
}

#[async_trait]
impl HealthProbe for FakeProbe {
    async fn probe(&self, instance: &Instance, _spec: &AppSpec) -> ProbeResult {
        let mut s = self.state();
        s.probes += 1;
        if let Some(r) = s.by_instance.get(&instance.id) {
            return *r;
        }
        if let Some(r) = s.by_zone.get(&instance.zone) {
            return *r;
        }
        if let Some(r) = s
            .by_version
            .get(&(instance.app.as_str().to_owned(), instance.version.0))
        {
            return *r;
        }
        s.default.unwrap_or(ProbeResult::Ready)
    }
}

/// Thresholds of the health tracker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthConfig {
    /// Unreachable probes are not held against an instance this long after launch.
    pub startup_grace: Duration,
    /// Consecutive unreachable probes (after the grace) that make an instance dead.
    pub liveness_failures: u32,
    /// Consecutive failing probes that take a ready instance out of the route table.
    pub readiness_failures: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            startup_grace: Duration::from_secs(120),
            liveness_failures: 3,
            readiness_failures: 1,
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Track {
    ever_ready: bool,
    failing: u32,
    unreachable: u32,
    status: Option<HealthStatus>,
}

/// Turns probe results over time into a status per instance.
#[derive(Debug, Default)]
pub struct HealthTracker {
    config: HealthConfig,
    tracks: HashMap<InstanceId, Track>,
}

impl HealthTracker {
    /// A tracker with `config`.
    pub fn new(config: HealthConfig) -> Self {
        Self {
            config,
            tracks: HashMap::new(),
        }
    }

    /// The thresholds.
    pub fn config(&self) -> &HealthConfig {
        &self.config
    }

    /// Folds one probe of `instance` at `now` into its status and returns it.
    pub fn observe(
        &mut self,
        instance: &Instance,
        result: ProbeResult,
        now: Timestamp,
    ) -> HealthStatus {
        let grace_over = now.since(instance.launched_at) > self.config.startup_grace;
        let cfg = self.config;
        let t = self.tracks.entry(instance.id.clone()).or_default();
        let status = match result {
            ProbeResult::Ready => {
                t.ever_ready = true;
                t.failing = 0;
                t.unreachable = 0;
                HealthStatus::Ready
            }
            ProbeResult::NotReady | ProbeResult::Unreachable => {
                t.failing += 1;
                if result == ProbeResult::Unreachable {
                    t.unreachable += 1;
                } else {
                    t.unreachable = 0;
                }
                let was_ready = t.status == Some(HealthStatus::Ready);
                if (t.ever_ready || grace_over) && t.unreachable >= cfg.liveness_failures {
                    HealthStatus::Dead
                } else if was_ready && t.failing < cfg.readiness_failures {
                    HealthStatus::Ready
                } else if t.ever_ready || grace_over {
                    HealthStatus::NotReady
                } else {
                    HealthStatus::Starting
                }
            }
        };
        t.status = Some(status);
        status
    }

    /// The last status of `id`, if it was probed.
    pub fn status(&self, id: &InstanceId) -> Option<HealthStatus> {
        self.tracks.get(id).and_then(|t| t.status)
    }

    /// Forgets instances that are no longer active.
    pub fn retain_active(&mut self, observed: &[Instance]) {
        let active: std::collections::HashSet<&InstanceId> = observed
            .iter()
            .filter(|i| i.state.is_active())
            .map(|i| &i.id)
            .collect();
        self.tracks.retain(|id, _| active.contains(id));
    }
}

/// Probes every running instance of a desired app and returns the status map the planner and
/// router read. Pending instances are `Starting` without a probe.
pub async fn probe_all(
    probe: &Arc<dyn HealthProbe>,
    tracker: &mut HealthTracker,
    observed: &[Instance],
    specs: &HashMap<(crate::name::TenantId, crate::name::AppId), AppSpec>,
    now: Timestamp,
    concurrency: usize,
) -> HashMap<InstanceId, HealthStatus> {
    use futures::stream::{self, StreamExt};
    // Owned futures (no borrowing closure inside the stream) keep the caller's future `Send`.
    let probes: Vec<_> = observed
        .iter()
        .filter(|i| i.state == InstanceState::Running)
        .filter_map(|i| {
            let spec = specs.get(&(i.tenant.clone(), i.app.clone()))?.clone();
            let instance = i.clone();
            let probe = probe.clone();
            Some(async move {
                let r = probe.probe(&instance, &spec).await;
                (instance, r)
            })
        })
        .collect();
    let results: Vec<(Instance, ProbeResult)> = stream::iter(probes)
        .buffered(concurrency.max(1))
        .collect()
        .await;
    tracker.retain_active(observed);
    let mut out = HashMap::with_capacity(results.len());
    for (instance, result) in results {
        out.insert(instance.id.clone(), tracker.observe(&instance, result, now));
    }
    for i in observed {
        if i.state == InstanceState::Pending {
            out.insert(i.id.clone(), HealthStatus::Starting);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Version;
    use crate::name::{AppId, IdempotencyKey, TenantId};

    fn instance(launched: i64) -> Instance {
        Instance {
            id: InstanceId::parse("i-1").unwrap(),
            tenant: TenantId::parse("acme").unwrap(),
            app: AppId::parse("web").unwrap(),
            version: Version(1),
            zone: Zone::parse("zone-a").unwrap(),
            state: InstanceState::Running,
            address: None,
            launched_at: Timestamp::from_millis(launched),
            idempotency_key: IdempotencyKey::parse("k-1").unwrap(),
        }
    }

    #[test]
    fn status_line_parsing() {
        assert_eq!(parse_status_line(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(parse_status_line(b"HTTP/1.0 503 Busy\r\n"), Some(503));
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 20"), None);
    }

    #[test]
    fn readiness_then_liveness() {
        let mut t = HealthTracker::new(HealthConfig::default());
        let i = instance(0);
        let at = |s: u64| Timestamp::EPOCH.plus(Duration::from_secs(s));
        assert_eq!(
            t.observe(&i, ProbeResult::Unreachable, at(1)),
            HealthStatus::Starting
        );
        assert_eq!(
            t.observe(&i, ProbeResult::Unreachable, at(2)),
            HealthStatus::Starting
        );
        assert_eq!(
            t.observe(&i, ProbeResult::Unreachable, at(3)),
            HealthStatus::Starting
        );
        assert_eq!(
            t.observe(&i, ProbeResult::Ready, at(4)),
            HealthStatus::Ready
        );
        // One failing probe takes it out of the route table; it answers, so it is not dead.
        assert_eq!(
            t.observe(&i, ProbeResult::NotReady, at(5)),
            HealthStatus::NotReady
        );
        assert_eq!(
            t.observe(&i, ProbeResult::Unreachable, at(6)),
            HealthStatus::NotReady
        );
        assert_eq!(
            t.observe(&i, ProbeResult::Unreachable, at(7)),
            HealthStatus::NotReady
        );
        assert_eq!(
            t.observe(&i, ProbeResult::Unreachable, at(8)),
            HealthStatus::Dead
        );
    }

    #[test]
    fn never_ready_dies_after_grace() {
        let mut t = HealthTracker::new(HealthConfig::default());
        let i = instance(0);
        let late = Timestamp::EPOCH.plus(Duration::from_secs(500));
        assert_eq!(
            t.observe(&i, ProbeResult::Unreachable, late),
            HealthStatus::NotReady
        );
        t.observe(&i, ProbeResult::Unreachable, late);
        assert_eq!(
            t.observe(&i, ProbeResult::Unreachable, late),
            HealthStatus::Dead
        );
    }

    #[tokio::test]
    async fn http_probe_against_a_local_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            for status in ["200 OK", "503 Service Unavailable"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 512];
                let n = s.read(&mut buf).await.unwrap();
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                assert!(head.starts_with("GET /healthz HTTP/1.1\r\n"), "{head}");
                let reply = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
                s.write_all(reply.as_bytes()).await.unwrap();
            }
        });
        let probe = HttpProbe::new(Duration::from_secs(5));
        assert_eq!(probe.get(addr, "/healthz").await, ProbeResult::Ready);
        assert_eq!(probe.get(addr, "/healthz").await, ProbeResult::NotReady);
        server.await.unwrap();
        // Nothing listens any more.
        assert_eq!(probe.get(addr, "/healthz").await, ProbeResult::Unreachable);
    }
}
