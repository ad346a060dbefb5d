//! Seeded fault injection shared by every in-memory fake.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};

/// A small deterministic pseudo-random generator (SplitMix64): the same seed gives the same
/// sequence on every machine, so a failing fault schedule replays exactly.
#[derive(Clone, Debug)]
pub struct SeededRng(u64);

impl SeededRng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform float in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A uniform integer in `[0, n)`; 0 when `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

#[derive(Debug)]
struct FaultState {
    fail_next: u32,
    fail_next_kind: ErrorKind,
    ratio: f64,
    ratio_kind: ErrorKind,
    rng: SeededRng,
    latency: Duration,
    only_ops: Vec<&'static str>,
    injected: u64,
}

/// A fault plan: which calls of a fake fail, and how slowly every call answers.
///
/// Shared on `Clone` (a test keeps a handle while the fake holds another). Faults apply to every
/// operation unless narrowed with [`FaultPlan::only_ops`].
#[derive(Clone, Debug)]
pub struct FaultPlan(Arc<Mutex<FaultState>>);

impl Default for FaultPlan {
    fn default() -> Self {
        Self::seeded(0)
    }
}

impl FaultPlan {
    /// A plan with no faults whose random draws come from `seed`.
    pub fn seeded(seed: u64) -> Self {
        Self(Arc::new(Mutex::new(FaultState {
            fail_next: 0,
            fail_next_kind: ErrorKind::Unavailable,
            ratio: 0.0,
            ratio_kind: ErrorKind::Unavailable,
            rng: SeededRng::new(seed),
            latency: Duration::ZERO,
            only_ops: Vec::new(),
            injected: 0,
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FaultState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next `n` calls fail with `kind`.
    pub fn fail_next(&self, n: u32, kind: ErrorKind) -> &Self {
        let mut s = self.state();
        s.fail_next = n;
        s.fail_next_kind = kind;
        self
    }

    /// Each call fails with probability `p` (drawn from the seed) with `kind`.
    pub fn fail_ratio(&self, p: f64, kind: ErrorKind) -> &Self {
        let mut s = self.state();
        s.ratio = p.clamp(0.0, 1.0);
        s.ratio_kind = kind;
        self
    }

    /// Every call first waits `latency` (tokio time, so paused-clock tests stay fast).
    pub fn latency(&self, latency: Duration) -> &Self {
        self.state().latency = latency;
        self
    }

    /// Faults apply only to the named operations (e.g. `["launch"]`); empty means all.
    pub fn only_ops(&self, ops: &[&'static str]) -> &Self {
        self.state().only_ops = ops.to_vec();
        self
    }

    /// Removes every fault and latency (the seed's sequence continues).
    pub fn clear(&self) -> &Self {
        let mut s = self.state();
        s.fail_next = 0;
        s.ratio = 0.0;
        s.latency = Duration::ZERO;
        s.only_ops.clear();
        self
    }

    /// How many faults have been injected so far.
    pub fn injected(&self) -> u64 {
        self.state().injected
    }

    /// A draw from the plan's seeded generator (for fakes' own domain faults).
    pub fn draw(&self) -> f64 {
        self.state().rng.next_f64()
    }

    /// Called by a fake at the start of operation `op`: waits the latency, then fails if the
    /// plan says so.
    pub async fn check(&self, op: &'static str) -> Result<()> {
        let (latency, failure) = {
            let mut s = self.state();
            if !s.only_ops.is_empty() && !s.only_ops.contains(&op) {
                return Ok(());
            }
            let failure = if s.fail_next > 0 {
                s.fail_next -= 1;
                Some(s.fail_next_kind)
            } else if s.ratio > 0.0 && s.rng.next_f64() < s.ratio {
                Some(s.ratio_kind)
            } else {
                None
            };
            if failure.is_some() {
                s.injected += 1;
            }
            (s.latency, failure)
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        match failure {
            Some(kind) => Err(Error::new(kind, format!("injected fault in {op}"))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fail_next_then_recover() {
        let plan = FaultPlan::seeded(1);
        plan.fail_next(2, ErrorKind::RateLimited);
        assert_eq!(
            plan.check("x").await.unwrap_err().kind(),
            ErrorKind::RateLimited
        );
        assert!(plan.check("x").await.unwrap_err().is_transient());
        assert!(plan.check("x").await.is_ok());
        assert_eq!(plan.injected(), 2);
    }

    #[tokio::test]
    async fn ratio_is_deterministic_per_seed() {
        async fn run(seed: u64) -> Vec<bool> {
            let plan = FaultPlan::seeded(seed);
            plan.fail_ratio(0.5, ErrorKind::Unavailable);
            let mut out = Vec::new();
            for _ in 0..64 {
                out.push(plan.check("x").await.is_err());
            }
            out
        }
        let a = run(7).await;
        assert_eq!(a, run(7).await);
        assert_ne!(a, run(8).await);
        let failures = a.iter().filter(|f| **f).count();
        assert!(
            (16..=48).contains(&failures),
            "{failures} of 64 failed at p=0.5"
        );
    }

    #[tokio::test]
    async fn only_ops_narrows_faults() {
        let plan = FaultPlan::seeded(1);
        plan.fail_next(1, ErrorKind::Unavailable)
            .only_ops(&["launch"]);
        assert!(plan.check("describe").await.is_ok());
        assert!(plan.check("launch").await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn latency_uses_tokio_time() {
        let plan = FaultPlan::seeded(1);
        plan.latency(Duration::from_secs(30));
        let start = tokio::time::Instant::now();
        plan.check("x").await.unwrap();
        assert!(start.elapsed() >= Duration::from_secs(30));
    }
}
