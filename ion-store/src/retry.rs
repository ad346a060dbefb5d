//! Bounded retry with exponential back-off for transient MongoDB errors.

use std::future::Future;
use std::time::Duration;

use ion_core::fake::SeededRng;
use ion_core::{Error, Result};

/// How often and how patiently an operation is retried on transient errors.
///
/// Only errors with [`Error::is_transient`] are retried. Every operation of the stores is safe to
/// run again: reads and deletes are idempotent, and inserts and updates carry a per-call write
/// token so that an attempt whose acknowledgment was lost is recognised on the next attempt (see
/// the crate docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, at least 1.
    pub max_attempts: u32,
    /// Back-off before the second attempt; doubled for each further attempt.
    pub initial_backoff: Duration,
    /// Cap on one back-off.
    pub max_backoff: Duration,
    /// Bound on one attempt; an attempt that takes longer fails as `Unavailable`.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The back-off after failed attempt `attempt` (1-based), before jitter: `initial × 2^(n-1)`,
    /// capped at `max_backoff`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }

    /// Runs `op` (given the 1-based attempt number) until it succeeds, fails with a
    /// non-transient error, or the attempts are used up.
    pub(crate) async fn run<T, F, Fut>(&self, what: &'static str, mut op: F) -> Result<T>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut rng = SeededRng::new(jitter_seed());
        let mut attempt = 1;
        loop {
            let outcome = match tokio::time::timeout(self.attempt_timeout, op(attempt)).await {
                Ok(r) => r,
                Err(_) => Err(Error::unavailable(format!(
                    "mongodb {what} timed out after {:?}",
                    self.attempt_timeout
                ))),
            };
            match outcome {
                Ok(v) => return Ok(v),
                Err(e) if e.is_transient() && attempt < self.max_attempts => {
                    // Full jitter between half and all of the back-off spreads out the clients
                    // that lost the same primary at the same moment.
                    let base = e.retry_after().unwrap_or_else(|| self.backoff(attempt));
                    let wait = base.mul_f64(0.5 + rng.next_f64() / 2.0);
                    tracing::warn!(op = what, attempt, error = %e, wait_ms = wait.as_millis() as u64, "retrying mongodb operation");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn jitter_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn fast() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(4),
            attempt_timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn transient_errors_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let r = fast()
            .run("test", |_| async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(Error::unavailable("primary stepped down"))
                } else {
                    Ok(7)
                }
            })
            .await;
        assert_eq!(r.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn attempts_are_bounded_and_the_last_error_returned() {
        let calls = AtomicU32::new(0);
        let r: Result<()> = fast()
            .run("test", |n| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move { Err(Error::unavailable(format!("down {n}"))) }
            })
            .await;
        assert_eq!(r.unwrap_err().message(), "down 3");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried() {
        let calls = AtomicU32::new(0);
        let r: Result<()> = fast()
            .run("test", |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(Error::conflict("revision moved")) }
            })
            .await;
        assert_eq!(r.unwrap_err().kind(), ion_core::ErrorKind::Conflict);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_attempt_times_out_as_unavailable() {
        let policy = RetryPolicy {
            max_attempts: 1,
            attempt_timeout: Duration::from_millis(50),
            ..fast()
        };
        let r: Result<()> = policy
            .run("hang", |_| std::future::pending::<Result<()>>())
            .await;
        let e = r.unwrap_err();
        assert_eq!(e.kind(), ion_core::ErrorKind::Unavailable);
        assert!(e.message().contains("hang"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn backoff_grows_and_stays_capped(initial in 1u64..2_000, cap in 1u64..20_000, n in 1u32..64) {
            let p = RetryPolicy {
                max_attempts: 10,
                initial_backoff: Duration::from_millis(initial),
                max_backoff: Duration::from_millis(cap),
                attempt_timeout: Duration::from_secs(1),
            };
            proptest::prop_assert!(p.backoff(n) <= p.max_backoff);
            proptest::prop_assert!(p.backoff(n) <= p.backoff(n + 1));
            proptest::prop_assert_eq!(p.backoff(1), p.initial_backoff.min(p.max_backoff));
        }
    }
}
