//! Smoke test for the MongoDB peer (FerretDB on SQLite, or a real MongoDB): documents and GridFS.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{AsyncReadExt, AsyncWriteExt, TryStreamExt};
use ion_core::testkit::{peer_unreachable, peer_var};
use mongodb::bson::{doc, Bson, Document};
use mongodb::options::ClientOptions;
use mongodb::Client;

const VAR: &str = "ION_TEST_MONGO_URL";
const WHAT: &str = "mongo smoke test";

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}_{}_{nanos}", std::process::id())
}

/// Connects with bounded timeouts even when the URL sets none, so a dead peer fails fast.
async fn connect(url: &str) -> Result<Client, mongodb::error::Error> {
    let mut options = ClientOptions::parse(url).await?;
    options
        .server_selection_timeout
        .get_or_insert(Duration::from_secs(5));
    options
        .connect_timeout
        .get_or_insert(Duration::from_secs(5));
    options.app_name.get_or_insert_with(|| "ion-smoke".into());
    let client = Client::with_options(options)?;
    client
        .database("admin")
        .run_command(doc! { "ping": 1 })
        .await?;
    Ok(client)
}

#[tokio::test]
async fn mongo_insert_find_and_gridfs_round_trip() {
    let Some(url) = peer_var(VAR, WHAT) else {
        return;
    };
    let client = match connect(&url).await {
        Ok(c) => c,
        Err(err) => {
            peer_unreachable::<()>(VAR, WHAT, &err);
            return;
        }
    };
    let db = client.database(&unique("ion_smoke"));

    // Documents: insert, find by a simple filter, read back.
    let apps = db.collection::<Document>("apps");
    apps.insert_many([
        doc! { "_id": "t1/a", "tenant": "t1", "name": "a", "revision": 1_i64 },
        doc! { "_id": "t1/b", "tenant": "t1", "name": "b", "revision": 1_i64 },
        doc! { "_id": "t2/a", "tenant": "t2", "name": "a", "revision": 1_i64 },
    ])
    .await
    .unwrap_or_else(|e| panic!("{WHAT}: insert_many at {url}: {e}"));
    let t1: Vec<Document> = apps
        .find(doc! { "tenant": "t1" })
        .sort(doc! { "name": 1 })
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("collect the cursor");
    let names: Vec<&str> = t1.iter().filter_map(|d| d.get_str("name").ok()).collect();
    assert_eq!(names, ["a", "b"], "{WHAT}: find by tenant");

    // Optimistic concurrency as the DocumentStore will use it: update only at the expected revision.
    let hit = apps
        .update_one(
            doc! { "_id": "t1/a", "revision": 1_i64 },
            doc! { "$set": { "revision": 2_i64 } },
        )
        .await
        .expect("update at the current revision");
    assert_eq!(
        hit.matched_count, 1,
        "{WHAT}: update at the current revision"
    );
    let miss = apps
        .update_one(
            doc! { "_id": "t1/a", "revision": 1_i64 },
            doc! { "$set": { "revision": 3_i64 } },
        )
        .await
        .expect("update at a stale revision");
    assert_eq!(
        miss.matched_count, 0,
        "{WHAT}: a stale revision must match nothing"
    );
    let dup = apps.insert_one(doc! { "_id": "t1/a" }).await;
    assert!(dup.is_err(), "{WHAT}: a duplicate _id must be rejected");

    // GridFS: upload a stream in several chunks, download it, compare. The driver creates the
    // files_id/n and filename/uploadDate indexes on first upload; FerretDB's SQLite handler
    // must accept them, or GridFsArtifactStore cannot run on this peer.
    let bucket = db.gridfs_bucket(None);
    let payload: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
    let mut upload = bucket
        .open_upload_stream("t1/app-a/1.0.0.tar")
        .chunk_size_bytes(255 * 1024)
        .await
        .unwrap_or_else(|e| panic!("{WHAT}: gridfs open_upload_stream at {url}: {e}"));
    upload
        .write_all(&payload)
        .await
        .unwrap_or_else(|e| panic!("{WHAT}: gridfs write: {e}"));
    upload
        .close()
        .await
        .unwrap_or_else(|e| panic!("{WHAT}: gridfs close (writes the files document): {e}"));
    let id: Bson = upload.id().clone();

    let mut download = bucket
        .open_download_stream(id.clone())
        .await
        .unwrap_or_else(|e| panic!("{WHAT}: gridfs open_download_stream: {e}"));
    let mut back = Vec::new();
    download
        .read_to_end(&mut back)
        .await
        .unwrap_or_else(|e| panic!("{WHAT}: gridfs read: {e}"));
    assert_eq!(back.len(), payload.len(), "{WHAT}: gridfs length");
    assert!(
        back == payload,
        "{WHAT}: gridfs bytes differ after a round trip"
    );

    let files: Vec<_> = bucket
        .find(doc! { "filename": "t1/app-a/1.0.0.tar" })
        .await
        .expect("gridfs find")
        .try_collect()
        .await
        .expect("collect gridfs files");
    assert_eq!(files.len(), 1, "{WHAT}: gridfs find by filename");
    assert_eq!(
        files[0].length,
        payload.len() as u64,
        "{WHAT}: gridfs files document length"
    );

    let chunk_indexes: Vec<String> = db
        .collection::<Document>("fs.chunks")
        .list_index_names()
        .await
        .expect("list fs.chunks indexes");
    println!("gridfs indexes on fs.chunks: {chunk_indexes:?}");
    assert!(
        chunk_indexes
            .iter()
            .any(|n| n.starts_with("files_id_1_n_1")),
        "{WHAT}: the unique files_id/n index GridFS relies on is missing: {chunk_indexes:?}"
    );

    bucket.delete(id).await.expect("gridfs delete");
    db.drop().await.expect("drop the test database");
}
