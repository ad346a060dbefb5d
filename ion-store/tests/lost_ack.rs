//! A write applied by the server whose reply is lost (the connection dies after the request got
//! through) is retried and resolved by reading back: the insert succeeds once instead of failing
//! with `AlreadyExists`, the update succeeds instead of failing with `Conflict`.
//!
//! A small TCP proxy sits between the driver and the MongoDB peer and, when armed with a command
//! name, forwards the next request carrying it, swallows the server's reply and closes the
//! connection. Needs a single-host `ION_TEST_MONGO_URL` (a replica set cannot be proxied this way:
//! the driver connects to the members it discovers).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ion_core::testkit::peer_var;
use ion_core::{CollectionName, DocumentBody, DocumentId, DocumentStore, Revision};
use ion_store::{MongoConnection, MongoDocumentStore};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WHAT: &str = "lost acknowledgment test";

/// `host:port` of a single-host URL, or `None` for replica sets, SRV and credentials.
fn single_host(url: &str) -> Option<String> {
    let rest = url.strip_prefix("mongodb://")?;
    let host = rest.split(['/', '?']).next()?;
    (!host.contains(',') && !host.contains('@') && !host.is_empty()).then(|| host.to_owned())
}

/// The command whose reply the proxy swallows next, as its BSON element prefix.
type Armed = Arc<Mutex<Option<Vec<u8>>>>;

fn arm(armed: &Armed, command: &str) {
    let mut pattern = vec![0x02];
    pattern.extend_from_slice(command.as_bytes());
    pattern.push(0);
    *armed.lock().unwrap() = Some(pattern);
}

async fn proxy(listener: TcpListener, upstream: String, armed: Armed) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            return;
        };
        let upstream = upstream.clone();
        let armed = armed.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(&upstream).await else {
                return;
            };
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let (mut up, mut down) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
            let mut swallow = false;
            loop {
                tokio::select! {
                    n = cr.read(&mut up) => {
                        let Ok(n) = n else { return };
                        if n == 0 { return; }
                        let hit = {
                            let mut guard = armed.lock().unwrap();
                            let hit = guard
                                .as_ref()
                                .is_some_and(|p| up[..n].windows(p.len()).any(|w| w == p.as_slice()));
                            if hit {
                                *guard = None;
                            }
                            hit
                        };
                        swallow |= hit;
                        if sw.write_all(&up[..n]).await.is_err() { return; }
                    }
                    n = sr.read(&mut down) => {
                        let Ok(n) = n else { return };
                        if n == 0 { return; }
                        if swallow {
                            // The server applied the write; the client never hears of it.
                            return;
                        }
                        if cw.write_all(&down[..n]).await.is_err() { return; }
                    }
                }
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_reply_is_lost_is_resolved_by_reading_back() {
    let Some(url) = peer_var(common::VAR, WHAT) else {
        return;
    };
    let Some(upstream) = single_host(&url) else {
        println!(
            "skipped: {WHAT} needs a single-host {}, got a replica set or credentials",
            common::VAR
        );
        return;
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let armed: Armed = Arc::default();
    tokio::spawn(proxy(listener, upstream, armed.clone()));

    let config = common::config(&format!(
        "mongodb://127.0.0.1:{port}/?directConnection=true"
    ));
    let conn = match MongoConnection::connect(&config).await {
        Ok(c) => c,
        Err(e) => {
            return ion_core::testkit::peer_unreachable::<()>(common::VAR, WHAT, &e).unwrap_or(())
        }
    };
    let store = MongoDocumentStore::new(conn, &[]).await.unwrap();
    let c =
        CollectionName::parse(&ion_core::testkit::unique_name("ack").replace('-', "_")).unwrap();
    let id = DocumentId::parse("lost-ack").unwrap();

    arm(&armed, "insert");
    let rev = tokio::time::timeout(
        Duration::from_secs(60),
        store.insert(&c, &id, &DocumentBody::new(json!({"v": 1})).unwrap()),
    )
    .await
    .expect("insert finishes")
    .expect("an insert that landed but lost its reply succeeds on retry");
    assert_eq!(rev, Revision(1));
    assert!(
        armed.lock().unwrap().is_none(),
        "the proxy swallowed the insert's reply"
    );

    arm(&armed, "update");
    let rev = tokio::time::timeout(
        Duration::from_secs(60),
        store.update(
            &c,
            &id,
            Revision(1),
            &DocumentBody::new(json!({"v": 2})).unwrap(),
        ),
    )
    .await
    .expect("update finishes")
    .expect("an update that landed but lost its reply succeeds on retry, not Conflict");
    assert_eq!(rev, Revision(2));
    assert!(
        armed.lock().unwrap().is_none(),
        "the proxy swallowed the update's reply"
    );

    let doc = store.get(&c, &id).await.unwrap();
    assert_eq!(doc.revision, Revision(2));
    assert_eq!(doc.body, DocumentBody::new(json!({"v": 2})).unwrap());

    // Someone else's document is still AlreadyExists / Conflict, reply lost or not.
    arm(&armed, "insert");
    let e = store
        .insert(&c, &id, &DocumentBody::new(json!({"v": 9})).unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ion_core::ErrorKind::AlreadyExists, "{e:?}");
    let e = store
        .update(
            &c,
            &id,
            Revision(1),
            &DocumentBody::new(json!({"v": 9})).unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ion_core::ErrorKind::Conflict, "{e:?}");
    store.delete(&c, &id).await.unwrap();
    common::drop_collection(WHAT, c.as_str()).await;
}
