//! Real traffic through real nginx: routing by Host, refusal of unknown hosts, proxy headers,
//! TLS with SNI, long hostnames, coalesced bursts, and a candidate only the master rejects.

mod support;

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use axum::http::HeaderMap;
use ion_core::{
    AppId, Backend, Hostname, InstanceId, LoadBalancer, Route, RouteTable, TenantId,
    TlsCertificate, Zone,
};
use ion_lb::NginxLoadBalancer;
use support::TestNginx;

/// A loopback HTTP server answering `<name> xff=<X-Forwarded-For> proto=<..> rid=<..>`.
async fn backend(name: &'static str) -> SocketAddr {
    let app = axum::Router::new().fallback(move |headers: HeaderMap| async move {
        let h = |k: &str| {
            headers
                .get(k)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string()
        };
        format!(
            "{name} xff={} proto={} host={} rid={}",
            h("x-forwarded-for"),
            h("x-forwarded-proto"),
            h("host"),
            h("x-request-id")
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn route(app: &str, hosts: &[&str], addrs: &[SocketAddr]) -> Route {
    Route {
        tenant: TenantId::parse("acme").unwrap(),
        app: AppId::parse(app).unwrap(),
        hostnames: hosts.iter().map(|h| Hostname::parse(h).unwrap()).collect(),
        backends: addrs
            .iter()
            .enumerate()
            .map(|(i, a)| Backend {
                instance: InstanceId::parse(&format!("i-{app}-{i}")).unwrap(),
                addr: *a,
                zone: Zone::parse("z1").unwrap(),
            })
            .collect(),
        tls: None,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap()
}

async fn get(lb: &NginxLoadBalancer, host: &str) -> (u16, String) {
    let url = format!("http://{}/x", lb.config().http_listen);
    let r = client()
        .get(url)
        .header("host", host)
        .header("x-forwarded-for", "6.6.6.6")
        .send()
        .await
        .expect("nginx answers");
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn traffic_reaches_the_backend_of_its_host_and_unknown_hosts_are_refused() {
    let Some(n) = TestNginx::start("nginx traffic routing").await else {
        return;
    };
    let (a, b) = (backend("alpha").await, backend("beta").await);
    let table = RouteTable::new(
        1,
        vec![
            route(
                "alpha",
                &["alpha.example.com", "www.alpha.example.com"],
                &[a],
            ),
            route("beta", &["beta.example.com"], &[b]),
            route("gamma", &["gamma.example.com"], &[]),
        ],
    )
    .unwrap();
    n.lb.apply(&table).await.unwrap();

    let (status, body) = get(&n.lb, "alpha.example.com").await;
    assert_eq!(status, 200);
    assert!(body.starts_with("alpha "), "{body}");
    assert!(
        body.contains("xff=127.0.0.1 "),
        "client-sent XFF must be replaced: {body}"
    );
    assert!(body.contains("proto=http "), "{body}");
    assert!(body.contains("host=alpha.example.com "), "{body}");
    assert!(!body.ends_with("rid=-"), "request id missing: {body}");
    assert!(get(&n.lb, "www.alpha.example.com")
        .await
        .1
        .starts_with("alpha "));
    assert!(get(&n.lb, "beta.example.com").await.1.starts_with("beta "));
    assert_eq!(get(&n.lb, "gamma.example.com").await.0, 503);
    assert_eq!(get(&n.lb, "unknown.example.com").await.0, 421);

    // Moving a hostname between apps takes effect with the next generation.
    let moved = RouteTable::new(
        2,
        vec![
            route("alpha", &["alpha.example.com"], &[a]),
            route("beta", &["beta.example.com", "www.alpha.example.com"], &[b]),
        ],
    )
    .unwrap();
    n.lb.apply(&moved).await.unwrap();
    assert!(get(&n.lb, "www.alpha.example.com")
        .await
        .1
        .starts_with("beta "));
    assert_eq!(get(&n.lb, "gamma.example.com").await.0, 421);
}

#[tokio::test]
async fn a_candidate_only_the_master_rejects_is_rolled_back_and_the_old_one_keeps_serving() {
    let Some(n) = TestNginx::start("nginx rollback").await else {
        return;
    };
    let a = backend("alpha").await;
    let first = RouteTable::new(1, vec![route("alpha", &["alpha.example.com"], &[a])]).unwrap();
    n.lb.apply(&first).await.unwrap();

    // Another driver of the same master renders a listener on a port someone else holds:
    // `nginx -t` passes (it binds nothing), the master's bind fails on reload.
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = n.lb.config().clone();
    config.http_listen = held.local_addr().unwrap();
    let other = NginxLoadBalancer::attach(config).await.unwrap();
    let second = RouteTable::new(2, vec![route("alpha", &["beta.example.com"], &[a])]).unwrap();
    let err = other
        .apply(&second)
        .await
        .expect_err("the master must reject the bind");
    assert_eq!(err.kind(), ion_core::ErrorKind::Unavailable, "{err}");
    assert!(err.message().contains("restored"), "{err}");
    assert_eq!(other.live().await.unwrap(), None);
    assert_eq!(other.stats().rollbacks, 1);

    // The first generation still serves, on its own port.
    let (status, body) = get(&n.lb, "alpha.example.com").await;
    assert_eq!(status, 200);
    assert!(body.starts_with("alpha "));
    // And the first driver can still move on.
    let third = RouteTable::new(3, vec![route("alpha", &["gamma.example.com"], &[a])]).unwrap();
    n.lb.apply(&third).await.unwrap();
    assert!(get(&n.lb, "gamma.example.com")
        .await
        .1
        .starts_with("alpha "));
    drop(held);
}

fn certificate(hosts: &[&str]) -> TlsCertificate {
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(hosts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    let cert = params.self_signed(&key).unwrap();
    TlsCertificate {
        chain_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

#[tokio::test]
async fn tls_routes_are_served_by_sni_and_unknown_names_get_no_handshake() {
    let Some(n) = TestNginx::start("nginx tls").await else {
        return;
    };
    let a = backend("alpha").await;
    let mut r = route("alpha", &["secure.example.com"], &[a]);
    r.tls = Some(certificate(&["secure.example.com"]));
    n.lb.apply(&RouteTable::new(1, vec![r.clone()]).unwrap())
        .await
        .unwrap();
    let https = n.lb.config().https_listen.unwrap();
    let key_file = std::fs::read_dir(n.lb.config().certs_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "key"))
        .expect("a key file");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let tls_client = |host: &'static str| {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .no_proxy()
            .danger_accept_invalid_certs(true)
            .resolve(host, https)
            .build()
            .unwrap()
    };
    let body = tls_client("secure.example.com")
        .get(format!("https://secure.example.com:{}/", https.port()))
        .send()
        .await
        .expect("tls request")
        .text()
        .await
        .unwrap();
    assert!(
        body.starts_with("alpha ") && body.contains("proto=https"),
        "{body}"
    );
    assert!(tls_client("other.example.com")
        .get(format!("https://other.example.com:{}/", https.port()))
        .send()
        .await
        .is_err());

    // A certificate naming another tenant's host is refused before anything is written.
    let mut bad = r.clone();
    bad.tls = Some(certificate(&["secure.example.com", "victim.example.com"]));
    let err =
        n.lb.apply(&RouteTable::new(2, vec![bad]).unwrap())
            .await
            .unwrap_err();
    assert_eq!(err.kind(), ion_core::ErrorKind::InvalidInput, "{err}");
    assert_eq!(n.lb.live().await.unwrap().unwrap().generation, 1);
}

#[tokio::test]
async fn long_valid_hostnames_sharing_a_listener_do_not_break_the_configuration() {
    let Some(n) = TestNginx::start("nginx long hostnames").await else {
        return;
    };
    let a = backend("alpha").await;
    let long = |c: &str| {
        format!(
            "{}.{}.{}.{}.example.com",
            c.repeat(60),
            c.repeat(60),
            c.repeat(60),
            c.repeat(50)
        )
    };
    let (x, y) = (long("x"), long("y"));
    assert!(x.len() > 240 && x.len() <= 253);
    let table = RouteTable::new(
        1,
        vec![
            route("xa", &[x.as_str()], &[a]),
            route("ya", &[y.as_str()], &[a]),
        ],
    )
    .unwrap();
    n.lb.apply(&table)
        .await
        .expect("nginx takes 250-byte hostnames");
    assert!(get(&n.lb, &y).await.1.starts_with("alpha "));
}

#[tokio::test]
async fn a_burst_of_applies_costs_fewer_reloads_and_ends_on_the_newest() {
    let Some(n) = TestNginx::start_with("nginx coalescing", |b| {
        b.min_quiet_ms(200).max_delay_ms(2000)
    })
    .await
    else {
        return;
    };
    let a = backend("alpha").await;
    let mut tasks = Vec::new();
    for g in 1..=10u64 {
        let lb = n.lb.clone();
        let host = format!("h{g}.example.com");
        tasks.push(tokio::spawn(async move {
            let t = RouteTable::new(g, vec![route("alpha", &[host.as_str()], &[a])]).unwrap();
            lb.apply(&t).await
        }));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let live = t.await.unwrap().expect("every apply of the burst succeeds");
        assert!(
            live.generation > i as u64,
            "apply {i} reported an older generation"
        );
    }
    assert_eq!(n.lb.live().await.unwrap().unwrap().generation, 10);
    let stats = n.lb.stats();
    assert!(
        stats.reloads < 10,
        "a burst of 10 cost {} reloads",
        stats.reloads
    );
    assert!(get(&n.lb, "h10.example.com").await.1.starts_with("alpha "));
}
