//! `MongoConnection`: one client (connection pool) shared by the stores of one database.

use std::fmt;
use std::sync::Arc;

use ion_core::Result;
use mongodb::bson::doc;
use mongodb::options::ClientOptions;
use mongodb::{Client, Database};

use crate::config::{redact_url, MongoConfig};
use crate::error::map_error;
use crate::retry::RetryPolicy;

/// A connected MongoDB client for one database, cheap to clone.
///
/// Works unchanged against a standalone server, a replica set (`?replicaSet=…`: the driver follows
/// elections and routes writes to the current primary) or a sharded cluster.
#[derive(Clone)]
pub struct MongoConnection {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    database: Database,
    retry: RetryPolicy,
    shown_url: String,
    conditional_writes_atomic: bool,
}

impl MongoConnection {
    /// Connects and asks the deployment what it is (`buildInfo`), retrying transient failures per the config's policy.
    pub async fn connect(config: &MongoConfig) -> Result<Self> {
        config.validate()?;
        let mut options = ClientOptions::parse(&config.url).await.map_err(map_error)?;
        config.apply(&mut options);
        let client = Client::with_options(options).map_err(map_error)?;
        let database = client.database(&config.database);
        let retry = config.retry_policy();
        let admin = client.database("admin");
        let build_info = retry
            .run("build_info", |_| async {
                admin
                    .run_command(doc! { "buildInfo": 1 })
                    .await
                    .map_err(map_error)
            })
            .await?;
        // FerretDB evaluates an update's filter and then writes by `_id` in a separate step
        // (backends/sqlite UpdateAll in 1.24), so two updates guarded by the same revision can
        // both succeed. MongoDB applies filter and write atomically per document.
        let ferretdb = build_info.contains_key("ferretdbVersion");
        if ferretdb {
            tracing::warn!(
                "server is ferretdb: conditional updates are not atomic on the server; \
                 revision checks are serialized within this process only"
            );
        }
        let conn = Self {
            inner: Arc::new(Inner {
                client,
                database,
                retry,
                shown_url: redact_url(&config.url),
                conditional_writes_atomic: !ferretdb,
            }),
        };
        tracing::debug!(url = %conn.inner.shown_url, database = %config.database, ferretdb, "connected to mongodb");
        Ok(conn)
    }

    /// Whether the server applies a filtered update atomically per document (MongoDB: yes;
    /// FerretDB 1.x: no). When it does not, [`crate::MongoDocumentStore`] serializes its own
    /// writes per document, which protects writers sharing one store, not separate processes.
    pub fn conditional_writes_atomic(&self) -> bool {
        self.inner.conditional_writes_atomic
    }

    /// Round trip to the server; `Unavailable` when it cannot be reached.
    pub async fn ping(&self) -> Result<()> {
        let db = self.inner.client.database("admin");
        self.retry()
            .run("ping", |_| async {
                db.run_command(doc! { "ping": 1 })
                    .await
                    .map(|_| ())
                    .map_err(map_error)
            })
            .await
    }

    /// The retry policy every operation uses.
    pub fn retry(&self) -> &RetryPolicy {
        &self.inner.retry
    }

    pub(crate) fn database(&self) -> &Database {
        &self.inner.database
    }
}

impl fmt::Debug for MongoConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoConnection")
            .field("url", &self.inner.shown_url)
            .field("database", &self.inner.database.name())
            .finish()
    }
}
