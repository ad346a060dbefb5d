//! Shared by the real-peer tests: connecting to the MongoDB peer named by `ION_TEST_MONGO_URL`.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use ion_core::testkit::{peer_unreachable, peer_var};
use ion_store::{
    GridFsArtifactStore, GridFsOptions, MongoConfig, MongoConnection, MongoDocumentStore,
};

pub const VAR: &str = "ION_TEST_MONGO_URL";
/// One database for every test run: cases use unique collection names and tenants.
pub const DATABASE: &str = "ion_store_test";

/// The test configuration for `url`: short timeouts so a dead peer fails fast, never hangs.
pub fn config(url: &str) -> MongoConfig {
    MongoConfig::builder()
        .url(url)
        .database(DATABASE)
        .server_selection_timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(5))
        .operation_timeout(Duration::from_secs(60))
        .retry_attempts(3)
        .retry_backoff(Duration::from_millis(100))
        .app_name("ion-store-tests")
        .build()
        .expect("test config is valid")
}

/// A connection to the peer, or `None` (skipped, printed) when it is not configured.
pub async fn connect(what: &str) -> Option<MongoConnection> {
    let url = peer_var(VAR, what)?;
    match MongoConnection::connect(&config(&url)).await {
        Ok(conn) => Some(conn),
        Err(e) => peer_unreachable(VAR, what, &e),
    }
}

pub async fn document_store(what: &str) -> Option<MongoDocumentStore> {
    let conn = connect(what).await?;
    Some(
        MongoDocumentStore::new(conn, &[])
            .await
            .unwrap_or_else(|e| panic!("{what}: MongoDocumentStore::new: {e}")),
    )
}

pub async fn artifact_store(what: &str) -> Option<GridFsArtifactStore> {
    let conn = connect(what).await?;
    Some(
        GridFsArtifactStore::new(conn, GridFsOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{what}: GridFsArtifactStore::new: {e}")),
    )
}

/// A store on a bucket of its own, so a test can count every chunk document in it.
pub async fn private_bucket_store(what: &str) -> Option<(GridFsArtifactStore, String)> {
    let conn = connect(what).await?;
    let bucket = ion_core::testkit::unique_name("b").replace('-', "_");
    let store = GridFsArtifactStore::new(
        conn,
        GridFsOptions {
            bucket: bucket.clone(),
            ..GridFsOptions::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{what}: GridFsArtifactStore::new: {e}"));
    Some((store, bucket))
}

/// A raw driver handle on the test database, for changing stored bytes behind the store's back.
pub async fn raw_database(what: &str) -> Option<mongodb::Database> {
    let url = peer_var(VAR, what)?;
    let mut options = mongodb::options::ClientOptions::parse(&url)
        .await
        .unwrap_or_else(|e| panic!("{what}: parse {VAR}: {e}"));
    options
        .server_selection_timeout
        .get_or_insert(Duration::from_secs(5));
    let client = mongodb::Client::with_options(options).expect("client");
    Some(client.database(DATABASE))
}

/// Drops a collection a test created (the stores have no drop: tenants never drop collections),
/// so repeated runs do not pile up empty tables on the shared server.
pub async fn drop_collection(what: &str, name: &str) {
    if let Some(db) = raw_database(what).await {
        let _ = db.collection::<mongodb::bson::Document>(name).drop().await;
    }
}
