//! The autoscaler: HPA's ratio rule with per-app tolerance, scale-down stabilization, a scale-up
//! rate limit and bounds, and a recorded reason for every tick.
//!
//! Metrics come through the [`StatsSource`] trait (a fake here; MongoDB in ion-store).
//! [`Autoscaler::recommend`] is pure: `desired = ceil(current × metric / target)`, no change
//! inside the tolerance, scale-down only to the highest recommendation of the stabilization
//! window, scale-up at most `max(+up_pods, +up_percent %)` per tick, then clamped to min/max.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::name::{AppId, TenantId};
use crate::time::Timestamp;

/// Per-app load, averaged over the app's instances.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AppStats {
    /// Requests per second per instance.
    pub requests_per_sec: f64,
    /// CPU utilization per instance, 0.0..=1.0 (and above when throttled).
    pub cpu: f64,
}

/// Where app metrics come from.
#[async_trait]
pub trait StatsSource: Send + Sync + Debug + 'static {
    /// The latest stats of one app; `None` when none are known yet.
    async fn app_stats(&self, tenant: &TenantId, app: &AppId) -> Result<Option<AppStats>>;
}

/// A scripted [`StatsSource`]. Clones share state.
#[derive(Clone, Debug, Default)]
pub struct FakeStatsSource(Arc<Mutex<BTreeMap<(TenantId, AppId), AppStats>>>);

impl FakeStatsSource {
    /// No stats for any app.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets an app's stats.
    pub fn set(&self, tenant: &TenantId, app: &AppId, stats: AppStats) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((tenant.clone(), app.clone()), stats);
    }
}

#[async_trait]
impl StatsSource for FakeStatsSource {
    async fn app_stats(&self, tenant: &TenantId, app: &AppId) -> Result<Option<AppStats>> {
        Ok(self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(tenant.clone(), app.clone()))
            .copied())
    }
}

/// Which metric drives scaling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleMetric {
    /// CPU utilization per instance.
    Cpu,
    /// Requests per second per instance.
    RequestsPerSec,
}

/// One app's autoscaling policy.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AutoscalePolicy {
    /// Fewest replicas.
    pub min: u32,
    /// Most replicas.
    pub max: u32,
    /// The metric.
    pub metric: ScaleMetric,
    /// Its target per instance.
    pub target: f64,
    /// No change while |metric/target − 1| ≤ this (default 0.1).
    pub tolerance: f64,
    /// Scale down only to the highest recommendation seen this long (default 300 s).
    pub scale_down_window: Duration,
    /// Scale-up adds at most max(this many, `up_percent` %) per tick (defaults 4 and 100).
    pub up_pods: u32,
    /// See `up_pods`.
    pub up_percent: u32,
}

impl AutoscalePolicy {
    /// A policy with the HPA defaults for everything but the bounds, metric and target.
    pub fn new(min: u32, max: u32, metric: ScaleMetric, target: f64) -> Result<Self> {
        if min > max {
            return Err(Error::invalid_input("autoscale min must not exceed max"));
        }
        if !(target.is_finite() && target > 0.0) {
            return Err(Error::invalid_input("autoscale target must be positive"));
        }
        Ok(Self {
            min,
            max,
            metric,
            target,
            tolerance: 0.1,
            scale_down_window: Duration::from_secs(300),
            up_pods: 4,
            up_percent: 100,
        })
    }
}

/// Why a tick did what it did.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "why", rename_all = "snake_case")]
pub enum ScaleReason {
    /// No metrics yet: unchanged.
    NoMetrics,
    /// Within tolerance: unchanged.
    WithinTolerance {
        /// metric / target.
        ratio: f64,
    },
    /// Scaled to the ratio's recommendation.
    Ratio {
        /// metric / target.
        ratio: f64,
    },
    /// Scale-down held to the window's highest recommendation.
    Stabilized {
        /// The highest recommendation of the window.
        held_at: u32,
    },
    /// Scale-up limited by the rate policy.
    RateLimited {
        /// What the ratio wanted.
        wanted: u32,
    },
    /// Clamped to min or max.
    Bounded {
        /// What was wanted before clamping.
        wanted: u32,
    },
}

/// One tick's decision.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScaleDecision {
    /// Replicas before.
    pub current: u32,
    /// Replicas after.
    pub desired: u32,
    /// Why.
    pub reason: ScaleReason,
}

/// Per-app recommendation history for stabilization.
#[derive(Clone, Debug, Default)]
pub struct Autoscaler {
    history: VecDeque<(Timestamp, u32)>,
}

impl Autoscaler {
    /// A scaler with no history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decides the replica count for `current` replicas given `stats` at `now`.
    pub fn recommend(
        &mut self,
        policy: &AutoscalePolicy,
        current: u32,
        stats: Option<AppStats>,
        now: Timestamp,
    ) -> ScaleDecision {
        let keep = |reason| ScaleDecision {
            current,
            desired: current.clamp(policy.min, policy.max),
            reason,
        };
        let Some(stats) = stats else {
            return keep(ScaleReason::NoMetrics);
        };
        let metric = match policy.metric {
            ScaleMetric::Cpu => stats.cpu,
            ScaleMetric::RequestsPerSec => stats.requests_per_sec,
        };
        let ratio = metric / policy.target;
        if !ratio.is_finite() {
            return keep(ScaleReason::NoMetrics);
        }
        let raw = if (ratio - 1.0).abs() <= policy.tolerance {
            current
        } else {
            (f64::from(current.max(1)) * ratio)
                .ceil()
                .min(f64::from(u32::MAX)) as u32
        };
        self.history.push_back((now, raw));
        while let Some((t, _)) = self.history.front() {
            if now.since(*t) > policy.scale_down_window {
                self.history.pop_front();
            } else {
                break;
            }
        }
        let mut reason = if raw == current {
            ScaleReason::WithinTolerance { ratio }
        } else {
            ScaleReason::Ratio { ratio }
        };
        let mut desired = raw;
        if raw < current {
            let held = self.history.iter().map(|(_, r)| *r).max().unwrap_or(raw);
            if held > raw {
                desired = held.min(current);
                reason = ScaleReason::Stabilized { held_at: held };
            }
        } else if raw > current {
            let by_pods = current.saturating_add(policy.up_pods);
            let by_percent =
                current.saturating_add(current.saturating_mul(policy.up_percent) / 100);
            let limit = by_pods.max(by_percent);
            if raw > limit {
                desired = limit;
                reason = ScaleReason::RateLimited { wanted: raw };
            }
        }
        let bounded = desired.clamp(policy.min, policy.max);
        if bounded != desired {
            reason = ScaleReason::Bounded { wanted: desired };
        }
        ScaleDecision {
            current,
            desired: bounded,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> Timestamp {
        Timestamp::EPOCH.plus(Duration::from_secs(s))
    }

    fn cpu(c: f64) -> Option<AppStats> {
        Some(AppStats {
            requests_per_sec: 0.0,
            cpu: c,
        })
    }

    #[test]
    fn ratio_tolerance_and_rate_limit() {
        let p = AutoscalePolicy::new(1, 50, ScaleMetric::Cpu, 0.5).unwrap();
        let mut a = Autoscaler::new();
        let d = a.recommend(&p, 4, cpu(0.54), at(0));
        assert_eq!(d.desired, 4);
        assert!(matches!(d.reason, ScaleReason::WithinTolerance { .. }));
        let d = a.recommend(&p, 4, cpu(0.75), at(15));
        assert_eq!(d.desired, 6, "ceil(4 × 1.5)");
        let d = a.recommend(&p, 4, cpu(5.0), at(30));
        assert_eq!(d.desired, 8, "max(+4, +100 %) from 4");
        assert_eq!(d.reason, ScaleReason::RateLimited { wanted: 40 });
        let d = a.recommend(&p, 40, cpu(5.0), at(45));
        assert_eq!(d.desired, 50);
        assert_eq!(d.reason, ScaleReason::Bounded { wanted: 80 });
        assert_eq!(
            a.recommend(&p, 3, None, at(60)).reason,
            ScaleReason::NoMetrics
        );
    }

    #[test]
    fn scale_down_waits_for_the_stabilization_window() {
        let p = AutoscalePolicy::new(1, 50, ScaleMetric::Cpu, 0.5).unwrap();
        let mut a = Autoscaler::new();
        assert_eq!(a.recommend(&p, 10, cpu(0.5), at(0)).desired, 10);
        let d = a.recommend(&p, 10, cpu(0.1), at(60));
        assert_eq!(d.desired, 10);
        assert_eq!(d.reason, ScaleReason::Stabilized { held_at: 10 });
        let d = a.recommend(&p, 10, cpu(0.1), at(301));
        assert_eq!(d.desired, 2, "the high recommendation left the window");
    }

    #[test]
    fn policy_bounds_are_checked() {
        assert!(AutoscalePolicy::new(5, 1, ScaleMetric::Cpu, 0.5).is_err());
        assert!(AutoscalePolicy::new(1, 5, ScaleMetric::Cpu, 0.0).is_err());
    }
}
