//! The control plane: planner, crash back-off, health, router, reconciler, rollouts, autoscaler
//! and the [`Platform`] facade that runs them as one loop (snapshots: [`crate::snapshot`]).
//!
//! Pure parts ([`planner`], [`backoff`], the decision halves of [`deploy`] and [`autoscaler`],
//! the table building of [`router`]) have no I/O and are property-tested; the rest drives the
//! backend traits.

pub mod autoscaler;
pub mod backoff;
pub mod deploy;
pub mod health;
pub mod planner;
pub mod platform;
pub mod reconciler;
pub mod router;

#[cfg(test)]
mod planner_tests;

pub use autoscaler::{
    AppStats, AutoscalePolicy, Autoscaler, FakeStatsSource, ScaleDecision, ScaleMetric,
    ScaleReason, StatsSource,
};
pub use backoff::{CrashPolicy, CrashRecord, RestartDecision};
pub use deploy::{RollbackReason, Rollout, RolloutPolicy, RolloutState, RolloutStep};
pub use health::{FakeProbe, HealthProbe, HealthStatus, HealthTracker, HttpProbe, ProbeResult};
pub use planner::{
    plan, ActionKind, DeferReason, Deferred, DesiredApp, Launch, LaunchReason, Observed, Plan,
    PlanInput, PlannerConfig, PlannerState, Termination, TerminationReason,
};
pub use platform::{Clock, PlanFn, Platform, PlatformBuilder, SystemClock, TickReport, TokioClock};
pub use reconciler::{AuditEvent, AuditKind, AuditLog, Execution, Reconciler, RetryPolicy};
pub use router::{build_routes, RouteSync, Router, RouterStatus};
