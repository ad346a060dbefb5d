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

/// A load balancer that takes every table, stale or not: what the suite exists to catch.
#[derive(Debug, Default)]
struct CarelessLoadBalancer(std::sync::Mutex<Option<ion_core::LiveGeneration>>);

#[async_trait::async_trait]
impl LoadBalancer for CarelessLoadBalancer {
    async fn apply(&self, table: &RouteTable) -> ion_core::Result<ion_core::LiveGeneration> {
        let live = ion_core::LiveGeneration {
            generation: table.generation(),
            checksum: table.checksum(),
        };
        *self.0.lock().unwrap() = Some(live);
        Ok(live)
    }
    async fn live(&self) -> ion_core::Result<Option<ion_core::LiveGeneration>> {
        Ok(*self.0.lock().unwrap())
    }
}

#[tokio::test]
async fn the_suite_catches_an_apply_that_takes_stale_tables() {
    for case in [
        tokio::spawn(async {
            let lb = CarelessLoadBalancer::default();
            ion_core::testkit::lb::a_lower_generation_is_a_conflict_and_live_is_unchanged(&lb)
                .await;
        }),
        tokio::spawn(async {
            let lb = CarelessLoadBalancer::default();
            ion_core::testkit::lb::a_failed_apply_keeps_the_previous_table_live(&lb).await;
        }),
    ] {
        assert!(case.await.unwrap_err().is_panic());
    }
    // The careless balancer still passes the clauses it does honour.
    ion_core::testkit::lb::apply_makes_the_table_live(&CarelessLoadBalancer::default()).await;
}
