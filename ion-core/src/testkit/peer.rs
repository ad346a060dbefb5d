//! How a test that needs a real peer finds it, skips, or fails.
//!
//! Real-backend tests read the peer's address from an `ION_TEST_…` variable (printed by
//! `scripts/peers env`). In plain `cargo test` a missing variable makes the test print one
//! `skipped:` line and pass, so fakes-only work stays quick. Under `ION_REQUIRE_PEERS=1` (which
//! `scripts/test` sets) a missing variable is a failure.

/// True when `ION_REQUIRE_PEERS=1`: a missing or unreachable peer must fail the test.
pub fn peers_required() -> bool {
    std::env::var("ION_REQUIRE_PEERS")
        .map(|v| v == "1")
        .unwrap_or(false)
}

/// Reads the peer variable `var`; `what` says in a few words what the test needed it for.
///
/// Returns `None` (after printing `skipped: <what> needs <var>; run scripts/peers up`) when the
/// variable is unset or empty and peers are not required.
///
/// # Panics
///
/// When the variable is unset or empty and [`peers_required`] is true: the test then fails
/// with a message naming the variable.
pub fn peer_var(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Some(v),
        _ if peers_required() => {
            panic!("{what} needs {var} but it is not set and ION_REQUIRE_PEERS=1; run scripts/peers up and export $(scripts/peers env)")
        }
        _ => {
            println!("skipped: {what} needs {var}; run scripts/peers up");
            None
        }
    }
}

/// Reports a peer that is configured but unreachable: a failure under `ION_REQUIRE_PEERS=1`,
/// a printed skip otherwise. Returns `None` so callers can write `return peer_unreachable(..)`.
///
/// # Panics
///
/// When [`peers_required`] is true.
pub fn peer_unreachable<T>(var: &str, what: &str, error: &dyn std::fmt::Display) -> Option<T> {
    if peers_required() {
        panic!("{what}: peer at {var} is unreachable: {error}");
    }
    println!("skipped: {what} needs a reachable peer at {var} ({error}); run scripts/peers up");
    None
}
