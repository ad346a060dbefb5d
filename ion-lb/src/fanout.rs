//! `FanOutLoadBalancer`: several load balancers (nginx instances) driven as one, one at a time.

use std::sync::Arc;

use async_trait::async_trait;
use ion_core::{Error, LiveGeneration, LoadBalancer, Result, RouteTable};
use tokio::sync::Mutex;

/// Drives several load balancers as one [`LoadBalancer`], rolling a table through them one at a
/// time and moving on only when the current one confirmed it (an [`crate::NginxLoadBalancer`]
/// confirms through its marker). So a bad table stops at the first instance instead of reaching
/// all of them at once, and the instances never all reload together.
///
/// If an instance fails, the instances already updated are rolled back to the previous table and
/// the error names the instance that failed (and any whose rollback failed). The members must be
/// driven only by this fan-out: it gives them generations of its own (a counter that grows with
/// every attempt and starts above what the members serve, so a rollback is a newer generation with the older content) and reports the
/// caller's generation from [`LoadBalancer::live`].
#[derive(Debug, Clone)]
pub struct FanOutLoadBalancer {
    members: Arc<Vec<(String, Arc<dyn LoadBalancer>)>>,
    state: Arc<Mutex<FanOutState>>,
}

#[derive(Debug, Default)]
struct FanOutState {
    live: Option<(LiveGeneration, RouteTable)>,
    member_generation: u64,
}

impl FanOutLoadBalancer {
    /// Fans out over `members`, named for error reports, in rollout order.
    pub fn new(members: Vec<(String, Arc<dyn LoadBalancer>)>) -> Result<Self> {
        if members.is_empty() {
            return Err(Error::invalid_config("fan-out needs at least one member"));
        }
        Ok(Self {
            members: Arc::new(members),
            state: Arc::new(Mutex::new(FanOutState::default())),
        })
    }

    /// The member names, in rollout order.
    pub fn member_names(&self) -> Vec<String> {
        self.members.iter().map(|(n, _)| n.clone()).collect()
    }
}

#[async_trait]
impl LoadBalancer for FanOutLoadBalancer {
    async fn apply(&self, table: &RouteTable) -> Result<LiveGeneration> {
        let mut state = self.state.lock().await;
        let wanted = LiveGeneration {
            generation: table.generation(),
            checksum: table.checksum(),
        };
        if let Some((live, _)) = &state.live {
            if table.generation() < live.generation
                || (table.generation() == live.generation && table.checksum() != live.checksum)
            {
                return Err(Error::conflict(format!(
                    "generation {} conflicts with the live generation {}",
                    table.generation(),
                    live.generation
                )));
            }
            if *live == wanted {
                return Ok(wanted);
            }
        }
        // Start above anything a member already serves (for instance after a restart of ion).
        for (_, member) in self.members.iter() {
            if let Ok(Some(l)) = member.live().await {
                state.member_generation = state.member_generation.max(l.generation);
            }
        }
        state.member_generation += 1;
        let attempt = table.clone().with_generation(state.member_generation);
        for (i, (name, member)) in self.members.iter().enumerate() {
            if let Err(e) = member.apply(&attempt).await {
                tracing::error!(instance = %name, error = %e, "fan-out apply failed; rolling back");
                state.member_generation += 1;
                let previous = state
                    .live
                    .as_ref()
                    .map(|(_, t)| t.clone())
                    .unwrap_or_else(RouteTable::empty)
                    .with_generation(state.member_generation);
                let mut unrestored = Vec::new();
                for (done_name, done) in &self.members[..i] {
                    if let Err(re) = done.apply(&previous).await {
                        unrestored.push(format!("{done_name} ({re})"));
                    }
                }
                let rolled: Vec<&str> = self.members[..i].iter().map(|(n, _)| n.as_str()).collect();
                let mut msg = format!(
                    "instance {name} failed generation {}: {e}; rolled back {rolled:?}",
                    table.generation()
                );
                if !unrestored.is_empty() {
                    msg.push_str(&format!("; rollback failed on {}", unrestored.join(", ")));
                }
                return Err(Error::new(e.kind(), msg).with_transient(e.is_transient()));
            }
        }
        state.live = Some((wanted, table.clone()));
        Ok(wanted)
    }

    async fn live(&self) -> Result<Option<LiveGeneration>> {
        Ok(self.state.lock().await.live.as_ref().map(|(l, _)| *l))
    }
}
