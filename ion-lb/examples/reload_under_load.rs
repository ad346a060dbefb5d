//! Benchmark: 64 keep-alive clients through real nginx while 100 route-table changes are applied
//! at 2 per second (mostly instances added and removed, plus a hostname and a TLS route).
//!
//! Needs `ION_NGINX_BIN` (or `nginx` at /usr/sbin/nginx). Flags: `--static` (no lua: every change
//! reloads), `--no-nginx-t` (skip the defence-in-depth check). Prints as its last line
//! `RESULT reload_under_load requests=<n> failed=<n> failed_strict=<n> reloads=<n> apply_p50_ms=<ms> apply_p99_ms=<ms>`.
//! `failed` counts non-2xx answers and errors a client sees after retrying once, and only when a
//! reused keep-alive connection closed before any response byte (what RFC 9110 allows);
//! `failed_strict` counts every error for a client that never retries.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ion_core::{
    AppId, Backend, Hostname, InstanceId, LoadBalancer, Route, RouteTable, TenantId,
    TlsCertificate, Zone,
};
use ion_lb::{NginxConfig, NginxLoadBalancer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const CLIENTS: usize = 64;
const CHANGES: u64 = 100;
const ROUTES: usize = 100;
const HOST: &str = "bench.example.com";

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    failed: AtomicU64,
    failed_strict: AtomicU64,
}

async fn backend() -> SocketAddr {
    let app = axum::Router::new().fallback(|| async { "ok" });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    addr
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

enum Outcome {
    Ok(bool),
    /// Failed before any response byte on a reused connection: a client may retry.
    Retryable,
    Failed,
}

/// One request on a keep-alive connection; `reused` says whether it served a request before.
async fn request(conn: &mut Option<BufReader<TcpStream>>, addr: SocketAddr) -> Outcome {
    let reused = conn.is_some();
    if conn.is_none() {
        match TcpStream::connect(addr).await {
            Ok(s) => *conn = Some(BufReader::new(s)),
            Err(_) => return Outcome::Failed,
        }
    }
    let c = conn.as_mut().unwrap();
    let req = format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    if c.get_mut().write_all(req.as_bytes()).await.is_err() {
        *conn = None;
        return if reused {
            Outcome::Retryable
        } else {
            Outcome::Failed
        };
    }
    let mut status = String::new();
    match c.read_line(&mut status).await {
        Ok(0) | Err(_) => {
            *conn = None;
            return if reused {
                Outcome::Retryable
            } else {
                Outcome::Failed
            };
        }
        Ok(_) => {}
    }
    let ok = status.starts_with("HTTP/1.1 2");
    let mut len = 0usize;
    let mut close = false;
    loop {
        let mut line = String::new();
        match c.read_line(&mut line).await {
            Ok(0) | Err(_) => {
                *conn = None;
                return Outcome::Failed;
            }
            Ok(_) => {}
        }
        let l = line.trim_end().to_ascii_lowercase();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        if l == "connection: close" {
            close = true;
        }
    }
    let mut body = vec![0; len];
    if c.read_exact(&mut body).await.is_err() {
        *conn = None;
        return Outcome::Failed;
    }
    if close {
        *conn = None;
    }
    Outcome::Ok(ok)
}

async fn client(addr: SocketAddr, stop: Arc<AtomicBool>, counters: Arc<Counters>) {
    let mut conn = None;
    while !stop.load(Ordering::Relaxed) {
        counters.requests.fetch_add(1, Ordering::Relaxed);
        match request(&mut conn, addr).await {
            Outcome::Ok(true) => {}
            Outcome::Ok(false) | Outcome::Failed => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                counters.failed_strict.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Retryable => {
                counters.failed_strict.fetch_add(1, Ordering::Relaxed);
                // The retry runs on a fresh connection, so it is never retryable again.
                if !matches!(request(&mut conn, addr).await, Outcome::Ok(true)) {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

fn route(
    app: &str,
    hosts: &[String],
    backends: &[SocketAddr],
    tls: Option<TlsCertificate>,
) -> Route {
    Route {
        tenant: TenantId::parse("bench").unwrap(),
        app: AppId::parse(app).unwrap(),
        hostnames: hosts.iter().map(|h| Hostname::parse(h).unwrap()).collect(),
        backends: backends
            .iter()
            .map(|a| Backend {
                instance: InstanceId::parse(&format!("i-{}", a.port())).unwrap(),
                addr: *a,
                zone: Zone::parse("z1").unwrap(),
            })
            .collect(),
        tls,
    }
}

fn certificate(host: &str) -> TlsCertificate {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![host.to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    TlsCertificate {
        chain_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// The table after `change` changes: route 0 (the one under load) keeps two instances and
/// gains or loses up to four more; other routes rotate their instances; change 30 adds a
/// hostname, change 60 a TLS route.
fn table(
    change: u64,
    base: &[SocketAddr],
    extra: &[SocketAddr],
    cert: &TlsCertificate,
) -> RouteTable {
    let mut routes = Vec::new();
    let mut hosts0 = vec![HOST.to_string()];
    if change >= 30 {
        hosts0.push("added.example.com".to_string());
    }
    let mut b0: Vec<SocketAddr> = base[..2].to_vec();
    let n = (change % 5) as usize;
    b0.extend(extra.iter().take(n));
    if change % 2 == 1 {
        b0.extend(&base[2..]);
    }
    routes.push(route("app0", &hosts0, &b0, None));
    for i in 1..ROUTES {
        let k = (i + change as usize) % base.len();
        let backends = [base[k], base[(k + 1) % base.len()]];
        routes.push(route(
            &format!("app{i}"),
            &[format!("app{i}.example.com")],
            &backends,
            None,
        ));
    }
    if change >= 60 {
        routes.push(route(
            "secure",
            &["secure.example.com".to_string()],
            &base[..2],
            Some(cert.clone()),
        ));
    }
    RouteTable::new(change + 1, routes).unwrap()
}

#[tokio::main]
async fn main() {
    let bin = std::env::var("ION_NGINX_BIN")
        .or_else(|_| std::env::var("ION_TEST_NGINX_BIN"))
        .unwrap_or_else(|_| "/usr/sbin/nginx".to_string());
    // Dynamic upstreams (lua) unless `--static` or no lua module: then every change reloads.
    let modules = std::env::var("ION_NGINX_LUA_MODULES_DIR")
        .or_else(|_| std::env::var("ION_TEST_NGINX_MODULES_DIR"))
        .unwrap_or_else(|_| "/usr/lib/nginx/modules".to_string());
    let lua = (!std::env::args().any(|a| a == "--static"))
        .then(|| std::path::PathBuf::from(&modules))
        .filter(|d| d.join("ngx_http_lua_module.so").exists());
    let mode = if lua.is_some() {
        "dynamic-upstreams"
    } else {
        "reload-every-change"
    };
    let dir = tempfile::tempdir().unwrap();
    // Workers run unprivileged and must traverse to the prefix's temp and lua directories.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let config = NginxConfig::builder(bin, dir.path().join("nginx"))
        .lua_modules_dir(lua)
        // `--no-nginx-t` measures the cost of the defence-in-depth `nginx -t` on each reload.
        .check_with_nginx_t(!std::env::args().any(|a| a == "--no-nginx-t"))
        .http_listen(free_addr())
        .https_listen(Some(free_addr()))
        .marker_listen(free_addr())
        .worker_processes(2)
        .worker_shutdown_timeout_secs(5)
        .build()
        .unwrap();
    let lb = NginxLoadBalancer::start(config.clone())
        .await
        .expect("start nginx");
    let mut base = Vec::new();
    for _ in 0..4 {
        base.push(backend().await);
    }
    // One certificate for the TLS route: re-issuing it on every change would make every change
    // a certificate change (a reload).
    let cert = certificate("secure.example.com");
    let mut extra = Vec::new();
    for _ in 0..4 {
        extra.push(backend().await);
    }
    lb.apply(&table(0, &base, &extra, &cert))
        .await
        .expect("first table");
    let start_reloads = lb.stats().reloads;

    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(tokio::spawn(client(
            config.http_listen,
            stop.clone(),
            counters.clone(),
        )));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut latencies = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    for change in 1..=CHANGES {
        ticker.tick().await;
        let t = table(change, &base, &extra, &cert);
        let started = Instant::now();
        if let Err(e) = lb.apply(&t).await {
            eprintln!("apply {change} failed: {e}");
        }
        latencies.push(started.elapsed());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    latencies.sort();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_secs_f64() * 1000.0
    };
    let stats = lb.stats();
    println!(
        "mode={mode} nginx_t={} routes={} clients={CLIENTS} changes={CHANGES} pushes={} rollbacks={} coalesced={}",
        config.check_with_nginx_t,
        ROUTES + 1,
        stats.pushes,
        stats.rollbacks,
        stats.coalesced
    );
    println!(
        "RESULT reload_under_load requests={} failed={} failed_strict={} reloads={} apply_p50_ms={:.0} apply_p99_ms={:.0}",
        counters.requests.load(Ordering::Relaxed),
        counters.failed.load(Ordering::Relaxed),
        counters.failed_strict.load(Ordering::Relaxed),
        stats.reloads - start_reloads,
        pct(0.50),
        pct(0.99),
    );
    lb.shutdown().await.ok();
}
