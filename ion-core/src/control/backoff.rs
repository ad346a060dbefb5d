//! Crash back-off: when a crashed instance slot may be restarted (Diego's restart calculator).
//!
//! The default curve is Cloud Foundry Diego's: the crash count is incremented first, the slot
//! restarts at once while the count is below 3, then waits 30 s × 2^(count − 3) capped at 960 s,
//! and is given up at 200 crashes. An instance that ran longer than 5 minutes before crashing
//! resets the count to 1. Everything here is a pure function of timestamps.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::time::Timestamp;

/// How a crashing instance slot is restarted. Build with [`CrashPolicy::diego`] or
/// [`CrashPolicy::new`], which enforces bounds on every knob.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashPolicy {
    immediate_restarts: u32,
    min_backoff: Duration,
    max_backoff: Duration,
    max_restarts: u32,
    reset_after: Duration,
}

impl Default for CrashPolicy {
    fn default() -> Self {
        Self::diego()
    }
}

/// What to do with a slot after its latest crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum RestartDecision {
    /// Restart at once.
    Now,
    /// Restart at (or after) this time.
    At {
        /// Earliest restart time.
        at: Timestamp,
    },
    /// Never restart again: the crash limit is reached.
    GiveUp,
}

/// A slot's crash history: how many consecutive crashes and when the last one happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashRecord {
    /// Consecutive crashes (1 after the first).
    pub count: u32,
    /// When the latest crash was observed.
    pub last_crash: Timestamp,
}

impl CrashPolicy {
    /// Diego's defaults: 3 immediate (count < 3), 30 s doubling to 960 s, give up at 200, reset
    /// after 5 minutes of running.
    pub const fn diego() -> Self {
        Self {
            immediate_restarts: 3,
            min_backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(960),
            max_restarts: 200,
            reset_after: Duration::from_secs(300),
        }
    }

    /// A per-app override. Bounds: `immediate_restarts` 1..=10, `min_backoff` 1 s..=300 s,
    /// `max_backoff` from `min_backoff` to 3600 s, `max_restarts` above `immediate_restarts` and at
    /// most 1000, `reset_after` 60 s..=3600 s. Out of bounds is `InvalidInput` naming the knob.
    pub fn new(
        immediate_restarts: u32,
        min_backoff: Duration,
        max_backoff: Duration,
        max_restarts: u32,
        reset_after: Duration,
    ) -> Result<Self> {
        let bad = |knob: &str, rule: &str| Err(Error::invalid_input(format!("{knob} {rule}")));
        if !(1..=10).contains(&immediate_restarts) {
            return bad("immediate_restarts", "must be 1..=10");
        }
        if min_backoff < Duration::from_secs(1) || min_backoff > Duration::from_secs(300) {
            return bad("min_backoff", "must be 1 s..=300 s");
        }
        if max_backoff < min_backoff || max_backoff > Duration::from_secs(3600) {
            return bad("max_backoff", "must be min_backoff..=3600 s");
        }
        if max_restarts <= immediate_restarts || max_restarts > 1000 {
            return bad(
                "max_restarts",
                "must exceed immediate_restarts and be at most 1000",
            );
        }
        if reset_after < Duration::from_secs(60) || reset_after > Duration::from_secs(3600) {
            return bad("reset_after", "must be 60 s..=3600 s");
        }
        Ok(Self {
            immediate_restarts,
            min_backoff,
            max_backoff,
            max_restarts,
            reset_after,
        })
    }

    /// Crash counts below this restart at once.
    pub fn immediate_restarts(&self) -> u32 {
        self.immediate_restarts
    }

    /// At this crash count the slot is given up.
    pub fn max_restarts(&self) -> u32 {
        self.max_restarts
    }

    /// How long an instance must run before its crash resets the count.
    pub fn reset_after(&self) -> Duration {
        self.reset_after
    }

    /// Records a crash at `crashed_at` of an instance started at `started_at`, given the slot's
    /// previous record. The count is incremented first; it restarts at 1 when the instance ran
    /// longer than `reset_after`.
    pub fn record_crash(
        &self,
        previous: Option<CrashRecord>,
        started_at: Timestamp,
        crashed_at: Timestamp,
    ) -> CrashRecord {
        let ran = crashed_at.since(started_at);
        let count = match previous {
            Some(p) if ran <= self.reset_after => p.count.saturating_add(1),
            _ => 1,
        };
        CrashRecord {
            count,
            last_crash: crashed_at,
        }
    }

    /// The wait after the `count`-th consecutive crash: `None` for never, zero for at once.
    pub fn backoff(&self, count: u32) -> Option<Duration> {
        if count >= self.max_restarts {
            return None;
        }
        if count < self.immediate_restarts {
            return Some(Duration::ZERO);
        }
        let exponent = (count - self.immediate_restarts).min(31);
        let wait = self
            .min_backoff
            .checked_mul(1u32 << exponent)
            .unwrap_or(self.max_backoff);
        Some(wait.min(self.max_backoff))
    }

    /// When the slot with `record` may restart.
    pub fn decide(&self, record: &CrashRecord) -> RestartDecision {
        match self.backoff(record.count) {
            None => RestartDecision::GiveUp,
            Some(d) if d.is_zero() => RestartDecision::Now,
            Some(d) => RestartDecision::At {
                at: record.last_crash.plus(d),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp::from_millis(1_800_000_000_000);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn diego_curve_at_explicit_timestamps() {
        let p = CrashPolicy::diego();
        let mut rec = None;
        let mut started = T0;
        let mut expected = Vec::new();
        let mut got = Vec::new();
        for c in 1..=10u32 {
            // Each instance runs 10 s before crashing: no reset.
            let crashed = started.plus(secs(10));
            let r = p.record_crash(rec, started, crashed);
            assert_eq!(r.count, c);
            let want = match c {
                1 | 2 => RestartDecision::Now,
                3 => RestartDecision::At {
                    at: crashed.plus(secs(30)),
                },
                4 => RestartDecision::At {
                    at: crashed.plus(secs(60)),
                },
                5 => RestartDecision::At {
                    at: crashed.plus(secs(120)),
                },
                6 => RestartDecision::At {
                    at: crashed.plus(secs(240)),
                },
                7 => RestartDecision::At {
                    at: crashed.plus(secs(480)),
                },
                _ => RestartDecision::At {
                    at: crashed.plus(secs(960)),
                },
            };
            expected.push(want);
            got.push(p.decide(&r));
            started = match p.decide(&r) {
                RestartDecision::At { at } => at,
                _ => crashed,
            };
            rec = Some(r);
        }
        assert_eq!(got, expected);
    }

    #[test]
    fn gives_up_at_two_hundred() {
        let p = CrashPolicy::diego();
        let at = |count| CrashRecord {
            count,
            last_crash: T0,
        };
        assert_eq!(
            p.decide(&at(199)),
            RestartDecision::At {
                at: T0.plus(secs(960))
            }
        );
        assert_eq!(p.decide(&at(200)), RestartDecision::GiveUp);
        assert_eq!(p.decide(&at(u32::MAX)), RestartDecision::GiveUp);
    }

    #[test]
    fn running_more_than_five_minutes_resets_the_count() {
        let p = CrashPolicy::diego();
        let prev = CrashRecord {
            count: 7,
            last_crash: T0,
        };
        let started = T0.plus(secs(480));
        // Exactly 5 minutes is not more than 5 minutes: the count keeps growing.
        let r = p.record_crash(Some(prev), started, started.plus(secs(300)));
        assert_eq!(r.count, 8);
        let r = p.record_crash(Some(prev), started, started.plus(secs(301)));
        assert_eq!(r.count, 1);
        assert_eq!(p.decide(&r), RestartDecision::Now);
    }

    #[test]
    fn override_is_bounded() {
        let ok = CrashPolicy::new(2, secs(5), secs(60), 10, secs(120)).unwrap();
        assert_eq!(ok.backoff(1), Some(Duration::ZERO));
        assert_eq!(ok.backoff(2), Some(secs(5)));
        assert_eq!(ok.backoff(5), Some(secs(40)));
        assert_eq!(ok.backoff(6), Some(secs(60)));
        assert_eq!(ok.backoff(10), None);
        let err = CrashPolicy::new(0, secs(5), secs(60), 10, secs(120)).unwrap_err();
        assert!(err.to_string().contains("immediate_restarts"));
        let err = CrashPolicy::new(2, secs(5), secs(4), 10, secs(120)).unwrap_err();
        assert!(err.to_string().contains("max_backoff"));
        let err = CrashPolicy::new(2, secs(5), secs(60), 2, secs(120)).unwrap_err();
        assert!(err.to_string().contains("max_restarts"));
        let err = CrashPolicy::new(2, secs(5), secs(60), 10, secs(1)).unwrap_err();
        assert!(err.to_string().contains("reset_after"));
        assert!(CrashPolicy::new(2, secs(0), secs(60), 10, secs(120)).is_err());
    }

    #[test]
    fn large_counts_do_not_overflow() {
        let p = CrashPolicy::new(1, secs(300), secs(3600), 1000, secs(60)).unwrap();
        assert_eq!(p.backoff(999), Some(secs(3600)));
    }
}
