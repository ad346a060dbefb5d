//! Zero-downtime rollouts as an explicit state machine, owned by the server.
//!
//! A [`Rollout`] records the revision being rolled out, the last good one, when it started, its
//! progress deadline and its crash budget. The planner does the surging (max-surge /
//! max-unavailable, old instances serve until new ones are ready); [`Rollout::evaluate`] is the
//! pure judge run every pass: it completes the rollout when every active instance runs the new
//! version and enough are ready, and rolls back to the last good revision when the new one burns
//! its crash budget or misses the deadline (the server decides, not a client that may have gone).
//! Cancel converges to the last good revision through the same path.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::control::health::HealthStatus;
use crate::control::planner::Observed;
use crate::model::{AppSpec, Version};
use crate::time::Timestamp;

/// Where a rollout stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// New instances are being brought up and old ones retired.
    Progressing,
    /// Every instance runs the new version and the desired count is ready.
    Complete,
    /// Rolled back to the last good revision.
    RolledBack,
    /// Failed with no good revision to return to (a first deploy).
    Failed,
}

/// Why a rollout was rolled back or failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RollbackReason {
    /// The new revision crashed more often than its budget.
    CrashBudget,
    /// The rollout did not complete before its deadline.
    ProgressDeadline,
    /// An operator cancelled it.
    Cancelled,
}

/// Knobs of rollouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutPolicy {
    /// A rollout not complete after this long is rolled back (Kubernetes and Nomad: 600 s).
    pub progress_deadline: Duration,
    /// Crashes of new-version instances tolerated before rolling back.
    pub crash_budget: u32,
}

impl Default for RolloutPolicy {
    fn default() -> Self {
        Self {
            progress_deadline: Duration::from_secs(600),
            crash_budget: 3,
        }
    }
}

/// One rollout of one app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    /// The revision being rolled out.
    pub target: AppSpec,
    /// The revision to return to on failure (`None` for a first deploy).
    pub last_good: Option<AppSpec>,
    /// When it started.
    pub started: Timestamp,
    /// Crashes of target-version instances so far.
    pub crashes: u32,
    /// Where it stands.
    pub state: RolloutState,
    /// The policy it runs under.
    pub policy: RolloutPolicy,
}

/// What the control plane should do after evaluating a rollout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RolloutStep {
    /// Keep going.
    Continue,
    /// The rollout completed; the target is now the last good revision.
    Completed,
    /// Make this spec desired again (the last good revision).
    RollBack {
        /// The spec to return to.
        to: AppSpec,
        /// Why.
        reason: RollbackReason,
    },
    /// Give up; there is nothing to return to.
    Fail {
        /// Why.
        reason: RollbackReason,
    },
}

impl Rollout {
    /// A rollout of `target` starting at `now`.
    pub fn start(
        target: AppSpec,
        last_good: Option<AppSpec>,
        now: Timestamp,
        policy: RolloutPolicy,
    ) -> Self {
        Self {
            target,
            last_good,
            started: now,
            crashes: 0,
            state: RolloutState::Progressing,
            policy,
        }
    }

    /// The version being rolled out.
    pub fn version(&self) -> Version {
        self.target.version
    }

    /// Judges the rollout after a pass that saw `new_crashes` crashes of target-version
    /// instances and the app's instances `observed`. Pure; updates `self`.
    pub fn evaluate(
        &mut self,
        observed: &[&Observed],
        new_crashes: u32,
        now: Timestamp,
    ) -> RolloutStep {
        if self.state != RolloutState::Progressing {
            return RolloutStep::Continue;
        }
        self.crashes += new_crashes;
        let active: Vec<&&Observed> = observed
            .iter()
            .filter(|o| o.instance.state.is_active())
            .collect();
        let all_new = active
            .iter()
            .all(|o| o.instance.version == self.target.version);
        let ready_new = active
            .iter()
            .filter(|o| {
                o.instance.version == self.target.version && o.health == Some(HealthStatus::Ready)
            })
            .count() as u32;
        if all_new && ready_new >= self.target.replicas {
            self.state = RolloutState::Complete;
            return RolloutStep::Completed;
        }
        let reason = if self.crashes > self.policy.crash_budget {
            Some(RollbackReason::CrashBudget)
        } else if now.since(self.started) > self.policy.progress_deadline {
            Some(RollbackReason::ProgressDeadline)
        } else {
            None
        };
        match reason {
            Some(reason) => self.abort(reason),
            None => RolloutStep::Continue,
        }
    }

    /// Stops the rollout for `reason`, returning to the last good revision if there is one.
    pub fn abort(&mut self, reason: RollbackReason) -> RolloutStep {
        match &self.last_good {
            Some(good) => {
                self.state = RolloutState::RolledBack;
                RolloutStep::RollBack {
                    to: good.clone(),
                    reason,
                }
            }
            None => {
                self.state = RolloutState::Failed;
                RolloutStep::Fail { reason }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ArtifactRef, Instance, InstanceState, Sha256Digest};
    use crate::name::{AppId, ArtifactId, HttpPath, IdempotencyKey, InstanceId, TenantId, Zone};

    fn spec(v: u64) -> AppSpec {
        AppSpec {
            tenant: TenantId::parse("acme").unwrap(),
            app: AppId::parse("web").unwrap(),
            version: Version(v),
            artifact: ArtifactRef {
                id: ArtifactId::parse("a1").unwrap(),
                sha256: Sha256Digest::of(b"x"),
                length: 1,
            },
            replicas: 2,
            hostnames: vec![],
            port: 8080,
            readiness_path: HttpPath::parse("/").unwrap(),
            max_surge: 1,
            max_unavailable: 0,
        }
    }

    fn obs(n: u32, v: u64, ready: bool) -> Observed {
        Observed {
            instance: Instance {
                id: InstanceId::parse(&format!("i-{n}")).unwrap(),
                tenant: TenantId::parse("acme").unwrap(),
                app: AppId::parse("web").unwrap(),
                version: Version(v),
                zone: Zone::parse("zone-a").unwrap(),
                state: InstanceState::Running,
                address: None,
                launched_at: Timestamp::EPOCH,
                idempotency_key: IdempotencyKey::parse(&format!("k-{n}")).unwrap(),
            },
            health: Some(if ready {
                HealthStatus::Ready
            } else {
                HealthStatus::Starting
            }),
        }
    }

    #[test]
    fn completes_only_when_old_is_gone_and_new_is_ready() {
        let mut r = Rollout::start(
            spec(2),
            Some(spec(1)),
            Timestamp::EPOCH,
            RolloutPolicy::default(),
        );
        let a = [obs(1, 1, true), obs(2, 2, true), obs(3, 2, true)];
        let refs: Vec<&Observed> = a.iter().collect();
        assert_eq!(
            r.evaluate(&refs, 0, Timestamp::EPOCH),
            RolloutStep::Continue
        );
        let b = [obs(2, 2, true), obs(3, 2, true)];
        let refs: Vec<&Observed> = b.iter().collect();
        assert_eq!(
            r.evaluate(&refs, 0, Timestamp::EPOCH),
            RolloutStep::Completed
        );
        assert_eq!(r.state, RolloutState::Complete);
    }

    #[test]
    fn crash_budget_rolls_back_to_last_good() {
        let mut r = Rollout::start(
            spec(2),
            Some(spec(1)),
            Timestamp::EPOCH,
            RolloutPolicy::default(),
        );
        let a = [obs(1, 1, true), obs(2, 1, true)];
        let refs: Vec<&Observed> = a.iter().collect();
        assert_eq!(
            r.evaluate(&refs, 3, Timestamp::EPOCH),
            RolloutStep::Continue
        );
        assert_eq!(
            r.evaluate(&refs, 1, Timestamp::EPOCH),
            RolloutStep::RollBack {
                to: spec(1),
                reason: RollbackReason::CrashBudget
            }
        );
        assert_eq!(r.state, RolloutState::RolledBack);
        // A finished rollout does not act again.
        assert_eq!(
            r.evaluate(&refs, 9, Timestamp::EPOCH),
            RolloutStep::Continue
        );
    }

    #[test]
    fn deadline_is_enforced_server_side_and_first_deploys_fail() {
        let later = Timestamp::EPOCH.plus(Duration::from_secs(601));
        let mut r = Rollout::start(
            spec(2),
            Some(spec(1)),
            Timestamp::EPOCH,
            RolloutPolicy::default(),
        );
        assert!(matches!(
            r.evaluate(&[], 0, later),
            RolloutStep::RollBack {
                reason: RollbackReason::ProgressDeadline,
                ..
            }
        ));
        let mut first = Rollout::start(spec(1), None, Timestamp::EPOCH, RolloutPolicy::default());
        assert_eq!(
            first.abort(RollbackReason::Cancelled),
            RolloutStep::Fail {
                reason: RollbackReason::Cancelled
            }
        );
    }
}
