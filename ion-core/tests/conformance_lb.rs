//! The `LoadBalancer` conformance suite run against `InMemoryLoadBalancer`, plus its domain fault.

use ion_core::fake::InMemoryLoadBalancer;
use ion_core::{ErrorKind, LoadBalancer, Route, RouteTable};

ion_core::load_balancer_conformance!(in_memory, async { Some(InMemoryLoadBalancer::new()) });

fn table(generation: u64, host: &str) -> RouteTable {
    RouteTable::new(
        generation,
        vec![Route {
            tenant: "acme".parse().unwrap(),
            app: "shop".parse().unwrap(),
            hostnames: vec![host.parse().unwrap()],
            backends: Vec::new(),
            tls: None,
        }],
    )
    .unwrap()
}

#[tokio::test]
async fn a_refused_apply_keeps_the_previous_table_live() {
    let lb = InMemoryLoadBalancer::new();
    let first = lb.apply(&table(1, "shop.example.com")).await.unwrap();
    lb.refuse_next_apply(2);
    for _ in 0..2 {
        let err = lb.apply(&table(2, "new.example.com")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(err.is_transient());
        assert_eq!(lb.live().await.unwrap(), Some(first));
        assert_eq!(lb.live_table(), Some(table(1, "shop.example.com")));
    }
    let second = lb.apply(&table(2, "new.example.com")).await.unwrap();
    assert_eq!(lb.history(), [first, second]);
    assert_eq!(lb.apply_count(), 4);
}

#[tokio::test]
async fn a_no_op_reapply_is_counted_but_not_recorded() {
    let lb = InMemoryLoadBalancer::new();
    let t = table(1, "shop.example.com");
    lb.apply(&t).await.unwrap();
    lb.apply(&t).await.unwrap();
    assert_eq!(lb.apply_count(), 2);
    assert_eq!(lb.history().len(), 1);
}
