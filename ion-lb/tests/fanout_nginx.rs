//! Fan-out over two real nginx instances: the conformance suite, a rollout that stops and rolls
//! back at the instance that fails, and traffic on both after success.

mod support;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ion_core::{
    AppId, Backend, Hostname, InstanceId, LiveGeneration, LoadBalancer, Result, Route, RouteTable,
    TenantId, Zone,
};
use ion_lb::{FanOutLoadBalancer, NginxLoadBalancer};
use support::TestNginx;

/// Two nginx instances behind one fan-out; dropping it stops both.
#[derive(Debug)]
struct TwoNginx {
    fan: FanOutLoadBalancer,
    _a: TestNginx,
    _b: TestNginx,
}

impl TwoNginx {
    async fn start(what: &str) -> Option<Self> {
        let a = TestNginx::start(what).await?;
        let b = TestNginx::start(what).await?;
        let fan = FanOutLoadBalancer::new(vec![
            ("a".into(), Arc::new(a.lb.clone()) as Arc<dyn LoadBalancer>),
            ("b".into(), Arc::new(b.lb.clone()) as Arc<dyn LoadBalancer>),
        ])
        .unwrap();
        Some(Self { fan, _a: a, _b: b })
    }
}

#[async_trait]
impl LoadBalancer for TwoNginx {
    async fn apply(&self, table: &RouteTable) -> Result<LiveGeneration> {
        self.fan.apply(table).await
    }
    async fn live(&self) -> Result<Option<LiveGeneration>> {
        self.fan.live().await
    }
}

ion_core::load_balancer_conformance!(fan_out_of_two_nginx, async {
    TwoNginx::start("fan-out conformance").await
});

fn table(generation: u64, host: &str, port: u16) -> RouteTable {
    RouteTable::new(
        generation,
        vec![Route {
            tenant: TenantId::parse("acme").unwrap(),
            app: AppId::parse("web").unwrap(),
            hostnames: vec![Hostname::parse(host).unwrap()],
            backends: vec![Backend {
                instance: InstanceId::parse("i-1").unwrap(),
                addr: ([127, 0, 0, 1], port).into(),
                zone: Zone::parse("z1").unwrap(),
            }],
            tls: None,
        }],
    )
    .unwrap()
}

async fn status(lb: &NginxLoadBalancer, host: &str) -> u16 {
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
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_failing_instance_stops_the_rollout_rolls_back_and_is_named() {
    let Some(a) = TestNginx::start("fan-out rollback").await else {
        return;
    };
    let Some(b) = TestNginx::start("fan-out rollback").await else {
        return;
    };
    // Instance "b" is driven with a listener on a port another socket holds: its master
    // rejects every new configuration.
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut broken = b.lb.config().clone();
    broken.http_listen = held.local_addr().unwrap();
    let broken_b = NginxLoadBalancer::attach(broken).await.unwrap();
    let fan = FanOutLoadBalancer::new(vec![
        ("a".into(), Arc::new(a.lb.clone()) as Arc<dyn LoadBalancer>),
        ("b".into(), Arc::new(broken_b) as Arc<dyn LoadBalancer>),
    ])
    .unwrap();
    let err = fan
        .apply(&table(1, "web.example.com", 9))
        .await
        .unwrap_err();
    assert!(err.message().contains("instance b failed"), "{err}");
    assert!(err.message().contains("rolled back [\"a\"]"), "{err}");
    assert_eq!(fan.live().await.unwrap(), None);
    // "a" was rolled back to the previous (empty) table: the host is unknown there again.
    assert_eq!(status(&a.lb, "web.example.com").await, 421);

    // With both instances healthy the same table reaches both.
    let fan = FanOutLoadBalancer::new(vec![
        ("a".into(), Arc::new(a.lb.clone()) as Arc<dyn LoadBalancer>),
        ("b".into(), Arc::new(b.lb.clone()) as Arc<dyn LoadBalancer>),
    ])
    .unwrap();
    fan.apply(&table(1, "web.example.com", 9)).await.unwrap();
    // Port 9 (discard) has no listener: 502 shows the route reached nginx's proxy on both.
    assert_eq!(status(&a.lb, "web.example.com").await, 502);
    assert_eq!(status(&b.lb, "web.example.com").await, 502);
    drop(held);
}
