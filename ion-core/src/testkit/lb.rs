//! The `LoadBalancer` conformance suite: one public async function per clause of the contract.
//!
//! Each case expects a fresh load balancer from the factory (nginx: a new process per case) and
//! uses hostnames of its own ([`unique_name`]). Backends point at loopback ports nothing listens
//! on: the suite checks what is applied and reported live, not traffic.

use std::net::{Ipv4Addr, SocketAddr};

use crate::error::ErrorKind;
use crate::lb::{LiveGeneration, LoadBalancer};
use crate::model::{Backend, Route, RouteTable};
use crate::name::{AppId, Hostname, InstanceId, TenantId, Zone};
use crate::testkit::unique_name;

/// Expands to `mod $name` with one `#[tokio::test]` per clause of the
/// [`LoadBalancer`](crate::LoadBalancer) contract, each running the function of the same name in
/// [`testkit::lb`](self) against a backend from `$factory` (an async block yielding
/// `Option<impl LoadBalancer>`, evaluated once per case and expected to give a load balancer that
/// has never applied a table; `None` skips the case).
///
/// ```text
/// ion_core::load_balancer_conformance!(in_memory, async { Some(ion_core::fake::InMemoryLoadBalancer::new()) });
/// ```
#[macro_export]
macro_rules! load_balancer_conformance {
    ($name:ident, $factory:expr) => {
        $crate::load_balancer_conformance!(@cases $name, $factory, [
            live_is_none_before_the_first_apply,
            apply_makes_the_table_live,
            reapplying_the_live_table_succeeds_without_change,
            a_higher_generation_replaces_the_live_table,
            a_lower_generation_is_a_conflict_and_live_is_unchanged,
            the_live_generation_with_other_content_is_a_conflict,
            a_failed_apply_keeps_the_previous_table_live,
            an_empty_route_table_applies,
        ]);
    };
    (@cases $name:ident, $factory:expr, [$($case:ident),* $(,)?]) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[::tokio::test]
                async fn $case() {
                    let Some(backend) = ($factory).await else {
                        return;
                    };
                    $crate::testkit::lb::$case(&backend).await;
                }
            )*
        }
    };
}

/// Route tables for one case: hostnames and apps no other case uses.
struct Tables {
    tenant: TenantId,
    stem: String,
}

impl Tables {
    fn new() -> Self {
        Self {
            tenant: TenantId::parse(&unique_name("t")).expect("unique names are tenant ids"),
            stem: unique_name("h"),
        }
    }

    /// A table of `apps` routes (app `n` answers `app<n>.<stem>.example.com` and
    /// `www.app<n>.<stem>.example.com`), each with `backends` loopback backends.
    fn table(&self, generation: u64, apps: usize, backends: usize) -> RouteTable {
        let zone = Zone::parse("zone-a").expect("literal zone");
        let routes = (0..apps)
            .map(|n| Route {
                tenant: self.tenant.clone(),
                app: AppId::parse(&format!("app{n}")).expect("app id"),
                hostnames: vec![
                    Hostname::parse(&format!("app{n}.{}.example.com", self.stem))
                        .expect("hostname"),
                    Hostname::parse(&format!("www.app{n}.{}.example.com", self.stem))
                        .expect("hostname"),
                ],
                backends: (0..backends)
                    .map(|b| Backend {
                        instance: InstanceId::parse(&format!("i-{n:04}{b:04}")).expect("id"),
                        addr: SocketAddr::from((
                            Ipv4Addr::LOCALHOST,
                            u16::try_from(41_000 + n * 100 + b).expect("port"),
                        )),
                        zone: zone.clone(),
                    })
                    .collect(),
                tls: None,
            })
            .collect();
        RouteTable::new(generation, routes).expect("suite tables are valid")
    }
}

fn live_of(table: &RouteTable) -> LiveGeneration {
    LiveGeneration {
        generation: table.generation(),
        checksum: table.checksum(),
    }
}

async fn apply(lb: &dyn LoadBalancer, table: &RouteTable) -> LiveGeneration {
    lb.apply(table)
        .await
        .unwrap_or_else(|e| panic!("apply generation {}: {e}", table.generation()))
}

async fn live(lb: &dyn LoadBalancer) -> Option<LiveGeneration> {
    lb.live().await.expect("live")
}

/// A load balancer that never applied a table reports nothing live.
pub async fn live_is_none_before_the_first_apply(lb: &dyn LoadBalancer) {
    assert_eq!(live(lb).await, None);
}

/// After `apply`, the table's generation and checksum are live and reported by both calls.
pub async fn apply_makes_the_table_live(lb: &dyn LoadBalancer) {
    let table = Tables::new().table(1, 2, 2);
    let applied = apply(lb, &table).await;
    assert_eq!(applied, live_of(&table), "apply reports what it made live");
    assert_eq!(live(lb).await, Some(live_of(&table)));
}

/// Applying the live table again succeeds and changes nothing.
pub async fn reapplying_the_live_table_succeeds_without_change(lb: &dyn LoadBalancer) {
    let table = Tables::new().table(4, 1, 3);
    apply(lb, &table).await;
    let again = lb
        .apply(&table)
        .await
        .expect("re-applying the live table must succeed");
    assert_eq!(again, live_of(&table));
    assert_eq!(live(lb).await, Some(live_of(&table)));
}

/// A higher generation replaces the live table whole.
pub async fn a_higher_generation_replaces_the_live_table(lb: &dyn LoadBalancer) {
    let tables = Tables::new();
    let first = tables.table(1, 2, 1);
    let second = tables.table(2, 1, 3);
    apply(lb, &first).await;
    assert_eq!(apply(lb, &second).await, live_of(&second));
    assert_eq!(live(lb).await, Some(live_of(&second)));
    // A jump of several generations is fine: generations only have to grow.
    let later = tables.table(10, 3, 1);
    apply(lb, &later).await;
    assert_eq!(live(lb).await, Some(live_of(&later)));
}

/// A generation lower than the live one is `Conflict` (a stale writer), whatever its content,
/// and the live table stays.
pub async fn a_lower_generation_is_a_conflict_and_live_is_unchanged(lb: &dyn LoadBalancer) {
    let tables = Tables::new();
    let current = tables.table(5, 2, 2);
    apply(lb, &current).await;
    for stale in [tables.table(4, 1, 1), current.clone().with_generation(4)] {
        let err = lb
            .apply(&stale)
            .await
            .expect_err("a lower generation must be refused");
        assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
        assert_eq!(live(lb).await, Some(live_of(&current)));
    }
}

/// The live generation with different content is `Conflict`, and the live table stays.
pub async fn the_live_generation_with_other_content_is_a_conflict(lb: &dyn LoadBalancer) {
    let tables = Tables::new();
    let current = tables.table(3, 1, 1);
    let rival = tables.table(3, 2, 2);
    assert_ne!(current.checksum(), rival.checksum());
    apply(lb, &current).await;
    let err = lb
        .apply(&rival)
        .await
        .expect_err("the live generation with other content must be refused");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert_eq!(live(lb).await, Some(live_of(&current)));
}

/// A failed apply leaves the previous table live, and a later valid apply still succeeds.
pub async fn a_failed_apply_keeps_the_previous_table_live(lb: &dyn LoadBalancer) {
    let tables = Tables::new();
    let current = tables.table(7, 2, 2);
    apply(lb, &current).await;
    for bad in [tables.table(6, 3, 3), tables.table(7, 3, 3)] {
        assert!(lb.apply(&bad).await.is_err());
        assert_eq!(
            live(lb).await,
            Some(live_of(&current)),
            "after a failed apply the previous generation is still live"
        );
    }
    let next = tables.table(8, 3, 3);
    assert_eq!(apply(lb, &next).await, live_of(&next));
}

/// A table without routes applies (as the first table, at generation 0, and after routes).
pub async fn an_empty_route_table_applies(lb: &dyn LoadBalancer) {
    let empty = RouteTable::empty();
    assert_eq!(apply(lb, &empty).await, live_of(&empty));
    assert_eq!(live(lb).await, Some(live_of(&empty)));
    let tables = Tables::new();
    apply(lb, &tables.table(1, 2, 1)).await;
    let emptied = RouteTable::new(2, Vec::new()).expect("empty table");
    assert_eq!(apply(lb, &emptied).await, live_of(&emptied));
    assert_eq!(live(lb).await, Some(live_of(&emptied)));
}
