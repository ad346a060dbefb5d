//! local_platform: the control plane over real local processes and a real nginx, on one machine.
//!
//! `Platform`, `LocalProcessCompute` (instances are this very binary re-run as a tiny HTTP app)
//! and `NginxLoadBalancer` (a dedicated nginx master, `ION_NGINX_BIN` or `nginx` on PATH). Deploys
//! an app with two replicas, sends traffic through nginx by Host header, kills one instance and
//! keeps sending while the platform relaunches it and updates the route table.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ion_core::control::Platform;
use ion_core::fake::{
    InMemoryArtifactStore, InMemoryBlobStore, InMemoryDocumentStore, InMemoryLogIndex,
};
use ion_core::local::{LocalProcessCompute, LocalProgram};
use ion_core::{
    AppId, AppSpec, ArtifactMeta, ArtifactRef, ArtifactStoreExt, Compute, Hostname, HttpPath,
    InstanceFilter, TenantId, Version, Zone,
};
use ion_lb::{NginxConfig, NginxLoadBalancer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const APP_FLAG: &str = "--serve-app";
const HOST: &str = "hello.local.test";

/// The app an instance runs: answers every request with its instance id, on `$PORT`.
async fn serve_app() -> Result<()> {
    let port: u16 = std::env::var("PORT")?.parse()?;
    let id = std::env::var("ION_INSTANCE").unwrap_or_default();
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    loop {
        let (mut s, _) = listener.accept().await?;
        let id = id.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut have = Vec::new();
            loop {
                let Ok(n) = s.read(&mut buf).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                have.extend_from_slice(&buf[..n]);
                while let Some(end) = have.windows(4).position(|w| w == b"\r\n\r\n") {
                    have.drain(..end + 4);
                    let body = format!("hello from {id}\n");
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}",
                        body.len()
                    );
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
}

/// One GET through nginx with `Host: HOST`; the status and body.
async fn get(addr: SocketAddr) -> Result<(u16, String)> {
    let fut = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(
            format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&out).to_string())
    };
    let text = tokio::time::timeout(Duration::from_secs(3), fut).await??;
    let status = text.get(9..12).unwrap_or("0").parse().unwrap_or(0);
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_string();
    Ok((status, body))
}

fn nginx_bin() -> Option<PathBuf> {
    if let Some(v) =
        std::env::var_os("ION_NGINX_BIN").or_else(|| std::env::var_os("ION_TEST_NGINX_BIN"))
    {
        return Some(PathBuf::from(v));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain([PathBuf::from("/usr/sbin")])
            .map(|d| d.join("nginx"))
            .find(|p| p.is_file())
    })
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

#[tokio::main]
async fn main() -> Result<()> {
    if std::env::args().nth(1).as_deref() == Some(APP_FLAG) {
        return serve_app().await;
    }
    let Some(bin) = nginx_bin() else {
        println!("local_platform: nginx not found (set ION_NGINX_BIN or put nginx on PATH); nothing to do");
        return Ok(());
    };

    let dir = tempfile_dir()?;
    let config = NginxConfig::builder(bin, dir.join("nginx"))
        .http_listen(free_addr())
        .marker_listen(free_addr())
        .worker_processes(1)
        .build()?;
    let lb = NginxLoadBalancer::start(config.clone()).await?;
    println!(
        "nginx serving on {} (marker {})",
        config.http_listen, config.marker_listen
    );

    // Every artifact runs as this binary in app mode: hermetic, nothing to download.
    let me = std::env::current_exe()?;
    let compute = LocalProcessCompute::new(
        vec![Zone::parse("local-a")?, Zone::parse("local-b")?],
        move |_: &ArtifactRef| {
            Ok(LocalProgram {
                program: me.clone(),
                args: vec![APP_FLAG.to_string()],
            })
        },
    )?;
    let artifacts = InMemoryArtifactStore::new();
    let platform = Platform::builder()
        .compute(Arc::new(compute.clone()))
        .documents(Arc::new(InMemoryDocumentStore::new()))
        .blobs(Arc::new(InMemoryBlobStore::new()))
        .artifacts(Arc::new(artifacts.clone()))
        .logs(Arc::new(InMemoryLogIndex::new()))
        .lb(Arc::new(lb.clone()))
        .build()?;

    let tenant = TenantId::parse("acme")?;
    let app = AppId::parse("hello")?;
    let meta = ArtifactMeta {
        tenant: tenant.clone(),
        app: app.clone(),
        version: Version(1),
    };
    let artifact = artifacts
        .upload_bytes(&meta, Bytes::from_static(b"local app"))
        .await?;
    platform
        .deploy(AppSpec {
            tenant: tenant.clone(),
            app: app.clone(),
            version: Version(1),
            artifact,
            replicas: 2,
            hostnames: vec![Hostname::parse(HOST)?],
            port: 8080,
            readiness_path: HttpPath::parse("/")?,
            max_surge: 1,
            max_unavailable: 0,
        })
        .await?;

    let backends = |platform: Platform| async move {
        platform
            .route_table()
            .await
            .and_then(|t| t.routes().first().map(|r| r.backends.len()))
            .unwrap_or(0)
    };
    let start = Instant::now();
    while backends(platform.clone()).await < 2 {
        platform.tick().await?;
        if start.elapsed() > Duration::from_secs(30) {
            return Err("the app did not become routable within 30s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("deployed: 2 instances routable after {:?}", start.elapsed());
    for _ in 0..4 {
        let (status, body) = get(config.http_listen).await?;
        println!("GET http://{HOST}/ -> {status} {body}");
    }

    let victim = compute
        .describe(&InstanceFilter::default())
        .await?
        .into_iter()
        .next()
        .ok_or("no instance")?;
    println!("killing instance {} ({:?})", victim.id, victim.address);
    compute.kill(&victim.id)?;

    // Keep sending traffic while the platform notices, relaunches and re-routes.
    let (mut ok, mut failed) = (0u32, 0u32);
    let start = Instant::now();
    let mut recovered = None;
    while start.elapsed() < Duration::from_secs(30) {
        platform.tick().await?;
        for _ in 0..10 {
            match get(config.http_listen).await {
                Ok((200, _)) => ok += 1,
                _ => failed += 1,
            }
        }
        let running = compute
            .describe(&InstanceFilter::default())
            .await?
            .iter()
            .filter(|i| i.id != victim.id)
            .count();
        if running >= 2 && backends(platform.clone()).await >= 2 && recovered.is_none() {
            recovered = Some(start.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    match recovered {
        Some(t) => println!("relaunched and re-routed after {t:?}"),
        None => {
            return Err("the killed instance was not relaunched and re-routed within 30s".into())
        }
    }
    println!(
        "traffic during recovery: {ok} ok, {failed} failed (nginx retries the dead backend's peer)"
    );
    for _ in 0..3 {
        let (status, body) = get(config.http_listen).await?;
        println!("GET http://{HOST}/ -> {status} {body}");
    }
    let stats = lb.stats();
    println!(
        "nginx reloads: {}, rollbacks: {}",
        stats.reloads, stats.rollbacks
    );
    drop(platform);
    lb.shutdown().await?;
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("ion-local-platform-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
