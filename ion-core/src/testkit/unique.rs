//! Unique names for test cases that share a real server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::fake::SeededRng;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name unlikely to collide with any other test run's: `<prefix>-<10 hex digits>`.
///
/// `prefix` must start with a lowercase letter and contain only `[a-z0-9-]`, so the result parses
/// as a tenant id, app id, collection-like or key segment name.
pub fn unique_name(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let seed = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9);
    let mut rng = SeededRng::new(seed);
    format!("{prefix}-{:010x}", rng.next_u64() & 0xff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_and_valid() {
        let a = unique_name("t");
        let b = unique_name("t");
        assert_ne!(a, b);
        assert!(crate::TenantId::parse(&a).is_ok());
    }
}
