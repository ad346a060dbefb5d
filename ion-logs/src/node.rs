//! One aggregator node: configuration, wiring (WAL, shipper, API) and lifecycle.
//!
//! Nodes are independent: each owns its WAL directory and ships to the shared cluster; several
//! behind the load balancer scale the tier. Record ids carry the node's name and WAL
//! incarnation, so nodes never collide.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ion_core::fake::{InMemoryBlobStore, InMemoryDocumentStore, InMemoryLogIndex};
use ion_core::{BlobStore, DocumentStore, Error, IndexSettings, LogIndex, Result, TenantId};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::api::{router, ApiState, IngestLimits};
use crate::es::{ElasticsearchConfig, ElasticsearchLogIndex};
use crate::ledger::Ledger;
use crate::rate::{RateLimit, TenantRateLimiter};
use crate::shipper::{spawn_shipper, ShipperConfig, ShipperDeps, ShipperHandle};
use crate::tokens::TokenStore;
use crate::wal::{WalConfig, WriteAheadLog};

/// Where records are indexed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchTarget {
    /// The in-memory fake (benchmarks of the node itself, demos).
    #[default]
    InMemory,
    /// An Elasticsearch or OpenSearch cluster.
    Elasticsearch(ElasticsearchConfig),
}

/// Index settings as configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct IndexSettingsConfig {
    /// Primary shards per daily index.
    pub shards: u32,
    /// Replicas per shard.
    pub replicas: u32,
    /// Refresh interval in milliseconds (near-real-time search).
    pub refresh_ms: u64,
}

impl Default for IndexSettingsConfig {
    fn default() -> Self {
        let d = IndexSettings::default();
        Self {
            shards: d.shards,
            replicas: d.replicas,
            refresh_ms: d.refresh_interval.as_millis() as u64,
        }
    }
}

/// A tenant known at start: its token (as a SHA-256, never in clear) and rate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantBootstrap {
    /// The tenant.
    pub tenant: TenantId,
    /// SHA-256 (hex) of its ingest token.
    pub token_sha256: String,
    /// Its byte rate, when not the default.
    #[serde(default)]
    pub rate: Option<RateLimit>,
}

/// The configuration file of one aggregator node (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AggregatorConfig {
    /// Listen address, e.g. `127.0.0.1:8080` (port 0 picks one).
    pub listen: String,
    /// The write-ahead log.
    pub wal: WalConfig,
    /// Where records go.
    pub search: SearchTarget,
    /// Template settings.
    pub index_settings: IndexSettingsConfig,
    /// The shipper.
    pub shipper: ShipperConfig,
    /// Request limits.
    pub limits: IngestLimits,
    /// Rate of tenants without their own.
    pub default_rate: RateLimit,
    /// Tenants and tokens to register at start.
    pub tenants: Vec<TenantBootstrap>,
    /// Health turns bad after this long without delivery while records wait (ms).
    pub stall_after_ms: u64,
    /// How long token lookups are cached (ms): the delay before a revocation bites.
    pub token_cache_ms: u64,
    /// Delete daily indices older than this many days (checked hourly); 0 keeps everything.
    pub retention_days: u32,
    /// Most undelivered records per tenant on this node (429 for that tenant beyond it).
    pub tenant_backlog_records: u64,
    /// Directory of the segment archive (a `DirectoryBlobStore`); in memory when unset.
    pub archive_dir: Option<std::path::PathBuf>,
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            wal: WalConfig::default(),
            search: SearchTarget::default(),
            index_settings: IndexSettingsConfig::default(),
            shipper: ShipperConfig::default(),
            limits: IngestLimits::default(),
            default_rate: RateLimit::default(),
            tenants: Vec::new(),
            stall_after_ms: 60_000,
            token_cache_ms: 5_000,
            retention_days: 0,
            tenant_backlog_records: 2_000_000,
            archive_dir: None,
        }
    }
}

impl AggregatorConfig {
    /// Reads a JSON configuration file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path)
            .map_err(|e| Error::invalid_config(format!("config file {}: {e}", path.display())))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::invalid_config(format!("config file {}: {e}", path.display())))
    }
}

/// The backends a node runs on (production: Elasticsearch, MongoDB, S3).
#[derive(Clone, Debug)]
pub struct NodeBackends {
    /// Where records go.
    pub index: Arc<dyn LogIndex>,
    /// Dead letters.
    pub dead_letters: Arc<dyn DocumentStore>,
    /// Segment archive.
    pub archive: Arc<dyn BlobStore>,
    /// Ingest tokens.
    pub tokens: Arc<dyn DocumentStore>,
}

impl NodeBackends {
    /// The backends a configuration names: the search target, the archive directory when set
    /// (in memory otherwise); dead letters and tokens are in memory in this build of the node
    /// binary (see the crate documentation).
    pub async fn from_config(config: &AggregatorConfig) -> Result<Self> {
        let index: Arc<dyn LogIndex> = match &config.search {
            SearchTarget::InMemory => Arc::new(InMemoryLogIndex::new()),
            SearchTarget::Elasticsearch(c) => {
                Arc::new(ElasticsearchLogIndex::connect(c.clone()).await?)
            }
        };
        Ok(Self {
            index,
            dead_letters: Arc::new(InMemoryDocumentStore::new()),
            archive: match &config.archive_dir {
                Some(dir) => Arc::new(crate::dir_blob::DirectoryBlobStore::open(dir)?),
                None => Arc::new(InMemoryBlobStore::new()),
            },
            tokens: Arc::new(InMemoryDocumentStore::new()),
        })
    }
}

/// Deletes the layout's daily indices of days before `cutoff`; returns what it deleted.
pub async fn delete_expired_indices(
    index: &dyn LogIndex,
    cutoff: ion_core::Timestamp,
) -> Result<Vec<ion_core::IndexName>> {
    let cut = cutoff.date();
    let mut deleted = Vec::new();
    for info in index.list_indices().await? {
        if index
            .layout()
            .day_of(&info.name)
            .is_some_and(|day| day < cut)
        {
            index.delete_index(&info.name).await?;
            tracing::info!(index = %info.name, "expired index deleted");
            deleted.push(info.name);
        }
    }
    Ok(deleted)
}

/// A running node.
#[derive(Debug)]
pub struct Aggregator {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Shared state (WAL, ledger, tokens, ...).
    pub state: Arc<ApiState>,
    shipper: ShipperHandle,
    server: tokio::task::JoinHandle<()>,
    retention: Option<tokio::task::JoinHandle<()>>,
    stop: oneshot::Sender<()>,
}

impl Aggregator {
    /// Starts a node: recovers the WAL, installs templates, registers tenants, starts the
    /// shipper and the HTTP server.
    pub async fn start(config: AggregatorConfig, backends: NodeBackends) -> Result<Self> {
        let wal_config = config.wal.clone();
        let (wal, report, checkpoint) =
            tokio::task::spawn_blocking(move || WriteAheadLog::open(&wal_config))
                .await
                .map_err(|e| Error::unexpected(format!("wal open task: {e}")))??;
        tracing::info!(
            torn_bytes = report.torn_bytes,
            lost_bytes = report.lost_bytes,
            corrupt_segments = report.corrupt_segments,
            segments = report.segments,
            "wal recovered"
        );
        let wal = Arc::new(wal);
        let settings = IndexSettings {
            shards: config.index_settings.shards,
            replicas: config.index_settings.replicas,
            refresh_interval: Duration::from_millis(config.index_settings.refresh_ms),
        };
        let mut attempt = 0;
        loop {
            match backends.index.ensure_templates(&settings).await {
                Ok(()) => break,
                Err(e) if e.is_transient() && attempt < 30 => {
                    attempt += 1;
                    tracing::warn!(error = %e, "index templates not installed yet, retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(e),
            }
        }
        let tokens = Arc::new(TokenStore::new(
            backends.tokens.clone(),
            Duration::from_millis(config.token_cache_ms),
        ));
        let mut overrides = HashMap::new();
        for t in &config.tenants {
            tokens
                .register_hash(&t.tenant, &t.token_sha256, "bootstrap")
                .await?;
            if let Some(r) = t.rate {
                overrides.insert(t.tenant.clone(), r);
            }
        }
        let ledger = Arc::new(Ledger::new());
        let shipper = spawn_shipper(
            ShipperDeps {
                wal: wal.clone(),
                index: backends.index.clone(),
                dead_letters: backends.dead_letters.clone(),
                archive: backends.archive.clone(),
                ledger: ledger.clone(),
            },
            config.shipper.clone(),
            checkpoint,
        )?;
        let state = Arc::new(ApiState {
            wal,
            ledger,
            tokens,
            limiter: Arc::new(TenantRateLimiter::new(config.default_rate, overrides)),
            index: backends.index.clone(),
            limits: config.limits,
            shipper: shipper.status.clone(),
            stall_after: Duration::from_millis(config.stall_after_ms),
            tenant_backlog_records: config.tenant_backlog_records,
        });
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .map_err(|e| Error::invalid_config(format!("listen: {}: {e}", config.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::unexpected(format!("listen address: {e}")))?;
        let (stop, stopped) = oneshot::channel::<()>();
        let app = router(state.clone());
        let server = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "http server failed");
            }
        });
        let retention = (config.retention_days > 0).then(|| {
            let index = backends.index.clone();
            let keep = Duration::from_secs(86_400 * u64::from(config.retention_days));
            tokio::spawn(async move {
                loop {
                    let cutoff = ion_core::Timestamp::now().minus(keep);
                    if let Err(e) = delete_expired_indices(&*index, cutoff).await {
                        tracing::warn!(error = %e, "retention pass failed");
                    }
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
            })
        });
        tracing::info!(%addr, node = state.wal.node().as_str(), "aggregator listening");
        Ok(Self {
            addr,
            state,
            shipper,
            server,
            retention,
            stop,
        })
    }

    /// Stops accepting requests, lets the shipper finish its running bulks and save its
    /// checkpoint, and closes the WAL.
    pub async fn shutdown(self) {
        if let Some(r) = &self.retention {
            r.abort();
        }
        let _ = self.stop.send(());
        let _ = self.server.await;
        self.shipper.shutdown().await;
        self.state.wal.close();
    }
}
