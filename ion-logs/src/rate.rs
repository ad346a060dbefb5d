//! Per-tenant ingest rate limits: a token bucket in bytes per second (pure), and a table of them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ion_core::TenantId;

/// A token bucket: `rate` tokens per second, holding at most `burst`.
///
/// A request costs its size in bytes. A request larger than the burst is admitted when the
/// bucket is full and leaves it in debt, so big requests are slowed, never refused forever.
/// Time is a `Duration` since an arbitrary origin, so the bucket is pure and testable.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Duration,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_s: u64, burst: u64, now: Duration) -> Self {
        Self {
            rate: rate_per_s.max(1) as f64,
            burst: burst.max(1) as f64,
            tokens: burst.max(1) as f64,
            last: now,
        }
    }

    fn refill(&mut self, now: Duration) {
        if now > self.last {
            let dt = (now - self.last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate).min(self.burst);
            self.last = now;
        }
    }

    /// Takes `cost` tokens, or says how long to wait before the same request would be admitted.
    pub fn try_take(&mut self, cost: u64, now: Duration) -> Result<(), Duration> {
        self.refill(now);
        let need = (cost as f64).min(self.burst);
        if self.tokens >= need {
            self.tokens -= cost as f64;
            Ok(())
        } else {
            let wait = (need - self.tokens) / self.rate;
            Err(Duration::from_secs_f64(wait.max(0.001)))
        }
    }
}

/// A tenant's byte-rate limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RateLimit {
    /// Sustained bytes per second.
    pub bytes_per_s: u64,
    /// Burst in bytes.
    pub burst_bytes: u64,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            bytes_per_s: 50 << 20,
            burst_bytes: 100 << 20,
        }
    }
}

/// One token bucket per tenant, created on first use.
#[derive(Debug)]
pub struct TenantRateLimiter {
    origin: Instant,
    default: RateLimit,
    overrides: HashMap<TenantId, RateLimit>,
    buckets: Mutex<HashMap<TenantId, TokenBucket>>,
}

impl TenantRateLimiter {
    /// A limiter applying `default` to every tenant without an override.
    pub fn new(default: RateLimit, overrides: HashMap<TenantId, RateLimit>) -> Self {
        Self {
            origin: Instant::now(),
            default,
            overrides,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Charges `bytes` to `tenant`; `Err(retry_after)` when the tenant is over its rate.
    pub fn check(&self, tenant: &TenantId, bytes: u64) -> Result<(), Duration> {
        let now = self.origin.elapsed();
        let limit = self.overrides.get(tenant).copied().unwrap_or(self.default);
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        buckets
            .entry(tenant.clone())
            .or_insert_with(|| TokenBucket::new(limit.bytes_per_s, limit.burst_bytes, now))
            .try_take(bytes, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn refuses_past_burst_and_recovers_at_rate() {
        let mut b = TokenBucket::new(100, 200, Duration::ZERO);
        assert!(b.try_take(150, Duration::ZERO).is_ok());
        let wait = b.try_take(100, Duration::ZERO).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(b.try_take(100, Duration::from_millis(500)).is_ok());
    }

    #[test]
    fn oversized_request_waits_for_a_full_bucket_then_passes() {
        let mut b = TokenBucket::new(100, 200, Duration::ZERO);
        assert!(b.try_take(1000, Duration::ZERO).is_ok());
        assert!(b.try_take(1, Duration::from_secs(1)).is_err());
        assert!(b.try_take(1000, Duration::from_secs(20)).is_ok());
    }

    #[test]
    fn limiter_keeps_tenants_apart() {
        let l = TenantRateLimiter::new(
            RateLimit {
                bytes_per_s: 10,
                burst_bytes: 10,
            },
            HashMap::new(),
        );
        let a = TenantId::parse("a").unwrap();
        let b = TenantId::parse("b").unwrap();
        assert!(l.check(&a, 10).is_ok());
        assert!(l.check(&a, 10).is_err());
        assert!(l.check(&b, 10).is_ok());
    }

    proptest! {
        /// Over any run, admitted bytes never exceed burst + rate × elapsed + one request.
        #[test]
        fn admitted_bytes_are_bounded(
            rate in 1u64..10_000,
            burst in 1u64..10_000,
            reqs in prop::collection::vec((0u64..5_000, 0u64..2_000), 1..200),
        ) {
            let mut b = TokenBucket::new(rate, burst, Duration::ZERO);
            let mut now = Duration::ZERO;
            let mut admitted = 0u64;
            let mut largest = 0u64;
            for (cost, gap_ms) in reqs {
                now += Duration::from_millis(gap_ms);
                if b.try_take(cost, now).is_ok() {
                    admitted += cost;
                    largest = largest.max(cost);
                }
                let bound = burst as f64 + rate as f64 * now.as_secs_f64() + largest as f64;
                prop_assert!(admitted as f64 <= bound + 1e-6);
            }
        }

        /// A refused request passes once the advertised wait has elapsed (nothing else taken).
        #[test]
        fn retry_after_is_honest(rate in 1u64..10_000, burst in 1u64..10_000, first in 0u64..20_000, cost in 1u64..20_000) {
            let mut b = TokenBucket::new(rate, burst, Duration::ZERO);
            let _ = b.try_take(first, Duration::ZERO);
            if let Err(wait) = b.try_take(cost, Duration::ZERO) {
                prop_assert!(b.try_take(cost, wait + Duration::from_micros(1)).is_ok());
            }
        }
    }
}
