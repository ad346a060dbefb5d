//! Dynamic upstreams through nginx's lua module: membership changes reach traffic without a
//! reload, structure changes still reload, and the control endpoint demands its secret.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use ion_core::testkit::peer_var;
use ion_core::{
    AppId, Backend, Hostname, InstanceId, LoadBalancer, Route, RouteTable, TenantId, Zone,
};
use ion_lb::NginxLoadBalancer;
use support::TestNginx;

const WHAT: &str = "nginx dynamic upstreams";

async fn start() -> Option<TestNginx> {
    let modules = peer_var("ION_TEST_NGINX_MODULES_DIR", WHAT)?;
    TestNginx::start_with(WHAT, |b| b.lua_modules_dir(Some(modules.into()))).await
}

ion_core::load_balancer_conformance!(nginx_dynamic, async { start().await });

async fn backend(name: &'static str) -> SocketAddr {
    let app = axum::Router::new().fallback(move || async move { name });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn table(generation: u64, hosts: &[&str], addrs: &[SocketAddr]) -> RouteTable {
    RouteTable::new(
        generation,
        vec![Route {
            tenant: TenantId::parse("acme").unwrap(),
            app: AppId::parse("web").unwrap(),
            hostnames: hosts.iter().map(|h| Hostname::parse(h).unwrap()).collect(),
            backends: addrs
                .iter()
                .map(|a| Backend {
                    instance: InstanceId::parse(&format!("i-{}", a.port())).unwrap(),
                    addr: *a,
                    zone: Zone::parse("z1").unwrap(),
                })
                .collect(),
            tls: None,
        }],
    )
    .unwrap()
}

async fn body(lb: &NginxLoadBalancer, host: &str) -> String {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{}/", lb.config().http_listen))
        .header("host", host)
        .send()
        .await
        .expect("nginx answers")
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn membership_changes_reach_traffic_without_a_reload() {
    let Some(n) = start().await else {
        return;
    };
    let (a, b) = (backend("alpha").await, backend("beta").await);
    n.lb.apply(&table(1, &["web.example.com"], &[a]))
        .await
        .unwrap();
    assert_eq!(body(&n.lb, "web.example.com").await, "alpha");
    let reloads = n.lb.stats().reloads;

    n.lb.apply(&table(2, &["web.example.com"], &[b]))
        .await
        .unwrap();
    assert_eq!(
        n.lb.stats().reloads,
        reloads,
        "an upstream-only change reloaded nginx"
    );
    assert_eq!(n.lb.stats().pushes, 1);
    for _ in 0..5 {
        assert_eq!(body(&n.lb, "web.example.com").await, "beta");
    }

    // A hostname is structure: it reloads, and membership follows along.
    n.lb.apply(&table(3, &["web.example.com", "www.example.com"], &[a, b]))
        .await
        .unwrap();
    assert_eq!(n.lb.stats().reloads, reloads + 1);
    let seen: std::collections::BTreeSet<String> = futures_like(&n.lb, "www.example.com").await;
    assert!(seen.contains("alpha") && seen.contains("beta"), "{seen:?}");
}

async fn futures_like(lb: &NginxLoadBalancer, host: &str) -> std::collections::BTreeSet<String> {
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        seen.insert(body(lb, host).await);
    }
    seen
}

#[tokio::test]
async fn the_control_endpoint_refuses_requests_without_the_secret() {
    let Some(n) = start().await else {
        return;
    };
    let url = format!("http://{}/ion-backends", n.lb.config().marker_listen);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for secret in [None, Some("0".repeat(32))] {
        let mut req = client.post(&url).body("ffff\nabcd 127.0.0.1:1\n");
        if let Some(s) = &secret {
            req = req.header("x-ion-secret", s);
        }
        assert_eq!(
            req.send().await.unwrap().status().as_u16(),
            403,
            "{secret:?}"
        );
    }
}
