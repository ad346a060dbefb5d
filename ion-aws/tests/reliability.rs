//! Lost responses: a launch whose `RunInstances` reached the service but whose answer never came
//! back is retried and still yields exactly one instance.
//!
//! A small TCP proxy in front of moto forwards every request, but for the first `RunInstances`
//! it swallows the answer and closes the client's connection, as a network failure after the
//! request was sent would.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use aws_sdk_ec2::types::Filter;
use ion_aws::{Ec2Compute, Ec2ComputeConfig, TAG_IDEMPOTENCY_KEY};
use ion_core::testkit::{peer_unreachable, peer_var, unique_name};
use ion_core::{
    AppId, ArtifactId, ArtifactRef, Compute, IdempotencyKey, LaunchRequest, Sha256Digest, TenantId,
    Version, Zone,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::*;

/// Counts `RunInstances` requests and drops the answers to the first `drop` of them.
struct LossyProxy {
    addr: SocketAddr,
    run_instances: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
}

impl LossyProxy {
    async fn start(upstream: SocketAddr, drop: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let run_instances = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicUsize::new(0));
        let to_drop = Arc::new(AtomicUsize::new(drop));
        let (seen, gone) = (run_instances.clone(), dropped.clone());
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let (seen, gone, to_drop) = (seen.clone(), gone.clone(), to_drop.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut client_rd, mut client_wr) = client.into_split();
                    let (mut server_rd, mut server_wr) = server.into_split();
                    let swallow = Arc::new(AtomicBool::new(false));
                    let swallow_up = swallow.clone();
                    let up = tokio::spawn(async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match client_rd.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            let chunk = &buf[..n];
                            if chunk.windows(19).any(|w| w == b"Action=RunInstances") {
                                seen.fetch_add(1, Ordering::SeqCst);
                                let take = to_drop
                                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |d| {
                                        d.checked_sub(1)
                                    })
                                    .is_ok();
                                if take {
                                    swallow_up.store(true, Ordering::SeqCst);
                                }
                            }
                            if server_wr.write_all(chunk).await.is_err() {
                                return;
                            }
                        }
                    });
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match server_rd.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if swallow.load(Ordering::SeqCst) {
                            // The service answered; the client never hears it.
                            gone.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        if client_wr.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    up.abort();
                    let _ = client_wr.shutdown().await;
                });
            }
        });
        Self {
            addr,
            run_instances,
            dropped,
        }
    }
}

fn request(zone: Zone) -> LaunchRequest {
    LaunchRequest {
        idempotency_key: IdempotencyKey::parse(&unique_name("lost")).unwrap(),
        zone,
        tenant: TenantId::parse(&unique_name("t")).unwrap(),
        app: AppId::parse(&unique_name("a")).unwrap(),
        version: Version(1),
        artifact: ArtifactRef {
            id: ArtifactId::parse("art-1").unwrap(),
            sha256: Sha256Digest::of(b"x"),
            length: 1,
        },
        port: 8080,
    }
}

/// The peer's socket address when it is a plain-HTTP `ip:port` the proxy can sit in front of;
/// `None` (the test skips) for a TLS or named endpoint such as real AWS.
fn upstream_addr(endpoint: &str, what: &str) -> Option<SocketAddr> {
    let addr = endpoint
        .strip_prefix("http://")
        .and_then(|h| h.trim_end_matches('/').parse().ok());
    if addr.is_none() {
        println!(
            "skipped: {what} needs a plain-http ip:port endpoint for its proxy, got {endpoint}"
        );
    }
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_whose_response_is_lost_yields_exactly_one_instance() {
    let what = "ec2 lost launch response";
    let Some(endpoint) = peer_var(EC2_VAR, what) else {
        return;
    };
    let Some(upstream) = upstream_addr(&endpoint, what) else {
        return;
    };
    let proxy = LossyProxy::start(upstream, 1).await;
    let through_proxy = format!("http://{}", proxy.addr);
    let compute = Ec2Compute::new(
        &aws_config(&through_proxy),
        Ec2ComputeConfig::new("ami-12c6146b"),
    )
    .await
    .unwrap();
    let zones = match compute.zones().await {
        Ok(z) => z,
        Err(e) => return peer_unreachable(EC2_VAR, what, &e).unwrap_or(()),
    };
    let req = request(zones[0].zone.clone());

    let first = compute
        .launch(req.clone())
        .await
        .expect("launch reconciles the lost response");
    assert_eq!(
        proxy.dropped.load(Ordering::SeqCst),
        1,
        "the proxy swallowed one answer"
    );
    assert_eq!(
        proxy.run_instances.load(Ordering::SeqCst),
        1,
        "the lost RunInstances was reconciled by tag, not blindly re-sent"
    );

    // The caller retries too (say its own deadline fired): still the same instance.
    let again = compute.launch(req.clone()).await.expect("retried launch");
    assert_eq!(again.id, first.id);
    assert_eq!(proxy.run_instances.load(Ordering::SeqCst), 1);

    // Ask moto directly: exactly one instance carries the key, in any state.
    let raw = raw_ec2(&endpoint).await;
    let out = raw
        .describe_instances()
        .filters(
            Filter::builder()
                .name(format!("tag:{TAG_IDEMPOTENCY_KEY}"))
                .values(req.idempotency_key.as_str())
                .build(),
        )
        .send()
        .await
        .unwrap();
    let ids: Vec<&str> = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| i.instance_id())
        .collect();
    assert_eq!(ids, [first.id.as_str()], "exactly one instance for the key");
    compute.terminate(&first.id).await.unwrap();
}

/// With SDK retries allowed for a lost response (what a plain client does), moto would create a
/// second instance, because it ignores `ClientToken`; this is why `Ec2Compute` forbids that retry
/// and reconciles by tag. Shown here with a raw client through the same proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blind_sdk_retry_on_moto_would_duplicate_the_instance() {
    let what = "ec2 blind retry on moto";
    let Some(endpoint) = peer_var(EC2_VAR, what) else {
        return;
    };
    if std::env::var("ION_TEST_REAL_AWS").is_ok_and(|v| v == "1") {
        println!("skipped: {what} documents moto's ClientToken gap; real EC2 honours the token");
        return;
    }
    let Some(upstream) = upstream_addr(&endpoint, what) else {
        return;
    };
    let proxy = LossyProxy::start(upstream, 1).await;
    let raw = raw_ec2(&format!("http://{}", proxy.addr)).await;
    let token = unique_name("tok");
    let out = raw
        .run_instances()
        .image_id("ami-12c6146b")
        .min_count(1)
        .max_count(1)
        .client_token(&token)
        .tag_specifications(
            aws_sdk_ec2::types::TagSpecification::builder()
                .resource_type(aws_sdk_ec2::types::ResourceType::Instance)
                .tags(
                    aws_sdk_ec2::types::Tag::builder()
                        .key("ion-test:token")
                        .value(&token)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("the sdk retries the lost response");
    assert_eq!(
        proxy.run_instances.load(Ordering::SeqCst),
        2,
        "the sdk re-sent RunInstances"
    );
    let direct = raw_ec2(&endpoint).await;
    let listed = direct
        .describe_instances()
        .filters(
            Filter::builder()
                .name("tag:ion-test:token")
                .values(&token)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let ids: Vec<String> = listed
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| i.instance_id().map(str::to_owned))
        .collect();
    assert_eq!(ids.len(), 2, "moto ignores ClientToken: one token, {ids:?}");
    let _ = out;
    direct
        .terminate_instances()
        .set_instance_ids(Some(ids))
        .send()
        .await
        .unwrap();
}
