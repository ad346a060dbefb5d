//! Killing the MongoDB-protocol server mid-operation: every operation either fails with a
//! transient error or succeeds (after retries), and every reported success is really stored.
//!
//! Runs a private FerretDB (SQLite storage, its own port and scratch folder) so the kill does
//! not disturb tests sharing the common peer. The binary comes from `ION_TEST_FERRETDB_BIN`, else
//! from the peers cache `scripts/peers install ferretdb` fills
//! (`$ION_PEERS_CACHE` or `~/.cache/ion-peers`, `ferretdb-*/bin/ferretdb`).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use ion_core::testkit::content::drain;
use ion_core::testkit::peers_required;
use ion_core::{
    AppId, ArtifactMeta, ArtifactStore, CollectionName, DocumentBody, DocumentId, DocumentStore,
    Error, Revision, TenantId, Version,
};
use ion_store::{
    GridFsArtifactStore, GridFsOptions, MongoConfig, MongoConnection, MongoDocumentStore,
};
use mongodb::bson::{doc, Document};
use serde_json::json;
use tokio::process::{Child, Command};

const WHAT: &str = "server loss test (private ferretdb)";

/// The FerretDB binary, or `None` after printing why the test is skipped.
fn ferretdb_binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("ION_TEST_FERRETDB_BIN") {
        if !p.trim().is_empty() {
            return Some(PathBuf::from(p));
        }
    }
    let cache = std::env::var("ION_PEERS_CACHE")
        .map(PathBuf::from)
        .ok()
        .or_else(|| {
            std::env::var("HOME")
                .ok()
                .map(|h| PathBuf::from(h).join(".cache/ion-peers"))
        });
    let found = cache.and_then(|dir| {
        let mut candidates: Vec<PathBuf> = std::fs::read_dir(dir)
            .ok()?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("ferretdb-"))
            .map(|e| e.path().join("bin/ferretdb"))
            .filter(|p| p.is_file())
            .collect();
        candidates.sort();
        candidates.pop()
    });
    if found.is_none() {
        let why = "needs ION_TEST_FERRETDB_BIN or a ferretdb in the peers cache; run scripts/peers install ferretdb";
        if peers_required() {
            panic!("{WHAT} {why}");
        }
        println!("skipped: {WHAT} {why}");
    }
    found
}

/// A FerretDB this test owns: started, killed with SIGKILL and restarted on the same port and data.
struct PrivateFerret {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl PrivateFerret {
    fn new(bin: PathBuf) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        let dir = tempfile::tempdir().expect("scratch folder");
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        Self {
            bin,
            dir,
            port,
            child: None,
        }
    }

    fn url(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }

    async fn start(&mut self) {
        let data = format!("file:{}/", self.dir.path().join("data").display());
        let child = Command::new(&self.bin)
            .arg(format!("--listen-addr=127.0.0.1:{}", self.port))
            .arg("--handler=sqlite")
            .arg(format!("--sqlite-url={data}"))
            .arg(format!(
                "--state-dir={}",
                self.dir.path().join("state").display()
            ))
            .args(["--telemetry=disable", "--debug-addr=-", "--log-level=error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{WHAT}: cannot start {}: {e}", self.bin.display()));
        self.child = Some(child);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "{WHAT}: ferretdb did not listen on port {} within 20 s",
            self.port
        );
    }

    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill ferretdb");
        }
    }
}

fn config(url: &str) -> MongoConfig {
    MongoConfig::builder()
        .url(url)
        .database("ion_loss")
        .server_selection_timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(10))
        .retry_attempts(4)
        .retry_backoff(Duration::from_millis(300))
        .build()
        .unwrap()
}

#[derive(Debug)]
struct Outcome {
    i: usize,
    insert: Result<Revision, Error>,
    update: Option<Result<Revision, Error>>,
}

fn body(i: usize, phase: u32) -> DocumentBody {
    DocumentBody::new(json!({"i": i, "phase": phase})).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_server_mid_write_never_reports_a_write_that_did_not_happen() {
    let Some(bin) = ferretdb_binary() else {
        return;
    };
    let mut server = PrivateFerret::new(bin);
    server.start().await;
    let conn = MongoConnection::connect(&config(&server.url()))
        .await
        .unwrap_or_else(|e| panic!("{WHAT}: connect: {e}"));
    let docs = MongoDocumentStore::new(conn.clone(), &[]).await.unwrap();
    let artifacts = GridFsArtifactStore::new(conn.clone(), GridFsOptions::default())
        .await
        .unwrap();
    let c = CollectionName::parse("apps").unwrap();

    const N: usize = 150;
    let progress = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (docs, c, progress) = (docs.clone(), c.clone(), progress.clone());
        tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for i in 0..N {
                let id = DocumentId::parse(&format!("d-{i:03}")).unwrap();
                let insert = docs.insert(&c, &id, &body(i, 1)).await;
                let update = match insert {
                    Ok(rev) => Some(docs.update(&c, &id, rev, &body(i, 2)).await),
                    Err(_) => None,
                };
                outcomes.push(Outcome { i, insert, update });
                progress.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            outcomes
        })
    };
    // An upload whose body trickles in, so the kill lands in the middle of it.
    let uploader = {
        let artifacts = artifacts.clone();
        tokio::spawn(async move {
            let pieces = futures::stream::iter(0..80u32)
                .then(|n| async move {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                    Ok(Bytes::from(vec![n as u8; 128 * 1024]))
                })
                .boxed();
            let meta = ArtifactMeta {
                tenant: TenantId::parse("loss").unwrap(),
                app: AppId::parse("web").unwrap(),
                version: Version(1),
            };
            artifacts.upload(&meta, pieces).await
        })
    };

    while progress.load(Ordering::SeqCst) < 20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill().await;
    let at_kill = progress.load(Ordering::SeqCst);
    // Longer than one server selection (2 s), shorter than the retry budget (4 attempts).
    tokio::time::sleep(Duration::from_secs(4)).await;
    server.start().await;

    let outcomes = writer.await.expect("writer task");
    let uploaded = uploader.await.expect("upload task");
    assert!(
        at_kill < N,
        "the server died while writes were still running"
    );

    // Read back through a fresh connection: what was reported done must be there.
    let fresh = MongoConnection::connect(&config(&server.url()))
        .await
        .unwrap();
    let check = MongoDocumentStore::new(fresh.clone(), &[]).await.unwrap();
    let (mut ok, mut failed) = (0, 0);
    for o in &outcomes {
        let id = DocumentId::parse(&format!("d-{:03}", o.i)).unwrap();
        let stored = check.get(&c, &id).await;
        match &o.insert {
            Ok(rev) => {
                ok += 1;
                assert_eq!(*rev, Revision(1), "insert {} revision", o.i);
                let doc =
                    stored.unwrap_or_else(|e| panic!("insert {} reported success but: {e}", o.i));
                match o.update.as_ref().expect("updated after a good insert") {
                    Ok(rev) => {
                        assert_eq!(*rev, Revision(2));
                        assert_eq!(doc.revision, Revision(2), "update {} reported success", o.i);
                        assert_eq!(doc.body, body(o.i, 2));
                    }
                    Err(e) => {
                        failed += 1;
                        assert!(e.is_transient(), "update {} failed permanently: {e:?}", o.i);
                        assert!(doc.revision == Revision(1) || doc.revision == Revision(2));
                    }
                }
            }
            Err(e) => {
                failed += 1;
                assert!(e.is_transient(), "insert {} failed permanently: {e:?}", o.i);
            }
        }
    }
    println!("{WHAT}: {ok} inserts reported done, {failed} operations failed transiently, kill after {at_kill}");

    // The upload either completed intact or left nothing once swept.
    let artifacts = GridFsArtifactStore::new(fresh.clone(), GridFsOptions::default())
        .await
        .unwrap();
    match uploaded {
        Ok(reference) => {
            let drained = drain(artifacts.download(&reference).await.unwrap()).await;
            assert!(drained.error.is_none(), "{:?}", drained.error);
            assert_eq!(drained.length, 80 * 128 * 1024);
            println!("{WHAT}: the upload survived the restart");
        }
        Err(e) => {
            assert!(e.is_transient(), "upload failed permanently: {e:?}");
            let report = artifacts.sweep_incomplete(Duration::ZERO).await.unwrap();
            println!("{WHAT}: upload failed ({e}); swept {report:?}");
            let raw = mongodb::Client::with_uri_str(server.url()).await.unwrap();
            let chunks = raw
                .database("ion_loss")
                .collection::<Document>("artifacts.chunks")
                .count_documents(doc! {})
                .await
                .unwrap();
            assert_eq!(chunks, 0, "chunks left behind by the interrupted upload");
        }
    }
    server.kill().await;
}
