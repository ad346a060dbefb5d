//! `MongoStatsStore`: per-app time-series samples with retention and windowed averages, the
//! autoscaler's `StatsSource`.

use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use ion_core::control::autoscaler::{AppStats, StatsSource};
use ion_core::{AppId, Error, ErrorKind, Result, TenantId, Timestamp};
use mongodb::bson::{doc, oid::ObjectId, DateTime, Document};
use mongodb::options::IndexOptions;
use mongodb::{Collection, IndexModel};

use crate::connection::MongoConnection;
use crate::error::map_error;

/// The collection; its `.` keeps it apart from every [`ion_core::CollectionName`].
const COLLECTION: &str = "ion.stats";

/// One measurement of one app, averaged over its instances at that moment.
#[derive(Clone, Debug, PartialEq)]
pub struct StatsSample {
    /// Owner.
    pub tenant: TenantId,
    /// App.
    pub app: AppId,
    /// When it was measured.
    pub at: Timestamp,
    /// Requests per second per instance.
    pub requests_per_sec: f64,
    /// CPU utilization per instance (1.0 = one full core).
    pub cpu: f64,
    /// Failed requests over all requests, 0.0..=1.0.
    pub error_rate: f64,
    /// Mean request latency in milliseconds.
    pub latency_ms: f64,
}

/// Averages over the samples of one app in a time window.
#[derive(Clone, Debug, PartialEq)]
pub struct StatsWindow {
    /// Samples in the window (at least 1).
    pub samples: u64,
    /// Mean requests per second per instance.
    pub requests_per_sec: f64,
    /// Mean CPU utilization.
    pub cpu: f64,
    /// Mean error rate.
    pub error_rate: f64,
    /// Mean latency in milliseconds.
    pub latency_ms: f64,
}

/// Retention and the window the autoscaler sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatsOptions {
    /// How long samples are kept (TTL index on MongoDB; [`MongoStatsStore::prune`] everywhere).
    pub retention: Duration,
    /// The window [`StatsSource::app_stats`] averages over, ending now.
    pub window: Duration,
}

impl Default for StatsOptions {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(7 * 24 * 3600),
            window: Duration::from_secs(60),
        }
    }
}

/// Stats samples in the `ion.stats` collection.
///
/// Samples expire through a TTL index on `at` where the server supports one (MongoDB); FerretDB
/// 1.24 does not, so the store notes that ([`MongoStatsStore::has_ttl_index`]) and
/// [`MongoStatsStore::prune`] deletes expired samples explicitly. Windowed averages are summed
/// while streaming the window's samples from an index range scan on `(tenant, app, at)`.
#[derive(Clone, Debug)]
pub struct MongoStatsStore {
    conn: MongoConnection,
    options: StatsOptions,
    ttl_index: bool,
}

impl MongoStatsStore {
    /// A store on `conn`'s database; creates the lookup index and, if the server can, the TTL
    /// index.
    pub async fn new(conn: MongoConnection, options: StatsOptions) -> Result<Self> {
        if options.window.is_zero() || options.retention < options.window {
            return Err(Error::invalid_config(
                "stats options: window must be non-zero and retention at least the window",
            ));
        }
        let coll = conn.database().collection::<Document>(COLLECTION);
        let lookup = IndexModel::builder()
            .keys(doc! { "tenant": 1, "app": 1, "at": 1 })
            .build();
        conn.retry()
            .run("create_index", |_| async {
                coll.create_index(lookup.clone())
                    .await
                    .map(|_| ())
                    .map_err(map_error)
            })
            .await?;
        let ttl = IndexModel::builder()
            .keys(doc! { "at": 1 })
            .options(
                IndexOptions::builder()
                    .expire_after(options.retention)
                    .build(),
            )
            .build();
        let ttl_index = match conn
            .retry()
            .run("create_ttl_index", |_| async {
                coll.create_index(ttl.clone())
                    .await
                    .map(|_| ())
                    .map_err(map_error)
            })
            .await
        {
            Ok(()) => true,
            Err(e) if e.kind() == ErrorKind::Unsupported => {
                tracing::warn!(error = %e, "server has no ttl indexes; stats expire only through prune");
                false
            }
            Err(e) => return Err(e),
        };
        Ok(Self {
            conn,
            options,
            ttl_index,
        })
    }

    /// Whether the server expires samples by itself.
    pub fn has_ttl_index(&self) -> bool {
        self.ttl_index
    }

    fn collection(&self) -> Collection<Document> {
        self.conn.database().collection(COLLECTION)
    }

    /// Stores a sample. Values must be finite and not negative.
    pub async fn record(&self, sample: &StatsSample) -> Result<()> {
        for (name, v) in [
            ("requests_per_sec", sample.requests_per_sec),
            ("cpu", sample.cpu),
            ("error_rate", sample.error_rate),
            ("latency_ms", sample.latency_ms),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(Error::invalid_input(format!(
                    "stats sample {name} must be a finite non-negative number"
                )));
            }
        }
        // The id is fixed before the first attempt: a retry after a lost ack hits duplicate key
        // instead of counting the sample twice.
        let stored = doc! {
            "_id": ObjectId::new(),
            "tenant": sample.tenant.as_str(),
            "app": sample.app.as_str(),
            "at": DateTime::from_millis(sample.at.as_millis()),
            "requests_per_sec": sample.requests_per_sec,
            "cpu": sample.cpu,
            "error_rate": sample.error_rate,
            "latency_ms": sample.latency_ms,
        };
        let coll = self.collection();
        self.conn
            .retry()
            .run("record_stats", |attempt| {
                let (coll, stored) = (&coll, &stored);
                async move {
                    match coll.insert_one(stored.clone()).await.map_err(map_error) {
                        Ok(_) => Ok(()),
                        Err(e) if attempt > 1 && e.kind() == ErrorKind::AlreadyExists => Ok(()),
                        Err(e) => Err(e),
                    }
                }
            })
            .await
    }

    /// Averages over `app`'s samples with `from <= at < to`; `None` when there are none.
    pub async fn window(
        &self,
        tenant: &TenantId,
        app: &AppId,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Option<StatsWindow>> {
        let filter = doc! {
            "tenant": { "$eq": tenant.as_str() },
            "app": { "$eq": app.as_str() },
            "at": {
                "$gte": DateTime::from_millis(from.as_millis()),
                "$lt": DateTime::from_millis(to.as_millis()),
            },
        };
        let coll = self.collection();
        // Summed while streaming the cursor, not with `$group`: FerretDB 1.24's `$sum` over
        // double fields returns 0, and samples are small, so memory stays at one batch.
        let sums = self
            .conn
            .retry()
            .run("stats_window", |_| async {
                let mut cursor = coll
                    .find(filter.clone())
                    .projection(doc! { "_id": 0, "requests_per_sec": 1, "cpu": 1, "error_rate": 1, "latency_ms": 1 })
                    .batch_size(1000)
                    .await
                    .map_err(map_error)?;
                let mut sums = [0.0f64; 4];
                let mut n = 0u64;
                while let Some(row) = cursor.try_next().await.map_err(map_error)? {
                    n += 1;
                    for (sum, key) in sums
                        .iter_mut()
                        .zip(["requests_per_sec", "cpu", "error_rate", "latency_ms"])
                    {
                        *sum += row.get_f64(key).unwrap_or(0.0);
                    }
                }
                Ok((n, sums))
            })
            .await?;
        let (n, [rps, cpu, err, lat]) = sums;
        if n == 0 {
            return Ok(None);
        }
        let count = n as f64;
        Ok(Some(StatsWindow {
            samples: n,
            requests_per_sec: rps / count,
            cpu: cpu / count,
            error_rate: err / count,
            latency_ms: lat / count,
        }))
    }

    /// Deletes samples older than the retention, counted from `now`; returns how many.
    pub async fn prune(&self, now: Timestamp) -> Result<u64> {
        let cutoff = DateTime::from_millis(now.minus(self.options.retention).as_millis());
        let coll = self.collection();
        self.conn
            .retry()
            .run("prune_stats", |_| async {
                coll.delete_many(doc! { "at": { "$lt": cutoff } })
                    .await
                    .map(|r| r.deleted_count)
                    .map_err(map_error)
            })
            .await
    }
}

#[async_trait]
impl StatsSource for MongoStatsStore {
    async fn app_stats(&self, tenant: &TenantId, app: &AppId) -> Result<Option<AppStats>> {
        let now = Timestamp::now();
        let window = self
            .window(
                tenant,
                app,
                now.minus(self.options.window),
                now.plus(Duration::from_millis(1)),
            )
            .await?;
        Ok(window.map(|w| AppStats {
            requests_per_sec: w.requests_per_sec,
            cpu: w.cpu,
        }))
    }
}
