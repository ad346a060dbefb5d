//! The domain model: apps, instances, artifacts, routes and log records.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::error::{Error, Result};
use crate::name::{
    AppId, ArtifactId, FieldName, Hostname, HttpPath, IdempotencyKey, InstanceId, RecordId,
    TenantId, Zone,
};
use crate::time::Timestamp;

/// A SHA-256 digest; displayed and serialized as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sha256Digest([u8; 32]);

impl Sha256Digest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self(sha2::Sha256::digest(data).into())
    }

    /// From raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses 64 lowercase hex digits.
    pub fn parse(s: &str) -> Result<Self, crate::name::ValidationError> {
        let bad = |rule| crate::name::ValidationError {
            field: "sha256",
            rule,
        };
        if s.len() != 64 {
            return Err(bad(crate::name::Rule::Shape("must be 64 hex digits")));
        }
        if let Some((at, ch)) = s
            .char_indices()
            .find(|(_, c)| !matches!(c, '0'..='9' | 'a'..='f'))
        {
            return Err(bad(crate::name::Rule::ForbiddenChar { ch, at }));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)
            .map_err(|_| bad(crate::name::Rule::Shape("must be 64 hex digits")))?;
        Ok(Self(out))
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{self}")
    }
}

impl Serialize for Sha256Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Sha256Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// An incremental SHA-256 over a stream of chunks.
#[derive(Default, Clone)]
pub struct Sha256Hasher(sha2::Sha256);

impl Sha256Hasher {
    /// Feeds more bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The digest of everything fed.
    pub fn finish(self) -> Sha256Digest {
        Sha256Digest(self.0.finalize().into())
    }
}

impl fmt::Debug for Sha256Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sha256Hasher")
    }
}

/// A stored application binary: its id, content digest and length in bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ArtifactRef {
    /// The store's id for the artifact.
    pub id: ArtifactId,
    /// SHA-256 of the content, computed at upload.
    pub sha256: Sha256Digest,
    /// Length of the content in bytes.
    pub length: u64,
}

/// An application version (revision), increasing with each deploy.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Version(pub u64);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// What a tenant wants running: one version of one app, its size and how it is reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSpec {
    /// Owner of the app.
    pub tenant: TenantId,
    /// The app.
    pub app: AppId,
    /// The version to run.
    pub version: Version,
    /// The binary to run.
    pub artifact: ArtifactRef,
    /// Desired number of running instances.
    pub replicas: u32,
    /// Hostnames the load balancer routes to this app.
    pub hostnames: Vec<Hostname>,
    /// Port the app listens on inside its instance.
    pub port: u16,
    /// Path of the readiness probe (HTTP GET, 2xx = ready).
    pub readiness_path: HttpPath,
    /// Instances a deploy may add above `replicas`.
    pub max_surge: u32,
    /// Instances a deploy may take below `replicas`.
    pub max_unavailable: u32,
}

impl AppSpec {
    /// Checks the cross-field rules the types cannot express.
    pub fn validate(&self) -> Result<()> {
        if self.replicas > 10_000 {
            return Err(Error::invalid_input("replicas must be at most 10000"));
        }
        if self.max_surge == 0 && self.max_unavailable == 0 {
            return Err(Error::invalid_input(
                "max_surge and max_unavailable must not both be zero",
            ));
        }
        if self.port == 0 {
            return Err(Error::invalid_input("port must not be zero"));
        }
        let unique: BTreeSet<_> = self.hostnames.iter().collect();
        if unique.len() != self.hostnames.len() {
            return Err(Error::invalid_input("hostnames must be unique"));
        }
        Ok(())
    }
}

/// The lifecycle state of an instance as the compute backend reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// Launched, not yet running.
    Pending,
    /// Running (not necessarily ready: readiness is the health probe's job).
    Running,
    /// Being stopped.
    Stopping,
    /// Gone, by request.
    Terminated,
    /// Gone or stopped without being asked to (process exit, host loss).
    Crashed,
}

impl InstanceState {
    /// Pending or running: the instance counts toward the app's size.
    pub fn is_active(self) -> bool {
        matches!(self, InstanceState::Pending | InstanceState::Running)
    }
}

/// One running (or recently running) copy of an app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// The backend's id.
    pub id: InstanceId,
    /// Owner.
    pub tenant: TenantId,
    /// App.
    pub app: AppId,
    /// Version it runs.
    pub version: Version,
    /// Where it runs.
    pub zone: Zone,
    /// Lifecycle state.
    pub state: InstanceState,
    /// Where it listens, once known.
    pub address: Option<SocketAddr>,
    /// When it was launched.
    pub launched_at: Timestamp,
    /// The key it was launched with.
    pub idempotency_key: IdempotencyKey,
}

/// PEM certificate chain and private key for a route's TLS. `Debug` never prints the key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsCertificate {
    /// Leaf certificate first, then intermediates.
    pub chain_pem: String,
    /// The private key.
    pub key_pem: String,
}

impl fmt::Debug for TlsCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsCertificate")
            .field(
                "chain_pem",
                &format_args!("<{} bytes>", self.chain_pem.len()),
            )
            .field("key_pem", &format_args!("<redacted>"))
            .finish()
    }
}

/// One routable instance behind a route.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Backend {
    /// The instance (identity, not just its address).
    pub instance: InstanceId,
    /// Where to send traffic.
    pub addr: SocketAddr,
    /// Its zone.
    pub zone: Zone,
}

/// Traffic for some hostnames goes to one app's routable instances.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Owner.
    pub tenant: TenantId,
    /// App.
    pub app: AppId,
    /// Hostnames served (at least one).
    pub hostnames: Vec<Hostname>,
    /// Routable instances; empty means the route answers 503.
    pub backends: Vec<Backend>,
    /// TLS, when the route serves HTTPS.
    pub tls: Option<TlsCertificate>,
}

/// A whole, versioned routing snapshot: what the load balancer should serve.
///
/// Built only through [`RouteTable::new`], which refuses a hostname claimed twice, a route without
/// hostnames and two routes for one app, and sorts everything so that equal content has an equal
/// [`checksum`](RouteTable::checksum).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RouteTableWire", into = "RouteTableWire")]
pub struct RouteTable {
    generation: u64,
    routes: Vec<Route>,
}

#[derive(Serialize, Deserialize)]
struct RouteTableWire {
    generation: u64,
    routes: Vec<Route>,
}

impl TryFrom<RouteTableWire> for RouteTable {
    type Error = Error;
    fn try_from(w: RouteTableWire) -> Result<Self> {
        RouteTable::new(w.generation, w.routes)
    }
}

impl From<RouteTable> for RouteTableWire {
    fn from(t: RouteTable) -> Self {
        RouteTableWire {
            generation: t.generation,
            routes: t.routes,
        }
    }
}

impl RouteTable {
    /// Validates and normalizes a table.
    pub fn new(generation: u64, mut routes: Vec<Route>) -> Result<Self> {
        let mut hosts = BTreeSet::new();
        let mut apps = BTreeSet::new();
        for route in &mut routes {
            if route.hostnames.is_empty() {
                return Err(Error::invalid_input(format!(
                    "route for {}/{} has no hostname",
                    route.tenant, route.app
                )));
            }
            if !apps.insert((route.tenant.clone(), route.app.clone())) {
                return Err(Error::invalid_input(format!(
                    "two routes for {}/{}",
                    route.tenant, route.app
                )));
            }
            route.hostnames.sort();
            for host in &route.hostnames {
                if !hosts.insert(host.clone()) {
                    return Err(Error::invalid_input(format!(
                        "hostname {host} is claimed twice"
                    )));
                }
            }
            route.backends.sort();
            route.backends.dedup();
        }
        routes.sort_by(|a, b| (&a.tenant, &a.app).cmp(&(&b.tenant, &b.app)));
        Ok(Self { generation, routes })
    }

    /// The empty table at generation 0.
    pub fn empty() -> Self {
        Self {
            generation: 0,
            routes: Vec::new(),
        }
    }

    /// The generation: increases with every change the router makes.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The routes, sorted by tenant and app.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The same routes under another generation.
    pub fn with_generation(mut self, generation: u64) -> Self {
        self.generation = generation;
        self
    }

    /// SHA-256 of the content (routes only, not the generation): equal content, equal checksum.
    pub fn checksum(&self) -> Sha256Digest {
        let bytes = serde_json::to_vec(&self.routes).expect("route tables serialize");
        Sha256Digest::of(&bytes)
    }

    /// The route serving `host`, if any.
    pub fn route_for(&self, host: &Hostname) -> Option<&Route> {
        self.routes.iter().find(|r| r.hostnames.contains(host))
    }
}

/// Severity of a log record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Finest detail.
    Trace,
    /// Debugging.
    Debug,
    /// Normal operation.
    Info,
    /// Something odd.
    Warn,
    /// A failure.
    Error,
    /// The app is going down.
    Fatal,
}

impl LogLevel {
    /// All levels, lowest first.
    pub const ALL: [LogLevel; 6] = [
        LogLevel::Trace,
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::Warn,
        LogLevel::Error,
        LogLevel::Fatal,
    ];

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
            LogLevel::Fatal => "fatal",
        }
    }
}

impl std::str::FromStr for LogLevel {
    type Err = crate::name::ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LogLevel::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or(crate::name::ValidationError {
                field: "log level",
                rule: crate::name::Rule::Shape(
                    "must be one of trace, debug, info, warn, error, fatal",
                ),
            })
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of a tenant app's log, as stored and searched.
///
/// The tenant is set by ion from the ingest credentials, never from the payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Deterministic id: a retried delivery of the same record carries the same id.
    pub id: RecordId,
    /// Owner.
    pub tenant: TenantId,
    /// App that logged it.
    pub app: AppId,
    /// Instance that logged it, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<InstanceId>,
    /// When it was logged.
    pub time: Timestamp,
    /// Severity.
    pub level: LogLevel,
    /// The text (free-form, never interpreted as query syntax).
    pub message: String,
    /// Extra string fields.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<FieldName, String>,
}
