//! The router: a versioned route table from routable instances, pushed only when it changed.
//!
//! [`build_routes`] is pure: one route per desired app with hostnames, whose backends are the
//! app's instances that are running, ready and addressed (any version, so the old version keeps
//! serving during a rollout). [`Router`] numbers tables (generation + checksum), applies a table
//! to the [`LoadBalancer`] only when its content differs from the last applied one, keeps the
//! last applied generation, and retries a failed apply on the next sync while reporting it.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::control::health::HealthStatus;
use crate::control::planner::{DesiredApp, Observed};
use crate::error::Result;
use crate::lb::{LiveGeneration, LoadBalancer};
use crate::model::{Backend, InstanceState, Route, RouteTable, Sha256Digest};
use crate::name::{AppId, TenantId};

/// True when an instance may receive traffic: running, ready and addressed.
pub fn is_routable(o: &Observed) -> bool {
    o.instance.state == InstanceState::Running
        && o.health == Some(HealthStatus::Ready)
        && o.instance.address.is_some()
}

/// The routes for `desired` apps with hostnames, backed by their routable instances. Pure.
pub fn build_routes(desired: &[DesiredApp], observed: &[Observed]) -> Vec<Route> {
    let mut backends: HashMap<(&TenantId, &AppId), Vec<Backend>> = HashMap::new();
    for o in observed.iter().filter(|o| is_routable(o)) {
        let i = &o.instance;
        if let Some(addr) = i.address {
            backends
                .entry((&i.tenant, &i.app))
                .or_default()
                .push(Backend {
                    instance: i.id.clone(),
                    addr,
                    zone: i.zone.clone(),
                });
        }
    }
    desired
        .iter()
        .filter(|d| !d.spec.hostnames.is_empty())
        .map(|d| Route {
            tenant: d.spec.tenant.clone(),
            app: d.spec.app.clone(),
            hostnames: d.spec.hostnames.clone(),
            backends: backends
                .remove(&(&d.spec.tenant, &d.spec.app))
                .unwrap_or_default(),
            tls: None,
        })
        .collect()
}

/// What a sync did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RouteSync {
    /// The table equals the one applied last: nothing sent.
    Unchanged {
        /// The live generation.
        generation: u64,
    },
    /// A new table is live.
    Applied {
        /// Its generation.
        generation: u64,
        /// Its checksum.
        checksum: Sha256Digest,
    },
}

/// The router's view of what the load balancer serves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouterStatus {
    /// The last table the load balancer accepted.
    pub last_applied: Option<LiveGeneration>,
    /// Consecutive failed applies (0 when the last apply succeeded).
    pub failures: u32,
    /// The last apply error, until an apply succeeds.
    pub last_error: Option<String>,
}

/// Pushes route tables to a load balancer, only when they change.
#[derive(Debug)]
pub struct Router {
    lb: Arc<dyn LoadBalancer>,
    status: RouterStatus,
    last_table: Option<RouteTable>,
    initialized: bool,
}

impl Router {
    /// A router for `lb`.
    pub fn new(lb: Arc<dyn LoadBalancer>) -> Self {
        Self {
            lb,
            status: RouterStatus::default(),
            last_table: None,
            initialized: false,
        }
    }

    /// What is known to be live and whether applies fail.
    pub fn status(&self) -> &RouterStatus {
        &self.status
    }

    /// The table last applied successfully.
    pub fn last_table(&self) -> Option<&RouteTable> {
        self.last_table.as_ref()
    }

    /// Makes `routes` live if they differ from the last applied table. An apply failure is
    /// returned (and counted in [`status`](Self::status)); the next sync tries again.
    pub async fn sync(&mut self, routes: Vec<Route>) -> Result<RouteSync> {
        if !self.initialized {
            // Continue above whatever is live (a restarted control plane is not a stale writer).
            self.status.last_applied = self.lb.live().await?;
            self.initialized = true;
        }
        let live_gen = self.status.last_applied.map(|l| l.generation).unwrap_or(0);
        let table = RouteTable::new(live_gen + 1, routes)?;
        let checksum = table.checksum();
        if let Some(live) = self.status.last_applied {
            if live.checksum == checksum && self.status.failures == 0 {
                return Ok(RouteSync::Unchanged {
                    generation: live.generation,
                });
            }
        }
        match self.lb.apply(&table).await {
            Ok(live) => {
                self.status.last_applied = Some(live);
                self.status.failures = 0;
                self.status.last_error = None;
                self.last_table = Some(table);
                tracing::debug!(generation = live.generation, "route table applied");
                Ok(RouteSync::Applied {
                    generation: live.generation,
                    checksum: live.checksum,
                })
            }
            Err(e) => {
                self.status.failures += 1;
                self.status.last_error = Some(e.to_string());
                tracing::warn!(error = %e, failures = self.status.failures, "route table apply failed");
                if e.kind() == crate::error::ErrorKind::Conflict {
                    // Someone else moved the generation: re-read it before the next attempt.
                    self.initialized = false;
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::InMemoryLoadBalancer;
    use crate::model::{AppSpec, ArtifactRef, Instance, Version};
    use crate::name::{ArtifactId, Hostname, HttpPath, IdempotencyKey, InstanceId, Zone};
    use crate::time::Timestamp;

    fn desired() -> Vec<DesiredApp> {
        vec![DesiredApp::new(AppSpec {
            tenant: TenantId::parse("acme").unwrap(),
            app: AppId::parse("web").unwrap(),
            version: Version(1),
            artifact: ArtifactRef {
                id: ArtifactId::parse("a1").unwrap(),
                sha256: Sha256Digest::of(b"x"),
                length: 1,
            },
            replicas: 2,
            hostnames: vec![Hostname::parse("web.acme.example").unwrap()],
            port: 8080,
            readiness_path: HttpPath::parse("/healthz").unwrap(),
            max_surge: 1,
            max_unavailable: 0,
        })]
    }

    fn observed(n: u16, health: HealthStatus) -> Observed {
        Observed {
            instance: Instance {
                id: InstanceId::parse(&format!("i-{n}")).unwrap(),
                tenant: TenantId::parse("acme").unwrap(),
                app: AppId::parse("web").unwrap(),
                version: Version(1),
                zone: Zone::parse("zone-a").unwrap(),
                state: InstanceState::Running,
                address: Some(([127, 0, 0, 1], 20_000 + n).into()),
                launched_at: Timestamp::EPOCH,
                idempotency_key: IdempotencyKey::parse(&format!("k-{n}")).unwrap(),
            },
            health: Some(health),
        }
    }

    #[tokio::test]
    async fn only_ready_instances_are_routed_and_unchanged_tables_are_not_pushed() {
        let lb = InMemoryLoadBalancer::new();
        let mut router = Router::new(Arc::new(lb.clone()));
        let obs = vec![
            observed(1, HealthStatus::Ready),
            observed(2, HealthStatus::Starting),
        ];
        let routes = build_routes(&desired(), &obs);
        assert_eq!(routes[0].backends.len(), 1);
        let first = router.sync(routes.clone()).await.unwrap();
        assert!(matches!(first, RouteSync::Applied { generation: 1, .. }));
        assert_eq!(
            router.sync(routes).await.unwrap(),
            RouteSync::Unchanged { generation: 1 }
        );
        assert_eq!(lb.apply_count(), 1);
        let host = Hostname::parse("web.acme.example").unwrap();
        assert_eq!(lb.backends_for(&host).unwrap().len(), 1);
    }

    #[tokio::test]
    async fn failed_apply_is_surfaced_and_retried() {
        let lb = InMemoryLoadBalancer::new();
        let mut router = Router::new(Arc::new(lb.clone()));
        lb.refuse_next_apply(1);
        let routes = build_routes(&desired(), &[observed(1, HealthStatus::Ready)]);
        assert!(router.sync(routes.clone()).await.is_err());
        assert_eq!(router.status().failures, 1);
        assert!(router.status().last_error.is_some());
        let again = router.sync(routes).await.unwrap();
        assert!(matches!(again, RouteSync::Applied { generation: 1, .. }));
        assert_eq!(router.status().failures, 0);
        assert_eq!(lb.live().await.unwrap().unwrap().generation, 1);
    }

    #[tokio::test]
    async fn a_new_router_continues_above_the_live_generation() {
        let lb = InMemoryLoadBalancer::new();
        let routes = build_routes(&desired(), &[observed(1, HealthStatus::Ready)]);
        Router::new(Arc::new(lb.clone()))
            .sync(routes.clone())
            .await
            .unwrap();
        let mut second = Router::new(Arc::new(lb.clone()));
        let routes2 = build_routes(&desired(), &[observed(2, HealthStatus::Ready)]);
        let r = second.sync(routes2).await.unwrap();
        assert!(matches!(r, RouteSync::Applied { generation: 2, .. }));
    }
}
