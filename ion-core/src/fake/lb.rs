//! `InMemoryLoadBalancer`: the in-memory fake of the `LoadBalancer` trait.

use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::fake::FaultPlan;
use crate::lb::{LiveGeneration, LoadBalancer};
use crate::model::{Backend, RouteTable};
use crate::name::Hostname;

/// An in-memory [`LoadBalancer`]: keeps the live route table and the history of tables made live.
///
/// `apply` follows the generation rule of the contract: before the first apply any generation is
/// taken; afterwards a lower generation, or the live generation with other content, is
/// `Conflict`; the live table again is a successful no-op; a higher generation replaces the live
/// table whole. A failed apply leaves the live table untouched.
///
/// Domain fault: [`refuse_next_apply`](Self::refuse_next_apply) (apply fails with a transient
/// `Unavailable`, as when `nginx -t` or the reload fails and the old configuration keeps
/// serving). The generic [`FaultPlan`] is checked at the start of every operation under the names
/// `apply` and `live`.
///
/// Clones share state.
#[derive(Clone, Debug, Default)]
pub struct InMemoryLoadBalancer {
    state: Arc<Mutex<LbState>>,
    faults: FaultPlan,
}

#[derive(Debug, Default)]
struct LbState {
    live: Option<RouteTable>,
    history: Vec<LiveGeneration>,
    refuse_next: u32,
    applies: u64,
}

fn generation_of(table: &RouteTable) -> LiveGeneration {
    LiveGeneration {
        generation: table.generation(),
        checksum: table.checksum(),
    }
}

impl InMemoryLoadBalancer {
    /// A load balancer serving nothing yet (`live` is `None`).
    pub fn new() -> Self {
        Self::default()
    }

    /// The same load balancer with `faults` checked at the start of every operation.
    pub fn with_faults(mut self, faults: FaultPlan) -> Self {
        self.faults = faults;
        self
    }

    /// The fault plan (shared: faults set through it apply to every clone).
    pub fn faults(&self) -> &FaultPlan {
        &self.faults
    }

    fn state(&self) -> MutexGuard<'_, LbState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next `n` applies fail with a transient `Unavailable`; the live table stays as it was.
    /// Replaces any count still pending.
    pub fn refuse_next_apply(&self, n: u32) {
        self.state().refuse_next = n;
    }

    /// The table being served (no fault check: for test assertions).
    pub fn live_table(&self) -> Option<RouteTable> {
        self.state().live.clone()
    }

    /// Every table made live, oldest first (a no-op re-apply adds nothing; a failed one neither).
    pub fn history(&self) -> Vec<LiveGeneration> {
        self.state().history.clone()
    }

    /// How many times `apply` was called, whatever the outcome (a caller that re-applies an
    /// unchanged table shows up here, not in [`history`](Self::history)).
    pub fn apply_count(&self) -> u64 {
        self.state().applies
    }

    /// The backends a request for `host` would be sent to under the live table; `None` when no
    /// live route serves the host (the default server refuses it).
    pub fn backends_for(&self, host: &Hostname) -> Option<Vec<Backend>> {
        let s = self.state();
        s.live
            .as_ref()
            .and_then(|t| t.route_for(host))
            .map(|r| r.backends.clone())
    }
}

#[async_trait]
impl LoadBalancer for InMemoryLoadBalancer {
    async fn apply(&self, table: &RouteTable) -> Result<LiveGeneration> {
        self.state().applies += 1;
        self.faults.check("apply").await?;
        let mut s = self.state();
        if s.refuse_next > 0 {
            s.refuse_next -= 1;
            return Err(Error::unavailable(format!(
                "refused to apply generation {}",
                table.generation()
            )));
        }
        let wanted = generation_of(table);
        if let Some(live) = s.live.as_ref().map(generation_of) {
            if wanted.generation < live.generation {
                return Err(Error::conflict(format!(
                    "generation {} is older than the live generation {}",
                    wanted.generation, live.generation
                )));
            }
            if wanted.generation == live.generation {
                if wanted.checksum != live.checksum {
                    return Err(Error::conflict(format!(
                        "generation {} is live with other content",
                        wanted.generation
                    )));
                }
                return Ok(live);
            }
        }
        s.live = Some(table.clone());
        s.history.push(wanted);
        Ok(wanted)
    }

    async fn live(&self) -> Result<Option<LiveGeneration>> {
        self.faults.check("live").await?;
        Ok(self.state().live.as_ref().map(generation_of))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::model::Route;
    use crate::name::{AppId, TenantId};

    fn table(generation: u64, host: &str) -> RouteTable {
        RouteTable::new(
            generation,
            vec![Route {
                tenant: TenantId::parse("acme").unwrap(),
                app: AppId::parse("shop").unwrap(),
                hostnames: vec![Hostname::parse(host).unwrap()],
                backends: Vec::new(),
                tls: None,
            }],
        )
        .unwrap()
    }

    #[tokio::test]
    async fn refused_apply_keeps_the_previous_table() {
        let lb = InMemoryLoadBalancer::new();
        let first = lb.apply(&table(1, "a.example.com")).await.unwrap();
        lb.refuse_next_apply(1);
        let err = lb.apply(&table(2, "b.example.com")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(err.is_transient());
        assert_eq!(lb.live().await.unwrap(), Some(first));
        assert_eq!(lb.live_table(), Some(table(1, "a.example.com")));
        let second = lb.apply(&table(2, "b.example.com")).await.unwrap();
        assert_eq!(lb.history(), [first, second]);
        assert_eq!(lb.apply_count(), 3);
    }

    #[tokio::test]
    async fn backends_follow_the_live_table() {
        let lb = InMemoryLoadBalancer::new();
        let host = Hostname::parse("a.example.com").unwrap();
        assert_eq!(lb.backends_for(&host), None);
        lb.apply(&table(1, "a.example.com")).await.unwrap();
        assert_eq!(lb.backends_for(&host), Some(Vec::new()));
        lb.apply(&table(2, "b.example.com")).await.unwrap();
        assert_eq!(lb.backends_for(&host), None);
    }
}
